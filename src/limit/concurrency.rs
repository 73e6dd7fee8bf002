//! A global concurrency limit: at most `max` requests in flight at once,
//! each holding a [`Permit`] that gives its slot back when dropped, as a
//! balancer's [`Guard`](crate::Guard) gives back its connection (tower's
//! `limit/concurrency`, nginx's `limit_conn` for one zone).
//!
//! [`ConcurrencyLimit::try_acquire`] answers at once. With feature `wait`,
//! [`acquire`](ConcurrencyLimit::acquire) waits for a slot on any executor
//! and [`acquire_until`](ConcurrencyLimit::acquire_until) blocks the thread
//! until a deadline; each freed slot wakes one waiter, the one that has
//! waited longest.
//!
//! # Synchronization
//!
//! The count of permits alive is one `AtomicU32`, raised by
//! compare-and-swap only while it is below `max` and lowered once by each
//! permit's drop, so it never exceeds `max`, not even for a moment. The
//! raise is Acquire and the drop Release: what a holder did before giving
//! its slot back happens before what the next holder does with it, so a
//! limit of 1 guards data as a lock would.
//!
//! With feature `wait` the count is one half of a Dekker pair with a count
//! of waiters. A waiter counts itself, issues a SeqCst fence, registers
//! with the event, then looks at the count of permits; a drop lowers the
//! count of permits, issues a SeqCst fence, then reads the count of
//! waiters and notifies only if it is not 0. The two fences make one of
//! the two reads see the other's write: either the waiter finds the freed
//! slot itself, or the drop sees it waiting and wakes one waiter (and if
//! that waiter registered only after the wake-up, its look comes after the
//! freed slot, ordered by the event's lock). So a drop with no one waiting
//! takes no lock: the event is touched only while someone waits. (Fences,
//! not SeqCst accesses, as event-listener's own fast path: loom checks
//! fences exactly but treats SeqCst accesses as AcqRel.)
//!
//! The loom models `concurrency_limit_gives_the_last_slot_once` (two
//! threads race for the last slot), `concurrency_limit_hands_over_work`
//! (the next holder sees the last one's writes) and
//! `concurrency_limit_wakes_or_is_seen` (a drop racing a waiter: never
//! both miss) check the three claims; the event's part (the wake-up, and
//! one passed on by a waiter dropped after it) is event-listener's, checked
//! by `tests/limit/concurrency_limit.rs`.
//!
//! Without feature `wait` there is no count of waiters, no fence and no
//! event: a drop is one atomic subtraction (and the release of the
//! permit's reference to the limit).

use std::fmt;
use std::num::NonZeroU32;
use std::sync::Arc;

use crate::sync::atomic::{AtomicU32, Ordering};
#[cfg(any(feature = "wait", all(test, loom)))]
use crate::sync::atomic::{AtomicUsize, fence};

/// At most `max` requests in flight at once, each holding a [`Permit`].
///
/// A `ConcurrencyLimit` is a handle: clones share one limit (an `Arc`
/// inside, so no `Arc<ConcurrencyLimit>` is needed), and every permit holds
/// a clone, so a permit is `'static`, moves into a spawned task and may
/// outlive the handle it came from. `Send + Sync`; taking and giving back a
/// slot is lock-free: a compare-and-swap and a subtraction, besides the
/// permit's reference count.
///
/// A request that does not wait ([`try_acquire`](Self::try_acquire)) may
/// take a freed slot before a waiter woken for it looks; the waiter then
/// waits again, at the back. Under a steady stream of such requests a
/// waiter can wait long: use one way of asking per limit when that
/// matters.
///
/// # Examples
///
/// ```
/// use loadbalance::limit::ConcurrencyLimit;
/// use std::num::NonZeroU32;
///
/// let limit = ConcurrencyLimit::new(NonZeroU32::try_from(2)?);
/// let first = limit.try_acquire()?;
/// let second = limit.try_acquire()?;
/// assert!(limit.try_acquire().is_err()); // 2 in flight: at capacity
/// drop(first);
/// let third = limit.try_acquire()?; // the slot came back
/// assert_eq!(limit.in_flight(), 2);
/// # drop((second, third));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct ConcurrencyLimit {
    shared: Arc<Slots>,
}

/// What a limit's handles and permits share.
struct Slots {
    /// Permits alive, at most `max`.
    in_flight: AtomicU32,
    max: u32,
    /// `acquire` and `acquire_until` calls that found the limit full and
    /// have not yet returned or been dropped. (Also in the loom build
    /// without feature `wait`, whose model checks its half of the
    /// protocol.)
    #[cfg(any(feature = "wait", all(test, loom)))]
    waiters: AtomicUsize,
    /// Waiters for a freed slot, woken one a slot.
    #[cfg(feature = "wait")]
    freed: event_listener::Event,
}

impl ConcurrencyLimit {
    /// A limit of `max` requests in flight at once.
    ///
    /// `max` is a [`NonZeroU32`] because a limit of 0 is a question, not a
    /// limit: a configuration may mean "nothing gets in" or "no limit" by
    /// it, and the caller should say which (no limit at all, or refusing
    /// without a limiter) where it reads the number.
    ///
    /// # Examples
    ///
    /// ```
    /// use loadbalance::limit::ConcurrencyLimit;
    /// use std::num::NonZeroU32;
    ///
    /// let configured: u32 = 64;
    /// // 0 in this configuration means no limit.
    /// let limit = NonZeroU32::new(configured).map(ConcurrencyLimit::new);
    /// assert_eq!(limit.map(|limit| limit.max()), Some(64));
    /// ```
    pub fn new(max: NonZeroU32) -> Self {
        Self {
            shared: Arc::new(Slots {
                in_flight: AtomicU32::new(0),
                max: max.get(),
                #[cfg(any(feature = "wait", all(test, loom)))]
                waiters: AtomicUsize::new(0),
                #[cfg(feature = "wait")]
                freed: event_listener::Event::new(),
            }),
        }
    }

    /// A permit if fewer than `max` are in flight, at once and without
    /// waiting.
    ///
    /// # Errors
    ///
    /// [`AtCapacity`] when `max` permits are alive.
    ///
    /// # Examples
    ///
    /// ```
    /// use loadbalance::limit::{AtCapacity, ConcurrencyLimit};
    /// use std::num::NonZeroU32;
    ///
    /// let limit = ConcurrencyLimit::new(NonZeroU32::MIN);
    /// let permit = limit.try_acquire()?;
    /// let refused: AtCapacity = limit.try_acquire().unwrap_err();
    /// assert_eq!(refused.max, 1);
    /// assert_eq!(refused.to_string(), "at capacity: 1 request in flight, the most allowed");
    /// // The permit is 'static: it moves into another thread and frees its slot there.
    /// std::thread::spawn(move || drop(permit)).join().expect("no panic");
    /// assert_eq!(limit.in_flight(), 0);
    /// # Ok::<(), AtCapacity>(())
    /// ```
    #[inline]
    pub fn try_acquire(&self) -> Result<Permit, AtCapacity> {
        if self.try_take() {
            Ok(Permit {
                limit: self.clone(),
            })
        } else {
            Err(AtCapacity {
                max: self.shared.max,
            })
        }
    }

    /// Permits alive now (a snapshot: other threads may change it at once).
    pub fn in_flight(&self) -> u32 {
        // Relaxed: a figure to report; it decides nothing.
        self.shared.in_flight.load(Ordering::Relaxed)
    }

    /// The most permits alive at once.
    pub fn max(&self) -> u32 {
        self.shared.max
    }

    /// Takes a slot if one is free: the whole of `try_acquire` but the
    /// permit.
    #[inline]
    pub(crate) fn try_take(&self) -> bool {
        let max = self.shared.max;
        // Acquire on success: reads the Release of the drops before, so
        // their holders' work happens before this one's. Relaxed when full:
        // a refusal takes nothing (a waiter's look is ordered by its fence).
        self.shared
            .in_flight
            .fetch_update(Ordering::Acquire, Ordering::Relaxed, |in_flight| {
                (in_flight < max).then_some(in_flight + 1)
            })
            .is_ok()
    }

    /// Gives back a slot taken by `try_take`; `true` when a waiter may be
    /// waiting for it and must be woken.
    #[inline]
    pub(crate) fn give_back(&self) -> bool {
        // Release: publishes the holder's work to the next raise.
        self.shared.in_flight.fetch_sub(1, Ordering::Release);
        self.anyone_waiting()
    }

    /// Whether a waiter may be waiting, asked right after a slot was given
    /// back.
    #[cfg(any(feature = "wait", all(test, loom)))]
    #[inline]
    fn anyone_waiting(&self) -> bool {
        // SeqCst: the drop's fence of the Dekker pair (module docs),
        // paired with the fence in `waiter_arrives`.
        fence(Ordering::SeqCst);
        // Relaxed: ordered by the fence before it.
        self.shared.waiters.load(Ordering::Relaxed) != 0
    }

    /// Without waiting, no one waits.
    #[cfg(not(any(feature = "wait", all(test, loom))))]
    #[inline]
    fn anyone_waiting(&self) -> bool {
        false
    }

    /// Wakes one waiter for a slot just given back.
    #[inline]
    fn wake_one(&self) {
        #[cfg(feature = "wait")]
        {
            use event_listener::IntoNotification;
            // One more waiter, even if another was woken and has not yet
            // looked: each freed slot is worth one wake-up.
            self.shared.freed.notify(1.additional());
        }
    }

    /// A waiter arrives: from now on every drop looks at the event. Call
    /// before the waiter's registration and look.
    #[cfg(any(feature = "wait", all(test, loom)))]
    pub(crate) fn waiter_arrives(&self) {
        // Relaxed: ordered by the fence after it.
        self.shared.waiters.fetch_add(1, Ordering::Relaxed);
        // SeqCst: the waiter's fence of the Dekker pair (module docs),
        // paired with the fence in `anyone_waiting`.
        fence(Ordering::SeqCst);
    }

    /// A waiter got its permit, gave up, or was dropped.
    #[cfg(any(feature = "wait", all(test, loom)))]
    pub(crate) fn waiter_leaves(&self) {
        // Relaxed: a drop that still sees the waiter only notifies in
        // vain; every value after a waiter's arrival counts it until this.
        self.shared.waiters.fetch_sub(1, Ordering::Relaxed);
    }
}

impl fmt::Debug for ConcurrencyLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut debug = f.debug_struct("ConcurrencyLimit");
        debug
            .field("max", &self.max())
            .field("in_flight", &self.in_flight());
        #[cfg(feature = "wait")]
        debug.field("waiting", &self.waiting());
        debug.finish()
    }
}

/// One request counted against a [`ConcurrencyLimit`] until the permit is
/// dropped.
///
/// Dropping it gives the slot back on every path out of its scope,
/// unwinding included, and (feature `wait`) wakes one waiter. It holds a
/// handle to the limit, not a borrow: `Send`, `Sync` and `'static`, so it
/// can move into a spawned task with the request it counts.
///
/// # Examples
///
/// ```
/// use loadbalance::limit::ConcurrencyLimit;
/// use std::num::NonZeroU32;
///
/// let limit = ConcurrencyLimit::new(NonZeroU32::MIN);
/// let request = std::thread::spawn({
///     let permit = limit.try_acquire()?;
///     move || {
///         let _permit = permit; // held while the request runs
///         panic!("the handler failed");
///     }
/// });
/// assert!(request.join().is_err());
/// assert_eq!(limit.in_flight(), 0); // given back during the unwinding
/// # Ok::<(), loadbalance::limit::AtCapacity>(())
/// ```
#[must_use = "a permit gives its slot back as soon as it is dropped"]
pub struct Permit {
    limit: ConcurrencyLimit,
}

impl Drop for Permit {
    #[inline]
    fn drop(&mut self) {
        if self.limit.give_back() {
            self.limit.wake_one();
        }
    }
}

impl fmt::Debug for Permit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permit")
            .field("max", &self.limit.max())
            .finish_non_exhaustive()
    }
}

/// Why [`ConcurrencyLimit::try_acquire`] (or, at its deadline,
/// [`acquire_until`](ConcurrencyLimit::acquire_until)) returned no permit:
/// `max` permits are alive. Not now: one comes free when a permit drops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct AtCapacity {
    /// The limit's `max`, all of it in flight.
    pub max: u32,
}

impl fmt::Display for AtCapacity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let requests = if self.max == 1 { "request" } else { "requests" };
        write!(
            f,
            "at capacity: {} {requests} in flight, the most allowed",
            self.max
        )
    }
}

impl std::error::Error for AtCapacity {}

/// Waiting for a slot (feature `wait`). A waiter counts itself and
/// registers for the next freed slot before it looks, so no slot freed in
/// between is missed; each freed slot wakes one waiter, the one that has
/// waited longest (event-listener's queue is first in, first out); a
/// waiter dropped after its wake-up passes it on to the next.
#[cfg(feature = "wait")]
impl ConcurrencyLimit {
    /// A permit, waiting for one while `max` are in flight.
    ///
    /// Runtime-agnostic (no timer, no runtime) and cancellation-safe:
    /// dropping the future leaves no registration and no slot behind, and
    /// passes on a wake-up it had received. For a deadline, wrap it in
    /// your runtime's timeout, or block a thread with
    /// [`acquire_until`](Self::acquire_until).
    ///
    /// # Examples
    ///
    /// ```
    /// use loadbalance::limit::ConcurrencyLimit;
    /// use std::num::NonZeroU32;
    /// use std::time::Duration;
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_time().build()?.block_on(async {
    /// let limit = ConcurrencyLimit::new(NonZeroU32::MIN);
    /// let busy = limit.try_acquire()?;
    /// // Full for the whole 10 ms: the timeout drops the wait.
    /// let waited = tokio::time::timeout(Duration::from_millis(10), limit.acquire()).await;
    /// assert!(waited.is_err());
    /// assert_eq!(limit.waiting(), 0);
    /// // The slot comes back while a request waits: it gets it.
    /// let (permit, ()) = tokio::join!(limit.acquire(), async { drop(busy) });
    /// assert_eq!(limit.in_flight(), 1);
    /// # drop(permit);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # })?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub async fn acquire(&self) -> Permit {
        if let Ok(permit) = self.try_acquire() {
            return permit;
        }
        let _waiting = Waiting::new(self);
        loop {
            let listener = self.shared.freed.listen();
            if let Ok(permit) = self.try_acquire() {
                return permit;
            }
            listener.await;
        }
    }

    /// As [`acquire`](Self::acquire), blocking the thread until
    /// `deadline`.
    ///
    /// # Errors
    ///
    /// [`AtCapacity`] when the deadline passed with `max` permits still
    /// alive.
    ///
    /// # Examples
    ///
    /// ```
    /// use loadbalance::limit::ConcurrencyLimit;
    /// use std::num::NonZeroU32;
    /// use std::time::{Duration, Instant};
    ///
    /// let limit = ConcurrencyLimit::new(NonZeroU32::MIN);
    /// let busy = limit.try_acquire()?;
    /// let soon = Instant::now() + Duration::from_millis(10);
    /// assert!(limit.acquire_until(soon).is_err());
    /// // Freed by another thread before the deadline: this one gets it.
    /// std::thread::spawn(move || drop(busy));
    /// let permit = limit.acquire_until(Instant::now() + Duration::from_secs(30))?;
    /// # drop(permit);
    /// # Ok::<(), loadbalance::limit::AtCapacity>(())
    /// ```
    pub fn acquire_until(&self, deadline: std::time::Instant) -> Result<Permit, AtCapacity> {
        use event_listener::Listener;

        if let Ok(permit) = self.try_acquire() {
            return Ok(permit);
        }
        let _waiting = Waiting::new(self);
        loop {
            let listener = self.shared.freed.listen();
            if let Ok(permit) = self.try_acquire() {
                return Ok(permit);
            }
            if listener.wait_deadline(deadline).is_none() {
                return self.try_acquire();
            }
        }
    }

    /// Calls to [`acquire`](Self::acquire) and
    /// [`acquire_until`](Self::acquire_until) waiting now (a snapshot):
    /// the queue's length, for metrics.
    ///
    /// # Examples
    ///
    /// ```
    /// use loadbalance::limit::ConcurrencyLimit;
    /// use std::num::NonZeroU32;
    ///
    /// let limit = ConcurrencyLimit::new(NonZeroU32::MIN);
    /// let busy = limit.try_acquire()?;
    /// let (permit, ()) = futures_lite::future::block_on(futures_lite::future::zip(
    ///     limit.acquire(),
    ///     async {
    ///         futures_lite::future::yield_now().await; // the acquire is waiting
    ///         assert_eq!(limit.waiting(), 1);
    ///         drop(busy);
    ///     },
    /// ));
    /// assert_eq!((limit.waiting(), limit.in_flight()), (0, 1));
    /// # drop(permit);
    /// # Ok::<(), loadbalance::limit::AtCapacity>(())
    /// ```
    pub fn waiting(&self) -> usize {
        // Relaxed: a figure to report; it decides nothing.
        self.shared.waiters.load(Ordering::Relaxed)
    }
}

/// Counts one waiter for as long as it lives: however the wait ends,
/// returned, timed out or dropped mid-wait.
#[cfg(feature = "wait")]
struct Waiting<'a>(&'a ConcurrencyLimit);

#[cfg(feature = "wait")]
impl<'a> Waiting<'a> {
    fn new(limit: &'a ConcurrencyLimit) -> Self {
        limit.waiter_arrives();
        Self(limit)
    }
}

#[cfg(feature = "wait")]
impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.waiter_leaves();
    }
}
