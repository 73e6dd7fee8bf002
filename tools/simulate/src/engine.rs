//! The event loop: arrivals, picks, server queues, completions and
//! timeouts, in virtual nanoseconds. The pool's clock is moved to each
//! event's time before anything reads it, so what a pick measures
//! (latency for peak EWMA, requests in flight for least-connections) is
//! what the simulated clients see.
//!
//! A try holds its pick (counted active) until its answer or its
//! timeout, whichever is first; a server keeps working on a try its
//! client gave up, but takes no try from its queue that was given up.
//!
//! A probing pick's probes ([`Pool::probes`]) travel to their server in
//! the scenario's probe delay; the server answers with what it knows of
//! itself (the tries it holds, running or queued, and the mean of its
//! last few service times that ended within 200 ms), and the answer takes
//! the same delay back.
//!
//! With several balancers, each client sends through one of them, and
//! each balancer's pool counts only its own picks: as many proxies in
//! front of one fleet.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use loadbalance::{
    Algorithm, Backend, Context, HealthPolicy, ManualClock, PickError, Picked, Pool, Probe, Tried,
};

use loadbalance::limit::{AdaptiveLimit, AdaptivePermit, ConcurrencyLimit, Permit};

use super::report::Report;
use super::{Limit, Random, Scenario};

/// A run that could not start.
#[derive(Debug)]
pub enum SimulateError {
    /// The algorithm's name is not one of the crate's.
    Algorithm(loadbalance::ParseAlgorithmError),
    /// The pool could not be built over the scenario's servers.
    Pool(loadbalance::BuildError),
    /// A rate that is not a number of requests a second from above 0 to
    /// 10^9.
    Rate(f64),
    /// A limit that cannot be built (a fixed limit of 0, adaptive options
    /// out of range).
    Limit(String),
}

impl fmt::Display for SimulateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Algorithm(error) => error.fmt(f),
            Self::Pool(error) => error.fmt(f),
            Self::Rate(rate) => write!(f, "a rate of {rate} a second: from above 0 to 10^9"),
            Self::Limit(error) => write!(f, "the limit: {error}"),
        }
    }
}

impl std::error::Error for SimulateError {}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    /// The next request arrives.
    Arrival,
    /// A server finished try `0`.
    Done(usize),
    /// Try `0`'s client gives up on it.
    GiveUp(usize),
    /// Probe `0` reaches its server.
    ProbeArrives(usize),
    /// Probe `0`'s answer reaches the balancer.
    ProbeAnswered(usize),
}

/// A probe on its way: to its server, then back with the answer.
struct InFlightProbe {
    probe: Option<Probe<usize>>,
    in_flight: u32,
    latency: Duration,
}

/// Service times a server's probe answer averages: its last few, ended
/// within the last 200 ms (so that a server slowed a while ago, and
/// shunned since, does not answer with its slow spell for ever).
const RECENT: usize = 8;
const PROBE_WINDOW: u64 = 200_000_000;

/// A balancer's limit on requests in flight.
enum Limiter {
    Fixed(ConcurrencyLimit),
    Adaptive(AdaptiveLimit),
}

/// A request let in by its balancer's limit.
enum Admission {
    Fixed(Permit),
    Adaptive(AdaptivePermit),
}

impl Limiter {
    fn admit(&self) -> Option<Admission> {
        match self {
            Self::Fixed(limit) => limit.try_acquire().ok().map(Admission::Fixed),
            Self::Adaptive(limit) => limit.try_acquire().ok().map(Admission::Adaptive),
        }
    }
}

impl Admission {
    /// The request is over: the adaptive limit learns its latency.
    fn finish(self) {
        match self {
            Self::Fixed(permit) => drop(permit),
            Self::Adaptive(permit) => permit.finish(),
        }
    }
}

struct Request {
    /// Its client's address (the key of the keyed algorithms).
    client: IpAddr,
    /// What its balancer's limit let in, until it is over.
    admission: Option<Admission>,
    /// The balancer its client sends through.
    balancer: usize,
    arrival: u64,
    deadline: Option<u64>,
    tries: u32,
    tried: Tried,
    finished: bool,
}

struct Try {
    request: usize,
    server: usize,
    picked: Option<Picked<usize>>,
    /// Answered or given up.
    over: bool,
    /// When its server started on it.
    started: u64,
}

#[derive(Default)]
struct ServerState {
    busy: u32,
    queue: VecDeque<usize>,
    /// Its antagonists' spells, in order: (start, end) in nanoseconds.
    spells: Vec<(u64, u64)>,
    /// Tries picked for it and not over, and the time-integral of that.
    in_flight: u64,
    area: f64,
    since: u64,
    /// Its last `RECENT` service times in nanoseconds, and how many it has
    /// finished.
    recent: [(u64, u64); RECENT],
    finished: usize,
}

impl ServerState {
    fn count(&mut self, now: u64, delta: i64) {
        self.area += self.in_flight as f64 * (now - self.since) as f64;
        self.since = now;
        self.in_flight = self.in_flight.saturating_add_signed(delta);
    }
}

struct Run<'a> {
    scenario: &'a Scenario,
    /// One pool a balancer: each client's requests go through
    /// `client % balancers`'s.
    pools: Vec<Pool<usize>>,
    clock: Arc<ManualClock>,
    now: u64,
    /// The next arrival, in unrounded seconds (rounding each gap would
    /// bias high rates).
    next_arrival: f64,
    /// How the algorithm is keyed: by the client's address as bytes
    /// (`hash`), by its address (`ip_hash`, `consistent_hash`), or not.
    keyed: Keyed,
    /// Arrivals draw from one stream and service times from another, so
    /// every algorithm meets the same arrivals (common random numbers).
    arrivals: Random,
    random: Random,
    events: BinaryHeap<Reverse<(u64, u64, Event)>>,
    sequence: u64,
    requests: Vec<Request>,
    tries: Vec<Try>,
    servers: Vec<ServerState>,
    latencies: Vec<f64>,
    failed: u64,
    shed: u64,
    limiters: Vec<Option<Limiter>>,
    probes: Vec<InFlightProbe>,
}

/// How picks are keyed.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Keyed {
    No,
    Bytes,
    Address,
}

/// Clients requests come from, for the keyed algorithms.
const CLIENTS: u64 = 1_000;

/// Runs `scenario` with the crate's `algorithm` (a name of
/// [`Algorithm`]'s table; its own draws seeded from the scenario's seed),
/// passive health off so only the pick decides. Requests come from 1,000
/// clients at random, the keys of the keyed algorithms (`hash` by the
/// client's address as bytes, the others by the address).
///
/// # Errors
///
/// A name that is not an algorithm, a scenario without servers, or a rate
/// that is not from above 0 to 10^9 a second.
pub fn simulate(scenario: &Scenario, algorithm: &str) -> Result<Report, SimulateError> {
    if !(scenario.rate > 0.0 && scenario.rate <= 1e9) {
        return Err(SimulateError::Rate(scenario.rate));
    }
    // Streams of their own, from the scenario's seed mixed (the crate's
    // seeded draws are SplitMix64 too: the seed itself would make them
    // the arrivals' stream).
    let mut seeds = Random::new(scenario.seed);
    let (arrivals, service, seed) = (seeds.next_u64(), seeds.next_u64(), seeds.next_u64());
    let algorithm = match algorithm
        .parse::<Algorithm>()
        .map_err(SimulateError::Algorithm)?
    {
        Algorithm::Random(options) => Algorithm::Random(options.seed(seed)),
        Algorithm::RandomLeastConn(options) => Algorithm::RandomLeastConn(options.seed(seed)),
        Algorithm::PeakEwma(options) => Algorithm::PeakEwma(options.seed(seed)),
        Algorithm::Probing(options) => Algorithm::Probing(options.seed(seed)),
        other => other,
    };
    let keyed = match &algorithm {
        Algorithm::Hash(_) => Keyed::Bytes,
        other if other.keyed() => Keyed::Address,
        _ => Keyed::No,
    };
    let clock = Arc::new(ManualClock::new());
    let pools = (0..scenario.balancers.max(1))
        .map(|balancer| {
            // Each balancer its own seeded draws.
            let own = seed ^ balancer as u64;
            let algorithm = match &algorithm {
                Algorithm::Random(options) => Algorithm::Random(options.clone().seed(own)),
                Algorithm::RandomLeastConn(options) => {
                    Algorithm::RandomLeastConn(options.clone().seed(own))
                }
                Algorithm::PeakEwma(options) => Algorithm::PeakEwma(options.clone().seed(own)),
                Algorithm::Probing(options) => Algorithm::Probing(options.clone().seed(own)),
                other => other.clone(),
            };
            Pool::builder(algorithm)
                .health(HealthPolicy::none())
                .clock(Arc::clone(&clock))
                .build((0..scenario.servers.len()).map(Backend::new))
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(SimulateError::Pool)?;
    let limiters = (0..scenario.balancers.max(1))
        .map(|balancer| limiter(scenario, &clock, seed ^ balancer as u64))
        .collect::<Result<Vec<_>, _>>()?;
    let mut run = Run {
        scenario,
        pools,
        clock,
        now: 0,
        next_arrival: 0.0,
        keyed,
        arrivals: Random::new(arrivals),
        random: Random::new(service),
        events: BinaryHeap::new(),
        sequence: 0,
        requests: Vec::new(),
        tries: Vec::new(),
        servers: spells(scenario)
            .into_iter()
            .map(|spells| ServerState {
                spells,
                ..ServerState::default()
            })
            .collect(),
        latencies: Vec::new(),
        failed: 0,
        shed: 0,
        limiters,
        probes: Vec::new(),
    };
    run.schedule_arrival();
    while let Some(Reverse((at, _, event))) = run.events.pop() {
        run.clock.advance(Duration::from_nanos(at - run.now));
        run.now = at;
        match event {
            Event::Arrival => run.arrive(),
            Event::Done(index) => run.done(index),
            Event::GiveUp(index) => run.give_up(index),
            Event::ProbeArrives(index) => run.probe_arrives(index),
            Event::ProbeAnswered(index) => run.probe_answered(index),
        }
    }
    let now = run.now;
    let areas: Vec<f64> = run
        .servers
        .iter_mut()
        .map(|server| {
            server.count(now, 0);
            server.area
        })
        .collect();
    Ok(Report::new(
        &scenario.name,
        &algorithm.to_string(),
        run.latencies,
        run.failed,
        run.shed,
        scenario.duration,
        &areas,
    ))
}

/// A balancer's limit, as the scenario sets it.
fn limiter(
    scenario: &Scenario,
    clock: &Arc<ManualClock>,
    seed: u64,
) -> Result<Option<Limiter>, SimulateError> {
    Ok(match &scenario.limit {
        Limit::None => None,
        Limit::Fixed(max) => {
            let max = std::num::NonZeroU32::new(*max)
                .ok_or_else(|| SimulateError::Limit("a fixed limit of 0".to_owned()))?;
            Some(Limiter::Fixed(ConcurrencyLimit::new(max)))
        }
        Limit::Adaptive(options) => Some(Limiter::Adaptive(
            options
                .clone()
                .seed(seed)
                .build_with_clock(Arc::clone(clock))
                .map_err(|error| SimulateError::Limit(error.to_string()))?,
        )),
    })
}

/// Most antagonist spells drawn for one server: a run of a day with a
/// spell every second.
const MAX_SPELLS: usize = 100_000;

/// Each server's antagonist spells over the run and a timeout past it,
/// drawn from a stream of their own, so every algorithm meets the same.
fn spells(scenario: &Scenario) -> Vec<Vec<(u64, u64)>> {
    let mut seeds = Random::new(scenario.seed);
    for _ in 0..3 {
        seeds.next_u64();
    }
    let mut random = Random::new(seeds.next_u64());
    let end = scenario
        .duration
        .saturating_add(scenario.timeout.unwrap_or_default());
    let end = span(end);
    scenario
        .servers
        .iter()
        .map(|_| {
            let Some(antagonists) = &scenario.antagonists else {
                return Vec::new();
            };
            let mut spells = Vec::new();
            let mut at = 0;
            while at < end && spells.len() < MAX_SPELLS {
                at += nanos(random.exponential(antagonists.gap.as_secs_f64())).max(1);
                let length = nanos(random.exponential(antagonists.length.as_secs_f64())).max(1);
                spells.push((at, at + length));
                at += length;
            }
            spells
        })
        .collect()
}

/// `seconds` in whole nanoseconds (saturating).
fn nanos(seconds: f64) -> u64 {
    (seconds * 1e9).round() as u64
}

/// `duration` in nanoseconds, saturating at about 584 years.
fn span(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

impl Run<'_> {
    fn schedule(&mut self, at: u64, event: Event) {
        self.sequence += 1;
        self.events.push(Reverse((at, self.sequence, event)));
    }

    /// Schedules the next arrival if it falls within the run.
    fn schedule_arrival(&mut self) {
        self.next_arrival += self.arrivals.exponential(1.0 / self.scenario.rate);
        let at = nanos(self.next_arrival);
        if at < span(self.scenario.duration) {
            self.schedule(at.max(self.now), Event::Arrival);
        }
    }

    fn arrive(&mut self) {
        let index = self.requests.len();
        let scenario = self.scenario;
        let client = self.arrivals.below(CLIENTS) as u32;
        let balancer = client as usize % scenario.balancers.max(1);
        let admission = match &self.limiters[balancer] {
            None => None,
            Some(limiter) => match limiter.admit() {
                Some(admission) => Some(admission),
                None => {
                    self.shed += 1;
                    return self.schedule_arrival();
                }
            },
        };
        self.requests.push(Request {
            client: IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | client)),
            admission,
            balancer,
            arrival: self.now,
            deadline: scenario.timeout.map(|t| self.now.saturating_add(span(t))),
            tries: 0,
            tried: Tried::new(),
            finished: false,
        });
        self.schedule_arrival();
        self.start_try(index);
    }

    fn start_try(&mut self, request: usize) {
        let scenario = self.scenario;
        let keyed = self.keyed;
        let state = &mut self.requests[request];
        state.tries += 1;
        let bytes = match state.client {
            IpAddr::V4(v4) => v4.octets(),
            IpAddr::V6(_) => [0; 4],
        };
        let client = state.client;
        let base = match keyed {
            Keyed::No => Context::new(),
            Keyed::Bytes => Context::from_key(&bytes),
            Keyed::Address => Context::from_addr(client),
        };
        let balancer = state.balancer;
        let pool = &self.pools[balancer];
        let picked = match pool.pick(&base.with_tried(&state.tried)) {
            // Every server tried: try them all again.
            Err(PickError::AllTried) => {
                state.tried.clear();
                pool.pick(&base)
            }
            other => other,
        };
        let Ok(picked) = picked else {
            return self.fail(request);
        };
        state.tried.insert(picked.guard());
        let server = *picked;
        let index = self.tries.len();
        self.tries.push(Try {
            request,
            server,
            picked: Some(picked),
            over: false,
            started: 0,
        });
        self.send_probes(balancer);
        let try_timeout = scenario.try_timeout.or(scenario.timeout);
        let mut give_up = try_timeout.map(|t| self.now.saturating_add(span(t)));
        if let Some(deadline) = self.requests[request].deadline {
            give_up = Some(give_up.map_or(deadline, |at| at.min(deadline)));
        }
        if let Some(at) = give_up {
            self.schedule(at, Event::GiveUp(index));
        }
        let now = self.now;
        self.servers[server].count(now, 1);
        self.servers[server].queue.push_back(index);
        self.serve(server);
    }

    /// Starts what `server` has room for, oldest first, skipping tries
    /// already given up.
    fn serve(&mut self, server: usize) {
        let limit = self.scenario.servers[server].concurrency;
        while limit == 0 || self.servers[server].busy < limit {
            let Some(index) = self.servers[server].queue.pop_front() else {
                return;
            };
            if self.tries[index].over {
                continue;
            }
            self.servers[server].busy += 1;
            self.tries[index].started = self.now;
            let seconds = self.service_time(server);
            let at = self.now + nanos(seconds);
            self.schedule(at, Event::Done(index));
        }
    }

    fn service_time(&mut self, server: usize) -> f64 {
        let now = Duration::from_nanos(self.now);
        let scenario = self.scenario;
        let slowed = scenario
            .slowdowns
            .iter()
            .find(|s| s.server == server && s.from <= now && now < s.until);
        if let Some(slowdown) = slowed {
            return slowdown.service.sample(&mut self.random);
        }
        let time = scenario.servers[server].service.sample(&mut self.random);
        let at = self.now;
        let spells = &self.servers[server].spells;
        // The last spell starting at or before now, if it has not ended.
        let index = spells.partition_point(|&(start, _)| start <= at);
        let in_spell = index > 0 && at < spells[index - 1].1;
        match (&scenario.antagonists, in_spell) {
            (Some(antagonists), true) => time * antagonists.factor,
            _ => time,
        }
    }

    fn done(&mut self, index: usize) {
        let server = self.tries[index].server;
        let state = &mut self.servers[server];
        state.busy -= 1;
        state.recent[state.finished % RECENT] = (self.now, self.now - self.tries[index].started);
        state.finished += 1;
        if !self.tries[index].over {
            self.tries[index].over = true;
            let now = self.now;
            self.servers[server].count(now, -1);
            if let Some(picked) = self.tries[index].picked.take() {
                picked.success();
            }
            let request = self.tries[index].request;
            let state = &mut self.requests[request];
            if !state.finished {
                state.finished = true;
                self.latencies.push((self.now - state.arrival) as f64 / 1e9);
                if let Some(admission) = state.admission.take() {
                    admission.finish();
                }
            }
        }
        self.serve(server);
    }

    fn give_up(&mut self, index: usize) {
        if self.tries[index].over {
            return;
        }
        self.tries[index].over = true;
        let server = self.tries[index].server;
        let now = self.now;
        self.servers[server].count(now, -1);
        if let Some(picked) = self.tries[index].picked.take() {
            picked.failure();
        }
        let request = self.tries[index].request;
        let state = &self.requests[request];
        let in_time = state.deadline.is_none_or(|deadline| self.now < deadline);
        if in_time && state.tries < self.scenario.attempts.max(1) {
            self.start_try(request);
        } else {
            self.fail(request);
        }
    }

    /// Sends the probes `balancer`'s pool asks for after a pick.
    fn send_probes(&mut self, balancer: usize) {
        let delay = span(self.scenario.probe_delay);
        for probe in self.pools[balancer].probes() {
            let index = self.probes.len();
            self.probes.push(InFlightProbe {
                probe: Some(probe),
                in_flight: 0,
                latency: Duration::ZERO,
            });
            self.schedule(self.now.saturating_add(delay), Event::ProbeArrives(index));
        }
    }

    /// A probe reaches its server, which answers with the tries it holds
    /// (running or queued) and the mean of its recent service times.
    fn probe_arrives(&mut self, index: usize) {
        let Some(server) = self.probes[index].probe.as_ref().map(|p| *p.backend()) else {
            return;
        };
        let state = &self.servers[server];
        let holds = state.busy as usize + state.queue.len();
        // The mean of its last service times that ended within the
        // window; none (0): a server idle that long is taken as fast.
        let now = self.now;
        let (sum, count) = state.recent[..state.finished.min(RECENT)]
            .iter()
            .filter(|(ended, _)| now.saturating_sub(*ended) <= PROBE_WINDOW)
            .fold((0u64, 0u64), |(sum, count), (_, time)| {
                (sum + time, count + 1)
            });
        let mean = sum.checked_div(count).unwrap_or(0);
        let probe = &mut self.probes[index];
        probe.in_flight = u32::try_from(holds).unwrap_or(u32::MAX);
        probe.latency = Duration::from_nanos(mean);
        let delay = span(self.scenario.probe_delay);
        self.schedule(self.now.saturating_add(delay), Event::ProbeAnswered(index));
    }

    fn probe_answered(&mut self, index: usize) {
        let probe = &mut self.probes[index];
        if let Some(sent) = probe.probe.take() {
            sent.answer(probe.in_flight, probe.latency);
        }
    }

    fn fail(&mut self, request: usize) {
        let state = &mut self.requests[request];
        if !state.finished {
            state.finished = true;
            self.failed += 1;
            if let Some(admission) = state.admission.take() {
                admission.finish();
            }
        }
    }
}
