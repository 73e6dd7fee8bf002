//! The Prometheus exposition a pool writes, read back by a Prometheus
//! text-format parser and compared with `stats()`.
#![cfg(feature = "metrics")]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use loadbalance::{
    AdminState, Algorithm, Backend, BackendState, Context, HealthPolicy, ManualClock, Pool,
    PrometheusText,
};
use prometheus_parse::{Scrape, Value};

fn value(value: &Value) -> f64 {
    match value {
        Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn the_exposition_parses_and_matches_the_stats() {
    let clock = Arc::new(ManualClock::new());
    let api = Pool::builder(Algorithm::LeastConn)
        .clock(Arc::clone(&clock))
        .health(HealthPolicy::default().max_fails(1))
        .build([
            Backend::new("10.0.0.1:80".to_owned()).weight(3),
            Backend::new("10.0.0.2:80".to_owned()).max_conns(9),
            Backend::new("with \"quotes\" \\ and\nnewline".to_owned()).backup(true),
        ])
        .expect("valid");
    let held: Vec<_> = (0..5)
        .map(|_| api.pick(&Context::new()).expect("pick"))
        .collect();
    let failed = api.pick(&Context::new()).expect("pick");
    clock.advance(Duration::from_millis(12));
    failed.failure();
    api.set_state("10.0.0.2:80", AdminState::Draining)
        .expect("present");
    let other: Pool<String> = Pool::builder("random".parse().expect("name"))
        .build([Backend::new("10.0.1.1:80".to_owned())])
        .expect("valid");
    let mut metrics = PrometheusText::new();
    metrics
        .pool("api", &api)
        .pool("static \"files\" v1", &other);
    let text = metrics.render();
    let scrape = Scrape::parse(text.lines().map(|line| Ok(line.to_owned()))).expect("parses");
    // Every family is documented.
    for name in [
        "active",
        "picks_total",
        "failures_total",
        "weight",
        "effective_weight",
        "state",
    ] {
        assert!(
            scrape
                .docs
                .contains_key(&format!("loadbalance_backend_{name}")),
            "{name}"
        );
    }
    let mut seen: HashMap<(String, String, String, String), f64> = HashMap::new();
    for sample in &scrape.samples {
        let label = |name: &str| sample.labels.get(name).unwrap_or_default().to_owned();
        let key = (
            sample.metric.clone(),
            label("pool"),
            label("backend"),
            label("state"),
        );
        assert!(
            seen.insert(key, value(&sample.value)).is_none(),
            "one sample a series"
        );
    }
    // prometheus-parse 0.2 hands label values back as written, escapes
    // and all: compare with the format's escaping of the expected value.
    let escape = |value: &str| {
        value
            .replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n")
    };
    let get = |metric: &str, pool: &str, backend: &str, state: &str| {
        let key = (
            format!("loadbalance_backend_{metric}"),
            escape(pool),
            escape(backend),
            state.to_owned(),
        );
        *seen
            .get(&key)
            .unwrap_or_else(|| panic!("no sample {key:?}"))
    };
    for (pool, stats) in [("api", api.stats()), ("static \"files\" v1", other.stats())] {
        for s in stats {
            let backend = s.backend.as_str();
            assert_eq!(get("active", pool, backend, ""), s.active as f64);
            assert_eq!(get("picks_total", pool, backend, ""), s.picks as f64);
            assert_eq!(get("failures_total", pool, backend, ""), s.failures as f64);
            assert_eq!(get("weight", pool, backend, ""), f64::from(s.weight));
            assert_eq!(
                get("effective_weight", pool, backend, ""),
                f64::from(s.effective_weight)
            );
            assert_eq!(
                get("max_conns", pool, backend, ""),
                f64::from(s.max_conns.unwrap_or(0))
            );
            assert_eq!(
                get("backup", pool, backend, ""),
                f64::from(u8::from(s.backup))
            );
            let states = [
                (BackendState::Up, "up"),
                (BackendState::Down, "down"),
                (BackendState::Draining, "draining"),
                (BackendState::Ejected, "ejected"),
                (BackendState::Trial, "trial"),
                (BackendState::SlowStart, "slow_start"),
            ];
            for (state, label) in states {
                assert_eq!(
                    get("state", pool, backend, label),
                    f64::from(u8::from(s.state == state))
                );
            }
            if let Some(latency) = s.latency {
                assert_eq!(
                    get("latency_seconds", pool, backend, ""),
                    latency.as_secs_f64()
                );
            }
        }
    }
    assert_eq!(get("failures_total", "api", &failed_name(&api), ""), 1.0);
    assert_eq!(get("state", "api", "10.0.0.2:80", "draining"), 1.0);
    drop(held);
}

fn failed_name(pool: &Pool<String>) -> String {
    pool.stats()
        .into_iter()
        .find(|s| s.failures == 1)
        .expect("one failed")
        .backend
}
