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

use crate::mix::splitmix;
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
    /// The backend's index in the set the last pick saw (a cache; see
    /// `Ring::unresolved`).
    pub(crate) index: u32,
}

impl Slot {
    /// An answer as it comes, its index not looked up yet.
    pub(crate) fn answer(id: u64, in_flight: u32, latency: u64, at: u64, uses: u32) -> Self {
        Self {
            id,
            in_flight,
            latency,
            at,
            uses,
            index: 0,
        }
    }
}

/// The pool itself: at most `capacity` answers, at most one a backend,
/// and their requests in flight kept in order, so that a pick reads a
/// percentile without sorting (each change moves at most 16 words).
#[derive(Debug)]
pub(crate) struct Ring {
    slots: [Slot; MAX_PROBES],
    capacity: usize,
    /// The in-flight counts of the slots in use, ascending.
    sorted: [u32; MAX_PROBES],
    used: usize,
    /// The state whose indices the slots cache, but for the slots of
    /// `pending` (bit `k`: slot `k` came since the last pick).
    epoch: u64,
    pending: u16,
    /// The newest state's stamp: only a state this new forgets answers
    /// of backends it does not have (an older one, still finishing a pick
    /// begun before a rebuild, would forget a new backend's).
    newest: u64,
}

impl Ring {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            slots: [Slot::default(); MAX_PROBES],
            capacity: capacity.clamp(1, MAX_PROBES),
            sorted: [0; MAX_PROBES],
            used: 0,
            epoch: 0,
            pending: 0,
            newest: 0,
        }
    }

    /// A ring holding `slots` (for tests of the rule).
    #[cfg(all(test, not(loom)))]
    pub(crate) fn with(slots: &[Slot]) -> Self {
        let mut ring = Self::new(slots.len());
        ring.slots[..slots.len()].copy_from_slice(slots);
        ring.resort();
        ring
    }

    /// The slots, used or not.
    #[inline]
    pub(crate) fn slots(&self) -> &[Slot] {
        &self.slots[..self.capacity]
    }

    /// How many slots are in use.
    pub(crate) fn in_use(&self) -> usize {
        self.used
    }

    /// The `rank`-th smallest in-flight count of the slots in use (`rank`
    /// from 1 to `in_use`).
    pub(crate) fn smallest(&self, rank: usize) -> u32 {
        self.sorted[rank - 1]
    }

    /// The slots whose index in the state stamped `epoch` is not cached
    /// yet (as a mask: bit `k`, slot `k`), now taken as cached: the caller
    /// sets or clears each.
    #[inline]
    pub(crate) fn unresolved(&mut self, epoch: u64) -> u16 {
        let all = if self.capacity == MAX_PROBES {
            u16::MAX
        } else {
            (1u16 << self.capacity) - 1
        };
        let mask = if self.epoch == epoch {
            self.pending
        } else {
            self.epoch = epoch;
            all
        };
        self.pending = 0;
        mask
    }

    /// Caches slot `k`'s index.
    #[inline]
    pub(crate) fn set_index(&mut self, k: usize, index: u32) {
        self.slots[k].index = index;
    }

    /// Looks slot `k`'s index up again at the next pick.
    pub(crate) fn unresolve(&mut self, k: usize) {
        self.pending |= 1 << k;
    }

    /// Whether the state stamped `epoch` is the newest built.
    #[inline]
    pub(crate) fn is_newest(&self, epoch: u64) -> bool {
        epoch >= self.newest
    }

    /// A state stamped `epoch` was built.
    pub(crate) fn built(&mut self, epoch: u64) {
        self.newest = self.newest.max(epoch);
    }

    /// Empties slot `k`.
    pub(crate) fn clear(&mut self, k: usize) {
        if self.slots[k].uses > 0 {
            self.remove(self.slots[k].in_flight);
        }
        self.slots[k] = Slot::default();
    }

    /// Counts a pick slot `k` steered: one more request in flight, one use
    /// fewer (emptied after its last).
    #[inline]
    pub(crate) fn take(&mut self, k: usize) {
        let slot = &mut self.slots[k];
        if slot.uses <= 1 {
            return self.clear(k);
        }
        slot.uses -= 1;
        if slot.in_flight < u32::MAX {
            // The last copy of the count moves up one: still in order.
            let at = count_below(&self.sorted[..self.used], slot.in_flight + 1) - 1;
            self.sorted[at] += 1;
            slot.in_flight += 1;
        }
    }

    /// Keeps `answer`: in place of the same backend's older answer, else in
    /// an empty slot, else in place of the oldest answer. Answers that came
    /// more than `max_age` before it leave.
    pub(crate) fn insert(&mut self, answer: Slot, max_age: u64) {
        for k in 0..self.capacity {
            if self.slots[k].uses > 0 && answer.at.saturating_sub(self.slots[k].at) > max_age {
                self.clear(k);
            }
        }
        let slots = &self.slots[..self.capacity];
        let place = slots
            .iter()
            .position(|slot| slot.uses > 0 && slot.id == answer.id)
            .or_else(|| slots.iter().position(|slot| slot.uses == 0))
            .or_else(|| (0..slots.len()).min_by_key(|&k| slots[k].at));
        if let Some(place) = place {
            self.clear(place);
            if answer.uses > 0 {
                self.add(answer.in_flight);
            }
            self.slots[place] = answer;
            self.pending |= 1 << place;
        }
    }

    /// Keeps at most `capacity` slots, the newest answers.
    fn shrink(&mut self, capacity: usize) {
        let capacity = capacity.clamp(1, MAX_PROBES);
        if capacity < self.capacity {
            self.slots
                .sort_unstable_by_key(|slot| std::cmp::Reverse((slot.uses > 0, slot.at)));
            for slot in &mut self.slots[capacity..] {
                *slot = Slot::default();
            }
        }
        self.capacity = capacity;
        self.epoch = 0; // every index looked up again
        self.resort();
    }

    /// Orders the counts of the slots in use anew.
    fn resort(&mut self) {
        self.used = 0;
        for k in 0..self.capacity {
            if self.slots[k].uses > 0 {
                self.sorted[self.used] = self.slots[k].in_flight;
                self.used += 1;
            }
        }
        self.sorted[..self.used].sort_unstable();
    }

    fn add(&mut self, value: u32) {
        let at = count_below(&self.sorted[..self.used], value);
        self.sorted.copy_within(at..self.used, at + 1);
        self.sorted[at] = value;
        self.used += 1;
    }

    fn remove(&mut self, value: u32) {
        let at = count_below(&self.sorted[..self.used], value);
        self.sorted.copy_within(at + 1..self.used, at);
        self.used -= 1;
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
    /// How long an answer may steer picks, in nanoseconds.
    max_age: AtomicU64,
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
    pub(crate) max_age: u64,
    pub(crate) seed: u64,
}

impl ProbeBoard {
    pub(crate) fn new(settings: BoardSettings) -> Self {
        let board = Self {
            ring: Mutex::new(Ring::new(settings.capacity)),
            per_pick: AtomicU32::new(0),
            uses: AtomicU32::new(0),
            max_age: AtomicU64::new(0),
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
        self.max_age.store(settings.max_age, Ordering::Relaxed);
        if self.seed.swap(settings.seed, Ordering::Relaxed) != settings.seed {
            self.draws.store(0, Ordering::Relaxed);
        }
        self.ring.lock().shrink(settings.capacity);
    }

    /// A state stamped `epoch` was built over these records.
    pub(crate) fn built(&self, epoch: u64) {
        self.ring.lock().built(epoch);
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
        let max_age = self.max_age.load(Ordering::Relaxed);
        self.ring
            .lock()
            .insert(Slot::answer(id, in_flight, latency, at, uses), max_age);
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

    /// The pool, held (for tests of what a pick does meanwhile).
    #[cfg(all(test, not(loom)))]
    pub(crate) fn hold(&self) -> MutexGuard<'_, Ring> {
        self.ring.lock()
    }

    /// A copy of the answers in the pool, for tests.
    #[cfg(all(test, not(loom)))]
    pub(crate) fn answers(&self) -> Vec<Slot> {
        let ring = self.ring.lock();
        ring.slots()
            .iter()
            .copied()
            .filter(|s| s.uses > 0)
            .collect()
    }
}

/// How many of `sorted` are below `value`: where `value` goes in it. A
/// count, not a binary search: at 16 words it has no branch to mispredict.
#[inline]
fn count_below(sorted: &[u32], value: u32) -> usize {
    sorted.iter().map(|&v| usize::from(v < value)).sum()
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn settings(capacity: usize) -> BoardSettings {
        BoardSettings {
            capacity,
            per_pick: 2,
            uses: 3,
            max_age: 1_000,
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

    /// The ring's ordered counts are always the sorted counts of the slots
    /// in use, whatever answers, picks, clears and shrinks it went
    /// through.
    #[test]
    fn the_ordered_counts_follow_every_change() {
        use proptest::prelude::*;
        #[derive(Clone, Debug)]
        enum Step {
            Answer(u64, u32, u64, u32),
            Take(usize),
            Clear(usize),
            Shrink(usize),
        }
        let step = prop_oneof![
            (0u64..24, 0u32..5, 0u64..50, 0u32..4)
                .prop_map(|(a, b, c, d)| Step::Answer(a, b, c, d)),
            (0usize..16).prop_map(Step::Take),
            (0usize..16).prop_map(Step::Clear),
            (1usize..=16).prop_map(Step::Shrink),
        ];
        const MAX_AGE: u64 = 40;
        proptest!(|(steps in proptest::collection::vec(step, 1..200))| {
            let mut ring = Ring::new(16);
            for (at, step) in steps.into_iter().enumerate() {
                match step {
                    Step::Answer(id, in_flight, latency, uses) => {
                        ring.insert(Slot::answer(id, in_flight, latency, at as u64, uses), MAX_AGE);
                        prop_assert!(
                            ring.slots().iter().all(|s| s.uses == 0 || at as u64 - s.at <= MAX_AGE),
                            "an answer more than the age older than the last leaves"
                        );
                    }
                    Step::Take(k) if k < ring.slots().len() && ring.slots()[k].uses > 0 => ring.take(k),
                    Step::Clear(k) if k < ring.slots().len() => ring.clear(k),
                    Step::Shrink(capacity) => ring.shrink(capacity),
                    _ => {}
                }
                let mut want: Vec<u32> = ring.slots().iter().filter(|s| s.uses > 0).map(|s| s.in_flight).collect();
                want.sort_unstable();
                prop_assert_eq!(&ring.sorted[..ring.in_use()], &want[..]);
                let ids: Vec<u64> = ring.slots().iter().filter(|s| s.uses > 0).map(|s| s.id).collect();
                let mut distinct = ids.clone();
                distinct.sort_unstable();
                distinct.dedup();
                prop_assert_eq!(ids.len(), distinct.len(), "one answer a backend");
            }
        });
    }

    #[test]
    fn the_seeded_stream_is_the_same_on_every_run() {
        let (a, b) = (ProbeBoard::new(settings(2)), ProbeBoard::new(settings(2)));
        let words: Vec<_> = (0..4).map(|_| a.word()).collect();
        assert_eq!(words, (0..4).map(|_| b.word()).collect::<Vec<_>>());
        assert_ne!(words[0], words[1]);
    }
}
