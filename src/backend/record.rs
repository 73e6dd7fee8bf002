//! One backend's record: everything the balancer knows of a backend besides
//! its value (flags, connection limit and slots, weight, passive health,
//! slow start, effective weight, statistics) and the rules that change it.
//!
//! # Synchronization
//!
//! Picks read the record without a lock; updates (a live balancer's calls)
//! and reports (a guard's outcome) write it. What must be seen together:
//!
//! - **Flags and the `max_conns` limit are one word** (`state`: flags in the
//!   low 32 bits, the limit in the high 32). A pick reads both in one load,
//!   so it never sees `CAPPED` with a limit from another call (a limit of 0
//!   read beside a stale `CAPPED` made picks fail with `AllFull`).
//! - **A flag publishes what it guards.** `EJECTED` guards `ejected_until`,
//!   `RAMPING` guards `ramp_since`: the writer stores the value first and
//!   sets the flag with a Release read-modify-write of `state`; a pick loads
//!   `state` with Acquire before it reads the value, so a pick that sees the
//!   flag sees the value stored with it (or a later one).
//! - **Reports and ramp starts are serialised by `window`**, a lock no pick
//!   waits for: a pick that clears a flag whose condition ran out (`tidy`)
//!   only `try_lock`s it, and re-checks the condition under it. A ramp start
//!   (`set_state(Up)`, `add`, a rejoin) takes the same lock, so a clean-up
//!   of the previous ramp can never clear the new one's flag.
//! - **Slots are claimed by compare-and-swap** on `conns` against the limit
//!   read with the flags: two picks racing for the last slot cannot both
//!   win; a guard that holds a slot gives it back on drop.
//! - **The trial of an ejected backend is claimed by compare-and-swap** on
//!   `ejected_until`: one pick per cooldown gets it.
//! - **The effective weight is one word**: the weight units still missing
//!   (high 32 bits) at a slow-path step count (low 32 bits); one unit comes
//!   back per slow-path step since. Storing the deficit rather than the
//!   weight itself lets a re-weighted backend take its new weight from the
//!   next pick.
//! - Statistics (`picks`, `failures`, `overflows`, `latency`) are Relaxed: nothing is
//!   published through them. The peak-EWMA estimate is one word of its own
//!   (see `peak_estimate.rs`).
//!
//! The loom models in `loom_record.rs` check the limit with its flag, the
//! deadline with its flag, the ramp start against a clean-up, and the slot
//! claim and free.

use std::sync::Arc;
use std::time::Duration;

use super::common::Common;
use super::health::{FULL, Outcome};
use super::peak::PeakEstimate;
use crate::sync::Mutex;
use crate::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use crate::time::Nanos;

/// Flag bits of a record. Any flag set sends picks to the slow path.
pub(crate) mod flag {
    /// Marked down by the operator: no new picks.
    pub(crate) const DOWN: u32 = 1;
    /// Draining: no new picks, existing guards finish.
    pub(crate) const DRAINING: u32 = 1 << 1;
    /// A backup: picked only while no primary is available.
    pub(crate) const BACKUP: u32 = 1 << 2;
    /// Has a `max_conns` limit (the high half of the state word).
    pub(crate) const CAPPED: u32 = 1 << 3;
    /// Ejected by passive health (cooling down or on trial).
    pub(crate) const EJECTED: u32 = 1 << 4;
    /// Effective weight lowered by failures, not yet restored.
    pub(crate) const DEGRADED: u32 = 1 << 5;
    /// In slow start.
    pub(crate) const RAMPING: u32 = 1 << 6;
}

/// Source of record ids: unique for the life of the process. A `static`,
/// so std's atomic (loom's cannot be one); ids need only be distinct.
static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// A record's flags and limit, read together in one load.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct State(u64);

impl State {
    #[inline]
    pub(crate) fn flags(self) -> u32 {
        self.0 as u32
    }

    /// The `max_conns` limit, if `CAPPED` is set.
    #[inline]
    pub(crate) fn max_conns(self) -> Option<u32> {
        (self.flags() & flag::CAPPED != 0).then_some((self.0 >> 32) as u32)
    }

    fn with_flags(self, flags: u32) -> Self {
        Self((self.0 & !0xffff_ffff) | u64::from(flags))
    }
}

/// Failure bookkeeping, changed only under the record's `window` lock.
#[derive(Debug, Default)]
pub(crate) struct FailureWindow {
    /// Failures in the current run, as nginx's `peer->fails`.
    fails: u32,
    /// When the last failure was reported, as nginx's `peer->accessed`.
    last_failure: u64,
}

/// See the module's documentation for which fields pair and how.
#[repr(align(128))]
pub(crate) struct Record {
    /// Flags (low 32 bits) and the `max_conns` limit (high 32 bits).
    state: AtomicU64,
    /// Guards taken while `CAPPED`: the count the limit applies to.
    conns: AtomicU32,
    /// The configured weight.
    weight: AtomicU32,
    /// Picks so far, counted with a plain (racy) increment: see `count_pick`.
    picks: AtomicU64,
    /// Steps of the thinning sequence (see `accept`).
    thinning: AtomicU64,
    /// While `EJECTED`: when the cooldown (or the running trial) ends.
    ejected_until: AtomicU64,
    /// While `EJECTED`: a trial pick went out since the last failure.
    trial: AtomicBool,
    /// While `RAMPING`: when slow start began.
    ramp_since: AtomicU64,
    /// Weight units still missing after failures (high 32 bits) as of a
    /// slow-path step count (low 32 bits, wrapping).
    deficit: AtomicU64,
    /// Weight units taken by failures since the start, for the mutex-backed
    /// forms, which keep nginx's effective weights themselves.
    lowered: AtomicU64,
    failures: AtomicU64,
    /// Picks whose key's bounded-load home this was, sent elsewhere
    /// because it was over capacity.
    overflows: AtomicU64,
    /// Exponentially weighted mean latency in nanoseconds (0: none yet).
    latency: AtomicU64,
    /// The peak-EWMA estimate a latency-aware balancer picks by (see
    /// `peak_estimate.rs`), kept only while one uses this record.
    pub(crate) peak: PeakEstimate,
    window: Mutex<FailureWindow>,
    /// Unique for the process: how a tried set names this backend.
    pub(crate) id: u64,
    pub(crate) common: Arc<Common>,
}

impl Record {
    pub(crate) fn new(weight: u32, common: Arc<Common>) -> Self {
        Self {
            state: AtomicU64::new(0),
            conns: AtomicU32::new(0),
            weight: AtomicU32::new(weight),
            picks: AtomicU64::new(0),
            thinning: AtomicU64::new(0),
            ejected_until: AtomicU64::new(0),
            trial: AtomicBool::new(false),
            ramp_since: AtomicU64::new(0),
            deficit: AtomicU64::new(0),
            lowered: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            overflows: AtomicU64::new(0),
            latency: AtomicU64::new(0),
            peak: PeakEstimate::default(),
            window: Mutex::new(FailureWindow::default()),
            // Relaxed: ids need only be distinct.
            id: NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            common,
        }
    }

    /// Flags and limit, read together.
    #[inline]
    pub(crate) fn state(&self) -> State {
        // Acquire: pairs with the Release in `update_state`, so the values a
        // flag guards (deadline, ramp start) are seen with it.
        State(self.state.load(Ordering::Acquire))
    }

    /// The flag bits now.
    #[inline]
    pub(crate) fn flags(&self) -> u32 {
        self.state().flags()
    }

    /// Changes the state word in one step, keeping the balancer's count of
    /// flagged backends right.
    fn update_state(&self, change: impl Fn(State) -> State) {
        // Release: publishes the values stored before the flag (see the
        // module's documentation); Acquire on failure is not needed, the
        // loop only retries. Each change from no flags to some (or back) is
        // seen by exactly one successful step, so the count stays exact.
        let before = self
            .state
            .fetch_update(Ordering::Release, Ordering::Relaxed, |word| {
                Some(change(State(word)).0)
            })
            .unwrap_or_else(|word| word);
        let after = change(State(before));
        if (State(before).flags() == 0) != (after.flags() == 0) {
            self.common.irregular_changed(after.flags() != 0);
        }
    }

    /// Sets (`on`) or clears the bits of `mask`.
    pub(crate) fn set_flags(&self, mask: u32, on: bool) {
        self.update_state(|state| {
            let flags = if on {
                state.flags() | mask
            } else {
                state.flags() & !mask
            };
            state.with_flags(flags)
        });
    }

    /// Sets the `DOWN` and `DRAINING` bits to exactly `flags & (DOWN |
    /// DRAINING)`, in one step.
    pub(crate) fn set_admin(&self, admin: u32) {
        let mask = flag::DOWN | flag::DRAINING;
        self.update_state(|state| state.with_flags((state.flags() & !mask) | (admin & mask)));
    }

    /// Puts flags and limit back as `state` read them (an update undone).
    pub(crate) fn restore(&self, state: State) {
        self.update_state(|_| state);
    }

    /// The `max_conns` limit, if any.
    pub(crate) fn max_conns(&self) -> Option<u32> {
        self.state().max_conns()
    }

    /// Sets or lifts the limit together with its flag, in one word.
    pub(crate) fn set_max_conns(&self, limit: Option<u32>) {
        self.update_state(|state| {
            let flags = match limit {
                Some(_) => state.flags() | flag::CAPPED,
                None => state.flags() & !flag::CAPPED,
            };
            State((u64::from(limit.unwrap_or(0)) << 32) | u64::from(flags))
        });
    }

    /// Picks so far.
    pub(crate) fn picks(&self) -> u64 {
        // Relaxed: a statistic.
        self.picks.load(Ordering::Relaxed)
    }

    /// Counts a pick with a load and a store, not a read-modify-write: an
    /// atomic step here would cost every pick a third of its time (measured
    /// 23 -> 32 ns a round-robin pick). Exact on one thread; two threads
    /// picking the same backend in the same instant may count one pick.
    #[inline]
    pub(crate) fn count_pick(&self) {
        // Relaxed: a statistic.
        let picks = self.picks.load(Ordering::Relaxed);
        self.picks.store(picks.wrapping_add(1), Ordering::Relaxed);
    }

    /// Takes one of `max_conns` slots, unless all are taken.
    pub(crate) fn try_take_slot(&self, max_conns: u32) -> bool {
        // Relaxed: the CAS alone decides who gets the slot; it publishes
        // nothing else.
        self.conns
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |conns| {
                (conns < max_conns).then_some(conns + 1)
            })
            .is_ok()
    }

    /// Gives back a slot taken by `try_take_slot`.
    pub(crate) fn free_slot(&self) {
        // Relaxed: see `try_take_slot`. A waiting pick is woken after the
        // slot is free: the notification's fence orders the two.
        self.conns.fetch_sub(1, Ordering::Relaxed);
        self.common.slot_freed();
    }

    /// Slots taken (guards counted against `max_conns`).
    pub(crate) fn slots_taken(&self) -> u32 {
        // Relaxed: see `try_take_slot`.
        self.conns.load(Ordering::Relaxed)
    }

    /// The configured weight.
    pub(crate) fn weight(&self) -> u32 {
        // Relaxed: read by failure reports to size the drop and by
        // snapshots built under the update lock that set it.
        self.weight.load(Ordering::Relaxed)
    }

    pub(crate) fn set_weight(&self, weight: u32) {
        // Relaxed: see `weight`.
        self.weight.store(weight, Ordering::Relaxed);
    }

    /// Whether this step of a thinned backend goes ahead: of every `den`
    /// steps exactly `num` do, evenly spread (Bresenham's rule), so a
    /// thinned backend's share is exactly `num / den` of its unthinned one.
    pub(crate) fn accept(&self, num: u64, den: u64) -> bool {
        if num >= den {
            return true;
        }
        // Relaxed: a step counter; the exact share holds over all steps in
        // whatever order threads take them.
        let step = u128::from(self.thinning.fetch_add(1, Ordering::Relaxed) % den);
        let (num, den) = (u128::from(num), u128::from(den));
        (step + 1) * num / den > step * num / den
    }

    pub(crate) fn failures(&self) -> u64 {
        // Relaxed: a statistic.
        self.failures.load(Ordering::Relaxed)
    }

    pub(crate) fn overflows(&self) -> u64 {
        // Relaxed: a statistic.
        self.overflows.load(Ordering::Relaxed)
    }

    /// A pick found this backend over its bounded-load capacity and went on.
    pub(crate) fn count_overflow(&self) {
        // Relaxed: a statistic.
        self.overflows.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn latency(&self) -> Option<Duration> {
        // Relaxed: a statistic.
        match self.latency.load(Ordering::Relaxed) {
            0 => None,
            nanos => Some(Nanos::duration(nanos)),
        }
    }

    pub(crate) fn lowered(&self) -> u64 {
        // Relaxed: read under the sequential form's mutex; a report that
        // races it is applied on the next pick.
        self.lowered.load(Ordering::Relaxed)
    }

    /// Whether the backend is cooling down at `now` (not yet open to a
    /// trial). Read after `state()` showed `EJECTED`.
    pub(crate) fn cooling(&self, now: u64) -> bool {
        // Relaxed: ordered after the flag by `state`'s Acquire; the trial
        // itself is claimed by CAS.
        self.ejected_until.load(Ordering::Relaxed) > now
    }

    /// Records what a request on this backend did. As nginx's
    /// `ngx_http_upstream_free_round_robin_peer`: a failure counts, lowers
    /// the effective weight by `weight / max_fails` and, at `max_fails`,
    /// ejects the backend for `fail_timeout`. Failures each within
    /// `fail_timeout` of the one before add up; a longer gap starts the
    /// count again. (nginx resets it at the first success of a request
    /// picked more than `fail_timeout` after the last failure, its
    /// `accessed < checked`; under traffic the two agree, and neither lets
    /// a window fixed at the first failure forget the failures since.)
    pub(crate) fn report(&self, outcome: Outcome) {
        let max_fails = self.common.policy().get_max_fails();
        let timeout = self.common.fail_timeout_nanos();
        let now = self.common.now();
        self.record_latency(Nanos::saturating(outcome.latency()));
        if let Some(tau) = self.common.peak_decay() {
            self.peak
                .observe(Nanos::saturating(outcome.latency()), now, tau);
        }
        let mut window = self.window.lock();
        match outcome {
            Outcome::Success { .. } => {
                // Relaxed here and below: these atomics steer picks only; the
                // window lock orders the reports among themselves.
                let on_trial =
                    self.flags() & flag::EJECTED != 0 && self.trial.swap(false, Ordering::Relaxed);
                if on_trial {
                    window.fails = 0;
                    self.start_ramp_locked(&mut window, now);
                    self.set_flags(flag::EJECTED, false);
                }
            }
            Outcome::Failure { .. } => {
                self.failures.fetch_add(1, Ordering::Relaxed);
                if max_fails == 0 {
                    return;
                }
                let gap = now.saturating_sub(window.last_failure);
                window.last_failure = now;
                if self.flags() & flag::EJECTED != 0 {
                    // A failed trial (or a late failure): cool down again.
                    self.trial.store(false, Ordering::Relaxed);
                    self.ejected_until
                        .store(now.saturating_add(timeout), Ordering::Relaxed);
                    return;
                }
                if gap > timeout {
                    window.fails = 0;
                }
                window.fails = window.fails.saturating_add(1);
                if self.common.weighted() {
                    self.lower_weight(self.weight() / max_fails);
                }
                if window.fails >= max_fails {
                    // The deadline before the flag: `set_flags` publishes it.
                    self.ejected_until
                        .store(now.saturating_add(timeout), Ordering::Relaxed);
                    self.trial.store(false, Ordering::Relaxed);
                    self.set_flags(flag::RAMPING, false);
                    self.set_flags(flag::EJECTED, true);
                }
            }
        }
    }

    fn record_latency(&self, sample: u64) {
        let sample = sample.max(1);
        // Relaxed: a statistic. Mean with weight 1/8 for the new sample.
        let _ = self
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
        let step = self.common.slow_steps();
        let missing = self.lazy_deficit(step);
        let missing = missing.saturating_add(by).min(self.weight());
        // Relaxed: see `report`; the pair is one word, so no pick reads half.
        self.deficit.store(
            (u64::from(missing) << 32) | (step & 0xffff_ffff),
            Ordering::Relaxed,
        );
        self.lowered.fetch_add(u64::from(by), Ordering::Relaxed);
        self.set_flags(flag::DEGRADED, true);
    }

    /// Weight units still missing at slow-path step `step`.
    fn lazy_deficit(&self, step: u64) -> u32 {
        // Relaxed: see `report`.
        let pair = self.deficit.load(Ordering::Relaxed);
        let (missing, at) = ((pair >> 32) as u32, pair as u32);
        let since = (step as u32).wrapping_sub(at);
        missing.saturating_sub(since)
    }

    /// The lock-free forms' effective weight at slow-path step `step`: the
    /// weight less what failures took, one unit back a step since.
    pub(crate) fn lazy_effective(&self, step: u64) -> u32 {
        let weight = self.weight();
        weight.saturating_sub(self.lazy_deficit(step))
    }

    /// Slow start from `now`, if the policy has one.
    pub(crate) fn start_ramp(&self, now: u64) {
        let mut window = self.window.lock();
        self.start_ramp_locked(&mut window, now);
    }

    /// `start_ramp`, the window lock held (see the module's documentation).
    fn start_ramp_locked(&self, _window: &mut FailureWindow, now: u64) {
        if self.common.slow_start_nanos() > 0 {
            // Relaxed: published by the Release step of `set_flags`, which
            // writes the state word even when the flag is already set.
            self.ramp_since.store(now, Ordering::Relaxed);
            self.set_flags(flag::RAMPING, true);
        }
    }

    /// Slow-start progress at `now` in thousandths (`FULL` when not
    /// ramping), at least 1 so a ramping backend is never starved.
    pub(crate) fn ramp(&self, flags: u32, now: u64) -> u64 {
        if flags & flag::RAMPING == 0 {
            return FULL;
        }
        let span = self.common.slow_start_nanos();
        // Relaxed: ordered after the flag by `state`'s Acquire.
        let since = self.ramp_since.load(Ordering::Relaxed);
        let elapsed = now.saturating_sub(since);
        if span == 0 || elapsed >= span {
            self.tidy(flag::RAMPING);
            return FULL;
        }
        (u128::from(elapsed) * u128::from(FULL) / u128::from(span)).max(1) as u64
    }

    /// Clears a flag whose condition has run out, unless a report or ramp
    /// start holds the window (it may be setting it again): picks never
    /// wait. The condition is read again under the lock.
    pub(crate) fn tidy(&self, mask: u32) {
        if let Some(_window) = self.window.try_lock() {
            let still = match mask {
                flag::RAMPING => {
                    let span = self.common.slow_start_nanos();
                    // Relaxed: the window lock orders this after the store
                    // of the ramp start it guards.
                    let since = self.ramp_since.load(Ordering::Relaxed);
                    span != 0 && self.common.now().saturating_sub(since) < span
                }
                flag::DEGRADED => self.lazy_deficit(self.common.slow_steps()) > 0,
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
        let until = now.saturating_add(self.common.fail_timeout_nanos());
        // Relaxed: the CAS alone decides who takes the trial.
        let claimed = self
            .ejected_until
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |end| {
                (end <= now).then_some(until)
            })
            .is_ok();
        if claimed {
            self.trial.store(true, Ordering::Relaxed);
        }
        claimed
    }
}

impl Drop for Record {
    fn drop(&mut self) {
        // Relaxed: the record is no longer shared.
        if self.state.load(Ordering::Relaxed) as u32 != 0 {
            self.common.irregular_changed(false);
        }
    }
}
