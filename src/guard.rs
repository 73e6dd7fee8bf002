//! The connection guard a pick hands out.

use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

use crate::backends::Entry;

/// One picked backend, counted as active until the guard is dropped.
///
/// The guard owns a reference to the backend itself, not to the balancer: it
/// is `Send` (when `T: Send + Sync`) and `'static` (when `T: 'static`), so it
/// can move into a spawned task and outlive the balancer. The count is the
/// backend's reference count, so it drops exactly once, on every path out of
/// the guard's scope, unwinding included.
///
/// # Examples
///
/// ```
/// use loadbalance::{lockfree::LeastConn, Balancer, Context};
///
/// let lb = LeastConn::new(["a", "b"])?;
/// let guard = lb.pick(&Context::new())?;
/// assert_eq!((*guard, guard.index()), ("a", 0));
/// assert_eq!(lb.active(0), Some(1));
/// drop(guard);
/// assert_eq!(lb.active(0), Some(0));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Guard<T> {
    entry: Arc<Entry<T>>,
    index: usize,
}

impl<T> Guard<T> {
    pub(crate) fn new(entry: Arc<Entry<T>>, index: usize) -> Self {
        Self { entry, index }
    }

    /// The backend's position in the list the balancer was built from.
    pub fn index(&self) -> usize {
        self.index
    }
}

impl<T> Drop for Guard<T> {
    fn drop(&mut self) {
        // The reference count, the true active count, drops with `entry`.
        self.entry.release();
    }
}

impl<T> Deref for Guard<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.entry.value
    }
}

impl<T: fmt::Debug> fmt::Debug for Guard<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Guard")
            .field("index", &self.index)
            .field("backend", &self.entry.value)
            .finish()
    }
}
