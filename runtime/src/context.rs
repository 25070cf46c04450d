//! The per-request context: what routing found, who the client is, a bag for custom code,
//! logging with the request id, and work that runs after the response.

use std::borrow::Cow;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};

use serde_json::{Map, Value};

use crate::server::Runtime;
use crate::{Problem, Response};

/// Static facts about a route, emitted by the generator.
#[derive(Debug, Clone, Copy)]
pub struct RouteInfo {
    /// The route's position in the route table.
    pub index: usize,
    /// Upper-case method.
    pub method: &'static str,
    /// The path as written in the OpenAPI document.
    pub path: &'static str,
    /// The operation id, or a generated label.
    pub label: &'static str,
}

/// The authenticated caller, set by authentication policies (`request.user`).
#[derive(Debug, Clone, Default)]
pub struct User {
    /// The subject: consumer name or token subject.
    pub sub: String,
    /// Consumer metadata or token claims.
    pub data: Value,
}

impl User {
    /// A member of `data` as text (strings as they are, other values as JSON, `None` if absent).
    pub fn data_text(&self, key: &str) -> Option<Cow<'_, str>> {
        match self.data.get(key)? {
            Value::Null => None,
            Value::String(s) => Some(Cow::Borrowed(s)),
            other => Some(Cow::Owned(other.to_string())),
        }
    }
}

/// Everything known about one request besides the request itself (`context` in Zuplo).
pub struct Context {
    /// The request id (accepted from the client or minted), echoed on the response.
    pub request_id: String,
    /// The matched route.
    pub route: &'static RouteInfo,
    /// The request path after normalization; routing, policies and forwarding all use it.
    pub pathname: String,
    /// The `Host` the client addressed.
    pub host: String,
    /// The address of the TCP peer.
    pub peer: SocketAddr,
    /// The client address after honouring the configured trusted proxy hops.
    pub client_ip: IpAddr,
    /// A per-request bag that policies fill for handlers and templates (`${context.custom.x}`).
    pub custom: Map<String, Value>,
    /// Logging that tags every line with the request id (`context.log`).
    pub log: Log,
    pub(crate) runtime: &'static Runtime,
    /// Work to do on the route's response ([`Context::on_response`]), in registration order.
    pub(crate) after: Vec<AfterResponse>,
    /// The request's trace context (propagated upstream as `traceparent`).
    pub(crate) trace: crate::trace::TraceContext,
    /// How many `local://` calls led to this request (0 for a request from a client).
    pub(crate) local_hops: u8,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("request_id", &self.request_id)
            .field("route", &self.route)
            .field("pathname", &self.pathname)
            .field("host", &self.host)
            .field("client_ip", &self.client_ip)
            .field("custom", &self.custom)
            .field("after", &self.after.len())
            .field("trace_id", &self.trace.trace_id())
            .field("local_hops", &self.local_hops)
            .finish_non_exhaustive()
    }
}

/// A change a policy asked for on the response of its request (see [`Context::on_response`]).
pub type AfterResponse = Box<dyn FnOnce(Response, &Context) -> Response + Send + Sync>;

impl Context {
    /// Renders a problem for this request in the project's problem format.
    pub fn problem(&self, problem: Problem) -> Response {
        self.runtime.format_problem(problem, &self.pathname, &self.request_id)
    }

    /// Has `f` see (and possibly change) the route's response once it exists: whether the
    /// handler produced it or a policy short-circuited, before the outbound-independent
    /// response hooks run. This is how inbound policies that must observe the outcome work
    /// (rate-limit headers on admitted requests, quotas counted by status, caching).
    ///
    /// The functions run in reverse order of registration (the policy registered last, which
    /// sits closest to the handler, sees the response first), like nested middleware.
    pub fn on_response(&mut self, f: impl FnOnce(Response, &Context) -> Response + Send + Sync + 'static) {
        self.after.push(Box::new(f));
    }

    /// Adds a header to the route's response, whoever produces it (appended, so existing
    /// values of the same name stay).
    pub fn add_response_header(&mut self, name: http::HeaderName, value: http::HeaderValue) {
        self.on_response(move |mut resp, _| {
            resp.headers_mut().append(name, value);
            resp
        });
    }

    /// Applies what policies registered with [`Context::on_response`] to `resp`.
    pub fn finish_response(&mut self, mut resp: Response) -> Response {
        while let Some(f) = self.after.pop() {
            resp = f(resp, self);
        }
        resp
    }

    /// Runs `work` after the response is sent (`context.waitUntil`); graceful shutdown waits
    /// for it.
    pub fn wait_until(&self, work: impl Future<Output = ()> + Send + 'static) {
        self.runtime.spawn_background(work);
    }

    /// `http:` or `https:` (when the gateway terminates TLS), as JavaScript's `URL.protocol`
    /// gives it.
    pub fn protocol(&self) -> &'static str {
        if self.runtime.https { "https:" } else { "http:" }
    }

    /// The request's trace context: its trace id (in the access log too) and a `traceparent`
    /// for side calls that should join the trace.
    pub fn trace(&self) -> &crate::trace::TraceContext {
        &self.trace
    }

    /// The host without the port.
    pub fn hostname(&self) -> &str {
        split_host_port(&self.host).0
    }

    /// The port the client addressed, or `""` when it used the default.
    pub fn port(&self) -> &str {
        split_host_port(&self.host).1
    }

    /// `protocol//host`.
    pub fn origin(&self) -> String {
        format!("{}//{}", self.protocol(), self.host)
    }

    /// A value of the custom bag as template text: strings as they are, others as JSON.
    pub fn custom_text(&self, key: &str) -> Cow<'_, str> {
        match self.custom.get(key) {
            None | Some(Value::Null) => Cow::Borrowed(""),
            Some(Value::String(s)) => Cow::Borrowed(s),
            Some(other) => Cow::Owned(other.to_string()),
        }
    }

    /// The runtime's shared HTTP client for side calls (config endpoints, loaders).
    pub fn runtime(&self) -> &'static Runtime {
        self.runtime
    }

    /// How many `local://` calls led to this request: 0 when a client sent it, 1 when a
    /// gateway of this process (or one reached through `LOCAL_GATEWAY_<NAME>_URL`) forwarded
    /// it, and so on.
    pub fn local_hops(&self) -> u8 {
        self.local_hops
    }
}

/// `context.log`: tracing events tagged with the request id and the route.
#[derive(Debug, Clone)]
pub struct Log {
    pub(crate) request_id: String,
    pub(crate) route: &'static str,
}

impl Log {
    /// Logs at debug level.
    pub fn debug(&self, message: impl std::fmt::Display) {
        tracing::debug!(target: "specgate::custom", request_id = %self.request_id, route = self.route, "{message}");
    }
    /// Logs at info level.
    pub fn info(&self, message: impl std::fmt::Display) {
        tracing::info!(target: "specgate::custom", request_id = %self.request_id, route = self.route, "{message}");
    }
    /// Logs at warn level.
    pub fn warn(&self, message: impl std::fmt::Display) {
        tracing::warn!(target: "specgate::custom", request_id = %self.request_id, route = self.route, "{message}");
    }
    /// Logs at error level.
    pub fn error(&self, message: impl std::fmt::Display) {
        tracing::error!(target: "specgate::custom", request_id = %self.request_id, route = self.route, "{message}");
    }
}

pub(crate) fn split_host_port(host: &str) -> (&str, &str) {
    // IPv6 literals keep their brackets: [::1]:8080.
    if let Some(end) = host.rfind(']') {
        let (h, rest) = host.split_at(end + 1);
        return (h, rest.strip_prefix(':').unwrap_or(""));
    }
    match host.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => (h, p),
        _ => (host, ""),
    }
}

/// Finds the first value of `name` in a raw query string, decoded as forms are.
pub fn query_get<'a>(query: &'a str, name: &str) -> Option<Cow<'a, str>> {
    for pair in query.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if form_decode(k) == name {
            return Some(form_decode(v));
        }
    }
    None
}

fn form_decode(s: &str) -> Cow<'_, str> {
    if s.contains('+') {
        Cow::Owned(crate::path::percent_decode(&s.replace('+', " ")).into_owned())
    } else {
        crate::path::percent_decode(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_lookup_decodes() {
        assert_eq!(query_get("a=1&b=x%20y+z&b=2", "b").as_deref(), Some("x y z"));
        assert_eq!(query_get("flag&a=1", "flag").as_deref(), Some(""));
        assert_eq!(query_get("a=1", "c"), None);
    }

    #[test]
    fn host_port_split() {
        assert_eq!(split_host_port("example.com:8080"), ("example.com", "8080"));
        assert_eq!(split_host_port("example.com"), ("example.com", ""));
        assert_eq!(split_host_port("[::1]:9000"), ("[::1]", "9000"));
        assert_eq!(split_host_port("[::1]"), ("[::1]", ""));
    }
}
