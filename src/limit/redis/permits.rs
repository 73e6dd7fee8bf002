//! A concurrency limit shared by every instance of a service: at most N
//! requests of a key in flight across all of them, kept in Redis or a
//! Redis Cluster (feature `redis`).
//!
//! - **Leases**: each permit is an entry of its key's sorted set, scored
//!   by when it expires on Redis's own clock. The holder's instance renews
//!   every permit it holds three times a TTL, so a crashed instance's
//!   permits come back within the TTL, and a permit Redis lost (a restart,
//!   a renewal that came late) is written back at the next renewal.
//! - **One round trip** to acquire: one script prunes expired permits,
//!   counts, and adds the new one with the key's expiry, atomically, so
//!   while Redis is up and renewals land within the TTL, never more than N
//!   are held across instances.
//! - **Release on drop**, in the background: the drop hands the permit to
//!   the limiter's task and returns; the task removes released permits and
//!   renews held ones, in order. An acquire that is cancelled or times out
//!   is released the same way (Redis may have granted it), so nothing
//!   leaks for a TTL.
//! - **Faults**: the same deadline and [`OnFailure`] policy as the shared
//!   rate limit. A permit let in by the policy holds nothing in Redis. A
//!   release that fails (a connection Redis closed) goes again with the
//!   next renewal.
//!
//! What the leases cannot do, by design:
//! - A place is free once its release reaches Redis, about a round trip
//!   after the drop: an acquire of the same key right after a drop may
//!   still find it taken.
//! - After Redis lost permits (a restart, a failover), the renewals write
//!   the ones still held back, past N if others were let in meanwhile: the
//!   count is then the truth, and nothing more is let in until it falls
//!   below N.
//! - A permit dropped as its runtime shuts down may never be released: it
//!   expires with its TTL.
//!
//! # Synchronization
//!
//! The permits held, by key, are one mutex (taken to list, unlist and
//! renew them: never across an await); counters are Relaxed statistics.
//! A permit leaves the list before its release is queued, and the
//! background task sends renewals and releases one after another, so a
//! renewal that wrote back a permit just released is followed by its
//! release.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::mpsc;

use super::connection::Connection;
use super::{OnFailure, RedisLimitError, Target, bump};
use crate::sync::atomic::{AtomicU64, Ordering};

/// The script's source.
const PERMITS: &str = include_str!("permits.lua");

/// The script's operations.
const ACQUIRE: u64 = 1;
const RENEW: u64 = 2;
const RELEASE: u64 = 3;

/// The shortest TTL a permit may have: renewals, three a TTL, must each
/// have their deadline and some to spare.
const MIN_TTL: Duration = Duration::from_millis(300);

/// Permit ids sent in one renewal or release call, at most.
const IDS_A_CALL: usize = 512;

/// Why a shared concurrency limit refused a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PermitDenied {
    /// The key has its limit of requests in flight across the instances.
    Full {
        /// Permits held when this one was asked for.
        held: u32,
    },
    /// Redis did not answer in time or failed, and the limit fails closed.
    Unavailable,
}

impl fmt::Display for PermitDenied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Full { held } => write!(f, "{held} requests already in flight"),
            Self::Unavailable => {
                f.write_str("the shared concurrency limit is unavailable and fails closed")
            }
        }
    }
}

impl std::error::Error for PermitDenied {}

/// A shared concurrency limit's figures.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PermitStats {
    /// Acquires asked for.
    pub acquires: u64,
    /// Permits granted by Redis.
    pub granted: u64,
    /// Acquires refused: the key was full.
    pub full: u64,
    /// Acquires past the deadline.
    pub timeouts: u64,
    /// Acquires that failed (connection, server or script errors).
    pub errors: u64,
    /// Acquires the failure policy answered.
    pub by_policy: u64,
    /// Renewal calls made (one a key held, per period).
    pub renewals: u64,
    /// Renewal calls that failed: their permits live on until their TTL.
    pub renewal_errors: u64,
    /// Permits a renewal found gone (a Redis restart, a renewal too late)
    /// and wrote back.
    pub restored: u64,
    /// Release calls that failed (sent again with the next renewal).
    pub release_errors: u64,
}

#[derive(Default)]
struct Counters {
    acquires: AtomicU64,
    granted: AtomicU64,
    full: AtomicU64,
    timeouts: AtomicU64,
    errors: AtomicU64,
    by_policy: AtomicU64,
    renewals: AtomicU64,
    renewal_errors: AtomicU64,
    restored: AtomicU64,
    release_errors: AtomicU64,
}

/// At most `limit` requests of a key in flight across every instance that
/// shares the Redis (`Send + Sync`; clones share the connection and the
/// permits held). Needs a tokio runtime.
///
/// # Examples
///
/// ```no_run
/// use loadbalance::limit::redis::{OnFailure, PermitDenied, RedisConcurrencyLimit};
/// use std::time::Duration;
///
/// # #[allow(dead_code)]
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let limit = RedisConcurrencyLimit::builder("redis://127.0.0.1:6379/", 100)
///     .prefix("inflight:")
///     .ttl(Duration::from_secs(10))
///     .on_failure(OnFailure::Open)
///     .build()
///     .await?;
/// match limit.acquire("tenant-7").await {
///     Ok(permit) => {
///         // ... the request, holding `permit` ...
///         drop(permit);
///     }
///     Err(PermitDenied::Full { held }) => println!("503: {held} in flight"),
///     Err(PermitDenied::Unavailable) => println!("503: the limit cannot be told"),
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct RedisConcurrencyLimit {
    inner: Arc<Shared>,
}

struct Shared {
    keeper: Arc<Keeper>,
    limit: u32,
    prefix: String,
    on_failure: OnFailure,
    /// To the background task: permits to release. The task ends when
    /// the last sender (this, or a permit's) is gone, after the last
    /// release.
    releases: mpsc::UnboundedSender<(String, u64)>,
}

/// What the background task needs, apart from the limit's handles (so it
/// outlives them until the last release is sent).
struct Keeper {
    connection: Connection,
    script: redis::Script,
    ttl_us: u64,
    deadline: Duration,
    /// Permits held now, by Redis key: what the renewals send.
    held: Mutex<HashMap<String, Vec<u64>>>,
    counters: Counters,
}

/// A request's place under a [`RedisConcurrencyLimit`]: released when
/// dropped (in the background; the drop never waits on Redis).
#[must_use = "the permit is released when dropped"]
pub struct SharedPermit {
    /// `None` for a permit the failure policy let in.
    held: Option<Release>,
}

impl SharedPermit {
    /// Whether Redis holds this permit (`false` when the failure policy
    /// let the request in).
    pub fn is_shared(&self) -> bool {
        self.held.is_some()
    }
}

impl fmt::Debug for SharedPermit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedPermit")
            .field("shared", &self.is_shared())
            .finish()
    }
}

/// Releases a permit id of a key when dropped: a held permit, or an
/// acquire whose answer never came (Redis may have granted it).
struct Release {
    shared: Arc<Shared>,
    key: String,
    id: u64,
    /// Whether it is in the held list (renewed).
    listed: bool,
    /// Whether Redis may hold it (not after a refusal).
    armed: bool,
}

impl Drop for Release {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        if self.listed {
            let mut held = self.shared.keeper.held.lock();
            if let Some(ids) = held.get_mut(&self.key) {
                ids.retain(|&id| id != self.id);
                if ids.is_empty() {
                    held.remove(&self.key);
                }
            }
        }
        // The task is gone only when every handle is: nothing to tell.
        let _ = self
            .shared
            .releases
            .send((std::mem::take(&mut self.key), self.id));
    }
}

/// Builds a [`RedisConcurrencyLimit`].
pub struct RedisConcurrencyLimitBuilder {
    target: Target,
    limit: u32,
    prefix: String,
    ttl: Duration,
    deadline: Duration,
    on_failure: OnFailure,
}

impl RedisConcurrencyLimit {
    /// At most `limit` requests of a key in flight, on the Redis server at
    /// `url` (`redis://host:port/db`).
    #[must_use]
    pub fn builder(url: impl Into<String>, limit: u32) -> RedisConcurrencyLimitBuilder {
        RedisConcurrencyLimitBuilder::new(Target::Single(url.into()), limit)
    }

    /// At most `limit` requests of a key in flight, on the Redis Cluster
    /// reachable at any of `urls`.
    pub fn cluster_builder(
        urls: impl IntoIterator<Item = impl Into<String>>,
        limit: u32,
    ) -> RedisConcurrencyLimitBuilder {
        RedisConcurrencyLimitBuilder::new(
            Target::Cluster(urls.into_iter().map(Into::into).collect()),
            limit,
        )
    }

    /// A place for one request of `key`, or why not. Answers within the
    /// deadline whatever Redis does. Cancellation-safe: an acquire
    /// dropped before its answer is released like a permit (Redis may
    /// have granted it).
    ///
    /// # Errors
    ///
    /// [`PermitDenied::Full`] when `key` has its limit in flight, or
    /// [`PermitDenied::Unavailable`] when Redis failed and the limit fails
    /// closed.
    pub async fn acquire(&self, key: &str) -> Result<SharedPermit, PermitDenied> {
        let shared = &self.inner;
        let keeper = &*shared.keeper;
        bump(&keeper.counters.acquires, 1);
        // Random: ids of every instance share the key's set.
        let id = rand::random::<u64>();
        let mut pending = Release {
            shared: Arc::clone(shared),
            key: self.redis_key(key),
            id,
            listed: false,
            armed: true,
        };
        let args = [ACQUIRE, u64::from(shared.limit), keeper.ttl_us, id];
        let keys = [pending.key.as_str()];
        let call = keeper.connection.run(&keeper.script, &keys, &args);
        match tokio::time::timeout(keeper.deadline, call).await {
            Ok(Ok(reply)) => match (reply.first(), reply.get(1)) {
                (Some(1), _) => {
                    bump(&keeper.counters.granted, 1);
                    keeper
                        .held
                        .lock()
                        .entry(pending.key.clone())
                        .or_default()
                        .push(id);
                    pending.listed = true;
                    Ok(SharedPermit {
                        held: Some(pending),
                    })
                }
                (Some(0), held) => {
                    bump(&keeper.counters.full, 1);
                    // Nothing was added: nothing to release.
                    pending.armed = false;
                    let held = held
                        .and_then(|h| u32::try_from(*h).ok())
                        .unwrap_or(u32::MAX);
                    Err(PermitDenied::Full { held })
                }
                _ => {
                    bump(&keeper.counters.errors, 1);
                    shared.by_policy()
                }
            },
            Ok(Err(_)) => {
                bump(&keeper.counters.errors, 1);
                shared.by_policy()
            }
            Err(_) => {
                bump(&keeper.counters.timeouts, 1);
                shared.by_policy()
            }
        }
    }

    /// Permits this instance holds now, for every key.
    pub fn held(&self) -> usize {
        self.inner.keeper.held.lock().values().map(Vec::len).sum()
    }

    /// The limit's figures.
    pub fn stats(&self) -> PermitStats {
        let c = &self.inner.keeper.counters;
        // Relaxed: statistics.
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        PermitStats {
            acquires: read(&c.acquires),
            granted: read(&c.granted),
            full: read(&c.full),
            timeouts: read(&c.timeouts),
            errors: read(&c.errors),
            by_policy: read(&c.by_policy),
            renewals: read(&c.renewals),
            renewal_errors: read(&c.renewal_errors),
            restored: read(&c.restored),
            release_errors: read(&c.release_errors),
        }
    }

    /// The Redis key that holds `key`'s permits: the prefix, then the key
    /// as a hash tag.
    pub fn redis_key(&self, key: &str) -> String {
        format!("{}{{{key}}}", self.inner.prefix)
    }
}

impl Shared {
    fn by_policy(&self) -> Result<SharedPermit, PermitDenied> {
        bump(&self.keeper.counters.by_policy, 1);
        match self.on_failure {
            OnFailure::Open => Ok(SharedPermit { held: None }),
            OnFailure::Closed => Err(PermitDenied::Unavailable),
        }
    }
}

impl Keeper {
    /// Runs the script's `op` on `key` for `ids`, a call per
    /// [`IDS_A_CALL`]; the sum of the first numbers replied, or `None` if
    /// any call failed.
    async fn each(&self, op: u64, key: &str, ids: &[u64]) -> Option<u64> {
        let mut sum = 0;
        let mut failed = false;
        // As many turns as there are slices of ids.
        for part in ids.chunks(IDS_A_CALL) {
            let mut args = Vec::with_capacity(part.len() + 2);
            args.push(op);
            if op == RENEW {
                args.push(self.ttl_us);
            }
            args.extend_from_slice(part);
            let keys = [key];
            let call = self.connection.run(&self.script, &keys, &args);
            match tokio::time::timeout(self.deadline, call).await {
                Ok(Ok(reply)) => {
                    sum += reply
                        .first()
                        .and_then(|n| u64::try_from(*n).ok())
                        .unwrap_or(0);
                }
                _ => failed = true,
            }
        }
        (!failed).then_some(sum)
    }
}

/// The limit's task: releases what is dropped, as it is dropped, and
/// renews what is held, three times a TTL; a renewal that is due goes
/// first, so a stream of releases never holds it off. Releases that failed
/// (a connection Redis closed) go again with the next renewal. Ends after
/// the last release, once the limit and every permit are gone.
async fn keep(
    keeper: Arc<Keeper>,
    mut releases: mpsc::UnboundedReceiver<(String, u64)>,
    every: Duration,
) {
    let mut renew_at = tokio::time::Instant::now() + every;
    let mut failed: HashMap<String, Vec<u64>> = HashMap::new();
    // Each turn renews (when due) or sends the releases queued; it ends
    // when the channel has closed and drained.
    loop {
        let now = tokio::time::Instant::now();
        if now >= renew_at {
            // The next period counts from this one's start: a long pass
            // does not push every later one back.
            renew_at = now + every;
            let held: Vec<(String, Vec<u64>)> = keeper
                .held
                .lock()
                .iter()
                .map(|(key, ids)| (key.clone(), ids.clone()))
                .collect();
            bump(&keeper.counters.renewals, held.len() as u64);
            for (_, _, restored) in Keeper::calls(&keeper, RENEW, held).await {
                match restored {
                    Some(restored) => bump(&keeper.counters.restored, restored),
                    None => bump(&keeper.counters.renewal_errors, 1),
                }
            }
            let retry: Vec<(String, Vec<u64>)> = failed.drain().collect();
            keeper.release(retry, &mut failed).await;
            continue;
        }
        match tokio::time::timeout_at(renew_at, releases.recv()).await {
            Ok(None) => {
                let retry: Vec<(String, Vec<u64>)> = failed.drain().collect();
                keeper.release(retry, &mut failed).await;
                return;
            }
            Ok(Some((key, id))) => {
                // What else was dropped meanwhile goes in the same calls.
                let mut by_key: HashMap<String, Vec<u64>> = HashMap::new();
                by_key.entry(key).or_default().push(id);
                // Bounded: a call's worth a turn at most.
                for _ in 1..IDS_A_CALL {
                    let Ok((key, id)) = releases.try_recv() else {
                        break;
                    };
                    by_key.entry(key).or_default().push(id);
                }
                keeper
                    .release(by_key.into_iter().collect(), &mut failed)
                    .await;
            }
            Err(_) => {}
        }
    }
}

/// Calls on different keys in flight at once, at most (they pipeline on
/// the connection).
const CALLS_AT_ONCE: usize = 64;

/// Released ids kept to send again, at most: past it, they expire with
/// their TTL.
const MAX_FAILED: usize = 100_000;

impl Keeper {
    /// Runs `op` for each key's ids, [`CALLS_AT_ONCE`] keys at a time; each
    /// key's ids and its sum, or `None` where a call failed.
    async fn calls(
        keeper: &Arc<Keeper>,
        op: u64,
        work: Vec<(String, Vec<u64>)>,
    ) -> Vec<(String, Vec<u64>, Option<u64>)> {
        let mut done = Vec::with_capacity(work.len());
        let mut running = tokio::task::JoinSet::new();
        // Each turn starts a call or collects one; `work` is finite.
        let mut work = work.into_iter();
        loop {
            while running.len() < CALLS_AT_ONCE {
                let Some((key, ids)) = work.next() else {
                    break;
                };
                let keeper = Arc::clone(keeper);
                running.spawn(async move {
                    let sum = keeper.each(op, &key, &ids).await;
                    (key, ids, sum)
                });
            }
            match running.join_next().await {
                Some(Ok(call)) => done.push(call),
                // A call's task cannot panic short of a bug; its ids
                // expire with their TTL.
                Some(Err(_)) => {}
                None => return done,
            }
        }
    }

    /// Releases `work`; what failed goes into `failed`, within
    /// [`MAX_FAILED`].
    async fn release(
        self: &Arc<Self>,
        work: Vec<(String, Vec<u64>)>,
        failed: &mut HashMap<String, Vec<u64>>,
    ) {
        if work.is_empty() {
            return;
        }
        for (key, ids, removed) in Keeper::calls(self, RELEASE, work).await {
            if removed.is_some() {
                continue;
            }
            bump(&self.counters.release_errors, 1);
            let kept: usize = failed.values().map(Vec::len).sum();
            if kept + ids.len() <= MAX_FAILED {
                failed.entry(key).or_default().extend(ids);
            }
        }
    }
}

impl RedisConcurrencyLimitBuilder {
    fn new(target: Target, limit: u32) -> Self {
        Self {
            target,
            limit,
            prefix: "loadbalance:permits:".to_string(),
            ttl: Duration::from_secs(10),
            deadline: Duration::from_millis(50),
            on_failure: OnFailure::Open,
        }
    }

    /// Prepended to every key (default `loadbalance:permits:`), so that
    /// limits sharing a Redis keep apart.
    #[must_use]
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// How long a permit lives without renewal (default 10 s): a crashed
    /// instance's permits come back within it. Renewed three times a TTL.
    #[must_use]
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// How long an acquire may wait for Redis (default 50 ms).
    #[must_use]
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.deadline = deadline;
        self
    }

    /// What acquires answer when Redis cannot (default: let in).
    #[must_use]
    pub fn on_failure(mut self, policy: OnFailure) -> Self {
        self.on_failure = policy;
        self
    }

    /// The limit, its background task started on the current tokio
    /// runtime. A single server is connected on the first acquire; a
    /// cluster here, to learn its slots.
    ///
    /// # Errors
    ///
    /// [`RedisLimitError`]: a malformed URL, an unreachable cluster, a
    /// zero limit or deadline, a TTL under 300 ms or under three
    /// deadlines, braces in the prefix.
    pub async fn build(self) -> Result<RedisConcurrencyLimit, RedisLimitError> {
        if self.limit == 0 {
            return Err(RedisLimitError::ZeroLimit);
        }
        if self.deadline.is_zero() {
            return Err(RedisLimitError::ZeroDeadline);
        }
        if self.ttl < MIN_TTL || self.deadline.checked_mul(3).is_none_or(|d| self.ttl < d) {
            return Err(RedisLimitError::TtlTooShort { ttl: self.ttl });
        }
        if self.prefix.contains(['{', '}']) {
            return Err(RedisLimitError::BracesInPrefix);
        }
        let connection = self.target.connect(self.deadline).await?;
        let (releases, received) = mpsc::unbounded_channel();
        let keeper = Arc::new(Keeper {
            connection,
            script: redis::Script::new(PERMITS),
            ttl_us: u64::try_from(self.ttl.as_micros()).unwrap_or(u64::MAX),
            deadline: self.deadline,
            held: Mutex::new(HashMap::new()),
            counters: Counters::default(),
        });
        // Renewed at least hourly, whatever the TTL.
        let every = (self.ttl / 3).min(Duration::from_secs(3_600));
        tokio::spawn(keep(Arc::clone(&keeper), received, every));
        Ok(RedisConcurrencyLimit {
            inner: Arc::new(Shared {
                keeper,
                limit: self.limit,
                prefix: self.prefix,
                on_failure: self.on_failure,
                releases,
            }),
        })
    }
}

impl fmt::Debug for RedisConcurrencyLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConcurrencyLimit")
            .field("prefix", &self.inner.prefix)
            .field("limit", &self.inner.limit)
            .field("ttl_us", &self.inner.keeper.ttl_us)
            .field("deadline", &self.inner.keeper.deadline)
            .field("on_failure", &self.inner.on_failure)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for RedisConcurrencyLimitBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConcurrencyLimitBuilder")
            .field("limit", &self.limit)
            .field("prefix", &self.prefix)
            .field("ttl", &self.ttl)
            .field("deadline", &self.deadline)
            .field("on_failure", &self.on_failure)
            .finish_non_exhaustive()
    }
}
