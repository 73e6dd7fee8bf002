//! The event loop's rules, each a case that can be computed by hand; the
//! first four were found by a review, each failing before its fix.

use std::time::Duration;

use loadbalance_simulate::{Scenario, Server, Service, scenarios, simulate};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A request that timed out ranks above every answer: half the requests
/// failing puts p99 past the timeout.
#[test]
fn failed_requests_count_in_the_tail() {
    let servers = vec![
        Server::new(Service::Fixed(ms(10))),
        Server::new(Service::Fixed(ms(2_000))),
    ];
    let mut scenario = Scenario::new("half fail", servers, 100.0, Duration::from_secs(10));
    scenario.timeout = Some(ms(1_000));
    let report = simulate(&scenario, "unweighted_round_robin").expect("runs");
    assert!(
        (report.success() - 0.5).abs() < 0.01,
        "success {}",
        report.success()
    );
    assert!(
        report.p99 >= 1.0,
        "p99 {} s with half the requests timed out",
        report.p99
    );
}

/// Seed 0 once made the crate's seeded draws the arrivals' own stream, so
/// `random` picked by the arrival gaps.
#[test]
fn seed_zero_picks_are_independent_of_arrivals() {
    let servers = (0..2)
        .map(|_| Server::new(Service::Fixed(ms(10))).concurrency(1))
        .collect();
    let mut scenario = Scenario::new("2 x M/D/1", servers, 140.0, Duration::from_secs(2_000));
    for seed in [1, 0] {
        scenario.seed = seed;
        let report = simulate(&scenario, "random").expect("runs");
        assert!(
            report.imbalance < 1.05,
            "seed {seed}: imbalance {}",
            report.imbalance
        );
    }
}

/// The keyed algorithms pick by the requests' clients.
#[test]
fn keyed_algorithms_are_simulated() {
    let servers = (0..3)
        .map(|_| Server::new(Service::Fixed(ms(10))))
        .collect();
    let scenario = Scenario::new("keyed", servers, 100.0, Duration::from_secs(10));
    for name in ["ip_hash", "hash", "hash consistent", "consistent_hash"] {
        let report = simulate(&scenario, name).expect("runs");
        assert!(
            report.requests > 900,
            "{name}: {} requests",
            report.requests
        );
        assert_eq!(report.succeeded, report.requests, "{name}");
        assert!(
            report.imbalance < 1.5,
            "{name}: imbalance {}",
            report.imbalance
        );
    }
}

/// No input panics or runs for ever: a rate that is no rate is an error,
/// a run of no time has no request, a timeout of `Duration::MAX` is none.
#[test]
fn odd_scenarios_end_without_panicking() {
    let one = Duration::from_secs(1);
    let server = || vec![Server::new(Service::Fixed(ms(10)))];
    for rate in [0.0, -1.0, f64::NAN, f64::INFINITY, 1e12] {
        let scenario = Scenario::new("odd", server(), rate, one);
        assert!(simulate(&scenario, "round_robin").is_err(), "rate {rate}");
    }
    let none = Scenario::new("none", server(), 100.0, Duration::ZERO);
    assert_eq!(simulate(&none, "round_robin").expect("runs").requests, 0);
    let mut forever = Scenario::new("forever", server(), 100.0, one);
    forever.timeout = Some(Duration::MAX);
    let report = simulate(&forever, "round_robin").expect("runs");
    assert_eq!(report.succeeded, report.requests);
}

/// An M/M/1 queue's time in the system is exponential with rate μ − λ:
/// its quantiles are −ln(1 − q) / 30 s at μ = 100, λ = 70 (a LIFO queue
/// has the same mean, not these quantiles).
#[test]
fn an_mm1_queue_is_first_come_first_served() {
    let mut scenario = Scenario::new(
        "M/M/1",
        vec![Server::new(Service::Exponential(ms(10))).concurrency(1)],
        70.0,
        Duration::from_secs(6_000),
    );
    scenario.seed = 7;
    let report = simulate(&scenario, "round_robin").expect("runs");
    for (got, q) in [(report.p50, 0.5_f64), (report.p99, 0.99)] {
        let want = -(1.0 - q).ln() / 30.0;
        assert!(
            (got / want - 1.0).abs() < 0.06,
            "q {q}: {got} against {want}"
        );
    }
}

/// Linkerd's round-robin: the slow server holds its tries until the 1 s
/// timeout for half the run, the others for their service time. Time-
/// averaged in flight: A = 30 + 30 E[S] on it, B = 60 E[S] on each other,
/// so the imbalance is 11A / (A + 10B) (it fails if a given-up try kept
/// its count).
#[test]
fn linkerds_round_robin_imbalance_is_as_computed_by_hand() {
    let mean = 0.010 * 0.125_f64.exp();
    let (a, b) = (30.0 + 30.0 * mean, 60.0 * mean);
    let want = 11.0 * a / (a + 10.0 * b);
    let report = simulate(&scenarios::linkerd(1), "round_robin").expect("runs");
    assert!(
        (report.imbalance / want - 1.0).abs() < 0.02,
        "{} against {want}",
        report.imbalance
    );
}

/// A try given up at 100 ms is retried on the other server: every
/// request is answered in 10 ms or in 110 ms (it fails without retries,
/// or if the retry went to the same server).
#[test]
fn a_try_given_up_is_retried_elsewhere_within_the_deadline() {
    let servers = vec![
        Server::new(Service::Fixed(ms(2_000))),
        Server::new(Service::Fixed(ms(10))),
    ];
    let mut scenario = Scenario::new("retry", servers, 50.0, Duration::from_secs(20));
    scenario.timeout = Some(ms(1_000));
    scenario.try_timeout = Some(ms(100));
    scenario.attempts = 2;
    let report = simulate(&scenario, "unweighted_round_robin").expect("runs");
    assert_eq!(report.succeeded, report.requests);
    assert!((report.p99 - 0.110).abs() < 1e-9, "{report:?}");
    assert!(
        (report.p50 - 0.010).abs() < 1e-9 || (report.p50 - 0.110).abs() < 1e-9,
        "{report:?}"
    );
}

/// A try its client gave up while it waited in the queue is never served.
/// One server serving one at a time in 100 ms, twice as many requests as
/// it can serve, each given up at 150 ms: the queue keeps only tries
/// younger than that, and those starting within 50 ms are answered (7.8%
/// with seed 1). Were the given-up tries served too, the queue would grow
/// without end and, after its first moments, nothing would be answered in
/// time (0.07%).
#[test]
fn a_try_given_up_in_the_queue_is_not_served() {
    let mut scenario = Scenario::new(
        "given up",
        vec![Server::new(Service::Fixed(ms(100))).concurrency(1)],
        20.0,
        Duration::from_secs(200),
    );
    scenario.timeout = Some(ms(150));
    let report = simulate(&scenario, "round_robin").expect("runs");
    assert!(report.success() > 0.03, "success {}", report.success());
}

/// Four servers, one of them five times slower, each serving one request
/// at a time, behind ten balancers: the probing pick sees the slow one's
/// queue in its answers and sends it little. With the answers delayed past
/// their age (a probe taking 2 s each way), the same pick falls back to
/// each balancer's own least-connections, which cannot see the others'
/// picks, and the tail is several times longer.
#[test]
fn probes_answers_steer_the_probing_pick() {
    let mut servers: Vec<Server> = (0..4)
        .map(|_| Server::new(Service::Fixed(ms(5))).concurrency(1))
        .collect();
    servers[0] = Server::new(Service::Fixed(ms(25))).concurrency(1);
    let mut scenario = Scenario::new("one slow", servers, 300.0, Duration::from_secs(60));
    scenario.balancers = 10;
    scenario.timeout = Some(ms(1_000));
    let answered = simulate(&scenario, "probing").expect("runs");
    scenario.probe_delay = Duration::from_secs(2);
    let unanswered = simulate(&scenario, "probing").expect("runs");
    assert!(
        answered.p99 * 3.0 < unanswered.p99,
        "p99 {} s with answers, {} s without",
        answered.p99,
        unanswered.p99
    );
}

/// Balancers count only their own picks: least-connections behind 50 of
/// them spreads worse than one balancer that sees every pick.
#[test]
fn each_balancer_sees_only_its_own_picks() {
    let servers = (0..8)
        .map(|_| Server::new(Service::Fixed(ms(10))).concurrency(2))
        .collect();
    let mut scenario = Scenario::new("8 servers", servers, 1_200.0, Duration::from_secs(20));
    let one = simulate(&scenario, "least_conn").expect("runs");
    scenario.balancers = 50;
    let many = simulate(&scenario, "least_conn").expect("runs");
    assert!(
        many.p99 > 2.0 * one.p99,
        "p99 {} s behind one balancer, {} s behind 50",
        one.p99,
        many.p99
    );
}

/// At twice the servers' capacity the adaptive limit sheds the excess
/// and keeps the rest fast: goodput within 5% of capacity and p99 within
/// twice the unloaded one, where a generous fixed limit lets queues grow
/// (p99 several times the unloaded one) and no limit lets every request
/// time out.
#[test]
fn the_adaptive_limit_holds_goodput_and_tail_at_twice_capacity() {
    use loadbalance_simulate::Limit;
    let run = |load: f64, limit: Limit| {
        let mut scenario = scenarios::overload(load, "test", limit, 3);
        scenario.duration = Duration::from_secs(10);
        simulate(&scenario, "least_conn").expect("runs")
    };
    let capacity = scenarios::overload_capacity();
    let unloaded = run(0.5, Limit::None);
    let adaptive = run(
        2.0,
        Limit::Adaptive(loadbalance::limit::AdaptiveOptions::default()),
    );
    assert!(
        adaptive.goodput >= 0.95 * capacity,
        "goodput {} of {capacity}",
        adaptive.goodput
    );
    assert!(
        adaptive.p99 <= 2.0 * unloaded.p99,
        "p99 {} s, unloaded {} s",
        adaptive.p99,
        unloaded.p99
    );
    assert!(adaptive.shed > 0);
    let generous = run(2.0, Limit::Fixed(1000));
    assert!(
        generous.p99 > 5.0 * unloaded.p99,
        "p99 {} s behind a fixed 1000",
        generous.p99
    );
    let none = run(2.0, Limit::None);
    assert!(
        none.goodput < 0.5 * capacity,
        "goodput {} with no limit",
        none.goodput
    );
}
