//! The connection guard a pick hands out.

use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

use super::entry::Entry;
use crate::backend::Outcome;

/// One picked backend, counted as active until the guard is dropped.
///
/// The guard owns a reference to the backend itself, not to the balancer: it
/// is `Send` (when `T: Send + Sync`) and `'static` (when `T: 'static`), so it
/// can move into a spawned task and outlive the balancer. The count is the
/// backend's reference count, so it drops exactly once, on every path out of
/// the guard's scope, unwinding included (and so does the `max_conns` slot
/// the guard may hold).
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
    /// Below `MAX_BACKENDS`. With `holds`, the guard stays two words, which
    /// a pick returns in registers: a third word cost 4.5 ns a pick.
    index: u32,
    /// What the guard gives back on drop besides its reference. An enum,
    /// not bit flags: its unused values let `Result<Guard, PickError>` keep
    /// the error in the same two words.
    holds: Holds,
}

/// What a guard gives back on drop besides its reference.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Holds {
    Nothing,
    /// One of the backend's `max_conns` slots.
    Slot,
    /// A unit of the backend's dense count (see `Entry::dense`). Only
    /// static tables keep dense counts, and only live backends have slots,
    /// so a guard never holds both.
    Dense,
    /// A unit of the balancer's total of active guards (bounded-load
    /// hashing, which keeps no dense counts).
    Counted,
    /// A slot and a unit of the total.
    SlotCounted,
}

impl<T> Guard<T> {
    pub(crate) fn new(entry: Arc<Entry<T>>, index: usize, holds: Holds) -> Self {
        // Indices are below MAX_BACKENDS = 2^16.
        Self {
            entry,
            index: index as u32,
            holds,
        }
    }

    /// The backend's position in the list the balancer was built from (for
    /// a live balancer: in the set as it was when this pick was made).
    pub fn index(&self) -> usize {
        self.index as usize
    }

    /// Reports how the request on this backend went; the balancer's health
    /// policy acts on failures (see [`HealthPolicy`](crate::HealthPolicy)).
    /// A guard may report once per request it carries.
    ///
    /// # Examples
    ///
    /// ```
    /// use loadbalance::{lockfree::RoundRobin, Balancer, Context, Outcome};
    /// use std::time::Duration;
    ///
    /// let lb = RoundRobin::new(["a", "b"])?;
    /// let guard = lb.pick(&Context::new())?;
    /// guard.report(Outcome::Failure { latency: Duration::from_millis(3) });
    /// // nginx's defaults: one failure ejects "a" for 10 seconds.
    /// assert_eq!(*lb.pick(&Context::new())?, "b");
    /// assert_eq!(*lb.pick(&Context::new())?, "b");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn report(&self, outcome: Outcome) {
        self.entry.record.report(outcome);
    }

    /// Now, by the clock of the balancer that made the guard.
    pub(crate) fn now(&self) -> u64 {
        self.entry.record.common.now()
    }

    pub(crate) fn id(&self) -> u64 {
        self.entry.record.id
    }
}

impl<T> Drop for Guard<T> {
    fn drop(&mut self) {
        // The slot is given back first, then the reference (the active
        // count) with `entry`: a pick racing this drop may take the slot
        // while `active` still counts this guard, one above the limit for
        // that instant. The limit itself, on slots, is exact.
        match self.holds {
            Holds::Nothing => {}
            Holds::Slot => self.entry.record.free_slot(),
            Holds::Dense => self.entry.release_dense(),
            Holds::Counted => self.entry.record.common.total_active_changed(false),
            Holds::SlotCounted => {
                self.entry.record.free_slot();
                self.entry.record.common.total_active_changed(false);
            }
        }
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

#[cfg(test)]
mod tests {
    use super::Guard;
    use crate::error::PickError;

    /// A pick's result fits two words, which return in registers: the
    /// `holds` enum's spare values carry the error. A third word cost 4.5 ns
    /// a pick (`cargo bench --bench pick`).
    #[test]
    fn a_pick_result_is_two_words() {
        let words = std::mem::size_of::<Result<Guard<String>, PickError>>();
        assert_eq!(words, 2 * std::mem::size_of::<usize>());
    }
}
