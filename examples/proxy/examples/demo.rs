//! The crate serving real traffic: the reverse proxy in front of four loopback backends, under load, once per algorithm.
//!
//! The backends differ: `fast` answers in 1-2 ms, `medium` in 5 ms, `slow`
//! in 20 ms, and `flaky` in 3 ms but fails 2% of requests with 503. For
//! each of `round_robin`, `least_conn`, `peak_ewma`, `probing` (Prequal's
//! pick: the backends answer probes at `/probe` with their requests in
//! flight) and `hash` (nginx's `hash $request_uri`, over 200 distinct
//! URIs) the demo starts the proxy with one pool of the four and runs 32
//! closed-loop clients for 7.5 s.
//! Along the way:
//! - at 1 s a greedy client sends a burst past its rate limit (the 429s);
//! - from 2.5 s to 5 s `medium` is down (every answer and `/healthz` 503):
//!   passive health ejects it, the active checks hold it down, and
//!   idempotent GETs are retried on another backend;
//! - at 6.25 s a hot reload triples `fast`'s weight, applied to the
//!   running pool as a diff.
//!
//! Each algorithm gets a table (share of requests, peak in flight, client
//! latency and errors per backend) and a one-line takeaway; the shares
//! over time go to `target/demo/shares.svg` (under `CARGO_TARGET_DIR` if
//! set).
//!
//! Then the cache: the same load through a cached route while the
//! backends say `Cache-Control: max-age=1`, and every backend down from
//! 2 s to 4 s: the hit ratio, the backend requests saved, and the stale
//! answers that stood in during the outage. It takes about 50 s and
//! stops by itself.
//!
//! `cargo run --release -p loadbalance-proxy --example demo`

#[path = "../tests/support/backend.rs"]
#[allow(dead_code)]
mod backend;

use std::collections::HashMap;
use std::error::Error;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use backend::Backend;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::{Request, StatusCode};
use hyper_util::client::legacy::{Client, connect::HttpConnector};
use hyper_util::rt::TokioExecutor;
use loadbalance::PoolConfig;
use loadbalance_proxy::{Config, Proxy};
use tokio::task::JoinSet;
use tokio::time::Instant;

/// One backend's behaviour.
struct Spec {
    name: &'static str,
    delay: Duration,
    jitter: Duration,
    fail_per_mille: u32,
}

const SPECS: [Spec; 4] = [
    Spec {
        name: "fast",
        delay: Duration::from_millis(1),
        jitter: Duration::from_millis(1),
        fail_per_mille: 0,
    },
    Spec {
        name: "medium",
        delay: Duration::from_millis(5),
        jitter: Duration::ZERO,
        fail_per_mille: 0,
    },
    Spec {
        name: "slow",
        delay: Duration::from_millis(20),
        jitter: Duration::ZERO,
        fail_per_mille: 0,
    },
    Spec {
        name: "flaky",
        delay: Duration::from_millis(3),
        jitter: Duration::ZERO,
        fail_per_mille: 20,
    },
];

/// Indexes into [`SPECS`] of the backends the script acts on.
const FAST: usize = 0;
const MEDIUM: usize = 1;
const SLOW: usize = 2;

const ALGORITHMS: [&str; 5] = ["round_robin", "least_conn", "peak_ewma", "probing", "hash"];
/// The proxy's one pool.
const POOL: &str = "web";

/// Each algorithm's run, and when things happen in it: `medium` is down
/// in the middle third, the reload comes halfway through the last.
const RUN_MS: u64 = 7_500;
const GREEDY_AT_MS: u64 = 1_000;
const DOWN_FROM_MS: u64 = RUN_MS / 3;
const DOWN_UNTIL_MS: u64 = 2 * RUN_MS / 3;
const RELOAD_AT_MS: u64 = (DOWN_UNTIL_MS + RUN_MS) / 2;

/// Closed-loop clients, each its own address behind a trusted proxy (so
/// each has its own rate limit).
const CLIENTS: u8 = 32;
/// Distinct request URIs, which `hash` keys on.
const URIS: u32 = 200;
/// A rate no steady client reaches (one request at a time, each at least
/// 1 ms), with a burst only the greedy client exceeds.
const RATE_PER_SECOND: u32 = 1_000;
const RATE_BURST: u32 = 30;
/// Requests the greedy client sends at once: most past the burst are
/// refused with 429.
const GREEDY_BURST: u32 = 120;
const GREEDY_ADDRESS: &str = "203.0.113.7";
/// `fast`'s weight after the reload.
const RELOAD_WEIGHT: u32 = 3;

/// Passive health: this many failures in a row, each within the timeout of
/// the last, eject a backend for the timeout.
const MAX_FAILS: u32 = 10;
const FAIL_TIMEOUT_MS: u64 = 250;
/// Active checks: a GET of `/healthz` this often; two failures mark a
/// backend down, two successes up.
const CHECK_INTERVAL_MS: u64 = 200;

/// The time buckets of the chart.
const BUCKET_MS: u64 = 250;

type LoadClient = Client<HttpConnector, Empty<Bytes>>;
type BoxError = Box<dyn Error + Send + Sync>;

/// One request as the client saw it.
struct Sample {
    /// When it completed, since the run began.
    at: Duration,
    /// The backend that answered (its name is the body); `None` when the
    /// proxy answered itself (429, its own 503) or the request failed.
    backend: Option<usize>,
    /// 0 when no response came.
    status: u16,
    latency: Duration,
    uri: u32,
}

/// One algorithm's run.
struct Run {
    algorithm: &'static str,
    samples: Vec<Sample>,
    /// Per backend, from its own counters.
    peak_in_flight: Vec<usize>,
    failed: Vec<u64>,
    retries: u64,
    /// What the reload changed, in words.
    reload: String,
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let mut backends = Vec::new();
    for spec in &SPECS {
        let backend = Backend::start(spec.name).await?;
        println!(
            "backend {:<6} {}  {:>2} ms + up to {} ms, {:.0}% 503s",
            spec.name,
            backend.addr,
            spec.delay.as_millis(),
            spec.jitter.as_millis(),
            f64::from(spec.fail_per_mille) / 10.0
        );
        backends.push(backend);
    }
    println!(
        "{CLIENTS} clients for {} s per algorithm, over {URIS} URIs; medium down from {} s \
         to {} s; a greedy client's burst at {} s; a reload at {} s\n",
        secs(RUN_MS),
        secs(DOWN_FROM_MS),
        secs(DOWN_UNTIL_MS),
        secs(GREEDY_AT_MS),
        secs(RELOAD_AT_MS)
    );
    println!(
        "columns: share of the requests the backends answered; peak in flight, the backend's \
         own count;\n         p50/p99 latency at the client; 503s sent by the backend; 5xx \
         seen by clients\n"
    );
    let mut runs = Vec::new();
    for algorithm in ALGORITHMS {
        // First, so the proxy's own lines (health marks) fall under it.
        println!("== {algorithm} ==");
        let run = run(algorithm, &backends).await?;
        print_run(&run);
        runs.push(run);
    }
    print_summary(&runs);
    let path = write_chart(&runs)?;
    println!("\nchart: {}", path.display());
    cache_run(&backends).await?;
    Ok(())
}

/// The cache's run: how long, and when every backend is down.
const CACHE_RUN_MS: u64 = 6_000;
const ALL_DOWN_FROM_MS: u64 = 2_000;
const ALL_DOWN_UNTIL_MS: u64 = 4_000;

/// The load of one algorithm's run through a cached route, the backends'
/// answers fresh for a second, with every backend down for a while.
async fn cache_run(backends: &[Backend]) -> Result<(), BoxError> {
    println!(
        "\n== cache: least_conn, answers fresh for 1 s, every backend down from {} s to {} s ==",
        secs(ALL_DOWN_FROM_MS),
        secs(ALL_DOWN_UNTIL_MS)
    );
    for (backend, spec) in backends.iter().zip(&SPECS) {
        let control = &backend.control;
        control.set_delay(spec.delay, spec.jitter);
        control.fail_per_mille.store(0, Relaxed);
        control.down.store(false, Relaxed);
        *control.cache_control.lock() = Some("max-age=1".parse()?);
    }
    let asked_before: u64 = backends.iter().map(|b| b.control.served()).sum();
    // No rate limit: the hits come faster than any client's rate.
    let toml = config("least_conn", backends)
        .replace(
            &format!("pool = \"{POOL}\"\n"),
            &format!("pool = \"{POOL}\"\ncache = true\n"),
        )
        .replace(
            &format!("rate = {{ per_second = {RATE_PER_SECOND}, burst = {RATE_BURST} }}\n"),
            "",
        );
    let proxy = Proxy::start(Config::parse(&toml)?, None).await?;
    let client: LoadClient = Client::builder(TokioExecutor::new()).build_http();
    let base = format!("http://{}", proxy.addr());
    let start = Instant::now();
    let deadline = start + Duration::from_millis(CACHE_RUN_MS);
    let mut load = JoinSet::new();
    for id in 0..CLIENTS {
        let (client, base) = (client.clone(), base.clone());
        let address = format!("10.0.1.{}", id + 1);
        load.spawn(async move {
            let mut samples = Vec::new();
            while Instant::now() < deadline {
                let uri = rand::random_range(0..URIS);
                samples.push(request(&client, &base, uri, &address, start).await);
            }
            samples
        });
    }
    tokio::time::sleep_until(start + Duration::from_millis(ALL_DOWN_FROM_MS)).await;
    for backend in backends {
        backend.control.down.store(true, Relaxed);
    }
    tokio::time::sleep_until(start + Duration::from_millis(ALL_DOWN_UNTIL_MS)).await;
    for backend in backends {
        backend.control.down.store(false, Relaxed);
    }
    let mut samples = Vec::new();
    while let Some(part) = load.join_next().await {
        samples.extend(part?);
    }
    let metrics = proxy.metrics();
    drop(client);
    proxy.shutdown().await;
    for backend in backends {
        *backend.control.cache_control.lock() = None;
    }
    let asked = backends.iter().map(|b| b.control.served()).sum::<u64>() - asked_before;
    let requests = samples.len() as f64;
    let ok = samples.iter().filter(|s| s.status == 200).count();
    let outage: Vec<&Sample> = samples
        .iter()
        .filter(|s| within(s, ALL_DOWN_FROM_MS, ALL_DOWN_UNTIL_MS))
        .collect();
    let outage_ok = outage.iter().filter(|s| s.status == 200).count();
    let mut latencies: Vec<Duration> = samples.iter().map(|s| s.latency).collect();
    let hits = metric(&metrics, "proxy_cache_hits_total");
    let stale = metric(&metrics, "proxy_cache_stale_total");
    println!(
        "  {} requests ({:.0}/s), {ok} answered 200 · p50 {:.2} ms · p99 {:.1} ms",
        samples.len(),
        requests / secs(CACHE_RUN_MS),
        quantile_ms(&mut latencies, 0.5),
        quantile_ms(&mut latencies, 0.99)
    );
    println!(
        "  from the cache: {:.1}% ({hits:.0} hits, {stale:.0} stale) · backends asked {asked} \
         times: {:.1}% of the requests saved",
        100.0 * (hits + stale) / requests.max(1.0),
        100.0 * (1.0 - asked as f64 / requests.max(1.0))
    );
    println!(
        "  outage: {outage_ok} of {} requests answered 200 while every backend answered 503 \
         (stale-if-error)",
        outage.len()
    );
    Ok(())
}

/// A counter's value in Prometheus text (0 when absent).
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

fn secs(ms: u64) -> f64 {
    ms as f64 / 1e3
}

/// The proxy's configuration: one route to one pool of `backends`.
fn config(algorithm: &str, backends: &[Backend]) -> String {
    let servers: Vec<String> = backends
        .iter()
        .map(|b| format!("    {{ server = \"{}\" }},", b.addr))
        .collect();
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
admin = "127.0.0.1:0"
attempts = 2
shutdown_grace_ms = 1000
watch_ms = 0

[clients]
trusted_proxies = ["127.0.0.1/32"]
rate = {{ per_second = {RATE_PER_SECOND}, burst = {RATE_BURST} }}

[[routes]]
name = "all"
path = "/"
pool = "{POOL}"

[pools.{POOL}]
algorithm = "{algorithm}"
health = {{ max_fails = {MAX_FAILS}, fail_timeout_ms = {FAIL_TIMEOUT_MS} }}
backends = [
{}
]

[checks.{POOL}]
path = "/healthz"
interval_ms = {CHECK_INTERVAL_MS}
timeout_ms = {CHECK_INTERVAL_MS}
rise = 2
fall = 2
{probing}"#,
        servers.join("\n"),
        probing = if algorithm == "probing" {
            format!("\n[probing.{POOL}]\npath = \"/probe\"\ntimeout_ms = 200\n")
        } else {
            String::new()
        }
    )
}

/// Runs `algorithm` for [`RUN_MS`] with the script's events.
async fn run(algorithm: &'static str, backends: &[Backend]) -> Result<Run, BoxError> {
    for (backend, spec) in backends.iter().zip(&SPECS) {
        let control = &backend.control;
        control.set_delay(spec.delay, spec.jitter);
        control.fail_per_mille.store(spec.fail_per_mille, Relaxed);
        control.down.store(false, Relaxed);
        control.peak_in_flight.store(0, Relaxed);
        control.failed.store(0, Relaxed);
    }
    let config = Config::parse(&config(algorithm, backends))?;
    let proxy = Proxy::start(config.clone(), None).await?;
    let client: LoadClient = Client::builder(TokioExecutor::new()).build_http();
    let base = format!("http://{}", proxy.addr());
    let start = Instant::now();
    let mut load = JoinSet::new();
    for id in 0..CLIENTS {
        let address = format!("10.0.0.{}", id + 1);
        load.spawn(closed_loop(client.clone(), base.clone(), address, start));
    }

    let at = |ms| start + Duration::from_millis(ms);
    tokio::time::sleep_until(at(GREEDY_AT_MS)).await;
    load.spawn(greedy(client.clone(), base.clone(), start));
    tokio::time::sleep_until(at(DOWN_FROM_MS)).await;
    backends[MEDIUM].control.down.store(true, Relaxed);
    tokio::time::sleep_until(at(DOWN_UNTIL_MS)).await;
    backends[MEDIUM].control.down.store(false, Relaxed);
    tokio::time::sleep_until(at(RELOAD_AT_MS)).await;
    let reload = reload(&proxy, config, backends).await?;

    let mut samples = Vec::new();
    while let Some(part) = load.join_next().await {
        samples.extend(part?);
    }
    let retries = proxy.counters().retries.load(Relaxed);
    drop(client);
    let cut = proxy.shutdown().await;
    if cut > 0 {
        eprintln!("{cut} connections to the proxy were cut at shutdown");
    }
    Ok(Run {
        algorithm,
        samples,
        peak_in_flight: backends
            .iter()
            .map(|b| b.control.peak_in_flight.load(Relaxed))
            .collect(),
        failed: backends
            .iter()
            .map(|b| b.control.failed.load(Relaxed))
            .collect(),
        retries,
        reload,
    })
}

/// Triples `fast`'s weight in the running proxy; says what changed.
async fn reload(proxy: &Proxy, config: Config, backends: &[Backend]) -> Result<String, BoxError> {
    let mut reloaded = config.clone();
    let pool = reloaded
        .pools
        .get_mut(POOL)
        .ok_or("the pool is configured")?;
    pool.backends[FAST].weight = RELOAD_WEIGHT;
    let before = config.pools.get(POOL).ok_or("the pool is configured")?;
    let changed = changes(before, pool, backends);
    proxy.apply(reloaded).await?;
    Ok(changed)
}

/// One client: a request at a time until the run ends.
async fn closed_loop(
    client: LoadClient,
    base: String,
    address: String,
    start: Instant,
) -> Vec<Sample> {
    let deadline = start + Duration::from_millis(RUN_MS);
    let mut samples = Vec::new();
    while Instant::now() < deadline {
        let uri = rand::random_range(0..URIS);
        samples.push(request(&client, &base, uri, &address, start).await);
    }
    samples
}

/// The greedy client: [`GREEDY_BURST`] requests at once from one address.
async fn greedy(client: LoadClient, base: String, start: Instant) -> Vec<Sample> {
    let mut burst = JoinSet::new();
    for uri in 0..GREEDY_BURST {
        let (client, base) = (client.clone(), base.clone());
        burst
            .spawn(async move { request(&client, &base, uri % URIS, GREEDY_ADDRESS, start).await });
    }
    burst.join_all().await
}

/// One GET through the proxy, as client `address`.
async fn request(
    client: &LoadClient,
    base: &str,
    uri: u32,
    address: &str,
    start: Instant,
) -> Sample {
    let sent = Instant::now();
    let (status, body) = match exchange(client, base, uri, address).await {
        Ok(answer) => answer,
        Err(_) => (0, Bytes::new()),
    };
    let now = Instant::now();
    Sample {
        at: now - start,
        backend: SPECS.iter().position(|spec| spec.name.as_bytes() == body),
        status,
        latency: now - sent,
        uri,
    }
}

async fn exchange(
    client: &LoadClient,
    base: &str,
    uri: u32,
    address: &str,
) -> Result<(u16, Bytes), BoxError> {
    let request = Request::get(format!("{base}/item/{uri}"))
        .header("x-forwarded-for", address)
        .body(Empty::new())?;
    let response = client.request(request).await?;
    let status = response.status().as_u16();
    let body = response.into_body().collect().await?.to_bytes();
    Ok((status, body))
}

/// What a reload changes in a pool, by backend name.
fn changes(old: &PoolConfig<String>, new: &PoolConfig<String>, backends: &[Backend]) -> String {
    let name = |server: &str| {
        backends
            .iter()
            .find(|b| b.addr.to_string() == server)
            .map_or_else(|| server.to_owned(), |b| b.name.clone())
    };
    let mut changed = Vec::new();
    for backend in &new.backends {
        match old.backends.iter().find(|b| b.server == backend.server) {
            None => changed.push(format!("{} added", name(&backend.server))),
            Some(before) if before.weight != backend.weight => changed.push(format!(
                "{} weight {} → {}",
                name(&backend.server),
                before.weight,
                backend.weight
            )),
            Some(_) => {}
        }
    }
    for backend in &old.backends {
        if !new.backends.iter().any(|b| b.server == backend.server) {
            changed.push(format!("{} removed", name(&backend.server)));
        }
    }
    if changed.is_empty() {
        "nothing".to_owned()
    } else {
        changed.join(", ")
    }
}

/// The `q` quantile of `values`, in milliseconds.
fn quantile_ms(values: &mut [Duration], q: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_unstable();
    let index = ((values.len() - 1) as f64 * q).round() as usize;
    values[index].as_secs_f64() * 1e3
}

fn within(sample: &Sample, from_ms: u64, until_ms: u64) -> bool {
    (from_ms..until_ms).contains(&(sample.at.as_millis() as u64))
}

/// The figures a run's table, takeaway and summary show.
struct Figures {
    requests: usize,
    per_second: f64,
    /// Per backend: requests served (5xx included) and 5xx.
    served: Vec<usize>,
    errors: Vec<usize>,
    /// Requests some backend answered.
    answered: usize,
    too_many: usize,
    server_errors: usize,
    outage_errors: usize,
    /// Before the outage, the percentage of requests that went to their
    /// URI's usual backend.
    affinity: f64,
    p50_ms: f64,
    p99_ms: f64,
    /// From `medium`'s recovery to its first success.
    back_after: Option<Duration>,
}

impl Figures {
    fn of(run: &Run) -> Self {
        let samples = &run.samples;
        let count = |keep: &dyn Fn(&Sample) -> bool| samples.iter().filter(|s| keep(s)).count();
        let served: Vec<usize> = (0..SPECS.len())
            .map(|i| count(&|s| s.backend == Some(i)))
            .collect();
        let errors = (0..SPECS.len())
            .map(|i| count(&|s| s.backend == Some(i) && s.status >= 500))
            .collect();
        let mut latencies: Vec<Duration> = samples
            .iter()
            .filter(|s| s.backend.is_some())
            .map(|s| s.latency)
            .collect();
        let recovered = Duration::from_millis(DOWN_UNTIL_MS);
        Self {
            requests: samples.len(),
            per_second: samples.len() as f64 / secs(RUN_MS),
            answered: served.iter().sum(),
            served,
            errors,
            too_many: count(&|s| s.status == StatusCode::TOO_MANY_REQUESTS.as_u16()),
            server_errors: count(&|s| s.status >= 500),
            outage_errors: count(&|s| s.status >= 500 && within(s, DOWN_FROM_MS, DOWN_UNTIL_MS)),
            affinity: affinity(samples),
            p50_ms: quantile_ms(&mut latencies, 0.5),
            p99_ms: quantile_ms(&mut latencies, 0.99),
            back_after: samples
                .iter()
                .filter(|s| s.backend == Some(MEDIUM) && s.status < 500 && s.at >= recovered)
                .map(|s| s.at - recovered)
                .min(),
        }
    }

    fn share(&self, backend: usize) -> f64 {
        100.0 * self.served[backend] as f64 / self.answered.max(1) as f64
    }
}

/// Before the outage, the percentage of answered requests that went to
/// the backend their URI went to most: near 100% when the URI picks the
/// backend, the largest backend's share when it does not.
fn affinity(samples: &[Sample]) -> f64 {
    let mut by_uri: HashMap<u32, [usize; SPECS.len()]> = HashMap::new();
    let mut answered = 0;
    for sample in samples.iter().filter(|s| within(s, 0, DOWN_FROM_MS)) {
        if let Some(backend) = sample.backend {
            by_uri.entry(sample.uri).or_default()[backend] += 1;
            answered += 1;
        }
    }
    let usual: usize = by_uri
        .values()
        .filter_map(|counts| counts.iter().max())
        .sum();
    100.0 * usual as f64 / answered.max(1) as f64
}

fn print_run(run: &Run) {
    let figures = Figures::of(run);
    println!("  backend   share  requests  peak in flight  p50 ms  p99 ms  503s sent  5xx seen");
    for (index, spec) in SPECS.iter().enumerate() {
        let mut latencies: Vec<Duration> = run
            .samples
            .iter()
            .filter(|s| s.backend == Some(index))
            .map(|s| s.latency)
            .collect();
        println!(
            "  {:<7} {:>6.1}%  {:>8}  {:>14}  {:>6.1}  {:>6.1}  {:>9}  {:>8}",
            spec.name,
            figures.share(index),
            figures.served[index],
            run.peak_in_flight[index],
            quantile_ms(&mut latencies, 0.5),
            quantile_ms(&mut latencies, 0.99),
            run.failed[index],
            figures.errors[index]
        );
    }
    let back = figures.back_after.map_or_else(
        || "not back by the end".to_owned(),
        |d| format!("back {:.2} s after recovering", d.as_secs_f64()),
    );
    println!(
        "  total {} requests ({:.0}/s) · 429 {} · 5xx {} ({} during the outage) · retries {}",
        figures.requests,
        figures.per_second,
        figures.too_many,
        figures.server_errors,
        figures.outage_errors,
        run.retries
    );
    println!("  medium {back} · reload: {}", run.reload);
    println!("  → {}\n", takeaway(run, &figures));
}

/// The URI affinity (in percent) past which a URI picks its backend.
const AFFINE: f64 = 90.0;
/// A share below this fraction of an even split is one the algorithm
/// steered away from.
const SHUNNED: f64 = 0.6;

/// One line of what the figures say, for whichever algorithm made them.
fn takeaway(run: &Run, figures: &Figures) -> String {
    let even = 100.0 / SPECS.len() as f64;
    let slow = figures.share(SLOW);
    let follows = if slow < even * SHUNNED {
        "follows"
    } else {
        "ignores"
    };
    let keys = if figures.affinity > AFFINE {
        format!(
            "{:.0}% of requests on their URI's backend",
            figures.affinity
        )
    } else {
        "a URI goes anywhere".to_owned()
    };
    let sent: u64 = run.failed.iter().sum();
    let seen: usize = figures.errors.iter().sum();
    let hidden = sent.saturating_sub(seen as u64);
    format!(
        "slow got {slow:.0}% (even split {even:.0}%): load {follows} speed · {keys} · \
         retries hid {hidden} of {sent} 503s · p99 {:.1} ms",
        figures.p99_ms
    )
}

fn print_summary(runs: &[Run]) {
    println!("algorithm     req/s  p50 ms  p99 ms  slow share  URI affinity   429  5xx  retries");
    for run in runs {
        let figures = Figures::of(run);
        println!(
            "{:<12} {:>6.0}  {:>6.1}  {:>6.1}  {:>9.1}%  {:>11.0}%  {:>4} {:>4}  {:>7}",
            run.algorithm,
            figures.per_second,
            figures.p50_ms,
            figures.p99_ms,
            figures.share(SLOW),
            figures.affinity,
            figures.too_many,
            figures.server_errors,
            run.retries
        );
    }
}

/// The chart's layout, in SVG user units.
const WIDTH: f64 = 760.0;
const PANEL_HEIGHT: f64 = 210.0;
const LEGEND_HEIGHT: f64 = 44.0;
const PLOT_LEFT: f64 = 64.0;
const PLOT_RIGHT: f64 = 24.0;
const PLOT_TOP: f64 = 34.0;
const PLOT_BOTTOM: f64 = 40.0;
/// Share gridlines, in percent.
const SHARE_TICKS: [u32; 5] = [0, 25, 50, 75, 100];
/// Backends' colours, in [`SPECS`]' order (ColorBrewer's Dark2).
const COLOURS: [&str; 4] = ["#1b9e77", "#d95f02", "#7570b3", "#e7298a"];
/// The outage's overlay.
const DOWN_SHADE: &str = "#000";
const DOWN_OPACITY: f64 = 0.2;

/// Writes the chart under `target/demo` (or `$CARGO_TARGET_DIR/demo`).
fn write_chart(runs: &[Run]) -> std::io::Result<PathBuf> {
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| PathBuf::from("target"), PathBuf::from);
    let dir = target.join("demo");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("shares.svg");
    std::fs::write(&path, chart(runs))?;
    std::path::absolute(&path)
}

fn chart(runs: &[Run]) -> String {
    let height = LEGEND_HEIGHT + PANEL_HEIGHT * runs.len() as f64;
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{height}\" \
         viewBox=\"0 0 {WIDTH} {height}\" font-family=\"sans-serif\" font-size=\"11\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
    );
    legend(&mut svg);
    for (index, run) in runs.iter().enumerate() {
        panel(&mut svg, run, LEGEND_HEIGHT + PANEL_HEIGHT * index as f64);
    }
    svg.push_str("</svg>\n");
    svg
}

fn legend(svg: &mut String) {
    const ENTRY_WIDTH: f64 = 90.0;
    const SWATCH: f64 = 12.0;
    let _ = writeln!(
        svg,
        "<text x=\"{PLOT_LEFT}\" y=\"16\" font-size=\"13\">Share of the requests each backend \
         answered, per {BUCKET_MS} ms</text>"
    );
    let swatch_top = 24.0;
    let text_y = swatch_top + SWATCH - 2.0;
    let mut x = PLOT_LEFT;
    for (spec, colour) in SPECS.iter().zip(COLOURS) {
        let _ = writeln!(
            svg,
            "<rect x=\"{x}\" y=\"{swatch_top}\" width=\"{SWATCH}\" height=\"{SWATCH}\" \
             fill=\"{colour}\"/><text x=\"{}\" y=\"{text_y}\">{}</text>",
            x + SWATCH + 4.0,
            spec.name
        );
        x += ENTRY_WIDTH;
    }
    let _ = writeln!(
        svg,
        "<rect x=\"{x}\" y=\"{swatch_top}\" width=\"{SWATCH}\" height=\"{SWATCH}\" \
         fill=\"{DOWN_SHADE}\" fill-opacity=\"{DOWN_OPACITY}\" stroke=\"#000\" \
         stroke-dasharray=\"2 2\"/><text x=\"{}\" y=\"{text_y}\">medium down</text>\
         <line x1=\"{}\" y1=\"{swatch_top}\" x2=\"{}\" y2=\"{}\" stroke=\"#000\" \
         stroke-dasharray=\"4 3\" stroke-width=\"2\"/><text x=\"{}\" y=\"{text_y}\">reload</text>",
        x + SWATCH + 4.0,
        x + 1.5 * ENTRY_WIDTH,
        x + 1.5 * ENTRY_WIDTH,
        swatch_top + SWATCH,
        x + 1.5 * ENTRY_WIDTH + 6.0
    );
}

/// One algorithm's shares over time as stacked areas, from `top` down.
fn panel(svg: &mut String, run: &Run, top: f64) {
    let (left, right) = (PLOT_LEFT, WIDTH - PLOT_RIGHT);
    let (plot_top, bottom) = (top + PLOT_TOP, top + PANEL_HEIGHT - PLOT_BOTTOM);
    let x = |ms: f64| left + (right - left) * ms / RUN_MS as f64;
    let y = |percent: f64| bottom - (bottom - plot_top) * percent / 100.0;

    let _ = writeln!(
        svg,
        "<text x=\"{left}\" y=\"{}\" font-size=\"13\" font-weight=\"bold\">{}</text>",
        plot_top - 8.0,
        run.algorithm
    );
    // Each backend's band: its share stacked on those before it, one step
    // a bucket.
    let shares = bucket_shares(run);
    let mut below = vec![0.0; shares.len()];
    for (backend, colour) in COLOURS.iter().enumerate() {
        let mut upper = Vec::new();
        let mut lower = Vec::new();
        for (bucket, share) in shares.iter().enumerate() {
            let (from, to) = (
                bucket as f64 * BUCKET_MS as f64,
                ((bucket + 1) as f64 * BUCKET_MS as f64).min(RUN_MS as f64),
            );
            let (base, height) = (below[bucket], share[backend]);
            upper.push(format!(
                "{:.1},{:.1} {:.1},{:.1}",
                x(from),
                y(base + height),
                x(to),
                y(base + height)
            ));
            lower.push(format!(
                "{:.1},{:.1} {:.1},{:.1}",
                x(to),
                y(base),
                x(from),
                y(base)
            ));
            below[bucket] += height;
        }
        lower.reverse();
        let _ = writeln!(
            svg,
            "<polygon points=\"{} {}\" fill=\"{colour}\"/>",
            upper.join(" "),
            lower.join(" ")
        );
    }
    let (down_from, down_until) = (x(DOWN_FROM_MS as f64), x(DOWN_UNTIL_MS as f64));
    let _ = writeln!(
        svg,
        "<rect x=\"{down_from}\" y=\"{plot_top}\" width=\"{}\" height=\"{}\" fill=\"{DOWN_SHADE}\" \
         fill-opacity=\"{DOWN_OPACITY}\" stroke=\"#000\" stroke-dasharray=\"2 2\"/>\
         <text x=\"{}\" y=\"{}\" text-anchor=\"middle\">medium down</text>",
        down_until - down_from,
        bottom - plot_top,
        (down_from + down_until) / 2.0,
        plot_top - 4.0
    );
    let reload = x(RELOAD_AT_MS as f64);
    let _ = writeln!(
        svg,
        "<line x1=\"{reload}\" y1=\"{}\" x2=\"{reload}\" y2=\"{bottom}\" stroke=\"#000\" \
         stroke-dasharray=\"4 3\" stroke-width=\"2\"/><text x=\"{reload}\" y=\"{}\" \
         text-anchor=\"middle\">reload: {}</text>",
        plot_top - 2.0,
        plot_top - 4.0,
        escape(&run.reload)
    );
    axes(svg, left, right, plot_top, bottom);
}

/// The axes, ticks and labels of a panel's plot area.
fn axes(svg: &mut String, left: f64, right: f64, plot_top: f64, bottom: f64) {
    let y = |percent: f64| bottom - (bottom - plot_top) * percent / 100.0;
    for percent in SHARE_TICKS {
        let at = y(f64::from(percent));
        let _ = writeln!(
            svg,
            "<line x1=\"{}\" y1=\"{at}\" x2=\"{left}\" y2=\"{at}\" stroke=\"#333\"/>\
             <text x=\"{}\" y=\"{}\" text-anchor=\"end\">{percent}%</text>",
            left - 4.0,
            left - 6.0,
            at + 4.0
        );
    }
    for second in 0..=RUN_MS / 1000 {
        let at = left + (right - left) * (second * 1000) as f64 / RUN_MS as f64;
        let _ = writeln!(
            svg,
            "<line x1=\"{at}\" y1=\"{bottom}\" x2=\"{at}\" y2=\"{}\" stroke=\"#333\"/>\
             <text x=\"{at}\" y=\"{}\" text-anchor=\"middle\">{second}</text>",
            bottom + 4.0,
            bottom + 16.0
        );
    }
    let _ = writeln!(
        svg,
        "<rect x=\"{left}\" y=\"{plot_top}\" width=\"{}\" height=\"{}\" fill=\"none\" stroke=\"#333\"/>\
         <text x=\"{}\" y=\"{}\" text-anchor=\"middle\">time (s)</text>\
         <text transform=\"translate({},{}) rotate(-90)\" text-anchor=\"middle\">share of requests</text>",
        right - left,
        bottom - plot_top,
        (left + right) / 2.0,
        bottom + 30.0,
        left - 44.0,
        (plot_top + bottom) / 2.0
    );
}

/// Per time bucket, each backend's share (%) of the requests answered in
/// it (all zero when none were).
fn bucket_shares(run: &Run) -> Vec<[f64; SPECS.len()]> {
    let buckets = RUN_MS.div_ceil(BUCKET_MS) as usize;
    let mut counts = vec![[0usize; SPECS.len()]; buckets];
    for sample in &run.samples {
        let bucket = (sample.at.as_millis() as u64 / BUCKET_MS) as usize;
        if let (Some(backend), Some(counts)) = (sample.backend, counts.get_mut(bucket)) {
            counts[backend] += 1;
        }
    }
    counts
        .iter()
        .map(|counts| {
            let total = counts.iter().sum::<usize>().max(1) as f64;
            counts.map(|count| 100.0 * count as f64 / total)
        })
        .collect()
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
