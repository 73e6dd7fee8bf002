//! A user's own algorithm (`tests/common/user_algorithm.rs`) in a pool:
//! built with `Pool::custom`, it gets what the crate's algorithms get
//! (updates by identity, passive health, limits, waiting, retries,
//! metrics, configurations applied to it).
#![cfg(all(feature = "serde", feature = "metrics", feature = "wait"))]

use futures_lite::future::block_on;
use loadbalance::{
    AdminState, Algorithm, Backend, BackendConfig, BuildError, Context, Form, HealthPolicy,
    LockFree, Locked, OptionsConfig, Pool, PoolConfig, PrometheusText, RetryPolicy, Verdict,
};

use crate::user_algorithm::{Rotating, RotatingState};

fn servers(n: usize) -> Vec<Backend<String>> {
    (0..n)
        .map(|i| Backend::new(format!("10.0.0.{i}:80")))
        .collect()
}

fn config(algorithm: &str, servers: &[&str]) -> PoolConfig<String> {
    PoolConfig {
        algorithm: algorithm.to_owned(),
        form: None,
        options: OptionsConfig::default(),
        health: Default::default(),
        backends: servers
            .iter()
            .map(|server| BackendConfig::new((*server).to_owned()))
            .collect(),
    }
}

#[test]
fn a_custom_pool_runs_with_its_name_and_form() {
    let pool = Pool::custom::<LockFree<Rotating>>("rotating", ())
        .build(servers(3))
        .expect("valid");
    assert_eq!(pool.algorithm().to_string(), "rotating");
    assert_eq!(pool.form(), Form::LockFree);
    assert!(matches!(pool.algorithm(), Algorithm::Custom(custom) if custom.name() == "rotating"));
    // Held picks spread by load: three backends, three different picks.
    let held: Vec<_> = (0..3)
        .map(|_| pool.pick(&Context::new()).expect("pick"))
        .collect();
    let mut picked: Vec<&str> = held.iter().map(|p| p.as_str()).collect();
    picked.sort_unstable();
    assert_eq!(picked, ["10.0.0.0:80", "10.0.0.1:80", "10.0.0.2:80"]);
    assert_eq!(pool.active_of("10.0.0.1:80"), Some(1));
    drop(held);
    let locked = Pool::custom::<Locked<RotatingState>>("rotating", ())
        .form(Form::LockFree) // the type's form wins
        .build(servers(2))
        .expect("valid");
    assert_eq!(locked.form(), Form::Locked);
}

#[test]
fn a_custom_pool_updates_by_identity_and_ejects_by_health() {
    let pool = Pool::custom::<LockFree<Rotating>>("rotating", ())
        .health(HealthPolicy::default().max_fails(1))
        .build(servers(2))
        .expect("valid");
    let held = pool.pick(&Context::new()).expect("pick");
    let backend = (*held).clone();
    pool.add(Backend::new("10.0.0.9:80".to_owned()))
        .expect("added");
    assert_eq!(pool.len(), 3);
    assert_eq!(
        pool.active_of(backend.as_str()),
        Some(1),
        "its count carried over"
    );
    held.failure();
    for _ in 0..6 {
        let next = pool.pick(&Context::new()).expect("pick");
        assert_ne!(*next, backend, "an ejected backend took a pick");
    }
    pool.set_state("10.0.0.9:80", AdminState::Down)
        .expect("present");
    pool.remove("10.0.0.9:80").expect("present");
    assert_eq!(pool.len(), 2);
}

#[test]
fn a_custom_pool_waits_retries_and_exports_metrics() {
    let pool = Pool::custom::<LockFree<Rotating>>("rotating", ())
        .build(servers(2).into_iter().map(|b| b.max_conns(1)))
        .expect("valid");
    let held: Vec<_> = (0..2)
        .map(|_| pool.pick(&Context::new()).expect("pick"))
        .collect();
    assert!(pool.capacity().is_err(), "every backend full");
    let ctx = Context::new();
    let (picked, ()) = block_on(futures_lite::future::zip(pool.pick_wait(&ctx), async {
        drop(held);
    }));
    assert!(picked.is_ok(), "a freed slot wakes the waiting pick");
    drop(picked);
    let policy = RetryPolicy::attempts(2);
    let first_fails = block_on(pool.run(
        &ctx,
        &policy,
        |backend| async move {
            if backend == "10.0.0.0:80" {
                Err("refused")
            } else {
                Ok(backend)
            }
        },
        |result| {
            if result.is_ok() {
                Verdict::Success
            } else {
                Verdict::Retry
            }
        },
    ));
    assert!(first_fails.is_ok(), "{first_fails:?}");
    let text = PrometheusText::new().pool("custom", &pool).render();
    assert!(text.contains("backend=\"10.0.0.1:80\""), "{text}");
}

#[test]
fn a_configuration_applies_to_a_custom_pool_by_name() {
    let pool = Pool::custom::<LockFree<Rotating>>("rotating", ())
        .build(servers(2))
        .expect("valid");
    let held = pool.pick(&Context::new()).expect("pick");
    let kept = (*held).clone();
    pool.apply(&config("rotating", &[kept.as_str(), "10.0.0.7:80"]))
        .expect("applies");
    assert_eq!(pool.len(), 2);
    assert_eq!(
        pool.active_of(kept.as_str()),
        Some(1),
        "counts kept by identity"
    );
    assert_eq!(pool.active_of("10.0.0.7:80"), Some(0));

    let other = pool
        .apply(&config("round_robin", &["10.0.0.8:80"]))
        .expect_err("another algorithm");
    assert_eq!(other.field, "algorithm");
    let mut with_options = config("rotating", &["10.0.0.8:80"]);
    with_options.options.seed = Some(1);
    assert_eq!(
        pool.apply(&with_options).expect_err("options").field,
        "options"
    );
    let empty = pool
        .apply(&config("rotating", &[]))
        .expect_err("no backends");
    assert_eq!(empty.field, "backends");
    let mut zero = config("rotating", &["10.0.0.8:80"]);
    zero.backends[0].weight = 0;
    assert_eq!(
        pool.apply(&zero).expect_err("weight 0").field,
        "backends[0].weight"
    );
    assert_eq!(pool.len(), 2, "nothing changed");
    assert_eq!(pool.active_of(kept.as_str()), Some(1));
    drop(held);
}

#[test]
fn the_builder_refuses_a_custom_algorithm_it_cannot_build() {
    let custom = Pool::<String>::custom::<LockFree<Rotating>>("rotating", ())
        .build(servers(1))
        .expect("valid");
    let error = Pool::<String>::builder(custom.algorithm().clone())
        .build(servers(1))
        .expect_err("no type to build");
    assert_eq!(error, BuildError::CustomAlgorithm { name: "rotating" });
}
