//! The keyed rate limiter: against an unbounded model (one token bucket
//! per key in a `HashMap`) on a manual clock, in a table small enough to
//! evict all the time; addresses of one IPv6 /64 sharing one budget; two
//! threads on shared keys never getting more than the quota.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use loadbalance::ManualClock;
use loadbalance::limit::{Capacity, CheckNError, ClientGrouping, KeyedRateLimiter, Quota};
use proptest::prelude::*;

/// A token bucket as the debt in nanoseconds (0 = full), in `u128`.
#[derive(Clone, Copy)]
struct Bucket {
    debt: u128,
    at: u128,
}

struct Model {
    interval: u128,
    capacity: u128,
    buckets: HashMap<u32, Bucket>,
}

impl Model {
    fn refresh(&mut self, now: u64) {
        let now = u128::from(now);
        for bucket in self.buckets.values_mut() {
            bucket.debt = bucket.debt.saturating_sub(now - bucket.at);
            bucket.at = now;
        }
        self.buckets.retain(|_, bucket| bucket.debt > 0);
    }

    /// Keys whose bucket is not full (the ones a bounded table must keep).
    fn live(&self) -> usize {
        self.buckets.len()
    }

    fn check(&mut self, key: u32, n: u32, now: u64) -> Result<u32, Result<Duration, u32>> {
        self.refresh(now);
        let burst = (self.capacity / self.interval) as u32;
        if n > burst {
            return Err(Err(burst));
        }
        let bucket = self.buckets.entry(key).or_insert(Bucket {
            debt: 0,
            at: u128::from(now),
        });
        let cost = u128::from(n) * self.interval;
        if bucket.debt + cost > self.capacity {
            let wait = bucket.debt + cost - self.capacity;
            return Err(Ok(Duration::from_nanos(wait as u64)));
        }
        bucket.debt += cost;
        Ok(((self.capacity - bucket.debt) / self.interval) as u32)
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// One set of 8 slots, up to 24 keys, idle spells: every decision
    /// equals the unbounded model's as long as no live key was evicted, and
    /// no live key is evicted while the set has room for every live key
    /// (refilled keys go first, and exactly).
    #[test]
    fn bounded_table_decides_as_the_unbounded_model(
        burst in 1u32..6,
        interval_us in 1u64..1_000,
        keys in 2u32..24,
        script in prop::collection::vec((0u64..3_000_000, 0u32..24, 1u32..4), 1..400),
    ) {
        let quota = Quota::new(1, Duration::from_micros(interval_us)).expect("valid").burst(burst).expect("valid");
        let clock = Arc::new(ManualClock::new());
        let limiter = KeyedRateLimiter::<u32>::with_clock(quota, Capacity::Entries(8), Arc::clone(&clock)).expect("8 keys");
        prop_assert_eq!(limiter.stats().capacity, 8);
        let interval = u128::from(interval_us) * 1_000;
        let mut model = Model { interval, capacity: interval * u128::from(burst), buckets: HashMap::new() };
        let mut now = 0u64;
        for (advance, key, n) in script {
            let key = key % keys;
            // Mostly small steps, sometimes long enough for every bucket to refill.
            let advance = if advance > 2_900_000 { 10_000_000_000 } else { advance };
            clock.advance(Duration::from_nanos(advance));
            now += advance;
            model.refresh(now);
            let others_live = model.live() - usize::from(model.buckets.contains_key(&key));
            let evicted_before = limiter.stats().evicted_live;
            let got = limiter.check_n(&key, n);
            let want = model.check(key, n, now);
            if others_live < 8 {
                prop_assert_eq!(limiter.stats().evicted_live, evicted_before, "a live key was evicted with {} others live", others_live);
            }
            if limiter.stats().evicted_live > 0 {
                break;
            }
            match (got, want) {
                (Ok(allowed), Ok(remaining)) => prop_assert_eq!(allowed.remaining, remaining),
                (Err(CheckNError::Denied(denied)), Err(Ok(wait))) => prop_assert_eq!(denied.retry_after, wait),
                (Err(CheckNError::ExceedsBurst { burst: b }), Err(Err(model_burst))) => prop_assert_eq!(b, model_burst),
                (got, want) => prop_assert!(false, "key {} at {}: got {:?}, model {:?}", key, now, got, want),
            }
        }
    }
}

/// A full set of live keys gives up the one nearest to refilled, and only
/// that one gets a fresh burst.
#[test]
fn a_live_eviction_takes_the_key_nearest_to_refilled() {
    let clock = Arc::new(ManualClock::new());
    let quota = Quota::new(1, Duration::from_secs(1))
        .expect("valid")
        .burst(4)
        .expect("valid");
    let limiter =
        KeyedRateLimiter::<u32>::with_clock(quota, Capacity::Entries(8), Arc::clone(&clock))
            .expect("8 keys");
    // Key k spends 1 + k % 4 requests at k ms: key 0 has the lowest TAT
    // (1 s), then key 4 (1.004 s).
    for key in 0..8u32 {
        for _ in 0..=(key % 4) {
            assert!(limiter.check(&key).is_ok());
        }
        clock.advance(Duration::from_millis(1));
    }
    assert_eq!(limiter.stats().keys, 8);
    assert!(limiter.check(&100).is_ok());
    let stats = limiter.stats();
    assert_eq!(
        (stats.evicted_live, stats.evicted_idle, stats.keys),
        (1, 0, 8)
    );
    // Key 1 kept its state (2 spent, a third now); key 0 starts again with
    // its whole burst, and takes the slot of key 4, now the lowest.
    assert_eq!(limiter.check(&1).map(|a| a.remaining), Ok(1));
    assert_eq!(limiter.check(&0).map(|a| a.remaining), Ok(3));
    assert_eq!(limiter.stats().evicted_live, 2);
    assert_eq!(limiter.check(&4).map(|a| a.remaining), Ok(3));
}

/// 10^5 addresses from one /64 take turns: together they get one budget
/// (the burst at once, then one per interval); a neighbouring /64 has its
/// own.
#[test]
fn addresses_of_one_slash_64_share_a_budget() {
    let clock = Arc::new(ManualClock::new());
    let quota = Quota::new(1, Duration::from_millis(1))
        .expect("valid")
        .burst(50)
        .expect("valid");
    let limiter = KeyedRateLimiter::with_clock(quota, Capacity::Entries(1024), Arc::clone(&clock))
        .expect("1024 keys");
    let clients = ClientGrouping::default();
    let base: u128 = 0x2001_0db8_0000_0001 << 64;
    let mut admitted = 0u64;
    for i in 0..100_000u128 {
        // Host bits scattered, 10 us apart: 1 s in all.
        let host = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) & u128::from(u64::MAX);
        let ip = IpAddr::V6(Ipv6Addr::from_bits(base | host));
        admitted += u64::from(limiter.check(&clients.key(ip)).is_ok());
        clock.advance(Duration::from_micros(10));
    }
    // Burst 50, then one per ms over 999.99 ms.
    assert_eq!(admitted, 50 + 999);
    let neighbour = IpAddr::V6(Ipv6Addr::from_bits(base + (1 << 64)));
    assert_eq!(
        limiter.check(&clients.key(neighbour)).map(|a| a.remaining),
        Ok(49)
    );
    assert_eq!(limiter.stats().keys, 2);
}

/// Two threads check the same 64 keys 10^6 times in all while one moves a
/// manual clock: each key's admitted count is exactly its burst plus one
/// per interval elapsed (the table is large enough to evict nothing), so
/// no race let a request through twice or lost one.
#[test]
fn two_threads_share_keys_and_never_overspend() {
    let clock = Arc::new(ManualClock::new());
    let quota = Quota::new(1, Duration::from_micros(100))
        .expect("valid")
        .burst(5)
        .expect("valid");
    let limiter = Arc::new(
        KeyedRateLimiter::<u32>::with_clock(quota, Capacity::Entries(4096), Arc::clone(&clock))
            .expect("4096 keys"),
    );
    const KEYS: u32 = 64;
    const ROUNDS: u32 = 8_000;
    // Every key starts its schedule at time 0.
    let mut admitted = vec![0u64; KEYS as usize];
    for key in 0..KEYS {
        admitted[key as usize] += u64::from(limiter.check(&key).is_ok());
    }
    let run = |ticks: bool| {
        let (limiter, clock) = (Arc::clone(&limiter), Arc::clone(&clock));
        thread::spawn(move || {
            let mut admitted = vec![0u64; KEYS as usize];
            for _ in 0..ROUNDS {
                for key in 0..KEYS {
                    admitted[key as usize] += u64::from(limiter.check(&key).is_ok());
                }
                if ticks {
                    clock.advance(Duration::from_micros(10));
                }
            }
            admitted
        })
    };
    let (a, b) = (run(true), run(false));
    let (a, b) = (a.join().expect("no panic"), b.join().expect("no panic"));
    // 8,000 ticks of 10 us: 80 ms, 800 intervals.
    let elapsed_intervals = u64::from(ROUNDS) * 10 / 100;
    for key in 0..KEYS as usize {
        let total = admitted[key] + a[key] + b[key];
        // The last tick's interval may not have been checked after it.
        assert!(
            (5 + elapsed_intervals - 1..=5 + elapsed_intervals).contains(&total),
            "key {key}: {total} admitted"
        );
    }
    let stats = limiter.stats();
    assert_eq!((stats.keys, stats.evicted_live), (64, 0));
}

/// A check of weight 0 on a key the table does not hold stores nothing:
/// its entry would be refilled at once, and taking a slot for it evicted a
/// live key (a fresh burst for nothing).
#[test]
fn a_zero_weight_check_of_a_new_key_evicts_no_live_key() {
    let clock = Arc::new(ManualClock::new());
    let quota = Quota::per_second(1)
        .and_then(|q| q.burst(1))
        .expect("valid");
    let limiter =
        KeyedRateLimiter::<u32>::with_clock(quota, Capacity::Entries(8), Arc::clone(&clock))
            .expect("8 keys");
    for key in 0..8u32 {
        assert!(limiter.check(&key).is_ok());
        assert!(limiter.check(&key).is_err());
    }
    assert_eq!(limiter.check_n(&1000, 0).map(|a| a.remaining), Ok(1));
    assert_eq!(limiter.stats().evicted_live, 0, "{:?}", limiter.stats());
    for key in 0..8u32 {
        assert!(limiter.check(&key).is_err(), "key {key} got a fresh burst");
    }
}

/// Sets fill by chance before the table does. At an eighth of the
/// capacity in live keys, a new key almost never finds its set of 8 full
/// (Poisson with mean 1: about 1 in 100,000); the bound allows 4 in 1,024.
#[test]
fn an_eighth_full_table_evicts_almost_no_live_key() {
    let clock = Arc::new(ManualClock::new());
    let quota = Quota::per_second(1).expect("valid");
    for _ in 0..8 {
        // A fresh random hash key each round.
        let limiter =
            KeyedRateLimiter::<u32>::with_clock(quota, Capacity::Entries(8192), Arc::clone(&clock))
                .expect("8192 keys");
        for key in 0..1024u32 {
            assert!(limiter.check(&key).is_ok());
        }
        assert!(limiter.stats().evicted_live <= 4, "{:?}", limiter.stats());
    }
}
