//! The set as updates see it, and the snapshots picks see.

use std::sync::{Arc, Weak};

use super::assemble::Assemble;
use super::backend::{Backend, configure};
use super::retire::Retirement;
use crate::backend::common::Common;
use crate::error::{BuildError, UpdateError};
use crate::pick::Set;
use crate::table::Weights;
use crate::table::entry::Entry;

/// One published state of the set. Updates that only change records (a
/// backend marked down or draining) publish a new snapshot around the same
/// balancer, so that they can wait for the picks that began before them.
pub(super) struct Snapshot<B> {
    pub(super) balancer: Arc<B>,
}

/// The set as updates see it, changed only under the update lock.
pub(super) struct Members<B: Assemble> {
    /// Each backend's one strong reference that is not a guard; snapshots
    /// hold weak ones.
    pub(super) entries: Vec<Arc<Entry<B::Value>>>,
    pub(super) weights: Vec<u32>,
    /// Replaced snapshots possibly still in use, with the removed entries
    /// their picks may still need (the entries' one reference that is not a
    /// guard).
    pub(super) retired: Retirement<Snapshot<B>, Arc<Entry<B::Value>>>,
    /// Backends removed whose guards may still be alive, so that adding one
    /// back brings back the same backend: its counts, slots and identity.
    pub(super) departed: Vec<Weak<Entry<B::Value>>>,
}

impl<B: Assemble> Members<B> {
    /// The place of the backend `id` matches.
    pub(super) fn position(&self, id: &dyn Fn(&B::Value) -> bool) -> Result<usize, UpdateError> {
        self.entries
            .iter()
            .position(|entry| id(&entry.value))
            .ok_or(UpdateError::NotFound)
    }

    /// A removed backend equal to `value` that still has guards: taken out
    /// of the retired snapshots' keep (the member list holds it now).
    pub(super) fn bring_back(&mut self, value: &B::Value) -> Option<Arc<Entry<B::Value>>>
    where
        B::Value: PartialEq,
    {
        let found = self
            .departed
            .iter()
            .filter_map(Weak::upgrade)
            .find(|entry| entry.value == *value)?;
        self.retired.unkeep(|kept| Arc::ptr_eq(kept, &found));
        self.departed
            .retain(|entry| !Weak::ptr_eq(entry, &Arc::downgrade(&found)));
        Some(found)
    }
}

/// A new entry for `backend`, its flags set.
pub(super) fn entry<T>(backend: Backend<T>, common: &Arc<Common>) -> Arc<Entry<T>> {
    let settings = backend.settings();
    let entry = Entry::new(backend.value, settings.weight, Arc::clone(common));
    configure(&entry.record, &settings);
    Arc::new(entry)
}

/// Builds the balancer for `members`, continuing from `previous`.
pub(super) fn assemble<B: Assemble>(
    members: &Members<B>,
    common: &Common,
    options: &B::Options,
    previous: Option<&B>,
) -> Result<B, BuildError> {
    let weights = Weights::new(members.weights.clone())?;
    B::assemble(
        &Set::new(&members.entries, &weights, common),
        options,
        previous,
    )
}
