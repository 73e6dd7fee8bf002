//! The gradient algorithm (Envoy's adaptive concurrency filter, after
//! Netflix's concurrency-limits): the limit follows the ratio of the
//! latency the backends show when idle to the latency they show now.
//!
//! - **The idle latency (min RTT)** is measured in a window where the limit
//!   is pinned low (`min_concurrency`): the percentile of the first
//!   `min_rtt_requests` requests admitted in it. One such window at the
//!   start, then one every `min_rtt_interval` (with jitter, so that many
//!   proxies do not pin together); the limit comes back to what it was
//!   after each.
//! - **Every `interval`**, the percentile of the latencies of the requests
//!   that ended in it is the sample RTT, and
//!   `gradient = clamp(min_rtt × (1 + buffer) / sample_rtt, 0.5, 2)`;
//!   the new limit is `⌈gradient × limit⌉ + ⌊√⌈gradient × limit⌉⌋`
//!   (the square root is headroom, so a limit finds room above what the
//!   backends take), within `min_limit..=max_limit`.
//!
//! Queues grow only past the backends' capacity, and then the latency
//! grows with them: the limit falls until the queue is gone, and excess
//! requests are shed at once rather than queued.
//!
//! Sequential: the caller serialises it (a mutex) and gives it the time.

/// Latencies kept a window; past this, a sample replaces a kept one at
/// random (a reservoir), so a window's memory is bounded whatever the rate.
pub(super) const MAX_SAMPLES: usize = 1024;

/// The algorithm's settings, checked (`AdaptiveOptions::check`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct Settings {
    pub(super) initial: u32,
    pub(super) min_limit: u32,
    pub(super) max_limit: u32,
    /// Nanoseconds.
    pub(super) interval: u64,
    /// 1 to 100.
    pub(super) percentile: u32,
    /// Nanoseconds.
    pub(super) min_rtt_interval: u64,
    pub(super) min_rtt_requests: u32,
    pub(super) min_concurrency: u32,
    /// Percent of the min RTT.
    pub(super) buffer: u32,
    /// Percent of `min_rtt_interval`.
    pub(super) jitter: u32,
    pub(super) seed: u64,
}

/// What the algorithm is doing.
#[derive(Clone, Debug, PartialEq)]
enum Phase {
    /// Measuring the min RTT: the limit is pinned; `restore` is the limit
    /// to come back to.
    MinRtt { restore: u32 },
    /// Following the gradient; a window started at `since`; the next min
    /// RTT window at `next_min_rtt`.
    Sampling { since: u64, next_min_rtt: u64 },
}

/// The state of the algorithm.
#[derive(Clone, Debug)]
pub(super) struct Gradient {
    settings: Settings,
    limit: u32,
    /// Nanoseconds; none before the first window ends.
    min_rtt: Option<u64>,
    phase: Phase,
    /// Stamps the min-RTT windows: a request counts in one only if it was
    /// admitted in it.
    epoch: u64,
    samples: Vec<u64>,
    /// Samples offered this window (the reservoir's count).
    offered: u64,
    /// Draws of the jitter and the reservoir.
    draws: u64,
}

impl Gradient {
    /// Starts with a min-RTT window at `now`.
    pub(super) fn new(settings: Settings) -> Self {
        Self {
            settings,
            limit: settings.min_concurrency,
            min_rtt: None,
            phase: Phase::MinRtt {
                restore: settings.initial,
            },
            epoch: 1,
            samples: Vec::with_capacity(MAX_SAMPLES),
            offered: 0,
            draws: 0,
        }
    }

    /// The limit now.
    pub(super) fn limit(&self) -> u32 {
        self.limit
    }

    /// The min RTT measured last, in nanoseconds.
    pub(super) fn min_rtt(&self) -> Option<u64> {
        self.min_rtt
    }

    /// The stamp a request admitted now carries.
    pub(super) fn epoch(&self) -> u64 {
        self.epoch
    }

    /// A request admitted under stamp `epoch` ended at `now` after
    /// `latency` nanoseconds; the new limit if it changed.
    pub(super) fn sample(&mut self, latency: u64, epoch: u64, now: u64) -> Option<u32> {
        let before = self.limit;
        match self.phase {
            Phase::MinRtt { restore } => {
                if epoch != self.epoch {
                    return None; // admitted before the window: not idle
                }
                self.keep(latency);
                if self.offered >= u64::from(self.settings.min_rtt_requests) {
                    self.min_rtt = Some(self.percentile().max(1));
                    self.limit = restore.clamp(self.settings.min_limit, self.settings.max_limit);
                    self.start_sampling(now);
                }
            }
            Phase::Sampling {
                since,
                next_min_rtt,
            } => {
                self.keep(latency);
                if now.saturating_sub(since) >= self.settings.interval {
                    self.update();
                    if now >= next_min_rtt {
                        self.start_min_rtt();
                    } else {
                        self.phase = Phase::Sampling {
                            since: now,
                            next_min_rtt,
                        };
                        self.clear();
                    }
                }
            }
        }
        (self.limit != before).then_some(self.limit)
    }

    /// The limit from this window's sample RTT.
    fn update(&mut self) {
        let (Some(min_rtt), false) = (self.min_rtt, self.samples.is_empty()) else {
            return;
        };
        let sample_rtt = self.percentile().max(1) as f64;
        let allowed = min_rtt as f64 * (1.0 + f64::from(self.settings.buffer) / 100.0);
        let gradient = (allowed / sample_rtt).clamp(0.5, 2.0);
        let scaled = (gradient * f64::from(self.limit)).ceil();
        let next = scaled + scaled.sqrt().floor();
        self.limit = (next.min(f64::from(u32::MAX)) as u32)
            .clamp(self.settings.min_limit, self.settings.max_limit);
    }

    fn start_sampling(&mut self, now: u64) {
        let interval = self.settings.min_rtt_interval;
        let spread = interval / 100 * u64::from(self.settings.jitter);
        let jitter = match spread {
            0 => 0,
            spread => self.draw() % (spread + 1),
        };
        self.phase = Phase::Sampling {
            since: now,
            next_min_rtt: now.saturating_add(interval).saturating_add(jitter),
        };
        self.clear();
    }

    fn start_min_rtt(&mut self) {
        self.phase = Phase::MinRtt {
            restore: self.limit,
        };
        self.limit = self.settings.min_concurrency;
        self.epoch += 1;
        self.clear();
    }

    fn clear(&mut self) {
        self.samples.clear();
        self.offered = 0;
    }

    /// Keeps a latency: every one up to `MAX_SAMPLES`, then each with
    /// the chance a reservoir gives it.
    fn keep(&mut self, latency: u64) {
        self.offered += 1;
        if self.samples.len() < MAX_SAMPLES {
            self.samples.push(latency);
        } else {
            let at = self.draw() % self.offered;
            if let Some(kept) = self.samples.get_mut(at as usize) {
                *kept = latency;
            }
        }
    }

    /// The settings' percentile of the kept latencies (some kept).
    fn percentile(&mut self) -> u64 {
        let n = self.samples.len();
        let rank = (n * self.settings.percentile as usize)
            .div_ceil(100)
            .clamp(1, n);
        let (_, value, _) = self.samples.select_nth_unstable(rank - 1);
        *value
    }

    fn draw(&mut self) -> u64 {
        self.draws += 1;
        crate::mix::splitmix(self.settings.seed.wrapping_add(self.draws))
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn settings() -> Settings {
        Settings {
            initial: 20,
            min_limit: 3,
            max_limit: 1000,
            interval: 100 * MS,
            percentile: 50,
            min_rtt_interval: 60_000 * MS,
            min_rtt_requests: 4,
            min_concurrency: 3,
            buffer: 25,
            jitter: 0,
            seed: 1,
        }
    }

    /// The first window measures the idle latency, then the limit comes
    /// back to the initial one.
    #[test]
    fn the_first_window_measures_the_min_rtt() {
        let mut gradient = Gradient::new(settings());
        assert_eq!(gradient.limit(), 3, "pinned while measuring");
        let epoch = gradient.epoch();
        assert_eq!(
            gradient.sample(50 * MS, epoch - 1, 0),
            None,
            "admitted before"
        );
        for latency in [10, 12, 11] {
            assert_eq!(gradient.sample(latency * MS, epoch, 0), None);
        }
        assert_eq!(gradient.sample(30 * MS, epoch, 0), Some(20));
        assert_eq!(
            gradient.min_rtt(),
            Some(11 * MS),
            "the median of 10, 11, 12, 30"
        );
    }

    /// Latency at the min RTT grows the limit by its headroom; latency at
    /// twice the allowed halves it (the gradient's floor), plus headroom.
    #[test]
    fn the_limit_follows_the_gradient() {
        let mut gradient = Gradient::new(settings());
        let epoch = gradient.epoch();
        for _ in 0..4 {
            gradient.sample(10 * MS, epoch, 0);
        }
        // Idle latency: gradient 1.25, 20 -> 25 + 5.
        gradient.sample(10 * MS, epoch, 50 * MS);
        assert_eq!(gradient.sample(10 * MS, epoch, 100 * MS), Some(30));
        // 4x the idle latency: gradient 0.5 (floor), 30 -> 15 + 3.
        gradient.sample(40 * MS, epoch, 150 * MS);
        assert_eq!(gradient.sample(40 * MS, epoch, 200 * MS), Some(18));
    }

    /// Every `min_rtt_interval` the limit is pinned again, and restored.
    #[test]
    fn the_min_rtt_is_measured_again_and_the_limit_restored() {
        let mut gradient = Gradient::new(Settings {
            min_rtt_interval: 1_000 * MS,
            ..settings()
        });
        let first = gradient.epoch();
        for _ in 0..4 {
            gradient.sample(10 * MS, first, 0);
        }
        assert_eq!(gradient.limit(), 20);
        assert_eq!(gradient.sample(10 * MS, first, 1_000 * MS), Some(3));
        let second = gradient.epoch();
        assert_ne!(first, second);
        assert_eq!(
            gradient.sample(20 * MS, first, 1_001 * MS),
            None,
            "admitted before"
        );
        for _ in 0..3 {
            assert_eq!(gradient.sample(20 * MS, second, 1_010 * MS), None);
        }
        // Restored to what the gradient left (25 + 5 = 30 after the last
        // window), the min RTT now 20 ms.
        assert_eq!(gradient.sample(20 * MS, second, 1_020 * MS), Some(30));
        assert_eq!(gradient.min_rtt(), Some(20 * MS));
    }

    #[test]
    fn a_window_keeps_at_most_its_samples() {
        let mut gradient = Gradient::new(settings());
        let epoch = gradient.epoch();
        for _ in 0..4 {
            gradient.sample(10 * MS, epoch, 0);
        }
        for k in 0..10_000u64 {
            gradient.sample(k, epoch, 1);
            assert!(gradient.samples.len() <= MAX_SAMPLES);
        }
        assert_eq!(gradient.offered, 10_000);
    }
}
