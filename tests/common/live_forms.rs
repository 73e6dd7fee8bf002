//! Every balancer type a live balancer runs, for tests that cover them all.

/// The default options of `B`'s algorithm, with the consistent hash's
/// table at 2^10 slots rather than 2^16: tests that rebuild it on every
/// update run their updates faster (so more of them race the pickers),
/// and no contract they check depends on the table's size.
#[allow(dead_code)]
pub(crate) fn small_tables<B: loadbalance::Assemble>() -> B::Options
where
    B::Options: 'static,
{
    let mut options = B::Options::default();
    if let Some(hash) =
        (&mut options as &mut dyn std::any::Any).downcast_mut::<loadbalance::HashOptions>()
    {
        *hash = hash.clone().table_bits(10);
    }
    options
}

/// Runs `$check::<B>(name)` for every balancer type `B` over backends of
/// type `V` (the including test's own).
macro_rules! for_every_form {
    ($check:ident) => {
        for_every_form!($check, latency_blind);
        $check::<lockfree::PeakEwma<V>>("lockfree peak EWMA");
        $check::<locked::PeakEwma<V>>("locked peak EWMA");
        $check::<lockfree::Probing<V>>("lockfree probing");
        $check::<locked::Probing<V>>("locked probing");
    };
    // A check that needs every backend to take picks whatever the latency
    // reported on it: peak EWMA rightly shuns a backend that reported
    // slower than the rest (`tests/choices.rs` checks it probes it again).
    ($check:ident, latency_blind) => {
        $check::<lockfree::RoundRobin<V>>("lockfree round-robin");
        $check::<locked::RoundRobin<V>>("locked round-robin");
        $check::<lockfree::WeightedRoundRobin<V>>("lockfree weighted round-robin");
        $check::<locked::WeightedRoundRobin<V>>("locked weighted round-robin");
        $check::<lockfree::LeastConn<V>>("lockfree least-conn");
        $check::<locked::LeastConn<V>>("locked least-conn");
        $check::<lockfree::IpHash<V>>("lockfree hash");
        $check::<locked::IpHash<V>>("locked hash");
        $check::<lockfree::Random<V>>("lockfree random");
        $check::<locked::Random<V>>("locked random");
        $check::<lockfree::RandomLeastConn<V>>("lockfree random least-conn");
        $check::<locked::RandomLeastConn<V>>("locked random least-conn");
        $check::<crate::user_algorithm::LockFreeRotating<V>>("user's lock-free rotating");
        $check::<crate::user_algorithm::LockedRotating<V>>("user's locked rotating");
    };
}
