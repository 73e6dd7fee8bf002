//! Latency-aware selection by peak EWMA (Finagle's `P2CPeakEwma`, tower's
//! `PeakEwma`, linkerd): the cost of a backend is its latency estimate
//! times (active guards + 1), per unit of weight, and a pick takes the
//! cheapest of `d` candidates drawn by weight (every backend when there
//! are no more than `d`). The estimate is fed by the latency each guard
//! reports ([`Guard::report`](crate::Guard::report)), jumps up at once on a
//! slower sample, follows faster ones with the decay time, and decays
//! toward zero while no sample comes, so an idle backend is probed again
//! (`peak_estimate.rs` has the arithmetic). Time comes from the balancer's
//! [`Clock`](crate::Clock).

use std::time::Duration;

use super::choices::{Choices, ChoicesState, Cost, check_choices, choices_build};
use crate::error::BuildError;
use crate::pick::{LockFree, Locked, Set, Static};
use crate::time::Nanos;

/// Options of the latency-aware balancers.
///
/// # Examples
///
/// ```
/// use loadbalance::{lockfree::PeakEwma, PeakEwmaOptions};
/// use std::time::Duration;
///
/// let options = PeakEwmaOptions::default()
///     .decay(Duration::from_secs(5))
///     .default_rtt(Duration::from_millis(10));
/// let lb = PeakEwma::with_options([("a", 1), ("b", 1), ("c", 1)], options)?;
/// # drop(lb);
/// # Ok::<(), loadbalance::BuildError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeakEwmaOptions {
    choices: u8,
    seed: Option<u64>,
    decay: Duration,
    default_rtt: Duration,
}

impl Default for PeakEwmaOptions {
    /// Two candidates, a 10 s decay (tower's) and a 30 ms estimate for a
    /// backend with no sample yet (linkerd's).
    fn default() -> Self {
        Self {
            choices: 2,
            seed: None,
            decay: Duration::from_secs(10),
            default_rtt: Duration::from_millis(30),
        }
    }
}

impl PeakEwmaOptions {
    /// Candidates drawn a pick, 2 to 8 (default 2).
    #[must_use]
    pub fn choices(mut self, choices: u8) -> Self {
        self.choices = choices;
        self
    }

    /// The same draws on every run (and in both forms), for tests.
    #[must_use]
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// The time constant `tau` (default 10 s): a faster sample moves the
    /// estimate by `1 - e^(-t/tau)` of the way for `t` since the last
    /// sample, and an idle estimate falls to `e^(-t/tau)` of itself.
    #[must_use]
    pub fn decay(mut self, decay: Duration) -> Self {
        self.decay = decay;
        self
    }

    /// The estimate of a backend that has reported nothing yet (default
    /// 30 ms). Lower than the real latencies, a new backend is favoured
    /// until its first samples; higher, it is probed once the estimate
    /// decays.
    #[must_use]
    pub fn default_rtt(mut self, rtt: Duration) -> Self {
        self.default_rtt = rtt;
        self
    }

    /// Validates and gives the algorithm's choices and cost.
    fn check(&self) -> Result<(usize, Cost), BuildError> {
        let choices = check_choices(self.choices)?;
        let decay = Nanos::exact(self.decay)
            .filter(|&nanos| nanos > 0)
            .ok_or(BuildError::Duration { option: "decay" })?;
        let cost = Cost::Latency {
            decay: decay as f64,
            default_rtt: Nanos::saturating(self.default_rtt) as f64,
        };
        Ok((choices, cost))
    }
}

/// Makes reports keep the estimate and gives every backend without one the
/// default as of now.
fn start_estimates<T>(set: &Set<'_, T>, cost: Cost) {
    let Cost::Latency { decay, default_rtt } = cost else {
        return;
    };
    let common = set.common();
    common.set_peak_decay(decay as u64);
    let now = common.now();
    for record in set.records() {
        record.peak.seed(default_rtt, now);
    }
}

/// Lock-free latency-aware selection: the lowest peak-EWMA latency
/// times (active + 1) per unit of weight among `d` candidates.
///
/// # Examples
///
/// ```
/// use loadbalance::{lockfree::PeakEwma, Balancer, Context, Outcome};
/// use std::time::Duration;
///
/// let lb = PeakEwma::new(["a", "b"])?;
/// // Both start at the default estimate (30 ms). A slower sample
/// // raises a backend's estimate at once:
/// let first = lb.pick(&Context::new())?;
/// first.report(Outcome::Success { latency: Duration::from_millis(80) });
/// let slow = first.index();
/// drop(first);
/// for _ in 0..10 {
///     assert_ne!(lb.pick(&Context::new())?.index(), slow);
/// }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub type PeakEwma<T> = Static<T, LockFree<Choices<PeakEwmaOptions>>>;

/// Mutex-backed latency-aware selection: the same draws under a lock,
/// so two picks never read the same counts.
///
/// # Examples
///
/// ```
/// use loadbalance::{locked::PeakEwma, Balancer, Context};
///
/// let lb = PeakEwma::new(["a", "b", "c"])?;
/// let guard = lb.pick(&Context::new())?;
/// assert_eq!(lb.active(guard.index()), Some(1));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub type LockedPeakEwma<T> = Static<T, Locked<ChoicesState<PeakEwmaOptions>>>;

choices_build! {
    /// The lowest peak-EWMA cost of `choices` candidates; every record
    /// starts (or keeps) its estimate.
    PeakEwmaOptions => |set, options| {
        let (choices, cost) = options.check()?;
        start_estimates(set, cost);
        (choices, cost, options.seed)
    }
}
