//! Tail latency: adaptive concurrency limits per route and per pool
//! (503 past them, at once, and the limit kept across reloads), and a
//! `probing` pool whose backends state their load in probe answers.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Response, StatusCode};
use loadbalance_proxy::Config;

use crate::harness::*;

fn route_with(extra: &str) -> String {
    format!("\n[[routes]]\nname = \"all\"\npath = \"/\"\npool = \"web\"\n{extra}\n")
}

/// Six requests at once to a backend answering in 300 ms, under a limit
/// of 2 (the pinned concurrency while the idle latency is measured): two
/// answered, four shed at once with 503, counted; nothing left in flight.
async fn sheds_past_the_limit(config: &str, counter: &str, gauge: (&str, &str)) {
    let web = slow_web(Duration::from_millis(300)).await;
    let proxy = start(&config.replace("WEB", &web.addr.to_string())).await;
    let client = client();
    let started = tokio::time::Instant::now();
    let replies: Vec<_> = (0..6)
        .map(|_| {
            let (client, addr) = (client.clone(), proxy.addr());
            tokio::spawn(async move {
                let reply = get(&client, addr, "site.test", "/").await;
                (reply.status, started.elapsed())
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for reply in replies {
        statuses.push(reply.await.expect("the client ran"));
    }
    let ok = statuses
        .iter()
        .filter(|(s, _)| *s == StatusCode::OK)
        .count();
    let shed: Vec<_> = statuses
        .iter()
        .filter(|(s, _)| *s == StatusCode::SERVICE_UNAVAILABLE)
        .collect();
    assert_eq!((ok, shed.len()), (2, 4), "{statuses:?}");
    assert!(
        shed.iter().all(|(_, at)| *at < Duration::from_millis(300)),
        "shed at once, not after the backend: {statuses:?}"
    );
    assert_eq!(web.control.served(), 2);
    let scrape = parse_metrics(&proxy.metrics());
    assert_eq!(sample(&scrape, counter, &[]), Some(4.0));
    assert_eq!(sample(&scrape, "proxy_adaptive_limit", &[gauge]), Some(2.0));
    assert_eq!(
        sample(&scrape, "proxy_adaptive_in_flight", &[gauge]),
        Some(0.0)
    );
    assert_eq!(proxy.shutdown().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_routes_adaptive_limit_sheds_past_it_with_503() {
    bounded(sheds_past_the_limit(
        &format!(
            "{}{}[pools.web]\nalgorithm = \"round_robin\"\nbackends = [{{ server = \"WEB\" }}]\n",
            server_section(""),
            route_with("adaptive = { min_concurrency = 2 }")
        ),
        "proxy_shed_by_route_total",
        ("route", "all"),
    ))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pools_adaptive_limit_sheds_past_it_with_503() {
    bounded(sheds_past_the_limit(
        &format!(
            "{}{}[pools.web]\nalgorithm = \"round_robin\"\nbackends = [{{ server = \"WEB\" }}]\n\
             [adaptive.web]\nmin_concurrency = 2\n",
            server_section(""),
            catch_all("web"),
        ),
        "proxy_shed_by_pool_total",
        ("pool", "web"),
    ))
    .await;
}

/// A reload that keeps a limit's settings keeps the limit and what it
/// counts; one that changes them starts a new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_keeps_an_unchanged_limit() {
    bounded(async {
        let web = backend("web").await;
        let text = |min: u32| {
            format!(
                "{}{}{}[adaptive.web]\nmin_concurrency = {min}\n",
                server_section(""),
                catch_all("web"),
                pool_section("web", "", &[&web])
            )
        };
        let file = TempFile::new("adaptive-reload");
        file.write(&text(2));
        let proxy = loadbalance_proxy::Proxy::start(
            Config::parse(&text(2)).expect("parses"),
            Some(file.0.clone()),
        )
        .await
        .expect("starts");
        let held = proxy.pool("web").expect("the pool");
        let _pick = held.pick(&loadbalance::Context::new());
        let client = client();
        assert_eq!(
            get(&client, proxy.addr(), "a", "/").await.status,
            StatusCode::OK
        );
        let admitted = |proxy: &loadbalance_proxy::Proxy| {
            sample(
                &parse_metrics(&proxy.metrics()),
                "proxy_adaptive_limit",
                &[("pool", "web")],
            )
        };
        assert_eq!(admitted(&proxy), Some(2.0));
        proxy.reload().await.expect("the same file reloads");
        assert_eq!(admitted(&proxy), Some(2.0), "kept");
        file.write(&text(4));
        proxy.reload().await.expect("a changed limit reloads");
        assert_eq!(admitted(&proxy), Some(4.0), "a new limit");
        assert_eq!(proxy.shutdown().await, 0);
    })
    .await;
}

#[test]
fn limits_and_probes_that_cannot_work_are_configuration_errors() {
    let base = format!(
        "{}{}[pools.web]\nalgorithm = \"ALGORITHM\"\nbackends = [{{ server = \"127.0.0.1:9\" }}]\n",
        server_section(""),
        catch_all("web")
    );
    let round_robin = base.replace("ALGORITHM", "round_robin");
    let probing = base.replace("ALGORITHM", "probing");
    for (text, field) in [
        (format!("{round_robin}[adaptive.other]\n"), "adaptive.other"),
        (
            format!("{round_robin}[adaptive.web]\npercentile = 0\n"),
            "adaptive.web",
        ),
        (
            format!("{round_robin}[adaptive.web]\nmin_limit = 10\nmax_limit = 5\n"),
            "adaptive.web",
        ),
        (
            format!("{round_robin}[probing.web]\npath = \"/probe\"\n"),
            "probing.web",
        ),
        (
            format!("{probing}[probing.web]\npath = \"probe\"\n"),
            "probing.web.path",
        ),
        (
            format!("{probing}[probing.web]\npath = \"/probe\"\ntimeout_ms = 0\n"),
            "probing.web",
        ),
        (
            format!("{probing}[probing.web]\npath = \"/probe\"\nin_flight_header = \"a b\"\n"),
            "probing.web.in_flight_header",
        ),
        (
            base.replace("ALGORITHM", "round_robin").replace(
                "pool = \"web\"",
                "pool = \"web\"\nadaptive = { jitter_percent = 101 }",
            ),
            "routes[0].adaptive",
        ),
    ] {
        let error = Config::parse(&text).expect_err(field).to_string();
        assert!(error.contains(field), "{field}: {error}");
    }
    let fine = format!("{probing}[probing.web]\npath = \"/probe\"\n[adaptive.web]\n");
    assert!(Config::parse(&fine).is_ok());
}

/// A backend that answers probes at `/probe` stating `in_flight`, and
/// every other request with `name`; it counts what it served.
async fn stating(
    name: &'static str,
    in_flight: &'static str,
) -> (std::net::SocketAddr, Arc<AtomicU64>) {
    let served = Arc::new(AtomicU64::new(0));
    let counted = Arc::clone(&served);
    let addr = custom(move |request| {
        let served = Arc::clone(&counted);
        async move {
            let body = if request.uri().path() == "/probe" {
                let mut answer = Response::new(Full::new(Bytes::from_static(b"ok")).boxed());
                answer.headers_mut().insert(
                    "x-in-flight",
                    hyper::header::HeaderValue::from_static(in_flight),
                );
                return answer;
            } else {
                served.fetch_add(1, Relaxed);
                name
            };
            Response::new(Full::new(Bytes::from_static(body.as_bytes())).boxed())
        }
    })
    .await;
    (addr, served)
}

/// Two backends, one stating 50 requests in flight in its probe answers
/// and the other none: once answers are in, every request goes to the
/// cold one, though this proxy holds nothing on either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_probing_pool_sends_requests_where_the_probes_say() {
    bounded(async {
        let (hot, hot_served) = stating("hot", "50").await;
        let (cold, cold_served) = stating("cold", "0").await;
        let config = format!(
            "{}{}{}[probing.web]\npath = \"/probe\"\n",
            server_section(""),
            catch_all("web"),
            pool_at("web", "algorithm = \"probing\"", &[hot, cold])
        );
        let proxy = start(&config).await;
        let client = client();
        let answered = |proxy: &loadbalance_proxy::Proxy| {
            sample(
                &parse_metrics(&proxy.metrics()),
                "proxy_probes_total",
                &[("pool", "web"), ("result", "answered")],
            )
            .unwrap_or(0.0)
        };
        for round in 0..20u32 {
            let before = answered(&proxy);
            let reply = get(&client, proxy.addr(), "site.test", "/").await;
            assert_eq!(reply.status, StatusCode::OK);
            if round > 0 {
                assert_eq!(reply.body, "cold", "round {round}");
            }
            // Both probes of this pick answered before the next pick.
            assert!(
                eventually(Duration::from_secs(2), || answered(&proxy) >= before + 2.0).await,
                "round {round}: probes answered {}",
                answered(&proxy)
            );
        }
        assert!(cold_served.load(Relaxed) >= 19);
        assert!(hot_served.load(Relaxed) <= 1);
        assert_eq!(proxy.shutdown().await, 0);
    })
    .await;
}

// What teaches an adaptive limit: only a backend's answer (a review
// found a slow body holding slots, and the proxy's own answers and cache
// hits teaching the limits a latency of microseconds).

fn limit_of(proxy: &loadbalance_proxy::Proxy, label: (&str, &str)) -> f64 {
    sample(
        &parse_metrics(&proxy.metrics()),
        "proxy_adaptive_limit",
        &[label],
    )
    .unwrap_or(-1.0)
}

fn in_flight_of(proxy: &loadbalance_proxy::Proxy, label: (&str, &str)) -> f64 {
    sample(
        &parse_metrics(&proxy.metrics()),
        "proxy_adaptive_in_flight",
        &[label],
    )
    .unwrap_or(-1.0)
}

/// Two clients trickling request bodies hold no slot of the pool's
/// limit (pinned at 2 while it measures): the limit is asked once a body
/// is read, and another request is answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_request_body_holds_no_adaptive_slot() {
    bounded(async {
        let web = backend("web").await;
        let config = format!(
            "{}{}\n[adaptive.web]\nmin_concurrency = 2\n",
            web_config("", "", &[&web]),
            ""
        );
        let proxy = start(&config).await;
        let mut slow = Vec::new();
        for _ in 0..2 {
            let mut stream = tokio::net::TcpStream::connect(proxy.addr())
                .await
                .expect("connects");
            tokio::io::AsyncWriteExt::write_all(
                &mut stream,
                b"POST / HTTP/1.1\r\nHost: site.test\r\nContent-Length: 100\r\n\r\nab",
            )
            .await
            .expect("writes");
            slow.push(stream);
        }
        // Both bodies under way at the proxy.
        let connections = |proxy: &loadbalance_proxy::Proxy| {
            sample(&parse_metrics(&proxy.metrics()), "proxy_connections", &[])
        };
        assert!(eventually(Duration::from_secs(2), || connections(&proxy) == Some(2.0)).await);
        assert_eq!(in_flight_of(&proxy, ("pool", "web")), 0.0);
        let reply = get(&client(), proxy.addr(), "site.test", "/").await;
        assert_eq!(
            web.control.in_flight.load(Relaxed),
            0,
            "the backend holds nothing"
        );
        assert_eq!(
            reply.status,
            StatusCode::OK,
            "not shed: the slow bodies hold no slot"
        );
        drop(slow);
        assert_eq!(proxy.shutdown().await, 0);
    })
    .await;
}

/// Sends a POST whose chunked body is malformed: the proxy answers 400 at
/// once, no backend asked.
async fn broken_body(proxy: &loadbalance_proxy::Proxy) -> String {
    raw(
        proxy.addr(),
        b"POST / HTTP/1.1\r\nHost: site.test\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        Duration::from_secs(1),
    )
    .await
}

/// Pool `web` over `web` with an adaptive limit that measures its idle
/// latency over 5 requests and moves every 20 ms.
fn measured_over_five(web: &Backend) -> String {
    format!(
        "{}\n[adaptive.web]\nmin_rtt_requests = 5\ninterval_ms = 20\n",
        web_config("", "", &[web])
    )
}

/// Twelve requests one at a time (`path(i)`), then five at once: each
/// answered 200, and the limit named `label` at least 20 after.
async fn holds_a_burst(
    proxy: &loadbalance_proxy::Proxy,
    label: (&str, &str),
    path: impl Fn(usize) -> String,
) {
    let client = client();
    for i in 0..12 {
        let reply = get(&client, proxy.addr(), "site.test", &path(i)).await;
        assert_eq!(reply.status, StatusCode::OK);
    }
    let replies: Vec<_> = (0..5)
        .map(|i| {
            let (client, addr, path) = (client.clone(), proxy.addr(), path(100 + i));
            tokio::spawn(async move { get(&client, addr, "site.test", &path).await.status })
        })
        .collect();
    let mut statuses = Vec::new();
    for reply in replies {
        statuses.push(reply.await.expect("ran"));
    }
    assert!(
        limit_of(proxy, label) >= 20.0 && statuses.iter().all(|s| *s == StatusCode::OK),
        "limit {} after a healthy backend at concurrency 1; burst {statuses:?}",
        limit_of(proxy, label)
    );
}

/// What the proxy answers itself (a malformed body's 400, before any
/// backend is picked) teaches the pool's limit nothing: five of them leave
/// the idle latency unmeasured; five requests to a healthy 20 ms backend
/// then measure it, and the limit holds a burst.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_the_proxy_gives_itself_teach_no_limit() {
    bounded(async {
        let web = slow_web(Duration::from_millis(20)).await;
        let proxy = start(&measured_over_five(&web)).await;
        for _ in 0..5 {
            let answer = broken_body(&proxy).await;
            assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
        }
        assert_eq!(
            limit_of(&proxy, ("pool", "web")),
            3.0,
            "still pinned: nothing measured"
        );
        let client = client();
        for _ in 0..5 {
            let reply = get(&client, proxy.addr(), "site.test", "/").await;
            assert_eq!(reply.status, StatusCode::OK);
        }
        assert_eq!(limit_of(&proxy, ("pool", "web")), 20.0, "measured");
        holds_a_burst(&proxy, ("pool", "web"), |_| "/".to_owned()).await;
        assert_eq!(proxy.shutdown().await, 0);
    })
    .await;
}

/// A healthy backend at concurrency 1 keeps its pool's limit and sheds
/// nothing of a burst.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_backend_keeps_its_limit() {
    bounded(async {
        let web = slow_web(Duration::from_millis(20)).await;
        let proxy = start(&measured_over_five(&web)).await;
        let client = client();
        for _ in 0..5 {
            assert_eq!(
                get(&client, proxy.addr(), "site.test", "/").await.status,
                StatusCode::OK
            );
        }
        holds_a_burst(&proxy, ("pool", "web"), |_| "/".to_owned()).await;
        assert_eq!(proxy.shutdown().await, 0);
    })
    .await;
}

/// Cache hits teach the route's limit nothing (they reach no backend):
/// a miss and four hits leave the idle latency unmeasured; misses to a
/// healthy 20 ms origin measure it, and the limit holds a burst.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_hits_teach_no_limit() {
    use crate::cache::{Answer as Said, Origin, has_stored};
    bounded(async {
        let origin = Origin::start(|parts, _| {
            let cc = if parts.uri.path() == "/hit" { "max-age=600" } else { "no-store" };
            Said::ok(&[("cache-control", cc)], "x").after(Duration::from_millis(20))
        })
        .await;
        let config = format!(
            "{}\n[cache]\n\n[[routes]]\nname = \"all\"\npath = \"/\"\npool = \"web\"\ncache = true\n\
             adaptive = {{ min_rtt_requests = 5, interval_ms = 20 }}\n{}",
            server_section(""),
            pool_at("web", "", &[origin.addr])
        );
        let proxy = start(&config).await;
        let client = client();
        assert_eq!(get(&client, proxy.addr(), "site.test", "/hit").await.status, StatusCode::OK);
        assert!(has_stored(&proxy, 1).await);
        for _ in 0..4 {
            assert_eq!(get(&client, proxy.addr(), "site.test", "/hit").await.status, StatusCode::OK);
        }
        assert_eq!(origin.count(), 1, "four hits");
        assert_eq!(
            limit_of(&proxy, ("route", "all")),
            3.0,
            "still pinned: one backend answer of five"
        );
        holds_a_burst(&proxy, ("route", "all"), |i| format!("/miss?{i}")).await;
        assert_eq!(proxy.shutdown().await, 0);
    })
    .await;
}
