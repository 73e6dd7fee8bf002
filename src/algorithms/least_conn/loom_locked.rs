//! Loom model of the locked form (`pick/forms.rs`), on least-connections,
//! where it matters most: the choice and the claim run under the form's
//! lock (the sync shim's, so loom sees it), so two picks that race never
//! see the same counts.

use loom::sync::Arc;
use loom::thread;

use crate::algorithms::locked;
use crate::pick::{Balancer, Context};

/// Two picks racing on a locked least-connections balancer of two
/// backends, each holding its guard: they take different backends,
/// whatever the interleaving (the lock-free form may give both the same).
#[test]
fn locked_picks_never_see_the_same_minimum() {
    loom::model(|| {
        let lb = Arc::new(locked::LeastConn::new([0u8, 1]).expect("valid"));
        let pickers: Vec<_> = (0..2)
            .map(|_| {
                let lb = Arc::clone(&lb);
                thread::spawn(move || lb.pick(&Context::new()).expect("a backend"))
            })
            .collect();
        let guards: Vec<_> = pickers
            .into_iter()
            .map(|picker| picker.join().expect("no panic"))
            .collect();
        assert_ne!(guards[0].index(), guards[1].index());
        drop(guards);
        assert_eq!((lb.active(0), lb.active(1)), (Some(0), Some(0)));
    });
}
