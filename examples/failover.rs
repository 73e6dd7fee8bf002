//! A backend fails, is ejected, and comes back: the traffic share per
//! backend over simulated time.
//!
//! Three upstreams of weight 30 share 1,000 requests a second by smooth
//! weighted round-robin. Upstream "b" fails every request from t = 10 s to
//! t = 40 s. Passive health (`max_fails` 3 in 10 s) lowers its effective
//! weight by 10 a failure and ejects it at the third; after each 10 s
//! cooldown one trial request goes to it; the first trial after it recovers
//! succeeds, and slow start ramps it back to its share over 20 s. A
//! `ManualClock` steps one millisecond a request, so the 80 simulated
//! seconds take milliseconds. The table shows each second's traffic share;
//! the lines between show b's state changes as they happen.
//!
//! Run with `cargo run --example failover`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use loadbalance::{
    Backend, BackendState, Balancer, Context, HealthPolicy, Live, ManualClock, Outcome, lockfree,
};

const REQUESTS_PER_SECOND: usize = 1_000;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let clock = Arc::new(ManualClock::new());
    let lb = Live::<lockfree::WeightedRoundRobin<&str>>::builder()
        .health(
            HealthPolicy::default()
                .max_fails(3)
                .fail_timeout(Duration::from_secs(10))
                .slow_start(Duration::from_secs(20)),
        )
        .clock(Arc::clone(&clock))
        .build([
            Backend::new("a").weight(30),
            Backend::new("b").weight(30),
            Backend::new("c").weight(30),
        ])?;
    let failing = 10..40;
    let mut b_state = BackendState::Up;

    println!("time    a      b      c      b's state       b's effective weight");
    for second in 0..80u64 {
        let mut served: BTreeMap<&str, usize> = BTreeMap::new();
        for _ in 0..REQUESTS_PER_SECOND {
            let upstream = lb.pick(&Context::new())?;
            let fails = *upstream == "b" && failing.contains(&second);
            upstream.report(if fails {
                Outcome::Failure {
                    latency: Duration::from_millis(30),
                }
            } else {
                Outcome::Success {
                    latency: Duration::from_millis(2),
                }
            });
            *served.entry(*upstream).or_default() += 1;
            drop(upstream);
            clock.advance(Duration::from_millis(1));
            let b = &lb.stats()[1];
            if b.state != b_state {
                b_state = b.state;
                let at = clock_seconds(second, &served);
                println!(
                    "  t = {at:.3} s: b is {} ({} failures so far)",
                    describe(b.state),
                    b.failures
                );
            }
        }
        if second % 4 == 0 || second == 10 || second == 40 {
            let b = &lb.stats()[1];
            let share = |name| {
                100.0 * served.get(name).copied().unwrap_or(0) as f64 / REQUESTS_PER_SECOND as f64
            };
            println!(
                "{second:>3} s  {:5.1}% {:5.1}% {:5.1}%  {:<15} {}",
                share("a"),
                share("b"),
                share("c"),
                describe(b.state),
                b.effective_weight
            );
        }
    }
    let b = &lb.stats()[1];
    println!(
        "b: {} picks, {} failures, state {}",
        b.picks,
        b.failures,
        describe(b.state)
    );
    Ok(())
}

/// The simulated time after the requests served so far this second.
fn clock_seconds(second: u64, served: &BTreeMap<&str, usize>) -> f64 {
    second as f64 + served.values().sum::<usize>() as f64 / REQUESTS_PER_SECOND as f64
}

fn describe(state: BackendState) -> &'static str {
    match state {
        BackendState::Up => "up",
        BackendState::Ejected => "ejected",
        BackendState::Trial => "awaiting trial",
        BackendState::SlowStart => "slow start",
        BackendState::Down => "down",
        BackendState::Draining => "draining",
        _ => "other",
    }
}
