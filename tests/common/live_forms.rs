//! Every balancer type a live balancer runs, for tests that cover them all.

/// Runs `$check::<B>(name)` for every balancer type `B` over backends of
/// type `V` (the including test's own).
macro_rules! for_every_form {
    ($check:ident) => {
        for_every_form!($check, latency_blind);
        $check::<lockfree::PeakEwma<V>>("lockfree peak EWMA");
        $check::<locked::PeakEwma<V>>("locked peak EWMA");
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
