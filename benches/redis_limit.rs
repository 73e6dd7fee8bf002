//! Shared rate limits against one local redis-server, started by this
//! program on a free loopback port: checks per second and p50/p99 latency
//! at 1, 16 and 256 concurrent tasks, for
//! - the seed's pair: `INCRBY` then `EXPIRE`, two round trips a check;
//! - a plain `EVAL` of the GCRA script per check (its source every time);
//! - exact mode (`EVALSHA`, one round trip, local denials);
//! - batched mode (leases of up to 64 requests spent locally);
//!
//! and the rate at which locally cached denials are answered; and a shared
//! concurrency permit's acquire and release beside the local limit's.
//!
//! `cargo bench --bench redis_limit --features redis` (about 30 s). Tasks
//! take turns over 64 hot keys (API keys, say: the traffic batched mode is
//! for) with a quota that never limits the throughput (10,000 a second,
//! burst 100, each); the denial row checks one key far over its quota.
#![allow(missing_docs)]

#[path = "../tests/redis_support/mod.rs"]
mod redis_support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use loadbalance::limit::redis::{Mode, RedisConcurrencyLimit, RedisLimiter};
use loadbalance::limit::{ConcurrencyLimit, Quota};
use redis_support::RedisServer;

const RUN: Duration = Duration::from_secs(2);
const KEYS: u64 = 64;

/// One way of checking a key.
#[derive(Clone)]
enum Approach {
    SeedPair(redis::aio::MultiplexedConnection),
    Eval(redis::aio::MultiplexedConnection),
    Limiter(RedisLimiter),
    /// Acquire and release: a shared concurrency permit.
    Permits(RedisConcurrencyLimit),
    /// Acquire and release: a local concurrency permit, for scale (with a
    /// yield to the runtime a pair, as a request's task would).
    Local(Arc<ConcurrencyLimit>),
}

impl Approach {
    async fn check(&self, key: u64) -> bool {
        match self {
            Self::SeedPair(connection) => {
                let mut connection = connection.clone();
                let name = format!("seed:{key}");
                let count: redis::RedisResult<i64> = redis::cmd("INCRBY")
                    .arg(&name)
                    .arg(1)
                    .query_async(&mut connection)
                    .await;
                let _: redis::RedisResult<i64> = redis::cmd("EXPIRE")
                    .arg(&name)
                    .arg(1)
                    .query_async(&mut connection)
                    .await;
                count.is_ok_and(|count| count <= 10_000)
            }
            Self::Eval(connection) => {
                let mut connection = connection.clone();
                let reply: redis::RedisResult<(i64, i64)> = redis::cmd("EVAL")
                    .arg(GCRA_SOURCE)
                    .arg(1)
                    .arg(format!("eval:{{{key}}}"))
                    .arg(100)
                    .arg(10_000)
                    .arg(1)
                    .arg(0)
                    .query_async(&mut connection)
                    .await;
                reply.is_ok_and(|(granted, _)| granted > 0)
            }
            Self::Limiter(limiter) => limiter.check(&key.to_string()).await.is_ok(),
            Self::Permits(limit) => limit.acquire(&key.to_string()).await.is_ok(),
            Self::Local(limit) => {
                let acquired = limit.try_acquire().is_ok();
                // A task that never waits would hold its worker for good.
                tokio::task::yield_now().await;
                acquired
            }
        }
    }
}

/// The limiter's script, for the plain-EVAL row (the same work, sent as
/// source each time).
const GCRA_SOURCE: &str = include_str!("../src/limit/redis/gcra.lua");

struct Figures {
    per_second: f64,
    p50: Duration,
    p99: Duration,
}

async fn run(approach: Approach, tasks: usize) -> Figures {
    let stop = Arc::new(AtomicBool::new(false));
    let counter = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let handles: Vec<_> = (0..tasks)
        .map(|task| {
            let (approach, stop, counter) =
                (approach.clone(), Arc::clone(&stop), Arc::clone(&counter));
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut key = task as u64;
                while !stop.load(Ordering::Relaxed) {
                    let begun = Instant::now();
                    std::hint::black_box(approach.check(key % KEYS).await);
                    latencies.push(begun.elapsed());
                    counter.fetch_add(1, Ordering::Relaxed);
                    key += tasks as u64;
                }
                latencies
            })
        })
        .collect();
    tokio::time::sleep(RUN).await;
    stop.store(true, Ordering::Relaxed);
    let mut latencies = Vec::new();
    for handle in handles {
        latencies.extend(handle.await.expect("no panic"));
    }
    let elapsed = start.elapsed();
    latencies.sort_unstable();
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize];
    Figures {
        per_second: counter.load(Ordering::Relaxed) as f64 / elapsed.as_secs_f64(),
        p50: at(0.5),
        p99: at(0.99),
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let Some(server) = RedisServer::start() else {
        return Ok(());
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let client = redis::Client::open(server.url())?;
        let quota = Quota::per_second(10_000)?.burst(100)?;
        let exact = RedisLimiter::builder(server.url(), quota).prefix("exact:").build().await?;
        let batched = RedisLimiter::builder(server.url(), quota)
            .prefix("batched:")
            .mode(Mode::Batched { most: 64, ttl: Duration::from_millis(100) })
            .build()
            .await?;
        let approaches = [
            ("seed INCRBY + EXPIRE", Approach::SeedPair(client.get_multiplexed_async_connection().await?)),
            ("plain EVAL", Approach::Eval(client.get_multiplexed_async_connection().await?)),
            ("exact (EVALSHA)", Approach::Limiter(exact.clone())),
            ("batched (leases of up to 64)", Approach::Limiter(batched)),
        ];
        println!("| approach | tasks | checks/s | p50 | p99 | ratio to the seed's pair |");
        println!("|---|---:|---:|---:|---:|---:|");
        for tasks in [1, 16, 256] {
            let mut seed = None;
            for (name, approach) in &approaches {
                let figures = run(approach.clone(), tasks).await;
                let base = *seed.get_or_insert(figures.per_second);
                println!(
                    "| {name} | {tasks} | {:.0} | {:.1} µs | {:.1} µs | {:.2} |",
                    figures.per_second,
                    figures.p50.as_secs_f64() * 1e6,
                    figures.p99.as_secs_f64() * 1e6,
                    figures.per_second / base
                );
            }
        }
        println!();
        println!("exact mode: {:?}", exact.stats());
        // Concurrency permits: acquire, then release on drop (a shared
        // permit's release goes out in the background, batched).
        let permits = RedisConcurrencyLimit::builder(server.url(), 1_000_000)
            .prefix("permits:")
            .build()
            .await?;
        let local = Arc::new(ConcurrencyLimit::new(std::num::NonZeroU32::new(1_000_000).ok_or("nonzero")?));
        let pairs = [
            ("local ConcurrencyLimit", Approach::Local(local)),
            ("shared (RedisConcurrencyLimit)", Approach::Permits(permits.clone())),
        ];
        println!();
        println!("| permit, acquire + release | tasks | pairs/s | p50 | p99 | ratio to the local limit |");
        println!("|---|---:|---:|---:|---:|---:|");
        for tasks in [1, 16, 256] {
            let mut base = None;
            for (name, approach) in &pairs {
                let figures = run(approach.clone(), tasks).await;
                let base = *base.get_or_insert(figures.per_second);
                println!(
                    "| {name} | {tasks} | {:.0} | {:.1} µs | {:.1} µs | {:.5} |",
                    figures.per_second,
                    figures.p50.as_secs_f64() * 1e6,
                    figures.p99.as_secs_f64() * 1e6,
                    figures.per_second / base
                );
            }
        }
        println!("shared permits: {:?}", permits.stats());
        // Local denials: one key far over a quota of 1 a minute.
        let tight = RedisLimiter::builder(server.url(), Quota::per_minute(1)?).prefix("deny:").build().await?;
        let _ = tight.check("one").await;
        let _ = tight.check("one").await;
        let n = 1_000_000u64;
        let start = Instant::now();
        for _ in 0..n {
            std::hint::black_box(tight.check("one").await.is_err());
        }
        let per_second = n as f64 / start.elapsed().as_secs_f64();
        println!();
        println!("locally answered denials, one task: {per_second:.0} a second (target: at least 10^6); {:?}", tight.stats());
        Ok::<(), Box<dyn std::error::Error>>(())
    })?;
    drop(server);
    Ok(())
}
