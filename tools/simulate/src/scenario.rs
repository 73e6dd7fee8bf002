//! What a run simulates: the servers, the clients' arrivals, the
//! slowdowns that hit servers, and the clients' timeouts and retries.

use std::time::Duration;

use loadbalance::limit::AdaptiveOptions;

use super::Service;

/// How many requests each balancer lets in at once; the rest are shed at
/// once (a 503), counted apart from failures.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum Limit {
    /// No limit.
    #[default]
    None,
    /// At most this many in flight (`ConcurrencyLimit`).
    Fixed(u32),
    /// The crate's adaptive limit (`AdaptiveLimit`), on the run's clock,
    /// seeded from the scenario's seed.
    Adaptive(AdaptiveOptions),
}

/// One server: how long it takes, and how many requests it works on at
/// once (the others wait in its queue, first come first served).
#[derive(Clone, Debug, PartialEq)]
pub struct Server {
    /// Its service time.
    pub service: Service,
    /// Requests served at once (0: no limit, never a queue).
    pub concurrency: u32,
}

impl Server {
    /// A server of `service` with no concurrency limit.
    pub fn new(service: Service) -> Self {
        Self {
            service,
            concurrency: 0,
        }
    }

    /// The same server serving `concurrency` requests at once.
    pub fn concurrency(mut self, concurrency: u32) -> Self {
        self.concurrency = concurrency;
        self
    }
}

/// An antagonist: from `from` until `until`, each request server
/// `server` starts takes `service` instead of its own.
#[derive(Clone, Debug, PartialEq)]
pub struct Slowdown {
    /// The server hit.
    pub server: usize,
    /// When it starts.
    pub from: Duration,
    /// When it ends.
    pub until: Duration,
    /// The service time meanwhile.
    pub service: Service,
}

/// Antagonists at random: each server, on its own, is slowed by
/// `factor` for spells of `length` on average, separated by calm of `gap`
/// on average (both exponential), as other work on a shared machine
/// slows it (Prequal's antagonists).
#[derive(Clone, Debug, PartialEq)]
pub struct Antagonists {
    /// Mean calm between spells.
    pub gap: Duration,
    /// Mean spell.
    pub length: Duration,
    /// Service times are this many times longer during a spell.
    pub factor: f64,
}

/// A simulation: Poisson arrivals at `rate` for `duration` over
/// `servers`, each request picked by the pool, given up at `timeout`
/// (counted as failed), tried up to `attempts` times, each try given up
/// at `try_timeout`.
#[derive(Clone, Debug, PartialEq)]
pub struct Scenario {
    /// Its name in the table.
    pub name: String,
    /// The servers, in the pool's order.
    pub servers: Vec<Server>,
    /// Requests a second.
    pub rate: f64,
    /// How long requests arrive.
    pub duration: Duration,
    /// A request not answered within this is a failure (none: never).
    pub timeout: Option<Duration>,
    /// Tries a request gets, on distinct servers while there are some.
    pub attempts: u32,
    /// A try not answered within this is given up and retried (none: the
    /// request's timeout).
    pub try_timeout: Option<Duration>,
    /// Servers slowed for a while.
    pub slowdowns: Vec<Slowdown>,
    /// Servers slowed at random.
    pub antagonists: Option<Antagonists>,
    /// Each balancer's limit on requests in flight.
    pub limit: Limit,
    /// Balancers the clients are spread over, each a pool of its own that
    /// sees only its clients' requests (1: one balancer for all; 0 counts
    /// as 1).
    pub balancers: usize,
    /// How long a probe takes to reach its server, and its answer to come
    /// back (a probing pick's network; requests themselves are not
    /// delayed).
    pub probe_delay: Duration,
    /// The generator's seed (arrivals, service times, seeded picks).
    pub seed: u64,
}

impl Scenario {
    /// `servers` at `rate` for `duration`: no timeout, one try, probes
    /// 100 µs each way, seed 1.
    pub fn new(name: &str, servers: Vec<Server>, rate: f64, duration: Duration) -> Self {
        Self {
            name: name.to_owned(),
            servers,
            rate,
            duration,
            timeout: None,
            attempts: 1,
            try_timeout: None,
            slowdowns: Vec::new(),
            antagonists: None,
            limit: Limit::None,
            balancers: 1,
            probe_delay: Duration::from_micros(100),
            seed: 1,
        }
    }
}
