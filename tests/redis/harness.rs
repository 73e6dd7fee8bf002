//! The Redis harness (`tests/redis_support`) against the real binaries: a
//! server starts, answers, freezes and thaws, dies and comes back on its
//! port, and leaves no process behind; a three-master cluster forms and
//! spreads keys over all its masters.
//!
//! Skipped, with a notice, where `redis-server` is not installed, except
//! under `CI=true`.

use std::io::ErrorKind;
use std::time::{Duration, Instant};

use crate::redis_support::{RedisCluster, RedisServer, ping, process_exists, redis_cli};

/// How long a raw PING waits for its reply.
const PING_TIMEOUT: Duration = Duration::from_millis(200);

#[test]
fn server_answers_ping_set_and_get() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    assert_eq!(
        server.url(),
        format!("redis://127.0.0.1:{}/", server.port())
    );
    assert!(server.dir().is_dir());
    ping(server.port(), PING_TIMEOUT).expect("a started server answers PING");
    assert_eq!(redis_cli(server.port(), &["ping"]).trim(), "PONG");
    assert_eq!(
        redis_cli(server.port(), &["set", "greeting", "hello"]).trim(),
        "OK"
    );
    assert_eq!(
        redis_cli(server.port(), &["get", "greeting"]).trim(),
        "hello"
    );
    assert_eq!(redis_cli(server.port(), &["pttl", "greeting"]).trim(), "-1");
}

#[test]
fn paused_server_times_out_and_resumed_one_answers() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    server.pause();
    let started = Instant::now();
    let err = ping(server.port(), PING_TIMEOUT).expect_err("a paused server does not answer");
    assert!(
        matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
        "a paused server's PING should time out, not fail with {err:?}"
    );
    // Loosely: the point is that it waited, not the timer's precision.
    assert!(started.elapsed() >= PING_TIMEOUT / 2);
    server.resume();
    ping(server.port(), PING_TIMEOUT).expect("a resumed server answers PING");
}

#[test]
fn killed_server_restarts_on_its_port() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let port = server.port();
    let first = server.pid();
    redis_cli(port, &["set", "k", "v"]);
    server.kill();
    assert!(!process_exists(first), "a killed server is reaped");
    let err = ping(port, PING_TIMEOUT).expect_err("a killed server does not answer");
    assert_eq!(err.kind(), ErrorKind::ConnectionRefused);

    server.restart();
    assert_eq!(server.port(), port);
    assert_ne!(server.pid(), first);
    ping(port, PING_TIMEOUT).expect("a restarted server answers PING");
    // No persistence: the restarted server starts empty.
    assert_eq!(redis_cli(port, &["exists", "k"]).trim(), "0");

    // Restarting a paused server works too (it is killed first).
    server.pause();
    server.restart();
    ping(port, PING_TIMEOUT).expect("a server restarted from pause answers PING");
}

#[test]
fn dropped_server_leaves_no_process_or_directory() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let pid = server.pid();
    let dir = server.dir().to_path_buf();
    assert!(process_exists(pid));
    // Paused, so drop has to resume it (or kill it stopped).
    server.pause();
    drop(server);
    assert!(!process_exists(pid), "redis-server {pid} outlived its drop");
    assert!(!dir.exists(), "{} outlived its drop", dir.display());
}

#[test]
fn dropped_server_stops_when_the_test_panics() {
    let mut pid = None;
    let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let Some(server) = RedisServer::start() else {
            return;
        };
        pid = Some(server.pid());
        panic!("a failing test");
    }));
    let Some(pid) = pid else {
        return;
    };
    assert!(unwound.is_err());
    assert!(!process_exists(pid), "redis-server {pid} outlived a panic");
}

#[test]
fn cluster_forms_and_spreads_keys_over_three_masters() {
    let Some(cluster) = RedisCluster::start() else {
        return;
    };
    assert_eq!(cluster.nodes().len(), 3);
    assert_eq!(cluster.urls().len(), 3);
    for node in cluster.nodes() {
        let info = redis_cli(node.port(), &["cluster", "info"]);
        assert!(info.contains("cluster_state:ok"), "{info}");
        assert!(info.contains("cluster_slots_assigned:16384"), "{info}");
        assert!(cluster.urls().contains(&node.url()));
    }

    // One key to each master, by its slot: every node serves its share.
    // (`limit::a_cluster_shares_limits_and_spreads_keys` spreads 300
    // through the real client.)
    let entry = cluster.nodes()[0].port();
    for key in ["key{a}", "key{b}", "key{c}"] {
        let reply = redis_cli(entry, &["-c", "set", key, "v"]);
        assert_eq!(reply.trim(), "OK", "set {key}");
    }
    let counts = cluster.keys_per_node("key*");
    assert_eq!(counts.iter().sum::<usize>(), 3, "{counts:?}");
    assert!(
        counts.iter().all(|&count| count > 0),
        "keys should land on every master: {counts:?}"
    );
}
