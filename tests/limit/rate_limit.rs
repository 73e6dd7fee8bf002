//! The GCRA rate limiter: against a sequential token-bucket model on a
//! manual clock, quotas that cannot be built, and two threads that never
//! get more than the quota and get all of it under saturation.

use std::sync::Arc;
use std::thread;
use std::time::Duration;

use loadbalance::ManualClock;
use loadbalance::limit::{CheckNError, Quota, QuotaError, RateLimiter};
use proptest::prelude::*;

/// A token bucket, written as one: `burst` tokens, one back every
/// `interval` ns, kept as the debt in nanoseconds (0 = full) in `u128`.
struct Bucket {
    interval: u128,
    capacity: u128,
    debt: u128,
    at: u128,
}

impl Bucket {
    fn check(&mut self, n: u32, now: u64) -> Result<u32, Result<Duration, u32>> {
        let now = u128::from(now);
        self.debt = self.debt.saturating_sub(now - self.at);
        self.at = now;
        let burst = (self.capacity / self.interval) as u32;
        if n > burst {
            return Err(Err(burst));
        }
        let cost = u128::from(n) * self.interval;
        if self.debt + cost > self.capacity {
            let wait = self.debt + cost - self.capacity;
            return Err(Ok(Duration::from_nanos(wait as u64)));
        }
        self.debt += cost;
        Ok(((self.capacity - self.debt) / self.interval) as u32)
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Same decisions, same remaining, same retry-after as the model, on
    /// random quotas and arrival scripts.
    #[test]
    fn gcra_matches_a_token_bucket(
        count in 1u32..2_000,
        period_us in 1u64..10_000_000,
        burst in 1u32..60,
        script in prop::collection::vec((0u64..50_000_000, 1u32..8), 1..300),
    ) {
        let quota = Quota::new(count, Duration::from_micros(period_us)).expect("valid").burst(burst).expect("valid");
        let clock = Arc::new(ManualClock::new());
        let limiter = RateLimiter::with_clock(quota, Arc::clone(&clock));
        let interval = u128::from(period_us * 1_000).div_ceil(u128::from(count));
        let mut model = Bucket { interval, capacity: interval * u128::from(burst), debt: 0, at: 0 };
        let mut now = 0u64;
        for (advance, n) in script {
            clock.advance(Duration::from_nanos(advance));
            now += advance;
            let got = limiter.check_n(n);
            match (got, model.check(n, now)) {
                (Ok(allowed), Ok(remaining)) => prop_assert_eq!(allowed.remaining, remaining),
                (Err(CheckNError::Denied(denied)), Err(Ok(wait))) => prop_assert_eq!(denied.retry_after, wait),
                (Err(CheckNError::ExceedsBurst { burst: b }), Err(Err(model_burst))) => prop_assert_eq!(b, model_burst),
                (got, want) => prop_assert!(false, "at {}: got {:?}, model {:?}", now, got, want),
            }
        }
    }
}

#[test]
fn quotas_that_cannot_hold_are_typed_errors() {
    assert_eq!(
        Quota::new(0, Duration::from_secs(1)),
        Err(QuotaError::ZeroRate)
    );
    assert_eq!(Quota::new(1, Duration::ZERO), Err(QuotaError::ZeroPeriod));
    assert_eq!(
        Quota::per_second(1).and_then(|q| q.burst(0)),
        Err(QuotaError::ZeroBurst)
    );
    assert_eq!(Quota::new(1, Duration::MAX), Err(QuotaError::PeriodTooLong));
    let long = Quota::new(1, Duration::from_secs(100 * 365 * 86_400)).expect("fits");
    assert_eq!(long.burst(2), Err(QuotaError::PeriodTooLong));
    // The interval rounds up: 3 a second never lets in a fourth.
    assert_eq!(
        Quota::per_second(3).expect("valid").interval(),
        Duration::from_nanos(333_333_334)
    );
}

/// Two threads make 10^6 checks each while one of them moves a manual
/// clock 100 ns a check (0.1 s in all, against a quota of one request per
/// 10 us with a burst of 10): the admitted total is exactly the burst plus
/// one per interval since the first check, never more. (A single thread
/// shows the same total; the race adds nothing.)
#[test]
fn two_threads_get_the_quota_and_no_more() {
    let clock = Arc::new(ManualClock::new());
    let quota = Quota::new(1, Duration::from_micros(10))
        .expect("valid")
        .burst(10)
        .expect("valid");
    let limiter = Arc::new(RateLimiter::with_clock(quota, Arc::clone(&clock)));
    // The schedule starts at the first check: make it at time 0.
    let first = u64::from(limiter.check().is_ok());
    let ticker = {
        let (limiter, clock) = (Arc::clone(&limiter), Arc::clone(&clock));
        thread::spawn(move || {
            let mut admitted = 0u64;
            for _ in 0..1_000_000 {
                clock.advance(Duration::from_nanos(100));
                admitted += u64::from(limiter.check().is_ok());
            }
            admitted
        })
    };
    let other = {
        let limiter = Arc::clone(&limiter);
        thread::spawn(move || (0..1_000_000).filter(|_| limiter.check().is_ok()).count() as u64)
    };
    let admitted = first + ticker.join().expect("no panic") + other.join().expect("no panic");
    let elapsed = 1_000_000 * 100u64;
    let quota_total = 10 + elapsed / 10_000;
    assert_eq!(admitted, quota_total);
}

const YEAR: Duration = Duration::from_secs(365 * 24 * 3600);

/// Quotas whose burst spans more than 2^62 ns (146 years) are refused; up
/// to there a limiter answers exactly, with no saturated arithmetic: one
/// request per 100 years waits 100 years (less the nanosecond passed), and
/// a second request halfway is still denied.
#[test]
fn the_longest_quotas_answer_exactly() {
    assert_eq!(Quota::new(1, YEAR * 400), Err(QuotaError::PeriodTooLong));
    assert_eq!(
        Quota::new(1, YEAR * 100).and_then(|q| q.burst(2)),
        Err(QuotaError::PeriodTooLong)
    );
    let quota = Quota::new(1, YEAR * 100).expect("under 146 years");
    let clock = Arc::new(ManualClock::new());
    let limiter = RateLimiter::with_clock(quota, Arc::clone(&clock));
    assert!(limiter.check().is_ok());
    clock.advance(Duration::from_nanos(1));
    let denied = limiter.check().expect_err("one per 100 years");
    assert_eq!(denied.retry_after, YEAR * 100 - Duration::from_nanos(1));
    clock.advance(YEAR * 50);
    assert!(limiter.check().is_err(), "a second request halfway passed");
    clock.advance(YEAR * 50);
    assert!(limiter.check().is_ok());
}
