//! Quota counting for `QuotaInboundPolicy`: named meters per key over calendar-like periods
//! (hourly, daily, weekly, monthly) that start at an anchor instant, in this process
//! ([`MemoryQuota`]) or shared by every replica through Redis ([`RedisQuota`]).
//!
//! # Cycles
//!
//! A key's periods run from its anchor: `hourly`, `daily` and `weekly` cycles are that many
//! hours, days or weeks after the anchor; a `monthly` cycle ends on the anchor's day of the
//! following month at the anchor's time of day, or on the last day of a shorter month (an
//! anchor of 2024-01-31 04:30Z gives cycles ending 2024-02-29 04:30Z, 2024-03-31 04:30Z, …;
//! each is computed from the anchor, never chained). All in UTC.
//!
//! The anchor is either given with every call (`quotaAnchorMode: function`) or set by the first
//! call for the key (`first-api-call`) and remembered with the counts. A record lives until its
//! cycle ends: a key idle for a whole cycle forgets its anchor, and its next call starts a new
//! one (so idle keys cost nothing).
//!
//! # Check, then count
//!
//! [`QuotaStore::check`] reads the current cycle's meters (starting a new cycle, with zero
//! meters, when the stored one has ended); [`QuotaStore::add`] adds to them after the response.
//! The two steps are separate on purpose: what a request costs (its status, custom meters) is
//! known only once it has been answered. Hence requests of one key that pass the check while
//! others are still in flight are all counted: a key may end a cycle over its allowance by at
//! most the cost of its requests that were in flight when the allowance ran out. Every request
//! after that is rejected until the cycle ends.
//!
//! Instants are µs since the Unix epoch from the gateway's clock (passed in, so tests can move
//! time); quotas span hours at least, so clock skew between replicas does not matter.

use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, HashMap};
use std::hash::BuildHasher;
use std::sync::{LazyLock, Mutex, PoisonError};
use std::time::Duration;

use redis::aio::ConnectionManager;
use serde::Deserialize;

use super::{LimitError, Limiter};
use crate::time::{civil_from_days, days_from_civil, days_in_month};

const US_PER_HOUR: i64 = 3_600_000_000;
const US_PER_DAY: i64 = 24 * US_PER_HOUR;

/// How long a quota cycle lasts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Period {
    /// One hour.
    Hourly,
    /// One day.
    Daily,
    /// Seven days.
    Weekly,
    /// One calendar month (see the module documentation for shorter months).
    Monthly,
}

impl Period {
    fn code(self) -> &'static str {
        match self {
            Period::Hourly => "hourly",
            Period::Daily => "daily",
            Period::Weekly => "weekly",
            Period::Monthly => "monthly",
        }
    }

    /// The cycle `[start, end)` (µs since the epoch) of an `anchor` that contains `now`.
    /// Anchors after `now` work too: the cycle is then one that ends at or before the anchor.
    pub fn cycle(self, anchor: i64, now: i64) -> (i64, i64) {
        let fixed = match self {
            Period::Hourly => US_PER_HOUR,
            Period::Daily => US_PER_DAY,
            Period::Weekly => 7 * US_PER_DAY,
            Period::Monthly => {
                let (y, m, _) = civil_from_days(anchor.div_euclid(US_PER_DAY));
                let (ny, nm, _) = civil_from_days(now.div_euclid(US_PER_DAY));
                let mut k = (ny * 12 + i64::from(nm)) - (y * 12 + i64::from(m));
                if add_months(anchor, k) > now {
                    k -= 1;
                }
                return (add_months(anchor, k), add_months(anchor, k + 1));
            }
        };
        let k = (now - anchor).div_euclid(fixed);
        (anchor + k * fixed, anchor + (k + 1) * fixed)
    }
}

/// `anchor` moved by `k` calendar months, its day clamped to the target month's length.
fn add_months(anchor: i64, k: i64) -> i64 {
    let days = anchor.div_euclid(US_PER_DAY);
    let time_of_day = anchor.rem_euclid(US_PER_DAY);
    let (y, m, d) = civil_from_days(days);
    let index = y * 12 + i64::from(m) - 1 + k;
    let (ty, tm) = (index.div_euclid(12), (index.rem_euclid(12) + 1) as u32);
    let td = d.min(days_in_month(ty, tm));
    days_from_civil(ty, tm, td) * US_PER_DAY + time_of_day
}

/// A key's current cycle and what it used so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Usage {
    /// The anchor the cycles are computed from (µs since the epoch).
    pub anchor: i64,
    /// When the current cycle started (µs since the epoch).
    pub start: i64,
    /// When it ends and the meters go back to zero (µs since the epoch).
    pub end: i64,
    /// Each meter's count in this cycle (meters never counted are absent).
    pub meters: BTreeMap<String, u64>,
}

impl Usage {
    /// Time left in the cycle at `now`.
    pub fn remaining_time(&self, now: i64) -> Duration {
        Duration::from_micros(u64::try_from(self.end.saturating_sub(now)).unwrap_or(0))
    }
}

/// Where quota counts live.
#[derive(Debug)]
pub enum QuotaStore {
    /// In this process only.
    Memory(MemoryQuota),
    /// In Redis, shared by every replica.
    Redis(RedisQuota),
}

impl QuotaStore {
    /// The store that goes with a limiter: in process for an in-process limiter, the same
    /// Redis connection for a Redis one (so `RATE_LIMIT_REDIS_URL` selects both).
    pub fn for_limiter(limiter: &Limiter) -> Self {
        match limiter {
            Limiter::Memory(_) => QuotaStore::Memory(MemoryQuota::new()),
            Limiter::Redis(r) => QuotaStore::Redis(RedisQuota { conn: r.connection(), timeout: r.timeout() }),
        }
    }

    /// The current cycle of `key` at `now`; `anchor` `None`: the stored one, or `now` for a
    /// new key.
    pub async fn check(&self, key: &str, period: Period, anchor: Option<i64>, now: i64) -> Result<Usage, LimitError> {
        match self {
            QuotaStore::Memory(m) => Ok(m.update(key, period, anchor, now, &[])),
            QuotaStore::Redis(r) => r.update(key, period, anchor, now, &[]).await,
        }
    }

    /// Adds `increments` to the meters of `key`'s cycle at `now`.
    pub async fn add(&self, key: &str, period: Period, anchor: Option<i64>, now: i64, increments: &[(String, u64)]) -> Result<Usage, LimitError> {
        match self {
            QuotaStore::Memory(m) => Ok(m.update(key, period, anchor, now, increments)),
            QuotaStore::Redis(r) => r.update(key, period, anchor, now, increments).await,
        }
    }
}

const SHARDS: usize = 16;

/// Quota records in this process: a few mutex-guarded shards of a map from key to record.
/// A shard drops records whose cycle has ended whenever it has doubled since its last sweep.
#[derive(Debug)]
pub struct MemoryQuota {
    shards: Box<[Mutex<Shard>]>,
    hasher: RandomState,
}

#[derive(Debug, Default)]
struct Shard {
    map: HashMap<String, Usage>,
    sweep_at: usize,
}

impl Default for MemoryQuota {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryQuota {
    /// An empty store.
    pub fn new() -> Self {
        MemoryQuota {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard { map: HashMap::new(), sweep_at: 256 })).collect(),
            hasher: RandomState::new(),
        }
    }

    /// Records held (current or not yet swept).
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().unwrap_or_else(PoisonError::into_inner).map.len()).sum()
    }

    /// Whether no record is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// [`QuotaStore::add`] without waiting (an empty `increments` only reads and rolls).
    pub fn add_now(&self, key: &str, period: Period, anchor: Option<i64>, now: i64, increments: &[(String, u64)]) -> Usage {
        self.update(key, period, anchor, now, increments)
    }

    fn update(&self, key: &str, period: Period, anchor: Option<i64>, now: i64, increments: &[(String, u64)]) -> Usage {
        let i = (self.hasher.hash_one(key) % SHARDS as u64) as usize;
        let mut shard = self.shards[i].lock().unwrap_or_else(PoisonError::into_inner);
        // A record whose cycle ended is no record (its anchor is forgotten too).
        let stored = shard.map.get(key).filter(|u| u.end > now).map(|u| (u.anchor, u.start));
        let anchor = anchor.or(stored.map(|s| s.0)).unwrap_or(now);
        let (start, end) = period.cycle(anchor, now);
        if !shard.map.contains_key(key) && shard.map.len() >= shard.sweep_at {
            shard.map.retain(|_, u| u.end > now);
            shard.sweep_at = (shard.map.len() * 2).max(256);
        }
        let usage = shard.map.entry(key.to_owned()).or_default();
        if stored.map(|s| s.1) != Some(start) {
            usage.meters.clear();
        }
        usage.anchor = anchor;
        usage.start = start;
        usage.end = end;
        for (meter, n) in increments {
            let v = usage.meters.entry(meter.clone()).or_insert(0);
            *v = v.saturating_add(*n);
        }
        usage.clone()
    }
}

/// Prefix of every Redis key of quotas.
const PREFIX: &str = "specgate:quota:";

/// KEYS[1] the key's hash (fields `@anchor`, `@start`, `@end`, and `m:<meter>` counts).
/// ARGV[1] now (µs), ARGV[2] the period, ARGV[3] the anchor (µs) or "" for the stored one,
/// then meter/increment pairs. Rolls the cycle like [`MemoryQuota::update`], adds, expires the
/// hash a second after the cycle ends (relative to the given `now`, so the caller's clock
/// rules), and returns {anchor, start, end, meter, count, meter, count, ...}.
/// Instants are formatted with %.0f: Lua's default number format would round them.
const QUOTA_SCRIPT: &str = r"
local US_DAY = 86400000000
local function civil(z)
  z = z + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524) - math.floor(doe / 146096)) / 365)
  local y = yoe + era * 400
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local d = doy - math.floor((153 * mp + 2) / 5) + 1
  local m = mp < 10 and mp + 3 or mp - 9
  if m <= 2 then y = y + 1 end
  return y, m, d
end
local function days(y, m, d)
  if m <= 2 then y = y - 1 end
  local era = math.floor(y / 400)
  local yoe = y - era * 400
  local mp = m > 2 and m - 3 or m + 9
  local doy = math.floor((153 * mp + 2) / 5) + d - 1
  local doe = yoe * 365 + math.floor(yoe / 4) - math.floor(yoe / 100) + doy
  return era * 146097 + doe - 719468
end
local function month_len(y, m)
  if m == 2 then
    if (y % 4 == 0 and y % 100 ~= 0) or y % 400 == 0 then return 29 end
    return 28
  end
  if m == 4 or m == 6 or m == 9 or m == 11 then return 30 end
  return 31
end
local function add_months(anchor, k)
  local dd = math.floor(anchor / US_DAY)
  local tod = anchor - dd * US_DAY
  local y, m, d = civil(dd)
  local index = y * 12 + m - 1 + k
  local ty = math.floor(index / 12)
  local tm = index - ty * 12 + 1
  local td = math.min(d, month_len(ty, tm))
  return days(ty, tm, td) * US_DAY + tod
end
local function cycle(period, anchor, now)
  local fixed
  if period == 'hourly' then fixed = 3600000000
  elseif period == 'daily' then fixed = US_DAY
  elseif period == 'weekly' then fixed = 7 * US_DAY
  else
    local y, m = civil(math.floor(anchor / US_DAY))
    local ny, nm = civil(math.floor(now / US_DAY))
    local k = (ny * 12 + nm) - (y * 12 + m)
    if add_months(anchor, k) > now then k = k - 1 end
    return add_months(anchor, k), add_months(anchor, k + 1)
  end
  local k = math.floor((now - anchor) / fixed)
  return anchor + k * fixed, anchor + (k + 1) * fixed
end
local now = tonumber(ARGV[1])
local stored = redis.call('HMGET', KEYS[1], '@anchor', '@start', '@end')
if stored[3] and tonumber(stored[3]) <= now then stored = {false, false, false} end
local anchor = tonumber(ARGV[3]) or tonumber(stored[1]) or now
local s, e = cycle(ARGV[2], anchor, now)
if tonumber(stored[2]) ~= s then redis.call('DEL', KEYS[1]) end
local f = function(x) return string.format('%.0f', x) end
redis.call('HSET', KEYS[1], '@anchor', f(anchor), '@start', f(s), '@end', f(e))
for i = 4, #ARGV, 2 do
  redis.call('HINCRBY', KEYS[1], 'm:' .. ARGV[i], ARGV[i + 1])
end
redis.call('PEXPIRE', KEYS[1], f(math.ceil((e - now) / 1000) + 1000))
local out = {f(anchor), f(s), f(e)}
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  if string.sub(all[i], 1, 2) == 'm:' then
    out[#out + 1] = string.sub(all[i], 3)
    out[#out + 1] = all[i + 1]
  end
end
return out
";

static SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(QUOTA_SCRIPT));

/// Quota records in Redis, one hash per key updated by one Lua script per call (atomic across
/// replicas); each hash expires when its cycle ends.
pub struct RedisQuota {
    conn: ConnectionManager,
    timeout: Duration,
}

impl std::fmt::Debug for RedisQuota {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisQuota").field("timeout", &self.timeout).finish_non_exhaustive()
    }
}

impl RedisQuota {
    async fn update(&self, key: &str, period: Period, anchor: Option<i64>, now: i64, increments: &[(String, u64)]) -> Result<Usage, LimitError> {
        let mut call = SCRIPT.prepare_invoke();
        call.key(format!("{PREFIX}{key}")).arg(now).arg(period.code()).arg(anchor.map(|a| a.to_string()).unwrap_or_default());
        for (meter, n) in increments {
            call.arg(meter).arg(*n);
        }
        let mut conn = self.conn.clone();
        let out: Vec<String> = tokio::time::timeout(self.timeout, call.invoke_async(&mut conn))
            .await
            .map_err(|_| LimitError::Unavailable("Redis did not answer in time".to_owned()))?
            .map_err(|e| LimitError::Unavailable(format!("Redis: {e}")))?;
        let num = |i: usize| out.get(i).and_then(|v| v.parse::<i64>().ok()).ok_or_else(|| LimitError::Unavailable("Redis: malformed quota reply".to_owned()));
        let mut usage = Usage { anchor: num(0)?, start: num(1)?, end: num(2)?, meters: BTreeMap::new() };
        for pair in out.get(3..).unwrap_or_default().chunks(2) {
            if let [meter, count] = pair {
                usage.meters.insert(meter.clone(), count.parse().unwrap_or(0));
            }
        }
        Ok(usage)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// µs since the epoch of a UTC date and time.
    fn at(y: i64, m: u32, d: u32, h: i64, min: i64) -> i64 {
        days_from_civil(y, m, d) * US_PER_DAY + h * US_PER_HOUR + min * 60_000_000
    }

    #[test]
    fn monthly_cycles_clamp_to_short_months_and_follow_the_anchor() {
        let anchor = at(2024, 1, 31, 4, 30);
        assert_eq!(Period::Monthly.cycle(anchor, anchor), (anchor, at(2024, 2, 29, 4, 30)));
        assert_eq!(Period::Monthly.cycle(anchor, at(2024, 2, 29, 4, 29)), (anchor, at(2024, 2, 29, 4, 30)));
        // Computed from the anchor, not chained: after February's 29th comes March's 31st.
        assert_eq!(Period::Monthly.cycle(anchor, at(2024, 2, 29, 4, 30)), (at(2024, 2, 29, 4, 30), at(2024, 3, 31, 4, 30)));
        assert_eq!(Period::Monthly.cycle(anchor, at(2024, 4, 15, 0, 0)), (at(2024, 3, 31, 4, 30), at(2024, 4, 30, 4, 30)));
        assert_eq!(Period::Monthly.cycle(anchor, at(2025, 1, 1, 0, 0)), (at(2024, 12, 31, 4, 30), at(2025, 1, 31, 4, 30)));
        assert_eq!(Period::Monthly.cycle(anchor, at(2025, 2, 28, 5, 0)), (at(2025, 2, 28, 4, 30), at(2025, 3, 31, 4, 30)));
        // An anchor in the future (a subscription date given by a function).
        assert_eq!(Period::Monthly.cycle(at(2024, 5, 10, 0, 0), at(2024, 4, 20, 0, 0)), (at(2024, 4, 10, 0, 0), at(2024, 5, 10, 0, 0)));
    }

    #[test]
    fn fixed_cycles() {
        let anchor = at(2024, 3, 1, 10, 15);
        assert_eq!(Period::Hourly.cycle(anchor, at(2024, 3, 1, 12, 14)), (at(2024, 3, 1, 11, 15), at(2024, 3, 1, 12, 15)));
        assert_eq!(Period::Daily.cycle(anchor, at(2024, 3, 3, 10, 15)), (at(2024, 3, 3, 10, 15), at(2024, 3, 4, 10, 15)));
        assert_eq!(Period::Weekly.cycle(anchor, at(2024, 3, 8, 10, 14)), (anchor, at(2024, 3, 8, 10, 15)));
        assert_eq!(Period::Daily.cycle(anchor, at(2024, 2, 29, 11, 0)), (at(2024, 2, 29, 10, 15), anchor));
    }

    #[test]
    fn memory_counts_per_cycle_and_re_anchors_after_an_idle_cycle() {
        let q = MemoryQuota::new();
        let t0 = at(2024, 1, 10, 8, 0);
        let req = [("requests".to_owned(), 1)];
        let u = q.update("k", Period::Daily, None, t0, &[]);
        assert_eq!((u.anchor, u.start, u.end), (t0, t0, t0 + US_PER_DAY));
        assert!(u.meters.is_empty());
        for n in 1..=3 {
            assert_eq!(q.update("k", Period::Daily, None, t0 + n, &req).meters.get("requests"), Some(&n.unsigned_abs()));
        }
        // Same cycle: the anchor set by the first call stays.
        let u = q.update("k", Period::Daily, None, t0 + 20 * US_PER_HOUR, &[]);
        assert_eq!((u.anchor, u.meters.get("requests")), (t0, Some(&3)));
        // The cycle ended, the record with it: the next call anchors anew, meters at zero.
        let later = t0 + 30 * US_PER_HOUR;
        let u = q.update("k", Period::Daily, None, later, &[]);
        assert_eq!((u.anchor, u.start, u.meters.len()), (later, later, 0));
        // A given anchor rolls cycles without forgetting within one.
        let u = q.update("f", Period::Daily, Some(t0), t0 + 1, &[("tokens".to_owned(), 5)]);
        assert_eq!(u.meters.get("tokens"), Some(&5));
        let u = q.update("f", Period::Daily, Some(t0), t0 + US_PER_DAY, &[("tokens".to_owned(), 1)]);
        assert_eq!((u.start, u.meters.get("tokens")), (t0 + US_PER_DAY, Some(&1)));
    }

    #[tokio::test]
    async fn redis_agrees_with_memory_on_cycles_and_counts() {
        use std::sync::Arc;

        use crate::ratelimit::RedisLimiter;
        use crate::ratelimit::redis::tests::{Server, free_port, url};

        let port = free_port();
        let Some(_server) = Server::start(port).await else { return };
        let limiter = Limiter::Redis(Arc::new(RedisLimiter::with_timeout(&url(port), Duration::from_secs(2)).unwrap_or_else(|e| panic!("{e}"))));
        let store = QuotaStore::for_limiter(&limiter);
        let ok = |r: Result<Usage, LimitError>| r.unwrap_or_else(|e| panic!("{e}"));
        // The Lua calendar arithmetic gives the same cycles as the Rust one.
        let base = at(2020, 1, 1, 0, 0);
        for i in 0..300 {
            let period = [Period::Hourly, Period::Daily, Period::Weekly, Period::Monthly][i % 4];
            let anchor = base + fastrand::i64(0..5 * 365 * US_PER_DAY);
            let now = anchor + fastrand::i64(-40 * US_PER_DAY..3 * 365 * US_PER_DAY);
            let u = ok(store.check(&format!("cycle{i}"), period, Some(anchor), now).await);
            assert_eq!((u.start, u.end), period.cycle(anchor, now), "{period:?} anchor {anchor} now {now}");
        }
        // Counting, anchoring on the first call, and forgetting after an idle cycle.
        let t0 = at(2024, 1, 10, 8, 0);
        let req = [("requests".to_owned(), 1)];
        let u = ok(store.check("k", Period::Daily, None, t0).await);
        assert_eq!((u.anchor, u.start, u.end, u.meters.len()), (t0, t0, t0 + US_PER_DAY, 0));
        for n in 1..=3u64 {
            let u = ok(store.add("k", Period::Daily, None, t0 + 10, &req).await);
            assert_eq!(u.meters.get("requests"), Some(&n));
        }
        let u = ok(store.add("k", Period::Daily, None, t0 + 11, &[("tokens".to_owned(), 40)]).await);
        assert_eq!(u.meters, BTreeMap::from([("requests".to_owned(), 3), ("tokens".to_owned(), 40)]));
        let u = ok(store.check("k", Period::Daily, None, t0 + 20 * US_PER_HOUR).await);
        assert_eq!((u.anchor, u.meters.get("requests")), (t0, Some(&3)));
        let later = t0 + 30 * US_PER_HOUR;
        let u = ok(store.check("k", Period::Daily, None, later).await);
        assert_eq!((u.anchor, u.start, u.meters.len()), (later, later, 0));
        // Concurrent adds from two connections are all counted.
        let other = Limiter::Redis(Arc::new(RedisLimiter::with_timeout(&url(port), Duration::from_secs(2)).unwrap_or_else(|e| panic!("{e}"))));
        let other = QuotaStore::for_limiter(&other);
        let (a, b, req) = (&store, &other, &req);
        let adds = (0..50).map(|i| async move { if i % 2 == 0 { a.add("c", Period::Hourly, None, t0, req).await } else { b.add("c", Period::Hourly, None, t0, req).await } });
        for r in futures_util::future::join_all(adds).await {
            ok(r);
        }
        assert_eq!(ok(store.check("c", Period::Hourly, None, t0).await).meters.get("requests"), Some(&50));
        // The hash expires shortly after its cycle (relative to the given clock).
        let QuotaStore::Redis(r) = &store else { return };
        let mut conn = r.conn.clone();
        let ttl: i64 = redis::cmd("PTTL").arg(format!("{PREFIX}c")).query_async(&mut conn).await.unwrap_or(-1);
        assert!(ttl > 3_600_000 && ttl <= 3_601_000, "{ttl}");
    }
}
