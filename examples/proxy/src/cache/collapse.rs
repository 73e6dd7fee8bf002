//! Request collapsing (nginx's `proxy_cache_lock`, Varnish's waiting
//! list): of a burst of misses for one key, the first goes to the backend
//! and the others wait for its response to be stored, then are answered
//! from the cache. A wait is bounded (`collapse_timeout_ms`); past it, or
//! when the first response is not stored, a waiter goes to the backend
//! itself.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};

use parking_lot::Mutex;
use tokio::sync::watch;

/// The misses in flight, by key.
#[derive(Default)]
pub(crate) struct Flights {
    open: Mutex<HashMap<String, Open>>,
}

/// A flight under way: what its waiters wait on, and its invalidation
/// mark.
type Open = (watch::Receiver<bool>, Arc<AtomicBool>);

/// The first miss for a key: while it lives, later misses wait; when it
/// is dropped (its response stored, or given up) they are woken.
pub(crate) struct Flight {
    flights: Arc<Flights>,
    key: String,
    done: watch::Sender<bool>,
    /// Set when the URI is invalidated while the flight is under way.
    invalidated: Arc<AtomicBool>,
}

/// A miss's place in a burst.
pub(crate) enum Joined {
    /// The first: fetch, and store.
    Leader(Flight),
    /// A later one: wait on this.
    Waiter(watch::Receiver<bool>),
}

impl Flights {
    /// Joins the burst of misses for `key`.
    pub(crate) fn join(self: &Arc<Self>, key: &str) -> Joined {
        let mut open = self.open.lock();
        if let Some((waiting, _)) = open.get(key) {
            return Joined::Waiter(waiting.clone());
        }
        let (done, waiting) = watch::channel(false);
        let invalidated = Arc::new(AtomicBool::new(false));
        open.insert(key.to_owned(), (waiting, Arc::clone(&invalidated)));
        Joined::Leader(Flight {
            flights: Arc::clone(self),
            key: key.to_owned(),
            done,
            invalidated,
        })
    }

    /// Leads a flight for `key` unless one is under way (a background
    /// refresh needs only one).
    pub(crate) fn lead(self: &Arc<Self>, key: &str) -> Option<Flight> {
        match self.join(key) {
            Joined::Leader(flight) => Some(flight),
            Joined::Waiter(_) => None,
        }
    }

    /// Marks the flights of URI `key` (itself and its variants, whose
    /// keys begin with it and a line break) as bringing what is old, and
    /// runs `remove` under the same lock: a flight's store either comes
    /// before (and is removed) or sees the mark (and stores nothing).
    pub(crate) fn invalidate(&self, key: &str, remove: impl FnOnce()) {
        let variants = format!("{key}\n");
        let open = self.open.lock();
        for (flight, (_, invalidated)) in open.iter() {
            if flight == key || flight.starts_with(&variants) {
                // Relaxed: written and read under `open`'s lock.
                invalidated.store(true, Relaxed);
            }
        }
        remove();
    }

    /// Flights under way.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.open.lock().len()
    }
}

impl Flight {
    /// Runs `store` unless the URI was invalidated since the flight
    /// began, under the lock `invalidate` takes; whether it ran.
    pub(crate) fn store_unless_invalidated(&self, store: impl FnOnce()) -> bool {
        let _open = self.flights.open.lock();
        // Relaxed: written and read under `open`'s lock.
        if self.invalidated.load(Relaxed) {
            return false;
        }
        store();
        true
    }
}

impl Drop for Flight {
    fn drop(&mut self) {
        self.flights.open.lock().remove(&self.key);
        // No waiter left is fine.
        let _ = self.done.send(true);
    }
}

/// Waits for the flight `waiting` belongs to, at most `timeout`.
pub(crate) async fn wait(mut waiting: watch::Receiver<bool>, timeout: std::time::Duration) {
    // Err: the flight ended (its sender dropped), or the wait is over.
    let _ = tokio::time::timeout(timeout, waiting.wait_for(|done| *done)).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn one_leads_the_rest_wait_until_it_ends() {
        let flights = Arc::new(Flights::default());
        let Joined::Leader(flight) = flights.join("a") else {
            panic!("the first leads");
        };
        let waiters: Vec<_> = (0..10)
            .map(|_| match flights.join("a") {
                Joined::Waiter(waiting) => tokio::spawn(wait(waiting, Duration::from_secs(5))),
                Joined::Leader(_) => panic!("a second leader"),
            })
            .collect();
        assert!(flights.lead("a").is_none());
        assert!(
            matches!(flights.join("b"), Joined::Leader(_)),
            "another key"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(waiters.iter().all(|w| !w.is_finished()), "waiting");
        drop(flight);
        for waiter in waiters {
            tokio::time::timeout(Duration::from_secs(1), waiter)
                .await
                .expect("woken")
                .expect("the task");
        }
        assert_eq!(flights.len(), 0);
        assert!(flights.lead("a").is_some(), "a new flight after the end");
    }

    #[tokio::test]
    async fn a_wait_is_bounded() {
        let flights = Arc::new(Flights::default());
        let _flight = flights.lead("a").expect("leads");
        let Joined::Waiter(waiting) = flights.join("a") else {
            panic!("waits");
        };
        let started = tokio::time::Instant::now();
        wait(waiting, Duration::from_millis(50)).await;
        assert!(started.elapsed() >= Duration::from_millis(50));
    }
}
