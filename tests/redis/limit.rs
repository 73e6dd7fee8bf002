//! Shared rate limits against real Redis processes started by the tests
//! (tests/redis_support): exactness across four instances, batched
//! leases within their bound, local denials, a frozen and a killed server
//! answered by policy within the deadline, a three-master cluster, bad
//! configuration, and no key ever left without a TTL.
#![cfg(feature = "redis")]

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, RwLock};
use std::time::{Duration, Instant};

use crate::redis_support::{RedisCluster, RedisServer, redis_cli};
use loadbalance::limit::Quota;
use loadbalance::limit::redis::{Mode, OnFailure, RedisLimitError, RedisLimiter, SharedDenied};

/// A test that times what it checks (a deadline, a TTL, a delivery within
/// 100 ms) runs alone (`write`): the others load both cores. Tests that
/// only wait for an outcome (`read`) run beside each other.
pub(crate) static SERIAL: RwLock<()> = RwLock::new(());

/// One three-master cluster for every test of this binary that needs one
/// (forming one takes seconds), each test under a prefix of its own;
/// never dropped, so its watchdog stops it when the tests end.
pub(crate) fn cluster() -> Option<&'static RedisCluster> {
    static CLUSTER: OnceLock<Option<RedisCluster>> = OnceLock::new();
    CLUSTER.get_or_init(RedisCluster::start).as_ref()
}

pub(crate) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime")
}

/// Redis's clock, in microseconds.
fn redis_time(port: u16) -> u64 {
    let out = redis_cli(port, &["TIME"]);
    let mut lines = out
        .lines()
        .map(|line| line.trim().parse::<u64>().expect("a number"));
    let (seconds, micros) = (
        lines.next().expect("seconds"),
        lines.next().expect("micros"),
    );
    seconds * 1_000_000 + micros
}

/// Every key under `prefix` on the node at `port` has a TTL; returns how
/// many there were.
pub(crate) fn every_key_expires(port: u16, prefix: &str) -> usize {
    let pattern = format!("{prefix}*");
    let keys = redis_cli(port, &["--scan", "--pattern", &pattern]);
    let keys: Vec<&str> = keys
        .lines()
        .map(str::trim)
        .filter(|key| !key.is_empty())
        .collect();
    for key in &keys {
        let ttl: i64 = redis_cli(port, &["PTTL", key])
            .trim()
            .parse()
            .expect("a number");
        assert_ne!(ttl, -1, "{key} has no expiry");
    }
    keys.len()
}

/// `instances` limiters (each its own connection) × `tasks` tasks check one
/// key until `run` has passed; returns (admitted, Redis µs elapsed from
/// before the first check to after the last) and the limiters.
async fn hammer(limiters: &[RedisLimiter], tasks: usize, run: Duration, port: u16) -> (u64, u64) {
    let admitted = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let before = redis_time(port);
    let mut handles = Vec::new();
    for limiter in limiters {
        for _ in 0..tasks {
            let (limiter, admitted, stop) =
                (limiter.clone(), Arc::clone(&admitted), Arc::clone(&stop));
            handles.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    if limiter.check("shared").await.is_ok() {
                        admitted.fetch_add(1, Ordering::Relaxed);
                    }
                    // Local answers never wait: let the other tasks run.
                    tokio::task::yield_now().await;
                }
            }));
        }
    }
    tokio::time::sleep(run).await;
    stop.store(true, Ordering::Relaxed);
    for handle in handles {
        handle.await.expect("no panic");
    }
    let after = redis_time(port);
    (admitted.load(Ordering::Relaxed), after - before)
}

#[test]
fn four_instances_share_one_exact_limit() {
    let _one = SERIAL.write().unwrap_or_else(PoisonError::into_inner);
    let Some(server) = RedisServer::start() else {
        return;
    };
    runtime().block_on(async {
        // 2,000 a second (500 µs apart), burst 100.
        let quota = Quota::per_second(2_000)
            .and_then(|q| q.burst(100))
            .expect("valid");
        let mut limiters = Vec::new();
        for _ in 0..4 {
            limiters.push(
                RedisLimiter::builder(server.url(), quota)
                    .prefix("exact:")
                    .build()
                    .await
                    .expect("builds"),
            );
        }
        let (admitted, elapsed_us) =
            hammer(&limiters, 64, Duration::from_secs(1), server.port()).await;
        let most = 100 + elapsed_us / 500;
        // Saturated: the schedule starts within a few ms of `before`.
        let least = 100 + elapsed_us.saturating_sub(50_000) / 500;
        assert!(
            admitted <= most,
            "{admitted} admitted, at most {most} ({elapsed_us} µs)"
        );
        assert!(
            admitted >= least,
            "{admitted} admitted, at least {least} ({elapsed_us} µs)"
        );
        let stats: Vec<_> = limiters.iter().map(RedisLimiter::stats).collect();
        assert!(
            stats.iter().all(|s| s.errors == 0 && s.timeouts == 0),
            "{stats:?}"
        );
        eprintln!(
            "exact: {admitted} admitted in {elapsed_us} µs (bounds {least}..={most}); {:?}",
            stats[0]
        );
    });
    // The key expires once refilled, 50 ms after the last check.
    assert!(every_key_expires(server.port(), "exact:") <= 1);
}

#[test]
fn batched_leases_stay_within_their_bound() {
    let _one = SERIAL.write().unwrap_or_else(PoisonError::into_inner);
    let Some(server) = RedisServer::start() else {
        return;
    };
    runtime().block_on(async {
        let quota = Quota::per_second(2_000)
            .and_then(|q| q.burst(100))
            .expect("valid");
        let mode = Mode::Batched {
            most: 64,
            ttl: Duration::from_millis(100),
        };
        let mut limiters = Vec::new();
        for _ in 0..4 {
            limiters.push(
                RedisLimiter::builder(server.url(), quota)
                    .prefix("batched:")
                    .mode(mode)
                    .build()
                    .await
                    .expect("builds"),
            );
        }
        // Saturated: the documented bound, the quota plus the leases
        // outstanding.
        let (admitted, elapsed_us) =
            hammer(&limiters, 64, Duration::from_secs(1), server.port()).await;
        let most = 100 + elapsed_us / 500 + 4 * 64;
        assert!(admitted <= most, "{admitted} admitted, at most {most}");
        assert!(
            admitted >= (100 + elapsed_us / 500) / 2,
            "{admitted} admitted in {elapsed_us} µs"
        );
        eprintln!("batched, saturated: {admitted} admitted in {elapsed_us} µs (at most {most})");
        // Under the quota: leases grow and most checks make no round trip.
        // A burst no machine spends in half a second (10^9 checks), so
        // every check is under the quota however fast this machine is.
        let roomy = Quota::per_second(1_000_000)
            .and_then(|q| q.burst(1_000_000_000))
            .expect("valid");
        let mut limiters = Vec::new();
        for _ in 0..4 {
            limiters.push(
                RedisLimiter::builder(server.url(), roomy)
                    .prefix("leased:")
                    .mode(mode)
                    .build()
                    .await
                    .expect("builds"),
            );
        }
        let (admitted, _) = hammer(&limiters, 16, Duration::from_millis(500), server.port()).await;
        let checks: u64 = limiters.iter().map(|l| l.stats().checks).sum();
        let trips: u64 = limiters.iter().map(|l| l.stats().round_trips).sum();
        let hits: u64 = limiters.iter().map(|l| l.stats().lease_hits).sum();
        assert_eq!(admitted, checks, "all under the quota");
        assert!(
            trips * 4 < checks,
            "{trips} round trips for {checks} checks, {hits} from leases"
        );
        eprintln!(
            "batched, under the quota: {trips} round trips for {checks} checks, {hits} from leases"
        );
    });
    assert!(every_key_expires(server.port(), "batched:") <= 1);
    assert!(every_key_expires(server.port(), "leased:") <= 1);
}

#[test]
fn a_denied_key_is_answered_locally_until_its_retry_after() {
    let _one = SERIAL.write().unwrap_or_else(PoisonError::into_inner);
    let Some(server) = RedisServer::start() else {
        return;
    };
    runtime().block_on(async {
        let limiter = RedisLimiter::builder(server.url(), Quota::per_minute(1).expect("valid"))
            .prefix("local:")
            .build()
            .await
            .expect("builds");
        assert_eq!(limiter.check("k").await.map(|a| a.remaining), Ok(0));
        let Err(SharedDenied::Limited(denied)) = limiter.check("k").await else {
            panic!("the second of one a minute passed");
        };
        assert!(
            denied.retry_after > Duration::from_secs(59)
                && denied.retry_after <= Duration::from_secs(60)
        );
        for _ in 0..100 {
            assert!(matches!(
                limiter.check("k").await,
                Err(SharedDenied::Limited(_))
            ));
        }
        let stats = limiter.stats();
        assert_eq!(
            (stats.checks, stats.round_trips, stats.local_denials),
            (102, 2, 100)
        );
        // Another key is its own.
        assert!(limiter.check("other").await.is_ok());
        assert_eq!(limiter.redis_key("k"), "local:{k}");
    });
    assert_eq!(every_key_expires(server.port(), "local:"), 2);
}

/// Checks against a frozen server (SIGSTOP) all answer by policy within
/// the deadline + 10 ms; after SIGCONT the limit is exact again within a
/// second.
#[test]
fn a_frozen_server_costs_each_check_at_most_its_deadline() {
    let _one = SERIAL.write().unwrap_or_else(PoisonError::into_inner);
    let Some(server) = RedisServer::start() else {
        return;
    };
    runtime().block_on(async {
        let deadline = Duration::from_millis(50);
        let quota = Quota::per_second(10)
            .and_then(|q| q.burst(5))
            .expect("valid");
        let limiter = RedisLimiter::builder(server.url(), quota)
            .prefix("frozen:")
            .deadline(deadline)
            .on_failure(OnFailure::Closed)
            .build()
            .await
            .expect("builds");
        assert!(limiter.check("warm").await.is_ok());
        server.pause();
        let slowest = Arc::new(Mutex::new(Duration::ZERO));
        let refused = Arc::new(AtomicU64::new(0));
        let handles: Vec<_> = (0..16)
            .map(|task| {
                let (limiter, slowest, refused) =
                    (limiter.clone(), Arc::clone(&slowest), Arc::clone(&refused));
                tokio::spawn(async move {
                    for round in 0..5 {
                        let begun = Instant::now();
                        let answer = limiter.check(&format!("key-{task}-{round}")).await;
                        let took = begun.elapsed();
                        let mut slowest = slowest.lock().unwrap_or_else(PoisonError::into_inner);
                        *slowest = (*slowest).max(took);
                        if answer == Err(SharedDenied::Unavailable) {
                            refused.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                })
            })
            .collect();
        for handle in handles {
            handle.await.expect("no panic");
        }
        let slowest = *slowest.lock().unwrap_or_else(PoisonError::into_inner);
        assert!(
            slowest <= deadline + Duration::from_millis(10),
            "a check took {slowest:?}"
        );
        assert_eq!(
            refused.load(Ordering::Relaxed),
            80,
            "every check refused by policy"
        );
        let stats = limiter.stats();
        assert_eq!(
            (stats.by_policy, stats.timeouts + stats.errors),
            (80, 80),
            "{stats:?}"
        );
        server.resume();
        // Exact again within a second: a fresh key gets its burst of 5, no
        // more, from Redis.
        let resumed = Instant::now();
        loop {
            assert!(
                resumed.elapsed() < Duration::from_secs(1),
                "not back within a second: {:?}",
                limiter.stats()
            );
            if limiter.check("probe").await.is_ok() {
                break;
            }
        }
        for n in 0..5 {
            assert!(
                limiter.check("fresh").await.is_ok(),
                "request {n} of the burst"
            );
        }
        assert!(matches!(
            limiter.check("fresh").await,
            Err(SharedDenied::Limited(_))
        ));
        eprintln!(
            "frozen: slowest check {slowest:?}; back in {:?}; {:?}",
            resumed.elapsed(),
            limiter.stats()
        );
    });
    every_key_expires(server.port(), "frozen:");
}

/// SIGKILL and a restart on the same port under load: checks answer by
/// policy meanwhile, recover after, and every task finishes.
#[test]
fn a_killed_server_is_survived_and_reconnected() {
    let _one = SERIAL.write().unwrap_or_else(PoisonError::into_inner);
    let Some(server) = RedisServer::start() else {
        return;
    };
    runtime().block_on(async {
        let deadline = Duration::from_millis(50);
        let quota = Quota::per_second(100_000)
            .and_then(|q| q.burst(100))
            .expect("valid");
        let limiter = RedisLimiter::builder(server.url(), quota)
            .prefix("killed:")
            .deadline(deadline)
            .build()
            .await
            .expect("builds");
        let stop = Arc::new(AtomicBool::new(false));
        let slowest = Arc::new(Mutex::new(Duration::ZERO));
        let handles: Vec<_> = (0..16)
            .map(|task| {
                let (limiter, stop, slowest) =
                    (limiter.clone(), Arc::clone(&stop), Arc::clone(&slowest));
                tokio::spawn(async move {
                    let mut round = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        let begun = Instant::now();
                        // Fail open: every answer is a pass.
                        assert!(
                            limiter
                                .check(&format!("k{task}-{}", round % 50))
                                .await
                                .is_ok()
                        );
                        let took = begun.elapsed();
                        {
                            let mut slowest =
                                slowest.lock().unwrap_or_else(PoisonError::into_inner);
                            *slowest = (*slowest).max(took);
                        }
                        round += 1;
                        tokio::task::yield_now().await;
                    }
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(200)).await;
        server.kill();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let during = limiter.stats();
        server.restart();
        // Recovered: round trips succeed again within a few seconds.
        let restarted = Instant::now();
        loop {
            let before = limiter.stats();
            tokio::time::sleep(Duration::from_millis(100)).await;
            let after = limiter.stats();
            let failed = (after.errors + after.timeouts) - (before.errors + before.timeouts);
            if after.round_trips > before.round_trips + 10 && failed == 0 {
                break;
            }
            assert!(
                restarted.elapsed() < Duration::from_secs(5),
                "no recovery: {after:?}"
            );
        }
        stop.store(true, Ordering::Relaxed);
        let stopping = Instant::now();
        for handle in handles {
            handle.await.expect("no panic");
        }
        assert!(
            stopping.elapsed() < Duration::from_secs(1),
            "a task was stuck"
        );
        let slowest = *slowest.lock().unwrap_or_else(PoisonError::into_inner);
        assert!(
            slowest <= deadline + Duration::from_millis(10),
            "a check took {slowest:?}"
        );
        assert!(during.by_policy > 0, "{during:?}");
        eprintln!(
            "killed: slowest check {slowest:?}; recovered in {:?}; {:?}",
            restarted.elapsed(),
            limiter.stats()
        );
    });
    every_key_expires(server.port(), "killed:");
}

/// Two instances on a three-master cluster share a limit, and keys spread
/// over the masters, each with its TTL.
#[test]
fn a_cluster_shares_limits_and_spreads_keys() {
    // The cluster forms (seconds of waiting) before the test takes its
    // turn: only the checks load the cores.
    let Some(cluster) = cluster() else {
        return;
    };
    let _one = SERIAL.write().unwrap_or_else(PoisonError::into_inner);
    let port = cluster.ports()[0];
    runtime().block_on(async {
        let quota = Quota::per_second(2_000)
            .and_then(|q| q.burst(100))
            .expect("valid");
        let mut limiters = Vec::new();
        for _ in 0..2 {
            limiters.push(
                RedisLimiter::cluster_builder(cluster.urls(), quota)
                    .prefix("cluster:")
                    .build()
                    .await
                    .expect("builds"),
            );
        }
        let (admitted, elapsed_us) = hammer(&limiters, 32, Duration::from_millis(500), port).await;
        let most = 100 + elapsed_us / 500;
        assert!(admitted <= most, "{admitted} admitted, at most {most}");
        assert!(
            admitted >= 100 + elapsed_us.saturating_sub(50_000) / 500,
            "{admitted} admitted in {elapsed_us} µs"
        );
        // 300 clients of a slow quota (their keys live a minute): spread
        // over the three masters.
        let slow =
            RedisLimiter::cluster_builder(cluster.urls(), Quota::per_minute(1).expect("valid"))
                .prefix("spread:")
                .build()
                .await
                .expect("builds");
        for key in 0..300 {
            assert!(slow.check(&format!("client-{key}")).await.is_ok());
        }
        assert_eq!(slow.stats().round_trips, 300);
    });
    let per_node = cluster.keys_per_node("spread:*");
    assert_eq!(per_node.iter().sum::<usize>(), 300, "{per_node:?}");
    assert!(per_node.iter().all(|&n| n > 30), "{per_node:?}");
    for port in cluster.ports() {
        every_key_expires(port, "cluster:");
        every_key_expires(port, "spread:");
    }
}

#[test]
fn bad_configuration_is_a_typed_error() {
    let _one = SERIAL.write().unwrap_or_else(PoisonError::into_inner);
    runtime().block_on(async {
        let quota = Quota::per_second(10).expect("valid");
        let zero = RedisLimiter::builder("redis://127.0.0.1:6379/", quota)
            .deadline(Duration::ZERO)
            .build()
            .await;
        assert!(matches!(zero, Err(RedisLimitError::ZeroDeadline)));
        let lease = RedisLimiter::builder("redis://127.0.0.1:6379/", quota)
            .mode(Mode::Batched {
                most: 0,
                ttl: Duration::from_secs(1),
            })
            .build()
            .await;
        assert!(matches!(lease, Err(RedisLimitError::ZeroLease)));
        let huge = RedisLimiter::builder("redis://127.0.0.1:6379/", quota)
            .mode(Mode::Batched {
                most: u32::MAX,
                ttl: Duration::from_secs(1),
            })
            .build()
            .await;
        assert!(matches!(
            huge,
            Err(RedisLimitError::LeaseTooLarge { most: u32::MAX })
        ));
        let braces = RedisLimiter::builder("redis://127.0.0.1:6379/", quota)
            .prefix("api{v1}:")
            .build()
            .await;
        assert!(matches!(braces, Err(RedisLimitError::BracesInPrefix)));
        let url = RedisLimiter::builder("http://example.com/", quota)
            .build()
            .await;
        assert!(
            matches!(url, Err(RedisLimitError::InvalidUrl(_))),
            "{url:?}"
        );
        // A cluster must answer at build.
        let begun = Instant::now();
        let cluster = RedisLimiter::cluster_builder(["redis://127.0.0.1:1/"], quota)
            .build()
            .await;
        assert!(
            matches!(cluster, Err(RedisLimitError::Connect(_))),
            "{cluster:?}"
        );
        assert!(begun.elapsed() < Duration::from_secs(5));
        // A single server is reached at the first check: unreachable, the
        // policy answers within the deadline.
        for (policy, passes) in [(OnFailure::Closed, false), (OnFailure::Open, true)] {
            let limiter = RedisLimiter::builder("redis://127.0.0.1:1/", quota)
                .on_failure(policy)
                .build()
                .await
                .expect("builds without connecting");
            for _ in 0..3 {
                let begun = Instant::now();
                let answer = limiter.check("k").await;
                assert!(
                    begun.elapsed() <= Duration::from_millis(60),
                    "{:?}",
                    begun.elapsed()
                );
                assert_eq!(answer.is_ok(), passes, "{answer:?}");
            }
            let stats = limiter.stats();
            assert_eq!(stats.by_policy, 3, "{stats:?}");
            assert_eq!(stats.errors + stats.timeouts, 3, "{stats:?}");
        }
    });
}

/// The local flow control in front of a shared limit: deny-listed and
/// banned clients cost no round trip, a shared refusal is a strike towards
/// a local ban, and a Redis that fails closed answers 503.
#[test]
fn local_flow_control_sits_in_front_of_the_shared_limit() {
    use loadbalance::limit::{BanRule, FlowControl, IpList, Reason};
    let _one = SERIAL.read().unwrap_or_else(PoisonError::into_inner);
    let Some(server) = RedisServer::start() else {
        return;
    };
    runtime().block_on(async {
        let flow = FlowControl::builder()
            .deny(IpList::parse(["203.0.113.0/24"]).expect("valid"))
            .ban(BanRule::new(2, Duration::from_secs(60), Duration::from_secs(300)).expect("valid"))
            .build()
            .expect("valid");
        let shared = RedisLimiter::builder(
            server.url(),
            Quota::per_minute(2)
                .and_then(|q| q.burst(2))
                .expect("valid"),
        )
        .prefix("layered:")
        .build()
        .await
        .expect("builds");
        let client = "2001:db8:5::1".parse().expect("an address");
        assert_eq!(
            flow.check_shared(client, &shared)
                .await
                .map(|a| a.remaining()),
            Ok(Some(1))
        );
        assert!(flow.check_shared(client, &shared).await.is_ok());
        // Over the shared rate: strike 1 (Redis answered), then strike 2
        // (answered locally) bans.
        let refused = flow
            .check_shared(client, &shared)
            .await
            .expect_err("over the shared rate");
        assert_eq!(
            (refused.reason(), refused.status()),
            (Reason::RateLimited, 429)
        );
        assert!(
            refused
                .retry_after()
                .is_some_and(|after| after > Duration::from_secs(29))
        );
        let banned = flow
            .check_shared(client, &shared)
            .await
            .expect_err("banned");
        assert_eq!((banned.reason(), banned.status()), (Reason::Banned, 403));
        let before = shared.stats();
        for _ in 0..10 {
            assert_eq!(
                flow.check_shared(client, &shared)
                    .await
                    .expect_err("banned")
                    .reason(),
                Reason::Banned
            );
            let listed = flow
                .check_shared("203.0.113.5".parse().expect("an address"), &shared)
                .await;
            assert_eq!(
                listed.expect_err("deny-listed").reason(),
                Reason::DenyListed
            );
        }
        assert_eq!(
            shared.stats().checks,
            before.checks,
            "no shared check for banned or listed clients"
        );
        assert_eq!(before.round_trips, 3);
        // The client's /64 is its key in Redis.
        assert_eq!(
            shared.redis_key("2001:db8:5::/64"),
            "layered:{2001:db8:5::/64}"
        );
        // A shared limit that fails closed, Redis gone: 503.
        let gone =
            RedisLimiter::builder("redis://127.0.0.1:1/", Quota::per_minute(2).expect("valid"))
                .on_failure(OnFailure::Closed)
                .build()
                .await
                .expect("builds");
        let refused = flow
            .check_shared("192.0.2.9".parse().expect("an address"), &gone)
            .await
            .expect_err("fails closed");
        assert_eq!(
            (refused.reason(), refused.status()),
            (Reason::Unavailable, 503)
        );
    });
    assert_eq!(every_key_expires(server.port(), "layered:"), 1);
}

// Found by review: each failed before its fix.

fn five_a_minute() -> Quota {
    Quota::per_minute(1)
        .and_then(|q| q.burst(5))
        .expect("valid")
}

/// Takes the batcher's four in-flight slots with one check each against a
/// paused server; returns their tasks.
async fn fill_in_flight(limiter: &RedisLimiter) -> Vec<tokio::task::JoinHandle<()>> {
    let mut fillers = Vec::new();
    for i in 0..4 {
        let limiter = limiter.clone();
        fillers.push(tokio::spawn(async move {
            let _ = limiter.check(&format!("filler-{i}")).await;
        }));
        // Each its own batch.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    fillers
}

/// A check its caller gave up on while it waited in the batcher's queue
/// (never sent) must not spend a request in Redis.
#[test]
fn a_check_dropped_while_queued_spends_nothing() {
    let _one = SERIAL.read().unwrap_or_else(PoisonError::into_inner);
    let Some(server) = RedisServer::start() else {
        return;
    };
    runtime().block_on(async {
        let limiter = RedisLimiter::builder(server.url(), five_a_minute())
            .prefix("queued:")
            .deadline(Duration::from_millis(500))
            .on_failure(OnFailure::Closed)
            .build()
            .await
            .expect("builds");
        assert!(limiter.check("warm").await.is_ok());
        server.pause();
        let fillers = fill_in_flight(&limiter).await;
        // Five checks of `victim`, dropped by their callers after 5 ms
        // while queued behind the four batches in flight.
        for _ in 0..5 {
            let gave_up =
                tokio::time::timeout(Duration::from_millis(5), limiter.check("victim")).await;
            assert!(gave_up.is_err(), "answered while paused?");
        }
        server.resume();
        for filler in fillers {
            filler.await.expect("no panic");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let stored = redis_cli(server.port(), &["GET", "queued:{victim}"]);
        let answer = limiter.check("victim").await;
        assert!(
            answer.is_ok(),
            "no check of `victim` ever got an answer, yet its burst of 5 is gone: {answer:?}; \
             TAT in Redis {:?}; {:?}",
            stored.trim(),
            limiter.stats()
        );
    });
}

/// Checks answered by the failure policy while the server was down must
/// not be run against it once it is back (fail closed: they were refused).
#[test]
fn checks_refused_while_the_server_was_down_are_not_replayed_after_restart() {
    let _one = SERIAL.write().unwrap_or_else(PoisonError::into_inner);
    let Some(server) = RedisServer::start() else {
        return;
    };
    runtime().block_on(async {
        let limiter = RedisLimiter::builder(server.url(), five_a_minute())
            .prefix("replay:")
            .deadline(Duration::from_millis(50))
            .on_failure(OnFailure::Closed)
            .build()
            .await
            .expect("builds");
        assert!(limiter.check("warm").await.is_ok());
        server.kill();
        let mut took = Vec::new();
        for _ in 0..20 {
            let begun = Instant::now();
            let answer = limiter.check("victim").await;
            took.push(begun.elapsed().as_millis());
            assert_eq!(answer, Err(SharedDenied::Unavailable));
        }
        eprintln!(
            "while down: each check took (ms) {took:?}; {:?}",
            limiter.stats()
        );
        server.restart();
        let restarted = Instant::now();
        let mut probe = 0;
        while limiter.check(&format!("probe-{probe}")).await.is_err() {
            probe += 1;
            assert!(restarted.elapsed() < Duration::from_secs(5), "no recovery");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let stored = redis_cli(server.port(), &["GET", "replay:{victim}"]);
        let answer = limiter.check("victim").await;
        assert!(
            answer.is_ok(),
            "every check of `victim` was refused, yet after the restart it is over its \
             limit: {answer:?}; TAT in Redis {:?}; {:?}",
            stored.trim(),
            limiter.stats()
        );
    });
}

/// A limiter dropped while its server is down leaves nothing running: once
/// the server is back, nothing of it connects or writes.
#[test]
fn a_limiter_dropped_while_the_server_is_down_leaves_nothing_behind() {
    // Not one at a time: it times nothing and mostly waits, so it runs
    // beside the others.
    let Some(server) = RedisServer::start() else {
        return;
    };
    runtime().block_on(async {
        let limiter = RedisLimiter::builder(server.url(), five_a_minute())
            .prefix("dropped:")
            .deadline(Duration::from_millis(50))
            .build()
            .await
            .expect("builds");
        assert!(limiter.check("warm").await.is_ok());
        server.kill();
        for key in 0..20 {
            let _ = limiter.check(&format!("k{key}")).await;
        }
        drop(limiter);
        tokio::time::sleep(Duration::from_millis(500)).await;
        server.restart();
        tokio::time::sleep(Duration::from_secs(2)).await;
        let keys = redis_cli(server.port(), &["--scan", "--pattern", "dropped:*"]);
        let clients = redis_cli(server.port(), &["CLIENT", "LIST"]);
        assert!(
            keys.trim().is_empty(),
            "a dropped limiter wrote after the restart: {keys:?}; clients:\n{clients}"
        );
    });
}

/// One key holding a value the script cannot use must not fail the other
/// keys that share its batch.
#[test]
fn a_poisoned_key_does_not_fail_its_batch_neighbours() {
    let _one = SERIAL.read().unwrap_or_else(PoisonError::into_inner);
    let Some(server) = RedisServer::start() else {
        return;
    };
    redis_cli(server.port(), &["SET", "poison:{bad}", "nan", "EX", "60"]);
    runtime().block_on(async {
        let limiter = RedisLimiter::builder(server.url(), five_a_minute())
            .prefix("poison:")
            .deadline(Duration::from_millis(500))
            .on_failure(OnFailure::Closed)
            .build()
            .await
            .expect("builds");
        assert!(limiter.check("warm").await.is_ok());
        server.pause();
        let fillers = fill_in_flight(&limiter).await;
        // Queued together: one batch.
        let mut checks = Vec::new();
        for key in ["bad", "a", "b", "c", "d", "e", "f", "g"] {
            let limiter = limiter.clone();
            checks.push((key, tokio::spawn(async move { limiter.check(key).await })));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        server.resume();
        for filler in fillers {
            filler.await.expect("no panic");
        }
        let mut answers = Vec::new();
        for (key, check) in checks {
            answers.push((key, check.await.expect("no panic")));
        }
        let failed: Vec<_> = answers
            .iter()
            .filter(|(key, answer)| *key != "bad" && answer.is_err())
            .collect();
        assert!(
            failed.is_empty(),
            "fresh keys refused because `bad` shared their batch: {answers:?}; {:?}",
            limiter.stats()
        );
    });
}

/// A key holding `inf` (or 1e400) is denied for ever with a 1 µs
/// retry-after, a round trip each time.
#[test]
fn an_infinite_tat_is_not_a_one_microsecond_retry() {
    let _one = SERIAL.read().unwrap_or_else(PoisonError::into_inner);
    let Some(server) = RedisServer::start() else {
        return;
    };
    redis_cli(server.port(), &["SET", "inf:{k}", "inf", "EX", "60"]);
    runtime().block_on(async {
        let limiter = RedisLimiter::builder(server.url(), five_a_minute())
            .prefix("inf:")
            .build()
            .await
            .expect("builds");
        let answer = limiter.check("k").await;
        let ok = match answer {
            Ok(_) => true,
            Err(SharedDenied::Limited(denied)) => denied.retry_after > Duration::from_micros(1),
            Err(SharedDenied::Unavailable) => false,
        };
        assert!(ok, "{answer:?}");
    });
}
