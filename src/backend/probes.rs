//! The probe pool of a probing balancer (Prequal's): the last few probe
//! answers of the balancer's backends, each the requests a backend had in
//! flight and its latency when it answered, kept in a small ring that the
//! choose step reads and the reports of probes write.
//!
//! # Synchronization
//!
//! The ring is behind one mutex. A report takes it (a probe answer is rare
//! next to a pick); a pick only `try_lock`s it and, when a report or
//! another pick holds it, picks without the pool (the algorithm's
//! fallback): no pick ever waits for it. No caller code runs under it
//! (picks and answers read the clock before they take it), so it is held
//! for a scan of at most 16 slots. What a probe answer says is one
//! [`Slot`], written whole under the lock, so a pick never reads the
//! in-flight count of one answer beside the latency of another.
//!
//! The settings the targets of probes are drawn with (how many a pick,
//! the seeded stream's counter) are single words read Relaxed: none
//! publishes anything with it.

use crate::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use crate::sync::{Mutex, MutexGuard};

/// The most probe answers a pool keeps.
pub(crate) const MAX_PROBES: usize = 16;

/// One probe answer in the pool.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Slot {
    /// The backend's record id.
    pub(crate) id: u64,
    /// Requests it had in flight, plus the picks sent to it since.
    pub(crate) in_flight: u32,
    /// Its latency, in nanoseconds.
    pub(crate) latency: u64,
    /// When the answer came, in nanoseconds of the balancer's clock.
    pub(crate) at: u64,
    /// Picks it may still steer; 0: an empty slot.
    pub(crate) uses: u32,
}

/// The pool itself: at most `capacity` answers, at most one a backend.
#[derive(Debug)]
pub(crate) struct Ring {
    slots: [Slot; MAX_PROBES],
    capacity: usize,
}

impl Ring {
    /// The slots in use and the empty ones, `capacity` of them.
    pub(crate) fn slots_mut(&mut self) -> &mut [Slot] {
        &mut self.slots[..self.capacity]
    }

    /// Keeps `answer`: in place of the same backend's older answer, else in
    /// an empty slot, else in place of the oldest answer.
    pub(crate) fn insert(&mut self, answer: Slot) {
        let slots = self.slots_mut();
        let place = slots
            .iter()
            .position(|slot| slot.uses > 0 && slot.id == answer.id)
            .or_else(|| slots.iter().position(|slot| slot.uses == 0))
            .or_else(|| (0..slots.len()).min_by_key(|&k| slots[k].at));
        if let Some(place) = place {
            slots[place] = answer;
        }
    }
}

/// The probe pool of one balancer and how its probes are drawn; it lives
/// as long as the balancer (every rebuild of a live set shares it).
#[derive(Debug)]
pub(crate) struct ProbeBoard {
    ring: Mutex<Ring>,
    /// Probes a pick asks for.
    per_pick: AtomicU32,
    /// Picks an answer may steer.
    uses: AtomicU32,
    /// The stream probe targets are drawn from: `splitmix(seed + k)` for
    /// the `k`-th draw.
    seed: AtomicU64,
    draws: AtomicU64,
}

/// How a probing balancer sets its pool up (see `ProbingOptions`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct BoardSettings {
    pub(crate) capacity: usize,
    pub(crate) per_pick: u32,
    pub(crate) uses: u32,
    pub(crate) seed: u64,
}

impl ProbeBoard {
    pub(crate) fn new(settings: BoardSettings) -> Self {
        let board = Self {
            ring: Mutex::new(Ring {
                slots: [Slot::default(); MAX_PROBES],
                capacity: settings.capacity.clamp(1, MAX_PROBES),
            }),
            per_pick: AtomicU32::new(0),
            uses: AtomicU32::new(0),
            seed: AtomicU64::new(0),
            draws: AtomicU64::new(0),
        };
        board.configure(settings);
        board
    }

    /// Takes new settings (a rebuild with other options); the answers in
    /// the pool stay.
    pub(crate) fn configure(&self, settings: BoardSettings) {
        // Relaxed, all: single settings; a probe drawn with the old ones
        // is still a probe.
        self.per_pick.store(settings.per_pick, Ordering::Relaxed);
        self.uses.store(settings.uses.max(1), Ordering::Relaxed);
        if self.seed.swap(settings.seed, Ordering::Relaxed) != settings.seed {
            self.draws.store(0, Ordering::Relaxed);
        }
        let mut ring = self.ring.lock();
        let capacity = settings.capacity.clamp(1, MAX_PROBES);
        if capacity < ring.capacity {
            // The newest answers stay.
            let live = &mut ring.slots[..];
            live.sort_unstable_by_key(|slot| std::cmp::Reverse((slot.uses > 0, slot.at)));
            for slot in &mut live[capacity..] {
                *slot = Slot::default();
            }
        }
        ring.capacity = capacity;
    }

    /// The pool, if no one holds it now (a pick's way in).
    #[inline]
    pub(crate) fn try_ring(&self) -> Option<MutexGuard<'_, Ring>> {
        self.ring.try_lock()
    }

    /// Keeps a probe answer (a report's way in: it waits for the lock).
    pub(crate) fn answer(&self, id: u64, in_flight: u32, latency: u64, at: u64) {
        // Relaxed: a setting (see `configure`).
        let uses = self.uses.load(Ordering::Relaxed);
        self.ring.lock().insert(Slot {
            id,
            in_flight,
            latency,
            at,
            uses,
        });
    }

    /// Probes a pick asks for.
    pub(crate) fn per_pick(&self) -> u32 {
        // Relaxed: a setting (see `configure`).
        self.per_pick.load(Ordering::Relaxed)
    }

    /// The next word of the stream probe targets are drawn from.
    pub(crate) fn word(&self) -> u64 {
        // Relaxed: the counter only numbers the draws.
        let k = self.draws.fetch_add(1, Ordering::Relaxed);
        splitmix(self.seed.load(Ordering::Relaxed).wrapping_add(k))
    }

    /// A copy of the answers in the pool, for tests and stats.
    #[cfg(test)]
    pub(crate) fn answers(&self) -> Vec<Slot> {
        let mut ring = self.ring.lock();
        ring.slots_mut()
            .iter()
            .copied()
            .filter(|s| s.uses > 0)
            .collect()
    }
}

/// SplitMix64's output for counter value `x`.
fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn settings(capacity: usize) -> BoardSettings {
        BoardSettings {
            capacity,
            per_pick: 2,
            uses: 3,
            seed: 1,
        }
    }

    #[test]
    fn an_answer_replaces_the_same_backends_then_an_empty_slot_then_the_oldest() {
        let board = ProbeBoard::new(settings(2));
        board.answer(7, 1, 10, 100);
        board.answer(8, 2, 20, 200);
        board.answer(7, 5, 50, 300); // the same backend: replaced
        let ids = |board: &ProbeBoard| {
            let mut ids: Vec<_> = board
                .answers()
                .iter()
                .map(|s| (s.id, s.in_flight))
                .collect();
            ids.sort_unstable();
            ids
        };
        assert_eq!(ids(&board), [(7, 5), (8, 2)]);
        board.answer(9, 3, 30, 400); // full: the oldest (8, at 200) goes
        assert_eq!(ids(&board), [(7, 5), (9, 3)]);
        assert!(board.answers().iter().all(|slot| slot.uses == 3));
    }

    #[test]
    fn a_smaller_capacity_keeps_the_newest_answers() {
        let board = ProbeBoard::new(settings(4));
        for (id, at) in [(1, 40), (2, 10), (3, 30), (4, 20)] {
            board.answer(id, 0, 1, at);
        }
        board.configure(settings(2));
        let mut ids: Vec<_> = board.answers().iter().map(|s| s.id).collect();
        ids.sort_unstable();
        assert_eq!(ids, [1, 3]);
    }

    #[test]
    fn the_seeded_stream_is_the_same_on_every_run() {
        let (a, b) = (ProbeBoard::new(settings(2)), ProbeBoard::new(settings(2)));
        let words: Vec<_> = (0..4).map(|_| a.word()).collect();
        assert_eq!(words, (0..4).map(|_| b.word()).collect::<Vec<_>>());
        assert_ne!(words[0], words[1]);
    }
}
