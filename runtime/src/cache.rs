//! `MemoryCache`: an in-process key/value cache with a time to live per entry and a bounded
//! number of entries (the oldest-expiring entries go first when it is full).

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A cache of `V` by `K` with per-entry expiry.
#[derive(Debug)]
pub struct MemoryCache<K, V> {
    entries: Mutex<HashMap<K, (V, Instant)>>,
    capacity: usize,
}

impl<K: Hash + Eq + Clone, V: Clone> MemoryCache<K, V> {
    /// A cache holding at most `capacity` entries.
    pub fn new(capacity: usize) -> Self {
        MemoryCache { entries: Mutex::new(HashMap::new()), capacity: capacity.max(1) }
    }

    /// The value of `key` if present and not expired.
    pub fn get(&self, key: &K) -> Option<V> {
        let mut map = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        match map.get(key) {
            Some((v, exp)) if *exp > Instant::now() => Some(v.clone()),
            Some(_) => {
                map.remove(key);
                None
            }
            None => None,
        }
    }

    /// Stores `value` for `ttl`.
    pub fn put(&self, key: K, value: V, ttl: Duration) {
        let mut map = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if map.len() >= self.capacity && !map.contains_key(&key) {
            map.retain(|_, (_, exp)| *exp > now);
            if map.len() >= self.capacity {
                // Still full of live entries: drop the one that expires first.
                if let Some(k) = map.iter().min_by_key(|(_, (_, exp))| *exp).map(|(k, _)| k.clone()) {
                    map.remove(&k);
                }
            }
        }
        map.insert(key, (value, now + ttl));
    }

    /// Removes `key`.
    pub fn delete(&self, key: &K) {
        self.entries.lock().unwrap_or_else(|e| e.into_inner()).remove(key);
    }

    /// Number of entries (expired ones included until they are next touched).
    pub fn len(&self) -> usize {
        self.entries.lock().map(|m| m.len()).unwrap_or(0)
    }

    /// Whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expires_and_bounds() {
        let c = MemoryCache::new(2);
        c.put("a", 1, Duration::from_secs(60));
        c.put("b", 2, Duration::from_millis(0));
        assert_eq!(c.get(&"a"), Some(1));
        assert_eq!(c.get(&"b"), None);
        c.put("c", 3, Duration::from_secs(30));
        c.put("d", 4, Duration::from_secs(90));
        assert!(c.len() <= 2);
        assert_eq!(c.get(&"d"), Some(4));
    }
}
