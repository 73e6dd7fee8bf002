//! Passive health: what a guard's reported outcome does to its backend.
//!
//! As nginx's `max_fails` and `fail_timeout`: each failure lowers the
//! backend's effective weight by `weight / max_fails` (each later pick
//! restores one unit), and `max_fails` failures within `fail_timeout` eject
//! the backend for `fail_timeout`. After the cooldown one pick at a time is
//! let through as a trial (again once a `fail_timeout` while trials fail);
//! a successful trial rejoins the backend, in slow start if configured.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;

use crate::backends::{flag, Record};

/// What to do when every backend that could take a pick is ejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum WhenAllEjected {
    /// Pick among the ejected backends anyway, as if healthy (Envoy's
    /// panic mode): a struggling upstream beats none.
    #[default]
    Panic,
    /// Fail the pick with [`PickError::AllEjected`](crate::PickError::AllEjected).
    Fail,
}

/// Passive-health and slow-start settings of a balancer.
///
/// The defaults are nginx's: `max_fails` 1, `fail_timeout` 10 s, no slow
/// start; and panic mode when everything is ejected.
///
/// # Examples
///
/// ```
/// use loadbalance::{HealthPolicy, WhenAllEjected};
/// use std::time::Duration;
///
/// let policy = HealthPolicy::default()
///     .max_fails(3)
///     .fail_timeout(Duration::from_secs(30))
///     .slow_start(Duration::from_secs(60))
///     .when_all_ejected(WhenAllEjected::Fail);
/// assert_eq!(policy.get_max_fails(), 3);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HealthPolicy {
    max_fails: u32,
    fail_timeout: Duration,
    slow_start: Duration,
    when_all_ejected: WhenAllEjected,
}

impl HealthPolicy {
    /// Failures within `fail_timeout` that eject a backend; 0 turns passive
    /// health off (failures are still counted in the stats).
    pub fn max_fails(mut self, max_fails: u32) -> Self {
        self.max_fails = max_fails;
        self
    }

    /// The window failures are counted in, and how long an ejection lasts.
    pub fn fail_timeout(mut self, fail_timeout: Duration) -> Self {
        self.fail_timeout = fail_timeout;
        self
    }

    /// How long an added or recovered backend takes to ramp from a small
    /// share to its full weight; zero (the default) turns slow start off.
    pub fn slow_start(mut self, slow_start: Duration) -> Self {
        self.slow_start = slow_start;
        self
    }

    /// What a pick does when every backend it could take is ejected.
    pub fn when_all_ejected(mut self, policy: WhenAllEjected) -> Self {
        self.when_all_ejected = policy;
        self
    }

    /// The configured `max_fails`.
    pub fn get_max_fails(&self) -> u32 {
        self.max_fails
    }

    /// The configured `fail_timeout`.
    pub fn get_fail_timeout(&self) -> Duration {
        self.fail_timeout
    }

    /// The configured slow-start duration.
    pub fn get_slow_start(&self) -> Duration {
        self.slow_start
    }

    /// The configured all-ejected policy.
    pub fn get_when_all_ejected(&self) -> WhenAllEjected {
        self.when_all_ejected
    }

    pub(crate) fn fail_timeout_nanos(&self) -> u64 {
        duration_nanos(self.fail_timeout)
    }

    pub(crate) fn slow_start_nanos(&self) -> u64 {
        duration_nanos(self.slow_start)
    }
}

impl Default for HealthPolicy {
    fn default() -> Self {
        Self {
            max_fails: 1,
            fail_timeout: Duration::from_secs(10),
            slow_start: Duration::ZERO,
            when_all_ejected: WhenAllEjected::Panic,
        }
    }
}

fn duration_nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// How a request on a picked backend went, as the caller saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The backend answered well.
    Success {
        /// How long the request took.
        latency: Duration,
    },
    /// The backend failed (connect error, timeout, 5xx: the caller decides).
    Failure {
        /// How long until the failure was seen.
        latency: Duration,
    },
}

impl Outcome {
    fn latency(&self) -> Duration {
        match *self {
            Self::Success { latency } | Self::Failure { latency } => latency,
        }
    }
}

/// Thousandths: the unit of slow-start progress.
pub(crate) const FULL: u64 = 1000;

/// One backend's health state. Picks only read its atomics; reports change
/// them under `window`, a lock no pick ever takes (a pick that tidies up
/// state only `try_lock`s it).
pub(crate) struct Health {
    /// While `EJECTED`: when the cooldown (or the running trial) ends.
    ejected_until: AtomicU64,
    /// While `EJECTED`: a trial pick went out since the last failure.
    trial: AtomicBool,
    /// While `RAMPING`: when slow start began.
    ramp_since: AtomicU64,
    /// The lock-free forms' effective weight, restored lazily: the value
    /// (high 32 bits) at a slow-path step count (low 32 bits, wrapping);
    /// one unit comes back per slow-path step since.
    effective: AtomicU64,
    /// Weight units taken by failures since the start, for the mutex-backed
    /// forms, which keep nginx's effective weights themselves.
    lowered: AtomicU64,
    failures: AtomicU64,
    /// Exponentially weighted mean latency in nanoseconds (0: none yet).
    latency: AtomicU64,
    window: Mutex<Window>,
}

/// Failure bookkeeping, changed only by reports.
struct Window {
    fails: u32,
    start: u64,
}

impl Health {
    pub(crate) fn new(weight: u32) -> Self {
        Self {
            ejected_until: AtomicU64::new(0),
            trial: AtomicBool::new(false),
            ramp_since: AtomicU64::new(0),
            effective: AtomicU64::new(u64::from(weight) << 32),
            lowered: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            latency: AtomicU64::new(0),
            window: Mutex::new(Window { fails: 0, start: 0 }),
        }
    }

    pub(crate) fn failures(&self) -> u64 {
        // Relaxed: a statistic.
        self.failures.load(Ordering::Relaxed)
    }

    pub(crate) fn latency(&self) -> Option<Duration> {
        // Relaxed: a statistic.
        match self.latency.load(Ordering::Relaxed) {
            0 => None,
            nanos => Some(Duration::from_nanos(nanos)),
        }
    }

    pub(crate) fn lowered(&self) -> u64 {
        // Relaxed: read under the sequential form's mutex; a report that
        // races it is applied on the next pick.
        self.lowered.load(Ordering::Relaxed)
    }

    /// Whether the backend is cooling down at `now` (not yet open to a trial).
    pub(crate) fn cooling(&self, now: u64) -> bool {
        // Relaxed: steers picks only; the trial itself is claimed by CAS.
        self.ejected_until.load(Ordering::Relaxed) > now
    }
}

impl Record {
    /// Records what a request on this backend did.
    pub(crate) fn report(&self, outcome: Outcome) {
        let policy = self.shared.policy;
        let now = self.shared.now();
        self.record_latency(outcome.latency());
        let mut window = self.health.window.lock();
        match outcome {
            Outcome::Success { .. } => {
                // Relaxed here and below: these atomics steer picks only; the
                // window lock orders the reports among themselves.
                let on_trial = self.flags() & flag::EJECTED != 0
                    && self.health.trial.swap(false, Ordering::Relaxed);
                if on_trial {
                    window.fails = 0;
                    self.start_ramp(now);
                    self.set_flags(flag::EJECTED, false);
                }
            }
            Outcome::Failure { .. } => {
                self.health.failures.fetch_add(1, Ordering::Relaxed);
                if policy.max_fails == 0 {
                    return;
                }
                let timeout = policy.fail_timeout_nanos();
                if self.flags() & flag::EJECTED != 0 {
                    // A failed trial (or a late failure): cool down again.
                    self.health.trial.store(false, Ordering::Relaxed);
                    self.health
                        .ejected_until
                        .store(now.saturating_add(timeout), Ordering::Relaxed);
                    return;
                }
                if window.fails == 0 || now.saturating_sub(window.start) > timeout {
                    *window = Window {
                        fails: 0,
                        start: now,
                    };
                }
                window.fails += 1;
                self.lower_weight(self.weight() / policy.max_fails);
                if window.fails >= policy.max_fails {
                    self.health
                        .ejected_until
                        .store(now.saturating_add(timeout), Ordering::Relaxed);
                    self.health.trial.store(false, Ordering::Relaxed);
                    self.set_flags(flag::RAMPING, false);
                    self.set_flags(flag::EJECTED, true);
                }
            }
        }
    }

    fn record_latency(&self, latency: Duration) {
        let sample = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX).max(1);
        // Relaxed: a statistic. Mean with weight 1/8 for the new sample.
        let _ = self
            .health
            .latency
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |mean| {
                Some(match mean {
                    0 => sample,
                    mean => (mean - mean / 8).saturating_add(sample / 8).max(1),
                })
            });
    }

    /// nginx's `effective_weight -= weight / max_fails`, floored at 0.
    fn lower_weight(&self, by: u32) {
        if by == 0 {
            return;
        }
        let step = self.shared.slow_steps();
        let now = self.lazy_effective(step);
        let lowered = now.saturating_sub(by);
        // Relaxed: see `report`; the pair is one word, so no pick reads half.
        self.health.effective.store(
            (u64::from(lowered) << 32) | (step & 0xffff_ffff),
            Ordering::Relaxed,
        );
        self.health
            .lowered
            .fetch_add(u64::from(by), Ordering::Relaxed);
        self.set_flags(flag::DEGRADED, true);
    }

    /// The lock-free forms' effective weight at slow-path step `step`: the
    /// lowered value plus one unit a step since, up to the weight.
    pub(crate) fn lazy_effective(&self, step: u64) -> u32 {
        // Relaxed: see `report`.
        let pair = self.health.effective.load(Ordering::Relaxed);
        let (value, at) = ((pair >> 32) as u32, pair as u32);
        let since = (step as u32).wrapping_sub(at);
        value.saturating_add(since).min(self.weight())
    }

    /// Slow start from `now`, if the policy has one.
    pub(crate) fn start_ramp(&self, now: u64) {
        if self.shared.policy.slow_start_nanos() > 0 {
            // Relaxed: stored before the flag, which a pick reads first.
            self.health.ramp_since.store(now, Ordering::Relaxed);
            self.set_flags(flag::RAMPING, true);
        }
    }

    /// Slow-start progress at `now` in thousandths (`FULL` when not
    /// ramping), at least 1 so a ramping backend is never starved.
    pub(crate) fn ramp(&self, flags: u32, now: u64) -> u64 {
        if flags & flag::RAMPING == 0 {
            return FULL;
        }
        let span = self.shared.policy.slow_start_nanos();
        // Relaxed: see `start_ramp`.
        let since = self.health.ramp_since.load(Ordering::Relaxed);
        let elapsed = now.saturating_sub(since);
        if span == 0 || elapsed >= span {
            self.tidy(flag::RAMPING);
            return FULL;
        }
        (u128::from(elapsed) * u128::from(FULL) / u128::from(span)).max(1) as u64
    }

    /// Clears a flag whose condition has run out, unless a report is busy
    /// with this backend (it may be setting it again): picks never wait.
    pub(crate) fn tidy(&self, mask: u32) {
        if let Some(_window) = self.health.window.try_lock() {
            let still = match mask {
                flag::RAMPING => {
                    let span = self.shared.policy.slow_start_nanos();
                    // Relaxed: see `start_ramp`.
                    let since = self.health.ramp_since.load(Ordering::Relaxed);
                    span != 0 && self.shared.now().saturating_sub(since) < span
                }
                flag::DEGRADED => self.lazy_effective(self.shared.slow_steps()) < self.weight(),
                _ => true,
            };
            if !still {
                self.set_flags(mask, false);
            }
        }
    }

    /// Claims the trial of an ejected backend whose cooldown is over: one
    /// pick a `fail_timeout` gets it.
    pub(crate) fn claim_trial(&self, now: u64) -> bool {
        let until = now.saturating_add(self.shared.policy.fail_timeout_nanos());
        // Relaxed: the CAS alone decides who takes the trial.
        let claimed = self
            .health
            .ejected_until
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |end| {
                (end <= now).then_some(until)
            })
            .is_ok();
        if claimed {
            self.health.trial.store(true, Ordering::Relaxed);
        }
        claimed
    }
}
