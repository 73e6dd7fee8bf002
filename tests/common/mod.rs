//! Builds every balancer of the crate the same way, for tests that cover
//! them all.

use loadbalance::{locked, lockfree, Balancer, BuildError};

/// The five algorithms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Algorithm {
    RoundRobin,
    WeightedRoundRobin,
    LeastConn,
    WeightedLeastConn,
    IpHash,
}

pub(crate) const ALGORITHMS: [Algorithm; 5] = [
    Algorithm::RoundRobin,
    Algorithm::WeightedRoundRobin,
    Algorithm::LeastConn,
    Algorithm::WeightedLeastConn,
    Algorithm::IpHash,
];

pub(crate) type Boxed = Box<dyn Balancer<u32>>;

/// Backends `0..weights.len()` (the value is the index), in both forms:
/// `(lock-free, locked)`. Unweighted algorithms ignore the weights.
pub(crate) fn build(algorithm: Algorithm, weights: &[u32]) -> Result<(Boxed, Boxed), BuildError> {
    let plain = || 0..weights.len() as u32;
    let weighted = || (0..weights.len() as u32).zip(weights.iter().copied());
    Ok(match algorithm {
        Algorithm::RoundRobin => (
            Box::new(lockfree::RoundRobin::new(plain())?),
            Box::new(locked::RoundRobin::new(plain())?),
        ),
        Algorithm::WeightedRoundRobin => (
            Box::new(lockfree::WeightedRoundRobin::new(weighted())?),
            Box::new(locked::WeightedRoundRobin::new(weighted())?),
        ),
        Algorithm::LeastConn => (
            Box::new(lockfree::LeastConn::new(plain())?),
            Box::new(locked::LeastConn::new(plain())?),
        ),
        Algorithm::WeightedLeastConn => (
            Box::new(lockfree::LeastConn::weighted(weighted())?),
            Box::new(locked::LeastConn::weighted(weighted())?),
        ),
        Algorithm::IpHash => (
            Box::new(lockfree::IpHash::weighted(weighted())?),
            Box::new(locked::IpHash::weighted(weighted())?),
        ),
    })
}
