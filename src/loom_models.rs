//! Loom models of the protocols whose Synchronization sections say what
//! pairs with what: `record.rs` (the limit with its flag, the ejection
//! deadline with its flag, the ramp start against a clean-up, the slot
//! claim and free) and `retire.rs` (an update waits for the picks in every
//! older snapshot). Run with
//! `RUSTFLAGS="--cfg loom" cargo test --release --lib loom_models`.
//!
//! Each model fails when the fix it guards is reverted (checked by hand on
//! 2026-11-29): the deadline model with Relaxed for the state word's
//! Acquire and Release; the limit model with the limit and its flag written
//! in two steps; the ramp model with the ramp start outside the window lock;
//! the retirement model waiting only for the snapshot the update replaced.
//!
//! The checked operations run in spawned threads: loom explores the
//! interleavings and stale reads of its threads, not of the model's own
//! body before its first yield.

use std::sync::{Arc, Weak};
use std::time::Duration;

use loom::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use loom::thread;

use crate::clock::ManualClock;
use crate::clock_and_policy::Shared;
use crate::record::{flag, Record};
use crate::retire::{wait_for, Retirement};
use crate::sync::Mutex;
use crate::{HealthPolicy, Outcome};

fn record(policy: HealthPolicy, clock: Arc<ManualClock>) -> Arc<Record> {
    Arc::new(Record::new(1, Shared::new(clock, policy, true)))
}

/// A pick reads the limit with its flag: toggling the limit never shows
/// `CAPPED` with another call's limit (0 here, which made picks fail).
#[test]
fn limit_and_flag_are_read_together() {
    loom::model(|| {
        let record = record(HealthPolicy::default(), Arc::new(ManualClock::new()));
        record.set_max_conns(Some(1000));
        let writer = {
            let record = Arc::clone(&record);
            thread::spawn(move || {
                record.set_max_conns(None);
                record.set_max_conns(Some(1000));
            })
        };
        let picker = thread::spawn(move || {
            for _ in 0..2 {
                let state = record.state();
                assert!(state.max_conns().is_none_or(|limit| limit == 1000));
            }
        });
        writer.join().expect("no panic");
        picker.join().expect("no panic");
    });
}

/// A pick that sees `EJECTED` sees the deadline stored with it.
#[test]
fn ejection_deadline_is_seen_with_its_flag() {
    loom::model(|| {
        let clock = Arc::new(ManualClock::new());
        clock.advance(Duration::from_secs(1));
        let record = record(HealthPolicy::default(), clock);
        let reporter = {
            let record = Arc::clone(&record);
            thread::spawn(move || {
                record.report(Outcome::Failure {
                    latency: Duration::from_millis(1),
                });
            })
        };
        let picker = thread::spawn(move || {
            if record.flags() & flag::EJECTED != 0 {
                // Cooling until 11 s: a stale deadline (0) would open a trial.
                assert!(record.cooling(Duration::from_secs(2).as_nanos() as u64));
            }
        });
        reporter.join().expect("no panic");
        picker.join().expect("no panic");
    });
}

/// A ramp start is never lost to the clean-up of the ramp before it.
#[test]
fn ramp_start_survives_a_clean_up_of_the_previous_ramp() {
    loom::model(|| {
        let clock = Arc::new(ManualClock::new());
        let policy = HealthPolicy::default().slow_start(Duration::from_secs(1));
        let record = record(policy, Arc::clone(&clock));
        record.start_ramp(0);
        // The first ramp ran out: a pick may clean it up.
        clock.advance(Duration::from_secs(5));
        let restart = {
            let record = Arc::clone(&record);
            thread::spawn(move || record.start_ramp(Duration::from_secs(5).as_nanos() as u64))
        };
        let picker = {
            let record = Arc::clone(&record);
            thread::spawn(move || record.tidy(flag::RAMPING))
        };
        restart.join().expect("no panic");
        picker.join().expect("no panic");
        assert_ne!(record.flags() & flag::RAMPING, 0, "the new ramp was lost");
    });
}

/// Two picks racing for the last slot never both win, and every slot comes
/// back.
#[test]
fn slot_claim_and_free() {
    loom::model(|| {
        let record = record(HealthPolicy::default(), Arc::new(ManualClock::new()));
        record.set_max_conns(Some(1));
        let holders = Arc::new(AtomicUsize::new(0));
        let pickers: Vec<_> = (0..2)
            .map(|_| {
                let (record, holders) = (Arc::clone(&record), Arc::clone(&holders));
                thread::spawn(move || {
                    let limit = record.state().max_conns().expect("capped");
                    if record.try_take_slot(limit) {
                        // SeqCst: a test counter over both threads.
                        assert_eq!(holders.fetch_add(1, Ordering::SeqCst), 0);
                        holders.fetch_sub(1, Ordering::SeqCst);
                        record.free_slot();
                    }
                })
            })
            .collect();
        for picker in pickers {
            picker.join().expect("no panic");
        }
        assert_eq!(record.slots_taken(), 0);
    });
}

/// The stand-in for arc-swap: a load either sees the new snapshot or holds
/// a counted reference to the old one when the swap returns.
struct Current<S>(Mutex<Arc<S>>);

impl<S> Current<S> {
    fn load(&self) -> Arc<S> {
        Arc::clone(&self.0.lock())
    }

    fn swap(&self, next: Arc<S>) -> Arc<S> {
        std::mem::replace(&mut *self.0.lock(), next)
    }
}

/// A pick stalled in a snapshot two updates back still ends before the
/// update that removed its backend returns.
#[test]
fn removal_waits_for_every_older_snapshot() {
    loom::model(|| {
        // A snapshot is the set of backends it offers.
        let current = Arc::new(Current(Mutex::new(Arc::new(vec!["a", "b"]))));
        let removed = Arc::new(AtomicBool::new(false));
        let picker = {
            let (current, removed) = (Arc::clone(&current), Arc::clone(&removed));
            thread::spawn(move || {
                let snapshot = current.load();
                thread::yield_now();
                if snapshot.contains(&"a") {
                    // SeqCst: the test's own flag.
                    assert!(!removed.load(Ordering::SeqCst), "picked a removed backend");
                }
            })
        };
        let updater = thread::spawn(move || {
            let mut retirement: Retirement<Vec<&str>, ()> = Retirement::new();
            // An add, then the removal: the picker may hold either older one.
            let old = current.swap(Arc::new(vec!["a", "b", "c"]));
            retirement.retire(old, Vec::new());
            let old = current.swap(Arc::new(vec!["b", "c"]));
            let in_use: Vec<Weak<Vec<&str>>> = retirement.retire(old, Vec::new());
            assert!(wait_for(&in_use, None));
            removed.store(true, Ordering::SeqCst);
        });
        updater.join().expect("no panic");
        picker.join().expect("no panic");
    });
}

/// A pick racing two reports reads the peak-EWMA estimate with the time of
/// the same update: one of the values the reports wrote, never a mix.
#[test]
fn peak_estimate_is_one_value() {
    use crate::peak_estimate::PeakEstimate;
    const TAU: f64 = 1e9;
    loom::model(|| {
        let estimate = Arc::new(PeakEstimate::default());
        estimate.observe(1_000_000, 0, TAU);
        let writers: Vec<_> = [(5_000_000, 3 << 20), (500_000, 7 << 20)]
            .into_iter()
            .map(|(sample, now)| {
                let estimate = Arc::clone(&estimate);
                thread::spawn(move || estimate.observe(sample, now, TAU))
            })
            .collect();
        let reader = {
            let estimate = Arc::clone(&estimate);
            thread::spawn(move || estimate.get().expect("sampled"))
        };
        let seen = reader.join().expect("reader");
        for writer in writers {
            writer.join().expect("writer");
        }
        // Every value written: the first sample, either report over it,
        // and each report over the other.
        let possible = |sample: u64, now: u64, over: &PeakEstimate| {
            over.observe(sample, now, TAU);
            over.get().expect("sampled")
        };
        let start = || {
            let e = PeakEstimate::default();
            e.observe(1_000_000, 0, TAU);
            e
        };
        let first = start();
        let a = possible(5_000_000, 3 << 20, &first);
        let ab = possible(500_000, 7 << 20, &first);
        let second = start();
        let b = possible(500_000, 7 << 20, &second);
        let ba = possible(5_000_000, 3 << 20, &second);
        let initial = start().get().expect("sampled");
        assert!(
            [initial, a, ab, b, ba].contains(&seen),
            "a torn estimate: {seen:?}"
        );
    });
}

/// Two checks racing for the last request of a quota: exactly one passes,
/// and the schedule moves by exactly one interval.
#[test]
fn rate_limiter_spends_capacity_once() {
    use crate::limit::{Quota, RateLimiter};
    loom::model(|| {
        let quota = Quota::per_second(1)
            .expect("valid")
            .burst(2)
            .expect("valid");
        let limiter = Arc::new(RateLimiter::with_clock(quota, ManualClock::new()));
        assert!(limiter.check_at(1, 0).is_ok());
        let racers: Vec<_> = (0..2)
            .map(|_| {
                let limiter = Arc::clone(&limiter);
                thread::spawn(move || limiter.check_at(1, 0).is_ok())
            })
            .collect();
        let passed = racers
            .into_iter()
            .map(|racer| racer.join().expect("racer"))
            .filter(|&passed| passed)
            .count();
        assert_eq!(passed, 1);
    });
}

fn keyed_limiter() -> Arc<crate::limit::KeyedRateLimiter<u32>> {
    use crate::limit::{Capacity, KeyedRateLimiter, Quota};
    let quota = Quota::per_second(1)
        .expect("valid")
        .burst(2)
        .expect("valid");
    Arc::new(
        KeyedRateLimiter::with_clock(quota, Capacity::Entries(8), ManualClock::new())
            .expect("one set"),
    )
}

/// Two checks of one key racing for its last request under the set lock
/// of a keyed limiter: exactly one passes.
#[test]
fn keyed_limiter_spends_capacity_once() {
    loom::model(|| {
        let limiter = keyed_limiter();
        assert!(limiter.check_hashed(1, 7, 0).is_ok());
        let racer = {
            let limiter = Arc::clone(&limiter);
            thread::spawn(move || limiter.check_hashed(1, 7, 0).is_ok())
        };
        let mine = limiter.check_hashed(1, 7, 0).is_ok();
        let theirs = racer.join().expect("racer");
        assert!(mine != theirs, "both or neither got the last request");
    });
}

/// Two new keys of one set racing for its slots: both are stored, each
/// with its own state.
#[test]
fn keyed_limiter_keeps_racing_keys_apart() {
    loom::model(|| {
        let limiter = keyed_limiter();
        let other = {
            let limiter = Arc::clone(&limiter);
            thread::spawn(move || limiter.check_hashed(2, 9, 0).is_ok())
        };
        assert!(limiter.check_hashed(2, 7, 0).is_ok());
        assert!(other.join().expect("other"));
        assert!(limiter.check_hashed(1, 7, 0).is_err());
        assert!(limiter.check_hashed(1, 9, 0).is_err());
        assert_eq!(limiter.stats().keys, 2);
    });
}

/// Two requests racing for the last slot of a concurrency limit: exactly
/// one gets a permit, and every slot comes back when the permits drop.
/// Fails with the raise allowed up to `max` inclusive (checked by hand).
#[test]
fn concurrency_limit_gives_the_last_slot_once() {
    use crate::limit::ConcurrencyLimit;
    use std::num::NonZeroU32;
    loom::model(|| {
        let limit = ConcurrencyLimit::new(NonZeroU32::new(2).expect("non-zero"));
        let held = limit.try_acquire().expect("a free slot");
        let racers: Vec<_> = (0..2)
            .map(|_| {
                let limit = limit.clone();
                thread::spawn(move || limit.try_acquire().ok())
            })
            .collect();
        let permits: Vec<_> = racers
            .into_iter()
            .filter_map(|racer| racer.join().expect("racer"))
            .collect();
        assert_eq!(permits.len(), 1);
        assert_eq!(limit.in_flight(), 2);
        drop(permits);
        drop(held);
        assert_eq!(limit.in_flight(), 0);
    });
}

/// A permit dropped while a request starts to wait for its slot: the
/// waiter finds the slot itself, or the drop sees it waiting and wakes
/// it. Never both miss (a waiter left asleep beside a free slot). Fails
/// without either of the two SeqCst fences (checked by hand).
#[test]
fn concurrency_limit_wakes_or_is_seen() {
    use crate::limit::ConcurrencyLimit;
    use std::num::NonZeroU32;
    loom::model(|| {
        let limit = ConcurrencyLimit::new(NonZeroU32::MIN);
        assert!(limit.try_take());
        let waiter = {
            let limit = limit.clone();
            thread::spawn(move || {
                // `acquire` after its first look failed: count, then look.
                limit.waiter_arrives();
                limit.try_take()
            })
        };
        let dropper = {
            let limit = limit.clone();
            thread::spawn(move || limit.give_back())
        };
        let found = waiter.join().expect("waiter");
        let woke = dropper.join().expect("dropper");
        assert!(found || woke, "a waiter slept beside a free slot");
        assert_eq!(limit.in_flight(), u32::from(found));
    });
}

/// Two requests through a concurrency limit of 1, each bumping a counter
/// with a plain load and store while it holds the permit: the second
/// holder sees the first one's write (the drop's Release, the raise's
/// Acquire), so no bump is lost. Fails with both Relaxed (checked by
/// hand).
#[test]
fn concurrency_limit_hands_over_work() {
    use crate::limit::ConcurrencyLimit;
    use std::num::NonZeroU32;
    loom::model(|| {
        let limit = ConcurrencyLimit::new(NonZeroU32::MIN);
        let counter = Arc::new(AtomicUsize::new(0));
        let holders: Vec<_> = (0..2)
            .map(|_| {
                let (limit, counter) = (limit.clone(), Arc::clone(&counter));
                thread::spawn(move || {
                    let Ok(permit) = limit.try_acquire() else {
                        return false;
                    };
                    // Relaxed: only the permit orders these.
                    let seen = counter.load(Ordering::Relaxed);
                    counter.store(seen + 1, Ordering::Relaxed);
                    drop(permit);
                    true
                })
            })
            .collect();
        let held = holders
            .into_iter()
            .map(|holder| holder.join().expect("holder"))
            .filter(|&held| held)
            .count();
        assert_eq!(counter.load(Ordering::Relaxed), held, "a bump was lost");
        assert_eq!(limit.in_flight(), 0);
    });
}

/// A per-key permit dropped on one thread while another key of the same
/// set takes a permit: the first key's slot is freed, the second's held,
/// and neither count is lost.
#[test]
fn keyed_permit_drop_races_another_keys_acquire() {
    use crate::limit::{Capacity, KeyedConcurrencyLimit};
    use std::num::NonZeroU32;
    loom::model(|| {
        let limit = KeyedConcurrencyLimit::<u32>::new(NonZeroU32::MIN, Capacity::Entries(8))
            .expect("one set");
        let held = limit.acquire_hashed(7).expect("a free slot");
        let dropper = thread::spawn(move || drop(held));
        let other = limit.acquire_hashed(9).expect("another key");
        dropper.join().expect("dropper");
        assert_eq!(limit.stats().keys, 1);
        assert!(limit.acquire_hashed(9).is_err(), "key 9 at its limit");
        let again = limit.acquire_hashed(7).expect("key 7 freed");
        drop((other, again));
        assert_eq!(limit.stats().keys, 0);
    });
}
