//! The named scenarios, and the algorithms every table compares.

use std::time::Duration;

use super::{Scenario, Server, Service, Slowdown};

/// The crate's algorithms a table compares (those that need no key).
pub const ALGORITHMS: &[&str] = &[
    "round_robin",
    "least_conn",
    "random",
    "random two least_conn",
    "peak_ewma",
];

/// Linkerd's simulation of latency-aware balancing (Linkerd's "Beyond
/// Round Robin", 2016): 11 servers; one of them answers in 2 s instead of
/// its usual time for 30 of the 60 s; 1,000 requests a second; a request
/// not answered within 1 s fails. The servers' usual time is log-normal
/// around 10 ms (p99 about 32 ms); they take any number of requests at
/// once.
pub fn linkerd(seed: u64) -> Scenario {
    let usual = Service::LogNormal {
        median: Duration::from_millis(10),
        sigma: 0.5,
    };
    let mut scenario = Scenario::new(
        "linkerd",
        (0..11).map(|_| Server::new(usual.clone())).collect(),
        1_000.0,
        Duration::from_secs(60),
    );
    scenario.timeout = Some(Duration::from_secs(1));
    scenario.slowdowns.push(Slowdown {
        server: 0,
        from: Duration::from_secs(15),
        until: Duration::from_secs(45),
        service: Service::Fixed(Duration::from_secs(2)),
    });
    scenario.seed = seed;
    scenario
}

/// The demo's four backends (README's first command,
/// `examples/proxy/examples/demo.rs`): `fast` 1 to 2 ms, `medium` 5 ms,
/// `slow` 20 ms and `flaky` 3 ms, each serving any number at once (the
/// demo's backends sleep), at 2,000 requests a second for 20 s, 1 s
/// timeout. The demo's failures and outage are not modelled: this table
/// is about where each pick sends the load.
pub fn demo(seed: u64) -> Scenario {
    let ms = Duration::from_millis;
    let mut scenario = Scenario::new(
        "demo",
        vec![
            Server::new(Service::Uniform(ms(1), ms(2))),
            Server::new(Service::Fixed(ms(5))),
            Server::new(Service::Fixed(ms(20))),
            Server::new(Service::Fixed(ms(3))),
        ],
        2_000.0,
        Duration::from_secs(20),
    );
    scenario.timeout = Some(Duration::from_secs(1));
    scenario.seed = seed;
    scenario
}
