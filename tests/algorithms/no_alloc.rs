//! 10,000 picks and drops of every lock-free balancer allocate nothing:
//! a counting global allocator watches this thread while they run.

use std::net::{IpAddr, Ipv4Addr};

use loadbalance::{Balancer, Context, NginxHashOptions, lockfree};

use crate::counting_alloc::allocations;

#[test]
fn lock_free_picks_do_not_allocate() {
    let weights = (0..64u32).map(|i| (i, 1 + i % 100));
    let balancers: Vec<(&str, Box<dyn Balancer<u32>>)> = vec![
        (
            "round_robin",
            Box::new(lockfree::RoundRobin::new(0..64u32).expect("valid")),
        ),
        (
            "weighted_round_robin",
            Box::new(lockfree::WeightedRoundRobin::new(weights.clone()).expect("valid")),
        ),
        (
            "least_conn",
            Box::new(lockfree::LeastConn::new(0..64u32).expect("valid")),
        ),
        (
            "weighted_least_conn",
            Box::new(lockfree::LeastConn::weighted(weights.clone()).expect("valid")),
        ),
        (
            "ip_hash",
            Box::new(lockfree::IpHash::weighted(weights.clone()).expect("valid")),
        ),
        (
            "nginx_ip_hash",
            Box::new(lockfree::NginxIpHash::weighted(weights.clone()).expect("valid")),
        ),
        (
            // Address-only contexts: the key is the address's text.
            "nginx_hash_consistent",
            Box::new(lockfree::NginxHash::weighted(weights.clone()).expect("valid")),
        ),
        (
            "nginx_hash",
            Box::new(
                lockfree::NginxHash::with_options(
                    weights.clone(),
                    NginxHashOptions::default().consistent(false),
                )
                .expect("valid"),
            ),
        ),
        (
            "weighted_random",
            Box::new(lockfree::Random::weighted(weights.clone()).expect("valid")),
        ),
        (
            "random_least_conn",
            Box::new(lockfree::RandomLeastConn::weighted(weights.clone()).expect("valid")),
        ),
        (
            "peak_ewma",
            Box::new(lockfree::PeakEwma::weighted(weights).expect("valid")),
        ),
    ];
    for (name, lb) in &balancers {
        let mut held = Vec::with_capacity(16);
        let made = allocations(|| {
            for i in 0..10_000u32 {
                let ctx =
                    Context::from_addr(IpAddr::V4(Ipv4Addr::from(i.wrapping_mul(2_654_435_761))));
                let guard = lb.pick(&ctx).expect("pick");
                // Hold some guards so that least-connections sees real loads.
                if held.len() < held.capacity() && i % 3 == 0 {
                    held.push(guard);
                } else if i % 7 == 0 {
                    held.clear();
                }
            }
            held.clear();
        });
        assert_eq!(made, 0, "{name} allocated {made} times in 10,000 picks");
    }
}

#[test]
fn the_counter_sees_allocations() {
    let made = allocations(|| drop(std::hint::black_box(vec![1u8; 100])));
    assert_eq!(made, 1);
}

/// Issue 11 item 9: past `SCHEDULE_LIMIT` the lock-free smooth weighted
/// round-robin computes its sequence in windows; picks still allocate
/// nothing after warm-up, windows crossed included. Weights 1..=1024 over
/// 1,024 backends (windows of 1,024 picks) over 10,000 picks; weights
/// [1000000, 1] (windows of 2^19 picks) over 2,000,000 picks, since 10,000
/// would not cross a window.
#[test]
fn windowed_smooth_weighted_round_robin_picks_do_not_allocate() {
    let cases: [(&str, Vec<u32>, u32); 2] = [
        ("weights 1..=1024", (1..=1024).collect(), 10_000),
        ("weights [1000000, 1]", vec![1_000_000, 1], 2_000_000),
    ];
    let mut allocating = Vec::new();
    for (name, weights, picks) in cases {
        let lb = lockfree::WeightedRoundRobin::new((0u32..).zip(weights)).expect("valid");
        assert!(!lb.is_precomputed(), "{name}: the windowed form");
        let ctx = Context::new();
        for _ in 0..1_000 {
            drop(lb.pick(&ctx).expect("pick"));
        }
        let made = allocations(|| {
            for _ in 0..picks {
                drop(lb.pick(&ctx).expect("pick"));
            }
        });
        if made > 0 {
            allocating.push(format!("{name}: {made} allocations in {picks} picks"));
        }
    }
    assert!(allocating.is_empty(), "{}", allocating.join("; "));
}

/// The nginx hashes off the plain path: with backends down, a pick walks
/// the client's candidates (up to nginx's 21, then the fallback) and
/// retries skip what they tried, allocating nothing. The tried set is
/// filled before counting (its first insert may allocate).
#[test]
fn nginx_hash_walks_do_not_allocate() {
    use loadbalance::{AdminState, Backend, Live, Tried};
    let backends = || (0..8u32).map(|i| Backend::new(i).weight(1 + i % 3));
    let balancers: Vec<(&str, Box<dyn Balancer<u32>>)> = vec![
        (
            "nginx_ip_hash",
            Box::new(Live::<lockfree::NginxIpHash<u32>>::new(backends()).expect("valid")),
        ),
        (
            "nginx_hash_consistent",
            Box::new(Live::<lockfree::NginxHash<u32>>::new(backends()).expect("valid")),
        ),
        (
            "nginx_hash",
            Box::new(
                Live::<lockfree::NginxHash<u32>>::builder()
                    .options(NginxHashOptions::default().consistent(false))
                    .build(backends())
                    .expect("valid"),
            ),
        ),
    ];
    for (name, lb) in &balancers {
        let mut tried = Tried::new();
        let warm_up = Context::from_addr(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)));
        let first = lb.pick(&warm_up).expect("pick");
        tried.insert(&first);
        drop(first);
        let made = allocations(|| {
            for i in 0..10_000u32 {
                let addr = IpAddr::V4(Ipv4Addr::from(i.wrapping_mul(2_654_435_761)));
                let ctx = Context::from_addr(addr);
                drop(lb.pick(&ctx).expect("pick"));
                drop(lb.pick(&ctx.with_tried(&tried)).expect("pick"));
            }
        });
        assert_eq!(made, 0, "{name} allocated {made} times");
    }
    // Now with most backends down: long walks and the fallback.
    let live = Live::<lockfree::NginxHash<u32>>::new(backends()).expect("valid");
    for i in 0..7u32 {
        live.set_state(&i, AdminState::Down).expect("present");
    }
    let made = allocations(|| {
        for i in 0..10_000u32 {
            let ctx = Context::from_addr(IpAddr::V4(Ipv4Addr::from(i)));
            assert_eq!(*live.pick(&ctx).expect("pick"), 7);
        }
    });
    assert_eq!(
        made, 0,
        "nginx_hash_consistent with 7 of 8 down allocated {made} times"
    );
}

/// Issue 22, item 2: the windowed smooth weighted round-robin allocates in
/// no pick, the very first ones included: counting starts with the first
/// pick after the build and runs past the first window's end (weights
/// 1..=1024: windows of 1,024 picks). Each balancer is built and picked on
/// a thread of its own, so no warm-up of that thread's arc-swap state
/// hides an allocation of the first pick.
#[test]
fn windowed_smooth_weighted_round_robin_allocates_from_the_first_pick() {
    for case in 0..2u32 {
        let made = std::thread::spawn(move || {
            let weights: Vec<u32> = (1..=1024).collect();
            let lb = lockfree::WeightedRoundRobin::new((0u32..).zip(weights)).expect("valid");
            assert!(!lb.is_precomputed(), "the windowed form");
            let ctx = Context::new();
            if case == 1 {
                // A stalled guard of the first window: still no allocation.
                let held = lb.pick(&ctx).expect("pick");
                let made = allocations(|| {
                    for _ in 0..5_000 {
                        drop(lb.pick(&ctx).expect("pick"));
                    }
                });
                drop(held);
                return made;
            }
            allocations(|| {
                for _ in 0..5_000 {
                    drop(lb.pick(&ctx).expect("pick"));
                }
            })
        })
        .join()
        .expect("no panic");
        assert_eq!(
            made, 0,
            "case {case}: {made} allocations from the first pick"
        );
    }
}

/// A live balancer's picks allocate nothing but, as its docs say, the one
/// arc-swap slot of a thread's first load (when no exited thread's slot is
/// free): at most once, counted from a new thread's first pick.
#[test]
fn live_picks_allocate_at_most_a_thread_slot_once() {
    use loadbalance::{Backend, Live};
    let lb = Live::<lockfree::LeastConn<u32>>::new((0..8).map(Backend::new)).expect("valid");
    let made = std::thread::scope(|scope| {
        scope
            .spawn(|| {
                allocations(|| {
                    for _ in 0..10_000 {
                        drop(lb.pick(&Context::new()).expect("pick"));
                    }
                })
            })
            .join()
            .expect("no panic")
    });
    assert!(made <= 1, "{made} allocations in 10,000 live picks");
}

/// The probing pick reads its probe pool without allocating, answers in
/// it or not: answers for every backend are in place before counting, and
/// the 10,000 picks use them up (two uses each) and fall back to the least
/// loaded.
#[test]
fn probing_picks_do_not_allocate() {
    use loadbalance::{Probe, ProbingOptions, locked};
    use std::time::Duration;
    fn check(name: &str, lb: &dyn Balancer<u32>, probes: Vec<Probe<u32>>) {
        assert_eq!(probes.len(), 8, "{name}: every backend probed");
        for probe in probes {
            let load = *probe.backend();
            probe.answer(load, Duration::from_millis(u64::from(8 - load)));
        }
        let made = allocations(|| {
            for _ in 0..10_000 {
                drop(lb.pick(&Context::new()).expect("pick"));
            }
        });
        assert_eq!(made, 0, "{name} allocated {made} times in 10,000 picks");
    }
    let options = ProbingOptions::default().probes(8).seed(3);
    let backends = || (0..8u32).map(|i| (i, 1));
    let lockfree = lockfree::Probing::with_options(backends(), options.clone()).expect("valid");
    check("lockfree", &lockfree, lockfree.probes());
    let locked = locked::Probing::with_options(backends(), options).expect("valid");
    check("locked", &locked, locked.probes());
}
