//! remove-headers-inbound / -outbound and clear-headers-inbound / -outbound.

use http::header::{HeaderMap, HeaderName};
use serde::Deserialize;

use crate::policy::{Flow, FromOptions, Inbound, Outbound};
use crate::{Context, Request, RequestHead, Response};

/// Options of the remove-headers policies.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RemoveHeadersOptions {
    /// Header names to remove (case-insensitive). Required.
    pub headers: Vec<String>,
}

/// Options of the clear-headers policies.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ClearHeadersOptions {
    /// Header names to keep (case-insensitive); every other header is removed. Default none.
    #[serde(default)]
    pub exclude: Vec<String>,
}

/// Parses header names once; `HeaderName` lower-cases them, which makes matching
/// case-insensitive. A name that is not a valid header name is a configuration mistake (it
/// could never match), so it stops start-up instead of being silently ignored.
fn header_names(names: Vec<String>, what: &str) -> Result<Vec<HeaderName>, String> {
    names
        .into_iter()
        .map(|n| HeaderName::from_bytes(n.trim().as_bytes()).map_err(|_| format!("{what}: `{n}` is not a valid header name")))
        .collect()
}

fn remove(names: &[HeaderName], headers: &mut HeaderMap) {
    for n in names {
        // `remove` drops every value of a repeated header, not just the first.
        headers.remove(n);
    }
}

fn clear(keep: &[HeaderName], headers: &mut HeaderMap) {
    if headers.keys().all(|k| keep.contains(k)) {
        return;
    }
    let old = std::mem::take(headers);
    for n in keep {
        for v in old.get_all(n) {
            headers.append(n.clone(), v.clone());
        }
    }
}

/// `RemoveHeadersInboundPolicy`: removes the listed headers from the request.
#[derive(Debug, Clone)]
pub struct RemoveHeadersInbound(Vec<HeaderName>);

impl FromOptions for RemoveHeadersInbound {
    type Options = RemoveHeadersOptions;
    fn from_options(options: Self::Options, _name: &str) -> Result<Self, String> {
        header_names(options.headers, "headers").map(RemoveHeadersInbound)
    }
}

impl Inbound for RemoveHeadersInbound {
    async fn on_request(&self, mut req: Request, _cx: &mut Context) -> Flow {
        remove(&self.0, req.headers_mut());
        Flow::Continue(req)
    }
}

/// `RemoveHeadersOutboundPolicy`: removes the listed headers from the response.
#[derive(Debug, Clone)]
pub struct RemoveHeadersOutbound(Vec<HeaderName>);

impl FromOptions for RemoveHeadersOutbound {
    type Options = RemoveHeadersOptions;
    fn from_options(options: Self::Options, _name: &str) -> Result<Self, String> {
        header_names(options.headers, "headers").map(RemoveHeadersOutbound)
    }
}

impl Outbound for RemoveHeadersOutbound {
    async fn on_response(&self, mut resp: Response, _req: &RequestHead, _cx: &mut Context) -> Response {
        remove(&self.0, resp.headers_mut());
        resp
    }
}

/// `ClearHeadersInboundPolicy`: removes every request header except those in `exclude`.
///
/// Framing headers go too unless excluded; the body still reaches the upstream because the
/// client sets `Content-Length` or chunked encoding from the body itself.
#[derive(Debug, Clone)]
pub struct ClearHeadersInbound(Vec<HeaderName>);

impl FromOptions for ClearHeadersInbound {
    type Options = ClearHeadersOptions;
    fn from_options(options: Self::Options, _name: &str) -> Result<Self, String> {
        header_names(options.exclude, "exclude").map(ClearHeadersInbound)
    }
}

impl Inbound for ClearHeadersInbound {
    async fn on_request(&self, mut req: Request, _cx: &mut Context) -> Flow {
        clear(&self.0, req.headers_mut());
        Flow::Continue(req)
    }
}

/// `ClearHeadersOutboundPolicy`: removes every response header except those in `exclude`.
///
/// As in Zuplo this includes `Content-Type` and `Content-Encoding` unless excluded: exclude
/// `content-encoding` when the upstream may compress, or clients cannot decode the body.
#[derive(Debug, Clone)]
pub struct ClearHeadersOutbound(Vec<HeaderName>);

impl FromOptions for ClearHeadersOutbound {
    type Options = ClearHeadersOptions;
    fn from_options(options: Self::Options, _name: &str) -> Result<Self, String> {
        header_names(options.exclude, "exclude").map(ClearHeadersOutbound)
    }
}

impl Outbound for ClearHeadersOutbound {
    async fn on_response(&self, mut resp: Response, _req: &RequestHead, _cx: &mut Context) -> Response {
        clear(&self.0, resp.headers_mut());
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policies::test_context;
    use crate::policies::test_util::{body_text, build, continued, must, request, response};
    use serde_json::json;

    #[tokio::test]
    async fn removes_listed_request_headers_case_insensitively() {
        let p: RemoveHeadersInbound = must(build(json!({"headers": ["X-Secret", "authorization"]})));
        let mut req = request("GET", "/a", "");
        req.headers_mut().insert("x-secret", http::HeaderValue::from_static("1"));
        req.headers_mut().append("x-secret", http::HeaderValue::from_static("2"));
        req.headers_mut().insert("Authorization", http::HeaderValue::from_static("Bearer t"));
        req.headers_mut().insert("x-keep", http::HeaderValue::from_static("k"));
        let mut cx = test_context();
        let req = must(continued(p.on_request(req, &mut cx).await));
        assert!(req.headers().get("x-secret").is_none());
        assert!(req.headers().get("authorization").is_none());
        assert_eq!(req.header("x-keep"), Some("k"));
    }

    #[tokio::test]
    async fn removes_listed_response_headers() {
        let p: RemoveHeadersOutbound = must(build(json!({"headers": ["SERVER", "x-powered-by"]})));
        let resp = response(200, &[("server", "nginx"), ("X-Powered-By", "php"), ("content-type", "text/plain")], "hi");
        let mut cx = test_context();
        let head = request("GET", "/a", "").head();
        let resp = p.on_response(resp, &head, &mut cx).await;
        assert!(resp.headers().get("server").is_none());
        assert!(resp.headers().get("x-powered-by").is_none());
        assert_eq!(resp.headers()["content-type"], "text/plain");
    }

    #[test]
    fn remove_headers_options_are_checked() {
        assert!(build::<RemoveHeadersInbound>(json!({})).is_err(), "headers is required");
        assert!(build::<RemoveHeadersInbound>(json!({"headers": ["bad name"]})).is_err());
        assert!(build::<RemoveHeadersInbound>(json!({"headers": ["a"], "other": 1})).is_err());
    }

    #[tokio::test]
    async fn clears_all_but_excluded_request_headers() {
        let p: ClearHeadersInbound = must(build(json!({"exclude": ["Content-Type", "x-multi"]})));
        let mut req = request("POST", "/a", "{}");
        let h = req.headers_mut();
        h.insert("content-type", http::HeaderValue::from_static("application/json"));
        h.insert("cookie", http::HeaderValue::from_static("a=b"));
        h.insert("x-multi", http::HeaderValue::from_static("1"));
        h.append("x-multi", http::HeaderValue::from_static("2"));
        let mut cx = test_context();
        let req = must(continued(p.on_request(req, &mut cx).await));
        assert_eq!(req.headers().len(), 3);
        assert_eq!(req.header("content-type"), Some("application/json"));
        let multi: Vec<_> = req.headers().get_all("x-multi").iter().filter_map(|v| v.to_str().ok()).collect();
        assert_eq!(multi, ["1", "2"]);
        assert!(req.headers().get("cookie").is_none());
    }

    #[tokio::test]
    async fn clears_every_response_header_by_default() {
        let p: ClearHeadersOutbound = must(build(json!({})));
        let resp = response(201, &[("server", "x"), ("set-cookie", "a=b")], "body");
        let mut cx = test_context();
        let head = request("GET", "/a", "").head();
        let resp = p.on_response(resp, &head, &mut cx).await;
        assert!(resp.headers().is_empty());
        assert_eq!(resp.status(), 201);
        assert_eq!(body_text(resp.into_body()).await, "body");
    }
}
