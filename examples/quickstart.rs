//! Builds every algorithm over three upstream addresses, picks a few
//! thousand times, and prints the share each backend got.
//!
//! Run with `cargo run --example quickstart`.

use std::collections::VecDeque;
use std::error::Error;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use loadbalance::{Balancer, Context, Guard, RandomOptions, lockfree};

const PICKS: usize = 6_000;

fn upstreams() -> [SocketAddr; 3] {
    ["10.0.0.1:8080", "10.0.0.2:8080", "10.0.0.3:8080"].map(|s| s.parse().expect("valid literal"))
}

/// Weights 5, 1, 1: nginx's documentation example.
fn weighted() -> [(SocketAddr, u32); 3] {
    let [a, b, c] = upstreams();
    [(a, 5), (b, 1), (c, 1)]
}

/// Picks `PICKS` times; each connection is held for a while, and connections
/// to the first upstream (a slow one) are held three times as long.
fn run(
    name: &str,
    lb: &dyn Balancer<SocketAddr>,
    client_addresses: bool,
) -> Result<(), Box<dyn Error>> {
    let mut counts = vec![0usize; lb.len()];
    let mut open: VecDeque<(Guard<SocketAddr>, usize)> = VecDeque::new();
    let mut first_picks = Vec::new();
    for step in 0..PICKS {
        let client = IpAddr::V4(Ipv4Addr::from(0xC633_6400 + (step % 3000) as u32));
        let ctx = if client_addresses {
            Context::from_addr(client)
        } else {
            Context::new()
        };
        let upstream = lb.pick(&ctx)?;
        counts[upstream.index()] += 1;
        if first_picks.len() < 14 {
            first_picks.push(upstream.index());
        }
        let hold = if upstream.index() == 0 { 30 } else { 10 };
        open.push_back((upstream, step + hold));
        open.retain(|(_, until)| *until > step); // finished connections drop their guards
    }
    drop(open);
    let shares: Vec<String> = lb
        .stats()
        .iter()
        .zip(&counts)
        .map(|(stats, &n)| {
            format!(
                "{}: {:5.1}%",
                stats.backend,
                100.0 * n as f64 / PICKS as f64
            )
        })
        .collect();
    println!("{name:<28} {}", shares.join("   "));
    println!("{:<28} first picks {first_picks:?}", "");
    Ok(())
}

fn main() -> Result<(), Box<dyn Error>> {
    println!(
        "{PICKS} picks over three upstreams; the first is slow (holds connections 3x longer).\n"
    );
    run(
        "round-robin",
        &lockfree::RoundRobin::new(upstreams())?,
        false,
    )?;
    run(
        "smooth weighted 5:1:1",
        &lockfree::WeightedRoundRobin::new(weighted())?,
        false,
    )?;
    run(
        "least-connections",
        &lockfree::LeastConn::new(upstreams())?,
        false,
    )?;
    run(
        "weighted least-conn 5:1:1",
        &lockfree::LeastConn::weighted(weighted())?,
        false,
    )?;
    run(
        "source-IP hash, 3000 clients",
        &lockfree::IpHash::new(upstreams())?,
        true,
    )?;
    run(
        "weighted random 5:1:1",
        &lockfree::Random::with_options(weighted(), RandomOptions::default().seed(1))?,
        false,
    )?;
    println!("\nLeast-connections sends less to the slow upstream; the others ignore load.");
    println!("The locked:: forms make the same picks; see `cargo bench` for their cost.");
    Ok(())
}
