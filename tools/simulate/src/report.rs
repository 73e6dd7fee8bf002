//! What a run measured, and the table of several runs.

use std::fmt::Write;

/// One run's figures.
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    /// The scenario's name.
    pub scenario: String,
    /// The algorithm, as the crate prints it.
    pub algorithm: String,
    /// Requests that arrived.
    pub requests: u64,
    /// Requests shed by the balancers' limit (answered at once with a 503).
    pub shed: u64,
    /// Requests answered within their timeout.
    pub succeeded: u64,
    /// Requests answered within their timeout a second of the run.
    pub goodput: f64,
    /// Latency percentiles over every request let in, in seconds: p50,
    /// p99, p99.9; a request not answered within its timeout ranks above
    /// every answer (infinite: past the timeout).
    pub p50: f64,
    /// See `p50`.
    pub p99: f64,
    /// See `p50`.
    pub p999: f64,
    /// The answered requests' mean, in seconds.
    pub mean: f64,
    /// The most requests in flight at one server over the mean, both
    /// averaged over the run (1: even).
    pub imbalance: f64,
}

impl Report {
    pub(crate) fn new(
        scenario: &str,
        algorithm: &str,
        mut latencies: Vec<f64>,
        failed: u64,
        shed: u64,
        duration: std::time::Duration,
        areas: &[f64],
    ) -> Self {
        latencies.sort_by(f64::total_cmp);
        let all = latencies.len() + failed as usize;
        // Nearest rank over every request, the failed ones last.
        let at = |q: f64| {
            if all == 0 {
                return f64::NAN;
            }
            let rank = ((q * all as f64).ceil() as usize).clamp(1, all);
            latencies.get(rank - 1).copied().unwrap_or(f64::INFINITY)
        };
        let mean_area = areas.iter().sum::<f64>() / areas.len().max(1) as f64;
        let most = areas.iter().copied().fold(0.0, f64::max);
        let succeeded = latencies.len() as u64;
        Self {
            scenario: scenario.to_owned(),
            algorithm: algorithm.to_owned(),
            requests: succeeded + failed + shed,
            shed,
            succeeded,
            goodput: succeeded as f64 / duration.as_secs_f64().max(f64::MIN_POSITIVE),
            p50: at(0.5),
            p99: at(0.99),
            p999: at(0.999),
            mean: latencies.iter().sum::<f64>() / latencies.len().max(1) as f64,
            imbalance: if mean_area > 0.0 {
                most / mean_area
            } else {
                1.0
            },
        }
    }

    /// Answered within the timeout, over all requests (the shed ones
    /// too).
    pub fn success(&self) -> f64 {
        self.succeeded as f64 / self.requests.max(1) as f64
    }
}

/// The reports as one Markdown table, latencies in milliseconds.
pub fn table(reports: &[Report]) -> String {
    let mut out = String::from(
        "| scenario | algorithm | requests | success | p50 | p99 | p99.9 | imbalance |\n\
         |---|---|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in reports {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {:.3}% | {} | {} | {} | {:.2} |",
            r.scenario,
            r.algorithm,
            r.requests,
            100.0 * r.success(),
            ms(r.p50),
            ms(r.p99),
            ms(r.p999),
            r.imbalance
        );
    }
    out
}

/// The overload table: for each run, its goodput as a share of
/// `capacity` (requests a second the servers can serve), the share shed,
/// and p99 over the requests let in beside `unloaded_p99` (seconds).
pub fn overload_table(reports: &[Report], capacity: f64, unloaded_p99: f64) -> String {
    let mut out = String::from(
        "| scenario | algorithm | requests | shed | goodput (of capacity) | p50 | p99 | p99 / unloaded p99 |\n\
         |---|---|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in reports {
        let ratio = r.p99 / unloaded_p99;
        let _ = writeln!(
            out,
            "| {} | {} | {} | {:.1}% | {:.0}/s ({:.1}%) | {} | {} | {} |",
            r.scenario,
            r.algorithm,
            r.requests,
            100.0 * r.shed as f64 / r.requests.max(1) as f64,
            r.goodput,
            100.0 * r.goodput / capacity,
            ms(r.p50),
            ms(r.p99),
            if ratio.is_finite() {
                format!("{ratio:.2}")
            } else {
                "> timeout".to_owned()
            },
        );
    }
    out
}

/// Seconds as milliseconds, or past the timeout.
fn ms(seconds: f64) -> String {
    if seconds.is_finite() {
        format!("{:.1} ms", 1e3 * seconds)
    } else {
        "> timeout".to_owned()
    }
}
