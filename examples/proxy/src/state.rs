//! What a configuration builds: the router, the pools and the client
//! checks a request consults; rebuilt as a whole on reload and swapped in
//! one step, so a request sees one configuration from start to end.
//!
//! A reload updates each running pool in place ([`Pool::apply`]: counts,
//! health and in-flight guards kept), adds new pools and drops removed
//! ones; a running pool's algorithm, form and options cannot change (a
//! new pool would not count the old one's requests in flight against
//! `max_conns`): that needs a restart. The client checks are kept while
//! `[clients]` is unchanged (rates and bans kept), rebuilt otherwise.
//! Everything is validated before anything is applied, so a bad file
//! changes nothing.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use loadbalance::limit::{
    AdaptiveLimit, BanRule, ConcurrencyLimit, FlowControl, ForwardedHeader, IpList, Quota,
    TrustedProxies,
};
use loadbalance::route::Router;
use loadbalance::{Algorithm, Context, Pool, PoolConfig};
use parking_lot::Mutex;

use super::compress::Compression;
use super::config::{AdaptiveConfig, ClientsConfig, Config, ConfigError};
use super::links::{self, Link, Own};
use super::probing::Prober;
use super::tls::Certificates;

/// One configuration, running.
pub(crate) struct State {
    pub(crate) config: Config,
    /// Each rule's target: an index into `routes`.
    pub(crate) router: Router<usize>,
    /// What each route does.
    pub(crate) routes: Vec<Route>,
    /// The pools, with how they are reached.
    pub(crate) upstreams: Vec<Upstream>,
    pub(crate) clients: Arc<Clients>,
    /// `[tls]`'s certificates, loaded.
    pub(crate) certificates: Option<Arc<Certificates>>,
}

/// A route: its pool, and what the proxy adds in front of it.
#[derive(Clone)]
pub(crate) struct Route {
    /// An index into `upstreams`.
    pub(crate) upstream: usize,
    /// Its adaptive concurrency limit, named by the route.
    pub(crate) adaptive: Option<Adaptive>,
    /// Through the shared cache.
    pub(crate) cache: bool,
    /// Responses compressed.
    pub(crate) compression: Option<Arc<Compression>>,
}

/// A pool and how a request is keyed for it.
#[derive(Clone)]
pub(crate) struct Upstream {
    pub(crate) name: String,
    pub(crate) pool: Arc<Pool<String>>,
    /// `hash`: the request URI (nginx's `hash $request_uri`); the other
    /// hashes: the client's address.
    by_uri: bool,
    /// The pool's own client, for a protocol other than the workers'
    /// HTTP/1.1 (`links/`). Shared by the workers.
    pub(crate) own: Option<Own>,
    /// Its adaptive concurrency limit.
    pub(crate) adaptive: Option<Adaptive>,
    /// How its backends are probed (a `probing` pool).
    pub(crate) prober: Option<Arc<Prober>>,
}

/// An adaptive concurrency limit with the settings it was built with: a
/// reload with the same settings keeps it (and what it learnt).
#[derive(Clone)]
pub(crate) struct Adaptive {
    pub(crate) config: AdaptiveConfig,
    pub(crate) limit: AdaptiveLimit,
}

impl Adaptive {
    /// `previous` if it has the same settings, else a new limit.
    fn keep_or_build(
        config: &AdaptiveConfig,
        previous: Option<&Adaptive>,
        field: String,
    ) -> Result<Self, ConfigError> {
        if let Some(previous) = previous.filter(|p| &p.config == config) {
            return Ok(previous.clone());
        }
        let limit = config
            .options()
            .build()
            .map_err(|e| ConfigError::invalid(field, e))?;
        Ok(Self {
            config: config.clone(),
            limit,
        })
    }
}

impl Upstream {
    /// The client a request to this pool goes out on: its own, or the
    /// worker's HTTP/1.1 `default`.
    pub(crate) fn link<'a>(&'a self, default: &'a links::Http1) -> Link<'a> {
        match &self.own {
            Some(Own::H2c(client)) => Link::H2c(client),
            Some(Own::Tls(client)) => Link::Tls(client),
            None => Link::Http1(default),
        }
    }

    /// The context a request picks with.
    pub(crate) fn context<'a>(&self, client: IpAddr, uri: &'a [u8]) -> Context<'a> {
        if self.by_uri {
            Context::from_key(uri)
        } else {
            Context::from_addr(client)
        }
    }
}

/// Who is let in.
pub(crate) struct Clients {
    pub(crate) flow: FlowControl,
    pub(crate) trusted: Option<TrustedProxies>,
    /// The limits shared through `[clients] redis`.
    #[cfg(feature = "redis")]
    pub(crate) shared: Option<loadbalance::limit::SharedLimits>,
}

/// Backends the active checks hold down, by pool: kept across reloads
/// and written into each applied configuration, so a reload never brings
/// a failing backend back.
#[derive(Default)]
pub(crate) struct HeldDown {
    down: Mutex<HashMap<String, HashSet<String>>>,
}

impl HeldDown {
    pub(crate) fn set(&self, pool: &str, server: &str, down: bool) {
        let mut held = self.down.lock();
        let servers = held.entry(pool.to_owned()).or_default();
        if down {
            servers.insert(server.to_owned());
        } else {
            servers.remove(server);
        }
    }

    /// Forgets what `config` no longer checks: pools without a check, and
    /// servers no longer in their pool.
    pub(crate) fn prune(&self, config: &Config) {
        self.down.lock().retain(|pool, servers| {
            let Some(pool_config) = config.pools.get(pool) else {
                return false;
            };
            if !config.checks.contains_key(pool) {
                return false;
            }
            servers.retain(|server| pool_config.backends.iter().any(|b| &b.server == server));
            !servers.is_empty()
        });
    }

    pub(crate) fn is_down(&self, pool: &str, server: &str) -> bool {
        self.down
            .lock()
            .get(pool)
            .is_some_and(|s| s.contains(server))
    }

    /// `config` with the backends held down marked down, if the pool is
    /// still `checked` (without a check, nothing would ever mark them up).
    pub(crate) fn mark(
        &self,
        name: &str,
        config: &PoolConfig<String>,
        checked: bool,
    ) -> PoolConfig<String> {
        let mut config = config.clone();
        if !checked {
            return config;
        }
        for backend in &mut config.backends {
            if backend.state == "up" && self.is_down(name, &backend.server) {
                backend.state = "down".to_owned();
            }
        }
        config
    }
}

impl State {
    /// Builds `config`, reusing what `previous` has that is unchanged.
    /// Serialised with the active checks by the caller (`Proxy::admin`).
    pub(crate) async fn build(
        config: Config,
        previous: Option<&State>,
        held: &HeldDown,
    ) -> Result<Self, ConfigError> {
        // Validate everything before touching a running pool.
        for (name, pool) in &config.pools {
            pool.validate()
                .map_err(|e| ConfigError::invalid(format!("pools.{name}.{}", e.field), &e))?;
        }
        let certificates = match &config.tls {
            Some(tls) => Some(Arc::new(Certificates::load(tls)?)),
            None => None,
        };
        let names: Vec<&String> = config.pools.keys().collect();
        let mut router = Router::builder();
        let mut routes = Vec::with_capacity(config.routes.len());
        for (index, route) in config.routes.iter().enumerate() {
            let upstream = names
                .iter()
                .position(|name| **name == route.pool)
                .ok_or_else(|| ConfigError::invalid("routes", "unknown pool"))?;
            let compression = match route.compress.settings() {
                Some(settings) => Some(Arc::new(Compression::new(&settings).map_err(
                    |(field, why)| {
                        ConfigError::invalid(format!("routes[{index}].compress.{field}"), why)
                    },
                )?)),
                None => None,
            };
            let adaptive = match &route.adaptive {
                Some(adaptive) => {
                    // The same route (by name) before this reload.
                    let running = previous.and_then(|p| {
                        let at = p.config.routes.iter().position(|r| r.name == route.name)?;
                        p.routes.get(at)?.adaptive.as_ref()
                    });
                    Some(Adaptive::keep_or_build(
                        adaptive,
                        running,
                        format!("routes[{index}].adaptive"),
                    )?)
                }
                None => None,
            };
            routes.push(Route {
                upstream,
                adaptive,
                cache: route.cache,
                compression,
            });
            router = router.rule(&route.name, &route.host, &route.path, index);
        }
        let router = router
            .build()
            .map_err(|e| ConfigError::invalid("routes", e))?;
        let clients = match previous {
            Some(previous) if previous.config.clients == config.clients => {
                Arc::clone(&previous.clients)
            }
            _ => Arc::new(Clients::build(&config.clients).await?),
        };

        // First everything that can fail: new pools built, running pools
        // checked to keep their algorithm (a new pool would start with no
        // count of the old one's requests in flight, and overrun
        // `max_conns`), the pools' own clients made (their CA files read).
        // Then the running pools are updated.
        let own = |name: &String| match config.upstreams.get(name) {
            Some(upstream) => links::own(name, upstream, &config.server),
            None => Ok(None),
        };
        let mut plan = Vec::with_capacity(names.len());
        for (name, pool_config) in &config.pools {
            let checked = config.checks.contains_key(name);
            let marked = held.mark(name, pool_config, checked);
            let running = previous.and_then(|p| p.upstream(name).map(|u| (p, u)));
            match running {
                Some((previous, upstream)) => {
                    let old = previous.config.pools.get(name);
                    let same = old.is_some_and(|old| {
                        old.algorithm == pool_config.algorithm
                            && old.form == pool_config.form
                            && old.options == pool_config.options
                    });
                    if !same {
                        return Err(ConfigError::invalid(
                            format!("pools.{name}.algorithm"),
                            "a running pool keeps its algorithm, form and options (its \
                             requests in flight count against max_conns); restart the proxy \
                             to change them",
                        ));
                    }
                    plan.push((name, Arc::clone(&upstream.pool), Some(marked), own(name)?));
                }
                None => {
                    let pool = marked
                        .build()
                        .map_err(|e| ConfigError::invalid(format!("pools.{name}"), e))?;
                    plan.push((name, Arc::new(pool), None, own(name)?));
                }
            }
        }
        let mut upstreams = Vec::with_capacity(plan.len());
        for (name, pool, update, own) in plan {
            if let Some(marked) = update {
                pool.apply(&marked)
                    .map_err(|e| ConfigError::invalid(format!("pools.{name}"), e))?;
            }
            let by_uri = matches!(pool.algorithm(), Algorithm::Hash(_));
            let running = previous.and_then(|p| p.upstream(name));
            let adaptive = match config.adaptive.get(name) {
                Some(adaptive) => Some(Adaptive::keep_or_build(
                    adaptive,
                    running.and_then(|u| u.adaptive.as_ref()),
                    format!("adaptive.{name}"),
                )?),
                None => None,
            };
            let prober = config.probing.get(name).map(|probing| {
                match running.and_then(|u| u.prober.as_ref()) {
                    Some(prober) if prober.config == *probing => Arc::clone(prober),
                    _ => Arc::new(Prober::new(probing.clone())),
                }
            });
            upstreams.push(Upstream {
                name: name.clone(),
                pool,
                by_uri,
                own,
                adaptive,
                prober,
            });
        }
        Ok(Self {
            config,
            router,
            routes,
            upstreams,
            clients,
            certificates,
        })
    }

    pub(crate) fn upstream(&self, name: &str) -> Option<&Upstream> {
        self.upstreams.iter().find(|u| u.name == name)
    }

    /// This state with pool `name` configured as `pool` (its running pool
    /// already updated by the caller): everything else shared, nothing
    /// re-read or rebuilt. A change of DNS records goes this way.
    pub(crate) fn with_pool(&self, name: &str, pool: PoolConfig<String>) -> Self {
        let mut config = self.config.clone();
        config.pools.insert(name.to_owned(), pool);
        Self {
            config,
            router: self.router.clone(),
            routes: self.routes.clone(),
            upstreams: self.upstreams.clone(),
            clients: Arc::clone(&self.clients),
            certificates: self.certificates.clone(),
        }
    }
}

/// The rate, in-flight limits and bans of `[clients]` shared through the
/// Redis at `url`, each one that is set.
#[cfg(feature = "redis")]
async fn shared_limits(
    url: &str,
    quota: Option<Quota>,
    config: &ClientsConfig,
) -> Result<loadbalance::limit::SharedLimits, ConfigError> {
    use loadbalance::limit::redis::{RedisConcurrencyLimit, RedisLimiter};
    let invalid = |e| ConfigError::invalid("clients.redis", e);
    let mut limits = loadbalance::limit::SharedLimits::new();
    if let Some(quota) = quota {
        limits = limits.rate(
            RedisLimiter::builder(url, quota)
                .build()
                .await
                .map_err(invalid)?,
        );
    }
    if let Some(max) = config.in_flight_per_client {
        limits = limits.in_flight_per_client(
            RedisConcurrencyLimit::builder(url, max)
                .prefix("loadbalance:in_flight:client:")
                .build()
                .await
                .map_err(invalid)?,
        );
    }
    if let Some(max) = config.in_flight {
        limits = limits.in_flight(
            RedisConcurrencyLimit::builder(url, max)
                .prefix("loadbalance:in_flight:")
                .build()
                .await
                .map_err(invalid)?,
        );
    }
    if config.ban.is_some() {
        limits = limits.bans(
            loadbalance::limit::redis::SharedBans::builder(url)
                .build()
                .await
                .map_err(invalid)?,
        );
    }
    if limits.is_empty() {
        return Err(ConfigError::invalid(
            "clients.redis",
            "shares clients.rate, in_flight_per_client, in_flight and ban: none is set",
        ));
    }
    Ok(limits)
}

impl Clients {
    async fn build(config: &ClientsConfig) -> Result<Self, ConfigError> {
        let list = |field: &str, networks: &[String]| {
            IpList::parse(networks).map_err(|e| ConfigError::invalid(format!("clients.{field}"), e))
        };
        let mut flow = FlowControl::builder()
            .deny(list("deny", &config.deny)?)
            .allow(list("allow", &config.allow)?);
        let quota = match &config.rate {
            Some(rate) => {
                let mut quota = Quota::per_second(rate.per_second)
                    .map_err(|e| ConfigError::invalid("clients.rate.per_second", e))?;
                if let Some(burst) = rate.burst {
                    quota = quota
                        .burst(burst)
                        .map_err(|e| ConfigError::invalid("clients.rate.burst", e))?;
                }
                Some(quota)
            }
            None => None,
        };
        #[cfg(not(feature = "redis"))]
        if config.redis.is_some() {
            return Err(ConfigError::invalid(
                "clients.redis",
                "this build has no Redis support (build with --features redis)",
            ));
        }
        if let Some(quota) = quota {
            flow = flow.rate(quota);
        }
        if let Some(ban) = &config.ban {
            let rule = BanRule::new(
                ban.denials,
                Duration::from_millis(ban.window_ms),
                Duration::from_millis(ban.ban_ms),
            )
            .map_err(|e| ConfigError::invalid("clients.ban", e))?;
            flow = flow.ban(rule);
        }
        if let Some(max) = config.in_flight_per_client {
            let max = NonZeroU32::new(max).ok_or_else(|| {
                ConfigError::invalid("clients.in_flight_per_client", "at least 1")
            })?;
            flow = flow.in_flight_per_client(max);
        }
        if let Some(max) = config.in_flight {
            let max = NonZeroU32::new(max)
                .ok_or_else(|| ConfigError::invalid("clients.in_flight", "at least 1"))?;
            flow = flow.in_flight(ConcurrencyLimit::new(max));
        }
        #[cfg(feature = "redis")]
        let shared = match &config.redis {
            Some(url) => Some(shared_limits(url, quota, config).await?),
            None => None,
        };
        let flow = flow
            .build()
            .map_err(|e| ConfigError::invalid("clients", e))?;
        let trusted = if config.trusted_proxies.is_empty() {
            None
        } else {
            let header = match config.real_ip_header.as_deref() {
                None | Some("x-forwarded-for") => ForwardedHeader::XForwardedFor,
                Some("forwarded") => ForwardedHeader::Forwarded,
                Some("x-real-ip") => ForwardedHeader::XRealIp,
                Some(other) => {
                    return Err(ConfigError::invalid(
                        "clients.real_ip_header",
                        format!("{other:?}: x-forwarded-for, forwarded or x-real-ip"),
                    ));
                }
            };
            Some(TrustedProxies::new(
                list("trusted_proxies", &config.trusted_proxies)?,
                header,
            ))
        };
        Ok(Self {
            flow,
            trusted,
            #[cfg(feature = "redis")]
            shared,
        })
    }
}
