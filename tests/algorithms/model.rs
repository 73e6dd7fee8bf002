//! Each lock-free form against its sequential (mutex-backed) form on random
//! weights and random scripts of picks, holds and drops.

use std::net::{IpAddr, Ipv6Addr};

use crate::common::{ALGORITHMS, Algorithm, build};
use loadbalance::{BuildError, Context, Guard};
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Step {
    /// Pick on both forms; keep the guards when `hold`.
    Pick { hold: bool, client: u128 },
    /// Drop the held pair at this position (modulo how many are held).
    Drop(usize),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => (any::<bool>(), any::<u128>()).prop_map(|(hold, client)| Step::Pick { hold, client }),
        1 => any::<usize>().prop_map(Step::Drop),
    ]
}

fn context(algorithm: Algorithm, client: u128) -> Context<'static> {
    if algorithm.keyed() {
        Context::from_addr(IpAddr::V6(Ipv6Addr::from(client)))
    } else {
        Context::new()
    }
}

/// Backends whose active count per weight is least, from the model's counts.
fn least_loaded(held: &[usize], weights: &[u32]) -> Vec<usize> {
    let ratio_le = |i: usize, j: usize| {
        held[i] as u64 * u64::from(weights[j]) <= held[j] as u64 * u64::from(weights[i])
    };
    (0..weights.len())
        .filter(|&i| (0..weights.len()).all(|j| ratio_le(i, j)))
        .collect()
}

fn run_script(algorithm: Algorithm, weights: &[u32], script: &[Step]) -> Result<(), TestCaseError> {
    let (lockfree, locked) = build(algorithm, weights).expect("valid weights");
    let unit = vec![1; weights.len()];
    let effective = match algorithm {
        Algorithm::LeastConn | Algorithm::RoundRobin => &unit[..],
        _ => weights,
    };
    let mut held: Vec<(Guard<u32>, Guard<u32>)> = Vec::new();
    let mut model = vec![0usize; weights.len()];
    for step in script {
        match *step {
            Step::Pick { hold, client } => {
                let ctx = context(algorithm, client);
                let expected = locked.pick(&ctx).expect("pick");
                let got = lockfree.pick(&ctx).expect("pick");
                prop_assert_eq!(
                    got.index(),
                    expected.index(),
                    "{:?} after {:?}",
                    algorithm,
                    model
                );
                prop_assert_eq!(*got as usize, got.index());
                if matches!(
                    algorithm,
                    Algorithm::LeastConn | Algorithm::WeightedLeastConn
                ) {
                    prop_assert!(least_loaded(&model, effective).contains(&expected.index()));
                }
                if hold {
                    model[got.index()] += 1;
                    held.push((got, expected));
                }
            }
            Step::Drop(at) if !held.is_empty() => {
                let (a, b) = held.swap_remove(at % held.len());
                model[a.index()] -= 1;
                drop((a, b));
            }
            Step::Drop(_) => {}
        }
        for (i, &count) in model.iter().enumerate() {
            prop_assert_eq!(lockfree.active(i), Some(count));
            prop_assert_eq!(locked.active(i), Some(count));
        }
    }
    drop(held);
    prop_assert!(
        (0..weights.len()).all(|i| lockfree.active(i) == Some(0) && locked.active(i) == Some(0))
    );
    Ok(())
}

fn small_weights() -> impl Strategy<Value = Vec<u32>> {
    prop::collection::vec(1u32..=100, 1..=12)
}

/// Up to 80 backends: least-connections keeps a dense copy of the counts
/// above 64, and both ways of reading them must match the model.
fn least_conn_weights() -> impl Strategy<Value = Vec<u32>> {
    prop::collection::vec(1u32..=100, 1..=80)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn round_robin_matches_model(weights in small_weights(), script in prop::collection::vec(step(), 1..200)) {
        run_script(Algorithm::RoundRobin, &weights, &script)?;
    }

    #[test]
    fn weighted_round_robin_matches_model(weights in small_weights(), script in prop::collection::vec(step(), 1..200)) {
        run_script(Algorithm::WeightedRoundRobin, &weights, &script)?;
    }

    #[test]
    fn least_conn_matches_model(weights in least_conn_weights(), script in prop::collection::vec(step(), 1..300)) {
        run_script(Algorithm::LeastConn, &weights, &script)?;
    }

    #[test]
    fn weighted_least_conn_matches_model(weights in least_conn_weights(), script in prop::collection::vec(step(), 1..300)) {
        run_script(Algorithm::WeightedLeastConn, &weights, &script)?;
    }

    /// Seeded alike, the random forms make the same picks, held or not.
    #[test]
    fn random_forms_match_model(weights in least_conn_weights(), script in prop::collection::vec(step(), 1..300)) {
        run_script(Algorithm::Random, &weights, &script)?;
        run_script(Algorithm::RandomLeastConn, &weights, &script)?;
        run_script(Algorithm::PeakEwma, &weights, &script)?;
        run_script(Algorithm::Probing, &weights, &script)?;
    }

    #[test]
    fn nginx_hashes_match_model(weights in small_weights(), script in prop::collection::vec(step(), 1..200)) {
        run_script(Algorithm::NginxIpHash, &weights, &script)?;
        run_script(Algorithm::NginxHash, &weights, &script)?;
    }
}

proptest! {
    // Each case builds two 65,536-slot tables, or computes windows of a
    // sequence past the memory bound: fewer cases.
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// A user's own algorithm (`tests/common/user_algorithm.rs`): its two
    /// forms, written once each against the public API, agree too.
    #[test]
    fn a_users_algorithm_matches_its_model(weights in small_weights(), script in prop::collection::vec(step(), 1..200)) {
        run_script(Algorithm::UserRotating, &weights, &script)?;
    }

    #[test]
    fn ip_hash_matches_model(weights in small_weights(), script in prop::collection::vec(step(), 1..200)) {
        run_script(Algorithm::IpHash, &weights, &script)?;
        run_script(Algorithm::BoundedHash, &weights, &script)?;
    }

    #[test]
    fn huge_weights_match_model(
        weights in prop::collection::vec(1u32..=(u32::MAX / 12), 1..=12),
        script in prop::collection::vec(step(), 1..200),
    ) {
        run_script(Algorithm::WeightedRoundRobin, &weights, &script)?;
        run_script(Algorithm::WeightedLeastConn, &weights, &script)?;
    }

    #[test]
    fn any_weights_build_or_fail_with_the_right_error(
        weights in prop::collection::vec(
            prop_oneof![Just(0u32), Just(u32::MAX), 1u32..=10, any::<u32>()],
            0..=6,
        ),
    ) {
        let expected = if weights.is_empty() {
            Some(BuildError::NoBackends)
        } else if let Some(index) = weights.iter().position(|&w| w == 0) {
            Some(BuildError::ZeroWeight { index })
        } else if weights.iter().map(|&w| u64::from(w)).sum::<u64>() > u64::from(u32::MAX) {
            Some(BuildError::WeightOverflow)
        } else {
            None
        };
        for algorithm in ALGORITHMS.into_iter().filter(|&a| !matches!(a, Algorithm::RoundRobin | Algorithm::LeastConn)) {
            let result = build(algorithm, &weights);
            prop_assert_eq!(result.as_ref().err(), expected.as_ref(), "{:?} {:?}", algorithm, weights);
            if let Ok((lockfree, locked)) = result {
                let ctx = context(algorithm, 7);
                prop_assert_eq!(
                    lockfree.pick(&ctx).expect("pick").index(),
                    locked.pick(&ctx).expect("pick").index()
                );
            }
        }
        for algorithm in ALGORITHMS {
            // Unweighted ones only fail on an empty list.
            if matches!(algorithm, Algorithm::RoundRobin | Algorithm::LeastConn) {
                prop_assert_eq!(build(algorithm, &weights).err().is_some(), weights.is_empty());
            }
        }
    }
}
