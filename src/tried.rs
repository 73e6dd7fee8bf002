//! The backends one request has already tried, so a retry goes elsewhere.

use crate::Guard;

/// Backends a request already tried, as nginx keeps for `proxy_next_upstream`.
///
/// Put each guard that failed into it and pass it with
/// [`Context::with_tried`](crate::Context::with_tried): the next pick skips
/// those backends, and fails with
/// [`PickError::AllTried`](crate::PickError::AllTried) once none is left.
/// Backends are named by identity, so the set stays right across updates of
/// a live balancer.
///
/// # Examples
///
/// ```
/// use loadbalance::{lockfree::RoundRobin, Balancer, Context, PickError, Tried};
///
/// let lb = RoundRobin::new(["a", "b"])?;
/// let mut tried = Tried::new();
/// for expected in ["a", "b"] {
///     let guard = lb.pick(&Context::new().with_tried(&tried))?;
///     assert_eq!(*guard, expected);
///     tried.insert(&guard); // say the request failed there
/// }
/// let again = lb.pick(&Context::new().with_tried(&tried));
/// assert_eq!(again.unwrap_err(), PickError::AllTried);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tried {
    ids: Vec<u64>,
}

impl Tried {
    /// An empty set: nothing tried yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the guard's backend.
    pub fn insert<T>(&mut self, guard: &Guard<T>) {
        let id = guard.id();
        if !self.ids.contains(&id) {
            self.ids.push(id);
        }
    }

    /// Whether the guard's backend was tried.
    pub fn contains<T>(&self, guard: &Guard<T>) -> bool {
        self.has(guard.id())
    }

    /// How many backends were tried.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether nothing was tried.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Forgets every backend, for the next request.
    pub fn clear(&mut self) {
        self.ids.clear();
    }

    pub(crate) fn has(&self, id: u64) -> bool {
        self.ids.contains(&id)
    }
}
