//! Load balancing a Rust server embeds: one pool of upstreams, configured
//! at run time, that picks a backend per request, counts it until the
//! request ends, learns from its outcome, and changes while it serves.
//! Nothing here opens sockets: your server forwards to what it gets.
//!
//! # Start here: a pool
//!
//! A [`Pool`] runs any algorithm, named as operators name it in nginx
//! (`round_robin`, `least_conn`, `random two least_conn`, `ip_hash`,
//! `hash consistent`, ...: [`Algorithm`]), lock-free or behind a mutex
//! ([`Form`]). A pick is a [`Picked`] backend, counted as active until the
//! request reports its outcome (timed from the pick) or is dropped.
//!
//! ```
//! use loadbalance::{AdminState, Backend, Context, Pool};
//!
//! let pool = Pool::builder("least_conn".parse()?).build([
//!     Backend::new("10.0.0.1:8080").weight(3),
//!     Backend::new("10.0.0.2:8080").max_conns(100),
//! ])?;
//! let upstream = pool.pick(&Context::new())?;
//! // ... forward the request to *upstream ...
//! upstream.success(); // or .failure(): passive health ejects a failing backend
//!
//! // The set changes while other threads pick: counts and health carry over.
//! pool.add(Backend::new("10.0.0.3:8080"))?;
//! pool.set_state("10.0.0.2:8080", AdminState::Draining)?;
//! assert_eq!(pool.active_of("10.0.0.1:8080"), Some(0));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! What a server needs next, each on the pool:
//!
//! | need | API | feature |
//! |---|---|---|
//! | the pool from a TOML or JSON file, reloads applied as a diff by identity | `PoolConfig`, `Pool::apply` | `serde` |
//! | retries over distinct backends, an attempt limit and a retry budget | [`Pool::run`], [`RetryPolicy`], [`RetryBudget`] | |
//! | waiting for a connection slot when every backend is at `max_conns` | `Pool::pick_wait` | `wait` |
//! | per-backend figures for Prometheus | `PrometheusText` | `metrics` |
//! | lookups by backend | [`Pool::active_of`], [`Pool::stats_of`] | |
//! | a tower `Service`/`Layer` for hyper 1 clients and axum | `tower::BalanceLayer` | `tower` |
//! | backends from DNS names (A, AAAA, SRV), re-resolved as TTLs end | `discover::Discovery` | `dns` |
//!
//! # Flow control
//!
//! [`limit`] decides who gets in before any pick: allow and deny lists by
//! CIDR, bans after repeated refusals, a GCRA rate per client in memory
//! bounded by a cap you state, and requests in flight per client and per
//! server, all in one call ([`limit::FlowControl::check`]) that answers an
//! admission holding its permits or a rejection with its reason, status
//! (403, 429, 503) and retry-after. Each part also stands alone. With
//! feature `redis`, `limit::redis::RedisLimiter` shares a rate among every
//! instance of a service through Redis or a Redis Cluster, behind the local
//! checks (`FlowControl::check_shared`).
//!
//! # The layers below
//!
//! A pool is a [`Live`] balancer (a backend set that changes while threads
//! pick) of one of the static balancer types in [`lockfree`] (atomics
//! only, no lock and no allocation on the pick path) and [`locked`] (the
//! algorithm as a sequential state machine behind a mutex, the reference
//! the lock-free forms are tested against), each a [`Static`] balancer
//! over an algorithm's state in its form. Use them directly when the
//! algorithm is fixed at compile time: a static [`Balancer`] hands out
//! bare [`Guard`]s.
//!
//! # Your own algorithm
//!
//! An algorithm is its state, built over the backend set ([`Build`]), and
//! its choose step ([`Choose`]); [`LockFree`] or [`Locked`] runs it, and
//! [`Live`] and [`Pool::custom`] give it everything the crate's own
//! algorithms get. [`docs`](docs#architecture) draws the layers and says
//! where a new algorithm, limit or integration goes.
//!
//! ```
//! use loadbalance::{lockfree::WeightedRoundRobin, Balancer, Context};
//!
//! let lb = WeightedRoundRobin::new([("10.0.0.1:80", 5), ("10.0.0.2:80", 1), ("10.0.0.3:80", 1)])?;
//! let upstream = lb.pick(&Context::new())?; // counted as active until dropped
//! assert_eq!(*upstream, "10.0.0.1:80");
//! assert_eq!(lb.active(upstream.index()), Some(1));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Lock-free or locked
//!
//! From one run of `cargo bench --bench pick` on a 2-core VM
//! (`BENCHMARKS.md` has the tables):
//!
//! | algorithm | choose lock-free | choose locked |
//! |---|---|---|
//! | smooth weighted round-robin | always: 26 ns a pick at 4,096 backends, where the locked form's `O(n)` step takes 3.7 µs | never |
//! | round-robin | one thread or few picks | many threads picking all the time: on two threads the locked form took 62 ns a pick against 90 to 103 ns from 64 backends (it lets one core run a burst) |
//! | least-connections | many backends or many threads: 3.6 µs against 10.5 µs at 4,096 | few backends on many threads, or when two picks must never see the same counts: 80 against 190 ns at n = 4 on two threads |
//! | hashes, random, power-of-two-choices, peak EWMA | by default: the same cost on one thread, no lock to wait for | when the seeded sequence must not depend on thread interleaving, or two picks must never read the same counts |
//!
//! [`docs`] explains the exact sequences and what each form guarantees
//! under concurrency.
#![doc(test(attr(deny(warnings))))]
#![forbid(unsafe_code)]

pub mod algorithms;
mod backend;
#[cfg(feature = "dns")]
pub mod discover;
pub mod docs;
mod error;
pub mod limit;
mod live;
mod mix;
mod pick;
mod pool;
#[cfg(feature = "route")]
pub mod route;
mod sync;
mod table;
mod time;

pub use algorithms::ip_hash::HashOptions;
pub use algorithms::nginx::hash::NginxHashOptions;
pub use algorithms::nginx::ip_hash::NginxIpHashOptions;
pub use algorithms::probing::ProbingOptions;
pub use algorithms::random::RandomOptions;
pub use algorithms::random::least_conn::ChoiceOptions;
pub use algorithms::random::peak_ewma::PeakEwmaOptions;
pub use algorithms::{locked, lockfree};
pub use backend::{HealthPolicy, Outcome, WhenAllEjected};
pub use error::{BuildError, PickError, UpdateError};
pub use live::{AdminState, Assemble, Backend, Live, LiveBuilder};
pub use pick::{
    Balancer, Build, Candidates, Choose, Context, Form, LockFree, Locked, NewBackends,
    ParseFormError, Rotation, Set, Sharing, Static, Tried,
};
#[cfg(feature = "metrics")]
pub use pool::PrometheusText;
#[cfg(feature = "tower")]
pub use pool::tower;
pub use pool::{
    Algorithm, CustomAlgorithm, ParseAlgorithmError, Picked, Pool, PoolBackend, PoolBuilder,
    RetryBudget, RetryError, RetryPolicy, Verdict,
};
#[cfg(feature = "serde")]
pub use pool::{BackendConfig, ConfigError, HealthConfig, OptionsConfig, PoolConfig};
pub use table::{BackendState, BackendStats, Backends, Guard, MAX_BACKENDS, Probe};
pub use time::{Clock, ManualClock, SystemClock};

/// README.md's examples, tested; one needs feature `redis` (the test
/// command, `cargo test --workspace --all-features`, has it).
#[cfg(all(doctest, feature = "redis"))]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
