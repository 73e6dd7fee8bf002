//! Shared bans against real Redis processes started by the tests: a ban
//! or a lift by one instance reaches every other within 100 ms (100
//! trials, the slowest reported), a new instance learns the bans in force,
//! bans outlive a Redis restarted empty, a missed message is caught up on
//! resubscribing, a three-master cluster, bans that end, and keys that
//! expire with their last ban.
#![cfg(feature = "redis")]

use std::sync::PoisonError;
use std::time::{Duration, Instant};

use crate::limit::{SERIAL, every_key_expires, runtime};
use crate::redis_support::{RedisCluster, RedisServer, redis_cli};
use loadbalance::limit::redis::{RedisLimitError, SharedBans};

async fn instance(url: &str, prefix: &str) -> SharedBans {
    let bans = SharedBans::builder(url)
        .prefix(prefix)
        .deadline(Duration::from_millis(500))
        .build()
        .await
        .expect("builds");
    subscribed(&bans).await;
    bans
}

/// Waits until `bans` has subscribed (its first resync done).
async fn subscribed(bans: &SharedBans) {
    let begun = Instant::now();
    while bans.stats().resyncs == 0 {
        assert!(
            begun.elapsed() < Duration::from_secs(5),
            "never subscribed: {:?}",
            bans.stats()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// How long until `seen` holds for every instance, at most `within`.
async fn until(
    instances: &[&SharedBans],
    within: Duration,
    seen: impl Fn(&SharedBans) -> bool,
) -> Duration {
    let begun = Instant::now();
    loop {
        if instances.iter().all(|bans| seen(bans)) {
            return begun.elapsed();
        }
        assert!(begun.elapsed() < within, "not seen within {within:?}");
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
}

/// 100 bans and 100 lifts by one instance, each awaited on two others:
/// every one there within 100 ms.
async fn hundred_trials(a: &SharedBans, others: &[&SharedBans]) -> (Duration, Duration) {
    let (mut ban_most, mut lift_most) = (Duration::ZERO, Duration::ZERO);
    for trial in 0..100 {
        let client = format!("198.51.100.{trial}");
        let begun = Instant::now();
        a.ban(&client, Duration::from_secs(60))
            .await
            .expect("written");
        until(others, Duration::from_secs(1), |bans| {
            bans.banned(&client).is_some()
        })
        .await;
        ban_most = ban_most.max(begun.elapsed());
        let begun = Instant::now();
        a.lift(&client).await.expect("written");
        until(others, Duration::from_secs(1), |bans| {
            bans.banned(&client).is_none()
        })
        .await;
        lift_most = lift_most.max(begun.elapsed());
    }
    (ban_most, lift_most)
}

#[test]
fn a_ban_and_a_lift_reach_every_instance_within_100_ms() {
    let _one = SERIAL.lock().unwrap_or_else(PoisonError::into_inner);
    let Some(server) = RedisServer::start() else {
        return;
    };
    runtime().block_on(async {
        let url = server.url();
        let (a, b, c) = (
            instance(&url, "spread:").await,
            instance(&url, "spread:").await,
            instance(&url, "spread:").await,
        );
        let (ban_most, lift_most) = hundred_trials(&a, &[&b, &c]).await;
        eprintln!(
            "shared bans: slowest of 100 to reach two instances: ban {ban_most:?}, lift {lift_most:?}; {:?}",
            b.stats()
        );
        assert!(ban_most < Duration::from_millis(100), "{ban_most:?}");
        assert!(lift_most < Duration::from_millis(100), "{lift_most:?}");
        assert_eq!(b.stats().received, 200, "{:?}", b.stats());
    });
    every_key_expires(server.port(), "spread:");
}

#[test]
fn a_new_instance_learns_the_bans_in_force_and_bans_end_on_time() {
    let _one = SERIAL.lock().unwrap_or_else(PoisonError::into_inner);
    let Some(server) = RedisServer::start() else {
        return;
    };
    runtime().block_on(async {
        let url = server.url();
        let a = instance(&url, "learn:").await;
        a.ban("192.0.2.1", Duration::from_secs(60))
            .await
            .expect("written");
        a.ban("192.0.2.2", Duration::from_millis(400))
            .await
            .expect("written");
        let late = instance(&url, "learn:").await;
        assert!(late.banned("192.0.2.1").is_some());
        let left = late.banned("192.0.2.2").expect("in force");
        assert!(left <= Duration::from_millis(400), "{left:?}");
        tokio::time::sleep(Duration::from_millis(450)).await;
        assert_eq!(late.banned("192.0.2.2"), None);
        assert_eq!(a.banned("192.0.2.2"), None);
        // The key expires with its last ban.
        a.lift("192.0.2.1").await.expect("written");
        a.ban("192.0.2.3", Duration::from_millis(300))
            .await
            .expect("written");
        let key = a.redis_key().to_owned();
        let ttl: i64 = redis_cli(server.port(), &["PTTL", &key])
            .trim()
            .parse()
            .expect("a number");
        assert!((1..=300).contains(&ttl), "the key's TTL is {ttl} ms");
        tokio::time::sleep(Duration::from_millis(350)).await;
        assert_eq!(redis_cli(server.port(), &["EXISTS", &key]).trim(), "0");
    });
}

#[test]
fn bans_outlive_a_redis_restarted_empty() {
    let _one = SERIAL.lock().unwrap_or_else(PoisonError::into_inner);
    let Some(server) = RedisServer::start() else {
        return;
    };
    runtime().block_on(async {
        let url = server.url();
        let (a, b) = (
            instance(&url, "restart:").await,
            instance(&url, "restart:").await,
        );
        a.ban("192.0.2.9", Duration::from_secs(60))
            .await
            .expect("written");
        until(&[&b], Duration::from_secs(1), |bans| {
            bans.banned("192.0.2.9").is_some()
        })
        .await;
        let subscriptions = a.stats().subscriptions;
        server.restart();
        // Enforced here meanwhile, from the local copies.
        assert!(a.banned("192.0.2.9").is_some() && b.banned("192.0.2.9").is_some());
        // The deciding instance resubscribes and writes its ban back.
        let begun = Instant::now();
        while a.stats().written_back == 0 {
            assert!(
                begun.elapsed() < Duration::from_secs(3),
                "not written back: {:?}",
                a.stats()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(a.stats().subscriptions > subscriptions);
        // So an instance that starts after the restart learns it.
        let late = instance(&url, "restart:").await;
        assert!(late.banned("192.0.2.9").is_some(), "{:?}", late.stats());
        eprintln!(
            "restart: the ban written back in {:?}; {:?}",
            begun.elapsed(),
            a.stats()
        );
    });
    every_key_expires(server.port(), "restart:");
}

#[test]
fn a_missed_message_is_caught_up_on_resubscribing() {
    let _one = SERIAL.lock().unwrap_or_else(PoisonError::into_inner);
    let Some(server) = RedisServer::start() else {
        return;
    };
    runtime().block_on(async {
        let url = server.url();
        let (a, b) = (
            instance(&url, "missed:").await,
            instance(&url, "missed:").await,
        );
        let subscriptions = b.stats().subscriptions;
        // Every subscriber's connection cut: B misses what comes next
        // unless it resubscribes and reads the bans in force.
        redis_cli(server.port(), &["CLIENT", "KILL", "TYPE", "pubsub"]);
        a.ban("192.0.2.44", Duration::from_secs(60))
            .await
            .expect("written");
        let took = until(&[&b], Duration::from_secs(2), |bans| {
            bans.banned("192.0.2.44").is_some()
        })
        .await;
        assert!(b.stats().subscriptions > subscriptions, "{:?}", b.stats());
        eprintln!("missed: caught up in {took:?}; {:?}", b.stats());
    });
    every_key_expires(server.port(), "missed:");
}

#[test]
fn a_cluster_shares_bans() {
    let Some(cluster) = RedisCluster::start() else {
        return;
    };
    let _one = SERIAL.lock().unwrap_or_else(PoisonError::into_inner);
    runtime().block_on(async {
        let build = || async {
            let bans = SharedBans::cluster_builder(cluster.urls())
                .prefix("cluster-bans:")
                .deadline(Duration::from_millis(500))
                .build()
                .await
                .expect("builds");
            subscribed(&bans).await;
            bans
        };
        let (a, b, c) = (build().await, build().await, build().await);
        let (ban_most, lift_most) = hundred_trials(&a, &[&b, &c]).await;
        eprintln!("cluster bans: slowest ban {ban_most:?}, lift {lift_most:?}");
        assert!(ban_most < Duration::from_millis(100), "{ban_most:?}");
        assert!(lift_most < Duration::from_millis(100), "{lift_most:?}");
    });
    for port in cluster.ports() {
        every_key_expires(port, "cluster-bans:");
    }
}

#[test]
fn bad_bans_configuration_is_refused() {
    runtime().block_on(async {
        let url = "redis://127.0.0.1:1/";
        assert!(matches!(
            SharedBans::builder(url)
                .deadline(Duration::ZERO)
                .build()
                .await,
            Err(RedisLimitError::ZeroDeadline)
        ));
        assert!(matches!(
            SharedBans::builder(url).max_bans(0).build().await,
            Err(RedisLimitError::ZeroLimit)
        ));
        assert!(matches!(
            SharedBans::builder(url).prefix("x{y").build().await,
            Err(RedisLimitError::BracesInPrefix)
        ));
    });
}

/// `FlowControl::check_shared_limits` with shared bans: a ban one
/// instance's rule decides refuses the client on another instance too,
/// within 100 ms; a deny-listed client stays 403 for its list, an
/// allow-listed one is never refused by a shared ban.
#[test]
fn a_ban_one_instance_decides_is_enforced_by_another() {
    use loadbalance::limit::{BanRule, FlowControl, IpList, Quota, Reason, SharedLimits};
    let _one = SERIAL.lock().unwrap_or_else(PoisonError::into_inner);
    let Some(server) = RedisServer::start() else {
        return;
    };
    runtime().block_on(async {
        let url = server.url();
        let flow = || {
            FlowControl::builder()
                .allow(IpList::parse(["10.0.0.0/8"]).expect("a list"))
                .rate(Quota::per_minute(1).expect("a quota"))
                .ban(
                    BanRule::new(1, Duration::from_secs(10), Duration::from_secs(60))
                        .expect("a rule"),
                )
                .build()
                .expect("builds")
        };
        // B has no rate and no rule of its own: only a shared ban refuses.
        let flow_b = FlowControl::builder()
            .allow(IpList::parse(["10.0.0.0/8"]).expect("a list"))
            .build()
            .expect("builds");
        let flow_a = flow();
        let shared_a = SharedLimits::new().bans(instance(&url, "flow-bans:").await);
        let bans_b = instance(&url, "flow-bans:").await;
        let shared_b = SharedLimits::new().bans(bans_b.clone());
        let client: std::net::IpAddr = "192.0.2.77".parse().expect("an address");
        drop(
            flow_a
                .check_shared_limits(client, &shared_a)
                .await
                .expect("the first is in"),
        );
        let refused = flow_a
            .check_shared_limits(client, &shared_a)
            .await
            .expect_err("over its rate: struck, and one strike bans");
        assert_eq!(refused.reason(), Reason::Banned, "{refused}");
        let begun = Instant::now();
        loop {
            match flow_b.check_shared_limits(client, &shared_b).await {
                Err(refused) if refused.reason() == Reason::Banned => break,
                Ok(admission) => drop(admission),
                Err(refused) => panic!("{refused}"),
            }
            assert!(
                begun.elapsed() < Duration::from_millis(100),
                "not banned on B in 100 ms"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        eprintln!(
            "flow bans: B refused the client {:?} after A banned it",
            begun.elapsed()
        );
        // An allow-listed client is never refused by a shared ban.
        bans_b
            .ban("10.1.1.1", Duration::from_secs(60))
            .await
            .expect("written");
        let friend: std::net::IpAddr = "10.1.1.1".parse().expect("an address");
        for _ in 0..3 {
            drop(
                flow_b
                    .check_shared_limits(friend, &shared_b)
                    .await
                    .expect("allow-listed"),
            );
        }
    });
    every_key_expires(server.port(), "flow-bans:");
}
