//! quota-inbound (`QuotaInboundPolicy`): limits what a user (or a key computed by a custom
//! function) may use per hourly, daily, weekly or monthly cycle, with the counting of
//! [`crate::ratelimit::quota`] (in process, or in Redis when `RATE_LIMIT_REDIS_URL` is set).
//!
//! Each request checks the meters of its key's current cycle: when any meter with an
//! allowance has reached it, the request gets a 429 problem whose `Retry-After` is the number
//! of seconds until the cycle ends. Otherwise the request goes on and, once its response
//! exists, is counted when the status is one of `quotaOnStatusCodes` (default `200-299`):
//! `requests` by 1, plus whatever custom code set with [`QuotaInbound::set_meters`] (which may
//! also set `requests`). Counting after the response means that requests in flight together
//! when the allowance runs out are all counted: a key can end a cycle over its allowance by at
//! most the cost of those requests (see [`crate::ratelimit::quota`]).
//!
//! Store failures follow the rate limiter's rule: let requests through (logged, throttled)
//! unless `throwOnFailure`, which answers 503.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use http::StatusCode;
use http::header::{HeaderValue, RETRY_AFTER};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::policy::{Flow, FromOptions, Inbound};
use crate::ratelimit::quota::{Period, QuotaStore, Usage};
use crate::ratelimit::{Limiter, warn_throttled};
use crate::{Context, Problem, Request, RequestHead};

/// Where [`QuotaInbound::set_meters`] keeps a request's meters (not a valid template name, so
/// templates cannot reach it by accident).
const METERS_KEY: &str = "specgate:quota-meters";

/// What a quota is counted by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QuotaBy {
    /// Per authenticated user (`request.user.sub`); requests without a user count per IP.
    User,
    /// Per key returned by the `getQuotaDetail` function; `None` from it: not limited.
    Function,
}

/// Where cycles start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum QuotaAnchorMode {
    /// At the key's first call (remembered while its cycles follow one another).
    #[default]
    FirstApiCall,
    /// At the instant the `getAnchorDate` function returns (e.g. a subscription start).
    Function,
}

/// `quotaOnStatusCodes`: `"200-299, 304"` or `[200, 201]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum StatusCodes {
    /// Codes and inclusive ranges separated by commas.
    Text(String),
    /// Single codes.
    List(Vec<u16>),
}

impl StatusCodes {
    /// The inclusive ranges, or what is wrong.
    pub fn ranges(&self) -> Result<Vec<(u16, u16)>, String> {
        match self {
            StatusCodes::List(codes) => Ok(codes.iter().map(|&c| (c, c)).collect()),
            StatusCodes::Text(text) => {
                let mut out = Vec::new();
                for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                    let (a, b) = part.split_once('-').unwrap_or((part, part));
                    let parse = |s: &str| s.trim().parse::<u16>().ok().filter(|c| (100..=599).contains(c));
                    match (parse(a), parse(b)) {
                        (Some(a), Some(b)) if a <= b => out.push((a, b)),
                        _ => return Err(format!("`{part}` is not a status code or a range like 200-299")),
                    }
                }
                Ok(out)
            }
        }
    }
}

/// The `identifier` option of the quota policy: the module and the exports of its functions.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct QuotaIdentifierRef {
    /// The module, e.g. `$import(./modules/quotas)`.
    pub module: String,
    /// The anchor function (`quotaAnchorMode: function`; default `getAnchorDate`).
    #[serde(default)]
    pub get_anchor_date_export: Option<String>,
    /// The key and allowances function (`quotaBy: function`; default `getQuotaDetail`).
    #[serde(default)]
    pub get_quota_detail_export: Option<String>,
}

/// Options of `QuotaInboundPolicy` (Zuplo's names, plus `throwOnFailure`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct QuotaInboundOptions {
    /// The cycle length.
    pub period: Period,
    /// What requests are counted together.
    pub quota_by: QuotaBy,
    /// Where cycles start (default `first-api-call`).
    #[serde(default)]
    pub quota_anchor_mode: QuotaAnchorMode,
    /// Allowance per meter and cycle, e.g. `{"requests": 1000}` (a meter without one is
    /// counted but never limits).
    #[serde(default)]
    pub allowances: BTreeMap<String, u64>,
    /// Which response statuses are counted (default `"200-299"`).
    #[serde(default)]
    pub quota_on_status_codes: Option<StatusCodes>,
    /// The custom functions (required with `quotaBy: function` or `quotaAnchorMode: function`).
    #[serde(default)]
    pub identifier: Option<QuotaIdentifierRef>,
    /// When the store cannot answer: 503 instead of letting the request through (default false).
    #[serde(default)]
    pub throw_on_failure: bool,
}

/// What a `getQuotaDetail` function returns: the key, and optionally its own allowances
/// (which then replace the policy's).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QuotaDetail {
    /// The key requests are counted under (within this policy).
    pub key: String,
    /// Allowances for this key instead of the policy's.
    pub allowances: Option<BTreeMap<String, u64>>,
}

/// The future a [`QuotaDetailFn`] returns.
pub type QuotaDetailFuture<'a> = Pin<Box<dyn Future<Output = Option<QuotaDetail>> + Send + 'a>>;

/// A `getQuotaDetail` function, `(request, context) → detail`, the policy name captured by the
/// closure. Build one from `async fn f(request: &RequestHead, context: &Context, policy_name:
/// &str) -> Option<QuotaDetail>` with `quota_detail_fn(|req, cx| Box::pin(f(req, cx, "name")))`.
pub type QuotaDetailFn = Arc<dyn for<'a> Fn(&'a RequestHead, &'a Context) -> QuotaDetailFuture<'a> + Send + Sync>;

/// Wraps a closure as a [`QuotaDetailFn`].
pub fn quota_detail_fn<F>(f: F) -> QuotaDetailFn
where
    F: for<'a> Fn(&'a RequestHead, &'a Context) -> QuotaDetailFuture<'a> + Send + Sync + 'static,
{
    Arc::new(f)
}

/// The future a [`QuotaAnchorFn`] returns.
pub type QuotaAnchorFuture<'a> = Pin<Box<dyn Future<Output = Option<SystemTime>> + Send + 'a>>;

/// A `getAnchorDate` function: `None` falls back to the first call. Build one from `async fn
/// f(request: &RequestHead, context: &Context, policy_name: &str) -> Option<SystemTime>` with
/// `quota_anchor_fn(|req, cx| Box::pin(f(req, cx, "name")))`.
pub type QuotaAnchorFn = Arc<dyn for<'a> Fn(&'a RequestHead, &'a Context) -> QuotaAnchorFuture<'a> + Send + Sync>;

/// Wraps a closure as a [`QuotaAnchorFn`].
pub fn quota_anchor_fn<F>(f: F) -> QuotaAnchorFn
where
    F: for<'a> Fn(&'a RequestHead, &'a Context) -> QuotaAnchorFuture<'a> + Send + Sync + 'static,
{
    Arc::new(f)
}

/// The clock quotas read (µs since the Unix epoch); replaceable for tests.
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

fn system_clock() -> i64 {
    let d = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

/// `QuotaInboundPolicy`.
pub struct QuotaInbound {
    name: String,
    period: Period,
    by: QuotaBy,
    anchor_mode: QuotaAnchorMode,
    allowances: BTreeMap<String, u64>,
    statuses: Arc<[(u16, u16)]>,
    throw_on_failure: bool,
    identifier_ref: Option<QuotaIdentifierRef>,
    detail_fn: Option<QuotaDetailFn>,
    anchor_fn: Option<QuotaAnchorFn>,
    store: Arc<QuotaStore>,
    clock: Clock,
}

impl std::fmt::Debug for QuotaInbound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuotaInbound")
            .field("name", &self.name)
            .field("period", &self.period)
            .field("by", &self.by)
            .field("anchor_mode", &self.anchor_mode)
            .field("allowances", &self.allowances)
            .field("statuses", &self.statuses)
            .finish_non_exhaustive()
    }
}

impl FromOptions for QuotaInbound {
    type Options = QuotaInboundOptions;
    /// Uses the store of the process-wide limiter ([`Limiter::shared`]); call inside the Tokio
    /// runtime when `RATE_LIMIT_REDIS_URL` is set.
    fn from_options(options: Self::Options, name: &str) -> Result<Self, String> {
        let limiter = Limiter::shared()?;
        Self::new(options, name, Arc::new(QuotaStore::for_limiter(&limiter)))
    }
}

impl QuotaInbound {
    /// Builds the policy on a given store (tests and custom wiring).
    pub fn new(options: QuotaInboundOptions, name: &str, store: Arc<QuotaStore>) -> Result<Self, String> {
        if options.allowances.is_empty() && options.quota_by != QuotaBy::Function {
            return Err("`allowances` needs at least one meter, e.g. {\"requests\": 1000}".to_owned());
        }
        if let Some((meter, _)) = options.allowances.iter().find(|(_, v)| **v == 0) {
            return Err(format!("the allowance of `{meter}` must be at least 1"));
        }
        let needs_fn = options.quota_by == QuotaBy::Function || options.quota_anchor_mode == QuotaAnchorMode::Function;
        if needs_fn && options.identifier.is_none() {
            return Err("quotaBy or quotaAnchorMode `function` needs an `identifier` ({module, getQuotaDetailExport, getAnchorDateExport})".to_owned());
        }
        let statuses = match &options.quota_on_status_codes {
            Some(codes) => codes.ranges().map_err(|e| format!("quotaOnStatusCodes: {e}"))?,
            None => vec![(200, 299)],
        };
        Ok(QuotaInbound {
            name: name.to_owned(),
            period: options.period,
            by: options.quota_by,
            anchor_mode: options.quota_anchor_mode,
            allowances: options.allowances,
            statuses: statuses.into(),
            throw_on_failure: options.throw_on_failure,
            identifier_ref: options.identifier,
            detail_fn: None,
            anchor_fn: None,
            store,
            clock: Arc::new(system_clock),
        })
    }

    /// Wires in the `getQuotaDetail` function of `quotaBy: function`.
    pub fn with_quota_detail(mut self, f: QuotaDetailFn) -> Self {
        self.detail_fn = Some(f);
        self
    }

    /// Wires in the `getAnchorDate` function of `quotaAnchorMode: function`.
    pub fn with_anchor_date(mut self, f: QuotaAnchorFn) -> Self {
        self.anchor_fn = Some(f);
        self
    }

    /// Replaces the clock (µs since the Unix epoch), so tests can cross cycle ends.
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// The `identifier` option, for the generator.
    pub fn identifier_ref(&self) -> Option<&QuotaIdentifierRef> {
        self.identifier_ref.as_ref()
    }

    /// Sets what this request adds to meters of every quota policy on its route (Zuplo's
    /// `QuotaInboundPolicy.setMeters`): merged with earlier calls, later values win; `requests`
    /// counts 1 unless set here. Call it from a handler or any policy, before the response is
    /// finished.
    pub fn set_meters<'a>(cx: &mut Context, meters: impl IntoIterator<Item = (&'a str, u64)>) {
        let entry = cx.custom.entry(METERS_KEY.to_owned()).or_insert_with(|| Value::Object(Map::new()));
        if !entry.is_object() {
            *entry = Value::Object(Map::new());
        }
        if let Value::Object(map) = entry {
            for (meter, n) in meters {
                map.insert(meter.to_owned(), Value::from(n));
            }
        }
    }

    /// The increments of a request: `requests` 1 and what [`QuotaInbound::set_meters`] set.
    fn increments(cx: &Context) -> Vec<(String, u64)> {
        let mut out = BTreeMap::from([("requests".to_owned(), 1u64)]);
        if let Some(Value::Object(map)) = cx.custom.get(METERS_KEY) {
            for (meter, v) in map {
                out.insert(meter.clone(), v.as_u64().unwrap_or(0));
            }
        }
        out.into_iter().filter(|(_, n)| *n > 0).collect()
    }

    fn internal(&self, cx: &Context, what: &str) -> Flow {
        tracing::error!(request_id = %cx.request_id, policy = %self.name, "quota {what} function not wired in");
        Flow::Problem(cx.runtime().error_problem(Problem::internal(format!("the policy `{}` has no {what} function", self.name))))
    }

    /// The key and allowances of a `quotaBy: function` request; `Ok(None)`: not limited.
    async fn function_key(&self, head: &RequestHead, cx: &Context) -> Result<Option<(String, BTreeMap<String, u64>)>, Flow> {
        let Some(f) = &self.detail_fn else { return Err(self.internal(cx, "getQuotaDetail")) };
        let detail = match crate::policy::guard(f(head, cx)).await {
            Ok(d) => d,
            Err(panic) => return Err(Flow::Respond(crate::policy::panicked("getQuotaDetail", &panic, cx))),
        };
        let Some(d) = detail else { return Ok(None) };
        let allowances = d.allowances.unwrap_or_else(|| self.allowances.clone());
        Ok(Some((format!("fn:{}", d.key), allowances)))
    }

    /// The anchor of a `quotaAnchorMode: function` request (µs since the epoch); `None`: the
    /// key's first call.
    async fn function_anchor(&self, head: &RequestHead, cx: &Context) -> Result<Option<i64>, Flow> {
        let Some(f) = &self.anchor_fn else { return Err(self.internal(cx, "getAnchorDate")) };
        match crate::policy::guard(f(head, cx)).await {
            Ok(t) => Ok(t.map(|t| match t.duration_since(UNIX_EPOCH) {
                Ok(d) => i64::try_from(d.as_micros()).unwrap_or(i64::MAX),
                Err(e) => -i64::try_from(e.duration().as_micros()).unwrap_or(i64::MAX),
            })),
            Err(panic) => Err(Flow::Respond(crate::policy::panicked("getAnchorDate", &panic, cx))),
        }
    }

    fn rejection(&self, usage: &Usage, now: i64, meter: &str, allowance: u64) -> Problem {
        let used = usage.meters.get(meter).copied().unwrap_or(0);
        let wait = usage.remaining_time(now);
        let secs = (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1);
        Problem::new(StatusCode::TOO_MANY_REQUESTS)
            .with_detail(format!("quota exceeded: `{meter}` used {used} of {allowance} this {} period", self.period_name()))
            .with_header(RETRY_AFTER, HeaderValue::from(secs))
    }

    fn period_name(&self) -> &'static str {
        match self.period {
            Period::Hourly => "hourly",
            Period::Daily => "daily",
            Period::Weekly => "weekly",
            Period::Monthly => "monthly",
        }
    }

    fn failed(&self, req: Request, cx: &Context, e: &dyn std::fmt::Display) -> Flow {
        if self.throw_on_failure {
            tracing::error!(request_id = %cx.request_id, policy = %self.name, error = %e, "quota check failed");
            Flow::Problem(Problem::new(StatusCode::SERVICE_UNAVAILABLE).with_detail("quotas are unavailable"))
        } else {
            warn_throttled("quota check failed; letting requests through", e);
            Flow::Continue(req)
        }
    }
}

impl Inbound for QuotaInbound {
    async fn on_request(&self, req: Request, cx: &mut Context) -> Flow {
        // An owned head, only for custom functions: a `&Request` held across their calls would
        // make this future !Send, and cloning headers is not free.
        let by_function = self.by == QuotaBy::Function;
        let anchor_by_function = self.anchor_mode == QuotaAnchorMode::Function;
        let head = (by_function || anchor_by_function).then(|| req.head());
        let (key, allowances) = match &head {
            Some(head) if by_function => match self.function_key(head, cx).await {
                Ok(Some(k)) => k,
                Ok(None) => return Flow::Continue(req),
                Err(flow) => return flow,
            },
            _ => match &req.user {
                Some(u) => (format!("user:{}", u.sub), self.allowances.clone()),
                None => (format!("ip:{}", cx.client_ip), self.allowances.clone()),
            },
        };
        let anchor = match &head {
            Some(head) if anchor_by_function => match self.function_anchor(head, cx).await {
                Ok(a) => a,
                Err(flow) => return flow,
            },
            _ => None,
        };
        // Scoped by policy name, length-prefixed so no name/key pair collides with another.
        let key = format!("{}:{}:{key}", self.name.len(), self.name, key = key);
        let now = (self.clock)();
        let usage = match self.store.check(&key, self.period, anchor, now).await {
            Ok(u) => u,
            Err(e) => return self.failed(req, cx, &e),
        };
        if let Some((meter, &allowance)) = allowances.iter().find(|(m, a)| usage.meters.get(*m).copied().unwrap_or(0) >= **a) {
            tracing::debug!(request_id = %cx.request_id, policy = %self.name, meter = %meter, "quota exceeded");
            return Flow::Problem(self.rejection(&usage, now, meter, allowance));
        }
        // Count once the response exists, whoever produced it. The anchor is the one this
        // check used, so a request that straddles a cycle end is counted in the new cycle.
        let (store, statuses, clock, period, policy) = (self.store.clone(), self.statuses.clone(), self.clock.clone(), self.period, self.name.clone());
        let anchor = Some(usage.anchor);
        cx.on_response(move |resp, cx| {
            let status = resp.status().as_u16();
            if !statuses.iter().any(|&(a, b)| (a..=b).contains(&status)) {
                return resp;
            }
            let increments = QuotaInbound::increments(cx);
            let now = clock();
            match &*store {
                // In process the count is immediate, so the next request already sees it.
                QuotaStore::Memory(m) => {
                    m.add_now(&key, period, anchor, now, &increments);
                }
                QuotaStore::Redis(_) => {
                    let request_id = cx.request_id.clone();
                    cx.wait_until(async move {
                        if let Err(e) = store.add(&key, period, anchor, now, &increments).await {
                            tracing::debug!(request_id = %request_id, policy = %policy, error = %e, "quota count failed");
                            warn_throttled("quota: cannot count a request", &e);
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
    use std::sync::atomic::{AtomicI64, Ordering};
    use std::time::Duration;

    use serde_json::json;

    use super::*;
    use crate::User;
    use crate::policies::test_context;
    use crate::policies::test_util::{continued, must, problem_status, request, response};

    const HOUR: i64 = 3_600_000_000;

    /// A clock tests move by hand.
    fn manual_clock(start: i64) -> (Arc<AtomicI64>, Clock) {
        let t = Arc::new(AtomicI64::new(start));
        let c = t.clone();
        (t, Arc::new(move || c.load(Ordering::SeqCst)))
    }

    fn policy(options: serde_json::Value, clock: Clock) -> QuotaInbound {
        let options: QuotaInboundOptions = must(serde_json::from_value(options));
        must(QuotaInbound::new(options, "quota", Arc::new(QuotaStore::Memory(Default::default())))).with_clock(clock)
    }

    fn as_user(sub: &str) -> Request {
        let mut r = request("GET", "/test", "");
        r.user = Some(User { sub: sub.to_owned(), data: Value::Null });
        r
    }

    /// One request through the policy and a response of `status` (what the route would do).
    async fn call(p: &QuotaInbound, req: Request, status: u16) -> Result<u16, u16> {
        let mut cx = test_context();
        match p.on_request(req, &mut cx).await {
            Flow::Continue(_) => Ok(cx.finish_response(response(status, &[], "")).status().as_u16()),
            flow => Err(problem_status(&flow).unwrap_or(0)),
        }
    }

    #[test]
    fn options_parse_and_validate() {
        let ok = json!({"period": "monthly", "quotaBy": "user", "allowances": {"requests": 10}, "quotaOnStatusCodes": "200-299, 304"});
        let o: QuotaInboundOptions = must(serde_json::from_value(ok));
        assert_eq!(o.quota_anchor_mode, QuotaAnchorMode::FirstApiCall);
        assert_eq!(o.quota_on_status_codes.as_ref().map(StatusCodes::ranges), Some(Ok(vec![(200, 299), (304, 304)])));
        let o: QuotaInboundOptions = must(serde_json::from_value(json!({
            "period": "hourly", "quotaBy": "function", "quotaAnchorMode": "function", "quotaOnStatusCodes": [200, 201],
            "identifier": {"module": "$import(./modules/q)", "getQuotaDetailExport": "detail", "getAnchorDateExport": "anchor"}
        })));
        assert_eq!(o.quota_on_status_codes.map(|c| c.ranges()), Some(Ok(vec![(200, 200), (201, 201)])));
        for bad in [
            json!({"period": "yearly", "quotaBy": "user", "allowances": {"requests": 1}}),
            json!({"period": "daily", "quotaBy": "ip", "allowances": {"requests": 1}}),
            json!({"period": "daily", "quotaBy": "user", "allowances": {"requests": "many"}}),
            json!({"period": "daily", "quotaBy": "user", "allowances": {"requests": 1}, "extra": true}),
            json!({"quotaBy": "user", "allowances": {"requests": 1}}),
        ] {
            assert!(serde_json::from_value::<QuotaInboundOptions>(bad.clone()).is_err(), "{bad}");
        }
        for bad in [
            json!({"period": "daily", "quotaBy": "user"}),
            json!({"period": "daily", "quotaBy": "user", "allowances": {"requests": 0}}),
            json!({"period": "daily", "quotaBy": "function", "allowances": {"requests": 1}}),
            json!({"period": "daily", "quotaBy": "user", "allowances": {"requests": 1}, "quotaAnchorMode": "function"}),
            json!({"period": "daily", "quotaBy": "user", "allowances": {"requests": 1}, "quotaOnStatusCodes": "200-x"}),
            json!({"period": "daily", "quotaBy": "user", "allowances": {"requests": 1}, "quotaOnStatusCodes": "299-200"}),
        ] {
            let o: QuotaInboundOptions = must(serde_json::from_value(bad.clone()));
            assert!(QuotaInbound::new(o, "q", Arc::new(QuotaStore::Memory(Default::default()))).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn over_quota_is_a_429_until_the_period_ends() {
        let start = 1_700_000_000_000_000;
        let (t, clock) = manual_clock(start);
        let p = policy(json!({"period": "hourly", "quotaBy": "user", "allowances": {"requests": 3}}), clock);
        for _ in 0..3 {
            assert_eq!(call(&p, as_user("alice"), 200).await, Ok(200));
        }
        // Another user has their own quota.
        assert_eq!(call(&p, as_user("bob"), 200).await, Ok(200));
        // 20 minutes later alice is still over; Retry-After is the rest of her hour.
        t.store(start + HOUR / 3, Ordering::SeqCst);
        let mut cx = test_context();
        let flow = p.on_request(as_user("alice"), &mut cx).await;
        assert_eq!(problem_status(&flow), Some(429));
        let Flow::Problem(problem) = flow else { return };
        let resp = cx.problem(problem);
        assert_eq!(resp.headers().get("retry-after").and_then(|v| v.to_str().ok()), Some("2400"));
        // One µs before the cycle ends: still over; at its end: a new cycle.
        t.store(start + HOUR - 1, Ordering::SeqCst);
        assert_eq!(call(&p, as_user("alice"), 200).await, Err(429));
        t.store(start + HOUR, Ordering::SeqCst);
        assert_eq!(call(&p, as_user("alice"), 200).await, Ok(200));
    }

    #[tokio::test]
    async fn only_listed_statuses_are_counted() {
        let (_, clock) = manual_clock(1_700_000_000_000_000);
        let p = policy(json!({"period": "daily", "quotaBy": "user", "allowances": {"requests": 2}, "quotaOnStatusCodes": "200-299, 304"}), clock);
        // Failures cost nothing, however many.
        for status in [500, 404, 429, 302, 500] {
            assert_eq!(call(&p, as_user("a"), status).await, Ok(status));
        }
        assert_eq!(call(&p, as_user("a"), 304).await, Ok(304));
        assert_eq!(call(&p, as_user("a"), 201).await, Ok(201));
        assert_eq!(call(&p, as_user("a"), 200).await, Err(429));
    }

    #[tokio::test]
    async fn requests_in_flight_together_are_all_counted() {
        let (_, clock) = manual_clock(1_700_000_000_000_000);
        let p = policy(json!({"period": "daily", "quotaBy": "user", "allowances": {"requests": 2}}), clock);
        // Three requests pass the check before any of them is answered (the documented race).
        let mut cxs = Vec::new();
        for _ in 0..3 {
            let mut cx = test_context();
            assert!(continued(p.on_request(as_user("a"), &mut cx).await).is_ok());
            cxs.push(cx);
        }
        for mut cx in cxs {
            cx.finish_response(response(200, &[], ""));
        }
        // All three were counted (3 of 2), and the key is over until the cycle ends.
        let QuotaStore::Memory(m) = &*p.store else { return };
        let u = m.add_now("5:quota:user:a", Period::Daily, None, (p.clock)(), &[]);
        assert_eq!(u.meters.get("requests"), Some(&3));
        assert_eq!(call(&p, as_user("a"), 200).await, Err(429));
    }

    #[tokio::test]
    async fn custom_meters_from_set_meters() {
        let (_, clock) = manual_clock(1_700_000_000_000_000);
        let p = policy(json!({"period": "monthly", "quotaBy": "user", "allowances": {"tokens": 100, "requests": 50}}), clock);
        let spend = async |tokens: u64| {
            let mut cx = test_context();
            match p.on_request(as_user("a"), &mut cx).await {
                Flow::Continue(_) => {
                    // As a handler or outbound policy would, once it knows the cost.
                    QuotaInbound::set_meters(&mut cx, [("tokens", tokens)]);
                    cx.finish_response(response(200, &[], "")).status().as_u16()
                }
                flow => problem_status(&flow).unwrap_or(0),
            }
        };
        assert_eq!(spend(60).await, 200);
        assert_eq!(spend(39).await, 200);
        // 99 of 100: admitted, and may overshoot (the cost is known only afterwards).
        assert_eq!(spend(30).await, 200);
        assert_eq!(spend(1).await, 429);
        // set_meters merges; `requests` can be set too.
        let mut cx = test_context();
        QuotaInbound::set_meters(&mut cx, [("a", 1), ("requests", 0)]);
        QuotaInbound::set_meters(&mut cx, [("a", 2)]);
        assert_eq!(QuotaInbound::increments(&cx), vec![("a".to_owned(), 2)]);
    }

    async fn detail(request: &RequestHead, _context: &Context, _policy_name: &str) -> Option<QuotaDetail> {
        let org = request.header("x-org")?.to_owned();
        let allowances = (org == "big").then(|| BTreeMap::from([("requests".to_owned(), 3)]));
        Some(QuotaDetail { key: org, allowances })
    }

    async fn subscription_start(_request: &RequestHead, _context: &Context, _policy_name: &str) -> Option<SystemTime> {
        // 2023-11-14T22:00:00Z: cycles end at 22:00 each day.
        Some(UNIX_EPOCH + Duration::from_secs(1_700_000_000 - 1_700_000_000 % 86_400 + 22 * 3600))
    }

    #[tokio::test]
    async fn function_keys_allowances_and_anchor() {
        let start = 1_700_000_000_000_000; // 2023-11-14T22:13:20Z
        let (t, clock) = manual_clock(start);
        let p = policy(
            json!({"period": "daily", "quotaBy": "function", "quotaAnchorMode": "function", "allowances": {"requests": 1},
                   "identifier": {"module": "$import(./modules/q)"}}),
            clock,
        );
        // Not wired in: a 500, not a silent pass.
        assert_eq!(call(&p, as_user("a"), 200).await, Err(500));
        let p = p
            .with_quota_detail(quota_detail_fn(|r, cx| Box::pin(detail(r, cx, "quota"))))
            .with_anchor_date(quota_anchor_fn(|r, cx| Box::pin(subscription_start(r, cx, "quota"))));
        let org = |o: &str| {
            let mut r = request("GET", "/test", "");
            must(r.set_header("x-org", o));
            r
        };
        // No key: not limited.
        for _ in 0..3 {
            assert_eq!(call(&p, request("GET", "/test", ""), 200).await, Ok(200));
        }
        assert_eq!(call(&p, org("small"), 200).await, Ok(200));
        assert_eq!(call(&p, org("small"), 200).await, Err(429));
        for _ in 0..3 {
            assert_eq!(call(&p, org("big"), 200).await, Ok(200));
        }
        let mut cx = test_context();
        let Flow::Problem(problem) = p.on_request(org("big"), &mut cx).await else { panic!("not limited") };
        // The cycle ends at the anchor's time of day (22:00Z), 23 h 46 min 40 s away.
        let resp = cx.problem(problem);
        assert_eq!(resp.headers().get("retry-after").and_then(|v| v.to_str().ok()), Some("85600"));
        t.store(start + 85_600_000_000, Ordering::SeqCst);
        assert_eq!(call(&p, org("big"), 200).await, Ok(200));
    }

    #[tokio::test]
    async fn redis_store_counts_after_the_response_and_fails_open_or_503() {
        use crate::ratelimit::RedisLimiter;
        use crate::ratelimit::redis::tests::{Server, free_port, url};

        let port = free_port();
        let Some(mut server) = Server::start(port).await else { return };
        let limiter = Limiter::Redis(Arc::new(must(RedisLimiter::new(&url(port)))));
        let store = Arc::new(QuotaStore::for_limiter(&limiter));
        let build = |throw: bool| {
            let o: QuotaInboundOptions =
                must(serde_json::from_value(json!({"period": "daily", "quotaBy": "user", "allowances": {"requests": 2}, "throwOnFailure": throw})));
            must(QuotaInbound::new(o, if throw { "closed" } else { "open" }, store.clone()))
        };
        let (open, closed) = (build(false), build(true));
        // Counting runs in the background: wait for it before the next check.
        let counted = async |p: &QuotaInbound, expect: u64| {
            for _ in 0..100 {
                let u = store.check(&format!("{}:{}:user:a", p.name.len(), p.name), Period::Daily, None, (p.clock)()).await;
                if u.is_ok_and(|u| u.meters.get("requests") == Some(&expect)) {
                    return true;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            false
        };
        for n in 1..=2 {
            assert_eq!(call(&open, as_user("a"), 200).await, Ok(200));
            assert!(counted(&open, n).await, "request {n} not counted");
        }
        assert_eq!(call(&open, as_user("a"), 500).await, Err(429));
        server.stop();
        assert_eq!(call(&open, as_user("a"), 200).await, Ok(200), "fails open");
        assert_eq!(call(&closed, as_user("a"), 200).await, Err(503));
    }
}
