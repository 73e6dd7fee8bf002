//! Which backends a pick may take when not every backend is plainly
//! available: the slow path every algorithm shares, and what an
//! algorithm's choose step sees of it ([`Candidates`]).
//!
//! A backend is out when it is down or draining, already tried by this
//! request, ejected and cooling down, or at its `max_conns`. Backups take
//! picks only while no primary is available. When every backend that is
//! not down, tried or full is ejected, the health policy decides: panic
//! mode picks among them as if healthy, or the pick fails.

use super::{Context, Tried};
use crate::backend::WhenAllEjected;
use crate::backend::health::FULL;
use crate::backend::record::{Record, State, flag};
use crate::error::PickError;
use crate::table::{Backends, Guard};

/// Why a backend can or cannot take a pick now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Status {
    Down,
    Tried,
    Ejected,
    Full,
    Open,
}

/// Why `record`, whose flags and limit are `state`, can or cannot take a
/// pick at `now` for a request that tried `tried`.
fn status(
    record: &Record,
    state: State,
    now: u64,
    tried: Option<&Tried>,
    ignore_health: bool,
) -> Status {
    let flags = state.flags();
    if flags & (flag::DOWN | flag::DRAINING) != 0 {
        Status::Down
    } else if tried.is_some_and(|tried| tried.has(record.id)) {
        Status::Tried
    } else if !ignore_health && flags & flag::EJECTED != 0 && record.cooling(now) {
        Status::Ejected
    } else if state
        .max_conns()
        .is_some_and(|limit| record.slots_taken() >= limit)
    {
        Status::Full
    } else {
        Status::Open
    }
}

/// The backends one slow-path pick may take.
pub(crate) struct Selection<'b, T> {
    backends: &'b Backends<T>,
    tried: Option<&'b Tried>,
    now: u64,
    /// Picks come from the backups (no primary is available).
    backup: bool,
    /// Every candidate is ejected and the policy says pick anyway.
    panic: bool,
}

impl<'b, T> Selection<'b, T> {
    /// Decides the tier (primaries or backups) and panic mode, or why no
    /// backend can take the pick. One pass over the backends.
    fn new(backends: &'b Backends<T>, ctx: &Context<'b>, now: u64) -> Result<Self, PickError> {
        let common = backends.common();
        let tried = ctx.tried();
        let mut selection = Self {
            backends,
            tried,
            now,
            backup: false,
            panic: false,
        };
        let mut open = [false; 2];
        let (mut down, mut skipped, mut ejected) = (0, 0, 0);
        for record in backends.records() {
            let state = record.state();
            match status(record, state, now, tried, false) {
                Status::Open => open[usize::from(state.flags() & flag::BACKUP != 0)] = true,
                Status::Down => down += 1,
                Status::Tried => skipped += 1,
                Status::Ejected => ejected += 1,
                Status::Full => {}
            }
        }
        if open[0] || open[1] {
            selection.backup = !open[0];
            return Ok(selection);
        }
        let policy = common.when_all_ejected();
        if ejected > 0 && policy == WhenAllEjected::Panic {
            let mut open = [false; 2];
            for record in backends.records() {
                let state = record.state();
                if status(record, state, now, tried, true) == Status::Open {
                    open[usize::from(state.flags() & flag::BACKUP != 0)] = true;
                }
            }
            if open[0] || open[1] {
                selection.backup = !open[0];
                selection.panic = true;
                return Ok(selection);
            }
        }
        let len = backends.len();
        Err(if down == len {
            PickError::AllDown
        } else if down + skipped == len {
            PickError::AllTried
        } else if ejected > 0 && policy == WhenAllEjected::Fail {
            PickError::AllEjected
        } else {
            PickError::AllFull
        })
    }

    /// Whether backend `index` may take this pick.
    pub(crate) fn eligible(&self, index: usize) -> bool {
        let record = self.backends.record(index);
        let state = record.state();
        (state.flags() & flag::BACKUP != 0) == self.backup
            && status(record, state, self.now, self.tried, self.panic) == Status::Open
    }

    /// Slow-start progress of backend `index`, in thousandths (`FULL` when
    /// it is not ramping).
    pub(crate) fn ramp(&self, index: usize) -> u64 {
        let record = self.backends.record(index);
        record.ramp(record.flags(), self.now)
    }

    /// The first eligible backend that can be claimed, in index order: the
    /// last resort of the algorithms that step through a sequence.
    pub(crate) fn any(&self) -> Result<Guard<T>, PickError> {
        (0..self.backends.len())
            .filter(|&index| self.eligible(index))
            .find_map(|index| claim(self.backends, index, self.now, self.panic))
            .ok_or(PickError::AllFull)
    }
}

/// What an algorithm's choose step sees off the plain path: the backends,
/// which of them may take this pick, and the slow-start progress of each.
///
/// The driver builds it when not every backend is plainly available (one
/// is down, draining, a backup, at its `max_conns`, ejected, ramping up or
/// with its effective weight lowered, or the request tried some already).
/// Which backends may take the pick is worked out when first asked (an
/// algorithm with one candidate a pick often needs no pass over the rest)
/// and again after a claim lost to another pick.
pub struct Candidates<'b, 'c, T> {
    backends: &'b Backends<T>,
    ctx: &'b Context<'c>,
    now: u64,
    selection: Option<Selection<'b, T>>,
}

impl<T> std::fmt::Debug for Candidates<'_, '_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Candidates")
            .field("backends", &self.backends.len())
            .field("now", &self.now)
            .finish_non_exhaustive()
    }
}

impl<'b, 'c: 'b, T> Candidates<'b, 'c, T> {
    pub(crate) fn new(backends: &'b Backends<T>, ctx: &'b Context<'c>) -> Self {
        Self {
            backends,
            ctx,
            now: backends.common().now(),
            selection: None,
        }
    }

    /// Every backend of the balancer, in order.
    pub fn backends(&self) -> &'b Backends<T> {
        self.backends
    }

    /// The backends that may take this pick, or why there are none.
    pub(crate) fn selection(&mut self) -> Result<Selection<'b, T>, PickError> {
        match self.selection {
            Some(selection) => Ok(selection),
            None => Ok(*self
                .selection
                .insert(Selection::new(self.backends, self.ctx, self.now)?)),
        }
    }

    /// Forgets the selection: after a lost claim, the next choice reads
    /// every backend again.
    pub(crate) fn refresh(&mut self) {
        self.selection = None;
    }

    /// Whether backend `index` may take this pick (`false` past the end):
    /// it is up, not tried by this request, not cooling down after an
    /// ejection, under its `max_conns`, and of the tier picks come from
    /// (backups only while no primary may take it).
    ///
    /// # Errors
    ///
    /// Why no backend at all may take the pick ([`PickError::AllDown`],
    /// [`PickError::AllTried`], [`PickError::AllEjected`] or
    /// [`PickError::AllFull`]): the pick fails with it.
    pub fn eligible(&mut self, index: usize) -> Result<bool, PickError> {
        if index >= self.backends.len() {
            return Ok(false);
        }
        // An open primary by itself alone: then no other backend matters,
        // which spares the algorithms with one candidate a pick the pass
        // over all of them.
        if self.open_primary(index) {
            return Ok(true);
        }
        Ok(self.selection()?.eligible(index))
    }

    /// Whether this pick's request already tried backend `index`.
    pub fn tried(&self, index: usize) -> bool {
        let Some(record) = self.backends.record_at(index) else {
            return false;
        };
        self.ctx.tried().is_some_and(|tried| tried.has(record.id))
    }

    fn open_primary(&self, index: usize) -> bool {
        let record = self.backends.record(index);
        let state = record.state();
        state.flags() & flag::BACKUP == 0
            && status(record, state, self.now, self.ctx.tried(), false) == Status::Open
    }

    /// Slow-start progress of backend `index`, in thousandths: 1,000 when
    /// it is not ramping up (and past the end), from 1 as it starts.
    pub fn ramp(&self, index: usize) -> u64 {
        match self.backends.record_at(index) {
            Some(record) => record.ramp(record.flags(), self.now),
            None => FULL,
        }
    }

    /// Whether backend `index`, in slow start, takes this step of a
    /// sequence that landed on it: exactly its ramp's share of such steps,
    /// evenly spread (a backend not ramping up always does; `false` past
    /// the end). Each call is a step: ask once per landing. How round-robin
    /// thins a backend as it ramps up.
    pub fn accepts(&self, index: usize) -> bool {
        let ramp = self.ramp(index);
        ramp >= FULL
            || self
                .backends
                .record_at(index)
                .is_some_and(|record| record.accept(ramp, FULL))
    }

    /// Takes backend `index` for this pick: its `max_conns` slot and, for an
    /// ejected backend past its cooldown, the trial. `None` when another
    /// pick got there first.
    pub(crate) fn claim(&self, index: usize) -> Option<Guard<T>> {
        let panic = self.selection.as_ref().is_some_and(|s| s.panic);
        claim(self.backends, index, self.now, panic)
    }
}

/// Whether a pick with no key and no tried set would find a backend now:
/// some backend may take it and has a free slot. Takes nothing.
pub(crate) fn capacity<T>(backends: &Backends<T>) -> Result<(), PickError> {
    let common = backends.common();
    if common.regular() {
        return Ok(());
    }
    Selection::new(backends, &Context::new(), common.now()).map(drop)
}

/// See [`Slow::claim`].
fn claim<T>(backends: &Backends<T>, index: usize, now: u64, panic: bool) -> Option<Guard<T>> {
    let record = backends.record(index);
    let state = record.state();
    let flags = state.flags();
    if flags & (flag::CAPPED | flag::EJECTED) == 0 {
        return backends.guard(index);
    }
    let slot = match state.max_conns() {
        Some(limit) if !record.try_take_slot(limit) => return None,
        Some(_) => true,
        None => false,
    };
    let trial_lost = flags & flag::EJECTED != 0 && !panic && !record.claim_trial(now);
    let guard = if trial_lost {
        None
    } else if slot {
        backends.slot_guard(index)
    } else {
        backends.guard(index)
    };
    if guard.is_none() && slot {
        record.free_slot();
    }
    guard
}

// Copy by hand: a derive would ask `T: Copy`.
impl<T> Clone for Selection<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for Selection<'_, T> {}
