//! Lifecycle hooks of the gateway.

use specgate_runtime::http::HeaderValue;
use specgate_runtime::prelude::*;
use std::sync::atomic::{AtomicUsize, Ordering};

static FINAL_CALLS: AtomicUsize = AtomicUsize::new(0);

/// Responses seen by the final hook.
pub fn final_calls() -> usize {
    FINAL_CALLS.load(Ordering::SeqCst)
}

pub struct Hooks;

pub fn hooks() -> Hooks {
    Hooks
}

impl specgate_runtime::Hooks for Hooks {
    /// Trailing slashes are dropped before routing: `/headers/` is `/headers`.
    async fn pre_routing(&self, mut req: specgate_runtime::http::Request<Body>) -> Result<specgate_runtime::http::Request<Body>, Response> {
        let path = req.uri().path();
        if path.len() > 1 && path.ends_with('/') {
            let trimmed = path.trim_end_matches('/').to_owned();
            let pq = match req.uri().query() {
                Some(q) => format!("{trimmed}?{q}"),
                None => trimmed,
            };
            if let Ok(uri) = pq.parse() {
                *req.uri_mut() = uri;
            }
        }
        Ok(req)
    }

    async fn on_request(&self, mut req: Request, cx: &mut Context) -> Flow {
        cx.custom.insert("hooked".into(), json!(true));
        let _ = req.set_header("x-trace", "hook");
        Flow::Continue(req)
    }

    async fn on_response(&self, mut resp: Response, _req: &RequestHead, _cx: &mut Context) -> Response {
        let before = resp.headers().get("x-trace").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
        let value = if before.is_empty() { "response-hook".to_owned() } else { format!("{before},response-hook") };
        if let Ok(v) = HeaderValue::from_str(&value) {
            resp.headers_mut().insert("x-trace", v);
        }
        resp.headers_mut().insert("x-hooked", HeaderValue::from_static("1"));
        resp
    }

    fn not_found(&self, problem: Problem) -> Problem {
        problem.with_detail("nothing here (policy-showcase)")
    }

    fn on_error(&self, problem: Problem) -> Problem {
        problem.with_extension("support", "https://status.example.com")
    }

    fn format_problem(&self, problem: Problem, instance: &str, request_id: &str) -> Response {
        let mut resp = problem.into_response_with(instance, request_id);
        resp.headers_mut().insert("x-problem-format", HeaderValue::from_static("showcase"));
        resp
    }

    async fn on_response_final(&self, _status: specgate_runtime::http::StatusCode, _headers: &specgate_runtime::http::HeaderMap, _req: &RequestHead, _cx: &Context) {
        FINAL_CALLS.fetch_add(1, Ordering::SeqCst);
    }
}
