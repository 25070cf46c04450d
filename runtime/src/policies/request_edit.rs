//! change-method-inbound, set-body-inbound, sleep-inbound.

use std::time::Duration;

use bytes::Bytes;
use http::Method;
use serde::Deserialize;

use super::de;
use crate::policy::{Flow, FromOptions, Inbound};
use crate::{Context, Request};

/// Options of change-method-inbound.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ChangeMethodOptions {
    /// The new method: GET, POST, PUT, PATCH, DELETE, HEAD or OPTIONS (any case). Required.
    pub method: String,
}

/// `ChangeMethodInboundPolicy`: changes the request method sent upstream.
#[derive(Debug, Clone)]
pub struct ChangeMethodInbound(Method);

impl FromOptions for ChangeMethodInbound {
    type Options = ChangeMethodOptions;
    fn from_options(options: Self::Options, _name: &str) -> Result<Self, String> {
        let method = match options.method.trim().to_ascii_uppercase().as_str() {
            "GET" => Method::GET,
            "POST" => Method::POST,
            "PUT" => Method::PUT,
            "PATCH" => Method::PATCH,
            "DELETE" => Method::DELETE,
            "HEAD" => Method::HEAD,
            "OPTIONS" => Method::OPTIONS,
            _ => {
                return Err(format!(
                    "method `{}` is not one of GET, POST, PUT, PATCH, DELETE, HEAD, OPTIONS",
                    options.method
                ));
            }
        };
        Ok(ChangeMethodInbound(method))
    }
}

impl Inbound for ChangeMethodInbound {
    async fn on_request(&self, mut req: Request, _cx: &mut Context) -> Flow {
        *req.method_mut() = self.0.clone();
        Flow::Continue(req)
    }
}

/// Options of set-body-inbound.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SetBodyOptions {
    /// The new request body. Required.
    #[serde(deserialize_with = "de::text")]
    pub body: String,
}

/// `SetBodyInboundPolicy`: replaces the request body (and its `Content-Length`); other
/// headers such as `Content-Type` are left as they are.
#[derive(Debug, Clone)]
pub struct SetBodyInbound(Bytes);

impl FromOptions for SetBodyInbound {
    type Options = SetBodyOptions;
    fn from_options(options: Self::Options, _name: &str) -> Result<Self, String> {
        Ok(SetBodyInbound(Bytes::from(options.body)))
    }
}

impl Inbound for SetBodyInbound {
    async fn on_request(&self, mut req: Request, _cx: &mut Context) -> Flow {
        // `Bytes` clones share the buffer: no copy per request.
        req.set_body(self.0.clone());
        Flow::Continue(req)
    }
}

/// Options of sleep-inbound.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SleepOptions {
    /// How long to wait, in milliseconds. Required.
    pub sleep_in_ms: u64,
}

/// `SleepInboundPolicy`: waits, then continues (latency simulation).
#[derive(Debug, Clone)]
pub struct SleepInbound(Duration);

impl FromOptions for SleepInbound {
    type Options = SleepOptions;
    fn from_options(options: Self::Options, _name: &str) -> Result<Self, String> {
        Ok(SleepInbound(Duration::from_millis(options.sleep_in_ms)))
    }
}

impl Inbound for SleepInbound {
    async fn on_request(&self, req: Request, _cx: &mut Context) -> Flow {
        if !self.0.is_zero() {
            tokio::time::sleep(self.0).await;
        }
        Flow::Continue(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policies::test_context;
    use crate::policies::test_util::{body_text, build, continued, must, request};
    use serde_json::json;

    #[tokio::test]
    async fn changes_the_method() {
        let p: ChangeMethodInbound = must(build(json!({"method": "patch"})));
        let mut cx = test_context();
        let req = must(continued(p.on_request(request("GET", "/a", ""), &mut cx).await));
        assert_eq!(req.method(), Method::PATCH);
        for bad in ["TRACE", "CONNECT", "FETCH", ""] {
            assert!(build::<ChangeMethodInbound>(json!({ "method": bad })).is_err(), "{bad}");
        }
        assert!(build::<ChangeMethodInbound>(json!({})).is_err());
    }

    #[tokio::test]
    async fn replaces_the_body_and_its_length() {
        let p: SetBodyInbound = must(build(json!({"body": "{\"replaced\":true}"})));
        let mut cx = test_context();
        let mut req = request("POST", "/a", "original body that is longer");
        req.headers_mut().insert(http::header::CONTENT_LENGTH, http::HeaderValue::from(28));
        req.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
        let req = must(continued(p.on_request(req, &mut cx).await));
        assert_eq!(req.header("content-length"), Some("17"));
        assert_eq!(req.header("content-type"), Some("application/json"));
        assert_eq!(body_text(req.into_http().into_body()).await, "{\"replaced\":true}");
        assert!(build::<SetBodyInbound>(json!({})).is_err());
    }

    #[tokio::test]
    async fn sleeps_then_continues() {
        let p: SleepInbound = must(build(json!({"sleepInMs": 40})));
        let mut cx = test_context();
        let started = std::time::Instant::now();
        let req = must(continued(p.on_request(request("GET", "/a?x=1", ""), &mut cx).await));
        assert!(started.elapsed() >= Duration::from_millis(40));
        assert_eq!(req.uri().to_string(), "/a?x=1");
        assert!(build::<SleepInbound>(json!({"sleepInMs": -1})).is_err());
        assert!(build::<SleepInbound>(json!({})).is_err());
    }
}
