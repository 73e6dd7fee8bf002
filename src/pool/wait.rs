//! Picks that wait for a connection slot (feature `wait`): when every
//! backend that could take a pick is at its `max_conns`, the pick waits,
//! without polling, until a guard gives a slot back (nginx's `queue`,
//! tower's readiness).
//!
//! A waiter registers for the next freed slot before it looks, so no slot
//! freed in between is missed; each freed slot wakes one waiter, the
//! longest waiting (event-listener's queue is first in, first out), and a
//! waiter dropped after its wake-up passes it to the next. A woken waiter
//! that finds the slot taken by a pick that did not wait (nothing makes
//! those queue) waits again, at the back.

use std::time::Instant;

use event_listener::Listener;

use super::{Picked, Pool, PoolBackend};
use crate::error::PickError;
use crate::pick::Context;

impl<T: PoolBackend> Pool<T> {
    /// As [`pick`](Self::pick), but while every backend that could take
    /// the pick is full ([`PickError::AllFull`]), waits for a slot. Any
    /// other error returns at once.
    ///
    /// Runtime-agnostic and cancellation-safe: dropping the future (for a
    /// deadline, wrap it in your runtime's timeout) leaves no registration
    /// and no slot behind, and passes on a wake-up it had received.
    ///
    /// # Examples
    ///
    /// ```
    /// use loadbalance::{Algorithm, Backend, Context, Pool};
    /// use std::time::Duration;
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_time().build()?.block_on(async {
    /// let pool = Pool::builder(Algorithm::LeastConn)
    ///     .build([Backend::new("10.0.0.1:80").max_conns(1)])?;
    /// let busy = pool.pick(&Context::new())?;
    /// let ctx = Context::new();
    /// // Full: a deadline of 10 ms passes.
    /// let waited = tokio::time::timeout(Duration::from_millis(10), pool.pick_wait(&ctx)).await;
    /// assert!(waited.is_err());
    /// // The slot comes back while a waiter waits: it gets it.
    /// let (picked, ()) = tokio::join!(pool.pick_wait(&ctx), async { drop(busy) });
    /// assert_eq!(*picked?, "10.0.0.1:80");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # })?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`pick`](Self::pick), except [`PickError::AllFull`].
    pub async fn pick_wait(&self, ctx: &Context<'_>) -> Result<Picked<T>, PickError> {
        loop {
            match self.pick(ctx) {
                Err(PickError::AllFull) => {}
                other => return other,
            }
            let listener = self.common().listen_for_slot();
            match self.pick(ctx) {
                Err(PickError::AllFull) => {}
                other => return other,
            }
            listener.await;
        }
    }

    /// As [`pick_wait`](Self::pick_wait), blocking the thread until
    /// `deadline`.
    ///
    /// # Errors
    ///
    /// As [`pick`](Self::pick); [`PickError::AllFull`] when the deadline
    /// passed with every backend still full.
    pub fn pick_wait_until(
        &self,
        ctx: &Context<'_>,
        deadline: Instant,
    ) -> Result<Picked<T>, PickError> {
        loop {
            match self.pick(ctx) {
                Err(PickError::AllFull) => {}
                other => return other,
            }
            let listener = self.common().listen_for_slot();
            match self.pick(ctx) {
                Err(PickError::AllFull) => {}
                other => return other,
            }
            if listener.wait_deadline(deadline).is_none() {
                return self.pick(ctx);
            }
        }
    }
}
