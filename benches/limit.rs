//! Flow control beside governor, in one process on one quota: a direct
//! check (one limiter, every check on it) and a keyed check (10^3 and 10^6
//! client addresses), on one thread and two.
//!
//! Quota: 100 a second, burst 20, per key. The direct limiter is checked
//! far past its rate, so both crates mostly answer "denied"; the keyed
//! ones see each address about as often as its rate allows.
#![allow(missing_docs)]

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use criterion::{
    BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main,
};
use loadbalance::limit::{
    BanRule, Capacity, ClientGrouping, ConcurrencyLimit, FlowControl, IpList, IpNet,
    KeyedRateLimiter, Quota, RateLimiter,
};

fn quota() -> Quota {
    Quota::per_second(100)
        .and_then(|q| q.burst(20))
        .expect("a valid quota")
}

fn governor_quota() -> governor::Quota {
    governor::Quota::per_second(NonZeroU32::new(100).expect("non-zero"))
        .allow_burst(NonZeroU32::new(20).expect("non-zero"))
}

/// Time for `iters` checks split over two threads: the inverse of their
/// combined throughput.
fn two_threads(iters: u64, work: impl Fn(u64, u64) + Sync) -> Duration {
    let start = Instant::now();
    std::thread::scope(|s| {
        s.spawn(|| work(1, iters / 2));
        work(2, iters - iters / 2);
    });
    start.elapsed()
}

/// The `i`-th of `keys` client addresses, scattered over the IPv4 space.
#[inline]
fn address(i: u64, keys: u64) -> IpAddr {
    let k = (i % keys) as u32;
    IpAddr::V4(Ipv4Addr::from(k.wrapping_mul(0x9E37_79B1)))
}

fn direct(c: &mut Criterion) {
    let mut group = c.benchmark_group("limit_direct");
    group.throughput(Throughput::Elements(1));
    let ours = RateLimiter::new(quota());
    let theirs = governor::RateLimiter::direct(governor_quota());
    group.bench_function(BenchmarkId::new("1thread", "loadbalance"), |b| {
        b.iter(|| black_box(ours.check().is_ok()))
    });
    group.bench_function(BenchmarkId::new("1thread", "governor"), |b| {
        b.iter(|| black_box(theirs.check().is_ok()))
    });
    group.sampling_mode(SamplingMode::Flat).sample_size(20);
    group.bench_function(BenchmarkId::new("2threads", "loadbalance"), |b| {
        b.iter_custom(|iters| {
            two_threads(iters, |_, k| {
                for _ in 0..k {
                    black_box(ours.check().is_ok());
                }
            })
        })
    });
    group.bench_function(BenchmarkId::new("2threads", "governor"), |b| {
        b.iter_custom(|iters| {
            two_threads(iters, |_, k| {
                for _ in 0..k {
                    black_box(theirs.check().is_ok());
                }
            })
        })
    });
    group.finish();
}

fn keyed(c: &mut Criterion) {
    let clients = ClientGrouping::default();
    for keys in [1_000u64, 1_000_000] {
        let mut group = c.benchmark_group(format!("limit_keyed/keys={keys}"));
        group.throughput(Throughput::Elements(1));
        let ours = KeyedRateLimiter::new(quota(), Capacity::Bytes(16 << 20)).expect("16 MiB");
        let theirs = governor::RateLimiter::keyed(governor_quota());
        // Every key once first, so both hold all of them.
        for i in 0..keys {
            black_box(ours.check(&clients.key(address(i, keys))).is_ok());
            black_box(theirs.check_key(&address(i, keys)).is_ok());
        }
        let mut i = 0u64;
        group.bench_function(BenchmarkId::new("1thread", "loadbalance"), |b| {
            b.iter(|| {
                i += 1;
                black_box(ours.check(&clients.key(address(i, keys))).is_ok())
            })
        });
        group.bench_function(BenchmarkId::new("1thread", "governor"), |b| {
            b.iter(|| {
                i += 1;
                black_box(theirs.check_key(&address(i, keys)).is_ok())
            })
        });
        group.sampling_mode(SamplingMode::Flat).sample_size(20);
        group.bench_function(BenchmarkId::new("2threads", "loadbalance"), |b| {
            b.iter_custom(|iters| {
                two_threads(iters, |thread, k| {
                    for i in 0..k {
                        let ip = clients.key(address(i * 2 + thread, keys));
                        black_box(ours.check(&ip).is_ok());
                    }
                })
            })
        });
        group.bench_function(BenchmarkId::new("2threads", "governor"), |b| {
            b.iter_custom(|iters| {
                two_threads(iters, |thread, k| {
                    for i in 0..k {
                        black_box(theirs.check_key(&address(i * 2 + thread, keys)).is_ok());
                    }
                })
            })
        });
        group.finish();
    }
}

/// The whole decision per request (`FlowControl::check`) beside
/// governor's keyed check: with the rate alone, and with every part (a
/// 100-network deny list, a 100-network allow list that no client is on,
/// bans, the rate, in-flight limits per client and per server).
fn decision(c: &mut Criterion) {
    let keys = 1_000u64;
    let mut group = c.benchmark_group(format!("limit_decision/keys={keys}"));
    group.throughput(Throughput::Elements(1));
    let rate_only = FlowControl::builder().rate(quota()).build().expect("valid");
    let networks =
        |first: u8| {
            IpList::new((0..100u8).map(|i| {
                IpNet::new(IpAddr::V4(Ipv4Addr::new(first, i, 0, 0)), 16).expect("a network")
            }))
        };
    let everything = FlowControl::builder()
        .deny(networks(10))
        .allow(networks(172))
        .ban(BanRule::new(100, Duration::from_secs(10), Duration::from_secs(60)).expect("valid"))
        .rate(quota())
        .in_flight_per_client(NonZeroU32::new(100).expect("non-zero"))
        .in_flight(ConcurrencyLimit::new(
            NonZeroU32::new(10_000).expect("non-zero"),
        ))
        .build()
        .expect("valid");
    let theirs = governor::RateLimiter::keyed(governor_quota());
    let mut i = 0u64;
    group.bench_function("governor_keyed", |b| {
        b.iter(|| {
            i += 1;
            black_box(theirs.check_key(&address(i, keys)).is_ok())
        })
    });
    group.bench_function("flow_control_rate", |b| {
        b.iter(|| {
            i += 1;
            black_box(rate_only.check(address(i, keys)).is_ok())
        })
    });
    group.bench_function("flow_control_everything", |b| {
        b.iter(|| {
            i += 1;
            black_box(everything.check(address(i, keys)).is_ok())
        })
    });
    group.finish();
}

criterion_group!(benches, direct, keyed, decision);
criterion_main!(benches);
