//! Loom models of the rate limiters' words: the GCRA's one word (`gcra.rs`)
//! and the keyed table's set lock (`table.rs`).

use std::sync::Arc;

use loom::thread;

use crate::time::ManualClock;

/// Two checks racing for the last request of a quota: exactly one passes,
/// and the schedule moves by exactly one interval.
#[test]
fn rate_limiter_spends_capacity_once() {
    use super::{Quota, RateLimiter};
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

fn keyed_limiter() -> Arc<super::KeyedRateLimiter<u32>> {
    use super::{Capacity, KeyedRateLimiter, Quota};
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
