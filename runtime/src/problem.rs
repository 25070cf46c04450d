//! RFC 9457 problem details, the one error format of every response the gateway itself makes.

use std::borrow::Cow;

use axum::body::Body;
use http::{HeaderValue, StatusCode, header};
use serde_json::{Map, Value};

use crate::Response;

/// The media type of problem responses.
pub const CONTENT_TYPE: &str = "application/problem+json";

/// A problem response under construction: status, title, detail, extension members.
///
/// The trace member (`timestamp`, `requestId`) and `instance` are filled in by
/// [`Problem::into_response_with`] from the request the problem answers.
#[derive(Debug, Clone)]
pub struct Problem(Box<Inner>);

// Boxed so that `Result<_, Problem>` stays one pointer wide on the hot path.
#[derive(Debug, Clone)]
struct Inner {
    status: StatusCode,
    title: Cow<'static, str>,
    detail: Option<Cow<'static, str>>,
    type_uri: Option<Cow<'static, str>>,
    extensions: Map<String, Value>,
    headers: Vec<(header::HeaderName, HeaderValue)>,
}

impl Problem {
    /// A problem with the status's canonical reason as its title.
    pub fn new(status: StatusCode) -> Self {
        Problem(Box::new(Inner {
            status,
            title: Cow::Borrowed(status.canonical_reason().unwrap_or("Error")),
            detail: None,
            type_uri: None,
            extensions: Map::new(),
            headers: Vec::new(),
        }))
    }

    /// 400 Bad Request.
    pub fn bad_request(detail: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::BAD_REQUEST).with_detail(detail)
    }

    /// 404 Not Found.
    pub fn not_found(detail: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::NOT_FOUND).with_detail(detail)
    }

    /// 500 Internal Server Error.
    pub fn internal(detail: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR).with_detail(detail)
    }

    /// 502 Bad Gateway: the upstream could not be reached or broke the exchange.
    pub fn bad_gateway(detail: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::BAD_GATEWAY).with_detail(detail)
    }

    /// 504 Gateway Timeout: the upstream did not answer in time.
    pub fn gateway_timeout(detail: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::GATEWAY_TIMEOUT).with_detail(detail)
    }

    /// Sets the human-readable explanation of this occurrence.
    pub fn with_detail(mut self, detail: impl Into<Cow<'static, str>>) -> Self {
        self.0.detail = Some(detail.into());
        self
    }

    /// Overrides the title.
    pub fn with_title(mut self, title: impl Into<Cow<'static, str>>) -> Self {
        self.0.title = title.into();
        self
    }

    /// Overrides the problem type URI (default: the httpproblems.com page of the status).
    pub fn with_type(mut self, type_uri: impl Into<Cow<'static, str>>) -> Self {
        self.0.type_uri = Some(type_uri.into());
        self
    }

    /// Adds an extension member to the body.
    pub fn with_extension(mut self, key: impl Into<String>, value: impl Into<Value>) -> Self {
        self.0.extensions.insert(key.into(), value.into());
        self
    }

    /// Adds a response header (for example `Allow` on a 405 or `Retry-After` on a 429).
    pub fn with_header(mut self, name: header::HeaderName, value: HeaderValue) -> Self {
        self.0.headers.push((name, value));
        self
    }

    /// The status code.
    pub fn status(&self) -> StatusCode {
        self.0.status
    }

    /// The detail, if any.
    pub fn detail(&self) -> Option<&str> {
        self.0.detail.as_deref()
    }

    /// Renders the problem for the request at `instance` with id `request_id`.
    pub fn into_response_with(self, instance: &str, request_id: &str) -> Response {
        let this = *self.0;
        let mut body = Map::with_capacity(7 + this.extensions.len());
        let type_uri = match this.type_uri {
            Some(t) => t.into_owned(),
            None => format!("https://httpproblems.com/http-status/{}", this.status.as_u16()),
        };
        body.insert("type".into(), Value::String(type_uri));
        body.insert("title".into(), Value::String(this.title.into_owned()));
        body.insert("status".into(), Value::from(this.status.as_u16()));
        if let Some(detail) = this.detail {
            body.insert("detail".into(), Value::String(detail.into_owned()));
        }
        body.insert("instance".into(), Value::String(instance.to_owned()));
        let mut trace = Map::with_capacity(2);
        trace.insert("timestamp".into(), Value::String(crate::time::now_rfc3339()));
        trace.insert("requestId".into(), Value::String(request_id.to_owned()));
        body.insert("trace".into(), Value::Object(trace));
        for (k, v) in this.extensions {
            body.entry(k).or_insert(v);
        }
        let bytes = serde_json::to_vec(&Value::Object(body)).unwrap_or_default();
        let mut response = Response::new(Body::from(bytes));
        *response.status_mut() = this.status;
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
        for (name, value) in this.headers {
            headers.append(name, value);
        }
        response
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.0.status.as_u16(), self.0.title)?;
        if let Some(d) = &self.0.detail {
            write!(f, ": {d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Problem {}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn renders_rfc9457_body_with_trace() {
        let resp = Problem::not_found("no route")
            .with_extension("hint", "check the path")
            .into_response_with("/x", "req-1");
        assert_eq!(resp.status(), StatusCode::NOT_FOUND);
        assert_eq!(resp.headers()[header::CONTENT_TYPE], CONTENT_TYPE);
        let body = resp.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        let v: Value = serde_json::from_slice(&body).unwrap_or_default();
        assert_eq!(v["type"], "https://httpproblems.com/http-status/404");
        assert_eq!(v["title"], "Not Found");
        assert_eq!(v["status"], 404);
        assert_eq!(v["detail"], "no route");
        assert_eq!(v["instance"], "/x");
        assert_eq!(v["trace"]["requestId"], "req-1");
        assert!(v["trace"]["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')));
        assert_eq!(v["hint"], "check the path");
    }
}
