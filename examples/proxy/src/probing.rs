//! Probes of a `probing` pool's backends (Prequal's): after each pick the
//! pool names a few backends to ask; each is sent a GET to the
//! configured path on the pool's own protocol, in a task of its own, and
//! its answer goes back to the pool: the backend's requests in flight
//! (its header, or this proxy's own count of them when it states none)
//! and the probe's round trip as its latency. A probe not answered in
//! time, or past the pool's bound of probes in flight, is dropped: the
//! pick never waits for one.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Limited};
use hyper::Method;
use hyper::header::{HOST, HeaderMap, HeaderValue};
use loadbalance::Probe;

use super::body::UpstreamBody;
use super::config::ProbingConfig;
use super::links::{Http1, Outgoing};
use super::state::Upstream;

/// A probe answer's body is read up to this (then dropped), so the
/// connection can be reused.
const MAX_PROBE_BODY: usize = 4096;

/// How one pool's backends are probed, and what came of it.
pub(crate) struct Prober {
    pub(crate) config: ProbingConfig,
    in_flight: AtomicUsize,
    pub(crate) answered: AtomicU64,
    pub(crate) failed: AtomicU64,
    pub(crate) skipped: AtomicU64,
}

impl Prober {
    pub(crate) fn new(config: ProbingConfig) -> Self {
        Self {
            config,
            in_flight: AtomicUsize::new(0),
            answered: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
        }
    }

    /// Sends `probes` of `upstream`'s backends, each in a task of its own.
    pub(crate) fn send(
        self: &Arc<Self>,
        upstream: &Upstream,
        http1: &Http1,
        probes: Vec<Probe<String>>,
    ) {
        for probe in probes {
            // Relaxed: a bound on tasks, not a publication.
            if self.in_flight.fetch_add(1, Relaxed) >= self.config.max_in_flight {
                self.in_flight.fetch_sub(1, Relaxed);
                self.skipped.fetch_add(1, Relaxed);
                continue;
            }
            let (prober, upstream, http1) = (Arc::clone(self), upstream.clone(), http1.clone());
            tokio::spawn(async move {
                let answered = prober.ask(&upstream, &http1, &probe).await;
                prober.in_flight.fetch_sub(1, Relaxed);
                match answered {
                    Some((in_flight, latency)) => {
                        prober.answered.fetch_add(1, Relaxed);
                        probe.answer(in_flight, latency);
                    }
                    None => {
                        prober.failed.fetch_add(1, Relaxed);
                    }
                }
            });
        }
    }

    /// One probe: the backend's requests in flight and the round trip,
    /// if it answered with a 2xx in time.
    async fn ask(
        &self,
        upstream: &Upstream,
        http1: &Http1,
        probe: &Probe<String>,
    ) -> Option<(u32, Duration)> {
        let server = probe.backend();
        let mut headers = HeaderMap::new();
        headers.insert(HOST, HeaderValue::from_str(server).ok()?);
        let request = Outgoing {
            method: &Method::GET,
            target: &self.config.path,
            headers: &headers,
            body: UpstreamBody::Empty,
        };
        let link = upstream.link(http1);
        let started = Instant::now();
        let timeout = Duration::from_millis(self.config.timeout_ms);
        let response = tokio::time::timeout(timeout, link.request(server, request))
            .await
            .ok()?
            .ok()?;
        let latency = started.elapsed();
        if !response.status().is_success() {
            return None;
        }
        let stated = response
            .headers()
            .get(self.config.in_flight_header.as_str())
            .and_then(|value| in_flight(value.as_bytes()));
        // The body, bounded in size and in the probe's own time.
        let left = timeout.saturating_sub(latency);
        let _ = tokio::time::timeout(
            left,
            Limited::new(response.into_body(), MAX_PROBE_BODY).collect(),
        )
        .await;
        let in_flight = match stated {
            Some(count) => count,
            None => upstream
                .pool
                .active_of(server.as_str())
                .map_or(0, |active| u32::try_from(active).unwrap_or(u32::MAX)),
        };
        Some((in_flight, latency))
    }
}

/// A stated count of requests in flight: 1 to 10 ASCII digits, at most
/// `u32::MAX`; anything else is no statement.
fn in_flight(value: &[u8]) -> Option<u32> {
    if value.is_empty() || value.len() > 10 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(value).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::in_flight;

    #[test]
    fn a_stated_count_is_digits_only_and_bounded() {
        assert_eq!(in_flight(b"0"), Some(0));
        assert_eq!(in_flight(b"4294967295"), Some(u32::MAX));
        for bad in [
            &b""[..],
            b"-1",
            b"+3",
            b" 3",
            b"3 ",
            b"0x10",
            b"4294967296",
            b"99999999999",
            b"\xff",
        ] {
            assert_eq!(in_flight(bad), None, "{bad:?}");
        }
    }
}
