use std::borrow::Borrow;
use std::fmt;
use std::panic::{self, AssertUnwindSafe};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

use super::assemble::Assemble;
use super::backend::{AdminState, Backend, configure};
use super::builder::LiveBuilder;
use super::members::{Members, Snapshot, assemble, entry};
use super::retire;
use crate::backend::HealthPolicy;
use crate::backend::common::Common;
use crate::backend::record::{Record, flag};
use crate::error::{BuildError, PickError, UpdateError};
use crate::pick::{Balancer, Context};
use crate::sync::Mutex;
use crate::table::entry::Entry;
use crate::table::{BackendStats, Guard};
use crate::time::SystemClock;

/// A balancer whose backend set changes at run time: add, remove,
/// re-weight, mark down, up or draining, while other threads pick.
///
/// `B` is any balancer type of this crate, lock-free or mutex-backed; it
/// decides the algorithm. What each algorithm does across an update:
///
/// - round-robin continues from the index it would have picked next (modulo
///   the new number of backends), so the rotation goes on rather than
///   restarting at 0;
/// - smooth weighted round-robin restarts at step 0 of the new set's exact
///   sequence (nginx does the same on reload), and stays exact from there;
/// - least-connections keeps every count, so it sees the load as it is;
/// - source-IP hash moves only the clients of backends that left or went
///   down; they return when their backend does.
///
/// A pick that starts after an update call returned sees the update. Guards
/// of a removed backend stay valid; dropping them is safe.
///
/// # Examples
///
/// ```
/// use loadbalance::{lockfree, AdminState, Backend, Balancer, Context, Live};
///
/// let lb = Live::<lockfree::WeightedRoundRobin<&str>>::new([
///     Backend::new("a").weight(2),
///     Backend::new("b"),
/// ])?;
/// let picks = |n| (0..n).map(|_| *lb.pick(&Context::new()).unwrap()).collect::<String>();
/// assert_eq!(picks(3), "aba");
/// lb.add(Backend::new("c"))?;
/// lb.set_state("a", AdminState::Draining)?;
/// assert_eq!(picks(4), "bcbc");
/// lb.remove("a")?;
/// assert_eq!(lb.len(), 2);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Live<B: Assemble> {
    /// The snapshot picks use. A pick holds it (through arc-swap's guard)
    /// from its first read of the set to the guard it returns.
    pub(super) current: ArcSwap<Snapshot<B>>,
    pub(super) members: Mutex<Members<B>>,
    pub(super) common: Arc<Common>,
    pub(super) options: B::Options,
}

impl<B: Assemble> Live<B>
where
    B::Value: PartialEq,
{
    /// Settings to build with: health policy, clock, options.
    #[must_use]
    pub fn builder() -> LiveBuilder<B> {
        LiveBuilder {
            policy: HealthPolicy::default(),
            clock: Arc::new(SystemClock::new()),
            options: B::Options::default(),
        }
    }

    /// Builds over `backends` with the default settings.
    ///
    /// # Errors
    ///
    /// As [`LiveBuilder::build`].
    pub fn new(backends: impl IntoIterator<Item = Backend<B::Value>>) -> Result<Self, BuildError> {
        Self::builder().build(backends)
    }

    /// Adds a backend. With slow start configured it ramps up from now. A
    /// backend removed earlier whose guards are still alive comes back as
    /// itself: its active count, `max_conns` slots and [`Tried`](crate::Tried)
    /// identity carry over, and it takes the weight, limit and role given
    /// here.
    ///
    /// # Errors
    ///
    /// [`UpdateError::Duplicate`] if an equal backend is in the set, or
    /// [`UpdateError::Build`] if the set would be invalid (a zero weight,
    /// too many backends, weights that overflow). The set is unchanged, also
    /// when the backend's `Eq` or `Hash` panics.
    pub fn add(&self, backend: Backend<B::Value>) -> Result<(), UpdateError> {
        let mut members = self.members.lock();
        if members.entries.iter().any(|e| e.value == backend.value) {
            return Err(UpdateError::Duplicate);
        }
        let settings = backend.settings();
        let added = match members.bring_back(&backend.value) {
            Some(entry) => entry,
            None => entry(backend, &self.common),
        };
        let previous = (added.record.weight(), added.record.state());
        configure(&added.record, &settings);
        let result = self.rebuild(
            &mut members,
            |members| {
                members.entries.push(Arc::clone(&added));
                members.weights.push(settings.weight);
            },
            |members| {
                members.entries.pop();
                members.weights.pop();
            },
            Vec::new(),
        );
        match result {
            Ok(_) => {
                added.record.start_ramp(self.common.now());
                Ok(())
            }
            Err(error) => {
                // A backend brought back waits among the departed again,
                // as it was.
                added.record.set_weight(previous.0);
                added.record.restore(previous.1);
                if Arc::strong_count(&added) > 1 {
                    members.departed.push(Arc::downgrade(&added));
                }
                Err(error)
            }
        }
    }

    /// Removes the backend equal to `id`, and returns once no pick can hand
    /// it out any more: picks that began before the call and are still in
    /// flight are waited for (without spinning and without holding up
    /// other updates). Its guards stay valid and keep counting.
    ///
    /// # Errors
    ///
    /// [`UpdateError::NotFound`], or [`UpdateError::LastBackend`] for the
    /// only backend left (mark it down instead). The set is unchanged, also
    /// when the backend's `Eq` or `Hash` panics.
    pub fn remove<Q>(&self, id: &Q) -> Result<(), UpdateError>
    where
        B::Value: Borrow<Q>,
        Q: PartialEq + ?Sized,
    {
        self.remove_where(&|value| value.borrow() == id, None)
    }

    /// As [`remove`](Self::remove), waiting at most `timeout` for the picks
    /// in flight.
    ///
    /// # Errors
    ///
    /// As [`remove`](Self::remove), and [`UpdateError::InFlight`] when the
    /// timeout passed first: the backend is out of the set for every pick
    /// that starts from now on, but a pick that began before the call may
    /// still hand it out. Nothing is rolled back.
    pub fn remove_within<Q>(&self, id: &Q, timeout: Duration) -> Result<(), UpdateError>
    where
        B::Value: Borrow<Q>,
        Q: PartialEq + ?Sized,
    {
        self.remove_where(
            &|value| value.borrow() == id,
            Some(Instant::now() + timeout),
        )
    }

    /// As [`remove`](Self::remove) for the backend `id` matches, waiting
    /// until `deadline` if there is one.
    pub(crate) fn remove_where(
        &self,
        id: &dyn Fn(&B::Value) -> bool,
        deadline: Option<Instant>,
    ) -> Result<(), UpdateError> {
        let in_use = {
            let mut members = self.members.lock();
            let index = members.position(id)?;
            if members.entries.len() == 1 {
                return Err(UpdateError::LastBackend);
            }
            let removed = Arc::clone(&members.entries[index]);
            let weight = members.weights[index];
            let in_use = self.rebuild(
                &mut members,
                |members| {
                    members.entries.remove(index);
                    members.weights.remove(index);
                },
                |members| {
                    members.entries.insert(index, Arc::clone(&removed));
                    members.weights.insert(index, weight);
                },
                vec![Arc::clone(&removed)],
            )?;
            members.departed.push(Arc::downgrade(&removed));
            in_use
        };
        self.wait_for(in_use, deadline)
    }

    /// Gives the backend equal to `id` a new weight, in effect from the next
    /// pick.
    ///
    /// # Errors
    ///
    /// [`UpdateError::NotFound`], or [`UpdateError::Build`] for weight 0 or
    /// weights that overflow. The set is unchanged.
    pub fn set_weight<Q>(&self, id: &Q, weight: u32) -> Result<(), UpdateError>
    where
        B::Value: Borrow<Q>,
        Q: PartialEq + ?Sized,
    {
        self.set_weight_where(&|value| value.borrow() == id, weight)
    }

    /// As [`set_weight`](Self::set_weight) for the backend `id` matches.
    pub(crate) fn set_weight_where(
        &self,
        id: &dyn Fn(&B::Value) -> bool,
        weight: u32,
    ) -> Result<(), UpdateError> {
        let mut members = self.members.lock();
        let index = members.position(id)?;
        let record = Arc::clone(&members.entries[index].record);
        let before = members.weights[index];
        // The record first: the new snapshot starts from its weight.
        record.set_weight(weight);
        let result = self.rebuild(
            &mut members,
            |members| members.weights[index] = weight,
            |members| members.weights[index] = before,
            Vec::new(),
        );
        match result {
            Ok(_) => Ok(()),
            Err(error) => {
                record.set_weight(before);
                Err(error)
            }
        }
    }

    /// Marks the backend equal to `id` up, down or draining. A backend
    /// that comes back up from down or draining ramps up if the policy has
    /// slow start. `Down` and `Draining` return once no pick can hand the
    /// backend out any more (picks in flight are waited for, as by
    /// [`remove`](Self::remove)).
    ///
    /// # Errors
    ///
    /// [`UpdateError::NotFound`].
    pub fn set_state<Q>(&self, id: &Q, state: AdminState) -> Result<(), UpdateError>
    where
        B::Value: Borrow<Q>,
        Q: PartialEq + ?Sized,
    {
        self.set_state_where(&|value| value.borrow() == id, state)
    }

    /// As [`set_state`](Self::set_state) for the backend `id` matches.
    pub(crate) fn set_state_where(
        &self,
        id: &dyn Fn(&B::Value) -> bool,
        state: AdminState,
    ) -> Result<(), UpdateError> {
        let in_use = {
            let mut members = self.members.lock();
            let record = Arc::clone(&members.entries[members.position(id)?].record);
            match state {
                AdminState::Up => {
                    if record.flags() & (flag::DOWN | flag::DRAINING) != 0 {
                        record.start_ramp(self.common.now());
                    }
                    record.set_admin(0);
                    self.common.capacity_changed();
                    return Ok(());
                }
                AdminState::Down => record.set_admin(flag::DOWN),
                AdminState::Draining => record.set_admin(flag::DRAINING),
            }
            // The flag is set before the new snapshot is published: a pick
            // that loads the new one sees it; the older ones are waited for.
            let balancer = Arc::clone(&self.current.load().balancer);
            self.publish(&mut members, balancer, Vec::new())
        };
        self.wait_for(in_use, None)
    }

    /// Sets the connection limit of the backend equal to `id` (0: none).
    /// The limit counts the guards taken while it is set: guards taken
    /// before stay and are not counted against it.
    ///
    /// # Errors
    ///
    /// [`UpdateError::NotFound`].
    pub fn set_max_conns<Q>(&self, id: &Q, max_conns: u32) -> Result<(), UpdateError>
    where
        B::Value: Borrow<Q>,
        Q: PartialEq + ?Sized,
    {
        self.set_max_conns_where(&|value| value.borrow() == id, max_conns)
    }

    /// As [`set_max_conns`](Self::set_max_conns) for the backend `id`
    /// matches.
    pub(crate) fn set_max_conns_where(
        &self,
        id: &dyn Fn(&B::Value) -> bool,
        max_conns: u32,
    ) -> Result<(), UpdateError> {
        self.with_record(id, |record| {
            record.set_max_conns((max_conns > 0).then_some(max_conns));
        })
    }

    /// Makes the backend equal to `id` a backup or a primary.
    ///
    /// # Errors
    ///
    /// [`UpdateError::NotFound`].
    pub fn set_backup<Q>(&self, id: &Q, backup: bool) -> Result<(), UpdateError>
    where
        B::Value: Borrow<Q>,
        Q: PartialEq + ?Sized,
    {
        self.set_backup_where(&|value| value.borrow() == id, backup)
    }

    /// As [`set_backup`](Self::set_backup) for the backend `id` matches.
    pub(crate) fn set_backup_where(
        &self,
        id: &dyn Fn(&B::Value) -> bool,
        backup: bool,
    ) -> Result<(), UpdateError> {
        self.with_record(id, |record| record.set_flags(flag::BACKUP, backup))
    }

    /// Active guards of the backend equal to `id`, or `None` if it is not
    /// in the set.
    ///
    /// # Examples
    ///
    /// ```
    /// use loadbalance::{lockfree::LeastConn, Backend, Balancer, Context, Live};
    ///
    /// let lb = Live::<LeastConn<&str>>::new([Backend::new("a"), Backend::new("b")])?;
    /// let guard = lb.pick(&Context::new())?;
    /// assert_eq!(lb.active_of(*guard), Some(1));
    /// assert_eq!(lb.active_of("c"), None);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn active_of<Q>(&self, id: &Q) -> Option<usize>
    where
        B::Value: Borrow<Q>,
        Q: PartialEq + ?Sized,
    {
        self.active_where(&|value| value.borrow() == id)
    }

    /// As [`active_of`](Self::active_of) for the backend `id` matches.
    pub(crate) fn active_where(&self, id: &dyn Fn(&B::Value) -> bool) -> Option<usize> {
        let members = self.members.lock();
        let entry = &members.entries[members.position(id).ok()?];
        // The member list holds the one strong reference that is not a guard.
        Some(Arc::strong_count(entry) - 1)
    }

    /// The counters and state of the backend equal to `id`, or `None` if it
    /// is not in the set.
    pub fn stats_of<Q>(&self, id: &Q) -> Option<BackendStats<B::Value>>
    where
        B: Balancer<B::Value>,
        B::Value: Borrow<Q> + Clone,
        Q: PartialEq + ?Sized,
    {
        self.stats_where(&|value| value.borrow() == id)
    }

    /// As [`stats_of`](Self::stats_of) for the backend `id` matches.
    pub(crate) fn stats_where(
        &self,
        id: &dyn Fn(&B::Value) -> bool,
    ) -> Option<BackendStats<B::Value>>
    where
        B: Balancer<B::Value>,
        B::Value: Clone,
    {
        let members = self.members.lock();
        // Under the update lock the current snapshot is the members' own,
        // in their order.
        let index = members.position(id).ok()?;
        self.current.load().balancer.stats_at(index)
    }

    /// Whether a pick without a key or a tried set would find a backend
    /// now ([`PickError::AllFull`] while every backend that could take it
    /// is at its `max_conns`), without taking one.
    ///
    /// # Errors
    ///
    /// The error such a pick would return.
    pub fn capacity(&self) -> Result<(), PickError> {
        self.current.load().balancer.capacity()
    }

    /// The probes to send after a pick, if the algorithm probes
    /// ([`Probe`](crate::Probe)); none for any other algorithm.
    pub fn probes(&self) -> Vec<crate::table::Probe<B::Value>>
    where
        B::Value: Clone,
    {
        self.current.load().balancer.probes()
    }

    /// What every backend of this balancer has in common (clock, policy,
    /// waiters): for picks that wait for a slot.
    #[cfg(feature = "wait")]
    pub(crate) fn common(&self) -> &Common {
        &self.common
    }

    /// Replaces the health policy; reports and picks use it from now on.
    pub fn set_health(&self, policy: HealthPolicy) {
        let _members = self.members.lock();
        self.common.set_policy(policy);
    }

    /// Makes the set exactly `backends`, in this order, in one step: every
    /// pick sees the old set or the new one. A backend equal to one in the
    /// set keeps its entry (active count, `max_conns` slots, health,
    /// statistics, [`Tried`](crate::Tried) identity) and takes the weight,
    /// limit, role and state given here; a backend removed earlier whose
    /// guards are alive comes back as itself; the others are new. Backends
    /// not in the list are removed. New backends, and backends that come
    /// back up from down or draining, ramp up if the policy has slow start.
    /// Returns once no pick can hand out a removed, down or draining
    /// backend (picks in flight are waited for, as by
    /// [`remove`](Self::remove)).
    ///
    /// # Examples
    ///
    /// ```
    /// use loadbalance::{lockfree::LeastConn, AdminState, Backend, Balancer, Context, Live};
    ///
    /// let lb = Live::<LeastConn<&str>>::new([Backend::new("a"), Backend::new("b")])?;
    /// let held = lb.pick(&Context::new())?;
    /// lb.replace([
    ///     Backend::new("c").weight(2),
    ///     Backend::new(*held).state(AdminState::Draining),
    /// ])?;
    /// assert_eq!(lb.len(), 2);
    /// assert_eq!(lb.active_of(*held), Some(1)); // its count carried over
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`UpdateError::Build`]: no backends, two equal ones, a zero weight,
    /// too many backends or weights that overflow. The set is unchanged,
    /// also when a backend's `Eq` or `Hash` panics.
    pub fn replace(
        &self,
        backends: impl IntoIterator<Item = Backend<B::Value>>,
    ) -> Result<(), UpdateError> {
        let backends: Vec<Backend<B::Value>> = backends.into_iter().collect();
        if backends.is_empty() {
            return Err(BuildError::NoBackends.into());
        }
        for (second, backend) in backends.iter().enumerate() {
            if let Some(first) = backends[..second]
                .iter()
                .position(|other| other.value == backend.value)
            {
                return Err(BuildError::DuplicateBackend { first, second }.into());
            }
        }
        let in_use = {
            let mut members = self.members.lock();
            let mut entries = Vec::with_capacity(backends.len());
            let mut weights = Vec::with_capacity(backends.len());
            // Each record's weight and state before, to undo; and whether it
            // starts a ramp when the new set is published.
            let mut before = Vec::with_capacity(backends.len());
            let mut ramps = Vec::new();
            let mut brought_back = Vec::new();
            for backend in backends {
                let settings = backend.settings();
                let existing = members
                    .entries
                    .iter()
                    .find(|entry| entry.value == backend.value)
                    .cloned();
                let (entry, joins) = match existing {
                    Some(entry) => (entry, false),
                    None => match members.bring_back(&backend.value) {
                        Some(entry) => {
                            brought_back.push(Arc::clone(&entry));
                            (entry, true)
                        }
                        None => (entry(backend, &self.common), true),
                    },
                };
                let record = &entry.record;
                let was_out = record.flags() & (flag::DOWN | flag::DRAINING) != 0;
                before.push((Arc::clone(record), record.weight(), record.state()));
                configure(record, &settings);
                if settings.state == AdminState::Up && (joins || was_out) {
                    ramps.push(Arc::clone(record));
                }
                weights.push(settings.weight);
                entries.push(entry);
            }
            let removed: Vec<Arc<Entry<B::Value>>> = members
                .entries
                .iter()
                .filter(|old| !entries.iter().any(|new| Arc::ptr_eq(old, new)))
                .cloned()
                .collect();
            // The new lists, swapped in; swapped back to undo.
            let swap = std::cell::RefCell::new((entries, weights));
            let exchange = |members: &mut Members<B>| {
                let mut lists = swap.borrow_mut();
                std::mem::swap(&mut members.entries, &mut lists.0);
                std::mem::swap(&mut members.weights, &mut lists.1);
            };
            let result = self.rebuild(
                &mut members,
                exchange,
                |members| {
                    exchange(members);
                    for (record, weight, state) in &before {
                        record.set_weight(*weight);
                        record.restore(*state);
                    }
                    for entry in &brought_back {
                        members.departed.push(Arc::downgrade(entry));
                    }
                },
                removed.clone(),
            );
            let in_use = result?;
            for entry in &removed {
                members.departed.push(Arc::downgrade(entry));
            }
            let now = self.common.now();
            for record in ramps {
                record.start_ramp(now);
            }
            in_use
        };
        self.wait_for(in_use, None)
    }

    /// Runs `change` on the record of the backend equal to `id`, under the
    /// update lock: flags and limits need no new snapshot.
    fn with_record(
        &self,
        id: &dyn Fn(&B::Value) -> bool,
        change: impl FnOnce(&Record),
    ) -> Result<(), UpdateError> {
        let members = self.members.lock();
        change(&members.entries[members.position(id)?].record);
        self.common.capacity_changed();
        Ok(())
    }

    /// Applies `change` to the members, builds the snapshot for them and
    /// publishes it (see `publish`, which `keep` goes to). When the build
    /// fails or panics (a user `Hash` or `Eq`), `undo` puts the members back
    /// and the error (or the panic) goes on to the caller: the set is as it
    /// was.
    fn rebuild(
        &self,
        members: &mut Members<B>,
        change: impl FnOnce(&mut Members<B>),
        undo: impl FnOnce(&mut Members<B>),
        keep: Vec<Arc<Entry<B::Value>>>,
    ) -> Result<Vec<Weak<Snapshot<B>>>, UpdateError> {
        change(members);
        let built = {
            let previous = self.current.load();
            let members = &*members;
            panic::catch_unwind(AssertUnwindSafe(|| {
                assemble::<B>(
                    members,
                    &self.common,
                    &self.options,
                    Some(&previous.balancer),
                )
            }))
        };
        match built {
            Ok(Ok(next)) => Ok(self.publish(members, Arc::new(next), keep)),
            Ok(Err(error)) => {
                undo(members);
                Err(error.into())
            }
            Err(panic) => {
                undo(members);
                panic::resume_unwind(panic)
            }
        }
    }

    /// Makes a snapshot of `balancer` current and files the one it replaced
    /// among the retired, with the removed entries its picks may still need
    /// (`keep`). Returns every retired snapshot still in use: what an update
    /// that excludes the old state waits for (`wait_for`); the others only
    /// file theirs, so that a later one waits for their picks too.
    fn publish(
        &self,
        members: &mut Members<B>,
        balancer: Arc<B>,
        keep: Vec<Arc<Entry<B::Value>>>,
    ) -> Vec<Weak<Snapshot<B>>> {
        // arc-swap's swap is SeqCst: every load that starts after it returns
        // sees the new snapshot. It also turns the loads still reading the
        // old one into counted references, which is what `wait_for` watches.
        let old = self.current.swap(Arc::new(Snapshot { balancer }));
        self.common.capacity_changed();
        let in_use = members.retired.retire(old, keep);
        members.departed.retain(|entry| entry.strong_count() > 0);
        in_use
    }

    /// Waits, without the update lock, until no pick uses any of the
    /// snapshots `in_use` (see `retire.rs`), then lets go of what they kept.
    fn wait_for(
        &self,
        in_use: Vec<Weak<Snapshot<B>>>,
        deadline: Option<Instant>,
    ) -> Result<(), UpdateError> {
        if !retire::wait_for(&in_use, deadline) {
            return Err(UpdateError::InFlight);
        }
        self.members.lock().retired.prune();
        Ok(())
    }
}

impl<B> Balancer<B::Value> for Live<B>
where
    B: Assemble + Balancer<B::Value>,
{
    #[inline]
    fn pick(&self, ctx: &Context<'_>) -> Result<Guard<B::Value>, PickError> {
        self.current.load().balancer.pick(ctx)
    }

    fn len(&self) -> usize {
        self.current.load().balancer.len()
    }

    fn active(&self, index: usize) -> Option<usize> {
        self.current.load().balancer.active(index)
    }

    fn stats(&self) -> Vec<BackendStats<B::Value>>
    where
        B::Value: Clone,
    {
        self.current.load().balancer.stats()
    }

    fn stats_at(&self, index: usize) -> Option<BackendStats<B::Value>>
    where
        B::Value: Clone,
    {
        self.current.load().balancer.stats_at(index)
    }
}

impl<B> fmt::Debug for Live<B>
where
    B: Assemble + fmt::Debug,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Live")
            .field("current", &*self.current.load().balancer)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}
