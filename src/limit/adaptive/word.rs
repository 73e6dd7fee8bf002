//! The limit and the count of permits alive, in one atomic word.
//!
//! # Synchronization
//!
//! The limit (high 32 bits) and the permits alive (low 32 bits) are one
//! `AtomicU64`, because an admission must compare the one with the other
//! as they are at one instant: with two words, a request could be admitted
//! against a limit another thread had already lowered, or a lowering could
//! be lost to a concurrent admission's write-back.
//!
//! - An admission is a compare-and-swap that raises the count only while
//!   it is below the limit in the same word: the count never passes the
//!   limit in effect when the permit was taken.
//! - A permit's drop subtracts one from the low half (`fetch_sub`, never
//!   below zero: only a permit that raised it lowers it, once).
//! - A new limit replaces the high half by compare-and-swap, keeping the
//!   count the word holds at that instant: no admission or drop between
//!   the read and the write is lost.
//!
//! Admission is Acquire and the drop Release, as `ConcurrencyLimit`'s: the
//! work of a permit's holder happens before that of the one who takes its
//! slot next. The limit's update is Relaxed: it publishes nothing but
//! itself (the algorithm's state is behind its own lock).
//!
//! `loom_word.rs` checks the last slot given once, a lowered limit
//! racing an admission, and no count lost to an update racing admissions
//! and drops.

use crate::sync::atomic::{AtomicU64, Ordering};

/// The limit and the permits alive, as one word.
#[derive(Debug)]
pub(super) struct Word(AtomicU64);

fn pack(limit: u32, in_flight: u32) -> u64 {
    u64::from(limit) << 32 | u64::from(in_flight)
}

fn limit_of(word: u64) -> u32 {
    (word >> 32) as u32
}

fn in_flight_of(word: u64) -> u32 {
    word as u32
}

impl Word {
    pub(super) fn new(limit: u32) -> Self {
        Self(AtomicU64::new(pack(limit, 0)))
    }

    /// Takes a slot if fewer than the limit are taken; the limit and the
    /// count as found when it cannot.
    #[inline]
    pub(super) fn try_take(&self) -> Result<(), (u32, u32)> {
        // Acquire on success: reads the Release of the drops before (see
        // the module docs). Relaxed on failure: a refusal takes nothing.
        self.0
            .fetch_update(Ordering::Acquire, Ordering::Relaxed, |word| {
                (in_flight_of(word) < limit_of(word)).then_some(word + 1)
            })
            .map(drop)
            .map_err(|word| (limit_of(word), in_flight_of(word)))
    }

    /// Gives back a slot a successful `try_take` took.
    #[inline]
    pub(super) fn give_back(&self) {
        // Release: the holder's work happens before the next taker's.
        self.0.fetch_sub(1, Ordering::Release);
    }

    /// Sets the limit, keeping the count.
    pub(super) fn set_limit(&self, limit: u32) {
        // Relaxed: the limit publishes nothing but itself.
        let _ = self
            .0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |word| {
                Some(pack(limit, in_flight_of(word)))
            });
    }

    /// The limit and the permits alive (a snapshot).
    pub(super) fn get(&self) -> (u32, u32) {
        // Relaxed: figures to report; they decide nothing.
        let word = self.0.load(Ordering::Relaxed);
        (limit_of(word), in_flight_of(word))
    }
}
