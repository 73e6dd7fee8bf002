//! Bans: a key that collects `denials` strikes within a `window` of its
//! first is shut out for a `cooldown` (after fail2ban's `maxretry`,
//! `findtime` and `bantime`; HAProxy's deny on a stick-table counter).
//!
//! The window is fixed: it opens at a key's first strike and closes
//! `window` later, and the next strike opens a new one. fail2ban counts
//! over a sliding window instead; a fixed one keeps a key to two words,
//! and lets a client that paces its strikes across a window's end reach
//! up to `2 × denials − 2` strikes within one window's length unbanned.
//!
//! A strike is whatever the caller counts: the flow control's decision
//! strikes a client at each rate or concurrency denial; a server may strike
//! failed logins. A ban is answered from the key's slot without consulting
//! anything else.
//!
//! Each key's state is two words in a keyed table of bounded memory (see
//! `table.rs`): the end of its window (or of its ban) and its count (with a
//! flag for a ban). A key whose window or ban has ended carries no
//! information and goes first when room is needed; among live keys,
//! counting ones go before banned ones, the earliest to end first. Evicting
//! a ban lets its client in early; such evictions are counted.
//!
//! # Synchronization
//!
//! The table's set locks (see `table.rs`): a key's state is read and
//! written under its set's lock.

use std::fmt;
use std::hash::Hash;
use std::marker::PhantomData;
use std::num::NonZeroU32;
use std::time::Duration;

use super::capacity::{Capacity, CapacityError};
use super::table::{Entries, KeyHasher, Table, WAYS, Write};
use super::time::Time;
use crate::time::Clock;
use crate::time::Nanos;

/// When a key is banned, and for how long.
///
/// # Examples
///
/// ```
/// use loadbalance::limit::BanRule;
/// use std::time::Duration;
///
/// // Five strikes within a minute: out for ten.
/// let rule = BanRule::new(5, Duration::from_secs(60), Duration::from_secs(600))?;
/// assert_eq!(rule.denials(), 5);
/// assert!(BanRule::new(0, Duration::from_secs(60), Duration::from_secs(600)).is_err());
/// # Ok::<(), loadbalance::limit::BanRuleError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BanRule {
    denials: NonZeroU32,
    window: u64,
    cooldown: u64,
}

impl BanRule {
    /// Ban for `cooldown` at the `denials`-th strike within `window` of the
    /// first.
    ///
    /// # Errors
    ///
    /// [`BanRuleError`] for zero denials, a zero window or cooldown, or a
    /// duration past 584 years.
    pub fn new(denials: u32, window: Duration, cooldown: Duration) -> Result<Self, BanRuleError> {
        let denials = NonZeroU32::new(denials).ok_or(BanRuleError::ZeroDenials)?;
        let nanos = |duration: Duration| {
            let nanos = Nanos::exact(duration).ok_or(BanRuleError::TooLong)?;
            if nanos == 0 {
                Err(BanRuleError::ZeroDuration)
            } else {
                Ok(nanos)
            }
        };
        Ok(Self {
            denials,
            window: nanos(window)?,
            cooldown: nanos(cooldown)?,
        })
    }

    /// Strikes that start a ban.
    pub fn denials(&self) -> u32 {
        self.denials.get()
    }

    /// How long after a key's first strike its strikes count together.
    pub fn window(&self) -> Duration {
        Nanos::duration(self.window)
    }

    /// How long a ban lasts.
    pub fn cooldown(&self) -> Duration {
        Nanos::duration(self.cooldown)
    }
}

/// Why a [`BanRule`] could not be built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum BanRuleError {
    /// A ban after 0 denials would ban everyone.
    ZeroDenials,
    /// A zero window or cooldown.
    ZeroDuration,
    /// A window or cooldown past 584 years.
    TooLong,
}

impl fmt::Display for BanRuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::ZeroDenials => "a ban rule needs at least one denial",
            Self::ZeroDuration => "a ban rule needs a window and a cooldown above 0",
            Self::TooLong => "a ban rule's window or cooldown is past 584 years",
        })
    }
}

impl std::error::Error for BanRuleError {}

/// What a strike did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Strike {
    /// Counted: the key has this many strikes in its window.
    Counted(u32),
    /// The key is banned for this long (this strike banned it, or it was
    /// banned already).
    Banned(Duration),
}

/// Keys banned after repeated strikes, in bounded memory (`Send + Sync`).
///
/// # Examples
///
/// ```
/// use loadbalance::limit::{BanRule, Bans, Capacity, Strike};
/// use loadbalance::ManualClock;
/// use std::sync::Arc;
/// use std::time::Duration;
///
/// let clock = Arc::new(ManualClock::new());
/// let rule = BanRule::new(3, Duration::from_secs(60), Duration::from_secs(600))?;
/// let bans = Bans::<str>::with_clock(rule, Capacity::Entries(64), Arc::clone(&clock))?;
/// assert_eq!(bans.strike("mallory"), Strike::Counted(1));
/// assert_eq!(bans.strike("mallory"), Strike::Counted(2));
/// assert_eq!(bans.strike("mallory"), Strike::Banned(Duration::from_secs(600)));
/// clock.advance(Duration::from_secs(599));
/// assert_eq!(bans.banned("mallory"), Some(Duration::from_secs(1)));
/// clock.advance(Duration::from_secs(1));
/// assert_eq!(bans.banned("mallory"), None);
/// // An operator's pardon: the ban and the strikes go.
/// for _ in 0..3 {
///     let _ = bans.strike("eve");
/// }
/// assert!(bans.lift("eve"));
/// assert_eq!(bans.banned("eve"), None);
/// assert_eq!(bans.strike("eve"), Strike::Counted(1));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Bans<K: ?Sized> {
    table: Table<2>,
    rule: BanRule,
    hasher: KeyHasher,
    time: Time,
    _key: PhantomData<fn(&K)>,
}

/// The bans' figures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct BanStats {
    /// Keys held now, counting or banned (a scan).
    pub keys: usize,
    /// Keys the table can hold.
    pub capacity: usize,
    /// Bytes the bans take.
    pub memory: usize,
    /// Live keys dropped for new ones (a dropped ban lets its key in
    /// early; dropped strikes start over).
    pub evicted_live: u64,
}

/// The flag in the count word that marks a ban.
const BANNED: u64 = 1 << 63;

/// Entries: `[end of window or ban, count | BANNED]`.
struct BanEntries;

impl Entries<2> for BanEntries {
    fn idle(&self, value: &[u64; 2], now: u64) -> bool {
        value[0] <= now
    }

    fn rank(&self, value: &[u64; 2], _now: u64) -> Option<u64> {
        // Counting keys before banned ones, each earliest end first.
        Some((value[1] & BANNED) | (value[0] >> 1))
    }
}

impl<K: Hash + ?Sized> Bans<K> {
    /// Bans by `rule`, for as many keys as `capacity` holds, on the CPU's
    /// time-stamp counter.
    ///
    /// # Errors
    ///
    /// [`CapacityError`] when not even 8 keys fit, or the table cannot be
    /// allocated.
    pub fn new(rule: BanRule, capacity: Capacity) -> Result<Self, CapacityError> {
        Self::with_parts(rule, capacity, Time::counter(), KeyHasher::random())
    }

    /// As [`new`](Self::new), reading `clock`.
    ///
    /// # Errors
    ///
    /// As [`new`](Self::new).
    pub fn with_clock(
        rule: BanRule,
        capacity: Capacity,
        clock: impl Clock + 'static,
    ) -> Result<Self, CapacityError> {
        Self::with_parts(rule, capacity, Time::custom(clock), KeyHasher::random())
    }

    /// How much longer `key` is banned, if it is.
    pub fn banned(&self, key: &K) -> Option<Duration> {
        self.banned_hashed(self.hasher.hash(key), self.time.nanos())
    }

    /// Counts a strike against `key`, banning it at the rule's count.
    pub fn strike(&self, key: &K) -> Strike {
        self.strike_hashed(self.hasher.hash(key), self.time.nanos())
    }

    /// Lifts `key`'s ban and forgets its strikes (an operator's pardon);
    /// whether it was banned.
    pub fn lift(&self, key: &K) -> bool {
        let now = self.time.nanos();
        let lift = |value: &mut [u64; 2], fresh: bool| {
            let banned = !fresh && value[1] & BANNED != 0 && value[0] > now;
            (banned, if fresh { Write::Keep } else { Write::Remove })
        };
        self.table
            .update(self.hasher.hash(key), now, &BanEntries, lift)
            .unwrap_or(false)
    }

    /// The bans' figures.
    pub fn stats(&self) -> BanStats {
        BanStats {
            keys: self.table.occupied(),
            capacity: self.table.slots(),
            memory: self.table.bytes() + std::mem::size_of::<Self>() + self.time.heap_bytes(),
            evicted_live: self.table.evictions().live,
        }
    }
}

impl<K: ?Sized> Bans<K> {
    pub(crate) fn with_parts(
        rule: BanRule,
        capacity: Capacity,
        time: Time,
        hasher: KeyHasher,
    ) -> Result<Self, CapacityError> {
        let own = std::mem::size_of::<Self>() + time.heap_bytes();
        let sets = capacity.sets(Table::<2>::SET_BYTES, WAYS, own)?;
        Ok(Self {
            table: Table::with_sets(sets).ok_or(CapacityError::OutOfMemory)?,
            rule,
            hasher,
            time,
            _key: PhantomData,
        })
    }

    pub(crate) fn banned_hashed(&self, hash: u64, now: u64) -> Option<Duration> {
        let read = |value: &mut [u64; 2], fresh: bool| {
            let banned = !fresh && value[1] & BANNED != 0 && value[0] > now;
            (banned.then(|| Nanos::duration(value[0] - now)), Write::Keep)
        };
        self.table
            .update(hash, now, &BanEntries, read)
            .ok()
            .flatten()
    }

    pub(crate) fn strike_hashed(&self, hash: u64, now: u64) -> Strike {
        let rule = self.rule;
        let strike = |value: &mut [u64; 2], _fresh: bool| {
            let [end, count] = *value;
            if end > now && count & BANNED != 0 {
                return (Strike::Banned(Nanos::duration(end - now)), Write::Keep);
            }
            let count = if end > now { count + 1 } else { 1 };
            if count >= u64::from(rule.denials.get()) {
                *value = [now.saturating_add(rule.cooldown), BANNED];
                return (Strike::Banned(Nanos::duration(rule.cooldown)), Write::Store);
            }
            if end <= now {
                value[0] = now.saturating_add(rule.window);
            }
            value[1] = count;
            // Below the rule's count, which is a u32.
            (Strike::Counted(count as u32), Write::Store)
        };
        // Never full: every entry ranks.
        self.table
            .update(hash, now, &BanEntries, strike)
            .unwrap_or(Strike::Counted(1))
    }
}

impl<K: ?Sized> fmt::Debug for Bans<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bans")
            .field("rule", &self.rule)
            .field("capacity", &self.table.slots())
            .finish_non_exhaustive()
    }
}
