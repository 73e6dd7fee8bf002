//! Round-robin: backends in order, 0, 1, …, n−1, 0, 1, …

use crate::sync::atomic::{AtomicUsize, Ordering};

use crate::assemble::{Assemble, Parts};
use crate::backends::Backends;
use crate::balancer_type::{balancer_type, Balanced, Pick};
use crate::driver::{self, Choose};
use crate::mutex_form::Locked;
use crate::selection::Slow;
use crate::{BuildError, Context, Guard, PickError};
use crossbeam_utils::CachePadded;

balancer_type! {
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
    RoundRobin, Cursor
}

balancer_type! {
    /// Mutex-backed round-robin: the sequential cursor behind a
    /// `parking_lot::Mutex`. Same sequence as
    /// [`lockfree::RoundRobin`](crate::lockfree::RoundRobin).
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
    LockedRoundRobin, Locked<RoundRobinState>
}

impl<T> RoundRobin<T> {
    /// Builds over `backends` in the order given, starting at backend 0.
    ///
    /// # Errors
    ///
    /// [`BuildError::NoBackends`] or [`BuildError::TooManyBackends`].
    pub fn new(backends: impl IntoIterator<Item = T>) -> Result<Self, BuildError> {
        let backends = Backends::new(backends)?;
        Ok(Self(Balanced {
            backends,
            algorithm: Cursor(CachePadded::new(AtomicUsize::new(0))),
        }))
    }

    /// Starts the sequence at backend `offset % len` instead of 0.
    #[must_use]
    pub fn with_start(self, offset: usize) -> Self {
        let start = offset % self.0.backends.len();
        self.0.algorithm.0.store(start, Ordering::Relaxed);
        self
    }

    /// Starts at a random backend, so that many instances started together
    /// do not all send their first requests to backend 0.
    #[must_use]
    pub fn with_random_start(self) -> Self {
        self.with_start(rand::random::<u32>() as usize)
    }
}

impl<T> LockedRoundRobin<T> {
    /// Builds over `backends` in the order given, starting at backend 0.
    ///
    /// # Errors
    ///
    /// [`BuildError::NoBackends`] or [`BuildError::TooManyBackends`].
    pub fn new(backends: impl IntoIterator<Item = T>) -> Result<Self, BuildError> {
        let backends = Backends::new(backends)?;
        let state = RoundRobinState {
            next: 0,
            len: backends.len(),
        };
        Ok(Self(Balanced::locked(backends, state)))
    }

    /// Starts the sequence at backend `offset % len` instead of 0.
    #[must_use]
    pub fn with_start(self, offset: usize) -> Self {
        {
            let mut state = self.0.algorithm.lock();
            state.next = offset % state.len;
        }
        self
    }

    /// Starts at a random backend (see [`RoundRobin::with_random_start`]).
    #[must_use]
    pub fn with_random_start(self) -> Self {
        self.with_start(rand::random::<u32>() as usize)
    }
}

/// The lock-free cursor: the number of picks made so far plus the start.
#[derive(Debug)]
pub(crate) struct Cursor(CachePadded<AtomicUsize>);

impl Pick for Cursor {
    #[inline]
    fn pick<T>(&self, ctx: &Context<'_>, backends: &Backends<T>) -> Result<Guard<T>, PickError> {
        driver::pick(&mut &*self, ctx, backends)
    }
}

impl Choose for &Cursor {
    #[inline]
    fn plain<T>(&mut self, _: &Context<'_>, backends: &Backends<T>) -> Result<usize, PickError> {
        // Relaxed: the cursor only spreads picks; nothing is published through it.
        Ok(self.0.fetch_add(1, Ordering::Relaxed) % backends.len())
    }

    fn choose<T>(
        &mut self,
        _: &Context<'_>,
        slow: &mut Slow<'_, '_, T>,
    ) -> Result<Option<usize>, PickError> {
        let len = slow.backends().len();
        // Relaxed: see `plain`.
        in_turn(slow, || Ok(self.0.fetch_add(1, Ordering::Relaxed) % len))
    }
}

/// The sequential form: the next index, wrapping at `len`.
#[derive(Debug)]
pub(crate) struct RoundRobinState {
    next: usize,
    len: usize,
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
    fn plain<T>(&mut self, _: &Context<'_>, _: &Backends<T>) -> Result<usize, PickError> {
        Ok(self.step())
    }

    fn choose<T>(
        &mut self,
        _: &Context<'_>,
        slow: &mut Slow<'_, '_, T>,
    ) -> Result<Option<usize>, PickError> {
        in_turn(slow, || Ok(self.step()))
    }
}

/// Round-robin while some backends are out: steps on past the backends that
/// cannot take the pick. A backend in slow start lets through only its
/// ramp's share of the steps that land on it; when every available backend
/// is ramping and two rounds pass without one accepting, the first
/// available one met takes the pick.
fn in_turn<T>(
    slow: &mut Slow<'_, '_, T>,
    mut step: impl FnMut() -> Result<usize, PickError>,
) -> Result<Option<usize>, PickError> {
    let mut first_met = None;
    for _ in 0..2 * slow.backends().len() {
        let index = step()?;
        if !slow.eligible(index)? {
            continue;
        }
        if !slow.accepts(index) {
            first_met.get_or_insert(index);
            continue;
        }
        return Ok(Some(index));
    }
    Ok(first_met)
}

impl<T> Assemble for RoundRobin<T>
where
    T: Send + Sync,
{
    type Value = T;
    type Options = ();
    const EFFECTIVE_WEIGHTS: bool = false;

    fn assemble(parts: Parts<'_, T>, _: &(), previous: Option<&Self>) -> Result<Self, BuildError> {
        // Relaxed: read once to carry the position over; see `Cursor`.
        let start = previous.map_or(0, |previous| {
            previous.0.algorithm.0.load(Ordering::Relaxed) % previous.0.backends.len()
        });
        Ok(Self(Balanced {
            backends: Backends::from_entries(parts.entries)?,
            algorithm: Cursor(CachePadded::new(AtomicUsize::new(start))),
        }))
    }
}

impl<T> Assemble for LockedRoundRobin<T>
where
    T: Send + Sync,
{
    type Value = T;
    type Options = ();
    const EFFECTIVE_WEIGHTS: bool = false;

    fn assemble(parts: Parts<'_, T>, _: &(), previous: Option<&Self>) -> Result<Self, BuildError> {
        let backends = Backends::from_entries(parts.entries)?;
        let len = backends.len();
        let next = previous.map_or(0, |previous| previous.0.algorithm.lock().next) % len;
        Ok(Self(Balanced::locked(
            backends,
            RoundRobinState { next, len },
        )))
    }
}
