//! Random selection: shares asserted by chi-square, the weighted-rs
//! counter-example, seeds, both forms against each other (the mutex-backed
//! form is the sequential model), and live sets.

use loadbalance::{
    AdminState, Backend, Balancer, Context, Live, RandomOptions, Tried, locked, lockfree,
};
use proptest::prelude::*;

use crate::seeded_script;

/// The chi-square statistic of `counts` against shares proportional to
/// `weights`, and its critical value at upper-tail probability `p` (z the
/// matching normal quantile; Wilson-Hilferty's approximation).
fn chi_square(counts: &[u64], weights: &[u32], z: f64) -> (f64, f64) {
    let total: u64 = counts.iter().sum();
    let sum: f64 = weights.iter().map(|&w| f64::from(w)).sum();
    let stat = counts
        .iter()
        .zip(weights)
        .map(|(&c, &w)| {
            let expected = total as f64 * f64::from(w) / sum;
            (c as f64 - expected).powi(2) / expected
        })
        .sum();
    let df = (counts.len() - 1) as f64;
    let a = 2.0 / (9.0 * df);
    (stat, df * (1.0 - a + z * a.sqrt()).powi(3))
}

/// z for an upper tail of 0.001.
const Z_0_001: f64 = 3.090;
/// z for an upper tail of 10^-6: the unseeded runs, which must not flake.
const Z_1E_6: f64 = 4.753;
const PICKS: usize = 1_000_000;

fn counts(lb: &dyn Balancer<usize>, n: usize) -> Vec<u64> {
    let mut counts = vec![0u64; n];
    for _ in 0..PICKS {
        counts[*lb.pick(&Context::new()).expect("pick")] += 1;
    }
    counts
}

/// Weight vectors from a fixed-seed generator: 2 to 40 backends, weights
/// 1 to 1,000.
fn weight_vectors() -> Vec<Vec<u32>> {
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    (0..6)
        .map(|_| {
            let n = 2 + (next() % 39) as usize;
            (0..n).map(|_| 1 + (next() % 1000) as u32).collect()
        })
        .collect()
}

#[test]
fn uniform_and_weighted_shares_pass_chi_square() {
    let mut cases: Vec<Vec<u32>> = vec![vec![1; 2], vec![1; 7], vec![1; 64], vec![1, 2]];
    cases.extend(weight_vectors());
    for (k, weights) in cases.iter().enumerate() {
        let n = weights.len();
        let pairs = || (0..n).zip(weights.iter().copied());
        let seeded = RandomOptions::default().seed(k as u64 * 7919);
        let forms: [(&str, Box<dyn Balancer<usize>>, f64); 3] = [
            (
                "lockfree seeded",
                Box::new(lockfree::Random::with_options(pairs(), seeded.clone()).expect("valid")),
                Z_0_001,
            ),
            (
                "locked seeded",
                Box::new(locked::Random::with_options(pairs(), seeded).expect("valid")),
                Z_0_001,
            ),
            (
                "lockfree per-thread",
                Box::new(lockfree::Random::weighted(pairs()).expect("valid")),
                Z_1E_6,
            ),
        ];
        for (form, lb, z) in forms {
            let counts = counts(&*lb, n);
            let (stat, critical) = chi_square(&counts, weights, z);
            assert!(
                stat < critical,
                "{form}, weights {weights:?}: chi-square {stat:.1} >= {critical:.1} ({counts:?})"
            );
            assert!(
                counts.iter().all(|&c| c > 0),
                "{form}: a backend never drawn"
            );
        }
    }
}

/// The weighted-rs bug never picked the last of two equal backends.
#[test]
fn both_of_two_equal_backends_are_picked() {
    for lb in [
        Box::new(lockfree::Random::new([0usize, 1]).expect("valid")) as Box<dyn Balancer<usize>>,
        Box::new(locked::Random::new([0usize, 1]).expect("valid")),
        Box::new(lockfree::Random::weighted([(0usize, 5), (1, 5)]).expect("valid")),
    ] {
        let picked: std::collections::HashSet<usize> = (0..200)
            .map(|_| *lb.pick(&Context::new()).expect("pick"))
            .collect();
        assert_eq!(picked.len(), 2);
    }
}

#[test]
fn the_same_seed_gives_the_same_sequence() {
    let build = |seed| {
        lockfree::Random::with_options(
            [("a", 3), ("b", 2), ("c", 1)],
            RandomOptions::default().seed(seed),
        )
        .expect("valid")
    };
    fn picks(lb: &lockfree::Random<&'static str>) -> Vec<&'static str> {
        (0..500)
            .map(|_| *lb.pick(&Context::new()).expect("pick"))
            .collect()
    }
    assert_eq!(picks(&build(1)), picks(&build(1)));
    assert_ne!(picks(&build(1)), picks(&build(2)));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// With one seed, the lock-free form makes exactly the picks of the
    /// mutex-backed one (the sequential model), plain path and slow path.
    #[test]
    fn seeded_forms_make_the_same_picks(
        weights in prop::collection::vec(1..50u32, 1..8),
        seed in any::<u64>(),
        ops in prop::collection::vec(seeded_script::op(), 1..100),
    ) {
        let options = RandomOptions::default().seed(seed);
        seeded_script::same_picks::<lockfree::Random<usize>, locked::Random<usize>>(
            &weights,
            (options.clone(), options),
            &ops,
        )?;
    }
}

/// A live random balancer never picks a backend that is down, respects a
/// retry's tried set, and keeps the weights' shares among the rest.
#[test]
fn live_random_skips_what_cannot_serve() {
    let lb = Live::<lockfree::Random<&str>>::new([
        Backend::new("a").weight(3),
        Backend::new("b").weight(1),
        Backend::new("c").weight(4),
    ])
    .expect("valid");
    lb.set_state("c", AdminState::Down).expect("present");
    let mut counts = [0u64; 2];
    for _ in 0..100_000 {
        let picked = lb.pick(&Context::new()).expect("pick");
        assert_ne!(*picked, "c");
        counts[usize::from(*picked == "b")] += 1;
    }
    let (stat, critical) = chi_square(&counts, &[3, 1], Z_1E_6);
    assert!(stat < critical, "{counts:?}");
    let first = lb.pick(&Context::new()).expect("pick");
    let mut tried = Tried::new();
    tried.insert(&first);
    for _ in 0..100 {
        let retry = lb.pick(&Context::new().with_tried(&tried)).expect("pick");
        assert!(*retry != *first && *retry != "c");
    }
}
