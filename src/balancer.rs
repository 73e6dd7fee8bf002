//! The one trait every balancer implements.

use crate::{Context, Guard, PickError};

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

    /// The backend at `index`, or `None` past the end.
    fn get(&self, index: usize) -> Option<&T>;
}
