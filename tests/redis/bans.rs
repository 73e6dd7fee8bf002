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
use crate::redis_support::{RedisServer, redis_cli};
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
    let _one = SERIAL.write().unwrap_or_else(PoisonError::into_inner);
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
    let _one = SERIAL.write().unwrap_or_else(PoisonError::into_inner);
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
    let _one = SERIAL.write().unwrap_or_else(PoisonError::into_inner);
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

/// A ban published while B's subscription is cut (in one transaction
/// with the cut: B cannot hear it) reaches B by its resync after it
/// resubscribes.
#[test]
fn a_missed_ban_is_caught_up_on_resubscribing() {
    let _one = SERIAL.read().unwrap_or_else(PoisonError::into_inner);
    let Some(server) = RedisServer::start() else {
        return;
    };
    runtime().block_on(async {
        let url = server.url();
        let b = instance(&url, "missed:").await;
        let key = b.redis_key().to_owned();
        let resyncs = b.stats().resyncs;
        let client = redis::Client::open(url.as_str()).expect("a url");
        let mut raw = client
            .get_multiplexed_async_connection()
            .await
            .expect("connects");
        let _: redis::Value = redis::pipe()
            .atomic()
            .cmd("CLIENT")
            .arg(&["KILL", "TYPE", "pubsub"])
            .cmd("EVAL")
            .arg(SCRIPT)
            .arg(1)
            .arg(&key)
            .arg(1)
            .arg("192.0.2.44")
            .arg(60_000)
            .arg("missed:bans:events")
            .query_async(&mut raw)
            .await
            .expect("banned");
        wait(Duration::from_secs(3), "B resubscribes and resyncs", || {
            b.stats().resyncs > resyncs
        })
        .await;
        assert!(b.banned("192.0.2.44").is_some(), "{:?}", b.stats());
        assert_eq!(b.stats().received, 0, "B heard the ban: nothing was missed");
    });
    every_key_expires(server.port(), "missed:");
}

#[test]
fn a_cluster_shares_bans() {
    let Some(cluster) = crate::limit::cluster() else {
        return;
    };
    let _one = SERIAL.write().unwrap_or_else(PoisonError::into_inner);
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
    let _one = SERIAL.write().unwrap_or_else(PoisonError::into_inner);
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

const SCRIPT: &str = include_str!("../../src/limit/redis/bans.lua");

async fn instance_with(url: &str, prefix: &str, max_bans: usize) -> SharedBans {
    let bans = SharedBans::builder(url)
        .prefix(prefix)
        .deadline(Duration::from_millis(5_000))
        .max_bans(max_bans)
        .build()
        .await
        .expect("builds");
    subscribed(&bans).await;
    bans
}

async fn wait(within: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let begun = Instant::now();
    while !done() {
        assert!(begun.elapsed() < within, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// A review's finding: a lift B missed while resubscribing was never
/// caught up (the resync only added bans), so B refused a pardoned client
/// for the whole ban.
#[test]
fn a_lift_missed_while_away_is_caught_up() {
    let _one = SERIAL.read().unwrap_or_else(PoisonError::into_inner);
    let Some(server) = RedisServer::start() else {
        return;
    };
    runtime().block_on(async {
        let url = server.url();
        let decider = instance(&url, "rv-lift:").await;
        let b = instance(&url, "rv-lift:").await;
        decider
            .ban("192.0.2.5", Duration::from_secs(3_600))
            .await
            .expect("written");
        wait(Duration::from_secs(1), "B hears the ban", || {
            b.banned("192.0.2.5").is_some()
        })
        .await;
        let key = decider.redis_key().to_owned();
        drop(decider); // so no write-back
        // B's subscription is cut and the lift is made before it is back
        // (one transaction): the lift's message reaches nobody.
        let client = redis::Client::open(url.as_str()).expect("a url");
        let mut raw = client
            .get_multiplexed_async_connection()
            .await
            .expect("connects");
        let resyncs = b.stats().resyncs;
        let _: redis::Value = redis::pipe()
            .atomic()
            .cmd("CLIENT")
            .arg(&["KILL", "TYPE", "pubsub"])
            .cmd("EVAL")
            .arg(SCRIPT)
            .arg(1)
            .arg(&key)
            .arg(2)
            .arg("192.0.2.5")
            .arg("rv-lift:bans:events")
            .query_async(&mut raw)
            .await
            .expect("lifted");
        assert_eq!(redis_cli(server.port(), &["ZCARD", &key]).trim(), "0");
        wait(Duration::from_secs(3), "B resubscribes and resyncs", || {
            b.stats().resyncs > resyncs
        })
        .await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(
            b.banned("192.0.2.5"),
            None,
            "Redis holds no ban, B resynced, yet B still bans the lifted client: {:?}",
            b.stats()
        );
    });
}

/// The instance that decided bans lifts them itself while its resync is
/// writing them back (Redis lost them): the write-back works from a
/// snapshot taken before the lifts and bans them again everywhere.
#[test]
fn a_lift_during_a_write_back_stays_lifted() {
    let _one = SERIAL.write().unwrap_or_else(PoisonError::into_inner);
    let Some(server) = RedisServer::start() else {
        return;
    };
    runtime().block_on(async {
        let url = server.url();
        let a = instance(&url, "rv-wb:").await;
        let clients: Vec<String> = (0..2_000).map(|i| format!("c{i}")).collect();
        for client in &clients {
            a.ban(client, Duration::from_secs(600))
                .await
                .expect("written");
        }
        let key = a.redis_key().to_owned();
        // Redis loses the bans (a restart, an eviction), then a resync.
        redis_cli(server.port(), &["DEL", &key]);
        redis_cli(server.port(), &["CLIENT", "KILL", "TYPE", "pubsub"]);
        wait(Duration::from_secs(3), "write-back starts", || {
            a.stats().written_back > 0
        })
        .await;
        // The operator pardons every client on this very instance.
        let mut lifts = Vec::new();
        for client in &clients {
            let a = a.clone();
            let client = client.clone();
            lifts.push(tokio::spawn(async move { a.lift(&client).await }));
        }
        for lift in lifts {
            // Written in order behind the write-backs: one may answer late
            // and still be written.
            let _ = lift.await.expect("joins");
        }
        // Every lift reaches Redis after the write-backs queued before it.
        let begun = Instant::now();
        loop {
            let in_redis = redis_cli(server.port(), &["ZCARD", &key]);
            if in_redis.trim() == "0" && a.is_empty() {
                break;
            }
            assert!(
                begun.elapsed() < Duration::from_secs(10),
                "every lift was made, yet {} bans are back in Redis and {} held here: {:?}",
                in_redis.trim(),
                a.len(),
                a.stats()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
}

/// A review's finding: `ban_soon` then `lift_soon` (PUT then DELETE on the
/// admin port) raced in two tasks, and the lift could reach Redis first.
#[test]
fn a_ban_then_a_lift_end_lifted() {
    let _one = SERIAL.write().unwrap_or_else(PoisonError::into_inner);
    let Some(server) = RedisServer::start() else {
        return;
    };
    runtime().block_on(async {
        let url = server.url();
        let a = instance(&url, "rv-soon:").await;
        let b = instance(&url, "rv-soon:").await;
        for i in 0..2_000 {
            let client = format!("s{i}");
            a.ban_soon(&client, Duration::from_secs(600));
            a.lift_soon(&client);
        }
        // Written in order (4,000 round trips one after another): each ban
        // is followed by its lift everywhere.
        let begun = Instant::now();
        loop {
            let in_redis = redis_cli(server.port(), &["ZCARD", a.redis_key()]);
            let lifted = a.stats().lifted;
            if in_redis.trim() == "0" && a.is_empty() && b.is_empty() {
                break;
            }
            assert!(
                begun.elapsed() < Duration::from_secs(10),
                "each ban was followed by its lift, yet {} stay banned in Redis, {} here, {} on B ({lifted} lifts)",
                in_redis.trim(),
                a.len(),
                b.len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
}

/// More bans in Redis than `max_bans`: the resync reads only the soonest
/// to end, so this instance's own later ones look lost and are written
/// back (a round trip and a message to every instance each) at every
/// resync, though Redis never lost them.
#[test]
fn nothing_is_written_back_when_redis_lost_nothing() {
    let _one = SERIAL.read().unwrap_or_else(PoisonError::into_inner);
    let Some(server) = RedisServer::start() else {
        return;
    };
    runtime().block_on(async {
        let url = server.url();
        let a = instance_with(&url, "rv-loop:", 10).await;
        let b = instance(&url, "rv-loop:").await;
        for i in 0..10 {
            a.ban(&format!("a{i}"), Duration::from_secs(600))
                .await
                .expect("written");
        }
        for i in 0..10 {
            b.ban(&format!("b{i}"), Duration::from_secs(60))
                .await
                .expect("written");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let key = a.redis_key().to_owned();
        assert_eq!(redis_cli(server.port(), &["ZCARD", &key]).trim(), "20");
        for round in 0..3 {
            let resyncs = a.stats().resyncs;
            redis_cli(server.port(), &["CLIENT", "KILL", "TYPE", "pubsub"]);
            wait(Duration::from_secs(3), "resync", || {
                a.stats().resyncs > resyncs
            })
            .await;
            tokio::time::sleep(Duration::from_millis(100)).await;
            eprintln!("round {round}: {:?}", a.stats());
        }
        assert_eq!(redis_cli(server.port(), &["ZCARD", &key]).trim(), "20");
        assert_eq!(
            a.stats().written_back,
            0,
            "Redis lost nothing, yet bans were written back: {:?}",
            a.stats()
        );
    });
}

/// A server (or proxy) that confirms SUBSCRIBE and then closes the
/// connection: the subscriber subscribes again at once, with no pause,
/// in a tight loop (each turn a new connection and a resync).
#[test]
fn a_subscription_that_ends_at_once_backs_off() {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binds");
    let port = listener.local_addr().expect("an address").port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 4096];
                loop {
                    let Ok(n) = stream.read(&mut buf) else { return };
                    if n == 0 {
                        return;
                    }
                    let text = String::from_utf8_lossy(&buf[..n]).to_ascii_uppercase();
                    // One reply per command (arrays start with '*').
                    let commands = text.matches('*').count();
                    let mut reply = Vec::new();
                    let mut subscribed = false;
                    for _ in 0..commands {
                        if text.contains("SUBSCRIBE") && !subscribed {
                            subscribed = true;
                            reply.extend_from_slice(
                                b"*3\r\n$9\r\nsubscribe\r\n$14\r\nrv:bans:events\r\n:1\r\n",
                            );
                        } else {
                            reply.extend_from_slice(b"-ERR no\r\n");
                        }
                    }
                    let _ = stream.write_all(&reply);
                    if subscribed {
                        return; // closes
                    }
                }
            });
        }
    });
    runtime().block_on(async {
        let bans = SharedBans::builder(format!("redis://127.0.0.1:{port}/"))
            .prefix("rv:")
            .build()
            .await
            .expect("builds");
        tokio::time::sleep(Duration::from_secs(1)).await;
        let subscriptions = bans.stats().subscriptions;
        eprintln!("in 1 s: {:?}", bans.stats());
        assert!(
            subscriptions <= 25,
            "{subscriptions} subscriptions in one second: no backoff"
        );
    });
}

/// A Redis user that may run the script (and publish) but not SUBSCRIBE:
/// `build` succeeds, the subscriber retries forever, and since the resync
/// only follows a subscription, the instance never reads the bans in
/// force either.
#[test]
fn an_instance_that_cannot_subscribe_still_learns_the_bans() {
    let _one = SERIAL.read().unwrap_or_else(PoisonError::into_inner);
    let Some(server) = RedisServer::start() else {
        return;
    };
    redis_cli(
        server.port(),
        &[
            "ACL",
            "SETUSER",
            "nosub",
            "on",
            ">pw",
            "~*",
            "&*",
            "+@all",
            "-subscribe",
        ],
    );
    runtime().block_on(async {
        let url = server.url();
        let a = instance(&url, "rv-acl:").await;
        a.ban("192.0.2.8", Duration::from_secs(600))
            .await
            .expect("written");
        let b = SharedBans::builder(format!("redis://nosub:pw@127.0.0.1:{}/", server.port()))
            .prefix("rv-acl:")
            .build()
            .await
            .expect("builds: no sign of trouble");
        b.ban("192.0.2.9", Duration::from_secs(600))
            .await
            .expect("B can write");
        tokio::time::sleep(Duration::from_secs(3)).await;
        eprintln!("B: {:?}", b.stats());
        assert!(
            b.banned("192.0.2.8").is_some(),
            "B never learns a ban in force: {:?}",
            b.stats()
        );
    });
}

/// "Redis did not answer: the lift holds here": the next resync puts the
/// ban back here too.
#[test]
fn a_failed_lift_holds_here() {
    let _one = SERIAL.read().unwrap_or_else(PoisonError::into_inner);
    let Some(server) = RedisServer::start() else {
        return;
    };
    runtime().block_on(async {
        let url = server.url();
        let a = instance(&url, "rv-fail:").await;
        redis_cli(
            server.port(),
            &["ACL", "SETUSER", "bee", "on", ">pw", "~*", "&*", "+@all"],
        );
        let b = SharedBans::builder(format!("redis://bee:pw@127.0.0.1:{}/", server.port()))
            .prefix("rv-fail:")
            .build()
            .await
            .expect("builds");
        wait(Duration::from_secs(2), "B subscribed", || {
            b.stats().resyncs > 0
        })
        .await;
        a.ban("192.0.2.3", Duration::from_secs(600))
            .await
            .expect("written");
        wait(Duration::from_secs(1), "B hears", || {
            b.banned("192.0.2.3").is_some()
        })
        .await;
        // Redis refuses B's lift (here: B may not run scripts for a moment).
        redis_cli(server.port(), &["ACL", "SETUSER", "bee", "-@scripting"]);
        assert!(b.lift("192.0.2.3").await.is_err());
        redis_cli(server.port(), &["ACL", "SETUSER", "bee", "+@all"]);
        assert_eq!(b.banned("192.0.2.3"), None);
        let resyncs = b.stats().resyncs;
        redis_cli(server.port(), &["CLIENT", "KILL", "TYPE", "pubsub"]);
        wait(Duration::from_secs(3), "B resyncs", || {
            b.stats().resyncs > resyncs
        })
        .await;
        assert_eq!(
            b.banned("192.0.2.3"),
            None,
            "the failed lift did not hold here: {:?}",
            b.stats()
        );
    });
}

/// More bans in force than `max_bans`: a resync reads the soonest to end,
/// the very ones the local bound drops first, so an instance that starts
/// (or resyncs) during a flood of short bans never learns the long ones
/// (an operator's year-long ban) and admits those clients.
#[test]
fn a_new_instance_learns_the_longest_bans() {
    let _one = SERIAL.read().unwrap_or_else(PoisonError::into_inner);
    let Some(server) = RedisServer::start() else {
        return;
    };
    runtime().block_on(async {
        let url = server.url();
        let a = instance(&url, "rv-long:").await;
        a.ban("203.0.113.1", Duration::from_secs(365 * 86_400))
            .await
            .expect("written");
        for i in 0..10 {
            a.ban(&format!("198.51.100.{i}"), Duration::from_secs(600))
                .await
                .expect("written");
        }
        let late = instance_with(&url, "rv-long:", 10).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            late.banned("203.0.113.1").is_some(),
            "the year-long ban is not held; {} short ones are",
            late.len()
        );
    });
}
