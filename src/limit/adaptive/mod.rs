//! Adaptive concurrency: a limit on requests in flight that follows the
//! latency the backends show, so excess requests are shed at once (a 503)
//! before queues grow, with no number to guess (Envoy's adaptive
//! concurrency filter, Netflix's concurrency-limits).
//!
//! - `word.rs`: the limit and the permits alive, one atomic word (its
//!   "Synchronization" section; `loom_word.rs` models it);
//! - `gradient.rs`: the gradient algorithm that moves the limit, a
//!   sequential state machine behind a mutex no admission takes.
//!
//! An admission is one compare-and-swap, lock-free; the end of a request
//! hands its latency to the algorithm, under a lock it only tries (a
//! sample lost to contention is one sample fewer in a window).

mod gradient;
mod word;

#[cfg(all(test, loom))]
mod loom_word;

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use self::gradient::{Gradient, Settings};
use self::word::Word;
use super::time::Time;
use crate::sync::Mutex;
use crate::time::{Clock, Nanos};

/// The settings of an [`AdaptiveLimit`] (Envoy's names and defaults).
///
/// # Examples
///
/// ```
/// use loadbalance::limit::AdaptiveOptions;
/// use std::time::Duration;
///
/// let options = AdaptiveOptions::default()
///     .max_limit(500)
///     .interval(Duration::from_millis(250))
///     .percentile(90);
/// assert!(options.build().is_ok());
/// assert!(AdaptiveOptions::default().percentile(0).build().is_err());
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdaptiveOptions {
    initial: u32,
    min_limit: u32,
    max_limit: u32,
    interval: Duration,
    percentile: u8,
    min_rtt_interval: Duration,
    min_rtt_requests: u32,
    min_concurrency: u32,
    buffer: u8,
    jitter: u8,
    seed: Option<u64>,
}

impl Default for AdaptiveOptions {
    /// A limit of 3 to 1,000 starting from 20, moved every 100 ms by the
    /// median latency, against a min RTT measured over 50 requests at a
    /// concurrency of 3 every 60 s (±15%), with a buffer of 25%.
    fn default() -> Self {
        Self {
            initial: 20,
            min_limit: 3,
            max_limit: 1000,
            interval: Duration::from_millis(100),
            percentile: 50,
            min_rtt_interval: Duration::from_secs(60),
            min_rtt_requests: 50,
            min_concurrency: 3,
            buffer: 25,
            jitter: 15,
            seed: None,
        }
    }
}

/// Options an [`AdaptiveLimit`] cannot work with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdaptiveOptionsError {
    option: &'static str,
    problem: &'static str,
}

impl fmt::Display for AdaptiveOptionsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "adaptive concurrency: {} {}", self.option, self.problem)
    }
}

impl std::error::Error for AdaptiveOptionsError {}

impl AdaptiveOptions {
    /// The limit before any latency is known (default 20).
    #[must_use]
    pub fn initial(mut self, limit: u32) -> Self {
        self.initial = limit;
        self
    }

    /// The lowest the limit goes (default 3, at least 1).
    #[must_use]
    pub fn min_limit(mut self, limit: u32) -> Self {
        self.min_limit = limit;
        self
    }

    /// The highest the limit goes (default 1,000).
    #[must_use]
    pub fn max_limit(mut self, limit: u32) -> Self {
        self.max_limit = limit;
        self
    }

    /// How often the limit moves (default 100 ms).
    #[must_use]
    pub fn interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    /// The percentile of a window's latencies it goes by, 1 to 100
    /// (default 50).
    #[must_use]
    pub fn percentile(mut self, percentile: u8) -> Self {
        self.percentile = percentile;
        self
    }

    /// How often the idle latency is measured again (default 60 s).
    #[must_use]
    pub fn min_rtt_interval(mut self, interval: Duration) -> Self {
        self.min_rtt_interval = interval;
        self
    }

    /// Requests the idle latency is measured over (default 50).
    #[must_use]
    pub fn min_rtt_requests(mut self, requests: u32) -> Self {
        self.min_rtt_requests = requests;
        self
    }

    /// The limit while the idle latency is measured (default 3).
    #[must_use]
    pub fn min_concurrency(mut self, limit: u32) -> Self {
        self.min_concurrency = limit;
        self
    }

    /// How much above the idle latency a window may be, in percent, before
    /// the limit falls (default 25).
    #[must_use]
    pub fn buffer(mut self, percent: u8) -> Self {
        self.buffer = percent;
        self
    }

    /// The spread of `min_rtt_interval`, in percent (default 15), so many
    /// proxies do not measure at once.
    #[must_use]
    pub fn jitter(mut self, percent: u8) -> Self {
        self.jitter = percent;
        self
    }

    /// The same jitter and sampling on every run, for tests.
    #[must_use]
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// The limit, on the time-stamp counter.
    ///
    /// # Errors
    ///
    /// Options it cannot work with, named.
    pub fn build(&self) -> Result<AdaptiveLimit, AdaptiveOptionsError> {
        Ok(AdaptiveLimit::with_time(self.check()?, Time::counter()))
    }

    /// The limit, on `clock` (a `ManualClock` makes it exact in tests).
    ///
    /// # Errors
    ///
    /// As [`build`](Self::build).
    pub fn build_with_clock(
        &self,
        clock: impl Clock + 'static,
    ) -> Result<AdaptiveLimit, AdaptiveOptionsError> {
        Ok(AdaptiveLimit::with_time(self.check()?, Time::custom(clock)))
    }

    fn check(&self) -> Result<Settings, AdaptiveOptionsError> {
        fn error<V>(
            option: &'static str,
            problem: &'static str,
        ) -> Result<V, AdaptiveOptionsError> {
            Err(AdaptiveOptionsError { option, problem })
        }
        let nanos = |option, duration: Duration| match Nanos::exact(duration) {
            Some(nanos) if nanos > 0 => Ok(nanos),
            _ => error(option, "must be above zero and below 584 years"),
        };
        if self.min_limit == 0 {
            return error("min_limit", "must be at least 1");
        }
        if self.max_limit < self.min_limit {
            return error("max_limit", "must be at least min_limit");
        }
        if !(self.min_limit..=self.max_limit).contains(&self.initial) {
            return error("initial", "must be within min_limit..=max_limit");
        }
        if self.min_concurrency == 0 {
            return error("min_concurrency", "must be at least 1");
        }
        if !(1..=100).contains(&self.percentile) {
            return error("percentile", "must be within 1..=100");
        }
        if self.min_rtt_requests == 0 {
            return error("min_rtt_requests", "must be at least 1");
        }
        if self.jitter > 100 {
            return error("jitter", "must be within 0..=100");
        }
        Ok(Settings {
            initial: self.initial,
            min_limit: self.min_limit,
            max_limit: self.max_limit,
            interval: nanos("interval", self.interval)?,
            percentile: u32::from(self.percentile),
            min_rtt_interval: nanos("min_rtt_interval", self.min_rtt_interval)?,
            min_rtt_requests: self.min_rtt_requests,
            min_concurrency: self.min_concurrency,
            buffer: u32::from(self.buffer),
            jitter: u32::from(self.jitter),
            seed: self.seed.unwrap_or_else(rand::random),
        })
    }
}

/// A concurrency limit that follows the backends' latency.
///
/// A handle: clones share one limit, and every permit holds a clone, so a
/// permit is `'static` and may outlive the handle. `Send + Sync`.
///
/// # Examples
///
/// ```
/// use loadbalance::limit::AdaptiveOptions;
/// use loadbalance::ManualClock;
/// use std::sync::Arc;
/// use std::time::Duration;
///
/// let clock = Arc::new(ManualClock::new());
/// let limit = AdaptiveOptions::default()
///     .min_rtt_requests(2)
///     .seed(1)
///     .build_with_clock(Arc::clone(&clock))?;
/// // First the idle latency, at a concurrency of 3.
/// assert_eq!(limit.limit(), 3);
/// for _ in 0..2 {
///     let permit = limit.try_acquire()?;
///     clock.advance(Duration::from_millis(10));
///     permit.finish();
/// }
/// assert_eq!(limit.min_rtt(), Some(Duration::from_millis(10)));
/// assert_eq!(limit.limit(), 20, "then the initial limit, to move from");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct AdaptiveLimit {
    shared: Arc<Shared>,
}

struct Shared {
    word: Word,
    gradient: Mutex<Gradient>,
    /// The stamp of the min-RTT window a request admitted now falls in
    /// (Relaxed: a stamp read a moment late only skips one sample).
    epoch: AtomicU64,
    time: Time,
    admitted: AtomicU64,
    shed: AtomicU64,
}

/// A request shed: the adaptive limit is reached (a 503).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shed {
    /// The limit in effect.
    pub limit: u32,
    /// The requests in flight then.
    pub in_flight: u32,
}

impl Shed {
    /// The HTTP status for it.
    pub fn status(self) -> u16 {
        503
    }
}

impl fmt::Display for Shed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "shed: {} requests in flight, the adaptive limit is {}",
            self.in_flight, self.limit
        )
    }
}

impl std::error::Error for Shed {}

/// Counters of an [`AdaptiveLimit`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AdaptiveStats {
    /// The limit now.
    pub limit: u32,
    /// Permits alive now.
    pub in_flight: u32,
    /// Requests admitted.
    pub admitted: u64,
    /// Requests shed.
    pub shed: u64,
}

impl AdaptiveLimit {
    fn with_time(settings: Settings, time: Time) -> Self {
        let gradient = Gradient::new(settings);
        Self {
            shared: Arc::new(Shared {
                word: Word::new(gradient.limit()),
                epoch: AtomicU64::new(gradient.epoch()),
                gradient: Mutex::new(gradient),
                time,
                admitted: AtomicU64::new(0),
                shed: AtomicU64::new(0),
            }),
        }
    }

    /// A permit if fewer than the limit are in flight, at once.
    ///
    /// # Errors
    ///
    /// [`Shed`] at the limit.
    #[inline]
    pub fn try_acquire(&self) -> Result<AdaptivePermit, Shed> {
        use std::sync::atomic::Ordering::Relaxed;
        let shared = &self.shared;
        match shared.word.try_take() {
            Ok(()) => {
                // Relaxed, all three: counters and a stamp (see `Shared`).
                shared.admitted.fetch_add(1, Relaxed);
                Ok(AdaptivePermit {
                    limit: self.clone(),
                    started: shared.time.nanos(),
                    epoch: shared.epoch.load(Relaxed),
                })
            }
            Err((limit, in_flight)) => {
                shared.shed.fetch_add(1, Relaxed);
                Err(Shed { limit, in_flight })
            }
        }
    }

    /// The limit now.
    pub fn limit(&self) -> u32 {
        self.shared.word.get().0
    }

    /// The idle latency measured last, if one was.
    pub fn min_rtt(&self) -> Option<Duration> {
        let gradient = self.shared.gradient.lock();
        gradient.min_rtt().map(Duration::from_nanos)
    }

    /// The limit, the permits alive and the counts so far.
    pub fn stats(&self) -> AdaptiveStats {
        use std::sync::atomic::Ordering::Relaxed;
        let (limit, in_flight) = self.shared.word.get();
        AdaptiveStats {
            limit,
            in_flight,
            // Relaxed: figures to report.
            admitted: self.shared.admitted.load(Relaxed),
            shed: self.shared.shed.load(Relaxed),
        }
    }

    /// Hands a finished request's latency to the algorithm.
    fn sample(&self, latency: u64, epoch: u64) {
        let shared = &self.shared;
        let now = shared.time.nanos();
        // Tried, not waited for: a completion never blocks on another.
        let Some(mut gradient) = shared.gradient.try_lock() else {
            return;
        };
        if let Some(limit) = gradient.sample(latency, epoch, now) {
            shared.word.set_limit(limit);
            // Relaxed: a stamp (see `Shared`).
            shared
                .epoch
                .store(gradient.epoch(), std::sync::atomic::Ordering::Relaxed);
        }
    }
}

impl fmt::Debug for AdaptiveLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdaptiveLimit")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

/// One request admitted by an [`AdaptiveLimit`]: its slot comes back when
/// it drops. [`finish`](Self::finish) (or [`record`](Self::record)) also
/// teaches the limit the request's latency; a permit dropped without
/// either (a request cancelled) teaches nothing.
#[must_use = "the slot comes back when the permit drops"]
pub struct AdaptivePermit {
    limit: AdaptiveLimit,
    started: u64,
    epoch: u64,
}

impl AdaptivePermit {
    /// The request ended now: its latency since the permit was taken is
    /// a sample (a timed-out request's too: it is as slow as that).
    pub fn finish(self) {
        let now = self.limit.shared.time.nanos();
        let latency = now.saturating_sub(self.started);
        self.limit.sample(latency, self.epoch);
    }

    /// The request ended with `latency`, measured by the caller.
    pub fn record(self, latency: Duration) {
        self.limit.sample(Nanos::saturating(latency), self.epoch);
    }
}

impl Drop for AdaptivePermit {
    fn drop(&mut self) {
        self.limit.shared.word.give_back();
    }
}

impl fmt::Debug for AdaptivePermit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdaptivePermit").finish_non_exhaustive()
    }
}
