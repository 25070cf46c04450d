//! api-key-inbound: authenticates a request by an API key from the self-hosted key store
//! ([`crate::keys`]) instead of Zuplo's hosted service.
//!
//! Per request: read the key from `authHeader` (after `authScheme`), check its format (no
//! store access for garbage), look its SHA-256 up (cached for `cacheTtlSeconds`), check
//! expiry, and set `request.user` to the consumer (`sub` = name, `data` = metadata).
//! Refusals are 401 problems with a `WWW-Authenticate` challenge; a store that cannot answer
//! gives 503 (a request is never let through because the store was down). Logs name a key
//! only by its display id (`zpka_abcdefgh`), never the key.

use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use http::header::{HeaderName, HeaderValue, WWW_AUTHENTICATE};
use serde::Deserialize;

use crate::keys::{DEFAULT_BUCKET, KeyHash, KeyStore, StoreConfig, format, now_unix};
use crate::policy::{Flow, FromOptions, Inbound};
use crate::{Context, Problem, Request};

fn authorization() -> String {
    "Authorization".to_owned()
}

fn bearer() -> String {
    "Bearer".to_owned()
}

fn sixty() -> u64 {
    60
}

/// Options of `ApiKeyInboundPolicy` (Zuplo's names).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ApiKeyInboundOptions {
    /// The header carrying the key (default `Authorization`).
    #[serde(default = "authorization", deserialize_with = "super::de::text")]
    pub auth_header: String,
    /// The scheme before the key, matched case-insensitively (default `Bearer`); empty: the
    /// whole header value is the key.
    #[serde(default = "bearer", deserialize_with = "super::de::text")]
    pub auth_scheme: String,
    /// Let requests without a valid key continue without a user (default false), for routes
    /// that serve anonymous callers differently.
    #[serde(default)]
    pub allow_unauthenticated_requests: bool,
    /// How long look-up results, including "no such key", are cached in this process
    /// (default 60; 0 disables the cache). A revocation takes effect within this time.
    #[serde(default = "sixty")]
    pub cache_ttl_seconds: u64,
    /// The bucket of consumers to check (default `"default"`).
    #[serde(default, deserialize_with = "super::de::opt_text")]
    pub bucket_name: Option<String>,
}

/// Why a request carries no usable key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    /// No credentials in our header and scheme.
    Missing,
    /// Credentials that are not a known key.
    Invalid,
    /// A known key past its expiry.
    Expired,
}

/// `ApiKeyInboundPolicy`: API-key authentication against the self-hosted key store.
#[derive(Debug)]
pub struct ApiKeyInbound {
    name: String,
    header: HeaderName,
    scheme: String,
    allow_unauthenticated: bool,
    cache_ttl: Duration,
    store: Arc<KeyStore>,
    challenge_missing: HeaderValue,
    challenge_invalid: HeaderValue,
}

impl FromOptions for ApiKeyInbound {
    type Options = ApiKeyInboundOptions;
    /// Uses the process-wide store of the backend chosen by the environment
    /// ([`StoreConfig::from_env`]) and the bucket; call inside the Tokio runtime (the file
    /// watcher and the Redis connection run on it).
    fn from_options(options: Self::Options, name: &str) -> Result<Self, String> {
        let bucket = bucket_of(&options);
        let config = StoreConfig::from_env();
        let store = KeyStore::shared(&config, &bucket).map_err(|e| format!("API key store ({}): {e}", config.describe()))?;
        Self::new(options, store, name)
    }
}

fn bucket_of(options: &ApiKeyInboundOptions) -> String {
    match options.bucket_name.as_deref().map(str::trim) {
        Some(b) if !b.is_empty() => b.to_owned(),
        _ => DEFAULT_BUCKET.to_owned(),
    }
}

impl ApiKeyInbound {
    /// Builds the policy on a given store (custom wiring and tests); the store's bucket is
    /// used and `bucketName` must agree with it when set.
    pub fn new(options: ApiKeyInboundOptions, store: Arc<KeyStore>, name: &str) -> Result<Self, String> {
        if options.bucket_name.as_deref().is_some_and(|b| !b.trim().is_empty()) && bucket_of(&options) != store.bucket() {
            return Err(format!("bucketName `{}` differs from the store's bucket `{}`", bucket_of(&options), store.bucket()));
        }
        let header = HeaderName::from_bytes(options.auth_header.trim().as_bytes())
            .map_err(|_| format!("authHeader `{}` is not a valid header name", options.auth_header))?;
        let scheme = options.auth_scheme.trim().to_owned();
        // RFC 9110 token characters: the scheme is compared with, and written into, headers.
        if !scheme.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)) {
            return Err(format!("authScheme `{scheme}` is not a valid authentication scheme"));
        }
        // A challenge needs a scheme even when the key travels bare.
        let challenge_scheme = if scheme.is_empty() { "ApiKey" } else { scheme.as_str() };
        let challenge = |extra: &str| {
            HeaderValue::from_str(&format!("{challenge_scheme} realm=\"api\"{extra}"))
                .map_err(|_| "cannot build the WWW-Authenticate header".to_owned())
        };
        Ok(ApiKeyInbound {
            name: name.to_owned(),
            header,
            challenge_missing: challenge("")?,
            challenge_invalid: challenge(", error=\"invalid_token\"")?,
            scheme,
            allow_unauthenticated: options.allow_unauthenticated_requests,
            cache_ttl: Duration::from_secs(options.cache_ttl_seconds),
            store,
        })
    }

    /// The key's hash and display id, or why there is none.
    fn extract(&self, req: &Request) -> Result<(KeyHash, String), Refusal> {
        let mut values = req.headers().get_all(&self.header).iter();
        let Some(value) = values.next() else { return Err(Refusal::Missing) };
        // Two values leave it unclear which one a later hop would read.
        if values.next().is_some() {
            return Err(Refusal::Invalid);
        }
        let value = value.to_str().map_err(|_| Refusal::Invalid)?.trim();
        let key = if self.scheme.is_empty() {
            value
        } else {
            match value.split_once([' ', '\t']) {
                Some((scheme, rest)) if scheme.eq_ignore_ascii_case(&self.scheme) => rest.trim(),
                // Another scheme (Basic, a JWT's Bearer elsewhere...) is not a key of ours.
                Some(_) => return Err(Refusal::Missing),
                None if value.eq_ignore_ascii_case(&self.scheme) => return Err(Refusal::Missing),
                None => return Err(Refusal::Invalid),
            }
        };
        if key.is_empty() {
            return Err(Refusal::Missing);
        }
        let parsed = format::parse(key).ok_or(Refusal::Invalid)?;
        Ok((parsed.hash(), parsed.display_id()))
    }

    fn refuse(&self, req: Request, cx: &Context, why: Refusal, key_id: Option<&str>) -> Flow {
        tracing::debug!(
            request_id = %cx.request_id,
            policy = %self.name,
            key_id = key_id.unwrap_or("-"),
            reason = ?why,
            allowed = self.allow_unauthenticated,
            "API key refused"
        );
        if self.allow_unauthenticated {
            return Flow::Continue(req);
        }
        let (detail, challenge) = match why {
            Refusal::Missing => (
                if self.scheme.is_empty() {
                    format!("no API key in the {} header", self.header)
                } else {
                    format!("no {} API key in the {} header", self.scheme, self.header)
                },
                &self.challenge_missing,
            ),
            Refusal::Invalid => ("the API key is invalid".to_owned(), &self.challenge_invalid),
            Refusal::Expired => ("the API key has expired".to_owned(), &self.challenge_invalid),
        };
        Flow::Problem(Problem::new(StatusCode::UNAUTHORIZED).with_detail(detail).with_header(WWW_AUTHENTICATE, challenge.clone()))
    }
}

impl Inbound for ApiKeyInbound {
    async fn on_request(&self, mut req: Request, cx: &mut Context) -> Flow {
        let (hash, key_id) = match self.extract(&req) {
            Ok(k) => k,
            Err(why) => return self.refuse(req, cx, why, None),
        };
        match self.store.lookup(&hash, self.cache_ttl).await {
            Ok(Some(identity)) if !identity.is_expired_at(now_unix()) => {
                tracing::debug!(request_id = %cx.request_id, consumer = %identity.consumer, key_id = %identity.key_id, "API key accepted");
                req.user = Some(identity.to_user());
                Flow::Continue(req)
            }
            Ok(Some(_)) => self.refuse(req, cx, Refusal::Expired, Some(&key_id)),
            Ok(None) => self.refuse(req, cx, Refusal::Invalid, Some(&key_id)),
            Err(e) => {
                // Fail closed, even with allowUnauthenticatedRequests: a paying consumer must
                // not be silently served as anonymous while the store is down.
                tracing::error!(request_id = %cx.request_id, policy = %self.name, key_id = %key_id, error = %e, "cannot check the API key");
                Flow::Problem(Problem::new(StatusCode::SERVICE_UNAVAILABLE).with_detail("key store unavailable"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use serde_json::json;

    use super::*;
    use crate::keys::{CreateKey, NewKey};
    use crate::policies::test_util::{body_text, continued, must, problem_status};
    use crate::policies::{test_context, test_util};

    fn temp_file(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("specgate-policy-{tag}-{}-{:x}", std::process::id(), must(getrandom::u64())));
        must(std::fs::create_dir_all(&dir));
        dir.join("api-keys.json")
    }

    async fn store_with_key(tag: &str, bucket: &str) -> (Arc<KeyStore>, NewKey) {
        let store = must(KeyStore::open(&StoreConfig::File(temp_file(tag)), bucket));
        let mut metadata = serde_json::Map::new();
        metadata.insert("plan".into(), json!("gold"));
        let key = must(store.create_key(CreateKey { consumer: "acme".into(), metadata: Some(metadata), ..CreateKey::default() }).await);
        (Arc::new(store), key)
    }

    fn policy(options: serde_json::Value, store: &Arc<KeyStore>) -> ApiKeyInbound {
        let options: ApiKeyInboundOptions = must(serde_json::from_value(options));
        must(ApiKeyInbound::new(options, store.clone(), "api-key"))
    }

    fn get(headers: &[(&str, &str)]) -> Request {
        let mut req = test_util::request("GET", "/test", "");
        for (k, v) in headers {
            req.headers_mut().append(HeaderName::from_bytes(k.as_bytes()).unwrap_or(WWW_AUTHENTICATE), must(HeaderValue::from_str(v)));
        }
        req
    }

    /// Status, WWW-Authenticate and body of a refusal.
    async fn refusal(flow: Flow) -> (u16, String, String) {
        let cx = test_context();
        let Flow::Problem(p) = flow else { panic!("expected a problem, got {flow:?}") };
        let resp = cx.problem(p);
        let status = resp.status().as_u16();
        let challenge = resp.headers().get(WWW_AUTHENTICATE).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
        (status, challenge, body_text(resp.into_body()).await)
    }

    #[tokio::test]
    async fn valid_key_sets_the_user() {
        let (store, key) = store_with_key("valid", "default").await;
        let p = policy(json!({}), &store);
        let mut cx = test_context();
        let bearer = format!("Bearer {}", key.key);
        let req = must(continued(p.on_request(get(&[("authorization", &bearer)]), &mut cx).await));
        let user = req.user.unwrap_or_default();
        assert_eq!(user.sub, "acme");
        assert_eq!(user.data, json!({"plan": "gold"}));
        // The scheme is case-insensitive.
        let lower = format!("bearer  {}", key.key);
        assert!(continued(p.on_request(get(&[("authorization", &lower)]), &mut cx).await).is_ok());
    }

    #[tokio::test]
    async fn refusals_are_401_with_a_challenge() {
        let (store, key) = store_with_key("refuse", "default").await;
        let p = policy(json!({}), &store);
        let mut cx = test_context();

        let (status, challenge, body) = refusal(p.on_request(get(&[]), &mut cx).await).await;
        assert_eq!(status, 401);
        assert_eq!(challenge, r#"Bearer realm="api""#);
        assert!(body.contains("no Bearer API key"), "{body}");

        let unknown = format!("Bearer {}", must(format::generate()));
        let (status, challenge, body) = refusal(p.on_request(get(&[("authorization", &unknown)]), &mut cx).await).await;
        assert_eq!((status, challenge.as_str()), (401, r#"Bearer realm="api", error="invalid_token""#));
        assert!(body.contains("\"status\":401"), "{body}");

        // A tampered key fails the format check before any look-up.
        let mut tampered = key.key.clone();
        tampered.pop();
        tampered.push(if key.key.ends_with('0') { '1' } else { '0' });
        let h = format!("Bearer {tampered}");
        let (status, challenge, _) = refusal(p.on_request(get(&[("authorization", &h)]), &mut cx).await).await;
        assert_eq!((status, challenge.as_str()), (401, r#"Bearer realm="api", error="invalid_token""#));

        // The key without its scheme, another scheme, and two headers.
        for headers in [
            vec![("authorization", key.key.as_str())],
            vec![("authorization", "Basic YWxhZGRpbjpvcGVuc2VzYW1l")],
            vec![("authorization", "Bearer x"), ("authorization", "Bearer y")],
        ] {
            let flow = p.on_request(get(&headers), &mut cx).await;
            assert_eq!(problem_status(&flow), Some(401), "{headers:?}");
        }
        let good = format!("Bearer {}", key.key);
        assert!(continued(p.on_request(get(&[("authorization", &good)]), &mut cx).await).is_ok());
    }

    #[tokio::test]
    async fn expired_keys_are_refused() {
        let (store, _) = store_with_key("expired", "default").await;
        let soon = must(store.create_key(CreateKey { consumer: "brief".into(), expires_at: Some(now_unix() + 2), ..CreateKey::default() }).await);
        let p = policy(json!({"cacheTtlSeconds": 60}), &store);
        let mut cx = test_context();
        let h = format!("Bearer {}", soon.key);
        assert!(continued(p.on_request(get(&[("authorization", &h)]), &mut cx).await).is_ok());
        // Expiry is checked on every request, even when the look-up is cached. (Expiry is in
        // whole seconds: 2 s ahead leaves at least a second for the first request on a busy
        // machine; 3.1 s later it has certainly passed.)
        tokio::time::sleep(Duration::from_millis(3100)).await;
        let (status, _, body) = refusal(p.on_request(get(&[("authorization", &h)]), &mut cx).await).await;
        assert_eq!(status, 401);
        assert!(body.contains("expired"), "{body}");
    }

    #[tokio::test]
    async fn unauthenticated_requests_may_continue_without_a_user() {
        let (store, key) = store_with_key("anon", "default").await;
        let p = policy(json!({"allowUnauthenticatedRequests": true}), &store);
        let mut cx = test_context();
        let req = must(continued(p.on_request(get(&[]), &mut cx).await));
        assert!(req.user.is_none());
        let req = must(continued(p.on_request(get(&[("authorization", "Bearer zpka_bad")]), &mut cx).await));
        assert!(req.user.is_none());
        let h = format!("Bearer {}", key.key);
        let req = must(continued(p.on_request(get(&[("authorization", &h)]), &mut cx).await));
        assert_eq!(req.user.map(|u| u.sub).as_deref(), Some("acme"));
    }

    #[tokio::test]
    async fn custom_header_and_empty_scheme() {
        let (store, key) = store_with_key("custom", "partners").await;
        let p = policy(json!({"authHeader": "x-api-key", "authScheme": "", "bucketName": "partners"}), &store);
        let mut cx = test_context();
        let req = must(continued(p.on_request(get(&[("x-api-key", &key.key)]), &mut cx).await));
        assert_eq!(req.user.map(|u| u.sub).as_deref(), Some("acme"));
        // The Authorization header means nothing to this policy.
        let h = format!("Bearer {}", key.key);
        let (status, challenge, body) = refusal(p.on_request(get(&[("authorization", &h)]), &mut cx).await).await;
        assert_eq!((status, challenge.as_str()), (401, r#"ApiKey realm="api""#));
        assert!(body.contains("x-api-key"), "{body}");
        // A custom scheme is echoed in the challenge.
        let p = policy(json!({"authScheme": "Key", "bucketName": "partners"}), &store);
        let (_, challenge, _) = refusal(p.on_request(get(&[("authorization", "Key zpka_nope")]), &mut cx).await).await;
        assert_eq!(challenge, r#"Key realm="api", error="invalid_token""#);
        let h = format!("KEY {}", key.key);
        assert!(continued(p.on_request(get(&[("authorization", &h)]), &mut cx).await).is_ok());
    }

    #[tokio::test]
    async fn options_are_checked() {
        assert!(test_util::build::<ApiKeyInbound>(json!({"authHeaders": "x"})).is_err());
        assert!(test_util::build::<ApiKeyInbound>(json!({"bucketName": "no:colons"})).is_err());
        let (store, _) = store_with_key("opts", "default").await;
        let bad = |o: serde_json::Value| {
            serde_json::from_value::<ApiKeyInboundOptions>(o).map_err(|e| e.to_string()).and_then(|o| ApiKeyInbound::new(o, store.clone(), "p"))
        };
        assert!(bad(json!({"authHeader": "bad header"})).is_err());
        assert!(bad(json!({"authScheme": "Bad Scheme"})).is_err());
        assert!(bad(json!({"bucketName": "other"})).is_err());
        assert!(bad(json!({"cacheTtlSeconds": 0, "allowUnauthenticatedRequests": false})).is_ok());
    }

    #[tokio::test]
    async fn store_outage_is_503_never_a_pass() {
        // Nothing listens on port 1: every look-up fails.
        let store = Arc::new(must(KeyStore::open(&StoreConfig::Redis("redis://127.0.0.1:1".into()), "default")));
        for allow in [false, true] {
            let p = policy(json!({"allowUnauthenticatedRequests": allow}), &store);
            let mut cx = test_context();
            let h = format!("Bearer {}", must(format::generate()));
            let (status, _, body) = refusal(p.on_request(get(&[("authorization", &h)]), &mut cx).await).await;
            assert_eq!(status, 503);
            assert!(body.contains("key store unavailable"), "{body}");
            assert!(!body.contains(&h[7..]));
        }
    }
}
