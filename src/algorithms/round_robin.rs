//! Round-robin: backends in order, 0, 1, …, n−1, 0, 1, …

use crossbeam_utils::CachePadded;

use crate::error::{BuildError, PickError};
use crate::pick::{Build, Candidates, Choose, Context, LockFree, Locked, Rotation, Set, Static};
use crate::sync::atomic::{AtomicUsize, Ordering};
use crate::table::Backends;

/// Lock-free round-robin: one relaxed `fetch_add` on a shared cursor a
/// pick.
///
/// Picks go 0, 1, …, n−1, 0, … from the start offset (0 unless set).
/// Under concurrency each pick takes its own step of that sequence. The
/// cursor is a `usize`, so after 2^64 picks (five centuries at a billion
/// a second) the sequence restarts from an offset of `2^64 mod n`.
///
/// # Examples
///
/// ```
/// use loadbalance::{lockfree::RoundRobin, Balancer, Context};
///
/// let lb = RoundRobin::new(["a", "b", "c"])?.with_start(1);
/// let picks: Vec<_> = (0..4).map(|_| *lb.pick(&Context::new()).unwrap()).collect();
/// assert_eq!(picks, ["b", "c", "a", "b"]);
/// # Ok::<(), loadbalance::BuildError>(())
/// ```
pub type RoundRobin<T> = Static<T, LockFree<RoundRobinCursor>>;

/// Mutex-backed round-robin: the sequential cursor behind a mutex. Same
/// sequence as [`lockfree::RoundRobin`](crate::lockfree::RoundRobin).
///
/// # Examples
///
/// ```
/// use loadbalance::{locked::RoundRobin, Balancer, Context};
///
/// let lb = RoundRobin::new([10, 20])?;
/// assert_eq!(*lb.pick(&Context::new())?, 10);
/// assert_eq!(*lb.pick(&Context::new())?, 20);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub type LockedRoundRobin<T> = Static<T, Locked<RoundRobinState>>;

/// Round-robin's lock-free state: the number of picks made so far plus the
/// start, and the number of backends.
#[derive(Debug)]
pub struct RoundRobinCursor {
    cursor: CachePadded<AtomicUsize>,
    len: usize,
}

/// Round-robin's sequential state: the next index, wrapping at the number
/// of backends.
#[derive(Debug)]
pub struct RoundRobinState {
    next: usize,
    len: usize,
}

impl Rotation for RoundRobinCursor {
    fn position(&self) -> usize {
        // Relaxed: read once to carry the position over; the cursor only
        // spreads picks.
        self.cursor.load(Ordering::Relaxed) % self.len
    }

    fn rotate_to(&mut self, index: usize) {
        // Relaxed: `&mut self`, before any pick shares the state.
        self.cursor.store(index % self.len, Ordering::Relaxed);
    }
}

impl Rotation for RoundRobinState {
    fn position(&self) -> usize {
        self.next
    }

    fn rotate_to(&mut self, index: usize) {
        self.next = index % self.len;
    }
}

impl<T> Build<T> for RoundRobinCursor {
    type Options = ();
    const RESUMES: bool = true;

    fn build(set: &Set<'_, T>, (): &()) -> Result<Self, BuildError> {
        Ok(Self {
            cursor: CachePadded::new(AtomicUsize::new(0)),
            len: set.len(),
        })
    }

    /// Continues from the index it would have picked next, modulo the new
    /// number of backends.
    fn resume(&mut self, previous: &Self) {
        self.rotate_to(previous.position());
    }
}

impl<T> Build<T> for RoundRobinState {
    type Options = ();
    const RESUMES: bool = true;

    fn build(set: &Set<'_, T>, (): &()) -> Result<Self, BuildError> {
        Ok(Self {
            next: 0,
            len: set.len(),
        })
    }

    /// As [`RoundRobinCursor`]'s.
    fn resume(&mut self, previous: &Self) {
        self.rotate_to(previous.position());
    }
}

impl Choose for &RoundRobinCursor {
    #[inline]
    fn plain<T>(&mut self, _: &Context<'_>, _: &Backends<T>) -> Result<Option<usize>, PickError> {
        // Relaxed: the cursor only spreads picks; nothing is published through it.
        Ok(Some(self.cursor.fetch_add(1, Ordering::Relaxed) % self.len))
    }

    fn choose<T>(
        &mut self,
        _: &Context<'_>,
        candidates: &mut Candidates<'_, '_, T>,
    ) -> Result<Option<usize>, PickError> {
        // Relaxed: see `plain`.
        in_turn(candidates, || {
            self.cursor.fetch_add(1, Ordering::Relaxed) % self.len
        })
    }
}

impl RoundRobinState {
    #[inline]
    fn step(&mut self) -> usize {
        let index = self.next;
        self.next = if index + 1 == self.len { 0 } else { index + 1 };
        index
    }
}

impl Choose for RoundRobinState {
    #[inline]
    fn plain<T>(&mut self, _: &Context<'_>, _: &Backends<T>) -> Result<Option<usize>, PickError> {
        Ok(Some(self.step()))
    }

    fn choose<T>(
        &mut self,
        _: &Context<'_>,
        candidates: &mut Candidates<'_, '_, T>,
    ) -> Result<Option<usize>, PickError> {
        in_turn(candidates, || self.step())
    }
}

/// Round-robin while some backends are out: steps on past the backends that
/// cannot take the pick. A backend in slow start lets through only its
/// ramp's share of the steps that land on it; when every available backend
/// is ramping and two rounds pass without one accepting, the first
/// available one met takes the pick.
fn in_turn<T>(
    candidates: &mut Candidates<'_, '_, T>,
    mut step: impl FnMut() -> usize,
) -> Result<Option<usize>, PickError> {
    let mut first_met = None;
    for _ in 0..2 * candidates.backends().len() {
        let index = step();
        if !candidates.eligible(index)? {
            continue;
        }
        if !candidates.accepts(index) {
            first_met.get_or_insert(index);
            continue;
        }
        return Ok(Some(index));
    }
    Ok(first_met)
}
