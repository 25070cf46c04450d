//! Federated gateways: `local://NAME[/path]` as an upstream URL.
//!
//! A build of several projects (`specgate generate --project a --project b`) holds every
//! project's gateway in one binary; only the first (or the `--entry` one) listens on a port.
//! A `local://NAME` URL in `baseUrl` or `rewritePattern` (written there, or the value of
//! `${env.X}`) names one of them: the request is handed to that gateway's dispatch in process,
//! as an `http::Request` with its streaming body, no socket and no serialisation, and goes
//! through that gateway's whole chain (routing, CORS, policies, hooks, its own upstream). The
//! response comes back the same way. Headers are prepared as for an HTTP hop: hop-by-hop
//! headers removed, `X-Forwarded-For/-Proto/-Host` and `X-Request-Id` set, `Host` = NAME.
//!
//! A NAME that is not compiled into this binary is reached over HTTP when
//! `LOCAL_GATEWAY_<NAME>_URL` is set (see [`url_variable`]): `local://orders/a?b` goes to
//! `$LOCAL_GATEWAY_ORDERS_URL/a?b`. Without it, the call answers 502 problem+json naming the
//! gateway. Every call adds one hop; a request that would make call number
//! [`MAX_HOPS`]` + 1` answers 508 Loop Detected (the count travels in process with the request,
//! and in [`HOPS_HEADER`] over HTTP).

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::OnceLock;

use axum::body::Body;
use axum::extract::ConnectInfo;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode, Uri};

use crate::metrics::LocalOutcome;
use crate::proxy::{Failure, Stage, Upstream, Wait};
use crate::{Context, Problem, Response};

/// The URL scheme of gateways of the same deployment.
pub const SCHEME: &str = "local";

/// The most `local://` calls in a row one client request may lead to; the next answers 508.
pub const MAX_HOPS: u8 = 8;

/// Carries the hop count when a `local://` call goes to another process over HTTP. A gateway
/// reads it from requests (a client can only make its own calls stop earlier) and never sends
/// it to an upstream otherwise.
pub const HOPS_HEADER: HeaderName = HeaderName::from_static("x-specgate-local-hops");

/// What a request handed over in process carries besides its head and body.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LocalHop {
    /// `local://` calls so far, this one included.
    pub(crate) hops: u8,
    /// The client address the calling gateway determined (the hop itself has no address).
    pub(crate) client_ip: IpAddr,
}

/// The response of an in-process call.
pub(crate) type Call = Pin<Box<dyn Future<Output = Response> + Send>>;

/// A gateway of this process that `local://` calls reach.
pub(crate) trait Local: Send + Sync {
    /// Serves `req` as if it had arrived on the gateway's own listener.
    fn call(&'static self, req: http::Request<Body>) -> Call;

    /// The gateway's runtime (its tracing is shut down with the process's).
    fn runtime(&'static self) -> &'static crate::server::Runtime;
}

/// The gateways of the process by name, set once at start-up.
static GATEWAYS: OnceLock<Vec<(&'static str, &'static dyn Local)>> = OnceLock::new();

/// Makes `gateways` reachable through `local://` (once per process).
pub(crate) fn install(gateways: Vec<(&'static str, &'static dyn Local)>) {
    let _ = GATEWAYS.set(gateways);
}

fn find(name: &str) -> Option<&'static dyn Local> {
    GATEWAYS.get()?.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, g)| *g)
}

/// Whether `url` is a `local://` URL.
pub fn is_local(url: &str) -> bool {
    url.len() > 8 && url.get(..8).is_some_and(|p| p.eq_ignore_ascii_case("local://"))
}

/// A gateway name as part of an environment variable name: ASCII letters upper-cased, digits
/// kept, anything else `_` (`orders-v2` → `ORDERS_V2`).
pub fn env_name(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_uppercase() } else { '_' }).collect()
}

/// The variable giving the HTTP base URL of a gateway that is not compiled into this binary:
/// `LOCAL_GATEWAY_<NAME>_URL` with NAME as [`env_name`] writes it (`local://orders-v2` →
/// `LOCAL_GATEWAY_ORDERS_V2_URL`).
pub fn url_variable(name: &str) -> String {
    format!("LOCAL_GATEWAY_{}_URL", env_name(name))
}

/// The hops a request arrived with: from the in-process hand-over, else from
/// [`HOPS_HEADER`] (capped at [`MAX_HOPS`]), else 0.
pub(crate) fn arrived_hops(req: &http::Request<Body>) -> (u8, Option<IpAddr>) {
    if let Some(h) = req.extensions().get::<LocalHop>() {
        return (h.hops, Some(h.client_ip));
    }
    let hops = req
        .headers()
        .get(&HOPS_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u8>().ok())
        .map_or(0, |h| h.min(MAX_HOPS));
    (hops, None)
}

/// Sends a prepared request to `uri` (`local://NAME/path?query`): in process when NAME is a
/// gateway of this binary, over HTTP when `LOCAL_GATEWAY_<NAME>_URL` is set, else a 502.
pub(crate) async fn exchange(upstream: &Upstream, method: Method, uri: Uri, mut headers: HeaderMap, body: Body, cx: &Context, wait: Wait) -> Result<Response, Failure> {
    // A call to a gateway that is neither built in nor mapped is a configuration error:
    // sending it again cannot help (the route's retries do not apply).
    let refused = |problem| Failure { problem, stage: Stage::Local };
    let name = uri.host().unwrap_or_default().to_ascii_lowercase();
    let count = |outcome| {
        if let Some(m) = cx.runtime().metrics() {
            m.count_local_call(&name, outcome);
        }
    };
    if cx.local_hops >= MAX_HOPS {
        count(LocalOutcome::Loop);
        tracing::warn!(request_id = %cx.request_id, target = %name, hops = cx.local_hops, "local gateway calls nested too deep");
        return Err(Failure {
            problem: Problem::new(StatusCode::LOOP_DETECTED)
                .with_detail(format!("local://{name}: more than {MAX_HOPS} local gateway calls in a row (the gateways call each other in a loop)")),
            stage: Stage::Local,
        });
    }
    let hops = cx.local_hops + 1;
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    if let Some(target) = find(&name) {
        let mut req = http::Request::new(body);
        *req.method_mut() = method;
        let path = path.parse().map_err(|_| Failure { problem: Problem::internal("the local URL built for this route has an invalid path"), stage: Stage::Local })?;
        *req.uri_mut() = path;
        if let Ok(host) = HeaderValue::from_str(&name) {
            headers.insert(header::HOST, host);
        }
        // The called gateway's spans join this request's trace under a client span of ours.
        let span = cx.runtime().tracing.client_span(&cx.trace, req.method(), &uri);
        cx.trace.inject(&mut headers, span.span_id());
        *req.headers_mut() = headers;
        req.extensions_mut().insert(ConnectInfo(cx.peer));
        req.extensions_mut().insert(LocalHop { hops, client_ip: cx.client_ip });
        tracing::debug!(request_id = %cx.request_id, target = %name, hops, "local call in process");
        return match tokio::time::timeout_at(wait.deadline, target.call(req)).await {
            Ok(resp) => {
                count(LocalOutcome::InProcess);
                span.answered(resp.status().as_u16());
                let (mut parts, body) = resp.into_parts();
                crate::proxy::strip_hop_by_hop(&mut parts.headers);
                Ok(Response::from_parts(parts, body))
            }
            Err(_) => {
                count(LocalOutcome::TimedOut);
                span.failed("timeout", "the local gateway did not answer in time");
                tracing::warn!(request_id = %cx.request_id, target = %name, "local gateway did not answer within {:?}", wait.timeout);
                Err(Failure { problem: Problem::gateway_timeout(format!("local://{name} did not answer in time")), stage: Stage::TimedOut })
            }
        };
    }
    let var = url_variable(&name);
    let Some(base) = crate::env::var(&var).filter(|v| !v.trim().is_empty()) else {
        count(LocalOutcome::Unknown);
        tracing::warn!(request_id = %cx.request_id, target = %name, "unknown local gateway");
        return Err(refused(Problem::bad_gateway(format!("local://{name} is not a gateway of this process and {var} is not set"))));
    };
    let url = format!("{}{path}", base.trim().trim_end_matches('/'));
    let target = match url.parse::<Uri>() {
        Ok(u) if matches!(u.scheme_str(), Some("http" | "https")) && u.authority().is_some() => u,
        _ => {
            count(LocalOutcome::Unknown);
            return Err(refused(Problem::bad_gateway(format!("local://{name}: {var} is not an absolute http(s) URL"))));
        }
    };
    count(LocalOutcome::Http);
    tracing::debug!(request_id = %cx.request_id, target = %name, hops, url = %target, "local call over HTTP");
    headers.insert(HOPS_HEADER, HeaderValue::from(u16::from(hops)));
    upstream.exchange_http(method, target, headers, body, cx, wait).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_become_variable_names() {
        assert_eq!(url_variable("orders"), "LOCAL_GATEWAY_ORDERS_URL");
        assert_eq!(url_variable("my-api-main-2s93j2"), "LOCAL_GATEWAY_MY_API_MAIN_2S93J2_URL");
        assert_eq!(env_name("a.b_c"), "A_B_C");
    }

    #[test]
    fn recognises_local_urls() {
        assert!(is_local("local://orders"));
        assert!(is_local("LOCAL://orders/x"));
        assert!(!is_local("local://"));
        assert!(!is_local("http://orders"));
        assert!(!is_local("loc"));
    }
}
