//! The in-process look-up cache in front of a store: positive and negative results, so that
//! neither valid nor unknown keys cost a store round trip on every request.
//!
//! Each reader brings its own time to live (policies sharing a store may differ), so entries
//! record when they were stored and a reader ignores entries older than its TTL. Entries also
//! record the store's generation: a file store bumps it on every reload, which makes edits of
//! the keys file take effect at once instead of after the TTL.
//!
//! Bounded: at most [`CAPACITY`] entries. Entries are queued in insertion order, which for one
//! TTL is also expiry order, so eviction pops from the front in O(1) amortized time; a flood
//! of unknown keys therefore costs no scans under the lock.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{Identity, KeyHash};

/// Entries kept at most (over all shards).
pub(crate) const CAPACITY: usize = 100_000;
/// Shards, so concurrent requests rarely wait on one another's lock.
const SHARDS: usize = 16;

/// A cached look-up result: `Some` for a known key, `None` for an unknown one.
pub(crate) type Cached = Option<Arc<Identity>>;

#[derive(Debug)]
pub(crate) struct KeyCache {
    shards: Vec<Mutex<Shard>>,
    per_shard: usize,
}

#[derive(Debug, Default)]
struct Shard {
    map: HashMap<KeyHash, Entry>,
    /// Insertion order; records whose `seq` no longer matches the map are stale.
    order: VecDeque<(KeyHash, u64)>,
    seq: u64,
    /// The longest TTL any reader used: entries older than this help nobody.
    max_ttl: Duration,
}

#[derive(Debug)]
struct Entry {
    value: Cached,
    at: Instant,
    generation: u64,
    seq: u64,
}

impl KeyCache {
    pub(crate) fn new(capacity: usize) -> Self {
        let per_shard = capacity.div_ceil(SHARDS).max(1);
        KeyCache { shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(), per_shard }
    }

    fn shard(&self, hash: &KeyHash) -> &Mutex<Shard> {
        // The hash is SHA-256 output, so its first byte spreads keys evenly.
        &self.shards[usize::from(hash.as_bytes()[0]) % SHARDS]
    }

    /// The cached result for `hash` if stored less than `ttl` ago under `generation`.
    pub(crate) fn get(&self, hash: &KeyHash, ttl: Duration, generation: u64) -> Option<Cached> {
        let shard = self.shard(hash).lock().unwrap_or_else(|e| e.into_inner());
        let e = shard.map.get(hash)?;
        (e.generation == generation && e.at.elapsed() < ttl).then(|| e.value.clone())
    }

    /// Stores a result.
    pub(crate) fn put(&self, hash: KeyHash, value: Cached, ttl: Duration, generation: u64) {
        let now = Instant::now();
        let mut guard = self.shard(&hash).lock().unwrap_or_else(|e| e.into_inner());
        let shard = &mut *guard;
        shard.max_ttl = shard.max_ttl.max(ttl);
        shard.seq += 1;
        let seq = shard.seq;
        shard.map.insert(hash, Entry { value, at: now, generation, seq });
        shard.order.push_back((hash, seq));
        while let Some(&(h, s)) = shard.order.front() {
            match shard.map.get(&h) {
                Some(e) if e.seq == s => {
                    if shard.map.len() > self.per_shard || now.duration_since(e.at) >= shard.max_ttl {
                        shard.map.remove(&h);
                    } else {
                        break;
                    }
                }
                // A stale queue record (its entry was replaced or evicted): drop the record.
                _ => {}
            }
            shard.order.pop_front();
        }
        // Stale records behind a live front could pile up when the same keys are stored over
        // and over; compact once they clearly outnumber the entries.
        if shard.order.len() > 2 * self.per_shard {
            let map = &shard.map;
            shard.order.retain(|(h, s)| map.get(h).is_some_and(|e| e.seq == *s));
        }
    }

    /// Entries held (tests).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().map(|s| s.map.len()).unwrap_or(0)).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(i: u32) -> KeyHash {
        KeyHash::of(&i.to_string())
    }

    #[test]
    fn hits_respect_ttl_and_generation() {
        let c = KeyCache::new(100);
        c.put(h(1), None, Duration::from_secs(60), 0);
        assert_eq!(c.get(&h(1), Duration::from_secs(60), 0), Some(None));
        // Another generation (the file was reloaded): a miss.
        assert_eq!(c.get(&h(1), Duration::from_secs(60), 1), None);
        // A reader with a zero TTL never sees it.
        assert_eq!(c.get(&h(1), Duration::ZERO, 0), None);
        assert_eq!(c.get(&h(2), Duration::from_secs(60), 0), None);
    }

    #[test]
    fn stays_bounded_under_a_flood() {
        let c = KeyCache::new(64);
        for i in 0..10_000 {
            c.put(h(i), None, Duration::from_secs(60), 0);
        }
        // Shards round their share up, so allow one extra per shard.
        assert!(c.len() <= 64 + SHARDS, "{}", c.len());
        // The newest entries survive.
        assert_eq!(c.get(&h(9_999), Duration::from_secs(60), 0), Some(None));
        // Re-storing one key many times does not grow the queue without bound.
        for _ in 0..10_000 {
            c.put(h(9_999), None, Duration::from_secs(60), 0);
        }
        for s in &c.shards {
            let s = s.lock().unwrap_or_else(|e| e.into_inner());
            assert!(s.order.len() <= 2 * c.per_shard + 1);
        }
    }

    #[test]
    fn expired_entries_leave() {
        let c = KeyCache::new(100);
        c.put(h(1), None, Duration::from_millis(1), 0);
        std::thread::sleep(Duration::from_millis(5));
        // Storing anything in the same shard drops what no reader can use any more.
        for i in 2..200 {
            c.put(h(i), None, Duration::from_millis(1), 0);
        }
        assert_eq!(c.get(&h(1), Duration::from_secs(60), 0), None);
    }
}
