//! The atomics and locks of the crate, in one place so that a `cfg(loom)`
//! build swaps in loom's types and the loom models check the protocols that
//! use them (as tokio and crossbeam do).
//!
//! Under loom only the models in `crate::loom_models` run: loom's types work
//! only inside `loom::model`.

#[cfg(not(loom))]
pub(crate) use std::sync::atomic;

#[cfg(loom)]
pub(crate) use loom::sync::atomic;

/// A mutual-exclusion lock with `parking_lot`'s interface: no poisoning,
/// `try_lock` answers `Option`.
#[derive(Debug, Default)]
pub(crate) struct Mutex<T> {
    #[cfg(not(loom))]
    inner: parking_lot::Mutex<T>,
    #[cfg(loom)]
    inner: loom::sync::Mutex<T>,
}

#[cfg(not(loom))]
pub(crate) type MutexGuard<'a, T> = parking_lot::MutexGuard<'a, T>;
#[cfg(loom)]
pub(crate) type MutexGuard<'a, T> = loom::sync::MutexGuard<'a, T>;

impl<T> Mutex<T> {
    pub(crate) fn new(value: T) -> Self {
        Self {
            #[cfg(not(loom))]
            inner: parking_lot::Mutex::new(value),
            #[cfg(loom)]
            inner: loom::sync::Mutex::new(value),
        }
    }

    #[inline]
    pub(crate) fn lock(&self) -> MutexGuard<'_, T> {
        #[cfg(not(loom))]
        return self.inner.lock();
        #[cfg(loom)]
        return self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
    }

    /// The lock if it is free now; `None` rather than waiting.
    #[inline]
    pub(crate) fn try_lock(&self) -> Option<MutexGuard<'_, T>> {
        #[cfg(not(loom))]
        return self.inner.try_lock();
        #[cfg(loom)]
        return self.inner.try_lock().ok();
    }
}

/// Waits between checks of a condition another thread will make true: a
/// few yields, then sleeps that double up to a millisecond, so a long wait
/// costs next to no CPU and a short one little latency.
#[derive(Debug, Default)]
pub(crate) struct Backoff {
    round: u32,
}

impl Backoff {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    pub(crate) fn wait(&mut self) {
        #[cfg(loom)]
        loom::thread::yield_now();
        #[cfg(not(loom))]
        {
            if self.round < 4 {
                std::thread::yield_now();
            } else {
                let micros = 1u64 << (self.round - 4).min(10);
                std::thread::sleep(std::time::Duration::from_micros(micros));
            }
        }
        self.round = self.round.saturating_add(1);
    }
}
