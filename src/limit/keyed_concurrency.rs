//! At most N requests in flight per key (per client), in memory bounded by
//! a [`Capacity`]: each key in flight holds a slot of the keyed table with
//! its count, and leaves it when its last permit is dropped.
//!
//! A key with requests in flight is never evicted (its permits would have
//! nothing to give back to); a key with none holds no slot. So the table
//! holds exactly the keys in flight, and a new key whose set of 8 is all
//! in flight is refused ([`KeyedConcurrencyError::TableFull`]). Sets fill
//! by chance before the table does: with a quarter of the capacity in
//! flight, a new key finds its set full about once in 1,000 (a Poisson
//! count of mean 2 reaching 8); with an eighth, once in 100,000; with
//! half, once in 20. Size the capacity at four to eight times the keys in
//! flight at once (a global [`ConcurrencyLimit`](super::ConcurrencyLimit)
//! bounds those).
//!
//! # Synchronization
//!
//! The table's set locks (see `table.rs`): a count is read, compared with
//! the limit and written under the lock, so no two acquisitions can pass
//! the limit together.

use std::hash::Hash;
use std::marker::PhantomData;
use std::num::NonZeroU32;
use std::sync::Arc;

use super::capacity::{Capacity, CapacityError};
use super::table::{Entries, KeyHasher, Table, WAYS, Write};

/// A limit on requests in flight for each key apart (`Send + Sync`;
/// clones share the limit).
///
/// # Examples
///
/// ```
/// use loadbalance::limit::{Capacity, KeyedConcurrencyError, KeyedConcurrencyLimit};
/// use std::num::NonZeroU32;
///
/// let limit = KeyedConcurrencyLimit::<str>::new(NonZeroU32::new(2).unwrap(), Capacity::Entries(64))?;
/// let a = limit.try_acquire("alice")?;
/// let b = limit.try_acquire("alice")?;
/// assert_eq!(limit.try_acquire("alice").unwrap_err(), KeyedConcurrencyError::AtLimit { max: 2 });
/// assert!(limit.try_acquire("bob").is_ok());
/// drop(a);
/// assert_eq!(limit.in_flight("alice"), 1);
/// drop(b);
/// assert_eq!(limit.stats().keys, 0);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct KeyedConcurrencyLimit<K: ?Sized> {
    shared: Arc<KeyedSlots>,
    _key: PhantomData<fn(&K)>,
}

struct KeyedSlots {
    table: Table<1>,
    max: u32,
    hasher: KeyHasher,
}

/// One request in flight for one key: dropping it (also while unwinding)
/// gives the key's slot back. `Send` and `'static`, so it can move into the
/// task that serves the request.
#[must_use = "the request counts as in flight until the permit is dropped"]
pub struct KeyedPermit {
    shared: Arc<KeyedSlots>,
    hash: u64,
}

/// Why a key could not have one more request in flight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyedConcurrencyError {
    /// The key has `max` requests in flight already.
    AtLimit {
        /// The limit per key.
        max: u32,
    },
    /// Every slot the key could take holds another key in flight.
    TableFull,
}

impl std::fmt::Display for KeyedConcurrencyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::AtLimit { max } => {
                let requests = if *max == 1 { "request" } else { "requests" };
                write!(f, "the key has {max} {requests} in flight already")
            }
            Self::TableFull => f.write_str("every slot this key could take holds a key in flight"),
        }
    }
}

impl std::error::Error for KeyedConcurrencyError {}

/// The keyed limit's figures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct KeyedConcurrencyStats {
    /// Keys with requests in flight now (a scan; exact when none moves).
    pub keys: usize,
    /// Keys the table can hold.
    pub capacity: usize,
    /// Bytes the limit takes.
    pub memory: usize,
}

/// Counts: a key with none in flight has no slot; one with some is
/// pinned.
struct Counts;

impl Entries<1> for Counts {
    fn idle(&self, value: &[u64; 1], _now: u64) -> bool {
        value[0] == 0
    }

    fn rank(&self, value: &[u64; 1], _now: u64) -> Option<u64> {
        (value[0] == 0).then_some(0)
    }
}

impl<K: Hash + ?Sized> KeyedConcurrencyLimit<K> {
    /// At most `max` requests in flight per key, for as many keys at once
    /// as `capacity` holds.
    ///
    /// # Errors
    ///
    /// [`CapacityError`] when not even 8 keys fit, or the table cannot be
    /// allocated.
    pub fn new(max: NonZeroU32, capacity: Capacity) -> Result<Self, CapacityError> {
        Self::with_hasher(max, capacity, KeyHasher::random())
    }

    /// One more request in flight for `key`, or why not.
    ///
    /// # Errors
    ///
    /// [`KeyedConcurrencyError::AtLimit`] when the key is at its limit,
    /// [`KeyedConcurrencyError::TableFull`] when its slots are all taken.
    pub fn try_acquire(&self, key: &K) -> Result<KeyedPermit, KeyedConcurrencyError> {
        self.shared
            .acquire(&self.shared, self.shared.hasher.hash(key))
    }

    /// Requests of `key` in flight now.
    pub fn in_flight(&self, key: &K) -> u32 {
        let hash = self.shared.hasher.hash(key);
        let count = self
            .shared
            .table
            .update(hash, 0, &Counts, |count, _| (count[0], Write::Keep))
            .unwrap_or(0);
        u32::try_from(count).unwrap_or(u32::MAX)
    }

    /// The limit per key.
    pub fn max(&self) -> u32 {
        self.shared.max
    }

    /// The limit's figures.
    pub fn stats(&self) -> KeyedConcurrencyStats {
        let table = &self.shared.table;
        KeyedConcurrencyStats {
            keys: table.occupied(),
            capacity: table.slots(),
            memory: table.bytes()
                + std::mem::size_of::<Self>()
                + std::mem::size_of::<KeyedSlots>()
                + 2 * std::mem::size_of::<usize>(),
        }
    }
}

impl<K: ?Sized> KeyedConcurrencyLimit<K> {
    pub(crate) fn with_hasher(
        max: NonZeroU32,
        capacity: Capacity,
        hasher: KeyHasher,
    ) -> Result<Self, CapacityError> {
        let own = std::mem::size_of::<Self>()
            + std::mem::size_of::<KeyedSlots>()
            + 2 * std::mem::size_of::<usize>();
        let sets = capacity.sets(Table::<1>::SET_BYTES, WAYS, own)?;
        Ok(Self {
            shared: Arc::new(KeyedSlots {
                table: Table::with_sets(sets).ok_or(CapacityError::OutOfMemory)?,
                max: max.get(),
                hasher,
            }),
            _key: PhantomData,
        })
    }

    /// As [`try_acquire`](Self::try_acquire), for a key already hashed
    /// with this limit's hasher (a flow control's components share one).
    pub(crate) fn acquire_hashed(&self, hash: u64) -> Result<KeyedPermit, KeyedConcurrencyError> {
        self.shared.acquire(&self.shared, hash)
    }
}

impl KeyedSlots {
    fn acquire(
        &self,
        shared: &Arc<KeyedSlots>,
        hash: u64,
    ) -> Result<KeyedPermit, KeyedConcurrencyError> {
        let take = |count: &mut [u64; 1], _fresh: bool| {
            if count[0] >= u64::from(self.max) {
                return (
                    Err(KeyedConcurrencyError::AtLimit { max: self.max }),
                    Write::Keep,
                );
            }
            count[0] += 1;
            (Ok(()), Write::Store)
        };
        self.table
            .update(hash, 0, &Counts, take)
            .map_err(|_| KeyedConcurrencyError::TableFull)??;
        Ok(KeyedPermit {
            shared: Arc::clone(shared),
            hash,
        })
    }
}

impl Drop for KeyedPermit {
    fn drop(&mut self) {
        let give_back = |count: &mut [u64; 1], fresh: bool| {
            if fresh {
                // Not reachable: a key in flight is never evicted.
                return ((), Write::Keep);
            }
            count[0] = count[0].saturating_sub(1);
            (
                (),
                if count[0] == 0 {
                    Write::Remove
                } else {
                    Write::Store
                },
            )
        };
        let _ = self.shared.table.update(self.hash, 0, &Counts, give_back);
    }
}

impl<K: ?Sized> Clone for KeyedConcurrencyLimit<K> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
            _key: PhantomData,
        }
    }
}

impl<K: ?Sized> std::fmt::Debug for KeyedConcurrencyLimit<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyedConcurrencyLimit")
            .field("max", &self.shared.max)
            .field("capacity", &self.shared.table.slots())
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for KeyedPermit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyedPermit").finish_non_exhaustive()
    }
}
