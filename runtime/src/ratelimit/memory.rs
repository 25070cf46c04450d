//! The in-process sliding log: 64 shards, each a mutex over a map of keys, so concurrent
//! requests for different keys rarely meet on one lock and never on a global one.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::{Decision, LimitError, window_micros};

const SHARDS: usize = 64;
/// Keys a shard holds before its first sweep (64 × 1024 ≈ 65 000 keys overall).
const DEFAULT_SWEEP_FLOOR: usize = 1024;

/// Counts requests in this process (see the module documentation of [`super`] for the
/// algorithm).
///
/// Memory stays bounded by the keys that are *live*: when a shard reaches its sweep mark, it
/// drops every key whose newest admitted instant has left its window (such a key has no
/// count left to remember), then sets the next mark at twice what survived (never below the
/// floor), so sweeping costs amortized O(1) per new key. Live keys are never evicted: that
/// would forget counts and over-admit.
#[derive(Debug)]
pub struct MemoryLimiter {
    shards: Box<[Mutex<Shard>]>,
    hasher: RandomState,
    base: Instant,
    sweep_floor: usize,
}

#[derive(Debug, Default)]
struct Shard {
    map: HashMap<String, Entry>,
    sweep_at: usize,
}

#[derive(Debug, Default)]
struct Entry {
    /// Admitted instants (µs since `base`), oldest first.
    log: VecDeque<u64>,
    /// The window of the last check, to tell when the key went idle.
    window_us: u64,
    /// Rejects everything before this instant (µs since `base`; see [`MemoryLimiter::block`]).
    blocked_until: u64,
    /// `mode: async`: requests admitted here whose Redis answer has not arrived yet.
    pending: u64,
    /// `mode: async`: what the last Redis answer left (remaining, valid until µs since `base`).
    known: Option<(u64, u64)>,
}

impl Entry {
    fn is_live(&self, now: u64) -> bool {
        self.pending > 0
            || self.blocked_until > now
            || self.known.is_some_and(|(_, until)| until > now)
            || self.log.back().is_some_and(|&t| t > now.saturating_sub(self.window_us))
    }
}

impl Default for MemoryLimiter {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryLimiter {
    /// An empty limiter.
    pub fn new() -> Self {
        Self::with_sweep_floor(DEFAULT_SWEEP_FLOOR)
    }

    /// An empty limiter whose shards first sweep idle keys at `floor` keys each.
    pub fn with_sweep_floor(floor: usize) -> Self {
        let floor = floor.max(1);
        MemoryLimiter {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard { map: HashMap::new(), sweep_at: floor })).collect(),
            hasher: RandomState::new(),
            base: Instant::now(),
            sweep_floor: floor,
        }
    }

    /// Checks and, when admitted, counts one request of `key`.
    pub fn check(&self, key: &str, limit: u64, window: Duration) -> Result<Decision, LimitError> {
        let window_us = window_micros(limit, window)?;
        let mut shard = self.shard(key).lock().unwrap_or_else(PoisonError::into_inner);
        // The clock is read under the lock so each key's log stays in order.
        let now = self.now();
        Ok(self.check_locked(&mut shard, key, limit, window_us, now))
    }

    /// Rejects every request of `key` for `duration` (used to apply a shared store's verdict
    /// locally; not counted as requests).
    pub fn block(&self, key: &str, duration: Duration) {
        let mut shard = self.shard(key).lock().unwrap_or_else(PoisonError::into_inner);
        let now = self.now();
        let until = now.saturating_add(u64::try_from(duration.as_micros()).unwrap_or(u64::MAX));
        self.prepare_insert(&mut shard, key, now);
        let entry = shard.map.entry(key.to_owned()).or_default();
        entry.blocked_until = entry.blocked_until.max(until);
    }

    /// `mode: async`, the local half: like [`MemoryLimiter::check`], but also rejects while the
    /// requests admitted here and not yet answered by Redis would use up what the last Redis
    /// answer left (`known`, until that answer's reset). An admitted request is counted as
    /// pending until [`MemoryLimiter::settle`].
    pub(crate) fn check_pending(&self, key: &str, limit: u64, window: Duration) -> Result<Decision, LimitError> {
        let window_us = window_micros(limit, window)?;
        let mut shard = self.shard(key).lock().unwrap_or_else(PoisonError::into_inner);
        let now = self.now();
        if let Some(entry) = shard.map.get_mut(key) {
            match entry.known {
                Some((_, until)) if until <= now => entry.known = None,
                Some((remaining, until)) if entry.pending >= remaining && entry.blocked_until <= now => {
                    let wait = Duration::from_micros(until - now);
                    return Ok(Decision { allowed: false, remaining: 0, retry_after: wait, reset: wait });
                }
                _ => {}
            }
        }
        let mut d = self.check_locked(&mut shard, key, limit, window_us, now);
        if let Some(entry) = shard.map.get_mut(key) {
            if d.allowed {
                entry.pending += 1;
            }
            if let Some((remaining, _)) = entry.known {
                d.remaining = d.remaining.min(remaining.saturating_sub(entry.pending));
            }
        }
        Ok(d)
    }

    /// `mode: async`: applies the Redis answer to a request [`MemoryLimiter::check_pending`]
    /// admitted (`None`: Redis failed). A rejection blocks the key until a request would fit
    /// in Redis; an admission remembers what it left, and blocks the key until its reset when
    /// that is nothing.
    pub(crate) fn settle(&self, key: &str, answer: Option<&Decision>) {
        let mut shard = self.shard(key).lock().unwrap_or_else(PoisonError::into_inner);
        let now = self.now();
        self.prepare_insert(&mut shard, key, now);
        let entry = shard.map.entry(key.to_owned()).or_default();
        entry.pending = entry.pending.saturating_sub(1);
        let Some(d) = answer else { return };
        let micros = |d: Duration| u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        if !d.allowed {
            entry.blocked_until = entry.blocked_until.max(now.saturating_add(micros(d.retry_after)));
            entry.known = Some((0, now.saturating_add(micros(d.retry_after))));
        } else {
            let until = now.saturating_add(micros(d.reset));
            entry.known = Some((d.remaining, until));
            if d.remaining == 0 {
                entry.blocked_until = entry.blocked_until.max(until);
            }
        }
    }

    /// Keys currently held (live or not yet swept), for tests and metrics.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().unwrap_or_else(PoisonError::into_inner).map.len()).sum()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// [`MemoryLimiter::check`] at a given instant (µs since the limiter's creation), so
    /// tests can move time deterministically. Instants must not go backwards per key.
    #[cfg(test)]
    pub(crate) fn check_at(&self, key: &str, limit: u64, window: Duration, now: u64) -> Result<Decision, LimitError> {
        let window_us = window_micros(limit, window)?;
        let mut shard = self.shard(key).lock().unwrap_or_else(PoisonError::into_inner);
        Ok(self.check_locked(&mut shard, key, limit, window_us, now))
    }

    fn shard(&self, key: &str) -> &Mutex<Shard> {
        // RandomState: clients choosing keys (IPs, user ids) cannot aim them all at one shard.
        let i = (self.hasher.hash_one(key) % SHARDS as u64) as usize;
        &self.shards[i]
    }

    /// µs since `base`, at least 1 so that "nothing recorded" (0) is never a real instant.
    fn now(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_micros()).unwrap_or(u64::MAX).saturating_add(1)
    }

    /// Sweeps idle keys when `key` is new and the shard reached its mark.
    fn prepare_insert(&self, shard: &mut Shard, key: &str, now: u64) {
        if shard.map.len() >= shard.sweep_at && !shard.map.contains_key(key) {
            shard.map.retain(|_, e| e.is_live(now));
            shard.sweep_at = shard.map.len().saturating_mul(2).max(self.sweep_floor);
        }
    }

    fn check_locked(&self, shard: &mut Shard, key: &str, limit: u64, window_us: u64, now: u64) -> Decision {
        self.prepare_insert(shard, key, now);
        let entry = match shard.map.get_mut(key) {
            Some(e) => e,
            None => shard.map.entry(key.to_owned()).or_default(),
        };
        entry.window_us = window_us;
        // Instants at or before the cutoff have left the window (t + window <= now).
        let cutoff = now.saturating_sub(window_us);
        while entry.log.front().is_some_and(|&t| t <= cutoff) {
            entry.log.pop_front();
        }
        if entry.blocked_until > now {
            let wait = Duration::from_micros(entry.blocked_until - now);
            return Decision { allowed: false, remaining: 0, retry_after: wait, reset: wait };
        }
        let len = entry.log.len() as u64;
        if len < limit {
            // Never record an instant before the newest one (keeps the log sorted).
            let t = entry.log.back().map_or(now, |&b| b.max(now));
            entry.log.push_back(t);
            if entry.log.len() < entry.log.capacity() / 4 {
                entry.log.shrink_to_fit();
            }
            // The oldest instant (possibly this one) leaves the window first.
            let oldest = entry.log.front().copied().unwrap_or(t);
            let reset = Duration::from_micros(oldest.saturating_add(window_us).saturating_sub(now));
            return Decision { allowed: true, remaining: limit - len - 1, retry_after: Duration::ZERO, reset };
        }
        // The request fits once all but `limit - 1` recorded instants have left: the
        // `(len - limit)`-th oldest leaves at its instant + window. A limit lowered since
        // (dynamic limits) makes `len` exceed `limit`.
        let idx = usize::try_from(len - limit).unwrap_or(usize::MAX);
        let leaves = entry.log.get(idx).map_or(now, |&t| t.saturating_add(window_us));
        let wait = Duration::from_micros(leaves.saturating_sub(now).max(1));
        Decision { allowed: false, remaining: 0, retry_after: wait, reset: wait }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    const W: Duration = Duration::from_millis(600);
    const W_US: u64 = 600_000;

    #[test]
    fn exact_limit_and_sliding() {
        let l = MemoryLimiter::new();
        for i in 0..5 {
            let d = l.check_at("k", 5, W, 1_000 + i * 100).unwrap_or_else(|e| panic!("{e}"));
            assert!(d.allowed);
            assert_eq!(d.remaining, 4 - i);
            // The count first drops when the first instant (1 000) leaves.
            assert_eq!(d.reset, Duration::from_micros(1_000 + W_US - (1_000 + i * 100)));
        }
        let d = l.check_at("k", 5, W, 2_000).unwrap_or_else(|e| panic!("{e}"));
        assert!(!d.allowed);
        // The first instant (1 000) leaves at 601 000.
        assert_eq!(d.retry_after, Duration::from_micros(601_000 - 2_000));
        // One µs early: still full; exactly then: admitted; the next one waits for 1 100.
        assert!(!l.check_at("k", 5, W, 600_999).is_ok_and(|d| d.allowed));
        assert!(l.check_at("k", 5, W, 601_000).is_ok_and(|d| d.allowed));
        let d = l.check_at("k", 5, W, 601_000).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(d.retry_after, Duration::from_micros(1_100 + W_US - 601_000));
        // Other keys are independent.
        assert!(l.check_at("other", 5, W, 601_000).is_ok_and(|d| d.allowed));
    }

    #[test]
    fn never_more_than_limit_in_any_window() {
        // Requests every 7 µs over 5 windows; check every window (t - w, t] of the admitted set.
        let l = MemoryLimiter::new();
        let (limit, w) = (13u64, 1_000u64);
        let mut admitted = Vec::new();
        let mut t = 1;
        while t < 5 * w {
            if l.check_at("k", limit, Duration::from_micros(w), t).is_ok_and(|d| d.allowed) {
                admitted.push(t);
            }
            t += 7;
        }
        for (i, &end) in admitted.iter().enumerate() {
            let inside = admitted[..=i].iter().filter(|&&a| a + w > end).count() as u64;
            assert!(inside <= limit, "{inside} admitted in the window ending at {end}");
        }
        // Continuous demand gets the full budget each window (give or take the edge).
        assert!(admitted.len() as u64 >= 4 * limit, "{}", admitted.len());
    }

    #[test]
    fn retry_after_is_never_too_early() {
        let l = MemoryLimiter::new();
        let mut now = 1;
        for step in 0..200u64 {
            let d = l.check_at("k", 3, W, now).unwrap_or_else(|e| panic!("{e}"));
            if !d.allowed {
                let at = now + u64::try_from(d.retry_after.as_micros()).unwrap_or(u64::MAX);
                assert!(!l.check_at("k", 3, W, at - 1).is_ok_and(|d| d.allowed), "admitted before Retry-After");
                assert!(l.check_at("k", 3, W, at).is_ok_and(|d| d.allowed), "rejected at Retry-After");
                now = at;
            }
            now += (step * 7919) % 250_000;
        }
    }

    #[test]
    fn rejections_do_not_consume_budget() {
        let l = MemoryLimiter::new();
        assert!(l.check_at("k", 2, W, 1).is_ok_and(|d| d.allowed));
        assert!(l.check_at("k", 2, W, 2).is_ok_and(|d| d.allowed));
        for t in 3..1_000 {
            assert!(!l.check_at("k", 2, W, t * 100).is_ok_and(|d| d.allowed));
        }
        // Both slots come back exactly when the two admitted instants leave.
        assert!(l.check_at("k", 2, W, 1 + W_US).is_ok_and(|d| d.allowed));
        assert!(l.check_at("k", 2, W, 2 + W_US).is_ok_and(|d| d.allowed));
    }

    #[test]
    fn lowered_limit_waits_for_the_right_instant() {
        let l = MemoryLimiter::new();
        for t in 1..=4 {
            assert!(l.check_at("k", 4, W, t).is_ok_and(|d| d.allowed));
        }
        // Limit now 2: at most one may remain, so three of the four must leave, the last of
        // them recorded at 3.
        let d = l.check_at("k", 2, W, 10).unwrap_or_else(|e| panic!("{e}"));
        assert!(!d.allowed);
        assert_eq!(d.retry_after, Duration::from_micros(3 + W_US - 10));
        assert!(!l.check_at("k", 2, W, 2 + W_US).is_ok_and(|d| d.allowed));
        assert!(l.check_at("k", 2, W, 3 + W_US).is_ok_and(|d| d.allowed));
    }

    #[test]
    fn invalid_limits_are_errors() {
        let l = MemoryLimiter::new();
        assert!(matches!(l.check("k", 0, W), Err(LimitError::Invalid(_))));
        assert!(matches!(l.check("k", 1, Duration::ZERO), Err(LimitError::Invalid(_))));
        assert!(matches!(l.check("k", 1, Duration::from_secs(400 * 24 * 3600)), Err(LimitError::Invalid(_))));
    }

    #[test]
    fn blocked_keys_are_rejected_without_counting() {
        let l = MemoryLimiter::new();
        l.block("k", Duration::from_secs(60));
        let d = l.check("k", 5, W).unwrap_or_else(|e| panic!("{e}"));
        assert!(!d.allowed);
        assert!(d.retry_after > Duration::from_secs(59));
    }

    #[test]
    fn idle_keys_are_swept() {
        let l = MemoryLimiter::with_sweep_floor(4);
        let w = Duration::from_micros(100);
        // 64 shards × floor 4: 2 000 keys far apart in time never keep more than the
        // live ones plus one shard-mark's worth.
        for i in 0..2_000u64 {
            let now = 1 + i * 1_000;
            assert!(l.check_at(&format!("k{i}"), 1, w, now).is_ok_and(|d| d.allowed));
        }
        assert!(l.len() <= SHARDS * 4, "{} keys held", l.len());
        // Live keys survive a sweep.
        let l = MemoryLimiter::with_sweep_floor(1);
        let long = Duration::from_secs(60);
        for i in 0..500u64 {
            assert!(l.check_at(&format!("k{i}"), 1, long, 1 + i).is_ok_and(|d| d.allowed));
        }
        assert_eq!(l.len(), 500);
        for i in 0..500u64 {
            assert!(!l.check_at(&format!("k{i}"), 1, long, 1_000).is_ok_and(|d| d.allowed));
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn exact_under_concurrency() {
        let l = Arc::new(MemoryLimiter::new());
        let tasks: Vec<_> = (0..200)
            .map(|_| {
                let l = l.clone();
                tokio::spawn(async move { l.check("shared", 50, Duration::from_secs(60)).is_ok_and(|d| d.allowed) })
            })
            .collect();
        let mut allowed = 0;
        for t in tasks {
            if t.await.unwrap_or(false) {
                allowed += 1;
            }
        }
        assert_eq!(allowed, 50);
        // Threads, not just tasks: real parallel contention on one shard.
        let l = Arc::new(MemoryLimiter::new());
        let admitted = std::sync::atomic::AtomicU64::new(0);
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    for _ in 0..100 {
                        if l.check("shared", 77, Duration::from_secs(60)).is_ok_and(|d| d.allowed) {
                            admitted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                    }
                });
            }
        });
        assert_eq!(admitted.into_inner(), 77);
    }

    #[test]
    fn pending_requests_use_what_redis_reported() {
        let l = MemoryLimiter::new();
        let w = Duration::from_secs(60);
        let ok = |l: &MemoryLimiter| l.check_pending("k", 10, w).is_ok_and(|d| d.allowed);
        // No answer yet: the local log decides; two requests in flight.
        assert!(ok(&l) && ok(&l));
        // The first answer: 2 left in Redis (other replicas used some). One of ours is still in
        // flight, so one more fits, not two.
        let answer = |remaining, allowed| Decision { allowed, remaining, retry_after: Duration::ZERO, reset: Duration::from_secs(30) };
        l.settle("k", Some(&answer(2, true)));
        assert!(ok(&l));
        assert!(!ok(&l), "admitted beyond what Redis reported");
        // Answers that leave nothing block the key until their reset, whatever is pending.
        l.settle("k", Some(&answer(1, true)));
        l.settle("k", Some(&answer(0, true)));
        let d = l.check_pending("k", 10, w).unwrap_or_else(|e| panic!("{e}"));
        assert!(!d.allowed && d.retry_after > Duration::from_secs(29) && d.retry_after <= Duration::from_secs(30), "{d:?}");
        // A rejection by Redis blocks for its Retry-After; a failure only settles the count.
        let l = MemoryLimiter::new();
        assert!(ok(&l));
        l.settle("k", Some(&Decision { allowed: false, remaining: 0, retry_after: Duration::from_secs(5), reset: Duration::from_secs(5) }));
        let d = l.check_pending("k", 10, w).unwrap_or_else(|e| panic!("{e}"));
        assert!(!d.allowed && d.retry_after <= Duration::from_secs(5) && d.retry_after > Duration::from_secs(4));
        let l = MemoryLimiter::new();
        assert!(ok(&l));
        l.settle("k", None);
        assert!(ok(&l));
    }

    #[test]
    fn window_slides_in_real_time() {
        let l = MemoryLimiter::new();
        let w = Duration::from_millis(600);
        for _ in 0..3 {
            assert!(l.check("k", 3, w).is_ok_and(|d| d.allowed));
        }
        let d = l.check("k", 3, w).unwrap_or_else(|e| panic!("{e}"));
        assert!(!d.allowed && d.retry_after <= w);
        std::thread::sleep(d.retry_after);
        assert!(l.check("k", 3, w).is_ok_and(|d| d.allowed));
    }
}
