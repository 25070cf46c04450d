//! The response cache of `caching-inbound`: stored responses by key, in this process (a
//! [`moka`] cache bounded by bytes) or shared by every replica through Redis, plus the
//! single-flight table that lets concurrent misses of one key go upstream once.
//!
//! # Backends
//!
//! [`ResponseCache::from_env`]: Redis at `CACHE_REDIS_URL` when set and not empty (entries
//! are Redis strings with a TTL, so Redis forgets them by itself), otherwise in process with
//! at most `CACHE_MAX_BYTES` bytes of entries (default 64 MiB; least useful entries are
//! evicted first). Either way a single entry larger than `CACHE_MAX_ENTRY_BYTES` (default
//! 8 MiB, at most the capacity) is not stored. A Redis that does not answer in time is a
//! miss (the request goes upstream) and a lost store, never an error for the client.
//!
//! # Keys
//!
//! A [`CacheKey`] is the SHA-256 of the parts that select a response ([`KeyBuilder`]): keys
//! have a fixed size whatever the URL, and the `Authorization` values that scope entries
//! never appear in Redis in clear.
//!
//! # Single flight
//!
//! [`ResponseCache::join`] makes the first request of a key its leader and every concurrent
//! request of that key a follower that waits for the leader's outcome: the stored response,
//! or nothing (not cacheable, failed, cancelled), in which case followers go on their own.
//! This is per process: replicas sharing Redis may each send one request for a key.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{AGE, CONTENT_LENGTH, HeaderName, HeaderValue, TRANSFER_ENCODING};
use http::{HeaderMap, StatusCode};
use redis::aio::ConnectionManager;
use sha2::{Digest, Sha256};
use tokio::sync::watch;

use crate::{Body, Response};

/// The variable naming the Redis server shared by replicas (`redis://[:password@]host:port/db`).
pub const ENV_REDIS_URL: &str = "CACHE_REDIS_URL";
/// The variable bounding the in-process cache, in bytes (`67108864`, or with a unit: `64MiB`).
pub const ENV_MAX_BYTES: &str = "CACHE_MAX_BYTES";
/// The variable bounding one entry, in bytes (same syntax as [`ENV_MAX_BYTES`]).
pub const ENV_MAX_ENTRY_BYTES: &str = "CACHE_MAX_ENTRY_BYTES";
/// Default of [`ENV_MAX_BYTES`]: 64 MiB.
pub const DEFAULT_MAX_BYTES: u64 = 64 << 20;
/// Default of [`ENV_MAX_ENTRY_BYTES`]: 8 MiB.
pub const DEFAULT_MAX_ENTRY_BYTES: usize = 8 << 20;

/// Prefix of every Redis key the cache uses.
const REDIS_PREFIX: &str = "specgate:cache:";
/// The longest a request waits for Redis before it counts as a miss.
const REDIS_TIMEOUT: Duration = Duration::from_millis(250);
/// Bytes an entry costs besides its body and headers (for the weigher).
const ENTRY_OVERHEAD: usize = 128;

/// The `Cache-Status` response header (RFC 9211).
pub const CACHE_STATUS: HeaderName = HeaderName::from_static("cache-status");

/// A key: the SHA-256 of what selects a response.
pub type CacheKey = [u8; 32];

/// Builds a [`CacheKey`] from parts. Every part is length-prefixed and absent values differ
/// from empty ones, so no two different lists of parts give the same input to the hash.
#[derive(Debug, Clone, Default)]
pub struct KeyBuilder(Sha256);

impl KeyBuilder {
    /// An empty key.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a part.
    pub fn part(&mut self, bytes: &[u8]) -> &mut Self {
        self.0.update([1u8]);
        self.0.update((bytes.len() as u64).to_be_bytes());
        self.0.update(bytes);
        self
    }

    /// Adds a part that may be absent.
    pub fn opt(&mut self, bytes: Option<&[u8]>) -> &mut Self {
        match bytes {
            Some(b) => self.part(b),
            None => {
                self.0.update([0u8]);
                self
            }
        }
    }

    /// Adds every value of a header, in order (no value: absent).
    pub fn header_values<'a>(&mut self, values: impl Iterator<Item = &'a HeaderValue>) -> &mut Self {
        let mut n = 0u64;
        for v in values {
            self.part(v.as_bytes());
            n += 1;
        }
        self.0.update([2u8]);
        self.0.update(n.to_be_bytes());
        self
    }

    /// The key.
    pub fn finish(self) -> CacheKey {
        self.0.finalize().into()
    }
}

/// Milliseconds since the Unix epoch, by this machine's clock.
pub fn now_millis() -> u64 {
    u64::try_from(SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis()).unwrap_or(u64::MAX)
}

/// A stored response.
#[derive(Debug, Clone)]
pub struct CachedResponse {
    /// The status.
    pub status: StatusCode,
    /// The headers as stored (no `Transfer-Encoding`, `Age` or our `Cache-Status`).
    pub headers: HeaderMap,
    /// The whole body.
    pub body: Bytes,
    /// The request headers the response varies on (its `Vary`) with the values they had on
    /// the request that stored it; a request with other values does not get this response.
    pub vary: Vec<(HeaderName, Option<HeaderValue>)>,
    /// When it was stored (ms since the Unix epoch).
    pub stored_at_ms: u64,
    /// When it stops being served (ms since the Unix epoch).
    pub expires_at_ms: u64,
    /// The `Age` it already had when stored (seconds; from a cache upstream).
    pub initial_age: u64,
}

impl CachedResponse {
    /// Whether it may still be served at `now_ms`.
    pub fn is_fresh(&self, now_ms: u64) -> bool {
        now_ms < self.expires_at_ms
    }

    /// How long it has left at `now_ms`.
    pub fn remaining(&self, now_ms: u64) -> Duration {
        Duration::from_millis(self.expires_at_ms.saturating_sub(now_ms))
    }

    /// Its age at `now_ms` in whole seconds (RFC 9111 §5.1), including the age it was stored with.
    pub fn age(&self, now_ms: u64) -> u64 {
        self.initial_age.saturating_add(now_ms.saturating_sub(self.stored_at_ms) / 1000)
    }

    /// Whether a request with `headers` may get this response (its `Vary` headers match).
    pub fn matches(&self, headers: &HeaderMap) -> bool {
        self.vary.iter().all(|(name, value)| joined(headers, name).as_ref() == value.as_ref())
    }

    /// The response to send, with `Age` and `cache_status` appended to `Cache-Status`.
    pub fn to_response(&self, cache_status: HeaderValue) -> Response {
        let mut resp = Response::new(Body::from(self.body.clone()));
        *resp.status_mut() = self.status;
        *resp.headers_mut() = self.headers.clone();
        resp.headers_mut().insert(AGE, HeaderValue::from(self.age(now_millis())));
        resp.headers_mut().append(CACHE_STATUS, cache_status);
        resp
    }

    /// What it costs in memory, for the in-process cache's byte bound.
    pub fn weight(&self) -> usize {
        let headers: usize = self.headers.iter().map(|(k, v)| k.as_str().len() + v.len() + 8).sum();
        let vary: usize = self.vary.iter().map(|(k, v)| k.as_str().len() + v.as_ref().map_or(0, HeaderValue::len) + 8).sum();
        ENTRY_OVERHEAD + self.body.len() + headers + vary
    }

    /// Serializes it for Redis (a small length-prefixed binary format, versioned).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.weight() + 16);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&self.status.as_u16().to_be_bytes());
        out.extend_from_slice(&self.stored_at_ms.to_be_bytes());
        out.extend_from_slice(&self.expires_at_ms.to_be_bytes());
        out.extend_from_slice(&self.initial_age.to_be_bytes());
        out.extend_from_slice(&(self.headers.len() as u32).to_be_bytes());
        for (k, v) in &self.headers {
            put_bytes(&mut out, k.as_str().as_bytes());
            put_bytes(&mut out, v.as_bytes());
        }
        out.extend_from_slice(&(self.vary.len() as u32).to_be_bytes());
        for (k, v) in &self.vary {
            put_bytes(&mut out, k.as_str().as_bytes());
            match v {
                Some(v) => {
                    out.push(1);
                    put_bytes(&mut out, v.as_bytes());
                }
                None => out.push(0),
            }
        }
        put_bytes(&mut out, &self.body);
        out
    }

    /// Reads what [`CachedResponse::encode`] wrote; `None` for anything else.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let mut r = Reader(bytes);
        if r.take(MAGIC.len())? != MAGIC {
            return None;
        }
        let status = StatusCode::from_u16(u16::from_be_bytes(r.array()?)).ok()?;
        let stored_at_ms = u64::from_be_bytes(r.array()?);
        let expires_at_ms = u64::from_be_bytes(r.array()?);
        let initial_age = u64::from_be_bytes(r.array()?);
        let n = u32::from_be_bytes(r.array()?);
        let mut headers = HeaderMap::new();
        for _ in 0..n {
            let name = HeaderName::from_bytes(r.bytes()?).ok()?;
            let value = HeaderValue::from_bytes(r.bytes()?).ok()?;
            headers.append(name, value);
        }
        let n = u32::from_be_bytes(r.array()?);
        let mut vary = Vec::new();
        for _ in 0..n {
            let name = HeaderName::from_bytes(r.bytes()?).ok()?;
            let value = match r.take(1)? {
                [1] => Some(HeaderValue::from_bytes(r.bytes()?).ok()?),
                [0] => None,
                _ => return None,
            };
            vary.push((name, value));
        }
        let body = Bytes::copy_from_slice(r.bytes()?);
        if !r.0.is_empty() {
            return None;
        }
        Some(CachedResponse { status, headers, body, vary, stored_at_ms, expires_at_ms, initial_age })
    }
}

const MAGIC: &[u8] = b"SGC1";

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u64).to_be_bytes());
    out.extend_from_slice(b);
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }

    fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = usize::try_from(u64::from_be_bytes(self.array()?)).ok()?;
        self.take(n)
    }
}

/// Every value of `name` in `headers` joined with `, ` (`None` when absent).
pub fn joined(headers: &HeaderMap, name: &HeaderName) -> Option<HeaderValue> {
    let mut values = headers.get_all(name).iter();
    let first = values.next()?;
    let Some(second) = values.next() else { return Some(first.clone()) };
    let mut out = first.as_bytes().to_vec();
    for v in std::iter::once(second).chain(values) {
        out.extend_from_slice(b", ");
        out.extend_from_slice(v.as_bytes());
    }
    HeaderValue::from_bytes(&out).ok()
}

/// The headers of `resp` as they are stored: without framing, `Age` and `Cache-Status` (a hit
/// sets its own).
pub fn storable_headers(headers: &HeaderMap) -> HeaderMap {
    let mut h = headers.clone();
    for name in [TRANSFER_ENCODING, AGE, CACHE_STATUS, CONTENT_LENGTH] {
        h.remove(name);
    }
    h
}

/// Where entries live.
enum Backend {
    Memory(moka::future::Cache<CacheKey, Arc<CachedResponse>>),
    Redis(ConnectionManager),
}

/// Entries expire when their own `expires_at_ms` passes (each policy has its own TTL).
struct PerEntryExpiry;

impl moka::Expiry<CacheKey, Arc<CachedResponse>> for PerEntryExpiry {
    fn expire_after_create(&self, _: &CacheKey, value: &Arc<CachedResponse>, _: std::time::Instant) -> Option<Duration> {
        Some(value.remaining(now_millis()))
    }

    fn expire_after_update(
        &self,
        _: &CacheKey,
        value: &Arc<CachedResponse>,
        _: std::time::Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(value.remaining(now_millis()))
    }
}

/// What followers of a flight watch: `None` until the leader publishes an entry.
type Outcome = watch::Receiver<Option<Arc<CachedResponse>>>;

/// The response cache: a backend, the per-entry size bound and the single-flight table.
pub struct ResponseCache {
    backend: Backend,
    max_entry_bytes: usize,
    flights: Mutex<HashMap<CacheKey, (u64, Outcome)>>,
    flight_ids: AtomicU64,
}

impl std::fmt::Debug for ResponseCache {
    // The Redis connection's debug output could include the URL and its password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let backend = match &self.backend {
            Backend::Memory(_) => "memory",
            Backend::Redis(_) => "redis",
        };
        f.debug_struct("ResponseCache")
            .field("backend", &backend)
            .field("max_entry_bytes", &self.max_entry_bytes)
            .finish_non_exhaustive()
    }
}

impl ResponseCache {
    /// An in-process cache of at most `max_bytes` bytes whose entries are at most
    /// `max_entry_bytes` bytes of body (and never more than `max_bytes`).
    pub fn memory(max_bytes: u64, max_entry_bytes: usize) -> Self {
        let cache = moka::future::Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|_: &CacheKey, v: &Arc<CachedResponse>| u32::try_from(v.weight()).unwrap_or(u32::MAX))
            .expire_after(PerEntryExpiry)
            .build();
        let max_entry_bytes = max_entry_bytes.min(usize::try_from(max_bytes).unwrap_or(usize::MAX));
        Self::with_backend(Backend::Memory(cache), max_entry_bytes)
    }

    /// A cache in Redis at `url` (entries at most `max_entry_bytes` bytes of body). Prepares
    /// the connection without connecting, so the gateway starts while Redis is down; needs a
    /// Tokio runtime.
    pub fn redis(url: &str, max_entry_bytes: usize) -> Result<Self, String> {
        // Fail fast: a request must not wait long on a dead Redis; the manager reconnects in
        // the background. Not a readiness dependency: an unreachable cache is a miss.
        let settings = crate::redis_conn::FailFast { timeout: REDIS_TIMEOUT, retries: 1, max_delay: Duration::from_millis(500) };
        let conn = crate::redis_conn::lazy(url, &format!("response cache ({ENV_REDIS_URL})"), settings, None)?;
        Ok(Self::with_backend(Backend::Redis(conn), max_entry_bytes))
    }

    fn with_backend(backend: Backend, max_entry_bytes: usize) -> Self {
        ResponseCache { backend, max_entry_bytes, flights: Mutex::new(HashMap::new()), flight_ids: AtomicU64::new(0) }
    }

    /// The backend the environment chooses (see the module documentation).
    pub fn from_env() -> Result<Self, String> {
        let max_bytes = match crate::env::var(ENV_MAX_BYTES) {
            Some(v) => parse_size(&v).ok_or_else(|| format!("{ENV_MAX_BYTES}: `{v}` is not a size in bytes (e.g. 67108864 or 64MiB)"))?,
            None => DEFAULT_MAX_BYTES,
        };
        let max_entry = match crate::env::var(ENV_MAX_ENTRY_BYTES) {
            Some(v) => parse_size(&v)
                .and_then(|n| usize::try_from(n).ok())
                .ok_or_else(|| format!("{ENV_MAX_ENTRY_BYTES}: `{v}` is not a size in bytes (e.g. 1048576 or 1MiB)"))?,
            None => DEFAULT_MAX_ENTRY_BYTES,
        };
        match crate::env::var(ENV_REDIS_URL).filter(|u| !u.trim().is_empty()) {
            Some(url) => Self::redis(url.trim(), max_entry),
            None => Ok(Self::memory(max_bytes, max_entry)),
        }
    }

    /// The process-wide cache ([`ResponseCache::from_env`], built on first use), shared by
    /// every caching policy.
    pub fn shared() -> Result<Arc<Self>, String> {
        static SHARED: Mutex<Option<Arc<ResponseCache>>> = Mutex::new(None);
        let mut slot = SHARED.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let c = Arc::new(Self::from_env()?);
        *slot = Some(c.clone());
        Ok(c)
    }

    /// The largest body an entry may have.
    pub fn max_entry_bytes(&self) -> usize {
        self.max_entry_bytes
    }

    /// The fresh entry of `key`, if any. A backend that cannot answer is a miss.
    pub async fn get(&self, key: &CacheKey) -> Option<Arc<CachedResponse>> {
        let entry = match &self.backend {
            Backend::Memory(c) => c.get(key).await?,
            Backend::Redis(conn) => {
                let mut conn = conn.clone();
                let mut cmd = redis::cmd("GET");
                cmd.arg(redis_key(key));
                let raw = match tokio::time::timeout(REDIS_TIMEOUT, cmd.query_async::<Option<Vec<u8>>>(&mut conn)).await {
                    Ok(Ok(raw)) => raw?,
                    Ok(Err(e)) => {
                        crate::ratelimit::warn_throttled("response cache: Redis lookup failed; treating it as a miss", &e);
                        return None;
                    }
                    Err(_) => {
                        crate::ratelimit::warn_throttled("response cache: Redis lookup failed; treating it as a miss", &"timeout");
                        return None;
                    }
                };
                Arc::new(CachedResponse::decode(&raw)?)
            }
        };
        entry.is_fresh(now_millis()).then_some(entry)
    }

    /// Stores `entry` under `key` until its `expires_at_ms`. Failures are logged (throttled).
    pub async fn put(&self, key: CacheKey, entry: Arc<CachedResponse>) {
        let ttl = entry.remaining(now_millis());
        if ttl.is_zero() || entry.body.len() > self.max_entry_bytes {
            return;
        }
        match &self.backend {
            Backend::Memory(c) => c.insert(key, entry).await,
            Backend::Redis(conn) => {
                let mut conn = conn.clone();
                let mut cmd = redis::cmd("SET");
                let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
                cmd.arg(redis_key(&key)).arg(entry.encode()).arg("PX").arg(ms);
                match tokio::time::timeout(REDIS_TIMEOUT, cmd.query_async::<()>(&mut conn)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => crate::ratelimit::warn_throttled("response cache: cannot store in Redis", &e),
                    Err(_) => crate::ratelimit::warn_throttled("response cache: cannot store in Redis", &"timeout"),
                }
            }
        }
    }

    /// Joins the flight of `key`: the first request becomes its leader, concurrent ones
    /// followers (see the module documentation).
    pub fn join(self: &Arc<Self>, key: CacheKey) -> Flight {
        let mut flights = self.flights.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((_, rx)) = flights.get(&key) {
            return Flight::Follow(FlightFollower { rx: rx.clone() });
        }
        let id = self.flight_ids.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = watch::channel(None);
        flights.insert(key, (id, rx));
        Flight::Lead(FlightLeader { cache: self.clone(), key, id, tx })
    }

    /// Requests in flight (leaders whose outcome is not settled), for tests and metrics.
    pub fn flights_in_progress(&self) -> usize {
        self.flights.lock().map(|f| f.len()).unwrap_or(0)
    }
}

fn redis_key(key: &CacheKey) -> String {
    let mut s = String::with_capacity(REDIS_PREFIX.len() + 64);
    s.push_str(REDIS_PREFIX);
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for b in key {
        s.push(char::from(HEX[usize::from(b >> 4)]));
        s.push(char::from(HEX[usize::from(b & 15)]));
    }
    s
}

/// Parses a size in bytes: digits, optionally followed by `K`/`KB`/`KiB`, `M`/`MB`/`MiB` or
/// `G`/`GB`/`GiB` (all powers of 1024), case-insensitive. Zero is refused.
pub fn parse_size(text: &str) -> Option<u64> {
    let t = text.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let n: u64 = t[..digits].parse().ok()?;
    let shift = match t[digits..].trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        _ => return None,
    };
    n.checked_mul(1u64 << shift).filter(|n| *n > 0)
}

/// A request's place in the single flight of its key.
#[derive(Debug)]
pub enum Flight {
    /// The first: looks the key up, goes upstream on a miss and publishes what it stored.
    Lead(FlightLeader),
    /// A concurrent one: waits for the leader.
    Follow(FlightFollower),
}

/// The leader of a flight. Dropping it without [`FlightLeader::publish`] tells followers to
/// go on their own; dropping it ends the flight (later requests look the store up again).
pub struct FlightLeader {
    cache: Arc<ResponseCache>,
    key: CacheKey,
    id: u64,
    tx: watch::Sender<Option<Arc<CachedResponse>>>,
}

impl std::fmt::Debug for FlightLeader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlightLeader").field("id", &self.id).finish_non_exhaustive()
    }
}

impl FlightLeader {
    /// Hands `entry` to the followers (and to requests that join until the leader is dropped).
    pub fn publish(&self, entry: Arc<CachedResponse>) {
        self.tx.send_replace(Some(entry));
    }

    /// The key of the flight.
    pub fn key(&self) -> &CacheKey {
        &self.key
    }
}

impl Drop for FlightLeader {
    fn drop(&mut self) {
        let mut flights = self.cache.flights.lock().unwrap_or_else(PoisonError::into_inner);
        if flights.get(&self.key).is_some_and(|(id, _)| *id == self.id) {
            flights.remove(&self.key);
        }
        // `tx` drops after this: followers still waiting see the flight end without an entry.
    }
}

/// A follower of a flight.
#[derive(Debug)]
pub struct FlightFollower {
    rx: Outcome,
}

impl FlightFollower {
    /// The response the leader has already stored (it is being written to the backend), if any.
    pub fn ready(&self) -> Option<Arc<CachedResponse>> {
        self.rx.borrow().clone()
    }

    /// The leader's stored response, or `None` when it stored nothing or `timeout` passed.
    pub async fn wait(mut self, timeout: Duration) -> Option<Arc<CachedResponse>> {
        let found = tokio::time::timeout(timeout, self.rx.wait_for(Option::is_some)).await.ok()?.ok()?;
        found.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(body: &str, ttl_ms: u64) -> Arc<CachedResponse> {
        let now = now_millis();
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("text/plain"));
        headers.append("x-multi", HeaderValue::from_static("a"));
        headers.append("x-multi", HeaderValue::from_static("b"));
        Arc::new(CachedResponse {
            status: StatusCode::OK,
            headers,
            body: Bytes::from(body.to_owned()),
            vary: vec![
                (HeaderName::from_static("accept-encoding"), Some(HeaderValue::from_static("gzip"))),
                (HeaderName::from_static("x-absent"), None),
            ],
            stored_at_ms: now,
            expires_at_ms: now + ttl_ms,
            initial_age: 3,
        })
    }

    fn key(s: &str) -> CacheKey {
        let mut k = KeyBuilder::new();
        k.part(s.as_bytes());
        k.finish()
    }

    #[test]
    fn keys_are_unambiguous() {
        let k = |parts: &[Option<&str>]| {
            let mut b = KeyBuilder::new();
            for p in parts {
                b.opt(p.map(str::as_bytes));
            }
            b.finish()
        };
        assert_eq!(k(&[Some("a"), Some("b")]), k(&[Some("a"), Some("b")]));
        assert_ne!(k(&[Some("ab"), Some("")]), k(&[Some("a"), Some("b")]));
        assert_ne!(k(&[Some("")]), k(&[None]));
        let values = |vs: &[&'static str]| {
            let hs: Vec<HeaderValue> = vs.iter().map(|v| HeaderValue::from_static(v)).collect();
            let mut b = KeyBuilder::new();
            b.header_values(hs.iter());
            b.finish()
        };
        assert_ne!(values(&["a, b"]), values(&["a", "b"]));
        assert_ne!(values(&[]), values(&[""]));
    }

    #[test]
    fn encoding_round_trips_and_rejects_garbage() {
        let e = entry("hello", 60_000);
        let bytes = e.encode();
        let d = CachedResponse::decode(&bytes).unwrap_or_else(|| panic!("does not decode"));
        assert_eq!(d.status, e.status);
        assert_eq!(d.headers, e.headers);
        assert_eq!(d.body, e.body);
        assert_eq!(d.vary, e.vary);
        assert_eq!((d.stored_at_ms, d.expires_at_ms, d.initial_age), (e.stored_at_ms, e.expires_at_ms, e.initial_age));
        for cut in [0, 3, 10, bytes.len() - 1] {
            assert!(CachedResponse::decode(&bytes[..cut]).is_none(), "cut at {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(CachedResponse::decode(&longer).is_none());
        assert!(CachedResponse::decode(b"SGC2").is_none());
    }

    #[test]
    fn vary_age_and_response() {
        let e = entry("hello", 60_000);
        let mut h = HeaderMap::new();
        assert!(!e.matches(&h));
        h.insert("accept-encoding", HeaderValue::from_static("gzip"));
        assert!(e.matches(&h));
        h.insert("x-absent", HeaderValue::from_static("now present"));
        assert!(!e.matches(&h));
        assert_eq!(e.age(e.stored_at_ms + 2_500), 5);
        let resp = e.to_response(HeaderValue::from_static("specgate; hit"));
        assert_eq!(resp.headers().get("age").and_then(|v| v.to_str().ok()), Some("3"));
        assert_eq!(resp.headers().get("cache-status").and_then(|v| v.to_str().ok()), Some("specgate; hit"));
        assert_eq!(resp.headers().get_all("x-multi").iter().count(), 2);
    }

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("1024"), Some(1024));
        assert_eq!(parse_size("64MiB"), Some(64 << 20));
        assert_eq!(parse_size(" 2 kb "), Some(2048));
        assert_eq!(parse_size("1G"), Some(1 << 30));
        assert_eq!(parse_size("0"), None);
        assert_eq!(parse_size("ten"), None);
        assert_eq!(parse_size("5 parsecs"), None);
        assert_eq!(parse_size("99999999999999999999"), None);
    }

    #[tokio::test]
    async fn memory_entries_expire_and_memory_is_bounded() {
        let c = ResponseCache::memory(10_000, 4_000);
        c.put(key("short"), entry("x", 150)).await;
        c.put(key("long"), entry("y", 60_000)).await;
        assert!(c.get(&key("short")).await.is_some());
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(c.get(&key("short")).await.is_none());
        assert_eq!(c.get(&key("long")).await.map(|e| e.body.clone()), Some(Bytes::from("y")));
        // Too large for one entry: not stored.
        c.put(key("big"), entry(&"z".repeat(5_000), 60_000)).await;
        assert!(c.get(&key("big")).await.is_none());
        // Many entries of ~3 KB in 10 KB: older ones are evicted, the total stays bounded.
        for i in 0..20 {
            c.put(key(&format!("k{i}")), entry(&"w".repeat(3_000), 60_000)).await;
        }
        let Backend::Memory(m) = &c.backend else { panic!("memory backend expected") };
        m.run_pending_tasks().await;
        assert!(m.weighted_size() <= 10_000, "{} bytes held", m.weighted_size());
        let mut kept = 0;
        for i in 0..20 {
            kept += usize::from(c.get(&key(&format!("k{i}"))).await.is_some());
        }
        assert!((1..=3).contains(&kept), "{kept} entries kept");
    }

    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).unwrap_or(0)
    }

    #[tokio::test]
    async fn redis_round_trip_expiry_and_failing_open() {
        // Nothing listens: a miss and a lost store, both quick.
        let dead = must_ok(ResponseCache::redis(&format!("redis://127.0.0.1:{}/", free_port()), 1 << 16));
        let started = std::time::Instant::now();
        dead.put(key("a"), entry("x", 60_000)).await;
        assert!(dead.get(&key("a")).await.is_none());
        assert!(started.elapsed() < Duration::from_secs(3));

        let port = free_port();
        let child = std::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn();
        let Ok(mut child) = child else {
            eprintln!("skipped: cannot start redis-server");
            return;
        };
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let c = must_ok(ResponseCache::redis(&format!("redis://127.0.0.1:{port}/"), 1 << 16));
        c.put(key("a"), entry("stored in redis", 60_000)).await;
        c.put(key("short"), entry("brief", 200)).await;
        let got = c.get(&key("a")).await;
        let short_before = c.get(&key("short")).await.is_some();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let short_after = c.get(&key("short")).await.is_some();
        let other = c.get(&key("other")).await.is_some();
        let _ = child.kill();
        let _ = child.wait();
        let got = got.unwrap_or_else(|| panic!("not found in Redis"));
        assert_eq!(got.body, Bytes::from("stored in redis"));
        assert_eq!(got.headers.get_all("x-multi").iter().count(), 2);
        assert_eq!((short_before, short_after, other), (true, false, false), "Redis expires entries with their TTL");
    }

    fn must_ok<T>(r: Result<T, String>) -> T {
        r.unwrap_or_else(|e| panic!("{e}"))
    }

    #[tokio::test]
    async fn single_flight_leads_once_and_hands_over() {
        let c = Arc::new(ResponseCache::memory(1 << 20, 1 << 16));
        let Flight::Lead(lead) = c.join(key("a")) else { panic!("first is not the leader") };
        let Flight::Follow(f1) = c.join(key("a")) else { panic!("second is not a follower") };
        // Another key has its own flight.
        assert!(matches!(c.join(key("b")), Flight::Lead(_)));
        let waiting = tokio::spawn(f1.wait(Duration::from_secs(5)));
        lead.publish(entry("stored", 60_000));
        let got = waiting.await.ok().flatten().map(|e| e.body.clone());
        assert_eq!(got, Some(Bytes::from("stored")));
        // Joining after publication but before the leader is dropped: served at once.
        let Flight::Follow(f2) = c.join(key("a")) else { panic!("flight ended early") };
        assert!(f2.ready().is_some());
        assert!(f2.wait(Duration::from_millis(10)).await.is_some());
        drop(lead);
        assert_eq!(c.flights_in_progress(), 0);
        assert!(matches!(c.join(key("a")), Flight::Lead(_)));
    }

    #[tokio::test]
    async fn followers_go_on_their_own_when_the_leader_fails_or_stalls() {
        let c = Arc::new(ResponseCache::memory(1 << 20, 1 << 16));
        let Flight::Lead(lead) = c.join(key("a")) else { panic!("first is not the leader") };
        let Flight::Follow(f) = c.join(key("a")) else { panic!("second is not a follower") };
        let waiting = tokio::spawn(f.wait(Duration::from_secs(5)));
        drop(lead);
        assert!(waiting.await.ok().flatten().is_none());
        let Flight::Lead(_stalled) = c.join(key("a")) else { panic!("no new leader") };
        let Flight::Follow(f) = c.join(key("a")) else { panic!("not a follower") };
        let started = std::time::Instant::now();
        assert!(f.wait(Duration::from_millis(50)).await.is_none());
        assert!(started.elapsed() < Duration::from_secs(2));
    }
}
