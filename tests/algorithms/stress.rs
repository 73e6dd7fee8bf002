//! Both cores hammer every balancer with random hold times while a third
//! thread panics holding guards; afterwards every count is back at zero.

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::common::{ALGORITHMS, Algorithm, build};
use loadbalance::{Balancer, Context, Guard};

const PICKS_PER_THREAD: usize = 500_000;
const WEIGHTS: [u32; 8] = [5, 1, 3, 1, 8, 2, 2, 4];

/// xorshift64: the test's own reproducible randomness.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Picks `PICKS_PER_THREAD` times, holding each guard for a random number of
/// later picks (0 to 63); returns how often each backend was picked.
fn hammer(lb: &dyn Balancer<u32>, seed: u64) -> Vec<usize> {
    let mut rng = Rng(seed);
    let mut held: VecDeque<(Guard<u32>, u64)> = VecDeque::new();
    let mut counts = vec![0; lb.len()];
    for step in 0..PICKS_PER_THREAD as u64 {
        let ctx = Context::from_addr(IpAddr::V4(Ipv4Addr::from(rng.next() as u32)));
        let guard = lb.pick(&ctx).expect("pick");
        assert!(guard.index() < lb.len() && *guard as usize == guard.index());
        counts[guard.index()] += 1;
        held.push_back((guard, step + rng.next() % 64));
        held.retain(|&(_, until)| until > step);
    }
    counts
}

fn stress(algorithm: Algorithm, lb: &dyn Balancer<u32>) {
    let panicker_counts: Vec<AtomicUsize> = (0..lb.len()).map(|_| AtomicUsize::new(0)).collect();
    let mut counts = std::thread::scope(|s| {
        let workers: Vec<_> = (1..=2)
            .map(|seed| s.spawn(move || hammer(lb, seed * 0x9E37_79B9)))
            .collect();
        let panicker = s.spawn(|| {
            let held: Vec<Guard<u32>> = (0..100)
                .map(|_| {
                    lb.pick(&Context::from_addr(IpAddr::V4(Ipv4Addr::LOCALHOST)))
                        .expect("pick")
                })
                .collect();
            for guard in &held {
                panicker_counts[guard.index()].fetch_add(1, Ordering::Relaxed);
            }
            panic!("a request handler panics holding 100 guards");
        });
        assert!(panicker.join().is_err());
        let per_thread: Vec<Vec<usize>> = workers
            .into_iter()
            .map(|w| w.join().expect("worker"))
            .collect();
        (0..lb.len())
            .map(|i| per_thread[0][i] + per_thread[1][i])
            .collect::<Vec<usize>>()
    });
    for (count, extra) in counts.iter_mut().zip(&panicker_counts) {
        *count += extra.load(Ordering::Relaxed);
    }
    for i in 0..lb.len() {
        assert_eq!(
            lb.active(i),
            Some(0),
            "{algorithm:?}: backend {i} still counted"
        );
    }
    let picks = 2 * PICKS_PER_THREAD + 100;
    assert_eq!(counts.iter().sum::<usize>(), picks);
    if matches!(
        algorithm,
        Algorithm::RoundRobin | Algorithm::WeightedRoundRobin
    ) {
        // Each concurrent pick takes its own step of the exact sequence, so
        // the counts are those of the sequence's first `picks` steps.
        let (reference, _) = build(algorithm, &WEIGHTS).expect("valid");
        let mut expected = vec![0; lb.len()];
        for _ in 0..picks {
            expected[reference.pick(&Context::new()).expect("pick").index()] += 1;
        }
        assert_eq!(counts, expected, "{algorithm:?}");
    }
}

#[test]
fn every_balancer_survives_two_cores_and_a_panic() {
    for algorithm in ALGORITHMS {
        let (lockfree, locked) = build(algorithm, &WEIGHTS).expect("valid");
        stress(algorithm, &*lockfree);
        stress(algorithm, &*locked);
    }
}

/// After the stress every count the balancer steers by must be back at
/// zero, including the dense copy least-connections keeps above 64
/// backends: while one guard is held, picks whose guards drop at once never
/// return its backend (it has one active, every other none).
#[test]
fn least_conn_counts_steer_right_after_the_stress() {
    for algorithm in [Algorithm::LeastConn, Algorithm::WeightedLeastConn] {
        for n in [8, 100] {
            let weights = vec![1; n];
            let (lockfree, locked) = build(algorithm, &weights).expect("valid");
            for lb in [&*lockfree, &*locked] {
                stress(algorithm, lb);
                let busy = lb.pick(&Context::new()).expect("pick");
                for _ in 0..10 * n {
                    let other = lb.pick(&Context::new()).expect("pick").index();
                    assert_ne!(
                        other,
                        busy.index(),
                        "{algorithm:?} n={n}: picked a busy backend"
                    );
                }
            }
        }
    }
}
