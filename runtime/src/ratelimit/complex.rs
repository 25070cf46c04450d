//! Weighted sliding logs for complex-rate-limit-inbound: per key, several named counters, each
//! a log of `(instant, weight)` entries, in this process ([`MemoryCounters`]) or in Redis
//! (one sorted set per counter, one Lua script per check and one per record).
//!
//! # Algorithm
//!
//! A check at `now` with window `w` forgets the entries `<= now - w` of every counter, sums the
//! weights left, and admits when every counter's sum is below its limit. It records nothing:
//! the weights of a request (its increments) are often known only once its response exists
//! (e.g. tokens an upstream reports), so they are recorded afterwards with
//! [`CounterStore::record`]. Hence a counter can end above its limit by the increments of the
//! requests admitted while it was still below; no request is admitted once it is at or above.
//!
//! On rejection, `retry_after` is when every counter at or over its limit gets back under it:
//! for each such counter, the instant its oldest entries have left the window until the sum
//! left is below the limit, the latest over all counters.

use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, PoisonError};
use std::time::{Duration, Instant};

use redis::aio::ConnectionManager;

use super::{LimitError, Limiter, window_micros};

const SHARDS: usize = 16;
/// Keys a shard holds before its first sweep of idle keys.
const SWEEP_FLOOR: usize = 1024;
/// Prefix of every Redis key of the weighted counters.
const PREFIX: &str = "specgate:complex:";

/// What a check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CounterCheck {
    /// Whether every counter is below its limit.
    pub allowed: bool,
    /// The sum in the window of each counter, in the order of the limits checked.
    pub used: Vec<u64>,
    /// When rejected: how long until every counter is below its limit (zero when allowed).
    pub retry_after: Duration,
}

/// Where weighted counters live.
#[derive(Debug)]
pub enum CounterStore {
    /// In this process only.
    Memory(MemoryCounters),
    /// In Redis, shared by every replica.
    Redis(RedisCounters),
}

impl CounterStore {
    /// The store matching a limiter: in process for an in-process limiter, the limiter's Redis
    /// otherwise.
    pub fn for_limiter(limiter: &Limiter) -> Self {
        match limiter {
            Limiter::Memory(_) => CounterStore::Memory(MemoryCounters::new()),
            Limiter::Redis(r) => CounterStore::Redis(RedisCounters {
                conn: r.connection(),
                timeout: r.timeout(),
                seq: AtomicU64::new(0),
                nonce: fastrand::u64(..),
                verdicts: Arc::new(Mutex::new(HashMap::new())),
            }),
        }
    }

    /// Sums each counter of `key` over the window and compares with its limit.
    pub async fn check(&self, key: &str, limits: &[(String, u64)], window: Duration) -> Result<CounterCheck, LimitError> {
        match self {
            CounterStore::Memory(m) => m.check(key, limits, window),
            CounterStore::Redis(r) => r.check(key, limits, window).await,
        }
    }

    /// Adds an entry of weight `n` now to each counter `(name, n)` of `key` (zero weights are
    /// skipped).
    pub async fn record(&self, key: &str, increments: &[(String, u64)], window: Duration) -> Result<(), LimitError> {
        match self {
            CounterStore::Memory(m) => m.record(key, increments, window),
            CounterStore::Redis(r) => r.record(key, increments, window).await,
        }
    }
}

/// Weighted counters in this process: shards of keys, each key a map of counter logs.
/// Keys whose newest entry has left the window are swept when a shard grows (as in
/// [`super::MemoryLimiter`]), so memory follows the live keys.
#[derive(Debug)]
pub struct MemoryCounters {
    shards: Box<[Mutex<Shard>]>,
    hasher: RandomState,
    base: Instant,
}

#[derive(Debug, Default)]
struct Shard {
    map: HashMap<String, KeyLogs>,
    sweep_at: usize,
}

#[derive(Debug, Default)]
struct KeyLogs {
    /// Per counter: `(instant µs since base, weight)`, oldest first.
    counters: BTreeMap<String, VecDeque<(u64, u64)>>,
    window_us: u64,
    newest: u64,
}

impl Default for MemoryCounters {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryCounters {
    /// An empty store.
    pub fn new() -> Self {
        MemoryCounters {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard { map: HashMap::new(), sweep_at: SWEEP_FLOOR })).collect(),
            hasher: RandomState::new(),
            base: Instant::now(),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_micros()).unwrap_or(u64::MAX).saturating_add(1)
    }

    fn shard(&self, key: &str) -> &Mutex<Shard> {
        let i = (self.hasher.hash_one(key) % SHARDS as u64) as usize;
        &self.shards[i]
    }

    /// See [`CounterStore::check`].
    pub fn check(&self, key: &str, limits: &[(String, u64)], window: Duration) -> Result<CounterCheck, LimitError> {
        let now = self.now();
        self.check_at(key, limits, window, now)
    }

    /// See [`CounterStore::record`].
    pub fn record(&self, key: &str, increments: &[(String, u64)], window: Duration) -> Result<(), LimitError> {
        let now = self.now();
        self.record_at(key, increments, window, now)
    }

    /// [`MemoryCounters::check`] at `now` (µs since the store's creation).
    pub(crate) fn check_at(&self, key: &str, limits: &[(String, u64)], window: Duration, now: u64) -> Result<CounterCheck, LimitError> {
        let window_us = window_micros(1, window)?;
        let mut shard = self.shard(key).lock().unwrap_or_else(PoisonError::into_inner);
        let cutoff = now.saturating_sub(window_us);
        let mut out = CounterCheck { allowed: true, used: Vec::with_capacity(limits.len()), retry_after: Duration::ZERO };
        let mut wait = 0u64;
        let logs = shard.map.get_mut(key);
        let mut logs = logs.map(|l| &mut l.counters);
        for (name, limit) in limits {
            let log = logs.as_mut().and_then(|l| l.get_mut(name));
            let Some(log) = log else {
                out.used.push(0);
                continue;
            };
            while log.front().is_some_and(|&(t, _)| t <= cutoff) {
                log.pop_front();
            }
            let sum = log.iter().fold(0u64, |s, &(_, w)| s.saturating_add(w));
            out.used.push(sum);
            if sum >= *limit {
                out.allowed = false;
                let mut left = sum;
                for &(t, w) in log.iter() {
                    left = left.saturating_sub(w);
                    if left < *limit {
                        wait = wait.max(t.saturating_add(window_us).saturating_sub(now));
                        break;
                    }
                }
            }
        }
        if !out.allowed {
            out.retry_after = Duration::from_micros(wait.max(1));
        }
        Ok(out)
    }

    /// [`MemoryCounters::record`] at `now` (µs since the store's creation).
    pub(crate) fn record_at(&self, key: &str, increments: &[(String, u64)], window: Duration, now: u64) -> Result<(), LimitError> {
        let window_us = window_micros(1, window)?;
        let mut shard = self.shard(key).lock().unwrap_or_else(PoisonError::into_inner);
        if shard.map.len() >= shard.sweep_at && !shard.map.contains_key(key) {
            shard.map.retain(|_, l| l.newest > now.saturating_sub(l.window_us));
            shard.sweep_at = shard.map.len().saturating_mul(2).max(SWEEP_FLOOR);
        }
        let logs = shard.map.entry(key.to_owned()).or_default();
        logs.window_us = window_us;
        let cutoff = now.saturating_sub(window_us);
        for (name, n) in increments.iter().filter(|(_, n)| *n > 0) {
            let log = logs.counters.entry(name.clone()).or_default();
            while log.front().is_some_and(|&(t, _)| t <= cutoff) {
                log.pop_front();
            }
            // Never before the newest entry, so the log stays sorted.
            let t = log.back().map_or(now, |&(b, _)| b.max(now));
            log.push_back((t, *n));
            logs.newest = logs.newest.max(t);
        }
        Ok(())
    }

    /// Keys held (live or not yet swept).
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().unwrap_or_else(PoisonError::into_inner).map.len()).sum()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// KEYS: one sorted set per counter (members `weight:unique`, scores instants in µs by the
/// Redis clock); ARGV[1] the window in µs, ARGV[1 + i] the limit of KEYS[i]. Returns
/// {admitted (0/1), µs until admitted, sum of each counter...}.
const CHECK_SCRIPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local window = tonumber(ARGV[1])
local out = {1, 0}
local wait = 0
for i, k in ipairs(KEYS) do
  redis.call('ZREMRANGEBYSCORE', k, '-inf', now - window)
  local limit = tonumber(ARGV[i + 1])
  local entries = redis.call('ZRANGE', k, 0, -1, 'WITHSCORES')
  local sum = 0
  for j = 1, #entries, 2 do
    sum = sum + tonumber(string.match(entries[j], '^(%d+):'))
  end
  out[i + 2] = sum
  if sum >= limit then
    out[1] = 0
    local left = sum
    for j = 1, #entries, 2 do
      left = left - tonumber(string.match(entries[j], '^(%d+):'))
      if left < limit then
        local w = tonumber(entries[j + 1]) + window - now
        if w > wait then wait = w end
        break
      end
    end
  end
end
if out[1] == 0 and wait < 1 then wait = 1 end
out[2] = wait
return out
";

/// KEYS: the counters to add to; ARGV[1] the window in µs, ARGV[2] a string unique to this
/// request, ARGV[2 + i] the weight for KEYS[i].
const RECORD_SCRIPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local window = tonumber(ARGV[1])
for i, k in ipairs(KEYS) do
  redis.call('ZREMRANGEBYSCORE', k, '-inf', now - window)
  redis.call('ZADD', k, now, ARGV[i + 2] .. ':' .. ARGV[2])
  redis.call('PEXPIRE', k, math.floor(window / 1000) + 1000)
end
return 1
";

static CHECK: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(CHECK_SCRIPT));
static RECORD: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(RECORD_SCRIPT));

/// Weighted counters in Redis, on the connection of the rate limiter.
pub struct RedisCounters {
    conn: ConnectionManager,
    timeout: Duration,
    seq: AtomicU64,
    nonce: u64,
    /// `mode: async`: per key, the instant until which the last Redis check said it is over.
    verdicts: Arc<Mutex<HashMap<String, Instant>>>,
}

impl std::fmt::Debug for RedisCounters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisCounters").field("timeout", &self.timeout).finish_non_exhaustive()
    }
}

/// The Redis key of one counter. The hash tag keeps a key's counters in one slot.
fn counter_key(key: &str, counter: &str) -> String {
    format!("{PREFIX}{{{key}}}:{}:{counter}", counter.len())
}

impl RedisCounters {
    async fn invoke<T: redis::FromRedisValue>(&self, call: redis::ScriptInvocation<'_>) -> Result<T, LimitError> {
        let mut conn = self.conn.clone();
        tokio::time::timeout(self.timeout, call.invoke_async(&mut conn))
            .await
            .map_err(|_| LimitError::Unavailable("Redis did not answer in time".to_owned()))?
            .map_err(|e| LimitError::Unavailable(format!("Redis: {e}")))
    }

    /// See [`CounterStore::check`].
    pub async fn check(&self, key: &str, limits: &[(String, u64)], window: Duration) -> Result<CounterCheck, LimitError> {
        let window_us = window_micros(1, window)?;
        if limits.is_empty() {
            return Ok(CounterCheck { allowed: true, used: Vec::new(), retry_after: Duration::ZERO });
        }
        let mut call = CHECK.prepare_invoke();
        call.arg(window_us);
        for (name, limit) in limits {
            call.key(counter_key(key, name)).arg(*limit);
        }
        let out: Vec<i64> = self.invoke(call).await?;
        let num = |i: usize| out.get(i).and_then(|&v| u64::try_from(v).ok()).unwrap_or(0);
        Ok(CounterCheck {
            allowed: out.first() == Some(&1),
            used: (0..limits.len()).map(|i| num(i + 2)).collect(),
            retry_after: Duration::from_micros(num(1)),
        })
    }

    /// See [`CounterStore::record`].
    pub async fn record(&self, key: &str, increments: &[(String, u64)], window: Duration) -> Result<(), LimitError> {
        let window_us = window_micros(1, window)?;
        let increments: Vec<_> = increments.iter().filter(|(_, n)| *n > 0).collect();
        if increments.is_empty() {
            return Ok(());
        }
        let member = format!("{:016x}-{}", self.nonce, self.seq.fetch_add(1, Ordering::Relaxed));
        let mut call = RECORD.prepare_invoke();
        call.arg(window_us).arg(member);
        for (name, n) in increments {
            call.key(counter_key(key, name)).arg(*n);
        }
        let _: i64 = self.invoke(call).await?;
        Ok(())
    }

    /// `mode: async`: `Some(wait)` when the last Redis check of `key` found it over a limit
    /// and that is still so (without asking Redis).
    pub(crate) fn cached_rejection(&self, key: &str) -> Option<Duration> {
        let mut v = self.verdicts.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        match v.get(key) {
            Some(&until) if until > now => Some(until - now),
            Some(_) => {
                v.remove(key);
                None
            }
            None => None,
        }
    }

    /// Remembers a Redis check's verdict for [`RedisCounters::cached_rejection`].
    pub(crate) fn remember(&self, key: &str, check: &CounterCheck) {
        let mut v = self.verdicts.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        if v.len() >= 4 * SWEEP_FLOOR {
            v.retain(|_, until| *until > now);
        }
        if check.allowed {
            v.remove(key);
        } else {
            v.insert(key.to_owned(), now + check.retry_after);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policies::test_util::must;
    use crate::ratelimit::redis::tests::{Server, free_port, url};

    const W: Duration = Duration::from_millis(1_000);
    const W_US: u64 = 1_000_000;

    fn limits(l: &[(&str, u64)]) -> Vec<(String, u64)> {
        l.iter().map(|(n, v)| ((*n).to_owned(), *v)).collect()
    }

    #[test]
    fn weighted_entries_slide_out_of_the_window() {
        let m = MemoryCounters::new();
        let lim = limits(&[("requests", 3), ("tokens", 100)]);
        let c = must(m.check_at("k", &lim, W, 10));
        assert_eq!((c.allowed, c.used.clone()), (true, vec![0, 0]));
        must(m.record_at("k", &limits(&[("requests", 1), ("tokens", 60)]), W, 10));
        must(m.record_at("k", &limits(&[("requests", 1), ("tokens", 30)]), W, 20));
        // 90 tokens: still under 100, so admitted (the next response may take it over).
        let c = must(m.check_at("k", &lim, W, 30));
        assert_eq!((c.allowed, c.used.clone()), (true, vec![2, 90]));
        must(m.record_at("k", &limits(&[("requests", 1), ("tokens", 25)]), W, 30));
        let c = must(m.check_at("k", &lim, W, 40));
        assert!(!c.allowed);
        assert_eq!(c.used, vec![3, 115]);
        // Both counters get back under their limits when the first entry (10) leaves.
        assert_eq!(c.retry_after, Duration::from_micros(10 + W_US - 40));
        assert!(!must(m.check_at("k", &lim, W, 9 + W_US)).allowed);
        let c = must(m.check_at("k", &lim, W, 10 + W_US));
        assert_eq!((c.allowed, c.used), (true, vec![2, 55]));
        // A heavier counter decides when it needs more entries to leave than the other.
        must(m.record_at("k", &limits(&[("tokens", 90)]), W, 10 + W_US));
        let c = must(m.check_at("k", &lim, W, 11 + W_US));
        assert_eq!((c.allowed, c.used.clone()), (false, vec![2, 145]));
        // 145 - 30 (at 20) = 115, - 25 (at 30) = 90: the entry at 30 decides.
        assert_eq!(c.retry_after, Duration::from_micros(30 + W_US - (11 + W_US)));
        // Counters not named in the limits are not checked; other keys are apart.
        assert!(must(m.check_at("other", &lim, W, 40)).allowed);
        must(m.record_at("k", &limits(&[("unlisted", 1_000)]), W, 30 + W_US));
        assert!(must(m.check_at("k", &lim, W, 31 + W_US)).allowed);
    }

    #[test]
    fn one_heavy_entry_blocks_until_it_leaves_and_zero_weights_are_skipped() {
        let m = MemoryCounters::new();
        let lim = limits(&[("tokens", 10)]);
        must(m.record_at("k", &limits(&[("tokens", 0)]), W, 5));
        assert_eq!(must(m.check_at("k", &lim, W, 6)).used, vec![0]);
        must(m.record_at("k", &limits(&[("tokens", 50)]), W, 7));
        let c = must(m.check_at("k", &lim, W, 8));
        assert!(!c.allowed && c.retry_after == Duration::from_micros(7 + W_US - 8));
        assert!(must(m.check_at("k", &lim, W, 7 + W_US)).allowed);
        assert!(matches!(m.check("k", &lim, Duration::ZERO), Err(LimitError::Invalid(_))));
    }

    #[test]
    fn idle_keys_are_swept() {
        let m = MemoryCounters::new();
        let w = Duration::from_micros(100);
        for i in 0..(SHARDS * SWEEP_FLOOR * 3) as u64 {
            must(m.record_at(&format!("k{i}"), &limits(&[("requests", 1)]), w, 1 + i * 1_000));
        }
        assert!(m.len() <= SHARDS * SWEEP_FLOOR * 2, "{} keys held", m.len());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redis_matches_the_memory_semantics_across_replicas() {
        let port = free_port();
        let Some(_server) = Server::start(port).await else { return };
        let store = |_: ()| {
            let l = Limiter::Redis(Arc::new(must(super::super::RedisLimiter::with_timeout(&url(port), Duration::from_secs(2)))));
            CounterStore::for_limiter(&l)
        };
        let (a, b) = (store(()), store(()));
        let w = Duration::from_millis(800);
        let lim = limits(&[("requests", 3), ("tokens", 100)]);
        let c = must(a.check("k", &lim, w).await);
        assert_eq!((c.allowed, c.used), (true, vec![0, 0]));
        must(a.record("k", &limits(&[("requests", 1), ("tokens", 70)]), w).await);
        must(b.record("k", &limits(&[("requests", 1), ("tokens", 20), ("zero", 0)]), w).await);
        // Replica b sees a's entries: one counter store.
        let c = must(b.check("k", &lim, w).await);
        assert_eq!((c.allowed, c.used), (true, vec![2, 90]));
        must(b.record("k", &limits(&[("requests", 1), ("tokens", 15)]), w).await);
        let c = must(a.check("k", &lim, w).await);
        assert!(!c.allowed);
        assert_eq!(c.used, vec![3, 105]);
        assert!(c.retry_after > Duration::ZERO && c.retry_after <= w, "{:?}", c.retry_after);
        // Expiry: idle counters leave Redis a second after their window.
        let CounterStore::Redis(r) = &a else { panic!("not redis") };
        let mut conn = r.conn.clone();
        let ttl: i64 = must(redis::cmd("PTTL").arg(counter_key("k", "tokens")).query_async(&mut conn).await);
        assert!(ttl > 0 && ttl <= 1_800, "{ttl}");
        tokio::time::sleep(c.retry_after).await;
        let c = must(a.check("k", &lim, w).await);
        assert!(c.allowed, "{c:?}");
        // Cached verdicts for async mode.
        assert!(r.cached_rejection("k").is_none());
        r.remember("k", &CounterCheck { allowed: false, used: vec![], retry_after: Duration::from_secs(5) });
        assert!(r.cached_rejection("k").is_some_and(|d| d > Duration::from_secs(4)));
        r.remember("k", &CounterCheck { allowed: true, used: vec![], retry_after: Duration::ZERO });
        assert!(r.cached_rejection("k").is_none());
    }
}
