//! Every balancer type a live balancer runs, for tests that cover them all.

/// Runs `$check::<B>(name)` for every balancer type `B` over backends of
/// type `V` (the including test's own).
macro_rules! for_every_form {
    ($check:ident) => {
        $check::<lockfree::RoundRobin<V>>("lockfree round-robin");
        $check::<locked::RoundRobin<V>>("locked round-robin");
        $check::<lockfree::WeightedRoundRobin<V>>("lockfree weighted round-robin");
        $check::<locked::WeightedRoundRobin<V>>("locked weighted round-robin");
        $check::<lockfree::LeastConn<V>>("lockfree least-conn");
        $check::<locked::LeastConn<V>>("locked least-conn");
        $check::<lockfree::IpHash<V>>("lockfree hash");
        $check::<locked::IpHash<V>>("locked hash");
    };
}
