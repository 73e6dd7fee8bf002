//! What every backend of one balancer has in common ([`Common`]): the
//! clock, the health policy (changeable at run time), a count of backends
//! that need more than the plain pick path, and the slow-path step counter.

use std::fmt;
use std::sync::{Arc, OnceLock};

use crossbeam_utils::CachePadded;

use super::policy::PolicyCell;
use super::probes::{BoardSettings, ProbeBoard};
use super::{HealthPolicy, WhenAllEjected};
use crate::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use crate::time::{Clock, Nanos, SystemClock};

/// What a balancer (every snapshot of a live one) and its backends have in
/// common.
pub(crate) struct Common {
    clock: Arc<dyn Clock>,
    policy: PolicyCell,
    /// The algorithm steers by effective weights (smooth weighted
    /// round-robin, least-connections): only then do failures lower them.
    weighted: bool,
    /// Backends with any flag set (down, draining, backup, capped, ejected,
    /// degraded, ramping). While it is 0 and a pick carries no tried set,
    /// every algorithm takes its plain path: no clock read, no flag read.
    irregular: AtomicUsize,
    /// Picks taken on the slow path: the step counter that restores lowered
    /// effective weights, one unit a pick, as nginx.
    slow_picks: AtomicU64,
    /// The peak-EWMA decay time in nanoseconds, set by a latency-aware
    /// balancer; 0 while none uses these records (reports then skip the
    /// estimate).
    peak_decay: AtomicU64,
    /// The probe pool, made by the first probing balancer over these
    /// records and shared by its rebuilds.
    probes: OnceLock<Box<ProbeBoard>>,
    /// Guards alive over every backend, counted only by tables that ask
    /// (bounded-load hashing).
    total_active: CachePadded<AtomicUsize>,
    /// Picks waiting for a connection slot (`Pool::pick_wait`), woken one
    /// a freed slot.
    #[cfg(feature = "wait")]
    slots: event_listener::Event,
}

impl Common {
    pub(crate) fn new(clock: Arc<dyn Clock>, policy: HealthPolicy, weighted: bool) -> Arc<Self> {
        Arc::new(Self {
            clock,
            policy: PolicyCell::new(policy),
            weighted,
            irregular: AtomicUsize::new(0),
            slow_picks: AtomicU64::new(0),
            peak_decay: AtomicU64::new(0),
            probes: OnceLock::new(),
            total_active: CachePadded::new(AtomicUsize::new(0)),
            #[cfg(feature = "wait")]
            slots: event_listener::Event::new(),
        })
    }

    /// The real clock and nginx's default health policy.
    pub(crate) fn standard(weighted: bool) -> Arc<Self> {
        Self::new(
            Arc::new(SystemClock::new()),
            HealthPolicy::default(),
            weighted,
        )
    }

    /// Now, in nanoseconds of the balancer's clock.
    pub(crate) fn now(&self) -> u64 {
        Nanos::now(&*self.clock)
    }

    /// The health policy in force.
    pub(crate) fn policy(&self) -> HealthPolicy {
        self.policy.get()
    }

    /// Replaces the health policy; reports and picks use the new one from
    /// their next read.
    pub(crate) fn set_policy(&self, policy: HealthPolicy) {
        self.policy.set(policy);
    }

    /// How long slow start lasts, in nanoseconds (0: off).
    #[inline]
    pub(crate) fn slow_start_nanos(&self) -> u64 {
        // Relaxed: see `PolicyCell`.
        self.policy.slow_start.load(Ordering::Relaxed)
    }

    /// `fail_timeout` in nanoseconds.
    #[inline]
    pub(crate) fn fail_timeout_nanos(&self) -> u64 {
        // Relaxed: see `PolicyCell`.
        self.policy.fail_timeout.load(Ordering::Relaxed)
    }

    /// What a pick does when every candidate is ejected.
    pub(crate) fn when_all_ejected(&self) -> WhenAllEjected {
        // Relaxed: see `PolicyCell`.
        match self.policy.fail_when_all_ejected.load(Ordering::Relaxed) {
            0 => WhenAllEjected::Panic,
            _ => WhenAllEjected::Fail,
        }
    }

    /// Whether failures lower effective weights (see `weighted`).
    pub(crate) fn weighted(&self) -> bool {
        self.weighted
    }

    /// Whether every backend is plainly available at full weight.
    #[inline]
    pub(crate) fn regular(&self) -> bool {
        // Relaxed: a pick that must see a flag set by a call that returned
        // before it started is ordered after that call by whatever told it
        // the call returned; coherence then shows it this count or a later
        // one.
        self.irregular.load(Ordering::Relaxed) == 0
    }

    /// A backend's flags went from none to some (`+1`) or back (`-1`).
    pub(crate) fn irregular_changed(&self, became_irregular: bool) {
        // Relaxed: see `regular`.
        if became_irregular {
            self.irregular.fetch_add(1, Ordering::Relaxed);
        } else {
            self.irregular.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Takes one slow-path step and returns the step count before it.
    pub(crate) fn slow_step(&self) -> u64 {
        // Relaxed: a step counter; it orders nothing.
        self.slow_picks.fetch_add(1, Ordering::Relaxed)
    }

    /// Reports keep the peak-EWMA estimate, decaying over `nanos`.
    pub(crate) fn set_peak_decay(&self, nanos: u64) {
        // Relaxed: a report that misses it skips one sample.
        self.peak_decay.store(nanos, Ordering::Relaxed);
    }

    /// The peak-EWMA decay time, if a latency-aware balancer set one.
    #[inline]
    pub(crate) fn peak_decay(&self) -> Option<f64> {
        // Relaxed: see `set_peak_decay`.
        match self.peak_decay.load(Ordering::Relaxed) {
            0 => None,
            nanos => Some(nanos as f64),
        }
    }

    /// The probe pool with `settings`: made at the first call, configured
    /// anew at every later one (a rebuild).
    pub(crate) fn start_probes(&self, settings: BoardSettings) -> &ProbeBoard {
        let mut made = false;
        let board = self.probes.get_or_init(|| {
            made = true;
            Box::new(ProbeBoard::new(settings))
        });
        if !made {
            board.configure(settings);
        }
        board
    }

    /// The probe pool, if a probing balancer made one.
    #[inline]
    pub(crate) fn probes(&self) -> Option<&ProbeBoard> {
        self.probes.get().map(|board| &**board)
    }

    /// A counted guard was made (`true`) or dropped.
    #[inline]
    pub(crate) fn total_active_changed(&self, made: bool) {
        // Relaxed: a count that steers picks; it publishes nothing.
        if made {
            self.total_active.fetch_add(1, Ordering::Relaxed);
        } else {
            self.total_active.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// A connection slot was given back: one more waiting pick may go. (A
    /// waiter woken for a slot that another pick took waits again; one
    /// dropped after its wake-up passes the wake-up on.)
    #[inline]
    pub(crate) fn slot_freed(&self) {
        #[cfg(feature = "wait")]
        {
            use event_listener::IntoNotification;
            self.slots.notify(1.additional());
        }
    }

    /// Backends, limits or states changed: every waiting pick looks again.
    pub(crate) fn capacity_changed(&self) {
        #[cfg(feature = "wait")]
        self.slots.notify(usize::MAX);
    }

    /// A listener for the next freed slot, registered before the caller
    /// looks for one so that no slot freed in between is missed.
    #[cfg(feature = "wait")]
    pub(crate) fn listen_for_slot(&self) -> event_listener::EventListener {
        self.slots.listen()
    }

    /// Counted guards alive now.
    #[inline]
    pub(crate) fn total_active(&self) -> usize {
        // Relaxed: see `total_active_changed`.
        self.total_active.load(Ordering::Relaxed)
    }

    /// The slow-path step count now.
    pub(crate) fn slow_steps(&self) -> u64 {
        // Relaxed: see `slow_step`.
        self.slow_picks.load(Ordering::Relaxed)
    }
}

impl fmt::Debug for Common {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Common")
            .field("clock", &self.clock)
            .field("policy", &self.policy())
            .finish_non_exhaustive()
    }
}
