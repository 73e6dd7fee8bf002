//! Pools' backends from DNS (`[resolve.NAME]`, looked up as `[resolver]`
//! says): each pool's names watched by the library's
//! [`loadbalance::discover`].
//!
//! The running configuration is the file as written with each resolved
//! pool's backends added. A change of records is applied to its pool
//! alone, in the watch's own task ([`Pool::apply`](loadbalance::Pool::apply):
//! counts, health, held-down marks and requests in flight kept), and the
//! running state swapped for one with that pool's new configuration,
//! nothing else re-read or rebuilt. A change the pool refuses (weights
//! past its limit), or one that meets a reload being applied, is refused
//! to the watch, which offers it again after `min_ttl_ms`; a reload uses
//! the answers last applied, never a refused one. A failed or empty
//! answer keeps a name's last good one, also across a reload that starts
//! a pool's watch again, so a DNS outage leaves every pool as it was.
//!
//! A pool's first lookup happens when the configuration that names it is
//! applied: a pool left with no backend at all is a configuration error
//! (nginx refuses a host it cannot resolve). Addresses of the proxy's own
//! listeners are never backends (every request would loop back in).
//!
//! Reloads and changes are serialised by `Shared::admin` (a change only
//! tries it: a watch's task never waits on a reload); the lock here is
//! only held to read or swap the watches.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Weak};
use std::time::Duration;

use loadbalance::discover::{
    Discovery, DnsName, DnsStats, DnsWatch, Endpoint, Found, HickoryResolver, Resolve,
};
use loadbalance::{BackendConfig, PoolConfig};
use parking_lot::Mutex;

use super::Shared;
use super::config::{Config, ConfigError, ResolveConfig, ResolverConfig};

/// The watches of every resolved pool, and the file as written.
#[derive(Default)]
pub(crate) struct Resolving {
    inner: Mutex<Inner>,
    /// The proxy's own listeners: never backends.
    own: Mutex<Vec<SocketAddr>>,
}

#[derive(Default)]
struct Inner {
    /// The resolver of the `[resolver]` it was made for.
    resolver: Option<(ResolverConfig, Arc<dyn Resolve>)>,
    /// By pool name.
    watches: HashMap<String, Watched>,
    /// The configuration as last applied, before expansion.
    written: Option<Config>,
}

/// A pool's running watch.
struct Watched {
    names: Vec<DnsName>,
    resolver: ResolverConfig,
    /// The answers its pool runs with.
    applied: Vec<Endpoint>,
    watch: DnsWatch,
}

/// The watches an apply starts if it succeeds: a pool's names, the
/// discovery and its first answers.
#[derive(Default)]
pub(crate) struct Pending {
    started: Vec<(String, Vec<DnsName>, ResolverConfig, Discovery, Found)>,
}

impl Resolving {
    /// Sets the proxy's own listeners' addresses.
    pub(crate) fn set_own(&self, addresses: Vec<SocketAddr>) {
        *self.own.lock() = addresses;
    }

    /// `written` with each `[resolve.NAME]`'s backends added to its pool:
    /// the running watch's applied answers if its names and `[resolver]`
    /// are unchanged, else a first lookup of every name (together), a
    /// name that fails keeping what the pool's previous watch knew.
    pub(crate) async fn expand(&self, written: &Config) -> Result<(Config, Pending), ConfigError> {
        let mut running = written.clone();
        let mut pending = Pending::default();
        for (pool_name, resolve) in &written.resolve {
            let field = format!("resolve.{pool_name}");
            let names = parse_names(&field, resolve)?;
            let kept = {
                let inner = self.inner.lock();
                inner
                    .watches
                    .get(pool_name)
                    .filter(|w| w.names == names && w.resolver == written.resolver)
                    .map(|w| w.applied.clone())
            };
            let mut errors = Vec::new();
            let endpoints = match kept {
                Some(endpoints) => endpoints,
                None => {
                    let discovery = self.discovery(&written.resolver, &names)?;
                    let mut found = discovery.resolve().await;
                    for error in found.errors() {
                        tracing::warn!("{field}: {error}");
                        errors.push(error.to_string());
                    }
                    if let Some(previous) = self.inner.lock().watches.get(pool_name) {
                        found.keep_last_good(&previous.watch);
                    }
                    let endpoints = found.endpoints();
                    pending.started.push((
                        pool_name.clone(),
                        names,
                        written.resolver.clone(),
                        discovery,
                        found,
                    ));
                    endpoints
                }
            };
            let Some(pool) = running.pools.get_mut(pool_name) else {
                continue; // `Config::check` refuses a resolve without its pool
            };
            *pool = self.with_endpoints(pool, resolve, &endpoints);
            if pool.backends.is_empty() {
                return Err(ConfigError::invalid(
                    field,
                    format!("no backend: {}", errors.join("; ")),
                ));
            }
        }
        Ok((running, pending))
    }

    /// After `written` was applied: starts the pending watches, stops the
    /// watches of pools it no longer resolves (or resolves otherwise), and
    /// keeps `written` for the next change.
    pub(crate) fn commit(&self, shared: &Arc<Shared>, written: Config, pending: Pending) {
        let mut inner = self.inner.lock();
        inner.watches.retain(|pool, watched| {
            written.resolve.get(pool).is_some_and(|resolve| {
                watched.resolver == written.resolver
                    && parse_names("", resolve).is_ok_and(|names| names == watched.names)
            })
        });
        for (pool, names, resolver, discovery, found) in pending.started {
            let applied = found.endpoints();
            let shared = Arc::downgrade(shared);
            let name = pool.clone();
            let watch = discovery.watch(found, move |endpoints: &[Endpoint]| {
                offer(&shared, &name, endpoints)
            });
            inner.watches.insert(
                pool,
                Watched {
                    names,
                    resolver,
                    applied,
                    watch,
                },
            );
        }
        inner.written = Some(written);
    }

    /// Each resolved pool's watch figures, by pool name.
    pub(crate) fn stats(&self) -> Vec<(String, DnsStats)> {
        let inner = self.inner.lock();
        let mut all: Vec<(String, DnsStats)> = inner
            .watches
            .iter()
            .map(|(pool, watched)| (pool.clone(), watched.watch.stats()))
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    /// Stops every watch (shutdown).
    pub(crate) fn stop(&self) {
        self.inner.lock().watches.clear();
    }

    /// `pool` as written with `endpoints` added: each a backend of its
    /// weight and role, `resolve`'s `max_conns`, unless the pool lists it
    /// already or it is one of the proxy's own listeners.
    fn with_endpoints(
        &self,
        pool: &PoolConfig<String>,
        resolve: &ResolveConfig,
        endpoints: &[Endpoint],
    ) -> PoolConfig<String> {
        let own = self.own.lock();
        // The endpoints are each an address once; only the pool's own
        // backends can repeat one.
        let listed: HashSet<&str> = pool.backends.iter().map(|b| b.server.as_str()).collect();
        let mut found = Vec::with_capacity(endpoints.len());
        for endpoint in endpoints {
            if own.iter().any(|listener| reaches(*listener, endpoint.addr)) {
                tracing::warn!(
                    "resolve: {} is one of the proxy's own listeners, not a backend",
                    endpoint.addr
                );
                continue;
            }
            let server = endpoint.addr.to_string();
            if listed.contains(server.as_str()) {
                continue;
            }
            let mut backend = BackendConfig::new(server);
            backend.weight = endpoint.weight;
            backend.backup = endpoint.backup;
            backend.max_conns = resolve.max_conns;
            found.push(backend);
        }
        let mut pool = pool.clone();
        pool.backends.extend(found);
        pool
    }

    /// A discovery of `names` by the resolver of `settings` (made once
    /// per `[resolver]`).
    fn discovery(
        &self,
        settings: &ResolverConfig,
        names: &[DnsName],
    ) -> Result<Discovery, ConfigError> {
        let resolver = {
            let mut inner = self.inner.lock();
            match &inner.resolver {
                Some((made_for, resolver)) if made_for == settings => Arc::clone(resolver),
                _ => {
                    let resolver: Arc<dyn Resolve> = Arc::new(resolver(settings)?);
                    inner.resolver = Some((settings.clone(), Arc::clone(&resolver)));
                    resolver
                }
            }
        };
        // A service's lookup is its SRV query and then its targets'
        // (together): three query timeouts bound it.
        let mut discovery = Discovery::shared(resolver)
            .ttl_bounds(
                Duration::from_millis(settings.min_ttl_ms),
                Duration::from_millis(settings.max_ttl_ms),
            )
            .and_then(|d| {
                d.lookup_timeout(Duration::from_millis(settings.timeout_ms.saturating_mul(3)))
            })
            .map_err(|e| ConfigError::invalid("resolver", e))?;
        for name in names {
            discovery = discovery.name(name.clone());
        }
        Ok(discovery)
    }
}

/// Applies pool `name`'s new `endpoints` (a watch's callback): refused,
/// to be offered again, while a reload is being applied or when the pool
/// refuses them.
fn offer(shared: &Weak<Shared>, name: &str, endpoints: &[Endpoint]) -> Result<(), String> {
    let Some(shared) = shared.upgrade() else {
        return Ok(()); // the proxy is gone
    };
    let Ok(_admin) = shared.admin.try_lock() else {
        return Err("a reload is being applied".to_owned());
    };
    let result = apply_endpoints(&shared, name, endpoints);
    match &result {
        Ok(()) => {
            shared.counters.dns_updates.fetch_add(1, Relaxed);
            tracing::info!("resolve.{name}: new DNS answers applied");
        }
        Err(error) => {
            shared.counters.dns_updates_failed.fetch_add(1, Relaxed);
            tracing::error!("resolve.{name}: new DNS answers refused, the pool kept: {error}");
        }
    }
    result
}

fn apply_endpoints(shared: &Arc<Shared>, name: &str, endpoints: &[Endpoint]) -> Result<(), String> {
    let resolving = &shared.resolving;
    let Some(written) = resolving.inner.lock().written.clone() else {
        return Ok(());
    };
    let (Some(pool), Some(resolve)) = (written.pools.get(name), written.resolve.get(name)) else {
        return Ok(()); // no longer resolved: the next reload's watch takes over
    };
    let expanded = resolving.with_endpoints(pool, resolve, endpoints);
    let previous = shared.state.load_full();
    let Some(upstream) = previous.upstream(name) else {
        return Ok(());
    };
    let checked = previous.config.checks.contains_key(name);
    let marked = shared.held.mark(name, &expanded, checked);
    upstream.pool.apply(&marked).map_err(|e| e.to_string())?;
    let state = previous.with_pool(name, expanded);
    shared.held.prune(&state.config);
    shared.state.store(Arc::new(state));
    if let Some(watched) = resolving.inner.lock().watches.get_mut(name) {
        watched.applied = endpoints.to_vec();
    }
    super::sync_checks(shared);
    Ok(())
}

/// Whether a connection to `backend` reaches `listener`: the same
/// address, or its port on loopback when the listener takes every
/// address.
fn reaches(listener: SocketAddr, backend: SocketAddr) -> bool {
    listener == backend
        || (listener.ip().is_unspecified()
            && listener.port() == backend.port()
            && backend.ip().is_loopback())
}

fn resolver(settings: &ResolverConfig) -> Result<HickoryResolver, ConfigError> {
    let made = if settings.nameservers.is_empty() {
        HickoryResolver::system()
    } else {
        HickoryResolver::with_nameservers(
            &settings.nameservers,
            Duration::from_millis(settings.timeout_ms),
        )
    };
    made.map_err(|e| ConfigError::invalid("resolver", e))
}

fn parse_names(field: &str, resolve: &ResolveConfig) -> Result<Vec<DnsName>, ConfigError> {
    resolve
        .names
        .iter()
        .enumerate()
        .map(|(index, text)| {
            text.parse::<DnsName>()
                .map_err(|e| ConfigError::invalid(format!("{field}.names[{index}]"), e))
        })
        .collect()
}
