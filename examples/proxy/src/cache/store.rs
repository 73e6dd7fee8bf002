//! The cache's memory: responses by key in moka (TinyLFU admission, so a
//! scan of one-off URLs does not push out what is asked for again and
//! again), each weighed by its bytes. moka keeps its weighted size near
//! its capacity but may run past it until its housekeeping catches up;
//! the byte bound here is exact: an entry reserves its weight before it
//! goes in and gives it back when moka reports it gone (evicted, replaced
//! or removed), so the bytes held never exceed `max_bytes`, and an entry
//! that finds no room, even after the housekeeping ran, is not stored.
//!
//! # Synchronization
//! `held` is one atomic word: reservations add with a compare-and-swap
//! that never passes the bound, moka's removal listener subtracts. Bytes
//! are reserved before the entry is visible and released after it is
//! gone, so at every instant the entries in the cache weigh at most
//! `held`, which is at most `max_bytes`. Relaxed suffices: the word
//! orders nothing else, only its own value matters, and read-modify-write
//! operations on one word are totally ordered.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use bytes::Bytes;
use hyper::StatusCode;
use hyper::header::{HeaderMap, HeaderName};

use super::counters::Counters;
use super::directives::ResponseDirectives;
use super::freshness::Age;

/// What every entry costs beyond its bytes: the key's and the slot's
/// own allocations and moka's node, roughly.
const OVERHEAD: u64 = 256;

/// A stored response.
#[derive(Debug)]
pub(crate) struct Stored {
    pub(crate) status: StatusCode,
    /// Its headers, hop-by-hop ones removed (`Age` is written at each
    /// use).
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
    pub(crate) age: Age,
    /// How long it is fresh for (§4.2.1).
    pub(crate) lifetime: std::time::Duration,
    pub(crate) said: ResponseDirectives,
}

impl Stored {
    fn weight(&self) -> u64 {
        let headers: usize = self
            .headers
            .iter()
            .map(|(name, value)| name.as_str().len() + value.len() + 32)
            .sum();
        self.body.len() as u64 + headers as u64
    }
}

/// What a key holds: a response, or (for a response that varies) the
/// header names its variants are keyed by and the generation of those
/// variants' keys, which a purge or invalidation of the URI moves on.
#[derive(Clone, Debug)]
pub(crate) enum Slot {
    Response(Arc<Stored>),
    Variants {
        names: Arc<[HeaderName]>,
        generation: u64,
    },
}

/// Head and key bytes an entry may weigh beside its body; an entry with
/// more is not stored.
const MAX_HEAD: u64 = 16 << 10;

/// The most an entry of `max_entry_bytes` of body may weigh.
pub(crate) fn entry_weight_bound(max_entry_bytes: u64) -> u64 {
    max_entry_bytes + MAX_HEAD + OVERHEAD
}

fn weight(key: &str, slot: &Slot) -> u64 {
    let own = match slot {
        Slot::Response(stored) => stored.weight(),
        Slot::Variants { names, .. } => names.iter().map(|n| n.as_str().len() as u64 + 16).sum(),
    };
    OVERHEAD + key.len() as u64 + own
}

/// The entries, bounded by their bytes.
pub(crate) struct Store {
    entries: moka::sync::Cache<String, Slot>,
    held: Arc<AtomicU64>,
    max_bytes: u64,
    /// The most one entry may weigh.
    max_entry: u64,
}

impl Store {
    /// A store of `max_bytes`, whose entries weigh at most `max_entry`.
    /// moka is given `max_entry` less: it evicts only past its capacity,
    /// so its capacity must leave room for one more entry under the
    /// bound, or a full store would refuse every new entry forever.
    pub(crate) fn new(max_bytes: u64, max_entry: u64) -> Self {
        let held = Arc::new(AtomicU64::new(0));
        let released = Arc::clone(&held);
        let capacity = max_bytes.saturating_sub(max_entry + OVERHEAD).max(1);
        let entries = moka::sync::Cache::builder()
            .max_capacity(capacity)
            .weigher(|key: &String, slot: &Slot| {
                u32::try_from(weight(key, slot)).unwrap_or(u32::MAX)
            })
            .eviction_listener(move |key: Arc<String>, slot: Slot, _cause| {
                // Relaxed: see Synchronization.
                released.fetch_sub(weight(&key, &slot), Relaxed);
            })
            .build();
        Self {
            entries,
            held,
            max_bytes,
            max_entry,
        }
    }

    pub(crate) fn get(&self, key: &str) -> Option<Slot> {
        self.entries.get(key)
    }

    /// Stores `slot` at `key` if its bytes fit under the bound; `false`
    /// when they do not, even once moka's housekeeping has run, or when
    /// the entry weighs more than one may.
    pub(crate) fn insert(&self, key: String, slot: Slot) -> bool {
        let weight = weight(&key, &slot);
        if weight > self.max_entry {
            return false;
        }
        for attempt in 0..2 {
            // Relaxed: see Synchronization.
            let reserved = self
                .held
                .fetch_update(Relaxed, Relaxed, |held| {
                    (held + weight <= self.max_bytes).then_some(held + weight)
                })
                .is_ok();
            if reserved {
                self.entries.insert(key, slot);
                return true;
            }
            if attempt == 0 {
                // Evictions and replacements moka has not reported yet.
                self.entries.run_pending_tasks();
            }
        }
        false
    }

    /// [`insert`](Self::insert), counted as stored or not.
    pub(crate) fn keep(&self, key: String, slot: Slot, counters: &Counters) {
        if self.insert(key, slot) {
            counters.stored.fetch_add(1, Relaxed);
        } else {
            counters.not_stored.fetch_add(1, Relaxed);
        }
    }

    pub(crate) fn remove(&self, key: &str) {
        self.entries.invalidate(key);
    }

    pub(crate) fn clear(&self) {
        self.entries.invalidate_all();
        self.entries.run_pending_tasks();
    }

    /// Bytes held by entries (reserved, not yet reported gone).
    pub(crate) fn bytes(&self) -> u64 {
        self.held.load(Relaxed)
    }

    pub(crate) fn entries(&self) -> u64 {
        self.entries.entry_count()
    }

    /// Lets moka catch up on its housekeeping (tests, /metrics).
    pub(crate) fn settle(&self) {
        self.entries.run_pending_tasks();
    }

    /// The bytes of the entries present, counted one by one (tests).
    #[cfg(test)]
    pub(crate) fn counted(&self) -> u64 {
        self.entries
            .iter()
            .map(|(key, slot)| weight(&key, &slot))
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(bytes: usize) -> Slot {
        Slot::Response(Arc::new(Stored {
            status: StatusCode::OK,
            headers: HeaderMap::new(),
            body: Bytes::from(vec![b'x'; bytes]),
            age: Age::at_arrival(
                &HeaderMap::new(),
                std::time::SystemTime::now(),
                std::time::SystemTime::now(),
            ),
            lifetime: std::time::Duration::from_secs(60),
            said: ResponseDirectives::default(),
        }))
    }

    // 10^5 distinct entries through a 1 MiB store from two threads: the
    // bytes held never pass the bound, and once moka has caught up they
    // are exactly the bytes of the entries present (every eviction,
    // replacement and refused admission was given back).
    #[test]
    fn the_byte_bound_is_never_exceeded_and_nothing_leaks() {
        const MAX: u64 = 1 << 20;
        let store = Arc::new(Store::new(MAX, entry_weight_bound(4_000)));
        let threads: Vec<_> = (0..2)
            .map(|t| {
                let store = Arc::clone(&store);
                std::thread::spawn(move || {
                    let mut peak = 0;
                    for i in 0..50_000u64 {
                        let key = format!("http://a.test/{t}/{i}");
                        store.insert(key, response(((i * 7919) % 4000) as usize));
                        // Some keys again and again (hot), replaced too.
                        store.insert(format!("http://a.test/hot/{}", i % 16), response(100));
                        peak = peak.max(store.bytes());
                        assert!(store.bytes() <= MAX);
                    }
                    peak
                })
            })
            .collect();
        let peak = threads
            .into_iter()
            .map(|t| t.join().expect("the thread"))
            .max()
            .unwrap_or(0);
        store.settle();
        assert!(peak <= MAX, "{peak}");
        assert!(store.bytes() > MAX / 2, "it fills: {}", store.bytes());
        assert_eq!(store.bytes(), store.counted(), "nothing leaks");
        // The hot keys stayed.
        let hot = (0..16)
            .filter(|i| store.get(&format!("http://a.test/hot/{i}")).is_some())
            .count();
        assert!(hot >= 14, "{hot} of 16 hot keys kept");
        store.clear();
        assert_eq!(store.bytes(), 0);
    }
}
