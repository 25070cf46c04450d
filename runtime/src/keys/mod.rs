//! Self-hosted API keys: the key [`format`], the data model, and the [`KeyStore`] that the
//! `api-key-inbound` policy and the `specgate keys` command share.
//!
//! # Data model
//!
//! Keys belong to consumers; consumers live in buckets (the policy's `bucketName`, default
//! `"default"`), and each bucket is a separate set of consumers. A consumer is:
//!
//! ```json
//! {
//!   "name": "acme",
//!   "metadata": {"plan": "gold"},
//!   "tags": ["partner"],
//!   "keys": [
//!     {"hash": "<sha256(key), 64 lowercase hex>", "id": "zpka_abcdefgh",
//!      "createdAt": 1767225600, "expiresAt": 1769817600}
//!   ]
//! }
//! ```
//!
//! `name` becomes `request.user.sub` and `metadata` (a JSON object) `request.user.data`;
//! `tags` are for operators only.
//!
//! Times (`createdAt`, `expiresAt`) are Unix seconds (UTC); `expiresAt` is optional (never
//! expires). A key is valid while `now < expiresAt`. Keys themselves are never stored.
//!
//! # Stores
//!
//! [`StoreConfig::from_env`] picks the backend the gateway uses:
//!
//! - `API_KEYS_REDIS_URL` set (and not empty): Redis, see [`StoreConfig::Redis`].
//! - otherwise the JSON file at `API_KEYS_FILE` (default `api-keys.json` in the working
//!   directory), see [`StoreConfig::File`]; it is reloaded when it changes.

pub mod format;

mod cache;
mod file_store;
mod redis_store;
mod store;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub use file_store::{KeysFile, KeysFileBucket};
pub use format::{KeyHash, ParsedKey};
pub use store::{CreateKey, KeyStore, NewKey, Outcome, Rotated, StoreConfig, StoreError};

/// The bucket used when none is named.
pub const DEFAULT_BUCKET: &str = "default";

/// The environment variable naming the keys file.
pub const ENV_FILE: &str = "API_KEYS_FILE";
/// The environment variable with the Redis URL (selects the Redis store when set).
pub const ENV_REDIS_URL: &str = "API_KEYS_REDIS_URL";
/// The keys file used when [`ENV_FILE`] is not set.
pub const DEFAULT_FILE: &str = "api-keys.json";

/// One key of a consumer, as stored (its hash, never the key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KeyRecord {
    /// `sha256(key)`, 64 lowercase hex characters.
    pub hash: String,
    /// The display id, `zpka_` and the first 8 random characters of the key.
    pub id: String,
    /// When the key was made (Unix seconds).
    pub created_at: i64,
    /// When the key stops working (Unix seconds); absent: never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<i64>,
}

impl KeyRecord {
    /// Whether the key has expired at `now` (Unix seconds).
    pub fn is_expired_at(&self, now: i64) -> bool {
        self.expires_at.is_some_and(|e| now >= e)
    }
}

/// A consumer: who calls with a key, and what the gateway tells handlers about them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Consumer {
    /// The consumer's name, unique in its bucket (`request.user.sub`).
    pub name: String,
    /// Free-form data for handlers and policies (`request.user.data`).
    #[serde(default)]
    pub metadata: Map<String, Value>,
    /// Labels for operators (not exposed to requests).
    #[serde(default)]
    pub tags: Vec<String>,
    /// The consumer's keys.
    #[serde(default)]
    pub keys: Vec<KeyRecord>,
}

/// What a successful look-up knows about the caller.
#[derive(Debug, Clone, PartialEq)]
pub struct Identity {
    /// The consumer's name.
    pub consumer: String,
    /// The consumer's metadata (a JSON object).
    pub metadata: Value,
    /// The consumer's tags.
    pub tags: Vec<String>,
    /// The display id of the key that matched (safe to log).
    pub key_id: String,
    /// When that key expires (Unix seconds).
    pub expires_at: Option<i64>,
    /// The hash the store filed the key under, to confirm the match in constant time.
    pub(crate) hash: KeyHash,
}

impl Identity {
    /// Whether the matched key has expired at `now` (Unix seconds).
    pub fn is_expired_at(&self, now: i64) -> bool {
        self.expires_at.is_some_and(|e| now >= e)
    }

    /// `request.user` for this caller.
    pub fn to_user(&self) -> crate::User {
        crate::User { sub: self.consumer.clone(), data: self.metadata.clone() }
    }
}

/// Checks a bucket name: 1 to 64 of `A-Z a-z 0-9 _ . -` (it becomes part of Redis key names,
/// where a `:` could make one bucket's names collide with another's).
pub fn validate_bucket(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 64 {
        return Err(format!("bucket name `{name}` must have 1 to 64 characters"));
    }
    if !name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-')) {
        return Err(format!("bucket name `{name}` may only use letters, digits, `_`, `.` and `-`"));
    }
    Ok(())
}

/// Checks a consumer name: 1 to 256 characters, no control characters (it ends up in logs,
/// headers set by custom code and Redis key names).
pub fn validate_consumer_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 256 {
        return Err("a consumer name must have 1 to 256 characters".to_owned());
    }
    if name.chars().any(char::is_control) {
        return Err("a consumer name must not contain control characters".to_owned());
    }
    Ok(())
}

/// Checks a tag: 1 to 128 characters, no control characters.
pub fn validate_tag(tag: &str) -> Result<(), String> {
    if tag.is_empty() || tag.len() > 128 || tag.chars().any(char::is_control) {
        return Err(format!("tag `{}` must have 1 to 128 characters and no control characters", tag.escape_debug()));
    }
    Ok(())
}

/// Checks a whole consumer as stored: name, tags, key hashes and ids.
pub(crate) fn validate_consumer(c: &Consumer) -> Result<(), String> {
    validate_consumer_name(&c.name)?;
    for t in &c.tags {
        validate_tag(t)?;
    }
    for k in &c.keys {
        if KeyHash::from_hex(&k.hash).is_none() {
            return Err(format!("consumer `{}`: key `{}` has a hash that is not 64 lowercase hex characters", c.name, k.id));
        }
        if k.id.is_empty() || k.id.len() > 64 || k.id.chars().any(char::is_control) {
            return Err(format!("consumer `{}`: a key has an empty or invalid id", c.name));
        }
    }
    Ok(())
}

/// The current time in Unix seconds.
pub fn now_unix() -> i64 {
    let d = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

/// Formats Unix seconds as RFC 3339 UTC (`2026-01-01T00:00:00Z`), for listings.
pub fn rfc3339(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Howard Hinnant's days-to-civil algorithm (proleptic Gregorian calendar).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, (rem % 3600) / 60, rem % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_times() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_795_305_659), "2026-11-22T00:00:59Z");
    }

    #[test]
    fn names_are_checked() {
        assert!(validate_bucket("default").is_ok());
        assert!(validate_bucket("team-a.v2_x").is_ok());
        assert!(validate_bucket("").is_err());
        assert!(validate_bucket("a:key:b").is_err());
        assert!(validate_consumer_name("Acme Corp").is_ok());
        assert!(validate_consumer_name("a\nb").is_err());
        assert!(validate_tag("").is_err());
    }

    #[test]
    fn expiry_is_exclusive() {
        let k = KeyRecord { hash: String::new(), id: "zpka_x".into(), created_at: 0, expires_at: Some(100) };
        assert!(!k.is_expired_at(99));
        assert!(k.is_expired_at(100));
        let never = KeyRecord { expires_at: None, ..k };
        assert!(!never.is_expired_at(i64::MAX));
    }
}
