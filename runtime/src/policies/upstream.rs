//! Credentials for the upstream: set-upstream-api-key-inbound (a fixed secret header) and
//! upstream-zuplo-jwt-auth-inbound (a short-lived EdDSA JWT signed by the gateway, whose
//! public key is published at `/.well-known/jwks.json`).

use std::fmt::Write as _;
use std::sync::{Arc, OnceLock, RwLock};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use http::header::{HeaderName, HeaderValue};
use jsonwebtoken::jwk::{AlgorithmParameters, Jwk};
use jsonwebtoken::{Algorithm, EncodingKey};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use crate::policy::{Flow, FromOptions, Inbound};
use crate::{Context, Problem, Request};

fn yes() -> bool {
    true
}

fn authorization() -> String {
    "Authorization".to_owned()
}

/// A header name and value checked at start-up, with the name of the option for messages.
fn checked_header(name: &str, value: &str) -> Result<(HeaderName, HeaderValue), String> {
    let (n, mut v) =
        crate::request::header_pair(name, value).map_err(|p| p.detail().unwrap_or("invalid header").to_owned())?;
    // Credentials: keep them out of debug output and HPACK/QPACK dynamic tables.
    v.set_sensitive(true);
    Ok((n, v))
}

// ---------------------------------------------------------------------------------------------
// set-upstream-api-key-inbound
// ---------------------------------------------------------------------------------------------

/// Options of `SetUpstreamApiKeyInboundPolicy`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SetUpstreamApiKeyOptions {
    /// The header to set (default `Authorization`).
    #[serde(default = "authorization")]
    pub header: String,
    /// The value, usually `$env(X)` or `Bearer $env(X)` (resolved at start-up).
    #[serde(deserialize_with = "super::de::text")]
    pub value: String,
    /// Replace a value the client sent (default true); otherwise only set when absent.
    #[serde(default = "yes")]
    pub overwrite: bool,
}

/// `SetUpstreamApiKeyInboundPolicy`: sets a secret header on the request sent upstream.
#[derive(Debug, Clone)]
pub struct SetUpstreamApiKeyInbound {
    name: HeaderName,
    value: HeaderValue,
    overwrite: bool,
}

impl FromOptions for SetUpstreamApiKeyInbound {
    type Options = SetUpstreamApiKeyOptions;
    fn from_options(options: Self::Options, _name: &str) -> Result<Self, String> {
        let (name, value) = checked_header(&options.header, &options.value)?;
        Ok(SetUpstreamApiKeyInbound { name, value, overwrite: options.overwrite })
    }
}

impl Inbound for SetUpstreamApiKeyInbound {
    async fn on_request(&self, mut req: Request, _cx: &mut Context) -> Flow {
        if self.overwrite || !req.headers().contains_key(&self.name) {
            req.headers_mut().insert(self.name.clone(), self.value.clone());
        }
        Flow::Continue(req)
    }
}

// ---------------------------------------------------------------------------------------------
// upstream-zuplo-jwt-auth-inbound
// ---------------------------------------------------------------------------------------------

/// The environment variable holding the signing key (PKCS#8 PEM, Ed25519).
pub(crate) const PRIVATE_KEY_VAR: &str = "UPSTREAM_JWT_PRIVATE_KEY";
/// The environment variable giving the default `iss` claim.
pub(crate) const ISSUER_VAR: &str = "UPSTREAM_JWT_ISSUER";

/// Claims the policy always sets itself; `additionalClaims` may not redefine them.
const RESERVED_CLAIMS: [&str; 6] = ["iss", "aud", "sub", "iat", "exp", "jti"];

fn default_expires_in() -> u64 {
    300
}

fn bearer() -> String {
    "Bearer".to_owned()
}

/// Options of `UpstreamZuploJwtAuthInboundPolicy`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct UpstreamJwtOptions {
    /// The `aud` claim: who the token is for.
    #[serde(deserialize_with = "super::de::text")]
    pub audience: String,
    /// The header carrying the token (default `Authorization`).
    #[serde(default = "authorization")]
    pub header_name: String,
    /// Put before the token with a space (default `Bearer`; empty for the bare token).
    #[serde(default = "bearer")]
    pub token_prefix: String,
    /// Lifetime of each token in seconds (default 300).
    #[serde(default = "default_expires_in")]
    pub expires_in: u64,
    /// Extra claims copied into every token.
    #[serde(default)]
    pub additional_claims: Option<Map<String, Value>>,
    /// The `iss` claim (default: `UPSTREAM_JWT_ISSUER`, else `specgate`).
    #[serde(default, deserialize_with = "super::de::opt_text")]
    pub issuer: Option<String>,
}

/// An Ed25519 signing key with what every token and the JWKS need, prepared once.
#[derive(Debug)]
pub(crate) struct SigningKey {
    // Built once: jsonwebtoken would otherwise parse the key material again per token.
    key: EncodingKey,
    kid: String,
    /// `base64url(header JSON)`: the header never changes, so it is encoded once.
    header_b64: String,
    jwk: Value,
}

/// The PKCS#8 v1 (RFC 8410) encoding of an Ed25519 private key is this fixed prefix followed
/// by the 32-byte seed.
const ED25519_PKCS8_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

impl SigningKey {
    /// A key from its 32-byte seed.
    pub(crate) fn from_seed(seed: &[u8; 32]) -> Result<Self, String> {
        let mut der = Vec::with_capacity(48);
        der.extend_from_slice(&ED25519_PKCS8_PREFIX);
        der.extend_from_slice(seed);
        let key = EncodingKey::from_ed_der(&der);
        // jsonwebtoken derives the public key (and so checks the key) for us.
        let jwk = Jwk::from_encoding_key(&key, Algorithm::EdDSA).map_err(|e| format!("unusable Ed25519 key: {e}"))?;
        let AlgorithmParameters::OctetKeyPair(okp) = &jwk.algorithm else {
            return Err("unusable Ed25519 key: no public key".to_owned());
        };
        let x = okp.x.clone();
        let public = URL_SAFE_NO_PAD.decode(&x).map_err(|e| format!("unusable Ed25519 key: {e}"))?;
        let mut kid = String::with_capacity(16);
        for b in Sha256::digest(&public).iter().take(8) {
            let _ = write!(kid, "{b:02x}");
        }
        let header = json!({"alg": "EdDSA", "typ": "JWT", "kid": kid});
        let header_b64 = URL_SAFE_NO_PAD.encode(header.to_string());
        let jwk = json!({"kty": "OKP", "crv": "Ed25519", "x": x, "kid": kid, "alg": "EdDSA", "use": "sig"});
        Ok(SigningKey { key, kid, header_b64, jwk })
    }

    /// A key from a PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`). Literal `\n` sequences are
    /// accepted as line breaks because PEMs often pass through one-line variables.
    pub(crate) fn from_pem(pem: &str) -> Result<Self, String> {
        let pem = pem.trim().replace("\\n", "\n");
        if !pem.starts_with("-----BEGIN PRIVATE KEY-----") {
            return Err("it is not a PKCS#8 PEM private key (-----BEGIN PRIVATE KEY-----)".to_owned());
        }
        let body: String = pem.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with("-----")).collect();
        let der = STANDARD.decode(body.as_bytes()).map_err(|_| "the PEM body is not valid base64".to_owned())?;
        let seed = ed25519_seed(&der).ok_or("it is not an Ed25519 private key")?;
        Self::from_seed(&seed)
    }

    /// A fresh random key.
    pub(crate) fn generate() -> Result<Self, String> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| format!("cannot generate a signing key: {e}"))?;
        Self::from_seed(&seed)
    }

    /// The key id (first 16 hex digits of the SHA-256 of the public key).
    pub(crate) fn kid(&self) -> &str {
        &self.kid
    }

    /// Signs `claims` into a compact JWT.
    fn sign<T: Serialize>(&self, claims: &T) -> Result<String, String> {
        let claims = serde_json::to_vec(claims).map_err(|e| e.to_string())?;
        let mut token = String::with_capacity(self.header_b64.len() + claims.len() * 4 / 3 + 90);
        token.push_str(&self.header_b64);
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(&claims, &mut token);
        let signature = jsonwebtoken::crypto::sign(token.as_bytes(), &self.key, Algorithm::EdDSA).map_err(|e| e.to_string())?;
        token.push('.');
        token.push_str(&signature);
        Ok(token)
    }
}

/// The seed of a PKCS#8 Ed25519 private key, v1 or v2 (RFC 8410 allows the public key after
/// the private one; only the seed matters, the public key is derived from it).
fn ed25519_seed(der: &[u8]) -> Option<[u8; 32]> {
    // SEQUENCE, INTEGER version 0 or 1, AlgorithmIdentifier { id-Ed25519 }, OCTET STRING {
    // OCTET STRING(32) }: everything but the outer length and the version is fixed.
    let head = der.get(..16)?;
    let fixed = head.first() == Some(&0x30)
        && head.get(2..4) == Some(&[0x02, 0x01][..])
        && matches!(head.get(4), Some(0 | 1))
        && head.get(5..) == ED25519_PKCS8_PREFIX.get(5..);
    if !fixed || usize::from(*head.get(1)?) + 2 != der.len() {
        return None;
    }
    der.get(16..48)?.try_into().ok()
}

/// The process-wide signing key: from `UPSTREAM_JWT_PRIVATE_KEY`, else generated once so
/// every policy of the gateway signs with the same key and the JWKS lists only it.
fn process_key() -> Result<Arc<SigningKey>, String> {
    static KEY: OnceLock<Result<Arc<SigningKey>, String>> = OnceLock::new();
    KEY.get_or_init(|| {
        let key = match crate::env::var(PRIVATE_KEY_VAR).filter(|v| !v.trim().is_empty()) {
            Some(pem) => SigningKey::from_pem(&pem).map_err(|e| format!("{PRIVATE_KEY_VAR}: {e}"))?,
            None => {
                let key = SigningKey::generate()?;
                tracing::warn!(
                    kid = key.kid(),
                    "{PRIVATE_KEY_VAR} is not set: signing upstream JWTs with a key generated at start-up; \
                     tokens differ per process, so set it when several replicas must share one key"
                );
                key
            }
        };
        Ok(Arc::new(key))
    })
    .clone()
}

/// Public keys published at `/.well-known/jwks.json`, by kid.
static JWKS: RwLock<Vec<(String, Value)>> = RwLock::new(Vec::new());

/// Adds a key to the published set (once per kid).
fn publish(key: &SigningKey) {
    // A poisoned lock only means a writer panicked mid-push; the list itself is still valid.
    let mut keys = JWKS.write().unwrap_or_else(std::sync::PoisonError::into_inner);
    if !keys.iter().any(|(kid, _)| kid == &key.kid) {
        keys.push((key.kid.clone(), key.jwk.clone()));
    }
}

/// The JWKS document (`{"keys": [...]}`) of the keys the upstream JWT policy signs with, or
/// `None` when no such policy was built (then the gateway serves no JWKS route).
pub fn published_jwks() -> Option<Value> {
    let keys = JWKS.read().unwrap_or_else(std::sync::PoisonError::into_inner);
    if keys.is_empty() {
        return None;
    }
    Some(json!({"keys": keys.iter().map(|(_, jwk)| jwk.clone()).collect::<Vec<_>>()}))
}

/// `UpstreamZuploJwtAuthInboundPolicy`: signs a short-lived EdDSA JWT about the caller
/// (`sub` = `request.user.sub`, or `anonymous`) and sends it upstream, so the upstream (for
/// example another specgate gateway with open-id-jwt-auth-inbound and
/// `jwkUrl: http://<this gateway>/.well-known/jwks.json`) can trust the call.
#[derive(Debug, Clone)]
pub struct UpstreamJwtInbound {
    key: Arc<SigningKey>,
    header: HeaderName,
    prefix: String,
    issuer: String,
    audience: String,
    expires_in: u64,
    additional: Map<String, Value>,
}

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    aud: &'a str,
    sub: &'a str,
    iat: u64,
    exp: u64,
    jti: String,
    #[serde(flatten)]
    additional: &'a Map<String, Value>,
}

impl FromOptions for UpstreamJwtInbound {
    type Options = UpstreamJwtOptions;
    fn from_options(options: Self::Options, _name: &str) -> Result<Self, String> {
        Self::with_key(options, process_key()?)
    }
}

impl UpstreamJwtInbound {
    /// Builds the policy around `key` and publishes its public half.
    pub(crate) fn with_key(options: UpstreamJwtOptions, key: Arc<SigningKey>) -> Result<Self, String> {
        if options.audience.is_empty() {
            return Err("`audience` must not be empty".to_owned());
        }
        if options.expires_in == 0 {
            return Err("`expiresIn` must be at least 1 second".to_owned());
        }
        let prefix = if options.token_prefix.is_empty() { String::new() } else { format!("{} ", options.token_prefix) };
        // Checked with a stand-in token: the real ones are base64url, so if this passes they do.
        let (header, _) = checked_header(&options.header_name, &format!("{prefix}token"))?;
        let additional = options.additional_claims.unwrap_or_default();
        if let Some(c) = additional.keys().find(|k| RESERVED_CLAIMS.contains(&k.as_str())) {
            return Err(format!("`additionalClaims` may not set `{c}`: the policy sets it itself"));
        }
        let issuer = options
            .issuer
            .or_else(|| crate::env::var(ISSUER_VAR).filter(|v| !v.is_empty()))
            .unwrap_or_else(|| "specgate".to_owned());
        publish(&key);
        Ok(UpstreamJwtInbound {
            key,
            header,
            prefix,
            issuer,
            audience: options.audience,
            expires_in: options.expires_in,
            additional,
        })
    }

    fn token(&self, sub: &str) -> Result<String, String> {
        let mut jti = [0u8; 16];
        getrandom::fill(&mut jti).map_err(|e| format!("no randomness for jti: {e}"))?;
        let iat = jsonwebtoken::get_current_timestamp();
        let claims = Claims {
            iss: &self.issuer,
            aud: &self.audience,
            sub,
            iat,
            exp: iat.saturating_add(self.expires_in),
            jti: URL_SAFE_NO_PAD.encode(jti),
            additional: &self.additional,
        };
        self.key.sign(&claims)
    }
}

impl Inbound for UpstreamJwtInbound {
    async fn on_request(&self, mut req: Request, cx: &mut Context) -> Flow {
        let sub = req.user.as_ref().map_or("anonymous", |u| u.sub.as_str());
        let value = self
            .token(sub)
            .and_then(|t| HeaderValue::try_from(format!("{}{t}", self.prefix)).map_err(|e| e.to_string()));
        match value {
            Ok(mut v) => {
                v.set_sensitive(true);
                req.headers_mut().insert(self.header.clone(), v);
                Flow::Continue(req)
            }
            Err(e) => {
                tracing::error!(request_id = %cx.request_id, error = %e, "cannot sign the upstream JWT");
                Flow::Problem(Problem::internal("the upstream credentials could not be created"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::User;
    use crate::policies::test_context;
    use crate::policies::test_util::{build, continued, must, request};
    use jsonwebtoken::{DecodingKey, Validation};

    /// RFC 8032 test vector 1: the seed as a PKCS#8 PEM, and the known public key.
    const PEM: &str = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIJ1hsZ3v/VpguoRK9JLsLMREScVpezJpGXA7rAMcrn9g\n-----END PRIVATE KEY-----\n";
    const PUBLIC_X: &str = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo";
    const KID: &str = "21fe31dfa154a261";

    async fn run<P: Inbound>(p: &P, req: Request) -> Flow {
        let mut cx = test_context();
        p.on_request(req, &mut cx).await
    }

    fn with_header(name: &str, value: &str) -> Request {
        let mut r = request("GET", "/test", "");
        if let Ok((n, v)) = crate::request::header_pair(name, value) {
            r.headers_mut().insert(n, v);
        }
        r
    }

    #[tokio::test]
    async fn api_key_overwrites_by_default() {
        let p: SetUpstreamApiKeyInbound = must(build(json!({"value": "Bearer upstream-secret"})));
        let req = must(continued(run(&p, with_header("authorization", "Bearer client")).await));
        assert_eq!(req.header("authorization"), Some("Bearer upstream-secret"));
        assert_eq!(req.headers().get_all("authorization").iter().count(), 1);
        let req = must(continued(run(&p, request("GET", "/test", "")).await));
        assert_eq!(req.header("authorization"), Some("Bearer upstream-secret"));
    }

    #[tokio::test]
    async fn api_key_without_overwrite_keeps_the_client_value() {
        let p: SetUpstreamApiKeyInbound = must(build(json!({"header": "x-api-key", "value": 12345, "overwrite": false})));
        let req = must(continued(run(&p, with_header("x-api-key", "client")).await));
        assert_eq!(req.header("x-api-key"), Some("client"));
        let req = must(continued(run(&p, request("GET", "/test", "")).await));
        assert_eq!(req.header("x-api-key"), Some("12345"));
    }

    #[test]
    fn api_key_options_are_checked_at_start_up() {
        assert!(build::<SetUpstreamApiKeyInbound>(json!({})).is_err());
        assert!(build::<SetUpstreamApiKeyInbound>(json!({"value": "a\r\nx-injected: 1"})).is_err());
        assert!(build::<SetUpstreamApiKeyInbound>(json!({"header": "bad name", "value": "v"})).is_err());
        assert!(build::<SetUpstreamApiKeyInbound>(json!({"header": "", "value": "v"})).is_err());
        assert!(build::<SetUpstreamApiKeyInbound>(json!({"value": "v", "headerName": "x"})).is_err());
    }

    /// Verifies `token` against the published JWKS, as an inner gateway would.
    fn verify(token: &str, audience: &str) -> Value {
        let header = must(jsonwebtoken::decode_header(token));
        let kid = header.kid.unwrap_or_default();
        let jwks = published_jwks().unwrap_or_default();
        let Some(jwk) = jwks["keys"].as_array().and_then(|ks| ks.iter().find(|k| k["kid"] == kid.as_str())) else {
            panic!("kid {kid} is not published: {jwks}");
        };
        let jwk: Jwk = must(serde_json::from_value(jwk.clone()));
        let key = must(DecodingKey::from_jwk(&jwk));
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_audience(&[audience]);
        must(jsonwebtoken::decode::<Value>(token, &key, &validation)).claims
    }

    #[tokio::test]
    async fn signs_a_verifiable_token_about_the_user() {
        let p: UpstreamJwtInbound = must(build(json!({
            "audience": "https://inner.example",
            "expiresIn": 120,
            "issuer": "outer-gateway",
            "additionalClaims": {"tenant": "acme", "roles": ["a", "b"]}
        })));
        let mut req = request("GET", "/test", "");
        req.user = Some(User { sub: "alice".into(), data: json!({}) });
        let req = must(continued(run(&p, req).await));
        let value = req.header("authorization").unwrap_or_default();
        let Some(token) = value.strip_prefix("Bearer ") else { panic!("no Bearer prefix: {value}") };
        let claims = verify(token, "https://inner.example");
        assert_eq!(claims["sub"], "alice");
        assert_eq!(claims["aud"], "https://inner.example");
        assert_eq!(claims["iss"], "outer-gateway");
        assert_eq!(claims["tenant"], "acme");
        assert_eq!(claims["roles"], json!(["a", "b"]));
        let (iat, exp) = (claims["iat"].as_u64().unwrap_or(0), claims["exp"].as_u64().unwrap_or(0));
        assert_eq!(exp - iat, 120);
        assert!(claims["jti"].as_str().is_some_and(|j| j.len() >= 16));
        assert_eq!(must(jsonwebtoken::decode_header(token)).kid.as_deref(), Some(process_key().map(|k| k.kid.clone()).unwrap_or_default().as_str()));

        // Every token gets its own jti.
        let again = must(continued(run(&p, request("GET", "/test", "")).await));
        let token2 = again.header("authorization").and_then(|v| v.strip_prefix("Bearer ")).unwrap_or_default();
        let claims2 = verify(token2, "https://inner.example");
        assert_ne!(claims2["jti"], claims["jti"]);
        assert_eq!(claims2["sub"], "anonymous");
    }

    #[tokio::test]
    async fn header_name_and_prefix_are_configurable() {
        let p: UpstreamJwtInbound =
            must(build(json!({"audience": "inner", "headerName": "x-upstream-jwt", "tokenPrefix": ""})));
        let req = must(continued(run(&p, with_header("authorization", "Basic keep-me")).await));
        assert_eq!(req.header("authorization"), Some("Basic keep-me"));
        let token = req.header("x-upstream-jwt").unwrap_or_default();
        let claims = verify(token, "inner");
        assert_eq!(claims["exp"].as_u64().unwrap_or(0) - claims["iat"].as_u64().unwrap_or(0), 300);
        assert!(claims["iss"].as_str().is_some_and(|i| !i.is_empty()));
    }

    #[test]
    fn jwt_options_are_checked_at_start_up() {
        assert!(build::<UpstreamJwtInbound>(json!({})).is_err());
        assert!(build::<UpstreamJwtInbound>(json!({"audience": ""})).is_err());
        assert!(build::<UpstreamJwtInbound>(json!({"audience": "a", "expiresIn": 0})).is_err());
        assert!(build::<UpstreamJwtInbound>(json!({"audience": "a", "headerName": "bad name"})).is_err());
        assert!(build::<UpstreamJwtInbound>(json!({"audience": "a", "tokenPrefix": "x\ny"})).is_err());
        assert!(build::<UpstreamJwtInbound>(json!({"audience": "a", "additionalClaims": {"sub": "x"}})).is_err());
        assert!(build::<UpstreamJwtInbound>(json!({"audience": "a", "secret": "x"})).is_err());
    }

    #[test]
    fn pem_keys_give_a_stable_kid_and_the_right_public_key() {
        let a = must(SigningKey::from_pem(PEM));
        let b = must(SigningKey::from_pem(&PEM.replace('\n', "\\n")));
        assert_eq!(a.kid(), KID);
        assert_eq!(b.kid(), KID);
        assert_eq!(a.jwk, json!({"kty": "OKP", "crv": "Ed25519", "x": PUBLIC_X, "kid": KID, "alg": "EdDSA", "use": "sig"}));

        // The same seed in PKCS#8 v2 form (version 1, public key appended) is the same key.
        let mut v2 = vec![0x30, 0x51, 0x02, 0x01, 0x01];
        v2.extend_from_slice(&ED25519_PKCS8_PREFIX[5..]);
        let v1 = must(STANDARD.decode("MC4CAQAwBQYDK2VwBCIEIJ1hsZ3v/VpguoRK9JLsLMREScVpezJpGXA7rAMcrn9g"));
        v2.extend_from_slice(&v1[16..]);
        v2.extend_from_slice(&[0x81, 0x21, 0x00]);
        v2.extend_from_slice(&must(URL_SAFE_NO_PAD.decode(PUBLIC_X)));
        let pem2 = format!("-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----", STANDARD.encode(&v2));
        assert_eq!(must(SigningKey::from_pem(&pem2)).kid(), KID);

        assert!(SigningKey::from_pem("not a pem").is_err());
        assert!(SigningKey::from_pem("-----BEGIN PRIVATE KEY-----\n!!!\n-----END PRIVATE KEY-----").is_err());
        // An EC P-256 key is refused: it is not Ed25519.
        let ec = "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgW8re70kpp6DRNoGH\nn8uEPhfiEmps7WS3kki5KfjPn7ihRANCAASLYvw1gwxTjbGPs5eFOOTNvyTbEcV4\nWQa6WtY3w/kgD/UXuynqKwnUWeSpnUGkOmqTRQqqcu+Ve9NkSUpKymnH\n-----END PRIVATE KEY-----";
        assert!(SigningKey::from_pem(ec).is_err());
    }

    #[tokio::test]
    async fn env_style_key_signs_tokens_the_jwks_verifies() {
        let key = Arc::new(must(SigningKey::from_pem(PEM)));
        let options: UpstreamJwtOptions = must(serde_json::from_value(json!({"audience": "inner"})));
        let p = must(UpstreamJwtInbound::with_key(options, key));
        let jwks = published_jwks().unwrap_or_default();
        assert!(jwks["keys"].as_array().is_some_and(|ks| ks.iter().any(|k| k["kid"] == KID && k["x"] == PUBLIC_X)));
        let req = must(continued(run(&p, request("GET", "/test", "")).await));
        let token = req.header("authorization").and_then(|v| v.strip_prefix("Bearer ")).unwrap_or_default();
        assert_eq!(must(jsonwebtoken::decode_header(token)).kid.as_deref(), Some(KID));
        assert_eq!(verify(token, "inner")["sub"], "anonymous");
        // Publishing the same key again does not duplicate it.
        let options: UpstreamJwtOptions = must(serde_json::from_value(json!({"audience": "other"})));
        must(UpstreamJwtInbound::with_key(options, Arc::new(must(SigningKey::from_pem(PEM)))));
        let jwks = published_jwks().unwrap_or_default();
        assert_eq!(jwks["keys"].as_array().map(|ks| ks.iter().filter(|k| k["kid"] == KID).count()), Some(1));
    }
}
