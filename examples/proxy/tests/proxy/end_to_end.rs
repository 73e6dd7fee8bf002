//! The reverse proxy end to end over loopback: real backends
//! (`tests/support/backend.rs`) behind a proxy started in
//! process, driven by hyper's clients and by raw TCP for what a well-behaved
//! client never sends. Each test starts its own backends and proxy on
//! ephemeral ports and is bounded in time; counts are exact where the
//! algorithm makes them exact (round-robin over two backends alternates).

use crate::backend;
use crate::harness::*;

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use loadbalance::BackendState;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use backend::Backend;
use loadbalance_proxy::{Config, Proxy};

// 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routing_follows_nginx_precedence() {
    bounded(async {
        let names = ["exact", "static", "png", "api", "tenants", "web"];
        let mut backends = Vec::new();
        for name in names {
            backends.push(backend(name).await);
        }
        let mut toml = server_section("");
        for (name, host, path) in [
            ("exact", "*", "= /exact"),
            ("static", "*", "^~ /static/"),
            ("png", "*", "~ \\\\.png$"),
            ("api", "*", "/api/"),
            ("tenants", "*.example.com", "/"),
            ("web", "*", "/"),
        ] {
            toml.push_str(&format!(
                "\n[[routes]]\nname = \"{name}\"\nhost = \"{host}\"\npath = \"{path}\"\npool = \"{name}\"\n"
            ));
        }
        for backend in &backends {
            toml.push_str(&pool_section(&backend.name, "", &[backend]));
        }
        let proxy = start(&toml).await;
        let client = client();
        for (host, path, expected) in [
            ("site.test", "/exact", "exact"),
            ("site.test", "/exact/more", "web"),
            ("site.test", "/static/logo.png", "static"),
            ("site.test", "/img/logo.png", "png"),
            ("site.test", "/api/logo.png", "png"),
            ("site.test", "/api/users", "api"),
            ("site.test", "/", "web"),
            ("shop.example.com", "/api/users", "tenants"),
            ("shop.example.com", "/exact", "tenants"),
            ("SHOP.Example.com:8080", "/cart", "tenants"),
            ("example.com", "/cart", "web"),
        ] {
            let reply = get(&client, proxy.addr(), host, path).await;
            assert_eq!(reply.status, StatusCode::OK, "{host} {path}");
            assert_eq!(reply.body, expected, "{host} {path}");
        }
        for backend in &backends {
            let expected = match backend.name.as_str() {
                "web" => 3,
                "tenants" => 3,
                "png" => 2,
                _ => 1,
            };
            assert_eq!(backend.control.served(), expected, "{}", backend.name);
        }
        assert_eq!(proxy.shutdown().await, 0);
    })
    .await;
}

// 2 (the converse) and 9.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trusted_proxies_give_each_forwarded_client_its_own_budget() {
    bounded(async {
        let web = backend("web").await;
        let toml = format!(
            "{}[clients]\ntrusted_proxies = [\"127.0.0.1/32\"]\ndeny = [\"10.9.0.0/16\"]\n\
             rate = {{ per_second = 1, burst = 3 }}\n{}{}",
            server_section(""),
            catch_all("web"),
            pool_section("web", "", &[&web])
        );
        let proxy = start(&toml).await;
        let client = client();
        let status = |xff: Option<&'static str>| {
            let client = client.clone();
            let addr = proxy.addr();
            async move {
                let mut builder = build(Method::GET, addr, "site.test", "/");
                if let Some(xff) = xff {
                    builder = builder.header("x-forwarded-for", xff);
                }
                send(
                    &client,
                    builder.body(Full::default()).expect("a valid request"),
                )
                .await
            }
        };
        let mut first = Vec::new();
        for _ in 0..4 {
            first.push(status(Some("10.0.0.1")).await.status.as_u16());
        }
        assert_eq!(first, [200, 200, 200, 429]);
        // The proxy itself is trusted, so the client is the address before it.
        let chained = status(Some("10.0.0.1, 127.0.0.1")).await;
        assert_eq!(chained.status, StatusCode::TOO_MANY_REQUESTS);
        assert!(retry_after(&chained) >= 1);
        let mut second = Vec::new();
        for _ in 0..3 {
            second.push(status(Some("10.0.0.2")).await.status.as_u16());
        }
        assert_eq!(second, [200, 200, 200], "10.0.0.2 has a budget of its own");
        // No header: the peer itself, with its own budget too.
        assert_eq!(status(None).await.status, StatusCode::OK);
        // Deny-listed.
        let denied = status(Some("10.9.1.1")).await;
        assert_eq!(denied.status, StatusCode::FORBIDDEN);
        assert_eq!(proxy.counters().denied.load(Relaxed), 1);
        assert_eq!(web.control.served(), 7);
        assert_eq!(proxy.shutdown().await, 0);
    })
    .await;
}

// 6.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_requests_without_a_body_are_retried_elsewhere() {
    bounded(async {
        let good = backend("good").await;
        let bad = backend("bad").await;
        bad.control.down.store(true, Relaxed);
        let toml = format!(
            "{}{}{}",
            server_section("attempts = 2\nrequest_buffer_bytes = 4"),
            catch_all("web"),
            // Never ejected: every request keeps alternating.
            pool_section("web", "health = { max_fails = 0 }", &[&good, &bad])
        );
        let proxy = start(&toml).await;
        let client = client();
        for _ in 0..10 {
            let reply = get(&client, proxy.addr(), "site.test", "/").await;
            assert_eq!(reply.status, StatusCode::OK);
            assert_eq!(reply.body, "good");
        }
        let retries = proxy.counters().retries.load(Relaxed);
        assert_eq!(good.control.ok.load(Relaxed), 10);
        assert_eq!(retries, bad.control.failed.load(Relaxed));
        assert!(
            retries >= 4,
            "round-robin sent bad the first try {retries} times"
        );

        // A body read whole before the pick (within request_buffer_bytes,
        // 4 here) is replayed for an idempotent PUT; a POST never is, nor
        // is a body streamed past the buffer: of two such requests in a
        // row, round-robin sends one to bad, whose 503 the client sees.
        let unretried = |bad: &Backend| {
            bad.control.failed.load(Relaxed) - proxy.counters().retries.load(Relaxed)
        };
        let before = unretried(&bad);
        for (method, payload, replayed) in [
            (Method::POST, "ok", false),
            (Method::PUT, "ok", true),
            (Method::PUT, "payload", false),
        ] {
            let mut replies = Vec::new();
            for _ in 0..2 {
                let request = build(method.clone(), proxy.addr(), "site.test", "/")
                    .body(Full::new(Bytes::from_static(payload.as_bytes())))
                    .expect("a valid request");
                let reply = send(&client, request).await;
                replies.push((reply.status.as_u16(), reply.body));
            }
            replies.sort();
            let expected = if replayed {
                [(200, "good".to_owned()), (200, "good".to_owned())]
            } else {
                [(200, "good".to_owned()), (503, "bad".to_owned())]
            };
            assert_eq!(replies, expected, "{method} {payload}");
        }
        // Every failure of bad was retried but the two answers passed on.
        assert_eq!(unretried(&bad), before + 2);
        assert_eq!(proxy.shutdown().await, 0);
    })
    .await;
}

// 7.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_backend_is_ejected_then_recovers() {
    bounded(async {
        let good = backend("good").await;
        let bad = backend("bad").await;
        bad.control.down.store(true, Relaxed);
        let toml = format!(
            "{}{}{}",
            server_section("attempts = 1"),
            catch_all("web"),
            pool_section(
                "web",
                "health = { max_fails = 1, fail_timeout_ms = 500 }",
                &[&good, &bad]
            )
        );
        let proxy = start(&toml).await;
        let client = client();
        // Round-robin reaches bad within two requests; its 503 ejects it.
        let mut statuses = Vec::new();
        for _ in 0..2 {
            statuses.push(
                get(&client, proxy.addr(), "site.test", "/")
                    .await
                    .status
                    .as_u16(),
            );
        }
        statuses.sort_unstable();
        assert_eq!(statuses, [200, 503]);
        let ejected_at = Instant::now();
        assert_eq!(state_of(&proxy, "web", &bad), BackendState::Ejected);
        let picks = picks_of(&proxy, "web", &bad);
        for _ in 0..10 {
            let reply = get(&client, proxy.addr(), "site.test", "/").await;
            assert_eq!(
                (reply.status, reply.body.as_str()),
                (StatusCode::OK, "good")
            );
        }
        assert!(
            ejected_at.elapsed() < Duration::from_millis(450),
            "the ten requests outlasted the ejection: the test is too slow to tell"
        );
        assert_eq!(
            bad.control.served(),
            1,
            "no request reached it while ejected"
        );
        assert_eq!(picks_of(&proxy, "web", &bad), picks);
        assert_eq!(state_of(&proxy, "web", &bad), BackendState::Ejected);

        // Fixed, and the cooldown over: it takes picks again.
        bad.control.down.store(false, Relaxed);
        tokio::time::sleep(Duration::from_millis(600)).await;
        for _ in 0..10 {
            let reply = get(&client, proxy.addr(), "site.test", "/").await;
            assert_eq!(reply.status, StatusCode::OK);
        }
        assert!(
            bad.control.ok.load(Relaxed) >= 1,
            "the recovered backend is picked"
        );
        assert_eq!(state_of(&proxy, "web", &bad), BackendState::Up);
        assert_eq!(proxy.shutdown().await, 0);
    })
    .await;
}

// 8.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn active_checks_mark_backends_down_and_up() {
    bounded(async {
        let good = backend("good").await;
        let bad = backend("bad").await;
        let toml = format!(
            "{}{}{}\n[checks.web]\npath = \"/healthz\"\ninterval_ms = 50\ntimeout_ms = 200\n\
             fall = 2\nrise = 2\n",
            server_section(""),
            catch_all("web"),
            pool_section("web", "health = { max_fails = 0 }", &[&good, &bad])
        );
        let proxy = start(&toml).await;
        let client = client();
        let within = Duration::from_secs(2);
        assert!(
            eventually(within, || bad.control.health_checks.load(Relaxed) >= 2).await,
            "the checks run"
        );
        assert_eq!(state_of(&proxy, "web", &bad), BackendState::Up);

        bad.control.unhealthy.store(true, Relaxed);
        assert!(
            eventually(within, || state_of(&proxy, "web", &bad)
                == BackendState::Down)
            .await,
            "marked down after two failed checks"
        );
        let served = bad.control.served();
        for _ in 0..10 {
            let reply = get(&client, proxy.addr(), "site.test", "/").await;
            assert_eq!(
                (reply.status, reply.body.as_str()),
                (StatusCode::OK, "good")
            );
        }
        assert_eq!(
            bad.control.served(),
            served,
            "no request reached it while down"
        );
        // Counted a moment after the state is set.
        let marked_down = || proxy.counters().marked_down.load(Relaxed);
        assert!(
            eventually(within, || marked_down() == 1).await,
            "one mark down counted, not {}",
            marked_down()
        );

        bad.control.unhealthy.store(false, Relaxed);
        assert!(
            eventually(within, || state_of(&proxy, "web", &bad) == BackendState::Up).await,
            "marked up after two good checks"
        );
        for _ in 0..10 {
            let reply = get(&client, proxy.addr(), "site.test", "/").await;
            assert_eq!(reply.status, StatusCode::OK);
        }
        assert_eq!(bad.control.served(), served + 5, "round-robin again");
        let marked_up = || proxy.counters().marked_up.load(Relaxed);
        assert!(
            eventually(within, || marked_up() == 1).await,
            "one mark up counted, not {}",
            marked_up()
        );
        assert_eq!(proxy.shutdown().await, 0);
    })
    .await;
}

// Dropping a pool's [checks] releases the backends the checks held down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_a_check_releases_the_backends_it_held_down() {
    bounded(async {
        let good = backend("good").await;
        let bad = backend("bad").await;
        let base = web_config("", "health = { max_fails = 0 }", &[&good, &bad]);
        let checked = format!(
            "{base}\n[checks.web]\npath = \"/healthz\"\ninterval_ms = 50\ntimeout_ms = 200\n\
             fall = 1\nrise = 1\n"
        );
        let proxy = start(&checked).await;
        bad.control.unhealthy.store(true, Relaxed);
        assert!(
            eventually(Duration::from_secs(2), || state_of(&proxy, "web", &bad)
                == BackendState::Down)
            .await,
            "marked down by the check"
        );
        // The operator drops the check; the backend is healthy again.
        proxy
            .apply(Config::parse(&base).expect("parses"))
            .await
            .expect("applies");
        bad.control.unhealthy.store(false, Relaxed);
        let released = eventually(Duration::from_secs(2), || {
            state_of(&proxy, "web", &bad) == BackendState::Up
        })
        .await;
        assert!(
            released,
            "with no check left, the configured state (up) rules; still {:?}",
            state_of(&proxy, "web", &bad)
        );
        proxy.shutdown().await;
    })
    .await;
}

fn reload_config(a: &Backend, b: Option<&Backend>, weight_a: u32) -> String {
    let mut backends = format!("{{ server = \"{}\", weight = {weight_a} }}", a.addr);
    if let Some(b) = b {
        backends.push_str(&format!(", {{ server = \"{}\" }}", b.addr));
    }
    format!(
        "{}{}\n[pools.web]\nalgorithm = \"round_robin\"\nbackends = [{backends}]\n",
        server_section(""),
        catch_all("web"),
    )
}

// 10.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_under_load_keeps_the_pool_and_loses_no_request() {
    bounded(async {
        let a = backend("a").await;
        let b = backend("b").await;
        let file = TempFile::new("reload");
        file.write(&reload_config(&a, None, 1));
        let proxy = Proxy::from_file(&file.0)
            .await
            .expect("starts from the file");
        let pool = proxy.pool("web").expect("the pool runs");
        let addr = proxy.addr();

        let mut load = tokio::task::JoinSet::new();
        for _ in 0..4 {
            let client = client();
            load.spawn(async move {
                let mut failures = Vec::new();
                for _ in 0..200 {
                    let reply = get(&client, addr, "site.test", "/").await;
                    if reply.status != StatusCode::OK {
                        failures.push((reply.status, reply.body));
                    }
                }
                failures
            });
        }
        assert!(
            eventually(Duration::from_secs(3), || a.control.served() >= 100).await,
            "the load runs"
        );
        let before = picks_of(&proxy, "web", &a);
        file.write(&reload_config(&a, Some(&b), 2));
        proxy.reload().await.expect("the new file applies");
        let mut failures = Vec::new();
        while let Some(done) = load.join_next().await {
            failures.extend(done.expect("a load task"));
        }
        assert!(failures.is_empty(), "failed under reload: {failures:?}");
        assert_eq!(a.control.served() + b.control.served(), 800);

        let after = proxy.pool("web").expect("the pool runs");
        assert!(Arc::ptr_eq(&pool, &after), "updated in place, not rebuilt");
        assert_eq!(after.len(), 2);
        let stats_a = after
            .stats_of(a.addr.to_string().as_str())
            .expect("a is in the pool");
        assert!(
            stats_a.picks >= before,
            "a's picks kept: {} < {before}",
            stats_a.picks
        );
        // Pick counts are plain increments (documented): two workers picking
        // one backend in the same instant may count one pick, never more.
        let counted = |picks: u64, served: u64| picks <= served && picks >= served - served / 20;
        assert!(
            counted(stats_a.picks, a.control.served()),
            "every pick of a counted: {} of {}",
            stats_a.picks,
            a.control.served()
        );
        assert_eq!(stats_a.weight, 2);
        assert!(b.control.served() > 0, "the added backend takes traffic");
        let picks_b = picks_of(&proxy, "web", &b);
        assert!(
            counted(picks_b, b.control.served()),
            "every pick of b counted: {picks_b} of {}",
            b.control.served()
        );
        assert_eq!(proxy.counters().reloads.load(Relaxed), 1);

        // Bad files change nothing.
        let failed = |proxy: &Proxy| {
            sample(
                &parse_metrics(&proxy.metrics()),
                "proxy_reloads_failed_total",
                &[],
            )
        };
        assert_eq!(failed(&proxy), Some(0.0));
        file.write("[server\nlisten = ");
        assert!(proxy.reload().await.is_err(), "invalid TOML is rejected");
        assert_eq!(failed(&proxy), Some(1.0));
        let unknown_pool =
            reload_config(&a, Some(&b), 1).replace("pool = \"web\"", "pool = \"nope\"");
        file.write(&unknown_pool);
        assert!(
            proxy.reload().await.is_err(),
            "a route to no pool is rejected"
        );
        assert_eq!(failed(&proxy), Some(2.0));
        assert_eq!(proxy.counters().reloads.load(Relaxed), 1);
        let client = client();
        for _ in 0..6 {
            let reply = get(&client, addr, "site.test", "/").await;
            assert_eq!(reply.status, StatusCode::OK);
        }
        let running = proxy.pool("web").expect("the pool runs");
        assert!(Arc::ptr_eq(&pool, &running));
        assert_eq!(running.len(), 2);
        assert_eq!(
            running
                .stats_of(a.addr.to_string().as_str())
                .expect("a is in the pool")
                .weight,
            2,
            "the old configuration keeps serving"
        );
        assert_eq!(proxy.shutdown().await, 0);
    })
    .await;
}

// A reload may not change a running pool's algorithm: max_conns holds across it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_algorithm_change_is_refused_so_max_conns_holds_for_requests_in_flight() {
    bounded(async {
        let web = slow_web(Duration::from_millis(600)).await;
        let toml = |algorithm: &str| {
            format!(
                "{}{}\n[pools.web]\nalgorithm = \"{algorithm}\"\n\
                 backends = [{{ server = \"{}\", max_conns = 1 }}]\n",
                server_section("pick_timeout_ms = 3000"),
                catch_all("web"),
                web.addr
            )
        };
        let proxy = start(&toml("round_robin")).await;
        let addr = proxy.addr();
        let first = tokio::spawn(async move { get(&client(), addr, "site.test", "/").await });
        assert!(in_flight_at(&web, 1).await);
        // A running pool keeps its algorithm: a new one would not count
        // the request in flight against max_conns. The reload is refused
        // and the old pool keeps serving.
        let refused = proxy
            .apply(Config::parse(&toml("least_conn")).expect("parses"))
            .await;
        assert!(
            matches!(&refused, Err(e) if e.to_string().contains("pools.web.algorithm")),
            "{refused:?}"
        );
        let second = tokio::spawn(async move { get(&client(), addr, "site.test", "/").await });
        assert_eq!(first.await.expect("first").status, StatusCode::OK);
        assert_eq!(second.await.expect("second").status, StatusCode::OK);
        assert_eq!(
            web.control.peak_in_flight.load(Relaxed),
            1,
            "max_conns = 1 held across the reload"
        );
        proxy.shutdown().await;
    })
    .await;
}

// 11.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_requests_in_flight() {
    bounded(async {
        let web = slow_web(Duration::from_millis(300)).await;
        let toml = web_config("shutdown_grace_ms = 3000", "", &[&web]);
        let proxy = start(&toml).await;
        let addr = proxy.addr();
        let mut requests = tokio::task::JoinSet::new();
        for _ in 0..5 {
            // A client each: five connections.
            let client = client();
            requests.spawn(async move { get(&client, addr, "site.test", "/slow").await });
        }
        assert!(
            in_flight_at(&web, 5).await,
            "five requests reach the backend"
        );
        let started = Instant::now();
        let cut = proxy.shutdown().await;
        assert_eq!(cut, 0, "no connection had to be cut");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "shutdown waited for the requests, not the whole grace"
        );
        let mut done = 0;
        while let Some(reply) = requests.join_next().await {
            let reply = reply.expect("a request task");
            assert_eq!((reply.status, reply.body.as_str()), (StatusCode::OK, "web"));
            done += 1;
        }
        assert_eq!(done, 5);
        assert_eq!(web.control.ok.load(Relaxed), 5);
        assert!(
            TcpStream::connect(addr).await.is_err(),
            "no new connection after shutdown"
        );
    })
    .await;
}

// 12.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_what_the_backends_served() {
    bounded(async {
        let a = backend("a").await;
        let b = backend("b").await;
        let toml = web_config("", "", &[&a, &b]);
        let proxy = start(&toml).await;
        let client = client();
        for _ in 0..21 {
            let reply = get(&client, proxy.addr(), "site.test", "/").await;
            assert_eq!(reply.status, StatusCode::OK);
        }
        let reply = get(&client, proxy.admin_addr(), "admin", "/metrics").await;
        assert_eq!(reply.status, StatusCode::OK);
        let scrape = parse_metrics(&reply.body);
        let mut total = 0.0;
        for backend in [&a, &b] {
            let addr = backend.addr.to_string();
            let labels = [("pool", "web"), ("backend", addr.as_str())];
            let picks = sample(&scrape, "loadbalance_backend_picks_total", &labels)
                .expect("picks of each backend");
            assert_eq!(picks, backend.control.served() as f64, "{}", backend.name);
            assert_eq!(
                sample(&scrape, "loadbalance_backend_active", &labels),
                Some(0.0)
            );
            total += picks;
        }
        assert_eq!(total, 21.0);
        assert!(
            a.control.served().abs_diff(b.control.served()) == 1,
            "round-robin"
        );
        let responses = |class: &str| sample(&scrape, "proxy_responses_total", &[("class", class)]);
        assert_eq!(responses("2xx"), Some(21.0));
        for class in ["1xx", "3xx", "4xx", "5xx"] {
            assert_eq!(responses(class), Some(0.0), "{class}");
        }
        assert_eq!(sample(&scrape, "proxy_retries_total", &[]), Some(0.0));
        let other = get(&client, proxy.admin_addr(), "admin", "/other").await;
        assert_eq!(other.status, StatusCode::NOT_FOUND);
        assert_eq!(proxy.shutdown().await, 0);
    })
    .await;
}

// 13.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backends_see_forwarding_headers_and_no_hop_by_hop_ones() {
    bounded(async {
        let web = backend("web").await;
        let toml = web_config("", "", &[&web]);
        let proxy = start(&toml).await;
        // hyper's connection-level client sends the headers as given.
        let stream = TcpStream::connect(proxy.addr()).await.expect("connects");
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("handshake");
        let driver = tokio::spawn(connection);
        let request = Request::builder()
            .uri("/headers")
            .header("host", "h.test")
            .header("x-forwarded-for", "203.0.113.7")
            .header("connection", "x-secret")
            .header("x-secret", "1")
            .header("keep-alive", "timeout=5")
            .header("te", "trailers")
            .header("upgrade", "websocket")
            .header("proxy-authorization", "Basic c2VjcmV0")
            .header("x-kept", "yes")
            .body(Empty::<Bytes>::new())
            .expect("a valid request");
        let response = sender.send_request(request).await.expect("an answer");
        assert_eq!(response.status(), StatusCode::OK);
        let body = response.into_body().collect().await.expect("the body");
        assert_eq!(body.to_bytes(), "web");
        drop(sender);
        driver.abort();

        let seen = last_headers(&web);
        let text = |name: &str| {
            seen.get(name)
                .map(|v| v.to_str().expect("ascii").to_owned())
        };
        let xff = text("x-forwarded-for").expect("x-forwarded-for");
        assert!(xff.ends_with("127.0.0.1"), "{xff}");
        assert_eq!(xff, "203.0.113.7, 127.0.0.1");
        let forwarded: Vec<&str> = seen
            .get_all("forwarded")
            .iter()
            .map(|v| v.to_str().expect("ascii"))
            .collect();
        assert_eq!(forwarded, ["for=127.0.0.1;proto=http;host=\"h.test\""]);
        assert_eq!(text("x-kept").as_deref(), Some("yes"));
        for hop in [
            "connection",
            "x-secret",
            "keep-alive",
            "te",
            "upgrade",
            "proxy-authorization",
        ] {
            assert!(
                !seen.contains_key(hop),
                "{hop} reached the backend: {seen:?}"
            );
        }
        assert_eq!(proxy.shutdown().await, 0);
    })
    .await;
}

// A `Connection: host` header cannot strip the Host the proxy routed on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_header_cannot_remove_host() {
    bounded(async {
        let web = backend("web").await;
        let proxy = single(&web, "").await;
        let request = b"GET / HTTP/1.1\r\nHost: shop.test\r\nConnection: close, host\r\n\r\n";
        let answer = raw(proxy.addr(), request, Duration::from_secs(2)).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
        let seen = last_headers(&web);
        assert_eq!(
            seen.get("host")
                .map(|h| h.to_str().expect("ascii").to_owned()),
            Some("shop.test".to_owned())
        );
        proxy.shutdown().await;
    })
    .await;
}

// 14.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_stream_and_hold_the_backend_until_they_end() {
    bounded(async {
        let web = backend("web").await;
        let toml = web_config("", "", &[&web]);
        let proxy = start(&toml).await;
        let pool = proxy.pool("web").expect("the pool runs");
        let id = web.addr.to_string();
        let client = client();
        let started = Instant::now();
        let request = build(Method::GET, proxy.addr(), "site.test", "/stream?chunks=20")
            .body(Full::default())
            .expect("a valid request");
        let response = client.request(request).await.expect("an answer");
        assert_eq!(response.status(), StatusCode::OK);
        let mut body = response.into_body();
        let mut received = Vec::new();
        let mut first_at = None;
        let mut frames = 0;
        while let Some(frame) = body.frame().await {
            let frame = frame.expect("a frame");
            if let Ok(data) = frame.into_data() {
                if first_at.is_none() {
                    first_at = Some(started.elapsed());
                }
                frames += 1;
                received.extend_from_slice(&data);
                // Held while the body streams (the end is only known
                // after the last chunk).
                assert_eq!(pool.active_of(id.as_str()), Some(1), "held while streaming");
            }
        }
        let total = started.elapsed();
        let first_at = first_at.expect("at least one frame");
        let expected: String = (0..20).map(|i| format!("chunk {i}\n")).collect();
        assert_eq!(String::from_utf8_lossy(&received), expected);
        assert!(
            total >= Duration::from_millis(190),
            "the backend takes 190 ms: {total:?}"
        );
        assert!(
            first_at < Duration::from_millis(120) && first_at * 2 < total,
            "the first chunk came at {first_at:?} of {total:?}: buffered"
        );
        assert!(frames >= 10, "{frames} frames for 20 chunks 10 ms apart");
        assert!(
            eventually(Duration::from_millis(500), || pool.active_of(id.as_str())
                == Some(0))
            .await,
            "released when the body ended"
        );
        let stats = pool.stats_of(id.as_str()).expect("in the pool");
        assert_eq!((stats.picks, stats.failures), (1, 0));
        assert_eq!(proxy.shutdown().await, 0);
    })
    .await;
}

// 14, the client's side: one that goes away mid-body frees the backend.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_leaving_mid_stream_releases_the_backend() {
    bounded(async {
        let web = backend("web").await;
        let proxy = single(&web, "").await;
        let pool = proxy.pool("web").expect("the pool runs");
        let id = web.addr.to_string();
        let request = build(Method::GET, proxy.addr(), "site.test", "/stream?chunks=100")
            .body(Full::default())
            .expect("a valid request");
        let response = client().request(request).await.expect("an answer");
        let mut body = response.into_body();
        let first = body.frame().await.expect("a first frame").expect("data");
        assert!(first.is_data());
        assert_eq!(pool.active_of(id.as_str()), Some(1));
        drop(body);
        assert!(
            eventually(Duration::from_millis(800), || pool.active_of(id.as_str())
                == Some(0))
            .await,
            "released once the client is gone"
        );
        let stats = pool.stats_of(id.as_str()).expect("in the pool");
        assert_eq!(
            stats.failures, 0,
            "a client leaving is not the backend's fault"
        );
        assert_eq!(proxy.shutdown().await, 0);
    })
    .await;
}

// A client's in-flight slot is held until its response body ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_per_client_counts_until_the_body_ends() {
    bounded(async {
        let web = backend("web").await;
        let toml = format!(
            "{}[clients]\nin_flight_per_client = 1\n{}{}",
            server_section(""),
            catch_all("web"),
            pool_section("web", "", &[&web])
        );
        let proxy = start(&toml).await;
        let request = build(Method::GET, proxy.addr(), "site.test", "/stream?chunks=20")
            .body(Full::default())
            .expect("a valid request");
        let response = client().request(request).await.expect("an answer");
        let mut body = response.into_body();
        body.frame().await.expect("a first frame").expect("data");
        let other = client();
        let refused = get(&other, proxy.addr(), "site.test", "/").await;
        assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
        while let Some(frame) = body.frame().await {
            frame.expect("a frame");
        }
        // The slot is freed as the last frame is polled, before the client
        // reads the end: allow a moment.
        tokio::time::sleep(Duration::from_millis(20)).await;
        let admitted = get(&other, proxy.addr(), "site.test", "/").await;
        assert_eq!(admitted.status, StatusCode::OK);
        assert_eq!(proxy.counters().in_flight.load(Relaxed), 1);
        assert_eq!(proxy.shutdown().await, 0);
    })
    .await;
}

// 11, past the grace: the connection is cut and counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_cuts_what_outlasts_the_grace() {
    bounded(async {
        let web = slow_web(Duration::from_secs(3)).await;
        let proxy = single(&web, "shutdown_grace_ms = 200").await;
        let addr = proxy.addr();
        let client = client();
        let slow = tokio::spawn(async move {
            let request = build(Method::GET, addr, "site.test", "/")
                .body(Full::default())
                .expect("a valid request");
            client.request(request).await.map(|r| r.status())
        });
        assert!(in_flight_at(&web, 1).await);
        let started = Instant::now();
        assert_eq!(proxy.shutdown().await, 1, "one connection cut");
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(150) && took < Duration::from_secs(1),
            "{took:?}"
        );
        let outcome = slow.await.expect("the request task");
        assert!(outcome.is_err(), "the cut request fails: {outcome:?}");
    })
    .await;
}

// 13: several X-Forwarded-For lines are one list (RFC 9110 §5.3).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_forwarded_for_line_is_kept() {
    bounded(async {
        let web = backend("web").await;
        let proxy = single(&web, "").await;
        let request = build(Method::GET, proxy.addr(), "site.test", "/")
            .header("x-forwarded-for", "203.0.113.1")
            .header("x-forwarded-for", "203.0.113.2")
            .body(Full::default())
            .expect("a valid request");
        let reply = send(&client(), request).await;
        assert_eq!(reply.status, StatusCode::OK);
        let seen = last_headers(&web);
        let chain: Vec<&str> = seen
            .get_all("x-forwarded-for")
            .iter()
            .map(|v| v.to_str().expect("ascii"))
            .collect();
        assert_eq!(chain, ["203.0.113.1, 203.0.113.2, 127.0.0.1"]);
        assert_eq!(proxy.shutdown().await, 0);
    })
    .await;
}

// 1: an absolute-form target names the host; Host is ignored (RFC 9112 §3.2.2).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_absolute_target_routes_by_its_own_host() {
    bounded(async {
        let tenants = backend("tenants").await;
        let web = backend("web").await;
        let toml = format!(
            "{}\n[[routes]]\nname = \"tenants\"\nhost = \"*.example.com\"\npath = \"/\"\n\
             pool = \"tenants\"\n{}{}{}",
            server_section(""),
            catch_all("web"),
            pool_section("tenants", "", &[&tenants]),
            pool_section("web", "", &[&web])
        );
        let proxy = start(&toml).await;
        let answer = raw(
            proxy.addr(),
            b"GET http://shop.example.com/cart HTTP/1.1\r\nHost: site.test\r\nConnection: close\r\n\r\n",
            Duration::from_secs(2),
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
        assert!(answer.ends_with("tenants"), "routed by the Host header: {answer:?}");
        assert_eq!(proxy.shutdown().await, 0);
    })
    .await;
}

// 10, by the file watcher rather than a call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_file_is_picked_up_by_the_watcher() {
    bounded(async {
        let a = backend("a").await;
        let b = backend("b").await;
        let file = TempFile::new("watch");
        let text = |backends: &[&Backend]| web_config("watch_ms = 50", "", backends);
        file.write(&text(&[&a]));
        let proxy = Proxy::from_file(&file.0)
            .await
            .expect("starts from the file");
        tokio::time::sleep(Duration::from_millis(120)).await;
        assert_eq!(
            proxy.counters().reloads.load(Relaxed),
            0,
            "no change, no reload"
        );
        file.write(&text(&[&a, &b]));
        // The new pool is visible a moment before the reload is counted:
        // wait for both, then for three more periods with no second reload.
        assert!(
            eventually(Duration::from_secs(2), || {
                proxy.pool("web").is_some_and(|pool| pool.len() == 2)
                    && proxy.counters().reloads.load(Relaxed) == 1
            })
            .await,
            "the watcher applied the new file"
        );
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert_eq!(
            proxy.counters().reloads.load(Relaxed),
            1,
            "one change, one reload"
        );
        let client = client();
        for _ in 0..4 {
            assert_eq!(
                get(&client, proxy.addr(), "site.test", "/").await.status,
                StatusCode::OK
            );
        }
        assert_eq!(b.control.served(), 2);
        assert_eq!(proxy.shutdown().await, 0);
    })
    .await;
}

// The idle bound closes a quiet keep-alive connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keep_alive_connection_is_closed() {
    bounded(async {
        let web = backend("web").await;
        let proxy = single(&web, "idle_timeout_ms = 200").await;
        let mut stream = TcpStream::connect(proxy.addr()).await.expect("connects");
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: site.test\r\n\r\n")
            .await
            .expect("writes");
        let started = Instant::now();
        let mut read = Vec::new();
        let closed = tokio::time::timeout(Duration::from_secs(2), async {
            let mut buf = [0_u8; 1024];
            loop {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => read.extend_from_slice(&buf[..n]),
                }
            }
        })
        .await;
        assert!(closed.is_ok(), "closed within 2 s");
        let text = String::from_utf8_lossy(&read);
        assert!(
            text.starts_with("HTTP/1.1 200") && text.ends_with("web"),
            "{text:?}"
        );
        assert!(started.elapsed() >= Duration::from_millis(150));
        assert_eq!(proxy.shutdown().await, 0);
    })
    .await;
}

// A backend slower than the idle bound, but within the upstream timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_backend_is_not_cut_by_the_client_idle_bound() {
    bounded(async {
        let web = slow_web(Duration::from_millis(500)).await;
        let proxy = single(&web, "idle_timeout_ms = 200\nupstream_timeout_ms = 2000").await;
        let reply = tokio::time::timeout(
            Duration::from_secs(2),
            client().request(
                build(Method::GET, proxy.addr(), "site.test", "/")
                    .body(Full::default())
                    .expect("a valid request"),
            ),
        )
        .await
        .expect("within 2 s");
        let status = reply.map(|r| r.status());
        assert!(matches!(status, Ok(StatusCode::OK)), "{status:?}");
        assert_eq!(proxy.shutdown().await, 0);
    })
    .await;
}

// A backend pausing between body chunks is not cut by the client's idle bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_pausing_mid_stream_is_not_cut_by_the_client_idle_bound() {
    bounded(async {
        let web = custom(|_request: Request<Incoming>| async move {
            let frames = futures_lite::stream::unfold(0_u8, |step| async move {
                match step {
                    0 => Some((Ok(Frame::data(Bytes::from_static(b"a"))), 1)),
                    1 => {
                        tokio::time::sleep(Duration::from_millis(700)).await;
                        Some((Ok(Frame::data(Bytes::from_static(b"b"))), 2))
                    }
                    _ => None,
                }
            });
            Response::new(BodyExt::boxed(StreamBody::new(frames)))
        })
        .await;
        let toml = format!(
            "{}{}{}",
            server_section("idle_timeout_ms = 300\nupstream_timeout_ms = 5000"),
            catch_all("web"),
            pool_at("web", "", &[web])
        );
        let proxy = start(&toml).await;
        let request = build(Method::GET, proxy.addr(), "site.test", "/sse")
            .body(Full::default())
            .expect("a valid request");
        let response = client().request(request).await.expect("a head");
        assert_eq!(response.status(), StatusCode::OK);
        let body = response.into_body().collect().await.map(|b| b.to_bytes());
        assert!(
            matches!(&body, Ok(bytes) if bytes.as_ref() == b"ab"),
            "the whole stream reaches a reading client: {body:?}"
        );
        proxy.shutdown().await;
    })
    .await;
}

// 4 (a pick's wait): max_conns full for longer than pick_timeout_ms.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_pool_answers_503_after_the_pick_timeout() {
    bounded(async {
        let web = slow_web(Duration::from_millis(400)).await;
        let toml = format!(
            "{}{}\n[pools.web]\nalgorithm = \"least_conn\"\n\
             backends = [{{ server = \"{}\", max_conns = 1 }}]\n",
            server_section("pick_timeout_ms = 100"),
            catch_all("web"),
            web.addr
        );
        let proxy = start(&toml).await;
        let addr = proxy.addr();
        let first = tokio::spawn(async move { get(&client(), addr, "site.test", "/").await });
        assert!(in_flight_at(&web, 1).await);
        let started = Instant::now();
        let refused = get(&client(), addr, "site.test", "/").await;
        let waited = started.elapsed();
        assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            waited >= Duration::from_millis(90) && waited < Duration::from_millis(380),
            "{waited:?}"
        );
        assert_eq!(proxy.counters().no_backend.load(Relaxed), 1);
        assert_eq!(
            first.await.expect("the first request").status,
            StatusCode::OK
        );
        // A waiting pick is woken by the slot it waits for.
        web.control
            .set_delay(Duration::from_millis(50), Duration::ZERO);
        let second = tokio::spawn(async move { get(&client(), addr, "site.test", "/").await });
        tokio::time::sleep(Duration::from_millis(10)).await;
        let third = get(&client(), addr, "site.test", "/").await;
        assert_eq!(third.status, StatusCode::OK, "waited for the slot");
        assert_eq!(second.await.expect("the second").status, StatusCode::OK);
        assert_eq!(web.control.peak_in_flight.load(Relaxed), 1);
        assert_eq!(proxy.shutdown().await, 0);
    })
    .await;
}
