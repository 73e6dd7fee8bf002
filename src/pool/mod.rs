//! The pool: the one type a server holds. A live backend set running an
//! algorithm chosen at run time, with its health policy, request outcomes
//! timed from the pick, and lookups by backend.
//!
//! A pool is a [`Live`] balancer of whichever algorithm and form its
//! [`Algorithm`] and [`Form`] name, held in an enum: a pick is one `match`
//! on a value that never changes (a branch the predictor always gets
//! right) and then the static type's own pick, inlined; no virtual call.
//! `BENCHMARKS.md` has its cost against the static type.

mod algorithm;
#[cfg(feature = "serde")]
mod config;
#[cfg(feature = "metrics")]
mod metrics;
mod picked;
mod retry;
#[cfg(feature = "tower")]
pub mod tower;
#[cfg(feature = "wait")]
mod wait;

use std::borrow::Borrow;
use std::fmt::{self, Display};
use std::hash::Hash;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

pub use algorithm::{Algorithm, Form, ParseAlgorithmError, ParseFormError};
#[cfg(feature = "serde")]
pub use config::{BackendConfig, ConfigError, HealthConfig, OptionsConfig, PoolConfig};
#[cfg(feature = "metrics")]
pub use metrics::PrometheusText;
pub use picked::Picked;
pub use retry::{RetryBudget, RetryError, RetryPolicy, Verdict};

use crate::clock::{Clock, SystemClock};
use crate::{
    locked, lockfree, AdminState, Backend, BackendStats, Balancer, BuildError, Context, Guard,
    HealthPolicy, Live, PickError, UpdateError,
};

/// What a pool's backends are: their identity (`Eq`, `Hash`), the name
/// nginx's `hash consistent` hashes and metrics show (`Display`), and
/// shareable between threads. Addresses, host names and `String`s are.
pub trait PoolBackend: Hash + Eq + Display + Send + Sync + 'static {}

impl<T: Hash + Eq + Display + Send + Sync + 'static> PoolBackend for T {}

/// A live backend set running an algorithm chosen at run time.
///
/// Everything [`Live`] does (add, remove, re-weight, mark down, up or
/// draining, connection limits, backups, passive health, slow start) under
/// one type whatever the algorithm, plus picks timed for their outcome
/// ([`Picked`]) and lookups by backend ([`active_of`](Self::active_of),
/// [`stats_of`](Self::stats_of)).
///
/// Backends are any [`PoolBackend`]: addresses, host names, `String`s.
///
/// # Examples
///
/// ```
/// use loadbalance::{AdminState, Algorithm, Backend, Context, Pool};
///
/// let algorithm: Algorithm = "least_conn".parse()?;
/// let pool = Pool::builder(algorithm).build([
///     Backend::new("10.0.0.1:80").weight(2),
///     Backend::new("10.0.0.2:80").max_conns(100),
/// ])?;
/// let upstream = pool.pick(&Context::new())?;
/// upstream.success();
/// pool.add(Backend::new("10.0.0.3:80"))?;
/// pool.set_state("10.0.0.1:80", AdminState::Draining)?;
/// assert_eq!(pool.len(), 3);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Pool<T: PoolBackend> {
    inner: Inner<T>,
    algorithm: Algorithm,
    form: Form,
}

/// Every algorithm in both forms, as a live balancer.
enum Inner<T: PoolBackend> {
    RoundRobin(Live<lockfree::WeightedRoundRobin<T>>),
    LockedRoundRobin(Live<locked::WeightedRoundRobin<T>>),
    UnweightedRoundRobin(Live<lockfree::RoundRobin<T>>),
    LockedUnweightedRoundRobin(Live<locked::RoundRobin<T>>),
    LeastConn(Live<lockfree::LeastConn<T>>),
    LockedLeastConn(Live<locked::LeastConn<T>>),
    Random(Live<lockfree::Random<T>>),
    LockedRandom(Live<locked::Random<T>>),
    RandomLeastConn(Live<lockfree::RandomLeastConn<T>>),
    LockedRandomLeastConn(Live<locked::RandomLeastConn<T>>),
    PeakEwma(Live<lockfree::PeakEwma<T>>),
    LockedPeakEwma(Live<locked::PeakEwma<T>>),
    IpHash(Live<lockfree::NginxIpHash<T>>),
    LockedIpHash(Live<locked::NginxIpHash<T>>),
    Hash(Live<lockfree::NginxHash<T>>),
    LockedHash(Live<locked::NginxHash<T>>),
    ConsistentHash(Live<lockfree::IpHash<T>>),
    LockedConsistentHash(Live<locked::IpHash<T>>),
}

/// Runs `$body` with `$lb` bound to the pool's live balancer, whatever its
/// type.
macro_rules! dispatch {
    ($inner:expr, $lb:ident => $body:expr) => {
        match $inner {
            Inner::RoundRobin($lb) => $body,
            Inner::LockedRoundRobin($lb) => $body,
            Inner::UnweightedRoundRobin($lb) => $body,
            Inner::LockedUnweightedRoundRobin($lb) => $body,
            Inner::LeastConn($lb) => $body,
            Inner::LockedLeastConn($lb) => $body,
            Inner::Random($lb) => $body,
            Inner::LockedRandom($lb) => $body,
            Inner::RandomLeastConn($lb) => $body,
            Inner::LockedRandomLeastConn($lb) => $body,
            Inner::PeakEwma($lb) => $body,
            Inner::LockedPeakEwma($lb) => $body,
            Inner::IpHash($lb) => $body,
            Inner::LockedIpHash($lb) => $body,
            Inner::Hash($lb) => $body,
            Inner::LockedHash($lb) => $body,
            Inner::ConsistentHash($lb) => $body,
            Inner::LockedConsistentHash($lb) => $body,
        }
    };
}

/// Settings to build a [`Pool`] with: the algorithm, its form, the health
/// policy and the clock.
#[must_use]
pub struct PoolBuilder<T> {
    algorithm: Algorithm,
    form: Form,
    policy: HealthPolicy,
    clock: Arc<dyn Clock>,
    backends: PhantomData<fn() -> T>,
}

impl<T: PoolBackend> PoolBuilder<T> {
    /// Lock-free or mutex-backed (default: lock-free).
    pub fn form(mut self, form: Form) -> Self {
        self.form = form;
        self
    }

    /// The passive-health and slow-start policy (default: nginx's).
    pub fn health(mut self, policy: HealthPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// The clock that health, slow start, latency and peak EWMA read
    /// (default: the system clock).
    pub fn clock(mut self, clock: impl Clock + 'static) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Builds the pool over `backends`.
    ///
    /// # Errors
    ///
    /// As [`LiveBuilder::build`](crate::LiveBuilder::build) for the
    /// algorithm: no backends, too many, a zero weight, weights that
    /// overflow, duplicates, or the algorithm's options out of range.
    pub fn build(
        self,
        backends: impl IntoIterator<Item = Backend<T>>,
    ) -> Result<Pool<T>, BuildError> {
        let Self {
            algorithm,
            form,
            policy,
            clock,
            ..
        } = self;
        macro_rules! live {
            ($variant:ident, $options:expr) => {
                Inner::$variant(
                    Live::builder()
                        .health(policy)
                        .clock(clock)
                        .options($options)
                        .build(backends)?,
                )
            };
        }
        let locked = form == Form::Locked;
        let inner = match (&algorithm, locked) {
            (Algorithm::RoundRobin, false) => live!(RoundRobin, ()),
            (Algorithm::RoundRobin, true) => live!(LockedRoundRobin, ()),
            (Algorithm::UnweightedRoundRobin, false) => live!(UnweightedRoundRobin, ()),
            (Algorithm::UnweightedRoundRobin, true) => live!(LockedUnweightedRoundRobin, ()),
            (Algorithm::LeastConn, false) => live!(LeastConn, ()),
            (Algorithm::LeastConn, true) => live!(LockedLeastConn, ()),
            (Algorithm::Random(options), false) => live!(Random, options.clone()),
            (Algorithm::Random(options), true) => live!(LockedRandom, options.clone()),
            (Algorithm::RandomLeastConn(options), false) => live!(RandomLeastConn, options.clone()),
            (Algorithm::RandomLeastConn(options), true) => {
                live!(LockedRandomLeastConn, options.clone())
            }
            (Algorithm::PeakEwma(options), false) => live!(PeakEwma, options.clone()),
            (Algorithm::PeakEwma(options), true) => live!(LockedPeakEwma, options.clone()),
            (Algorithm::IpHash(options), false) => live!(IpHash, options.clone()),
            (Algorithm::IpHash(options), true) => live!(LockedIpHash, options.clone()),
            (Algorithm::Hash(options), false) => live!(Hash, options.clone()),
            (Algorithm::Hash(options), true) => live!(LockedHash, options.clone()),
            (Algorithm::ConsistentHash(options), false) => live!(ConsistentHash, options.clone()),
            (Algorithm::ConsistentHash(options), true) => {
                live!(LockedConsistentHash, options.clone())
            }
        };
        Ok(Pool {
            inner,
            algorithm,
            form,
        })
    }
}

impl<T> fmt::Debug for PoolBuilder<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PoolBuilder")
            .field("algorithm", &self.algorithm)
            .field("form", &self.form)
            .field("policy", &self.policy)
            .field("clock", &self.clock)
            .finish()
    }
}

impl<T: PoolBackend> Pool<T> {
    /// Settings for a pool running `algorithm`.
    pub fn builder(algorithm: Algorithm) -> PoolBuilder<T> {
        PoolBuilder {
            algorithm,
            form: Form::default(),
            policy: HealthPolicy::default(),
            clock: Arc::new(SystemClock::new()),
            backends: PhantomData,
        }
    }

    /// A backend for this request, timed from now: report its outcome with
    /// [`Picked::success`] or [`Picked::failure`].
    ///
    /// # Errors
    ///
    /// As [`Balancer::pick`].
    #[inline]
    pub fn pick(&self, ctx: &Context<'_>) -> Result<Picked<T>, PickError> {
        self.pick_guard(ctx).map(Picked::new)
    }

    /// A backend without the timing: the bare [`Guard`], as every
    /// balancer's [`Balancer::pick`] gives it.
    ///
    /// # Errors
    ///
    /// As [`Balancer::pick`].
    #[inline]
    pub fn pick_guard(&self, ctx: &Context<'_>) -> Result<Guard<T>, PickError> {
        dispatch!(&self.inner, lb => lb.pick(ctx))
    }

    /// The algorithm the pool runs.
    pub fn algorithm(&self) -> &Algorithm {
        &self.algorithm
    }

    /// The form it runs in.
    pub fn form(&self) -> Form {
        self.form
    }

    /// The number of backends in the set.
    pub fn len(&self) -> usize {
        dispatch!(&self.inner, lb => lb.len())
    }

    /// Whether the set is empty (never: a pool keeps at least one backend).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Active guards of the backend equal to `id`, or `None` if it is not
    /// in the set.
    pub fn active_of<Q>(&self, id: &Q) -> Option<usize>
    where
        T: Borrow<Q>,
        Q: PartialEq + ?Sized,
    {
        dispatch!(&self.inner, lb => lb.active_of(id))
    }

    /// Every backend's counters and state, in the set's order.
    pub fn stats(&self) -> Vec<BackendStats<T>>
    where
        T: Clone,
    {
        dispatch!(&self.inner, lb => lb.stats())
    }

    /// The counters and state of the backend equal to `id`.
    pub fn stats_of<Q>(&self, id: &Q) -> Option<BackendStats<T>>
    where
        T: Borrow<Q> + Clone,
        Q: PartialEq + ?Sized,
    {
        dispatch!(&self.inner, lb => lb.stats_of(id))
    }

    /// Adds a backend (see [`Live::add`]).
    ///
    /// # Errors
    ///
    /// As [`Live::add`].
    pub fn add(&self, backend: Backend<T>) -> Result<(), UpdateError> {
        dispatch!(&self.inner, lb => lb.add(backend))
    }

    /// Removes the backend equal to `id` (see [`Live::remove`]).
    ///
    /// # Errors
    ///
    /// As [`Live::remove`].
    pub fn remove<Q>(&self, id: &Q) -> Result<(), UpdateError>
    where
        T: Borrow<Q>,
        Q: PartialEq + ?Sized,
    {
        dispatch!(&self.inner, lb => lb.remove(id))
    }

    /// Removes the backend equal to `id`, waiting at most `timeout` for
    /// picks in flight (see [`Live::remove_within`]).
    ///
    /// # Errors
    ///
    /// As [`Live::remove_within`].
    pub fn remove_within<Q>(&self, id: &Q, timeout: Duration) -> Result<(), UpdateError>
    where
        T: Borrow<Q>,
        Q: PartialEq + ?Sized,
    {
        dispatch!(&self.inner, lb => lb.remove_within(id, timeout))
    }

    /// Re-weights the backend equal to `id` (see [`Live::set_weight`]).
    ///
    /// # Errors
    ///
    /// As [`Live::set_weight`].
    pub fn set_weight<Q>(&self, id: &Q, weight: u32) -> Result<(), UpdateError>
    where
        T: Borrow<Q>,
        Q: PartialEq + ?Sized,
    {
        dispatch!(&self.inner, lb => lb.set_weight(id, weight))
    }

    /// Marks the backend equal to `id` up, down or draining (see
    /// [`Live::set_state`]).
    ///
    /// # Errors
    ///
    /// As [`Live::set_state`].
    pub fn set_state<Q>(&self, id: &Q, state: AdminState) -> Result<(), UpdateError>
    where
        T: Borrow<Q>,
        Q: PartialEq + ?Sized,
    {
        dispatch!(&self.inner, lb => lb.set_state(id, state))
    }

    /// Sets the connection limit of the backend equal to `id` (0: none).
    ///
    /// # Errors
    ///
    /// As [`Live::set_max_conns`].
    pub fn set_max_conns<Q>(&self, id: &Q, max_conns: u32) -> Result<(), UpdateError>
    where
        T: Borrow<Q>,
        Q: PartialEq + ?Sized,
    {
        dispatch!(&self.inner, lb => lb.set_max_conns(id, max_conns))
    }

    /// Makes the backend equal to `id` a backup or a primary.
    ///
    /// # Errors
    ///
    /// As [`Live::set_backup`].
    pub fn set_backup<Q>(&self, id: &Q, backup: bool) -> Result<(), UpdateError>
    where
        T: Borrow<Q>,
        Q: PartialEq + ?Sized,
    {
        dispatch!(&self.inner, lb => lb.set_backup(id, backup))
    }

    /// Makes the set exactly `backends`, in this order, in one step,
    /// counts and health kept (see [`Live::replace`]).
    ///
    /// # Errors
    ///
    /// As [`Live::replace`].
    pub fn replace(
        &self,
        backends: impl IntoIterator<Item = Backend<T>>,
    ) -> Result<(), UpdateError> {
        dispatch!(&self.inner, lb => lb.replace(backends))
    }

    /// Replaces the health policy.
    pub fn set_health(&self, policy: HealthPolicy) {
        dispatch!(&self.inner, lb => lb.set_health(policy))
    }

    /// Whether a pick without a key or a tried set would find a backend
    /// now, without taking one: [`PickError::AllFull`] while every backend
    /// that could take it is at its `max_conns` (a server's readiness).
    ///
    /// # Errors
    ///
    /// The error such a pick would return.
    pub fn capacity(&self) -> Result<(), PickError> {
        dispatch!(&self.inner, lb => lb.capacity())
    }

    #[cfg(feature = "wait")]
    pub(crate) fn shared(&self) -> &crate::clock_and_policy::Shared {
        dispatch!(&self.inner, lb => lb.shared())
    }
}

/// A pool is a balancer: its pick is [`Pool::pick_guard`].
impl<T: PoolBackend> Balancer<T> for Pool<T> {
    #[inline]
    fn pick(&self, ctx: &Context<'_>) -> Result<Guard<T>, PickError> {
        self.pick_guard(ctx)
    }

    fn len(&self) -> usize {
        Pool::len(self)
    }

    fn active(&self, index: usize) -> Option<usize> {
        dispatch!(&self.inner, lb => lb.active(index))
    }

    fn stats(&self) -> Vec<BackendStats<T>>
    where
        T: Clone,
    {
        Pool::stats(self)
    }
}

impl<T: PoolBackend> fmt::Debug for Pool<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("algorithm", &self.algorithm)
            .field("form", &self.form)
            .finish_non_exhaustive()
    }
}
