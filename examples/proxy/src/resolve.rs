//! Pools' backends from DNS (`[resolve.NAME]`, looked up as `[resolver]`
//! says): each pool's names watched by the library's
//! [`loadbalance::discover`], and each change applied the way a reload is
//! (`State::build` then [`Pool::apply`](loadbalance::Pool::apply): counts,
//! health, held-down marks and requests in flight kept).
//!
//! The running configuration is the file as written with each resolved
//! pool's backends added; the file as written is kept here, so a change
//! of records re-applies it with the new answers. A failed or empty
//! answer keeps a name's last good one, so a DNS outage leaves every pool
//! as it was. A pool's first lookup happens when the configuration that
//! names it is applied: a pool left with no backend at all is a
//! configuration error (nginx refuses a host it cannot resolve).
//!
//! Reloads and changes are serialised by the caller (`Shared::admin`);
//! the lock here is only held to read or swap the watches.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use loadbalance::BackendConfig;
use loadbalance::discover::{
    Discovery, DnsName, DnsStats, DnsWatch, Endpoint, Found, HickoryResolver, Resolve,
};
use parking_lot::Mutex;
use tokio::sync::Notify;

use super::config::{Config, ConfigError, ResolveConfig, ResolverConfig};

/// The watches of every resolved pool, and the file as written.
#[derive(Default)]
pub(crate) struct Resolving {
    inner: Mutex<Inner>,
    /// Woken by a watch whose answers changed; the proxy's re-apply task
    /// waits on it.
    pub(crate) changed: Arc<Notify>,
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
    /// Its last answers, as handed to the callback.
    latest: Arc<Mutex<Vec<Endpoint>>>,
    watch: DnsWatch,
}

/// The watches an apply starts if it succeeds: a pool's names, the
/// discovery and its first answers.
#[derive(Default)]
pub(crate) struct Pending {
    started: Vec<(String, Vec<DnsName>, ResolverConfig, Discovery, Found)>,
}

impl Resolving {
    /// `written` with each `[resolve.NAME]`'s backends added to its pool:
    /// the running watch's answers if its names and `[resolver]` are
    /// unchanged, else a first lookup of every name (together).
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
                    .map(|w| w.latest.lock().clone())
            };
            let mut errors = Vec::new();
            let endpoints = match kept {
                Some(endpoints) => endpoints,
                None => {
                    let discovery = self.discovery(&written.resolver, &names)?;
                    let found = discovery.resolve().await;
                    for error in found.errors() {
                        tracing::warn!("{field}: {error}");
                        errors.push(error.to_string());
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
            for endpoint in &endpoints {
                let server = endpoint.addr.to_string();
                if pool.backends.iter().any(|b| b.server == server) {
                    continue;
                }
                let mut backend = BackendConfig::new(server);
                backend.weight = endpoint.weight;
                backend.backup = endpoint.backup;
                backend.max_conns = resolve.max_conns;
                pool.backends.push(backend);
            }
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
    pub(crate) fn commit(&self, written: Config, pending: Pending) {
        let mut inner = self.inner.lock();
        inner.watches.retain(|pool, watched| {
            written.resolve.get(pool).is_some_and(|resolve| {
                watched.resolver == written.resolver
                    && parse_names("", resolve).is_ok_and(|names| names == watched.names)
            })
        });
        for (pool, names, resolver, discovery, found) in pending.started {
            let latest = Arc::new(Mutex::new(found.endpoints()));
            let changed = Arc::clone(&self.changed);
            let answers = Arc::clone(&latest);
            let watch = discovery.watch(found, move |endpoints: &[Endpoint]| {
                *answers.lock() = endpoints.to_vec();
                changed.notify_one();
                Ok::<(), Infallible>(())
            });
            inner.watches.insert(
                pool,
                Watched {
                    names,
                    resolver,
                    latest,
                    watch,
                },
            );
        }
        inner.written = Some(written);
    }

    /// The configuration as last applied, before expansion.
    pub(crate) fn written(&self) -> Option<Config> {
        self.inner.lock().written.clone()
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
