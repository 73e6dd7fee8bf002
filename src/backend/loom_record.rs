//! Loom models of the record's protocol (see `record.rs`, "Synchronization"):
//! the limit with its flag, the ejection deadline with its flag, the ramp
//! start against a clean-up, the slot claim and free.
//!
//! The deadline model fails with Relaxed for the state word's Acquire and
//! Release; the limit model with the limit and its flag written in two
//! steps; the ramp model with the ramp start outside the window lock
//! (checked by hand on 2026-11-29). The checked operations run in spawned
//! threads: loom explores the interleavings and stale reads of its threads,
//! not of the model's own body before its first yield.

use std::sync::Arc;
use std::time::Duration;

use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::thread;

use super::common::Common;
use super::record::{Record, flag};
use super::{HealthPolicy, Outcome};
use crate::time::{ManualClock, Nanos};

fn record(policy: HealthPolicy, clock: Arc<ManualClock>) -> Arc<Record> {
    Arc::new(Record::new(1, Common::new(clock, policy, true)))
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
                assert!(record.cooling(Nanos::saturating(Duration::from_secs(2))));
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
            thread::spawn(move || record.start_ramp(Nanos::saturating(Duration::from_secs(5))))
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
