//! The adaptive concurrency limit: the shared form against a sequential
//! model of admissions, ends and time; the limit falling under queueing and
//! rising with room; and threads (one of them stalled mid-request) that
//! never hold more than the highest limit, every count back to zero.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use loadbalance::ManualClock;
use loadbalance::limit::{AdaptiveOptions, AdaptivePermit};
use proptest::prelude::*;

const MS: Duration = Duration::from_millis(1);

fn options() -> AdaptiveOptions {
    AdaptiveOptions::default()
        .min_rtt_requests(5)
        .min_rtt_interval(Duration::from_secs(5))
        .jitter(0)
        .seed(7)
}

/// Requests of `latency` at `load` in flight, one window: `load` admitted,
/// the clock moved, all finished.
fn window(
    limit: &loadbalance::limit::AdaptiveLimit,
    clock: &ManualClock,
    load: u32,
    latency: Duration,
) {
    let permits: Vec<AdaptivePermit> = (0..load).filter_map(|_| limit.try_acquire().ok()).collect();
    clock.advance(latency);
    for permit in permits {
        permit.finish();
    }
}

#[test]
fn the_limit_falls_when_latency_grows_and_rises_when_it_does_not() {
    let clock = Arc::new(ManualClock::new());
    let limit = options()
        .build_with_clock(Arc::clone(&clock))
        .expect("valid");
    assert_eq!(
        limit.limit(),
        3,
        "pinned while the idle latency is measured"
    );
    for _ in 0..2 {
        window(&limit, &clock, 3, 10 * MS);
    }
    assert_eq!(limit.min_rtt(), Some(10 * MS));
    assert_eq!(limit.limit(), 20);
    // At the idle latency the limit grows every 100 ms (10 rounds of 10 ms
    // requests).
    for _ in 0..30 {
        window(&limit, &clock, limit.limit(), 10 * MS);
    }
    let grown = limit.limit();
    assert!(grown > 60, "grew to {grown}");
    // Four times the idle latency (a queue at the backends): it falls.
    for _ in 0..10 {
        window(&limit, &clock, limit.limit(), 40 * MS);
    }
    assert!(
        limit.limit() < grown / 2,
        "{} after queueing, {grown} before",
        limit.limit()
    );
}

#[test]
fn a_request_past_the_limit_is_shed_with_a_503() {
    let clock = Arc::new(ManualClock::new());
    let limit = options()
        .build_with_clock(Arc::clone(&clock))
        .expect("valid");
    let held: Vec<_> = (0..3).map(|_| limit.try_acquire().expect("room")).collect();
    let shed = limit.try_acquire().expect_err("at the limit");
    assert_eq!((shed.limit, shed.in_flight, shed.status()), (3, 3, 503));
    assert_eq!(
        shed.to_string(),
        "shed: 3 requests in flight, the adaptive limit is 3"
    );
    drop(held);
    let stats = limit.stats();
    assert_eq!((stats.in_flight, stats.admitted, stats.shed), (0, 3, 1));
}

#[test]
fn options_it_cannot_work_with_are_named() {
    for (options, named) in [
        (AdaptiveOptions::default().min_limit(0), "min_limit"),
        (AdaptiveOptions::default().max_limit(2), "max_limit"),
        (AdaptiveOptions::default().initial(5000), "initial"),
        (AdaptiveOptions::default().percentile(101), "percentile"),
        (
            AdaptiveOptions::default().interval(Duration::ZERO),
            "interval",
        ),
        (
            AdaptiveOptions::default().min_rtt_requests(0),
            "min_rtt_requests",
        ),
        (
            AdaptiveOptions::default().min_concurrency(0),
            "min_concurrency",
        ),
        (AdaptiveOptions::default().jitter(101), "jitter"),
        (
            AdaptiveOptions::default().min_rtt_interval(Duration::MAX),
            "min_rtt_interval",
        ),
    ] {
        let error = options.build().expect_err(named);
        assert!(error.to_string().contains(named), "{error}");
    }
}

/// What the model knows of one step.
#[derive(Clone, Debug)]
enum Step {
    Acquire,
    /// Finish the permit at this position (mod the held), after the
    /// clock moved this many milliseconds.
    Finish(usize, u64),
    Drop(usize),
    Advance(u64),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => Just(Step::Acquire),
        3 => (any::<usize>(), 0u64..60).prop_map(|(k, ms)| Step::Finish(k, ms)),
        1 => any::<usize>().prop_map(Step::Drop),
        1 => (0u64..300).prop_map(Step::Advance),
    ]
}

proptest! {
    /// One thread's admissions against a model that holds a count and the
    /// limit the algorithm last gave: admitted exactly while the count is
    /// below it, the limit within its bounds (or the pinned concurrency),
    /// and the count back to zero.
    #[test]
    fn admissions_follow_the_model(steps in proptest::collection::vec(step(), 1..400)) {
        let clock = Arc::new(ManualClock::new());
        let limit = options().max_limit(64).build_with_clock(Arc::clone(&clock)).expect("valid");
        let mut held: Vec<AdaptivePermit> = Vec::new();
        let (mut admitted, mut shed) = (0u64, 0u64);
        for step in steps {
            let bound = limit.limit();
            prop_assert!((3..=64).contains(&bound), "limit {bound}");
            match step {
                Step::Acquire => {
                    let room = (held.len() as u32) < bound;
                    match limit.try_acquire() {
                        Ok(permit) => {
                            prop_assert!(room, "admitted at {} of {bound}", held.len());
                            held.push(permit);
                            admitted += 1;
                        }
                        Err(refused) => {
                            prop_assert!(!room, "shed at {} of {bound}", held.len());
                            prop_assert_eq!((refused.limit, refused.in_flight), (bound, held.len() as u32));
                            shed += 1;
                        }
                    }
                }
                Step::Finish(k, ms) if !held.is_empty() => {
                    clock.advance(MS * ms as u32);
                    held.swap_remove(k % held.len()).finish();
                }
                Step::Drop(k) if !held.is_empty() => drop(held.swap_remove(k % held.len())),
                Step::Advance(ms) => clock.advance(MS * ms as u32),
                _ => {}
            }
            let stats = limit.stats();
            prop_assert_eq!(stats.in_flight, held.len() as u32);
            prop_assert_eq!((stats.admitted, stats.shed), (admitted, shed));
        }
        held.clear();
        prop_assert_eq!(limit.stats().in_flight, 0);
    }
}

/// Four threads admit and finish requests of random latency on the real
/// clock while a fifth holds a permit, stalled, for the whole run: the
/// permits held at once never pass the highest limit, the limit stays in
/// its bounds, and every count returns to zero.
#[test]
fn threads_and_a_stalled_holder_never_pass_the_limit() {
    let limit = AdaptiveOptions::default()
        .initial(8)
        .max_limit(16)
        .min_rtt_requests(10)
        .interval(Duration::from_millis(5))
        .min_rtt_interval(Duration::from_millis(50))
        .build()
        .expect("valid");
    let stalled = limit.try_acquire().expect("room");
    let held = Arc::new(AtomicU32::new(1));
    let most = Arc::new(AtomicU32::new(1));
    let workers: Vec<_> = (0..4)
        .map(|t| {
            let (limit, held, most) = (limit.clone(), Arc::clone(&held), Arc::clone(&most));
            std::thread::spawn(move || {
                for i in 0..3_000u32 {
                    let Ok(permit) = limit.try_acquire() else {
                        std::thread::yield_now();
                        continue;
                    };
                    let now = held.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    if (i + t) % 97 == 0 {
                        std::thread::sleep(Duration::from_micros(200));
                    }
                    held.fetch_sub(1, Ordering::SeqCst);
                    permit.finish();
                    let bound = limit.limit();
                    assert!((3..=16).contains(&bound), "limit {bound}");
                }
            })
        })
        .collect();
    for worker in workers {
        worker.join().expect("worker");
    }
    assert!(
        most.load(Ordering::SeqCst) <= 16,
        "held {} at once",
        most.load(Ordering::SeqCst)
    );
    assert_eq!(limit.stats().in_flight, 1, "the stalled holder's");
    drop(stalled);
    assert_eq!(limit.stats().in_flight, 0);
}
