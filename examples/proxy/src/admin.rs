//! The admin listener (loopback unless configured otherwise): `/metrics`
//! in the Prometheus text format, the pools' figures from the crate and
//! the proxy's own counters; `DELETE /cache[/HOST/PATH]`, the cache's
//! purge; and `PUT /bans/CLIENT?seconds=N` and `DELETE /bans/CLIENT`, a
//! client banned or pardoned by hand (on every proxy sharing `[clients]
//! redis`).

use std::convert::Infallible;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use loadbalance::PrometheusText;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::body::ProxyBody;
use super::cache::{self, Cache};
use super::forward::error;
use super::idle::{Busy, Idle};
use super::request_target;
use super::state::State;
use super::{Shared, stopped};

/// What the proxy counts, beside the pools' own figures. Each counter is
/// independent (`Relaxed`: read only for display).
#[derive(Debug, Default)]
pub struct Counters {
    /// Responses by class: 1xx to 5xx.
    pub responses: [AtomicU64; 5],
    /// Clients refused by a deny list (403).
    pub denied: AtomicU64,
    /// Clients refused while banned (403).
    pub banned: AtomicU64,
    /// Requests over the client's rate (429).
    pub rate_limited: AtomicU64,
    /// Requests over the client's (429) or the server's (503) limit of
    /// requests in flight.
    pub in_flight: AtomicU64,
    /// Requests refused because the shared (Redis) limit could not answer
    /// and the policy fails closed (503).
    pub unavailable: AtomicU64,
    /// Requests refused as malformed before routing (400, 501): framing
    /// that conflicts or a coding other than chunked, a missing, repeated
    /// or invalid `Host`, a path that is refused, an unreadable forwarded
    /// address from a trusted proxy.
    pub malformed: AtomicU64,
    /// Clients that stopped sending their request body for
    /// `client_body_timeout_ms` (408).
    pub client_timeouts: AtomicU64,
    /// Requests no backend could take (503).
    pub no_backend: AtomicU64,
    /// Attempts on another backend.
    pub retries: AtomicU64,
    /// Exchanges with a backend that failed.
    pub upstream_errors: AtomicU64,
    /// Backends that did not answer in time.
    pub upstream_timeouts: AtomicU64,
    /// TLS handshakes completed.
    pub tls_handshakes: AtomicU64,
    /// TLS handshakes that failed (no common version or cipher, a bad
    /// record, a client that gave up).
    pub tls_handshake_failures: AtomicU64,
    /// TLS handshakes cut at `handshake_timeout_ms`.
    pub tls_handshake_timeouts: AtomicU64,
    /// Configurations applied.
    pub reloads: AtomicU64,
    /// Configurations refused (the old one kept).
    pub reloads_failed: AtomicU64,
    /// Active checks that failed.
    pub checks_failed: AtomicU64,
    /// Backends the active checks marked down.
    pub marked_down: AtomicU64,
    /// Backends the active checks marked up again.
    pub marked_up: AtomicU64,
    /// Changed DNS answers applied to their pools.
    pub dns_updates: AtomicU64,
    /// Changed DNS answers refused (the pools kept as they were).
    pub dns_updates_failed: AtomicU64,
    /// Requests a route's adaptive concurrency limit shed.
    pub shed_by_route: AtomicU64,
    /// Requests a pool's adaptive concurrency limit shed.
    pub shed_by_pool: AtomicU64,
}

impl Counters {
    pub(crate) fn response(&self, status: StatusCode) {
        let class = usize::from(status.as_u16() / 100).clamp(1, 5) - 1;
        self.responses[class].fetch_add(1, Relaxed);
    }

    fn render(&self, out: &mut String) {
        let family = |out: &mut String, name: &str, help: &str| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        };
        family(
            out,
            "proxy_responses_total",
            "Responses sent, by status class.",
        );
        for (class, count) in self.responses.iter().enumerate() {
            let _ = writeln!(
                out,
                "proxy_responses_total{{class=\"{}xx\"}} {}",
                class + 1,
                count.load(Relaxed)
            );
        }
        family(
            out,
            "proxy_rejected_total",
            "Requests refused before routing, by reason.",
        );
        for (reason, count) in [
            ("deny_listed", &self.denied),
            ("banned", &self.banned),
            ("rate_limited", &self.rate_limited),
            ("in_flight", &self.in_flight),
            ("shared_limit_unavailable", &self.unavailable),
            ("malformed", &self.malformed),
        ] {
            let _ = writeln!(
                out,
                "proxy_rejected_total{{reason=\"{reason}\"}} {}",
                count.load(Relaxed)
            );
        }
        for (name, help, count) in [
            (
                "proxy_no_backend_total",
                "Requests no backend could take.",
                &self.no_backend,
            ),
            (
                "proxy_retries_total",
                "Attempts on another backend.",
                &self.retries,
            ),
            (
                "proxy_client_body_timeouts_total",
                "Clients that stopped sending their request body (408).",
                &self.client_timeouts,
            ),
            (
                "proxy_upstream_errors_total",
                "Exchanges with a backend that failed.",
                &self.upstream_errors,
            ),
            (
                "proxy_upstream_timeouts_total",
                "Backends that did not answer in time.",
                &self.upstream_timeouts,
            ),
            (
                "proxy_tls_handshakes_total",
                "TLS handshakes completed.",
                &self.tls_handshakes,
            ),
            (
                "proxy_tls_handshake_failures_total",
                "TLS handshakes that failed.",
                &self.tls_handshake_failures,
            ),
            (
                "proxy_tls_handshake_timeouts_total",
                "TLS handshakes cut at the handshake timeout.",
                &self.tls_handshake_timeouts,
            ),
            (
                "proxy_reloads_total",
                "Configurations applied.",
                &self.reloads,
            ),
            (
                "proxy_reloads_failed_total",
                "Configurations rejected (the old one kept).",
                &self.reloads_failed,
            ),
            (
                "proxy_health_checks_failed_total",
                "Active health checks that failed.",
                &self.checks_failed,
            ),
            (
                "proxy_marked_down_total",
                "Backends marked down by active checks.",
                &self.marked_down,
            ),
            (
                "proxy_marked_up_total",
                "Backends marked up by active checks.",
                &self.marked_up,
            ),
            (
                "proxy_dns_updates_total",
                "Changed DNS answers applied to their pools.",
                &self.dns_updates,
            ),
            (
                "proxy_dns_updates_failed_total",
                "Changed DNS answers refused (the pools kept).",
                &self.dns_updates_failed,
            ),
            (
                "proxy_shed_by_route_total",
                "Requests shed by a route's adaptive concurrency limit (503).",
                &self.shed_by_route,
            ),
            (
                "proxy_shed_by_pool_total",
                "Requests shed by a pool's adaptive concurrency limit (503).",
                &self.shed_by_pool,
            ),
        ] {
            family(out, name, help);
            let _ = writeln!(out, "{name} {}", count.load(Relaxed));
        }
    }
}

/// Each adaptive limit's limit and requests in flight, by pool and route.
fn adaptive(state: &State, out: &mut String) {
    let pools = state
        .upstreams
        .iter()
        .filter_map(|u| Some(("pool", u.name.as_str(), u.adaptive.as_ref()?)));
    let routes = state
        .config
        .routes
        .iter()
        .zip(&state.routes)
        .filter_map(|(config, route)| {
            Some(("route", config.name.as_str(), route.adaptive.as_ref()?))
        });
    let limits: Vec<_> = pools.chain(routes).collect();
    if limits.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "# HELP proxy_adaptive_limit Adaptive concurrency limits now.\n\
         # TYPE proxy_adaptive_limit gauge"
    );
    for (scope, name, adaptive) in &limits {
        let _ = writeln!(
            out,
            "proxy_adaptive_limit{{{scope}=\"{}\"}} {}",
            escaped(name),
            adaptive.limit.limit()
        );
    }
    let _ = writeln!(
        out,
        "# HELP proxy_adaptive_in_flight Requests in flight under each adaptive limit.\n\
         # TYPE proxy_adaptive_in_flight gauge"
    );
    for (scope, name, adaptive) in &limits {
        let _ = writeln!(
            out,
            "proxy_adaptive_in_flight{{{scope}=\"{}\"}} {}",
            escaped(name),
            adaptive.limit.stats().in_flight
        );
    }
}

/// Each probing pool's probes: answered, failed (no answer in time, or
/// not a 2xx) and skipped (past the pool's bound in flight).
fn probes(state: &State, out: &mut String) {
    let probers: Vec<_> = state
        .upstreams
        .iter()
        .filter_map(|u| Some((u.name.as_str(), u.prober.as_ref()?)))
        .collect();
    if probers.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "# HELP proxy_probes_total Probes of a probing pool's backends, by result.\n\
         # TYPE proxy_probes_total counter"
    );
    for (pool, prober) in probers {
        let pool = escaped(pool);
        for (result, count) in [
            ("answered", &prober.answered),
            ("failed", &prober.failed),
            ("skipped", &prober.skipped),
        ] {
            let _ = writeln!(
                out,
                "proxy_probes_total{{pool=\"{pool}\",result=\"{result}\"}} {}",
                count.load(Relaxed)
            );
        }
    }
}

/// `value` as a Prometheus label value: `\\`, `"` and newlines escaped.
fn escaped(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// The metrics text: every pool of the running configuration, then the
/// proxy's counters.
pub(crate) fn metrics(shared: &Shared) -> String {
    let state = shared.state.load();
    let mut pools = PrometheusText::new();
    for upstream in &state.upstreams {
        pools.pool(&upstream.name, &upstream.pool);
    }
    let mut out = pools.render();
    shared.counters.render(&mut out);
    adaptive(&state, &mut out);
    probes(&state, &mut out);
    let watches = shared.resolving.stats();
    if !watches.is_empty() {
        let _ = writeln!(
            out,
            "# HELP proxy_dns_lookups_total DNS lookups of a pool's names, and those that \
             failed or found nothing (the last good answer kept).\n\
             # TYPE proxy_dns_lookups_total counter"
        );
        for (pool, stats) in &watches {
            let pool = escaped(pool);
            let _ = writeln!(
                out,
                "proxy_dns_lookups_total{{pool=\"{pool}\",result=\"ok\"}} {}\n\
                 proxy_dns_lookups_total{{pool=\"{pool}\",result=\"failed\"}} {}",
                stats.lookups.saturating_sub(stats.failures),
                stats.failures
            );
        }
    }
    let connections = &shared.connections;
    let _ = writeln!(
        out,
        "# HELP proxy_connections Client connections open.\n# TYPE proxy_connections gauge\n\
         proxy_connections {}",
        connections.open_now()
    );
    let _ = writeln!(
        out,
        "# HELP proxy_connections_closed_total Client connections closed by the proxy's \
         limits, by reason.\n# TYPE proxy_connections_closed_total counter"
    );
    for (reason, count) in [
        ("per_client", &connections.refused_per_client),
        ("full", &connections.refused_full),
        ("shed_idle", &connections.shed),
    ] {
        let _ = writeln!(
            out,
            "proxy_connections_closed_total{{reason=\"{reason}\"}} {}",
            count.load(Relaxed)
        );
    }
    let dropped = shared
        .access_log
        .as_ref()
        .map_or(0, |log| log.dropped.load(Relaxed));
    let _ = writeln!(
        out,
        "# HELP proxy_access_log_dropped_total Access lines dropped: the writer was behind.\n\
         # TYPE proxy_access_log_dropped_total counter\nproxy_access_log_dropped_total {dropped}"
    );
    let tunnels = &shared.tunnels;
    let _ = writeln!(
        out,
        "# HELP proxy_tunnels Upgrade tunnels (WebSocket) open.\n# TYPE proxy_tunnels gauge\n\
         proxy_tunnels {}\n\
         # HELP proxy_tunnels_total Upgrade tunnels opened.\n# TYPE proxy_tunnels_total counter\n\
         proxy_tunnels_total {}\n\
         # HELP proxy_tunnels_refused_total Upgrade tunnels refused: the client's limit (429).\n\
         # TYPE proxy_tunnels_refused_total counter\nproxy_tunnels_refused_total {}",
        tunnels.open_now(),
        tunnels.opened.load(Relaxed),
        tunnels.refused.load(Relaxed)
    );
    let _ = writeln!(
        out,
        "# HELP proxy_accept_errors_total Failed accepts (out of descriptors, most likely).\n\
         # TYPE proxy_accept_errors_total counter\nproxy_accept_errors_total {}",
        connections.accept_errors.load(Relaxed)
    );
    render_cache(&shared.cache, &mut out);
    out
}

/// The cache's figures.
fn render_cache(cache: &Cache, out: &mut String) {
    let counters = &cache.counters;
    for (name, help, count) in [
        (
            "proxy_cache_hits_total",
            "Answers from the cache.",
            &counters.hits,
        ),
        (
            "proxy_cache_misses_total",
            "Lookups that found nothing for the request.",
            &counters.misses,
        ),
        (
            "proxy_cache_stale_total",
            "Stale answers: stale-while-revalidate, stale-if-error.",
            &counters.stale,
        ),
        (
            "proxy_cache_revalidated_total",
            "Stale entries a backend's 304 made fresh.",
            &counters.revalidated,
        ),
        (
            "proxy_cache_stored_total",
            "Entries stored.",
            &counters.stored,
        ),
        (
            "proxy_cache_not_stored_total",
            "Storable responses not kept: too large, cut short, no room.",
            &counters.not_stored,
        ),
        (
            "proxy_cache_collapsed_total",
            "Misses that waited for another request's answer.",
            &counters.collapsed,
        ),
        (
            "proxy_cache_invalidated_total",
            "URIs invalidated: unsafe methods and purges.",
            &counters.invalidated,
        ),
        (
            "proxy_cache_hit_bytes_total",
            "Body bytes answered from the cache.",
            &counters.hit_bytes,
        ),
    ] {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
            count.load(Relaxed)
        );
    }
    let (bytes, entries, max) = cache.size();
    let _ = writeln!(
        out,
        "# HELP proxy_cache_bytes Bytes the cache's entries hold.\n# TYPE proxy_cache_bytes gauge\n\
         proxy_cache_bytes {bytes}\n\
         # HELP proxy_cache_max_bytes The cache's bound.\n# TYPE proxy_cache_max_bytes gauge\n\
         proxy_cache_max_bytes {max}\n\
         # HELP proxy_cache_entries Entries in the cache.\n# TYPE proxy_cache_entries gauge\n\
         proxy_cache_entries {entries}"
    );
}

/// `DELETE /cache`: every entry; `DELETE /cache/HOST/PATH?QUERY`: the
/// entries of that URI, over http and https (the path in the normal form
/// routes match).
fn purge(shared: &Shared, request: &Request<hyper::body::Incoming>) -> Response<ProxyBody> {
    let Some(rest) = request.uri().path().strip_prefix("/cache") else {
        return error(StatusCode::NOT_FOUND, "404 not found\n");
    };
    if rest.is_empty() || rest == "/" {
        shared.cache.clear();
        return error(StatusCode::OK, "purged every entry\n");
    }
    let Some(uri) = rest.strip_prefix('/') else {
        return error(StatusCode::NOT_FOUND, "404 not found\n");
    };
    let (host, path) = uri
        .find('/')
        .map_or((uri, "/"), |slash| uri.split_at(slash));
    // The normal form routes match and the cache keys by.
    let Ok(path) = request_target::normalise(path) else {
        return error(StatusCode::BAD_REQUEST, "400 a path the proxy refuses\n");
    };
    let path = match request.uri().query() {
        Some(query) => format!("{path}?{query}"),
        None => path.into_owned(),
    };
    for scheme in ["http", "https"] {
        shared
            .cache
            .invalidate(&cache::primary(scheme, host, &path));
    }
    error(StatusCode::OK, "purged\n")
}

/// `PUT /bans/CLIENT?seconds=N`: bans the client (an IP address; its
/// group, an IPv6 /64, counts) on every proxy sharing the bans (`[clients]
/// redis` with `ban`); `DELETE /bans/CLIENT`: lifts its ban here and
/// there, and forgets its strikes here.
fn bans(shared: &Shared, request: &Request<hyper::body::Incoming>) -> Response<ProxyBody> {
    let path = request.uri().path();
    let Some(Ok(client)) = path
        .strip_prefix("/bans/")
        .map(|text| text.parse::<std::net::IpAddr>())
    else {
        return error(StatusCode::BAD_REQUEST, "400 not a client's address\n");
    };
    let state = shared.state.load();
    let flow = &state.clients.flow;
    let key = flow.client_key(client);
    #[cfg(feature = "redis")]
    let everywhere = state
        .clients
        .shared
        .as_ref()
        .and_then(loadbalance::limit::SharedLimits::shared_bans);
    match *request.method() {
        hyper::Method::DELETE => {
            let here = flow.bans().is_some_and(|bans| bans.lift(&key));
            #[cfg(feature = "redis")]
            if let Some(everywhere) = everywhere {
                everywhere.lift_soon(&key.to_string());
                return said(format!("lifted {key} on every proxy\n"));
            }
            said(format!("lifted {key} here (banned here: {here})\n"))
        }
        hyper::Method::PUT => {
            let seconds = request
                .uri()
                .query()
                .and_then(|query| query.strip_prefix("seconds="))
                .and_then(|seconds| seconds.parse::<u64>().ok())
                .filter(|seconds| (1..=LONGEST_BAN_SECONDS).contains(seconds));
            let Some(seconds) = seconds else {
                return error(
                    StatusCode::BAD_REQUEST,
                    "400 say for how long: ?seconds=N, 1 to 31536000\n",
                );
            };
            #[cfg(feature = "redis")]
            if let Some(everywhere) = everywhere {
                everywhere.ban_soon(&key.to_string(), Duration::from_secs(seconds));
                return said(format!("banned {key} for {seconds} s on every proxy\n"));
            }
            let _ = seconds;
            error(
                StatusCode::NOT_IMPLEMENTED,
                "501 bans are set by hand only when shared ([clients] redis with ban)\n",
            )
        }
        _ => error(StatusCode::METHOD_NOT_ALLOWED, "405 PUT or DELETE\n"),
    }
}

/// The longest ban set by hand: a year.
const LONGEST_BAN_SECONDS: u64 = 365 * 24 * 3_600;

/// A 200 with `text`.
fn said(text: String) -> Response<ProxyBody> {
    Response::new(ProxyBody::owned(text))
}

/// Serves the admin listener until shutdown.
pub(crate) async fn serve(
    shared: Arc<Shared>,
    listener: TcpListener,
    mut stop: watch::Receiver<bool>,
) {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(shared.settings.header_timeout());
    let mut connections = JoinSet::new();
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(_) => {
                    // Out of descriptors, most likely: back off briefly.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
            _ = stopped(&mut stop) => break,
        };
        let request_shared = Arc::clone(&shared);
        let service = service_fn(move |request: Request<hyper::body::Incoming>| {
            let response = if request.uri().path().starts_with("/bans/") {
                bans(&request_shared, &request)
            } else if request.method() == hyper::Method::DELETE {
                purge(&request_shared, &request)
            } else if request.uri().path() == "/metrics" {
                let mut response = Response::new(ProxyBody::owned(metrics(&request_shared)));
                response.headers_mut().insert(
                    "content-type",
                    hyper::header::HeaderValue::from_static("text/plain; version=0.0.4"),
                );
                response
            } else {
                error(
                    StatusCode::NOT_FOUND,
                    "404 not found: try GET /metrics, DELETE /cache[/HOST/PATH], PUT or DELETE /bans/CLIENT\n",
                )
            };
            std::future::ready(Ok::<_, Infallible>(response))
        });
        let idle = Idle::new(stream, shared.settings.idle_timeout(), Busy::default());
        connections.spawn(builder.serve_connection(TokioIo::new(idle), service));
        while connections.try_join_next().is_some() {}
    }
    connections.abort_all();
}
