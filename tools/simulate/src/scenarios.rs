//! The named scenarios, and the algorithms every table compares.

use std::time::Duration;

use loadbalance::limit::AdaptiveOptions;

use super::{Antagonists, Limit, Scenario, Server, Service, Slowdown};

/// The crate's algorithms a table compares (those that need no key).
pub const ALGORITHMS: &[&str] = &[
    "round_robin",
    "least_conn",
    "random",
    "random two least_conn",
    "peak_ewma",
    "probing",
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

/// The loads of the Prequal-like scenario, in its nominal capacity.
pub const PREQUAL_LOADS: &[f64] = &[0.75, 1.0, 1.4, 1.7];

/// A Prequal-like scenario (Prequal, NSDI 2024, its antagonist
/// experiment) at `load` times its nominal capacity: 20 balancers (the
/// 1,000 clients spread over them, each balancer seeing only its own
/// picks, as Prequal's many client tasks), 40 servers, each
/// serving 4 requests at once (the rest queue) in a log-normal time around
/// 10 ms (mean 11.3 ms); at random, each is slowed threefold for 2 s on
/// average every 10 s (other work on its machine); 30 s of arrivals, 1 s
/// timeout. As in Prequal, a server may use more than its allocation: the
/// nominal capacity (1.0) is half of what the servers can do unslowed
/// (7,070 a second), so 1.7 is 85% of that and about 98% of it with the
/// antagonists' share taken out.
pub fn prequal(load: f64, seed: u64) -> Scenario {
    let service = Service::LogNormal {
        median: Duration::from_millis(10),
        sigma: 0.5,
    };
    let servers: Vec<Server> = (0..40)
        .map(|_| Server::new(service.clone()).concurrency(4))
        .collect();
    let most = servers.len() as f64 * 4.0 / service.mean();
    let mut scenario = Scenario::new(
        &format!("prequal {load}x"),
        servers,
        load * most / 2.0,
        Duration::from_secs(30),
    );
    scenario.timeout = Some(Duration::from_secs(1));
    scenario.balancers = 20;
    scenario.antagonists = Some(Antagonists {
        gap: Duration::from_secs(8),
        length: Duration::from_secs(2),
        factor: 3.0,
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

/// The servers of the overload scenario: 10, each serving 4 requests at
/// once (the rest queue) in a log-normal time around 10 ms.
fn overload_servers() -> Vec<Server> {
    let service = Service::LogNormal {
        median: Duration::from_millis(10),
        sigma: 0.5,
    };
    (0..10)
        .map(|_| Server::new(service.clone()).concurrency(4))
        .collect()
}

/// What the overload scenario's servers can serve a second (40 at once,
/// 11.3 ms each on average: about 3,530).
pub fn overload_capacity() -> f64 {
    let servers = overload_servers();
    servers
        .iter()
        .map(|server| f64::from(server.concurrency) / server.service.mean())
        .sum()
}

/// The limits the overload scenario compares: none, a generous fixed
/// limit (Envoy's most for its adaptive limit), one fitted by hand to
/// these servers, and the adaptive limit with its defaults.
pub fn overload_limits() -> Vec<(&'static str, Limit)> {
    vec![
        ("no limit", Limit::None),
        ("fixed 1000", Limit::Fixed(1000)),
        ("fixed 48", Limit::Fixed(48)),
        ("adaptive", Limit::Adaptive(AdaptiveOptions::default())),
    ]
}

/// The overload scenario: one balancer (least-connections) in front of
/// `overload_servers`, Poisson arrivals at `load` times their capacity for
/// 60 s, 1 s timeout, behind `limit` (named `label` in the table).
pub fn overload(load: f64, label: &str, limit: Limit, seed: u64) -> Scenario {
    let mut scenario = Scenario::new(
        &format!("overload {load}x, {label}"),
        overload_servers(),
        load * overload_capacity(),
        Duration::from_secs(60),
    );
    scenario.timeout = Some(Duration::from_secs(1));
    scenario.limit = limit;
    scenario.seed = seed;
    scenario
}
