//! The proxy's shared limits: two proxies on one real Redis hold one
//! client to one rate and one in-flight limit between them, and all
//! clients to one in-flight limit in all (`[clients] redis`), so a client
//! cannot double its budget by alternating between instances.

use crate::backend;
use crate::redis_support;

use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper::StatusCode;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use redis_support::RedisServer;

#[test]
fn two_proxies_share_one_client_budget() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let upstream = backend::Backend::start("a").await.expect("a backend");
        let config = format!(
            r#"
            [server]
            listen = "127.0.0.1:0"
            admin = "127.0.0.1:0"
            [clients]
            rate = {{ per_second = 1, burst = 5 }}
            redis = "{}"
            [[routes]]
            name = "all"
            path = "/"
            pool = "a"
            [pools.a]
            algorithm = "round_robin"
            backends = [{{ server = "{}" }}]
            "#,
            redis.url(),
            upstream.addr
        );
        let mut proxies = Vec::new();
        for _ in 0..2 {
            let config = loadbalance_proxy::Config::parse(&config).expect("a valid file");
            proxies.push(
                loadbalance_proxy::Proxy::start(config, None)
                    .await
                    .expect("starts"),
            );
        }
        let client = Client::builder(TokioExecutor::new()).build_http::<Empty<bytes::Bytes>>();
        let started = std::time::Instant::now();
        let (mut admitted, mut limited) = (0, 0);
        for round in 0..12 {
            let proxy = &proxies[round % 2];
            let uri = format!("http://{}/", proxy.addr()).parse().expect("a URI");
            let response = tokio::time::timeout(Duration::from_secs(5), client.get(uri))
                .await
                .expect("in time")
                .expect("an answer");
            match response.status() {
                StatusCode::OK => admitted += 1,
                StatusCode::TOO_MANY_REQUESTS => {
                    let retry_after: u64 = response.headers()["retry-after"]
                        .to_str()
                        .expect("text")
                        .parse()
                        .expect("seconds");
                    assert!((1..=2).contains(&retry_after), "retry-after {retry_after}");
                    limited += 1;
                }
                other => panic!("unexpected {other}"),
            }
            let _ = response.into_body().collect().await;
        }
        let elapsed = started.elapsed();
        // The burst of 5, plus one per second elapsed; separate budgets
        // would have admitted all 12.
        let bound = 5 + elapsed.as_secs() as usize + 1;
        assert!(
            (5..=bound).contains(&admitted),
            "{admitted} admitted in {elapsed:?}"
        );
        assert_eq!(admitted + limited, 12);
        assert_eq!(upstream.control.served() as usize, admitted);
        for proxy in proxies {
            assert_eq!(proxy.shutdown().await, 0);
        }
    });
}

/// Two proxies on one Redis, a backend that takes 600 ms: `concurrent`
/// requests at once from one client, alternating between the proxies,
/// under `[clients]` `limits`; the statuses answered, in two waves (the
/// second after the first has ended: its permits were given back).
fn two_waves(limits: &str, concurrent: usize) -> Option<[Vec<StatusCode>; 2]> {
    let redis = RedisServer::start()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    Some(runtime.block_on(async {
        let upstream = backend::Backend::start("a").await.expect("a backend");
        upstream
            .control
            .set_delay(Duration::from_millis(600), Duration::ZERO);
        let config = format!(
            r#"
            [server]
            listen = "127.0.0.1:0"
            admin = "127.0.0.1:0"
            [clients]
            {limits}
            redis = "{}"
            [[routes]]
            name = "all"
            path = "/"
            pool = "a"
            [pools.a]
            algorithm = "round_robin"
            backends = [{{ server = "{}" }}]
            "#,
            redis.url(),
            upstream.addr
        );
        let mut proxies = Vec::new();
        for _ in 0..2 {
            let config = loadbalance_proxy::Config::parse(&config).expect("a valid file");
            proxies.push(
                loadbalance_proxy::Proxy::start(config, None)
                    .await
                    .expect("starts"),
            );
        }
        let client = Client::builder(TokioExecutor::new()).build_http::<Empty<bytes::Bytes>>();
        let mut waves = [Vec::new(), Vec::new()];
        for wave in &mut waves {
            let mut requests = Vec::new();
            for n in 0..concurrent {
                let uri: hyper::Uri = format!("http://{}/", proxies[n % 2].addr())
                    .parse()
                    .expect("a URI");
                let client = client.clone();
                requests.push(tokio::spawn(async move {
                    let response = tokio::time::timeout(Duration::from_secs(5), client.get(uri))
                        .await
                        .expect("in time")
                        .expect("an answer");
                    let status = response.status();
                    let _ = response.into_body().collect().await;
                    status
                }));
            }
            for request in requests {
                wave.push(request.await.expect("no panic"));
            }
            wave.sort();
            released(redis.port());
        }
        for proxy in proxies {
            assert_eq!(proxy.shutdown().await, 0);
        }
        waves
    }))
}

/// Waits (at most 2 s) until Redis holds no in-flight permit: their
/// releases go out in the background after the answers.
fn released(port: u16) {
    let begun = std::time::Instant::now();
    loop {
        let keys =
            redis_support::redis_cli(port, &["--scan", "--pattern", "loadbalance:in_flight:*"]);
        let held: usize = keys
            .lines()
            .map(str::trim)
            .filter(|key| !key.is_empty())
            .map(|key| {
                redis_support::redis_cli(port, &["ZCARD", key])
                    .trim()
                    .parse::<usize>()
                    .expect("a number")
            })
            .sum();
        if held == 0 {
            return;
        }
        assert!(
            begun.elapsed() < Duration::from_secs(2),
            "{held} permits still held"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn two_proxies_share_one_client_in_flight_limit() {
    // Two in flight per client across both proxies: of six at once, two
    // pass (separate limits would let four through), then two again.
    let Some(waves) = two_waves("in_flight_per_client = 2", 6) else {
        return;
    };
    for wave in waves {
        let ok = wave.iter().filter(|s| **s == StatusCode::OK).count();
        let limited = wave
            .iter()
            .filter(|s| **s == StatusCode::TOO_MANY_REQUESTS)
            .count();
        assert_eq!((ok, limited), (2, 4), "{wave:?}");
    }
}

#[test]
fn two_proxies_share_one_in_flight_limit_in_all() {
    // Three in flight in all across both proxies: of six at once, three
    // pass and three are told the server is busy, twice.
    let Some(waves) = two_waves("in_flight = 3", 6) else {
        return;
    };
    for wave in waves {
        let ok = wave.iter().filter(|s| **s == StatusCode::OK).count();
        let busy = wave
            .iter()
            .filter(|s| **s == StatusCode::SERVICE_UNAVAILABLE)
            .count();
        assert_eq!((ok, busy), (3, 3), "{wave:?}");
    }
}

#[test]
fn a_redis_with_nothing_to_share_is_a_configuration_error() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let config = r#"
            [server]
            listen = "127.0.0.1:0"
            [clients]
            redis = "redis://127.0.0.1:1/"
            [[routes]]
            name = "all"
            path = "/"
            pool = "a"
            [pools.a]
            algorithm = "round_robin"
            backends = [{ server = "127.0.0.1:1" }]
            "#;
        let config = loadbalance_proxy::Config::parse(config).expect("a valid file");
        let Err(error) = loadbalance_proxy::Proxy::start(config, None).await else {
            panic!("started with nothing to share");
        };
        let text = error.to_string();
        assert!(
            text.contains("clients.redis") && text.contains("none is set"),
            "{text}"
        );
    });
}

/// A raw HTTP/1.1 exchange with `address`: the status.
async fn status_of(address: std::net::SocketAddr, method: &str, path: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(address)
        .await
        .expect("connects");
    let head = format!("{method} {path} HTTP/1.1\r\nHost: proxy\r\nConnection: close\r\n\r\n");
    stream.write_all(head.as_bytes()).await.expect("writes");
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await;
    let text = String::from_utf8_lossy(&answer);
    text.split(' ')
        .nth(1)
        .and_then(|status| status.parse().ok())
        .unwrap_or_else(|| panic!("no status in {text:?}"))
}

#[test]
fn a_ban_on_one_proxy_is_a_ban_on_every_proxy() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let upstream = backend::Backend::start("a").await.expect("a backend");
        upstream
            .control
            .set_delay(Duration::from_millis(500), Duration::ZERO);
        // One request in flight per client; the first refusal bans for a
        // minute. Nothing else refuses: a 403 is a ban, a 429 the limit.
        let config = format!(
            r#"
            [server]
            listen = "127.0.0.1:0"
            admin = "127.0.0.1:0"
            [clients]
            in_flight_per_client = 1
            ban = {{ denials = 1, window_ms = 10000, ban_ms = 60000 }}
            redis = "{}"
            [[routes]]
            name = "all"
            path = "/"
            pool = "a"
            [pools.a]
            algorithm = "round_robin"
            backends = [{{ server = "{}" }}]
            "#,
            redis.url(),
            upstream.addr
        );
        let mut proxies = Vec::new();
        for _ in 0..2 {
            let config = loadbalance_proxy::Config::parse(&config).expect("a valid file");
            proxies.push(
                loadbalance_proxy::Proxy::start(config, None)
                    .await
                    .expect("starts"),
            );
        }
        let (a, b) = (&proxies[0], &proxies[1]);
        // A second request in flight on A: refused, and one refusal bans.
        let first = tokio::spawn(status_of(a.addr(), "GET", "/"));
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(status_of(a.addr(), "GET", "/").await, 403);
        // Once the first has ended, nothing of B's own refuses the client:
        // B's 403 is the shared ban.
        assert_eq!(first.await.expect("joins"), 200);
        assert_eq!(
            status_of(b.addr(), "GET", "/").await,
            403,
            "B did not hear of the ban"
        );
        // Pardoned by hand on B's admin port: served on A again.
        assert_eq!(
            status_of(b.admin_addr(), "DELETE", "/bans/127.0.0.1").await,
            200
        );
        let begun = std::time::Instant::now();
        while status_of(a.addr(), "GET", "/").await != 200 {
            assert!(
                begun.elapsed() < Duration::from_secs(2),
                "A still refuses the pardoned client"
            );
        }
        // Banned by hand on A's admin port: refused on B.
        assert_eq!(
            status_of(a.admin_addr(), "PUT", "/bans/127.0.0.1?seconds=60").await,
            200
        );
        // A served request takes the backend's 500 ms: B is asked once,
        // 50 ms on (the ban takes a few to arrive).
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(
            status_of(b.addr(), "GET", "/").await,
            403,
            "B serves a client banned by hand"
        );
        assert_eq!(
            status_of(a.admin_addr(), "PUT", "/bans/127.0.0.1?seconds=0").await,
            400
        );
        assert_eq!(
            status_of(a.admin_addr(), "PUT", "/bans/not-an-address?seconds=5").await,
            400
        );
        for proxy in proxies {
            assert_eq!(proxy.shutdown().await, 0);
        }
    });
}
