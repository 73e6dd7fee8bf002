//! Per-pick latency: pick plus guard drop, every algorithm in both forms,
//! single thread, beside a bare `AtomicUsize::fetch_add` baseline.
#![allow(missing_docs)]

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use loadbalance::{locked, lockfree, Balancer, Context};

const SIZES: [usize; 3] = [4, 64, 1024];

/// Weights in 1..=100 from a fixed seed (xorshift64), the same every run.
fn weights(n: usize) -> Vec<u32> {
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    (0..n)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % 100) as u32 + 1
        })
        .collect()
}

type Boxed = Box<dyn Balancer<usize>>;

/// Every balancer over `n` backends, named `algorithm/form`.
fn balancers(n: usize) -> Vec<(&'static str, Boxed)> {
    let plain = || 0..n;
    let weighted = || (0..n).zip(weights(n));
    let built: Vec<(&'static str, Result<Boxed, loadbalance::BuildError>)> = vec![
        (
            "round_robin/lockfree",
            lockfree::RoundRobin::new(plain()).map(|b| Box::new(b) as Boxed),
        ),
        (
            "round_robin/locked",
            locked::RoundRobin::new(plain()).map(|b| Box::new(b) as Boxed),
        ),
        (
            "weighted_round_robin/lockfree",
            lockfree::WeightedRoundRobin::new(weighted()).map(|b| Box::new(b) as Boxed),
        ),
        (
            "weighted_round_robin/locked",
            locked::WeightedRoundRobin::new(weighted()).map(|b| Box::new(b) as Boxed),
        ),
        (
            "least_conn/lockfree",
            lockfree::LeastConn::new(plain()).map(|b| Box::new(b) as Boxed),
        ),
        (
            "least_conn/locked",
            locked::LeastConn::new(plain()).map(|b| Box::new(b) as Boxed),
        ),
        (
            "weighted_least_conn/lockfree",
            lockfree::LeastConn::weighted(weighted()).map(|b| Box::new(b) as Boxed),
        ),
        (
            "weighted_least_conn/locked",
            locked::LeastConn::weighted(weighted()).map(|b| Box::new(b) as Boxed),
        ),
        (
            "ip_hash/lockfree",
            lockfree::IpHash::weighted(weighted()).map(|b| Box::new(b) as Boxed),
        ),
        (
            "ip_hash/locked",
            locked::IpHash::weighted(weighted()).map(|b| Box::new(b) as Boxed),
        ),
    ];
    built
        .into_iter()
        .map(|(name, lb)| (name, lb.expect("benchmark backends are valid")))
        .collect()
}

fn pick(c: &mut Criterion) {
    for n in SIZES {
        let mut group = c.benchmark_group(format!("pick/n={n}"));
        group.throughput(Throughput::Elements(1));
        let counter = AtomicUsize::new(0);
        group.bench_function("baseline/fetch_add", |b| {
            b.iter(|| black_box(counter.fetch_add(1, Ordering::Relaxed)))
        });
        for (name, lb) in balancers(n) {
            let id = BenchmarkId::from_parameter(name);
            if name.starts_with("ip_hash") {
                // A different client each pick, so hashing is not measured
                // on one hot table entry.
                let mut client = 0u32;
                group.bench_function(id, |b| {
                    b.iter(|| {
                        client = client.wrapping_add(0x9E37_79B9);
                        let ctx = Context::from_addr(IpAddr::V4(Ipv4Addr::from(client)));
                        black_box(lb.pick(&ctx).map(|guard| guard.index()))
                    })
                });
            } else {
                let ctx = Context::new();
                group.bench_function(id, |b| {
                    b.iter(|| black_box(lb.pick(&ctx).map(|guard| guard.index())))
                });
            }
        }
        group.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = pick
}
criterion_main!(benches);
