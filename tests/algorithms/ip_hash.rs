//! Source-IP hash over many clients: shares follow weights, and taking a
//! backend away moves only its own clients.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use loadbalance::{Balancer, Context, HashOptions, locked, lockfree};

const CLIENTS: u32 = 100_000;

/// 100,000 distinct addresses, IPv4 and IPv6 mixed, spread over the space.
fn clients() -> impl Iterator<Item = IpAddr> {
    (0..CLIENTS).map(|i| {
        let spread = i.wrapping_mul(2_654_435_761);
        if i % 4 == 0 {
            IpAddr::V6(Ipv6Addr::new(
                0x2001,
                0xdb8,
                0,
                0,
                0,
                0,
                (spread >> 16) as u16,
                spread as u16,
            ))
        } else {
            IpAddr::V4(Ipv4Addr::from(spread))
        }
    })
}

fn shares(lb: &dyn Balancer<&'static str>) -> Vec<usize> {
    let mut counts = vec![0; lb.len()];
    for addr in clients() {
        counts[lb.pick(&Context::from_addr(addr)).expect("pick").index()] += 1;
    }
    counts
}

fn assert_within_5_percent(counts: &[usize], weights: &[u32]) {
    let total: u32 = weights.iter().sum();
    for (i, (&count, &weight)) in counts.iter().zip(weights).enumerate() {
        let expected = f64::from(CLIENTS) * f64::from(weight) / f64::from(total);
        let off = (count as f64 - expected).abs() / expected;
        assert!(
            off < 0.05,
            "backend {i}: {count} clients, expected {expected:.0} ({:.1}% off)",
            off * 100.0
        );
    }
}

const NAMES: [&str; 8] = ["a", "b", "c", "d", "e", "f", "g", "h"];

#[test]
fn equal_weights_share_evenly() {
    let lf = lockfree::IpHash::new(NAMES).expect("valid");
    let lk = locked::IpHash::new(NAMES).expect("valid");
    let counts = shares(&lf);
    assert_within_5_percent(&counts, &[1; 8]);
    assert_eq!(shares(&lk), counts);
}

#[test]
fn weighted_shares_follow_weights() {
    let weights = [1, 1, 2, 2, 3, 3, 4, 4];
    let options = HashOptions::default().table_bits(20);
    let lb =
        lockfree::IpHash::with_options(NAMES.into_iter().zip(weights), options).expect("valid");
    assert_within_5_percent(&shares(&lb), &weights);
}

#[test]
fn removing_one_of_eight_moves_only_its_clients_and_they_return() {
    let weights = [3, 1, 4, 1, 5, 9, 2, 6];
    let all = lockfree::IpHash::weighted(NAMES.into_iter().zip(weights)).expect("valid");
    let removed = 5; // the heaviest: the most clients to move
    let rest = lockfree::IpHash::weighted(
        NAMES
            .into_iter()
            .zip(weights)
            .enumerate()
            .filter(|&(i, _)| i != removed)
            .map(|(_, b)| b),
    )
    .expect("valid");
    let back = lockfree::IpHash::weighted(NAMES.into_iter().zip(weights)).expect("valid");
    let (mut moved, mut kept) = (0, 0);
    for addr in clients() {
        let ctx = Context::from_addr(addr);
        let before = *all.pick(&ctx).expect("pick");
        let after = *rest.pick(&ctx).expect("pick");
        if before == NAMES[removed] {
            moved += 1;
        } else {
            assert_eq!(after, before, "{addr} moved though its backend stayed");
            kept += 1;
        }
        assert_eq!(
            *back.pick(&ctx).expect("pick"),
            before,
            "{addr} did not return"
        );
    }
    assert!(
        moved > 20_000 && kept > 60_000,
        "moved {moved}, kept {kept}"
    );
}

#[test]
fn backend_order_does_not_matter() {
    let forward = lockfree::IpHash::new(NAMES).expect("valid");
    let mut reversed_names = NAMES;
    reversed_names.reverse();
    let reversed = lockfree::IpHash::new(reversed_names).expect("valid");
    for addr in clients().take(10_000) {
        let ctx = Context::from_addr(addr);
        assert_eq!(
            *forward.pick(&ctx).expect("pick"),
            *reversed.pick(&ctx).expect("pick")
        );
    }
}
