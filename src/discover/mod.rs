//! Backends from DNS (feature `dns`): a pool's backends named by host
//! names (A and AAAA) and services (SRV, weights and priorities mapped to
//! weights and backups), looked up again as their TTLs end, each change
//! applied to the running pool as a diff by identity, so counts, health
//! and requests in flight carry over. A failed or empty answer keeps the
//! name's last good one: a DNS outage never empties a pool.
//!
//! - `name.rs`: [`DnsName`], what is looked up, parsed as operators
//!   write it (`web.internal:8080`, `_http._tcp.web.internal`).
//! - `resolution.rs`: [`Endpoint`] and [`Resolution`], an answer.
//! - `resolver.rs`: [`Resolve`], what a watch asks, and
//!   [`HickoryResolver`], hickory-resolver's lookups.
//! - `watch.rs`: [`Discovery`], the names and their TTL bounds; [`Found`],
//!   one round's answers; [`DnsWatch`], the running watch.
//! - `pool.rs`: [`Discovery::apply_to`], a watch that keeps a [`Pool`](crate::Pool).
//!
//! Nothing here is shared between threads but a watch's counters
//! (Relaxed statistics) and its copy of each name's last good answer (a
//! mutex, written by the watch's task after each good answer, read by
//! `DnsWatch::last_good`): each watch is one task that owns its state.

mod name;
mod pool;
mod resolution;
mod resolver;
mod watch;

pub use name::{DnsName, ParseDnsNameError};
pub use resolution::{Endpoint, MAX_ENDPOINTS, Resolution};
pub use resolver::{DnsError, DnsErrorKind, HickoryResolver, Resolve, ResolveFuture};
pub use watch::{
    DEFAULT_LOOKUP_TIMEOUT, DEFAULT_MAX_TTL, DEFAULT_MIN_TTL, Discovery, DnsStats, DnsWatch, Found,
};

#[cfg(test)]
mod tests;
