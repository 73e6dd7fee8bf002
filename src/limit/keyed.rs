//! A rate limit per key (per client address, user, API key) in a fixed
//! amount of memory.
//!
//! Each key has its own GCRA state, one word (its TAT) in a slot of a
//! [`Table`](super::table): no lock is shared across sets of keys, so
//! checks of different keys rarely meet. When a new key finds its set of 8
//! full, it takes the slot of a key whose bucket has refilled (TAT at or
//! before now): such a key would be decided exactly as a new one, so
//! dropping it is exact. Only when all 8 are live does it evict one: the
//! key whose TAT is lowest, the one nearest to refilled, so the fresh burst
//! the evicted client gets back is the smallest the set offers (a live key
//! was used within its last burst's time; this is approximately least
//! recently used). Such evictions are counted in
//! [`KeyedStats::evicted_live`].
//!
//! # Synchronization
//!
//! The table's set locks (see `table.rs`); under a lock the TAT is read,
//! decided on and written like a plain variable.

use std::hash::Hash;
use std::marker::PhantomData;

use super::capacity::{Capacity, CapacityError};
use super::gcra::{Gcra, one};
use super::table::{Entries, KeyHasher, Table, WAYS, Write};
use super::time::Time;
use super::{Allowed, CheckNError, Denied, Quota};
use crate::time::Clock;

/// A rate limit applied to each key apart, in memory bounded by a
/// [`Capacity`] (`Send + Sync`; share it by reference or `Arc`).
///
/// A key's first check finds its whole burst; keys evicted while live get
/// it again (counted in [`stats`](Self::stats)), which is the price of the
/// bound. Keys live in sets of 8 chosen by hash, so sets fill by chance
/// before the table does: with a quarter of the capacity in keys used
/// within one burst's time, about 1 new key in 1,000 meets a set full of
/// live keys; with an eighth, 1 in 100,000; with half, 1 in 20. Size the
/// capacity at four to eight times the clients active within a burst's
/// time, and the count stays near 0.
///
/// Keys are kept as a keyed 62-bit hash: two keys share a budget only if
/// their hashes meet, about k^2 / 2^63 for k keys.
///
/// # Examples
///
/// ```
/// use loadbalance::limit::{Capacity, ClientGrouping, KeyedRateLimiter, Quota};
/// use loadbalance::ManualClock;
/// use std::sync::Arc;
/// use std::time::Duration;
///
/// let clock = Arc::new(ManualClock::new());
/// let quota = Quota::per_second(1)?.burst(2)?;
/// let limiter = KeyedRateLimiter::with_clock(quota, Capacity::Entries(1024), Arc::clone(&clock))?;
/// let clients = ClientGrouping::default();
/// let alice = clients.key("2001:db8::1".parse()?);
/// let bob = clients.key("192.0.2.1".parse()?);
/// assert!(limiter.check(&alice).is_ok());
/// assert!(limiter.check(&alice).is_ok());
/// assert_eq!(limiter.check(&alice).unwrap_err().retry_after, Duration::from_secs(1));
/// // Another address of Alice's /64 shares her budget; Bob has his own.
/// assert!(limiter.check(&clients.key("2001:db8::2".parse()?)).is_err());
/// assert!(limiter.check(&bob).is_ok());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct KeyedRateLimiter<K: ?Sized> {
    table: Table<1>,
    rule: Gcra,
    hasher: KeyHasher,
    time: Time,
    _key: PhantomData<fn(&K)>,
}

/// The keyed limiter's figures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct KeyedStats {
    /// Keys held now (a scan of the table; exact when no check runs).
    pub keys: usize,
    /// Keys the table can hold.
    pub capacity: usize,
    /// Bytes the limiter takes: table, struct and clock.
    pub memory: usize,
    /// Keys dropped because their bucket had refilled (exact: no decision
    /// changes).
    pub evicted_idle: u64,
    /// Live keys dropped for a new key: each gave its client a fresh
    /// burst.
    pub evicted_live: u64,
}

/// TATs: idle once refilled, live ones evicted lowest TAT first.
struct Tats;

impl Entries<1> for Tats {
    #[inline]
    fn idle(&self, value: &[u64; 1], now: u64) -> bool {
        Gcra::refilled(value[0], now)
    }

    #[inline]
    fn rank(&self, value: &[u64; 1], _now: u64) -> Option<u64> {
        Some(value[0])
    }
}

impl<K: Hash + ?Sized> KeyedRateLimiter<K> {
    /// A limiter giving each key `quota`, on the CPU's time-stamp counter.
    ///
    /// # Errors
    ///
    /// [`CapacityError`] when not even 8 keys fit, or the table cannot be
    /// allocated.
    pub fn new(quota: Quota, capacity: Capacity) -> Result<Self, CapacityError> {
        Self::with_parts(quota, capacity, Time::counter(), KeyHasher::random())
    }

    /// As [`new`](Self::new), reading `clock`.
    ///
    /// # Errors
    ///
    /// As [`new`](Self::new).
    pub fn with_clock(
        quota: Quota,
        capacity: Capacity,
        clock: impl Clock + 'static,
    ) -> Result<Self, CapacityError> {
        Self::with_parts(quota, capacity, Time::custom(clock), KeyHasher::random())
    }

    /// Lets one request of `key` in, or says when one would pass.
    ///
    /// # Errors
    ///
    /// [`Denied`] with the retry-after.
    #[inline]
    pub fn check(&self, key: &K) -> Result<Allowed, Denied> {
        self.check_hashed(1, self.hasher.hash(key), self.time.nanos())
            .map_err(one)
    }

    /// Lets `n` requests of `key` in together, or none.
    ///
    /// # Errors
    ///
    /// [`CheckNError::Denied`] with the retry-after, or
    /// [`CheckNError::ExceedsBurst`] when `n` could never pass.
    pub fn check_n(&self, key: &K, n: u32) -> Result<Allowed, CheckNError> {
        self.check_hashed(n, self.hasher.hash(key), self.time.nanos())
    }

    /// The limiter's figures.
    pub fn stats(&self) -> KeyedStats {
        let evictions = self.table.evictions();
        KeyedStats {
            keys: self.table.occupied(),
            capacity: self.table.slots(),
            memory: self.table.bytes() + std::mem::size_of::<Self>() + self.time.heap_bytes(),
            evicted_idle: evictions.idle,
            evicted_live: evictions.live,
        }
    }
}

impl<K: ?Sized> KeyedRateLimiter<K> {
    pub(crate) fn with_parts(
        quota: Quota,
        capacity: Capacity,
        time: Time,
        hasher: KeyHasher,
    ) -> Result<Self, CapacityError> {
        let own = std::mem::size_of::<Self>() + time.heap_bytes();
        let sets = capacity.sets(Table::<1>::SET_BYTES, WAYS, own)?;
        Ok(Self {
            table: Table::with_sets(sets).ok_or(CapacityError::OutOfMemory)?,
            rule: Gcra::new(quota),
            hasher,
            time,
            _key: PhantomData,
        })
    }

    /// The decision for the key hashed to `hash` at `now`.
    #[inline]
    pub(crate) fn check_hashed(&self, n: u32, hash: u64, now: u64) -> Result<Allowed, CheckNError> {
        let decide = |tat: &mut [u64; 1], fresh: bool| match self.rule.step(tat[0], n, now) {
            // A new key refilled at once (a check of weight 0) takes no
            // slot: it would only push out a key that carries information.
            Ok((next, allowed)) if fresh && Gcra::refilled(next, now) => (Ok(allowed), Write::Keep),
            Ok((next, allowed)) => {
                tat[0] = next;
                (Ok(allowed), Write::Store)
            }
            Err(error) => (Err(error), Write::Keep),
        };
        // Never full: every TAT ranks, so a new key always finds a slot.
        self.table
            .update(hash, now, &Tats, decide)
            .unwrap_or_else(|_| self.rule.step(0, n, now).map(|(_, allowed)| allowed))
    }
}

impl<K: ?Sized> std::fmt::Debug for KeyedRateLimiter<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyedRateLimiter")
            .field("rule", &self.rule)
            .field("capacity", &self.table.slots())
            .field("time", &self.time)
            .finish_non_exhaustive()
    }
}
