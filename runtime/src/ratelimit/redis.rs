//! The sliding log in Redis, shared by every replica: one sorted set per key (members are
//! admitted requests, scores their instants in µs by the Redis clock), updated by one Lua
//! script per check so check-and-record is atomic across replicas.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use redis::aio::ConnectionManager;

use crate::redis_conn::FailFast;

use super::{Decision, LimitError, MemoryLimiter, warn_throttled, window_micros};

/// Prefix of every Redis key the limiter uses.
const PREFIX: &str = "specgate:ratelimit:";
/// The longest a request waits for Redis before the policy fails open (or answers 503).
pub(super) const DEFAULT_TIMEOUT: Duration = Duration::from_millis(250);

/// KEYS[1] the key's sorted set; ARGV[1] limit, ARGV[2] window in µs, ARGV[3] a member unique
/// to this request. Returns {admitted (0/1), remaining, µs until a request would be admitted,
/// µs until the oldest counted request leaves the window}.
const CHECK_SCRIPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local count = redis.call('ZCARD', KEYS[1])
if count < limit then
  redis.call('ZADD', KEYS[1], now, ARGV[3])
  redis.call('PEXPIRE', KEYS[1], math.floor(window / 1000) + 1000)
  local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  return {1, limit - count - 1, 0, tonumber(first[2]) + window - now}
end
local oldest = redis.call('ZRANGE', KEYS[1], count - limit, count - limit, 'WITHSCORES')
local wait = tonumber(oldest[2]) + window - now
if wait < 1 then wait = 1 end
return {0, 0, wait, wait}
";

static SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(CHECK_SCRIPT));

/// Counts requests in Redis (see [`super`] for the algorithm).
///
/// One round trip per check (`EVALSHA`; the script is loaded again by the client after a
/// Redis restart). The connection is a [`ConnectionManager`]: it reconnects in the background,
/// so counting resumes when Redis returns, without restarting the gateway. Every set expires
/// one second after its window, so idle keys cost Redis nothing.
pub struct RedisLimiter {
    conn: ConnectionManager,
    timeout: Duration,
    /// The limiter of `mode: async`: decides at once, corrected by Redis's verdicts.
    local: Arc<MemoryLimiter>,
    /// Makes members unique per request, together with the random prefix.
    seq: AtomicU64,
    nonce: u64,
}

impl std::fmt::Debug for RedisLimiter {
    // The connection's debug output could include the URL and its password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisLimiter").field("timeout", &self.timeout).finish_non_exhaustive()
    }
}

impl RedisLimiter {
    /// Prepares a connection to `url` without connecting yet, so the gateway starts while
    /// Redis is down. Needs a Tokio runtime.
    pub fn new(url: &str) -> Result<Self, String> {
        Self::with_timeout(url, DEFAULT_TIMEOUT)
    }

    /// [`RedisLimiter::new`] with another per-check timeout.
    pub fn with_timeout(url: &str, timeout: Duration) -> Result<Self, String> {
        // Fail fast: a request must not wait long on a dead Redis; the manager keeps
        // reconnecting in the background.
        let settings = FailFast { timeout, retries: 1, max_delay: Duration::from_millis(500) };
        let conn = crate::redis_conn::lazy(url, "rate limiter", settings, Some("rate limit Redis"))?;
        Ok(RedisLimiter {
            conn,
            timeout,
            local: Arc::new(MemoryLimiter::new()),
            seq: AtomicU64::new(0),
            nonce: fastrand::u64(..),
        })
    }

    /// The connection, for other counters that share the limiter's Redis.
    pub(crate) fn connection(&self) -> ConnectionManager {
        self.conn.clone()
    }

    /// The per-call timeout.
    pub(crate) fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Checks and, when admitted, counts one request of `key` in Redis.
    pub async fn check(&self, key: &str, limit: u64, window: Duration) -> Result<Decision, LimitError> {
        let window_us = window_micros(limit, window)?;
        let member = format!("{:016x}-{}", self.nonce, self.seq.fetch_add(1, Ordering::Relaxed));
        let mut call = SCRIPT.prepare_invoke();
        call.key(format!("{PREFIX}{key}")).arg(limit).arg(window_us).arg(member);
        let mut conn = self.conn.clone();
        let (admitted, remaining, wait, reset): (i64, i64, i64, i64) = tokio::time::timeout(self.timeout, call.invoke_async(&mut conn))
            .await
            .map_err(|_| LimitError::Unavailable("Redis did not answer in time".to_owned()))?
            .map_err(|e| LimitError::Unavailable(format!("Redis: {e}")))?;
        Ok(Decision {
            allowed: admitted == 1,
            remaining: u64::try_from(remaining).unwrap_or(0),
            retry_after: Duration::from_micros(u64::try_from(wait).unwrap_or(0)),
            reset: Duration::from_micros(u64::try_from(reset).unwrap_or(0)),
        })
    }

    /// `mode: async`: decides in this process, without waiting for Redis, and sends each
    /// admitted request to Redis in the background; Redis's answers steer later local
    /// decisions (see [`MemoryLimiter`]'s pending counts):
    ///
    /// - the local log alone admits at most `limit` per window (one replica alone is exact);
    /// - an answer rejecting a request blocks the key here until Redis says one would fit;
    /// - an answer admitting one remembers the remaining count Redis reported (until the
    ///   oldest counted request leaves the window): the key is admitted here only while the
    ///   requests admitted here since and not yet answered are fewer, and is blocked when
    ///   Redis reported none left.
    ///
    /// **Bound across replicas.** Redis itself admits exactly `limit` per window, so the
    /// excess is the requests a replica admitted that Redis then rejected. A replica admits
    /// such a request only while it has no answer showing the key at its limit: once the
    /// shared budget is used up, each replica over-admits at most the requests it lets
    /// through before its next Redis answer for the key arrives (those in flight to Redis at
    /// that moment; never more than the remaining count its last answer reported, and before
    /// its first answer never more than `limit`). So in any window the replicas together
    /// admit at most `limit + F`, F being the sum over replicas of their requests in flight
    /// to Redis when the budget ran out; with traffic slower than a Redis round trip that is
    /// at most one request per replica (`limit + replicas`). After those answers, every
    /// replica rejects the key without asking Redis until a request would fit again.
    ///
    /// Redis errors are logged (throttled) and otherwise ignored.
    pub fn check_async(self: &Arc<Self>, key: &str, limit: u64, window: Duration) -> Result<Decision, LimitError> {
        if tokio::runtime::Handle::try_current().is_err() {
            return self.local.check(key, limit, window);
        }
        let decision = self.local.check_pending(key, limit, window)?;
        if decision.allowed {
            let this = self.clone();
            let key = key.to_owned();
            tokio::spawn(async move {
                match this.check(&key, limit, window).await {
                    Ok(d) => this.local.settle(&key, Some(&d)),
                    Err(e) => {
                        this.local.settle(&key, None);
                        warn_throttled("rate limit: cannot count a request in Redis (async mode)", &e);
                    }
                }
            });
        }
        Ok(decision)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::process::{Child, Command, Stdio};

    use super::*;
    use crate::policies::test_util::{continued, must, problem_status, request};
    use crate::policies::{RateLimitInbound, RateLimitInboundOptions, test_context};
    use crate::policy::Inbound;
    use crate::ratelimit::Limiter;

    /// A throwaway `redis-server` on `port`, killed when dropped.
    pub(crate) struct Server(Child);

    impl Server {
        /// `None` when redis-server cannot be started (the test then says so and skips).
        pub(crate) async fn start(port: u16) -> Option<Server> {
            let child = Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn();
            let child = match child {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("skipped: cannot start redis-server: {e}");
                    return None;
                }
            };
            let server = Server(child);
            for _ in 0..100 {
                if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                    return Some(server);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            eprintln!("skipped: redis-server did not start listening");
            None
        }

        pub(crate) fn stop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    impl Drop for Server {
        fn drop(&mut self) {
            self.stop();
        }
    }

    pub(crate) fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).unwrap_or(0)
    }

    pub(crate) fn url(port: u16) -> String {
        format!("redis://127.0.0.1:{port}/")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn replicas_sharing_redis_admit_exactly_the_limit() {
        let port = free_port();
        let Some(_server) = Server::start(port).await else { return };
        let a = Arc::new(must(RedisLimiter::with_timeout(&url(port), Duration::from_secs(2))));
        let b = Arc::new(must(RedisLimiter::with_timeout(&url(port), Duration::from_secs(2))));
        let tasks: Vec<_> = (0..200)
            .map(|i| {
                let l = if i % 2 == 0 { a.clone() } else { b.clone() };
                tokio::spawn(async move { l.check("shared", 50, Duration::from_secs(60)).await })
            })
            .collect();
        let mut allowed = 0;
        for t in tasks {
            match t.await {
                Ok(Ok(d)) if d.allowed => allowed += 1,
                Ok(Ok(d)) => assert!(d.retry_after > Duration::ZERO && d.retry_after <= Duration::from_secs(60)),
                other => panic!("check failed: {other:?}"),
            }
        }
        assert_eq!(allowed, 50);
    }

    #[tokio::test]
    async fn redis_window_slides_and_retry_after_is_honoured() {
        let port = free_port();
        let Some(_server) = Server::start(port).await else { return };
        let l = must(RedisLimiter::with_timeout(&url(port), Duration::from_secs(2)));
        let w = Duration::from_millis(600);
        for left in [1, 0] {
            let d = must(l.check("k", 2, w).await);
            assert!(d.allowed && d.remaining == left);
            assert!(d.reset > Duration::ZERO && d.reset <= w, "{:?}", d.reset);
        }
        let d = must(l.check("k", 2, w).await);
        assert!(!d.allowed);
        assert!(d.retry_after > Duration::ZERO && d.retry_after <= w, "{:?}", d.retry_after);
        // Rejections are not counted: many of them do not delay the next slot.
        for _ in 0..20 {
            assert!(!must(l.check("k", 2, w).await).allowed);
        }
        tokio::time::sleep(d.retry_after).await;
        assert!(must(l.check("k", 2, w).await).allowed);
        // Idle keys expire in Redis (one second after their window).
        let mut conn = l.conn.clone();
        let ttl: i64 = must(redis::cmd("PTTL").arg(format!("{PREFIX}k")).query_async(&mut conn).await);
        assert!(ttl > 0 && ttl <= 1_600, "{ttl}");
    }

    fn policy(port: u16, throw: bool) -> RateLimitInbound {
        let o: RateLimitInboundOptions = must(serde_json::from_value(serde_json::json!({
            "rateLimitBy": "ip", "requestsAllowed": 1, "timeWindowMinutes": 1, "throwOnFailure": throw
        })));
        let limiter = Arc::new(Limiter::Redis(Arc::new(must(RedisLimiter::new(&url(port))))));
        must(RateLimitInbound::new(o, if throw { "closed" } else { "open" }, limiter))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn outage_fails_open_or_503_and_recovery_needs_no_restart() {
        let port = free_port();
        let Some(mut server) = Server::start(port).await else { return };
        let (open, closed) = (policy(port, false), policy(port, true));
        let mut cx = test_context();
        let get = || request("GET", "/test", "");
        assert!(continued(open.on_request(get(), &mut cx).await).is_ok());
        assert_eq!(problem_status(&open.on_request(get(), &mut cx).await), Some(429));

        server.stop();
        let started = std::time::Instant::now();
        // Fail open: the limit is not enforced while Redis is gone...
        assert!(continued(open.on_request(get(), &mut cx).await).is_ok());
        // ...unless throwOnFailure: 503.
        assert_eq!(problem_status(&closed.on_request(get(), &mut cx).await), Some(503));
        assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());

        // Same port, same limiters: counting resumes once the manager reconnects.
        let Some(_server) = Server::start(port).await else { return };
        let mut resumed = false;
        for _ in 0..50 {
            // 503 while reconnecting; then the new (empty) server admits one and limits the next.
            if continued(closed.on_request(get(), &mut cx).await).is_ok() {
                resumed = problem_status(&closed.on_request(get(), &mut cx).await) == Some(429);
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(resumed, "counting did not resume after Redis came back");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn async_replicas_stay_within_the_documented_bound() {
        let port = free_port();
        let Some(_server) = Server::start(port).await else { return };
        let a = Arc::new(must(RedisLimiter::with_timeout(&url(port), Duration::from_secs(2))));
        let b = Arc::new(must(RedisLimiter::with_timeout(&url(port), Duration::from_secs(2))));
        let (limit, w) = (6u64, Duration::from_secs(60));
        // Traffic slower than a Redis round trip, alternating: at most one extra per replica.
        let mut admitted = 0;
        let mut rejected_by = [false, false];
        for i in 0..30 {
            let (l, r) = if i % 2 == 0 { (&a, 0) } else { (&b, 1) };
            if must(l.check_async("seq", limit, w)).allowed {
                admitted += 1;
            } else {
                rejected_by[r] = true;
            }
            tokio::time::sleep(Duration::from_millis(15)).await;
        }
        assert!((limit..=limit + 2).contains(&admitted), "{admitted} admitted for a limit of {limit}");
        assert_eq!(rejected_by, [true, true], "both replicas reject once Redis has answered");
        // Then a concurrent burst on both: nothing more gets through.
        let burst = (0..40).filter(|i| must(if i % 2 == 0 { &a } else { &b }.check_async("seq", limit, w)).allowed).count();
        assert_eq!(burst, 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn async_mode_decides_locally_and_learns_from_redis() {
        let port = free_port();
        let Some(_server) = Server::start(port).await else { return };
        let a = Arc::new(must(RedisLimiter::with_timeout(&url(port), Duration::from_secs(2))));
        let b = Arc::new(must(RedisLimiter::with_timeout(&url(port), Duration::from_secs(2))));
        let w = Duration::from_secs(60);
        // Replica B uses the whole shared budget.
        for _ in 0..3 {
            assert!(must(b.check("k", 3, w).await).allowed);
        }
        // A has not seen any of it: admits at once, then Redis's verdict blocks the key here.
        assert!(must(a.check_async("k", 3, w)).allowed);
        let mut blocked = false;
        for _ in 0..40 {
            tokio::time::sleep(Duration::from_millis(25)).await;
            if !must(a.check_async("k", 3, w)).allowed {
                blocked = true;
                break;
            }
        }
        assert!(blocked, "the Redis verdict did not reach the local limiter");
        // A itself never admits more than the limit locally.
        let c = Arc::new(must(RedisLimiter::with_timeout(&url(port), Duration::from_secs(2))));
        let admitted = (0..10).filter(|_| c.check_async("other", 4, w).is_ok_and(|d| d.allowed)).count();
        assert_eq!(admitted, 4);
    }
}
