//! The in-process cache: an LRU of whole answers bounded in bytes (answer, key and a fixed
//! per-entry overhead), each entry with its store time and expiry. One mutex, held for a map
//! operation only (never across an await); an expired entry is dropped when it is found.

use bytes::Bytes;
use lru::LruCache;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Bytes charged per entry beyond its key and answer (map slot, list links, timestamps).
const ENTRY_OVERHEAD: usize = 96;

struct Entry {
    answer: Bytes,
    stored: Instant,
    expires: Option<Instant>,
}

struct Inner {
    lru: LruCache<String, Entry>,
    bytes: usize,
}

/// What a `put` did, for the metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PutOutcome {
    pub stored: bool,
    pub evicted: u64,
}

pub struct LocalStore {
    inner: Mutex<Inner>,
    max_bytes: usize,
}

fn cost(key: &str, answer: &Bytes) -> usize {
    key.len() + answer.len() + ENTRY_OVERHEAD
}

impl LocalStore {
    pub fn new(max_bytes: usize) -> LocalStore {
        LocalStore {
            inner: Mutex::new(Inner {
                lru: LruCache::unbounded(),
                bytes: 0,
            }),
            max_bytes,
        }
    }

    /// The entry for `key` if it is live and, with `max_age`, younger than that.
    pub fn get(&self, key: &str, max_age: Option<Duration>) -> Option<Bytes> {
        let now = Instant::now();
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let entry = inner.lru.get(key)?;
        if entry.expires.is_some_and(|e| e <= now) {
            if let Some(old) = inner.lru.pop(key) {
                inner.bytes -= cost(key, &old.answer);
            }
            return None;
        }
        if max_age.is_some_and(|m| now.duration_since(entry.stored) > m) {
            return None;
        }
        Some(entry.answer.clone())
    }

    /// Stores an answer, evicting the least recently used entries to stay within the bound.
    /// An answer larger than the whole bound is not stored.
    pub fn put(&self, key: String, answer: Bytes, ttl: Option<Duration>) -> PutOutcome {
        let size = cost(&key, &answer);
        if size > self.max_bytes {
            return PutOutcome::default();
        }
        let now = Instant::now();
        let entry = Entry {
            answer,
            stored: now,
            expires: ttl.map(|t| now + t),
        };
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(old) = inner.lru.pop(&key) {
            inner.bytes -= cost(&key, &old.answer);
        }
        let mut evicted = 0;
        while inner.bytes + size > self.max_bytes {
            match inner.lru.pop_lru() {
                Some((k, old)) => {
                    inner.bytes -= cost(&k, &old.answer);
                    evicted += 1;
                }
                None => break,
            }
        }
        inner.bytes += size;
        inner.lru.put(key, entry);
        PutOutcome {
            stored: true,
            evicted,
        }
    }

    /// Bytes held (answers, keys and overhead).
    pub fn bytes(&self) -> usize {
        self.inner.lock().map(|i| i.bytes).unwrap_or(0)
    }

    pub fn len(&self) -> usize {
        self.inner.lock().map(|i| i.lru.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bound_evicts_least_recently_used_first_and_ttl_and_max_age_apply() {
        let answer = Bytes::from(vec![b'x'; 1000]);
        let per = cost("k0", &answer);
        let store = LocalStore::new(per * 3);
        for k in ["k0", "k1", "k2"] {
            assert_eq!(store.put(k.into(), answer.clone(), None).evicted, 0);
        }
        // k0 used: k1 is now the least recent.
        assert!(store.get("k0", None).is_some());
        assert_eq!(store.put("k3".into(), answer.clone(), None).evicted, 1);
        assert!(store.get("k1", None).is_none());
        assert!(store.get("k0", None).is_some() && store.get("k3", None).is_some());
        assert_eq!((store.len(), store.bytes()), (3, per * 3));
        // Replacing an entry does not double count it.
        store.put("k3".into(), answer.clone(), None);
        assert_eq!(store.bytes(), per * 3);
        // Too big for the whole cache: not stored, nothing evicted.
        let huge = Bytes::from(vec![b'x'; per * 4]);
        assert_eq!(store.put("big".into(), huge, None), PutOutcome::default());

        store.put("t".into(), answer.clone(), Some(Duration::ZERO));
        assert!(store.get("t", None).is_none(), "expired");
        assert!(
            store.get("k0", Some(Duration::ZERO)).is_none(),
            "older than s-maxage"
        );
        assert!(store.get("k0", Some(Duration::from_secs(60))).is_some());
    }
}
