//! Bans shared by every instance of a service through Redis or a Redis
//! Cluster (feature `redis`): a ban decided by one instance is enforced
//! by all of them, a lift likewise.
//!
//! - **Redis is the record**: one sorted set of banned clients scored by
//!   when each ban ends on Redis's clock (its key expires with the last
//!   ban; every write prunes the ended ones), so a new instance learns
//!   every ban in force at once. One key: on a cluster, one slot.
//! - **Pushed, not polled**: a ban or lift is written and published in one
//!   script; every instance subscribes and applies it to its local copy,
//!   which is what a request is checked against (no round trip). On
//!   loopback a ban reaches the other instances in about a millisecond.
//! - **Resynchronised**: after each (re)subscription, and every
//!   [`RESYNC`], an instance reads the bans in force (publishing is
//!   at-most-once: a message sent while it was away is not lost for long)
//!   and writes back the bans it decided itself that Redis no longer has
//!   (a Redis restarted empty gets them back). A lift made while the
//!   deciding instance was away may therefore be undone by it: lift again.
//! - **Bounded**: at most `max_bans` held locally (the soonest to end
//!   goes first) and read at a resync.
//!
//! # Synchronization
//!
//! The local copy is one mutex, never held across an await; counters are
//! Relaxed statistics.

use std::collections::HashMap;
use std::fmt;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::time::Duration;

use futures_core::Stream;
use parking_lot::Mutex;
use tokio::time::Instant;

use super::connection::Connection;
use super::{RedisLimitError, Target};
use crate::sync::atomic::{AtomicU64, Ordering};

/// The script's source.
const BANS: &str = include_str!("bans.lua");

const BAN: u64 = 1;
const LIFT: u64 = 2;
const LIST: u64 = 3;

/// How often an instance reads the bans in force even when subscribed.
pub const RESYNC: Duration = Duration::from_secs(30);

/// How long the subscriber waits before subscribing again after a failure
/// (doubling up to a second).
const RETRY_FIRST: Duration = Duration::from_millis(50);
const RETRY_MOST: Duration = Duration::from_secs(1);

/// How often the subscriber looks whether the bans are still wanted.
const LOOK: Duration = Duration::from_millis(500);

/// The longest ban: a century, in milliseconds (Lua's numbers stay exact).
const LONGEST_MS: u64 = 100 * 365 * 24 * 3_600_000;

/// Redis did not answer in time or failed: the ban or lift holds here and
/// reaches Redis at the next resynchronisation (a lift does not).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BansUnavailable;

impl fmt::Display for BansUnavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the shared bans are unavailable")
    }
}

impl std::error::Error for BansUnavailable {}

/// Shared bans' figures.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SharedBanStats {
    /// Bans this instance decided (written to Redis or not).
    pub banned: u64,
    /// Lifts this instance made.
    pub lifted: u64,
    /// Bans and lifts learned from the channel.
    pub received: u64,
    /// Subscriptions made (the first, then each after a failure).
    pub subscriptions: u64,
    /// Times the bans in force were read from Redis.
    pub resyncs: u64,
    /// This instance's bans that Redis had lost, written back.
    pub written_back: u64,
    /// Round trips that failed or were late.
    pub errors: u64,
    /// Bans dropped from the local copy to stay within its bound.
    pub dropped: u64,
}

#[derive(Default)]
struct Counters {
    banned: AtomicU64,
    lifted: AtomicU64,
    received: AtomicU64,
    subscriptions: AtomicU64,
    resyncs: AtomicU64,
    written_back: AtomicU64,
    errors: AtomicU64,
    dropped: AtomicU64,
}

fn bump(counter: &AtomicU64, by: u64) {
    // Relaxed: statistics.
    counter.fetch_add(by, Ordering::Relaxed);
}

/// Bans shared by every instance on one Redis (`Send + Sync`; clones
/// share everything). Needs a tokio runtime.
///
/// # Examples
///
/// ```no_run
/// use loadbalance::limit::redis::SharedBans;
/// use std::time::Duration;
///
/// # #[allow(dead_code)]
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let bans = SharedBans::builder("redis://127.0.0.1:6379/").build().await?;
/// // On one instance:
/// let _ = bans.ban("192.0.2.7", Duration::from_secs(600)).await;
/// // On every instance, within milliseconds, without a round trip:
/// if let Some(left) = bans.banned("192.0.2.7") {
///     println!("403 for {left:?} more");
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct SharedBans {
    inner: Arc<Inner>,
}

struct Inner {
    connection: Connection,
    target: Target,
    script: redis::Script,
    key: String,
    channel: String,
    deadline: Duration,
    max_bans: usize,
    local: Mutex<HashMap<String, Local>>,
    counters: Counters,
}

/// A ban in the local copy.
#[derive(Clone, Copy, Debug)]
struct Local {
    ends: Instant,
    /// Decided by this instance: written back if Redis lost it.
    own: bool,
}

/// Builds [`SharedBans`].
pub struct SharedBansBuilder {
    target: Target,
    prefix: String,
    deadline: Duration,
    max_bans: usize,
}

impl SharedBans {
    /// Bans on the Redis server at `url`.
    #[must_use]
    pub fn builder(url: impl Into<String>) -> SharedBansBuilder {
        SharedBansBuilder::new(Target::Single(url.into()))
    }

    /// Bans on the Redis Cluster reachable at any of `urls`.
    pub fn cluster_builder(urls: impl IntoIterator<Item = impl Into<String>>) -> SharedBansBuilder {
        SharedBansBuilder::new(Target::Cluster(urls.into_iter().map(Into::into).collect()))
    }

    /// How much longer `client` is banned, if it is: from the local copy,
    /// no round trip.
    pub fn banned(&self, client: &str) -> Option<Duration> {
        let now = Instant::now();
        let mut local = self.inner.local.lock();
        match local.get(client) {
            Some(ban) if ban.ends > now => Some(ban.ends - now),
            Some(_) => {
                local.remove(client);
                None
            }
            None => None,
        }
    }

    /// Bans `client` for `duration` (at most a century) on every
    /// instance: here at once, elsewhere when they hear of it. A ban
    /// already longer stays as it is.
    ///
    /// # Errors
    ///
    /// [`BansUnavailable`] when Redis did not answer within the deadline:
    /// the ban holds here and is written back at the next
    /// resynchronisation.
    pub async fn ban(&self, client: &str, duration: Duration) -> Result<(), BansUnavailable> {
        let inner = &*self.inner;
        bump(&inner.counters.banned, 1);
        let ms = u64::try_from(duration.as_millis())
            .unwrap_or(LONGEST_MS)
            .clamp(1, LONGEST_MS);
        inner.hold(client, Duration::from_millis(ms), true);
        let args = [
            BAN.to_string(),
            client.to_string(),
            ms.to_string(),
            inner.channel.clone(),
        ];
        inner.call(&args).await.map(drop)
    }

    /// As [`ban`](Self::ban), without waiting: held here at once, written
    /// to Redis by a task of the current tokio runtime (for a refusal that
    /// should not wait on Redis). A failed write is retried at the next
    /// resynchronisation.
    pub fn ban_soon(&self, client: &str, duration: Duration) {
        let ms = u64::try_from(duration.as_millis())
            .unwrap_or(LONGEST_MS)
            .clamp(1, LONGEST_MS);
        self.inner.hold(client, Duration::from_millis(ms), true);
        let bans = self.clone();
        let client = client.to_owned();
        tokio::spawn(async move {
            let _ = bans.ban(&client, duration).await;
        });
    }

    /// As [`lift`](Self::lift), without waiting: lifted here at once,
    /// in Redis and elsewhere by a task of the current tokio runtime.
    pub fn lift_soon(&self, client: &str) {
        self.inner.local.lock().remove(client);
        let bans = self.clone();
        let client = client.to_owned();
        tokio::spawn(async move {
            let _ = bans.lift(&client).await;
        });
    }

    /// Lifts `client`'s ban on every instance.
    ///
    /// # Errors
    ///
    /// [`BansUnavailable`] when Redis did not answer within the deadline:
    /// the lift holds here only.
    pub async fn lift(&self, client: &str) -> Result<(), BansUnavailable> {
        let inner = &*self.inner;
        bump(&inner.counters.lifted, 1);
        inner.local.lock().remove(client);
        let args = [LIFT.to_string(), client.to_string(), inner.channel.clone()];
        inner.call(&args).await.map(drop)
    }

    /// Bans held locally now (some may have just ended).
    pub fn len(&self) -> usize {
        self.inner.local.lock().len()
    }

    /// Whether no ban is held locally.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bans' figures.
    pub fn stats(&self) -> SharedBanStats {
        let c = &self.inner.counters;
        // Relaxed: statistics.
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        SharedBanStats {
            banned: read(&c.banned),
            lifted: read(&c.lifted),
            received: read(&c.received),
            subscriptions: read(&c.subscriptions),
            resyncs: read(&c.resyncs),
            written_back: read(&c.written_back),
            errors: read(&c.errors),
            dropped: read(&c.dropped),
        }
    }

    /// The Redis key that holds the bans.
    pub fn redis_key(&self) -> &str {
        &self.inner.key
    }
}

impl Inner {
    /// Holds a ban of `client` for `left` in the local copy (the longer of
    /// it and one held), within the bound.
    fn hold(&self, client: &str, left: Duration, own: bool) {
        let now = Instant::now();
        let ends = now + left;
        let mut local = self.local.lock();
        if let Some(ban) = local.get_mut(client) {
            ban.own |= own;
            ban.ends = ban.ends.max(ends);
            return;
        }
        if local.len() >= self.max_bans {
            local.retain(|_, ban| ban.ends > now);
        }
        if local.len() >= self.max_bans {
            // The ban that ends soonest goes (bounded: `max_bans` entries).
            let soonest = local
                .iter()
                .min_by_key(|(_, ban)| ban.ends)
                .map(|(client, _)| client.clone());
            if let Some(soonest) = soonest {
                local.remove(&soonest);
                bump(&self.counters.dropped, 1);
            }
        }
        local.insert(client.to_owned(), Local { ends, own });
    }

    /// One script call within the deadline.
    async fn call(&self, args: &[String]) -> Result<Vec<i64>, BansUnavailable> {
        let keys = [self.key.as_str()];
        let call = self.connection.run(&self.script, &keys, args);
        match tokio::time::timeout(self.deadline, call).await {
            Ok(Ok(reply)) => Ok(reply),
            _ => {
                bump(&self.counters.errors, 1);
                Err(BansUnavailable)
            }
        }
    }

    /// A message from the channel: `b <ms> <client>` or `l <client>`.
    fn apply(&self, message: &str) {
        bump(&self.counters.received, 1);
        if let Some(rest) = message.strip_prefix("b ") {
            let Some((ms, client)) = rest.split_once(' ') else {
                return;
            };
            if let Ok(ms) = ms.parse::<u64>() {
                self.hold(client, Duration::from_millis(ms.min(LONGEST_MS)), false);
            }
        } else if let Some(client) = message.strip_prefix("l ") {
            self.local.lock().remove(client);
        }
    }

    /// Reads the bans in force into the local copy, and writes back this
    /// instance's own that Redis no longer has.
    async fn resync(&self) -> Result<(), BansUnavailable> {
        let args = [LIST.to_string(), self.max_bans.to_string()];
        let keys = [self.key.as_str()];
        let call = self
            .connection
            .run_for::<_, Vec<String>>(&self.script, &keys, &args);
        let listed = match tokio::time::timeout(self.deadline, call).await {
            Ok(Ok(listed)) => listed,
            _ => {
                bump(&self.counters.errors, 1);
                return Err(BansUnavailable);
            }
        };
        bump(&self.counters.resyncs, 1);
        let mut in_redis = std::collections::HashSet::new();
        for pair in listed.chunks(2) {
            let [client, ms] = pair else {
                continue;
            };
            if let Ok(ms) = ms.parse::<u64>() {
                self.hold(client, Duration::from_millis(ms.min(LONGEST_MS)), false);
                in_redis.insert(client.as_str());
            }
        }
        let now = Instant::now();
        let lost: Vec<(String, Duration)> = self
            .local
            .lock()
            .iter()
            .filter(|(client, ban)| {
                ban.own && ban.ends > now && !in_redis.contains(client.as_str())
            })
            .map(|(client, ban)| (client.clone(), ban.ends - now))
            .collect();
        for (client, left) in lost {
            let ms = u64::try_from(left.as_millis()).unwrap_or(LONGEST_MS).max(1);
            let args = [
                BAN.to_string(),
                client,
                ms.to_string(),
                self.channel.clone(),
            ];
            if self.call(&args).await.is_ok() {
                bump(&self.counters.written_back, 1);
            }
        }
        Ok(())
    }

    /// Resynchronises; how long until the next: [`RESYNC`], or soon if
    /// this one failed.
    async fn resync_after(&self) -> Duration {
        match self.resync().await {
            Ok(()) => RESYNC,
            Err(BansUnavailable) => RETRY_FIRST * 2,
        }
    }

    /// A subscription to the channel, on the server or on the first node
    /// of the cluster that takes it (a cluster publishes to every node).
    async fn subscribe(&self) -> Option<redis::aio::PubSub> {
        let urls: Vec<&str> = match &self.target {
            Target::Single(url) => vec![url.as_str()],
            Target::Cluster(urls) => urls.iter().map(String::as_str).collect(),
        };
        for url in urls {
            let Ok(client) = redis::Client::open(url) else {
                continue;
            };
            let connect = async {
                let mut pubsub = client.get_async_pubsub().await.ok()?;
                pubsub.subscribe(&self.channel).await.ok()?;
                Some(pubsub)
            };
            if let Ok(Some(pubsub)) = tokio::time::timeout(self.deadline * 4, connect).await {
                bump(&self.counters.subscriptions, 1);
                return Some(pubsub);
            }
        }
        None
    }
}

/// The subscriber: subscribes, resynchronises, applies what it hears;
/// subscribes again after a failure; resynchronises every [`RESYNC`].
/// Ends once the bans are dropped.
async fn listen(inner: Weak<Inner>) {
    let mut retry = RETRY_FIRST;
    loop {
        let Some(strong) = inner.upgrade() else {
            return;
        };
        let Some(pubsub) = strong.subscribe().await else {
            drop(strong);
            tokio::time::sleep(retry).await;
            retry = (retry * 2).min(RETRY_MOST);
            continue;
        };
        // Subscribed first, then read: nothing published in between is
        // missed. A read that failed (the other connection still
        // reconnecting) is tried again soon.
        let mut resync_at = Instant::now() + strong.resync_after().await;
        drop(strong);
        retry = RETRY_FIRST;
        let mut messages = pubsub.into_on_message();
        // Each turn applies a message, or looks whether the bans are
        // still wanted and due a resync; a closed stream subscribes again.
        loop {
            let wait = resync_at
                .saturating_duration_since(Instant::now())
                .min(LOOK);
            let next = std::future::poll_fn(|cx| Pin::new(&mut messages).poll_next(cx));
            let heard = tokio::time::timeout(wait, next).await;
            let Some(strong) = inner.upgrade() else {
                return;
            };
            match heard {
                Ok(Some(message)) => {
                    if let Ok(text) = message.get_payload::<String>() {
                        strong.apply(&text);
                    }
                }
                Ok(None) => break,
                Err(_) => {}
            }
            if Instant::now() >= resync_at {
                resync_at = Instant::now() + strong.resync_after().await;
            }
        }
    }
}

impl SharedBansBuilder {
    fn new(target: Target) -> Self {
        Self {
            target,
            prefix: "loadbalance:".to_string(),
            deadline: Duration::from_millis(50),
            max_bans: 100_000,
        }
    }

    /// Prepended to the key and the channel (default `loadbalance:`).
    #[must_use]
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// How long a ban, lift or read may wait for Redis (default 50 ms).
    #[must_use]
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.deadline = deadline;
        self
    }

    /// The most bans held locally and read at a resynchronisation
    /// (default 100,000).
    #[must_use]
    pub fn max_bans(mut self, max_bans: usize) -> Self {
        self.max_bans = max_bans;
        self
    }

    /// The bans, their subscriber started on the current tokio runtime.
    ///
    /// # Errors
    ///
    /// [`RedisLimitError`]: a malformed URL, an unreachable cluster, a
    /// zero deadline, braces in the prefix, a zero `max_bans`
    /// ([`RedisLimitError::ZeroLimit`]).
    pub async fn build(self) -> Result<SharedBans, RedisLimitError> {
        if self.deadline.is_zero() {
            return Err(RedisLimitError::ZeroDeadline);
        }
        if self.max_bans == 0 {
            return Err(RedisLimitError::ZeroLimit);
        }
        if self.prefix.contains(['{', '}']) {
            return Err(RedisLimitError::BracesInPrefix);
        }
        let connection = self.target.connect(self.deadline).await?;
        let inner = Arc::new(Inner {
            connection,
            target: self.target,
            script: redis::Script::new(BANS),
            key: format!("{}{{bans}}", self.prefix),
            channel: format!("{}bans:events", self.prefix),
            deadline: self.deadline,
            max_bans: self.max_bans,
            local: Mutex::new(HashMap::new()),
            counters: Counters::default(),
        });
        tokio::spawn(listen(Arc::downgrade(&inner)));
        Ok(SharedBans { inner })
    }
}

impl fmt::Debug for SharedBans {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedBans")
            .field("key", &self.inner.key)
            .field("channel", &self.inner.channel)
            .field("deadline", &self.inner.deadline)
            .field("max_bans", &self.inner.max_bans)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for SharedBansBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedBansBuilder")
            .field("prefix", &self.prefix)
            .field("deadline", &self.deadline)
            .field("max_bans", &self.max_bans)
            .finish_non_exhaustive()
    }
}
