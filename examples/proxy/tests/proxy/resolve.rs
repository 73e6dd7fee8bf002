//! Pools named by DNS (`[resolve.NAME]`) against a real DNS server on
//! loopback (hickory-server in process, `tests/dns_support`): 100 record
//! changes under traffic with no failed request and the pool's counts
//! kept, an outage of the server that changes nothing, A records at a
//! port, and names that cannot make a pool.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use hyper::StatusCode;
use loadbalance::Context;
use loadbalance_proxy::{Config, Proxy};

use super::backend::Backend;
use super::dns_support::DnsServer;
use super::harness::*;

const SERVICE: &str = "_http._tcp.web.test.";

/// One route to pool `web`, resolved from `names`, asked of `dns` again
/// every 10 to 20 ms.
fn resolved_config(dns: &DnsServer, names: &[&str], fixed: &[&Backend]) -> String {
    let names: Vec<String> = names.iter().map(|n| format!("{n:?}")).collect();
    format!(
        "{}{}{}\n[resolve.web]\nnames = [{}]\n\n[resolver]\nnameservers = [\"{}\"]\n\
         timeout_ms = 200\nmin_ttl_ms = 10\nmax_ttl_ms = 20\n",
        server_section(""),
        catch_all("web"),
        pool_section("web", "", fixed),
        names.join(", "),
        dns.addr
    )
}

/// The SRV records of `SERVICE` for `backends`, all at 127.0.0.1
/// (`host.test.`), each at its own port.
async fn offer(dns: &DnsServer, backends: &[&Backend]) {
    let records: Vec<(u16, u16, u16, &str)> = backends
        .iter()
        .map(|b| (10, 1, b.addr.port(), "host.test."))
        .collect();
    dns.set_srv(SERVICE, &records, 1).await;
}

fn members(proxy: &Proxy) -> Vec<SocketAddr> {
    let pool = proxy.pool("web").expect("pool web");
    let mut all: Vec<SocketAddr> = pool
        .stats()
        .into_iter()
        .map(|s| s.backend.parse().expect("an address"))
        .collect();
    all.sort_unstable();
    all
}

fn addrs(backends: &[&Backend]) -> Vec<SocketAddr> {
    let mut all: Vec<SocketAddr> = backends.iter().map(|b| b.addr).collect();
    all.sort_unstable();
    all
}

fn counter(proxy: &Proxy, name: &str) -> f64 {
    sample(&parse_metrics(&proxy.metrics()), name, &[]).unwrap_or(f64::NAN)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_follows_100_record_changes_under_traffic_without_a_failed_request() {
    tokio::time::timeout(Duration::from_secs(40), async {
        let dns = DnsServer::start().await;
        dns.set_a("host.test.", &[Ipv4Addr::LOCALHOST], 1).await;
        let mut backends = Vec::new();
        for index in 0..5 {
            backends.push(backend(&format!("b{index}")).await);
        }
        let held = &backends[0];
        offer(&dns, &[held, &backends[1]]).await;
        let proxy = start(&resolved_config(&dns, &["_http._tcp.web.test"], &[])).await;
        assert_eq!(members(&proxy), addrs(&[held, &backends[1]]));
        let pool = proxy.pool("web").expect("pool web");
        // A pick held across every change: its count must carry over.
        let pick = loop {
            let picked = pool.pick(&Context::new()).expect("a pick");
            if picked.guard().as_str() == held.addr.to_string() {
                break picked;
            }
        };

        let stop = Arc::new(AtomicBool::new(false));
        let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let mut clients = Vec::new();
        for _ in 0..4 {
            let (stop, ok, failed) = (Arc::clone(&stop), Arc::clone(&ok), Arc::clone(&failed));
            let addr = proxy.addr();
            clients.push(tokio::spawn(async move {
                let client = client();
                while !stop.load(Relaxed) {
                    let request = build(hyper::Method::GET, addr, "site.test", "/")
                        .body(http_body_util::Full::default())
                        .expect("a request");
                    match client.request(request).await {
                        Ok(response) if response.status() == StatusCode::OK => {
                            ok.fetch_add(1, Relaxed)
                        }
                        _ => failed.fetch_add(1, Relaxed),
                    };
                }
            }));
        }
        for change in 0..100_usize {
            // The held backend always, and the others whose bits are set
            // in `change + 2`: each set differs from the one before.
            let bits = (change + 2) % 16;
            let mut offered: Vec<&Backend> = vec![held];
            for (index, other) in backends.iter().enumerate().skip(1) {
                if (bits >> (index - 1)) & 1 == 1 {
                    offered.push(other);
                }
            }
            offer(&dns, &offered).await;
            let expected = addrs(&offered);
            assert!(
                eventually(Duration::from_secs(3), || members(&proxy) == expected).await,
                "change {change}: {:?}, expected {expected:?}",
                members(&proxy)
            );
            assert!(
                Arc::ptr_eq(&pool, &proxy.pool("web").expect("pool web")),
                "change {change}: the running pool was updated, not replaced"
            );
            assert!(pool.active_of(held.addr.to_string().as_str()) >= Some(1));
        }
        stop.store(true, Relaxed);
        for client in clients {
            client.await.expect("the client ran");
        }
        assert_eq!(failed.load(Relaxed), 0, "no request failed");
        assert!(
            ok.load(Relaxed) >= 100,
            "{} requests served",
            ok.load(Relaxed)
        );
        assert_eq!(
            pool.active_of(held.addr.to_string().as_str()),
            Some(1),
            "the held pick's count carried over every change"
        );
        drop(pick);
        assert_eq!(pool.active_of(held.addr.to_string().as_str()), Some(0));
        // The counter moves just after the pool does: wait for it.
        assert!(
            eventually(Duration::from_secs(3), || {
                counter(&proxy, "proxy_dns_updates_total") >= 100.0
            })
            .await,
            "{} updates counted",
            counter(&proxy, "proxy_dns_updates_total")
        );
        assert_eq!(counter(&proxy, "proxy_reloads_total"), 0.0);
        assert_eq!(proxy.shutdown().await, 0);
    })
    .await
    .expect("the test finished within 40 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_of_the_dns_server_leaves_the_pool_as_it_was() {
    bounded(async {
        let mut dns = DnsServer::start().await;
        dns.set_a("host.test.", &[Ipv4Addr::LOCALHOST], 1).await;
        let (a, b) = (backend("a").await, backend("b").await);
        offer(&dns, &[&a, &b]).await;
        let proxy = start(&resolved_config(&dns, &["_http._tcp.web.test"], &[])).await;
        let before = members(&proxy);
        assert_eq!(before, addrs(&[&a, &b]));
        let failed = |proxy: &Proxy| {
            sample(
                &parse_metrics(&proxy.metrics()),
                "proxy_dns_lookups_total",
                &[("pool", "web"), ("result", "failed")],
            )
            .unwrap_or(0.0)
        };
        dns.stop().await; // refused
        assert!(eventually(Duration::from_secs(2), || failed(&proxy) >= 2.0).await);
        let silence = dns.silence().await; // no answer at all
        let seen = failed(&proxy);
        assert!(eventually(Duration::from_secs(3), || failed(&proxy) > seen).await);
        assert_eq!(members(&proxy), before, "an outage changes nothing");
        let client = client();
        for _ in 0..4 {
            assert_eq!(
                get(&client, proxy.addr(), "site.test", "/").await.status,
                StatusCode::OK
            );
        }
        assert_eq!(a.control.served() + b.control.served(), 4);
        drop(silence);
        dns.restart().await;
        offer(&dns, &[&b]).await;
        assert!(
            eventually(Duration::from_secs(3), || members(&proxy) == addrs(&[&b])).await,
            "changes apply again after the outage"
        );
        assert_eq!(proxy.shutdown().await, 0);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_name_is_its_addresses_at_its_port_beside_the_fixed_backends() {
    bounded(async {
        let dns = DnsServer::start().await;
        // Two backends at one port, on 127.0.0.2 and 127.0.0.3.
        let mut pair = None;
        for _ in 0..20 {
            let first = Backend::start_at("first", "127.0.0.2:0".parse().expect("an address"))
                .await
                .expect("a backend on 127.0.0.2");
            let at = SocketAddr::from(([127, 0, 0, 3], first.addr.port()));
            if let Ok(second) = Backend::start_at("second", at).await {
                pair = Some((first, second));
                break;
            }
        }
        let (first, second) = pair.expect("a port free on both addresses");
        let port = first.addr.port();
        let fixed = backend("fixed").await;
        dns.set_a(
            "web.test.",
            &[Ipv4Addr::new(127, 0, 0, 2), Ipv4Addr::new(127, 0, 0, 3)],
            1,
        )
        .await;
        let name = format!("web.test:{port}");
        let proxy = start(&resolved_config(&dns, &[&name], &[&fixed])).await;
        assert_eq!(members(&proxy), addrs(&[&first, &second, &fixed]));
        let client = client();
        for _ in 0..6 {
            assert_eq!(
                get(&client, proxy.addr(), "site.test", "/").await.status,
                StatusCode::OK
            );
        }
        for backend in [&first, &second, &fixed] {
            assert_eq!(backend.control.served(), 2, "{}", backend.name);
        }
        dns.set_a("web.test.", &[Ipv4Addr::new(127, 0, 0, 3)], 1)
            .await;
        assert!(
            eventually(Duration::from_secs(3), || {
                members(&proxy) == addrs(&[&second, &fixed])
            })
            .await
        );
        assert_eq!(proxy.shutdown().await, 0);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_that_cannot_make_a_pool_are_configuration_errors() {
    bounded(async {
        let dns = DnsServer::start().await;
        let nothing =
            Config::parse(&resolved_config(&dns, &["missing.test:80"], &[])).expect("parses");
        let error = Proxy::start(nothing, None).await.err().expect("refused");
        assert!(error.to_string().contains("resolve.web"), "{error}");
        // A name that fails beside a fixed backend is not an error: it
        // is looked up again.
        let fixed = backend("fixed").await;
        let proxy = start(&resolved_config(&dns, &["missing.test:80"], &[&fixed])).await;
        assert_eq!(members(&proxy), addrs(&[&fixed]));
        dns.set_a("missing.test.", &[Ipv4Addr::LOCALHOST], 1).await;
        let late: SocketAddr = "127.0.0.1:80".parse().expect("an address");
        assert!(
            eventually(Duration::from_secs(3), || members(&proxy).contains(&late)).await,
            "a name found later joins the pool"
        );
        assert_eq!(proxy.shutdown().await, 0);
        for (names, why) in [
            ("\"10.0.0.1:80\"", "an address"),
            ("\"web.test\"", "a port"),
            ("", "1 to"),
        ] {
            let text = resolved_config(&dns, &[], &[&fixed])
                .replace("names = []", &format!("names = [{names}]"));
            let error = Config::parse(&text).expect_err("refused");
            assert!(error.to_string().contains(why), "{names}: {error}");
        }
    })
    .await;
}

// What a review of the proxy's DNS pools found, each a test that failed first.

async fn srv_pool(dns: &DnsServer, a: &Backend, extra: &str) -> (String, Proxy) {
    dns.set_a("host.test.", &[Ipv4Addr::LOCALHOST], 1).await;
    offer(dns, &[a]).await;
    let text = format!(
        "{}{extra}",
        resolved_config(dns, &["_http._tcp.web.test"], &[])
    );
    let proxy = start(&text).await;
    (text, proxy)
}

async fn refused(proxy: &Proxy) -> bool {
    eventually(Duration::from_secs(3), || {
        counter(proxy, "proxy_dns_updates_failed_total") >= 1.0
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_the_pool_refuses_does_not_block_later_reloads() {
    bounded(async {
        let dns = DnsServer::start().await;
        let (a, b) = (backend("a").await, backend("b").await);
        dns.set_a("host.test.", &[Ipv4Addr::LOCALHOST], 1).await;
        dns.set_srv(SERVICE, &[(10, 10, a.addr.port(), "host.test.")], 1)
            .await;
        let text = resolved_config(&dns, &["_http._tcp.web.test"], &[])
            .replace("\"round_robin\"", "\"hash consistent\"");
        let proxy = start(&text).await;
        let records = [
            (10, 10, a.addr.port(), "host.test."),
            (10, 65_535, b.addr.port(), "host.test."),
        ];
        dns.set_srv(SERVICE, &records, 1).await; // ring weight 65,545 > 65,536
        assert!(refused(&proxy).await);
        assert_eq!(members(&proxy), addrs(&[&a]));
        let more =
            format!("{text}\n[[routes]]\nname = \"api\"\npath = \"/api/\"\npool = \"web\"\n");
        let reloaded = proxy.apply(Config::parse(&more).expect("parses")).await;
        assert!(
            reloaded.is_ok(),
            "an unrelated reload refused: {reloaded:?}"
        );
        proxy.shutdown().await;
    })
    .await;
}

// A change of records re-read the whole file's certificates: one being
// rotated (missing for a moment) refused the change, never tried again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_of_records_does_not_hang_on_the_files_a_reload_reads() {
    bounded(async {
        let dir = crate::tls::Dir::new("resolve-retry");
        let tls = crate::tls::certificates(&dir, &crate::tls::Authority::new("CA"), "g1");
        let dns = DnsServer::start().await;
        let (a, b) = (backend("a").await, backend("b").await);
        let (_, proxy) = srv_pool(&dns, &a, &tls).await;
        let cert = dir.file("default-g1.pem");
        std::fs::remove_file(&cert).expect("removes"); // being rotated
        offer(&dns, &[&a, &b]).await;
        assert!(
            eventually(Duration::from_secs(3), || members(&proxy)
                == addrs(&[&a, &b]))
            .await,
            "the pool never took b: {:?}",
            members(&proxy)
        );
        assert_eq!(counter(&proxy, "proxy_dns_updates_failed_total"), 0.0);
        proxy.shutdown().await;
    })
    .await;
}

// A reload refused for a file it reads (an upstream's CA) had already
// applied the new backends to the running pool.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_reload_changes_no_pool() {
    bounded(async {
        let dir = crate::tls::Dir::new("resolve-half");
        let ca = dir.file("ca.pem");
        crate::tls::Authority::new("CA").write(&ca);
        let dns = DnsServer::start().await;
        let (a, b) = (backend("a").await, backend("b").await);
        let extra = format!(
            "\n[upstreams.web]\nprotocol = \"https\"\nca = {:?}\n",
            ca.display().to_string()
        );
        let (text, proxy) = srv_pool(&dns, &a, &extra).await;
        std::fs::remove_file(&ca).expect("removes the CA");
        let more = text.replace(
            "backends = []",
            &format!("backends = [{{ server = \"{}\" }}]", b.addr),
        );
        assert_ne!(more, text);
        let reloaded = proxy.apply(Config::parse(&more).expect("parses")).await;
        assert!(reloaded.is_err(), "the CA cannot be read");
        assert_eq!(
            members(&proxy),
            addrs(&[&a]),
            "refused, yet the pool changed"
        );
        proxy.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_during_an_outage_keeps_the_last_good_answers() {
    bounded(async {
        let mut dns = DnsServer::start().await;
        dns.set_a("host.test.", &[Ipv4Addr::LOCALHOST], 1).await;
        let (fixed, found) = (backend("fixed").await, backend("found").await);
        offer(&dns, &[&found]).await;
        let text = resolved_config(&dns, &["_http._tcp.web.test"], &[&fixed]);
        let proxy = start(&text).await;
        dns.stop().await; // refused
        let reload = text.replace("timeout_ms = 200", "timeout_ms = 300");
        proxy
            .apply(Config::parse(&reload).expect("parses"))
            .await
            .expect("applies");
        assert_eq!(
            members(&proxy),
            addrs(&[&fixed, &found]),
            "an outage leaves the pool as it was"
        );
        proxy.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_metrics_escape_the_pool_name() {
    bounded(async {
        let dns = DnsServer::start().await;
        let fixed = backend("fixed").await;
        let text = resolved_config(&dns, &["missing.test:80"], &[&fixed])
            .replace("[pools.web]", "[pools.\"a\\\"b\"]")
            .replace("[resolve.web]", "[resolve.\"a\\\"b\"]")
            .replace("pool = \"web\"", "pool = \"a\\\"b\"");
        let proxy = start(&text).await;
        let metrics = proxy.metrics();
        assert!(
            metrics.contains(r#"proxy_dns_lookups_total{pool="a\"b",result="ok"}"#),
            "{metrics}"
        );
        proxy.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unspecified_and_own_addresses_are_not_backends() {
    bounded(async {
        let dns = DnsServer::start().await;
        let fixed = backend("fixed").await;
        dns.set_a("web.test.", &[Ipv4Addr::UNSPECIFIED], 1).await;
        let proxy = start(&resolved_config(&dns, &["web.test:9"], &[&fixed])).await;
        assert!(!members(&proxy).contains(&"0.0.0.0:9".parse().expect("an address")));
        dns.set_a("host.test.", &[Ipv4Addr::LOCALHOST], 1).await;
        dns.set_srv(SERVICE, &[(10, 1, proxy.addr().port(), "host.test.")], 1)
            .await;
        let text = resolved_config(&dns, &["_http._tcp.web.test"], &[&fixed]);
        let _ = proxy.apply(Config::parse(&text).expect("parses")).await;
        assert!(
            !members(&proxy).contains(&proxy.addr()),
            "{:?}",
            members(&proxy)
        );
        proxy.shutdown().await;
    })
    .await;
}
