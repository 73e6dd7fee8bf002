//! Picks that wait for a slot (feature `wait`): served in order as guards
//! drop, deadlines, and a stress of waiters, cancellations and drops that
//! must lose no slot and no wake-up.
#![cfg(feature = "wait")]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use loadbalance::{Algorithm, Backend, Context, PickError, Pool};

fn full_pool(max_conns: u32) -> Pool<&'static str> {
    Pool::builder(Algorithm::LeastConn)
        .build([Backend::new("10.0.0.1:80").max_conns(max_conns)])
        .expect("valid")
}

/// Five waiters queue on a full backend; each slot given back goes to the
/// one that has waited longest.
#[test]
fn waiters_are_served_first_come_first_served() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let pool = Arc::new(full_pool(1));
        let busy = pool.pick(&Context::new()).expect("the one slot");
        let served = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for id in 0..5 {
            let (pool, served) = (Arc::clone(&pool), Arc::clone(&served));
            tasks.push(tokio::spawn(async move {
                let picked = pool.pick_wait(&Context::new()).await.expect("a slot");
                served.lock().expect("not poisoned").push(id);
                tokio::task::yield_now().await;
                picked.success();
            }));
            // Let it run until it waits: queued in spawn order.
            tokio::task::yield_now().await;
        }
        assert!(served.lock().expect("not poisoned").is_empty());
        drop(busy);
        for task in tasks {
            task.await.expect("no panic");
        }
        assert_eq!(*served.lock().expect("not poisoned"), [0, 1, 2, 3, 4]);
        assert_eq!(pool.active_of("10.0.0.1:80"), Some(0));
    });
}

/// A deadline ends the wait with nothing taken; the blocking form returns
/// `AllFull` at its deadline and a slot as soon as one frees.
#[test]
fn deadlines_are_honoured() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let pool = Arc::new(full_pool(1));
    let busy = pool.pick(&Context::new()).expect("the one slot");
    runtime.block_on(async {
        let ctx = Context::new();
        let waited = tokio::time::timeout(Duration::from_millis(20), pool.pick_wait(&ctx)).await;
        assert!(waited.is_err(), "still full at the deadline");
    });
    let deadline = Instant::now() + Duration::from_millis(20);
    let result = pool.pick_wait_until(&Context::new(), deadline);
    assert_eq!(result.err(), Some(PickError::AllFull));
    assert!(Instant::now() >= deadline);
    let releaser = {
        let pool = Arc::clone(&pool);
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            drop(busy);
            pool
        })
    };
    let far = Instant::now() + Duration::from_secs(30);
    let picked = pool
        .pick_wait_until(&Context::new(), far)
        .expect("the freed slot");
    assert_eq!(*picked, "10.0.0.1:80");
    drop(picked);
    releaser.join().expect("no panic");
    assert_eq!(pool.active_of("10.0.0.1:80"), Some(0));
}

/// 40 tasks on two threads wait for three slots, hold them briefly, and
/// give them back; half of their waits have short deadlines and are
/// cancelled. Every task without a deadline is served (no wake-up lost:
/// the whole run is bounded), the limit is never exceeded, and afterwards
/// exactly three slots are free.
#[test]
fn cancellations_lose_no_slot_and_no_wake_up() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .expect("runtime");
    let pool = Arc::new(full_pool(3));
    // Tasks between getting a slot and giving it back. (The pool's active
    // count is not the measure: a dropped guard gives its slot back an
    // instant before its count, so `active` may read one over the limit
    // while the limit itself, on slots, holds.)
    let holding = Arc::new(AtomicUsize::new(0));
    runtime.block_on(async {
        let mut tasks = Vec::new();
        for id in 0..40u64 {
            let (pool, holding) = (Arc::clone(&pool), Arc::clone(&holding));
            tasks.push(tokio::spawn(async move {
                let (mut served, mut cancelled) = (0, 0);
                for round in 0..50u64 {
                    let ctx = Context::new();
                    let picked = if (id + round) % 2 == 0 {
                        match tokio::time::timeout(Duration::from_micros(200), pool.pick_wait(&ctx))
                            .await
                        {
                            Ok(picked) => picked.expect("a slot"),
                            Err(_) => {
                                cancelled += 1;
                                continue;
                            }
                        }
                    } else {
                        pool.pick_wait(&ctx).await.expect("a slot")
                    };
                    // SeqCst: the count is the test's own, read across tasks.
                    let now = holding.fetch_add(1, Ordering::SeqCst) + 1;
                    assert!(now <= 3, "{now} tasks hold one of 3 slots");
                    tokio::task::yield_now().await;
                    holding.fetch_sub(1, Ordering::SeqCst);
                    picked.success();
                    served += 1;
                }
                (served, cancelled)
            }));
        }
        let all = async {
            let mut total = (0, 0);
            for task in tasks {
                let (served, cancelled) = task.await.expect("no panic");
                total = (total.0 + served, total.1 + cancelled);
            }
            total
        };
        let (served, cancelled) = tokio::time::timeout(Duration::from_secs(60), all)
            .await
            .expect("every waiter without a deadline is served");
        assert_eq!(served + cancelled, 40 * 50);
        assert!(served >= 40 * 25, "{served}");
    });
    assert_eq!(pool.active_of("10.0.0.1:80"), Some(0));
    let slots: Vec<_> = (0..3)
        .map(|_| pool.pick(&Context::new()).expect("free"))
        .collect();
    assert_eq!(pool.pick(&Context::new()).err(), Some(PickError::AllFull));
    drop(slots);
}
