//! A backend's peak-EWMA latency estimate (Finagle's, as tower's
//! `PeakEwma`), for the latency-aware pick.
//!
//! A sample above the estimate replaces it at once (the peak); a lower one
//! pulls it down by how long ago the last update was: with `d = e^(-t/tau)`
//! for `t` since the last update, the estimate becomes `e*d + x*(1-d)`.
//! Read at a time `t` after its last update, the estimate is `e*d`: it
//! decays toward zero, so a backend nobody picks (its last sample slow, or
//! none yet) is tried again after a few `tau`. Reads write nothing, so a
//! pick stays free of shared writes; this is Finagle's formula with the
//! decay applied on read rather than stored by it.
//!
//! # Synchronization
//!
//! The estimate and the time of its last update are read together (an
//! estimate decayed from another update's time is wrong by up to its whole
//! value), so they are one `AtomicU64`: the estimate's `f32` bits without
//! the low 8 (sign 0, exponent, 15 mantissa bits: a relative precision of
//! 3e-5) in the high 24 bits, and the update time in units of 2^20 ns
//! (about 1.05 ms, ample against a `tau` of seconds) modulo 2^40 in the
//! low 40 bits. Times are compared by their difference modulo 2^40 units
//! (36.5 years), read as signed: exact for any clock, one counting from
//! the Unix epoch included, as long as two times compared are within 18
//! years of each other (beyond a few `tau` every decay is 0 anyway). Reports update it by compare-and-swap; no other value is
//! published through it, so every access is Relaxed. The loom model
//! `peak_estimate_is_one_value` checks that a reader racing two reports
//! sees one of the three whole values.

use crate::sync::atomic::{AtomicU64, Ordering};

/// Low bits of the word: the update time.
const STAMP_BITS: u32 = 40;
const STAMP_MASK: u64 = (1 << STAMP_BITS) - 1;
/// The update time's unit: 2^20 ns.
const STAMP_SHIFT: u32 = 20;

/// The estimate and when it was last updated (see the module docs). The
/// word 0 means "no estimate yet".
#[derive(Debug, Default)]
pub(crate) struct PeakEstimate(AtomicU64);

/// An estimate (ns) and its update time (in units of 2^20 ns, modulo
/// 2^40).
///
/// Two estimates compare at any common time without the time itself: at
/// `now`, `e_a * d_a < e_b * d_b` is `e_a * e^((at_a - at_b)/tau) < e_b`,
/// so a pick compares candidates without reading the clock (`cheaper`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Estimate {
    pub(crate) nanos: f64,
    stamp: u64,
}

/// `a - b` in units, modulo 2^40, read as signed.
#[inline(always)]
fn units_between(a: u64, b: u64) -> i64 {
    let d = a.wrapping_sub(b) & STAMP_MASK;
    if d >= 1 << (STAMP_BITS - 1) {
        d as i64 - (1 << STAMP_BITS)
    } else {
        d as i64
    }
}

/// A time in nanoseconds as a stamp.
#[inline(always)]
fn stamp(nanos: u64) -> u64 {
    (nanos >> STAMP_SHIFT) & STAMP_MASK
}

impl Estimate {
    /// An estimate of `nanos` made at `now`.
    pub(crate) fn new(nanos: f64, now: u64) -> Self {
        Self {
            nanos,
            stamp: stamp(now),
        }
    }

    fn unpack(word: u64) -> Option<Self> {
        (word != 0).then(|| Self {
            nanos: f64::from(f32::from_bits(((word >> STAMP_BITS) as u32) << 8)),
            stamp: word & STAMP_MASK,
        })
    }

    /// Never 0 (at least 1 ns), so a packed estimate is never the empty word.
    fn pack(nanos: f64, stamp: u64) -> u64 {
        let bits = (nanos.max(1.0) as f32).to_bits() >> 8;
        (u64::from(bits) << STAMP_BITS) | stamp
    }

    /// Whether `self` scaled by `load_self` is below `other` scaled by
    /// `load_other`, both decayed to any common time.
    #[inline(always)]
    pub(crate) fn cheaper(self, load_self: f64, other: Self, load_other: f64, tau: f64) -> bool {
        let apart = units_between(self.stamp, other.stamp) as f64 * (1u64 << STAMP_SHIFT) as f64;
        let shift = (apart / tau).exp();
        self.nanos * load_self * shift < other.nanos * load_other
    }

    /// `e^(-t/tau)` for the time `t` from the update to `now` (none if
    /// `now` is earlier: a report that raced a later one).
    fn decay(self, now: u64, tau: f64) -> f64 {
        let since = units_between(stamp(now), self.stamp).max(0);
        (-((since as f64) * (1u64 << STAMP_SHIFT) as f64) / tau).exp()
    }
}

impl PeakEstimate {
    /// Gives a backend with no estimate the estimate `nanos` as of `now`
    /// (the default a latency-aware balancer assumes until a sample).
    pub(crate) fn seed(&self, nanos: f64, now: u64) {
        // Relaxed: see the module docs. Fails harmlessly if a sample or an
        // earlier seed came first.
        let _ = self.0.compare_exchange(
            0,
            Estimate::pack(nanos, stamp(now)),
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }

    /// The estimate as of its last update; `None` if the backend has none.
    #[inline]
    pub(crate) fn get(&self) -> Option<Estimate> {
        // Relaxed: see the module docs.
        Estimate::unpack(self.0.load(Ordering::Relaxed))
    }

    /// The estimate at `now`, decayed since its last update.
    #[cfg(test)]
    fn at(&self, now: u64, tau: f64) -> Option<f64> {
        let estimate = self.get()?;
        Some(estimate.nanos * estimate.decay(now, tau))
    }

    /// Takes a sample of `sample` ns at `now`.
    pub(crate) fn observe(&self, sample: u64, now: u64, tau: f64) {
        let sample = sample as f64;
        // Relaxed: see the module docs.
        let _ = self
            .0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |word| {
                let now_stamp = stamp(now);
                let (next, at) = match Estimate::unpack(word) {
                    None => (sample, now_stamp),
                    Some(estimate) => {
                        let decay = estimate.decay(now, tau);
                        let current = estimate.nanos * decay;
                        let next = if sample > current {
                            sample
                        } else {
                            current + sample * (1.0 - decay)
                        };
                        // A report that raced a later one keeps the later
                        // time: stamps never move back.
                        let later = if units_between(now_stamp, estimate.stamp) >= 0 {
                            now_stamp
                        } else {
                            estimate.stamp
                        };
                        (next, later)
                    }
                };
                Some(Estimate::pack(next, at))
            });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TAU: f64 = 10e9;
    const MS: u64 = 1_000_000;

    #[test]
    fn a_slower_sample_is_taken_at_once() {
        let e = PeakEstimate::default();
        e.observe(5 * MS, 0, TAU);
        e.observe(50 * MS, 100 * MS, TAU);
        let at = e.at(100 * MS, TAU).expect("sampled");
        assert!((at / (50.0 * MS as f64) - 1.0).abs() < 1e-3, "{at}");
    }

    #[test]
    fn a_faster_sample_pulls_by_elapsed_time() {
        let e = PeakEstimate::default();
        e.observe(50 * MS, 0, TAU);
        // One tau later: decay e^-1; the estimate becomes 50/e + 5(1 - 1/e).
        let tau = TAU as u64;
        e.observe(5 * MS, tau, TAU);
        let d = (-1f64).exp();
        let want = 50.0 * MS as f64 * d + 5.0 * MS as f64 * (1.0 - d);
        let at = e.at(tau, TAU).expect("sampled");
        // The update time is kept in units of 2^20 ns: at most ~1 ms of decay.
        assert!((at / want - 1.0).abs() < 1e-3, "{at} vs {want}");
    }

    #[test]
    fn an_idle_estimate_decays_toward_zero() {
        let e = PeakEstimate::default();
        e.seed(30.0 * MS as f64, 0);
        let start = e.at(0, TAU).expect("seeded");
        let later = e.at(5 * TAU as u64, TAU).expect("seeded");
        assert!((start / (30.0 * MS as f64) - 1.0).abs() < 1e-4);
        assert!(later < start * 0.01, "{later}");
        // A seed never overwrites a sample.
        let sampled = PeakEstimate::default();
        sampled.observe(2 * MS, 0, TAU);
        sampled.seed(30.0 * MS as f64, 0);
        assert!(sampled.at(0, TAU).expect("sampled") < 3.0 * MS as f64);
    }

    /// The clock-free comparison agrees with comparing the decayed values.
    #[test]
    fn comparing_without_the_clock_is_comparing_at_any_time() {
        let a = Estimate::new(30.0 * MS as f64, 0);
        let b = Estimate::new(2.0 * MS as f64, 20_000 * MS);
        for now in [20_000 * MS, 25_000 * MS, 90_000 * MS] {
            let value = |e: Estimate| e.nanos * e.decay(now, TAU);
            for (la, lb) in [(1.0, 1.0), (3.0, 1.0), (1.0, 40.0)] {
                let want = value(a) * la < value(b) * lb;
                assert_eq!(a.cheaper(la, b, lb, TAU), want, "{now} {la} {lb}");
                assert_eq!(b.cheaper(lb, a, la, TAU), value(b) * lb < value(a) * la);
            }
        }
    }

    #[test]
    fn the_word_round_trips_at_any_time() {
        for now in [0, 1 << 20, 3 << 40, u64::MAX >> 4, u64::MAX] {
            let word = Estimate::pack(123_456.0, stamp(now));
            let e = Estimate::unpack(word).expect("non-zero");
            assert!((e.nanos / 123_456.0 - 1.0).abs() < 1e-4);
            assert_eq!(e.stamp, stamp(now));
        }
    }

    /// A clock counting from the Unix epoch (past 2^60 ns), and one that
    /// crosses a multiple of 2^60 ns between two samples: the decay is the
    /// elapsed time's, not the time since the clock's start.
    #[test]
    fn works_on_any_clock_start() {
        for start in [1_700_000_000 * 1_000_000_000, (1 << 60) - MS] {
            let e = PeakEstimate::default();
            e.observe(100 * MS, start, TAU);
            e.observe(MS, start + 2 * MS, TAU);
            let at = e.at(start + 2 * MS, TAU).expect("sampled");
            // 2 ms of a 10 s tau: the faster sample moves it by 2e-4.
            assert!(at > 99.0 * MS as f64, "{start}: {at}");
        }
    }

    /// A report that raced a later one neither moves the time back nor
    /// decays by a negative time.
    #[test]
    fn a_late_report_keeps_the_later_time() {
        let e = PeakEstimate::default();
        e.observe(10 * MS, 5_000 * MS, TAU);
        e.observe(MS, 4_000 * MS, TAU);
        let after = e.get().expect("sampled");
        assert_eq!(after.stamp, stamp(5_000 * MS));
        assert!(after.nanos > 9.9 * MS as f64, "{after:?}");
    }
}
