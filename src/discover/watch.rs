//! Keeping up with names: each one looked up again when its answer's TTL
//! ends (clamped), the union of their last good answers handed on when it
//! changes, a failed or empty answer never taking anything away.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::{DnsError, DnsErrorKind, DnsName, Endpoint, Resolution, Resolve};
use crate::sync::atomic::{AtomicU64, Ordering};

/// The shortest wait before a name is asked again, by default: a TTL of 0
/// does not become a query loop.
pub const DEFAULT_MIN_TTL: Duration = Duration::from_secs(1);

/// The longest wait before a name is asked again, by default: a day-long
/// TTL does not hide a change for a day.
pub const DEFAULT_MAX_TTL: Duration = Duration::from_secs(300);

/// How long one lookup may take, by default, whatever the resolver does.
pub const DEFAULT_LOOKUP_TIMEOUT: Duration = Duration::from_secs(10);

/// After failures in a row, a name is asked again after the minimum
/// doubled each time, up to this many minimums (and the maximum).
const MAX_BACKOFF: u32 = 8;

/// The longest wait of all: a TTL of "forever" is asked again within a
/// year (and an `Instant` never overflows).
const FOREVER: Duration = Duration::from_secs(365 * 24 * 3_600);

/// The names a pool's backends come from, how they are looked up, and the
/// bounds put on their TTLs.
///
/// [`resolve`](Self::resolve) looks every name up once, for building a
/// pool; [`watch`](Self::watch) then keeps looking them up, each when its
/// TTL ends, and hands the union of their answers to a callback whenever
/// it changes; [`apply_to`](Self::apply_to) hands it to a [`Pool`](crate::Pool).
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use loadbalance::discover::{Discovery, DnsName, Endpoint, Resolution, Resolve, ResolveFuture};
/// use loadbalance::{Backend, Pool};
///
/// // Your resolver, or `HickoryResolver::system()?`.
/// struct Registry;
/// impl Resolve for Registry {
///     fn resolve<'a>(&'a self, _name: &'a DnsName) -> ResolveFuture<'a> {
///         let here = Endpoint::new("10.0.0.1:8080".parse().expect("an address"));
///         Box::pin(async move { Ok(Resolution::new([here], Duration::from_secs(30))) })
///     }
/// }
///
/// # tokio::runtime::Runtime::new()?.block_on(async {
/// let discovery = Discovery::new(Registry)
///     .name("web.internal:8080".parse()?)
///     .name("_http._tcp.api.internal".parse()?);
/// let found = discovery.resolve().await;
/// let backend = |e: &Endpoint| Backend::new(e.addr).weight(e.weight).backup(e.backup);
/// let endpoints = found.endpoints();
/// let pool = Arc::new(Pool::builder("least_conn".parse()?).build(endpoints.iter().map(backend))?);
/// // From now on each change is applied to the pool, counts and health kept.
/// let watch = discovery.apply_to(found, Arc::clone(&pool), Vec::new(), backend);
/// assert_eq!(pool.len(), 1);
/// # drop(watch);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # })?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Discovery {
    resolver: Arc<dyn Resolve>,
    names: Vec<DnsName>,
    min_ttl: Duration,
    max_ttl: Duration,
    lookup_timeout: Duration,
}

impl Discovery {
    /// No names yet, looked up by `resolver`, TTLs clamped to
    /// [`DEFAULT_MIN_TTL`] and [`DEFAULT_MAX_TTL`].
    pub fn new(resolver: impl Resolve) -> Self {
        Self::shared(Arc::new(resolver))
    }

    /// As [`new`](Self::new), with a resolver other discoveries share.
    pub fn shared(resolver: Arc<dyn Resolve>) -> Self {
        Self {
            resolver,
            names: Vec::new(),
            min_ttl: DEFAULT_MIN_TTL,
            max_ttl: DEFAULT_MAX_TTL,
            lookup_timeout: DEFAULT_LOOKUP_TIMEOUT,
        }
    }

    /// Adds `name` (once: a name given twice is looked up once).
    pub fn name(mut self, name: DnsName) -> Self {
        if !self.names.contains(&name) {
            self.names.push(name);
        }
        self
    }

    /// Clamps each answer's TTL to `min..=max` before asking again.
    ///
    /// # Errors
    ///
    /// [`DnsErrorKind::Config`] when `min` is zero or above `max`.
    pub fn ttl_bounds(mut self, min: Duration, max: Duration) -> Result<Self, DnsError> {
        if min.is_zero() || min > max {
            return Err(DnsError {
                name: String::new(),
                kind: DnsErrorKind::Config(format!(
                    "TTL bounds {min:?} to {max:?}: a minimum above 0, at most the maximum"
                )),
            });
        }
        self.min_ttl = min;
        self.max_ttl = max;
        Ok(self)
    }

    /// Bounds each lookup to `timeout` (10 s by default), whatever the
    /// resolver does; past it the lookup is a [`DnsErrorKind::Timeout`].
    ///
    /// # Errors
    ///
    /// [`DnsErrorKind::Config`] when `timeout` is zero.
    pub fn lookup_timeout(mut self, timeout: Duration) -> Result<Self, DnsError> {
        if timeout.is_zero() {
            return Err(DnsError {
                name: String::new(),
                kind: DnsErrorKind::Config("a lookup timeout above 0".to_owned()),
            });
        }
        self.lookup_timeout = timeout;
        Ok(self)
    }

    /// The names, in the order given.
    pub fn names(&self) -> &[DnsName] {
        &self.names
    }

    /// Looks every name up once, all at the same time, each within the
    /// lookup timeout.
    pub async fn resolve(&self) -> Found {
        let answers = join_all((0..self.names.len()).map(|index| self.lookup(index))).await;
        let now = Instant::now();
        let states = self
            .names
            .iter()
            .zip(answers)
            .map(|(name, answer)| {
                let mut state = NameState::default();
                state.take(name, answer, now, self);
                state
            })
            .collect();
        Found {
            names: self.names.clone(),
            states,
        }
    }

    /// Keeps looking the names up from `found` on (each when its clamped
    /// TTL ends; after a failure, after the minimum, doubled with each
    /// failure in a row up to eight minimums), and calls `on_change` with
    /// the union of their last good answers each time it differs from
    /// the one last applied. A failed or empty answer keeps the name's
    /// last good one; a name that never answered adds nothing. When
    /// `on_change` returns an error the same union is offered again after
    /// the next lookup.
    ///
    /// Each name is asked on its own schedule: one that stalls (up to the
    /// lookup timeout) holds no other back. A resolver or callback that
    /// panics counts as a failed lookup or a refusal; the watch goes on.
    /// A refused union is offered again after the minimum.
    ///
    /// `found` is matched to this discovery's names by name: a name it
    /// lacks is asked at once, one it has beyond them is ignored.
    ///
    /// Runs on the current tokio runtime until the [`DnsWatch`] drops
    /// (a callback already running may finish after the drop).
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub fn watch<F, E>(self, found: Found, on_change: F) -> DnsWatch
    where
        F: FnMut(&[Endpoint]) -> Result<(), E> + Send + 'static,
        E: fmt::Display + 'static,
    {
        let stats = Arc::new(Counters::default());
        let mut given: Vec<(DnsName, NameState)> =
            found.names.into_iter().zip(found.states).collect();
        let states: Vec<NameState> = self
            .names
            .iter()
            .map(|name| match given.iter().position(|(n, _)| n == name) {
                Some(index) => given.swap_remove(index).1,
                None => NameState::default(),
            })
            .collect();
        let applied = union(&states);
        let good = Arc::new(Mutex::new(
            self.names
                .iter()
                .zip(&states)
                .filter_map(|(name, state)| Some((name.clone(), state.good.clone()?)))
                .collect(),
        ));
        let task = tokio::spawn(watch(
            self,
            states,
            applied,
            Arc::clone(&stats),
            Arc::clone(&good),
            on_change,
        ));
        DnsWatch { task, stats, good }
    }

    /// Name `index` looked up within the lookup timeout; a resolver that
    /// panics is a failed lookup.
    async fn lookup(&self, index: usize) -> Result<Resolution, DnsError> {
        let name = &self.names[index];
        let lookup = Unwinding(Some(self.resolver.resolve(name)));
        match tokio::time::timeout(self.lookup_timeout, lookup).await {
            Ok(Some(answer)) => answer,
            Ok(None) => Err(DnsError::new(
                name,
                DnsErrorKind::Lookup("the resolver panicked".to_owned()),
            )),
            Err(_) => Err(DnsError::new(name, DnsErrorKind::Timeout)),
        }
    }

    /// The clamped wait after an answer valid for `ttl`.
    fn wait(&self, ttl: Duration) -> Duration {
        ttl.clamp(self.min_ttl, self.max_ttl).min(FOREVER)
    }

    /// The wait after `failures` in a row.
    fn backoff(&self, failures: u32) -> Duration {
        let doubled = self
            .min_ttl
            .saturating_mul(1 << failures.saturating_sub(1).min(MAX_BACKOFF.ilog2()));
        doubled.min(self.max_ttl).min(FOREVER)
    }
}

impl fmt::Debug for Discovery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Discovery")
            .field("names", &self.names)
            .field("min_ttl", &self.min_ttl)
            .field("max_ttl", &self.max_ttl)
            .field("lookup_timeout", &self.lookup_timeout)
            .finish_non_exhaustive()
    }
}

/// What every name answered in one round: the backends found and the
/// names that failed.
#[derive(Debug)]
pub struct Found {
    names: Vec<DnsName>,
    states: Vec<NameState>,
}

impl Found {
    /// The union of the names' answers: names in the order given, each
    /// one's backends by address, an address found twice kept once.
    pub fn endpoints(&self) -> Vec<Endpoint> {
        union(&self.states)
    }

    /// The names that gave no backend, and why.
    pub fn errors(&self) -> impl Iterator<Item = &DnsError> {
        self.states.iter().filter_map(|state| state.error.as_ref())
    }

    /// The names asked.
    pub fn names(&self) -> &[DnsName] {
        &self.names
    }

    /// Takes `watch`'s last good answer for each name that has none here:
    /// a watch started again (other names, another resolver) during a DNS
    /// outage keeps what the one it replaces knew.
    pub fn keep_last_good(&mut self, watch: &DnsWatch) {
        for (name, state) in self.names.iter().zip(&mut self.states) {
            if state.good.is_none() {
                state.good = watch.last_good(name);
            }
        }
    }
}

/// One name's last good answer, its last failure, and when it is asked
/// again.
#[derive(Debug)]
struct NameState {
    good: Option<Resolution>,
    error: Option<DnsError>,
    failures: u32,
    due: Instant,
}

impl Default for NameState {
    fn default() -> Self {
        Self {
            good: None,
            error: None,
            failures: 0,
            due: Instant::now(),
        }
    }
}

impl NameState {
    /// Takes an answer received at `now`; returns whether it was good.
    fn take(
        &mut self,
        name: &DnsName,
        answer: Result<Resolution, DnsError>,
        now: Instant,
        by: &Discovery,
    ) -> bool {
        match answer {
            Ok(resolution) if !resolution.endpoints().is_empty() => {
                self.due = now + by.wait(resolution.ttl());
                self.good = Some(resolution);
                self.error = None;
                self.failures = 0;
                true
            }
            Ok(_) => {
                self.fail(DnsError::new(name, DnsErrorKind::NoRecords), now, by);
                false
            }
            Err(error) => {
                self.fail(error, now, by);
                false
            }
        }
    }

    fn fail(&mut self, error: DnsError, now: Instant, by: &Discovery) {
        self.failures = self.failures.saturating_add(1);
        self.due = now + by.backoff(self.failures);
        self.error = Some(error);
    }
}

/// The names' last good answers together, an address found twice kept
/// once (the first): linear, as it runs after every answer.
fn union(states: &[NameState]) -> Vec<Endpoint> {
    let mut seen = HashSet::new();
    states
        .iter()
        .filter_map(|state| state.good.as_ref())
        .flat_map(Resolution::endpoints)
        .filter(|endpoint| seen.insert(endpoint.addr))
        .copied()
        .collect()
}

/// A lookup in flight.
type Lookup<'a> = Pin<Box<dyn Future<Output = Result<Resolution, DnsError>> + Send + 'a>>;

/// The watch's loop: starts each name's lookup when it is due, takes each
/// answer as it comes, and applies the union when it changed (or when a
/// refused one is due to be offered again).
async fn watch<F, E>(
    discovery: Discovery,
    mut states: Vec<NameState>,
    mut applied: Vec<Endpoint>,
    stats: Arc<Counters>,
    good: Arc<Mutex<LastGood>>,
    mut on_change: F,
) where
    F: FnMut(&[Endpoint]) -> Result<(), E> + Send + 'static,
    E: fmt::Display + 'static,
{
    if states.is_empty() {
        return;
    }
    let mut in_flight: Vec<Option<Lookup<'_>>> = states.iter().map(|_| None).collect();
    // When a refused union is offered again.
    let mut retry: Option<Instant> = None;
    loop {
        let now = Instant::now();
        for (index, slot) in in_flight.iter_mut().enumerate() {
            if slot.is_none() && states[index].due <= now {
                *slot = Some(Box::pin(discovery.lookup(index)));
            }
        }
        let next = states
            .iter()
            .zip(&in_flight)
            .filter(|(_, slot)| slot.is_none())
            .map(|(state, _)| state.due)
            .chain(retry)
            .min();
        let answered = tokio::select! {
            () = sleep_until(next) => None,
            answer = next_answer(&mut in_flight) => Some(answer),
        };
        let now = Instant::now();
        if let Some((index, answer)) = answered {
            // Relaxed: statistics, read on their own.
            stats.lookups.fetch_add(1, Ordering::Relaxed);
            let name = &discovery.names[index];
            if states[index].take(name, answer, now, &discovery) {
                if let Some(resolution) = &states[index].good {
                    good.lock().insert(name.clone(), resolution.clone());
                }
            } else {
                stats.failures.fetch_add(1, Ordering::Relaxed);
            }
        }
        let union = union(&states);
        let offer_again = retry.is_some_and(|at| at <= now);
        if union.is_empty() || (union == applied && !offer_again) {
            continue;
        }
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| on_change(&union)));
        if let Ok(Ok(())) = outcome {
            applied = union;
            retry = None;
            stats.changes.fetch_add(1, Ordering::Relaxed);
        } else {
            retry = Some(now + discovery.min_ttl.min(FOREVER));
            stats.refused.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Sleeps until `at`, or for ever.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The first lookup in flight to finish, and its name's index; pending
/// while none is in flight.
async fn next_answer(
    in_flight: &mut [Option<Lookup<'_>>],
) -> (usize, Result<Resolution, DnsError>) {
    std::future::poll_fn(|cx| {
        for (index, slot) in in_flight.iter_mut().enumerate() {
            if let Some(lookup) = slot {
                if let Poll::Ready(answer) = lookup.as_mut().poll(cx) {
                    *slot = None;
                    return Poll::Ready((index, answer));
                }
            }
        }
        Poll::Pending
    })
    .await
}

/// A future whose panic is its output `None`, not the task's end.
struct Unwinding<F: ?Sized>(Option<Pin<Box<F>>>);

impl<F: Future + ?Sized> Future for Unwinding<F> {
    type Output = Option<F::Output>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<Self::Output> {
        let Some(inner) = self.0.as_mut() else {
            return Poll::Ready(None);
        };
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| inner.as_mut().poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(output)) => {
                self.0 = None;
                Poll::Ready(Some(output))
            }
            Err(_) => {
                self.0 = None;
                Poll::Ready(None)
            }
        }
    }
}

/// Polls every future to its end, together, on this task; their outputs
/// in order.
pub(super) async fn join_all<'a, T>(
    futures: impl Iterator<Item = impl Future<Output = T> + Send + 'a>,
) -> Vec<T> {
    let mut pending: Vec<_> = futures.map(|future| Some(Box::pin(future))).collect();
    let mut done: Vec<Option<T>> = pending.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut all = true;
        for (slot, out) in pending.iter_mut().zip(done.iter_mut()) {
            if let Some(future) = slot {
                match future.as_mut().poll(cx) {
                    Poll::Ready(value) => {
                        *out = Some(value);
                        *slot = None;
                    }
                    Poll::Pending => all = false,
                }
            }
        }
        if all { Poll::Ready(()) } else { Poll::Pending }
    })
    .await;
    done.into_iter().flatten().collect()
}

#[derive(Debug, Default)]
struct Counters {
    lookups: AtomicU64,
    failures: AtomicU64,
    changes: AtomicU64,
    refused: AtomicU64,
}

/// What a [`DnsWatch`] has done.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DnsStats {
    /// Names looked up (after the first round).
    pub lookups: u64,
    /// Lookups that failed or found nothing (their names' last good
    /// answers kept).
    pub failures: u64,
    /// Changes applied.
    pub changes: u64,
    /// Changes the callback refused (offered again).
    pub refused: u64,
}

/// Each name's last good answer, as a watch holds it.
type LastGood = HashMap<DnsName, Resolution>;

/// A running [`Discovery::watch`]; dropping it stops the watch.
pub struct DnsWatch {
    task: JoinHandle<()>,
    stats: Arc<Counters>,
    good: Arc<Mutex<LastGood>>,
}

impl DnsWatch {
    /// `name`'s last good answer, if this watch has one.
    pub fn last_good(&self, name: &DnsName) -> Option<Resolution> {
        self.good.lock().get(name).cloned()
    }

    /// Whether the watch still runs (it ends only with its runtime).
    pub fn is_running(&self) -> bool {
        !self.task.is_finished()
    }

    /// What the watch has done so far.
    pub fn stats(&self) -> DnsStats {
        // Relaxed: statistics, each read on its own.
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        DnsStats {
            lookups: read(&self.stats.lookups),
            failures: read(&self.stats.failures),
            changes: read(&self.stats.changes),
            refused: read(&self.stats.refused),
        }
    }
}

impl Drop for DnsWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl fmt::Debug for DnsWatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DnsWatch")
            .field("stats", &self.stats())
            .finish()
    }
}
