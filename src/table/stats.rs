//! A per-backend snapshot for monitoring: counts, state and weights.

use std::time::Duration;

use super::backends::Backends;
use crate::backend::health::FULL;
use crate::backend::record::flag;

/// Where a backend stands, as the next pick would see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum BackendState {
    /// Takes picks at its full weight.
    Up,
    /// Marked down: no new picks.
    Down,
    /// Draining: no new picks, existing guards finish.
    Draining,
    /// Ejected by passive health and cooling down.
    Ejected,
    /// Cooldown over: the next pick is a trial whose success rejoins it.
    Trial,
    /// Ramping up to its weight after being added or recovering.
    SlowStart,
}

/// One backend's counters and state at the moment of the snapshot, as
/// returned by [`Balancer::stats`](crate::Balancer::stats). Cheap: a clone
/// of the value and a few relaxed loads a backend, no lock taken.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct BackendStats<T> {
    /// The backend (a clone of its value).
    pub backend: T,
    /// Position in the balancer's current set.
    pub index: usize,
    /// Guards alive now.
    pub active: usize,
    /// Picks since the backend was added (exact on one thread; see
    /// [`Balancer::stats`](crate::Balancer::stats) for concurrent picks).
    pub picks: u64,
    /// Failures reported since the backend was added.
    pub failures: u64,
    /// Where the backend stands.
    pub state: BackendState,
    /// Whether it is a backup.
    pub backup: bool,
    /// Its `max_conns` limit, if any.
    pub max_conns: Option<u32>,
    /// The configured weight.
    pub weight: u32,
    /// The weight picks use now: 0 while down, draining or ejected, else
    /// lowered by recent failures and scaled by slow start (the lock-free forms' value; the mutex-backed forms keep
    /// nginx's exact one inside their state machine).
    pub effective_weight: u32,
    /// Mean reported latency (exponentially weighted, 1/8 for the newest).
    pub latency: Option<Duration>,
    /// Picks whose key hashed to this backend but went to another because
    /// this one was over its bounded-load capacity (always 0 without
    /// [`HashOptions::bounded_load`](crate::HashOptions::bounded_load)).
    pub overflows: u64,
}

impl<T: Clone> BackendStats<T> {
    /// Every backend of `backends`, in order (a backend of a live snapshot
    /// removed and gone since is left out).
    pub(crate) fn all(backends: &Backends<T>) -> Vec<Self> {
        let common = backends.common();
        let (now, step) = (common.now(), common.slow_steps());
        (0..backends.len())
            .filter_map(|index| Self::read(backends, index, now, step))
            .collect()
    }

    /// Backend `index` of `backends`, or `None` past the end.
    pub(crate) fn at(backends: &Backends<T>, index: usize) -> Option<Self> {
        let common = backends.common();
        (index < backends.len())
            .then(|| Self::read(backends, index, common.now(), common.slow_steps()))
            .flatten()
    }

    fn read(backends: &Backends<T>, index: usize, now: u64, step: u64) -> Option<Self> {
        let active = backends.active(index);
        // Held for an instant to clone the value; read the count first.
        let backend = backends.upgrade(index)?.value.clone();
        let record = backends.record(index);
        let flags = record.flags();
        let ramp = record.ramp(flags, now);
        let state = if flags & flag::DOWN != 0 {
            BackendState::Down
        } else if flags & flag::DRAINING != 0 {
            BackendState::Draining
        } else if flags & flag::EJECTED != 0 {
            if record.cooling(now) {
                BackendState::Ejected
            } else {
                BackendState::Trial
            }
        } else if ramp < FULL {
            BackendState::SlowStart
        } else {
            BackendState::Up
        };
        let effective = match state {
            BackendState::Down | BackendState::Draining | BackendState::Ejected => 0,
            _ => u64::from(record.lazy_effective(step)) * ramp / FULL,
        };
        Some(BackendStats {
            backend,
            index,
            active,
            picks: record.picks(),
            failures: record.failures(),
            state,
            backup: flags & flag::BACKUP != 0,
            max_conns: record.max_conns(),
            weight: record.weight(),
            effective_weight: effective as u32,
            latency: record.latency(),
            overflows: record.overflows(),
        })
    }
}
