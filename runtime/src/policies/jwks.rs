//! The JSON Web Key Sets behind the JWT policies: fetched over HTTP, parsed into verification
//! keys, cached, refreshed in the background and refetched (rate-limited, single-flight) when a
//! token names a key id the cache does not know.
//!
//! Caching rules, per JWKS URL (and request headers) and shared by every policy that uses it:
//! - the first fetch starts when the policy is built (inside the Tokio runtime) or at first use;
//!   requests that arrive while it runs wait for that same fetch;
//! - a background task refreshes the set every [`REFRESH_INTERVAL`] (sooner after a failure);
//!   a failed refresh keeps the keys already cached;
//! - a token with an unknown `kid` triggers at most one refetch per [`KID_REFETCH_INTERVAL`];
//!   concurrent requests share it, so forged key ids cannot make the gateway hammer the issuer;
//! - with nothing cached, a failed fetch is retried at most every [`EMPTY_RETRY_INTERVAL`].

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use http::HeaderMap;
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::Value;

/// How often the background task refreshes a key set.
pub(crate) const REFRESH_INTERVAL: Duration = Duration::from_secs(600);
/// The least time between two refetches caused by unknown key ids.
pub(crate) const KID_REFETCH_INTERVAL: Duration = Duration::from_secs(30);
/// The least time between two on-demand fetches while nothing is cached.
pub(crate) const EMPTY_RETRY_INTERVAL: Duration = Duration::from_secs(5);
/// How soon the background task tries again after a failed refresh.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(30);
/// How long one fetch may take, connection included.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest key set document accepted; real ones are a few KiB.
const MAX_DOCUMENT_BYTES: usize = 1024 * 1024;

/// One verification key of a set, with the algorithms it may verify.
#[derive(Debug, Clone)]
pub(crate) struct VerifyKey {
    /// The key id (`kid`), if the set names one.
    pub(crate) kid: Option<String>,
    /// The algorithms this key accepts, derived from its type and curve (and narrowed by its
    /// `alg` when present) — never from a token, so an RSA key can never serve as an HMAC secret.
    pub(crate) algorithms: Vec<Algorithm>,
    /// The key itself.
    pub(crate) key: DecodingKey,
}

/// The usable keys of one fetched set.
#[derive(Debug, Default)]
pub(crate) struct KeySet {
    pub(crate) keys: Vec<VerifyKey>,
}

impl KeySet {
    /// Parses a JWKS document. Keys that cannot verify signatures (encryption keys, symmetric
    /// keys, unsupported curves, malformed members) are skipped, so that one odd key does not
    /// take the whole set down; a document that is not a key set is an error.
    pub(crate) fn parse(document: &[u8]) -> Result<KeySet, String> {
        let value: Value = serde_json::from_slice(document).map_err(|e| format!("the key set is not JSON: {e}"))?;
        let Some(raw) = value.get("keys").and_then(Value::as_array) else {
            return Err("the document has no `keys` array".to_owned());
        };
        let mut keys = Vec::with_capacity(raw.len());
        for jwk in raw {
            match parse_jwk(jwk) {
                Ok(k) => keys.push(k),
                Err(why) => {
                    let kid = jwk.get("kid").and_then(Value::as_str).unwrap_or("");
                    tracing::debug!(kid, "skipping a JWK: {why}");
                }
            }
        }
        Ok(KeySet { keys })
    }

    /// Whether some key has this id.
    pub(crate) fn has_kid(&self, kid: &str) -> bool {
        self.keys.iter().any(|k| k.kid.as_deref() == Some(kid))
    }
}

const RSA_ALGORITHMS: &[Algorithm] =
    &[Algorithm::RS256, Algorithm::RS384, Algorithm::RS512, Algorithm::PS256, Algorithm::PS384, Algorithm::PS512];

fn parse_jwk(jwk: &Value) -> Result<VerifyKey, String> {
    let text = |name: &str| jwk.get(name).and_then(Value::as_str);
    if let Some(usage) = text("use")
        && usage != "sig"
    {
        return Err(format!("its use is `{usage}`"));
    }
    if let Some(ops) = jwk.get("key_ops").and_then(Value::as_array)
        && !ops.iter().any(|o| o.as_str() == Some("verify"))
    {
        return Err("its key_ops exclude verify".to_owned());
    }
    let declared = text("alg");
    let kid = text("kid").map(str::to_owned);
    let member = |name: &str| text(name).ok_or_else(|| format!("it has no `{name}`"));
    let (family_algorithms, key): (&[Algorithm], DecodingKey) = match text("kty") {
        Some("RSA") => {
            let key = DecodingKey::from_rsa_components(member("n")?, member("e")?).map_err(|e| e.to_string())?;
            (RSA_ALGORITHMS, key)
        }
        Some("EC") => {
            let algorithms: &[Algorithm] = match text("crv") {
                Some("P-256") => &[Algorithm::ES256],
                Some("P-384") => &[Algorithm::ES384],
                other => return Err(format!("curve {other:?} is not supported")),
            };
            let key = DecodingKey::from_ec_components(member("x")?, member("y")?).map_err(|e| e.to_string())?;
            (algorithms, key)
        }
        Some("OKP") => {
            if text("crv") != Some("Ed25519") {
                return Err(format!("curve {:?} is not supported", text("crv")));
            }
            let key = DecodingKey::from_ed_components(member("x")?).map_err(|e| e.to_string())?;
            (&[Algorithm::EdDSA], key)
        }
        // Symmetric (`oct`) keys are deliberately refused: a shared secret published in a key
        // set would let anyone who can read the set mint tokens.
        other => return Err(format!("key type {other:?} is not supported")),
    };
    let algorithms = match declared {
        None => family_algorithms.to_vec(),
        // RFC 9864 names the Ed25519 signature algorithm `Ed25519`; both spellings mean EdDSA here.
        Some("Ed25519") if family_algorithms == [Algorithm::EdDSA] => vec![Algorithm::EdDSA],
        Some(name) => match Algorithm::from_str(name) {
            Ok(alg) if family_algorithms.contains(&alg) => vec![alg],
            _ => return Err(format!("its alg `{name}` does not fit the key type")),
        },
    };
    Ok(VerifyKey { kid, algorithms, key })
}

/// Why an on-demand fetch is wanted (each has its own rate limit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Want {
    /// Nothing is cached yet.
    Initial,
    /// A token names a key id the cache does not have.
    UnknownKid,
    /// The background refresh.
    Scheduled,
}

#[derive(Debug, Default)]
struct State {
    keys: Option<Arc<KeySet>>,
    /// When the last fetch succeeded.
    fetched_at: Option<Instant>,
    /// When the last fetch started, whatever its outcome.
    attempted_at: Option<Instant>,
    /// When the last unknown-kid refetch started.
    kid_refetch_at: Option<Instant>,
    /// Bumped when a fetch ends, so that callers that waited for it share its outcome.
    generation: u64,
}

/// A cached JWKS endpoint.
pub(crate) struct Jwks {
    url: String,
    headers: HeaderMap,
    client: reqwest::Client,
    state: Mutex<State>,
    /// Held for the whole of a fetch: the single flight.
    fetch_lock: tokio::sync::Mutex<()>,
    refresher_started: AtomicBool,
}

impl std::fmt::Debug for Jwks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Headers may carry credentials for the JWKS endpoint: only their names are shown.
        f.debug_struct("Jwks").field("url", &self.url).field("headers", &self.headers.keys().collect::<Vec<_>>()).finish()
    }
}

type Registry = Mutex<HashMap<String, Weak<Jwks>>>;

fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(Registry::default)
}

impl Jwks {
    /// The cache for `url` fetched with `headers`, shared with every other policy that uses the
    /// same endpoint (so rate limits hold per endpoint, not per policy). Starts the first fetch
    /// and the background refresh when called inside a Tokio runtime.
    pub(crate) fn shared(url: &str, headers: HeaderMap) -> Result<Arc<Jwks>, String> {
        let mut key = url.to_owned();
        let mut pairs: Vec<_> = headers.iter().map(|(n, v)| (n.as_str(), v.as_bytes())).collect();
        pairs.sort();
        for (n, v) in pairs {
            key.push('\n');
            key.push_str(n);
            key.push(':');
            key.push_str(&String::from_utf8_lossy(v));
        }
        let jwks = {
            let mut map = registry().lock().unwrap_or_else(|e| e.into_inner());
            if let Some(existing) = map.get(&key).and_then(Weak::upgrade) {
                existing
            } else {
                let client = reqwest::Client::builder()
                    .timeout(FETCH_TIMEOUT)
                    .connect_timeout(FETCH_TIMEOUT)
                    .user_agent(concat!("specgate/", env!("CARGO_PKG_VERSION")))
                    .build()
                    .map_err(|e| format!("cannot build the HTTP client for the key set: {e}"))?;
                let jwks = Arc::new(Jwks {
                    url: url.to_owned(),
                    headers,
                    client,
                    state: Mutex::new(State::default()),
                    fetch_lock: tokio::sync::Mutex::new(()),
                    refresher_started: AtomicBool::new(false),
                });
                // Entries of policies dropped since (tests, reloads) go away here.
                map.retain(|_, w| w.strong_count() > 0);
                map.insert(key, Arc::downgrade(&jwks));
                jwks
            }
        };
        jwks.start_refresher();
        Ok(jwks)
    }

    /// The JWKS URL.
    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The cached keys, fetching them first when there are none (`None`: nothing could be
    /// fetched).
    pub(crate) async fn keys(self: &Arc<Self>) -> Option<Arc<KeySet>> {
        self.start_refresher();
        if let Some(keys) = self.lock().keys.clone() {
            return Some(keys);
        }
        self.fetch(Want::Initial).await
    }

    /// The keys after a refetch for a token naming an unknown `kid` — or the cached keys when
    /// a refetch ran less than [`KID_REFETCH_INTERVAL`] ago.
    pub(crate) async fn refetch_for_unknown_kid(self: &Arc<Self>) -> Option<Arc<KeySet>> {
        self.fetch(Want::UnknownKid).await
    }

    /// Runs a fetch as its own task, so that a request dropped half-way (client gone) neither
    /// cancels the fetch others are waiting for nor leaves the rate limit spent for nothing.
    async fn fetch(self: &Arc<Self>, want: Want) -> Option<Arc<KeySet>> {
        let seen = self.lock().generation;
        let this = Arc::clone(self);
        match tokio::spawn(async move { this.fetch_once(want, seen).await }).await {
            Ok(keys) => keys,
            Err(_) => self.lock().keys.clone(),
        }
    }

    async fn fetch_once(&self, want: Want, seen: u64) -> Option<Arc<KeySet>> {
        let _flight = self.fetch_lock.lock().await;
        {
            let mut st = self.lock();
            if st.generation != seen {
                // A fetch ended while this one waited for the lock: share its outcome instead
                // of asking the issuer again.
                return st.keys.clone();
            }
            let now = Instant::now();
            let recent = |at: Option<Instant>, within: Duration| at.is_some_and(|t| now.duration_since(t) < within);
            match want {
                Want::Initial if st.keys.is_some() => return st.keys.clone(),
                Want::Initial if recent(st.attempted_at, EMPTY_RETRY_INTERVAL) => return None,
                Want::UnknownKid if recent(st.kid_refetch_at, KID_REFETCH_INTERVAL) => return st.keys.clone(),
                Want::UnknownKid => st.kid_refetch_at = Some(now),
                Want::Scheduled if st.keys.is_some() && recent(st.fetched_at, REFRESH_INTERVAL / 2) => {
                    return st.keys.clone();
                }
                _ => {}
            }
            st.attempted_at = Some(now);
        }
        let outcome = self.download().await;
        let mut st = self.lock();
        st.generation += 1;
        match outcome {
            Ok(set) => {
                if set.keys.is_empty() {
                    tracing::warn!(url = %self.url, "the key set has no usable signing keys; every token will be refused");
                }
                st.keys = Some(Arc::new(set));
                st.fetched_at = Some(Instant::now());
            }
            Err(e) if st.keys.is_some() => {
                tracing::warn!(url = %self.url, error = %e, "refreshing the key set failed; keeping the cached keys");
            }
            Err(e) => {
                tracing::error!(url = %self.url, error = %e, "fetching the key set failed; tokens cannot be verified");
            }
        }
        st.keys.clone()
    }

    async fn download(&self) -> Result<KeySet, String> {
        let mut response = self
            .client
            .get(&self.url)
            .headers(self.headers.clone())
            .header(http::header::ACCEPT, "application/json, application/jwk-set+json")
            .send()
            .await
            .map_err(|e| format!("request failed: {e}"))?;
        let status = response.status();
        if !status.is_success() {
            return Err(format!("the endpoint answered {status}"));
        }
        if response.content_length().is_some_and(|n| n > MAX_DOCUMENT_BYTES as u64) {
            return Err(format!("the key set is larger than {MAX_DOCUMENT_BYTES} bytes"));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| format!("reading the key set failed: {e}"))? {
            if body.len() + chunk.len() > MAX_DOCUMENT_BYTES {
                return Err(format!("the key set is larger than {MAX_DOCUMENT_BYTES} bytes"));
            }
            body.extend_from_slice(&chunk);
        }
        KeySet::parse(&body)
    }

    /// Starts the task that fetches the set now and refreshes it every [`REFRESH_INTERVAL`]
    /// (once; a no-op outside a Tokio runtime, in which case the first use starts it). The task
    /// holds only a weak reference and ends when the last policy using the set is dropped.
    fn start_refresher(self: &Arc<Self>) {
        if self.refresher_started.load(Ordering::Acquire) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if self.refresher_started.swap(true, Ordering::AcqRel) {
            return;
        }
        let weak = Arc::downgrade(self);
        runtime.spawn(async move {
            let mut want = Want::Initial;
            let mut delay = Duration::ZERO;
            loop {
                tokio::time::sleep(delay).await;
                let Some(this) = weak.upgrade() else { return };
                this.fetch(want).await;
                want = Want::Scheduled;
                delay = {
                    let st = this.lock();
                    match (st.fetched_at, st.attempted_at) {
                        // The last attempt succeeded (or another caller's did since): refresh
                        // an interval after it.
                        (Some(ok), Some(tried)) if ok >= tried => {
                            REFRESH_INTERVAL.saturating_sub(ok.elapsed()).max(Duration::from_secs(1))
                        }
                        _ => RETRY_AFTER_FAILURE,
                    }
                };
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_supported_keys_and_skips_the_rest() {
        let doc = serde_json::json!({"keys": [
            {"kty": "RSA", "kid": "r", "n": "sXch", "e": "AQAB"},
            {"kty": "RSA", "kid": "r-ps", "alg": "PS256", "n": "sXch", "e": "AQAB"},
            {"kty": "RSA", "kid": "enc", "use": "enc", "n": "sXch", "e": "AQAB"},
            {"kty": "RSA", "kid": "bad-alg", "alg": "HS256", "n": "sXch", "e": "AQAB"},
            {"kty": "EC", "kid": "e", "crv": "P-256", "x": "AAAA", "y": "AAAA"},
            {"kty": "EC", "kid": "e521", "crv": "P-521", "x": "AAAA", "y": "AAAA"},
            {"kty": "OKP", "kid": "o", "crv": "Ed25519", "x": "AAAA"},
            {"kty": "OKP", "kid": "x", "crv": "X25519", "x": "AAAA"},
            {"kty": "oct", "kid": "s", "k": "c2VjcmV0"},
            {"kty": "RSA", "kid": "no-n", "e": "AQAB"}
        ]});
        let set = KeySet::parse(doc.to_string().as_bytes()).unwrap_or_default();
        let kids: Vec<_> = set.keys.iter().map(|k| k.kid.clone().unwrap_or_default()).collect();
        assert_eq!(kids, ["r", "r-ps", "e", "o"]);
        assert_eq!(set.keys[0].algorithms, RSA_ALGORITHMS);
        assert_eq!(set.keys[1].algorithms, [Algorithm::PS256]);
        assert_eq!(set.keys[2].algorithms, [Algorithm::ES256]);
        assert_eq!(set.keys[3].algorithms, [Algorithm::EdDSA]);
        assert!(set.has_kid("o") && !set.has_kid("s"));
        assert!(KeySet::parse(b"{\"nokeys\": 1}").is_err());
        assert!(KeySet::parse(b"<html>").is_err());
    }
}
