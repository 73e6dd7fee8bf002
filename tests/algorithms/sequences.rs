//! The exact sequences of DESIGN.md's table, construction errors, and what
//! guards promise.

use std::net::{IpAddr, Ipv4Addr};

use crate::common::{ALGORITHMS, Algorithm, Boxed, build};
use loadbalance::{
    Balancer, BuildError, Context, Guard, HashOptions, MAX_BACKENDS, PickError, locked, lockfree,
};

/// Picks `count` times, dropping each guard before the next pick.
fn dropped_at_once(lb: &dyn Balancer<u32>, count: usize) -> Vec<usize> {
    (0..count)
        .map(|_| lb.pick(&Context::new()).expect("pick").index())
        .collect()
}

fn both(algorithm: Algorithm, weights: &[u32]) -> [Boxed; 2] {
    let (lockfree, locked) = build(algorithm, weights).expect("valid");
    [lockfree, locked]
}

#[test]
fn round_robin_cycles_in_order() {
    for lb in both(Algorithm::RoundRobin, &[1; 4]) {
        assert_eq!(dropped_at_once(&*lb, 9), [0, 1, 2, 3, 0, 1, 2, 3, 0]);
    }
}

#[test]
fn round_robin_holds_do_not_change_the_order() {
    for lb in both(Algorithm::RoundRobin, &[1; 3]) {
        let held: Vec<Guard<u32>> = (0..5)
            .map(|_| lb.pick(&Context::new()).expect("pick"))
            .collect();
        let indices: Vec<usize> = held.iter().map(Guard::index).collect();
        assert_eq!(indices, [0, 1, 2, 0, 1]);
    }
}

#[test]
fn round_robin_start_offset() {
    let lf = lockfree::RoundRobin::new(0..5u32)
        .expect("valid")
        .with_start(13);
    let lk = locked::RoundRobin::new(0..5u32)
        .expect("valid")
        .with_start(13);
    assert_eq!(dropped_at_once(&lf, 4), [3, 4, 0, 1]);
    assert_eq!(dropped_at_once(&lk, 4), [3, 4, 0, 1]);
    let random = lockfree::RoundRobin::new(0..5u32)
        .expect("valid")
        .with_random_start();
    let first = dropped_at_once(&random, 1)[0];
    assert_eq!(
        dropped_at_once(&random, 5),
        [1, 2, 3, 4, 0].map(|k| (first + k) % 5)
    );
}

#[test]
fn smooth_weighted_round_robin_is_nginx() {
    for lb in both(Algorithm::WeightedRoundRobin, &[5, 1, 1]) {
        assert_eq!(
            dropped_at_once(&*lb, 14),
            [0, 0, 1, 0, 2, 0, 0, 0, 0, 1, 0, 2, 0, 0]
        );
    }
    for lb in both(Algorithm::WeightedRoundRobin, &[4, 2, 1]) {
        // nginx: a a b a c b a (as its source comments work it through)
        assert_eq!(dropped_at_once(&*lb, 7), [0, 1, 0, 2, 0, 1, 0]);
    }
}

#[test]
fn weighted_round_robin_past_the_memory_bound_stays_exact() {
    // Period 2^32 - 2 (gcd 1): far past SCHEDULE_LIMIT.
    let weights = [(0u32, (1 << 31) - 1), (1, (1 << 31) - 2), (2, 1)];
    let lf = lockfree::WeightedRoundRobin::new(weights).expect("valid");
    let lk = locked::WeightedRoundRobin::new(weights).expect("valid");
    assert!(!lf.is_precomputed());
    assert_eq!(dropped_at_once(&lf, 5000), dropped_at_once(&lk, 5000));
    let small = lockfree::WeightedRoundRobin::new([(0u32, 5), (1, 1), (2, 1)]).expect("valid");
    assert!(small.is_precomputed());
}

#[test]
fn least_conn_dropped_at_once_is_round_robin() {
    for lb in both(Algorithm::LeastConn, &[1; 3]) {
        assert_eq!(dropped_at_once(&*lb, 7), [0, 1, 2, 0, 1, 2, 0]);
    }
}

#[test]
fn weighted_least_conn_dropped_at_once_is_smooth_weighted_round_robin() {
    for lb in both(Algorithm::WeightedLeastConn, &[5, 1, 1]) {
        assert_eq!(dropped_at_once(&*lb, 7), [0, 0, 1, 0, 2, 0, 0]);
    }
}

#[test]
fn least_conn_goes_to_the_fewest_active() {
    for lb in both(Algorithm::LeastConn, &[1; 3]) {
        let ctx = Context::new();
        let a = lb.pick(&ctx).expect("pick"); // 0, all tied
        let b = lb.pick(&ctx).expect("pick"); // 1: 1 and 2 tied, SWRR over them
        let c = lb.pick(&ctx).expect("pick"); // 2: the only idle one
        assert_eq!([a.index(), b.index(), c.index()], [0, 1, 2]);
        drop(b);
        assert_eq!(
            lb.pick(&ctx).expect("pick").index(),
            1,
            "1 is the only idle backend"
        );
        let d = lb.pick(&ctx).expect("pick");
        assert_eq!(d.index(), 1);
        assert_eq!(
            (lb.active(0), lb.active(1), lb.active(2)),
            (Some(1), Some(1), Some(1))
        );
    }
}

#[test]
fn weighted_least_conn_compares_active_per_weight() {
    for lb in both(Algorithm::WeightedLeastConn, &[3, 1]) {
        let ctx = Context::new();
        let held: Vec<Guard<u32>> = (0..8).map(|_| lb.pick(&ctx).expect("pick")).collect();
        let on_big = held.iter().filter(|g| g.index() == 0).count();
        assert_eq!(on_big, 6, "3:1 weights hold 6 and 2 of 8");
        // 6/3 == 2/1: a tie, broken by SWRR over both.
        assert!((0..2).contains(&lb.pick(&ctx).expect("pick").index()));
    }
}

#[test]
fn nginx_least_conn_breaks_ties_by_swrr_over_the_tied_only() {
    // All tie twice: current (1, 1, 2) -> 2 wins -> (1, 1, -2); then
    // (2, 2, 0) -> 0 wins -> (-2, 2, 0). With 0 held, 1 and 2 tie and nginx
    // raises only them: (-2, 3, 2) -> 1 -> (-2, 0, 2); (-2, 1, 4) -> 2 ->
    // (-2, 1, 1); (-2, 2, 3) -> 2. Backend 0's current weight never moves.
    for lb in both(Algorithm::WeightedLeastConn, &[1, 1, 2]) {
        let ctx = Context::new();
        let first = lb.pick(&ctx).expect("pick");
        assert_eq!(first.index(), 2, "SWRR over 1,1,2 starts on 2");
        drop(first);
        let busy = lb.pick(&ctx).expect("pick");
        assert_eq!(busy.index(), 0);
        let next: Vec<usize> = (0..3)
            .map(|_| lb.pick(&ctx).expect("pick").index())
            .collect();
        assert_eq!(next, [1, 2, 2]);
    }
}

#[test]
fn one_backend_always_wins() {
    for algorithm in ALGORITHMS {
        for lb in both(algorithm, &[7]) {
            let ctx = Context::from_addr(IpAddr::V4(Ipv4Addr::LOCALHOST));
            let held: Vec<Guard<u32>> = (0..5).map(|_| lb.pick(&ctx).expect("pick")).collect();
            assert!(
                held.iter().all(|g| g.index() == 0 && **g == 0),
                "{algorithm:?}"
            );
            assert_eq!(lb.active(0), Some(5));
        }
    }
}

#[test]
fn hash_is_sticky_and_treats_mapped_ipv6_as_ipv4() {
    for lb in both(Algorithm::IpHash, &[1, 2, 3, 4]) {
        for last in 0..=255u8 {
            let v4 = IpAddr::V4(Ipv4Addr::new(203, 0, 113, last));
            let mapped = IpAddr::V6(Ipv4Addr::new(203, 0, 113, last).to_ipv6_mapped());
            let first = lb.pick(&v4.into()).expect("pick").index();
            assert_eq!(lb.pick(&v4.into()).expect("pick").index(), first);
            assert_eq!(lb.pick(&mapped.into()).expect("pick").index(), first);
        }
    }
}

#[test]
fn hash_needs_an_address_or_key() {
    for lb in both(Algorithm::IpHash, &[1, 1]) {
        assert_eq!(
            lb.pick(&Context::new()).map(|g| g.index()),
            Err(PickError::MissingKey)
        );
        assert_eq!(lb.active(0), Some(0));
        assert_eq!(lb.active(1), Some(0));
        let key = lb
            .pick(&Context::from_key(b"session"))
            .expect("pick")
            .index();
        assert_eq!(
            lb.pick(&Context::from_key(b"session"))
                .expect("pick")
                .index(),
            key
        );
    }
}

#[test]
fn hash_prefix_24_groups_a_subnet() {
    let options = HashOptions::default().ipv4_prefix_24(true);
    let lb = lockfree::IpHash::with_options((0..16u32).map(|i| (i, 1)), options).expect("valid");
    for third in 0..50u8 {
        let at = |last| {
            let addr = IpAddr::V4(Ipv4Addr::new(198, 51, third, last));
            lb.pick(&addr.into()).expect("pick").index()
        };
        let first = at(0);
        assert!((1..=255).all(|last| at(last) == first));
    }
}

#[test]
fn hash_key_changes_the_mapping_and_instances_agree() {
    let build = |key| {
        let options = HashOptions::default().key(key);
        lockfree::IpHash::with_options((0..8u32).map(|i| (i, 1)), options).expect("valid")
    };
    let (a, b, other) = (build([1; 16]), build([1; 16]), build([2; 16]));
    let mut differ = 0;
    for i in 0..1000u32 {
        let ctx = Context::from_addr(IpAddr::V4(Ipv4Addr::from(i.wrapping_mul(2_654_435_761))));
        let index = a.pick(&ctx).expect("pick").index();
        assert_eq!(b.pick(&ctx).expect("pick").index(), index);
        differ += usize::from(other.pick(&ctx).expect("pick").index() != index);
    }
    assert!(
        differ > 700,
        "a new key moves about 7/8 of clients, moved {differ}"
    );
}

#[test]
fn construction_errors_are_typed() {
    for algorithm in ALGORITHMS {
        assert_eq!(build(algorithm, &[]).err(), Some(BuildError::NoBackends));
    }
    for algorithm in [
        Algorithm::WeightedRoundRobin,
        Algorithm::WeightedLeastConn,
        Algorithm::IpHash,
    ] {
        assert_eq!(
            build(algorithm, &[1, 0, 0]).err(),
            Some(BuildError::ZeroWeight { index: 1 })
        );
        assert_eq!(
            build(algorithm, &[u32::MAX, 1]).err(),
            Some(BuildError::WeightOverflow)
        );
    }
    let too_many = MAX_BACKENDS + 1;
    assert_eq!(
        lockfree::RoundRobin::new(0..too_many).err(),
        Some(BuildError::TooManyBackends {
            len: too_many,
            max: MAX_BACKENDS
        })
    );
    assert_eq!(
        locked::LeastConn::new(0..too_many).err(),
        Some(BuildError::TooManyBackends {
            len: too_many,
            max: MAX_BACKENDS
        })
    );
    assert!(lockfree::RoundRobin::new(0..MAX_BACKENDS).is_ok());
    assert_eq!(
        lockfree::IpHash::new(["a", "b", "a"]).err(),
        Some(BuildError::DuplicateBackend {
            first: 0,
            second: 2
        })
    );
    let options = HashOptions::default().table_bits(30);
    assert_eq!(
        locked::IpHash::with_options([("a", 1)], options).err(),
        Some(BuildError::TableBits {
            bits: 30,
            min: 8,
            max: 24
        })
    );
}

#[test]
fn errors_read_as_sentences() {
    assert_eq!(
        BuildError::ZeroWeight { index: 3 }.to_string(),
        "backend 3 has weight 0"
    );
    assert_eq!(BuildError::NoBackends.to_string(), "no backends were given");
    assert_eq!(
        PickError::MissingKey.to_string(),
        "a hashing balancer needs a client address or a key"
    );
}

#[test]
fn guards_are_send_static_and_outlive_the_balancer() {
    fn send_static<G: Send + 'static>(_: &G) {}
    let lb: Box<dyn Balancer<String>> =
        Box::new(lockfree::RoundRobin::new(["a".to_string(), "b".to_string()]).expect("valid"));
    let guard = lb.pick(&Context::new()).expect("pick");
    send_static(&guard);
    drop(lb);
    let moved = std::thread::spawn(move || format!("{}@{}", *guard, guard.index()));
    assert_eq!(moved.join().expect("no panic"), "a@0");
}

#[test]
fn guards_release_during_unwinding() {
    for algorithm in ALGORITHMS {
        for lb in both(algorithm, &[1, 2, 3]) {
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let _held = lb.pick(&Context::from_key(b"k")).expect("pick");
                panic!("request handler failed");
            }));
            assert!(result.is_err());
            assert!((0..3).all(|i| lb.active(i) == Some(0)), "{algorithm:?}");
        }
    }
}

#[test]
fn out_of_range_queries_answer_none() {
    for lb in both(Algorithm::LeastConn, &[1, 1]) {
        assert_eq!((lb.len(), lb.is_empty()), (2, false));
        assert_eq!(lb.active(2), None);
        let stats = lb.stats();
        assert_eq!(stats.len(), 2);
        assert_eq!(stats[1].backend, 1);
    }
}
