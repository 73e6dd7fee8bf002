//! The global concurrency limit: exact counts, threads that never see more
//! than `max` in flight, a stalled holder, and (feature `wait`) waiters
//! woken by the drops that free their slots, deadlines, cancellations that
//! lose no slot and no wake-up, and first-come-first-served order.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Barrier, mpsc};
use std::thread;

use loadbalance::limit::{AtCapacity, ConcurrencyLimit, Permit};

fn limit(max: u32) -> ConcurrencyLimit {
    ConcurrencyLimit::new(NonZeroU32::new(max).expect("non-zero"))
}

fn send_sync_static<T: Send + Sync + 'static>() {}

#[test]
fn limits_and_permits_are_send_sync_and_static() {
    send_sync_static::<ConcurrencyLimit>();
    send_sync_static::<Permit>();
    send_sync_static::<AtCapacity>();
}

/// `max` permits pass, the next is refused, and each drop lets exactly
/// one more in; clones are the same limit.
#[test]
fn max_pass_then_each_drop_lets_exactly_one_in() {
    let limit = limit(3);
    let mut permits: Vec<Permit> = (0..3)
        .map(|n| {
            assert_eq!(limit.in_flight(), n);
            limit.try_acquire().expect("below max")
        })
        .collect();
    assert_eq!((limit.in_flight(), limit.max()), (3, 3));
    let refused = limit.try_acquire().expect_err("at max");
    assert_eq!(refused.max, 3);
    assert_eq!(
        refused.to_string(),
        "at capacity: 3 requests in flight, the most allowed"
    );
    assert_eq!(limit.in_flight(), 3, "a refusal takes nothing");

    for _ in 0..3 {
        drop(permits.pop());
        assert_eq!(limit.in_flight(), 2);
        permits.push(limit.try_acquire().expect("the freed slot"));
        assert!(limit.try_acquire().is_err(), "only the one freed slot");
    }

    let clone = limit.clone();
    assert!(clone.try_acquire().is_err(), "a clone shares the limit");
    drop(permits);
    assert_eq!((limit.in_flight(), clone.in_flight()), (0, 0));
    assert!(format!("{limit:?}").contains("in_flight: 0"));
}

/// A permit outlives every handle of its limit, moves to another thread,
/// and gives its slot back when that thread panics.
#[test]
fn a_permit_is_given_back_by_unwinding_in_another_thread() {
    let limit = limit(1);
    let permit = limit.try_acquire().expect("free");
    let observer = limit.clone();
    drop(limit);
    assert!(format!("{permit:?}").starts_with("Permit"));
    let request = thread::spawn(move || {
        let _permit = permit;
        panic!("the handler failed (expected by the test)");
    });
    assert!(request.join().is_err());
    assert_eq!(observer.in_flight(), 0);
    assert!(observer.try_acquire().is_ok());
}

/// Threads hammer one limit; a counter raised after each acquire and
/// lowered before each drop never passes `max` (this also checks that a
/// permit's work happens before the next holder's), and everything is
/// back to 0 at the end.
#[test]
fn threads_never_see_more_than_max_in_flight() {
    const THREADS: usize = 4;
    const ROUNDS: usize = 50_000;
    const MAX: u32 = 3;
    let limit = limit(MAX);
    let observed = AtomicU32::new(0);
    let peak = AtomicU32::new(0);
    let (granted, refused) = (AtomicUsize::new(0), AtomicUsize::new(0));
    let start = Barrier::new(THREADS);
    thread::scope(|scope| {
        for id in 0..THREADS {
            let (limit, observed, peak) = (&limit, &observed, &peak);
            let (granted, refused, start) = (&granted, &refused, &start);
            scope.spawn(move || {
                start.wait();
                for round in 0..ROUNDS {
                    let Ok(permit) = limit.try_acquire() else {
                        refused.fetch_add(1, Ordering::Relaxed);
                        continue;
                    };
                    // SeqCst: the test's own counter over every thread.
                    let now = observed.fetch_add(1, Ordering::SeqCst) + 1;
                    assert!(now <= MAX, "{now} in flight, max {MAX}");
                    assert!(limit.in_flight() <= MAX);
                    peak.fetch_max(now, Ordering::Relaxed);
                    granted.fetch_add(1, Ordering::Relaxed);
                    if (round + id) % 8 == 0 {
                        thread::yield_now();
                    }
                    observed.fetch_sub(1, Ordering::SeqCst);
                    drop(permit);
                }
            });
        }
    });
    let (granted, refused) = (granted.into_inner(), refused.into_inner());
    assert_eq!(granted + refused, THREADS * ROUNDS);
    assert!(granted > 0);
    assert!(peak.into_inner() <= MAX);
    assert_eq!(observed.into_inner(), 0);
    assert_eq!(limit.in_flight(), 0);
}

/// A holder parked with its permit: the others get exactly `max - 1`
/// more, however often they try, and exactly one more once it lets go.
#[test]
fn a_stalled_holder_keeps_its_slot_until_it_lets_go() {
    const MAX: u32 = 4;
    let limit = limit(MAX);
    let (held_tx, held_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let holder = {
        let limit = limit.clone();
        thread::spawn(move || {
            let permit = limit.try_acquire().expect("free");
            held_tx.send(()).expect("the test waits");
            release_rx.recv().expect("the test releases");
            drop(permit);
        })
    };
    held_rx.recv().expect("the holder holds");

    let try_many = |tries| -> Vec<Permit> {
        (0..tries)
            .filter_map(|_| limit.try_acquire().ok())
            .collect()
    };
    let start = Barrier::new(2);
    let others: Vec<Permit> = thread::scope(|scope| {
        let threads: Vec<_> = (0..2)
            .map(|_| {
                scope.spawn(|| {
                    start.wait();
                    try_many(1_000)
                })
            })
            .collect();
        threads
            .into_iter()
            .flat_map(|thread| thread.join().expect("no panic"))
            .collect()
    });
    assert_eq!(others.len(), MAX as usize - 1);
    assert_eq!(limit.in_flight(), MAX);

    release_tx.send(()).expect("the holder waits");
    holder.join().expect("no panic");
    assert_eq!(limit.in_flight(), MAX - 1);
    let late = thread::scope(|scope| scope.spawn(|| try_many(1_000)).join()).expect("no panic");
    assert_eq!(late.len(), 1, "exactly the holder's slot");
    drop((others, late));
    assert_eq!(limit.in_flight(), 0);
}

#[cfg(feature = "wait")]
mod wait {
    use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    use std::thread;
    use std::time::{Duration, Instant};

    use futures_lite::future::poll_once;
    use loadbalance::limit::ConcurrencyLimit;
    use tokio::time::timeout;

    use super::limit;

    /// Long enough that only a lost wake-up runs into it.
    const STUCK: Duration = Duration::from_secs(30);

    fn current_thread() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime")
    }

    /// Yields until `limit` has `n` waiters.
    async fn until_waiting(limit: &ConcurrencyLimit, n: usize) {
        while limit.waiting() != n {
            tokio::task::yield_now().await;
        }
    }

    fn assert_send<T: Send>(_: &T) {}

    #[test]
    fn a_waiter_gets_the_slot_a_drop_frees() {
        current_thread().block_on(async {
            let limit = limit(1);
            let busy = limit.try_acquire().expect("free");
            assert_send(&limit.acquire());
            let waiter = tokio::spawn({
                let limit = limit.clone();
                async move { limit.acquire().await }
            });
            until_waiting(&limit, 1).await;
            assert!(!waiter.is_finished());
            drop(busy);
            let permit = timeout(STUCK, waiter)
                .await
                .expect("woken")
                .expect("no panic");
            assert_eq!((limit.in_flight(), limit.waiting()), (1, 0));
            drop(permit);
            assert_eq!(limit.in_flight(), 0);
        });
    }

    /// A wait that times out takes nothing and leaves no waiter; the next
    /// waiter is still woken.
    #[test]
    fn a_timed_out_wait_leaves_nothing_behind() {
        current_thread().block_on(async {
            let limit = limit(1);
            let busy = limit.try_acquire().expect("free");
            let waited = timeout(Duration::from_millis(10), limit.acquire()).await;
            assert!(waited.is_err(), "still full at the deadline");
            assert_eq!((limit.in_flight(), limit.waiting()), (1, 0));

            let waiter = tokio::spawn({
                let limit = limit.clone();
                async move { limit.acquire().await }
            });
            until_waiting(&limit, 1).await;
            drop(busy);
            let permit = timeout(STUCK, waiter)
                .await
                .expect("woken")
                .expect("no panic");
            assert_eq!((limit.in_flight(), limit.waiting()), (1, 0));
            drop(permit);
        });
    }

    /// A waiter woken for a slot and dropped before it looks passes the
    /// wake-up to the next waiter, which otherwise would sleep beside a
    /// free slot.
    #[test]
    fn a_cancelled_waiter_passes_its_wake_up_on() {
        current_thread().block_on(async {
            let limit = limit(1);
            let busy = limit.try_acquire().expect("free");
            let mut first = Box::pin(limit.acquire());
            let mut second = Box::pin(limit.acquire());
            assert!(poll_once(first.as_mut()).await.is_none());
            assert!(poll_once(second.as_mut()).await.is_none());
            assert_eq!(limit.waiting(), 2);
            drop(busy); // wakes `first`, the longest waiting
            drop(first); // gone before it looked
            assert_eq!((limit.in_flight(), limit.waiting()), (0, 1));
            let permit = timeout(STUCK, second).await.expect("the wake-up passed on");
            assert_eq!((limit.in_flight(), limit.waiting()), (1, 0));
            drop(permit);
        });
    }

    /// Two slots freed before the first woken waiter looks wake two
    /// waiters, not one: each freed slot is worth its own wake-up.
    #[test]
    fn each_freed_slot_wakes_its_own_waiter() {
        current_thread().block_on(async {
            let limit = limit(2);
            let busy = [
                limit.try_acquire().expect("free"),
                limit.try_acquire().expect("free"),
            ];
            let mut first = Box::pin(limit.acquire());
            let mut second = Box::pin(limit.acquire());
            assert!(poll_once(first.as_mut()).await.is_none());
            assert!(poll_once(second.as_mut()).await.is_none());
            drop(busy); // two slots back while neither waiter has looked
            let first = timeout(STUCK, first).await.expect("woken");
            let second = timeout(STUCK, second).await.expect("woken too");
            assert_eq!((limit.in_flight(), limit.waiting()), (2, 0));
            drop((first, second));
        });
    }

    /// The blocking form returns `AtCapacity` at its deadline, not before,
    /// and a permit as soon as one frees.
    #[test]
    fn acquire_until_honours_its_deadline() {
        let limit = limit(1);
        let busy = limit.try_acquire().expect("free");
        let deadline = Instant::now() + Duration::from_millis(20);
        let refused = limit.acquire_until(deadline).expect_err("still full");
        assert_eq!(refused.max, 1);
        assert!(Instant::now() >= deadline);
        assert_eq!((limit.in_flight(), limit.waiting()), (1, 0));

        let releaser = thread::spawn(move || {
            thread::sleep(Duration::from_millis(20));
            drop(busy);
        });
        let far = Instant::now() + STUCK;
        let permit = limit.acquire_until(far).expect("freed before the deadline");
        assert!(Instant::now() < far);
        releaser.join().expect("no panic");
        assert_eq!((limit.in_flight(), limit.waiting()), (1, 0));
        drop(permit);
        assert_eq!(limit.in_flight(), 0);
    }

    /// Five waiters queue on a full limit; each slot given back goes to the
    /// one that has waited longest.
    #[test]
    fn waiters_are_served_first_come_first_served() {
        current_thread().block_on(async {
            let limit = limit(1);
            let busy = limit.try_acquire().expect("free");
            let served = Arc::new(Mutex::new(Vec::new()));
            let mut tasks = Vec::new();
            for id in 0..5 {
                let (waiter, served) = (limit.clone(), Arc::clone(&served));
                tasks.push(tokio::spawn(async move {
                    let permit = waiter.acquire().await;
                    served.lock().expect("not poisoned").push(id);
                    tokio::task::yield_now().await;
                    drop(permit);
                }));
                // Let it run until it waits: queued in spawn order.
                until_waiting(&limit, id + 1).await;
            }
            assert!(served.lock().expect("not poisoned").is_empty());
            drop(busy);
            for task in tasks {
                timeout(STUCK, task)
                    .await
                    .expect("served")
                    .expect("no panic");
            }
            assert_eq!(*served.lock().expect("not poisoned"), [0, 1, 2, 3, 4]);
            assert_eq!((limit.in_flight(), limit.waiting()), (0, 0));
        });
    }

    /// What the stress below sees: permits held by its threads and tasks,
    /// and the most waiters seen while one was held.
    #[derive(Default)]
    struct Tally {
        holding: AtomicU32,
        most_waiting: AtomicUsize,
    }

    impl Tally {
        fn enter(&self, limit: &ConcurrencyLimit) {
            // SeqCst: the test's own counter over every thread.
            let now = self.holding.fetch_add(1, Ordering::SeqCst) + 1;
            assert!(now <= limit.max(), "{now} in flight, max {}", limit.max());
            self.most_waiting
                .fetch_max(limit.waiting(), Ordering::Relaxed);
        }

        fn leave(&self) {
            self.holding.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// Tasks that wait, time out, or do not wait, and threads that block
    /// with deadlines, all on one small limit: never more than `max` in
    /// flight, no one left asleep (the run would hang), and every count
    /// back to 0.
    #[test]
    fn waits_cancellations_and_drops_lose_no_slot_and_no_wake_up() {
        const MAX: u32 = 2;
        const TASKS: usize = 8;
        const THREADS: usize = 2;
        const ROUNDS: usize = 300;
        let limit = limit(MAX);
        let tally = Arc::new(Tally::default());
        let blocking: Vec<_> = (0..THREADS)
            .map(|_| {
                let (limit, tally) = (limit.clone(), Arc::clone(&tally));
                thread::spawn(move || {
                    for round in 0..ROUNDS {
                        let deadline =
                            Instant::now() + Duration::from_micros(200 * (round % 3) as u64);
                        if let Ok(permit) = limit.acquire_until(deadline) {
                            tally.enter(&limit);
                            thread::yield_now();
                            tally.leave();
                            drop(permit);
                        }
                    }
                })
            })
            .collect();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_time()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            let tasks: Vec<_> = (0..TASKS)
                .map(|id| {
                    let (limit, tally) = (limit.clone(), Arc::clone(&tally));
                    tokio::spawn(async move {
                        for round in 0..ROUNDS {
                            let permit = match (id + round) % 4 {
                                0 => limit.try_acquire().ok(),
                                1 => timeout(Duration::from_micros(100), limit.acquire())
                                    .await
                                    .ok(),
                                _ => Some(limit.acquire().await),
                            };
                            if let Some(permit) = permit {
                                tally.enter(&limit);
                                tokio::task::yield_now().await;
                                tally.leave();
                                drop(permit);
                            }
                        }
                    })
                })
                .collect();
            for task in tasks {
                timeout(STUCK, task)
                    .await
                    .expect("no waiter left asleep")
                    .expect("no panic");
            }
        });
        for thread in blocking {
            thread.join().expect("no panic");
        }
        assert_eq!(tally.holding.load(Ordering::SeqCst), 0);
        assert!(
            tally.most_waiting.load(Ordering::Relaxed) > 0,
            "no one waited"
        );
        assert_eq!((limit.in_flight(), limit.waiting()), (0, 0));
    }
}
