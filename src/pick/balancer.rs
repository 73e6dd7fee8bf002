//! The one trait every balancer implements.

use super::Context;
use crate::error::PickError;
use crate::table::{BackendStats, Guard};

/// A load balancer over backends of type `T`.
///
/// Object safe, so a server can choose the algorithm from its configuration
/// and hold a `Box<dyn Balancer<T>>` or `Arc<dyn Balancer<T>>`. Every
/// implementation is `Send + Sync` and meant to be shared by all the
/// server's threads.
///
/// # Examples
///
/// ```
/// use loadbalance::{lockfree, locked, Balancer, Context};
/// use std::sync::Arc;
///
/// fn from_config(name: &str) -> Result<Arc<dyn Balancer<&'static str>>, loadbalance::BuildError> {
///     let upstreams = ["10.0.0.1:80", "10.0.0.2:80"];
///     Ok(match name {
///         "least_conn" => Arc::new(lockfree::LeastConn::new(upstreams)?),
///         "locked_round_robin" => Arc::new(locked::RoundRobin::new(upstreams)?),
///         _ => Arc::new(lockfree::RoundRobin::new(upstreams)?),
///     })
/// }
///
/// let lb = from_config("least_conn")?;
/// let upstream = lb.pick(&Context::new())?;
/// assert_eq!(*upstream, "10.0.0.1:80");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub trait Balancer<T>: Send + Sync {
    /// Picks a backend for one request or connection. The returned guard
    /// counts the backend as active until it is dropped.
    ///
    /// # Errors
    ///
    /// [`PickError::MissingKey`] for a hashing balancer given neither an
    /// address nor a key; [`PickError::AllDown`], [`PickError::AllTried`],
    /// [`PickError::AllEjected`] or [`PickError::AllFull`] when no backend
    /// can take the pick, saying why (see [`PickError`]).
    fn pick(&self, ctx: &Context<'_>) -> Result<Guard<T>, PickError>;

    /// How many backends the balancer holds (never 0: construction rejects
    /// an empty list).
    fn len(&self) -> usize;

    /// Whether the balancer holds no backends; always `false` for the
    /// balancers of this crate.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Guards currently alive for backend `index`, or `None` past the end.
    fn active(&self, index: usize) -> Option<usize>;

    /// Every backend's counters and state, in order: cheap enough to poll
    /// every second (a clone of each value and a few relaxed loads, no
    /// lock).
    ///
    /// Pick counts are kept with a plain increment rather than an atomic
    /// read-modify-write, which would cost every pick about a third more:
    /// they are exact on one thread, and two threads picking the same
    /// backend in the same instant may count once. Taking stats holds each
    /// backend for an instant, which a concurrent least-connections pick
    /// may see as one more connection.
    ///
    /// # Examples
    ///
    /// ```
    /// use loadbalance::{lockfree::LeastConn, BackendState, Balancer, Context};
    ///
    /// let lb = LeastConn::new(["a", "b"])?;
    /// let _held = lb.pick(&Context::new())?;
    /// let stats = lb.stats();
    /// assert_eq!((stats[0].backend, stats[0].active, stats[0].picks), ("a", 1, 1));
    /// assert_eq!(stats[1].state, BackendState::Up);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    fn stats(&self) -> Vec<BackendStats<T>>
    where
        T: Clone;

    /// Backend `index`'s counters and state, or `None` past the end.
    fn stats_at(&self, index: usize) -> Option<BackendStats<T>>
    where
        T: Clone,
    {
        self.stats().into_iter().nth(index)
    }
}
