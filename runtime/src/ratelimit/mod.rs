//! Request counting for the rate-limit policies: an exact sliding log per key, in this
//! process ([`MemoryLimiter`]) or shared by every replica through Redis ([`RedisLimiter`]).
//!
//! # Algorithm
//!
//! Each key keeps the instants of the requests it admitted (a sliding log). A check at
//! instant `now` with limit `n` and window `w` first forgets the instants `<= now - w`, then
//! admits (and records `now`) when fewer than `n` remain, and otherwise rejects without
//! recording anything. Hence:
//!
//! - **Exactness:** in every half-open interval `(t - w, t]`, whatever `t` (not only at window
//!   boundaries), at most `n` requests of one key are admitted, and a key that sends
//!   continuously is admitted exactly `n` times per window. Check-and-record is atomic (a
//!   shard lock in process, one Lua script in Redis), so concurrency cannot over-admit.
//! - **Rejections are free:** a rejected request consumes nothing, so several rate-limit
//!   policies on one route (or a client hammering while limited) do not lengthen the wait.
//! - **Retry-After:** on rejection, the instant the request would have succeeded is when the
//!   `(len - n)`-th oldest recorded instant (0-based) leaves the window: `retry_after` is that
//!   distance, so a request sent `retry_after` later succeeds (unless others took the slot).
//! - **Memory:** `O(n)` instants per active key (8 bytes each in process; one sorted-set
//!   member in Redis). A sliding-window *counter* would be `O(1)` but can admit up to about
//!   `2n` in a window that straddles two fixed windows, which the policy promises never to do.
//!
//! # Backends
//!
//! [`Limiter::from_env`]: Redis when `RATE_LIMIT_REDIS_URL` is set and not empty, otherwise
//! in process. Redis uses the server's clock (`TIME` inside the script), so replicas with
//! skewed clocks still agree.

pub mod complex;
mod memory;
pub mod quota;
pub(crate) mod redis;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use memory::MemoryLimiter;
pub use redis::RedisLimiter;

/// The variable naming the Redis server shared by replicas (`redis://[:password@]host:port/db`).
pub const ENV_REDIS_URL: &str = "RATE_LIMIT_REDIS_URL";

/// The longest window a limiter accepts (one year): keeps instant arithmetic far from
/// overflow and within the exact-integer range of Lua's doubles.
pub const MAX_WINDOW: Duration = Duration::from_secs(366 * 24 * 3600);

/// What a check decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Whether the request is admitted (and was counted).
    pub allowed: bool,
    /// Requests the key may still make in the current window, after this one.
    pub remaining: u64,
    /// When rejected: how long until a request of this key would be admitted (zero when
    /// allowed).
    pub retry_after: Duration,
    /// How long until the count of this key next goes down: when the oldest request still
    /// counted leaves the window (a sliding log has no single reset instant; this is the
    /// soonest moment `remaining` grows). When rejected, equal to `retry_after`.
    pub reset: Duration,
}

/// Why a limiter could not decide.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LimitError {
    /// The limit or window is out of range (limit 0, window zero or above [`MAX_WINDOW`]).
    Invalid(String),
    /// The shared store did not answer (in time).
    Unavailable(String),
}

impl std::fmt::Display for LimitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LimitError::Invalid(m) => write!(f, "invalid rate limit: {m}"),
            LimitError::Unavailable(m) => write!(f, "rate limit store unavailable: {m}"),
        }
    }
}

impl std::error::Error for LimitError {}

/// Where counts live.
#[derive(Debug)]
pub enum Limiter {
    /// In this process only (each replica counts on its own).
    Memory(MemoryLimiter),
    /// In Redis, shared by every replica.
    Redis(Arc<RedisLimiter>),
}

impl Limiter {
    /// Counts in this process.
    pub fn memory() -> Self {
        Limiter::Memory(MemoryLimiter::new())
    }

    /// The backend the environment chooses: Redis at `RATE_LIMIT_REDIS_URL` when set and not
    /// empty, otherwise in process. Needs a Tokio runtime for Redis.
    pub fn from_env() -> Result<Self, String> {
        match crate::env::var(ENV_REDIS_URL).filter(|u| !u.trim().is_empty()) {
            Some(url) => RedisLimiter::new(url.trim()).map(|r| Limiter::Redis(Arc::new(r))),
            None => Ok(Limiter::memory()),
        }
    }

    /// The process-wide limiter ([`Limiter::from_env`], built on first use), so every policy
    /// shares one set of shards and one Redis connection.
    pub fn shared() -> Result<Arc<Self>, String> {
        static SHARED: Mutex<Option<Arc<Limiter>>> = Mutex::new(None);
        let mut slot = SHARED.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(l) = slot.as_ref() {
            return Ok(l.clone());
        }
        let l = Arc::new(Self::from_env()?);
        *slot = Some(l.clone());
        Ok(l)
    }

    /// Checks and, when admitted, counts one request of `key` against `limit` per `window`,
    /// waiting for the shared store when there is one.
    pub async fn check(&self, key: &str, limit: u64, window: Duration) -> Result<Decision, LimitError> {
        match self {
            Limiter::Memory(m) => m.check(key, limit, window),
            Limiter::Redis(r) => r.check(key, limit, window).await,
        }
    }

    /// Like [`Limiter::check`] but never waits for a shared store: this process decides, and
    /// the count is sent to Redis in the background (see [`RedisLimiter::check_async`]).
    pub fn check_async(&self, key: &str, limit: u64, window: Duration) -> Result<Decision, LimitError> {
        match self {
            Limiter::Memory(m) => m.check(key, limit, window),
            Limiter::Redis(r) => r.check_async(key, limit, window),
        }
    }
}

/// The window in microseconds, checked against the limiter's bounds.
fn window_micros(limit: u64, window: Duration) -> Result<u64, LimitError> {
    if limit == 0 {
        return Err(LimitError::Invalid("the limit must be at least 1".to_owned()));
    }
    if window > MAX_WINDOW {
        return Err(LimitError::Invalid(format!("the window {window:?} is longer than one year")));
    }
    match u64::try_from(window.as_micros()) {
        Ok(us) if us >= 1 => Ok(us),
        _ => Err(LimitError::Invalid(format!("the window {window:?} is shorter than a microsecond"))),
    }
}

/// Logs a warning at most every 10 seconds process-wide: a dead Redis must not turn into
/// one log line per request.
pub(crate) fn warn_throttled(what: &str, error: &dyn std::fmt::Display) {
    static LAST: AtomicU64 = AtomicU64::new(0);
    static SUPPRESSED: AtomicU64 = AtomicU64::new(0);
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    let last = LAST.load(Ordering::Relaxed);
    if now >= last.saturating_add(10) && LAST.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok() {
        let suppressed = SUPPRESSED.swap(0, Ordering::Relaxed);
        tracing::warn!(error = %error, suppressed, "{what}");
    } else {
        SUPPRESSED.fetch_add(1, Ordering::Relaxed);
    }
}
