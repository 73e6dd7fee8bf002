//! `discover` against a real DNS server on loopback (hickory-server, in
//! process, `tests/dns_support`): what A, AAAA and SRV records become,
//! failures told apart, and a pool that follows record changes with its
//! counts kept and survives the server's outage unchanged.

#![cfg(feature = "dns")]

#[path = "../dns_support/mod.rs"]
mod dns_support;
mod hostile;

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use dns_support::DnsServer;
use loadbalance::discover::{Discovery, DnsErrorKind, DnsName, Endpoint, HickoryResolver, Resolve};
use loadbalance::{Backend, Context, Pool};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime")
}

fn resolver(server: &DnsServer) -> HickoryResolver {
    HickoryResolver::with_nameservers(&[server.addr], Duration::from_millis(300))
        .expect("a resolver")
}

fn name(text: &str) -> DnsName {
    text.parse().expect("a name")
}

fn v4(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, last)
}

#[test]
fn a_host_is_its_a_and_aaaa_records_at_its_port() {
    runtime().block_on(async {
        let server = DnsServer::start().await;
        server.set_a("web.test.", &[v4(2), v4(1)], 30).await;
        server
            .set_aaaa("web.test.", &[Ipv6Addr::LOCALHOST], 30)
            .await;
        let answer = resolver(&server)
            .resolve(&name("web.test:8080"))
            .await
            .expect("resolves");
        let addrs: Vec<SocketAddr> = answer.endpoints().iter().map(|e| e.addr).collect();
        assert_eq!(
            addrs,
            [
                "127.0.0.1:8080".parse().expect("an address"),
                "127.0.0.2:8080".parse().expect("an address"),
                "[::1]:8080".parse().expect("an address"),
            ]
        );
        assert!(
            answer
                .endpoints()
                .iter()
                .all(|e| e.weight == 1 && !e.backup)
        );
        assert!(answer.ttl() <= Duration::from_secs(30) && answer.ttl() >= Duration::from_secs(28));
    });
}

#[test]
fn a_service_maps_weights_and_priorities_to_weights_and_backups() {
    runtime().block_on(async {
        let server = DnsServer::start().await;
        server.set_a("a.test.", &[v4(1)], 30).await;
        server.set_a("b.test.", &[v4(2)], 30).await;
        server.set_a("c.test.", &[v4(3)], 5).await;
        server
            .set_srv(
                "_http._tcp.web.test.",
                &[
                    (20, 1, 8082, "c.test."),
                    (10, 5, 8080, "a.test."),
                    (10, 0, 8081, "b.test."),
                    (10, 9, 8083, "."),             // not offered there
                    (10, 9, 8084, "nowhere.test."), // no address
                ],
                30,
            )
            .await;
        let answer = resolver(&server)
            .resolve(&name("_http._tcp.web.test"))
            .await
            .expect("resolves");
        let endpoint = |last, port, weight, backup| Endpoint {
            addr: SocketAddr::from((v4(last), port)),
            weight,
            backup,
        };
        assert_eq!(
            answer.endpoints(),
            [
                endpoint(1, 8080, 5, false),
                endpoint(2, 8081, 1, false),
                endpoint(3, 8082, 1, true),
            ]
        );
        // The shortest record's TTL: c.test.'s.
        assert!(answer.ttl() <= Duration::from_secs(5), "{:?}", answer.ttl());
    });
}

#[test]
fn failures_are_told_apart() {
    runtime().block_on(async {
        let mut server = DnsServer::start().await;
        let resolver = resolver(&server);
        let missing = resolver.resolve(&name("missing.test:80")).await;
        assert_eq!(missing.map_err(|e| e.kind), Err(DnsErrorKind::NoRecords));
        server.set_a("web.test.", &[v4(1)], 30).await;
        let _silent = server.silence().await;
        let silent = resolver.resolve(&name("web.test:80")).await;
        assert_eq!(silent.map_err(|e| e.kind), Err(DnsErrorKind::Timeout));
    });
}

/// The pool's backends, as addresses.
fn members(pool: &Pool<SocketAddr>) -> Vec<SocketAddr> {
    let mut all: Vec<SocketAddr> = pool.stats().into_iter().map(|s| s.backend).collect();
    all.sort_unstable();
    all
}

async fn eventually(mut done: impl FnMut() -> bool) -> bool {
    for _ in 0..300 {
        if done() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    done()
}

#[test]
fn a_pool_follows_its_records_keeps_its_counts_and_outlives_an_outage() {
    runtime().block_on(async {
        let mut server = DnsServer::start().await;
        let held_ip = v4(1);
        server.set_a("web.test.", &[held_ip, v4(2)], 1).await;
        let discovery = Discovery::new(resolver(&server))
            .name(name("web.test:80"))
            .ttl_bounds(Duration::from_millis(20), Duration::from_millis(50))
            .expect("bounds");
        let found = discovery.resolve().await;
        let backend = |e: &Endpoint| Backend::new(e.addr).weight(e.weight).backup(e.backup);
        let pool = Arc::new(
            Pool::builder("least_conn".parse().expect("an algorithm"))
                .build(found.endpoints().iter().map(backend))
                .expect("a pool"),
        );
        let held_addr = SocketAddr::from((held_ip, 80));
        let held = loop {
            let picked = pool.pick(&Context::new()).expect("a pick");
            if **picked.guard() == held_addr {
                break picked;
            }
        };
        let watch = discovery.apply_to(found, Arc::clone(&pool), Vec::new(), backend);
        for change in 0..20_u8 {
            let others: Vec<Ipv4Addr> = (0..=change % 4).map(|i| v4(10 + change + i)).collect();
            let mut records = others.clone();
            records.push(held_ip);
            server.set_a("web.test.", &records, 1).await;
            let mut expected: Vec<SocketAddr> = records
                .iter()
                .map(|ip| SocketAddr::from((*ip, 80)))
                .collect();
            expected.sort_unstable();
            assert!(
                eventually(|| members(&pool) == expected).await,
                "change {change}: {:?} against {expected:?}",
                members(&pool)
            );
            assert_eq!(
                pool.active_of(&held_addr),
                Some(1),
                "the held pick is still counted"
            );
        }
        let before = members(&pool);
        let failures = watch.stats().failures;
        server.stop().await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let silence = server.silence().await;
        tokio::time::sleep(Duration::from_millis(1_000)).await;
        assert!(watch.stats().failures > failures, "the outage was seen");
        assert_eq!(members(&pool), before, "an outage changes nothing");
        drop(silence);
        server.restart().await;
        server.set_a("web.test.", &[held_ip], 1).await;
        assert!(
            eventually(|| members(&pool) == [held_addr]).await,
            "after the outage, changes apply again"
        );
        held.success();
        assert_eq!(pool.active_of(&held_addr), Some(0));
    });
}
