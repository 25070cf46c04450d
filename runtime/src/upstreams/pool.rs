//! A set of upstreams behind one route (or several routes listing the same set): weighted
//! selection, passive ejection and the verdict of active health checks.
//!
//! Selection is smooth weighted round-robin (nginx's algorithm) computed once at start-up into
//! one period of picks, so that choosing an upstream is an atomic increment and an index: no
//! lock, and a deterministic order (weights 90 and 10 give exactly 90 and 10 picks in every
//! 100). Equal weights give plain round-robin.
//!
//! An upstream leaves the rotation when it is ejected (passive: N consecutive failures of real
//! requests) or unhealthy (active: probes, see [`super::probe`]). Ejection is never applied to
//! the last upstream in rotation, and when nothing is in rotation every upstream is tried again
//! rather than failing requests without trying.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use http::StatusCode;

use crate::proxy::Stage;

/// The most upstreams in one set (the generator checks it too).
pub const MAX_UPSTREAMS: usize = 64;
/// The largest weight of one upstream (the generator checks it too).
pub const MAX_WEIGHT: u32 = 1000;

/// Passive ejection settings (`ejection` in the handler options).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ejection {
    /// Consecutive failures (no connection, no answer in time, reset, or a 502/503/504 answer)
    /// that eject an upstream.
    pub consecutive_failures: u32,
    /// How long the first ejection lasts; each further ejection without a healthy period in
    /// between doubles it.
    pub cooldown: Duration,
    /// The longest ejection.
    pub max_cooldown: Duration,
}

/// Active health check settings (`healthCheck` in the handler options).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    /// The path probed on every upstream (`GET base + path`; 2xx and 3xx are healthy).
    pub path: String,
    /// Time between two probes of an upstream.
    pub interval: Duration,
    /// How long a probe may take.
    pub timeout: Duration,
    /// Consecutive failed probes that take a healthy upstream out of the rotation.
    pub unhealthy_threshold: u32,
    /// Consecutive passed probes that bring an unhealthy upstream back.
    pub healthy_threshold: u32,
}

/// One upstream of a set.
#[derive(Debug)]
pub struct Target {
    /// The base URL as configured (after `${env.X}` substitution).
    url: String,
    /// The base without trailing slashes, to which request paths are appended.
    base: String,
    weight: u32,
    consecutive_failures: AtomicU32,
    /// Milliseconds since the pool's epoch until which the upstream is ejected (0: never was).
    ejected_until: AtomicU64,
    /// How many ejections in a row, for the growing cool-down.
    ejection_level: AtomicU32,
    healthy: AtomicBool,
    probe_failures: AtomicU32,
    probe_successes: AtomicU32,
    /// Counters for the metrics.
    pub(crate) stats: TargetStats,
}

/// What happened to one upstream, for the metrics.
#[derive(Debug, Default)]
pub(crate) struct TargetStats {
    pub(crate) requests: AtomicU64,
    pub(crate) failures: AtomicU64,
    pub(crate) ejections: AtomicU64,
    pub(crate) retries: AtomicU64,
}

impl Target {
    /// An upstream with base URL `url` and `weight` (clamped to 1..=[`MAX_WEIGHT`]).
    pub fn new(url: impl Into<String>, weight: u32) -> Self {
        let url = url.into();
        let base = url.trim_end_matches('/').to_owned();
        Target {
            url,
            base,
            weight: weight.clamp(1, MAX_WEIGHT),
            consecutive_failures: AtomicU32::new(0),
            ejected_until: AtomicU64::new(0),
            ejection_level: AtomicU32::new(0),
            healthy: AtomicBool::new(true),
            probe_failures: AtomicU32::new(0),
            probe_successes: AtomicU32::new(0),
            stats: TargetStats::default(),
        }
    }

    /// The base URL as configured.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The base URL without trailing slashes.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The configured weight.
    pub fn weight(&self) -> u32 {
        self.weight
    }
}

/// A set of upstreams with its selection order and health state.
#[derive(Debug)]
pub struct UpstreamPool {
    label: String,
    targets: Box<[Target]>,
    /// One period of smooth weighted round-robin picks (indices into `targets`).
    order: Box<[u16]>,
    next: AtomicUsize,
    ejection: Option<Ejection>,
    health_check: Option<HealthCheck>,
    epoch: Instant,
}

impl UpstreamPool {
    /// A set named `label` (in logs and metrics) of `targets` (at most [`MAX_UPSTREAMS`] are
    /// kept; at least one is required, an empty list gets a placeholder that never connects).
    pub fn new(label: impl Into<String>, mut targets: Vec<Target>, ejection: Option<Ejection>, health_check: Option<HealthCheck>) -> Self {
        targets.truncate(MAX_UPSTREAMS);
        if targets.is_empty() {
            targets.push(Target::new("http://0.0.0.0:0", 1));
        }
        let weights: Vec<u32> = targets.iter().map(|t| t.weight).collect();
        UpstreamPool {
            label: label.into(),
            order: smooth_weighted_order(&weights).into_boxed_slice(),
            targets: targets.into_boxed_slice(),
            next: AtomicUsize::new(0),
            ejection,
            health_check,
            epoch: Instant::now(),
        }
    }

    /// The name used in logs and metrics.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The upstreams, in configuration order.
    pub fn targets(&self) -> &[Target] {
        &self.targets
    }

    /// The active health check, when configured.
    pub fn health_check(&self) -> Option<&HealthCheck> {
        self.health_check.as_ref()
    }

    /// The base URLs, in configuration order.
    pub fn urls(&self) -> impl Iterator<Item = &str> {
        self.targets.iter().map(|t| t.url.as_str())
    }

    /// Picks the upstream for the next attempt, avoiding `avoid` (the one that just failed)
    /// when another is in rotation.
    pub fn pick(&self, avoid: Option<usize>) -> usize {
        self.pick_at(avoid, Instant::now())
    }

    pub(crate) fn pick_at(&self, avoid: Option<usize>, now: Instant) -> usize {
        let n = self.targets.len();
        if n == 1 {
            return 0;
        }
        let now = self.millis(now);
        let usable = |i: usize| Some(i) != avoid && self.in_rotation_ms(i, now);
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let len = self.order.len();
        if (0..n).any(usable) {
            for k in 0..len {
                let i = usize::from(self.order[(start + k) % len]);
                if usable(i) {
                    return i;
                }
            }
        }
        // Nothing else in rotation: try the others anyway (a wrong verdict must not turn every
        // request away), and the one to avoid only when it is the only one.
        for k in 0..len {
            let i = usize::from(self.order[(start + k) % len]);
            if Some(i) != avoid {
                return i;
            }
        }
        avoid.unwrap_or(0)
    }

    /// Whether upstream `i` is in rotation: not ejected and not found unhealthy.
    pub fn in_rotation(&self, i: usize) -> bool {
        self.in_rotation_ms(i, self.millis(Instant::now()))
    }

    /// Whether upstream `i` is ejected now.
    pub fn is_ejected(&self, i: usize) -> bool {
        let now = self.millis(Instant::now());
        self.targets.get(i).is_some_and(|t| t.ejected_until.load(Ordering::Relaxed) > now)
    }

    /// Whether the active health check last found upstream `i` healthy (always true without
    /// health checks).
    pub fn is_healthy(&self, i: usize) -> bool {
        self.targets.get(i).is_some_and(|t| t.healthy.load(Ordering::Relaxed))
    }

    /// Whether an upstream other than `i` is in rotation (a retry can fail over at once).
    pub(crate) fn other_in_rotation(&self, i: usize) -> bool {
        let now = self.millis(Instant::now());
        (0..self.targets.len()).any(|j| j != i && self.in_rotation_ms(j, now))
    }

    fn in_rotation_ms(&self, i: usize, now: u64) -> bool {
        let t = &self.targets[i];
        t.healthy.load(Ordering::Relaxed) && t.ejected_until.load(Ordering::Relaxed) <= now
    }

    fn millis(&self, now: Instant) -> u64 {
        // Offset by one so that 0 stays "never ejected".
        u64::try_from(now.saturating_duration_since(self.epoch).as_millis()).unwrap_or(u64::MAX - 1) + 1
    }

    /// Counts an attempt sent to upstream `i` (`retry`: not the request's first attempt).
    pub(crate) fn count_attempt(&self, i: usize, retry: bool) {
        if let Some(t) = self.targets.get(i) {
            t.stats.requests.fetch_add(1, Ordering::Relaxed);
            if retry {
                t.stats.retries.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Records the answer of upstream `i`: 502, 503 and 504 count as failures (the upstream or
    /// what stands behind it is unavailable), any other status as a success.
    pub(crate) fn record_status(&self, i: usize, status: StatusCode) {
        let failed = matches!(status.as_u16(), 502..=504);
        self.record_at(i, !failed, Instant::now());
    }

    /// Records a failed exchange with upstream `i`. Failures on the gateway's or the client's
    /// side say nothing about the upstream and are ignored.
    pub(crate) fn record_failure(&self, i: usize, stage: Stage) {
        if stage != Stage::Local {
            self.record_at(i, false, Instant::now());
        }
    }

    pub(crate) fn record_at(&self, i: usize, ok: bool, now: Instant) {
        let Some(t) = self.targets.get(i) else { return };
        let now_ms = self.millis(now);
        if ok {
            if t.consecutive_failures.load(Ordering::Relaxed) != 0 {
                t.consecutive_failures.store(0, Ordering::Relaxed);
            }
            // A full base cool-down of good answers after the last ejection ended: the next
            // ejection starts over at the base cool-down.
            if let Some(e) = &self.ejection
                && t.ejection_level.load(Ordering::Relaxed) > 0
                && now_ms >= t.ejected_until.load(Ordering::Relaxed).saturating_add(millis_of(e.cooldown))
            {
                t.ejection_level.store(0, Ordering::Relaxed);
            }
            return;
        }
        t.stats.failures.fetch_add(1, Ordering::Relaxed);
        let Some(e) = &self.ejection else { return };
        let failures = t.consecutive_failures.fetch_add(1, Ordering::Relaxed).saturating_add(1);
        if failures < e.consecutive_failures || self.targets.len() < 2 {
            return;
        }
        let until = t.ejected_until.load(Ordering::Relaxed);
        if until > now_ms {
            // A request that started before the ejection.
            return;
        }
        if !(0..self.targets.len()).any(|j| j != i && self.in_rotation_ms(j, now_ms)) {
            // Never eject the last upstream in rotation.
            return;
        }
        let level = t.ejection_level.load(Ordering::Relaxed);
        let cooldown = e.cooldown.saturating_mul(1u32 << level.min(20)).min(e.max_cooldown);
        if t.ejected_until.compare_exchange(until, now_ms.saturating_add(millis_of(cooldown)), Ordering::Relaxed, Ordering::Relaxed).is_err() {
            return;
        }
        t.ejection_level.store(level.saturating_add(1), Ordering::Relaxed);
        t.consecutive_failures.store(0, Ordering::Relaxed);
        t.stats.ejections.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(pool = %self.label, upstream = %t.url, failures, ?cooldown, "upstream ejected after consecutive failures");
    }

    /// Records the result of an active probe of upstream `i`.
    pub(crate) fn record_probe(&self, i: usize, ok: bool, why: &str) {
        let (Some(t), Some(hc)) = (self.targets.get(i), &self.health_check) else { return };
        if ok {
            t.probe_failures.store(0, Ordering::Relaxed);
            let passed = t.probe_successes.load(Ordering::Relaxed).saturating_add(1);
            t.probe_successes.store(passed, Ordering::Relaxed);
            if !t.healthy.load(Ordering::Relaxed) && passed >= hc.healthy_threshold {
                t.healthy.store(true, Ordering::Relaxed);
                tracing::info!(pool = %self.label, upstream = %t.url, "upstream healthy again: back in rotation");
            }
        } else {
            t.probe_successes.store(0, Ordering::Relaxed);
            let failed = t.probe_failures.load(Ordering::Relaxed).saturating_add(1);
            t.probe_failures.store(failed, Ordering::Relaxed);
            if t.healthy.load(Ordering::Relaxed) && failed >= hc.unhealthy_threshold {
                t.healthy.store(false, Ordering::Relaxed);
                tracing::warn!(pool = %self.label, upstream = %t.url, reason = why, "upstream unhealthy: out of rotation");
            }
        }
    }
}

fn millis_of(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// One period of smooth weighted round-robin (nginx): each step every upstream gains its
/// weight, the one with the most current weight is picked and loses the total. Weights are
/// divided by their greatest common divisor first, so the period is as short as possible.
pub(crate) fn smooth_weighted_order(weights: &[u32]) -> Vec<u16> {
    let g = weights.iter().copied().fold(0, gcd).max(1);
    let w: Vec<i64> = weights.iter().map(|&w| i64::from(w.max(1) / g)).collect();
    let total: i64 = w.iter().sum();
    let mut current = vec![0i64; w.len()];
    let mut order = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
    for _ in 0..total {
        let mut best = 0;
        for i in 0..w.len() {
            current[i] += w[i];
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total;
        order.push(u16::try_from(best).unwrap_or(0));
    }
    order
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 { a } else { gcd(b, a % b) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(weights: &[u32], ejection: Option<Ejection>) -> UpstreamPool {
        let targets = weights.iter().enumerate().map(|(i, &w)| Target::new(format!("http://u{i}/"), w)).collect();
        UpstreamPool::new("test", targets, ejection, None)
    }

    const EJECT: Ejection = Ejection { consecutive_failures: 3, cooldown: Duration::from_secs(10), max_cooldown: Duration::from_secs(35) };

    fn counts(p: &UpstreamPool, picks: usize, now: Instant) -> Vec<usize> {
        let mut c = vec![0; p.targets().len()];
        for _ in 0..picks {
            c[p.pick_at(None, now)] += 1;
        }
        c
    }

    #[test]
    fn smooth_weighted_round_robin_is_exact_and_interleaved() {
        assert_eq!(smooth_weighted_order(&[5, 1, 1]), [0, 0, 1, 0, 2, 0, 0]);
        assert_eq!(smooth_weighted_order(&[1, 1, 1]), [0, 1, 2]);
        assert_eq!(smooth_weighted_order(&[90, 10]).len(), 10, "divided by the gcd");
        let order = smooth_weighted_order(&[90, 10]);
        assert_eq!(order.iter().filter(|&&i| i == 1).count(), 1);
        let p = pool(&[90, 10], None);
        let now = Instant::now();
        assert_eq!(counts(&p, 200, now), [180, 20]);
        // The canary's picks are spread out, not bunched.
        let p = pool(&[3, 1], None);
        let seq: Vec<usize> = (0..8).map(|_| p.pick_at(None, now)).collect();
        assert_eq!(seq, [0, 0, 1, 0, 0, 0, 1, 0]);
    }

    #[test]
    fn equal_weights_round_robin_and_avoid_the_failed_one() {
        let p = pool(&[1, 1, 1], None);
        let now = Instant::now();
        let seq: Vec<usize> = (0..6).map(|_| p.pick_at(None, now)).collect();
        assert_eq!(seq, [0, 1, 2, 0, 1, 2]);
        for _ in 0..10 {
            assert_ne!(p.pick_at(Some(1), now), 1);
        }
        let single = pool(&[1], None);
        assert_eq!(single.pick_at(Some(0), now), 0, "the only upstream is retried");
    }

    #[test]
    fn consecutive_failures_eject_for_a_growing_capped_cooldown() {
        let p = pool(&[1, 1], Some(EJECT));
        let t0 = Instant::now();
        p.record_at(1, false, t0);
        p.record_at(1, false, t0);
        p.record_at(1, true, t0);
        p.record_at(1, false, t0);
        p.record_at(1, false, t0);
        assert_eq!(counts(&p, 4, t0), [2, 2], "a success resets the count");
        p.record_at(1, false, t0);
        assert_eq!(counts(&p, 10, t0), [10, 0], "ejected after 3 in a row");
        assert_eq!(p.targets()[1].stats.ejections.load(Ordering::Relaxed), 1);
        let at = |s: u64| t0 + Duration::from_secs(s);
        assert_eq!(counts(&p, 10, at(9)), [10, 0], "still cooling down");
        assert_eq!(counts(&p, 10, at(11)), [5, 5], "re-admitted after 10 s");
        // Failing again at once: 20 s, then 35 s (capped, not 40).
        for _ in 0..3 {
            p.record_at(1, false, at(11));
        }
        assert_eq!(counts(&p, 4, at(30)), [4, 0]);
        assert_eq!(counts(&p, 4, at(32)), [2, 2]);
        for _ in 0..3 {
            p.record_at(1, false, at(32));
        }
        assert_eq!(counts(&p, 4, at(66)), [4, 0]);
        assert_eq!(counts(&p, 4, at(68)), [2, 2]);
        // Healthy for a full base cool-down after re-admission: the next ejection is 10 s again.
        p.record_at(1, true, at(80));
        for _ in 0..3 {
            p.record_at(1, false, at(80));
        }
        assert_eq!(counts(&p, 4, at(89)), [4, 0]);
        assert_eq!(counts(&p, 4, at(91)), [2, 2]);
    }

    #[test]
    fn the_last_upstream_in_rotation_is_never_ejected() {
        let p = pool(&[1, 1], Some(EJECT));
        let t0 = Instant::now();
        for _ in 0..3 {
            p.record_at(0, false, t0);
        }
        for _ in 0..10 {
            p.record_at(1, false, t0);
        }
        assert_eq!(counts(&p, 4, t0), [0, 4], "upstream 1 stays: it is the last one");
        assert_eq!(p.targets()[1].stats.ejections.load(Ordering::Relaxed), 0);
        // Without ejection settings nothing is ever ejected.
        let p = pool(&[1, 1], None);
        for _ in 0..100 {
            p.record_at(0, false, t0);
        }
        assert_eq!(counts(&p, 4, t0), [2, 2]);
    }

    #[test]
    fn unhealthy_upstreams_leave_the_rotation_and_everything_is_tried_when_none_is_left() {
        let hc = HealthCheck {
            path: "/health".into(),
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            unhealthy_threshold: 2,
            healthy_threshold: 2,
        };
        let targets = vec![Target::new("http://a", 1), Target::new("http://b", 1)];
        let p = UpstreamPool::new("hc", targets, None, Some(hc));
        let now = Instant::now();
        p.record_probe(1, false, "503");
        assert!(p.is_healthy(1), "one failed probe is not enough");
        p.record_probe(1, false, "503");
        assert!(!p.is_healthy(1));
        assert_eq!(counts(&p, 6, now), [6, 0]);
        p.record_probe(0, false, "503");
        p.record_probe(0, false, "503");
        assert_eq!(counts(&p, 6, now), [3, 3], "none in rotation: both are tried");
        p.record_probe(1, true, "");
        assert!(!p.is_healthy(1));
        p.record_probe(1, true, "");
        assert!(p.is_healthy(1));
        assert_eq!(counts(&p, 6, now), [0, 6]);
    }
}
