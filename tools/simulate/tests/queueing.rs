//! The simulator against results computed by hand, and against itself.

use std::time::Duration;

use loadbalance_simulate::{Antagonists, Scenario, Server, Service, scenarios, simulate};

/// An M/D/1 queue (Poisson arrivals, a fixed service time D, one server
/// serving one at a time) at load ρ waits ρD / 2(1 − ρ) on average
/// (Pollaczek–Khinchine). At ρ = 0.7 and D = 10 ms: 11.67 ms.
#[test]
fn an_md1_queue_waits_as_pollaczek_khinchine_says() {
    let service = Duration::from_millis(10);
    let rho = 0.7;
    // Four seeds' runs together: one run of 280,000 requests strays up to
    // 2.6% (a queue's waits are correlated).
    let mut waits = 0.0;
    let mut answered = 0;
    for seed in 1..=4 {
        let mut scenario = Scenario::new(
            "M/D/1",
            vec![Server::new(Service::Fixed(service)).concurrency(1)],
            rho / service.as_secs_f64(),
            Duration::from_secs(5_000),
        );
        scenario.seed = seed;
        let report = simulate(&scenario, "round_robin").expect("runs");
        assert_eq!(
            report.succeeded, report.requests,
            "no timeout, nothing fails"
        );
        waits += (report.mean - service.as_secs_f64()) * report.succeeded as f64;
        answered += report.succeeded;
    }
    assert!(answered > 1_300_000, "{answered} requests");
    let wait = waits / answered as f64;
    let expected = rho * service.as_secs_f64() / (2.0 * (1.0 - rho));
    assert!(
        (wait - expected).abs() < 0.02 * expected,
        "mean wait {:.3} ms against {:.3} ms",
        wait * 1e3,
        expected * 1e3
    );
}

/// An M/M/1 queue's mean time in the system is 1 / (μ − λ): 33.3 ms at
/// μ = 100 and λ = 70 a second.
#[test]
fn an_mm1_queue_holds_requests_as_little_and_kendall_say() {
    let mut scenario = Scenario::new(
        "M/M/1",
        vec![Server::new(Service::Exponential(Duration::from_millis(10))).concurrency(1)],
        70.0,
        Duration::from_secs(6_000),
    );
    scenario.seed = 7;
    let report = simulate(&scenario, "round_robin").expect("runs");
    let expected = 1.0 / (100.0 - 70.0);
    assert!(
        (report.mean - expected).abs() < 0.03 * expected,
        "mean time in system {:.3} ms against {:.3} ms",
        report.mean * 1e3,
        expected * 1e3
    );
}

#[test]
fn a_seed_gives_one_table_and_another_seed_another() {
    let run = |seed| {
        scenarios::ALGORITHMS
            .iter()
            .map(|algorithm| simulate(&scenarios::demo(seed), algorithm).expect("runs"))
            .collect::<Vec<_>>()
    };
    let first = run(3);
    assert_eq!(first, run(3));
    assert_ne!(first, run(4));
}

/// Linkerd's scenario: round-robin sends a server slowed to 2 s its
/// eleventh of the load for half the run, so about 1/22 of requests pass
/// the 1 s timeout; latency-aware picks avoid it.
#[test]
fn in_linkerds_scenario_round_robin_fails_its_share_and_peak_ewma_does_not() {
    let scenario = scenarios::linkerd(1);
    let round_robin = simulate(&scenario, "round_robin").expect("runs");
    assert!(
        (0.94..0.97).contains(&round_robin.success()),
        "round-robin: {}",
        round_robin.success()
    );
    let peak_ewma = simulate(&scenario, "peak_ewma").expect("runs");
    assert!(
        peak_ewma.success() > 0.995,
        "peak EWMA: {}",
        peak_ewma.success()
    );
    let least_conn = simulate(&scenario, "least_conn").expect("runs");
    assert!(
        least_conn.success() > round_robin.success(),
        "least-connections {} against round-robin {}",
        least_conn.success(),
        round_robin.success()
    );
}

#[test]
fn identical_servers_share_evenly_and_a_name_that_is_no_algorithm_is_an_error() {
    let scenario = Scenario::new(
        "even",
        (0..4)
            .map(|_| Server::new(Service::Fixed(Duration::from_millis(10))).concurrency(4))
            .collect(),
        1_000.0,
        Duration::from_secs(20),
    );
    let report = simulate(&scenario, "least_conn").expect("runs");
    assert!(report.imbalance < 1.05, "imbalance {}", report.imbalance);
    assert!(simulate(&scenario, "least_connections").is_err());
}

/// Antagonists slow a server threefold a fifth of the time: with fixed
/// 10 ms service and no queue, the mean is 0.8 × 10 + 0.2 × 30 = 14 ms
/// (spells of 2 s every 8 s on average, drawn the same for every
/// algorithm).
#[test]
fn antagonists_slow_their_servers_for_their_share_of_the_time() {
    let mut scenario = Scenario::new(
        "antagonists",
        (0..20)
            .map(|_| Server::new(Service::Fixed(Duration::from_millis(10))))
            .collect(),
        500.0,
        Duration::from_secs(2_000),
    );
    scenario.antagonists = Some(Antagonists {
        gap: Duration::from_secs(8),
        length: Duration::from_secs(2),
        factor: 3.0,
    });
    let report = simulate(&scenario, "round_robin").expect("runs");
    assert!(
        (report.mean - 0.014).abs() < 0.0005,
        "mean {:.3} ms",
        report.mean * 1e3
    );
    // A latency-aware pick avoids the slowed servers.
    let peak_ewma = simulate(&scenario, "peak_ewma").expect("runs");
    assert!(
        peak_ewma.mean < 0.012,
        "peak EWMA: {:.3} ms",
        peak_ewma.mean * 1e3
    );
}
