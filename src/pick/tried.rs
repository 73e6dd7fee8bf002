//! The backends one request has already tried, so a retry goes elsewhere.

use crate::table::Guard;

/// Backends a request already tried, as nginx keeps for `proxy_next_upstream`.
///
/// Put each guard that failed into it and pass it with
/// [`Context::with_tried`](crate::Context::with_tried): the next pick skips
/// those backends, and fails with
/// [`PickError::AllTried`](crate::PickError::AllTried) once none is left.
/// Backends are named by identity, not by position, so the set stays right
/// across updates of a live balancer that keep the backend: re-weighting,
/// re-ordering, marking down and up, and a removal followed by an add while
/// a guard of the backend is alive (the backend comes back as itself; see
/// [`Live::add`](crate::Live::add)). A backend removed and added back
/// after its last guard was dropped is a new backend, unknown to every
/// `Tried`: a retry may pick it again. (Keeping identities of departed
/// backends by value would keep a record of every backend ever removed.)
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
///
/// Identity across a removal, with and without a live guard:
///
/// ```
/// use loadbalance::{lockfree::RoundRobin, Backend, Balancer, Context, Live, Tried};
///
/// let lb = Live::<RoundRobin<&str>>::new([Backend::new("a"), Backend::new("b")])?;
/// let mut tried = Tried::new();
/// let failed = lb.pick(&Context::new())?; // "a"
/// tried.insert(&failed);
/// lb.remove("a")?;
/// lb.add(Backend::new("a"))?; // while `failed` lives: the same backend
/// for _ in 0..4 {
///     assert_eq!(*lb.pick(&Context::new().with_tried(&tried))?, "b");
/// }
/// drop(failed);
/// lb.remove("a")?;
/// lb.add(Backend::new("a"))?; // after its last guard: a new backend
/// let picks: Vec<_> = (0..2).map(|_| lb.pick(&Context::new().with_tried(&tried))).collect();
/// assert!(picks.iter().any(|pick| pick.as_ref().is_ok_and(|guard| **guard == "a")));
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
