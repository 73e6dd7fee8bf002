//! Retries over distinct backends, bounded by an attempt limit and by a
//! retry budget (Finagle's `RetryBudget`, tower's `TpsBudget`): retries
//! may be at most a configured share of requests, so that a failing
//! upstream is not hit by a retry storm on top of its load.
//!
//! # Synchronization
//!
//! The budget's balance (milli-tokens) is one atomic word changed by
//! `fetch_update`: a deposit adds, a withdrawal takes a whole token only if
//! the balance holds one, so concurrent withdrawals never spend a token
//! twice. The time-based allowance is added by whichever caller moves the
//! refill stamp forward with a compare-and-swap, so each interval is added
//! once. Neither publishes other data: every access is Relaxed.

use std::fmt;
use std::future::Future;
use std::sync::Arc;

use super::{Pool, PoolBackend};
use crate::error::PickError;
use crate::pick::{Context, Tried};
use crate::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use crate::time::{Clock, Nanos, SystemClock};

/// One token, in the balance's unit.
const TOKEN: i64 = 1_000;

/// How many retries a stream of requests may make: `percent`% of the
/// requests, plus `min_per_second` a second, with at most `burst` saved
/// up. Share one budget (an `Arc`) between every request to an upstream.
///
/// # Examples
///
/// ```
/// use loadbalance::RetryBudget;
///
/// // Retries at most 20% of requests, plus one a second; 10 saved at most.
/// let budget = RetryBudget::new(20, 1, 10);
/// assert!(budget.try_withdraw()); // starts with its burst
/// for _ in 0..5 {
///     budget.deposit(); // five requests earn one retry
/// }
/// ```
pub struct RetryBudget {
    /// Milli-tokens one request earns: `percent * 10`.
    per_request: i64,
    /// Milli-tokens a second of time earns.
    per_second: i64,
    /// The most milli-tokens the balance holds.
    cap: i64,
    balance: AtomicI64,
    /// Up to when the time allowance is counted in, in nanoseconds.
    refilled_to: AtomicU64,
    clock: Arc<dyn Clock>,
}

impl RetryBudget {
    /// A budget of `percent`% of requests plus `min_per_second` retries a
    /// second, saving at most `burst` retries (at least one) and starting
    /// with `burst`.
    pub fn new(percent: u32, min_per_second: u32, burst: u32) -> Self {
        Self::with_clock(percent, min_per_second, burst, SystemClock::new())
    }

    /// As [`new`](Self::new), with the clock the time allowance reads.
    pub fn with_clock(
        percent: u32,
        min_per_second: u32,
        burst: u32,
        clock: impl Clock + 'static,
    ) -> Self {
        let clock: Arc<dyn Clock> = Arc::new(clock);
        Self {
            per_request: i64::from(percent) * TOKEN / 100,
            per_second: i64::from(min_per_second) * TOKEN,
            // At least one token, or shares of one could never add up.
            cap: i64::from(burst.max(1)) * TOKEN,
            balance: AtomicI64::new(i64::from(burst) * TOKEN),
            refilled_to: AtomicU64::new(Nanos::now(&*clock)),
            clock,
        }
    }

    /// A request was made: it earns its share of a retry.
    pub fn deposit(&self) {
        self.refill();
        self.add(self.per_request);
    }

    /// Takes one retry from the budget; `false` when it has none.
    pub fn try_withdraw(&self) -> bool {
        self.refill();
        // Relaxed: see the module docs.
        self.balance
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |balance| {
                (balance >= TOKEN).then_some(balance - TOKEN)
            })
            .is_ok()
    }

    /// Whole retries the budget holds now.
    pub fn available(&self) -> u32 {
        self.refill();
        // Relaxed: see the module docs.
        u32::try_from(self.balance.load(Ordering::Relaxed) / TOKEN).unwrap_or(u32::MAX)
    }

    fn add(&self, amount: i64) {
        let cap = self.cap;
        // Relaxed: see the module docs.
        let _ = self
            .balance
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |balance| {
                Some(balance.saturating_add(amount).min(cap))
            });
    }

    /// Counts in the time allowance since the last refill, once.
    fn refill(&self) {
        if self.per_second == 0 {
            return;
        }
        let now = Nanos::now(&*self.clock);
        // Relaxed: see the module docs.
        let last = self.refilled_to.load(Ordering::Relaxed);
        let elapsed = now.saturating_sub(last);
        // Less than a milli-token's worth: wait for more.
        let earned = i64::try_from(u128::from(elapsed) * self.per_second as u128 / 1_000_000_000)
            .unwrap_or(i64::MAX);
        if earned == 0 {
            return;
        }
        if self
            .refilled_to
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        {
            self.add(earned);
        }
    }
}

impl fmt::Debug for RetryBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryBudget")
            .field("percent", &(self.per_request * 100 / TOKEN))
            .field("min_per_second", &(self.per_second / TOKEN))
            .field("available", &self.available())
            .finish()
    }
}

/// What a request may do when an attempt fails: how many attempts in all,
/// and the budget its retries draw from.
///
/// # Examples
///
/// ```
/// use loadbalance::{RetryBudget, RetryPolicy};
/// use std::sync::Arc;
///
/// let policy = RetryPolicy::attempts(3).budget(Arc::new(RetryBudget::new(20, 10, 100)));
/// # drop(policy);
/// ```
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    attempts: u32,
    budget: Option<Arc<RetryBudget>>,
}

impl RetryPolicy {
    /// At most `attempts` attempts in all (the first included; 0 counts
    /// as 1), each on a backend not tried yet, without a budget.
    pub fn attempts(attempts: u32) -> Self {
        Self {
            attempts: attempts.max(1),
            budget: None,
        }
    }

    /// Retries also need a token from `budget`, and every request deposits
    /// in it.
    #[must_use]
    pub fn budget(mut self, budget: Arc<RetryBudget>) -> Self {
        self.budget = Some(budget);
        self
    }
}

// The one rule every retrying caller (`Pool::run`, the tower service)
// follows.
impl RetryPolicy {
    /// A request starts: it earns its share of the budget.
    pub(crate) fn start(&self) {
        if let Some(budget) = &self.budget {
            budget.deposit();
        }
    }

    /// Whether a request that has tried `tried` of `backends` backends may
    /// make another attempt, budget aside.
    pub(crate) fn may_retry(&self, tried: usize, backends: usize) -> bool {
        tried < self.attempts as usize && tried < backends
    }

    /// Takes the token a retry needs (always there without a budget).
    pub(crate) fn withdraw(&self) -> bool {
        self.budget.as_ref().is_none_or(|b| b.try_withdraw())
    }
}

/// How an attempt went, as the caller's classifier says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// It worked: reported as a success, and the request is done.
    Success,
    /// It failed and another backend may do better (a refused connection,
    /// a 502 or 503): reported as a failure, and retried if the policy and
    /// budget allow.
    Retry,
    /// It failed and a retry would not help (the request itself is bad):
    /// reported as a failure, and the request is done.
    Fail,
}

/// Why a request ended without an attempt's result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RetryError<E> {
    /// No backend could take the first attempt.
    Pick(PickError),
    /// The last attempt's error.
    Attempt(E),
}

impl<E: fmt::Display> fmt::Display for RetryError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Pick(error) => write!(f, "no backend could take the request: {error}"),
            Self::Attempt(error) => write!(f, "the last attempt failed: {error}"),
        }
    }
}

impl<E: fmt::Debug + fmt::Display> std::error::Error for RetryError<E> {}

impl<T: PoolBackend + Clone> Pool<T> {
    /// Runs one request: `attempt` on a picked backend, classified by
    /// `classify`, reported with its latency, and retried on a backend not
    /// tried yet while the verdict is [`Verdict::Retry`] and the policy's
    /// attempts and budget allow. Returns the last attempt's result (an
    /// `Ok` classified as a failure included, such as a 503 response to
    /// forward), or why no backend could take the first attempt.
    ///
    /// Cancellation-safe: dropped mid-attempt, the request reports nothing
    /// and gives its backend back.
    ///
    /// # Examples
    ///
    /// ```
    /// use loadbalance::{Algorithm, Backend, Context, Pool, RetryPolicy, Verdict};
    ///
    /// let pool = Pool::builder(Algorithm::RoundRobin)
    ///     .build([Backend::new("down:80"), Backend::new("up:80")])?;
    /// let (ctx, policy) = (Context::new(), RetryPolicy::attempts(2));
    /// let request = pool.run(
    ///     &ctx,
    ///     &policy,
    ///     |backend| async move {
    ///         if backend == "down:80" { Err("refused") } else { Ok(200) }
    ///     },
    ///     |result| if result.is_ok() { Verdict::Success } else { Verdict::Retry },
    /// );
    /// // Any executor runs it; this one is a single poll loop.
    /// let status = futures_lite::future::block_on(request)?;
    /// assert_eq!(status, 200);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`RetryError::Pick`] when no backend could take the first attempt;
    /// [`RetryError::Attempt`] with the last attempt's error.
    pub async fn run<R, E, F, Fut>(
        &self,
        ctx: &Context<'_>,
        policy: &RetryPolicy,
        mut attempt: F,
        classify: impl Fn(&Result<R, E>) -> Verdict,
    ) -> Result<R, RetryError<E>>
    where
        F: FnMut(T) -> Fut,
        Fut: Future<Output = Result<R, E>>,
    {
        policy.start();
        let mut tried = Tried::new();
        let mut last: Option<Result<R, E>> = None;
        loop {
            let picked = match self.pick(&ctx.with_tried(&tried)) {
                Ok(picked) => picked,
                // A retry that finds no backend left ends with the attempt
                // before it.
                Err(error) => {
                    return match last {
                        Some(result) => result.map_err(RetryError::Attempt),
                        None => Err(RetryError::Pick(error)),
                    };
                }
            };
            tried.insert(picked.guard());
            let result = attempt((*picked).clone()).await;
            let verdict = classify(&result);
            picked.finish(verdict == Verdict::Success);
            let retry = verdict == Verdict::Retry
                && policy.may_retry(tried.len(), self.len())
                && policy.withdraw();
            if !retry {
                return result.map_err(RetryError::Attempt);
            }
            last = Some(result);
        }
    }
}
