//! caching-inbound (`CachingInboundPolicy`): answers repeated requests from stored responses
//! ([`crate::response_cache`]: in process, or in Redis when `CACHE_REDIS_URL` is set).
//!
//! A request whose method is in `cacheHttpMethods` is looked up by its key: the policy's
//! name and `cacheId`, the method, the normalized path, the query as sent, the request body
//! (when there is one: a body larger than `CACHE_MAX_ENTRY_BYTES` or of unknown length makes
//! the request pass uncached), the values of the configured `headers`, `Range`, and, unless
//! `dangerouslyIgnoreAuthorizationHeader`, the
//! `Authorization` header and the authenticated user (so one caller never gets a response
//! stored for another). A hit answers at once with `Age` and `Cache-Status: specgate; hit`;
//! the handler and the outbound policies do not run.
//!
//! On a miss the request goes on, and the route's final response (after outbound policies)
//! is stored for `expirationSecondsTtl` seconds when its status is in `statusCodes` and it
//! carries no `Set-Cookie`, no `Cache-Control: no-store`, `private` or `no-cache`, and no
//! `Vary: *`. Other `Vary` headers are honoured: the entry is only served to requests with
//! the same values. The body streams to the client as it arrives and is collected on the
//! way; a body larger than `CACHE_MAX_ENTRY_BYTES`, or one that fails or is cut off, is not
//! stored. The response says what happened in `Cache-Status` (RFC 9211): `fwd=miss; stored`,
//! or `fwd=miss; detail=<reason>`.
//!
//! Concurrent misses of one key go upstream once: the others wait for the first and are
//! served what it stored (`Cache-Status: specgate; fwd=miss; collapsed`), or, when it stored
//! nothing, go upstream on their own. Methods outside `cacheHttpMethods` pass untouched.

use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::pin::Pin;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::{AUTHORIZATION, CACHE_CONTROL, CONTENT_LENGTH, HeaderName, HeaderValue, RANGE, SET_COOKIE, VARY};
use http::{HeaderMap, Method, StatusCode};
use http_body::{Body as HttpBody, Frame, SizeHint};
use serde::Deserialize;

use super::de;
use crate::policy::{Flow, FromOptions, Inbound};
use crate::response_cache::{
    CACHE_STATUS, CacheKey, CachedResponse, Flight, FlightLeader, KeyBuilder, ResponseCache, joined, now_millis,
    storable_headers,
};
use crate::server::Runtime;
use crate::{Body, Context, Request, Response};

/// How long a concurrent miss waits for the first request of its key before going upstream
/// on its own.
const FOLLOW_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest `expirationSecondsTtl` accepted (one year).
const MAX_TTL: Duration = Duration::from_secs(366 * 24 * 3600);
/// Zuplo's default `statusCodes`.
const DEFAULT_STATUS_CODES: &[u16] = &[200, 206, 301, 302, 303, 404, 410];

/// `headers`: a comma-separated string (as Zuplo's example writes it) or a list of names.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum HeaderNames {
    /// `"accept, x-tenant"`.
    Csv(String),
    /// `["accept", "x-tenant"]`.
    List(Vec<String>),
}

/// Options of `CachingInboundPolicy` (Zuplo's names).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CachingInboundOptions {
    /// Scopes the entries together with the policy name; change it (e.g. through `$env`) to
    /// start from an empty cache. Zuplo's documentation also spells it `cachedId`.
    #[serde(default, alias = "cachedId", deserialize_with = "de::opt_text")]
    pub cache_id: Option<String>,
    /// How long a response is served from the cache, in seconds (default 60; fractions allowed).
    #[serde(default)]
    pub expiration_seconds_ttl: Option<f64>,
    /// Statuses that are stored (default 200, 206, 301, 302, 303, 404, 410).
    #[serde(default)]
    pub status_codes: Option<Vec<u16>>,
    /// Methods that are cached (default `["GET"]`); others pass through untouched.
    #[serde(default)]
    pub cache_http_methods: Option<Vec<String>>,
    /// Request headers whose values are part of the key.
    #[serde(default)]
    pub headers: Option<HeaderNames>,
    /// Share entries between callers with different `Authorization` headers and users
    /// (default false).
    #[serde(default)]
    pub dangerously_ignore_authorization_header: bool,
}

/// `CachingInboundPolicy`.
#[derive(Debug, Clone)]
pub struct CachingInbound {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    name: String,
    /// `cacheId` (entries are scoped by the policy name and this).
    cache_id: Option<String>,
    ttl: Duration,
    statuses: Vec<StatusCode>,
    methods: Vec<Method>,
    headers: Vec<HeaderName>,
    ignore_auth: bool,
    cache: Arc<ResponseCache>,
}

impl FromOptions for CachingInbound {
    type Options = CachingInboundOptions;
    /// Uses the process-wide cache ([`ResponseCache::shared`]); call inside the Tokio runtime
    /// when `CACHE_REDIS_URL` is set.
    fn from_options(options: Self::Options, name: &str) -> Result<Self, String> {
        Self::new(options, name, ResponseCache::shared()?)
    }
}

impl CachingInbound {
    /// Builds the policy on a given cache (tests and custom wiring).
    pub fn new(options: CachingInboundOptions, name: &str, cache: Arc<ResponseCache>) -> Result<Self, String> {
        let secs = options.expiration_seconds_ttl.unwrap_or(60.0);
        let ttl = Duration::try_from_secs_f64(secs)
            .ok()
            .filter(|t| *t >= Duration::from_millis(1) && *t <= MAX_TTL)
            .ok_or_else(|| format!("expirationSecondsTtl must be more than 0 and at most one year, not {secs}"))?;
        let codes = options.status_codes.unwrap_or_else(|| DEFAULT_STATUS_CODES.to_vec());
        let statuses = codes
            .iter()
            .map(|&c| StatusCode::from_u16(c).map_err(|_| format!("statusCodes: {c} is not an HTTP status code")))
            .collect::<Result<Vec<_>, _>>()?;
        let methods = match options.cache_http_methods {
            None => vec![Method::GET],
            Some(list) => list
                .iter()
                .map(|m| {
                    Method::from_bytes(m.trim().to_ascii_uppercase().as_bytes())
                        .map_err(|_| format!("cacheHttpMethods: `{m}` is not an HTTP method"))
                })
                .collect::<Result<Vec<_>, _>>()?,
        };
        let names: Vec<String> = match options.headers {
            None => Vec::new(),
            Some(HeaderNames::Csv(s)) => s.split(',').map(str::to_owned).collect(),
            Some(HeaderNames::List(l)) => l,
        };
        let headers = names
            .iter()
            .map(|n| n.trim())
            .filter(|n| !n.is_empty())
            .map(|n| HeaderName::from_bytes(n.as_bytes()).map_err(|_| format!("headers: `{n}` is not a header name")))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(CachingInbound {
            inner: Arc::new(Inner {
                name: name.to_owned(),
                cache_id: options.cache_id,
                ttl,
                statuses,
                methods,
                headers,
                ignore_auth: options.dangerously_ignore_authorization_header,
                cache,
            }),
        })
    }
}

/// What the lookup found before the request went on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fwd {
    /// Nothing stored.
    Miss,
    /// A stored response for other values of its `Vary` headers.
    VaryMiss,
}

/// Why a response is not stored (the `detail` of `Cache-Status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NotStored {
    Status,
    NoStore,
    Private,
    NoCache,
    SetCookie,
    VaryStar,
    TooLarge,
}

fn cache_status(fwd: Fwd, outcome: Result<(), NotStored>) -> HeaderValue {
    HeaderValue::from_static(match (fwd, outcome) {
        (Fwd::Miss, Ok(())) => "specgate; fwd=miss; stored",
        (Fwd::VaryMiss, Ok(())) => "specgate; fwd=vary-miss; stored",
        (Fwd::Miss, Err(NotStored::Status)) => "specgate; fwd=miss; detail=status",
        (Fwd::Miss, Err(NotStored::NoStore)) => "specgate; fwd=miss; detail=no-store",
        (Fwd::Miss, Err(NotStored::Private)) => "specgate; fwd=miss; detail=private",
        (Fwd::Miss, Err(NotStored::NoCache)) => "specgate; fwd=miss; detail=no-cache",
        (Fwd::Miss, Err(NotStored::SetCookie)) => "specgate; fwd=miss; detail=set-cookie",
        (Fwd::Miss, Err(NotStored::VaryStar)) => "specgate; fwd=miss; detail=vary",
        (Fwd::Miss, Err(NotStored::TooLarge)) => "specgate; fwd=miss; detail=too-large",
        (Fwd::VaryMiss, Err(_)) => "specgate; fwd=vary-miss",
    })
}

const HIT: HeaderValue = HeaderValue::from_static("specgate; hit");
const COLLAPSED: HeaderValue = HeaderValue::from_static("specgate; fwd=miss; collapsed");

impl Inner {
    fn key(&self, req: &Request, body: Option<&[u8]>, cx: &Context) -> CacheKey {
        let mut k = KeyBuilder::new();
        k.part(b"caching-inbound/1")
            .part(self.name.as_bytes())
            .opt(self.cache_id.as_deref().map(str::as_bytes))
            .part(req.method().as_str().as_bytes())
            .part(cx.pathname.as_bytes())
            .opt(req.uri().query().map(str::as_bytes))
            .opt(body);
        for name in &self.headers {
            k.part(name.as_str().as_bytes()).header_values(req.headers().get_all(name).iter());
        }
        // A stored 206 answers only the same range.
        k.header_values(req.headers().get_all(RANGE).iter());
        if !self.ignore_auth {
            k.header_values(req.headers().get_all(AUTHORIZATION).iter());
            k.opt(req.user.as_ref().map(|u| u.sub.as_bytes()));
        }
        k.finish()
    }

    /// Whether `resp` may be stored, and the request headers it varies on.
    fn verdict(&self, resp: &Response) -> Result<Vec<HeaderName>, NotStored> {
        if !self.statuses.contains(&resp.status()) {
            return Err(NotStored::Status);
        }
        let h = resp.headers();
        if h.contains_key(SET_COOKIE) {
            return Err(NotStored::SetCookie);
        }
        for directive in list_items(h, &CACHE_CONTROL) {
            let name = directive.split('=').next().unwrap_or("").trim();
            if name.eq_ignore_ascii_case("no-store") {
                return Err(NotStored::NoStore);
            }
            if name.eq_ignore_ascii_case("private") {
                return Err(NotStored::Private);
            }
            if name.eq_ignore_ascii_case("no-cache") {
                return Err(NotStored::NoCache);
            }
        }
        let mut vary = Vec::new();
        for item in list_items(h, &VARY) {
            if item == "*" {
                return Err(NotStored::VaryStar);
            }
            match HeaderName::from_bytes(item.as_bytes()) {
                Ok(n) if !vary.contains(&n) => vary.push(n),
                Ok(_) => {}
                // Unreadable: no request can be shown to match.
                Err(_) => return Err(NotStored::VaryStar),
            }
        }
        let declared = h.get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > self.cache.max_entry_bytes() as u64) {
            return Err(NotStored::TooLarge);
        }
        Ok(vary)
    }

    /// The route's response on a miss: sent on, and stored when it qualifies.
    fn capture(&self, mut resp: Response, miss: Miss, runtime: &'static Runtime) -> Response {
        let vary = match self.verdict(&resp) {
            Ok(v) => v,
            Err(why) => {
                tracing::debug!(policy = %self.name, reason = ?why, "response not cached");
                resp.headers_mut().append(CACHE_STATUS, cache_status(miss.fwd, Err(why)));
                return resp;
            }
        };
        let vary = vary.into_iter().map(|n| {
            let v = joined(&miss.request_headers, &n);
            (n, v)
        });
        let h = resp.headers();
        let pending = Pending {
            status: resp.status(),
            headers: storable_headers(h),
            vary: vary.collect(),
            initial_age: h.get(http::header::AGE).and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse().ok()).unwrap_or(0),
            head_length: if miss.head { h.get(CONTENT_LENGTH).cloned() } else { None },
            ttl: self.ttl,
            key: miss.key,
            cache: self.cache.clone(),
            lead: miss.lead,
            runtime,
            limit: self.cache.max_entry_bytes(),
            chunks: Vec::new(),
            len: 0,
        };
        resp.headers_mut().append(CACHE_STATUS, cache_status(miss.fwd, Ok(())));
        let (parts, body) = resp.into_parts();
        if HttpBody::is_end_stream(&body) {
            // Nothing to stream (redirects, empty 404s): store at once.
            pending.finish();
            return Response::from_parts(parts, body);
        }
        Response::from_parts(parts, Body::new(Collecting { inner: body, pending: Some(pending) }))
    }
}

/// Items of a comma-separated header list, trimmed, across all its lines.
fn list_items<'a>(h: &'a HeaderMap, name: &HeaderName) -> impl Iterator<Item = &'a str> + 'a {
    h.get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

/// The keys whose flights this request leads (a request extension).
#[derive(Debug, Clone)]
struct Leading(Vec<CacheKey>);

/// What a miss carries to the route's response.
struct Miss {
    key: CacheKey,
    lead: Option<FlightLeader>,
    fwd: Fwd,
    /// For the values of the headers the response will say it varies on.
    request_headers: HeaderMap,
    head: bool,
}

/// A response on its way to the store.
struct Pending {
    status: StatusCode,
    headers: HeaderMap,
    vary: Vec<(HeaderName, Option<HeaderValue>)>,
    initial_age: u64,
    /// A HEAD response keeps its `Content-Length` (the body that would have been sent).
    head_length: Option<HeaderValue>,
    ttl: Duration,
    key: CacheKey,
    cache: Arc<ResponseCache>,
    lead: Option<FlightLeader>,
    runtime: &'static Runtime,
    limit: usize,
    chunks: Vec<Bytes>,
    len: usize,
}

impl Pending {
    /// Takes a chunk; `false` when the body is now too large to store.
    fn push(&mut self, chunk: &Bytes) -> bool {
        self.len = self.len.saturating_add(chunk.len());
        if self.len > self.limit {
            return false;
        }
        self.chunks.push(chunk.clone());
        true
    }

    /// The body ended: hands the entry to waiting requests and stores it in the background.
    /// The flight ends only once the store has it, so requests arriving meanwhile are served
    /// from the flight rather than sent upstream.
    fn finish(mut self) {
        let body = match self.chunks.len() {
            0 => Bytes::new(),
            1 => self.chunks.swap_remove(0),
            _ => {
                let mut b = BytesMut::with_capacity(self.len);
                for c in &self.chunks {
                    b.extend_from_slice(c);
                }
                b.freeze()
            }
        };
        let mut headers = self.headers;
        if let Some(len) = self.head_length {
            headers.insert(CONTENT_LENGTH, len);
        }
        let now = now_millis();
        let ttl_ms = u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX);
        let entry = Arc::new(CachedResponse {
            status: self.status,
            headers,
            body,
            vary: self.vary,
            stored_at_ms: now,
            expires_at_ms: now.saturating_add(ttl_ms),
            initial_age: self.initial_age,
        });
        if let Some(lead) = &self.lead {
            lead.publish(entry.clone());
        }
        let (cache, key, lead) = (self.cache, self.key, self.lead);
        self.runtime.spawn_background(async move {
            cache.put(key, entry).await;
            drop(lead);
        });
    }
}

/// The route's body, passed on frame by frame and collected for the store. Dropping it
/// before the end (client gone) or an error stores nothing and releases waiting requests.
struct Collecting {
    inner: Body,
    pending: Option<Pending>,
}

impl HttpBody for Collecting {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                let keep = match (frame.data_ref(), this.pending.as_mut()) {
                    (Some(data), Some(p)) => p.push(data),
                    // Trailers are not stored, so neither is a response that has them.
                    (None, Some(_)) => false,
                    (_, None) => true,
                };
                if !keep {
                    this.pending = None;
                } else if HttpBody::is_end_stream(&this.inner)
                    && let Some(p) = this.pending.take()
                {
                    p.finish();
                }
            }
            Poll::Ready(Some(Err(_))) => this.pending = None,
            Poll::Ready(None) => {
                if let Some(p) = this.pending.take() {
                    p.finish();
                }
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Inbound for CachingInbound {
    async fn on_request(&self, req: Request, cx: &mut Context) -> Flow {
        let inner = &self.inner;
        if !inner.methods.contains(req.method()) {
            return Flow::Continue(req);
        }
        // A request body is part of the key (two POSTs with different bodies are different
        // requests); one too large or of unknown length makes the request pass uncached.
        let mut req = req;
        let mut body = None;
        if !HttpBody::is_end_stream(req.body()) {
            let limit = inner.cache.max_entry_bytes();
            let declared = req.headers().get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
            if declared.is_none_or(|n| n > limit as u64) {
                return Flow::Continue(req);
            }
            match req.bytes(limit).await {
                Ok(b) => body = Some(b),
                Err(problem) => return Flow::Problem(problem),
            }
        }
        let key = inner.key(&req, body.as_deref(), cx);
        // The same policy twice in one chain would wait for itself: the second passes.
        if req.extensions().get::<Leading>().is_some_and(|l| l.0.contains(&key)) {
            return Flow::Continue(req);
        }
        let mut fwd = Fwd::Miss;
        let lead = match inner.cache.join(key) {
            Flight::Lead(lead) => {
                match inner.cache.get(&key).await {
                    Some(entry) if entry.matches(req.headers()) => {
                        lead.publish(entry.clone());
                        return Flow::Respond(entry.to_response(HIT));
                    }
                    Some(_) => fwd = Fwd::VaryMiss,
                    None => {}
                }
                Some(lead)
            }
            Flight::Follow(follower) => {
                // Stored a moment ago and still being written to the backend: a plain hit.
                if let Some(entry) = follower.ready()
                    && entry.is_fresh(now_millis())
                    && entry.matches(req.headers())
                {
                    return Flow::Respond(entry.to_response(HIT));
                }
                if let Some(entry) = follower.wait(FOLLOW_TIMEOUT).await
                    && entry.is_fresh(now_millis())
                    && entry.matches(req.headers())
                {
                    return Flow::Respond(entry.to_response(COLLAPSED));
                }
                // The first stored nothing (or not for this request): go on alone.
                None
            }
        };
        if lead.is_some() {
            match req.extensions_mut().get_mut::<Leading>() {
                Some(l) => l.0.push(key),
                None => {
                    req.extensions_mut().insert(Leading(vec![key]));
                }
            }
        }
        let miss = Miss { key, lead, fwd, request_headers: req.headers().clone(), head: req.method() == Method::HEAD };
        let this = self.inner.clone();
        let runtime = cx.runtime();
        cx.on_response(move |resp, _| this.capture(resp, miss, runtime));
        Flow::Continue(req)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::User;
    use crate::policies::test_context;
    use crate::policies::test_util::{body_text, continued, must, request, response};

    fn cache() -> Arc<ResponseCache> {
        Arc::new(ResponseCache::memory(1 << 20, 1 << 10))
    }

    fn policy(options: serde_json::Value, cache: &Arc<ResponseCache>) -> CachingInbound {
        let options: CachingInboundOptions = must(serde_json::from_value(options));
        must(CachingInbound::new(options, "cache-policy", cache.clone()))
    }

    fn header(resp: &Response, name: &str) -> Option<String> {
        resp.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
    }

    /// Sends `req` through the policy; on a miss `upstream` answers. Returns the response the
    /// client gets (body read to the end) and whether the upstream was called.
    async fn exchange(p: &CachingInbound, req: Request, upstream: impl FnOnce() -> Response) -> (Response, String, bool) {
        let mut cx = test_context();
        let (resp, called) = match p.on_request(req, &mut cx).await {
            Flow::Continue(_) => (cx.finish_response(upstream()), true),
            Flow::Respond(r) => (cx.finish_response(r), false),
            Flow::Problem(p) => (cx.problem(p), false),
        };
        let (parts, body) = resp.into_parts();
        let text = body_text(body).await;
        // The store runs in the background once the body has ended.
        for _ in 0..100 {
            if p.inner.cache.flights_in_progress() == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        (Response::from_parts(parts, Body::empty()), text, called)
    }

    fn get(uri: &str) -> Request {
        request("GET", uri, "")
    }

    fn ok(body: &'static str) -> impl FnOnce() -> Response {
        move || response(200, &[("content-type", "text/plain")], body)
    }

    #[test]
    fn options_parse_and_validate() {
        let c = cache();
        let p = policy(json!({}), &c);
        assert_eq!(p.inner.ttl, Duration::from_secs(60));
        assert_eq!(p.inner.methods, vec![Method::GET]);
        assert_eq!(p.inner.statuses.iter().map(|s| s.as_u16()).collect::<Vec<_>>(), DEFAULT_STATUS_CODES);
        assert_eq!(p.inner.cache_id, None);
        let p = policy(
            json!({"cachedId": 7, "expirationSecondsTtl": 0.5, "statusCodes": [200], "cacheHttpMethods": ["get", "POST"],
                   "headers": "x-tenant, Accept", "dangerouslyIgnoreAuthorizationHeader": true}),
            &c,
        );
        assert_eq!(p.inner.cache_id.as_deref(), Some("7"));
        assert_eq!(p.inner.ttl, Duration::from_millis(500));
        assert_eq!(p.inner.methods, vec![Method::GET, Method::POST]);
        assert_eq!(p.inner.headers, vec![HeaderName::from_static("x-tenant"), HeaderName::from_static("accept")]);
        assert!(p.inner.ignore_auth);
        assert!(serde_json::from_value::<CachingInboundOptions>(json!({"ttl": 5})).is_err());
        for bad in [
            json!({"expirationSecondsTtl": 0}),
            json!({"expirationSecondsTtl": -1}),
            json!({"statusCodes": [42]}),
            json!({"cacheHttpMethods": ["GE T"]}),
            json!({"headers": ["bad header"]}),
        ] {
            let o: CachingInboundOptions = must(serde_json::from_value(bad.clone()));
            assert!(CachingInbound::new(o, "p", cache()).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn a_second_get_is_a_hit_with_age_and_cache_status() {
        let c = cache();
        let p = policy(json!({}), &c);
        let (first, body, called) = exchange(&p, get("/test?a=1"), ok("fresh")).await;
        assert!(called);
        assert_eq!((body.as_str(), header(&first, "cache-status").as_deref()), ("fresh", Some("specgate; fwd=miss; stored")));
        let (hit, body, called) = exchange(&p, get("/test?a=1"), ok("other")).await;
        assert!(!called);
        assert_eq!(body, "fresh");
        assert_eq!(header(&hit, "cache-status").as_deref(), Some("specgate; hit"));
        assert_eq!(header(&hit, "age").as_deref(), Some("0"));
        assert_eq!(header(&hit, "content-type").as_deref(), Some("text/plain"));
        // Another query is another entry.
        let (_, body, called) = exchange(&p, get("/test?a=2"), ok("second")).await;
        assert!(called);
        assert_eq!(body, "second");
    }

    #[tokio::test]
    async fn callers_do_not_share_entries_unless_told_to() {
        let c = cache();
        let with_auth = |auth: &str, user: Option<&str>| {
            let mut r = get("/test");
            must(r.set_header("authorization", auth));
            r.user = user.map(|u| User { sub: u.to_owned(), data: serde_json::Value::Null });
            r
        };
        let p = policy(json!({}), &c);
        assert!(exchange(&p, with_auth("Bearer a", None), ok("a")).await.2);
        assert!(exchange(&p, with_auth("Bearer b", None), ok("b")).await.2);
        assert_eq!(exchange(&p, with_auth("Bearer a", None), ok("x")).await.1, "a");
        // Same header, another authenticated user (a key in another header): apart.
        assert!(exchange(&p, with_auth("Bearer a", Some("bob")), ok("bob")).await.2);
        let shared = policy(json!({"cacheId": "shared", "dangerouslyIgnoreAuthorizationHeader": true}), &c);
        assert!(exchange(&shared, with_auth("Bearer a", Some("ann")), ok("one")).await.2);
        let (_, body, called) = exchange(&shared, with_auth("Bearer b", Some("bob")), ok("two")).await;
        assert_eq!((body.as_str(), called), ("one", false));
    }

    #[tokio::test]
    async fn what_is_not_stored() {
        let c = cache();
        let p = policy(json!({"statusCodes": [200]}), &c);
        type Case = (&'static str, u16, &'static [(&'static str, &'static str)], &'static str);
        let cases: [Case; 6] = [
            ("/status", 500, &[], "detail=status"),
            ("/no-store", 200, &[("cache-control", "public, No-Store")], "detail=no-store"),
            ("/private", 200, &[("cache-control", "private, max-age=60")], "detail=private"),
            ("/no-cache", 200, &[("cache-control", "no-cache")], "detail=no-cache"),
            ("/cookie", 200, &[("set-cookie", "session=1")], "detail=set-cookie"),
            ("/vary", 200, &[("vary", "*")], "detail=vary"),
        ];
        for (path, status, headers, detail) in cases {
            for _ in 0..2 {
                let (resp, _, called) = exchange(&p, get(path), || response(status, headers, "x")).await;
                assert!(called, "{path} was served from the cache");
                let cs = header(&resp, "cache-status").unwrap_or_default();
                assert!(cs.ends_with(detail), "{path}: {cs}");
            }
        }
        // Too large for an entry (1 KiB here), declared or streamed: passed through whole.
        let big = "b".repeat(2000);
        for _ in 0..2 {
            let b = big.clone();
            let (resp, body, called) = exchange(&p, get("/big"), move || response(200, &[("content-length", "2000")], b)).await;
            assert!(called);
            assert_eq!(body.len(), 2000);
            assert!(header(&resp, "cache-status").unwrap_or_default().ends_with("detail=too-large"));
        }
        for _ in 0..2 {
            let chunks: Vec<Result<Bytes, std::io::Error>> = vec![Ok(Bytes::from(big.clone())), Ok(Bytes::from("tail"))];
            let stream = Body::from_stream(futures_util::stream::iter(chunks));
            let (_, body, called) = exchange(&p, get("/big-stream"), move || Response::new(stream)).await;
            assert!(called);
            assert_eq!(body.len(), 2004);
        }
        // Methods not listed pass untouched.
        let (resp, _, called) = exchange(&p, request("POST", "/test", "x"), ok("post")).await;
        assert!(called);
        assert!(header(&resp, "cache-status").is_none());
        assert!(exchange(&p, request("POST", "/test", "x"), ok("post")).await.2);
    }

    #[tokio::test]
    async fn streamed_bodies_are_stored_whole_and_vary_is_honoured() {
        let c = cache();
        let p = policy(json!({}), &c);
        let chunks = || {
            let parts: Vec<Result<Bytes, std::io::Error>> = vec![Ok(Bytes::from("one;")), Ok(Bytes::from("two"))];
            let mut r = Response::new(Body::from_stream(futures_util::stream::iter(parts)));
            r.headers_mut().insert(VARY, HeaderValue::from_static("accept-language"));
            r
        };
        let with_lang = |l: &str| {
            let mut r = get("/stream");
            must(r.set_header("accept-language", l));
            r
        };
        assert!(exchange(&p, with_lang("de"), chunks).await.2);
        let (_, body, called) = exchange(&p, with_lang("de"), chunks).await;
        assert_eq!((body.as_str(), called), ("one;two", false));
        let (resp, _, called) = exchange(&p, with_lang("fr"), chunks).await;
        assert!(called);
        assert_eq!(header(&resp, "cache-status").as_deref(), Some("specgate; fwd=vary-miss; stored"));
    }

    #[tokio::test]
    async fn request_bodies_are_part_of_the_key() {
        let c = cache();
        let p = policy(json!({"cacheHttpMethods": ["POST"]}), &c);
        let post = |body: &'static str| {
            let mut r = request("POST", "/graphql", body);
            must(r.set_header("content-length", &body.len().to_string()));
            r
        };
        assert!(exchange(&p, post("{\"q\":1}"), ok("one")).await.2);
        assert!(exchange(&p, post("{\"q\":2}"), ok("two")).await.2);
        let (_, body, called) = exchange(&p, post("{\"q\":1}"), ok("x")).await;
        assert_eq!((body.as_str(), called), ("one", false));
        // The upstream still gets the body on a miss.
        let mut cx = test_context();
        let Ok(mut req) = continued(p.on_request(post("{\"q\":3}"), &mut cx).await) else { panic!("not a miss") };
        assert_eq!(must(req.bytes(100).await), Bytes::from("{\"q\":3}"));
        // Larger than an entry (1 KiB here): passes uncached.
        let big: &'static str = Box::leak("x".repeat(2000).into_boxed_str());
        for _ in 0..2 {
            let (resp, _, called) = exchange(&p, post(big), ok("big")).await;
            assert!(called);
            assert!(header(&resp, "cache-status").is_none());
        }
    }

    #[tokio::test]
    async fn the_same_policy_twice_in_a_chain_does_not_wait_for_itself() {
        let c = cache();
        let p = policy(json!({}), &c);
        let mut cx = test_context();
        let req = must(continued(p.on_request(get("/test"), &mut cx).await));
        let second = tokio::time::timeout(Duration::from_secs(2), p.on_request(req, &mut cx)).await;
        assert!(matches!(second, Ok(Flow::Continue(_))), "the second call waited or answered");
        let (_, body, _) = {
            let resp = cx.finish_response(response(200, &[], "once"));
            (resp.status(), body_text(resp.into_body()).await, ())
        };
        assert_eq!(body, "once");
    }

    #[tokio::test]
    async fn entries_expire() {
        let c = cache();
        let p = policy(json!({"expirationSecondsTtl": 0.2}), &c);
        assert!(exchange(&p, get("/test"), ok("1")).await.2);
        assert!(!exchange(&p, get("/test"), ok("2")).await.2);
        tokio::time::sleep(Duration::from_millis(250)).await;
        let (_, body, called) = exchange(&p, get("/test"), ok("3")).await;
        assert_eq!((body.as_str(), called), ("3", true));
    }

    #[tokio::test]
    async fn a_cut_off_body_is_not_stored_and_releases_followers() {
        let c = cache();
        let p = policy(json!({}), &c);
        let mut cx = test_context();
        let Ok(_) = continued(p.on_request(get("/test"), &mut cx).await) else { panic!("not a miss") };
        assert_eq!(c.flights_in_progress(), 1);
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(1);
        let stream = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|x| (x, rx)) });
        let resp = cx.finish_response(Response::new(Body::from_stream(stream)));
        let follower = {
            let p = p.clone();
            tokio::spawn(async move {
                let mut cx = test_context();
                matches!(p.on_request(get("/test"), &mut cx).await, Flow::Continue(_))
            })
        };
        must(tx.send(Ok(Bytes::from("partial"))).await);
        // The client goes away mid-body.
        drop(resp);
        drop(tx);
        assert!(must(follower.await), "the follower was not released to go upstream");
        let mut cx = test_context();
        assert!(continued(p.on_request(get("/test"), &mut cx).await).is_ok());
    }
}
