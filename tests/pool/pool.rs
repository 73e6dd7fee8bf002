//! The pool: every algorithm and form chosen at run time, live updates
//! through one type, timed outcomes, lookups by backend.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use loadbalance::{
    AdminState, Algorithm, Backend, BackendState, Context, Form, HealthPolicy, ManualClock,
    PickError, Pool, UpdateError,
};

const NAMES: [&str; 10] = [
    "round_robin",
    "unweighted_round_robin",
    "least_conn",
    "random",
    "random two least_conn",
    "peak_ewma",
    "ip_hash",
    "hash",
    "hash consistent",
    "consistent_hash",
];

fn backends() -> Vec<Backend<String>> {
    (1..=4)
        .map(|i| Backend::new(format!("10.0.0.{i}:80")).weight(i))
        .collect()
}

fn client(i: u32) -> Context<'static> {
    Context::from_addr(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i * 7919)))
}

/// Every algorithm in both forms builds from its name, picks, and runs
/// every live update through the one type.
#[test]
fn every_algorithm_and_form_runs_live() {
    for name in NAMES {
        for form in [Form::LockFree, Form::Locked] {
            let algorithm: Algorithm = name.parse().expect(name);
            let pool = Pool::builder(algorithm.clone())
                .form(form)
                .build(backends())
                .expect("valid");
            assert_eq!((pool.algorithm(), pool.form()), (&algorithm, form));
            let case = format!("{name} {form}");
            let mut seen = [0u32; 4];
            for i in 0..400 {
                let picked = pool.pick(&client(i)).expect(&case);
                seen[picked.guard().index()] += 1;
                picked.success();
            }
            assert!(
                seen.iter().filter(|&&n| n > 0).count() >= 2,
                "{case}: {seen:?}"
            );
            pool.add(Backend::new("10.0.0.9:80".to_owned()))
                .expect(&case);
            assert_eq!(
                pool.add(Backend::new("10.0.0.9:80".to_owned())),
                Err(UpdateError::Duplicate)
            );
            pool.set_weight("10.0.0.9:80", 3).expect(&case);
            pool.set_max_conns("10.0.0.9:80", 1).expect(&case);
            pool.set_backup("10.0.0.9:80", false).expect(&case);
            pool.set_state("10.0.0.1:80", AdminState::Down)
                .expect(&case);
            for i in 0..200 {
                assert_ne!(
                    *pool.pick(&client(i)).expect(&case),
                    "10.0.0.1:80",
                    "{case}"
                );
            }
            pool.remove("10.0.0.1:80").expect(&case);
            assert_eq!(pool.len(), 4, "{case}");
            assert_eq!(pool.active_of("10.0.0.1:80"), None, "{case}");
            assert_eq!(
                pool.remove("10.0.0.1:80"),
                Err(UpdateError::NotFound),
                "{case}"
            );
            assert!(pool.stats().iter().all(|s| s.active == 0), "{case}");
        }
    }
}

/// The keyed algorithms say so, and refuse a pick without a key.
#[test]
fn keyed_algorithms_need_a_key() {
    for name in NAMES {
        let algorithm: Algorithm = name.parse().expect(name);
        let pool = Pool::builder(algorithm.clone())
            .build(backends())
            .expect("valid");
        let result = pool.pick(&Context::new()).map(|picked| picked.success());
        assert_eq!(result.is_err(), algorithm.keyed(), "{name}");
        if algorithm.keyed() {
            assert_eq!(result, Err(PickError::MissingKey), "{name}");
        }
    }
}

/// A pick is timed from the pick by the pool's clock: success and failure
/// report exactly the time since, once, and give the backend back.
#[test]
fn outcomes_report_the_latency_since_the_pick() {
    let clock = Arc::new(ManualClock::new());
    let pool = Pool::builder(Algorithm::LeastConn)
        .clock(Arc::clone(&clock))
        .health(HealthPolicy::default().max_fails(2))
        .build(backends())
        .expect("valid");
    let picked = pool.pick(&Context::new()).expect("pick");
    let name = (*picked).clone();
    assert_eq!(pool.active_of(name.as_str()), Some(1));
    clock.advance(Duration::from_millis(40));
    assert_eq!(picked.elapsed(), Duration::from_millis(40));
    picked.failure();
    let stats = pool.stats_of(name.as_str()).expect("present");
    assert_eq!((stats.active, stats.failures), (0, 1));
    assert_eq!(stats.latency, Some(Duration::from_millis(40)));
    assert_eq!(stats.state, BackendState::Up, "one failure of two");
    // A request dropped without an outcome reports nothing.
    let dropped = pool.pick(&Context::new()).expect("pick");
    let other = (*dropped).clone();
    drop(dropped);
    let stats = pool.stats_of(other.as_str()).expect("present");
    assert_eq!(stats.active, 0);
    assert_eq!(stats.failures, u64::from(other == name));
}

#[test]
fn lookups_by_backend() {
    let pool = Pool::builder(Algorithm::RoundRobin)
        .build(backends())
        .expect("valid");
    let held: Vec<_> = (0..10)
        .map(|_| pool.pick(&Context::new()).expect("pick"))
        .collect();
    let total: usize = (1..=4)
        .map(|i| {
            pool.active_of(format!("10.0.0.{i}:80").as_str())
                .expect("present")
        })
        .sum();
    assert_eq!(total, 10);
    let stats = pool.stats_of("10.0.0.4:80").expect("present");
    assert_eq!((stats.index, stats.weight, stats.active), (3, 4, 4));
    assert!(pool.stats_of("10.0.0.5:80").is_none());
    drop(held);
    // A removed backend's index is gone: lookups follow identity.
    pool.remove("10.0.0.1:80").expect("present");
    assert_eq!(pool.stats_of("10.0.0.4:80").expect("present").index, 2);
}
