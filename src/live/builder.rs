//! The settings a live set is built with.

use std::fmt;
use std::sync::Arc;

use arc_swap::ArcSwap;

use super::Live;
use super::assemble::Assemble;
use super::backend::Backend;
use super::members::{Members, Snapshot, assemble, entry};
use super::retire::Retirement;
use crate::backend::HealthPolicy;
use crate::backend::common::Common;
use crate::error::BuildError;
use crate::sync::Mutex;
use crate::time::Clock;

/// Settings of a [`Live`] balancer: health policy, clock and the
/// algorithm's options.
///
/// # Examples
///
/// ```
/// use loadbalance::{lockfree, Backend, HealthPolicy, Live, ManualClock};
/// use std::sync::Arc;
/// use std::time::Duration;
///
/// let clock = Arc::new(ManualClock::new());
/// let lb = Live::<lockfree::LeastConn<&str>>::builder()
///     .health(HealthPolicy::default().max_fails(3).slow_start(Duration::from_secs(30)))
///     .clock(Arc::clone(&clock))
///     .build([Backend::new("a"), Backend::new("b")])?;
/// # drop(lb);
/// # Ok::<(), loadbalance::BuildError>(())
/// ```
pub struct LiveBuilder<B: Assemble> {
    pub(super) policy: HealthPolicy,
    pub(super) clock: Arc<dyn Clock>,
    pub(super) options: B::Options,
}

impl<B: Assemble> LiveBuilder<B> {
    /// The passive-health and slow-start policy (default: nginx's).
    #[must_use]
    pub fn health(mut self, policy: HealthPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// The clock health and slow start read (default: the system clock).
    #[must_use]
    pub fn clock(mut self, clock: impl Clock + 'static) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// The algorithm's options, kept across updates (for hashing,
    /// [`HashOptions`](crate::HashOptions)).
    #[must_use]
    pub fn options(mut self, options: B::Options) -> Self {
        self.options = options;
        self
    }

    /// Builds over `backends`.
    ///
    /// # Errors
    ///
    /// As the algorithm's constructor, and
    /// [`BuildError::DuplicateBackend`] when two backends are equal.
    pub fn build(
        self,
        backends: impl IntoIterator<Item = Backend<B::Value>>,
    ) -> Result<Live<B>, BuildError>
    where
        B::Value: PartialEq,
    {
        let backends: Vec<Backend<B::Value>> = backends.into_iter().collect();
        for (second, backend) in backends.iter().enumerate() {
            if let Some(first) = backends[..second]
                .iter()
                .position(|other| other.value == backend.value)
            {
                return Err(BuildError::DuplicateBackend { first, second });
            }
        }
        let common = Common::new(self.clock, self.policy, B::EFFECTIVE_WEIGHTS);
        let weights = backends.iter().map(|backend| backend.weight).collect();
        let entries = backends
            .into_iter()
            .map(|backend| entry(backend, &common))
            .collect();
        let members = Members {
            entries,
            weights,
            retired: Retirement::new(),
            departed: Vec::new(),
        };
        let first = assemble::<B>(&members, &common, &self.options, None)?;
        Ok(Live {
            current: ArcSwap::from_pointee(Snapshot {
                balancer: Arc::new(first),
            }),
            members: Mutex::new(members),
            common,
            options: self.options,
        })
    }
}

impl<B: Assemble> fmt::Debug for LiveBuilder<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LiveBuilder")
            .field("policy", &self.policy)
            .field("clock", &self.clock)
            .field("options", &self.options)
            .finish()
    }
}
