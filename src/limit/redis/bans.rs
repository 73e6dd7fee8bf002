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
//! - **In order**: the bans and lifts made on one instance reach Redis in
//!   the order they were made (one writer task); one Redis did not take is
//!   written again a second later, the ones behind it waiting, so a lift
//!   is never overtaken by an earlier ban.
//! - **Resynchronised**: after each (re)subscription, every [`RESYNC`],
//!   and at the pace of the retries while a subscription fails, an
//!   instance makes its local copy Redis's: the bans in force there (the
//!   latest to end first, at most `max_bans`), without those it is lifting
//!   itself; a ban held here that Redis no longer has goes (a lift
//!   missed), unless it is this instance's own and the list was whole
//!   (Redis lost it: written back, in order with later lifts).
//! - **Bounded**: at most `max_bans` held locally (when full, the eighth
//!   that ends soonest goes, in one pass) and read at a resynchronisation.
//!
//! What this cannot do: a subscription that goes silent without closing
//! (a partition) is noticed at the next resynchronisation only, and a lift
//! made by another instance while this one writes its own bans back may
//! be undone by it (lift again). Ban ends are Redis's wall clock: a step
//! of that clock moves every ban's end.
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
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::connection::Connection;
use super::{RedisLimitError, Target, bump};
use crate::sync::atomic::{AtomicU64, Ordering};

/// The script's source.
const BANS: &str = include_str!("bans.lua");

const BAN: u64 = 1;
const LIFT: u64 = 2;
const LIST: u64 = 3;

/// How often an instance reads the bans in force even when subscribed.
pub const RESYNC: Duration = Duration::from_secs(30);

/// Times the writer tries a ban or lift, a second apart.
const ATTEMPTS: u32 = 30;

/// How long the subscriber waits before subscribing again after a failure
/// (doubling up to a second).
const RETRY_FIRST: Duration = Duration::from_millis(50);
const RETRY_MOST: Duration = Duration::from_secs(1);

/// How often the subscriber looks whether the bans are still wanted.
const LOOK: Duration = Duration::from_millis(500);

/// The longest ban: a century, in milliseconds (Lua's numbers stay exact).
const LONGEST_MS: u64 = 100 * 365 * 24 * 3_600_000;

/// Redis did not take a ban or lift within the deadline: it holds here, and
/// is written again (a second apart, up to 30 times).
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
    /// Subscriptions that failed (the server down, or not allowed).
    pub subscribe_failures: u64,
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
    subscribe_failures: AtomicU64,
    resyncs: AtomicU64,
    written_back: AtomicU64,
    errors: AtomicU64,
    dropped: AtomicU64,
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
    /// Lifts made here and not yet written: a resync does not bring
    /// their bans back meanwhile.
    lifting: Mutex<HashMap<String, u32>>,
    /// To the writer: bans and lifts, written in the order they were made.
    writes: mpsc::UnboundedSender<Write>,
    counters: Counters,
}

/// A ban or lift for the writer, with whom to tell how it went.
struct Write {
    op: Op,
    done: Option<oneshot::Sender<Result<(), BansUnavailable>>>,
}

#[derive(Clone, Debug)]
enum Op {
    Ban { client: String, ms: u64 },
    Lift { client: String },
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
    /// already longer stays as it is. Bans and lifts made here reach Redis
    /// in the order they were made.
    ///
    /// # Errors
    ///
    /// [`BansUnavailable`] when Redis did not take it within the deadline:
    /// the ban holds here and is written again until Redis takes it.
    pub async fn ban(&self, client: &str, duration: Duration) -> Result<(), BansUnavailable> {
        let (done, told) = oneshot::channel();
        self.queue(self.inner.ban_op(client, duration), Some(done));
        match tokio::time::timeout(self.inner.deadline * 2, told).await {
            Ok(Ok(result)) => result,
            _ => Err(BansUnavailable),
        }
    }

    /// As [`ban`](Self::ban), without waiting: held here at once, written
    /// by the limit's writer task (for a refusal that should not wait on
    /// Redis).
    pub fn ban_soon(&self, client: &str, duration: Duration) {
        self.queue(self.inner.ban_op(client, duration), None);
    }

    /// Lifts `client`'s ban on every instance: here at once, elsewhere
    /// when they hear of it.
    ///
    /// # Errors
    ///
    /// [`BansUnavailable`] when Redis did not take it within the deadline:
    /// the lift holds here, and is written again until Redis takes it.
    pub async fn lift(&self, client: &str) -> Result<(), BansUnavailable> {
        let (done, told) = oneshot::channel();
        self.queue(self.inner.lift_op(client), Some(done));
        match tokio::time::timeout(self.inner.deadline * 2, told).await {
            Ok(Ok(result)) => result,
            _ => Err(BansUnavailable),
        }
    }

    /// As [`lift`](Self::lift), without waiting.
    pub fn lift_soon(&self, client: &str) {
        self.queue(self.inner.lift_op(client), None);
    }

    fn queue(&self, op: Op, done: Option<oneshot::Sender<Result<(), BansUnavailable>>>) {
        // The writer lives as long as `inner`: the send cannot fail.
        let _ = self.inner.writes.send(Write { op, done });
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
            subscribe_failures: read(&c.subscribe_failures),
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
    /// A ban, held here at once.
    fn ban_op(&self, client: &str, duration: Duration) -> Op {
        bump(&self.counters.banned, 1);
        let ms = u64::try_from(duration.as_millis())
            .unwrap_or(LONGEST_MS)
            .clamp(1, LONGEST_MS);
        self.hold(client, Duration::from_millis(ms), true);
        Op::Ban {
            client: client.to_owned(),
            ms,
        }
    }

    /// A lift, made here at once, its ban kept out of resyncs until it is
    /// written.
    fn lift_op(&self, client: &str) -> Op {
        bump(&self.counters.lifted, 1);
        self.local.lock().remove(client);
        *self.lifting.lock().entry(client.to_owned()).or_default() += 1;
        Op::Lift {
            client: client.to_owned(),
        }
    }

    /// Writes `op` to Redis (and publishes it).
    async fn write(&self, op: &Op) -> Result<(), BansUnavailable> {
        let args = match op {
            Op::Ban { client, ms } => {
                vec![
                    BAN.to_string(),
                    client.clone(),
                    ms.to_string(),
                    self.channel.clone(),
                ]
            }
            Op::Lift { client } => vec![LIFT.to_string(), client.clone(), self.channel.clone()],
        };
        let written = self.call(&args).await.map(drop);
        if let (Op::Lift { client }, Ok(())) = (op, &written) {
            let mut lifting = self.lifting.lock();
            if let Some(count) = lifting.get_mut(client) {
                *count -= 1;
                if *count == 0 {
                    lifting.remove(client);
                }
            }
        }
        written
    }

    /// An op the writer gave up on.
    fn written_off(&self, op: &Op) {
        if let Op::Lift { client } = op {
            let mut lifting = self.lifting.lock();
            if let Some(count) = lifting.get_mut(client) {
                *count -= 1;
                if *count == 0 {
                    lifting.remove(client);
                }
            }
        }
    }

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
            evict(&mut local, now, self.max_bans, &self.counters.dropped);
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
                if !self.lifting.lock().contains_key(client) {
                    self.hold(client, Duration::from_millis(ms.min(LONGEST_MS)), false);
                }
            }
        } else if let Some(client) = message.strip_prefix("l ") {
            self.local.lock().remove(client);
        }
    }

    /// Makes the local copy Redis's: the bans in force there (the latest
    /// to end first, at most `max_bans`), but those this instance is
    /// lifting; a ban held here that Redis no longer has is dropped (a
    /// lift missed), unless it is this instance's own and Redis's list
    /// was whole (Redis lost it: written back, in order with later lifts)
    /// or the list was cut short (nothing can be told of it).
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
        let whole = listed.len() / 2 < self.max_bans;
        let now = Instant::now();
        let lifting: std::collections::HashSet<String> =
            self.lifting.lock().keys().cloned().collect();
        let mut fresh: HashMap<String, Local> = HashMap::with_capacity(listed.len() / 2);
        for pair in listed.chunks(2) {
            let [client, ms] = pair else {
                continue;
            };
            let Ok(ms) = ms.parse::<u64>() else {
                continue;
            };
            if lifting.contains(client) {
                continue;
            }
            let ends = now + Duration::from_millis(ms.min(LONGEST_MS));
            fresh.insert(client.clone(), Local { ends, own: false });
        }
        let mut lost = Vec::new();
        {
            let mut local = self.local.lock();
            for (client, ban) in local.iter() {
                if ban.ends <= now || lifting.contains(client) {
                    continue;
                }
                match fresh.get_mut(client) {
                    Some(kept) => {
                        kept.own = ban.own;
                        kept.ends = kept.ends.max(ban.ends);
                    }
                    None if !whole => {
                        fresh.insert(client.clone(), *ban);
                    }
                    None if ban.own => {
                        lost.push((client.clone(), ban.ends - now));
                        fresh.insert(client.clone(), *ban);
                    }
                    None => {}
                }
            }
            *local = fresh;
            if local.len() > self.max_bans {
                evict(&mut local, now, self.max_bans, &self.counters.dropped);
            }
        }
        bump(&self.counters.resyncs, 1);
        for (client, left) in lost {
            bump(&self.counters.written_back, 1);
            let ms = u64::try_from(left.as_millis()).unwrap_or(LONGEST_MS).max(1);
            let _ = self.writes.send(Write {
                op: Op::Ban { client, ms },
                done: None,
            });
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

/// Makes room in a full local copy: the ended bans go, then, if it is
/// still full, the eighth that ends soonest (one pass now and then, not a
/// scan for every ban).
fn evict(local: &mut HashMap<String, Local>, now: Instant, max: usize, dropped: &AtomicU64) {
    local.retain(|_, ban| ban.ends > now);
    if local.len() < max {
        return;
    }
    let mut ends: Vec<Instant> = local.values().map(|ban| ban.ends).collect();
    let cut = ends.len() / 8;
    let (_, threshold, _) = ends.select_nth_unstable(cut);
    let threshold = *threshold;
    let before = local.len();
    local.retain(|_, ban| ban.ends > threshold);
    bump(dropped, (before - local.len()) as u64);
}

/// The writer: bans and lifts made here, in order. One Redis did not
/// take is tried again a second later, up to [`ATTEMPTS`] times, and the
/// ops behind it wait, so a lift is never overtaken by an earlier ban.
/// Ends when the bans are dropped.
async fn write(inner: Weak<Inner>, mut writes: mpsc::UnboundedReceiver<Write>) {
    // Each turn writes one op; its attempts are bounded.
    while let Some(Write { op, mut done }) = writes.recv().await {
        for attempt in 1..=ATTEMPTS {
            let Some(strong) = inner.upgrade() else {
                return;
            };
            let written = strong.write(&op).await;
            if let Some(done) = done.take() {
                let _ = done.send(written);
            }
            if written.is_ok() {
                break;
            }
            if attempt == ATTEMPTS {
                // Given up: a lift no longer keeps its ban out of resyncs.
                strong.written_off(&op);
                break;
            }
            drop(strong);
            tokio::time::sleep(RETRY_MOST).await;
        }
    }
}

/// The subscriber: subscribes, resynchronises, applies what it hears;
/// subscribes again after a failure; resynchronises every [`RESYNC`].
/// Ends once the bans are dropped.
async fn listen(inner: Weak<Inner>) {
    let mut retry = RETRY_FIRST;
    let mut resync_at = Instant::now();
    loop {
        let Some(strong) = inner.upgrade() else {
            return;
        };
        let Some(pubsub) = strong.subscribe().await else {
            // Not subscribed (down, or not allowed to): the bans in force
            // are still read, at the pace of the retries.
            bump(&strong.counters.subscribe_failures, 1);
            if Instant::now() >= resync_at {
                resync_at = Instant::now() + strong.resync_after().await;
            }
            drop(strong);
            tokio::time::sleep(retry).await;
            retry = (retry * 2).min(RETRY_MOST);
            continue;
        };
        // Subscribed first, then read: nothing published in between is
        // missed. A read that failed (the other connection still
        // reconnecting) is tried again soon.
        resync_at = Instant::now() + strong.resync_after().await;
        drop(strong);
        let subscribed = Instant::now();
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
        // A subscription that lasted is no failure; one that ended at once
        // is, and the next waits longer.
        if subscribed.elapsed() >= RETRY_MOST {
            retry = RETRY_FIRST;
        } else {
            tokio::time::sleep(retry).await;
            retry = (retry * 2).min(RETRY_MOST);
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
        let (writes, to_write) = mpsc::unbounded_channel();
        let inner = Arc::new(Inner {
            connection,
            target: self.target,
            script: redis::Script::new(BANS),
            key: format!("{}{{bans}}", self.prefix),
            channel: format!("{}bans:events", self.prefix),
            deadline: self.deadline,
            max_bans: self.max_bans,
            local: Mutex::new(HashMap::new()),
            lifting: Mutex::new(HashMap::new()),
            writes,
            counters: Counters::default(),
        });
        tokio::spawn(write(Arc::downgrade(&inner), to_write));
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
