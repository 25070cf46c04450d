//! The per-request context: what routing found, who the caller is, and a bag for custom code.

use std::borrow::Cow;
use std::net::{IpAddr, SocketAddr};

use serde_json::{Map, Value};

use crate::server::Runtime;

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

/// The authenticated caller, set by authentication policies.
#[derive(Debug, Clone, Default)]
pub struct User {
    /// The subject: consumer name or token subject.
    pub sub: String,
    /// Consumer metadata or token claims.
    pub data: Value,
}

/// Everything known about one request besides the request itself.
#[derive(Debug)]
pub struct Context {
    /// The request id (accepted from the client or minted), echoed on the response.
    pub request_id: String,
    /// The matched route.
    pub route: &'static RouteInfo,
    /// The request path after normalization; routing, auth and forwarding all use this one.
    pub pathname: String,
    /// The raw query string without `?`, if any.
    pub query: Option<String>,
    /// The `Host` the client addressed (authority of the URL, or the Host header).
    pub host: String,
    /// The address of the TCP peer.
    pub peer: SocketAddr,
    /// The client address after honouring the configured trusted proxy hops.
    pub client_ip: IpAddr,
    /// The caller, once a policy authenticated it.
    pub user: Option<User>,
    /// A per-request bag that policies fill for handlers and templates (`${context.custom.x}`).
    pub custom: Map<String, Value>,
    pub(crate) params: Vec<String>,
    pub(crate) runtime: &'static Runtime,
}

impl Context {
    /// The value of the route's `i`-th path parameter (percent-decoded), or `""`.
    pub fn param(&self, i: usize) -> &str {
        self.params.get(i).map(String::as_str).unwrap_or("")
    }

    /// A path parameter by name.
    pub fn param_named(&self, name: &str) -> Option<&str> {
        let pos = self.route_params().iter().position(|n| *n == name)?;
        self.params.get(pos).map(String::as_str)
    }

    fn route_params(&self) -> &'static [&'static str] {
        self.runtime.route_params(self.route.index)
    }

    /// The first value of query parameter `name`, percent-decoded (`+` as space).
    pub fn query_param(&self, name: &str) -> Option<Cow<'_, str>> {
        query_get(self.query.as_deref()?, name)
    }

    /// `?query` or `""`, as JavaScript's `URL.search` gives it.
    pub fn search(&self) -> Cow<'_, str> {
        match &self.query {
            Some(q) if !q.is_empty() => Cow::Owned(format!("?{q}")),
            _ => Cow::Borrowed(""),
        }
    }

    /// `http:` or `https:`, as JavaScript's `URL.protocol` gives it.
    pub fn protocol(&self) -> &'static str {
        "http:"
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

    /// The full incoming URL (normalized path).
    pub fn url(&self) -> String {
        format!("{}{}{}", self.origin(), self.pathname, self.search())
    }

    /// A value of the custom bag as template text: strings as they are, others as JSON.
    pub fn custom_text(&self, key: &str) -> Cow<'_, str> {
        value_text(self.custom.get(key))
    }

    /// `request.user.sub`, or `""` without a user.
    pub fn user_sub(&self) -> &str {
        self.user.as_ref().map(|u| u.sub.as_str()).unwrap_or("")
    }

    /// A member of `request.user.data` as template text.
    pub fn user_data_text(&self, key: &str) -> Cow<'_, str> {
        value_text(self.user.as_ref().and_then(|u| u.data.get(key)))
    }
}

/// Renders a JSON value the way a JavaScript template literal would for common cases.
fn value_text(v: Option<&Value>) -> Cow<'_, str> {
    match v {
        None | Some(Value::Null) => Cow::Borrowed(""),
        Some(Value::String(s)) => Cow::Borrowed(s),
        Some(other) => Cow::Owned(other.to_string()),
    }
}

fn split_host_port(host: &str) -> (&str, &str) {
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
