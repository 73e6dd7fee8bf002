//! The algorithms: each written once, as its state and its choose step
//! ([`Build`](crate::Build) and [`Choose`](crate::Choose)); its lock-free
//! and locked balancer types are [`Static`](crate::Static) over that state
//! in a form, named in [`lockfree`] and [`locked`].
//!
//! | algorithm | lock-free state | locked state |
//! |---|---|---|
//! | round-robin | [`RoundRobinCursor`] | [`RoundRobinState`] |
//! | smooth weighted round-robin | [`SmoothSchedule`] | [`SmoothState`] |
//! | least-connections | [`LeastConnScan`] | [`LeastConnState`] |
//! | random | [`RandomDraw`] | [`RandomState`] |
//! | power-of-two-choices least-connections | [`Choices`]`<ChoiceOptions>` | [`ChoicesState`]`<ChoiceOptions>` |
//! | peak EWMA | [`Choices`]`<PeakEwmaOptions>` | [`ChoicesState`]`<PeakEwmaOptions>` |
//! | probing (Prequal's hot-cold rule) | [`ProbingState`] | [`ProbingState`] |
//! | consistent hash (slot table) | [`SlotHash`] | [`SlotHash`] |
//! | nginx's `ip_hash` | [`NginxIpTable`] | [`NginxIpTable`] |
//! | nginx's `hash $key` | [`NginxKeyTable`] | [`NginxKeyTable`] |
//!
//! You name these types only to spell out what an alias already names, or
//! to read how one plugs in. A new algorithm is one file here with its
//! state (or states), their [`Build`](crate::Build) and
//! [`Choose`](crate::Choose), its two aliases, and one line in the
//! registry of [`Algorithm`](crate::Algorithm) (`pool/algorithm.rs`) that
//! gives its name.
//!
//! Helpers more than one algorithm uses: `effective.rs` (nginx's effective
//! weights), `bounded_load.rs` (the capacity rule of the hashes).
//!
//! [`ChoiceOptions`]: crate::ChoiceOptions
//! [`PeakEwmaOptions`]: crate::PeakEwmaOptions

mod bounded_load;
mod effective;
pub(crate) mod ip_hash;
mod least_conn;
pub(crate) mod nginx;
pub(crate) mod probing;
pub(crate) mod random;
mod round_robin;
mod weighted_round_robin;

pub use ip_hash::SlotHash;
pub use least_conn::{LeastConnScan, LeastConnState};
pub use nginx::{NginxIpTable, NginxKeyTable};
pub use probing::ProbingState;
pub use random::{Choices, ChoicesState, RandomDraw, RandomState};
pub use round_robin::{RoundRobinCursor, RoundRobinState};
pub use weighted_round_robin::{SmoothSchedule, SmoothState};

/// Lock-free balancers: atomics only, no lock and no allocation on the pick
/// path.
pub mod lockfree {
    pub use super::ip_hash::IpHash;
    pub use super::least_conn::LeastConn;
    pub use super::nginx::hash::NginxHash;
    pub use super::nginx::ip_hash::NginxIpHash;
    pub use super::probing::Probing;
    pub use super::random::Random;
    pub use super::random::least_conn::RandomLeastConn;
    pub use super::random::peak_ewma::PeakEwma;
    pub use super::round_robin::RoundRobin;
    pub use super::weighted_round_robin::WeightedRoundRobin;
}

/// Mutex-backed balancers: each algorithm as a sequential state machine
/// behind a mutex. They are the reference the lock-free forms are tested
/// against, and they never let two concurrent picks see the same
/// least-loaded backend.
pub mod locked {
    pub use super::ip_hash::LockedIpHash as IpHash;
    pub use super::least_conn::LockedLeastConn as LeastConn;
    pub use super::nginx::hash::LockedNginxHash as NginxHash;
    pub use super::nginx::ip_hash::LockedNginxIpHash as NginxIpHash;
    pub use super::probing::LockedProbing as Probing;
    pub use super::random::LockedRandom as Random;
    pub use super::random::least_conn::LockedRandomLeastConn as RandomLeastConn;
    pub use super::random::peak_ewma::LockedPeakEwma as PeakEwma;
    pub use super::round_robin::LockedRoundRobin as RoundRobin;
    pub use super::weighted_round_robin::LockedWeightedRoundRobin as WeightedRoundRobin;
}

/// What `new` takes for each state (see [`NewBackends`](crate::NewBackends)):
/// the values, each of weight 1, but for smooth weighted round-robin,
/// whose weights are its point: `(value, weight)` pairs.
macro_rules! new_backends {
    (
        values: $($state:ty),*;
        values of any options: $($generic:ident),*;
        pairs: $($paired:ty),*
    ) => {
        $(new_backends!(@values [] $state);)*
        $(new_backends!(@values [O] $generic<O>);)*
        $(
            impl<T> crate::pick::NewBackends<T> for $paired {
                type Item = (T, u32);

                fn weigh(pair: (T, u32)) -> (T, u32) {
                    pair
                }
            }
        )*
    };
    (@values [$($g:ident)?] $state:ty) => {
        impl<T $(, $g)?> crate::pick::NewBackends<T> for $state {
            type Item = T;

            fn weigh(value: T) -> (T, u32) {
                (value, 1)
            }
        }
    };
}

new_backends! {
    values: RoundRobinCursor, RoundRobinState, LeastConnScan, LeastConnState, RandomDraw,
        RandomState, SlotHash, NginxIpTable, NginxKeyTable, ProbingState;
    values of any options: Choices, ChoicesState;
    pairs: SmoothSchedule, SmoothState
}

/// The locked form of a state that chooses through a shared reference (one
/// state for both forms): its `&mut self` step is the shared one.
macro_rules! choose_through_ref {
    ($state:ty) => {
        /// The locked form runs the shared choice under the lock.
        impl crate::pick::Choose for $state {
            #[inline]
            fn plain<T>(
                &mut self,
                ctx: &crate::pick::Context<'_>,
                backends: &crate::table::Backends<T>,
            ) -> Result<Option<usize>, crate::error::PickError> {
                (&*self).plain(ctx, backends)
            }

            fn choose<T>(
                &mut self,
                ctx: &crate::pick::Context<'_>,
                candidates: &mut crate::pick::Candidates<'_, '_, T>,
            ) -> Result<Option<usize>, crate::error::PickError> {
                (&*self).choose(ctx, candidates)
            }
        }
    };
}
pub(crate) use choose_through_ref;
