//! Prometheus metrics: per-route request counts by status class and latency histograms,
//! upstream latency, connect errors, timeouts and retries, per-upstream counters of routes with
//! several upstreams (requests, failures, ejections, retries, whether in rotation), policy
//! rejections (rate limits, auth), and in-flight requests, rendered in the text exposition
//! format.
//!
//! Off unless `METRICS_ADDR` (a separate listener, e.g. `127.0.0.1:9464`, serving
//! `GET /metrics`) or `METRICS_PATH` (a path on the main listener, e.g. `/__specgate/metrics`)
//! is set: a metrics endpoint on the public port tells anyone the API's traffic. When off,
//! the request path pays one branch.
//!
//! Counters are relaxed atomics in arrays sized at start-up (one slot per route, plus one for
//! requests that matched no route), so recording takes no lock and allocates nothing.
//! Policy rejections and local calls are keyed by name under a read-mostly lock.
//!
//! A process serving several gateways (a federated build) keeps one [`Metrics`] per gateway,
//! each series labelled with its `gateway`; the exposition renders all of them.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, PoisonError, RwLock};
use std::time::Duration;

use crate::context::RouteInfo;
use crate::upstreams::UpstreamPool;

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 14] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// A latency histogram (buckets not cumulative here; rendering sums them).
#[derive(Debug, Default)]
struct Histogram {
    buckets: [AtomicU64; BUCKETS.len() + 1],
    sum_micros: AtomicU64,
}

impl Histogram {
    fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = BUCKETS.iter().position(|b| secs <= *b).unwrap_or(BUCKETS.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(u64::try_from(d.as_micros()).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let mut cumulative = 0;
        for (i, b) in BUCKETS.iter().enumerate() {
            cumulative += self.buckets[i].load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{b}\"}} {cumulative}");
        }
        cumulative += self.buckets[BUCKETS.len()].load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {cumulative}");
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum{{{labels}}} {sum}");
        let _ = writeln!(out, "{name}_count{{{labels}}} {cumulative}");
    }

    fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).sum()
    }
}

/// What one route has seen.
#[derive(Debug, Default)]
struct RouteMetrics {
    /// Responses by status class: 1xx … 5xx.
    status: [AtomicU64; 5],
    latency: Histogram,
    upstream: Histogram,
    connect_errors: AtomicU64,
    timeouts: AtomicU64,
    retries: AtomicU64,
}

/// Why a policy turned a request away.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Rejection {
    /// A rate limit or quota was exceeded (429).
    RateLimited,
    /// Authentication failed (401).
    Unauthenticated,
    /// The caller is authenticated but not allowed (403).
    Forbidden,
    /// The request failed validation (400, 413, 415).
    Invalid,
}

impl Rejection {
    fn label(self) -> &'static str {
        match self {
            Rejection::RateLimited => "rate_limited",
            Rejection::Unauthenticated => "unauthenticated",
            Rejection::Forbidden => "forbidden",
            Rejection::Invalid => "invalid",
        }
    }
}

/// How a `local://` call was carried out (the `outcome` label of `specgate_local_calls_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LocalOutcome {
    /// Handed to a gateway of this process, without a socket.
    InProcess,
    /// Sent over HTTP to the URL of `LOCAL_GATEWAY_<NAME>_URL`.
    Http,
    /// No such gateway in this process and no URL for it (502).
    Unknown,
    /// The chain of local calls was too deep (508).
    Loop,
    /// The gateway of this process did not answer in time (504).
    TimedOut,
}

impl LocalOutcome {
    fn label(self) -> &'static str {
        match self {
            LocalOutcome::InProcess => "in_process",
            LocalOutcome::Http => "http",
            LocalOutcome::Unknown => "unknown",
            LocalOutcome::Loop => "loop",
            LocalOutcome::TimedOut => "timed_out",
        }
    }
}

/// The most `local://` call series (target and outcome) per gateway; calls to further targets
/// are counted as `other` (a target may come from a request value, which must not grow the
/// label set without bound).
const MAX_LOCAL_TARGETS: usize = 64;

/// The metrics of one gateway.
#[derive(Debug)]
pub struct Metrics {
    gateway: &'static str,
    routes: &'static [RouteInfo],
    /// One per route, then one for requests that matched none.
    per_route: Box<[RouteMetrics]>,
    in_flight: AtomicI64,
    rejections: RwLock<BTreeMap<(String, Rejection), AtomicU64>>,
    /// The upstream sets of routes with several upstreams (set once at start-up).
    pools: OnceLock<Vec<Arc<UpstreamPool>>>,
    /// `local://` calls made by this gateway, by target and outcome.
    local_calls: RwLock<BTreeMap<(String, LocalOutcome), AtomicU64>>,
    /// TCP connections accepted on this gateway's listener (a gateway reached only through
    /// `local://` has none).
    connections: AtomicU64,
}

/// Every gateway of the process with metrics on, in start-up order.
static METRICS: OnceLock<std::sync::Mutex<Vec<&'static Metrics>>> = OnceLock::new();

fn registry() -> std::sync::MutexGuard<'static, Vec<&'static Metrics>> {
    METRICS.get_or_init(Default::default).lock().unwrap_or_else(PoisonError::into_inner)
}

/// Turns metrics on for a gateway with these routes (once per gateway name; a later call for
/// the same name returns the first set).
pub fn enable(gateway: &'static str, routes: &'static [RouteInfo]) -> &'static Metrics {
    let mut all = registry();
    if let Some(m) = all.iter().find(|m| m.gateway == gateway) {
        return m;
    }
    let m: &'static Metrics = Box::leak(Box::new(Metrics::new(gateway, routes)));
    all.push(m);
    m
}

/// The metrics of the process's first gateway, when enabled.
pub fn get() -> Option<&'static Metrics> {
    METRICS.get().and_then(|_| registry().first().copied())
}

/// The metrics of the gateway named `gateway`, when enabled.
pub fn of(gateway: &str) -> Option<&'static Metrics> {
    METRICS.get().and_then(|_| registry().iter().find(|m| m.gateway == gateway).copied())
}

/// The exposition of every gateway of the process.
pub fn render_all() -> String {
    let all: Vec<&'static Metrics> = registry().clone();
    render(&all)
}

/// Counts a policy rejection under the process's first gateway (no-op when metrics are off).
/// Custom policies may call it; the built-in ones count under their own gateway through
/// [`crate::policy::settle_policy`].
pub fn rejection(policy: &str, why: Rejection) {
    if let Some(m) = get() {
        m.count_rejection(policy, why);
    }
}

/// Records an upstream exchange of `route` of gateway `m`.
pub(crate) fn upstream(m: &Metrics, route: usize, outcome: UpstreamOutcome, took: Duration) {
    let r = m.slot(Some(route));
    match outcome {
        UpstreamOutcome::Answered => r.upstream.observe(took),
        UpstreamOutcome::ConnectError => {
            r.connect_errors.fetch_add(1, Ordering::Relaxed);
        }
        UpstreamOutcome::TimedOut => {
            r.timeouts.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Counts a retry of an upstream exchange of `route` (no-op when metrics are off).
pub(crate) fn upstream_retry(route: usize) {
    if let Some(m) = get() {
        m.slot(Some(route)).retries.fetch_add(1, Ordering::Relaxed);
    }
}

/// How an upstream exchange ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UpstreamOutcome {
    /// Response headers arrived.
    Answered,
    /// No connection (refused, unreachable, reset before an answer).
    ConnectError,
    /// The connect or the answer took too long.
    TimedOut,
}

/// Decrements the in-flight gauge when the request is done, however it ends.
#[derive(Debug)]
pub(crate) struct InFlight(&'static Metrics);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Metrics {
    fn new(gateway: &'static str, routes: &'static [RouteInfo]) -> Self {
        Metrics {
            gateway,
            routes,
            per_route: (0..=routes.len()).map(|_| RouteMetrics::default()).collect(),
            in_flight: AtomicI64::new(0),
            rejections: RwLock::new(BTreeMap::new()),
            pools: OnceLock::new(),
            local_calls: RwLock::new(BTreeMap::new()),
            connections: AtomicU64::new(0),
        }
    }

    /// The gateway these metrics belong to.
    pub fn gateway(&self) -> &'static str {
        self.gateway
    }

    /// Counts a TCP connection accepted on the gateway's listener.
    pub(crate) fn count_connection(&self) {
        self.connections.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a `local://` call to `target`.
    pub(crate) fn count_local_call(&self, target: &str, outcome: LocalOutcome) {
        {
            let map = self.local_calls.read().unwrap_or_else(PoisonError::into_inner);
            if let Some(c) = map.get(&(target.to_owned(), outcome)) {
                c.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
        let mut map = self.local_calls.write().unwrap_or_else(PoisonError::into_inner);
        let known = map.keys().any(|(t, _)| t == target);
        let target = if known || map.len() < MAX_LOCAL_TARGETS { target } else { "other" };
        map.entry((target.to_owned(), outcome)).or_default().fetch_add(1, Ordering::Relaxed);
    }

    /// `local://` calls to `target` with `outcome` so far; for tests and tools.
    pub fn local_calls(&self, target: &str, outcome: LocalOutcome) -> u64 {
        let map = self.local_calls.read().unwrap_or_else(PoisonError::into_inner);
        map.get(&(target.to_owned(), outcome)).map_or(0, |c| c.load(Ordering::Relaxed))
    }

    /// Registers the upstream sets whose upstreams get their own series (once; later calls
    /// are ignored).
    pub(crate) fn set_pools(&self, pools: Vec<Arc<UpstreamPool>>) {
        let _ = self.pools.set(pools);
    }

    fn slot(&self, route: Option<usize>) -> &RouteMetrics {
        let i = route.filter(|r| *r < self.routes.len()).unwrap_or(self.routes.len());
        &self.per_route[i]
    }

    /// Counts a request as in flight until the guard is dropped.
    pub(crate) fn start(&'static self) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self)
    }

    /// Records a finished request (`route` is `None` when no route matched).
    pub(crate) fn finish(&self, route: Option<usize>, status: u16, took: Duration) {
        let r = self.slot(route);
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        r.status[class].fetch_add(1, Ordering::Relaxed);
        r.latency.observe(took);
    }

    pub(crate) fn count_rejection(&self, policy: &str, why: Rejection) {
        {
            let map = self.rejections.read().unwrap_or_else(PoisonError::into_inner);
            if let Some(c) = map.get(&(policy.to_owned(), why)) {
                c.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
        let mut map = self.rejections.write().unwrap_or_else(PoisonError::into_inner);
        // Policy names come from the project, so the map is bounded by its policy count.
        map.entry((policy.to_owned(), why)).or_default().fetch_add(1, Ordering::Relaxed);
    }

    /// Requests of `route` answered with a status of class `class` (1–5); for tests and tools.
    pub fn requests(&self, route: Option<usize>, class: u16) -> u64 {
        let i = usize::from(class.clamp(1, 5)) - 1;
        self.slot(route).status[i].load(Ordering::Relaxed)
    }

    /// The Prometheus text exposition (format 0.0.4) of this gateway alone.
    pub fn render(&self) -> String {
        render(&[self])
    }

    fn label(&self, route: Option<usize>) -> String {
        let gw = escape(self.gateway);
        match route.and_then(|i| self.routes.get(i)) {
            Some(r) => format!("gateway=\"{gw}\",route=\"{}\",method=\"{}\",path=\"{}\"", escape(r.label), r.method, escape(r.path)),
            None => format!("gateway=\"{gw}\",route=\"\",method=\"\",path=\"\""),
        }
    }

    fn all_slots(&self) -> Vec<Option<usize>> {
        (0..self.routes.len()).map(Some).chain(std::iter::once(None)).collect()
    }
}

/// The exposition of `gateways`: each family once, with the series of every gateway under it.
fn render(gateways: &[&Metrics]) -> String {
    let routes: usize = gateways.iter().map(|m| m.routes.len()).sum();
    let mut out = String::with_capacity(4096 + routes * 2048);

    out.push_str("# HELP specgate_requests_total Requests answered, by route and status class.\n");
    out.push_str("# TYPE specgate_requests_total counter\n");
    for m in gateways {
        for r in m.all_slots() {
            let l = m.label(r);
            for (i, c) in m.slot(r).status.iter().enumerate() {
                let n = c.load(Ordering::Relaxed);
                if n > 0 || r.is_some() {
                    let _ = writeln!(out, "specgate_requests_total{{{l},status=\"{}xx\"}} {n}", i + 1);
                }
            }
        }
    }
    out.push_str("# HELP specgate_request_duration_seconds Time from request received to response headers, by route.\n");
    out.push_str("# TYPE specgate_request_duration_seconds histogram\n");
    for m in gateways {
        for r in m.all_slots() {
            let s = m.slot(r);
            if r.is_some() || s.latency.count() > 0 {
                s.latency.render(&mut out, "specgate_request_duration_seconds", &m.label(r));
            }
        }
    }
    out.push_str("# HELP specgate_upstream_duration_seconds Time from sending to the upstream to its response headers, by route.\n");
    out.push_str("# TYPE specgate_upstream_duration_seconds histogram\n");
    for m in gateways {
        for r in m.all_slots().into_iter().filter(Option::is_some) {
            let s = m.slot(r);
            if s.upstream.count() > 0 {
                s.upstream.render(&mut out, "specgate_upstream_duration_seconds", &m.label(r));
            }
        }
    }
    out.push_str("# HELP specgate_upstream_connect_errors_total Upstream exchanges that failed without an answer (502), by route.\n");
    out.push_str("# TYPE specgate_upstream_connect_errors_total counter\n");
    for m in gateways {
        for r in m.all_slots().into_iter().filter(Option::is_some) {
            let _ = writeln!(out, "specgate_upstream_connect_errors_total{{{}}} {}", m.label(r), m.slot(r).connect_errors.load(Ordering::Relaxed));
        }
    }
    out.push_str("# HELP specgate_upstream_timeouts_total Upstream exchanges that timed out (504), by route.\n");
    out.push_str("# TYPE specgate_upstream_timeouts_total counter\n");
    for m in gateways {
        for r in m.all_slots().into_iter().filter(Option::is_some) {
            let _ = writeln!(out, "specgate_upstream_timeouts_total{{{}}} {}", m.label(r), m.slot(r).timeouts.load(Ordering::Relaxed));
        }
    }
    out.push_str("# HELP specgate_upstream_retries_total Upstream exchanges sent again after a failure, by route.\n");
    out.push_str("# TYPE specgate_upstream_retries_total counter\n");
    for m in gateways {
        for r in m.all_slots().into_iter().filter(Option::is_some) {
            let _ = writeln!(out, "specgate_upstream_retries_total{{{}}} {}", m.label(r), m.slot(r).retries.load(Ordering::Relaxed));
        }
    }
    render_pools(gateways, &mut out);
    out.push_str("# HELP specgate_policy_rejections_total Requests a policy turned away, by policy and reason.\n");
    out.push_str("# TYPE specgate_policy_rejections_total counter\n");
    for m in gateways {
        let gw = escape(m.gateway);
        let map = m.rejections.read().unwrap_or_else(PoisonError::into_inner);
        for ((policy, why), n) in map.iter() {
            let _ = writeln!(
                out,
                "specgate_policy_rejections_total{{gateway=\"{gw}\",policy=\"{}\",reason=\"{}\"}} {}",
                escape(policy),
                why.label(),
                n.load(Ordering::Relaxed)
            );
        }
    }
    out.push_str("# HELP specgate_local_calls_total Calls to local:// gateways, by calling gateway, target and outcome (in_process: no socket involved).\n");
    out.push_str("# TYPE specgate_local_calls_total counter\n");
    for m in gateways {
        let gw = escape(m.gateway);
        let map = m.local_calls.read().unwrap_or_else(PoisonError::into_inner);
        for ((target, outcome), n) in map.iter() {
            let _ = writeln!(
                out,
                "specgate_local_calls_total{{gateway=\"{gw}\",target=\"{}\",outcome=\"{}\"}} {}",
                escape(target),
                outcome.label(),
                n.load(Ordering::Relaxed)
            );
        }
    }
    out.push_str("# HELP specgate_connections_accepted_total TCP connections accepted on the gateway's listener.\n");
    out.push_str("# TYPE specgate_connections_accepted_total counter\n");
    for m in gateways {
        let _ = writeln!(out, "specgate_connections_accepted_total{{gateway=\"{}\"}} {}", escape(m.gateway), m.connections.load(Ordering::Relaxed));
    }
    out.push_str("# HELP specgate_requests_in_flight Requests being handled now.\n");
    out.push_str("# TYPE specgate_requests_in_flight gauge\n");
    for m in gateways {
        let _ = writeln!(out, "specgate_requests_in_flight{{gateway=\"{}\"}} {}", escape(m.gateway), m.in_flight.load(Ordering::Relaxed));
    }
    out
}

/// Per-upstream series of the upstream sets of `gateways`, each family once: `pool` is the
/// label of the first route that lists the set, `upstream` the base URL (without credentials).
fn render_pools(gateways: &[&Metrics], out: &mut String) {
    let sets: Vec<(String, &[Arc<UpstreamPool>])> = gateways
        .iter()
        .filter_map(|m| m.pools.get().filter(|p| !p.is_empty()).map(|p| (escape(m.gateway), p.as_slice())))
        .collect();
    if sets.is_empty() {
        return;
    }
    let counters: [Series<&crate::upstreams::Target, u64>; 4] = [
        ("specgate_upstream_target_requests_total", "Attempts sent to the upstream, retries included.", |t| t.stats.requests.load(Ordering::Relaxed)),
        ("specgate_upstream_target_failures_total", "Attempts that failed: no connection, no answer in time, reset, or a 502/503/504 answer.", |t| t.stats.failures.load(Ordering::Relaxed)),
        ("specgate_upstream_target_ejections_total", "Times the upstream was ejected after consecutive failures.", |t| t.stats.ejections.load(Ordering::Relaxed)),
        ("specgate_upstream_target_retries_total", "Retries sent to the upstream.", |t| t.stats.retries.load(Ordering::Relaxed)),
    ];
    let labels = |gw: &str, pool: &UpstreamPool, url: &str| format!("gateway=\"{gw}\",pool=\"{}\",upstream=\"{}\"", escape(pool.label()), escape(&without_credentials(url)));
    for (name, help, value) in counters {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} counter");
        for (gw, pools) in &sets {
            for pool in pools.iter() {
                for t in pool.targets() {
                    let _ = writeln!(out, "{name}{{{}}} {}", labels(gw, pool, t.url()), value(t));
                }
            }
        }
    }
    let gauges: [Series<(&UpstreamPool, usize), bool>; 2] = [
        ("specgate_upstream_target_ejected", "1 while the upstream is ejected (passive health).", |(p, i)| p.is_ejected(i)),
        ("specgate_upstream_target_healthy", "0 while active health checks find the upstream unhealthy.", |(p, i)| p.is_healthy(i)),
    ];
    for (name, help, value) in gauges {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} gauge");
        for (gw, pools) in &sets {
            for pool in pools.iter() {
                for (i, t) in pool.targets().iter().enumerate() {
                    let _ = writeln!(out, "{name}{{{}}} {}", labels(gw, pool, t.url()), u8::from(value((pool, i))));
                }
            }
        }
    }
}

/// A series: name, help text, and how to read its value.
type Series<T, V> = (&'static str, &'static str, fn(T) -> V);

/// A URL without `user:password@`.
fn without_credentials(url: &str) -> std::borrow::Cow<'_, str> {
    let Some((scheme, rest)) = url.split_once("://") else { return url.into() };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..end].rfind('@') {
        Some(at) => format!("{scheme}://{}", &rest[at + 1..]).into(),
        None => url.into(),
    }
}

/// A label value: backslash, quote and newline escaped as the exposition format requires.
fn escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => o.push_str("\\\\"),
            '"' => o.push_str("\\\""),
            '\n' => o.push_str("\\n"),
            c => o.push(c),
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    static ROUTES: [RouteInfo; 2] = [
        RouteInfo { index: 0, method: "GET", path: "/a/{id}", label: "getA" },
        RouteInfo { index: 1, method: "POST", path: "/b", label: "we\"ird" },
    ];

    fn line<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
        text.lines().find(|l| l.starts_with(prefix)).and_then(|l| l.rsplit(' ').next())
    }

    #[test]
    fn several_gateways_render_each_family_once() {
        static OTHER: [RouteInfo; 1] = [RouteInfo { index: 0, method: "GET", path: "/o", label: "getO" }];
        let a: &'static Metrics = Box::leak(Box::new(Metrics::new("edge", &ROUTES)));
        let b: &'static Metrics = Box::leak(Box::new(Metrics::new("orders", &OTHER)));
        a.count_connection();
        a.count_local_call("orders", LocalOutcome::InProcess);
        a.count_local_call("orders", LocalOutcome::InProcess);
        a.count_local_call("billing", LocalOutcome::Unknown);
        b.finish(Some(0), 200, Duration::from_micros(50));
        let text = render(&[a, b]);
        for family in ["specgate_requests_total", "specgate_local_calls_total", "specgate_connections_accepted_total", "specgate_requests_in_flight"] {
            assert_eq!(text.matches(&format!("# TYPE {family} ")).count(), 1, "{family}: {text}");
        }
        assert_eq!(line(&text, "specgate_local_calls_total{gateway=\"edge\",target=\"orders\",outcome=\"in_process\"}"), Some("2"));
        assert_eq!(line(&text, "specgate_local_calls_total{gateway=\"edge\",target=\"billing\",outcome=\"unknown\"}"), Some("1"));
        assert_eq!(line(&text, "specgate_connections_accepted_total{gateway=\"edge\"}"), Some("1"));
        assert_eq!(line(&text, "specgate_connections_accepted_total{gateway=\"orders\"}"), Some("0"));
        assert_eq!(line(&text, "specgate_requests_total{gateway=\"orders\",route=\"getO\",method=\"GET\",path=\"/o\",status=\"2xx\"}"), Some("1"));
        assert_eq!(a.local_calls("orders", LocalOutcome::InProcess), 2);

        // Targets from request values cannot grow the label set without bound.
        for i in 0..(MAX_LOCAL_TARGETS + 10) {
            a.count_local_call(&format!("t{i}"), LocalOutcome::Unknown);
        }
        assert!(a.local_calls("other", LocalOutcome::Unknown) >= 10);
        assert!(a.local_calls.read().map(|m| m.len()).unwrap_or(0) <= MAX_LOCAL_TARGETS + 1);
    }

    #[test]
    fn counts_and_renders() {
        let m: &'static Metrics = Box::leak(Box::new(Metrics::new("gw", &ROUTES)));
        {
            let _a = m.start();
            let _b = m.start();
            assert_eq!(m.in_flight.load(Ordering::Relaxed), 2);
        }
        assert_eq!(m.in_flight.load(Ordering::Relaxed), 0);
        m.finish(Some(0), 200, Duration::from_micros(300));
        m.finish(Some(0), 204, Duration::from_millis(3));
        m.finish(Some(0), 503, Duration::from_secs(20));
        m.finish(None, 404, Duration::from_micros(10));
        m.finish(Some(99), 404, Duration::from_micros(10));
        m.count_rejection("per-ip", Rejection::RateLimited);
        m.count_rejection("per-ip", Rejection::RateLimited);
        m.count_rejection("keys", Rejection::Unauthenticated);
        let text = m.render();
        let a = "gateway=\"gw\",route=\"getA\",method=\"GET\",path=\"/a/{id}\"";
        assert_eq!(line(&text, &format!("specgate_requests_total{{{a},status=\"2xx\"}}")), Some("2"), "{text}");
        assert_eq!(line(&text, &format!("specgate_requests_total{{{a},status=\"5xx\"}}")), Some("1"));
        assert_eq!(line(&text, "specgate_requests_total{gateway=\"gw\",route=\"\",method=\"\",path=\"\",status=\"4xx\"}"), Some("2"));
        // Cumulative buckets: 300 µs ≤ 0.0005, 3 ms ≤ 0.005, 20 s only in +Inf.
        assert_eq!(line(&text, &format!("specgate_request_duration_seconds_bucket{{{a},le=\"0.0005\"}}")), Some("1"));
        assert_eq!(line(&text, &format!("specgate_request_duration_seconds_bucket{{{a},le=\"0.005\"}}")), Some("2"));
        assert_eq!(line(&text, &format!("specgate_request_duration_seconds_bucket{{{a},le=\"10\"}}")), Some("2"));
        assert_eq!(line(&text, &format!("specgate_request_duration_seconds_bucket{{{a},le=\"+Inf\"}}")), Some("3"));
        assert_eq!(line(&text, &format!("specgate_request_duration_seconds_count{{{a}}}")), Some("3"));
        assert!(text.contains("route=\"we\\\"ird\""), "label escaped: {text}");
        assert_eq!(line(&text, "specgate_policy_rejections_total{gateway=\"gw\",policy=\"per-ip\",reason=\"rate_limited\"}"), Some("2"));
        assert_eq!(line(&text, "specgate_policy_rejections_total{gateway=\"gw\",policy=\"keys\",reason=\"unauthenticated\"}"), Some("1"));
        assert_eq!(line(&text, "specgate_requests_in_flight{gateway=\"gw\"}"), Some("0"));
        assert_eq!(m.requests(Some(0), 2), 2);
        // Per-upstream series of the upstream sets.
        let pool = Arc::new(UpstreamPool::new(
            "getA",
            vec![crate::upstreams::Target::new("http://user:secret@a:1/", 3), crate::upstreams::Target::new("http://b:2", 1)],
            Some(crate::upstreams::Ejection { consecutive_failures: 1, cooldown: Duration::from_secs(60), max_cooldown: Duration::from_secs(60) }),
            None,
        ));
        pool.count_attempt(1, false);
        pool.count_attempt(1, true);
        pool.record_failure(1, crate::proxy::Stage::NotSent);
        m.set_pools(vec![pool]);
        let text = m.render();
        let b = "gateway=\"gw\",pool=\"getA\",upstream=\"http://b:2\"";
        assert_eq!(line(&text, &format!("specgate_upstream_target_requests_total{{{b}}}")), Some("2"), "{text}");
        assert_eq!(line(&text, &format!("specgate_upstream_target_retries_total{{{b}}}")), Some("1"));
        assert_eq!(line(&text, &format!("specgate_upstream_target_failures_total{{{b}}}")), Some("1"));
        assert_eq!(line(&text, &format!("specgate_upstream_target_ejections_total{{{b}}}")), Some("1"));
        assert_eq!(line(&text, &format!("specgate_upstream_target_ejected{{{b}}}")), Some("1"));
        assert_eq!(line(&text, &format!("specgate_upstream_target_healthy{{{b}}}")), Some("1"));
        assert!(text.contains("upstream=\"http://a:1/\""), "credentials left out: {text}");
        assert!(!text.contains("secret"));
        // Every sample line is `name{labels} number`.
        for l in text.lines().filter(|l| !l.starts_with('#')) {
            let v = l.rsplit(' ').next().unwrap_or("");
            assert!(v.parse::<f64>().is_ok(), "bad sample line {l:?}");
        }
    }
}
