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
