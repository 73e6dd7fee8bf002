//! Pool configuration (feature `serde`): round trips through TOML and JSON,
//! one error per invalid field, and reloads applied to a running pool as a
//! diff by identity, also under picking threads.
#![cfg(feature = "serde")]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;

use loadbalance::{BackendConfig, BackendState, Context, OptionsConfig, Pool, PoolConfig};
use proptest::prelude::*;

fn backend(server: &str, weight: u32) -> BackendConfig<String> {
    BackendConfig {
        weight,
        ..BackendConfig::new(server.to_owned())
    }
}

fn config(algorithm: &str, backends: Vec<BackendConfig<String>>) -> PoolConfig<String> {
    PoolConfig {
        algorithm: algorithm.to_owned(),
        form: None,
        options: OptionsConfig::default(),
        health: Default::default(),
        backends,
    }
}

fn full() -> PoolConfig<String> {
    let mut config = config(
        "random two least_conn",
        vec![
            backend("10.0.0.1:80", 3),
            BackendConfig {
                max_conns: 100,
                backup: true,
                state: "draining".to_owned(),
                ..backend("10.0.0.2:80", 1)
            },
        ],
    );
    config.form = Some("locked".to_owned());
    config.options.choices = Some(3);
    config.options.seed = Some(42);
    config.health.max_fails = 3;
    config.health.slow_start_ms = 30_000;
    config.health.when_all_ejected = "fail".to_owned();
    config
}

#[test]
fn round_trips_through_toml_and_json() {
    let original = full();
    let toml_text = toml::to_string(&original).expect("serialises");
    assert_eq!(
        toml::from_str::<PoolConfig<String>>(&toml_text).expect("parses"),
        original
    );
    let json = serde_json::to_string(&original).expect("serialises");
    assert_eq!(
        serde_json::from_str::<PoolConfig<String>>(&json).expect("parses"),
        original
    );
    // Written by hand, defaults filled in.
    let by_hand: PoolConfig<String> = toml::from_str(
        r#"
        algorithm = "least_conn"
        [[backends]]
        server = "10.0.0.1:80"
        [[backends]]
        server = "10.0.0.2:80"
        weight = 2
        "#,
    )
    .expect("parses");
    assert_eq!(
        by_hand,
        config(
            "least_conn",
            vec![backend("10.0.0.1:80", 1), backend("10.0.0.2:80", 2)]
        )
    );
    by_hand.build().expect("valid");
    // Unknown fields are refused, not ignored.
    assert!(toml::from_str::<PoolConfig<String>>("algorithm = \"x\"\nbackend = []").is_err());
}

/// Every invalid field gives an error naming it and its value, and a
/// running pool it is applied to is unchanged.
#[test]
fn every_invalid_field_has_its_own_error() {
    type Change = fn(&mut PoolConfig<String>);
    let cases: [(Change, &str, &str); 14] = [
        (
            |c| c.algorithm = "least_connections".into(),
            "algorithm",
            "least_connections",
        ),
        (|c| c.form = Some("mutex".into()), "form", "mutex"),
        (|c| c.options.choices = Some(1), "options.choices", "1"),
        (|c| c.options.choices = Some(9), "options.choices", "9"),
        (|c| c.options.decay_ms = Some(1), "options.decay_ms", "1"),
        (
            |c| c.options.bounded_load = Some(125),
            "options.bounded_load",
            "125",
        ),
        (
            |c| c.options.table_bits = Some(12),
            "options.table_bits",
            "12",
        ),
        (
            |c| c.health.when_all_ejected = "retry".into(),
            "health.when_all_ejected",
            "retry",
        ),
        (|c| c.backends[1].weight = 0, "backends[1].weight", "0"),
        (
            |c| c.backends[1].state = "off".into(),
            "backends[1].state",
            "off",
        ),
        (
            |c| c.backends[1].server = "10.0.0.1:80".into(),
            "backends[1].server",
            "10.0.0.1:80",
        ),
        (|c| c.backends.clear(), "backends", "0 backends"),
        (
            |c| c.backends[0].weight = u32::MAX,
            "backends",
            "total weight 4294967298",
        ),
        (
            |c| c.algorithm = "peak_ewma".into(),
            "algorithm",
            "peak_ewma (locked)",
        ),
    ];
    let good = {
        let mut config = full();
        config.backends.push(backend("10.0.0.3:80", 2));
        config
    };
    let pool = good.build().expect("valid");
    let before = pool.stats();
    for (change, field, value) in cases {
        let mut bad = good.clone();
        change(&mut bad);
        let error = if field == "algorithm" && value.ends_with("(locked)") {
            // Valid on its own, but not the algorithm the pool runs.
            bad.build().expect("valid on its own");
            pool.apply(&bad).expect_err(field)
        } else {
            let error = bad.build().expect_err(field);
            assert_eq!(bad.validate().expect_err(field), error);
            assert_eq!(pool.apply(&bad).expect_err(field), error);
            error
        };
        assert_eq!(
            (error.field.as_str(), error.value.as_str()),
            (field, value),
            "{error}"
        );
        assert_eq!(pool.stats(), before, "{field}: nothing applied");
    }
}

/// A reload keeps counts and health of the backends it keeps, adds,
/// removes, re-weights, re-flags and re-orders, and leaves the pool as a
/// pool built from the new configuration (apart from counts).
#[test]
fn a_reload_is_a_diff_by_identity() {
    let old = config(
        "least_conn",
        vec![backend("a", 1), backend("b", 2), backend("c", 3)],
    );
    let pool = old.build().expect("valid");
    let held: Vec<_> = (0..6)
        .map(|_| pool.pick(&Context::new()).expect("pick"))
        .collect();
    let active_b = pool.active_of("b").expect("present");
    let mut new = config(
        "least_conn",
        vec![backend("d", 1), backend("b", 5), backend("a", 1)],
    );
    new.backends[2].state = "down".to_owned();
    new.backends[1].max_conns = 7;
    pool.apply(&new).expect("valid");
    assert_eq!(pool.active_of("b"), Some(active_b), "count kept");
    assert_eq!(pool.active_of("c"), None, "removed");
    let scratch = new.build().expect("valid");
    let shape = |pool: &Pool<String>| {
        pool.stats()
            .into_iter()
            .map(|s| (s.backend, s.weight, s.max_conns, s.backup, s.state))
            .collect::<Vec<_>>()
    };
    assert_eq!(shape(&pool), shape(&scratch));
    assert_eq!(
        pool.stats_of("a").expect("present").state,
        BackendState::Down
    );
    drop(held);
    assert!(pool.stats().iter().all(|s| s.active == 0));
}

fn arbitrary_config() -> impl Strategy<Value = PoolConfig<String>> {
    let backend = (0..12u8, 1..5u32, 0..3u32, any::<bool>(), 0..3usize).prop_map(
        |(server, weight, max_conns, backup, state)| BackendConfig {
            server: format!("10.0.0.{server}:80"),
            weight,
            max_conns,
            backup,
            state: ["up", "down", "draining"][state].to_owned(),
        },
    );
    (prop::collection::vec(backend, 0..8), 0..3u32).prop_map(|(backends, max_fails)| {
        let mut config = config("least_conn", backends);
        config.health.max_fails = max_fails;
        config
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Arbitrary configurations, valid or not, applied to a running pool
    /// while two threads pick: no panic, a bad one changes nothing, a good
    /// one leaves the pool as if built from it; every count returns to 0.
    #[test]
    fn arbitrary_reloads_under_picking_threads(configs in prop::collection::vec(arbitrary_config(), 1..8)) {
        let pool = Arc::new(config("least_conn", vec![backend("10.0.0.0:80", 1)]).build().expect("valid"));
        let stop = Arc::new(AtomicBool::new(false));
        let pickers: Vec<_> = (0..2)
            .map(|_| {
                let (pool, stop) = (Arc::clone(&pool), Arc::clone(&stop));
                thread::spawn(move || {
                    let mut held = Vec::new();
                    // Relaxed: a flag that only ends the loop.
                    while !stop.load(Ordering::Relaxed) {
                        if let Ok(picked) = pool.pick(&Context::new()) {
                            held.push(picked);
                        }
                        if held.len() > 4 {
                            held.remove(0).success();
                        }
                    }
                })
            })
            .collect();
        for config in &configs {
            let before = pool.stats().into_iter().map(|s| (s.backend, s.weight, s.state)).collect::<Vec<_>>();
            match config.build() {
                Ok(scratch) => {
                    pool.apply(config).expect("valid");
                    let shape = |pool: &Pool<String>| {
                        pool.stats().into_iter().map(|s| (s.backend, s.weight, s.max_conns, s.backup)).collect::<Vec<_>>()
                    };
                    prop_assert_eq!(shape(&pool), shape(&scratch));
                }
                Err(error) => {
                    prop_assert_eq!(pool.apply(config).expect_err("invalid"), error);
                    let after = pool.stats().into_iter().map(|s| (s.backend, s.weight, s.state)).collect::<Vec<_>>();
                    prop_assert_eq!(after, before);
                }
            }
        }
        stop.store(true, Ordering::Relaxed);
        for picker in pickers {
            picker.join().expect("no panic");
        }
        prop_assert!(pool.stats().iter().all(|s| s.active == 0));
    }
}
#[test]
fn a_probing_pool_is_configured_by_name_and_options() {
    let text = r#"
        algorithm = "prequal"
        backends = [{ server = "a" }, { server = "b" }]
        [options]
        probes = 1
        probe_pool = 4
        probe_uses = 3
        probe_max_age_ms = 250
        hot_percentile = 60
        seed = 5
    "#;
    let config: PoolConfig<String> = toml::from_str(text).expect("valid");
    let pool = config.build().expect("a pool");
    assert_eq!(pool.algorithm().to_string(), "probing");
    let _picked = pool.pick(&Context::new()).expect("a pick");
    assert_eq!(pool.probes().len(), 1);
    // Options the algorithm has no use for, and out of range, are errors.
    let other: PoolConfig<String> =
        toml::from_str(&text.replace("prequal", "peak_ewma")).expect("valid");
    assert!(
        other
            .build()
            .expect_err("probes on peak EWMA")
            .to_string()
            .contains("probes")
    );
    let wide: PoolConfig<String> =
        toml::from_str(&text.replace("probe_pool = 4", "probe_pool = 17")).expect("valid");
    assert!(
        wide.build()
            .expect_err("17 answers")
            .to_string()
            .contains("pool 17 is outside 1..=16")
    );
    let never: PoolConfig<String> = toml::from_str(&text.replace("= 250", "= 0")).expect("valid");
    assert!(never.build().is_err(), "an age of 0");
}
