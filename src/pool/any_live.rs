//! A live set of any balancer type, behind one object type: how a pool
//! holds an algorithm of the caller's ([`Pool::custom`](crate::Pool::custom)),
//! whose type the pool's own enum cannot name.
//!
//! The pool's `dispatch!` runs the same body on every live set it holds,
//! so the object answers the same calls: the inherent methods of
//! `dyn AnyLive<T>` below turn the calls that name a backend by a borrowed
//! key (generic, which an object cannot be) into calls with a matcher.

use std::borrow::Borrow;
use std::time::{Duration, Instant};

use super::PoolBackend;
use crate::backend::HealthPolicy;
#[cfg(feature = "wait")]
use crate::backend::common::Common;
use crate::error::{PickError, UpdateError};
use crate::live::{AdminState, Assemble, Backend, Live};
use crate::pick::{Balancer, Context};
use crate::table::{BackendStats, Guard, Probe};

/// Matches the backend an update names.
type Id<'a, T> = &'a dyn Fn(&T) -> bool;

/// What a pool asks of its live set, as an object.
pub(crate) trait AnyLive<T>: Send + Sync {
    fn pick(&self, ctx: &Context<'_>) -> Result<Guard<T>, PickError>;
    fn len(&self) -> usize;
    fn active(&self, index: usize) -> Option<usize>;
    fn active_where(&self, id: Id<'_, T>) -> Option<usize>;
    fn stats_cloned(&self) -> Vec<BackendStats<T>>;
    fn stats_where(&self, id: Id<'_, T>) -> Option<BackendStats<T>>;
    fn add(&self, backend: Backend<T>) -> Result<(), UpdateError>;
    fn remove_where(&self, id: Id<'_, T>, deadline: Option<Instant>) -> Result<(), UpdateError>;
    fn set_weight_where(&self, id: Id<'_, T>, weight: u32) -> Result<(), UpdateError>;
    fn set_state_where(&self, id: Id<'_, T>, state: AdminState) -> Result<(), UpdateError>;
    fn set_max_conns_where(&self, id: Id<'_, T>, max_conns: u32) -> Result<(), UpdateError>;
    fn set_backup_where(&self, id: Id<'_, T>, backup: bool) -> Result<(), UpdateError>;
    fn replace_all(&self, backends: Vec<Backend<T>>) -> Result<(), UpdateError>;
    fn set_health(&self, policy: HealthPolicy);
    fn capacity(&self) -> Result<(), PickError>;
    fn probes(&self) -> Vec<Probe<T>>;
    #[cfg(feature = "wait")]
    fn common(&self) -> &Common;
}

impl<T, B> AnyLive<T> for Live<B>
where
    T: PoolBackend + Clone,
    B: Assemble<Value = T> + Balancer<T>,
{
    fn pick(&self, ctx: &Context<'_>) -> Result<Guard<T>, PickError> {
        Balancer::pick(self, ctx)
    }

    fn len(&self) -> usize {
        Balancer::len(self)
    }

    fn active(&self, index: usize) -> Option<usize> {
        Balancer::active(self, index)
    }

    fn active_where(&self, id: Id<'_, T>) -> Option<usize> {
        Live::active_where(self, id)
    }

    fn stats_cloned(&self) -> Vec<BackendStats<T>> {
        Balancer::stats(self)
    }

    fn stats_where(&self, id: Id<'_, T>) -> Option<BackendStats<T>> {
        Live::stats_where(self, id)
    }

    fn add(&self, backend: Backend<T>) -> Result<(), UpdateError> {
        Live::add(self, backend)
    }

    fn remove_where(&self, id: Id<'_, T>, deadline: Option<Instant>) -> Result<(), UpdateError> {
        Live::remove_where(self, id, deadline)
    }

    fn set_weight_where(&self, id: Id<'_, T>, weight: u32) -> Result<(), UpdateError> {
        Live::set_weight_where(self, id, weight)
    }

    fn set_state_where(&self, id: Id<'_, T>, state: AdminState) -> Result<(), UpdateError> {
        Live::set_state_where(self, id, state)
    }

    fn set_max_conns_where(&self, id: Id<'_, T>, max_conns: u32) -> Result<(), UpdateError> {
        Live::set_max_conns_where(self, id, max_conns)
    }

    fn set_backup_where(&self, id: Id<'_, T>, backup: bool) -> Result<(), UpdateError> {
        Live::set_backup_where(self, id, backup)
    }

    fn replace_all(&self, backends: Vec<Backend<T>>) -> Result<(), UpdateError> {
        Live::replace(self, backends)
    }

    fn set_health(&self, policy: HealthPolicy) {
        Live::set_health(self, policy);
    }

    fn capacity(&self) -> Result<(), PickError> {
        Live::capacity(self)
    }

    fn probes(&self) -> Vec<Probe<T>> {
        Live::probes(self)
    }

    #[cfg(feature = "wait")]
    fn common(&self) -> &Common {
        Live::common(self)
    }
}

/// The calls `dispatch!` makes, as [`Live`] spells them.
impl<T: PartialEq> dyn AnyLive<T> + '_ {
    pub(crate) fn active_of<Q>(&self, id: &Q) -> Option<usize>
    where
        T: Borrow<Q>,
        Q: PartialEq + ?Sized,
    {
        self.active_where(&|value| value.borrow() == id)
    }

    pub(crate) fn stats(&self) -> Vec<BackendStats<T>> {
        self.stats_cloned()
    }

    pub(crate) fn stats_of<Q>(&self, id: &Q) -> Option<BackendStats<T>>
    where
        T: Borrow<Q>,
        Q: PartialEq + ?Sized,
    {
        self.stats_where(&|value| value.borrow() == id)
    }

    pub(crate) fn remove<Q>(&self, id: &Q) -> Result<(), UpdateError>
    where
        T: Borrow<Q>,
        Q: PartialEq + ?Sized,
    {
        self.remove_where(&|value| value.borrow() == id, None)
    }

    pub(crate) fn remove_within<Q>(&self, id: &Q, timeout: Duration) -> Result<(), UpdateError>
    where
        T: Borrow<Q>,
        Q: PartialEq + ?Sized,
    {
        self.remove_where(
            &|value| value.borrow() == id,
            Some(Instant::now() + timeout),
        )
    }

    pub(crate) fn set_weight<Q>(&self, id: &Q, weight: u32) -> Result<(), UpdateError>
    where
        T: Borrow<Q>,
        Q: PartialEq + ?Sized,
    {
        self.set_weight_where(&|value| value.borrow() == id, weight)
    }

    pub(crate) fn set_state<Q>(&self, id: &Q, state: AdminState) -> Result<(), UpdateError>
    where
        T: Borrow<Q>,
        Q: PartialEq + ?Sized,
    {
        self.set_state_where(&|value| value.borrow() == id, state)
    }

    pub(crate) fn set_max_conns<Q>(&self, id: &Q, max_conns: u32) -> Result<(), UpdateError>
    where
        T: Borrow<Q>,
        Q: PartialEq + ?Sized,
    {
        self.set_max_conns_where(&|value| value.borrow() == id, max_conns)
    }

    pub(crate) fn set_backup<Q>(&self, id: &Q, backup: bool) -> Result<(), UpdateError>
    where
        T: Borrow<Q>,
        Q: PartialEq + ?Sized,
    {
        self.set_backup_where(&|value| value.borrow() == id, backup)
    }

    pub(crate) fn replace(
        &self,
        backends: impl IntoIterator<Item = Backend<T>>,
    ) -> Result<(), UpdateError> {
        self.replace_all(backends.into_iter().collect())
    }
}
