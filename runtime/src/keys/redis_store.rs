//! The Redis store, for several gateway replicas sharing one set of keys.
//!
//! Layout (all values JSON):
//!
//! - `specgate:apikeys:<bucket>:key:<hash>`: what a look-up needs, `{"hash", "id", "name",
//!   "metadata", "tags", "expiresAt"}` (one GET per cache miss). Keys with an expiry also
//!   carry a Redis expiry at that time, so expired keys clean themselves up.
//! - `specgate:apikeys:<bucket>:consumer:<name>`: the [`Consumer`] with its key list, for
//!   `list`, `revoke` and `rotate`.
//! - `specgate:apikeys:<bucket>:consumers`: a set of consumer names (so `list` needs no SCAN).
//!
//! Every change goes through one Lua script that checks the consumer record still holds what
//! the change was computed from (compare-and-set) and then rewrites the record, the index and
//! every key entry of that consumer together, so replicas never see a revoked key in the
//! record but alive in its entry, and two operators cannot silently undo each other's work.

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::store::StoreError;
use crate::redis_conn::{FailFast, SetupError};
use super::{Consumer, Identity, KeyHash, validate_consumer};

/// Prefix of every Redis key this store uses.
const PREFIX: &str = "specgate:apikeys";
/// The longest a look-up may wait for Redis before the request gets a 503.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(2);
/// Attempts at a change when other writers keep changing the same consumer.
const MAX_ATTEMPTS: usize = 10;
/// Consumer records fetched per MGET by `list`.
const LIST_CHUNK: usize = 500;

/// KEYS[1] consumer record, KEYS[2] consumer index, KEYS[3..] key entries: the first n are
/// written, the rest deleted. ARGV[1] the record the change was computed from ('' = absent),
/// ARGV[2] the new record ('' = delete), ARGV[3] the consumer name, then per written entry
/// its JSON and its expiry in Unix seconds ('0' = none). Returns 0 when the record changed
/// meanwhile (nothing written), 1 when applied.
const CHANGE_SCRIPT: &str = r"
local current = redis.call('GET', KEYS[1])
if current == false then current = '' end
if current ~= ARGV[1] then return 0 end
if ARGV[2] == '' then
  redis.call('DEL', KEYS[1])
  redis.call('SREM', KEYS[2], ARGV[3])
else
  redis.call('SET', KEYS[1], ARGV[2])
  redis.call('SADD', KEYS[2], ARGV[3])
end
local n = (#ARGV - 3) / 2
for i = 1, n do
  local key = KEYS[2 + i]
  redis.call('SET', key, ARGV[2 + 2 * i])
  local exat = tonumber(ARGV[3 + 2 * i])
  if exat > 0 then redis.call('EXPIREAT', key, exat) end
end
for i = 3 + n, #KEYS do
  redis.call('DEL', KEYS[i])
end
return 1
";

static SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(CHANGE_SCRIPT));

/// The look-up record of one key.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct KeyEntry {
    hash: String,
    id: String,
    name: String,
    #[serde(default)]
    metadata: Map<String, Value>,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expires_at: Option<i64>,
}

/// A Redis server reached through a self-reconnecting connection.
pub(crate) struct RedisBackend {
    conn: ConnectionManager,
}

impl std::fmt::Debug for RedisBackend {
    // The connection's debug output could include the URL and its password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBackend").finish_non_exhaustive()
    }
}

impl RedisBackend {
    /// Prepares a connection to `url` without connecting yet, so a gateway starts (and
    /// answers 503 on keyed routes) while Redis is down, and recovers when it returns.
    /// Needs a Tokio runtime.
    pub(crate) fn new(url: &str) -> Result<Arc<Self>, StoreError> {
        // Short timeouts and few retries: a request waiting on a dead Redis should fail fast
        // with a 503 rather than hang; the manager keeps reconnecting in the background.
        let settings = FailFast { timeout: Duration::from_secs(2), retries: 2, max_delay: Duration::from_secs(1) };
        let conn = crate::redis_conn::lazy(url, "key store", settings, Some("API key Redis")).map_err(|e| match e {
            SetupError::InvalidUrl(m) => StoreError::Invalid(m),
            SetupError::Unavailable(m) => StoreError::Unavailable(m),
        })?;
        Ok(Arc::new(RedisBackend { conn }))
    }

    /// The identity filed under `hash` in `bucket`, if any.
    pub(crate) async fn lookup(&self, bucket: &str, hash: &KeyHash) -> Result<Option<Arc<Identity>>, StoreError> {
        let mut conn = self.conn.clone();
        let key = key_entry(bucket, &hash.to_hex());
        let mut get = redis::cmd("GET");
        get.arg(&key);
        let raw = tokio::time::timeout(LOOKUP_TIMEOUT, get.query_async::<Option<String>>(&mut conn))
            .await
            .map_err(|_| StoreError::Unavailable("Redis did not answer in time".to_owned()))?
            .map_err(unavailable)?;
        let Some(raw) = raw else { return Ok(None) };
        let entry: KeyEntry =
            serde_json::from_str(&raw).map_err(|e| StoreError::Invalid(format!("malformed key entry in Redis: {e}")))?;
        let stored = KeyHash::from_hex(&entry.hash)
            .ok_or_else(|| StoreError::Invalid("a key entry in Redis has a malformed hash".to_owned()))?;
        Ok(Some(Arc::new(Identity {
            consumer: entry.name,
            metadata: Value::Object(entry.metadata),
            tags: entry.tags,
            key_id: entry.id,
            expires_at: entry.expires_at,
            hash: stored,
        })))
    }

    /// Every consumer of `bucket`, by name.
    pub(crate) async fn list(&self, bucket: &str) -> Result<Vec<Consumer>, StoreError> {
        let mut conn = self.conn.clone();
        let mut names: Vec<String> =
            redis::cmd("SMEMBERS").arg(index_key(bucket)).query_async(&mut conn).await.map_err(unavailable)?;
        names.sort();
        let mut out = Vec::with_capacity(names.len());
        for chunk in names.chunks(LIST_CHUNK) {
            let keys: Vec<String> = chunk.iter().map(|n| consumer_key(bucket, n)).collect();
            let raws: Vec<Option<String>> = redis::cmd("MGET").arg(&keys).query_async(&mut conn).await.map_err(unavailable)?;
            for raw in raws.into_iter().flatten() {
                out.push(parse_consumer(&raw)?);
            }
        }
        Ok(out)
    }

    /// Applies `edit` to consumer `name` of `bucket` (see `FileBackend::modify`).
    pub(crate) async fn modify<R, F>(&self, bucket: &str, name: &str, mut edit: F) -> Result<R, StoreError>
    where
        F: FnMut(Option<Consumer>) -> Result<(Option<Consumer>, R), StoreError> + Send,
        R: Send,
    {
        let record = consumer_key(bucket, name);
        let mut conn = self.conn.clone();
        for _ in 0..MAX_ATTEMPTS {
            let raw: Option<String> = redis::cmd("GET").arg(&record).query_async(&mut conn).await.map_err(unavailable)?;
            let current = raw.as_deref().map(parse_consumer).transpose()?;
            let old_hashes: Vec<String> = current.iter().flat_map(|c| c.keys.iter().map(|k| k.hash.clone())).collect();
            let (updated, result) = edit(current)?;
            if let Some(c) = &updated {
                validate_consumer(c).map_err(StoreError::Refused)?;
                if c.name != name {
                    return Err(StoreError::Refused("a consumer cannot be renamed".to_owned()));
                }
            }
            let written: Vec<&super::KeyRecord> = updated.iter().flat_map(|c| &c.keys).collect();
            let removed: Vec<&String> = old_hashes.iter().filter(|h| !written.iter().any(|k| &k.hash == *h)).collect();

            let mut call = SCRIPT.prepare_invoke();
            call.key(&record).key(index_key(bucket));
            for k in &written {
                call.key(key_entry(bucket, &k.hash));
            }
            for h in &removed {
                call.key(key_entry(bucket, h));
            }
            let new_record = match &updated {
                Some(c) => serde_json::to_string(c).map_err(|e| StoreError::Invalid(e.to_string()))?,
                None => String::new(),
            };
            call.arg(raw.unwrap_or_default()).arg(new_record).arg(name);
            if let Some(c) = &updated {
                for k in &c.keys {
                    let entry = KeyEntry {
                        hash: k.hash.clone(),
                        id: k.id.clone(),
                        name: c.name.clone(),
                        metadata: c.metadata.clone(),
                        tags: c.tags.clone(),
                        expires_at: k.expires_at,
                    };
                    let json = serde_json::to_string(&entry).map_err(|e| StoreError::Invalid(e.to_string()))?;
                    call.arg(json).arg(k.expires_at.unwrap_or(0).max(0));
                }
            }
            let applied: i64 = call.invoke_async(&mut conn).await.map_err(unavailable)?;
            if applied == 1 {
                return Ok(result);
            }
        }
        Err(StoreError::Conflict)
    }
}

fn parse_consumer(raw: &str) -> Result<Consumer, StoreError> {
    serde_json::from_str(raw).map_err(|e| StoreError::Invalid(format!("malformed consumer record in Redis: {e}")))
}

fn unavailable(e: redis::RedisError) -> StoreError {
    StoreError::Unavailable(format!("Redis: {e}"))
}

fn key_entry(bucket: &str, hash: &str) -> String {
    format!("{PREFIX}:{bucket}:key:{hash}")
}

fn consumer_key(bucket: &str, name: &str) -> String {
    format!("{PREFIX}:{bucket}:consumer:{name}")
}

fn index_key(bucket: &str) -> String {
    format!("{PREFIX}:{bucket}:consumers")
}
