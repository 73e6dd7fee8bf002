//! The proxy's configuration file (TOML): what it listens on, what it
//! lets in, how requests are routed, and the pools they go to.
//!
//! Every section but `[[routes]]` and `[pools]` has defaults, so the
//! smallest file is one route and one pool. Unknown keys are errors, so a
//! misspelt setting is reported rather than silently ignored.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use loadbalance::PoolConfig;
use serde::Deserialize;

use super::cache::CacheConfig;
use super::compress::{Compression, CompressionConfig};

/// The whole file.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Listeners, timeouts and sizes.
    #[serde(default)]
    pub(crate) server: ServerConfig,
    /// Who is let in, and how fast.
    #[serde(default)]
    pub(crate) clients: ClientsConfig,
    /// Host and path rules, each naming a pool (nginx's precedence).
    pub(crate) routes: Vec<RouteConfig>,
    /// The pools by name: the crate's [`PoolConfig`].
    pub pools: BTreeMap<String, PoolConfig<String>>,
    /// Active health checks, by pool name.
    #[serde(default)]
    pub(crate) checks: BTreeMap<String, CheckConfig>,
    /// TLS termination: a listener of its own and the certificates (none:
    /// plaintext only). The listener is read at start; the certificates
    /// reload with the file.
    #[serde(default)]
    pub(crate) tls: Option<TlsConfig>,
    /// HTTP/2's bounds against abuse, read at start.
    #[serde(default)]
    pub(crate) http2: Http2Config,
    /// The access log and the proxy's own events, read at start.
    #[serde(default)]
    pub(crate) log: LogConfig,
    /// How the proxy speaks to each pool's backends, by pool name
    /// (HTTP/1.1 unless said).
    #[serde(default)]
    pub(crate) upstreams: BTreeMap<String, UpstreamConfig>,
    /// The response cache the routes with `cache = true` share, read at
    /// start.
    #[serde(default)]
    pub(crate) cache: CacheConfig,
    /// Backends from DNS names, by pool name, added to the pool's own.
    #[serde(default)]
    pub(crate) resolve: BTreeMap<String, ResolveConfig>,
    /// How `[resolve]`'s names are looked up.
    #[serde(default)]
    pub(crate) resolver: ResolverConfig,
    /// Adaptive concurrency limits, by pool name: requests past a pool's
    /// limit are shed with 503 before they queue.
    #[serde(default)]
    pub(crate) adaptive: BTreeMap<String, AdaptiveConfig>,
    /// Probes of a `probing` pool's backends, by pool name.
    #[serde(default)]
    pub(crate) probing: BTreeMap<String, ProbingConfig>,
}

/// An adaptive concurrency limit (`[adaptive.POOL]`, or a route's
/// `adaptive`): the crate's [`AdaptiveOptions`](loadbalance::limit::AdaptiveOptions),
/// Envoy's settings and defaults.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct AdaptiveConfig {
    /// The limit before any latency is known.
    pub(crate) initial: u32,
    pub(crate) min_limit: u32,
    pub(crate) max_limit: u32,
    /// How often the limit moves.
    pub(crate) interval_ms: u64,
    /// The percentile of a window's latencies it goes by.
    pub(crate) percentile: u8,
    /// How often the idle latency is measured again, over how many
    /// requests, at what concurrency.
    pub(crate) min_rtt_interval_ms: u64,
    pub(crate) min_rtt_requests: u32,
    pub(crate) min_concurrency: u32,
    /// How far above the idle latency a window may be before the limit
    /// falls, in percent.
    pub(crate) buffer_percent: u8,
    /// The spread of `min_rtt_interval_ms`, in percent.
    pub(crate) jitter_percent: u8,
}

impl Default for AdaptiveConfig {
    fn default() -> Self {
        Self {
            initial: 20,
            min_limit: 3,
            max_limit: 1000,
            interval_ms: 100,
            percentile: 50,
            min_rtt_interval_ms: 60_000,
            min_rtt_requests: 50,
            min_concurrency: 3,
            buffer_percent: 25,
            jitter_percent: 15,
        }
    }
}

impl AdaptiveConfig {
    pub(crate) fn options(&self) -> loadbalance::limit::AdaptiveOptions {
        loadbalance::limit::AdaptiveOptions::default()
            .initial(self.initial)
            .min_limit(self.min_limit)
            .max_limit(self.max_limit)
            .interval(Duration::from_millis(self.interval_ms))
            .percentile(self.percentile)
            .min_rtt_interval(Duration::from_millis(self.min_rtt_interval_ms))
            .min_rtt_requests(self.min_rtt_requests)
            .min_concurrency(self.min_concurrency)
            .buffer(self.buffer_percent)
            .jitter(self.jitter_percent)
    }
}

/// `[probing.POOL]`: how a `probing` pool's backends are asked for their
/// load (Prequal's probes): a GET to `path`, its round trip the latency,
/// and the backend's requests in flight from `in_flight_header` (this
/// proxy's own count of them when the backend does not say).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ProbingConfig {
    pub(crate) path: String,
    /// A probe not answered within this is dropped.
    #[serde(default = "default_probe_timeout")]
    pub(crate) timeout_ms: u64,
    /// The response header a backend states its requests in flight in.
    #[serde(default = "default_in_flight_header")]
    pub(crate) in_flight_header: String,
    /// Probes of the pool in flight at once at most (more are skipped).
    #[serde(default = "default_probes_in_flight")]
    pub(crate) max_in_flight: usize,
}

fn default_probe_timeout() -> u64 {
    200
}

fn default_in_flight_header() -> String {
    "x-in-flight".to_owned()
}

fn default_probes_in_flight() -> usize {
    64
}

/// `[resolve.NAME]`: a pool's backends from DNS, looked up again as their
/// records' TTLs end (nginx Plus's `server ... resolve`, HAProxy's
/// `server-template`). A failed or empty answer keeps the last good one.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ResolveConfig {
    /// `name:port` (its A and AAAA records at the port) or
    /// `_service._proto.name` (its SRV records: weights, and the lowest
    /// priority primaries, the others backups).
    pub(crate) names: Vec<String>,
    /// Each backend found gets this `max_conns` (0: no limit).
    #[serde(default)]
    pub(crate) max_conns: u32,
}

/// `[resolver]`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct ResolverConfig {
    /// The name servers asked, in order (none: the system's,
    /// `/etc/resolv.conf` and `/etc/hosts`).
    pub(crate) nameservers: Vec<SocketAddr>,
    /// Each query's timeout.
    pub(crate) timeout_ms: u64,
    /// A name is asked again no sooner than this after an answer, whatever
    /// its TTL (and this long after a failure, doubling up to 8 times).
    pub(crate) min_ttl_ms: u64,
    /// A name is asked again no later than this after an answer.
    pub(crate) max_ttl_ms: u64,
}

impl Default for ResolverConfig {
    fn default() -> Self {
        Self {
            nameservers: Vec::new(),
            timeout_ms: 2_000,
            min_ttl_ms: 1_000,
            max_ttl_ms: 300_000,
        }
    }
}

/// Most names one pool resolves.
pub(crate) const MAX_NAMES: usize = 64;

/// `[upstreams.NAME]`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct UpstreamConfig {
    /// `http1`, `h2c` (HTTP/2 by prior knowledge: gRPC backends) or
    /// `https` (TLS; HTTP/2 or HTTP/1.1 by ALPN).
    pub(crate) protocol: String,
    /// `https`: the PEM file of the authorities that sign the backends'
    /// certificates (the system's roots if unset).
    #[serde(default)]
    pub(crate) ca: Option<PathBuf>,
    /// `https`: the name sent (SNI) and verified (the backend's address if
    /// unset).
    #[serde(default)]
    pub(crate) server_name: Option<String>,
    /// `https`: accept any certificate. Only for a test bench.
    #[serde(default)]
    pub(crate) insecure_skip_verify: bool,
}

/// `[log]`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct LogConfig {
    /// `off`, `combined` (nginx's) or `json` (every field).
    pub(crate) access: String,
    /// Where access lines are appended (none: stderr).
    pub(crate) access_file: Option<PathBuf>,
    /// The proxy's own events (reloads, health marks, errors) on stderr
    /// at this level and above: `error`, `warn`, `info`, `debug`, `trace`.
    pub(crate) level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            access: "off".to_owned(),
            access_file: None,
            level: "info".to_owned(),
        }
    }
}

/// `[tls]`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TlsConfig {
    /// Where TLS clients connect (besides `[server] listen`, plaintext).
    pub(crate) listen: SocketAddr,
    /// A handshake must finish within this (then the connection closes,
    /// counted in /metrics).
    #[serde(default = "default_handshake_timeout")]
    pub(crate) handshake_timeout_ms: u64,
    /// Certificates, each for its `names` (`example.com`,
    /// `*.example.com`); the first also answers clients that name none of
    /// them or no name at all.
    pub(crate) certificates: Vec<CertificateConfig>,
}

fn default_handshake_timeout() -> u64 {
    10_000
}

/// One certificate chain and its key, PEM files.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CertificateConfig {
    pub(crate) names: Vec<String>,
    pub(crate) cert: PathBuf,
    pub(crate) key: PathBuf,
}

/// `[http2]`: each known abuse bounded (defaults as nginx's and hyper's).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct Http2Config {
    /// Streams open at once on one connection (nginx: 128).
    pub(crate) max_concurrent_streams: u32,
    /// A request's header list, decoded, in bytes: a flood of CONTINUATION
    /// frames ends here.
    pub(crate) max_header_list_size: u32,
    /// Streams the client reset before the proxy took them, pending at
    /// once: past it the connection ends (rapid reset, CVE-2023-44487).
    pub(crate) max_pending_accept_reset_streams: usize,
    /// Streams the proxy had to reset for a client's protocol errors, per
    /// connection: past it the connection ends.
    pub(crate) max_local_error_reset_streams: usize,
    /// Flow-control windows offered, per stream and per connection.
    pub(crate) initial_stream_window_size: u32,
    pub(crate) initial_connection_window_size: u32,
    /// Bytes buffered for sending per stream.
    pub(crate) max_send_buf_size: usize,
}

impl Default for Http2Config {
    fn default() -> Self {
        Self {
            max_concurrent_streams: 128,
            max_header_list_size: 16 * 1024,
            max_pending_accept_reset_streams: 20,
            max_local_error_reset_streams: 1024,
            initial_stream_window_size: 1024 * 1024,
            initial_connection_window_size: 1024 * 1024,
            max_send_buf_size: 400 * 1024,
        }
    }
}

/// `[server]`: read once at start; a reload that changes it is logged and
/// only takes effect after a restart.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct ServerConfig {
    /// Where clients connect.
    pub(crate) listen: SocketAddr,
    /// Where `/metrics` is served; loopback unless configured otherwise.
    pub(crate) admin: SocketAddr,
    /// Worker threads, each with its own event loop serving the
    /// connections it accepts (0: one per core).
    pub(crate) workers: usize,
    /// Client connections kept at most (0: half the process's descriptor
    /// limit). At the limit the longest idle connection is closed to make
    /// room; if every one is busy, the new one is.
    pub(crate) max_connections: usize,
    /// Client connections from one address (IPv6: one /64) at most, trusted
    /// proxies exempt (0: no limit); more are closed at once.
    pub(crate) max_connections_per_client: usize,
    /// Upgrade tunnels (WebSocket) one client may hold open at once (0: no
    /// limit); more are refused with 429.
    pub(crate) max_tunnels_per_client: usize,
    /// A request's head must arrive within this (slowloris), and an idle
    /// keep-alive connection is closed after it.
    pub(crate) header_timeout_ms: u64,
    /// A connection with no byte read or written for this long is closed
    /// (not counting the time its request is handled: the pick and
    /// upstream timeouts bound that).
    pub(crate) idle_timeout_ms: u64,
    /// A client silent this long while it sends its request body gets a
    /// 408 and its connection is closed (nginx's `client_body_timeout`);
    /// the backend is not blamed, and `upstream_timeout_ms` does not run
    /// while the proxy waits on the client.
    pub(crate) client_body_timeout_ms: u64,
    /// The largest request head, in bytes (at least 8192; larger heads get
    /// 431).
    pub(crate) max_header_bytes: usize,
    /// The largest request body, in bytes (413 beyond it).
    pub(crate) max_body_bytes: u64,
    /// A request body up to this many bytes is read whole before a backend
    /// is picked (nginx buffers bodies too), so a client sending slowly
    /// holds no backend, and an idempotent request with it can be retried;
    /// a longer one streams after its first part. At most this much memory
    /// a connection.
    pub(crate) request_buffer_bytes: usize,
    /// How long a request waits for a backend with a free slot (503 after).
    pub(crate) pick_timeout_ms: u64,
    /// How long connecting to a backend may take (then another backend).
    pub(crate) connect_timeout_ms: u64,
    /// How long a backend may take to answer with its response head (504),
    /// counted from when the proxy last waited on the client's body.
    pub(crate) upstream_timeout_ms: u64,
    /// Attempts per request, the first included: retries go to backends
    /// not tried yet, for requests without a body whose method is
    /// idempotent.
    pub(crate) attempts: u32,
    /// Retries may add this percentage of requests at most (a budget).
    pub(crate) retry_budget_percent: u32,
    /// A backend's own answers with these statuses are failures: retried
    /// elsewhere (when the request can be) and counted against the
    /// backend's passive health (as Envoy's outlier detection counts
    /// 5xx). `[]` counts only errors and timeouts (nginx's default).
    pub(crate) failure_statuses: Vec<u16>,
    /// How long shutdown waits for requests in flight.
    pub(crate) shutdown_grace_ms: u64,
    /// How often the file is checked for changes (0: on SIGHUP only).
    pub(crate) watch_ms: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            admin: SocketAddr::from(([127, 0, 0, 1], 9901)),
            workers: 0,
            max_connections: 0,
            max_connections_per_client: 0,
            max_tunnels_per_client: 32,
            header_timeout_ms: 10_000,
            idle_timeout_ms: 60_000,
            client_body_timeout_ms: 60_000,
            max_header_bytes: 16 * 1024,
            max_body_bytes: 10 * 1024 * 1024,
            request_buffer_bytes: 64 * 1024,
            pick_timeout_ms: 1_000,
            connect_timeout_ms: 1_000,
            upstream_timeout_ms: 30_000,
            attempts: 2,
            retry_budget_percent: 20,
            failure_statuses: vec![502, 503, 504],
            shutdown_grace_ms: 10_000,
            watch_ms: 1_000,
        }
    }
}

impl ServerConfig {
    pub(crate) fn header_timeout(&self) -> Duration {
        Duration::from_millis(self.header_timeout_ms)
    }

    pub(crate) fn idle_timeout(&self) -> Duration {
        Duration::from_millis(self.idle_timeout_ms)
    }

    pub(crate) fn client_body_timeout(&self) -> Duration {
        Duration::from_millis(self.client_body_timeout_ms)
    }

    pub(crate) fn pick_timeout(&self) -> Duration {
        Duration::from_millis(self.pick_timeout_ms)
    }

    pub(crate) fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }

    pub(crate) fn upstream_timeout(&self) -> Duration {
        Duration::from_millis(self.upstream_timeout_ms)
    }

    pub(crate) fn shutdown_grace(&self) -> Duration {
        Duration::from_millis(self.shutdown_grace_ms)
    }
}

/// `[clients]`: allow and deny lists, limits and bans per client, and
/// which proxies' forwarded headers are believed.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct ClientsConfig {
    /// Networks (`10.0.0.0/8`) whose forwarded header names the client
    /// (nginx's `set_real_ip_from`); from anyone else it is ignored.
    pub(crate) trusted_proxies: Vec<String>,
    /// `x-forwarded-for` (the default), `forwarded` or `x-real-ip`.
    pub(crate) real_ip_header: Option<String>,
    /// Networks refused with 403.
    pub(crate) deny: Vec<String>,
    /// Networks never limited or banned.
    pub(crate) allow: Vec<String>,
    /// Requests a second per client (IPv6 clients by /64).
    pub(crate) rate: Option<RateConfig>,
    /// Requests in flight per client at most (429 beyond: the client's own
    /// doing).
    pub(crate) in_flight_per_client: Option<u32>,
    /// Requests in flight in all at most (503 beyond: the server is busy).
    pub(crate) in_flight: Option<u32>,
    /// Clients refused this often are banned (403) for a while.
    pub(crate) ban: Option<BanConfig>,
    /// A Redis URL (`redis://127.0.0.1:6379`): the rate and the in-flight
    /// limits above are then shared by every proxy on that Redis (needs
    /// the crate's `redis` feature).
    pub(crate) redis: Option<String>,
}

/// A client's rate: `per_second` on average, `burst` at once.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RateConfig {
    pub(crate) per_second: u32,
    #[serde(default)]
    pub(crate) burst: Option<u32>,
}

/// `denials` refusals within `window_ms` ban a client for `ban_ms`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct BanConfig {
    pub(crate) denials: u32,
    pub(crate) window_ms: u64,
    pub(crate) ban_ms: u64,
}

/// One `[[routes]]` rule (see [`loadbalance::route`]).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RouteConfig {
    /// Named in errors and logs.
    pub(crate) name: String,
    /// `example.com`, `*.example.com` or `*` (the default).
    #[serde(default = "any_host")]
    pub(crate) host: String,
    /// `/prefix`, `= /exact`, `^~ /prefix`, `~ regex` or `~* regex`.
    pub(crate) path: String,
    /// A pool of `[pools]`.
    pub(crate) pool: String,
    /// Whether the route's GET and HEAD answers go through the shared
    /// cache (`[cache]`).
    #[serde(default)]
    pub(crate) cache: bool,
    /// Whether the route's responses are compressed: `true` for the
    /// defaults, or a table of [`CompressionConfig`]'s settings.
    #[serde(default)]
    pub(crate) compress: Compress,
    /// An adaptive concurrency limit on the route's requests (`{}` for
    /// the defaults): past it they are shed with 503.
    #[serde(default)]
    pub(crate) adaptive: Option<AdaptiveConfig>,
}

/// A route's `compress`.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub(crate) enum Compress {
    Switch(bool),
    With(CompressionConfig),
}

impl Default for Compress {
    fn default() -> Self {
        Self::Switch(false)
    }
}

impl Compress {
    /// The settings, when compression is on.
    pub(crate) fn settings(&self) -> Option<CompressionConfig> {
        match self {
            Self::Switch(false) => None,
            Self::Switch(true) => Some(CompressionConfig::default()),
            Self::With(config) => Some(config.clone()),
        }
    }
}

fn any_host() -> String {
    "*".to_owned()
}

/// `[checks.NAME]`: an HTTP GET to `path` on each backend of pool NAME
/// every `interval_ms`; `fall` failures in a row mark it down, `rise`
/// successes in a row mark it up again. A success is a 2xx or 3xx within
/// `timeout_ms`. With `grpc_service` set, the check is gRPC's health
/// checking protocol (`grpc.health.v1.Health/Check` for that service, ""
/// for the server), a success a SERVING answer.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CheckConfig {
    #[serde(default)]
    pub(crate) path: String,
    #[serde(default)]
    pub(crate) grpc_service: Option<String>,
    #[serde(default = "default_interval")]
    pub(crate) interval_ms: u64,
    #[serde(default = "default_check_timeout")]
    pub(crate) timeout_ms: u64,
    #[serde(default = "default_rise")]
    pub(crate) rise: u32,
    #[serde(default = "default_fall")]
    pub(crate) fall: u32,
}

fn default_interval() -> u64 {
    1_000
}

fn default_check_timeout() -> u64 {
    500
}

fn default_rise() -> u32 {
    2
}

fn default_fall() -> u32 {
    3
}

/// A file that cannot be used, and why.
#[derive(Debug)]
pub enum ConfigError {
    /// It could not be read.
    Read(std::io::Error),
    /// It is not valid TOML of this shape.
    Parse(String),
    /// A setting is wrong: where, and why.
    Invalid {
        /// The setting, as a path (`pools.web.backends`).
        field: String,
        /// What is wrong with it.
        reason: String,
    },
}

impl ConfigError {
    pub(crate) fn invalid(field: impl Into<String>, reason: impl fmt::Display) -> Self {
        Self::Invalid {
            field: field.into(),
            reason: reason.to_string(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Read(error) => write!(f, "cannot read the configuration: {error}"),
            Self::Parse(error) => write!(f, "bad configuration: {error}"),
            Self::Invalid { field, reason } => write!(f, "bad configuration: {field}: {reason}"),
        }
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Reads and parses `path` (validation happens when it is built into a
    /// running state, so that every rule is the library's own).
    pub(crate) fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(ConfigError::Read)?;
        Self::parse(&text)
    }

    /// Parses a configuration from TOML text.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let config: Self = toml::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))?;
        config.check()?;
        Ok(config)
    }

    /// The checks no library constructor makes.
    fn check(&self) -> Result<(), ConfigError> {
        let server = &self.server;
        if server.max_header_bytes < 8192 {
            return Err(ConfigError::invalid(
                "server.max_header_bytes",
                "at least 8192 (hyper's smallest read buffer)",
            ));
        }
        for (field, value) in [
            ("server.header_timeout_ms", server.header_timeout_ms),
            ("server.idle_timeout_ms", server.idle_timeout_ms),
            (
                "server.client_body_timeout_ms",
                server.client_body_timeout_ms,
            ),
            ("server.connect_timeout_ms", server.connect_timeout_ms),
            ("server.upstream_timeout_ms", server.upstream_timeout_ms),
        ] {
            if value == 0 {
                return Err(ConfigError::invalid(field, "must be more than 0"));
            }
        }
        if let Some(status) = server
            .failure_statuses
            .iter()
            .find(|s| !(100..=599).contains(*s))
        {
            return Err(ConfigError::invalid(
                "server.failure_statuses",
                format!("{status} is not an HTTP status"),
            ));
        }
        if let Some(tls) = &self.tls {
            if tls.handshake_timeout_ms == 0 {
                return Err(ConfigError::invalid(
                    "tls.handshake_timeout_ms",
                    "must be more than 0",
                ));
            }
        }
        for (name, upstream) in &self.upstreams {
            if !self.pools.contains_key(name) {
                return Err(ConfigError::invalid(
                    format!("upstreams.{name}"),
                    "no such pool",
                ));
            }
            if !["http1", "h2c", "https"].contains(&upstream.protocol.as_str()) {
                return Err(ConfigError::invalid(
                    format!("upstreams.{name}.protocol"),
                    format!("{:?}: http1, h2c or https", upstream.protocol),
                ));
            }
            let tls_settings = upstream.ca.is_some()
                || upstream.server_name.is_some()
                || upstream.insecure_skip_verify;
            if tls_settings && upstream.protocol != "https" {
                return Err(ConfigError::invalid(
                    format!("upstreams.{name}"),
                    "ca, server_name and insecure_skip_verify are for protocol = \"https\"",
                ));
            }
        }
        if !["off", "combined", "json"].contains(&self.log.access.as_str()) {
            return Err(ConfigError::invalid(
                "log.access",
                format!("{:?}: off, combined or json", self.log.access),
            ));
        }
        if !["error", "warn", "info", "debug", "trace"].contains(&self.log.level.as_str()) {
            return Err(ConfigError::invalid(
                "log.level",
                format!("{:?}: error, warn, info, debug or trace", self.log.level),
            ));
        }
        let http2 = &self.http2;
        for (field, value) in [
            (
                "http2.max_concurrent_streams",
                u64::from(http2.max_concurrent_streams),
            ),
            (
                "http2.max_header_list_size",
                u64::from(http2.max_header_list_size),
            ),
            ("http2.max_send_buf_size", http2.max_send_buf_size as u64),
        ] {
            if value == 0 {
                return Err(ConfigError::invalid(field, "must be more than 0"));
            }
        }
        // RFC 9113 §6.5.2: windows from 65,535 bytes to 2^31 − 1.
        for (field, value) in [
            (
                "http2.initial_stream_window_size",
                http2.initial_stream_window_size,
            ),
            (
                "http2.initial_connection_window_size",
                http2.initial_connection_window_size,
            ),
        ] {
            if !(65_535..=0x7fff_ffff).contains(&value) {
                return Err(ConfigError::invalid(field, "from 65535 to 2147483647"));
            }
        }
        if self.pools.is_empty() {
            return Err(ConfigError::invalid("pools", "at least one pool"));
        }
        for (index, route) in self.routes.iter().enumerate() {
            if !self.pools.contains_key(&route.pool) {
                return Err(ConfigError::invalid(
                    format!("routes[{index}].pool"),
                    format!("no pool named {:?}", route.pool),
                ));
            }
            if let Some(settings) = route.compress.settings() {
                Compression::new(&settings).map_err(|(field, why)| {
                    ConfigError::invalid(format!("routes[{index}].compress.{field}"), why)
                })?;
            }
            if let Some(adaptive) = &route.adaptive {
                adaptive
                    .options()
                    .build()
                    .map_err(|e| ConfigError::invalid(format!("routes[{index}].adaptive"), e))?;
            }
        }
        for (name, adaptive) in &self.adaptive {
            if !self.pools.contains_key(name) {
                return Err(ConfigError::invalid(
                    format!("adaptive.{name}"),
                    "no such pool",
                ));
            }
            adaptive
                .options()
                .build()
                .map_err(|e| ConfigError::invalid(format!("adaptive.{name}"), e))?;
        }
        for (name, probing) in &self.probing {
            let probes = self
                .pools
                .get(name)
                .map(|pool| matches!(pool.algorithm.as_str(), "probing" | "prequal"));
            match probes {
                None => {
                    return Err(ConfigError::invalid(
                        format!("probing.{name}"),
                        "no such pool",
                    ));
                }
                Some(false) => {
                    return Err(ConfigError::invalid(
                        format!("probing.{name}"),
                        "the pool's algorithm is not probing",
                    ));
                }
                Some(true) => {}
            }
            if !probing.path.starts_with('/') || !super::links::sendable(&probing.path) {
                return Err(ConfigError::invalid(
                    format!("probing.{name}.path"),
                    "an origin-form path (`/probe`)",
                ));
            }
            if !(1..=60_000).contains(&probing.timeout_ms)
                || !(1..=10_000).contains(&probing.max_in_flight)
            {
                return Err(ConfigError::invalid(
                    format!("probing.{name}"),
                    "timeout_ms from 1 to 60000 and max_in_flight from 1 to 10000",
                ));
            }
            hyper::header::HeaderName::from_bytes(probing.in_flight_header.as_bytes())
                .map_err(|e| ConfigError::invalid(format!("probing.{name}.in_flight_header"), e))?;
        }
        self.cache
            .check()
            .map_err(|(field, why)| ConfigError::invalid(format!("cache.{field}"), why))?;
        for (name, resolve) in &self.resolve {
            if !self.pools.contains_key(name) {
                return Err(ConfigError::invalid(
                    format!("resolve.{name}"),
                    "no such pool",
                ));
            }
            if resolve.names.is_empty() || resolve.names.len() > MAX_NAMES {
                return Err(ConfigError::invalid(
                    format!("resolve.{name}.names"),
                    format!("from 1 to {MAX_NAMES} names"),
                ));
            }
            for (index, text) in resolve.names.iter().enumerate() {
                text.parse::<loadbalance::discover::DnsName>()
                    .map_err(|e| {
                        ConfigError::invalid(format!("resolve.{name}.names[{index}]"), e)
                    })?;
            }
        }
        let resolver = &self.resolver;
        if resolver.timeout_ms == 0 {
            return Err(ConfigError::invalid(
                "resolver.timeout_ms",
                "must be more than 0",
            ));
        }
        if resolver.min_ttl_ms == 0 || resolver.min_ttl_ms > resolver.max_ttl_ms {
            return Err(ConfigError::invalid(
                "resolver.min_ttl_ms",
                "more than 0, and at most max_ttl_ms",
            ));
        }
        for (name, check) in &self.checks {
            let field = |key: &str| format!("checks.{name}.{key}");
            if !self.pools.contains_key(name) {
                return Err(ConfigError::invalid(
                    format!("checks.{name}"),
                    "no such pool",
                ));
            }
            if check.grpc_service.is_none() && !check.path.starts_with('/') {
                return Err(ConfigError::invalid(field("path"), "must start with /"));
            }
            let h2 = self
                .upstreams
                .get(name)
                .is_some_and(|u| u.protocol == "h2c" || u.protocol == "https");
            if check.grpc_service.is_some() && !h2 {
                return Err(ConfigError::invalid(
                    field("grpc_service"),
                    format!("gRPC checks need upstreams.{name}.protocol h2c or https"),
                ));
            }
            if check.interval_ms == 0 || check.timeout_ms == 0 {
                return Err(ConfigError::invalid(
                    field("interval_ms"),
                    "intervals and timeouts must be more than 0",
                ));
            }
            if check.rise == 0 || check.fall == 0 {
                return Err(ConfigError::invalid(
                    field("rise"),
                    "rise and fall must be at least 1",
                ));
            }
        }
        Ok(())
    }
}
