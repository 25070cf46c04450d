//! request-size-limit-inbound.

use http::StatusCode;
use serde::Deserialize;

use crate::policy::{Flow, FromOptions, Inbound};
use crate::{Context, Problem, Request};

/// Options of request-size-limit-inbound.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RequestSizeLimitOptions {
    /// The largest accepted body, in bytes. Required.
    pub max_size_in_bytes: u64,
    /// Trust a `Content-Length` at or under the limit without reading the body (default
    /// false).
    #[serde(default)]
    pub trust_content_length_header: bool,
}

/// `RequestSizeLimitInboundPolicy`: refuses bodies larger than `maxSizeInBytes` with 413.
///
/// A declared `Content-Length` over the limit is refused at once, without reading. Otherwise
/// (no length, chunked, or a length that is not trusted) the body is read into memory, at
/// most `maxSizeInBytes` bytes, and the request continues with the buffered copy; reading
/// stops as soon as the limit is passed, so memory stays bounded by the limit. With
/// `trustContentLengthHeader`, a declared length within the limit lets the body stream on
/// unread (hyper itself enforces that an HTTP/1.1 body matches its `Content-Length`).
#[derive(Debug, Clone)]
pub struct RequestSizeLimitInbound {
    max: u64,
    trust_content_length: bool,
}

impl FromOptions for RequestSizeLimitInbound {
    type Options = RequestSizeLimitOptions;
    fn from_options(options: Self::Options, _name: &str) -> Result<Self, String> {
        Ok(RequestSizeLimitInbound {
            max: options.max_size_in_bytes,
            trust_content_length: options.trust_content_length_header,
        })
    }
}

impl RequestSizeLimitInbound {
    fn too_large(&self) -> Problem {
        Problem::new(StatusCode::PAYLOAD_TOO_LARGE)
            .with_detail(format!("the request body is larger than {} bytes", self.max))
    }
}

impl Inbound for RequestSizeLimitInbound {
    async fn on_request(&self, mut req: Request, _cx: &mut Context) -> Flow {
        let declared = req.header("content-length").and_then(|v| v.trim().parse::<u64>().ok());
        match declared {
            Some(len) if len > self.max => return Flow::Problem(self.too_large()),
            Some(_) if self.trust_content_length => return Flow::Continue(req),
            _ => {}
        }
        // The body's own size hint (exact for in-memory bodies) also answers without reading.
        if http_body::Body::size_hint(req.body()).lower() > self.max {
            return Flow::Problem(self.too_large());
        }
        // A limit beyond the address space cannot be reached by a buffer anyway.
        let limit = usize::try_from(self.max).unwrap_or(usize::MAX);
        match req.bytes(limit).await {
            Ok(_) => Flow::Continue(req),
            Err(p) if p.status() == StatusCode::PAYLOAD_TOO_LARGE => Flow::Problem(self.too_large()),
            Err(p) => Flow::Problem(p),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use axum::body::Body;
    use bytes::Bytes;
    use futures_util::StreamExt;

    use super::*;
    use crate::policies::test_context;
    use crate::policies::test_util::{body_text, build, continued, must, problem_status, request};
    use serde_json::json;

    /// A chunked body (no size hint) of `chunks` 10-byte chunks that counts what was pulled.
    fn chunked(chunks: usize, pulled: Arc<AtomicUsize>) -> Body {
        let stream = futures_util::stream::iter(0..chunks).map(move |_| {
            pulled.fetch_add(1, Ordering::SeqCst);
            Ok::<_, Infallible>(Bytes::from_static(b"0123456789"))
        });
        Body::from_stream(stream)
    }

    #[tokio::test]
    async fn chunked_body_within_the_limit_is_buffered_and_kept() {
        let p: RequestSizeLimitInbound = must(build(json!({"maxSizeInBytes": 30})));
        let mut cx = test_context();
        let req = request("POST", "/a", chunked(3, Arc::default()));
        let req = must(continued(p.on_request(req, &mut cx).await));
        assert_eq!(body_text(req.into_http().into_body()).await, "012345678901234567890123456789");
    }

    #[tokio::test]
    async fn chunked_body_over_the_limit_is_413_and_reading_stops() {
        let p: RequestSizeLimitInbound = must(build(json!({"maxSizeInBytes": 25})));
        let mut cx = test_context();
        let pulled = Arc::new(AtomicUsize::new(0));
        let req = request("POST", "/a", chunked(1000, pulled.clone()));
        let flow = p.on_request(req, &mut cx).await;
        assert_eq!(problem_status(&flow), Some(413));
        // Reading stopped right after the chunk that crossed the limit.
        assert_eq!(pulled.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn declared_length_over_the_limit_is_413_without_reading() {
        for trust in [false, true] {
            let p: RequestSizeLimitInbound = must(build(json!({"maxSizeInBytes": 100, "trustContentLengthHeader": trust})));
            let mut cx = test_context();
            let pulled = Arc::new(AtomicUsize::new(0));
            let mut req = request("POST", "/a", chunked(1, pulled.clone()));
            req.headers_mut().insert(http::header::CONTENT_LENGTH, http::HeaderValue::from(101));
            assert_eq!(problem_status(&p.on_request(req, &mut cx).await), Some(413));
            assert_eq!(pulled.load(Ordering::SeqCst), 0, "trust={trust}");
        }
    }

    #[tokio::test]
    async fn trusted_length_within_the_limit_streams_unread() {
        let p: RequestSizeLimitInbound = must(build(json!({"maxSizeInBytes": 100, "trustContentLengthHeader": true})));
        let mut cx = test_context();
        let pulled = Arc::new(AtomicUsize::new(0));
        let mut req = request("POST", "/a", chunked(2, pulled.clone()));
        req.headers_mut().insert(http::header::CONTENT_LENGTH, http::HeaderValue::from(20));
        let req = must(continued(p.on_request(req, &mut cx).await));
        assert_eq!(pulled.load(Ordering::SeqCst), 0);
        assert_eq!(body_text(req.into_http().into_body()).await.len(), 20);
    }

    #[tokio::test]
    async fn untrusted_length_that_lies_is_still_checked() {
        let p: RequestSizeLimitInbound = must(build(json!({"maxSizeInBytes": 15})));
        let mut cx = test_context();
        let mut req = request("POST", "/a", chunked(2, Arc::default()));
        req.headers_mut().insert(http::header::CONTENT_LENGTH, http::HeaderValue::from(5));
        assert_eq!(problem_status(&p.on_request(req, &mut cx).await), Some(413));
    }

    #[tokio::test]
    async fn exact_limit_is_accepted_and_in_memory_bodies_are_checked_by_size() {
        let p: RequestSizeLimitInbound = must(build(json!({"maxSizeInBytes": 5})));
        let mut cx = test_context();
        let req = must(continued(p.on_request(request("POST", "/a", "12345"), &mut cx).await));
        assert_eq!(body_text(req.into_http().into_body()).await, "12345");
        assert_eq!(problem_status(&p.on_request(request("POST", "/a", "123456"), &mut cx).await), Some(413));
        let req = must(continued(p.on_request(request("GET", "/a", ""), &mut cx).await));
        assert_eq!(req.method(), http::Method::GET);
    }

    #[test]
    fn options_are_checked() {
        assert!(build::<RequestSizeLimitInbound>(json!({})).is_err());
        assert!(build::<RequestSizeLimitInbound>(json!({"maxSizeInBytes": -1})).is_err());
        assert!(build::<RequestSizeLimitInbound>(json!({"maxSizeInBytes": 1, "trustContentLengthHeader": true})).is_ok());
    }
}
