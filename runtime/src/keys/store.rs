//! [`KeyStore`]: one bucket of a backend (the keys file or Redis) with the look-up cache in
//! front, used by the `api-key-inbound` policy to authenticate and by `specgate keys` to
//! manage consumers.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use serde_json::{Map, Value};

use super::cache::{CAPACITY, KeyCache};
use super::file_store::FileBackend;
use super::redis_store::RedisBackend;
use super::{
    Consumer, DEFAULT_FILE, ENV_FILE, ENV_REDIS_URL, Identity, KeyHash, KeyRecord, format, now_unix, validate_bucket,
    validate_consumer_name, validate_tag,
};

/// Which backend holds the keys.
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum StoreConfig {
    /// A JSON keys file, reloaded when it changes.
    File(PathBuf),
    /// A Redis server (`redis://[user:password@]host:port[/db]`, or `rediss://` when the
    /// redis crate is built with TLS).
    Redis(String),
}

// The Redis URL may hold a password.
impl std::fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StoreConfig({})", self.describe())
    }
}

impl StoreConfig {
    /// What the gateway uses: Redis when `API_KEYS_REDIS_URL` is set and not empty,
    /// otherwise the file at `API_KEYS_FILE` (default `api-keys.json`). Reads the process
    /// environment and the gateway's `.env` files ([`crate::env::var`]).
    pub fn from_env() -> Self {
        Self::from_lookup(crate::env::var)
    }

    /// [`StoreConfig::from_env`] with another source of variables.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Self {
        match get(ENV_REDIS_URL).filter(|u| !u.trim().is_empty()) {
            Some(url) => StoreConfig::Redis(url.trim().to_owned()),
            None => StoreConfig::File(PathBuf::from(
                get(ENV_FILE).filter(|p| !p.trim().is_empty()).unwrap_or_else(|| DEFAULT_FILE.to_owned()),
            )),
        }
    }

    /// A description for messages, without the Redis password.
    pub fn describe(&self) -> String {
        match self {
            StoreConfig::File(p) => format!("file {}", p.display()),
            StoreConfig::Redis(url) => format!("redis {}", redact_url(url)),
        }
    }

    /// The same configuration with a file path made absolute (so `shared` does not open one
    /// file twice under two spellings).
    fn normalized(&self) -> Self {
        match self {
            StoreConfig::File(p) => StoreConfig::File(std::path::absolute(p).unwrap_or_else(|_| p.clone())),
            StoreConfig::Redis(u) => StoreConfig::Redis(u.clone()),
        }
    }
}

/// `scheme://user:secret@host/...` → `scheme://***@host/...`.
fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return "<url>".to_owned() };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://***@{}", &rest[at + 1..]),
        None => url.to_owned(),
    }
}

/// Why a store operation failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// The store cannot be reached or read (Redis down, file unreadable). Look-ups answer 503.
    Unavailable(String),
    /// The store holds data that is not valid (a malformed keys file or Redis record).
    Invalid(String),
    /// A management request that cannot be done (unknown consumer, bad name or input).
    Refused(String),
    /// Other writers kept changing the same data; nothing was written.
    Conflict,
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreError::Unavailable(m) => write!(f, "key store unavailable: {m}"),
            StoreError::Invalid(m) => write!(f, "invalid key store data: {m}"),
            StoreError::Refused(m) => f.write_str(m),
            StoreError::Conflict => f.write_str("the key store kept changing under this edit; nothing was written, try again"),
        }
    }
}

impl std::error::Error for StoreError {}

/// The result of checking a key.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// A known, unexpired key.
    Valid(Arc<Identity>),
    /// A known key past its `expiresAt`.
    Expired(Arc<Identity>),
    /// Well formed, but no consumer has it.
    Unknown,
    /// Not a key at all (wrong prefix, length or checksum); the store was not asked.
    Malformed,
}

/// What `create_key` needs.
#[derive(Debug, Clone, Default)]
pub struct CreateKey {
    /// The consumer (created when absent).
    pub consumer: String,
    /// Replaces the consumer's metadata when given (must be a JSON object).
    pub metadata: Option<Map<String, Value>>,
    /// Added to the consumer's tags (existing tags stay).
    pub tags: Vec<String>,
    /// When the new key expires (Unix seconds); `None`: never.
    pub expires_at: Option<i64>,
}

/// A key just made. The only time the key itself exists outside the client.
#[derive(Clone)]
pub struct NewKey {
    /// The key, to hand to the consumer once.
    pub key: String,
    /// Its display id.
    pub id: String,
    /// The consumer it belongs to.
    pub consumer: String,
    /// When it was made (Unix seconds).
    pub created_at: i64,
    /// When it expires (Unix seconds).
    pub expires_at: Option<i64>,
    /// Whether the consumer was created for it.
    pub created_consumer: bool,
}

// Never print the key through `{:?}`.
impl std::fmt::Debug for NewKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewKey")
            .field("id", &self.id)
            .field("consumer", &self.consumer)
            .field("created_at", &self.created_at)
            .field("expires_at", &self.expires_at)
            .field("created_consumer", &self.created_consumer)
            .finish_non_exhaustive()
    }
}

/// The result of `rotate`.
#[derive(Debug, Clone)]
pub struct Rotated {
    /// The new key.
    pub new_key: NewKey,
    /// The consumer's other unexpired keys with their new expiry: `(display id, expiresAt)`.
    pub retiring: Vec<(String, i64)>,
}

#[derive(Debug, Clone)]
enum Backend {
    File(Arc<FileBackend>),
    Redis(Arc<RedisBackend>),
}

impl Backend {
    fn open(config: &StoreConfig) -> Result<Self, StoreError> {
        match config {
            StoreConfig::File(path) => {
                let b = FileBackend::open(path.clone())?;
                b.watch();
                Ok(Backend::File(b))
            }
            StoreConfig::Redis(url) => RedisBackend::new(url).map(Backend::Redis),
        }
    }
}

/// One bucket of a key backend, with a look-up cache.
///
/// Look-ups ([`KeyStore::lookup`], [`KeyStore::authenticate`]) are what requests use; the
/// management methods are what `specgate keys` uses. With the file backend, management
/// methods do blocking file I/O (call them from a command or `spawn_blocking`).
#[derive(Debug)]
pub struct KeyStore {
    config: StoreConfig,
    backend: Backend,
    bucket: String,
    cache: KeyCache,
}

#[derive(Default)]
struct Registry {
    backends: HashMap<StoreConfig, Backend>,
    stores: HashMap<(StoreConfig, String), Arc<KeyStore>>,
}

static REGISTRY: OnceLock<Mutex<Registry>> = OnceLock::new();

impl KeyStore {
    /// Opens a store of its own: the file is read now (and watched when a Tokio runtime is
    /// running); a Redis connection is prepared lazily (needs a Tokio runtime).
    pub fn open(config: &StoreConfig, bucket: &str) -> Result<Self, StoreError> {
        validate_bucket(bucket).map_err(StoreError::Refused)?;
        let config = config.normalized();
        let backend = Backend::open(&config)?;
        Ok(KeyStore { config, backend, bucket: bucket.to_owned(), cache: KeyCache::new(CAPACITY) })
    }

    /// The process-wide store of `(config, bucket)`: every policy naming the same bucket
    /// shares one cache, and each file is read and watched once however many buckets use it.
    /// Bound to the Tokio runtime that first opens it (the gateway has one).
    pub fn shared(config: &StoreConfig, bucket: &str) -> Result<Arc<Self>, StoreError> {
        validate_bucket(bucket).map_err(StoreError::Refused)?;
        let config = config.normalized();
        let mut reg = REGISTRY.get_or_init(Mutex::default).lock().unwrap_or_else(|e| e.into_inner());
        let id = (config.clone(), bucket.to_owned());
        if let Some(s) = reg.stores.get(&id) {
            return Ok(s.clone());
        }
        let backend = match reg.backends.get(&config) {
            Some(b) => b.clone(),
            None => {
                let b = Backend::open(&config)?;
                reg.backends.insert(config.clone(), b.clone());
                b
            }
        };
        let store = Arc::new(KeyStore { config, backend, bucket: bucket.to_owned(), cache: KeyCache::new(CAPACITY) });
        reg.stores.insert(id, store.clone());
        Ok(store)
    }

    /// The bucket.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The backend's configuration.
    pub fn config(&self) -> &StoreConfig {
        &self.config
    }

    /// Forces a reload check of a file backend now instead of at the next poll (no-op for
    /// Redis). Blocking file I/O.
    pub fn refresh(&self) {
        if let Backend::File(b) = &self.backend {
            b.poll();
        }
    }

    pub(crate) fn generation(&self) -> u64 {
        match &self.backend {
            Backend::File(b) => b.generation(),
            Backend::Redis(_) => 0,
        }
    }

    /// The identity filed under `hash`, expired or not, answering from the cache when it
    /// holds a result younger than `cache_ttl` (zero: no caching). Unknown keys are cached
    /// too, so a flood of made-up keys does not reach Redis. Errors are never cached.
    pub async fn lookup(&self, hash: &KeyHash, cache_ttl: Duration) -> Result<Option<Arc<Identity>>, StoreError> {
        let generation = self.generation();
        if !cache_ttl.is_zero()
            && let Some(hit) = self.cache.get(hash, cache_ttl, generation)
        {
            return Ok(hit);
        }
        let found = match &self.backend {
            Backend::File(b) => b.lookup(&self.bucket, hash),
            Backend::Redis(b) => b.lookup(&self.bucket, hash).await?,
        };
        // The index already matched on the hash; this confirms it without a data-dependent
        // early exit, and drops a record filed under the wrong hash.
        let found = found.filter(|id| id.hash.ct_eq(hash));
        if !cache_ttl.is_zero() {
            self.cache.put(*hash, found.clone(), cache_ttl, generation);
        }
        Ok(found)
    }

    /// Checks a key: format first (no store access for garbage), then the look-up, then
    /// expiry.
    pub async fn authenticate(&self, key: &str, cache_ttl: Duration) -> Result<Outcome, StoreError> {
        let Some(parsed) = format::parse(key) else { return Ok(Outcome::Malformed) };
        Ok(match self.lookup(&parsed.hash(), cache_ttl).await? {
            None => Outcome::Unknown,
            Some(id) if id.is_expired_at(now_unix()) => Outcome::Expired(id),
            Some(id) => Outcome::Valid(id),
        })
    }

    /// Every consumer of the bucket (read from the backend, not the cache).
    pub async fn list(&self) -> Result<Vec<Consumer>, StoreError> {
        match &self.backend {
            Backend::File(b) => Ok(b.read()?.buckets.remove(&self.bucket).map(|b| b.consumers).unwrap_or_default()),
            Backend::Redis(b) => b.list(&self.bucket).await,
        }
    }

    async fn modify<R, F>(&self, name: &str, edit: F) -> Result<R, StoreError>
    where
        F: FnMut(Option<Consumer>) -> Result<(Option<Consumer>, R), StoreError> + Send,
        R: Send,
    {
        validate_consumer_name(name).map_err(StoreError::Refused)?;
        match &self.backend {
            Backend::File(b) => b.modify(&self.bucket, name, edit),
            Backend::Redis(b) => b.modify(&self.bucket, name, edit).await,
        }
    }

    /// Makes a key for a consumer (creating the consumer when absent) and stores its hash.
    pub async fn create_key(&self, request: CreateKey) -> Result<NewKey, StoreError> {
        for t in &request.tags {
            validate_tag(t).map_err(StoreError::Refused)?;
        }
        let now = now_unix();
        if request.expires_at.is_some_and(|e| e <= now) {
            return Err(StoreError::Refused("the expiry must be in the future".to_owned()));
        }
        let name = request.consumer.clone();
        self.modify(&name, |current| {
            let created_consumer = current.is_none();
            let mut c = current.unwrap_or_else(|| Consumer {
                name: request.consumer.clone(),
                metadata: Map::new(),
                tags: Vec::new(),
                keys: Vec::new(),
            });
            if let Some(m) = &request.metadata {
                c.metadata = m.clone();
            }
            for t in &request.tags {
                if !c.tags.contains(t) {
                    c.tags.push(t.clone());
                }
            }
            let mut new = mint(&c, now, request.expires_at)?;
            new.created_consumer = created_consumer;
            Ok((Some(c_with_key(c, &new)), new))
        })
        .await
    }

    /// Deletes one key of a consumer (`key_id`, with or without the `zpka_` prefix), or all
    /// of them (the consumer and its metadata stay). Returns how many keys went.
    pub async fn revoke(&self, consumer: &str, key_id: Option<&str>) -> Result<usize, StoreError> {
        let wanted = key_id.map(normalize_id);
        let bucket = self.bucket.clone();
        self.modify(consumer, |current| {
            let Some(mut c) = current else {
                return Err(StoreError::Refused(format!("no consumer `{consumer}` in bucket `{bucket}`")));
            };
            let before = c.keys.len();
            match &wanted {
                Some(id) => c.keys.retain(|k| &k.id != id),
                None => c.keys.clear(),
            }
            let revoked = before - c.keys.len();
            if let (Some(id), 0) = (&wanted, revoked) {
                return Err(StoreError::Refused(format!("consumer `{consumer}` has no key `{id}`")));
            }
            Ok((Some(c), revoked))
        })
        .await
    }

    /// Makes a new key for an existing consumer and lets its other unexpired keys expire
    /// after `grace` (keys that expire sooner keep their earlier expiry), so clients can
    /// switch over without downtime.
    pub async fn rotate(&self, consumer: &str, grace: Duration, expires_at: Option<i64>) -> Result<Rotated, StoreError> {
        let now = now_unix();
        if expires_at.is_some_and(|e| e <= now) {
            return Err(StoreError::Refused("the expiry must be in the future".to_owned()));
        }
        let deadline = now.saturating_add(i64::try_from(grace.as_secs()).unwrap_or(i64::MAX));
        let bucket = self.bucket.clone();
        self.modify(consumer, |current| {
            let Some(mut c) = current else {
                return Err(StoreError::Refused(format!("no consumer `{consumer}` in bucket `{bucket}`")));
            };
            let mut retiring = Vec::new();
            for k in c.keys.iter_mut().filter(|k| !k.is_expired_at(now)) {
                let e = k.expires_at.map_or(deadline, |e| e.min(deadline));
                k.expires_at = Some(e);
                retiring.push((k.id.clone(), e));
            }
            let new_key = mint(&c, now, expires_at)?;
            Ok((Some(c_with_key(c, &new_key)), Rotated { new_key, retiring }))
        })
        .await
    }
}

/// A fresh key for `c` whose display id is unique among the consumer's keys (so `revoke
/// --key-id` names exactly one key).
fn mint(c: &Consumer, now: i64, expires_at: Option<i64>) -> Result<NewKey, StoreError> {
    for _ in 0..8 {
        let key = format::generate().map_err(|e| StoreError::Unavailable(format!("no randomness: {e}")))?;
        let Some(id) = format::display_id(&key) else { continue };
        if c.keys.iter().any(|k| k.id == id) {
            continue;
        }
        return Ok(NewKey { key, id, consumer: c.name.clone(), created_at: now, expires_at, created_consumer: false });
    }
    Err(StoreError::Conflict)
}

fn c_with_key(mut c: Consumer, new: &NewKey) -> Consumer {
    c.keys.push(KeyRecord {
        hash: KeyHash::of(&new.key).to_hex(),
        id: new.id.clone(),
        created_at: new.created_at,
        expires_at: new.expires_at,
    });
    c
}

/// `abcdefgh`, `zpka_abcdefgh` and `zpka_abcdefgh…` all name the key `zpka_abcdefgh`.
fn normalize_id(id: &str) -> String {
    let id = id.trim().trim_end_matches('…').trim_end_matches("...");
    if id.starts_with(format::PREFIX) { id.to_owned() } else { format!("{}{id}", format::PREFIX) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn must<T, E: std::fmt::Display>(r: Result<T, E>) -> T {
        r.unwrap_or_else(|e| panic!("{e}"))
    }

    fn temp_file(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("specgate-keys-{tag}-{}-{:x}", std::process::id(), must(getrandom::u64())));
        must(std::fs::create_dir_all(&dir));
        dir.join("api-keys.json")
    }

    const TTL: Duration = Duration::from_secs(60);

    #[test]
    fn config_from_environment() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| (*v).to_owned())
        };
        assert_eq!(StoreConfig::from_lookup(env(&[])), StoreConfig::File("api-keys.json".into()));
        assert_eq!(StoreConfig::from_lookup(env(&[("API_KEYS_FILE", "/etc/k.json")])), StoreConfig::File("/etc/k.json".into()));
        assert_eq!(
            StoreConfig::from_lookup(env(&[("API_KEYS_FILE", "/etc/k.json"), ("API_KEYS_REDIS_URL", "redis://h:1")])),
            StoreConfig::Redis("redis://h:1".into())
        );
        assert_eq!(StoreConfig::from_lookup(env(&[("API_KEYS_REDIS_URL", " ")])), StoreConfig::File("api-keys.json".into()));
        assert_eq!(StoreConfig::Redis("redis://u:secret@h:6379/0".into()).describe(), "redis redis://***@h:6379/0");
        assert!(!format!("{:?}", StoreConfig::Redis("redis://:pw@h".into())).contains("pw"));
    }

    #[tokio::test]
    async fn create_lookup_expire_revoke() {
        let path = temp_file("crud");
        let store = must(KeyStore::open(&StoreConfig::File(path.clone()), "default"));
        let mut meta = Map::new();
        meta.insert("plan".into(), "gold".into());
        let created = must(
            store
                .create_key(CreateKey { consumer: "acme".into(), metadata: Some(meta), tags: vec!["partner".into()], expires_at: None })
                .await,
        );
        assert!(created.created_consumer);
        assert!(!format!("{created:?}").contains(&created.key));
        // The file holds the hash, never the key.
        let text = must(std::fs::read_to_string(&path));
        assert!(!text.contains(&created.key));
        assert!(text.contains(&KeyHash::of(&created.key).to_hex()));

        let Outcome::Valid(id) = must(store.authenticate(&created.key, TTL).await) else { panic!("not valid") };
        assert_eq!(id.consumer, "acme");
        assert_eq!(id.metadata["plan"], "gold");
        assert_eq!(id.key_id, created.id);
        assert_eq!(must(store.authenticate("zpka_nonsense", TTL).await), Outcome::Malformed);
        let other = must(format::generate());
        assert_eq!(must(store.authenticate(&other, TTL).await), Outcome::Unknown);

        // A second key for the same consumer, then revoke only the first.
        let second = must(store.create_key(CreateKey { consumer: "acme".into(), ..CreateKey::default() }).await);
        assert!(!second.created_consumer);
        let short_id = created.id.trim_start_matches("zpka_").to_owned();
        assert_eq!(must(store.revoke("acme", Some(&short_id)).await), 1);
        assert_eq!(must(store.authenticate(&created.key, TTL).await), Outcome::Unknown);
        assert!(matches!(must(store.authenticate(&second.key, TTL).await), Outcome::Valid(_)));
        let listed = must(store.list().await);
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].keys.len(), 1);
        assert_eq!(listed[0].tags, ["partner"]);

        // Unknown consumers and key ids are refused, not ignored.
        assert!(matches!(store.revoke("nobody", None).await, Err(StoreError::Refused(_))));
        assert!(matches!(store.revoke("acme", Some("zzzzzzzz")).await, Err(StoreError::Refused(_))));
        assert_eq!(must(store.revoke("acme", None).await), 1);
        assert_eq!(must(store.authenticate(&second.key, TTL).await), Outcome::Unknown);
    }

    #[tokio::test]
    async fn expired_keys_are_reported_as_expired() {
        let path = temp_file("expiry");
        let now = now_unix();
        let key = must(format::generate());
        let doc = serde_json::json!({"buckets": {"default": {"consumers": [
            {"name": "old", "keys": [{"hash": KeyHash::of(&key).to_hex(), "id": "zpka_x", "createdAt": now - 100, "expiresAt": now - 1}]}
        ]}}});
        must(std::fs::write(&path, doc.to_string()));
        let store = must(KeyStore::open(&StoreConfig::File(path), "default"));
        assert!(matches!(must(store.authenticate(&key, TTL).await), Outcome::Expired(id) if id.consumer == "old"));
        assert!(store.create_key(CreateKey { consumer: "x".into(), expires_at: Some(now - 5), ..CreateKey::default() }).await.is_err());
    }

    #[tokio::test]
    async fn rotation_keeps_old_keys_for_the_grace_period() {
        let path = temp_file("rotate");
        let store = must(KeyStore::open(&StoreConfig::File(path), "default"));
        let first = must(store.create_key(CreateKey { consumer: "acme".into(), ..CreateKey::default() }).await);
        let now = now_unix();
        let rotated = must(store.rotate("acme", Duration::from_secs(3600), None).await);
        assert_eq!(rotated.retiring.len(), 1);
        let (id, until) = &rotated.retiring[0];
        assert_eq!(id, &first.id);
        assert!((now + 3600..=now + 3602).contains(until));
        // Both keys work during the grace period; the old one now carries its expiry.
        let Outcome::Valid(old) = must(store.authenticate(&first.key, Duration::ZERO).await) else { panic!("old key refused") };
        assert_eq!(old.expires_at, Some(*until));
        assert!(matches!(must(store.authenticate(&rotated.new_key.key, TTL).await), Outcome::Valid(_)));
        // A grace of zero retires the previous keys at once.
        let again = must(store.rotate("acme", Duration::ZERO, None).await);
        assert!(matches!(must(store.authenticate(&rotated.new_key.key, Duration::ZERO).await), Outcome::Expired(_)));
        assert!(matches!(must(store.authenticate(&again.new_key.key, Duration::ZERO).await), Outcome::Valid(_)));
        assert!(matches!(store.rotate("nobody", Duration::ZERO, None).await, Err(StoreError::Refused(_))));
    }

    #[tokio::test]
    async fn buckets_are_isolated() {
        let path = temp_file("buckets");
        let config = StoreConfig::File(path);
        let a = must(KeyStore::open(&config, "default"));
        let b = must(KeyStore::open(&config, "partners"));
        let ka = must(a.create_key(CreateKey { consumer: "acme".into(), ..CreateKey::default() }).await);
        let kb = must(b.create_key(CreateKey { consumer: "acme".into(), ..CreateKey::default() }).await);
        a.refresh();
        b.refresh();
        assert!(matches!(must(a.authenticate(&ka.key, TTL).await), Outcome::Valid(_)));
        assert_eq!(must(a.authenticate(&kb.key, TTL).await), Outcome::Unknown);
        assert!(matches!(must(b.authenticate(&kb.key, TTL).await), Outcome::Valid(_)));
        assert_eq!(must(b.authenticate(&ka.key, TTL).await), Outcome::Unknown);
        // Revoking in one bucket leaves the namesake in the other alone.
        must(b.revoke("acme", None).await);
        a.refresh();
        assert!(matches!(must(a.authenticate(&ka.key, Duration::ZERO).await), Outcome::Valid(_)));
        assert!(KeyStore::open(&config, "bad:name").is_err());
    }

    #[tokio::test]
    async fn unknown_keys_are_cached_until_the_ttl_or_a_reload() {
        let path = temp_file("cache");
        let store = must(KeyStore::open(&StoreConfig::File(path.clone()), "default"));
        // A key that exists only in a file written behind the store's back, with the
        // fingerprint left as it was, shows what the cache answers.
        let key = must(format::generate());
        assert_eq!(must(store.authenticate(&key, TTL).await), Outcome::Unknown);
        assert_eq!(store.cache.len(), 1);
        let doc = must(serde_json::from_value::<super::super::KeysFile>(serde_json::json!({"buckets": {"default": {"consumers": [
            {"name": "late", "keys": [{"hash": KeyHash::of(&key).to_hex(), "id": "zpka_late", "createdAt": 0}]}
        ]}}})));
        let Backend::File(file) = &store.backend else { panic!("file backend expected") };
        file.swap_without_new_generation(&doc);
        // Negative result still cached: the store is not asked again.
        assert_eq!(must(store.authenticate(&key, TTL).await), Outcome::Unknown);
        // A reader with a shorter TTL than the entry's age sees the new data.
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(matches!(must(store.authenticate(&key, Duration::from_millis(10)).await), Outcome::Valid(_)));
        // A reload (new generation) also invalidates the cache.
        let other = must(format::generate());
        assert_eq!(must(store.authenticate(&other, TTL).await), Outcome::Unknown);
        must(std::fs::write(&path, serde_json::json!({"buckets": {"default": {"consumers": [
            {"name": "new", "keys": [{"hash": KeyHash::of(&other).to_hex(), "id": "zpka_new", "createdAt": 0}]}
        ]}}}).to_string()));
        store.refresh();
        assert!(matches!(must(store.authenticate(&other, TTL).await), Outcome::Valid(_)));
    }
}
