//! The file store: one JSON file holding every bucket, loaded into an in-memory snapshot that
//! a background task replaces when the file changes.
//!
//! Layout: `{"buckets": {"default": {"consumers": [<Consumer>, ...]}}}` (see
//! [`crate::keys`] for a consumer). Unknown fields are refused so that a misspelled
//! `expiresAt` cannot silently make a key immortal.
//!
//! Reloading: every [`POLL_INTERVAL`] the watcher compares the file's size, modification
//! time and (on Unix) inode with what it last read; on a change it reads and validates the
//! whole file and swaps the snapshot. A malformed or vanished file keeps the previous
//! snapshot and logs an error, so a bad edit never locks every client out.
//!
//! Writing (`specgate keys`): the new content goes to a temporary file in the same directory
//! that is then renamed over the old one, so a running gateway reads the old file or the new
//! one, never half of one. Before the rename the file is read again; if someone else changed
//! it in between, the edit is redone on top of their version instead of overwriting it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::store::StoreError;
use super::{Consumer, Identity, KeyHash, validate_bucket, validate_consumer};

/// How often the watcher looks at the file.
pub(crate) const POLL_INTERVAL: Duration = Duration::from_secs(1);
/// The largest keys file read (a bound on the memory one reload may take).
const MAX_FILE_BYTES: u64 = 64 * 1024 * 1024;
/// Attempts at an edit when other writers keep changing the file.
const MAX_ATTEMPTS: usize = 5;

/// The keys file: every bucket by name.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeysFile {
    /// Buckets by name.
    #[serde(default)]
    pub buckets: BTreeMap<String, KeysFileBucket>,
}

/// One bucket of the keys file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeysFileBucket {
    /// The bucket's consumers.
    #[serde(default)]
    pub consumers: Vec<Consumer>,
}

impl KeysFile {
    /// Parses and validates the file's content.
    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        let doc: KeysFile = serde_json::from_slice(bytes).map_err(|e| format!("not a valid keys file: {e}"))?;
        doc.validate()?;
        Ok(doc)
    }

    /// Checks names and hashes, and that no consumer name or key hash repeats in a bucket.
    pub fn validate(&self) -> Result<(), String> {
        for (bucket, b) in &self.buckets {
            validate_bucket(bucket)?;
            let mut names = HashSet::new();
            let mut hashes = HashSet::new();
            for c in &b.consumers {
                validate_consumer(c).map_err(|e| format!("bucket `{bucket}`: {e}"))?;
                if !names.insert(c.name.as_str()) {
                    return Err(format!("bucket `{bucket}`: consumer `{}` appears twice", c.name));
                }
                for k in &c.keys {
                    // One key mapping to two consumers would make the caller's identity depend
                    // on map order.
                    if !hashes.insert(k.hash.as_str()) {
                        return Err(format!("bucket `{bucket}`: key `{}` of consumer `{}` appears twice", k.id, c.name));
                    }
                }
            }
        }
        Ok(())
    }

    /// The file's content: pretty JSON with a final newline, for diffs and hand edits.
    pub fn to_json(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).unwrap_or_default();
        v.push(b'\n');
        v
    }

    fn counts(&self) -> (usize, usize) {
        let consumers = self.buckets.values().map(|b| b.consumers.len()).sum();
        let keys = self.buckets.values().flat_map(|b| &b.consumers).map(|c| c.keys.len()).sum();
        (consumers, keys)
    }
}

/// What look-ups read: identities by key hash, per bucket.
#[derive(Debug, Default)]
struct Snapshot {
    buckets: HashMap<String, HashMap<KeyHash, Arc<Identity>>>,
}

impl Snapshot {
    fn index(doc: &KeysFile) -> Self {
        let mut buckets = HashMap::with_capacity(doc.buckets.len());
        for (name, b) in &doc.buckets {
            let mut by_hash = HashMap::new();
            for c in &b.consumers {
                let metadata = Value::Object(c.metadata.clone());
                for k in &c.keys {
                    // `validate` has checked every hash; a bad one would only lose that key.
                    let Some(hash) = KeyHash::from_hex(&k.hash) else { continue };
                    let identity = Identity {
                        consumer: c.name.clone(),
                        metadata: metadata.clone(),
                        tags: c.tags.clone(),
                        key_id: k.id.clone(),
                        expires_at: k.expires_at,
                        hash,
                    };
                    by_hash.insert(hash, Arc::new(identity));
                }
            }
            buckets.insert(name.clone(), by_hash);
        }
        Snapshot { buckets }
    }
}

/// What identifies one version of the file without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Fingerprint {
    len: u64,
    modified: Option<SystemTime>,
    /// An atomic rename always brings a new inode, even when size and time look the same.
    inode: u64,
}

fn fingerprint(path: &Path) -> Option<Fingerprint> {
    let meta = std::fs::metadata(path).ok()?;
    #[cfg(unix)]
    let inode = std::os::unix::fs::MetadataExt::ino(&meta);
    #[cfg(not(unix))]
    let inode = 0;
    Some(Fingerprint { len: meta.len(), modified: meta.modified().ok(), inode })
}

/// A keys file and its live snapshot.
#[derive(Debug)]
pub(crate) struct FileBackend {
    path: PathBuf,
    snapshot: RwLock<Arc<Snapshot>>,
    /// Bumped on every reload, so caches drop what they learned from the old snapshot.
    generation: AtomicU64,
    /// The version last read (also serializes reloads).
    seen: Mutex<Option<Fingerprint>>,
}

impl FileBackend {
    /// Loads the file. A missing file is an empty store (it may be created later); a
    /// malformed one is an error, so a gateway does not start with a broken configuration.
    pub(crate) fn open(path: PathBuf) -> Result<Arc<Self>, StoreError> {
        let seen = fingerprint(&path);
        let snapshot = match read_limited(&path).map_err(|e| StoreError::Unavailable(format!("{}: {e}", path.display())))? {
            Some(bytes) => {
                let doc = KeysFile::parse(&bytes).map_err(|e| StoreError::Invalid(format!("{}: {e}", path.display())))?;
                let (consumers, keys) = doc.counts();
                tracing::info!(path = %path.display(), consumers, keys, "API keys loaded");
                Snapshot::index(&doc)
            }
            None => {
                tracing::warn!(path = %path.display(), "API keys file not found; every key is refused until it exists");
                Snapshot::default()
            }
        };
        Ok(Arc::new(FileBackend {
            path,
            snapshot: RwLock::new(Arc::new(snapshot)),
            generation: AtomicU64::new(0),
            seen: Mutex::new(seen),
        }))
    }

    /// Starts the background watcher on the current Tokio runtime (none: the file is read
    /// once, which is all a short-lived command needs). The task ends with the store.
    pub(crate) fn watch(self: &Arc<Self>) {
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            tracing::debug!(path = %self.path.display(), "no Tokio runtime; the API keys file is not watched");
            return;
        };
        let weak: Weak<Self> = Arc::downgrade(self);
        handle.spawn(async move {
            let mut tick = tokio::time::interval(POLL_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            // The first tick completes at once; the file was just read.
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(this) = weak.upgrade() else { break };
                // Reading and parsing a large file must not stall a runtime worker.
                if let Err(e) = tokio::task::spawn_blocking(move || this.poll()).await {
                    tracing::error!(error = %e, "API keys file watcher failed; trying again");
                }
            }
        });
    }

    /// The identity filed under `hash` in `bucket`, if any.
    pub(crate) fn lookup(&self, bucket: &str, hash: &KeyHash) -> Option<Arc<Identity>> {
        let snapshot = self.snapshot.read().unwrap_or_else(|e| e.into_inner()).clone();
        snapshot.buckets.get(bucket)?.get(hash).cloned()
    }

    /// Replaces the snapshot as a reload would, but keeps the generation, so tests can see
    /// what the cache answers for data it has not been told about.
    #[cfg(test)]
    pub(crate) fn swap_without_new_generation(&self, doc: &KeysFile) {
        *self.snapshot.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(Snapshot::index(doc));
    }

    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Reloads the file if it changed since it was last read.
    pub(crate) fn poll(&self) {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        // Taken before reading: if the file changes while it is read, the next poll sees a
        // newer fingerprint and reads again, so no version is missed.
        let now = fingerprint(&self.path);
        if now == *seen {
            return;
        }
        *seen = now;
        let path = self.path.display();
        let bytes = match read_limited(&self.path) {
            Ok(Some(b)) => b,
            Ok(None) => {
                tracing::error!(path = %path, "API keys file disappeared; keeping the keys loaded before");
                return;
            }
            Err(e) => {
                tracing::error!(path = %path, error = %e, "cannot read the API keys file; keeping the keys loaded before");
                return;
            }
        };
        match KeysFile::parse(&bytes) {
            Ok(doc) => {
                let (consumers, keys) = doc.counts();
                *self.snapshot.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(Snapshot::index(&doc));
                self.generation.fetch_add(1, Ordering::AcqRel);
                tracing::info!(path = %path, consumers, keys, "API keys reloaded");
            }
            Err(e) => {
                tracing::error!(path = %path, error = %e, "invalid API keys file; keeping the keys loaded before");
            }
        }
    }

    /// Reads the file as it is now (not the snapshot): management commands must see every
    /// consumer, including ones the snapshot has not picked up yet.
    pub(crate) fn read(&self) -> Result<KeysFile, StoreError> {
        match read_limited(&self.path).map_err(|e| self.unavailable(e))? {
            Some(bytes) => KeysFile::parse(&bytes).map_err(|e| StoreError::Invalid(format!("{}: {e}", self.path.display()))),
            None => Ok(KeysFile::default()),
        }
    }

    /// Applies `edit` to consumer `name` of `bucket` and writes the file atomically.
    /// `edit` gets the consumer as stored (`None`: absent) and returns what to store
    /// (`None`: remove) with a result; it may run more than once when writers race.
    pub(crate) fn modify<R>(
        &self,
        bucket: &str,
        name: &str,
        mut edit: impl FnMut(Option<Consumer>) -> Result<(Option<Consumer>, R), StoreError>,
    ) -> Result<R, StoreError> {
        for _ in 0..MAX_ATTEMPTS {
            let original = read_limited(&self.path).map_err(|e| self.unavailable(e))?;
            let mut doc = match &original {
                Some(bytes) => KeysFile::parse(bytes).map_err(|e| StoreError::Invalid(format!("{}: {e}", self.path.display())))?,
                None => KeysFile::default(),
            };
            let consumers = &mut doc.buckets.entry(bucket.to_owned()).or_default().consumers;
            let index = consumers.iter().position(|c| c.name == name);
            let (updated, result) = edit(index.map(|i| consumers[i].clone()))?;
            match (index, updated) {
                (Some(i), Some(c)) => consumers[i] = c,
                (Some(i), None) => {
                    consumers.remove(i);
                }
                (None, Some(c)) => consumers.push(c),
                (None, None) => {}
            }
            doc.validate().map_err(StoreError::Refused)?;
            let bytes = doc.to_json();
            // Someone else wrote since we read: redo the edit on their version rather than
            // losing it (a lost revocation would leave a key working).
            if read_limited(&self.path).map_err(|e| self.unavailable(e))? != original {
                continue;
            }
            write_atomic(&self.path, &bytes).map_err(|e| self.unavailable(e))?;
            self.poll();
            return Ok(result);
        }
        Err(StoreError::Conflict)
    }

    fn unavailable(&self, e: std::io::Error) -> StoreError {
        StoreError::Unavailable(format!("{}: {e}", self.path.display()))
    }
}

/// The file's bytes (`None` when it does not exist), refusing files over [`MAX_FILE_BYTES`].
fn read_limited(path: &Path) -> std::io::Result<Option<Vec<u8>>> {
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(std::io::Error::other(format!("the file is larger than {MAX_FILE_BYTES} bytes")));
    }
    Ok(Some(bytes))
}

/// Replaces `path` with `bytes` through a temporary file and a rename.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "the keys file path has no file name"))?;
    let nonce = getrandom::u64().unwrap_or_else(|_| u64::from(std::process::id()));
    let tmp = dir.join(format!(".{}.{nonce:016x}.tmp", name.to_string_lossy()));
    let result = (|| {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        // The file names consumers and their metadata: private unless the old file was not.
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut f = options.open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        if let Ok(meta) = std::fs::metadata(path) {
            std::fs::set_permissions(&tmp, meta.permissions())?;
        }
        drop(f);
        std::fs::rename(&tmp, path)?;
        // Make the rename itself durable (best effort: not every platform can sync a directory).
        #[cfg(unix)]
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use serde_json::json;

    use super::*;
    use crate::keys::{KeyStore, Outcome, StoreConfig, format};

    fn must<T, E: std::fmt::Display>(r: Result<T, E>) -> T {
        r.unwrap_or_else(|e| panic!("{e}"))
    }

    fn temp_file(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("specgate-file-{tag}-{}-{:x}", std::process::id(), must(getrandom::u64())));
        must(std::fs::create_dir_all(&dir));
        dir.join("api-keys.json")
    }

    /// A keys file with one consumer per `(name, key)`.
    fn doc(consumers: &[(&str, &str)]) -> String {
        let consumers: Vec<_> = consumers
            .iter()
            .map(|(name, key)| json!({"name": name, "metadata": {"n": name}, "keys": [{"hash": KeyHash::of(key).to_hex(), "id": format::display_id(key), "createdAt": 0}]}))
            .collect();
        json!({"buckets": {"default": {"consumers": consumers}}}).to_string()
    }

    async fn outcome(store: &KeyStore, key: &str) -> Outcome {
        must(store.authenticate(key, Duration::ZERO).await)
    }

    /// Waits (at most 5 s, several poll intervals) until `key` gives the wanted outcome.
    async fn eventually(store: &KeyStore, key: &str, valid: bool) {
        let start = Instant::now();
        loop {
            if matches!(outcome(store, key).await, Outcome::Valid(_)) == valid {
                return;
            }
            assert!(start.elapsed() < Duration::from_secs(5), "the watcher did not pick the change up");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    #[tokio::test]
    async fn watcher_reloads_changes_and_keeps_old_data_on_a_bad_file() {
        let path = temp_file("watch");
        let a = must(format::generate());
        let b = must(format::generate());
        must(std::fs::write(&path, doc(&[("a", &a)])));
        let store = must(KeyStore::open(&StoreConfig::File(path.clone()), "default"));
        assert!(matches!(outcome(&store, &a).await, Outcome::Valid(_)));
        assert_eq!(outcome(&store, &b).await, Outcome::Unknown);

        // An in-place edit (as an editor would make) is picked up by the background poll.
        must(std::fs::write(&path, doc(&[("a", &a), ("b", &b)])));
        eventually(&store, &b, true).await;

        // A malformed file keeps the previous snapshot...
        let generation = store_generation(&store);
        must(std::fs::write(&path, "{\"buckets\": {\"default\": {\"consumers\": [ {\"name\": "));
        tokio::time::sleep(POLL_INTERVAL * 2 + Duration::from_millis(200)).await;
        assert!(matches!(outcome(&store, &a).await, Outcome::Valid(_)));
        assert!(matches!(outcome(&store, &b).await, Outcome::Valid(_)));
        assert_eq!(store_generation(&store), generation);

        // ...and so does a well-formed but invalid one (a key on two consumers)...
        must(std::fs::write(&path, doc(&[("a", &a), ("c", &a)])));
        tokio::time::sleep(POLL_INTERVAL * 2 + Duration::from_millis(200)).await;
        assert!(matches!(outcome(&store, &b).await, Outcome::Valid(_)));

        // ...until a good version arrives.
        must(std::fs::write(&path, doc(&[("b", &b)])));
        eventually(&store, &a, false).await;
        assert!(matches!(outcome(&store, &b).await, Outcome::Valid(_)));
    }

    fn store_generation(store: &KeyStore) -> u64 {
        store.generation()
    }

    #[tokio::test]
    async fn a_missing_file_is_an_empty_store_until_created() {
        let path = temp_file("missing");
        let store = must(KeyStore::open(&StoreConfig::File(path.clone()), "default"));
        let a = must(format::generate());
        assert_eq!(outcome(&store, &a).await, Outcome::Unknown);
        must(write_atomic(&path, doc(&[("a", &a)]).as_bytes()));
        eventually(&store, &a, true).await;
    }

    #[test]
    fn a_malformed_file_fails_start_up() {
        let path = temp_file("bad");
        must(std::fs::write(&path, "{\"buckets\": {\"default\": {\"consumers\": [{\"name\": \"x\", \"expiresat\": 1}]}}}"));
        let err = KeyStore::open(&StoreConfig::File(path), "default").err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("unknown field"), "{err}");
    }

    #[test]
    fn validation_refuses_ambiguous_files() {
        let a = must(format::generate());
        assert!(KeysFile::parse(doc(&[("a", &a)]).as_bytes()).is_ok());
        let twice = KeysFile::parse(doc(&[("a", &a), ("b", &a)]).as_bytes()).err().unwrap_or_default();
        assert!(twice.contains("appears twice"), "{twice}");
        let b = must(format::generate());
        let dup = KeysFile::parse(doc(&[("a", &a), ("a", &b)]).as_bytes()).err().unwrap_or_default();
        assert!(dup.contains("consumer `a` appears twice"), "{dup}");
        let bad_hash = json!({"buckets": {"default": {"consumers": [{"name": "a", "keys": [{"hash": "ABC", "id": "zpka_x", "createdAt": 0}]}]}}});
        assert!(KeysFile::parse(bad_hash.to_string().as_bytes()).is_err());
        let bad_bucket = json!({"buckets": {"a:b": {"consumers": []}}});
        assert!(KeysFile::parse(bad_bucket.to_string().as_bytes()).is_err());
        let not_object = json!({"buckets": {"default": {"consumers": [{"name": "a", "metadata": [1]}]}}});
        assert!(KeysFile::parse(not_object.to_string().as_bytes()).is_err());
    }

    #[test]
    fn atomic_writes_keep_permissions_and_leave_no_temporary_files() {
        let path = temp_file("atomic");
        must(write_atomic(&path, b"{}"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = must(std::fs::metadata(&path)).permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "new files are private");
            must(std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)));
            must(write_atomic(&path, b"{\"buckets\": {}}"));
            let mode = must(std::fs::metadata(&path)).permissions().mode() & 0o777;
            assert_eq!(mode, 0o640, "a replaced file keeps its mode");
        }
        assert_eq!(must(std::fs::read_to_string(&path)), "{\"buckets\": {}}");
        let dir = path.parent().unwrap_or(Path::new("."));
        let entries: Vec<_> = must(std::fs::read_dir(dir)).filter_map(Result::ok).map(|e| e.file_name()).collect();
        assert_eq!(entries.len(), 1, "{entries:?}");
    }
}
