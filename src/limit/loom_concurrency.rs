//! Loom models of the concurrency limits (`concurrency.rs`,
//! `keyed_concurrency.rs`): the last slot given once, a waiter woken or
//! seen, work handed over by a permit, and a per-key drop racing another
//! key's acquire.

use std::sync::Arc;

use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::thread;

/// Two requests racing for the last slot of a concurrency limit: exactly
/// one gets a permit, and every slot comes back when the permits drop.
/// Fails with the raise allowed up to `max` inclusive (checked by hand).
#[test]
fn concurrency_limit_gives_the_last_slot_once() {
    use super::ConcurrencyLimit;
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
    use super::ConcurrencyLimit;
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
    use super::ConcurrencyLimit;
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
    use super::{Capacity, KeyedConcurrencyLimit};
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
