//! Loom model of the windows' protocol (see `windows.rs`).

use loom::sync::Arc;
use loom::thread;

use super::windows::{Windows, step};

/// The sequence of weights 2, 1: 0 1 0, 0 1 0, ...
fn reference(picks: usize) -> Vec<usize> {
    let (scaled, mut current) = ([2, 1], [0i64; 2]);
    (0..picks).map(|_| step(&mut current, &scaled, 3)).collect()
}

/// Two picks a thread on two threads, windows of one pick in two
/// windows: every pick turns, and the third reuses the first window.
/// Every step of the sequence is taken exactly once, whatever the
/// interleaving, with a pick stalled mid-step on either side.
#[test]
fn windows_turn() {
    let mut model = loom::model::Builder::new();
    model.preemption_bound = Some(3);
    model.check(|| {
        let windows = Arc::new(Windows::new(&[2, 1], 1));
        let threads: Vec<_> = (0..2)
            .map(|_| {
                let windows = Arc::clone(&windows);
                thread::spawn(move || [windows.next_index(), windows.next_index()])
            })
            .collect();
        let mut taken: Vec<usize> = threads
            .into_iter()
            .flat_map(|thread| thread.join().expect("no panic"))
            .collect();
        let mut expected = reference(4);
        taken.sort_unstable();
        expected.sort_unstable();
        assert_eq!(taken, expected);
        assert_eq!(windows.next_index(), reference(5)[4]);
    });
}
