//! Upstream resilience of a route: its own timeouts, bounded retries under a budget, several
//! upstreams with weights, passive ejection and active health checks.
//!
//! A route without any of these options never comes here: its handler calls
//! [`crate::proxy::Upstream::send`] directly, so the plain forward path pays nothing for this
//! machinery. A route with some of them owns a [`RouteUpstream`] (built once at start-up), and
//! routes listing the same upstreams share one [`UpstreamPool`], so what one route learns about
//! an upstream (ejection, health) applies to all of them.
//!
//! Retries follow one rule: a request is sent again only when that cannot do harm.
//! - Nothing reached the upstream (no connection: refused, unreachable, connect timeout): any
//!   method, when its body can still be sent (untouched, or buffered).
//! - The request went out and no response head came back (reset, closed): idempotent methods
//!   only (GET, HEAD, OPTIONS, PUT, DELETE, TRACE), with an empty body or one buffered for the
//!   purpose (at most [`MAX_BUFFERED_BODY`] with a declared length).
//! - Never after a response head arrived (a 5xx answer passes through), never after the route's
//!   deadline, and never beyond the route's retry budget.

mod pool;
pub(crate) mod probe;
mod retry;

use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use http::{Method, StatusCode};
use http_body::{Frame, SizeHint};
use http_body_util::BodyExt;

pub use pool::{Ejection, HealthCheck, MAX_UPSTREAMS, MAX_WEIGHT, Target, UpstreamPool};
pub use retry::{RESERVE_RETRIES, RetryBudget, RetrySettings, backoff, is_idempotent};

use crate::proxy::{self, Failure, Stage, Upstream, Wait};
use crate::{Context, Problem, Response};

/// The largest request body of an idempotent request kept in memory so that it can be sent
/// again after the upstream broke the exchange (only bodies with a declared length, on routes
/// with retries).
pub const MAX_BUFFERED_BODY: u64 = 64 * 1024;

/// What a route sets beyond the global upstream defaults.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RouteSettings {
    /// Time allowed for the response head, all attempts included (`timeoutMs`; default
    /// `UPSTREAM_TIMEOUT_SECONDS`).
    pub timeout: Option<Duration>,
    /// Time allowed for one TCP connection (`connectTimeoutMs`; default
    /// `UPSTREAM_CONNECT_TIMEOUT_SECONDS`).
    pub connect_timeout: Option<Duration>,
    /// Retries (`retries`; none by default).
    pub retry: Option<RetrySettings>,
}

/// A route's upstream side: its settings, its retry budget, its upstream set when it has one,
/// and its own connection pool when it sets a connect timeout.
#[derive(Debug)]
pub struct RouteUpstream {
    settings: RouteSettings,
    budget: Option<RetryBudget>,
    pool: Option<Arc<UpstreamPool>>,
    client: OnceLock<Upstream>,
}

impl RouteUpstream {
    /// A route with `settings` that sends to the URL its handler builds (`pool` = `None`) or
    /// to one of `pool`'s upstreams.
    pub fn new(settings: RouteSettings, pool: Option<Arc<UpstreamPool>>) -> Self {
        let budget = settings.retry.filter(|r| r.max_retries > 0).map(|r| RetryBudget::new(r.budget_percent));
        RouteUpstream { settings, budget, pool, client: OnceLock::new() }
    }

    /// The route's upstream set, when it has several upstreams.
    pub fn pool(&self) -> Option<&Arc<UpstreamPool>> {
        self.pool.as_ref()
    }

    /// The settings.
    pub fn settings(&self) -> &RouteSettings {
        &self.settings
    }

    /// Builds what the route needs before it serves (its own client when it sets a connect
    /// timeout), so that the first request does not pay for it.
    pub fn prepare(&self, shared: &Upstream) {
        let _ = self.client(shared);
    }

    fn client<'a>(&'a self, shared: &'a Upstream) -> &'a Upstream {
        match self.settings.connect_timeout {
            Some(d) if d != shared.config().connect_timeout => self.client.get_or_init(|| shared.with_connect_timeout(d)),
            _ => shared,
        }
    }

    /// Sends `req` upstream: to `target` (an absolute URL) for a route without an upstream
    /// set, or to the chosen upstream's base followed by `target` (a path with its query).
    /// Returns the upstream's response or the problem that stands for the failure.
    pub async fn send(&self, req: http::Request<Body>, cx: &Context, target: &str, follow_redirects: bool) -> Response {
        match self.try_send(req, cx, target, follow_redirects).await {
            Ok(resp) => resp,
            Err(problem) => cx.problem(problem),
        }
    }

    async fn try_send(&self, req: http::Request<Body>, cx: &Context, target: &str, follow_redirects: bool) -> Result<Response, Problem> {
        let upstream = self.client(cx.runtime().upstream());
        let wait = Wait::from_now(self.settings.timeout.unwrap_or(upstream.config().timeout));
        let (parts, body) = req.into_parts();
        let mut headers = parts.headers;
        proxy::prepare_request_headers(&mut headers, cx, upstream.config().trusted_proxy_hops);
        let method = parts.method;
        let retry = self.settings.retry.filter(|r| r.max_retries > 0);
        let mut body = if follow_redirects {
            ReplayBody::Buffered(proxy::collect_replayable(body).await?.unwrap_or_default())
        } else {
            ReplayBody::new(body, &method, retry.is_some()).await?
        };
        if let Some(b) = &self.budget {
            b.deposit();
        }
        let pool = self.pool.as_deref();
        let mut retries = 0u32;
        let mut failed: Option<usize> = None;
        loop {
            let chosen = pool.map(|p| p.pick(failed));
            let joined;
            let url = match (pool, chosen) {
                (Some(p), Some(i)) => {
                    joined = join(p.targets()[i].base(), target);
                    joined.as_str()
                }
                _ => target,
            };
            let uri = proxy::parse_upstream_uri(url)?;
            if let (Some(p), Some(i)) = (pool, chosen) {
                p.count_attempt(i, retries > 0);
            }
            let result = if follow_redirects {
                let replay = body.buffered().filter(|b| !b.is_empty());
                upstream.follow(method.clone(), uri, headers.clone(), replay, cx, Some(wait)).await
            } else {
                let (attempt_body, slot) = body.for_attempt();
                let result = upstream.exchange(method.clone(), uri, headers.clone(), attempt_body, cx, wait).await;
                if let Some(slot) = slot {
                    body.reclaim(&slot);
                }
                result
            };
            let failure = match result {
                Ok(resp) => {
                    if let (Some(p), Some(i)) = (pool, chosen) {
                        p.record_status(i, resp.status());
                    }
                    return Ok(resp);
                }
                Err(f) => f,
            };
            if let (Some(p), Some(i)) = (pool, chosen) {
                p.record_failure(i, failure.stage);
            }
            let Some(r) = retry.filter(|r| retries < r.max_retries && may_retry(&failure, &method, &body)) else {
                return Err(failure.problem);
            };
            // Failing over to another upstream needs no pause; the same one gets a moment.
            let pause = match (pool, chosen) {
                (Some(p), Some(i)) if p.other_in_rotation(i) => Duration::ZERO,
                _ => backoff(r.backoff, retries),
            };
            if tokio::time::Instant::now() + pause >= wait.deadline {
                return Err(failure.problem);
            }
            if !self.budget.as_ref().is_some_and(RetryBudget::withdraw) {
                tracing::debug!(request_id = %cx.request_id, route = cx.route.label, "retry budget spent: not retrying");
                return Err(failure.problem);
            }
            tracing::debug!(request_id = %cx.request_id, route = cx.route.label, status = %failure.problem.status(), ?pause, "retrying the upstream exchange");
            crate::metrics::upstream_retry(cx.route.index);
            if !pause.is_zero() {
                tokio::time::sleep(pause).await;
            }
            retries += 1;
            failed = chosen;
        }
    }
}

/// `base` + `path` (the base has no trailing slash; a path without a leading one gets it).
fn join(base: &str, path: &str) -> String {
    let mut url = String::with_capacity(base.len() + path.len() + 1);
    url.push_str(base);
    if !path.is_empty() && !path.starts_with('/') && !path.starts_with('?') {
        url.push('/');
    }
    url.push_str(path);
    url
}

/// Whether the failed exchange may be sent again (see the module documentation). A 504 from a
/// connect timeout is `NotSent` (retried); one from the deadline is `TimedOut` (not).
fn may_retry(failure: &Failure, method: &Method, body: &ReplayBody) -> bool {
    match failure.stage {
        Stage::NotSent => body.available(),
        Stage::Sent => is_idempotent(method) && body.replayable(),
        Stage::TimedOut | Stage::Local => false,
    }
}

/// A request body as retries see it.
enum ReplayBody {
    /// No body: every attempt sends none.
    Empty,
    /// Kept in memory: every attempt sends a copy (reference counted).
    Buffered(Bytes),
    /// Streamed: only one attempt can send it. `None` once an attempt read from it.
    Streamed(Option<Body>),
}

type Slot = Arc<Mutex<Option<Body>>>;

impl ReplayBody {
    async fn new(body: Body, method: &Method, retries: bool) -> Result<ReplayBody, Problem> {
        use http_body::Body as _;
        if body.is_end_stream() || body.size_hint().exact() == Some(0) {
            return Ok(ReplayBody::Empty);
        }
        let small = body.size_hint().exact().is_some_and(|n| n <= MAX_BUFFERED_BODY);
        if retries && small && is_idempotent(method) {
            let limit = usize::try_from(MAX_BUFFERED_BODY).unwrap_or(usize::MAX);
            return match http_body_util::Limited::new(body, limit).collect().await {
                Ok(c) => Ok(ReplayBody::Buffered(c.to_bytes())),
                Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                    Err(Problem::new(StatusCode::PAYLOAD_TOO_LARGE).with_detail("the request body is larger than it declared"))
                }
                Err(_) => Err(Problem::bad_request("the request body could not be read")),
            };
        }
        Ok(ReplayBody::Streamed(Some(body)))
    }

    /// The body for the next attempt and, for a streamed body, the slot to take it back from
    /// when the attempt never read it.
    fn for_attempt(&mut self) -> (Body, Option<Slot>) {
        match self {
            ReplayBody::Empty => (Body::empty(), None),
            ReplayBody::Buffered(b) => (Body::from(b.clone()), None),
            ReplayBody::Streamed(b) => match b.take() {
                Some(inner) => {
                    let hint = http_body::Body::size_hint(&inner);
                    let slot: Slot = Arc::new(Mutex::new(Some(inner)));
                    (Body::new(Reclaimable { slot: slot.clone(), inner: None, hint }), Some(slot))
                }
                None => (Body::empty(), None),
            },
        }
    }

    /// Takes a streamed body back when the attempt did not read from it.
    fn reclaim(&mut self, slot: &Slot) {
        if let ReplayBody::Streamed(b) = self {
            *b = slot.lock().unwrap_or_else(PoisonError::into_inner).take();
        }
    }

    /// Whether another attempt can send the whole body.
    fn available(&self) -> bool {
        !matches!(self, ReplayBody::Streamed(None))
    }

    /// Whether the body can be sent again after an attempt sent it.
    fn replayable(&self) -> bool {
        matches!(self, ReplayBody::Empty | ReplayBody::Buffered(_))
    }

    fn buffered(&self) -> Option<Bytes> {
        match self {
            ReplayBody::Buffered(b) => Some(b.clone()),
            _ => None,
        }
    }
}

/// A streamed body handed to one attempt. It leaves the shared slot on its first read; if the
/// attempt fails before reading (no connection), the body is still in the slot and can go to
/// the next attempt.
struct Reclaimable {
    slot: Slot,
    inner: Option<Body>,
    hint: SizeHint,
}

impl http_body::Body for Reclaimable {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        if this.inner.is_none() {
            this.inner = this.slot.lock().unwrap_or_else(PoisonError::into_inner).take();
        }
        match this.inner.as_mut() {
            Some(b) => std::pin::Pin::new(b).poll_frame(cx),
            None => std::task::Poll::Ready(None),
        }
    }

    fn size_hint(&self) -> SizeHint {
        self.hint
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joins_bases_and_paths() {
        assert_eq!(join("http://a:1", "/x?y=1"), "http://a:1/x?y=1");
        assert_eq!(join("http://a:1/base", "x"), "http://a:1/base/x");
        assert_eq!(join("http://a:1", ""), "http://a:1");
    }

    #[tokio::test]
    async fn streamed_bodies_come_back_only_when_unread() {
        let mut body = ReplayBody::new(Body::from("payload"), &Method::POST, true).await.unwrap_or(ReplayBody::Empty);
        assert!(matches!(body, ReplayBody::Streamed(Some(_))), "POST bodies are not buffered");
        let (attempt, slot) = body.for_attempt();
        drop(attempt);
        let Some(slot) = slot else { panic!("a streamed body has a slot") };
        body.reclaim(&slot);
        assert!(body.available(), "never read: can be sent again");
        assert!(!body.replayable());
        let (attempt, slot) = body.for_attempt();
        let read = attempt.collect().await.map(|c| c.to_bytes()).unwrap_or_default();
        assert_eq!(read, Bytes::from("payload"));
        let Some(slot) = slot else { panic!("a streamed body has a slot") };
        body.reclaim(&slot);
        assert!(!body.available(), "read once: gone");
    }

    #[tokio::test]
    async fn small_idempotent_bodies_are_buffered() {
        let body = ReplayBody::new(Body::from("x".repeat(100)), &Method::PUT, true).await.unwrap_or(ReplayBody::Empty);
        assert!(body.replayable() && body.buffered().is_some_and(|b| b.len() == 100));
        let body = ReplayBody::new(Body::from("x".repeat(100)), &Method::PUT, false).await.unwrap_or(ReplayBody::Empty);
        assert!(matches!(body, ReplayBody::Streamed(_)), "no retries: nothing to buffer for");
        let big = usize::try_from(MAX_BUFFERED_BODY).unwrap_or(0) + 1;
        let body = ReplayBody::new(Body::from("x".repeat(big)), &Method::PUT, true).await.unwrap_or(ReplayBody::Empty);
        assert!(matches!(body, ReplayBody::Streamed(_)), "too large to buffer");
        let body = ReplayBody::new(Body::empty(), &Method::POST, true).await.unwrap_or(ReplayBody::Streamed(None));
        assert!(matches!(body, ReplayBody::Empty));
    }
}
