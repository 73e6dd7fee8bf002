//! Looking a [`DnsName`] up: the [`Resolve`] trait a watch asks, and its
//! implementation on hickory-resolver, the Rust DNS standard.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::time::{Duration, Instant};

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{
    ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts,
};
use hickory_resolver::net::NetError;
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::{RData, RecordType};

use super::{DnsName, Endpoint, Resolution};

/// Most SRV targets one service's answer has looked up; the records past
/// them are left out.
const MAX_TARGETS: usize = 64;

/// A future a [`Resolve`] returns.
pub type ResolveFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Resolution, DnsError>> + Send + 'a>>;

/// What looks names up for a watch: [`HickoryResolver`], or your own (a
/// service registry, a test's script).
pub trait Resolve: Send + Sync + 'static {
    /// `name`'s records now, not an answer cached past the time a watch
    /// asks again.
    fn resolve<'a>(&'a self, name: &'a DnsName) -> ResolveFuture<'a>;
}

/// A lookup that failed: the name and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsError {
    /// The name looked up (`web.internal:80`, `_http._tcp.web.internal`).
    pub name: String,
    /// Why it gave no backend.
    pub kind: DnsErrorKind,
}

/// Why a lookup gave no backend.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DnsErrorKind {
    /// The name exists with no record of the type asked (or does not
    /// exist: NXDOMAIN), or its SRV targets have no address.
    NoRecords,
    /// No answer within the resolver's timeout.
    Timeout,
    /// Any other failure: refused, a server failure, a network error.
    Lookup(String),
    /// The resolver could not be built (its configuration).
    Config(String),
}

impl DnsError {
    pub(crate) fn new(name: &DnsName, kind: DnsErrorKind) -> Self {
        Self {
            name: name.to_string(),
            kind,
        }
    }

    fn from_net(name: &DnsName, error: &NetError) -> Self {
        let kind = if error.is_no_records_found() {
            DnsErrorKind::NoRecords
        } else if matches!(error, NetError::Timeout) {
            DnsErrorKind::Timeout
        } else {
            DnsErrorKind::Lookup(error.to_string())
        };
        Self::new(name, kind)
    }
}

impl fmt::Display for DnsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            DnsErrorKind::NoRecords => write!(f, "{}: no records", self.name),
            DnsErrorKind::Timeout => write!(f, "{}: no answer in time", self.name),
            DnsErrorKind::Lookup(why) => write!(f, "{}: {why}", self.name),
            DnsErrorKind::Config(why) => write!(f, "resolver: {why}"),
        }
    }
}

impl std::error::Error for DnsError {}

/// Looks names up with hickory-resolver: A and AAAA together for a host,
/// SRV then each target's addresses (all at once) for a service, from the
/// answer's additional records when it has them. A lookup that half fails
/// (AAAA timed out, one target's server failed) fails whole, so a watch
/// keeps its last good answer rather than drop backends. Nothing is
/// cached: a watch that asks again before a record's TTL ends (its
/// maximum bound) gets the server's answer, a CNAME's target included.
///
/// # Examples
///
/// ```no_run
/// use loadbalance::discover::HickoryResolver;
/// use std::time::Duration;
///
/// // /etc/resolv.conf's name servers, and /etc/hosts:
/// let _system = HickoryResolver::system()?;
/// // Only this server, each query within 2 s:
/// let _local = HickoryResolver::with_nameservers(&["127.0.0.1:53".parse()?], Duration::from_secs(2))?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct HickoryResolver {
    inner: TokioResolver,
}

impl HickoryResolver {
    /// The system's configuration: `/etc/resolv.conf`'s name servers and
    /// options, and `/etc/hosts`.
    ///
    /// # Errors
    ///
    /// [`DnsErrorKind::Config`] when the system's configuration cannot be
    /// read.
    pub fn system() -> Result<Self, DnsError> {
        let mut builder = TokioResolver::builder_tokio().map_err(config_error)?;
        // No cache: a watch asks again when it means to (a CNAME's target
        // would otherwise be served from it for its own TTL).
        builder.options_mut().cache_size = 0;
        let inner = builder.build().map_err(config_error)?;
        Ok(Self { inner })
    }

    /// Only the name servers at `servers`, in order (UDP, and TCP for an
    /// answer too long for UDP), each query given `timeout` and tried
    /// once more; `/etc/hosts` is not read.
    ///
    /// # Errors
    ///
    /// [`DnsErrorKind::Config`] when `servers` is empty or `timeout` zero.
    pub fn with_nameservers(servers: &[SocketAddr], timeout: Duration) -> Result<Self, DnsError> {
        if servers.is_empty() || timeout.is_zero() {
            return Err(config_error(
                "at least one name server, and a timeout above 0",
            ));
        }
        let mut config = ResolverConfig::from_parts(None, Vec::new(), Vec::new());
        for server in servers {
            let mut udp = ConnectionConfig::udp();
            udp.port = server.port();
            let mut tcp = ConnectionConfig::tcp();
            tcp.port = server.port();
            config.add_name_server(NameServerConfig::new(server.ip(), true, vec![udp, tcp]));
        }
        let mut options = ResolverOpts::default();
        options.cache_size = 0;
        options.timeout = timeout;
        options.attempts = 1;
        options.use_hosts_file = ResolveHosts::Never;
        let inner = TokioResolver::builder_with_config(config, TokioRuntimeProvider::default())
            .with_options(options)
            .build()
            .map_err(config_error)?;
        Ok(Self { inner })
    }

    async fn host(&self, name: &DnsName, host: &str, port: u16) -> Result<Resolution, DnsError> {
        let found = self
            .addresses(host)
            .await
            .map_err(|e| DnsError::from_net(name, &e))?;
        let endpoints = found
            .addresses
            .into_iter()
            .map(|ip| Endpoint::new(SocketAddr::new(ip, port)));
        non_empty(name, Resolution::new(endpoints, found.ttl))
    }

    /// `host`'s A and AAAA records, asked together. A type the name does
    /// not have adds nothing; any other failure of either is the whole
    /// lookup's (half an answer would drop backends during an outage).
    async fn addresses(&self, host: &str) -> Result<Addresses, NetError> {
        let lookups = [RecordType::A, RecordType::AAAA]
            .into_iter()
            .map(|record_type| self.inner.lookup(host, record_type));
        let mut found = Addresses {
            addresses: Vec::new(),
            ttl: Duration::MAX,
        };
        for answer in super::watch::join_all(lookups).await {
            let lookup = match answer {
                Ok(lookup) => lookup,
                Err(error) if error.is_no_records_found() => continue,
                Err(error) => return Err(error),
            };
            found.ttl = found.ttl.min(until(lookup.valid_until()));
            for record in lookup.answers() {
                match &record.data {
                    RData::A(a) => found.addresses.push(IpAddr::V4(a.0)),
                    RData::AAAA(aaaa) => found.addresses.push(IpAddr::V6(aaaa.0)),
                    _ => {}
                }
            }
        }
        if found.addresses.is_empty() {
            found.ttl = Duration::ZERO;
        }
        Ok(found)
    }

    async fn service(&self, name: &DnsName, service: &str) -> Result<Resolution, DnsError> {
        let found = self
            .inner
            .srv_lookup(service)
            .await
            .map_err(|e| DnsError::from_net(name, &e))?;
        let mut ttl = until(found.valid_until());
        // Every record (bounded by the message's size), by priority, then
        // the first targets: the lowest priority is never cut (RFC 2782).
        let mut records: Vec<_> = found
            .answers()
            .iter()
            .filter_map(|record| match &record.data {
                // A target of "." says the service is not offered there.
                RData::SRV(srv) if !srv.target.is_root() => Some(srv.clone()),
                _ => None,
            })
            .collect();
        records.sort_by_key(|srv| srv.priority);
        records.truncate(MAX_TARGETS);
        let primary = records.first().map(|srv| srv.priority);
        // The additional section's addresses, by target.
        let mut glue: HashMap<String, Vec<IpAddr>> = HashMap::new();
        for record in found.additionals() {
            let ip = match &record.data {
                RData::A(a) => IpAddr::V4(a.0),
                RData::AAAA(aaaa) => IpAddr::V6(aaaa.0),
                _ => continue,
            };
            ttl = ttl.min(Duration::from_secs(u64::from(record.ttl)));
            glue.entry(record.name.to_lowercase().to_string())
                .or_default()
                .push(ip);
        }
        // The other targets' addresses, asked all at once.
        let mut missing: Vec<String> = records
            .iter()
            .map(|srv| srv.target.to_lowercase().to_string())
            .filter(|target| !glue.contains_key(target))
            .collect();
        missing.sort_unstable();
        missing.dedup();
        let asked =
            super::watch::join_all(missing.iter().map(|target| self.addresses(target))).await;
        for (target, answer) in missing.into_iter().zip(asked) {
            // A target with no address gives no backend; any other failure
            // is the whole lookup's, so the last good answer is kept.
            let found = answer.map_err(|e| DnsError::from_net(name, &e))?;
            if !found.addresses.is_empty() {
                ttl = ttl.min(found.ttl);
            }
            glue.insert(target, found.addresses);
        }
        let mut endpoints = Vec::new();
        for srv in &records {
            let target = srv.target.to_lowercase().to_string();
            for ip in glue.get(&target).into_iter().flatten() {
                endpoints.push(Endpoint {
                    addr: SocketAddr::new(*ip, srv.port),
                    weight: u32::from(srv.weight).max(1),
                    backup: Some(srv.priority) != primary,
                });
            }
        }
        non_empty(name, Resolution::new(endpoints, ttl))
    }
}

/// A host's addresses and the shortest TTL among them.
struct Addresses {
    addresses: Vec<IpAddr>,
    ttl: Duration,
}

impl Resolve for HickoryResolver {
    fn resolve<'a>(&'a self, name: &'a DnsName) -> ResolveFuture<'a> {
        Box::pin(async move {
            match name {
                DnsName::Host { name: host, port } => self.host(name, host, *port).await,
                DnsName::Srv { name: service } => self.service(name, service).await,
            }
        })
    }
}

impl fmt::Debug for HickoryResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HickoryResolver").finish_non_exhaustive()
    }
}

fn config_error(error: impl fmt::Display) -> DnsError {
    DnsError {
        name: String::new(),
        kind: DnsErrorKind::Config(error.to_string()),
    }
}

/// The time left until `deadline`.
fn until(deadline: Instant) -> Duration {
    deadline.saturating_duration_since(Instant::now())
}

fn non_empty(name: &DnsName, resolution: Resolution) -> Result<Resolution, DnsError> {
    if resolution.endpoints().is_empty() {
        Err(DnsError::new(name, DnsErrorKind::NoRecords))
    } else {
        Ok(resolution)
    }
}
