//! An algorithm of a user's own, written against the public extension
//! API only (`Build`, `Choose`, `Candidates`): the least loaded backend,
//! ties broken by a rotating start, and a backend ramping up taking its
//! share of the steps that land on it. Both forms, so it runs through the
//! same matrices as the crate's algorithms.

use std::sync::atomic::{AtomicUsize, Ordering};

use loadbalance::{
    Backends, Build, BuildError, Candidates, Choose, Context, LockFree, Locked, PickError, Set,
    Static,
};

/// The lock-free form's state: a rotating start, shared by `&self`.
#[derive(Debug)]
pub(crate) struct Rotating {
    start: AtomicUsize,
}

/// The locked form's state: the same start, by `&mut self`.
#[derive(Debug)]
pub(crate) struct RotatingState {
    start: usize,
}

/// The user's balancer types.
#[allow(dead_code)]
pub(crate) type LockFreeRotating<T> = Static<T, LockFree<Rotating>>;
#[allow(dead_code)]
pub(crate) type LockedRotating<T> = Static<T, Locked<RotatingState>>;

impl<T> Build<T> for Rotating {
    type Options = ();
    const RESUMES: bool = true;

    fn build(_: &Set<'_, T>, (): &()) -> Result<Self, BuildError> {
        Ok(Self {
            start: AtomicUsize::new(0),
        })
    }

    fn resume(&mut self, previous: &Self) {
        // Relaxed: the start only spreads ties.
        let start = previous.start.load(Ordering::Relaxed);
        *self.start.get_mut() = start;
    }
}

impl<T> Build<T> for RotatingState {
    type Options = ();
    const RESUMES: bool = true;

    fn build(_: &Set<'_, T>, (): &()) -> Result<Self, BuildError> {
        Ok(Self { start: 0 })
    }

    fn resume(&mut self, previous: &Self) {
        self.start = previous.start;
    }
}

/// The least active of every backend, ties to the first at or after
/// `start`.
fn least<T>(backends: &Backends<T>, start: usize) -> usize {
    let n = backends.len();
    let start = start % n;
    let (mut best, mut load) = (start, backends.active(start));
    for i in (1..n).map(|k| (start + k) % n) {
        if backends.active(i) < load {
            (best, load) = (i, backends.active(i));
        }
    }
    best
}

/// As `least`, over the backends that may take the pick; a ramping one
/// that does not take this step is passed over, unless nothing else is.
fn least_open<T>(
    open: &mut Candidates<'_, '_, T>,
    start: usize,
) -> Result<Option<usize>, PickError> {
    let backends = open.backends();
    let n = backends.len();
    let (mut best, mut passed): (Option<(usize, usize)>, Option<usize>) = (None, None);
    for i in (0..n).map(|k| (start + k) % n) {
        if !open.eligible(i)? {
            continue;
        }
        let load = backends.active(i);
        if best.is_some_and(|(_, least)| load >= least) {
            continue;
        }
        if !open.accepts(i) {
            passed.get_or_insert(i);
            continue;
        }
        best = Some((i, load));
    }
    Ok(best.map(|(i, _)| i).or(passed))
}

impl Choose for &Rotating {
    fn plain<T>(
        &mut self,
        _: &Context<'_>,
        backends: &Backends<T>,
    ) -> Result<Option<usize>, PickError> {
        // Relaxed: see `resume`.
        Ok(Some(least(
            backends,
            self.start.fetch_add(1, Ordering::Relaxed),
        )))
    }

    fn choose<T>(
        &mut self,
        _: &Context<'_>,
        open: &mut Candidates<'_, '_, T>,
    ) -> Result<Option<usize>, PickError> {
        // Relaxed: see `resume`.
        least_open(open, self.start.fetch_add(1, Ordering::Relaxed))
    }
}

impl Choose for RotatingState {
    fn plain<T>(
        &mut self,
        _: &Context<'_>,
        backends: &Backends<T>,
    ) -> Result<Option<usize>, PickError> {
        self.start += 1;
        Ok(Some(least(backends, self.start - 1)))
    }

    fn choose<T>(
        &mut self,
        _: &Context<'_>,
        open: &mut Candidates<'_, '_, T>,
    ) -> Result<Option<usize>, PickError> {
        self.start += 1;
        least_open(open, self.start - 1)
    }
}
