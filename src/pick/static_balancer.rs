//! A static balancer: a fixed backend table and an algorithm's state in one
//! of its forms. Every balancer type of [`lockfree`](crate::lockfree) and
//! [`locked`](crate::locked) is one of these, and so is yours.

use std::fmt;

use super::{Balancer, Build, Context, NewBackends, Set, Sharing, capacity};
use crate::backend::HealthPolicy;
use crate::backend::common::Common;
use crate::error::{BuildError, PickError};
use crate::table::{BackendStats, Backends, Guard, Probe, Weights};

/// A balancer over a fixed list of backends: the table and the algorithm's
/// state `F::State` in the form `F` ([`LockFree`](crate::LockFree) or
/// [`Locked`](crate::Locked)).
///
/// The crate's balancer types are aliases of it
/// (`lockfree::RoundRobin<T>` is
/// `Static<T, LockFree<algorithms::RoundRobinCursor>>`); an algorithm of
/// your own gets the same constructors, [`Balancer`] and, through
/// [`Live`](crate::Live), everything a live set does, from its
/// [`Build`] and [`Choose`](crate::Choose).
///
/// # Examples
///
/// ```
/// use loadbalance::{lockfree::LeastConn, Balancer, Context, HealthPolicy};
///
/// let lb = LeastConn::weighted([("a", 3), ("b", 1)])?.with_health(HealthPolicy::none());
/// assert_eq!(lb.get(1), Some(&"b"));
/// let guard = lb.pick(&Context::new())?;
/// assert_eq!(lb.active(guard.index()), Some(1));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Static<T, F> {
    backends: Backends<T>,
    form: F,
}

impl<T, F> Static<T, F>
where
    F: Sharing,
    F::State: Build<T>,
{
    /// Builds over `(backend, weight)` pairs in the order given, with the
    /// algorithm's default options.
    ///
    /// # Errors
    ///
    /// [`BuildError::NoBackends`], [`BuildError::TooManyBackends`],
    /// [`BuildError::ZeroWeight`] or [`BuildError::WeightOverflow`]; and
    /// what the algorithm refuses (duplicate identities for the hashes).
    pub fn weighted(backends: impl IntoIterator<Item = (T, u32)>) -> Result<Self, BuildError> {
        Self::with_options(backends, Default::default())
    }

    /// Builds over `(backend, weight)` pairs in the order given, with
    /// `options`.
    ///
    /// # Errors
    ///
    /// As [`weighted`](Self::weighted), and options out of range.
    pub fn with_options(
        backends: impl IntoIterator<Item = (T, u32)>,
        options: <F::State as Build<T>>::Options,
    ) -> Result<Self, BuildError> {
        let (values, weights): (Vec<T>, Vec<u32>) = backends.into_iter().unzip();
        let weights = Weights::new(weights)?;
        let common = Common::standard(F::State::EFFECTIVE_WEIGHTS);
        let dense = values.len() > F::State::DENSE_ABOVE;
        let backends = Backends::owning(values, &weights, common, dense);
        let state = F::State::build(
            &Set::new(backends.owned(), &weights, backends.common()),
            &options,
        )?;
        Ok(Self {
            backends: backends.count_total(state.counts_total()),
            form: F::wrap(state),
        })
    }
}

impl<T, F> Static<T, F>
where
    F: Sharing,
    F::State: Build<T> + NewBackends<T>,
{
    /// Builds over `backends` in the order given: values, each of weight 1,
    /// or, for smooth weighted round-robin, `(value, weight)` pairs
    /// ([`NewBackends`]).
    ///
    /// # Errors
    ///
    /// As [`weighted`](Self::weighted).
    pub fn new(
        backends: impl IntoIterator<Item = <F::State as NewBackends<T>>::Item>,
    ) -> Result<Self, BuildError> {
        Self::weighted(backends.into_iter().map(F::State::weigh))
    }
}

impl<T, F> Static<T, F>
where
    F: Sharing,
    F::State: Rotation,
{
    /// Starts the sequence at backend `offset % len` instead of 0.
    #[must_use]
    pub fn with_start(mut self, offset: usize) -> Self {
        self.form_mut()
            .with_state_mut(|state| state.rotate_to(offset));
        self
    }

    /// Starts at a random backend, so that many instances started together
    /// do not all send their first requests to backend 0.
    #[must_use]
    pub fn with_random_start(self) -> Self {
        self.with_start(rand::random::<u32>() as usize)
    }
}

impl<T, F> Static<T, F> {
    /// The backend at `index`, or `None` past the end.
    pub fn get(&self, index: usize) -> Option<&T> {
        self.backends.get(index)
    }

    /// Sets the passive-health policy (default: nginx's, one failure
    /// ejects for 10 s; [`HealthPolicy::none`] turns it off). Slow start
    /// applies to backends that rejoin after an ejection.
    #[must_use]
    pub fn with_health(self, policy: HealthPolicy) -> Self {
        self.backends.common().set_policy(policy);
        self
    }

    /// The probes to send after a pick, if the algorithm probes
    /// ([`Probe`]); none for any other algorithm.
    pub fn probes(&self) -> Vec<Probe<T>>
    where
        T: Clone,
    {
        let mut probes = Vec::new();
        self.backends.probes(&mut probes);
        probes
    }

    /// The table and the form, for a live set's snapshot.
    pub(crate) fn from_parts(backends: Backends<T>, form: F) -> Self {
        Self { backends, form }
    }

    pub(crate) fn form(&self) -> &F {
        &self.form
    }

    /// The table, for the crate's own tests.
    #[cfg(all(test, not(loom)))]
    pub(crate) fn table(&self) -> &Backends<T> {
        &self.backends
    }

    /// The state, to change before the first pick (`&mut self`).
    pub(crate) fn form_mut(&mut self) -> &mut F {
        &mut self.form
    }

    /// Whether a pick without a key or a tried set would find a backend
    /// now, without taking one.
    pub(crate) fn capacity(&self) -> Result<(), PickError> {
        capacity(&self.backends)
    }
}

impl<T: Send + Sync, F: Sharing> Balancer<T> for Static<T, F> {
    #[inline]
    fn pick(&self, ctx: &Context<'_>) -> Result<Guard<T>, PickError> {
        self.form.pick(ctx, &self.backends)
    }

    fn len(&self) -> usize {
        self.backends.len()
    }

    fn active(&self, index: usize) -> Option<usize> {
        (index < self.backends.len()).then(|| self.backends.active(index))
    }

    fn stats(&self) -> Vec<BackendStats<T>>
    where
        T: Clone,
    {
        BackendStats::all(&self.backends)
    }

    fn stats_at(&self, index: usize) -> Option<BackendStats<T>>
    where
        T: Clone,
    {
        BackendStats::at(&self.backends, index)
    }
}

/// The backends and their active counts; the state is the algorithm's.
impl<T: fmt::Debug, F> fmt::Debug for Static<T, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Static")
            .field("backends_and_active", &self.backends)
            .finish_non_exhaustive()
    }
}

/// A state whose sequence steps through the backends in turn and can begin
/// at any of them: what [`Static::with_start`] moves (both forms of
/// round-robin; yours, if it rotates too).
pub trait Rotation {
    /// The backend the next pick goes to.
    fn position(&self) -> usize;
    /// Makes the next pick go to backend `index % len`.
    fn rotate_to(&mut self, index: usize);
}
