//! A per-backend snapshot for monitoring: counts, state and weights.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::backends::{flag, Backends, Entry};
use crate::health::FULL;

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
/// returned by [`Balancer::stats`](crate::Balancer::stats). Cheap: a few
/// relaxed loads a backend, no lock taken.
#[non_exhaustive]
pub struct BackendStats<T> {
    entry: Arc<Entry<T>>,
    /// Position in the balancer's current set.
    pub index: usize,
    /// Guards alive now.
    pub active: usize,
    /// Picks since the backend was added.
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
    /// The weight picks use now: lowered by recent failures and scaled by
    /// slow start (the lock-free forms' value; the mutex-backed forms keep
    /// nginx's exact one inside their state machine).
    pub effective_weight: u32,
    /// Mean reported latency (exponentially weighted, 1/8 for the newest).
    pub latency: Option<Duration>,
}

impl<T> BackendStats<T> {
    /// The backend itself. Holding the stats keeps it alive but does not
    /// count as an active guard.
    pub fn backend(&self) -> &T {
        &self.entry.value
    }
}

impl<T: fmt::Debug> fmt::Debug for BackendStats<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BackendStats")
            .field("backend", &self.entry.value)
            .field("index", &self.index)
            .field("active", &self.active)
            .field("picks", &self.picks)
            .field("failures", &self.failures)
            .field("state", &self.state)
            .field("backup", &self.backup)
            .field("max_conns", &self.max_conns)
            .field("weight", &self.weight)
            .field("effective_weight", &self.effective_weight)
            .field("latency", &self.latency)
            .finish()
    }
}

impl<T> Backends<T> {
    /// Every backend's stats, in order.
    pub(crate) fn stats(&self) -> Vec<BackendStats<T>> {
        let shared = self.shared();
        let now = shared.now();
        let step = shared.slow_steps();
        self.entries()
            .iter()
            .enumerate()
            .map(|(index, entry)| {
                let flags = entry.flags();
                let ramp = entry.ramp(flags, now);
                let state = if flags & flag::DOWN != 0 {
                    BackendState::Down
                } else if flags & flag::DRAINING != 0 {
                    BackendState::Draining
                } else if flags & flag::EJECTED != 0 {
                    if entry.health.cooling(now) {
                        BackendState::Ejected
                    } else {
                        BackendState::Trial
                    }
                } else if ramp < FULL {
                    BackendState::SlowStart
                } else {
                    BackendState::Up
                };
                let effective = u64::from(entry.lazy_effective(step)) * ramp / FULL;
                BackendStats {
                    entry: Arc::clone(entry),
                    index,
                    active: entry.active() as usize,
                    picks: entry.picks(),
                    failures: entry.health.failures(),
                    state,
                    backup: flags & flag::BACKUP != 0,
                    max_conns: entry.max_conns(),
                    weight: entry.weight(),
                    effective_weight: effective as u32,
                    latency: entry.health.latency(),
                }
            })
            .collect()
    }
}
