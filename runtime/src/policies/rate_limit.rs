//! rate-limit-inbound (`RateLimitInboundPolicy`): limits requests per client IP, per user, per
//! key computed by a custom function, or for everyone together, with the exact sliding log of
//! [`crate::ratelimit`] (in process, or in Redis when `RATE_LIMIT_REDIS_URL` is set).
//!
//! A request over the limit gets a 429 problem, with `Retry-After` (whole seconds, rounded up)
//! unless `headerMode` is `none`. With `rateLimitHeaders`, the 429 and the responses of
//! admitted requests (whoever produces them, through [`Context::add_response_header`]) also
//! carry the `RateLimit-Policy` and `RateLimit` fields of draft-ietf-httpapi-ratelimit-headers
//! in structured-field form: `"name";q=LIMIT;w=WINDOW_SECS` and `"name";r=REMAINING;t=SECS`.
//! A sliding log has no window reset, so `t` is the number of seconds (rounded up) until the
//! oldest request still counted leaves the window, the soonest moment `r` grows; on a 429 it
//! equals `Retry-After`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use http::header::{HeaderName, HeaderValue, RETRY_AFTER};
use serde::Deserialize;

use crate::policy::{Flow, FromOptions, Inbound};
use crate::ratelimit::{Decision, Limiter, MAX_WINDOW, warn_throttled};
use crate::{Context, Problem, Request, RequestHead};

/// What requests are counted together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RateLimitBy {
    /// Per client IP ([`Context::client_ip`]).
    Ip,
    /// Per authenticated user (`request.user.sub`); requests without a user count per IP.
    User,
    /// Per key returned by the identifier function; `None` from it: not limited.
    Function,
    /// Every request together.
    All,
}

/// Which headers a 429 carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HeaderMode {
    /// No `Retry-After`.
    None,
    /// `Retry-After` in whole seconds (the default).
    #[default]
    RetryAfter,
}

/// Whether a request waits for the shared store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RateLimitMode {
    /// Wait for the verdict (the default): exact across replicas.
    #[default]
    Strict,
    /// Decide in process and count in Redis in the background
    /// ([`crate::ratelimit::RedisLimiter::check_async`]).
    Async,
}

/// The custom identifier function as `policies.json` names it (the generator wires the
/// function itself in with [`RateLimitInbound::with_identifier`]).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentifierRef {
    /// The exported function's name.
    pub export: String,
    /// The module, e.g. `$import(./modules/rate-limit)`.
    pub module: String,
}

/// Options of `RateLimitInboundPolicy` (Zuplo's names, plus `rateLimitHeaders`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RateLimitInboundOptions {
    /// What requests are counted together.
    pub rate_limit_by: RateLimitBy,
    /// Requests admitted per window and key (at least 1).
    pub requests_allowed: u64,
    /// The window in minutes (more than 0; fractions allowed; at most one year).
    pub time_window_minutes: f64,
    /// The identifier function (required with `rateLimitBy: function`).
    #[serde(default)]
    pub identifier: Option<IdentifierRef>,
    /// Which headers a 429 carries (default `retry-after`).
    #[serde(default)]
    pub header_mode: HeaderMode,
    /// Whether requests wait for the shared store (default `strict`).
    #[serde(default)]
    pub mode: RateLimitMode,
    /// When the store cannot answer: 503 instead of letting the request through (default false).
    #[serde(default)]
    pub throw_on_failure: bool,
    /// Add `RateLimit-Policy` and `RateLimit` to 429s and admitted responses (default false).
    #[serde(default)]
    pub rate_limit_headers: bool,
}

/// A key chosen by an identifier function, optionally with its own limits.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RateLimitKey {
    /// The key requests are counted under (within this policy).
    pub key: String,
    /// Overrides `requestsAllowed` for this key (ignored, with a warning, when 0).
    pub requests_allowed: Option<u64>,
    /// Overrides `timeWindowMinutes` for this key (ignored, with a warning, when out of range).
    pub time_window_minutes: Option<f64>,
}

/// The future an [`Identifier`] returns.
pub type IdentifierFuture<'a> = Pin<Box<dyn Future<Output = Option<RateLimitKey>> + Send + 'a>>;

/// An identifier function: `(request, context) → key`; the policy name, which user functions
/// also take, is captured by the wrapping closure.
///
/// It takes a [`RequestHead`] rather than a `Request`: a request body is not `Sync`, so a
/// future holding `&Request` could not be `Send`, which every policy future must be. Build
/// one from `async fn f(request: &RequestHead, context: &Context, policy_name: &str) ->
/// Option<RateLimitKey>` with [`rate_limit_identifier`]:
/// `rate_limit_identifier(|req, cx| Box::pin(f(req, cx, "policy-name")))`.
pub type Identifier = Arc<dyn for<'a> Fn(&'a RequestHead, &'a Context) -> IdentifierFuture<'a> + Send + Sync>;

/// Wraps a closure as an [`Identifier`] (the bound makes the closure generic over lifetimes,
/// which `Arc::new` alone would not infer).
pub fn rate_limit_identifier<F>(f: F) -> Identifier
where
    F: for<'a> Fn(&'a RequestHead, &'a Context) -> IdentifierFuture<'a> + Send + Sync + 'static,
{
    Arc::new(f)
}

/// `RateLimitInboundPolicy`.
pub struct RateLimitInbound {
    name: String,
    by: RateLimitBy,
    limit: u64,
    window: Duration,
    header_mode: HeaderMode,
    mode: RateLimitMode,
    throw_on_failure: bool,
    rate_limit_headers: bool,
    identifier_ref: Option<IdentifierRef>,
    identifier: Option<Identifier>,
    limiter: Arc<Limiter>,
    /// The policy name as a structured-field string, for the RateLimit headers.
    sf_name: String,
}

impl std::fmt::Debug for RateLimitInbound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimitInbound")
            .field("name", &self.name)
            .field("by", &self.by)
            .field("limit", &self.limit)
            .field("window", &self.window)
            .field("mode", &self.mode)
            .field("identifier", &self.identifier_ref)
            .field("wired", &self.identifier.is_some())
            .finish_non_exhaustive()
    }
}

impl FromOptions for RateLimitInbound {
    type Options = RateLimitInboundOptions;
    /// Uses the process-wide limiter ([`Limiter::shared`]); call inside the Tokio runtime
    /// when `RATE_LIMIT_REDIS_URL` is set.
    fn from_options(options: Self::Options, name: &str) -> Result<Self, String> {
        Self::new(options, name, Limiter::shared()?)
    }
}

/// The window of `minutes`, if in range.
pub(super) fn window_of(minutes: f64) -> Option<Duration> {
    if !minutes.is_finite() || minutes <= 0.0 {
        return None;
    }
    Duration::try_from_secs_f64(minutes * 60.0).ok().filter(|w| *w >= Duration::from_micros(1) && *w <= MAX_WINDOW)
}

/// Whole seconds, rounded up, at least 1 (a header value of 0 invites an immediate retry
/// that would be rejected).
pub(super) fn ceil_secs(d: Duration) -> u64 {
    (d.as_secs() + u64::from(d.subsec_nanos() > 0)).max(1)
}

impl RateLimitInbound {
    /// Builds the policy on a given limiter (tests and custom wiring).
    pub fn new(options: RateLimitInboundOptions, name: &str, limiter: Arc<Limiter>) -> Result<Self, String> {
        if options.requests_allowed == 0 {
            return Err("requestsAllowed must be at least 1".to_owned());
        }
        let window = window_of(options.time_window_minutes)
            .ok_or_else(|| format!("timeWindowMinutes must be more than 0 and at most one year, not {}", options.time_window_minutes))?;
        if options.rate_limit_by == RateLimitBy::Function && options.identifier.is_none() {
            return Err("rateLimitBy `function` needs an `identifier` ({export, module})".to_owned());
        }
        Ok(RateLimitInbound {
            sf_name: sf_string(name),
            name: name.to_owned(),
            by: options.rate_limit_by,
            limit: options.requests_allowed,
            window,
            header_mode: options.header_mode,
            mode: options.mode,
            throw_on_failure: options.throw_on_failure,
            rate_limit_headers: options.rate_limit_headers,
            identifier_ref: options.identifier,
            identifier: None,
            limiter,
        })
    }

    /// Wires in the identifier function of `rateLimitBy: function`.
    pub fn with_identifier(mut self, f: Identifier) -> Self {
        self.identifier = Some(f);
        self
    }

    /// The `identifier` option, for the generator.
    pub fn identifier_ref(&self) -> Option<&IdentifierRef> {
        self.identifier_ref.as_ref()
    }

    /// The counting key of a request limited by IP, user or all (not by function).
    fn fixed_key(&self, req: &Request, cx: &Context) -> String {
        fixed_key(self.by, req, cx)
    }

    /// The key and limits the identifier function gives; `Ok(None)`: not limited.
    async fn function_key(&self, head: &RequestHead, cx: &Context) -> Result<Option<(String, u64, Duration)>, Flow> {
        let Some(f) = &self.identifier else {
            tracing::error!(request_id = %cx.request_id, policy = %self.name, "rate limit identifier function not wired in");
            return Err(Flow::Problem(cx.runtime().error_problem(Problem::internal(format!(
                "the policy `{}` has no identifier function",
                self.name
            )))));
        };
        let found = match crate::policy::guard(f(head, cx)).await {
            Ok(k) => k,
            Err(panic) => {
                let what = self.identifier_ref.as_ref().map_or(self.name.as_str(), |r| r.export.as_str());
                return Err(Flow::Respond(crate::policy::panicked(what, &panic, cx)));
            }
        };
        let Some(k) = found else { return Ok(None) };
        let limit = match k.requests_allowed {
            Some(0) => {
                tracing::warn!(policy = %self.name, "identifier returned requestsAllowed 0; using the policy's");
                self.limit
            }
            Some(n) => n,
            None => self.limit,
        };
        let window = match k.time_window_minutes {
            Some(m) => window_of(m).unwrap_or_else(|| {
                tracing::warn!(policy = %self.name, minutes = m, "identifier returned an invalid timeWindowMinutes; using the policy's");
                self.window
            }),
            None => self.window,
        };
        Ok(Some((format!("fn:{}", k.key), limit, window)))
    }

    fn rejection(&self, decision: &Decision, limit: u64, window: Duration) -> Problem {
        let retry = ceil_secs(decision.retry_after);
        let mut p = Problem::new(StatusCode::TOO_MANY_REQUESTS)
            .with_detail(format!("rate limit exceeded: at most {limit} requests per {} s", fmt_secs(window)));
        if self.header_mode == HeaderMode::RetryAfter {
            p = p.with_header(RETRY_AFTER, HeaderValue::from(retry));
        }
        if self.rate_limit_headers
            && let Some((policy, state)) = self.header_values(decision, limit, window)
        {
            p = p.with_header(HeaderName::from_static("ratelimit-policy"), policy).with_header(HeaderName::from_static("ratelimit"), state);
        }
        p
    }

    /// `RateLimit-Policy` and `RateLimit` for a decision.
    fn header_values(&self, decision: &Decision, limit: u64, window: Duration) -> Option<(HeaderValue, HeaderValue)> {
        let policy = format!("{};q={limit};w={}", self.sf_name, ceil_secs(window));
        let state = format!("{};r={};t={}", self.sf_name, decision.remaining, ceil_secs(decision.reset));
        // Both are built from digits and a sanitized string, so they are valid values.
        Some((HeaderValue::from_str(&policy).ok()?, HeaderValue::from_str(&state).ok()?))
    }
}

/// The counting key of a request counted by IP, user or all (not by function), shared by the
/// rate-limit policies. Kinds are prefixed so that a user named like an IP does not share its
/// count; a request without a user is counted by IP.
pub(super) fn fixed_key(by: RateLimitBy, req: &Request, cx: &Context) -> String {
    match by {
        RateLimitBy::User => match &req.user {
            Some(u) => format!("user:{}", u.sub),
            None => format!("ip:{}", cx.client_ip),
        },
        RateLimitBy::All => "all".to_owned(),
        RateLimitBy::Ip | RateLimitBy::Function => format!("ip:{}", cx.client_ip),
    }
}

/// Seconds for messages, without trailing zeros.
fn fmt_secs(d: Duration) -> String {
    let s = format!("{:.3}", d.as_secs_f64());
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// `name` as a structured-field string (RFC 9651): quotes and backslashes escaped, anything
/// outside printable ASCII replaced by `_`.
fn sf_string(name: &str) -> String {
    let mut s = String::with_capacity(name.len() + 2);
    s.push('"');
    for c in name.chars() {
        match c {
            '"' | '\\' => {
                s.push('\\');
                s.push(c);
            }
            ' '..='~' => s.push(c),
            _ => s.push('_'),
        }
    }
    s.push('"');
    s
}

impl Inbound for RateLimitInbound {
    async fn on_request(&self, req: Request, cx: &mut Context) -> Flow {
        let (key, limit, window) = if self.by == RateLimitBy::Function {
            // An owned head: a `&Request` held across the call would make this future !Send.
            let head = req.head();
            match self.function_key(&head, cx).await {
                Ok(Some(k)) => k,
                Ok(None) => return Flow::Continue(req),
                Err(flow) => return flow,
            }
        } else {
            (self.fixed_key(&req, cx), self.limit, self.window)
        };
        // The policy name scopes the key: two policies never share counts. Length-prefixed so
        // no name/key pair can collide with another.
        let key = format!("{}:{}:{key}", self.name.len(), self.name);
        let result = match self.mode {
            RateLimitMode::Strict => self.limiter.check(&key, limit, window).await,
            RateLimitMode::Async => self.limiter.check_async(&key, limit, window),
        };
        match result {
            Ok(d) if d.allowed => {
                if self.rate_limit_headers
                    && let Some((policy, state)) = self.header_values(&d, limit, window)
                {
                    cx.add_response_header(HeaderName::from_static("ratelimit-policy"), policy);
                    cx.add_response_header(HeaderName::from_static("ratelimit"), state);
                }
                Flow::Continue(req)
            }
            Ok(d) => {
                tracing::debug!(request_id = %cx.request_id, policy = %self.name, retry_after = ?d.retry_after, "rate limited");
                Flow::Problem(self.rejection(&d, limit, window))
            }
            Err(e) if self.throw_on_failure => {
                tracing::error!(request_id = %cx.request_id, policy = %self.name, error = %e, "rate limit check failed");
                Flow::Problem(Problem::new(StatusCode::SERVICE_UNAVAILABLE).with_detail("rate limiting is unavailable"))
            }
            Err(e) => {
                // Fail open: an outage of the counter must not take the API down with it.
                warn_throttled("rate limit check failed; letting requests through", &e);
                Flow::Continue(req)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::User;
    use crate::policies::test_context;
    use crate::policies::test_util::{body_text, continued, must, problem_status, request};

    fn policy(options: serde_json::Value) -> RateLimitInbound {
        let options: RateLimitInboundOptions = must(serde_json::from_value(options));
        must(RateLimitInbound::new(options, "test-policy", Arc::new(Limiter::memory())))
    }

    fn get() -> Request {
        request("GET", "/test", "")
    }

    #[test]
    fn options_parse_and_validate() {
        let p = policy(json!({"rateLimitBy": "ip", "requestsAllowed": 2, "timeWindowMinutes": 0.5}));
        assert_eq!((p.by, p.limit, p.window), (RateLimitBy::Ip, 2, Duration::from_secs(30)));
        assert_eq!((p.header_mode, p.mode, p.throw_on_failure, p.rate_limit_headers), (HeaderMode::RetryAfter, RateLimitMode::Strict, false, false));
        let o: Result<RateLimitInboundOptions, _> = serde_json::from_value(json!({
            "rateLimitBy": "function", "requestsAllowed": 1, "timeWindowMinutes": 1,
            "identifier": {"export": "byKey", "module": "$import(./modules/rl)"},
            "headerMode": "none", "mode": "async", "throwOnFailure": true, "rateLimitHeaders": true
        }));
        assert!(o.is_ok(), "{o:?}");
        for bad in [
            json!({"rateLimitBy": "ip", "requestsAllowed": 1}),
            json!({"rateLimitBy": "ip", "requestsAllowed": 1, "timeWindowMinutes": 1, "extra": 1}),
            json!({"rateLimitBy": "region", "requestsAllowed": 1, "timeWindowMinutes": 1}),
            json!({"rateLimitBy": "ip", "requestsAllowed": 1, "timeWindowMinutes": 1, "headerMode": "all"}),
        ] {
            assert!(serde_json::from_value::<RateLimitInboundOptions>(bad.clone()).is_err(), "{bad}");
        }
        for bad in [
            json!({"rateLimitBy": "ip", "requestsAllowed": 0, "timeWindowMinutes": 1}),
            json!({"rateLimitBy": "ip", "requestsAllowed": 1, "timeWindowMinutes": 0}),
            json!({"rateLimitBy": "ip", "requestsAllowed": 1, "timeWindowMinutes": -1}),
            json!({"rateLimitBy": "ip", "requestsAllowed": 1, "timeWindowMinutes": 1e12}),
            json!({"rateLimitBy": "function", "requestsAllowed": 1, "timeWindowMinutes": 1}),
        ] {
            let options: RateLimitInboundOptions = must(serde_json::from_value(bad.clone()));
            assert!(RateLimitInbound::new(options, "p", Arc::new(Limiter::memory())).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn over_the_limit_is_a_429_problem_with_headers() {
        let p = policy(json!({"rateLimitBy": "ip", "requestsAllowed": 2, "timeWindowMinutes": 0.01, "rateLimitHeaders": true}));
        let mut cx = test_context();
        for _ in 0..2 {
            assert!(continued(p.on_request(get(), &mut cx).await).is_ok());
        }
        let flow = p.on_request(get(), &mut cx).await;
        assert_eq!(problem_status(&flow), Some(429));
        let Flow::Problem(problem) = flow else { return };
        let resp = cx.problem(problem);
        let h = |n: &str| resp.headers().get(n).and_then(|v| v.to_str().ok()).map(str::to_owned);
        assert_eq!(h("content-type").as_deref(), Some("application/problem+json"));
        // 600 ms window: the wait is under a second and rounds up to 1.
        assert_eq!(h("retry-after").as_deref(), Some("1"));
        assert_eq!(h("ratelimit-policy").as_deref(), Some("\"test-policy\";q=2;w=1"));
        assert_eq!(h("ratelimit").as_deref(), Some("\"test-policy\";r=0;t=1"));
        assert!(body_text(resp.into_body()).await.contains("\"status\":429"));
        // After the window, admitted again.
        tokio::time::sleep(Duration::from_millis(650)).await;
        assert!(continued(p.on_request(get(), &mut cx).await).is_ok());
    }

    #[tokio::test]
    async fn admitted_responses_carry_the_headers_too() {
        let p = policy(json!({"rateLimitBy": "ip", "requestsAllowed": 3, "timeWindowMinutes": 1, "rateLimitHeaders": true}));
        let mut cx = test_context();
        for left in [2, 1, 0] {
            assert!(continued(p.on_request(get(), &mut cx).await).is_ok());
            // Whoever answers (here a handler's plain 200), the policy's headers are added.
            let resp = cx.finish_response(crate::policies::test_util::response(200, &[], "ok"));
            let h = |n: &str| resp.headers().get_all(n).iter().filter_map(|v| v.to_str().ok()).collect::<Vec<_>>().join(",");
            assert_eq!(h("ratelimit-policy"), "\"test-policy\";q=3;w=60");
            // 60 s window, first request moments ago: the oldest leaves in (59, 60] s.
            assert_eq!(h("ratelimit"), format!("\"test-policy\";r={left};t=60"));
        }
        // Without the option: nothing added.
        let p = policy(json!({"rateLimitBy": "ip", "requestsAllowed": 3, "timeWindowMinutes": 1}));
        let mut cx = test_context();
        assert!(continued(p.on_request(get(), &mut cx).await).is_ok());
        let resp = cx.finish_response(crate::policies::test_util::response(200, &[], "ok"));
        assert!(resp.headers().get("ratelimit").is_none() && resp.headers().get("ratelimit-policy").is_none());
    }

    #[tokio::test]
    async fn header_mode_none_sends_no_retry_after() {
        let p = policy(json!({"rateLimitBy": "all", "requestsAllowed": 1, "timeWindowMinutes": 1, "headerMode": "none"}));
        let mut cx = test_context();
        assert!(continued(p.on_request(get(), &mut cx).await).is_ok());
        let Flow::Problem(problem) = p.on_request(get(), &mut cx).await else { panic!("not limited") };
        let resp = cx.problem(problem);
        assert!(resp.headers().get("retry-after").is_none());
        assert!(resp.headers().get("ratelimit").is_none());
    }

    #[tokio::test]
    async fn retry_after_rounds_up_and_is_honoured() {
        let p = policy(json!({"rateLimitBy": "ip", "requestsAllowed": 1, "timeWindowMinutes": 0.025}));
        let mut cx = test_context();
        assert!(continued(p.on_request(get(), &mut cx).await).is_ok());
        let Flow::Problem(problem) = p.on_request(get(), &mut cx).await else { panic!("not limited") };
        let resp = cx.problem(problem);
        let secs: u64 = resp.headers().get("retry-after").and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok()).unwrap_or(0);
        // 1.5 s window rounds up to 2 s; waiting that long is enough.
        assert_eq!(secs, 2);
        tokio::time::sleep(Duration::from_secs(secs)).await;
        assert!(continued(p.on_request(get(), &mut cx).await).is_ok());
    }

    #[tokio::test]
    async fn users_are_counted_apart_and_anonymous_by_ip() {
        let p = policy(json!({"rateLimitBy": "user", "requestsAllowed": 1, "timeWindowMinutes": 1}));
        let mut cx = test_context();
        let as_user = |sub: &str| {
            let mut r = get();
            r.user = Some(User { sub: sub.to_owned(), data: serde_json::Value::Null });
            r
        };
        assert!(continued(p.on_request(as_user("alice"), &mut cx).await).is_ok());
        assert!(continued(p.on_request(as_user("bob"), &mut cx).await).is_ok());
        assert_eq!(problem_status(&p.on_request(as_user("alice"), &mut cx).await), Some(429));
        // No user: the client IP's count, separate from any user's.
        assert!(continued(p.on_request(as_user("127.0.0.1"), &mut cx).await).is_ok());
        assert!(continued(p.on_request(get(), &mut cx).await).is_ok());
        assert_eq!(problem_status(&p.on_request(get(), &mut cx).await), Some(429));
    }

    /// An identifier as a user module would write it.
    async fn by_header(request: &RequestHead, _context: &Context, policy_name: &str) -> Option<RateLimitKey> {
        tokio::task::yield_now().await;
        let key = request.header("x-customer")?;
        let requests_allowed = (key == "gold").then_some(3);
        Some(RateLimitKey { key: format!("{policy_name}/{key}"), requests_allowed, time_window_minutes: None })
    }

    #[tokio::test]
    async fn identifier_function_keys_and_dynamic_limits() {
        let p = policy(json!({
            "rateLimitBy": "function", "requestsAllowed": 1, "timeWindowMinutes": 1,
            "identifier": {"export": "byHeader", "module": "$import(./modules/rl)"}
        }));
        let mut cx = test_context();
        // Not wired in: a 500, not a silent pass.
        assert_eq!(problem_status(&p.on_request(get(), &mut cx).await), Some(500));
        // As the generator wires it: the policy name is captured, not passed.
        let p = p.with_identifier(rate_limit_identifier(|req, cx| Box::pin(by_header(req, cx, "test-policy"))));
        let with = |v: &str| {
            let mut r = get();
            r.set_header("x-customer", v).unwrap_or_else(|e| panic!("{e}"));
            r
        };
        // None: not limited.
        for _ in 0..5 {
            assert!(continued(p.on_request(get(), &mut cx).await).is_ok());
        }
        assert!(continued(p.on_request(with("basic"), &mut cx).await).is_ok());
        assert_eq!(problem_status(&p.on_request(with("basic"), &mut cx).await), Some(429));
        for _ in 0..3 {
            assert!(continued(p.on_request(with("gold"), &mut cx).await).is_ok());
        }
        assert_eq!(problem_status(&p.on_request(with("gold"), &mut cx).await), Some(429));
    }

    #[tokio::test]
    async fn policies_count_apart_and_rejections_are_free() {
        let limiter = Arc::new(Limiter::memory());
        let build = |name: &str, n: u64| {
            let o: RateLimitInboundOptions =
                must(serde_json::from_value(json!({"rateLimitBy": "all", "requestsAllowed": n, "timeWindowMinutes": 0.01})));
            must(RateLimitInbound::new(o, name, limiter.clone()))
        };
        // A route with a per-second burst limit in front of a larger one.
        let (burst, overall) = (build("burst", 2), build("overall", 3));
        let mut cx = test_context();
        let mut through = 0;
        for _ in 0..10 {
            let Ok(r) = continued(burst.on_request(get(), &mut cx).await) else { continue };
            if continued(overall.on_request(r, &mut cx).await).is_ok() {
                through += 1;
            }
        }
        assert_eq!(through, 2);
        // The 8 rejections by `burst` cost nothing: after its window, 1 more fits `overall`.
        tokio::time::sleep(Duration::from_millis(650)).await;
        let r = must(continued(burst.on_request(get(), &mut cx).await));
        assert!(continued(overall.on_request(r, &mut cx).await).is_ok());
    }

    #[test]
    fn structured_field_names_are_escaped() {
        assert_eq!(sf_string("a\"b\\c é"), "\"a\\\"b\\\\c _\"");
        assert_eq!(ceil_secs(Duration::from_millis(1)), 1);
        assert_eq!(ceil_secs(Duration::from_millis(2001)), 3);
        assert_eq!(ceil_secs(Duration::from_secs(2)), 2);
    }
}
