//! The proxy's shared limit: two proxies on one real Redis hold
//! one client to one rate between them (`[clients] redis`), so a client
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
