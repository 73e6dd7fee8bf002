//! A table of per-key state in a fixed amount of memory, allocated once:
//! the keyed limiters' store (nginx's zone, HAProxy's stick table).
//!
//! Keys are stored as 62 bits of a keyed 64-bit hash (the tag), not as
//! themselves, so a slot is two words whatever the key. Two keys share an
//! entry only when their tags are equal: the chance that any two of k keys
//! do is about k^2 / 2^63 (10^-7 at 10^6 keys), and the hash key is random
//! per limiter, so no client can aim for another's tag.
//!
//! A key lives in one set of [`WAYS`] slots, chosen by its hash. A key that
//! is not there takes, in this order, an empty slot of its set, a slot whose
//! entry is idle (carries no information: dropping it changes no decision),
//! or the live entry of lowest rank; entries that rank `None` (permits
//! still out) are never evicted, and a set of them is full.
//!
//! # Synchronization
//!
//! Each set has a lock: bit 63 of its first tag word. A set's tags and
//! values are read and written only by the lock's holder, so those accesses
//! are Relaxed; the lock is taken with an Acquire `fetch_or` that pairs
//! with the Release `fetch_and` freeing it, so each holder sees every write
//! of the holders before. Every write of the lock word is a
//! read-modify-write (the holder's `swap` of the first tag too), so the
//! release sequence of each unlock reaches the next `fetch_or` unbroken
//! (loom's model checker rejects a plain store mixed in). No user code runs under a lock (keys are hashed
//! before), so no panic can leave a set locked. A holder that is
//! descheduled holds up only its own set's keys; waiters spin briefly, then
//! yield and sleep. The loom model `keyed_limiter_spends_capacity_once`
//! races two checks of one key for its last request.

use std::hash::{Hash, Hasher};

use siphasher::sip::SipHasher13;

use crate::sync::Backoff;
use crate::sync::atomic::{AtomicU64, Ordering};

/// Slots in a set: eight tags fill one cache line, eight one-word values
/// the next.
pub(crate) const WAYS: usize = 8;

/// Bit 63 of a set's first tag: the set's lock. Tags never have it.
const LOCK: u64 = 1 << 63;

/// A slot no key holds.
const EMPTY: u64 = 0;

/// How a keyed limiter hashes its keys: keyed SipHash-1-3, random keys per
/// limiter.
#[derive(Clone, Copy, Debug)]
pub(crate) struct KeyHasher {
    keys: (u64, u64),
}

impl KeyHasher {
    pub(crate) fn random() -> Self {
        Self {
            keys: (rand::random(), rand::random()),
        }
    }

    #[inline]
    pub(crate) fn hash<K: Hash + ?Sized>(&self, key: &K) -> u64 {
        let mut hasher = SipHasher13::new_with_keys(self.keys.0, self.keys.1);
        key.hash(&mut hasher);
        hasher.finish()
    }
}

/// How a table judges the entries it holds.
pub(crate) trait Entries<const V: usize> {
    /// The entry carries no information at `now`: a fresh (all-zero) entry
    /// would decide the same.
    fn idle(&self, value: &[u64; V], now: u64) -> bool;

    /// Live entries are evicted lowest rank first; `None` pins the entry.
    fn rank(&self, value: &[u64; V], now: u64) -> Option<u64>;
}

/// What an update does with the entry it was given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Write {
    /// Leave the table as it was (a fresh entry is not stored).
    Keep,
    /// Store the entry (taking a slot for a fresh one).
    Store,
    /// Drop the key's slot.
    Remove,
}

/// The key's set is full of pinned entries: the fresh entry was not stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Full;

/// Evictions so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Evictions {
    pub(crate) idle: u64,
    pub(crate) live: u64,
}

#[repr(align(64))]
struct SlotSet<const V: usize> {
    tags: [AtomicU64; WAYS],
    values: [[AtomicU64; V]; WAYS],
}

/// A fixed number of sets of [`WAYS`] slots, each slot a tag and `V`
/// words of state.
pub(crate) struct Table<const V: usize> {
    sets: Box<[SlotSet<V>]>,
    /// Relaxed counters: statistics only.
    evicted_idle: AtomicU64,
    evicted_live: AtomicU64,
}

impl<const V: usize> Table<V> {
    /// Bytes a set takes.
    pub(crate) const SET_BYTES: usize = std::mem::size_of::<SlotSet<V>>();

    /// A table of `sets` sets (at least one), or `None` if the memory
    /// cannot be had.
    pub(crate) fn with_sets(sets: usize) -> Option<Self> {
        let mut table = Vec::new();
        table.try_reserve_exact(sets.max(1)).ok()?;
        table.extend((0..sets.max(1)).map(|_| SlotSet {
            tags: std::array::from_fn(|_| AtomicU64::new(EMPTY)),
            values: std::array::from_fn(|_| std::array::from_fn(|_| AtomicU64::new(0))),
        }));
        Some(Self {
            sets: table.into_boxed_slice(),
            evicted_idle: AtomicU64::new(0),
            evicted_live: AtomicU64::new(0),
        })
    }

    /// Slots in all.
    pub(crate) fn slots(&self) -> usize {
        self.sets.len() * WAYS
    }

    /// Bytes the sets take.
    pub(crate) fn bytes(&self) -> usize {
        self.sets.len() * Self::SET_BYTES
    }

    /// Keys held now: a scan without locks, exact when no update runs.
    pub(crate) fn occupied(&self) -> usize {
        self.sets
            .iter()
            .flat_map(|set| &set.tags)
            // Relaxed: a count for statistics, read without the lock.
            .filter(|tag| tag.load(Ordering::Relaxed) & !LOCK != EMPTY)
            .count()
    }

    pub(crate) fn evictions(&self) -> Evictions {
        Evictions {
            // Relaxed: statistics.
            idle: self.evicted_idle.load(Ordering::Relaxed),
            live: self.evicted_live.load(Ordering::Relaxed),
        }
    }

    /// Runs `update` on the entry of the key hashed to `hash`, under its
    /// set's lock: the stored entry, or a fresh one (all zero, `fresh`
    /// true) if the key has none. The returned [`Write`] says what becomes
    /// of it.
    ///
    /// # Errors
    ///
    /// [`Full`] when a fresh entry was to be stored and every slot of its
    /// set is pinned; the table is unchanged.
    #[inline]
    pub(crate) fn update<R>(
        &self,
        hash: u64,
        now: u64,
        entries: &impl Entries<V>,
        update: impl FnOnce(&mut [u64; V], bool) -> (R, Write),
    ) -> Result<R, Full> {
        let tag = (hash & !LOCK) | 1;
        // Lemire's reduction: the high bits of the hash pick the set.
        let index = ((u128::from(hash) * self.sets.len() as u128) >> 64) as usize;
        let set = self.sets[index].lock();
        if let Some(way) = (0..WAYS).find(|&way| set.tag(way) == tag) {
            let mut value = set.value(way);
            let (result, write) = update(&mut value, false);
            match write {
                Write::Keep => {}
                Write::Store => set.set_value(way, &value),
                Write::Remove => set.set_tag(way, EMPTY),
            }
            return Ok(result);
        }
        let mut value = [0; V];
        let (result, write) = update(&mut value, true);
        if write != Write::Store {
            return Ok(result);
        }
        let way = self.victim(&set, now, entries).ok_or(Full)?;
        set.set_tag(way, tag);
        set.set_value(way, &value);
        Ok(result)
    }

    /// The slot a new key takes: empty, else idle, else the live entry of
    /// lowest rank.
    fn victim(&self, set: &SetGuard<'_, V>, now: u64, entries: &impl Entries<V>) -> Option<usize> {
        if let Some(way) = (0..WAYS).find(|&way| set.tag(way) == EMPTY) {
            return Some(way);
        }
        let mut lowest: Option<(u64, usize)> = None;
        for way in 0..WAYS {
            let value = set.value(way);
            if entries.idle(&value, now) {
                // Relaxed: statistics.
                self.evicted_idle.fetch_add(1, Ordering::Relaxed);
                return Some(way);
            }
            if let Some(rank) = entries.rank(&value, now) {
                if lowest.is_none_or(|(low, _)| rank < low) {
                    lowest = Some((rank, way));
                }
            }
        }
        let (_, way) = lowest?;
        // Relaxed: statistics.
        self.evicted_live.fetch_add(1, Ordering::Relaxed);
        Some(way)
    }
}

impl<const V: usize> SlotSet<V> {
    #[inline]
    fn lock(&self) -> SetGuard<'_, V> {
        let mut spins = 0u32;
        let mut backoff = Backoff::new();
        loop {
            // Acquire: pairs with the Release in `SetGuard::drop`, so the
            // holder sees the previous holder's writes.
            if self.tags[0].fetch_or(LOCK, Ordering::Acquire) & LOCK == 0 {
                return SetGuard { set: self };
            }
            // Relaxed: only waits for the lock to look free; the
            // `fetch_or` above takes it. (Loom may show a Relaxed load a
            // stale value for ever; its model retries the read-modify-write,
            // which always reads the latest.)
            #[cfg(not(loom))]
            while self.tags[0].load(Ordering::Relaxed) & LOCK != 0 {
                if spins < 64 {
                    spins += 1;
                    std::hint::spin_loop();
                } else {
                    backoff.wait();
                }
            }
            #[cfg(loom)]
            {
                spins += 1;
                backoff.wait();
            }
        }
    }
}

/// A set's lock, held: the set's slots, read and written in place.
struct SetGuard<'a, const V: usize> {
    set: &'a SlotSet<V>,
}

// Relaxed throughout: the lock orders every access (module docs).
impl<const V: usize> SetGuard<'_, V> {
    #[inline]
    fn tag(&self, way: usize) -> u64 {
        self.set.tags[way].load(Ordering::Relaxed) & !LOCK
    }

    #[inline]
    fn set_tag(&self, way: usize, tag: u64) {
        if way == 0 {
            // The lock word is only ever read-modify-written (module docs).
            self.set.tags[0].swap(tag | LOCK, Ordering::Relaxed);
        } else {
            self.set.tags[way].store(tag, Ordering::Relaxed);
        }
    }

    #[inline]
    fn value(&self, way: usize) -> [u64; V] {
        std::array::from_fn(|word| self.set.values[way][word].load(Ordering::Relaxed))
    }

    #[inline]
    fn set_value(&self, way: usize, value: &[u64; V]) {
        for (slot, word) in self.set.values[way].iter().zip(value) {
            slot.store(*word, Ordering::Relaxed);
        }
    }
}

impl<const V: usize> Drop for SetGuard<'_, V> {
    fn drop(&mut self) {
        // Release: pairs with the Acquire that takes the lock next, handing
        // it this holder's writes. A read-modify-write, as every write of
        // the lock word (see `set_tag`).
        self.set.tags[0].fetch_and(!LOCK, Ordering::Release);
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    /// Entries of one word: idle at 0, live ranked by value, pinned at
    /// `u64::MAX`.
    struct Plain;

    impl Entries<1> for Plain {
        fn idle(&self, value: &[u64; 1], _now: u64) -> bool {
            value[0] == 0
        }
        fn rank(&self, value: &[u64; 1], _now: u64) -> Option<u64> {
            (value[0] != u64::MAX).then_some(value[0])
        }
    }

    fn put(table: &Table<1>, hash: u64, word: u64) -> Result<bool, Full> {
        table.update(hash, 0, &Plain, |value, fresh| {
            value[0] = word;
            (fresh, Write::Store)
        })
    }

    fn remove(table: &Table<1>, hash: u64) {
        let _ = table.update(hash, 0, &Plain, |_, fresh| {
            ((), if fresh { Write::Keep } else { Write::Remove })
        });
    }

    fn get(table: &Table<1>, hash: u64) -> Option<u64> {
        table
            .update(hash, 0, &Plain, |value, fresh| {
                ((!fresh).then_some(value[0]), Write::Keep)
            })
            .ok()
            .flatten()
    }

    #[test]
    fn a_set_is_two_cache_lines() {
        assert_eq!(Table::<1>::SET_BYTES, 128);
    }

    #[test]
    fn evicts_empty_then_idle_then_lowest_rank_and_never_pinned() {
        let table = Table::<1>::with_sets(1).expect("memory");
        for key in 1..=8u64 {
            assert_eq!(put(&table, key << 8, key * 10), Ok(true));
        }
        assert_eq!(table.occupied(), 8);
        // Key 2 leaves: the next key takes its empty slot.
        remove(&table, 2 << 8);
        assert_eq!(table.occupied(), 7);
        assert_eq!(put(&table, 11 << 8, 110), Ok(true));
        // Key 3's entry becomes idle: the next key takes its slot.
        assert_eq!(put(&table, 3 << 8, 0), Ok(false));
        assert_eq!(put(&table, 9 << 8, 90), Ok(true));
        assert_eq!(get(&table, 9 << 8), Some(90));
        assert_eq!(get(&table, 3 << 8), None);
        assert_eq!(table.evictions(), Evictions { idle: 1, live: 0 });
        // Full of live entries: the lowest (key 1, 10) goes, counted.
        assert_eq!(put(&table, 10 << 8, 100), Ok(true));
        assert_eq!(get(&table, 1 << 8), None);
        assert_eq!(get(&table, 4 << 8), Some(40));
        assert_eq!(table.evictions(), Evictions { idle: 1, live: 1 });
        // Pin every slot: a new key finds the set full, nothing changes.
        for key in [4u64, 5, 6, 7, 8, 9, 10, 11] {
            assert_eq!(put(&table, key << 8, u64::MAX), Ok(false));
        }
        assert_eq!(put(&table, 12 << 8, 5), Err(Full));
        assert_eq!(table.occupied(), 8);
        assert_eq!(get(&table, 12 << 8), None);
    }
}
