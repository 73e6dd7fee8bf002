//! Loom model of retirement (see `retire.rs`): an update waits for the
//! picks in every older snapshot, not only the one it replaced (the model
//! fails with the latter, checked by hand on 2026-11-29).

use std::sync::{Arc, Weak};

use loom::sync::atomic::{AtomicBool, Ordering};
use loom::thread;

use super::retire::{Retirement, wait_for};
use crate::sync::Mutex;

/// The stand-in for arc-swap: a load either sees the new snapshot or holds
/// a counted reference to the old one when the swap returns.
struct Current<S>(Mutex<Arc<S>>);

impl<S> Current<S> {
    fn load(&self) -> Arc<S> {
        Arc::clone(&self.0.lock())
    }

    fn swap(&self, next: Arc<S>) -> Arc<S> {
        std::mem::replace(&mut *self.0.lock(), next)
    }
}

/// A pick stalled in a snapshot two updates back still ends before the
/// update that removed its backend returns.
#[test]
fn removal_waits_for_every_older_snapshot() {
    loom::model(|| {
        // A snapshot is the set of backends it offers.
        let current = Arc::new(Current(Mutex::new(Arc::new(vec!["a", "b"]))));
        let removed = Arc::new(AtomicBool::new(false));
        let picker = {
            let (current, removed) = (Arc::clone(&current), Arc::clone(&removed));
            thread::spawn(move || {
                let snapshot = current.load();
                thread::yield_now();
                if snapshot.contains(&"a") {
                    // SeqCst: the test's own flag.
                    assert!(!removed.load(Ordering::SeqCst), "picked a removed backend");
                }
            })
        };
        let updater = thread::spawn(move || {
            let mut retirement: Retirement<Vec<&str>, ()> = Retirement::new();
            // An add, then the removal: the picker may hold either older one.
            let old = current.swap(Arc::new(vec!["a", "b", "c"]));
            retirement.retire(old, Vec::new());
            let old = current.swap(Arc::new(vec!["b", "c"]));
            let in_use: Vec<Weak<Vec<&str>>> = retirement.retire(old, Vec::new());
            assert!(wait_for(&in_use, None));
            removed.store(true, Ordering::SeqCst);
        });
        updater.join().expect("no panic");
        picker.join().expect("no panic");
    });
}
