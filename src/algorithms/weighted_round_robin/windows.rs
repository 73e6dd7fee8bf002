//! The smooth weighted round-robin sequence past its precomputed bound:
//! computed a window of picks at a time, into one of a few windows
//! allocated at build, so that no pick allocates (the first included).
//!
//! # Synchronization
//!
//! `current` names the window picks take steps from. A pick announces itself
//! on that window (`readers`) and then checks that it is still current;
//! only then does it claim a step (`taken`) and read the window's picks.
//! A window is rewritten only while it is not current and no pick has
//! announced itself on it:
//!
//! - **Announce, then check; check, then rewrite** (Dekker's pattern, all
//!   SeqCst): a pick's `readers` increment precedes its second load of
//!   `current`; a turn's load of `current` (seeing another window) precedes
//!   its load of `readers`. So either the turn sees the pick's announcement
//!   and leaves the window alone, or the pick sees the window is no longer
//!   current and backs out before reading it.
//! - **A window is published whole**: its picks and end state are stored
//!   (Relaxed) before the SeqCst exchange that makes it current; a pick's
//!   SeqCst load that sees it current sees them.
//! - **One writer a window**: a window's `scratch` lock is taken with
//!   `try_lock` (never waited for) by the pick that computes into it; two
//!   picks that turn at once compute the same next window into different
//!   windows, and the exchange publishes one of them.
//! - A pick waits only when both spare windows are busy: each either being
//!   computed by another pick or still held by a pick that was descheduled
//!   between its announcement and its step. It then backs off until the
//!   window changes.
//!
//! The loom model `windows_turn` (`loom_windows.rs`) checks that two picks racing across a
//! turn take every step of the sequence exactly once.

use crossbeam_utils::CachePadded;

use crate::sync::atomic::{AtomicI64, AtomicU16, AtomicUsize, Ordering};
use crate::sync::{Backoff, Mutex};

/// Windows allocated at build: the one in use and two spares, so that a
/// turn finds a spare even while a pick descheduled mid-step still holds
/// the window before. The loom model uses two, so that few picks reach a
/// window's reuse.
const WINDOWS: usize = if cfg!(loom) { 2 } else { 3 };

/// The sequence in consecutive windows, each computed from the end state of
/// the one before.
pub(crate) struct Windows {
    windows: [PickWindow; WINDOWS],
    /// The window picks take steps from.
    current: CachePadded<AtomicUsize>,
    /// Each weight in units of the current weights.
    scaled: Box<[i64]>,
    /// The sum of `scaled`.
    total: i64,
}

/// A run of consecutive picks and the current weights before and after it.
struct PickWindow {
    picks: Box<[AtomicU16]>,
    start: Box<[AtomicI64]>,
    end: Box<[AtomicI64]>,
    /// Steps of this window claimed so far.
    taken: CachePadded<AtomicUsize>,
    /// Picks announced on this window (see the module's documentation).
    readers: CachePadded<AtomicUsize>,
    /// The current weights a computation of this window steps, held by the
    /// pick computing it.
    scratch: Mutex<Box<[i64]>>,
}

impl Windows {
    /// Windows of `len` picks over backends of these scaled weights, the
    /// first computed from every current weight at 0.
    pub(crate) fn new(scaled: &[i64], len: usize) -> Self {
        let n = scaled.len();
        let window = || PickWindow {
            picks: (0..len).map(|_| AtomicU16::new(0)).collect(),
            start: (0..n).map(|_| AtomicI64::new(0)).collect(),
            end: (0..n).map(|_| AtomicI64::new(0)).collect(),
            taken: CachePadded::new(AtomicUsize::new(0)),
            readers: CachePadded::new(AtomicUsize::new(0)),
            scratch: Mutex::new(vec![0; n].into_boxed_slice()),
        };
        let windows = Self {
            windows: std::array::from_fn(|_| window()),
            current: CachePadded::new(AtomicUsize::new(0)),
            scaled: scaled.into(),
            total: scaled.iter().sum(),
        };
        if let Some(mut scratch) = windows.windows[0].scratch.try_lock() {
            windows.compute(&windows.windows[0], &mut scratch);
        }
        windows
    }

    /// The next pick of the sequence.
    #[inline]
    pub(crate) fn next_index(&self) -> usize {
        let mut backoff = Backoff::new();
        loop {
            // SeqCst: see the module's documentation (a pick's loads of
            // `current` and its announcement are one side of Dekker's
            // pattern; the load also acquires the window's contents).
            let at = self.current.load(Ordering::SeqCst);
            let window = &self.windows[at];
            window.readers.fetch_add(1, Ordering::SeqCst);
            let mut stuck = false;
            if self.current.load(Ordering::SeqCst) == at {
                // Relaxed: the counter only divides this window's steps.
                let step = window.taken.fetch_add(1, Ordering::Relaxed);
                if let Some(pick) = window.picks.get(step) {
                    // Relaxed: published by the exchange that made the
                    // window current, which this pick's load saw.
                    let index = usize::from(pick.load(Ordering::Relaxed));
                    // Release: the window's reads happen before a turn
                    // that sees this pick gone rewrites it.
                    window.readers.fetch_sub(1, Ordering::Release);
                    return index;
                }
                stuck = !self.turn(at);
            }
            // Release: as above.
            window.readers.fetch_sub(1, Ordering::Release);
            if stuck {
                backoff.wait();
            }
        }
    }

    /// Makes the window after `used` (used up, and held by this pick)
    /// current, unless another pick already did. `false` when no spare
    /// window could be taken: each is being computed or still read.
    #[cold]
    fn turn(&self, used: usize) -> bool {
        let before = &self.windows[used];
        let Some((next, mut scratch)) = self.spare(used) else {
            // SeqCst: see `next_index`.
            return self.current.load(Ordering::SeqCst) != used;
        };
        for (state, end) in scratch.iter_mut().zip(&before.end[..]) {
            // Relaxed: `used` is held by this pick, so it is not rewritten.
            *state = end.load(Ordering::Relaxed);
        }
        self.compute(&self.windows[next], &mut scratch);
        // SeqCst: publishes the window (see the module's documentation).
        // Another pick may have turned first; then this one is dropped.
        let _ = self
            .current
            .compare_exchange(used, next, Ordering::SeqCst, Ordering::SeqCst);
        true
    }

    /// A window other than `current`, no longer read, with its scratch
    /// lock held: the place to compute the next window.
    fn spare(&self, current: usize) -> Option<(usize, crate::sync::MutexGuard<'_, Box<[i64]>>)> {
        (1..WINDOWS)
            .map(|k| (current + k) % WINDOWS)
            .find_map(|index| {
                let window = &self.windows[index];
                let scratch = window.scratch.try_lock()?;
                // SeqCst: the turn's side of Dekker's pattern; `current`
                // was seen to be another window before this load.
                let free = self.current.load(Ordering::SeqCst) == current
                    && window.readers.load(Ordering::SeqCst) == 0;
                free.then_some((index, scratch))
            })
    }

    /// Computes `window` from the current weights in `state` (stepped to
    /// the window's end).
    fn compute(&self, window: &PickWindow, state: &mut [i64]) {
        // Relaxed throughout: the window is not current and no pick reads
        // it; the exchange that makes it current publishes it.
        for (start, &current) in window.start.iter().zip(state.iter()) {
            start.store(current, Ordering::Relaxed);
        }
        for pick in &window.picks[..] {
            // Indices fit u16: there are at most MAX_BACKENDS backends.
            pick.store(
                step(state, &self.scaled, self.total) as u16,
                Ordering::Relaxed,
            );
        }
        for (end, &current) in window.end.iter().zip(state.iter()) {
            end.store(current, Ordering::Relaxed);
        }
        window.taken.store(0, Ordering::Relaxed);
    }

    /// Makes the sequence go on from the current weights `state` (a state
    /// that left the sequence and came back to plain picks): the next
    /// window is computed from it and made current. `false` when no spare
    /// window could be taken now.
    pub(crate) fn rebase(&self, state: &[AtomicI64]) -> bool {
        // SeqCst: see `next_index`.
        let current = self.current.load(Ordering::SeqCst);
        let Some((next, mut scratch)) = self.spare(current) else {
            return false;
        };
        for (slot, state) in scratch.iter_mut().zip(state) {
            // Relaxed: current weights only steer picks.
            *slot = state.load(Ordering::Relaxed);
        }
        self.compute(&self.windows[next], &mut scratch);
        // SeqCst: publishes the window. A pick that still took the
        // sequence's own turn may have published first: then this fails
        // and the caller goes on from its explicit state, to rebase again.
        self.current
            .compare_exchange(current, next, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
    }

    /// Writes the current weights at the sequence's position into
    /// `current`: the current window's start plus what the steps taken in
    /// it added and subtracted.
    pub(crate) fn replay_into(&self, current: &[AtomicI64]) {
        let mut backoff = Backoff::new();
        loop {
            // SeqCst: the same announcement as a pick's (`next_index`).
            let at = self.current.load(Ordering::SeqCst);
            let window = &self.windows[at];
            window.readers.fetch_add(1, Ordering::SeqCst);
            if self.current.load(Ordering::SeqCst) == at {
                // Relaxed throughout: see `next_index`; `current` only
                // steers picks.
                let steps = window.taken.load(Ordering::Relaxed).min(window.picks.len());
                let added = |w: i64| steps as i64 * w;
                for ((current, start), &w) in
                    current.iter().zip(&window.start[..]).zip(&self.scaled[..])
                {
                    current.store(start.load(Ordering::Relaxed) + added(w), Ordering::Relaxed);
                }
                for pick in &window.picks[..steps] {
                    let index = usize::from(pick.load(Ordering::Relaxed));
                    current[index].fetch_sub(self.total, Ordering::Relaxed);
                }
                // Release: see `next_index`.
                window.readers.fetch_sub(1, Ordering::Release);
                return;
            }
            window.readers.fetch_sub(1, Ordering::Release);
            backoff.wait();
        }
    }
}

/// One of nginx's steps over every backend at full weight: each current
/// weight grows by its weight, the largest wins (the lowest index on ties)
/// and drops by the total. Current weights stay within `(-total, total]`.
#[inline]
pub(crate) fn step(current: &mut [i64], scaled: &[i64], total: i64) -> usize {
    let mut best = 0;
    let mut best_weight = i64::MIN;
    for (i, (current, &weight)) in current.iter_mut().zip(scaled).enumerate() {
        *current += weight;
        if *current > best_weight {
            best = i;
            best_weight = *current;
        }
    }
    current[best] -= total;
    best
}
