//! JWT authentication: open-id-jwt-auth-inbound, its provider variants (Auth0, Okta, Cognito,
//! Clerk, Firebase, Supabase) and jwt-scopes-inbound.
//!
//! Every variant is the same verifier with a derived issuer and JWKS URL. A token is read from
//! `Authorization: Bearer <token>` and accepted only when:
//! - its header `alg` is allowed for the key that verifies it — the allowed algorithms come
//!   from the key (a JWK's `kty`/`crv`/`alg`, or HS256/384/512 for a shared `secret`), never
//!   from the token alone, so `alg: none` and algorithm confusion (an HS256 token "signed" with
//!   an RSA public key) are refused;
//! - its signature verifies;
//! - `exp` is present and not past, `nbf` (when present) is not ahead, with a leeway of
//!   `clockToleranceSeconds` (default 30) for clock skew;
//! - `iss` equals the issuer and, when an audience is configured, `aud` names one of them.
//!
//! On success `request.user` is `{ sub: <claim subPropertyName>, data: <all claims> }`.
//! Failures are 401 problems with `WWW-Authenticate: Bearer error="invalid_token"` whose detail
//! names the reason class (never the token). When the signing keys cannot be fetched and none
//! are cached, the answer is 503 "cannot verify token": the token may well be valid, so it
//! must not look like a credential problem to clients (which would drop their session), and it
//! must not let the request through either (fail closed). See `jwks.rs` for the key caching.
//!
//! A token that passed every check is remembered for a minute (at most 10,000 per policy), so
//! a client repeating its token costs a look-up instead of a signature check; a remembered
//! token is still refused once its `exp` plus the leeway has passed.

use std::collections::{BTreeMap, HashSet};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::header::{HeaderMap, HeaderName, HeaderValue, WWW_AUTHENTICATE};
use http::StatusCode;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::de;
use super::jwks::{Jwks, KeySet};
use crate::context::User;
use crate::policy::{Flow, FromOptions, Inbound};
use crate::{Context, Problem, Request};

/// The default leeway for `exp` and `nbf`, in seconds.
const DEFAULT_CLOCK_TOLERANCE: u64 = 30;
/// The JWKS of Firebase Authentication (securetoken) ID tokens.
const FIREBASE_JWKS: &str = "https://www.googleapis.com/service_accounts/v1/jwk/securetoken@system.gserviceaccount.com";
const HMAC_ALGORITHMS: &[Algorithm] = &[Algorithm::HS256, Algorithm::HS384, Algorithm::HS512];

// ----------------------------------------------------------------------------------------------
// Options
// ----------------------------------------------------------------------------------------------

/// `audience`: one accepted audience or several.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    /// One audience.
    One(String),
    /// Any of these audiences.
    Many(Vec<String>),
}

impl Audience {
    fn into_vec(self) -> Vec<String> {
        match self {
            Audience::One(a) => vec![a],
            Audience::Many(v) => v,
        }
    }
}

/// Options of open-id-jwt-auth-inbound (`OpenIdJwtInboundPolicy`). Exactly one of `jwkUrl` and
/// `secret` must be set.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct OpenIdJwtOptions {
    /// Required: the issuer tokens must name in `iss` (compared exactly).
    #[serde(deserialize_with = "de::text")]
    pub issuer: String,
    /// The audience(s) of `aud`; when absent, `aud` is not checked.
    #[serde(default)]
    pub audience: Option<Audience>,
    /// URL of the issuer's JSON Web Key Set (asymmetric keys: RS*, PS*, ES256/384, EdDSA).
    #[serde(default, deserialize_with = "de::opt_text")]
    pub jwk_url: Option<String>,
    /// Shared secret for HS256/HS384/HS512 tokens (the UTF-8 bytes of the string).
    #[serde(default, deserialize_with = "de::opt_text")]
    pub secret: Option<String>,
    /// Let requests without a bearer token through without a user (default false). A token
    /// that is present but invalid is still refused.
    #[serde(default)]
    pub allow_unauthenticated_requests: bool,
    /// The claim that becomes `request.user.sub` (default `sub`); it must be a string.
    #[serde(default, deserialize_with = "de::opt_text")]
    pub sub_property_name: Option<String>,
    /// Extra headers sent with the JWKS request (for example an API key of the endpoint).
    #[serde(default)]
    pub headers: Option<BTreeMap<String, Value>>,
    /// specgate addition: leeway for `exp` and `nbf` in seconds (default 30).
    #[serde(default)]
    pub clock_tolerance_seconds: Option<u64>,
    /// Accepted for compatibility with Zuplo configurations; has no effect.
    #[serde(default, rename = "oAuthResourceMetadataEnabled")]
    pub o_auth_resource_metadata_enabled: Option<bool>,
}

/// Options of auth0-jwt-auth-inbound (`Auth0JwtInboundPolicy`): issuer `https://{auth0Domain}/`,
/// keys from `https://{auth0Domain}/.well-known/jwks.json`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Auth0JwtOptions {
    /// Required: the tenant (or custom) domain, such as `my-company.auth0.com`.
    #[serde(deserialize_with = "de::text")]
    pub auth0_domain: String,
    /// The API identifier(s) expected in `aud`; when absent, `aud` is not checked.
    #[serde(default)]
    pub audience: Option<Audience>,
    /// Let requests without a bearer token through without a user (default false).
    #[serde(default)]
    pub allow_unauthenticated_requests: bool,
    /// specgate addition: overrides the derived JWKS URL.
    #[serde(default, deserialize_with = "de::opt_text")]
    pub jwk_url: Option<String>,
    /// specgate addition: leeway for `exp` and `nbf` in seconds (default 30).
    #[serde(default)]
    pub clock_tolerance_seconds: Option<u64>,
    /// Accepted for compatibility with Zuplo configurations; has no effect.
    #[serde(default, rename = "oAuthResourceMetadataEnabled")]
    pub o_auth_resource_metadata_enabled: Option<bool>,
}

/// Options of okta-jwt-auth-inbound (`OktaJwtInboundPolicy`): issuer `issuerUrl`, keys from
/// `{issuerUrl}/v1/keys` (`{issuerUrl}/oauth2/v1/keys` for the org authorization server, whose
/// issuer has no path).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct OktaJwtOptions {
    /// Required: the authorization server's issuer, such as `https://dev-1.okta.com/oauth2/default`.
    #[serde(deserialize_with = "de::text")]
    pub issuer_url: String,
    /// The audience(s) expected in `aud`, such as `api://default`; when absent, not checked.
    #[serde(default)]
    pub audience: Option<Audience>,
    /// Let requests without a bearer token through without a user (default false).
    #[serde(default)]
    pub allow_unauthenticated_requests: bool,
    /// specgate addition: overrides the derived JWKS URL.
    #[serde(default, deserialize_with = "de::opt_text")]
    pub jwk_url: Option<String>,
    /// specgate addition: leeway for `exp` and `nbf` in seconds (default 30).
    #[serde(default)]
    pub clock_tolerance_seconds: Option<u64>,
    /// Accepted for compatibility with Zuplo configurations; has no effect.
    #[serde(default, rename = "oAuthResourceMetadataEnabled")]
    pub o_auth_resource_metadata_enabled: Option<bool>,
}

/// Options of cognito-jwt-auth-inbound (`CognitoJwtInboundPolicy`): issuer
/// `https://cognito-idp.{region}.amazonaws.com/{userPoolId}`, keys from the issuer's
/// `/.well-known/jwks.json`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CognitoJwtOptions {
    /// Required: the AWS region of the user pool, such as `us-east-1`.
    #[serde(deserialize_with = "de::text")]
    pub region: String,
    /// Required: the user pool id, such as `us-east-1_AbCdEf123`.
    #[serde(deserialize_with = "de::text")]
    pub user_pool_id: String,
    /// Let requests without a bearer token through without a user (default false).
    #[serde(default)]
    pub allow_unauthenticated_requests: bool,
    /// specgate addition: overrides the derived JWKS URL.
    #[serde(default, deserialize_with = "de::opt_text")]
    pub jwk_url: Option<String>,
    /// specgate addition: leeway for `exp` and `nbf` in seconds (default 30).
    #[serde(default)]
    pub clock_tolerance_seconds: Option<u64>,
    /// Accepted for compatibility with Zuplo configurations; has no effect.
    #[serde(default, rename = "oAuthResourceMetadataEnabled")]
    pub o_auth_resource_metadata_enabled: Option<bool>,
}

/// Options of clerk-jwt-auth-inbound (`ClerkJwtInboundPolicy`): issuer `frontendApiUrl`, keys
/// from `{frontendApiUrl}/.well-known/jwks.json`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ClerkJwtOptions {
    /// Required: the Frontend API URL, such as `https://clerk.example.com` (`https://` is
    /// assumed when missing).
    #[serde(deserialize_with = "de::text")]
    pub frontend_api_url: String,
    /// Let requests without a bearer token through without a user (default false).
    #[serde(default)]
    pub allow_unauthenticated_requests: bool,
    /// specgate addition: overrides the derived JWKS URL.
    #[serde(default, deserialize_with = "de::opt_text")]
    pub jwk_url: Option<String>,
    /// specgate addition: leeway for `exp` and `nbf` in seconds (default 30).
    #[serde(default)]
    pub clock_tolerance_seconds: Option<u64>,
    /// Accepted for compatibility with Zuplo configurations; has no effect.
    #[serde(default, rename = "oAuthResourceMetadataEnabled")]
    pub o_auth_resource_metadata_enabled: Option<bool>,
}

/// Options of firebase-jwt-inbound (`FirebaseJwtInboundPolicy`): issuer
/// `https://securetoken.google.com/{projectId}`, audience `projectId`, Google's securetoken keys.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FirebaseJwtOptions {
    /// Required: the Firebase project id.
    #[serde(deserialize_with = "de::text")]
    pub project_id: String,
    /// Let requests without a bearer token through without a user (default false).
    #[serde(default)]
    pub allow_unauthenticated_requests: bool,
    /// specgate addition: overrides the JWKS URL.
    #[serde(default, deserialize_with = "de::opt_text")]
    pub jwk_url: Option<String>,
    /// specgate addition: leeway for `exp` and `nbf` in seconds (default 30).
    #[serde(default)]
    pub clock_tolerance_seconds: Option<u64>,
    /// Accepted for compatibility with Zuplo configurations; has no effect.
    #[serde(default, rename = "oAuthResourceMetadataEnabled")]
    pub o_auth_resource_metadata_enabled: Option<bool>,
}

/// `requiredClaims`: claim names that must be present, or (Zuplo's documented form) claim
/// names with the values they may have.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum RequiredClaims {
    /// Each claim must be present (any value but `null`).
    Present(Vec<String>),
    /// Each claim must equal one of its listed values (or, when the claim is an array,
    /// contain one of them).
    OneOf(BTreeMap<String, Vec<Value>>),
}

/// Options of supabase-jwt-auth-inbound (`SupabaseJwtInboundPolicy`): HMAC tokens signed with
/// the project's JWT secret; no issuer or audience check.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SupabaseJwtOptions {
    /// Required: the project's JWT secret (HS256; HS384/HS512 are accepted too).
    #[serde(deserialize_with = "de::text")]
    pub secret: String,
    /// Claims the token must carry (see [`RequiredClaims`]).
    #[serde(default)]
    pub required_claims: Option<RequiredClaims>,
    /// Let requests without a bearer token through without a user (default false).
    #[serde(default)]
    pub allow_unauthenticated_requests: bool,
    /// specgate addition: leeway for `exp` and `nbf` in seconds (default 30).
    #[serde(default)]
    pub clock_tolerance_seconds: Option<u64>,
    /// Accepted for compatibility with Zuplo configurations; has no effect.
    #[serde(default, rename = "oAuthResourceMetadataEnabled")]
    pub o_auth_resource_metadata_enabled: Option<bool>,
}

/// Options of jwt-scopes-inbound.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct JwtScopesOptions {
    /// Required: every scope the token must carry.
    #[serde(deserialize_with = "de::texts")]
    pub scopes: Vec<String>,
}

// ----------------------------------------------------------------------------------------------
// The verifier
// ----------------------------------------------------------------------------------------------

/// Where verification keys come from.
enum KeySource {
    /// A shared secret: HMAC algorithms only.
    Secret(DecodingKey),
    /// A JWKS endpoint (cached, shared per URL).
    Jwks(Arc<Jwks>),
}

/// What a policy variant resolves its options to.
struct Config {
    issuer: Option<String>,
    audience: Vec<String>,
    keys: KeysConfig,
    allow_unauthenticated: bool,
    sub_claim: String,
    leeway: u64,
    required: Vec<(String, Option<Vec<Value>>)>,
}

enum KeysConfig {
    Secret(String),
    Url(String, HeaderMap),
}

/// Why a token was refused; each maps to one problem detail.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Reject {
    Missing,
    Malformed,
    Critical,
    Algorithm,
    UnknownKey,
    Signature,
    Expired,
    NotYetValid,
    Issuer,
    Audience,
    MissingClaim(String),
    ClaimValue(String),
    Subject(String),
    Unavailable,
}

impl Reject {
    fn from_kind(kind: &ErrorKind) -> Reject {
        match kind {
            ErrorKind::ExpiredSignature => Reject::Expired,
            ErrorKind::ImmatureSignature => Reject::NotYetValid,
            ErrorKind::InvalidIssuer => Reject::Issuer,
            ErrorKind::InvalidAudience => Reject::Audience,
            ErrorKind::MissingRequiredClaim(c) => Reject::MissingClaim(c.clone()),
            ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName | ErrorKind::MissingAlgorithm => Reject::Algorithm,
            // A key of another family than the algorithm (the library's own guard).
            ErrorKind::InvalidKeyFormat => Reject::Algorithm,
            ErrorKind::InvalidToken
            | ErrorKind::Base64(_)
            | ErrorKind::Json(_)
            | ErrorKind::Utf8(_)
            | ErrorKind::InvalidClaimFormat(_) => Reject::Malformed,
            _ => Reject::Signature,
        }
    }

    fn detail(&self) -> String {
        match self {
            Reject::Missing => "the request has no bearer token".into(),
            Reject::Malformed => "the token is malformed".into(),
            Reject::Critical => "the token uses unsupported critical header parameters".into(),
            Reject::Algorithm => "the token's algorithm is not allowed".into(),
            Reject::UnknownKey => "the token's signing key is unknown".into(),
            Reject::Signature => "the token's signature is invalid".into(),
            Reject::Expired => "the token has expired".into(),
            Reject::NotYetValid => "the token is not valid yet".into(),
            Reject::Issuer => "the token's issuer is not accepted".into(),
            Reject::Audience => "the token's audience is not accepted".into(),
            Reject::MissingClaim(c) => format!("the token lacks the `{c}` claim"),
            Reject::ClaimValue(c) => format!("the token's `{c}` claim has a value that is not accepted"),
            Reject::Subject(c) => format!("the token has no `{c}` claim of type string"),
            Reject::Unavailable => "cannot verify token".into(),
        }
    }

    fn problem(&self) -> Problem {
        match self {
            Reject::Unavailable => Problem::new(StatusCode::SERVICE_UNAVAILABLE)
                .with_detail(self.detail())
                .with_header(http::header::RETRY_AFTER, HeaderValue::from_static("5")),
            // RFC 6750 §3.1: a request without credentials gets a bare challenge, no error code.
            Reject::Missing => Problem::new(StatusCode::UNAUTHORIZED)
                .with_detail(self.detail())
                .with_header(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer")),
            _ => Problem::new(StatusCode::UNAUTHORIZED)
                .with_detail(self.detail())
                .with_header(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer error=\"invalid_token\"")),
        }
    }
}

/// The verifier shared by every JWT policy variant.
struct JwtAuth {
    name: String,
    issuer: Option<String>,
    audience: Vec<String>,
    keys: KeySource,
    /// Claim checks; `algorithms` is replaced per token by the one algorithm the key allows.
    validation: Validation,
    sub_claim: String,
    allow_unauthenticated: bool,
    required: Vec<(String, Option<Vec<Value>>)>,
    /// Tokens verified lately and the user each stands for (see [`VERIFIED_TTL`]).
    verified: moka::future::Cache<Arc<str>, Arc<Verified>>,
}

/// How long a verified token is remembered. A signature check costs 50-300 us (RS256 most),
/// a look-up about a microsecond; a key withdrawn from the key set stops being accepted for
/// tokens already seen within this time. A remembered token is still refused once its `exp`
/// (plus the leeway) has passed.
const VERIFIED_TTL: Duration = Duration::from_secs(60);
/// The most tokens remembered per policy.
const VERIFIED_MAX: u64 = 10_000;

/// A token that passed every check.
#[derive(Debug)]
struct Verified {
    user: User,
    /// Its `exp` claim, seconds since the epoch.
    exp: u64,
}

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl std::fmt::Debug for JwtAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret.
        let keys = match &self.keys {
            KeySource::Secret(_) => "secret".to_owned(),
            KeySource::Jwks(j) => j.url().to_owned(),
        };
        f.debug_struct("JwtAuth")
            .field("name", &self.name)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("keys", &keys)
            .field("sub_claim", &self.sub_claim)
            .field("allow_unauthenticated", &self.allow_unauthenticated)
            .finish_non_exhaustive()
    }
}

impl JwtAuth {
    fn new(cfg: Config, name: &str) -> Result<JwtAuth, String> {
        if cfg.issuer.as_deref().is_some_and(str::is_empty) {
            return Err("the issuer must not be empty".into());
        }
        if cfg.sub_claim.is_empty() {
            return Err("`subPropertyName` must not be empty".into());
        }
        if cfg.audience.iter().any(String::is_empty) {
            return Err("an audience must not be empty".into());
        }
        let keys = match cfg.keys {
            KeysConfig::Secret(secret) => {
                if secret.is_empty() {
                    return Err("`secret` must not be empty".into());
                }
                if secret.len() < 32 {
                    tracing::warn!(policy = name, "the JWT secret is shorter than 32 bytes; HS256 needs 256 bits to resist guessing");
                }
                KeySource::Secret(DecodingKey::from_secret(secret.as_bytes()))
            }
            KeysConfig::Url(url, headers) => {
                check_jwks_url(&url)?;
                if plain_http_off_host(&url) {
                    // Whoever can alter the key set in transit can mint accepted tokens.
                    tracing::warn!(policy = name, url = %url, "the JWKS URL uses plain http; use https outside local testing");
                }
                KeySource::Jwks(Jwks::shared(&url, headers)?)
            }
        };
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = cfg.leeway;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        let mut required = vec!["exp"];
        if let Some(iss) = &cfg.issuer {
            validation.set_issuer(&[iss]);
            required.push("iss");
        }
        if cfg.audience.is_empty() {
            // Without a configured audience, `aud` is the issuer's business (the library would
            // otherwise refuse every token that has one).
            validation.validate_aud = false;
        } else {
            validation.set_audience(&cfg.audience);
            required.push("aud");
        }
        validation.set_required_spec_claims(&required);
        Ok(JwtAuth {
            name: name.to_owned(),
            issuer: cfg.issuer,
            audience: cfg.audience,
            keys,
            validation,
            sub_claim: cfg.sub_claim,
            allow_unauthenticated: cfg.allow_unauthenticated,
            required: cfg.required,
            verified: moka::future::Cache::builder().max_capacity(VERIFIED_MAX).time_to_live(VERIFIED_TTL).build(),
        })
    }

    fn jwks_url(&self) -> Option<&str> {
        match &self.keys {
            KeySource::Jwks(j) => Some(j.url()),
            KeySource::Secret(_) => None,
        }
    }

    async fn authenticate(&self, mut req: Request, cx: &Context) -> Flow {
        // Copied out: the request is not `Sync`, so a borrow of it cannot live across awaits.
        let Some(token) = bearer_token(&req).map(str::to_owned) else {
            if self.allow_unauthenticated {
                return Flow::Continue(req);
            }
            return Flow::Problem(Reject::Missing.problem());
        };
        match self.verify(&token).await {
            Ok(user) => {
                req.user = Some(user);
                Flow::Continue(req)
            }
            Err(reject) => {
                // Debug level: refused tokens are routine (expiry) and can be floods (attacks).
                tracing::debug!(request_id = %cx.request_id, policy = %self.name, reason = %reject.detail(), "token refused");
                Flow::Problem(reject.problem())
            }
        }
    }

    async fn verify(&self, token: &str) -> Result<User, Reject> {
        if let Some(v) = self.verified.get(token).await
            && unix_now() <= v.exp.saturating_add(self.validation.leeway)
        {
            return Ok(v.user.clone());
        }
        let (alg, kid) = parse_header(token)?;
        let claims = match &self.keys {
            KeySource::Secret(key) => {
                if !HMAC_ALGORITHMS.contains(&alg) {
                    return Err(Reject::Algorithm);
                }
                self.check(token, key, alg)?
            }
            KeySource::Jwks(jwks) => {
                let mut set = jwks.keys().await.ok_or(Reject::Unavailable)?;
                if let Some(kid) = kid.as_deref()
                    && !set.has_kid(kid)
                {
                    // Keys rotate: an unknown id may be a new key. The refetch is rate-limited
                    // and shared, so forged ids cost the issuer at most one request per window.
                    set = jwks.refetch_for_unknown_kid().await.ok_or(Reject::Unavailable)?;
                }
                self.check_with_set(token, &set, alg, kid.as_deref())?
            }
        };
        // `exp` is required and was checked; a fractional one is rounded down.
        let exp = claims.get("exp").and_then(Value::as_f64).map(|e| e as u64);
        let user = self.user(claims)?;
        if let Some(exp) = exp {
            self.verified.insert(Arc::from(token), Arc::new(Verified { user: user.clone(), exp })).await;
        }
        Ok(user)
    }

    /// Verifies with the keys of `set` that match `kid` (all keys when the token names none)
    /// and allow `alg`.
    fn check_with_set(&self, token: &str, set: &KeySet, alg: Algorithm, kid: Option<&str>) -> Result<Map<String, Value>, Reject> {
        let mut named = false;
        let mut outcome = Reject::UnknownKey;
        for k in &set.keys {
            if kid.is_some() && k.kid.as_deref() != kid {
                continue;
            }
            named = true;
            if !k.algorithms.contains(&alg) {
                continue;
            }
            match self.check(token, &k.key, alg) {
                // Without a kid several keys may fit; only a bad signature moves on to the next.
                Err(Reject::Signature) => outcome = Reject::Signature,
                other => return other,
            }
        }
        if named && outcome == Reject::UnknownKey {
            // Keys exist for this id but none of them allows the token's algorithm.
            outcome = Reject::Algorithm;
        }
        Err(outcome)
    }

    fn check(&self, token: &str, key: &DecodingKey, alg: Algorithm) -> Result<Map<String, Value>, Reject> {
        let mut validation = self.validation.clone();
        validation.algorithms = vec![alg];
        jsonwebtoken::decode::<Map<String, Value>>(token, key, &validation)
            .map(|data| data.claims)
            .map_err(|e| Reject::from_kind(e.kind()))
    }

    fn user(&self, claims: Map<String, Value>) -> Result<User, Reject> {
        for (name, allowed) in &self.required {
            let value = match claims.get(name) {
                None | Some(Value::Null) => return Err(Reject::MissingClaim(name.clone())),
                Some(v) => v,
            };
            if let Some(allowed) = allowed {
                let ok = match value {
                    Value::Array(items) => items.iter().any(|i| allowed.contains(i)),
                    v => allowed.contains(v),
                };
                if !ok {
                    return Err(Reject::ClaimValue(name.clone()));
                }
            }
        }
        let Some(Value::String(sub)) = claims.get(&self.sub_claim) else {
            return Err(Reject::Subject(self.sub_claim.clone()));
        };
        Ok(User { sub: sub.clone(), data: Value::Object(claims) })
    }
}

/// The token of `Authorization: Bearer <token>` (scheme case-insensitive), if any.
fn bearer_token(req: &Request) -> Option<&str> {
    let (scheme, rest) = req.header("authorization")?.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let token = rest.trim();
    (!token.is_empty()).then_some(token)
}

/// The header's algorithm and key id, checked before any key is touched.
fn parse_header(token: &str) -> Result<(Algorithm, Option<String>), Reject> {
    #[derive(Deserialize)]
    struct RawHeader {
        alg: Option<String>,
        kid: Option<String>,
        crit: Option<Value>,
    }
    let mut parts = token.split('.');
    let (Some(header), Some(_), Some(_), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(Reject::Malformed);
    };
    let bytes = URL_SAFE_NO_PAD.decode(header).map_err(|_| Reject::Malformed)?;
    let raw: RawHeader = serde_json::from_slice(&bytes).map_err(|_| Reject::Malformed)?;
    if raw.crit.is_some() {
        // RFC 7515 §4.1.11: extensions a verifier does not understand make the token invalid.
        return Err(Reject::Critical);
    }
    let alg = raw.alg.ok_or(Reject::Malformed)?;
    if alg.eq_ignore_ascii_case("none") {
        return Err(Reject::Algorithm);
    }
    let alg = Algorithm::from_str(&alg).map_err(|_| Reject::Algorithm)?;
    Ok((alg, raw.kid))
}

fn check_jwks_url(url: &str) -> Result<(), String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("the JWKS URL `{url}` is not a valid URL: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none_or(str::is_empty) {
        return Err(format!("the JWKS URL `{url}` must be an http or https URL"));
    }
    Ok(())
}

/// Whether `url` is plain http to a host other than this machine.
fn plain_http_off_host(url: &str) -> bool {
    let Ok(parsed) = reqwest::Url::parse(url) else { return false };
    let host = parsed.host_str().unwrap_or_default();
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host.trim_start_matches('[').trim_end_matches(']').parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
    parsed.scheme() == "http" && !loopback
}

fn jwks_headers(headers: Option<BTreeMap<String, Value>>) -> Result<HeaderMap, String> {
    let mut map = HeaderMap::new();
    for (name, value) in headers.unwrap_or_default() {
        let text = match value {
            Value::String(s) => s,
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            _ => return Err(format!("the value of header `{name}` in `headers` must be a string")),
        };
        let n = HeaderName::from_bytes(name.as_bytes()).map_err(|_| format!("`{name}` in `headers` is not a valid header name"))?;
        let v = HeaderValue::from_str(&text).map_err(|_| format!("the value of header `{name}` in `headers` is not a valid header value"))?;
        map.append(n, v);
    }
    Ok(map)
}

fn leeway(seconds: Option<u64>) -> u64 {
    seconds.unwrap_or(DEFAULT_CLOCK_TOLERANCE)
}

/// `url` with `https://` added when it has no scheme, without trailing slashes.
fn https_base(url: &str, option: &str) -> Result<String, String> {
    let url = url.trim().trim_end_matches('/');
    if url.is_empty() {
        return Err(format!("`{option}` must not be empty"));
    }
    let url = if url.contains("://") { url.to_owned() } else { format!("https://{url}") };
    check_jwks_url(&url).map_err(|_| format!("`{option}` is not a valid URL: `{url}`"))?;
    Ok(url)
}

/// Text that goes into a URL as one segment: letters, digits, `-`, `_`, `.` only.
fn segment<'a>(value: &'a str, option: &str) -> Result<&'a str, String> {
    let v = value.trim();
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')) {
        return Err(format!("`{option}` must be a non-empty name of letters, digits, `-`, `_` and `.`"));
    }
    Ok(v)
}

fn open_id_config(o: OpenIdJwtOptions, name: &str) -> Result<Config, String> {
    let keys = match (o.jwk_url, o.secret) {
        (Some(url), None) => KeysConfig::Url(url, jwks_headers(o.headers)?),
        (None, Some(secret)) => {
            if o.headers.is_some_and(|h| !h.is_empty()) {
                tracing::warn!(policy = name, "`headers` only apply to `jwkUrl`; ignored with `secret`");
            }
            KeysConfig::Secret(secret)
        }
        (Some(_), Some(_)) => return Err("set either `jwkUrl` or `secret`, not both".into()),
        (None, None) => return Err("set `jwkUrl` (asymmetric keys) or `secret` (HMAC)".into()),
    };
    Ok(Config {
        issuer: Some(o.issuer),
        audience: o.audience.map(Audience::into_vec).unwrap_or_default(),
        keys,
        allow_unauthenticated: o.allow_unauthenticated_requests,
        sub_claim: o.sub_property_name.unwrap_or_else(|| "sub".to_owned()),
        leeway: leeway(o.clock_tolerance_seconds),
        required: Vec::new(),
    })
}

fn url_config(issuer: String, jwks: String, audience: Vec<String>, allow: bool, tolerance: Option<u64>) -> Config {
    Config {
        issuer: Some(issuer),
        audience,
        keys: KeysConfig::Url(jwks, HeaderMap::new()),
        allow_unauthenticated: allow,
        sub_claim: "sub".to_owned(),
        leeway: leeway(tolerance),
        required: Vec::new(),
    }
}

fn auth0_config(o: Auth0JwtOptions) -> Result<Config, String> {
    // Accept `my.auth0.com`, `https://my.auth0.com` and `https://my.auth0.com/` alike.
    let base = https_base(&o.auth0_domain, "auth0Domain")?;
    let jwks = o.jwk_url.unwrap_or_else(|| format!("{base}/.well-known/jwks.json"));
    let audience = o.audience.map(Audience::into_vec).unwrap_or_default();
    // Auth0 issuers end with a slash.
    Ok(url_config(format!("{base}/"), jwks, audience, o.allow_unauthenticated_requests, o.clock_tolerance_seconds))
}

fn okta_config(o: OktaJwtOptions) -> Result<Config, String> {
    let issuer = https_base(&o.issuer_url, "issuerUrl")?;
    let jwks = match o.jwk_url {
        Some(url) => url,
        None => {
            let has_path = reqwest::Url::parse(&issuer).is_ok_and(|u| !u.path().trim_matches('/').is_empty());
            // The org authorization server (issuer without a path) serves its keys under /oauth2.
            if has_path { format!("{issuer}/v1/keys") } else { format!("{issuer}/oauth2/v1/keys") }
        }
    };
    let audience = o.audience.map(Audience::into_vec).unwrap_or_default();
    Ok(url_config(issuer, jwks, audience, o.allow_unauthenticated_requests, o.clock_tolerance_seconds))
}

fn cognito_config(o: CognitoJwtOptions) -> Result<Config, String> {
    let region = segment(&o.region, "region")?;
    let pool = segment(&o.user_pool_id, "userPoolId")?;
    let issuer = format!("https://cognito-idp.{region}.amazonaws.com/{pool}");
    let jwks = o.jwk_url.unwrap_or_else(|| format!("{issuer}/.well-known/jwks.json"));
    Ok(url_config(issuer, jwks, Vec::new(), o.allow_unauthenticated_requests, o.clock_tolerance_seconds))
}

fn clerk_config(o: ClerkJwtOptions) -> Result<Config, String> {
    let issuer = https_base(&o.frontend_api_url, "frontendApiUrl")?;
    let jwks = o.jwk_url.unwrap_or_else(|| format!("{issuer}/.well-known/jwks.json"));
    Ok(url_config(issuer, jwks, Vec::new(), o.allow_unauthenticated_requests, o.clock_tolerance_seconds))
}

fn firebase_config(o: FirebaseJwtOptions) -> Result<Config, String> {
    let project = segment(&o.project_id, "projectId")?.to_owned();
    let jwks = o.jwk_url.unwrap_or_else(|| FIREBASE_JWKS.to_owned());
    let issuer = format!("https://securetoken.google.com/{project}");
    Ok(url_config(issuer, jwks, vec![project], o.allow_unauthenticated_requests, o.clock_tolerance_seconds))
}

fn supabase_config(o: SupabaseJwtOptions) -> Result<Config, String> {
    let required = match o.required_claims {
        None => Vec::new(),
        Some(RequiredClaims::Present(names)) => names.into_iter().map(|n| (n, None)).collect(),
        Some(RequiredClaims::OneOf(map)) => map.into_iter().map(|(n, values)| (n, Some(values))).collect(),
    };
    if required.iter().any(|(n, _)| n.is_empty()) {
        return Err("`requiredClaims` must not name an empty claim".into());
    }
    Ok(Config {
        issuer: None,
        audience: Vec::new(),
        keys: KeysConfig::Secret(o.secret),
        allow_unauthenticated: o.allow_unauthenticated_requests,
        sub_claim: "sub".to_owned(),
        leeway: leeway(o.clock_tolerance_seconds),
        required,
    })
}

// ----------------------------------------------------------------------------------------------
// Policy types
// ----------------------------------------------------------------------------------------------

macro_rules! jwt_policy {
    ($(#[$doc:meta])* $ty:ident, $options:ty, $config:expr) => {
        $(#[$doc])*
        #[derive(Debug)]
        pub struct $ty(JwtAuth);

        impl $ty {
            /// The issuer tokens must name in `iss` (`None`: not checked).
            pub fn issuer(&self) -> Option<&str> {
                self.0.issuer.as_deref()
            }

            /// The accepted audiences (empty: `aud` is not checked).
            pub fn audiences(&self) -> &[String] {
                &self.0.audience
            }

            /// The URL of the key set (`None` when tokens are verified with a shared secret).
            pub fn jwks_url(&self) -> Option<&str> {
                self.0.jwks_url()
            }
        }

        impl FromOptions for $ty {
            type Options = $options;
            fn from_options(options: Self::Options, name: &str) -> Result<Self, String> {
                let config: fn($options, &str) -> Result<Config, String> = $config;
                JwtAuth::new(config(options, name)?, name).map($ty)
            }
        }

        impl Inbound for $ty {
            async fn on_request(&self, req: Request, cx: &mut Context) -> Flow {
                self.0.authenticate(req, cx).await
            }
        }
    };
}

jwt_policy!(
    /// `OpenIdJwtInboundPolicy`: authenticates bearer JWTs of any OpenID issuer, with keys from
    /// `jwkUrl` or a shared `secret`.
    OpenIdJwtInbound,
    OpenIdJwtOptions,
    open_id_config
);
jwt_policy!(
    /// `Auth0JwtInboundPolicy`: bearer JWTs issued by an Auth0 tenant.
    Auth0JwtInbound,
    Auth0JwtOptions,
    |o, _| auth0_config(o)
);
jwt_policy!(
    /// `OktaJwtInboundPolicy`: bearer JWTs issued by an Okta authorization server.
    OktaJwtInbound,
    OktaJwtOptions,
    |o, _| okta_config(o)
);
jwt_policy!(
    /// `CognitoJwtInboundPolicy`: bearer JWTs issued by an AWS Cognito user pool.
    CognitoJwtInbound,
    CognitoJwtOptions,
    |o, _| cognito_config(o)
);
jwt_policy!(
    /// `ClerkJwtInboundPolicy`: Clerk session tokens.
    ClerkJwtInbound,
    ClerkJwtOptions,
    |o, _| clerk_config(o)
);
jwt_policy!(
    /// `FirebaseJwtInboundPolicy`: Firebase Authentication ID tokens.
    FirebaseJwtInbound,
    FirebaseJwtOptions,
    |o, _| firebase_config(o)
);
jwt_policy!(
    /// `SupabaseJwtInboundPolicy`: Supabase tokens signed with the project's JWT secret.
    SupabaseJwtInbound,
    SupabaseJwtOptions,
    |o, _| supabase_config(o)
);

/// `JwtScopesInboundPolicy` (Zuplo's jwt-scopes-inbound): requires an authenticated user whose
/// token grants every listed scope, read from `scope` (space-separated string, RFC 8693) and
/// `scp` (array or string, as Okta and Azure AD issue it). No user: 401; missing scope: 403.
#[derive(Debug, Clone)]
pub struct JwtScopesInbound {
    scopes: Vec<String>,
    challenge: HeaderValue,
}

impl FromOptions for JwtScopesInbound {
    type Options = JwtScopesOptions;
    fn from_options(options: Self::Options, _name: &str) -> Result<Self, String> {
        if options.scopes.is_empty() {
            return Err("`scopes` must list at least one scope".into());
        }
        for s in &options.scopes {
            // RFC 6749 §3.3 scope-token characters; it also keeps the challenge header valid.
            if s.is_empty() || !s.bytes().all(|b| b == 0x21 || (0x23..=0x5B).contains(&b) || (0x5D..=0x7E).contains(&b)) {
                return Err(format!("`{s}` is not a valid scope"));
            }
        }
        let challenge = format!("Bearer error=\"insufficient_scope\", scope=\"{}\"", options.scopes.join(" "));
        let challenge = HeaderValue::from_str(&challenge).map_err(|_| "the scopes do not fit in a header".to_owned())?;
        Ok(JwtScopesInbound { scopes: options.scopes, challenge })
    }
}

/// The scopes a token's claims grant.
fn granted_scopes(claims: &Value) -> HashSet<&str> {
    let mut granted = HashSet::new();
    for claim in ["scope", "scp"] {
        match claims.get(claim) {
            Some(Value::String(s)) => granted.extend(s.split_whitespace()),
            Some(Value::Array(items)) => granted.extend(items.iter().filter_map(Value::as_str)),
            _ => {}
        }
    }
    granted
}

impl Inbound for JwtScopesInbound {
    async fn on_request(&self, req: Request, _cx: &mut Context) -> Flow {
        let Some(user) = &req.user else {
            return Flow::Problem(
                Problem::new(StatusCode::UNAUTHORIZED)
                    .with_detail("the request is not authenticated")
                    .with_header(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer")),
            );
        };
        let granted = granted_scopes(&user.data);
        let missing: Vec<&str> = self.scopes.iter().map(String::as_str).filter(|s| !granted.contains(s)).collect();
        if missing.is_empty() {
            return Flow::Continue(req);
        }
        Flow::Problem(
            Problem::new(StatusCode::FORBIDDEN)
                .with_detail(format!("the token lacks the required scopes: {}", missing.join(" ")))
                .with_header(WWW_AUTHENTICATE, self.challenge.clone()),
        )
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    use axum::body::Body;
    use http::header::AUTHORIZATION;
    use jsonwebtoken::{EncodingKey, Header, encode, get_current_timestamp};
    use serde_json::json;

    use super::*;
    use crate::policies::test_context;
    use crate::policies::test_util::{build, continued, must, problem_status, request};

    // Test-only keys made with `openssl genpkey` (RSA 2048, EC P-256, Ed25519) for these tests;
    // they protect nothing. The JWK members were computed from them independently of the code
    // under test.
    const RSA_PRIVATE: &str = "-----BEGIN PRIVATE KEY-----
MIIEvAIBADANBgkqhkiG9w0BAQEFAASCBKYwggSiAgEAAoIBAQCzp/Xz+c+9CcAa
MHZIbjhr+sECoXjgztLVJb1x3RvoZOUO7ApAfR2z2YutjOn3FWi5lwgmah2FOxiL
xCr0xdpI5zam+SJZ7KKZNf3oAHTTZ36cyBFinaBEw/PLXZZZHgs6xg+T6pUBbEBP
I+Xr8EmW+9Gd9WqtZ0HrpxiuodyQGvQD6o4x5TvGHcSluZagUonY/judxhh+Hmxp
NGhqVoqqhVUe6TW1ZeXti7808MsD1hIpIS00tLy+94/kukwnlX/2C8a6wJ83QOtC
s2WIXBBrkdFHv9JBP21zd8q7cx1qx8swg3OE6LAM9hwb3zgL6tl2adbIwKwceYCm
EM2J8owNAgMBAAECgf8FQ/oe6ATcmhTWGVsKiQAXEESgnmCx/5kHGgyr4QpzhyE2
lrw4TP7rO9iFZ9KBwm4ktzinog7gjFWTh+8s/NHNp95p3GGRDE+PxffViWp7V+9A
0yblT7XeAQ89bdFzlPYuYt5qFo1mPBox7lVuZ+PNbA3r1Dcj7a1nOISHIu8+CSOO
S6t4ASBM674C8pSy8H2UVWqBZIB/AZ1yUzShogFfdfBMda4Mc0yg1VFJ0ugSpDQ9
QG38Vsimg3XqzymYS+stRQwZnrddmvo4Xgr3rrWZapxm2L2BYsLrjqEJMKBHGEQT
oVB6iEoxt88UP7nh60r989idOJTpVN1+/N+draECgYEA3YSLF4nk+JJJvkagj6y/
TAHPigsweRm8/KVljPwDYXSRpOrgc0QS/dw3KvUUAtzrVsO0k21jtSey8W6LiBFg
gywpP9foqzT3WBfZMzO2sPiY0heL2N65f63FIVoNjEiCgsOaovh66NEEVoiM3MP8
4cPyw/18DgX8oqwYF9upsC0CgYEAz588SDdBrurLAi71ioUL2Avp6BirABOredLX
/FRlKGuuTiD3EgpXi8ihoXyxjk+JsBUQqjhSPiZYcmeHjoeJ/laPPZdRqMfYG72J
nr5dWqgqRsvDc6wx66kU0dchn/qKgRmcCjQ44+wn4UBHBSWNLRQP0o7RYdXmmgUP
LLgV12ECgYEA1AsiUf/vrHnsGTXmUGHeJFW/YrbfSaz3mSiCEvjSC6HYIPOssunA
/DymmnpLE4qBxGZGHrGhtjEwO6fD7RYlOqs1OSXmVKy48By0Dy07fiAZuVJMzeY1
zyB6CTj4qwZl1+KBzerpTJ939ZV0sYbyNPKrGi01aP8WHGl8Dqp4vmkCgYEAs7pI
WMtclKqzqeQ0sgCSTCekCEKyZJKicgbO6aO1HdR5QzDOMFO7jUnUgRKMMYEw07io
gHHY3+wZzI9KjVtPXVhZDxwamFzG+tyMcVqhPYUtc7OYMl3xqOrpFu2AMhiUJUWi
CkNCrCsWKquVzyK+nzMqrz7qiiK8SL/wbum8HoECgYBOppQrb6+W7iBeR8fjiSfO
h1pZI3ndUTiKpO4xpwF0EhD8xmAbQVSsf01PX9W7b5j7IdY+l/eWH5EWhBwGD5DX
OYdNzglnO35jf++AF3qyKJ3StgEg4aHAv5TXeN4PzVIDRCFfTXFV1ujLAPLWMRCs
yvJWNsO2hTJdW0OMaWsMgA==
-----END PRIVATE KEY-----
";
    const RSA_PUBLIC: &str = "-----BEGIN PUBLIC KEY-----
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAs6f18/nPvQnAGjB2SG44
a/rBAqF44M7S1SW9cd0b6GTlDuwKQH0ds9mLrYzp9xVouZcIJmodhTsYi8Qq9MXa
SOc2pvkiWeyimTX96AB002d+nMgRYp2gRMPzy12WWR4LOsYPk+qVAWxATyPl6/BJ
lvvRnfVqrWdB66cYrqHckBr0A+qOMeU7xh3EpbmWoFKJ2P47ncYYfh5saTRoalaK
qoVVHuk1tWXl7Yu/NPDLA9YSKSEtNLS8vveP5LpMJ5V/9gvGusCfN0DrQrNliFwQ
a5HRR7/SQT9tc3fKu3MdasfLMINzhOiwDPYcG984C+rZdmnWyMCsHHmAphDNifKM
DQIDAQAB
-----END PUBLIC KEY-----
";
    const RSA_N: &str = "s6f18_nPvQnAGjB2SG44a_rBAqF44M7S1SW9cd0b6GTlDuwKQH0ds9mLrYzp9xVouZcIJmodhTsYi8Qq9MXaSOc2pvkiWeyimTX96AB002d-nMgRYp2gRMPzy12WWR4LOsYPk-qVAWxATyPl6_BJlvvRnfVqrWdB66cYrqHckBr0A-qOMeU7xh3EpbmWoFKJ2P47ncYYfh5saTRoalaKqoVVHuk1tWXl7Yu_NPDLA9YSKSEtNLS8vveP5LpMJ5V_9gvGusCfN0DrQrNliFwQa5HRR7_SQT9tc3fKu3MdasfLMINzhOiwDPYcG984C-rZdmnWyMCsHHmAphDNifKMDQ";
    const RSA2_PRIVATE: &str = "-----BEGIN PRIVATE KEY-----
MIIEvAIBADANBgkqhkiG9w0BAQEFAASCBKYwggSiAgEAAoIBAQCxDcxPrvaC8lK1
dE2hE9KaYQSl5tX+A1q2u04B/qzoBdivVvZqc7GkIx45olF57IT9TcQ5xCgAFHlE
eQ9Vnly+melskZVHaU85RQ+Zzf7/sFssGJoBjr9jvSwi+rG4goCJrizYGwzkl+Ny
mIGx/j8NhonfLorKxyFib+aASrqtpZ8N84DjVZ32mrp369bahuSmSvPvGKTFzFtY
9OvIvM/ysYgm26KV8mYK+y2UUiGp8iC0i5QzLEtshpH4XLJe1i0RquyMBp+CSemO
GdaYOgG2FCDkx52cEducVjlMpi2Y93hnPlhHdTtcho4OBinu57FIf/lkNxTvPJN9
yQYAtmxvAgMBAAECggEABwpTa3+7ka1tGIYNaDBPmY/uDWLGc5lSjB2aln24Bmnl
GePNXKJJGAvFcelAcCa1ixUCjoF8TbSCtfRSZccsTO/11jlbxEEtw0s5uZX1Y9lx
Zql7xkAU4DRvgtyRIJMf5Vmlstowgw5/HtltntRLUZBd/x/sqO+OJkno0oUmMy1n
wtKxfr6eVBH1g+iGoiktou84xcJIG1Qe4xM1FaFRINPlCnkAcgWhSuo45P0W1HFe
B79WBjwcxUReeVUJ+sKMUwMSinO5yTNJF9kz2pUz1RRHN2sy8stWxPP8JWIVrO8K
Wq7VMFknHulWv7BtbiIjCZU0r3rivMJDfF33TcwWcQKBgQDtvGeBIBuPpKeTs4RY
hz1bEp/HkXyBT8q1wcX/p8xdntGNJJtzBC/iZxT34+VUnl3NM11SSgZuiER53Ypc
BwBNRqbYgfppwqXTJ0URtfGW6/6Ro4ZWB7V89V1erkKDkSC6PAb8Z9EIaggEw4Fn
LgVwJW+P6uLnAMbuNz0wwGtlBQKBgQC+p/Lq/fXGioE9X87Ihf6zzoZ2VqFCip0I
fms5EADgI9X5NFingwRmHcIT+VEd1xpFpGk4hbiG5hxlvVmTdwW0zzN4ra5GKTyE
5xjG3qSFSP4mkPsalrCytmtJr6fuf51xkqOgU1QXb2di4OYZibfmAKh0BBQb5CUR
qjXPxfPF4wKBgAhtPDH8hF2UFYiLvW4x5P/caiN1ybb/sAy/QJhuRzUuUvkwyf3K
sTPSOZEL1+4m6uZCItWu4Al89QhozOW0LdOPZIyaFtk22A/i/XTCQTz7QnvBExrr
jQhP3i5j+OGW/FT9mbXKrEMjFwOsNmME45Z1DT5Jsh9EDMkW1ilrOKNNAoGAR/mV
XhtTvokpMydJJDBZsD2mS2R26mzzzXIUPm2JNxSwQaz+TvbKIVbYnru/YLmExIfF
5T2uJNcYH1x1RZNoRxL1xngi03/bxfyMQP9qMpsUvzB6a1Y6DK2LIT0783Cf2nFW
bj8m/tXivNRUaY2xLBZRgcLMaJ8fU2TjfbWoSqsCgYAGyHAaeHwVzSAVU9I6+k3H
adCuiJrCA7UFeyQY4t8U8bLxqV8OUs4hX0e4IWrQ/ryZ2VO/g0WYUp2yys4Ghv5V
i8WnU7HHhgf98cM+FjzXXSPjWxXbtXup8xktYhsjk6WWa9rYtXHyt97oQQrTVg/n
CXuimHSArxU99PsGlQejfA==
-----END PRIVATE KEY-----
";
    const RSA2_N: &str = "sQ3MT672gvJStXRNoRPSmmEEpebV_gNatrtOAf6s6AXYr1b2anOxpCMeOaJReeyE_U3EOcQoABR5RHkPVZ5cvpnpbJGVR2lPOUUPmc3-_7BbLBiaAY6_Y70sIvqxuIKAia4s2BsM5JfjcpiBsf4_DYaJ3y6KyschYm_mgEq6raWfDfOA41Wd9pq6d-vW2obkpkrz7xikxcxbWPTryLzP8rGIJtuilfJmCvstlFIhqfIgtIuUMyxLbIaR-FyyXtYtEarsjAafgknpjhnWmDoBthQg5MednBHbnFY5TKYtmPd4Zz5YR3U7XIaODgYp7uexSH_5ZDcU7zyTfckGALZsbw";
    const EC_PRIVATE: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg0oCrCOogxvw8vTgm
f89VZFjyiZ99FXKEENgw4Q5sg4+hRANCAAQm40/ZDh8uAiyIHwwGVnYpnp/bO0Nr
FiOZCA1A0REluGoFyrVS+nqW6/c4zQ8oWtg9IFXNbGwkHshdGINxgU47
-----END PRIVATE KEY-----
";
    const EC_X: &str = "JuNP2Q4fLgIsiB8MBlZ2KZ6f2ztDaxYjmQgNQNERJbg";
    const EC_Y: &str = "agXKtVL6epbr9zjNDyha2D0gVc1sbCQeyF0Yg3GBTjs";
    const ED_PRIVATE: &str = "-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEIGyqoKjV5fcjDJa2QOoharSKFvH5FqeuvP+1JcAomqve
-----END PRIVATE KEY-----
";
    const ED_X: &str = "nr-TCD7xvcoj9AL96q0DKPrQKi3ynOGw3DVVZkDlHuc";
    const ISSUER: &str = "https://issuer.test/";
    const SECRET: &str = "test-secret-of-at-least-32-bytes!!";

    /// A JWKS endpoint on loopback that counts its requests; its document can be swapped.
    struct JwksServer {
        url: String,
        hits: Arc<AtomicUsize>,
        doc: Arc<Mutex<Value>>,
        task: tokio::task::JoinHandle<()>,
    }

    impl Drop for JwksServer {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    impl JwksServer {
        async fn start(doc: Value) -> JwksServer {
            let hits = Arc::new(AtomicUsize::new(0));
            let doc = Arc::new(Mutex::new(doc));
            let (h, d) = (hits.clone(), doc.clone());
            let app = axum::Router::new().route(
                "/jwks",
                axum::routing::get(move || {
                    let (h, d) = (h.clone(), d.clone());
                    async move {
                        h.fetch_add(1, Ordering::SeqCst);
                        axum::Json(d.lock().unwrap_or_else(|e| e.into_inner()).clone())
                    }
                }),
            );
            let listener = must(tokio::net::TcpListener::bind("127.0.0.1:0").await);
            let addr = must(listener.local_addr());
            let task = tokio::spawn(async move {
                let _ = axum::serve(listener, app).await;
            });
            JwksServer { url: format!("http://{addr}/jwks"), hits, doc, task }
        }

        fn hits(&self) -> usize {
            self.hits.load(Ordering::SeqCst)
        }

        fn set(&self, doc: Value) {
            *self.doc.lock().unwrap_or_else(|e| e.into_inner()) = doc;
        }
    }

    fn rsa_jwk(kid: &str, n: &str) -> Value {
        json!({"kty": "RSA", "kid": kid, "use": "sig", "n": n, "e": "AQAB"})
    }

    fn all_keys() -> Value {
        json!({"keys": [
            rsa_jwk("rsa-1", RSA_N),
            {"kty": "EC", "kid": "ec-1", "crv": "P-256", "alg": "ES256", "x": EC_X, "y": EC_Y},
            {"kty": "OKP", "kid": "ed-1", "crv": "Ed25519", "alg": "EdDSA", "x": ED_X},
        ]})
    }

    fn rsa_key() -> EncodingKey {
        must(EncodingKey::from_rsa_pem(RSA_PRIVATE.as_bytes()))
    }

    fn now() -> i64 {
        i64::try_from(get_current_timestamp()).unwrap_or(i64::MAX)
    }

    /// Valid claims for [`ISSUER`] and audience `api`; `changes` overrides members (`null`
    /// removes one).
    fn claims(changes: Value) -> Value {
        let mut c = json!({"iss": ISSUER, "aud": "api", "sub": "user-1", "email": "a@example.com", "iat": now(), "exp": now() + 300});
        if let (Some(map), Value::Object(changes)) = (c.as_object_mut(), changes) {
            for (k, v) in changes {
                if v.is_null() {
                    map.remove(&k);
                } else {
                    map.insert(k, v);
                }
            }
        }
        c
    }

    fn sign(alg: Algorithm, kid: Option<&str>, key: &EncodingKey, claims: &Value) -> String {
        let mut header = Header::new(alg);
        header.kid = kid.map(str::to_owned);
        must(encode(&header, claims, key))
    }

    fn hs256(claims: &Value) -> String {
        sign(Algorithm::HS256, None, &EncodingKey::from_secret(SECRET.as_bytes()), claims)
    }

    /// An unsigned token (`alg` as given, empty signature).
    fn unsigned(alg: &str, claims: &Value) -> String {
        let header = json!({"alg": alg, "typ": "JWT"}).to_string();
        format!("{}.{}.", URL_SAFE_NO_PAD.encode(header), URL_SAFE_NO_PAD.encode(claims.to_string()))
    }

    async fn run_with(policy: &impl Inbound, authorization: Option<&str>) -> Flow {
        let mut req = request("GET", "/test", Body::empty());
        if let Some(a) = authorization {
            req.headers_mut().insert(AUTHORIZATION, must(HeaderValue::from_str(a)));
        }
        let mut cx = test_context();
        policy.on_request(req, &mut cx).await
    }

    async fn run(policy: &impl Inbound, token: &str) -> Flow {
        run_with(policy, Some(&format!("Bearer {token}"))).await
    }

    fn user_of(flow: Flow) -> User {
        must(continued(flow)).user.unwrap_or_else(|| panic!("the request has no user"))
    }

    fn detail(flow: &Flow) -> String {
        match flow {
            Flow::Problem(p) => p.detail().unwrap_or_default().to_owned(),
            Flow::Continue(_) => "continued".to_owned(),
            Flow::Respond(r) => format!("responded {}", r.status()),
        }
    }

    /// Status, detail and `WWW-Authenticate` of a refusal.
    fn refusal(flow: &Flow) -> (Option<u16>, String, String) {
        let challenge = match flow {
            Flow::Problem(p) => {
                let resp = p.clone().into_response_with("/test", "id");
                resp.headers().get(WWW_AUTHENTICATE).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned()
            }
            _ => String::new(),
        };
        (problem_status(flow), detail(flow), challenge)
    }

    fn secret_policy(extra: Value) -> OpenIdJwtInbound {
        let mut options = json!({"issuer": ISSUER, "audience": "api", "secret": SECRET});
        if let (Some(map), Value::Object(extra)) = (options.as_object_mut(), extra) {
            map.extend(extra);
        }
        must(build::<OpenIdJwtInbound>(options))
    }

    fn jwks_policy(url: &str) -> OpenIdJwtInbound {
        must(build::<OpenIdJwtInbound>(json!({"issuer": ISSUER, "audience": ["other", "api"], "jwkUrl": url})))
    }

    #[tokio::test]
    async fn rs256_es256_eddsa_tokens_verify_and_fill_the_user() {
        let server = JwksServer::start(all_keys()).await;
        let policy = jwks_policy(&server.url);
        let ec = must(EncodingKey::from_ec_pem(EC_PRIVATE.as_bytes()));
        let ed = must(EncodingKey::from_ed_pem(ED_PRIVATE.as_bytes()));
        let cases = [
            (Algorithm::RS256, Some("rsa-1"), rsa_key()),
            (Algorithm::PS256, Some("rsa-1"), rsa_key()),
            (Algorithm::RS256, None, rsa_key()),
            (Algorithm::ES256, Some("ec-1"), ec),
            (Algorithm::EdDSA, Some("ed-1"), ed),
        ];
        for (alg, kid, key) in cases {
            let token = sign(alg, kid, &key, &claims(json!({"role": "admin"})));
            let user = user_of(run(&policy, &token).await);
            assert_eq!(user.sub, "user-1", "{alg:?}");
            assert_eq!(user.data["email"], "a@example.com");
            assert_eq!(user.data["role"], "admin");
            assert_eq!(user.data["iss"], ISSUER);
        }
        // One fetch served every request.
        assert_eq!(server.hits(), 1);
        assert_eq!(policy.jwks_url(), Some(server.url.as_str()));
    }

    #[tokio::test]
    async fn a_key_verifies_only_its_own_algorithms() {
        let server = JwksServer::start(all_keys()).await;
        let policy = jwks_policy(&server.url);
        // An ES256 token naming the RSA key, and an RS256 token naming the EC key.
        let ec = must(EncodingKey::from_ec_pem(EC_PRIVATE.as_bytes()));
        let token = sign(Algorithm::ES256, Some("rsa-1"), &ec, &claims(json!({})));
        assert_eq!(detail(&run(&policy, &token).await), "the token's algorithm is not allowed");
        let token = sign(Algorithm::RS256, Some("ec-1"), &rsa_key(), &claims(json!({})));
        assert_eq!(detail(&run(&policy, &token).await), "the token's algorithm is not allowed");
        // The right key id with another key's signature.
        let other = must(EncodingKey::from_rsa_pem(RSA2_PRIVATE.as_bytes()));
        let token = sign(Algorithm::RS256, Some("rsa-1"), &other, &claims(json!({})));
        assert_eq!(detail(&run(&policy, &token).await), "the token's signature is invalid");
    }

    #[tokio::test]
    async fn shared_secret_accepts_hmac_tokens_only() {
        let policy = secret_policy(json!({}));
        let user = user_of(run(&policy, &hs256(&claims(json!({})))).await);
        assert_eq!(user.sub, "user-1");
        assert_eq!(user.data["aud"], "api");
        let hs512 = sign(Algorithm::HS512, None, &EncodingKey::from_secret(SECRET.as_bytes()), &claims(json!({})));
        assert!(continued(run(&policy, &hs512).await).is_ok());
        let rs = sign(Algorithm::RS256, None, &rsa_key(), &claims(json!({})));
        assert_eq!(refusal(&run(&policy, &rs).await).1, "the token's algorithm is not allowed");
        let wrong = sign(Algorithm::HS256, None, &EncodingKey::from_secret(b"another secret of 32 bytes or more"), &claims(json!({})));
        assert_eq!(refusal(&run(&policy, &wrong).await).1, "the token's signature is invalid");
        assert_eq!(policy.jwks_url(), None);
    }

    #[tokio::test]
    async fn alg_none_is_refused() {
        let server = JwksServer::start(all_keys()).await;
        let with_jwks = jwks_policy(&server.url);
        let with_secret = secret_policy(json!({}));
        for alg in ["none", "None", "NONE"] {
            let token = unsigned(alg, &claims(json!({})));
            for flow in [run(&with_jwks, &token).await, run(&with_secret, &token).await] {
                assert_eq!(refusal(&flow), (Some(401), "the token's algorithm is not allowed".to_owned(), "Bearer error=\"invalid_token\"".to_owned()));
            }
        }
    }

    #[tokio::test]
    async fn hmac_token_keyed_with_the_rsa_public_key_is_refused() {
        // The classic algorithm confusion: HS256 "signed" with the issuer's public key.
        let server = JwksServer::start(all_keys()).await;
        let policy = jwks_policy(&server.url);
        let forged_key = EncodingKey::from_secret(RSA_PUBLIC.as_bytes());
        for kid in [Some("rsa-1"), None] {
            let token = sign(Algorithm::HS256, kid, &forged_key, &claims(json!({})));
            assert_eq!(refusal(&run(&policy, &token).await).1, "the token's algorithm is not allowed", "kid {kid:?}");
        }
        // Nor may a symmetric key published in the set be used.
        let other = JwksServer::start(json!({"keys": [{"kty": "oct", "kid": "s", "k": URL_SAFE_NO_PAD.encode(SECRET)}]})).await;
        let policy = jwks_policy(&other.url);
        let token = sign(Algorithm::HS256, Some("s"), &EncodingKey::from_secret(SECRET.as_bytes()), &claims(json!({})));
        assert_eq!(problem_status(&run(&policy, &token).await), Some(401));
    }

    #[tokio::test]
    async fn time_claims_are_checked_with_leeway() {
        let policy = secret_policy(json!({}));
        let ok = |c: Value| hs256(&claims(c));
        assert!(continued(run(&policy, &ok(json!({"exp": now() - 10}))).await).is_ok(), "expired within the leeway");
        assert!(continued(run(&policy, &ok(json!({"nbf": now() + 10}))).await).is_ok(), "nbf within the leeway");
        assert!(continued(run(&policy, &ok(json!({"nbf": now() - 10}))).await).is_ok());
        assert_eq!(detail(&run(&policy, &ok(json!({"exp": now() - 120}))).await), "the token has expired");
        assert_eq!(detail(&run(&policy, &ok(json!({"nbf": now() + 120}))).await), "the token is not valid yet");
        assert_eq!(detail(&run(&policy, &ok(json!({"exp": null}))).await), "the token lacks the `exp` claim");
        // A non-numeric `exp` counts as absent.
        assert_eq!(problem_status(&run(&policy, &ok(json!({"exp": "tomorrow"}))).await), Some(401));
        let strict = secret_policy(json!({"clockToleranceSeconds": 0}));
        assert_eq!(detail(&run(&strict, &ok(json!({"exp": now() - 10}))).await), "the token has expired");
    }

    #[tokio::test]
    async fn verified_tokens_are_remembered_but_not_past_their_expiry() {
        let policy = secret_policy(json!({"clockToleranceSeconds": 0}));
        let token = hs256(&claims(json!({"exp": now() + 2})));
        assert_eq!(user_of(run(&policy, &token).await).sub, "user-1");
        policy.0.verified.run_pending_tasks().await;
        assert!(policy.0.verified.contains_key(token.as_str()), "a verified token is remembered");
        // The second request takes the remembered user.
        assert_eq!(user_of(run(&policy, &token).await).sub, "user-1");
        // Refused tokens are not remembered.
        let wrong = sign(Algorithm::HS256, None, &EncodingKey::from_secret(b"another secret of 32 bytes or more"), &claims(json!({})));
        assert_eq!(refusal(&run(&policy, &wrong).await).1, "the token's signature is invalid");
        policy.0.verified.run_pending_tasks().await;
        assert!(!policy.0.verified.contains_key(wrong.as_str()));
        assert_eq!(refusal(&run(&policy, &wrong).await).1, "the token's signature is invalid");
        // Once `exp` has passed, the remembered token is refused like any expired one.
        tokio::time::sleep(std::time::Duration::from_millis(3100)).await;
        assert_eq!(detail(&run(&policy, &token).await), "the token has expired");
    }

    #[tokio::test]
    async fn issuer_and_audience_are_checked() {
        let policy = secret_policy(json!({"audience": ["api", "api2"]}));
        let token = |c: Value| hs256(&claims(c));
        assert_eq!(detail(&run(&policy, &token(json!({"iss": "https://evil.test/"}))).await), "the token's issuer is not accepted");
        assert_eq!(detail(&run(&policy, &token(json!({"iss": null}))).await), "the token lacks the `iss` claim");
        assert_eq!(detail(&run(&policy, &token(json!({"aud": "web"}))).await), "the token's audience is not accepted");
        assert_eq!(detail(&run(&policy, &token(json!({"aud": null}))).await), "the token lacks the `aud` claim");
        assert!(continued(run(&policy, &token(json!({"aud": ["web", "api2"]}))).await).is_ok());
        // Without a configured audience, `aud` is not checked.
        let any_audience = must(build::<OpenIdJwtInbound>(json!({"issuer": ISSUER, "secret": SECRET})));
        assert!(continued(run(&any_audience, &token(json!({"aud": "web"}))).await).is_ok());
        assert!(continued(run(&any_audience, &token(json!({"aud": null}))).await).is_ok());
    }

    #[tokio::test]
    async fn unknown_kid_refetches_once_and_the_rotated_key_works() {
        let server = JwksServer::start(json!({"keys": [rsa_jwk("rsa-1", RSA_N)]})).await;
        let policy = jwks_policy(&server.url);
        let token = sign(Algorithm::RS256, Some("rsa-1"), &rsa_key(), &claims(json!({})));
        assert!(continued(run(&policy, &token).await).is_ok());
        assert_eq!(server.hits(), 1);
        // The issuer rotates in a new key and signs with it.
        server.set(json!({"keys": [rsa_jwk("rsa-1", RSA_N), rsa_jwk("rsa-2", RSA2_N)]}));
        let rotated = sign(Algorithm::RS256, Some("rsa-2"), &must(EncodingKey::from_rsa_pem(RSA2_PRIVATE.as_bytes())), &claims(json!({})));
        assert_eq!(user_of(run(&policy, &rotated).await).sub, "user-1");
        assert_eq!(server.hits(), 2);
        assert!(continued(run(&policy, &rotated).await).is_ok());
        // Within the refetch window, unknown ids are refused without asking again.
        let forged = sign(Algorithm::RS256, Some("nope"), &rsa_key(), &claims(json!({})));
        assert_eq!(detail(&run(&policy, &forged).await), "the token's signing key is unknown");
        assert_eq!(server.hits(), 2);
    }

    #[tokio::test]
    async fn a_flood_of_forged_kids_costs_at_most_one_fetch() {
        let server = JwksServer::start(json!({"keys": [rsa_jwk("rsa-1", RSA_N)]})).await;
        let policy = Arc::new(jwks_policy(&server.url));
        let token = sign(Algorithm::RS256, Some("rsa-1"), &rsa_key(), &claims(json!({})));
        assert!(continued(run(&*policy, &token).await).is_ok());
        assert_eq!(server.hits(), 1);
        let flows = futures_util::future::join_all((0..50).map(|i| {
            let policy = Arc::clone(&policy);
            // The key id is looked up before any signature check, so the valid token's
            // signature serves (and spares 50 RSA signings in a debug build).
            let header = URL_SAFE_NO_PAD.encode(json!({"alg": "RS256", "kid": format!("forged-{i}")}).to_string());
            let forged = format!("{header}.{}", token.split_once('.').map(|(_, rest)| rest).unwrap_or_default());
            tokio::spawn(async move { refusal(&run(&*policy, &forged).await) })
        }))
        .await;
        for flow in flows {
            assert_eq!(must(flow).0, Some(401));
        }
        assert_eq!(server.hits(), 2, "one shared refetch for the whole flood");
    }

    #[tokio::test]
    async fn sub_property_name_picks_the_subject() {
        let policy = secret_policy(json!({"subPropertyName": "email"}));
        let user = user_of(run(&policy, &hs256(&claims(json!({})))).await);
        assert_eq!(user.sub, "a@example.com");
        assert_eq!(user.data["sub"], "user-1");
        assert_eq!(detail(&run(&policy, &hs256(&claims(json!({"email": null})))).await), "the token has no `email` claim of type string");
        assert_eq!(detail(&run(&policy, &hs256(&claims(json!({"email": 42})))).await), "the token has no `email` claim of type string");
    }

    #[tokio::test]
    async fn missing_tokens_and_unauthenticated_requests() {
        let strict = secret_policy(json!({}));
        assert_eq!(refusal(&run_with(&strict, None).await), (Some(401), "the request has no bearer token".to_owned(), "Bearer".to_owned()));
        assert_eq!(problem_status(&run_with(&strict, Some("Basic dXNlcjpwYXNz")).await), Some(401));
        assert_eq!(problem_status(&run_with(&strict, Some("Bearer ")).await), Some(401));
        let lenient = secret_policy(json!({"allowUnauthenticatedRequests": true}));
        for header in [None, Some("Basic dXNlcjpwYXNz")] {
            let req = must(continued(run_with(&lenient, header).await));
            assert!(req.user.is_none());
        }
        // A token that is present but invalid is refused all the same.
        assert_eq!(problem_status(&run(&lenient, "not-a-token").await), Some(401));
        assert_eq!(problem_status(&run(&lenient, &hs256(&claims(json!({"exp": now() - 600})))).await), Some(401));
        // The scheme is case-insensitive.
        let token = hs256(&claims(json!({})));
        assert!(continued(run_with(&strict, Some(&format!("bearer  {token}"))).await).is_ok());
    }

    #[tokio::test]
    async fn malformed_tokens_are_refused_without_echoing_them() {
        let policy = secret_policy(json!({}));
        let crit = {
            let header = URL_SAFE_NO_PAD.encode(json!({"alg": "HS256", "crit": ["exp"], "exp": 1}).to_string());
            format!("{header}.{}.sig", URL_SAFE_NO_PAD.encode(claims(json!({})).to_string()))
        };
        let cases = [
            ("garbage-token-value", "the token is malformed"),
            ("a.b", "the token is malformed"),
            ("a.b.c.d", "the token is malformed"),
            ("!!!.b.c", "the token is malformed"),
            (crit.as_str(), "the token uses unsupported critical header parameters"),
        ];
        for (token, expected) in cases {
            let flow = run(&policy, token).await;
            let (status, detail, challenge) = refusal(&flow);
            assert_eq!((status, detail.as_str(), challenge.as_str()), (Some(401), expected, "Bearer error=\"invalid_token\""));
            if let Flow::Problem(p) = flow {
                let body = crate::policies::test_util::body_text(p.into_response_with("/test", "id").into_body()).await;
                assert!(!body.contains(token), "{body}");
            }
        }
    }

    #[tokio::test]
    async fn unreachable_key_set_fails_closed() {
        // A port nothing listens on: bind, note it, close.
        let port = {
            let listener = must(tokio::net::TcpListener::bind("127.0.0.1:0").await);
            must(listener.local_addr()).port()
        };
        let policy = jwks_policy(&format!("http://127.0.0.1:{port}/jwks"));
        let token = sign(Algorithm::RS256, Some("rsa-1"), &rsa_key(), &claims(json!({})));
        let flow = run(&policy, &token).await;
        assert_eq!(problem_status(&flow), Some(503));
        assert_eq!(detail(&flow), "cannot verify token");
        // Not a key set at all: the same.
        let server = JwksServer::start(json!({"not": "a key set"})).await;
        let policy = jwks_policy(&server.url);
        assert_eq!(problem_status(&run(&policy, &token).await), Some(503));
    }

    #[tokio::test]
    async fn supabase_required_claims() {
        let policy = must(build::<SupabaseJwtInbound>(
            json!({"secret": SECRET, "requiredClaims": {"role": ["admin", "editor"]}, "oAuthResourceMetadataEnabled": false}),
        ));
        assert_eq!(policy.issuer(), None);
        // Supabase tokens carry their own iss and aud; neither is checked.
        let token = |c: Value| hs256(&claims(c));
        assert!(continued(run(&policy, &token(json!({"role": "admin", "iss": "https://x.supabase.co/auth/v1", "aud": "authenticated"}))).await).is_ok());
        assert!(continued(run(&policy, &token(json!({"role": ["viewer", "editor"]}))).await).is_ok());
        assert_eq!(detail(&run(&policy, &token(json!({"role": "viewer"}))).await), "the token's `role` claim has a value that is not accepted");
        assert_eq!(detail(&run(&policy, &token(json!({}))).await), "the token lacks the `role` claim");
        let names = must(build::<SupabaseJwtInbound>(json!({"secret": SECRET, "requiredClaims": ["org_id"]})));
        assert!(continued(run(&names, &token(json!({"org_id": 7}))).await).is_ok());
        assert_eq!(detail(&run(&names, &token(json!({}))).await), "the token lacks the `org_id` claim");
        let rs = sign(Algorithm::RS256, None, &rsa_key(), &claims(json!({"role": "admin"})));
        assert_eq!(detail(&run(&policy, &rs).await), "the token's algorithm is not allowed");
    }

    #[tokio::test]
    async fn jwt_scopes_need_a_user_and_every_scope() {
        let policy = must(build::<JwtScopesInbound>(json!({"scopes": ["read:users", "write:projects"]})));
        let with_claims = |data: Value| {
            let mut req = request("GET", "/test", Body::empty());
            req.user = Some(User { sub: "u".into(), data });
            req
        };
        let mut cx = test_context();
        let flow = policy.on_request(request("GET", "/test", Body::empty()), &mut cx).await;
        assert_eq!(refusal(&flow), (Some(401), "the request is not authenticated".to_owned(), "Bearer".to_owned()));
        let flow = policy.on_request(with_claims(json!({"scope": "read:users write:projects extra"})), &mut cx).await;
        assert!(continued(flow).is_ok());
        let flow = policy.on_request(with_claims(json!({"scp": ["write:projects", "read:users"]})), &mut cx).await;
        assert!(continued(flow).is_ok());
        let flow = policy.on_request(with_claims(json!({"scp": ["read:users"]})), &mut cx).await;
        let (status, detail, challenge) = refusal(&flow);
        assert_eq!(status, Some(403));
        assert_eq!(detail, "the token lacks the required scopes: write:projects");
        assert_eq!(challenge, "Bearer error=\"insufficient_scope\", scope=\"read:users write:projects\"");
        let flow = policy.on_request(with_claims(json!({"sub": "u"})), &mut cx).await;
        assert_eq!(problem_status(&flow), Some(403));
        assert!(build::<JwtScopesInbound>(json!({"scopes": []})).is_err());
        assert!(build::<JwtScopesInbound>(json!({"scopes": ["a\"b"]})).is_err());
        assert!(build::<JwtScopesInbound>(json!({"scopes": ["a"], "other": 1})).is_err());
    }

    // Plain tests (no Tokio runtime): building a policy then starts no fetch, so these derive
    // URLs without touching the network.
    #[test]
    fn provider_variants_derive_issuer_and_key_set() {
        let auth0 = must(build::<Auth0JwtInbound>(json!({"auth0Domain": "my-co.auth0.com", "audience": "https://api.example.com/", "allowUnauthenticatedRequests": true, "oAuthResourceMetadataEnabled": false})));
        assert_eq!(auth0.issuer(), Some("https://my-co.auth0.com/"));
        assert_eq!(auth0.jwks_url(), Some("https://my-co.auth0.com/.well-known/jwks.json"));
        assert_eq!(auth0.audiences(), ["https://api.example.com/"]);
        let auth0 = must(build::<Auth0JwtInbound>(json!({"auth0Domain": "https://my-co.auth0.com/"})));
        assert_eq!(auth0.issuer(), Some("https://my-co.auth0.com/"));

        let okta = must(build::<OktaJwtInbound>(json!({"issuerUrl": "https://dev-1.okta.com/oauth2/default", "audience": "api://default"})));
        assert_eq!(okta.issuer(), Some("https://dev-1.okta.com/oauth2/default"));
        assert_eq!(okta.jwks_url(), Some("https://dev-1.okta.com/oauth2/default/v1/keys"));
        let org = must(build::<OktaJwtInbound>(json!({"issuerUrl": "https://dev-1.okta.com"})));
        assert_eq!(org.jwks_url(), Some("https://dev-1.okta.com/oauth2/v1/keys"));

        let cognito = must(build::<CognitoJwtInbound>(json!({"region": "us-east-1", "userPoolId": "us-east-1_AbC123"})));
        assert_eq!(cognito.issuer(), Some("https://cognito-idp.us-east-1.amazonaws.com/us-east-1_AbC123"));
        assert_eq!(cognito.jwks_url(), Some("https://cognito-idp.us-east-1.amazonaws.com/us-east-1_AbC123/.well-known/jwks.json"));
        assert!(cognito.audiences().is_empty());

        let clerk = must(build::<ClerkJwtInbound>(json!({"frontendApiUrl": "https://clerk.example.com/"})));
        assert_eq!(clerk.issuer(), Some("https://clerk.example.com"));
        assert_eq!(clerk.jwks_url(), Some("https://clerk.example.com/.well-known/jwks.json"));
        let clerk = must(build::<ClerkJwtInbound>(json!({"frontendApiUrl": "clerk.example.com"})));
        assert_eq!(clerk.issuer(), Some("https://clerk.example.com"));

        let firebase = must(build::<FirebaseJwtInbound>(json!({"projectId": "my-proj"})));
        assert_eq!(firebase.issuer(), Some("https://securetoken.google.com/my-proj"));
        assert_eq!(firebase.audiences(), ["my-proj"]);
        assert_eq!(firebase.jwks_url(), Some(FIREBASE_JWKS));

        let supabase = must(build::<SupabaseJwtInbound>(json!({"secret": SECRET})));
        assert_eq!((supabase.issuer(), supabase.jwks_url()), (None, None));

        let open_id = must(build::<OpenIdJwtInbound>(json!({"issuer": "https://idp.example.com", "jwkUrl": "https://idp.example.com/keys", "headers": {"x-api-key": "k"}})));
        assert_eq!(open_id.jwks_url(), Some("https://idp.example.com/keys"));
    }

    #[test]
    fn every_variant_takes_a_jwk_url_override() {
        let url = "http://127.0.0.1:9/keys";
        assert_eq!(must(build::<Auth0JwtInbound>(json!({"auth0Domain": "a.auth0.com", "jwkUrl": url}))).jwks_url(), Some(url));
        assert_eq!(must(build::<OktaJwtInbound>(json!({"issuerUrl": "https://o.okta.com/oauth2/x", "jwkUrl": url}))).jwks_url(), Some(url));
        assert_eq!(must(build::<CognitoJwtInbound>(json!({"region": "eu-west-1", "userPoolId": "p", "jwkUrl": url}))).jwks_url(), Some(url));
        assert_eq!(must(build::<ClerkJwtInbound>(json!({"frontendApiUrl": "https://c.example", "jwkUrl": url}))).jwks_url(), Some(url));
        assert_eq!(must(build::<FirebaseJwtInbound>(json!({"projectId": "p", "jwkUrl": url}))).jwks_url(), Some(url));
    }

    #[test]
    fn plain_http_is_flagged_off_this_machine_only() {
        assert!(plain_http_off_host("http://idp.example.com/keys"));
        assert!(!plain_http_off_host("https://idp.example.com/keys"));
        assert!(!plain_http_off_host("http://127.0.0.1:8080/keys"));
        assert!(!plain_http_off_host("http://[::1]:8080/keys"));
        assert!(!plain_http_off_host("http://localhost/keys"));
    }

    #[test]
    fn invalid_options_are_refused() {
        let refused = |r: Result<OpenIdJwtInbound, String>| r.err().unwrap_or_default();
        assert!(refused(build(json!({"issuer": ISSUER}))).contains("`jwkUrl`"));
        assert!(refused(build(json!({"issuer": ISSUER, "secret": SECRET, "jwkUrl": "http://127.0.0.1:9/k"}))).contains("not both"));
        assert!(refused(build(json!({"issuer": ISSUER, "jwkUrl": "ftp://x/k"}))).contains("http"));
        assert!(refused(build(json!({"issuer": ISSUER, "secret": SECRET, "unknown": 1}))).contains("unknown"));
        assert!(refused(build(json!({"issuer": "", "secret": SECRET}))).contains("issuer"));
        assert!(refused(build(json!({"issuer": ISSUER, "secret": ""}))).contains("secret"));
        assert!(refused(build(json!({"issuer": ISSUER, "jwkUrl": "http://127.0.0.1:9/k", "headers": {"bad name": "v"}}))).contains("header"));
        assert!(build::<CognitoJwtInbound>(json!({"region": "us east", "userPoolId": "p"})).is_err());
        assert!(build::<CognitoJwtInbound>(json!({"region": "us-east-1"})).is_err());
        assert!(build::<FirebaseJwtInbound>(json!({"projectId": "a/b"})).is_err());
        assert!(build::<Auth0JwtInbound>(json!({"auth0Domain": "a.auth0.com", "issuer": "x"})).is_err());
        assert!(build::<SupabaseJwtInbound>(json!({"secret": SECRET, "jwkUrl": "http://x"})).is_err());
    }
}
