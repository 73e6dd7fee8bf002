//! The health policy as picks and reports read it while it may change.

use super::{HealthPolicy, WhenAllEjected};
use crate::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};
use crate::time::Nanos;

/// A health policy that can change while picks and reports read it: each
/// setting in an atomic of its own. The settings are independent, so a read
/// racing a change may mix old and new ones for that one report or pick.
pub(super) struct PolicyCell {
    pub(super) max_fails: AtomicU32,
    pub(super) fail_timeout: AtomicU64,
    pub(super) slow_start: AtomicU64,
    pub(super) fail_when_all_ejected: AtomicU8,
}

impl PolicyCell {
    pub(super) fn new(policy: HealthPolicy) -> Self {
        let cell = Self {
            max_fails: AtomicU32::new(0),
            fail_timeout: AtomicU64::new(0),
            slow_start: AtomicU64::new(0),
            fail_when_all_ejected: AtomicU8::new(0),
        };
        cell.set(policy);
        cell
    }

    pub(super) fn get(&self) -> HealthPolicy {
        // Relaxed throughout: independent settings (see the type's docs).
        let when = match self.fail_when_all_ejected.load(Ordering::Relaxed) {
            0 => WhenAllEjected::Panic,
            _ => WhenAllEjected::Fail,
        };
        HealthPolicy::default()
            .max_fails(self.max_fails.load(Ordering::Relaxed))
            .fail_timeout(Nanos::duration(self.fail_timeout.load(Ordering::Relaxed)))
            .slow_start(Nanos::duration(self.slow_start.load(Ordering::Relaxed)))
            .when_all_ejected(when)
    }

    pub(super) fn set(&self, policy: HealthPolicy) {
        // Relaxed throughout: see `get`.
        self.max_fails
            .store(policy.get_max_fails(), Ordering::Relaxed);
        self.fail_timeout.store(
            Nanos::saturating(policy.get_fail_timeout()),
            Ordering::Relaxed,
        );
        self.slow_start.store(
            Nanos::saturating(policy.get_slow_start()),
            Ordering::Relaxed,
        );
        let fail = u8::from(policy.get_when_all_ejected() == WhenAllEjected::Fail);
        self.fail_when_all_ejected.store(fail, Ordering::Relaxed);
    }
}
