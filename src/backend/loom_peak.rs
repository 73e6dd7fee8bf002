//! Loom model of the peak-EWMA estimate's one word (see `peak.rs`).

use std::sync::Arc;

use loom::thread;

use super::peak::PeakEstimate;

/// A pick racing two reports reads the peak-EWMA estimate with the time of
/// the same update: one of the values the reports wrote, never a mix.
#[test]
fn peak_estimate_is_one_value() {
    const TAU: f64 = 1e9;
    loom::model(|| {
        let estimate = Arc::new(PeakEstimate::default());
        estimate.observe(1_000_000, 0, TAU);
        let writers: Vec<_> = [(5_000_000, 3 << 20), (500_000, 7 << 20)]
            .into_iter()
            .map(|(sample, now)| {
                let estimate = Arc::clone(&estimate);
                thread::spawn(move || estimate.observe(sample, now, TAU))
            })
            .collect();
        let reader = {
            let estimate = Arc::clone(&estimate);
            thread::spawn(move || estimate.get().expect("sampled"))
        };
        let seen = reader.join().expect("reader");
        for writer in writers {
            writer.join().expect("writer");
        }
        // Every value written: the first sample, either report over it,
        // and each report over the other.
        let possible = |sample: u64, now: u64, over: &PeakEstimate| {
            over.observe(sample, now, TAU);
            over.get().expect("sampled")
        };
        let start = || {
            let e = PeakEstimate::default();
            e.observe(1_000_000, 0, TAU);
            e
        };
        let first = start();
        let a = possible(5_000_000, 3 << 20, &first);
        let ab = possible(500_000, 7 << 20, &first);
        let second = start();
        let b = possible(500_000, 7 << 20, &second);
        let ba = possible(5_000_000, 3 << 20, &second);
        let initial = start().get().expect("sampled");
        assert!(
            [initial, a, ab, b, ba].contains(&seen),
            "a torn estimate: {seen:?}"
        );
    });
}
