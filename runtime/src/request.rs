//! The request as policies, hooks and handlers see it: the HTTP request plus what the gateway
//! learned about it (path parameters, the authenticated user).

use std::borrow::Cow;
use std::ops::{Deref, DerefMut};

use axum::body::Body;
use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Method, Uri};
use http_body_util::BodyExt;

use crate::context::User;
use crate::Problem;

/// The request flowing through a route: `request.user`, `request.params`, the query and the
/// body. Dereferences to [`http::Request`] for method, URI, headers and extensions.
#[derive(Debug)]
pub struct Request {
    inner: http::Request<Body>,
    /// The caller, once an authentication policy accepted it (`request.user` in Zuplo).
    pub user: Option<User>,
    /// The route's path parameters (`request.params`), percent-decoded.
    pub params: Params,
}

impl Deref for Request {
    type Target = http::Request<Body>;
    fn deref(&self) -> &Self::Target {
        &self.inner
    }
}

impl DerefMut for Request {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.inner
    }
}

impl From<http::Request<Body>> for Request {
    fn from(inner: http::Request<Body>) -> Self {
        Request { inner, user: None, params: Params::default() }
    }
}

impl Request {
    /// Wraps an HTTP request with the route's parameters.
    pub fn new(inner: http::Request<Body>, params: Params) -> Self {
        Request { inner, user: None, params }
    }

    /// The HTTP request, for the proxy.
    pub fn into_http(self) -> http::Request<Body> {
        self.inner
    }

    /// A header as text (`None` when absent or not visible ASCII).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.inner.headers().get(name).and_then(|v| v.to_str().ok())
    }

    /// Sets a header, replacing earlier values. Invalid names or values are refused (no
    /// header injection through configuration or custom code).
    pub fn set_header(&mut self, name: &str, value: &str) -> Result<(), Problem> {
        let (n, v) = header_pair(name, value)?;
        self.inner.headers_mut().insert(n, v);
        Ok(())
    }

    /// The first value of query parameter `name`, decoded as forms are.
    pub fn query(&self, name: &str) -> Option<Cow<'_, str>> {
        crate::context::query_get(self.inner.uri().query()?, name)
    }

    /// Every query parameter in order, decoded.
    pub fn query_pairs(&self) -> Vec<(String, String)> {
        query_pairs(self.inner.uri().query().unwrap_or(""))
    }

    /// Replaces the query string with `pairs` (encoded as forms are); an empty list removes it.
    pub fn set_query_pairs(&mut self, pairs: &[(String, String)]) -> Result<(), Problem> {
        let mut q = String::new();
        for (i, (k, v)) in pairs.iter().enumerate() {
            if i > 0 {
                q.push('&');
            }
            crate::template::push_component(&mut q, k);
            q.push('=');
            crate::template::push_component(&mut q, v);
        }
        let path = self.inner.uri().path().to_owned();
        let pq = if q.is_empty() { path } else { format!("{path}?{q}") };
        let mut parts = self.inner.uri().clone().into_parts();
        parts.path_and_query = Some(pq.parse().map_err(|_| Problem::internal("cannot rebuild the query string"))?);
        *self.inner.uri_mut() = Uri::from_parts(parts).map_err(|_| Problem::internal("cannot rebuild the request URL"))?;
        Ok(())
    }

    /// Replaces the body (and its `Content-Length`).
    pub fn set_body(&mut self, body: impl Into<Bytes>) {
        let bytes: Bytes = body.into();
        let len = bytes.len();
        *self.inner.body_mut() = Body::from(bytes);
        self.inner.headers_mut().remove(http::header::TRANSFER_ENCODING);
        self.inner.headers_mut().insert(http::header::CONTENT_LENGTH, HeaderValue::from(len));
    }

    /// Reads the whole body (at most `limit` bytes; more is a 413 problem). The request keeps
    /// a copy so it can still be forwarded.
    pub async fn bytes(&mut self, limit: usize) -> Result<Bytes, Problem> {
        let body = std::mem::replace(self.inner.body_mut(), Body::empty());
        let collected = http_body_util::Limited::new(body, limit).collect().await.map_err(|e| {
            if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() {
                Problem::new(http::StatusCode::PAYLOAD_TOO_LARGE)
                    .with_detail(format!("the request body is larger than {limit} bytes"))
            } else {
                Problem::bad_request("the request body could not be read")
            }
        })?;
        let bytes = collected.to_bytes();
        *self.inner.body_mut() = Body::from(bytes.clone());
        Ok(bytes)
    }

    /// Reads the body as UTF-8 text (at most 10 MiB).
    pub async fn text(&mut self) -> Result<String, Problem> {
        let b = self.bytes(10 * 1024 * 1024).await?;
        String::from_utf8(b.to_vec()).map_err(|_| Problem::bad_request("the request body is not UTF-8 text"))
    }

    /// Reads the body as JSON (at most 10 MiB).
    pub async fn json<T: serde::de::DeserializeOwned>(&mut self) -> Result<T, Problem> {
        let b = self.bytes(10 * 1024 * 1024).await?;
        serde_json::from_slice(&b).map_err(|e| Problem::bad_request(format!("the request body is not valid JSON: {e}")))
    }

    /// What outbound policies and response hooks get to see: everything but the body.
    pub fn head(&self) -> RequestHead {
        RequestHead {
            method: self.inner.method().clone(),
            uri: self.inner.uri().clone(),
            headers: self.inner.headers().clone(),
            user: self.user.clone(),
            params: self.params.clone(),
        }
    }
}

/// A request without its body, kept for the response side of the lifecycle.
#[derive(Debug, Clone)]
pub struct RequestHead {
    /// Method.
    pub method: Method,
    /// URI as received (after inbound policies changed it).
    pub uri: Uri,
    /// Headers (after inbound policies changed them).
    pub headers: HeaderMap,
    /// The authenticated caller, if any.
    pub user: Option<crate::context::User>,
    /// Path parameters.
    pub params: Params,
}

impl RequestHead {
    /// A header as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Path parameters of the matched route, by name or by position.
#[derive(Debug, Clone, Default)]
pub struct Params {
    names: &'static [&'static str],
    values: Vec<String>,
}

impl Params {
    /// Parameters with these names and values (same order).
    pub fn new(names: &'static [&'static str], values: Vec<String>) -> Self {
        Params { names, values }
    }

    /// A parameter by name.
    pub fn get(&self, name: &str) -> Option<&str> {
        let i = self.names.iter().position(|n| *n == name)?;
        self.values.get(i).map(String::as_str)
    }

    /// A parameter by position (`""` when out of range).
    pub fn at(&self, i: usize) -> &str {
        self.values.get(i).map(String::as_str).unwrap_or("")
    }

    /// `(name, value)` pairs.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, &str)> {
        self.names.iter().copied().zip(self.values.iter().map(String::as_str))
    }

    /// Number of parameters.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }
}

/// Decodes a raw query string into pairs.
pub fn query_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (form_decode(k), form_decode(v))
        })
        .collect()
}

fn form_decode(s: &str) -> String {
    crate::path::percent_decode(&s.replace('+', " ")).into_owned()
}

/// Validates a header name and value pair.
pub fn header_pair(name: &str, value: &str) -> Result<(HeaderName, HeaderValue), Problem> {
    let n = HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| Problem::internal(format!("`{name}` is not a valid header name")))?;
    let v = HeaderValue::from_str(value)
        .map_err(|_| Problem::internal(format!("the value for header `{name}` is not a valid header value")))?;
    Ok((n, v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_round_trip() {
        let mut r = Request::from(http::Request::builder().uri("/a?x=1&y=a%20b+c").body(Body::empty()).unwrap_or_default());
        assert_eq!(r.query("y").as_deref(), Some("a b c"));
        let mut pairs = r.query_pairs();
        pairs.push(("z".into(), "&=".into()));
        assert!(r.set_query_pairs(&pairs).is_ok());
        assert_eq!(r.uri().to_string(), "/a?x=1&y=a%20b%20c&z=%26%3D");
        assert!(r.set_query_pairs(&[]).is_ok());
        assert_eq!(r.uri().to_string(), "/a");
    }

    #[test]
    fn header_values_cannot_inject() {
        let mut r = Request::from(http::Request::new(Body::empty()));
        assert!(r.set_header("x-a", "ok").is_ok());
        assert!(r.set_header("x-a", "bad\r\nx-b: 1").is_err());
        assert!(r.set_header("bad name", "v").is_err());
    }
}
