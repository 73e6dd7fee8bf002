//! Live balancers: backend sets that change while other threads pick.
//!
//! A live balancer publishes an immutable snapshot (backends plus the
//! algorithm's state) with `arc-swap`; a pick loads the current snapshot
//! and never waits for an update. Updates are serialised among themselves
//! by a mutex no pick takes. Backends are known by identity (their value's
//! `Eq`), and each snapshot shares the entries of the one before, so active
//! counts, health and statistics carry across updates.

use std::borrow::Borrow;
use std::fmt;
use std::sync::Arc;

use arc_swap::ArcSwap;
use parking_lot::Mutex;

use crate::backends::{flag, Entry, Record, Weights};
use crate::balanced::{Assemble, Parts};
use crate::clock::{Clock, SystemClock};
use crate::shared::Shared;
use crate::{
    BackendStats, Balancer, BuildError, Context, Guard, HealthPolicy, PickError, UpdateError,
};

/// A backend as a live balancer takes it: the value (also its identity),
/// weight, connection limit and role.
///
/// # Examples
///
/// ```
/// use loadbalance::Backend;
///
/// let primary = Backend::new("10.0.0.1:80").weight(5).max_conns(100);
/// let standby = Backend::new("10.0.9.1:80").backup(true);
/// # drop((primary, standby));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backend<T> {
    value: T,
    weight: u32,
    max_conns: u32,
    backup: bool,
}

impl<T> Backend<T> {
    /// A primary backend of weight 1 with no connection limit.
    pub fn new(value: T) -> Self {
        Self {
            value,
            weight: 1,
            max_conns: 0,
            backup: false,
        }
    }

    /// Its weight (algorithms without weights ignore it). 0 is rejected when
    /// the backend is added.
    pub fn weight(mut self, weight: u32) -> Self {
        self.weight = weight;
        self
    }

    /// At most `max_conns` active guards at once; 0 (the default) means no
    /// limit, as in nginx.
    pub fn max_conns(mut self, max_conns: u32) -> Self {
        self.max_conns = max_conns;
        self
    }

    /// A backup takes picks only while no primary backend can.
    pub fn backup(mut self, backup: bool) -> Self {
        self.backup = backup;
        self
    }
}

/// An operator's say over a backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AdminState {
    /// Takes picks (after slow start, if the policy has one and the backend
    /// was down or draining).
    Up,
    /// No new picks; existing guards stay valid.
    Down,
    /// No new picks while existing guards finish: the step before removal.
    Draining,
}

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
    current: ArcSwap<B>,
    members: Mutex<Members<B::Value>>,
    shared: Arc<Shared>,
    options: B::Options,
}

/// The set as updates see it. `entries` hold each backend's one strong
/// reference that is not a guard; snapshots hold weak ones.
struct Members<T> {
    entries: Vec<Arc<Entry<T>>>,
    weights: Vec<u32>,
}

/// Settings of a [`Live`] balancer: health policy, clock and the
/// algorithm's options.
///
/// # Examples
///
/// ```
/// use loadbalance::{lockfree, Backend, HealthPolicy, Live, ManualClock};
/// use std::sync::Arc;
/// use std::time::Duration;
///
/// let clock = Arc::new(ManualClock::new());
/// let lb = Live::<lockfree::LeastConn<&str>>::builder()
///     .health(HealthPolicy::default().max_fails(3).slow_start(Duration::from_secs(30)))
///     .clock(Arc::clone(&clock))
///     .build([Backend::new("a"), Backend::new("b")])?;
/// # drop(lb);
/// # Ok::<(), loadbalance::BuildError>(())
/// ```
pub struct LiveBuilder<B: Assemble> {
    policy: HealthPolicy,
    clock: Arc<dyn Clock>,
    options: B::Options,
}

impl<B: Assemble> LiveBuilder<B> {
    /// The passive-health and slow-start policy (default: nginx's).
    pub fn health(mut self, policy: HealthPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// The clock health and slow start read (default: the system clock).
    pub fn clock(mut self, clock: impl Clock + 'static) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// The algorithm's options, kept across updates (for hashing,
    /// [`HashOptions`](crate::HashOptions)).
    pub fn options(mut self, options: B::Options) -> Self {
        self.options = options;
        self
    }

    /// Builds over `backends`.
    ///
    /// # Errors
    ///
    /// As the algorithm's constructor, and
    /// [`BuildError::DuplicateBackend`] when two backends are equal.
    pub fn build(
        self,
        backends: impl IntoIterator<Item = Backend<B::Value>>,
    ) -> Result<Live<B>, BuildError>
    where
        B::Value: PartialEq,
    {
        let backends: Vec<Backend<B::Value>> = backends.into_iter().collect();
        for (second, backend) in backends.iter().enumerate() {
            if let Some(first) = backends[..second]
                .iter()
                .position(|other| other.value == backend.value)
            {
                return Err(BuildError::DuplicateBackend { first, second });
            }
        }
        let shared = Shared::new(self.clock, self.policy);
        let weights = backends.iter().map(|backend| backend.weight).collect();
        let entries = backends
            .into_iter()
            .map(|backend| entry(backend, &shared))
            .collect();
        let members = Members { entries, weights };
        let first = assemble::<B>(&members, &self.options, None)?;
        Ok(Live {
            current: ArcSwap::from_pointee(first),
            members: Mutex::new(members),
            shared,
            options: self.options,
        })
    }
}

/// A new entry for `backend`, its flags set.
fn entry<T>(backend: Backend<T>, shared: &Arc<Shared>) -> Arc<Entry<T>> {
    let entry = Entry::new(backend.value, backend.weight, Arc::clone(shared));
    entry.record.set_flags(flag::BACKUP, backend.backup);
    entry
        .record
        .set_max_conns((backend.max_conns > 0).then_some(backend.max_conns));
    Arc::new(entry)
}

fn assemble<B: Assemble>(
    members: &Members<B::Value>,
    options: &B::Options,
    previous: Option<&B>,
) -> Result<B, BuildError> {
    let parts = Parts {
        entries: &members.entries,
        weights: Weights::new(members.weights.clone())?,
    };
    B::assemble(parts, options, previous)
}

impl<B: Assemble> Live<B>
where
    B::Value: PartialEq,
{
    /// Settings to build with: health policy, clock, options.
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

    /// Adds a backend. With slow start configured it ramps up from now.
    ///
    /// # Errors
    ///
    /// [`UpdateError::Duplicate`] if an equal backend is in the set, or
    /// [`UpdateError::Build`] if the set would be invalid (a zero weight,
    /// too many backends, weights that overflow). The set is unchanged.
    pub fn add(&self, backend: Backend<B::Value>) -> Result<(), UpdateError> {
        let mut members = self.members.lock();
        if members.entries.iter().any(|e| e.value == backend.value) {
            return Err(UpdateError::Duplicate);
        }
        let weight = backend.weight;
        let added = entry(backend, &self.shared);
        added.record.start_ramp(self.shared.now());
        members.entries.push(added);
        members.weights.push(weight);
        if let Err(error) = self.publish(&members) {
            members.entries.pop();
            members.weights.pop();
            return Err(error);
        }
        Ok(())
    }

    /// Removes the backend equal to `id`. Its guards stay valid; once no
    /// pick in flight can reach it, it counts only its guards.
    ///
    /// # Errors
    ///
    /// [`UpdateError::NotFound`], or [`UpdateError::LastBackend`] for the
    /// only backend left (mark it down instead).
    pub fn remove<Q>(&self, id: &Q) -> Result<(), UpdateError>
    where
        B::Value: Borrow<Q>,
        Q: PartialEq + ?Sized,
    {
        let mut members = self.members.lock();
        let index = position(&members, id)?;
        if members.entries.len() == 1 {
            return Err(UpdateError::LastBackend);
        }
        let removed = members.entries.remove(index);
        let weight = members.weights.remove(index);
        match self.publish(&members) {
            Ok(old) => {
                // Snapshots reach entries by weak reference. Wait until the
                // picks still in the old snapshot are done, so that none
                // finds the entry gone, then give up the strong reference.
                // A pick takes nanoseconds; the wait is that long unless a
                // picking thread is descheduled mid-pick.
                while Arc::strong_count(&old) > 1 {
                    std::thread::yield_now();
                }
                drop(old);
                drop(removed);
                Ok(())
            }
            Err(error) => {
                members.entries.insert(index, removed);
                members.weights.insert(index, weight);
                Err(error)
            }
        }
    }

    /// Gives the backend equal to `id` a new weight.
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
        let mut members = self.members.lock();
        let index = position(&members, id)?;
        let before = std::mem::replace(&mut members.weights[index], weight);
        if let Err(error) = self.publish(&members) {
            members.weights[index] = before;
            return Err(error);
        }
        members.entries[index].record.set_weight(weight);
        Ok(())
    }

    /// Marks the backend equal to `id` up, down or draining. A backend
    /// that comes back up from down or draining ramps up if the policy has
    /// slow start.
    ///
    /// # Errors
    ///
    /// [`UpdateError::NotFound`].
    pub fn set_state<Q>(&self, id: &Q, state: AdminState) -> Result<(), UpdateError>
    where
        B::Value: Borrow<Q>,
        Q: PartialEq + ?Sized,
    {
        self.with_record(id, |record| match state {
            AdminState::Up => {
                if record.flags() & (flag::DOWN | flag::DRAINING) != 0 {
                    record.start_ramp(self.shared.now());
                }
                record.set_flags(flag::DOWN | flag::DRAINING, false);
            }
            AdminState::Down => {
                record.set_flags(flag::DOWN, true);
                record.set_flags(flag::DRAINING, false);
            }
            AdminState::Draining => {
                record.set_flags(flag::DRAINING, true);
                record.set_flags(flag::DOWN, false);
            }
        })
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
        self.with_record(id, |record| record.set_flags(flag::BACKUP, backup))
    }

    /// Runs `change` on the record of the backend equal to `id`, under the
    /// update lock: flags and limits need no new snapshot.
    fn with_record<Q>(&self, id: &Q, change: impl FnOnce(&Record)) -> Result<(), UpdateError>
    where
        B::Value: Borrow<Q>,
        Q: PartialEq + ?Sized,
    {
        let members = self.members.lock();
        change(&members.entries[position(&members, id)?].record);
        Ok(())
    }

    /// Builds the snapshot for `members`, makes it current, and returns the
    /// one it replaced.
    fn publish(&self, members: &Members<B::Value>) -> Result<Arc<B>, UpdateError> {
        let next = {
            let previous = self.current.load();
            assemble::<B>(members, &self.options, Some(&previous))?
        };
        // arc-swap's swap is SeqCst: every load that starts after it
        // returns sees the new snapshot. It also turns the loads still
        // reading the old one into counted references (see `remove`).
        Ok(self.current.swap(Arc::new(next)))
    }
}

fn position<T: Borrow<Q>, Q: PartialEq + ?Sized>(
    members: &Members<T>,
    id: &Q,
) -> Result<usize, UpdateError> {
    members
        .entries
        .iter()
        .position(|entry| entry.value.borrow() == id)
        .ok_or(UpdateError::NotFound)
}

impl<B> Balancer<B::Value> for Live<B>
where
    B: Assemble + Balancer<B::Value>,
{
    #[inline]
    fn pick(&self, ctx: &Context<'_>) -> Result<Guard<B::Value>, PickError> {
        self.current.load().pick(ctx)
    }

    fn len(&self) -> usize {
        self.current.load().len()
    }

    fn active(&self, index: usize) -> Option<usize> {
        self.current.load().active(index)
    }

    fn stats(&self) -> Vec<BackendStats<B::Value>>
    where
        B::Value: Clone,
    {
        self.current.load().stats()
    }
}

impl<B> fmt::Debug for Live<B>
where
    B: Assemble + fmt::Debug,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Live")
            .field("current", &*self.current.load())
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl<B: Assemble> fmt::Debug for LiveBuilder<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LiveBuilder")
            .field("policy", &self.policy)
            .field("clock", &self.clock)
            .field("options", &self.options)
            .finish()
    }
}
