//! complex-rate-limit-inbound (`ComplexRateLimitInboundPolicy`): several named counters per
//! key (`"limits": {"requests": 100, "tokens": 5000}`) over one sliding window, with the
//! weighted logs of [`crate::ratelimit::complex`] (in process, or in Redis when
//! `RATE_LIMIT_REDIS_URL` is set).
//!
//! Each request is checked before it goes on: when any counter of its key is at or over its
//! limit in the window, it gets a 429 problem with `Retry-After` (unless `headerMode` is
//! `none`) and nothing is counted. Otherwise, once its response exists (whoever produced it,
//! whatever its status), each counter is incremented by 1, or by what custom code set with
//! [`ComplexRateLimitInbound::set_increments`] (Zuplo's `setIncrements`), typically in an
//! outbound policy that reads a usage header of the upstream's response. Counting after the
//! response means requests in flight together when a counter reaches its limit are all
//! counted: a counter can end a window over its limit by the increments of those requests.
//!
//! With `mode: async` and Redis, the check does not wait: a key is rejected at once while the
//! last Redis check of this process found it over a limit, and every admitted request starts
//! a background check that refreshes that verdict. So each replica admits a key over its
//! limit at most until its first background answer after the limit was reached arrives.
//!
//! Store failures: let requests through (logged, throttled) unless `throwOnFailure` (503).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use http::header::{HeaderValue, RETRY_AFTER};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::rate_limit::{HeaderMode, Identifier, IdentifierRef, RateLimitBy, RateLimitMode, ceil_secs, window_of};
use crate::policy::{Flow, FromOptions, Inbound};
use crate::ratelimit::complex::{CounterCheck, CounterStore};
use crate::ratelimit::{LimitError, Limiter, warn_throttled};
use crate::{Context, Problem, Request, RequestHead};

/// Where [`ComplexRateLimitInbound::set_increments`] keeps a request's increments (not a valid
/// template name, so templates cannot reach it by accident).
const INCREMENTS_KEY: &str = "specgate:complex-rate-limit-increments";

/// Options of `ComplexRateLimitInboundPolicy` (Zuplo's names).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ComplexRateLimitInboundOptions {
    /// What requests are counted together.
    pub rate_limit_by: RateLimitBy,
    /// The window in minutes (more than 0; fractions allowed; at most one year).
    pub time_window_minutes: f64,
    /// Limit per counter and window, e.g. `{"requests": 100, "tokens": 5000}` (at least one,
    /// each at least 1).
    pub limits: BTreeMap<String, u64>,
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
}

/// `ComplexRateLimitInboundPolicy`.
pub struct ComplexRateLimitInbound {
    name: String,
    by: RateLimitBy,
    window: Duration,
    limits: Vec<(String, u64)>,
    header_mode: HeaderMode,
    mode: RateLimitMode,
    throw_on_failure: bool,
    identifier_ref: Option<IdentifierRef>,
    identifier: Option<Identifier>,
    store: Arc<CounterStore>,
}

impl std::fmt::Debug for ComplexRateLimitInbound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ComplexRateLimitInbound")
            .field("name", &self.name)
            .field("by", &self.by)
            .field("window", &self.window)
            .field("limits", &self.limits)
            .field("mode", &self.mode)
            .field("identifier", &self.identifier_ref)
            .field("wired", &self.identifier.is_some())
            .finish_non_exhaustive()
    }
}

impl FromOptions for ComplexRateLimitInbound {
    type Options = ComplexRateLimitInboundOptions;
    /// Uses the Redis connection of the process-wide limiter ([`Limiter::shared`]) when there
    /// is one; call inside the Tokio runtime when `RATE_LIMIT_REDIS_URL` is set.
    fn from_options(options: Self::Options, name: &str) -> Result<Self, String> {
        let limiter = Limiter::shared()?;
        Self::new(options, name, Arc::new(CounterStore::for_limiter(&limiter)))
    }
}

impl ComplexRateLimitInbound {
    /// Builds the policy on a given store (tests and custom wiring).
    pub fn new(options: ComplexRateLimitInboundOptions, name: &str, store: Arc<CounterStore>) -> Result<Self, String> {
        if options.limits.is_empty() {
            return Err("`limits` needs at least one counter, e.g. {\"requests\": 100}".to_owned());
        }
        if let Some((counter, _)) = options.limits.iter().find(|(_, v)| **v == 0) {
            return Err(format!("the limit of `{counter}` must be at least 1"));
        }
        let window = window_of(options.time_window_minutes)
            .ok_or_else(|| format!("timeWindowMinutes must be more than 0 and at most one year, not {}", options.time_window_minutes))?;
        if options.rate_limit_by == RateLimitBy::Function && options.identifier.is_none() {
            return Err("rateLimitBy `function` needs an `identifier` ({export, module})".to_owned());
        }
        Ok(ComplexRateLimitInbound {
            name: name.to_owned(),
            by: options.rate_limit_by,
            window,
            limits: options.limits.into_iter().collect(),
            header_mode: options.header_mode,
            mode: options.mode,
            throw_on_failure: options.throw_on_failure,
            identifier_ref: options.identifier,
            identifier: None,
            store,
        })
    }

    /// Wires in the identifier function of `rateLimitBy: function` (the same signature as
    /// rate-limit-inbound's). Its `timeWindowMinutes` replaces the window for that key, and its
    /// `requestsAllowed` the limit of the `requests` counter when the policy has one.
    pub fn with_identifier(mut self, f: Identifier) -> Self {
        self.identifier = Some(f);
        self
    }

    /// The `identifier` option, for the generator.
    pub fn identifier_ref(&self) -> Option<&IdentifierRef> {
        self.identifier_ref.as_ref()
    }

    /// Sets what this request adds to the counters of every complex rate-limit policy on its
    /// route (Zuplo's `ComplexRateLimitInboundPolicy.setIncrements`): merged with earlier
    /// calls, later values win; a counter not set here adds 1. Call it from a handler or any
    /// policy (usually an outbound one, which sees the response) before the response is
    /// finished: the increments are recorded once it is.
    pub fn set_increments<'a>(cx: &mut Context, increments: impl IntoIterator<Item = (&'a str, u64)>) {
        let entry = cx.custom.entry(INCREMENTS_KEY.to_owned()).or_insert_with(|| Value::Object(Map::new()));
        if !entry.is_object() {
            *entry = Value::Object(Map::new());
        }
        if let Value::Object(map) = entry {
            for (counter, n) in increments {
                map.insert(counter.to_owned(), Value::from(n));
            }
        }
    }

    /// What [`ComplexRateLimitInbound::set_increments`] set for this request so far (Zuplo's
    /// `getIncrements`).
    pub fn get_increments(cx: &Context) -> BTreeMap<String, u64> {
        match cx.custom.get(INCREMENTS_KEY) {
            Some(Value::Object(map)) => map.iter().map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0))).collect(),
            _ => BTreeMap::new(),
        }
    }

    /// The increments to record for `limits`: 1 each unless set.
    fn increments(limits: &[(String, u64)], cx: &Context) -> Vec<(String, u64)> {
        let set = Self::get_increments(cx);
        limits.iter().map(|(name, _)| (name.clone(), set.get(name).copied().unwrap_or(1))).collect()
    }

    /// The key of a request limited by IP, user or all (not by function).
    fn fixed_key(&self, req: &Request, cx: &Context) -> String {
        super::rate_limit::fixed_key(self.by, req, cx)
    }

    /// The key, limits and window the identifier function gives; `Ok(None)`: not limited.
    async fn function_key(&self, head: &RequestHead, cx: &Context) -> Result<Option<(String, Vec<(String, u64)>, Duration)>, Flow> {
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
        let mut limits = self.limits.clone();
        if let Some(n) = k.requests_allowed.filter(|n| *n > 0)
            && let Some(l) = limits.iter_mut().find(|(name, _)| name == "requests")
        {
            l.1 = n;
        }
        let window = k.time_window_minutes.and_then(window_of).unwrap_or(self.window);
        Ok(Some((format!("fn:{}", k.key), limits, window)))
    }

    async fn check(&self, key: &str, limits: &[(String, u64)], window: Duration) -> Result<CounterCheck, LimitError> {
        match (&*self.store, self.mode) {
            (CounterStore::Redis(r), RateLimitMode::Async) => {
                if let Some(wait) = r.cached_rejection(key) {
                    return Ok(CounterCheck { allowed: false, used: Vec::new(), retry_after: wait });
                }
                if tokio::runtime::Handle::try_current().is_ok() {
                    let (store, key, limits) = (self.store.clone(), key.to_owned(), limits.to_vec());
                    tokio::spawn(async move {
                        let CounterStore::Redis(r) = &*store else { return };
                        match r.check(&key, &limits, window).await {
                            Ok(c) => r.remember(&key, &c),
                            Err(e) => warn_throttled("complex rate limit: cannot check a key in Redis (async mode)", &e),
                        }
                    });
                }
                Ok(CounterCheck { allowed: true, used: Vec::new(), retry_after: Duration::ZERO })
            }
            _ => self.store.check(key, limits, window).await,
        }
    }

    fn rejection(&self, check: &CounterCheck, limits: &[(String, u64)], window: Duration) -> Problem {
        let over: Vec<String> = limits
            .iter()
            .zip(&check.used)
            .filter(|((_, limit), used)| **used >= *limit)
            .map(|((name, limit), used)| format!("`{name}` used {used} of {limit}"))
            .collect();
        let detail = if over.is_empty() {
            "rate limit exceeded".to_owned()
        } else {
            format!("rate limit exceeded: {} per {} s", over.join(", "), window.as_secs_f64())
        };
        let mut p = Problem::new(StatusCode::TOO_MANY_REQUESTS).with_detail(detail);
        if self.header_mode == HeaderMode::RetryAfter {
            p = p.with_header(RETRY_AFTER, HeaderValue::from(ceil_secs(check.retry_after)));
        }
        p
    }
}

impl Inbound for ComplexRateLimitInbound {
    async fn on_request(&self, req: Request, cx: &mut Context) -> Flow {
        let (key, limits, window) = if self.by == RateLimitBy::Function {
            // An owned head: a `&Request` held across the call would make this future !Send.
            let head = req.head();
            match self.function_key(&head, cx).await {
                Ok(Some(k)) => k,
                Ok(None) => return Flow::Continue(req),
                Err(flow) => return flow,
            }
        } else {
            (self.fixed_key(&req, cx), self.limits.clone(), self.window)
        };
        // Scoped by policy name, length-prefixed so no name/key pair collides with another.
        let key = format!("{}:{}:{key}", self.name.len(), self.name);
        match self.check(&key, &limits, window).await {
            Ok(c) if c.allowed => {}
            Ok(c) => {
                tracing::debug!(request_id = %cx.request_id, policy = %self.name, retry_after = ?c.retry_after, "rate limited");
                return Flow::Problem(self.rejection(&c, &limits, window));
            }
            Err(e) if self.throw_on_failure => {
                tracing::error!(request_id = %cx.request_id, policy = %self.name, error = %e, "rate limit check failed");
                return Flow::Problem(Problem::new(StatusCode::SERVICE_UNAVAILABLE).with_detail("rate limiting is unavailable"));
            }
            Err(e) => {
                warn_throttled("rate limit check failed; letting requests through", &e);
                return Flow::Continue(req);
            }
        }
        let (store, policy) = (self.store.clone(), self.name.clone());
        cx.on_response(move |resp, cx| {
            let increments = ComplexRateLimitInbound::increments(&limits, cx);
            match &*store {
                // In process the record is immediate, so the next request already sees it.
                CounterStore::Memory(m) => {
                    if let Err(e) = m.record(&key, &increments, window) {
                        warn_throttled("complex rate limit: cannot count a request", &e);
                    }
                }
                CounterStore::Redis(_) => {
                    let request_id = cx.request_id.clone();
                    cx.wait_until(async move {
                        if let Err(e) = store.record(&key, &increments, window).await {
                            tracing::debug!(request_id = %request_id, policy = %policy, error = %e, "rate limit count failed");
                            warn_throttled("complex rate limit: cannot count a request", &e);
                        }
                    });
                }
            }
            resp
        });
        Flow::Continue(req)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::policies::test_context;
    use crate::policies::test_util::{must, problem_status, request, response};
    use crate::policies::{RateLimitKey, rate_limit_identifier};
    use crate::User;

    fn policy(options: serde_json::Value) -> ComplexRateLimitInbound {
        let options: ComplexRateLimitInboundOptions = must(serde_json::from_value(options));
        must(ComplexRateLimitInbound::new(options, "complex", Arc::new(CounterStore::Memory(Default::default()))))
    }

    fn get() -> Request {
        request("GET", "/test", "")
    }

    /// One request through the policy; when admitted, the route's response with `tokens` set by
    /// custom code the way an outbound policy would. Returns the status.
    async fn call(p: &ComplexRateLimitInbound, req: Request, tokens: Option<u64>) -> u16 {
        let mut cx = test_context();
        match p.on_request(req, &mut cx).await {
            Flow::Continue(_) => {
                if let Some(t) = tokens {
                    ComplexRateLimitInbound::set_increments(&mut cx, [("tokens", t)]);
                }
                cx.finish_response(response(200, &[], "")).status().as_u16()
            }
            flow => problem_status(&flow).unwrap_or(0),
        }
    }

    #[test]
    fn options_parse_and_validate() {
        let p = policy(json!({"rateLimitBy": "ip", "timeWindowMinutes": 0.5, "limits": {"requests": 2, "tokens": 10}}));
        assert_eq!(p.limits, vec![("requests".to_owned(), 2), ("tokens".to_owned(), 10)]);
        assert_eq!((p.window, p.mode, p.header_mode), (Duration::from_secs(30), RateLimitMode::Strict, HeaderMode::RetryAfter));
        let o: Result<ComplexRateLimitInboundOptions, _> = serde_json::from_value(json!({
            "rateLimitBy": "function", "timeWindowMinutes": 1, "limits": {"compute": 5},
            "identifier": {"export": "byKey", "module": "$import(./modules/rl)"},
            "headerMode": "none", "mode": "async", "throwOnFailure": true
        }));
        assert!(o.is_ok(), "{o:?}");
        for bad in [
            json!({"rateLimitBy": "ip", "timeWindowMinutes": 1}),
            json!({"rateLimitBy": "ip", "limits": {"requests": 1}}),
            json!({"rateLimitBy": "ip", "timeWindowMinutes": 1, "limits": {"requests": -1}}),
            json!({"rateLimitBy": "ip", "timeWindowMinutes": 1, "limits": {"requests": 1}, "requestsAllowed": 1}),
        ] {
            assert!(serde_json::from_value::<ComplexRateLimitInboundOptions>(bad.clone()).is_err(), "{bad}");
        }
        for bad in [
            json!({"rateLimitBy": "ip", "timeWindowMinutes": 1, "limits": {}}),
            json!({"rateLimitBy": "ip", "timeWindowMinutes": 1, "limits": {"requests": 0}}),
            json!({"rateLimitBy": "ip", "timeWindowMinutes": 0, "limits": {"requests": 1}}),
            json!({"rateLimitBy": "function", "timeWindowMinutes": 1, "limits": {"requests": 1}}),
        ] {
            let o: ComplexRateLimitInboundOptions = must(serde_json::from_value(bad.clone()));
            assert!(ComplexRateLimitInbound::new(o, "p", Arc::new(CounterStore::Memory(Default::default()))).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn increments_set_after_the_response_limit_later_requests() {
        let p = policy(json!({"rateLimitBy": "ip", "timeWindowMinutes": 0.02, "limits": {"requests": 10, "tokens": 100}}));
        // Tokens reported by responses: 60 then 50 (counter now 110, over 100 after the second).
        assert_eq!(call(&p, get(), Some(60)).await, 200);
        assert_eq!(call(&p, get(), Some(50)).await, 200);
        let mut cx = test_context();
        let Flow::Problem(problem) = p.on_request(get(), &mut cx).await else { panic!("not limited") };
        let resp = cx.problem(problem);
        assert_eq!(resp.status(), 429);
        // The 1.2 s window: the tokens fall under 100 when the first entry leaves, within 2 s.
        let retry: u64 = resp.headers().get("retry-after").and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok()).unwrap_or(0);
        assert!((1..=2).contains(&retry), "{retry}");
        // A rejected request is not counted; after the window the key is free again.
        tokio::time::sleep(Duration::from_millis(1_250)).await;
        assert_eq!(call(&p, get(), None).await, 200);
    }

    #[tokio::test]
    async fn default_increment_is_one_per_counter_and_set_values_merge() {
        let p = policy(json!({"rateLimitBy": "all", "timeWindowMinutes": 1, "limits": {"requests": 3, "tokens": 1000}, "headerMode": "none"}));
        for _ in 0..3 {
            assert_eq!(call(&p, get(), None).await, 200);
        }
        let mut cx = test_context();
        let Flow::Problem(problem) = p.on_request(get(), &mut cx).await else { panic!("requests counter not enforced") };
        assert!(cx.problem(problem).headers().get("retry-after").is_none());
        // set_increments merges, later values win; get_increments reads them back.
        let mut cx = test_context();
        ComplexRateLimitInbound::set_increments(&mut cx, [("tokens", 5), ("requests", 0)]);
        ComplexRateLimitInbound::set_increments(&mut cx, [("tokens", 7)]);
        assert_eq!(ComplexRateLimitInbound::get_increments(&cx), BTreeMap::from([("requests".to_owned(), 0), ("tokens".to_owned(), 7)]));
        let lim = vec![("requests".to_owned(), 1), ("tokens".to_owned(), 1), ("other".to_owned(), 1)];
        assert_eq!(
            ComplexRateLimitInbound::increments(&lim, &cx),
            vec![("requests".to_owned(), 0), ("tokens".to_owned(), 7), ("other".to_owned(), 1)]
        );
    }

    #[tokio::test]
    async fn users_and_policies_count_apart() {
        let p = policy(json!({"rateLimitBy": "user", "timeWindowMinutes": 1, "limits": {"requests": 1}}));
        let as_user = |sub: &str| {
            let mut r = get();
            r.user = Some(User { sub: sub.to_owned(), data: Value::Null });
            r
        };
        assert_eq!(call(&p, as_user("alice"), None).await, 200);
        assert_eq!(call(&p, as_user("bob"), None).await, 200);
        assert_eq!(call(&p, as_user("alice"), None).await, 429);
        assert_eq!(call(&p, get(), None).await, 200);
        assert_eq!(call(&p, get(), None).await, 429);
    }

    async fn by_header(request: &RequestHead, _context: &Context, _policy_name: &str) -> Option<RateLimitKey> {
        let key = request.header("x-customer")?;
        Some(RateLimitKey { key: key.to_owned(), requests_allowed: (key == "gold").then_some(3), time_window_minutes: None })
    }

    #[tokio::test]
    async fn identifier_function_keys_and_requests_override() {
        let p = policy(json!({
            "rateLimitBy": "function", "timeWindowMinutes": 1, "limits": {"requests": 1, "tokens": 100},
            "identifier": {"export": "byHeader", "module": "$import(./modules/rl)"}
        }));
        assert_eq!(call(&p, get(), None).await, 500, "an unwired identifier is an error, not a pass");
        let p = p.with_identifier(rate_limit_identifier(|req, cx| Box::pin(by_header(req, cx, "complex"))));
        let with = |v: &str| {
            let mut r = get();
            r.set_header("x-customer", v).unwrap_or_else(|e| panic!("{e}"));
            r
        };
        for _ in 0..4 {
            assert_eq!(call(&p, get(), None).await, 200, "no key: not limited");
        }
        assert_eq!(call(&p, with("basic"), None).await, 200);
        assert_eq!(call(&p, with("basic"), None).await, 429);
        for _ in 0..3 {
            assert_eq!(call(&p, with("gold"), None).await, 200);
        }
        assert_eq!(call(&p, with("gold"), None).await, 429);
    }

    #[tokio::test]
    async fn redis_strict_and_async_modes() {
        use crate::ratelimit::redis::tests::{Server, free_port, url};
        let port = free_port();
        let Some(_server) = Server::start(port).await else { return };
        let store = || {
            let l = Limiter::Redis(Arc::new(must(crate::ratelimit::RedisLimiter::with_timeout(&url(port), Duration::from_secs(2)))));
            Arc::new(CounterStore::for_limiter(&l))
        };
        let build = |mode: &str, s: Arc<CounterStore>| {
            let o: ComplexRateLimitInboundOptions =
                must(serde_json::from_value(json!({"rateLimitBy": "all", "timeWindowMinutes": 1, "limits": {"tokens": 10}, "mode": mode})));
            must(ComplexRateLimitInbound::new(o, "shared", s))
        };
        let (a, b) = (build("strict", store()), build("strict", store()));
        // Recording in Redis happens in the background after the response: wait for it.
        let settle = || tokio::time::sleep(Duration::from_millis(100));
        assert_eq!(call(&a, get(), Some(6)).await, 200);
        settle().await;
        assert_eq!(call(&b, get(), Some(6)).await, 200);
        settle().await;
        assert_eq!(call(&a, get(), None).await, 429, "replica a sees b's tokens");
        assert_eq!(call(&b, get(), None).await, 429);
        // Async replica on the same counters: admits at once, then learns the verdict.
        let c = build("async", store());
        assert_eq!(call(&c, get(), None).await, 200);
        let mut rejected = false;
        for _ in 0..40 {
            settle().await;
            if call(&c, get(), None).await == 429 {
                rejected = true;
                break;
            }
        }
        assert!(rejected, "the Redis verdict did not reach the async replica");
    }
}
