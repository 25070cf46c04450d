//! The built-in handlers of `$import(@zuplo/runtime)`: URL forward, URL rewrite, redirect.
//!
//! Generated route functions render their URL templates (compiled Rust, see
//! [`crate::template`]) and hand the result to one of these.

use axum::body::Body;
use http::{HeaderValue, StatusCode, header};

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
    let query = if opts.forward_search { cx.query.as_deref().filter(|q| !q.is_empty()) } else { None };
    let mut url = String::with_capacity(base.len() + cx.pathname.len() + query.map_or(0, |q| q.len() + 1));
    url.push_str(base);
    url.push_str(&cx.pathname);
    if let Some(q) = query {
        url.push('?');
        url.push_str(q);
    }
    cx.runtime.upstream().send(req, cx, &url, opts.follow_redirects).await
}

/// `urlRewriteHandler`: the rendered `rewritePattern` is the upstream URL; with
/// `forwardSearch` the incoming query is appended (merged when the pattern has one).
pub async fn url_rewrite(req: Request, cx: &Context, mut url: String, opts: ForwardOptions) -> Response {
    if opts.forward_search
        && let Some(q) = cx.query.as_deref().filter(|q| !q.is_empty()) {
            url.push(if url.contains('?') { '&' } else { '?' });
            url.push_str(q);
        }
    cx.runtime.upstream().send(req, cx, &url, opts.follow_redirects).await
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
        Err(_) => crate::proxy::problem_response(
            Problem::internal("the redirect location is not a valid header value"),
            cx,
        ),
    }
}

/// Turns the result of a template rendering into the response to send when it failed.
pub fn template_failed(problem: Problem, cx: &Context) -> Response {
    crate::proxy::problem_response(problem, cx)
}
