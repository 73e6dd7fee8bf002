//! Waiting for another thread without spinning.

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
