//! Where the random words of the random algorithms come from.
//!
//! Without a seed, each thread draws from a generator of its own (wyrand,
//! seeded once per thread from the standard library's random hash keys), so
//! a draw writes no shared cache line and allocates nothing. With a seed,
//! word `k` is `splitmix64(seed + k)`: the lock-free form numbers its words
//! with one shared counter (reproducible whatever the threads, at the cost
//! of one `fetch_add` a word), the mutex-backed form counts them in its
//! state, and both give the same words in the same order.

use std::cell::Cell;

use crossbeam_utils::CachePadded;

use crate::mix::splitmix;
use crate::sync::atomic::{AtomicU64, Ordering};

thread_local! {
    /// This thread's wyrand state; 0 until first used.
    static THREAD_RNG: Cell<u64> = const { Cell::new(0) };
}

/// The next word of this thread's generator (wyrand).
#[inline]
fn thread_word() -> u64 {
    THREAD_RNG.with(|state| {
        let mut s = state.get();
        if s == 0 {
            // Seeded from the standard library's per-process random keys
            // (no allocation, unlike a first use of `rand`'s thread rng).
            use std::hash::BuildHasher;
            s = std::collections::hash_map::RandomState::new()
                .hash_one(state as *const Cell<u64> as usize)
                | 1;
        }
        s = s.wrapping_add(0xA076_1D64_78BD_642F);
        state.set(s);
        let t = u128::from(s) * u128::from(s ^ 0xE703_7ED1_A0B4_28DB);
        ((t >> 64) as u64) ^ (t as u64)
    })
}

/// The lock-free forms' words: this thread's generator, or the seeded
/// stream numbered by a shared counter.
pub(super) struct Words {
    /// `Some`: the seed, and the count of words drawn (shared).
    seeded: Option<(u64, CachePadded<AtomicU64>)>,
}

impl Words {
    /// Words from `seed` (continuing after `drawn` words), or per thread.
    pub(super) fn new(seed: Option<u64>, drawn: u64) -> Self {
        Self {
            seeded: seed.map(|seed| (seed, CachePadded::new(AtomicU64::new(drawn)))),
        }
    }

    #[inline]
    pub(super) fn word(&self) -> u64 {
        match &self.seeded {
            None => thread_word(),
            Some((seed, drawn)) => {
                // Relaxed: the counter only hands out word numbers.
                splitmix(seed.wrapping_add(drawn.fetch_add(1, Ordering::Relaxed)))
            }
        }
    }

    /// Goes on after `drawn` words of the seeded stream (a rebuilt state
    /// continuing the one it replaces); nothing without a seed.
    pub(super) fn resume(&mut self, drawn: u64) {
        if let Some((_, count)) = &self.seeded {
            // Relaxed: `&mut self`, before any pick shares the state.
            count.store(drawn, Ordering::Relaxed);
        }
    }

    /// Words drawn so far from the seeded stream (0 without a seed), to
    /// carry the stream over a live balancer's rebuild.
    pub(super) fn drawn(&self) -> u64 {
        // Relaxed: read once to carry the stream over a rebuild.
        self.seeded
            .as_ref()
            .map_or(0, |(_, drawn)| drawn.load(Ordering::Relaxed))
    }
}

/// The mutex-backed forms' words: the seeded stream (seeded from the
/// operating system when no seed is given) and how many words it has given.
#[derive(Debug)]
pub(super) struct SeededStream {
    seed: u64,
    pub(super) drawn: u64,
}

impl SeededStream {
    pub(super) fn new(seed: Option<u64>, drawn: u64) -> Self {
        Self {
            seed: seed.unwrap_or_else(rand::random),
            drawn,
        }
    }

    #[inline]
    pub(super) fn word(&mut self) -> u64 {
        let word = splitmix(self.seed.wrapping_add(self.drawn));
        self.drawn = self.drawn.wrapping_add(1);
        word
    }
}
