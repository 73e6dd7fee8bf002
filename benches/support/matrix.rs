//! The benchmark matrix shared by `benches/pick.rs` and
//! `examples/memory.rs`: every balancer by name, and the fixed-seed weights.

use std::fmt::Display;
use std::hash::Hash;

use loadbalance::{Balancer, BuildError, HashOptions, locked, lockfree};

/// Weights in 1..=100 from a fixed seed (xorshift64), the same every run.
pub(crate) fn weights(n: usize) -> Vec<u32> {
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

pub(crate) type Boxed<T> = Box<dyn Balancer<T>>;

/// Builds one balancer from backends and their weights (unweighted
/// algorithms ignore the weights).
pub(crate) type Build<T> = fn(Vec<T>, Vec<u32>) -> Result<Boxed<T>, BuildError>;

/// Every balancer, named `algorithm/form`.
pub(crate) fn builders<T: Hash + Display + Send + Sync + 'static>() -> [(&'static str, Build<T>); 23]
{
    [
        ("round_robin/lockfree", |b, _| {
            Ok(Box::new(lockfree::RoundRobin::new(b)?))
        }),
        ("round_robin/locked", |b, _| {
            Ok(Box::new(locked::RoundRobin::new(b)?))
        }),
        ("weighted_round_robin/lockfree", |b, w| {
            Ok(Box::new(lockfree::WeightedRoundRobin::new(
                b.into_iter().zip(w),
            )?))
        }),
        ("weighted_round_robin/locked", |b, w| {
            Ok(Box::new(locked::WeightedRoundRobin::new(
                b.into_iter().zip(w),
            )?))
        }),
        ("least_conn/lockfree", |b, _| {
            Ok(Box::new(lockfree::LeastConn::new(b)?))
        }),
        ("least_conn/locked", |b, _| {
            Ok(Box::new(locked::LeastConn::new(b)?))
        }),
        ("weighted_least_conn/lockfree", |b, w| {
            Ok(Box::new(lockfree::LeastConn::weighted(
                b.into_iter().zip(w),
            )?))
        }),
        ("weighted_least_conn/locked", |b, w| {
            Ok(Box::new(locked::LeastConn::weighted(b.into_iter().zip(w))?))
        }),
        ("ip_hash/lockfree", |b, w| {
            Ok(Box::new(lockfree::IpHash::weighted(b.into_iter().zip(w))?))
        }),
        ("ip_hash/locked", |b, w| {
            Ok(Box::new(locked::IpHash::weighted(b.into_iter().zip(w))?))
        }),
        ("bounded_hash/lockfree", |b, w| {
            let options = HashOptions::default().bounded_load(125);
            Ok(Box::new(lockfree::IpHash::with_options(
                b.into_iter().zip(w),
                options,
            )?))
        }),
        ("bounded_hash/locked", |b, w| {
            let options = HashOptions::default().bounded_load(125);
            Ok(Box::new(locked::IpHash::with_options(
                b.into_iter().zip(w),
                options,
            )?))
        }),
        ("nginx_ip_hash/lockfree", |b, w| {
            Ok(Box::new(lockfree::NginxIpHash::weighted(
                b.into_iter().zip(w),
            )?))
        }),
        ("nginx_ip_hash/locked", |b, w| {
            Ok(Box::new(locked::NginxIpHash::weighted(
                b.into_iter().zip(w),
            )?))
        }),
        // Unit weights: 4,096 backends of weights up to 100 are past the
        // ring's limit of 65,536 units.
        ("nginx_hash_consistent/lockfree", |b, _| {
            Ok(Box::new(lockfree::NginxHash::new(b)?))
        }),
        ("weighted_random/lockfree", |b, w| {
            Ok(Box::new(lockfree::Random::weighted(b.into_iter().zip(w))?))
        }),
        ("weighted_random/locked", |b, w| {
            Ok(Box::new(locked::Random::weighted(b.into_iter().zip(w))?))
        }),
        ("random_least_conn/lockfree", |b, w| {
            Ok(Box::new(lockfree::RandomLeastConn::weighted(
                b.into_iter().zip(w),
            )?))
        }),
        ("random_least_conn/locked", |b, w| {
            Ok(Box::new(locked::RandomLeastConn::weighted(
                b.into_iter().zip(w),
            )?))
        }),
        ("peak_ewma/lockfree", |b, w| {
            Ok(Box::new(lockfree::PeakEwma::weighted(
                b.into_iter().zip(w),
            )?))
        }),
        ("peak_ewma/locked", |b, w| {
            Ok(Box::new(locked::PeakEwma::weighted(b.into_iter().zip(w))?))
        }),
        // No probe answered: its fallback's picks (`probing_answered` in
        // `pick.rs` has them answered).
        ("probing/lockfree", |b, w| {
            Ok(Box::new(lockfree::Probing::weighted(b.into_iter().zip(w))?))
        }),
        ("probing/locked", |b, w| {
            Ok(Box::new(locked::Probing::weighted(b.into_iter().zip(w))?))
        }),
    ]
}
