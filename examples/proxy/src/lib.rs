//! An HTTP/1.1 reverse proxy on the `loadbalance` crate: its router, pools
//! and flow control behind hyper 1 on tokio. The `loadbalance-proxy`
//! binary (`main.rs`) runs it from a file; the demo and the integration
//! tests start it in process ([`Proxy::start`]).
//!
//! A request goes through, in order:
//! 1. the connection's bounds: a head within `header_timeout_ms` and
//!    `max_header_bytes` (hyper), no idle gap longer than
//!    `idle_timeout_ms` (`idle.rs`), no conflicting framing (`framing.rs`);
//! 2. the client's checks: the client is the socket's peer unless it is
//!    a trusted proxy; deny and allow lists, rate, in-flight limits and
//!    bans ([`loadbalance::limit::FlowControl`]);
//! 3. the route (host and path, nginx's precedence) to a pool;
//! 4. a pick, waiting up to `pick_timeout_ms` for a free slot;
//! 5. the exchange, both bodies streaming, the pick held until the
//!    response body ends and its outcome reported to the pool
//!    (`forward.rs`).

pub(crate) mod access_log;
pub(crate) mod admin;
pub(crate) mod body;
pub(crate) mod cache;
pub(crate) mod compress;
pub(crate) mod config;
pub(crate) mod connections;
pub(crate) mod forward;
pub(crate) mod framing;
pub(crate) mod headers;
pub(crate) mod health;
pub(crate) mod idle;
pub(crate) mod links;
pub(crate) mod probing;
pub(crate) mod request_target;
pub(crate) mod resolve;
pub(crate) mod serve;
pub(crate) mod state;
pub(crate) mod tls;
pub(crate) mod tunnel;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use loadbalance::{Pool, RetryBudget};
use parking_lot::Mutex;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinSet;

use access_log::AccessLog;
pub use admin::Counters;
use cache::Cache;
pub use config::{Config, ConfigError};
use config::{Http2Config, ServerConfig};
use connections::Connections;
use idle::Busy;
use links::Http1;
use state::{HeldDown, State};
use std::sync::atomic::Ordering::Relaxed;
use tls::{Resolver, TlsRuntime};
use tunnel::Tunnels;

/// `accept`'s errors for a process (`EMFILE`) or system (`ENFILE`) out of
/// file descriptors (Linux's numbers).
pub(crate) const EMFILE: i32 = 24;

pub(crate) const ENFILE: i32 = 23;

/// What every request and background task of one proxy shares.
pub(crate) struct Shared {
    /// The running configuration, swapped whole on reload.
    pub(crate) state: ArcSwap<State>,
    /// The active checks' connections to backends.
    pub(crate) client: Http1,
    /// Retries add at most `retry_budget_percent` of requests.
    pub(crate) budget: RetryBudget,
    /// `[server]` as read at start.
    pub(crate) settings: ServerConfig,
    pub(crate) counters: Counters,
    /// Backends the active checks hold down.
    pub(crate) held: HeldDown,
    /// The client connections open, and their limits.
    pub(crate) connections: Arc<Connections>,
    /// The TLS listener's certificates and handshake, if `[tls]` was set
    /// at start.
    pub(crate) tls: Option<TlsRuntime>,
    /// `[http2]` as read at start.
    pub(crate) http2: Http2Config,
    /// The upgrade tunnels open.
    pub(crate) tunnels: Arc<Tunnels>,
    /// The access log, if `[log] access` is on (read at start).
    pub(crate) access_log: Option<Arc<AccessLog>>,
    /// The response cache of the routes with `cache = true` (`[cache]`,
    /// read at start; kept across reloads).
    pub(crate) cache: Arc<Cache>,
    /// Turns true when shutdown begins (tunnels then have the grace
    /// period).
    pub(crate) stop: watch::Receiver<bool>,
    /// Serialises reloads and active-check marks.
    pub(crate) admin: tokio::sync::Mutex<()>,
    /// The running active checks, brought in line on reload; `None` once
    /// shutdown began, so a reload racing it starts none.
    checks: Mutex<Option<health::Running>>,
    /// The active checks' streaks, kept across reloads.
    pub(crate) streaks: health::Streaks,
    /// The file reloads read, if any.
    path: Option<PathBuf>,
    /// The pools' DNS watches, and the configuration as written.
    pub(crate) resolving: resolve::Resolving,
}

/// A running proxy.
#[allow(missing_debug_implementations)] // holds tasks and channels
pub struct Proxy {
    shared: Arc<Shared>,
    listen: SocketAddr,
    tls_listen: Option<SocketAddr>,
    admin: SocketAddr,
    stop: watch::Sender<bool>,
    /// Each worker's count of connections cut at shutdown.
    done: Vec<oneshot::Receiver<usize>>,
}

/// Why the proxy could not start.
#[derive(Debug)]
pub enum StartError {
    /// The configuration cannot be used.
    Config(ConfigError),
    /// A listener could not bind its address.
    Bind(SocketAddr, std::io::Error),
    /// A worker thread or its event loop could not start.
    Worker(std::io::Error),
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Config(error) => error.fmt(f),
            Self::Bind(addr, error) => write!(f, "cannot listen on {addr}: {error}"),
            Self::Worker(error) => write!(f, "cannot start a worker: {error}"),
        }
    }
}

impl std::error::Error for StartError {}

impl Proxy {
    /// Starts the proxy from the file at `path`, which reloads read.
    pub async fn from_file(path: impl Into<PathBuf>) -> Result<Self, StartError> {
        let path = path.into();
        let config = Config::load(&path).map_err(StartError::Config)?;
        Self::start(config, Some(path)).await
    }

    /// Starts the proxy: binds both listeners (port 0 picks a free one),
    /// then serves until [`shutdown`](Self::shutdown).
    pub async fn start(config: Config, path: Option<PathBuf>) -> Result<Self, StartError> {
        let settings = config.server.clone();
        let http2 = config.http2.clone();
        let tls_config = config.tls.clone();
        let log_config = config.log.clone();
        let cache =
            Cache::new(&config.cache, settings.upstream_timeout()).map_err(|(field, why)| {
                StartError::Config(ConfigError::invalid(format!("cache.{field}"), why))
            })?;
        let held = HeldDown::default();
        let resolving = resolve::Resolving::default();
        let mut own = vec![settings.listen, settings.admin];
        own.extend(tls_config.as_ref().map(|tls| tls.listen));
        resolving.set_own(own);
        let (running, pending) = resolving
            .expand(&config)
            .await
            .map_err(StartError::Config)?;
        let state = State::build(running, None, &held)
            .await
            .map_err(StartError::Config)?;
        let listener = TcpListener::bind(settings.listen)
            .await
            .map_err(|e| StartError::Bind(settings.listen, e))?;
        let admin_listener = TcpListener::bind(settings.admin)
            .await
            .map_err(|e| StartError::Bind(settings.admin, e))?;
        let listen = listener
            .local_addr()
            .map_err(|e| StartError::Bind(settings.listen, e))?;
        let admin = admin_listener
            .local_addr()
            .map_err(|e| StartError::Bind(settings.admin, e))?;
        let (tls, tls_listener) = match (&tls_config, &state.certificates) {
            (Some(config), Some(certificates)) => {
                let listener = std::net::TcpListener::bind(config.listen)
                    .and_then(|l| l.set_nonblocking(true).map(|()| l))
                    .map_err(|e| StartError::Bind(config.listen, e))?;
                let resolver = Resolver::new(Arc::clone(certificates));
                let acceptor = tls::acceptor(Arc::clone(&resolver))
                    .map_err(|e| StartError::Config(ConfigError::invalid("tls", e)))?;
                let runtime = TlsRuntime {
                    resolver,
                    acceptor,
                    handshake_timeout: Duration::from_millis(config.handshake_timeout_ms),
                };
                (Some(runtime), Some(listener))
            }
            _ => (None, None),
        };
        let tls_listen = match &tls_listener {
            Some(listener) => Some(
                listener
                    .local_addr()
                    .map_err(|e| StartError::Bind(settings.listen, e))?,
            ),
            None => None,
        };

        let client = links::backends(&settings);
        let (stop, stopped) = watch::channel(false);
        let tunnels = Tunnels::new(settings.max_tunnels_per_client);
        let access_log = AccessLog::open(&log_config).map_err(StartError::Config)?;
        let max_connections = match settings.max_connections {
            0 => connections::default_max(),
            n => n,
        };
        let connections = Connections::new(max_connections, settings.max_connections_per_client);
        let shared = Arc::new(Shared {
            state: ArcSwap::from_pointee(state),
            client,
            budget: RetryBudget::new(settings.retry_budget_percent, 10, 100),
            settings,
            counters: Counters::default(),
            held,
            connections,
            tls,
            http2,
            tunnels,
            access_log,
            cache,
            stop: stopped.clone(),
            admin: tokio::sync::Mutex::new(()),
            checks: Mutex::new(Some(health::Running::new())),
            streaks: health::Streaks::default(),
            path,
            resolving,
        });
        let mut own = vec![listen, admin];
        own.extend(tls_listen);
        shared.resolving.set_own(own);
        shared.resolving.commit(&shared, config, pending);
        let listener = listener
            .into_std()
            .map_err(|e| StartError::Bind(listen, e))?;
        let workers = match shared.settings.workers {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        let mut done = Vec::with_capacity(workers);
        for index in 0..workers {
            let listener = listener
                .try_clone()
                .map_err(|e| StartError::Bind(listen, e))?;
            let tls_listener = match &tls_listener {
                Some(tls) => Some(tls.try_clone().map_err(|e| StartError::Bind(listen, e))?),
                None => None,
            };
            done.push(worker(
                index,
                Arc::clone(&shared),
                listener,
                tls_listener,
                stopped.clone(),
            )?);
        }
        // Started last: a worker that failed to start returned above, and
        // the dropped `stop` ends the workers already running.
        sync_checks(&shared);
        tokio::spawn(admin::serve(
            Arc::clone(&shared),
            admin_listener,
            stopped.clone(),
        ));
        if shared.path.is_some() && shared.settings.watch_ms > 0 {
            tokio::spawn(watch_file(Arc::clone(&shared), stopped));
        }
        Ok(Self {
            shared,
            listen,
            tls_listen,
            admin,
            stop,
            done,
        })
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.listen
    }

    /// Where TLS clients connect, if `[tls]` is set.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls_listen
    }

    /// Where `/metrics` is served.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin
    }

    /// The running pool named `name`.
    pub fn pool(&self, name: &str) -> Option<Arc<Pool<String>>> {
        self.shared
            .state
            .load()
            .upstream(name)
            .map(|u| Arc::clone(&u.pool))
    }

    /// The proxy's counters.
    pub fn counters(&self) -> &Counters {
        &self.shared.counters
    }

    /// The metrics text `/metrics` serves.
    pub fn metrics(&self) -> String {
        admin::metrics(&self.shared)
    }

    /// Re-reads the file and applies it (SIGHUP).
    pub async fn reload(&self) -> Result<(), ConfigError> {
        reload_file(&self.shared).await
    }

    /// Applies `config`: pools as diffs, counts and health kept. On error
    /// nothing changes.
    pub async fn apply(&self, config: Config) -> Result<(), ConfigError> {
        apply(&self.shared, config).await
    }

    /// Stops accepting, lets requests in flight finish (up to
    /// `shutdown_grace_ms`), and returns how many connections had to be cut.
    pub async fn shutdown(self) -> usize {
        let _ = self.stop.send(true);
        for (_, (_, check)) in self.shared.checks.lock().take().into_iter().flatten() {
            check.abort();
        }
        self.shared.resolving.stop();
        let mut cut = 0;
        for worker in self.done {
            cut += worker.await.unwrap_or(0);
        }
        cut
    }
}

/// Starts worker `index`: a thread with an event loop of its own that
/// accepts from the shared listener and serves its connections start to
/// end, as an nginx worker process does. Nothing a request does wakes
/// another thread (its backend connection is on the same loop), which
/// halves the proxy's cost per request against one shared multi-thread
/// runtime. Sends the count of connections cut at shutdown.
fn worker(
    index: usize,
    shared: Arc<Shared>,
    listener: std::net::TcpListener,
    tls_listener: Option<std::net::TcpListener>,
    stop: watch::Receiver<bool>,
) -> Result<oneshot::Receiver<usize>, StartError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(StartError::Worker)?;
    let (done, finished) = oneshot::channel();
    std::thread::Builder::new()
        .name(format!("proxy-worker-{index}"))
        .spawn(move || {
            let cut = runtime.block_on(async move {
                let tls_listener = tls_listener.map(TcpListener::from_std).transpose();
                match (TcpListener::from_std(listener), tls_listener) {
                    (Ok(listener), Ok(tls_listener)) => {
                        accept(shared, listener, tls_listener, stop).await
                    }
                    (Err(error), _) | (_, Err(error)) => {
                        tracing::error!("worker {index}: {error}");
                        0
                    }
                }
            });
            let _ = done.send(cut);
        })
        .map_err(StartError::Worker)?;
    Ok(finished)
}

/// Accepts connections (plaintext, and TLS if `tls_listener`) until
/// shutdown, then waits for them to finish their requests; returns how
/// many were cut at the grace period's end.
async fn accept(
    shared: Arc<Shared>,
    listener: TcpListener,
    tls_listener: Option<TcpListener>,
    mut stop: watch::Receiver<bool>,
) -> usize {
    let backends = links::backends(&shared.settings);
    let mut connections = JoinSet::new();
    loop {
        let (accepted, secure) = tokio::select! {
            accepted = listener.accept() => (accepted, false),
            accepted = accept_on(tls_listener.as_ref()) => (accepted, true),
            _ = stopped(&mut stop) => break,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of descriptors, most likely: make room by closing
                // the longest idle connection, and back off briefly.
                if matches!(error.raw_os_error(), Some(EMFILE | ENFILE)) {
                    shared.connections.relieve();
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let busy = Busy::default();
        let trusted = shared
            .state
            .load()
            .clients
            .trusted
            .as_ref()
            .is_some_and(|trusted| trusted.trusts(peer.ip()));
        let Ok(slot) = shared.connections.open(peer.ip(), trusted, busy.clone()) else {
            // Over a limit: closed at once, before a byte is read.
            drop(stream);
            continue;
        };
        let tls = secure
            .then(|| shared.tls.as_ref().map(|tls| tls.acceptor.clone()))
            .flatten();
        let accepted = serve::Accepted {
            shared: Arc::clone(&shared),
            backends: backends.clone(),
            peer,
            slot,
            busy,
            stop: stop.clone(),
        };
        connections.spawn(serve::connection(accepted, stream, tls));
        while connections.try_join_next().is_some() {}
        // Lets the new connection read its first head before the next
        // accept, which may shed the longest idle connection.
        tokio::task::yield_now().await;
    }
    drop(listener);
    drop(tls_listener);
    let grace = shared.settings.shutdown_grace();
    let drained = tokio::time::timeout(grace, async {
        while connections.join_next().await.is_some() {}
        // Tunnels end by themselves at the grace period's end at most.
        while shared.tunnels.open_now() > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    if drained.is_ok() {
        0
    } else {
        let cut = connections.len();
        connections.abort_all();
        cut
    }
}

/// The next connection on `listener`, or never if there is none.
async fn accept_on(
    listener: Option<&TcpListener>,
) -> std::io::Result<(tokio::net::TcpStream, SocketAddr)> {
    match listener {
        Some(listener) => listener.accept().await,
        None => std::future::pending().await,
    }
}

/// Resolves once shutdown begins (the guard `wait_for` returns is not
/// `Send`, so it is dropped here).
pub(crate) async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopped| *stopped).await;
}

/// Applies `config` to the running proxy, serialised with other reloads
/// and with the active checks' marks.
async fn apply(shared: &Arc<Shared>, config: Config) -> Result<(), ConfigError> {
    let _admin = shared.admin.lock().await;
    let previous = shared.state.load_full();
    if previous.config.server != config.server {
        tracing::warn!("reload: [server] changed; it takes effect after a restart");
    }
    match install(shared, config, &previous).await {
        Ok(()) => {
            shared.counters.reloads.fetch_add(1, Relaxed);
            Ok(())
        }
        Err(error) => {
            shared.counters.reloads_failed.fetch_add(1, Relaxed);
            Err(error)
        }
    }
}

/// Builds `written` with its pools' DNS answers over `previous` and swaps
/// it in. The caller holds `shared.admin`.
async fn install(
    shared: &Arc<Shared>,
    written: Config,
    previous: &State,
) -> Result<(), ConfigError> {
    let (running, pending) = shared.resolving.expand(&written).await?;
    let state = State::build(running, Some(previous), &shared.held).await?;
    shared.held.prune(&state.config);
    let listen = |state: &State| state.config.tls.as_ref().map(|tls| tls.listen);
    if listen(previous) != listen(&state) {
        tracing::warn!("reload: [tls] listen changed; it takes effect after a restart");
    }
    if let (Some(tls), Some(certificates)) = (&shared.tls, &state.certificates) {
        tls.resolver.set(Arc::clone(certificates));
    }
    shared.state.store(Arc::new(state));
    shared.resolving.commit(shared, written, pending);
    sync_checks(shared);
    Ok(())
}

async fn reload_file(shared: &Arc<Shared>) -> Result<(), ConfigError> {
    let Some(path) = &shared.path else {
        return Err(ConfigError::invalid(
            "reload",
            "the proxy was not started from a file",
        ));
    };
    let result = match Config::load(path) {
        Ok(config) => apply(shared, config).await,
        Err(error) => {
            shared.counters.reloads_failed.fetch_add(1, Relaxed);
            Err(error)
        }
    };
    match &result {
        Ok(()) => tracing::info!("reload: {} applied", path.display()),
        Err(error) => tracing::error!(
            "reload: {} rejected, old configuration kept: {error}",
            path.display()
        ),
    }
    result
}

/// Brings the active checks in line with the running configuration.
pub(crate) fn sync_checks(shared: &Arc<Shared>) {
    health::sync(shared, &mut shared.checks.lock());
}

/// Reloads when the file's modification time or length changes.
async fn watch_file(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let Some(path) = shared.path.clone() else {
        return;
    };
    let stamp = |path: &PathBuf| -> Option<(SystemTime, u64)> {
        let metadata = std::fs::metadata(path).ok()?;
        Some((metadata.modified().ok()?, metadata.len()))
    };
    let mut seen = stamp(&path);
    let period = Duration::from_millis(shared.settings.watch_ms);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(period) => {}
            _ = stopped(&mut stop) => return,
        }
        let now = stamp(&path);
        if now != seen {
            seen = now;
            let _ = reload_file(&shared).await;
        }
    }
}

/// Runs the proxy from the configuration file at `path` until SIGINT or
/// SIGTERM, reloading it on SIGHUP and when it changes: the
/// `loadbalance-proxy` binary. Says on stderr where it listens and why it
/// stops.
pub fn run(path: impl Into<PathBuf>) -> std::process::ExitCode {
    use std::process::ExitCode;
    let path = path.into();
    // Reloads, active checks, signals and /metrics; requests are served by
    // the proxy's worker threads.
    let Some(runtime) = current_thread() else {
        return ExitCode::FAILURE;
    };
    // The events' subscriber, at `[log] level` (a file that cannot be read
    // is reported by `from_file` below).
    let level = Config::load(&path).map_or(tracing::Level::INFO, |config| {
        config.log.level.parse().unwrap_or(tracing::Level::INFO)
    });
    let _ = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
    runtime.block_on(async move {
        let proxy = match Proxy::from_file(&path).await {
            Ok(proxy) => proxy,
            Err(error) => {
                eprintln!("{error}");
                return ExitCode::FAILURE;
            }
        };
        eprintln!("listening on {}", proxy.addr());
        eprintln!("metrics on http://{}/metrics", proxy.admin_addr());
        if let Err(error) = signals(&proxy).await {
            eprintln!("signals: {error}");
        }
        eprintln!("shutting down: finishing requests in flight");
        let cut = proxy.shutdown().await;
        if cut > 0 {
            eprintln!("{cut} connections were still busy at the end of the grace period");
        }
        ExitCode::SUCCESS
    })
}

/// Checks the configuration file at `path` without starting anything, as
/// `nginx -t` does: the file read, every setting checked, every pool
/// built, every certificate and key loaded, the access log's file
/// opened. Says on stderr what is wrong, or that all is well.
pub fn check(path: impl Into<PathBuf>) -> std::process::ExitCode {
    use std::process::ExitCode;
    let path = path.into();
    let Some(runtime) = current_thread() else {
        return ExitCode::FAILURE;
    };
    let checked = runtime.block_on(async {
        let config = Config::load(&path)?;
        let log = config.log.clone();
        let (running, _) = resolve::Resolving::default().expand(&config).await?;
        State::build(running, None, &HeldDown::default()).await?;
        AccessLog::open(&log)?;
        Ok::<(), ConfigError>(())
    });
    match checked {
        Ok(()) => {
            eprintln!("{}: the configuration is valid", path.display());
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("{}: {error}", path.display());
            ExitCode::FAILURE
        }
    }
}

/// A runtime on this thread, or `None` (said on stderr).
fn current_thread() -> Option<tokio::runtime::Runtime> {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => Some(runtime),
        Err(error) => {
            eprintln!("cannot start the runtime: {error}");
            None
        }
    }
}

/// Reloads on SIGHUP; returns on SIGINT or SIGTERM.
async fn signals(proxy: &Proxy) -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangup = signal(SignalKind::hangup())?;
    let mut terminate = signal(SignalKind::terminate())?;
    loop {
        tokio::select! {
            _ = hangup.recv() => { let _ = proxy.reload().await; }
            _ = terminate.recv() => return Ok(()),
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}
