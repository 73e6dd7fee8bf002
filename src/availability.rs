//! Which backends a pick may take when not every backend is plainly
//! available: the slow path every algorithm shares.
//!
//! A backend is out when it is down or draining, already tried by this
//! request, ejected and cooling down, or at its `max_conns`. Backups take
//! picks only while no primary is available. When every backend that is
//! not down, tried or full is ejected, the health policy decides: panic
//! mode picks among them as if healthy, or the pick fails.

use crate::backends::Backends;
use crate::record::{flag, Record};
use crate::{Context, Guard, PickError, Tried, WhenAllEjected};

/// Why a backend can or cannot take a pick now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Status {
    Down,
    Tried,
    Ejected,
    Full,
    Open,
}

impl Record {
    fn status(&self, flags: u32, now: u64, tried: Option<&Tried>, ignore_health: bool) -> Status {
        if flags & (flag::DOWN | flag::DRAINING) != 0 {
            Status::Down
        } else if tried.is_some_and(|tried| tried.has(self.id)) {
            Status::Tried
        } else if !ignore_health && flags & flag::EJECTED != 0 && self.cooling(now) {
            Status::Ejected
        } else if flags & flag::CAPPED != 0
            && self
                .max_conns()
                .is_some_and(|limit| self.slots_taken() >= limit)
        {
            Status::Full
        } else {
            Status::Open
        }
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
    pub(crate) fn new(backends: &'b Backends<T>, ctx: &Context<'b>) -> Result<Self, PickError> {
        let shared = backends.shared();
        let now = shared.now();
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
            let flags = record.flags();
            match record.status(flags, now, tried, false) {
                Status::Open => open[usize::from(flags & flag::BACKUP != 0)] = true,
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
        let policy = shared.when_all_ejected();
        if ejected > 0 && policy == WhenAllEjected::Panic {
            let mut open = [false; 2];
            for record in backends.records() {
                let flags = record.flags();
                if record.status(flags, now, tried, true) == Status::Open {
                    open[usize::from(flags & flag::BACKUP != 0)] = true;
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
        let flags = record.flags();
        (flags & flag::BACKUP != 0) == self.backup
            && record.status(flags, self.now, self.tried, self.panic) == Status::Open
    }

    /// Whether picks may ignore ejection (panic mode).
    pub(crate) fn panic(&self) -> bool {
        self.panic
    }

    /// The first eligible backend that can be claimed, in index order: the
    /// last resort of the algorithms that step through a sequence.
    pub(crate) fn any(&self) -> Result<Guard<T>, PickError> {
        (0..self.backends.len())
            .filter(|&index| self.eligible(index))
            .find_map(|index| self.claim(index))
            .ok_or(PickError::AllFull)
    }

    /// Slow-start progress of backend `index`, in thousandths.
    pub(crate) fn ramp(&self, index: usize) -> u64 {
        let record = self.backends.record(index);
        record.ramp(record.flags(), self.now)
    }

    /// Takes backend `index` for this pick: its `max_conns` slot and, for an
    /// ejected backend past its cooldown, the trial. `None` when another
    /// pick got there first; the caller chooses again.
    pub(crate) fn claim(&self, index: usize) -> Option<Guard<T>> {
        claim(self.backends, index, self.now, self.panic)
    }
}

/// Whether backend `index` may surely take a pick, judged by itself alone:
/// an open primary. Then no other backend matters, which spares the
/// algorithms with one candidate a pick (round-robin, hashing) the pass over
/// all of them while a few backends are out.
pub(crate) fn open_primary<T>(
    backends: &Backends<T>,
    ctx: &Context<'_>,
    index: usize,
    now: u64,
) -> bool {
    let record = backends.record(index);
    let flags = record.flags();
    flags & flag::BACKUP == 0 && record.status(flags, now, ctx.tried(), false) == Status::Open
}

/// See [`Selection::claim`].
pub(crate) fn claim<T>(
    backends: &Backends<T>,
    index: usize,
    now: u64,
    panic: bool,
) -> Option<Guard<T>> {
    let record = backends.record(index);
    let flags = record.flags();
    if flags & (flag::CAPPED | flag::EJECTED) == 0 {
        return backends.guard(index);
    }
    let slot = match record.max_conns() {
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
