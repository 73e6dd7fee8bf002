//! Rate limits shared by every instance of a service, kept in Redis or a
//! Redis Cluster (feature `redis`); and concurrency limits
//! ([`RedisConcurrencyLimit`], `permits.rs`) and bans ([`SharedBans`],
//! `bans.rs`) shared the same way.
//!
//! - **Exact mode**: each check runs the GCRA as one Lua script (EVALSHA)
//!   on Redis's own clock, one round trip, the key written with its expiry
//!   in the same command, so no key ever lacks a TTL. Concurrent checks
//!   share one multiplexed connection and pipeline; on a single server,
//!   checks that queue together go as one script run over all their keys.
//! - **Local denials**: a key Redis denied is answered on this instance,
//!   without a round trip, until its retry-after passes (Lyft's ratelimit
//!   cache of keys over their limit).
//! - **Batched mode**: an instance reserves a lease of requests from Redis
//!   and spends it locally, so most checks make no round trip. A lease
//!   doubles while its key uses it up before it expires and halves when
//!   it does not, between 1 and the configured most. Requests reserved at
//!   one time and spent at another can exceed the quota over any window by
//!   at most the leases outstanding: instances × most per lease. Unspent
//!   leases expire unused (never more than the quota, then).
//! - **Faults**: every check has a deadline (50 ms by default); past it, or
//!   on any connection error, the limit's [`OnFailure`] policy answers
//!   (Envoy's `failure_mode_deny`), the connection reconnects in the
//!   background, and [`RedisStats`] counts it. No check waits past its
//!   deadline, whatever Redis does.
//! - **Redis Cluster**: each key is `prefix{key}`, a hash tag, so a key's
//!   state lives in one slot; keys spread over the masters.
//!
//! Times in Redis are whole microseconds (its `TIME`); a quota's interval
//! is rounded up to one.
//!
//! # Synchronization
//!
//! Local state (denials, leases) lives in keyed tables of bounded memory
//! with their set locks (see `table.rs`); counters are Relaxed statistics.

mod bans;
mod batch;
mod connection;
mod permits;
mod script;

use crate::sync::atomic::{AtomicU64, Ordering};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use self::batch::Batcher;
use self::connection::Connection;
use self::script::{GCRA, Reply};

pub use self::bans::{BansUnavailable, RESYNC, SharedBanStats, SharedBans, SharedBansBuilder};
pub use self::permits::{
    PermitDenied, PermitStats, RedisConcurrencyLimit, RedisConcurrencyLimitBuilder, SharedPermit,
};
use super::capacity::{Capacity, CapacityError};
use super::table::{Entries, KeyHasher, Table, WAYS, Write};
use super::time::Time;
use super::{Allowed, Denied, Quota};
use crate::time::Clock;
use crate::time::Nanos;

/// What a check answers when Redis cannot: past the deadline or on a
/// connection error.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum OnFailure {
    /// Let the request in (availability first): the default.
    #[default]
    Open,
    /// Refuse it ([`SharedDenied::Unavailable`]).
    Closed,
}

/// How checks reach Redis.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// One round trip a check (local denials apart): exact.
    Exact,
    /// Leases of up to `most` requests spent locally, each held at most
    /// `ttl`: fewer round trips, over-admission bounded by instances ×
    /// `most`.
    Batched {
        /// The largest lease.
        most: u32,
        /// How long a lease may be spent.
        ttl: Duration,
    },
}

/// Why a shared limit refused a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SharedDenied {
    /// Over the shared quota, until the retry-after.
    Limited(Denied),
    /// Redis did not answer in time or failed, and the limit fails closed.
    Unavailable,
}

impl fmt::Display for SharedDenied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Limited(denied) => denied.fmt(f),
            Self::Unavailable => {
                f.write_str("the shared rate limit is unavailable and fails closed")
            }
        }
    }
}

impl std::error::Error for SharedDenied {}

/// Why a shared limiter could not be built.
#[derive(Debug)]
#[non_exhaustive]
pub enum RedisLimitError {
    /// The URL does not name a Redis server.
    InvalidUrl(redis::RedisError),
    /// The cluster could not be reached at build time.
    Connect(redis::RedisError),
    /// A deadline of zero would fail every check.
    ZeroDeadline,
    /// A batched mode with leases of 0 requests or a zero lease time.
    ZeroLease,
    /// Leases above 2^31 - 1 requests (each lease is spent by this instance
    /// alone, past the shared quota: keep them small).
    LeaseTooLarge {
        /// The lease asked for.
        most: u32,
    },
    /// A prefix with `{` or `}` would make it the hash tag, putting every
    /// key in one cluster slot.
    BracesInPrefix,
    /// The local tables' capacity.
    Capacity(CapacityError),
    /// A shared concurrency limit of 0 would refuse every request.
    ZeroLimit,
    /// A permit TTL under 300 ms or under three deadlines: renewals could
    /// not land in time.
    TtlTooShort {
        /// The TTL asked for.
        ttl: Duration,
    },
}

impl fmt::Display for RedisLimitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidUrl(error) => write!(f, "not a Redis URL: {error}"),
            Self::Connect(error) => write!(f, "the Redis cluster could not be reached: {error}"),
            Self::ZeroDeadline => f.write_str("a shared rate limit needs a deadline above 0"),
            Self::ZeroLease => f.write_str("a batched shared limit needs leases of at least 1 request and a lease time above 0"),
            Self::LeaseTooLarge { most } => {
                write!(f, "a lease of {most} requests is past the most, 2^31 - 1")
            }
            Self::BracesInPrefix => {
                f.write_str("a key prefix cannot hold { or }: it would be every key's hash tag")
            }
            Self::Capacity(error) => error.fmt(f),
            Self::ZeroLimit => f.write_str("a shared concurrency limit needs a limit above 0"),
            Self::TtlTooShort { ttl } => write!(
                f,
                "a permit TTL of {ttl:?} is too short: at least 300 ms and three deadlines"
            ),
        }
    }
}

impl std::error::Error for RedisLimitError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::InvalidUrl(error) | Self::Connect(error) => Some(error),
            Self::Capacity(error) => Some(error),
            _ => None,
        }
    }
}

/// A shared limiter's figures.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RedisStats {
    /// Checks made.
    pub checks: u64,
    /// Checks that went to Redis.
    pub round_trips: u64,
    /// Script runs sent: fewer than round trips where concurrent checks
    /// went together.
    pub script_runs: u64,
    /// Checks answered by a local denial.
    pub local_denials: u64,
    /// Checks answered from a lease.
    pub lease_hits: u64,
    /// Round trips past the deadline.
    pub timeouts: u64,
    /// Round trips that failed (connection, server or script errors).
    pub errors: u64,
    /// Checks the failure policy answered.
    pub by_policy: u64,
}

#[derive(Default)]
struct Counters {
    checks: AtomicU64,
    round_trips: AtomicU64,
    local_denials: AtomicU64,
    lease_hits: AtomicU64,
    timeouts: AtomicU64,
    errors: AtomicU64,
    by_policy: AtomicU64,
}

/// Adds `by` to a statistic of the limiters, the permits or the bans.
fn bump(counter: &AtomicU64, by: u64) {
    // Relaxed: statistics, each read on its own.
    counter.fetch_add(by, Ordering::Relaxed);
}

/// A rate limit shared through Redis (`Send + Sync`; clones share the
/// connection and local state). Needs a tokio runtime.
///
/// # Examples
///
/// ```no_run
/// use loadbalance::limit::redis::{OnFailure, RedisLimiter};
/// use loadbalance::limit::Quota;
///
/// # #[allow(dead_code)]
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let limiter = RedisLimiter::builder("redis://127.0.0.1:6379/", Quota::per_second(100)?.burst(20)?)
///     .prefix("api:")
///     .on_failure(OnFailure::Closed)
///     .build()
///     .await?;
/// match limiter.check("client-42").await {
///     Ok(allowed) => println!("in, {} left", allowed.remaining),
///     Err(refused) => println!("429: {refused}"),
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct RedisLimiter {
    inner: Arc<SharedLimiter>,
}

struct SharedLimiter {
    connection: Connection,
    /// Batches concurrent checks on a single server (none on a cluster).
    batcher: Option<Batcher>,
    script: redis::Script,
    interval_us: u64,
    tolerance_us: u64,
    prefix: String,
    deadline: Duration,
    on_failure: OnFailure,
    mode: Mode,
    denials: Table<1>,
    leases: Table<2>,
    hasher: KeyHasher,
    time: Time,
    counters: Counters,
}

/// Builds a [`RedisLimiter`].
pub struct RedisLimiterBuilder {
    target: Target,
    quota: Quota,
    prefix: String,
    deadline: Duration,
    on_failure: OnFailure,
    mode: Mode,
    local: Capacity,
    time: Option<Time>,
}

enum Target {
    Single(String),
    Cluster(Vec<String>),
}

impl Target {
    /// The connection, each command bounded by `deadline`: a single
    /// server's made on first use, a cluster's now (to learn its slots).
    async fn connect(&self, deadline: Duration) -> Result<Connection, RedisLimitError> {
        match self {
            Self::Single(url) => {
                Connection::single(url, deadline).map_err(RedisLimitError::InvalidUrl)
            }
            Self::Cluster(urls) => {
                for url in urls {
                    redis::Client::open(url.as_str()).map_err(RedisLimitError::InvalidUrl)?;
                }
                Connection::cluster(urls, deadline)
                    .await
                    .map_err(RedisLimitError::Connect)
            }
        }
    }
}

/// Local denials: `[until]`, idle once passed.
struct Until;

impl Entries<1> for Until {
    fn idle(&self, value: &[u64; 1], now: u64) -> bool {
        value[0] <= now
    }

    fn rank(&self, value: &[u64; 1], _now: u64) -> Option<u64> {
        Some(value[0])
    }
}

/// Leases: `[expires, left | size << 32]`. An expired lease still says
/// how large the next should be, so none is idle; the earliest to expire
/// goes first.
struct Leases;

impl Entries<2> for Leases {
    fn idle(&self, _value: &[u64; 2], _now: u64) -> bool {
        false
    }

    fn rank(&self, value: &[u64; 2], _now: u64) -> Option<u64> {
        Some(value[0])
    }
}

impl RedisLimiter {
    /// A limiter of `quota` per key on the Redis server at `url`
    /// (`redis://host:port/db`).
    #[must_use]
    pub fn builder(url: impl Into<String>, quota: Quota) -> RedisLimiterBuilder {
        RedisLimiterBuilder::new(Target::Single(url.into()), quota)
    }

    /// A limiter of `quota` per key on the Redis Cluster reachable at any
    /// of `urls`.
    pub fn cluster_builder(
        urls: impl IntoIterator<Item = impl Into<String>>,
        quota: Quota,
    ) -> RedisLimiterBuilder {
        RedisLimiterBuilder::new(
            Target::Cluster(urls.into_iter().map(Into::into).collect()),
            quota,
        )
    }

    /// Lets one request of `key` in, or says why not. Answers within the
    /// deadline whatever Redis does. [`Allowed::remaining`] is what Redis
    /// has left for the key after a round trip, and what this instance's
    /// lease holds after a lease hit (batched mode), 0 when the policy
    /// answered. Cancellation-safe: a dropped check
    /// leaves nothing behind (a round trip in flight may still spend the
    /// request in Redis, as a request the server never finished would).
    ///
    /// # Errors
    ///
    /// [`SharedDenied::Limited`] with the retry-after, or
    /// [`SharedDenied::Unavailable`] when Redis failed and the limit fails
    /// closed.
    pub async fn check(&self, key: &str) -> Result<Allowed, SharedDenied> {
        let inner = &*self.inner;
        bump(&inner.counters.checks, 1);
        let hash = inner.hasher.hash(key);
        let now = inner.time.nanos();
        if let Some(left) = inner.denied_until(hash, now) {
            bump(&inner.counters.local_denials, 1);
            return Err(SharedDenied::Limited(Denied { retry_after: left }));
        }
        let (want, partial) = match inner.mode {
            Mode::Exact => (1, false),
            Mode::Batched { most, .. } => match inner.take_from_lease(hash, now, most) {
                Ok(left) => {
                    bump(&inner.counters.lease_hits, 1);
                    return Ok(Allowed { remaining: left });
                }
                Err(LeaseMiss::Fetch(size)) => (u64::from(size), true),
                Err(LeaseMiss::Single) => (1, false),
            },
        };
        bump(&inner.counters.round_trips, 1);
        let redis_key = format!("{}{{{key}}}", inner.prefix);
        let reply =
            tokio::time::timeout(inner.deadline, inner.round_trip(redis_key, want, partial)).await;
        match reply {
            Ok(Some(pair)) => match Reply::from_pair(pair) {
                Reply::Granted { granted, remaining } => {
                    if partial {
                        inner.store_lease(hash, inner.time.nanos(), Some(granted - 1), want);
                    }
                    Ok(Allowed {
                        remaining: u32::try_from(remaining).unwrap_or(u32::MAX),
                    })
                }
                Reply::Denied { retry_after_us } => {
                    if partial {
                        inner.store_lease(hash, inner.time.nanos(), None, want);
                    }
                    let retry_after = Duration::from_micros(retry_after_us);
                    inner.deny_until(
                        hash,
                        now,
                        now.saturating_add(retry_after_us.saturating_mul(1_000)),
                    );
                    Err(SharedDenied::Limited(Denied { retry_after }))
                }
            },
            Ok(None) => {
                bump(&inner.counters.errors, 1);
                inner.failed(hash, partial, want)
            }
            Err(_) => {
                bump(&inner.counters.timeouts, 1);
                inner.failed(hash, partial, want)
            }
        }
    }

    /// The limiter's figures.
    pub fn stats(&self) -> RedisStats {
        let c = &self.inner.counters;
        // Relaxed: statistics.
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        RedisStats {
            checks: read(&c.checks),
            round_trips: read(&c.round_trips),
            script_runs: match &self.inner.batcher {
                Some(batcher) => batcher.runs(),
                None => read(&c.round_trips),
            },
            local_denials: read(&c.local_denials),
            lease_hits: read(&c.lease_hits),
            timeouts: read(&c.timeouts),
            errors: read(&c.errors),
            by_policy: read(&c.by_policy),
        }
    }

    /// The Redis key that holds `key`'s state: the prefix, then the key as
    /// a hash tag.
    pub fn redis_key(&self, key: &str) -> String {
        format!("{}{{{key}}}", self.inner.prefix)
    }
}

impl SharedLimiter {
    /// The script's reply for one key: through the batcher on a single
    /// server, on its own on a cluster. `None` when the round trip failed.
    async fn round_trip(&self, key: String, want: u64, partial: bool) -> Option<(i64, i64)> {
        if let Some(batcher) = &self.batcher {
            return batcher.check(key, want, partial).await;
        }
        let args = [
            self.interval_us,
            self.tolerance_us,
            want,
            u64::from(partial),
        ];
        let flat = self
            .connection
            .run(&self.script, &[key.as_str()], &args)
            .await
            .ok()?;
        Some((*flat.first()?, *flat.get(1)?))
    }

    /// A round trip that failed: its lease fetch ends, and the policy
    /// answers.
    fn failed(&self, hash: u64, fetching: bool, size: u64) -> Result<Allowed, SharedDenied> {
        if fetching {
            self.store_lease(hash, self.time.nanos(), None, size);
        }
        self.by_policy()
    }

    fn by_policy(&self) -> Result<Allowed, SharedDenied> {
        bump(&self.counters.by_policy, 1);
        match self.on_failure {
            OnFailure::Open => Ok(Allowed { remaining: 0 }),
            OnFailure::Closed => Err(SharedDenied::Unavailable),
        }
    }

    fn denied_until(&self, hash: u64, now: u64) -> Option<Duration> {
        let read = |until: &mut [u64; 1], fresh: bool| {
            let left = (!fresh && until[0] > now).then(|| Nanos::duration(until[0] - now));
            (left, Write::Keep)
        };
        self.denials.update(hash, now, &Until, read).ok().flatten()
    }

    fn deny_until(&self, hash: u64, now: u64, until: u64) {
        let write = |value: &mut [u64; 1], _fresh: bool| {
            value[0] = value[0].max(until);
            ((), Write::Store)
        };
        // Never full: every entry ranks.
        let _ = self.denials.update(hash, now, &Until, write);
    }

    /// One request from the key's lease, with what is left; or what to ask
    /// Redis for instead. One check at a time fetches a key's lease (the
    /// others meanwhile check one request each), so concurrent misses do
    /// not each reserve a lease and lose all but one; a fetch that never
    /// ends (its check dropped) is taken over after the deadline.
    fn take_from_lease(&self, hash: u64, now: u64, most: u32) -> Result<u32, LeaseMiss> {
        let fetch_until = now.saturating_add(Nanos::saturating(self.deadline));
        let take = |lease: &mut [u64; 2], fresh: bool| {
            let fetch = |size: u32, lease: &mut [u64; 2]| {
                *lease = [fetch_until, FETCHING | (u64::from(size) << 32)];
                (Err(LeaseMiss::Fetch(size)), Write::Store)
            };
            if fresh {
                return fetch(1, lease);
            }
            let (expires, word) = (lease[0], lease[1]);
            let (left, fetching) = (word & u64::from(u32::MAX), word & FETCHING != 0);
            let size = u32::try_from((word & !FETCHING) >> 32)
                .unwrap_or(most)
                .clamp(1, most);
            if fetching {
                if expires > now {
                    return (Err(LeaseMiss::Single), Write::Keep);
                }
                return fetch(size, lease);
            }
            if expires > now && left > 0 {
                lease[1] = (left - 1) | (u64::from(size) << 32);
                return (
                    Ok(u32::try_from(left - 1).unwrap_or(u32::MAX)),
                    Write::Store,
                );
            }
            // Used up before it expired: twice as large; expired unspent:
            // half.
            let next = if expires > now {
                size.saturating_mul(2).min(most)
            } else {
                (size / 2).max(1)
            };
            fetch(next, lease)
        };
        self.leases
            .update(hash, now, &Leases, take)
            .unwrap_or(Err(LeaseMiss::Single))
    }

    /// Ends the key's fetch: a lease of `left` more requests (the fetching
    /// check took one) of a lease of `size`, spendable for the lease time;
    /// or, when the fetch failed (`left` is `None`), none, already expired,
    /// so the next miss asks for less.
    fn store_lease(&self, hash: u64, now: u64, left: Option<u64>, size: u64) {
        let Mode::Batched { ttl, .. } = self.mode else {
            return;
        };
        let expires = match left {
            Some(_) => now.saturating_add(Nanos::saturating(ttl)),
            None => now,
        };
        let left = left.unwrap_or(0).min(u64::from(u32::MAX));
        let store = |lease: &mut [u64; 2], _fresh: bool| {
            *lease = [expires, left | (size.min(u64::from(u32::MAX)) << 32)];
            ((), Write::Store)
        };
        let _ = self.leases.update(hash, now, &Leases, store);
    }
}

/// Bit 63 of a lease's second word: a check is fetching its next lease.
const FETCHING: u64 = 1 << 63;

/// The largest lease: its size is kept in bits 32 to 62.
const MOST_LEASE: u32 = (1 << 31) - 1;

/// What a check that found no request in its key's lease asks Redis for.
enum LeaseMiss {
    /// A lease of this size, for this instance (this check fetches it).
    Fetch(u32),
    /// One request (another check is fetching the lease).
    Single,
}

impl RedisLimiterBuilder {
    fn new(target: Target, quota: Quota) -> Self {
        Self {
            target,
            quota,
            prefix: "loadbalance:".to_string(),
            deadline: Duration::from_millis(50),
            on_failure: OnFailure::Open,
            mode: Mode::Exact,
            local: Capacity::Bytes(1 << 20),
            time: None,
        }
    }

    /// Prepended to every key (default `loadbalance:`), so that limits
    /// sharing a Redis keep apart.
    #[must_use]
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// How long a check may wait for Redis (default 50 ms).
    #[must_use]
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.deadline = deadline;
        self
    }

    /// What checks answer when Redis cannot (default: let in).
    #[must_use]
    pub fn on_failure(mut self, policy: OnFailure) -> Self {
        self.on_failure = policy;
        self
    }

    /// Exact (default) or batched.
    #[must_use]
    pub fn mode(mut self, mode: Mode) -> Self {
        self.mode = mode;
        self
    }

    /// The memory of each local table (denials, leases; default 1 MiB).
    #[must_use]
    pub fn local_capacity(mut self, capacity: Capacity) -> Self {
        self.local = capacity;
        self
    }

    /// Reads `clock` for local denials and leases instead of the CPU's
    /// time-stamp counter (Redis's own clock decides the limit).
    #[must_use]
    pub fn clock(mut self, clock: impl Clock + 'static) -> Self {
        self.time = Some(Time::custom(clock));
        self
    }

    /// The limiter. A single server is connected on the first check, so
    /// one that is down at start-up is answered by the failure policy; a
    /// cluster is connected here, to learn its slots.
    ///
    /// # Errors
    ///
    /// [`RedisLimitError`]: a malformed URL, an unreachable cluster, a zero
    /// deadline or lease, a local capacity that holds nothing.
    pub async fn build(self) -> Result<RedisLimiter, RedisLimitError> {
        if self.deadline.is_zero() {
            return Err(RedisLimitError::ZeroDeadline);
        }
        if let Mode::Batched { most, ttl } = self.mode {
            if most == 0 || ttl.is_zero() {
                return Err(RedisLimitError::ZeroLease);
            }
            if most > MOST_LEASE {
                return Err(RedisLimitError::LeaseTooLarge { most });
            }
        }
        if self.prefix.contains(['{', '}']) {
            return Err(RedisLimitError::BracesInPrefix);
        }
        let connection = self.target.connect(self.deadline).await?;
        let table = |set_bytes| {
            self.local
                .sets(set_bytes, WAYS, 0)
                .map_err(RedisLimitError::Capacity)
        };
        let denial_sets = table(Table::<1>::SET_BYTES)?;
        let lease_sets = match self.mode {
            Mode::Exact => 1,
            Mode::Batched { .. } => table(Table::<2>::SET_BYTES)?,
        };
        let interval_us = self.quota.interval_nanos().div_ceil(1_000).max(1);
        let tolerance_us = interval_us * u64::from(self.quota.burst_size());
        let script = redis::Script::new(GCRA);
        let batcher = match &connection {
            Connection::Single(_) => Some(Batcher::start(
                connection.clone(),
                script.clone(),
                [interval_us, tolerance_us],
                self.deadline,
            )),
            Connection::Cluster(_) => None,
        };
        Ok(RedisLimiter {
            inner: Arc::new(SharedLimiter {
                connection,
                batcher,
                script,
                interval_us,
                tolerance_us,
                prefix: self.prefix,
                deadline: self.deadline,
                on_failure: self.on_failure,
                mode: self.mode,
                denials: Table::with_sets(denial_sets)
                    .ok_or(RedisLimitError::Capacity(CapacityError::OutOfMemory))?,
                leases: Table::with_sets(lease_sets)
                    .ok_or(RedisLimitError::Capacity(CapacityError::OutOfMemory))?,
                hasher: KeyHasher::random(),
                time: self.time.unwrap_or_else(Time::counter),
                counters: Counters::default(),
            }),
        })
    }
}

impl fmt::Debug for RedisLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisLimiter")
            .field("prefix", &self.inner.prefix)
            .field("interval_us", &self.inner.interval_us)
            .field("tolerance_us", &self.inner.tolerance_us)
            .field("deadline", &self.inner.deadline)
            .field("on_failure", &self.inner.on_failure)
            .field("mode", &self.inner.mode)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for RedisLimiterBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisLimiterBuilder")
            .field("prefix", &self.prefix)
            .field("deadline", &self.deadline)
            .field("on_failure", &self.on_failure)
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}
