//! Shared concurrency limits against real Redis processes started by the
//! tests: four instances never over the limit (counted where the requests
//! land), a killed instance's permits back within the TTL, a frozen
//! server answered by policy within the deadline, a restarted server
//! given back the permits still held, cancelled acquires leaving nothing,
//! a three-master cluster, bad configuration, and no key without a TTL.
#![cfg(feature = "redis")]

use std::future::Future;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::Poll;
use std::time::{Duration, Instant};

use crate::limit::{SERIAL, every_key_expires, runtime};
use crate::redis_support::{RedisServer, redis_cli};
use loadbalance::limit::redis::{
    OnFailure, PermitDenied, RedisConcurrencyLimit, RedisLimitError, SharedPermit,
};

/// Where the requests land: how many are in flight now, and the most ever.
#[derive(Default)]
struct Backend {
    now: AtomicU32,
    most: AtomicU32,
}

impl Backend {
    /// A request in flight for `hold`.
    async fn serve(&self, hold: Duration) {
        let now = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.most.fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(hold).await;
        self.now.fetch_sub(1, Ordering::SeqCst);
    }
}

/// How many permits Redis holds for `redis_key` on the node at `port`.
fn held_in_redis(port: u16, redis_key: &str) -> usize {
    redis_cli(port, &["ZCARD", redis_key])
        .trim()
        .parse()
        .expect("a number")
}

/// Waits (at most `within`) until Redis holds `count` permits of the key.
fn until_held(port: u16, redis_key: &str, count: usize, within: Duration) -> Duration {
    let begun = Instant::now();
    loop {
        let held = held_in_redis(port, redis_key);
        if held == count {
            return begun.elapsed();
        }
        assert!(
            begun.elapsed() < within,
            "{held} permits held, not {count}, after {within:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `tasks` tasks on each limit, each asking `rounds` times for a place
/// under `key` and holding it at the backend for a moment; the permits
/// granted.
async fn crowd(
    limits: &[RedisConcurrencyLimit],
    keys: &[&'static str],
    tasks: usize,
    rounds: usize,
    backends: &Arc<Vec<Backend>>,
) -> u64 {
    let granted = Arc::new(AtomicU64::new(0));
    let mut handles = Vec::new();
    for limit in limits {
        for task in 0..tasks {
            let (limit, backends, granted) =
                (limit.clone(), Arc::clone(backends), Arc::clone(&granted));
            let keys = keys.to_vec();
            handles.push(tokio::spawn(async move {
                for round in 0..rounds {
                    let which = (task + round) % keys.len();
                    match limit.acquire(keys[which]).await {
                        Ok(permit) => {
                            assert!(permit.is_shared(), "let in by policy: {:?}", limit.stats());
                            granted.fetch_add(1, Ordering::Relaxed);
                            let hold = Duration::from_millis(1 + (task % 3) as u64);
                            backends[which].serve(hold).await;
                            drop(permit);
                        }
                        Err(PermitDenied::Full { .. }) => {
                            tokio::time::sleep(Duration::from_millis(1)).await;
                        }
                        Err(PermitDenied::Unavailable) => panic!("Redis is up"),
                    }
                }
            }));
        }
    }
    for handle in handles {
        handle.await.expect("no panic");
    }
    granted.load(Ordering::Relaxed)
}

/// Four instances, 64 tasks each, one key of 8 places: the backend never
/// sees more than 8 at once; every permit is released afterwards.
#[test]
fn four_instances_never_hold_more_than_the_limit() {
    let _one = SERIAL.write().unwrap_or_else(PoisonError::into_inner);
    let Some(server) = RedisServer::start() else {
        return;
    };
    runtime().block_on(async {
        let mut limits = Vec::new();
        for _ in 0..4 {
            limits.push(
                RedisConcurrencyLimit::builder(server.url(), 8)
                    .prefix("four:")
                    .deadline(Duration::from_millis(500))
                    .build()
                    .await
                    .expect("builds"),
            );
        }
        let backends = Arc::new(vec![Backend::default()]);
        let granted = crowd(&limits, &["api"], 64, 10, &backends).await;
        let most = backends[0].most.load(Ordering::SeqCst);
        eprintln!(
            "four instances: {granted} granted of 2,560, at most {most} at once; {:?}",
            limits[0].stats()
        );
        assert!(most <= 8, "{most} in flight at once");
        assert_eq!(
            most, 8,
            "the limit was never reached: no contention to test"
        );
        assert!(granted >= 8, "{granted} granted");
        for limit in &limits {
            assert_eq!(limit.held(), 0);
        }
        let key = limits[0].redis_key("api");
        until_held(server.port(), &key, 0, Duration::from_secs(2));
    });
    every_key_expires(server.port(), "four:");
}

/// The instance a test starts as a process of its own and kills: holds
/// `LB_HOLD_COUNT` permits of key `crash` on `LB_HOLD_URL`, says `held`,
/// and waits to be killed. Ignored: it runs only as that child.
#[test]
#[ignore = "a child process of a_killed_instance_permits_come_back_within_the_ttl"]
fn holder() {
    let (Ok(url), Ok(count)) = (std::env::var("LB_HOLD_URL"), std::env::var("LB_HOLD_COUNT"))
    else {
        panic!("run by a_killed_instance_permits_come_back_within_the_ttl only");
    };
    let count: usize = count.parse().expect("a count");
    runtime().block_on(async {
        let limit = RedisConcurrencyLimit::builder(url, 8)
            .prefix("crash:")
            .ttl(Duration::from_secs(1))
            .deadline(Duration::from_millis(300))
            .build()
            .await
            .expect("builds");
        let mut held: Vec<SharedPermit> = Vec::new();
        for _ in 0..count {
            held.push(limit.acquire("crash").await.expect("a place"));
        }
        println!("held");
        // Killed long before this ends.
        tokio::time::sleep(Duration::from_secs(60)).await;
        drop(held);
    });
}

/// An instance holding every place is killed with SIGKILL: its permits
/// come back within the TTL (1 s) plus a second, and not before the
/// renewals stop.
#[test]
fn a_killed_instance_permits_come_back_within_the_ttl() {
    let _one = SERIAL.write().unwrap_or_else(PoisonError::into_inner);
    let Some(server) = RedisServer::start() else {
        return;
    };
    let mut child = Command::new(std::env::current_exe().expect("this test binary"))
        .args([
            "permits::holder",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("LB_HOLD_URL", server.url())
        .env("LB_HOLD_COUNT", "8")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the holder starts");
    let stdout = child.stdout.take().expect("its output");
    let (said, heard) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            // libtest may print the test's name on the same line first.
            if line.trim_end().ends_with("held") {
                let _ = said.send(());
                return;
            }
        }
    });
    if heard.recv_timeout(Duration::from_secs(20)).is_err() {
        let _ = child.kill();
        let _ = child.wait();
        panic!("the holder never held its permits");
    }
    runtime().block_on(async {
        let limit = RedisConcurrencyLimit::builder(server.url(), 8)
            .prefix("crash:")
            .ttl(Duration::from_secs(1))
            .deadline(Duration::from_millis(300))
            .build()
            .await
            .expect("builds");
        // Held, and renewed past their first TTL while the holder lives.
        tokio::time::sleep(Duration::from_millis(1_250)).await;
        assert!(
            matches!(
                limit.acquire("crash").await,
                Err(PermitDenied::Full { held: 8 })
            ),
            "the holder's permits lapsed while it lived"
        );
        child.kill().expect("SIGKILL");
        let killed = Instant::now();
        let _ = child.wait();
        let mut mine = Vec::new();
        while mine.len() < 8 {
            assert!(
                killed.elapsed() < Duration::from_secs(2),
                "{} of 8 places back {:?} after the kill",
                mine.len(),
                killed.elapsed()
            );
            match limit.acquire("crash").await {
                Ok(permit) => mine.push(permit),
                Err(PermitDenied::Full { .. }) => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(PermitDenied::Unavailable) => panic!("Redis is up"),
            }
        }
        eprintln!(
            "killed instance: its 8 permits back {:?} after SIGKILL (TTL 1 s)",
            killed.elapsed()
        );
    });
    every_key_expires(server.port(), "crash:");
}

/// A frozen server (SIGSTOP): every acquire is answered by its policy
/// within the deadline + 10 ms, closed or open; after SIGCONT the limit
/// is exact again within a second.
#[test]
fn a_frozen_server_is_answered_by_policy_within_the_deadline() {
    let _one = SERIAL.write().unwrap_or_else(PoisonError::into_inner);
    let Some(server) = RedisServer::start() else {
        return;
    };
    runtime().block_on(async {
        let deadline = Duration::from_millis(50);
        let build = |policy| {
            RedisConcurrencyLimit::builder(server.url(), 2)
                .prefix("frozen:")
                .deadline(deadline)
                .on_failure(policy)
                .build()
        };
        let closed = build(OnFailure::Closed).await.expect("builds");
        let open = build(OnFailure::Open).await.expect("builds");
        drop(closed.acquire("warm").await.expect("a place"));
        drop(open.acquire("warm").await.expect("a place"));
        server.pause();
        let slowest = Arc::new(Mutex::new(Duration::ZERO));
        let mut handles = Vec::new();
        for task in 0..16 {
            let (closed, open, slowest) = (closed.clone(), open.clone(), Arc::clone(&slowest));
            handles.push(tokio::spawn(async move {
                for round in 0..5 {
                    let key = format!("key-{task}-{round}");
                    let begun = Instant::now();
                    let refused = closed.acquire(&key).await;
                    let let_in = open.acquire(&key).await;
                    let took = begun.elapsed();
                    assert_eq!(refused.err(), Some(PermitDenied::Unavailable));
                    let let_in = let_in.expect("let in by policy");
                    assert!(!let_in.is_shared(), "held in a frozen Redis?");
                    let mut slowest = slowest.lock().unwrap_or_else(PoisonError::into_inner);
                    *slowest = (*slowest).max(took);
                }
            }));
        }
        for handle in handles {
            handle.await.expect("no panic");
        }
        let slowest = *slowest.lock().unwrap_or_else(PoisonError::into_inner);
        assert!(
            slowest <= 2 * deadline + Duration::from_millis(20),
            "two acquires took {slowest:?}"
        );
        assert_eq!(closed.stats().by_policy, 80, "{:?}", closed.stats());
        assert_eq!(open.stats().by_policy, 80, "{:?}", open.stats());
        server.resume();
        let resumed = Instant::now();
        let first = loop {
            assert!(
                resumed.elapsed() < Duration::from_secs(1),
                "not back within a second: {:?}",
                closed.stats()
            );
            if let Ok(permit) = closed.acquire("fresh").await {
                break permit;
            }
        };
        let second = closed.acquire("fresh").await.expect("the second place");
        assert_eq!(
            closed.acquire("fresh").await.err(),
            Some(PermitDenied::Full { held: 2 })
        );
        drop((first, second));
        let key = closed.redis_key("fresh");
        until_held(server.port(), &key, 0, Duration::from_secs(2));
    });
    every_key_expires(server.port(), "frozen:");
}

/// A server restarted empty (persistence off): the permits still held are
/// written back by the next renewal, so the limit counts them again.
#[test]
fn a_restarted_server_gets_the_permits_still_held() {
    let _one = SERIAL.write().unwrap_or_else(PoisonError::into_inner);
    let Some(server) = RedisServer::start() else {
        return;
    };
    runtime().block_on(async {
        let limit = RedisConcurrencyLimit::builder(server.url(), 4)
            .prefix("restart:")
            .ttl(Duration::from_millis(900))
            .deadline(Duration::from_millis(200))
            .build()
            .await
            .expect("builds");
        let mut held = Vec::new();
        for _ in 0..3 {
            held.push(limit.acquire("job").await.expect("a place"));
        }
        let key = limit.redis_key("job");
        assert_eq!(held_in_redis(server.port(), &key), 3);
        server.restart();
        assert_eq!(
            held_in_redis(server.port(), &key),
            0,
            "the restart kept data?"
        );
        // A renewal every 300 ms: written back within a second.
        let took = until_held(server.port(), &key, 3, Duration::from_secs(1));
        assert!(limit.stats().restored >= 3, "{:?}", limit.stats());
        eprintln!(
            "restart: 3 held permits written back in {took:?}; {:?}",
            limit.stats()
        );
        held.push(limit.acquire("job").await.expect("the fourth place"));
        assert_eq!(
            limit.acquire("job").await.err(),
            Some(PermitDenied::Full { held: 4 })
        );
        drop(held);
        until_held(server.port(), &key, 0, Duration::from_secs(2));
    });
    every_key_expires(server.port(), "restart:");
}

/// Acquires given up at every point of their round trip leave nothing
/// held once their releases have gone out.
#[test]
fn cancelled_acquires_leave_nothing_held() {
    let _one = SERIAL.read().unwrap_or_else(PoisonError::into_inner);
    let Some(server) = RedisServer::start() else {
        return;
    };
    runtime().block_on(async {
        let limit = RedisConcurrencyLimit::builder(server.url(), 1_000)
            .prefix("cancel:")
            .deadline(Duration::from_millis(500))
            .build()
            .await
            .expect("builds");
        drop(limit.acquire("warm").await.expect("a place"));
        let mut answered = 0;
        // Each acquire is polled 1 to 10 times, 20 µs apart (the
        // connection's task runs on the other worker meanwhile), then
        // dropped: before it was sent, while Redis ran it, after Redis
        // granted it and before its answer was read.
        for attempt in 0..200 {
            let acquire = limit.acquire("job");
            tokio::pin!(acquire);
            for _ in 0..=attempt % 10 {
                let polled =
                    std::future::poll_fn(|cx| Poll::Ready(acquire.as_mut().poll(cx))).await;
                if let Poll::Ready(answer) = polled {
                    answered += 1;
                    drop(answer.expect("a place"));
                    break;
                }
                std::thread::sleep(Duration::from_micros(20));
                tokio::task::yield_now().await;
            }
        }
        let key = limit.redis_key("job");
        until_held(server.port(), &key, 0, Duration::from_secs(2));
        let stats = limit.stats();
        eprintln!("cancelled: {answered} of 200 answered in time; {stats:?}");
        assert!(answered < 200, "no acquire was cancelled");
        assert!(answered > 0, "none answered: none cancelled late");
        assert_eq!(limit.held(), 0);
    });
    every_key_expires(server.port(), "cancel:");
}

/// A three-master cluster: two instances share three keys' places, each
/// key on its own slot, and no key is ever over its limit.
#[test]
fn a_cluster_shares_permits() {
    let Some(cluster) = crate::limit::cluster() else {
        return;
    };
    let _one = SERIAL.read().unwrap_or_else(PoisonError::into_inner);
    runtime().block_on(async {
        let mut limits = Vec::new();
        for _ in 0..2 {
            limits.push(
                RedisConcurrencyLimit::cluster_builder(cluster.urls(), 4)
                    .prefix("cluster:")
                    .deadline(Duration::from_millis(500))
                    .build()
                    .await
                    .expect("builds"),
            );
        }
        let keys = ["red", "green", "blue"];
        let backends = Arc::new(vec![
            Backend::default(),
            Backend::default(),
            Backend::default(),
        ]);
        let granted = crowd(&limits, &keys, 32, 10, &backends).await;
        let most: Vec<u32> = backends
            .iter()
            .map(|b| b.most.load(Ordering::SeqCst))
            .collect();
        eprintln!("cluster: {granted} granted, at most {most:?} at once");
        assert!(most.iter().all(|&m| m <= 4), "{most:?}");
        assert!(
            most.iter().all(|&m| m == 4),
            "a key never reached its limit: {most:?}"
        );
    });
    // Every key expires.
    let mut remaining = 0;
    for port in cluster.ports() {
        remaining += crate::limit::every_key_expires(port, "cluster:");
    }
    eprintln!("cluster: {remaining} keys left, each with a TTL");
}

#[test]
fn bad_configuration_is_refused() {
    runtime().block_on(async {
        let url = "redis://127.0.0.1:1/";
        let build = |limit| RedisConcurrencyLimit::builder(url, limit);
        assert!(matches!(
            build(0).build().await,
            Err(RedisLimitError::ZeroLimit)
        ));
        assert!(matches!(
            build(1).deadline(Duration::ZERO).build().await,
            Err(RedisLimitError::ZeroDeadline)
        ));
        assert!(matches!(
            build(1).ttl(Duration::from_millis(200)).build().await,
            Err(RedisLimitError::TtlTooShort { .. })
        ));
        assert!(matches!(
            build(1)
                .deadline(Duration::from_millis(400))
                .ttl(Duration::from_secs(1))
                .build()
                .await,
            Err(RedisLimitError::TtlTooShort { .. })
        ));
        assert!(matches!(
            build(1).prefix("a{b}").build().await,
            Err(RedisLimitError::BracesInPrefix)
        ));
        assert!(matches!(
            RedisConcurrencyLimit::builder("not a url", 1).build().await,
            Err(RedisLimitError::InvalidUrl(_))
        ));
    });
}

/// `FlowControl::check_shared_limits`: a client over its shared in-flight
/// limit is refused with 429 and struck toward a ban, like over a local
/// one; an allow-listed client skips the per-client limit, not the one in
/// all; the admission holds the permits until dropped.
#[test]
fn flow_control_holds_shared_permits_and_strikes_toward_a_ban() {
    use loadbalance::limit::{BanRule, FlowControl, IpList, Reason, SharedLimits};
    let _one = SERIAL.write().unwrap_or_else(PoisonError::into_inner);
    let Some(server) = RedisServer::start() else {
        return;
    };
    runtime().block_on(async {
        let limit = |prefix: &str, max| {
            RedisConcurrencyLimit::builder(server.url(), max)
                .prefix(prefix)
                .deadline(Duration::from_millis(500))
                .build()
        };
        let shared = SharedLimits::new()
            .in_flight_per_client(limit("flow:client:", 1).await.expect("builds"))
            .in_flight(limit("flow:all:", 2).await.expect("builds"));
        let flow = FlowControl::builder()
            .allow(IpList::parse(["10.0.0.0/8"]).expect("a list"))
            .ban(BanRule::new(2, Duration::from_secs(10), Duration::from_secs(60)).expect("a rule"))
            .build()
            .expect("builds");
        let client: std::net::IpAddr = "192.0.2.7".parse().expect("an address");
        let held = flow
            .check_shared_limits(client, &shared)
            .await
            .expect("the first is in");
        // The first refusal is a strike; the second earns the ban (two
        // refusals within the window), the third is the ban, answered
        // locally.
        for expected in [Reason::ClientInFlight, Reason::Banned, Reason::Banned] {
            let refused = flow
                .check_shared_limits(client, &shared)
                .await
                .expect_err("over its limit");
            assert_eq!(refused.reason(), expected, "{refused}");
        }
        // Allow-listed: no per-client limit, but one of the two places in
        // all (the banned client's admission holds the other).
        let friend: std::net::IpAddr = "10.1.2.3".parse().expect("an address");
        let second = flow
            .check_shared_limits(friend, &shared)
            .await
            .expect("a place in all");
        let refused = flow
            .check_shared_limits(friend, &shared)
            .await
            .expect_err("no place left in all");
        assert_eq!(refused.reason(), Reason::ServerInFlight);
        drop((held, second));
        let key = limit("flow:all:", 2)
            .await
            .expect("builds")
            .redis_key("all");
        until_held(server.port(), &key, 0, Duration::from_secs(2));
    });
    every_key_expires(server.port(), "flow:");
}

/// A review's finding: while releases kept arriving, the renewal never ran,
/// held permits expired in Redis while held and another instance got more.
#[test]
fn renewals_are_not_starved_by_a_stream_of_releases() {
    let _one = SERIAL.write().unwrap_or_else(PoisonError::into_inner);
    let Some(server) = RedisServer::start() else {
        return;
    };
    runtime().block_on(async {
        let build = || {
            RedisConcurrencyLimit::builder(server.url(), 2)
                .prefix("starve:")
                .ttl(Duration::from_millis(300))
                .deadline(Duration::from_millis(100))
                .build()
        };
        let a = build().await.expect("builds");
        let b = build().await.expect("builds");
        let held = vec![
            a.acquire("long").await.expect("a place"),
            a.acquire("long").await.expect("a place"),
        ];
        // Control: no churn, 0.75 s = 2.5 TTLs, renewals keep them.
        tokio::time::sleep(Duration::from_millis(750)).await;
        assert!(
            matches!(b.acquire("long").await, Err(PermitDenied::Full { held: 2 })),
            "control failed"
        );
        let before = a.stats().renewals;
        // Churn on A: other keys acquired and dropped by 32 tasks.
        let stop = Arc::new(AtomicBool::new(false));
        let mut churn = Vec::new();
        for task in 0..32 {
            let (a, stop) = (a.clone(), Arc::clone(&stop));
            churn.push(tokio::spawn(async move {
                let key = format!("churn-{task}");
                while !stop.load(Ordering::Relaxed) {
                    if let Ok(permit) = a.acquire(&key).await {
                        drop(permit);
                    }
                }
            }));
        }
        tokio::time::sleep(Duration::from_millis(750)).await;
        let third = b.acquire("long").await;
        let in_redis = held_in_redis(server.port(), &a.redis_key("long"));
        stop.store(true, Ordering::Relaxed);
        for task in churn {
            task.await.expect("no panic");
        }
        let renewals = a.stats().renewals - before;
        eprintln!(
            "churn: {renewals} renewal calls in 0.75 s (period 100 ms); B's acquire: {:?}; \
             ZCARD {in_redis}; A holds {}; {:?}",
            third.as_ref().map(|p| p.is_shared()),
            a.held(),
            a.stats()
        );
        assert!(
            matches!(third, Err(PermitDenied::Full { held: 2 })),
            "A holds 2 of 2, yet B got a third (renewals in 0.75 s: {renewals})"
        );
        drop(held);
    });
}

/// A review's finding: every write set the key's expiry to the writer's
/// own TTL, so an instance with a shorter TTL made another instance's live
/// permits vanish while held and renewed on time.
#[test]
fn a_shorter_ttl_does_not_expire_the_key_under_longer_permits() {
    let _one = SERIAL.write().unwrap_or_else(PoisonError::into_inner);
    let Some(server) = RedisServer::start() else {
        return;
    };
    runtime().block_on(async {
        let build = |ttl| {
            RedisConcurrencyLimit::builder(server.url(), 3)
                .prefix("mixed:")
                .ttl(ttl)
                .deadline(Duration::from_millis(100))
                .build()
        };
        let long = build(Duration::from_secs(30)).await.expect("builds");
        let short = build(Duration::from_millis(600)).await.expect("builds");
        let held = [
            long.acquire("k").await.expect("a place"),
            long.acquire("k").await.expect("a place"),
        ];
        drop(short.acquire("k").await.expect("the third place"));
        tokio::time::sleep(Duration::from_millis(1_000)).await;
        let key = long.redis_key("k");
        let in_redis = held_in_redis(server.port(), &key);
        let mut more = Vec::new();
        while let Ok(permit) = short.acquire("k").await {
            more.push(permit);
            if more.len() == 10 {
                break;
            }
        }
        eprintln!(
            "mixed TTLs: long holds {}, Redis has {in_redis}, short then got {} more (limit 3)",
            long.held(),
            more.len()
        );
        assert_eq!(in_redis, 2, "the long-TTL instance's held permits vanished");
        assert!(
            held.len() + more.len() <= 3,
            "{} in flight",
            held.len() + more.len()
        );
    });
}

/// A review's finding: one renewal call per key, one after another: with
/// 2,000 keys held the pass took longer than the TTL, and permits expired
/// while held.
#[test]
fn two_thousand_keys_are_renewed_within_the_ttl() {
    let _one = SERIAL.write().unwrap_or_else(PoisonError::into_inner);
    let Some(server) = RedisServer::start() else {
        return;
    };
    runtime().block_on(async {
        let build = || {
            RedisConcurrencyLimit::builder(server.url(), 1)
                .prefix("many:")
                .ttl(Duration::from_millis(300))
                .deadline(Duration::from_millis(100))
                .build()
        };
        let a = build().await.expect("builds");
        let b = build().await.expect("builds");
        const KEYS: usize = 2_000;
        // Acquired by 8 tasks at once.
        let mut acquiring = Vec::new();
        for part in 0..8 {
            let a = a.clone();
            acquiring.push(tokio::spawn(async move {
                let mut held = Vec::new();
                for i in (part..KEYS).step_by(8) {
                    held.push(a.acquire(&format!("t{i}")).await.expect("a place"));
                }
                held
            }));
        }
        let mut held = Vec::new();
        for part in acquiring {
            held.extend(part.await.expect("no panic"));
        }
        assert!(held.iter().all(|p| p.is_shared()));
        let begun = Instant::now();
        // Three TTLs.
        tokio::time::sleep(Duration::from_millis(900)).await;
        // B asks for each key A holds (limit 1 each): none may be granted.
        let granted = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for part in 0..8 {
            let (b, granted) = (b.clone(), Arc::clone(&granted));
            tasks.push(tokio::spawn(async move {
                for i in (part..KEYS).step_by(8) {
                    if let Ok(permit) = b.acquire(&format!("t{i}")).await {
                        if permit.is_shared() {
                            granted.fetch_add(1, Ordering::Relaxed);
                        }
                        // Kept: the count is of overlap with A's.
                        std::mem::forget(permit);
                    }
                }
            }));
        }
        for task in tasks {
            task.await.expect("no panic");
        }
        let granted = granted.load(Ordering::Relaxed);
        eprintln!(
            "{KEYS} keys held by A, after {:?}: B granted {granted}; A {:?}",
            begun.elapsed(),
            a.stats()
        );
        assert_eq!(a.stats().restored, 0, "permits expired while held");
        assert_eq!(granted, 0, "B got places A holds");
        drop(held);
    });
}

/// A review's finding: the server closes the connection (CLIENT KILL, an
/// idle `timeout`, a proxy): the next release failed, was never sent
/// again, and the permit stayed held for its TTL although Redis was up.
#[test]
fn a_release_after_the_server_closed_the_connection_is_sent_again() {
    let _one = SERIAL.write().unwrap_or_else(PoisonError::into_inner);
    let Some(server) = RedisServer::start() else {
        return;
    };
    runtime().block_on(async {
        let limit = RedisConcurrencyLimit::builder(server.url(), 1)
            .prefix("closed:")
            .ttl(Duration::from_millis(1_500))
            .deadline(Duration::from_millis(200))
            .build()
            .await
            .expect("builds");
        let permit = limit.acquire("k").await.expect("a place");
        redis_cli(server.port(), &["CLIENT", "KILL", "TYPE", "normal"]);
        tokio::time::sleep(Duration::from_millis(100)).await;
        drop(permit);
        // The first release fails on the closed connection; it goes again
        // with the next renewal (every 0.5 s).
        let key = limit.redis_key("k");
        let took = until_held(server.port(), &key, 0, Duration::from_secs(3));
        let next = limit.acquire("k").await;
        eprintln!(
            "closed connection: released {took:?} after the drop; next acquire {:?}; {:?}",
            next.as_ref().map(|p| p.is_shared()),
            limit.stats()
        );
        assert!(matches!(next, Ok(ref permit) if permit.is_shared()));
    });
}

/// A review's finding: `deadline * 3` overflowed (a panic) for a deadline
/// above `Duration::MAX / 3`.
#[test]
fn a_huge_deadline_is_refused_not_a_panic() {
    runtime().block_on(async {
        let built = RedisConcurrencyLimit::builder("redis://127.0.0.1:1/", 1)
            .deadline(Duration::MAX)
            .ttl(Duration::MAX)
            .build()
            .await;
        assert!(
            matches!(built, Err(RedisLimitError::TtlTooShort { .. })),
            "{:?}",
            built.map(|_| ())
        );
    });
}
