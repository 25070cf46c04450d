//! The built-in handlers of `$import(@zuplo/runtime)`: URL forward, URL rewrite, redirect.
//!
//! Generated route functions render their URL templates (compiled Rust, see
//! [`crate::template`]) and hand the result to one of these.

use axum::body::Body;
use http::{HeaderValue, StatusCode, header};

use crate::upstreams::RouteUpstream;
use crate::{Context, Problem, Request, Response};

/// Options shared by `urlForwardHandler` and `urlRewriteHandler`.
#[derive(Debug, Clone, Copy)]
pub struct ForwardOptions {
    /// Append the incoming query string to the upstream URL (default true).
    pub forward_search: bool,
    /// Follow upstream redirects instead of passing them to the client (default false).
    pub follow_redirects: bool,
}

impl Default for ForwardOptions {
    fn default() -> Self {
        ForwardOptions { forward_search: true, follow_redirects: false }
    }
}

/// `urlForwardHandler`: upstream URL = `base` + the incoming (normalized) path (+ query).
pub async fn url_forward(req: Request, cx: &Context, base: &str, opts: ForwardOptions) -> Response {
    let base = base.trim_end_matches('/');
    let req = req.into_http();
    let query = if opts.forward_search { req.uri().query().filter(|q| !q.is_empty()) } else { None };
    let mut url = String::with_capacity(base.len() + cx.pathname.len() + query.map_or(0, |q| q.len() + 1));
    url.push_str(base);
    url.push_str(&cx.pathname);
    if let Some(q) = query {
        url.push('?');
        url.push_str(q);
    }
    cx.runtime().upstream().send_owned(req, cx, url, opts.follow_redirects).await
}

/// `urlRewriteHandler`: the rendered `rewritePattern` is the upstream URL; with
/// `forwardSearch` the incoming query is appended (merged when the pattern has one).
pub async fn url_rewrite(req: Request, cx: &Context, mut url: String, opts: ForwardOptions) -> Response {
    let req = req.into_http();
    if opts.forward_search
        && let Some(q) = req.uri().query().filter(|q| !q.is_empty())
    {
        url.push(if url.contains('?') { '&' } else { '?' });
        url.push_str(q);
    }
    cx.runtime().upstream().send_owned(req, cx, url, opts.follow_redirects).await
}

/// `urlForwardHandler` on a route with upstream settings (several upstreams, timeouts,
/// retries): with an upstream set, the chosen upstream's base + the incoming path (+ query);
/// without one, `base` + the incoming path (+ query).
pub async fn url_forward_via(req: Request, cx: &Context, base: &str, upstream: &RouteUpstream, opts: ForwardOptions) -> Response {
    let base = if upstream.pool().is_some() { "" } else { base.trim_end_matches('/') };
    let req = req.into_http();
    let query = if opts.forward_search { req.uri().query().filter(|q| !q.is_empty()) } else { None };
    let mut target = String::with_capacity(base.len() + cx.pathname.len() + query.map_or(0, |q| q.len() + 1));
    target.push_str(base);
    target.push_str(&cx.pathname);
    if let Some(q) = query {
        target.push('?');
        target.push_str(q);
    }
    upstream.send(req, cx, &target, opts.follow_redirects).await
}

/// `urlRewriteHandler` on a route with upstream settings: `url` is the rendered
/// `rewritePattern`, an absolute URL, or with an upstream set the path appended to the chosen
/// upstream's base; with `forwardSearch` the incoming query is appended (merged when the
/// pattern has one).
pub async fn url_rewrite_via(req: Request, cx: &Context, mut url: String, upstream: &RouteUpstream, opts: ForwardOptions) -> Response {
    let req = req.into_http();
    if opts.forward_search
        && let Some(q) = req.uri().query().filter(|q| !q.is_empty())
    {
        url.push(if url.contains('?') { '&' } else { '?' });
        url.push_str(q);
    }
    upstream.send(req, cx, &url, opts.follow_redirects).await
}

/// `redirectHandler`: answers with `Location` and the configured status (default 302).
pub fn redirect(cx: &Context, location: &str, status: u16) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::FOUND);
    match HeaderValue::from_str(location) {
        Ok(value) => {
            let mut resp = Response::new(Body::empty());
            *resp.status_mut() = status;
            resp.headers_mut().insert(header::LOCATION, value);
            resp
        }
        Err(_) => cx.problem(Problem::internal("the redirect location is not a valid header value")),
    }
}

/// Turns the result of a template rendering into the response to send when it failed.
pub fn template_failed(problem: Problem, cx: &Context) -> Response {
    cx.problem(problem)
}

/// What a custom handler may return: a response, a problem, JSON, text, or a `Result` of one
/// of those (an `Err` becomes a 500 problem).
pub trait HandlerOutput {
    /// Converts into the response to send.
    fn into_handler_response(self, cx: &Context) -> Response;
}

impl HandlerOutput for Response {
    fn into_handler_response(self, _cx: &Context) -> Response {
        self
    }
}

impl HandlerOutput for Problem {
    fn into_handler_response(self, cx: &Context) -> Response {
        cx.problem(self)
    }
}

impl HandlerOutput for serde_json::Value {
    fn into_handler_response(self, _cx: &Context) -> Response {
        json_response(&self)
    }
}

impl HandlerOutput for String {
    fn into_handler_response(self, _cx: &Context) -> Response {
        text_response(self)
    }
}

impl HandlerOutput for &'static str {
    fn into_handler_response(self, _cx: &Context) -> Response {
        text_response(self.to_owned())
    }
}

/// A value sent as JSON with status 200.
#[derive(Debug, Clone)]
pub struct Json<T>(pub T);

impl<T: serde::Serialize> HandlerOutput for Json<T> {
    fn into_handler_response(self, cx: &Context) -> Response {
        match serde_json::to_value(&self.0) {
            Ok(v) => json_response(&v),
            Err(e) => cx.problem(Problem::internal(format!("the handler's value cannot be sent as JSON: {e}"))),
        }
    }
}

impl<T: HandlerOutput, E: std::fmt::Display> HandlerOutput for Result<T, E> {
    fn into_handler_response(self, cx: &Context) -> Response {
        match self {
            Ok(v) => v.into_handler_response(cx),
            Err(e) => {
                tracing::error!(request_id = %cx.request_id, route = cx.route.label, error = %e, "handler failed");
                cx.problem(cx.runtime().error_problem(Problem::internal("the handler failed")))
            }
        }
    }
}

/// A JSON response with status 200.
pub fn json_response(value: &serde_json::Value) -> Response {
    let mut r = Response::new(Body::from(value.to_string()));
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

/// A plain text response with status 200.
pub fn text_response(text: String) -> Response {
    let mut r = Response::new(Body::from(text));
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    r
}

/// `webSocketHandler`: passes the WebSocket handshake to `url` (`rewritePattern`; `ws:`,
/// `wss:`, `http:` or `https:`) and splices the connections once the upstream accepts.
pub async fn websocket(req: Request, cx: &Context, url: &str) -> Response {
    cx.runtime().upstream().websocket(req.into_http(), cx, url).await
}

/// `openApiSpecHandler`: the project's public OpenAPI document (bundled at generation time,
/// every `x-zuplo-*` member removed), compiled into the binary. `HEAD` gets the headers only.
pub fn openapi_document(req: &Request, document: &'static str) -> Response {
    let body = if req.method() == http::Method::HEAD { Body::empty() } else { Body::from(document) };
    let mut resp = Response::new(body);
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp.headers_mut().insert(header::CONTENT_LENGTH, HeaderValue::from(document.len()));
    resp
}

/// The answer of a module stub written by `specgate generate --stub-missing`.
pub fn not_implemented(cx: &Context, module: &str) -> Response {
    cx.problem(
        Problem::new(StatusCode::NOT_IMPLEMENTED)
            .with_detail(format!("`{module}` is not implemented yet: it is a stub written by specgate")),
    )
}
