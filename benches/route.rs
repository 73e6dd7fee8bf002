//! Routing cost with 100 rules: 20 hosts with four prefix rules each, ten
//! regular expressions and ten `*.suffix` rules; requests that end on an
//! exact path, a long prefix, a regular expression, a suffix host and no
//! rule. `cargo bench --bench route --features route`.
#![allow(missing_docs)]

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use loadbalance::route::Router;

fn hundred_rules() -> Router<usize> {
    let mut builder = Router::builder();
    let mut n = 0;
    for host in 0..20 {
        for (i, path) in ["= /", "/api/", "/api/v1/users/", "/static/"]
            .into_iter()
            .enumerate()
        {
            builder = builder.rule(
                format!("h{host}-{i}"),
                format!("host{host}.example.com"),
                path,
                n,
            );
            n += 1;
        }
    }
    for i in 0..10 {
        builder = builder.rule(
            format!("regex{i}"),
            "host0.example.com",
            format!("~ \\.ext{i}$"),
            n,
        );
        n += 1;
        builder = builder.rule(
            format!("suffix{i}"),
            format!("*.tenant{i}.example.com"),
            "/",
            n,
        );
        n += 1;
    }
    builder.build().expect("valid rules")
}

fn route(c: &mut Criterion) {
    let router = hundred_rules();
    assert_eq!(router.len(), 100);
    let mut group = c.benchmark_group("route/100_rules");
    group.throughput(Throughput::Elements(1));
    // The least a host lookup costs: one std HashMap get of the host.
    let hosts: std::collections::HashMap<Box<str>, usize> = (0..20)
        .map(|i| (format!("host{i}.example.com").into(), i))
        .collect();
    group.bench_function("baseline/hashmap_get", |b| {
        b.iter(|| black_box(hosts.get(black_box("host7.example.com"))))
    });
    let requests = [
        ("exact", "host7.example.com", "/"),
        ("longest_prefix", "host7.example.com", "/api/v1/users/42"),
        ("regex_last", "host0.example.com", "/files/a.ext9"),
        ("regex_none", "host0.example.com", "/api/x"),
        ("suffix_host", "shop.tenant9.example.com", "/cart"),
        ("no_rule", "unknown.org", "/"),
    ];
    for (name, host, path) in requests {
        group.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| {
                black_box(
                    router
                        .route(black_box(host), black_box(path))
                        .map(|m| *m.target()),
                )
            })
        });
    }
    group.finish();
}

criterion_group!(benches, route);
criterion_main!(benches);
