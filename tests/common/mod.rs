//! Builds every balancer of the crate the same way, for tests that cover
//! them all.

use loadbalance::{
    Balancer, BuildError, ChoiceOptions, HashOptions, NginxHashOptions, PeakEwmaOptions,
    ProbingOptions, RandomOptions, locked, lockfree,
};

use crate::user_algorithm::{LockFreeRotating, LockedRotating};

/// Every algorithm; the random ones seeded alike in both forms, so that
/// one thread's picks are the same in both.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Algorithm {
    RoundRobin,
    WeightedRoundRobin,
    LeastConn,
    WeightedLeastConn,
    IpHash,
    BoundedHash,
    Random,
    RandomLeastConn,
    PeakEwma,
    /// Probing with no answer yet: its fallback's picks.
    Probing,
    NginxIpHash,
    NginxHash,
    /// A user's own algorithm (`user_algorithm.rs`), through the same
    /// matrices.
    UserRotating,
}

pub(crate) const ALGORITHMS: [Algorithm; 13] = [
    Algorithm::RoundRobin,
    Algorithm::WeightedRoundRobin,
    Algorithm::LeastConn,
    Algorithm::WeightedLeastConn,
    Algorithm::IpHash,
    Algorithm::BoundedHash,
    Algorithm::Random,
    Algorithm::RandomLeastConn,
    Algorithm::PeakEwma,
    Algorithm::Probing,
    Algorithm::NginxIpHash,
    Algorithm::NginxHash,
    Algorithm::UserRotating,
];

impl Algorithm {
    /// Whether a pick needs a client address or key.
    #[allow(dead_code)]
    pub(crate) fn keyed(self) -> bool {
        matches!(
            self,
            Self::IpHash | Self::BoundedHash | Self::NginxIpHash | Self::NginxHash
        )
    }
}

const SEED: u64 = 0x5EED;

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
        Algorithm::BoundedHash => {
            let options = HashOptions::default().bounded_load(125);
            (
                Box::new(lockfree::IpHash::with_options(weighted(), options.clone())?),
                Box::new(locked::IpHash::with_options(weighted(), options)?),
            )
        }
        Algorithm::Random => {
            let options = RandomOptions::default().seed(SEED);
            (
                Box::new(lockfree::Random::with_options(weighted(), options.clone())?),
                Box::new(locked::Random::with_options(weighted(), options)?),
            )
        }
        Algorithm::RandomLeastConn => {
            let options = ChoiceOptions::default().seed(SEED);
            (
                Box::new(lockfree::RandomLeastConn::with_options(
                    weighted(),
                    options.clone(),
                )?),
                Box::new(locked::RandomLeastConn::with_options(weighted(), options)?),
            )
        }
        Algorithm::PeakEwma => {
            let options = PeakEwmaOptions::default().seed(SEED);
            (
                Box::new(lockfree::PeakEwma::with_options(
                    weighted(),
                    options.clone(),
                )?),
                Box::new(locked::PeakEwma::with_options(weighted(), options)?),
            )
        }
        Algorithm::Probing => {
            let options = ProbingOptions::default().seed(SEED);
            (
                Box::new(lockfree::Probing::with_options(
                    weighted(),
                    options.clone(),
                )?),
                Box::new(locked::Probing::with_options(weighted(), options)?),
            )
        }
        Algorithm::NginxIpHash => (
            Box::new(lockfree::NginxIpHash::weighted(weighted())?),
            Box::new(locked::NginxIpHash::weighted(weighted())?),
        ),
        Algorithm::UserRotating => (
            Box::new(LockFreeRotating::weighted(weighted())?),
            Box::new(LockedRotating::weighted(weighted())?),
        ),
        Algorithm::NginxHash => {
            // The ring would reject weights past its limit: plain `hash`
            // takes any weights.
            let options = NginxHashOptions::default().consistent(false);
            (
                Box::new(lockfree::NginxHash::with_options(
                    weighted(),
                    options.clone(),
                )?),
                Box::new(locked::NginxHash::with_options(weighted(), options)?),
            )
        }
    })
}
