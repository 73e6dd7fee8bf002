//! Flow control in front of a server: four clients send requests for two
//! simulated seconds against one `FlowControl` (deny list, 10 requests a
//! second with a burst of 5 per client, a ban after 10 refusals within a
//! second, 4 requests in flight per client), and the program prints what
//! each got and the HTTP status each refusal maps to.
//!
//! The clock is a `ManualClock`, stepped 1 ms at a time, so the run is
//! exact and instant. `cargo run --example flow_control`
//!
//! - polite: 8 requests a second, under its rate: all admitted;
//! - greedy: 100 a second: its rate, then banned for 5 s;
//! - rotating: 100 a second from 100 addresses of one IPv6 /64, which
//!   group into one client: the same as greedy;
//! - listed: a network on the deny list: 403 every time.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use loadbalance::ManualClock;
use loadbalance::limit::{BanRule, FlowControl, IpList, Quota, Reason};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let clock = Arc::new(ManualClock::new());
    let flow = FlowControl::builder()
        .deny(IpList::parse(["203.0.113.0/24"])?)
        .rate(Quota::per_second(10)?.burst(5)?)
        .ban(BanRule::new(
            10,
            Duration::from_secs(1),
            Duration::from_secs(5),
        )?)
        .in_flight_per_client(NonZeroU32::new(4).ok_or("non-zero")?)
        .clock(Arc::clone(&clock))
        .build()?;

    // (name, requests a second, addresses)
    let clients: [(&str, u64, Vec<IpAddr>); 4] = [
        ("polite", 8, vec!["192.0.2.10".parse()?]),
        ("greedy", 100, vec!["198.51.100.7".parse()?]),
        (
            "rotating",
            100,
            (1..=100u16)
                .map(|host| format!("2001:db8:7:7::{host:x}").parse())
                .collect::<Result<_, _>>()?,
        ),
        ("listed", 10, vec!["203.0.113.99".parse()?]),
    ];

    // Per client: sent, and answers by status.
    let mut tally: BTreeMap<&str, (u64, BTreeMap<u16, u64>)> = BTreeMap::new();
    let mut retry_after: BTreeMap<&str, Duration> = BTreeMap::new();
    for ms in 0..2_000u64 {
        for (name, per_second, addresses) in &clients {
            if ms % (1_000 / per_second) != 0 {
                continue;
            }
            let n = (ms * per_second / 1_000) as usize;
            let address = addresses[n % addresses.len()];
            let (sent, answers) = tally.entry(name).or_default();
            *sent += 1;
            let status = match flow.check(address) {
                // A real server forwards here and drops the admission when
                // the response is done; this one answers at once.
                Ok(admission) => {
                    drop(admission);
                    200
                }
                Err(refused) => {
                    if let Some(after) = refused.retry_after() {
                        retry_after.insert(name, after);
                    }
                    if refused.reason() == Reason::Banned && ms % 500 == 0 {
                        println!("{ms:>5} ms  {name:<9} {refused}");
                    }
                    refused.status()
                }
            };
            *answers.entry(status).or_default() += 1;
        }
        clock.advance(Duration::from_millis(1));
    }

    println!();
    println!("| client | sent | 200 | 429 | 403 | last Retry-After |");
    println!("|---|---:|---:|---:|---:|---|");
    for (name, (sent, answers)) in &tally {
        let count = |status| answers.get(&status).copied().unwrap_or(0);
        let after = retry_after
            .get(name)
            .map_or("-".to_string(), |after| format!("{after:?}"));
        println!(
            "| {name} | {sent} | {} | {} | {} | {after} |",
            count(200),
            count(429),
            count(403)
        );
    }
    let rate = flow.rate().map(|rate| rate.stats());
    println!();
    println!("rate limiter: {rate:?}");
    Ok(())
}
