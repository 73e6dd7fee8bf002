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
mod any_live;
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
use std::sync::Arc;
use std::time::Duration;

use crate::live::Assemble;
use crate::pick::{Build, Form, Sharing, Static};
pub use algorithm::{Algorithm, CustomAlgorithm, ParseAlgorithmError};
use algorithm::{Inner, dispatch};
use any_live::AnyLive;
#[cfg(feature = "serde")]
pub use config::{BackendConfig, ConfigError, HealthConfig, OptionsConfig, PoolConfig};
#[cfg(feature = "metrics")]
pub use metrics::PrometheusText;
pub use picked::Picked;
pub use retry::{RetryBudget, RetryError, RetryPolicy, Verdict};

use crate::backend::HealthPolicy;
use crate::error::{BuildError, PickError, UpdateError};
use crate::live::{AdminState, Backend, Live};
use crate::pick::{Balancer, Context};
use crate::table::{BackendStats, Guard};
use crate::time::{Clock, SystemClock};

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

/// An algorithm's two forms, as live sets: the pool holds one of them.
enum Forms<A: Assemble, B: Assemble> {
    LockFree(Live<A>),
    Locked(Live<B>),
}

/// What a pool's live set is built from, whichever its type.
struct LiveParts<T> {
    backends: Vec<Backend<T>>,
    policy: HealthPolicy,
    clock: Arc<dyn Clock>,
}

impl<T: PartialEq> LiveParts<T> {
    /// The live set of balancer type `B`, with `options`.
    fn live<B: Assemble<Value = T>>(self, options: B::Options) -> Result<Live<B>, BuildError> {
        Live::builder()
            .health(self.policy)
            .clock(self.clock)
            .options(options)
            .build(self.backends)
    }
}

/// Settings to build a [`Pool`] with: the algorithm, its form, the health
/// policy and the clock.
pub struct PoolBuilder<T> {
    algorithm: Algorithm,
    form: Form,
    policy: HealthPolicy,
    clock: Arc<dyn Clock>,
    /// How an algorithm of the caller's is built ([`Pool::custom`]).
    custom: Option<CustomBuild<T>>,
}

/// Builds a caller's algorithm's live set from its parts.
type CustomBuild<T> = Box<dyn FnOnce(LiveParts<T>) -> Result<Box<dyn AnyLive<T>>, BuildError>>;

impl<T: PoolBackend> PoolBuilder<T> {
    /// Lock-free or mutex-backed (default: lock-free). A pool of your own
    /// algorithm ([`Pool::custom`]) runs the form its type names; this
    /// changes nothing there.
    #[must_use]
    pub fn form(mut self, form: Form) -> Self {
        if self.custom.is_none() {
            self.form = form;
        }
        self
    }

    /// The passive-health and slow-start policy (default: nginx's).
    #[must_use]
    pub fn health(mut self, policy: HealthPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// The clock that health, slow start, latency and peak EWMA read
    /// (default: the system clock).
    #[must_use]
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
        let parts = LiveParts {
            backends: backends.into_iter().collect(),
            policy: self.policy,
            clock: self.clock,
        };
        let inner = match self.custom {
            Some(custom) => Inner::Custom(custom(parts)?),
            None => Inner::build(&self.algorithm, self.form, parts)?,
        };
        Ok(Pool {
            inner,
            algorithm: self.algorithm,
            form: self.form,
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
    #[must_use]
    pub fn builder(algorithm: Algorithm) -> PoolBuilder<T> {
        PoolBuilder {
            algorithm,
            form: Form::default(),
            policy: HealthPolicy::default(),
            clock: Arc::new(SystemClock::new()),
            custom: None,
        }
    }

    /// Settings for a pool running an algorithm of your own: the state `S`
    /// ([`Build`] and [`Choose`](crate::Choose)) in the form `F`
    /// ([`LockFree`](crate::LockFree) or [`Locked`](crate::Locked)), with
    /// `options`, known as `name` (in [`algorithm`](Self::algorithm),
    /// metrics, and the `algorithm` a configuration applied to it must
    /// name). Everything a pool does works as for the crate's own
    /// algorithms: updates, health, limits, waiting, retries, metrics.
    ///
    /// # Examples
    ///
    /// ```
    /// use loadbalance::{
    ///     Backend, BuildError, Backends, Build, Candidates, Choose, Context, LockFree, PickError,
    ///     Pool, Set,
    /// };
    ///
    /// /// The first backend that may take the pick: a failover order.
    /// struct FirstUp;
    ///
    /// impl<T> Build<T> for FirstUp {
    ///     type Options = ();
    ///     fn build(_: &Set<'_, T>, (): &()) -> Result<Self, BuildError> {
    ///         Ok(FirstUp)
    ///     }
    /// }
    ///
    /// impl Choose for &FirstUp {
    ///     fn plain<T>(&mut self, _: &Context<'_>, _: &Backends<T>) -> Result<Option<usize>, PickError> {
    ///         Ok(Some(0))
    ///     }
    ///     fn choose<T>(&mut self, _: &Context<'_>, open: &mut Candidates<'_, '_, T>) -> Result<Option<usize>, PickError> {
    ///         for i in 0..open.backends().len() {
    ///             if open.eligible(i)? {
    ///                 return Ok(Some(i));
    ///             }
    ///         }
    ///         Ok(None)
    ///     }
    /// }
    ///
    /// let pool = Pool::custom::<LockFree<FirstUp>>("first_up", ())
    ///     .build([Backend::new("primary:80"), Backend::new("standby:80")])?;
    /// assert_eq!(pool.algorithm().to_string(), "first_up");
    /// let picked = pool.pick(&Context::new())?;
    /// assert_eq!(*picked, "primary:80");
    /// picked.failure(); // nginx's defaults: one failure ejects it
    /// assert_eq!(*pool.pick(&Context::new())?, "standby:80");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn custom<F>(name: &'static str, options: <F::State as Build<T>>::Options) -> PoolBuilder<T>
    where
        T: Clone,
        F: Sharing + 'static,
        F::State: Build<T>,
    {
        let mut builder = Self::builder(Algorithm::Custom(CustomAlgorithm { name }));
        builder.form = F::FORM;
        builder.custom = Some(Box::new(move |parts: LiveParts<T>| {
            let live: Live<Static<T, F>> = parts.live(options)?;
            Ok(Box::new(live) as Box<dyn AnyLive<T>>)
        }));
        builder
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

    /// The probes to send now, if the pool's algorithm probes
    /// ([`Algorithm::Probing`]): call it after each pick, send each
    /// [`Probe`](crate::Probe) by your own transport and hand back its
    /// answer. Empty for every other algorithm.
    pub fn probes(&self) -> Vec<crate::table::Probe<T>>
    where
        T: Clone,
    {
        dispatch!(&self.inner, lb => lb.probes())
    }

    #[cfg(feature = "wait")]
    pub(crate) fn common(&self) -> &crate::backend::common::Common {
        dispatch!(&self.inner, lb => lb.common())
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
