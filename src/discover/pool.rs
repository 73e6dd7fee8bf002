//! A watch applied to a pool: the configured backends plus what the names
//! resolve to, each change one [`Pool::replace`] (counts, health and
//! in-flight guards carried over by identity).

use std::sync::Arc;

use super::{Discovery, DnsWatch, Endpoint, Found};
use crate::live::Backend;
use crate::pool::{Pool, PoolBackend};

impl Discovery {
    /// Keeps `pool`'s backends `fixed` followed by `backend` of each
    /// endpoint the names resolve to (one whose backend is also in
    /// `fixed` left out), from `found` on: see [`watch`](Self::watch).
    /// The pool is not changed until an answer differs from `found`'s.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub fn apply_to<T, F>(
        self,
        found: Found,
        pool: Arc<Pool<T>>,
        fixed: Vec<Backend<T>>,
        backend: F,
    ) -> DnsWatch
    where
        T: PoolBackend + Clone,
        F: Fn(&Endpoint) -> Backend<T> + Send + 'static,
    {
        self.watch(found, move |endpoints: &[Endpoint]| {
            let found = endpoints
                .iter()
                .map(&backend)
                .filter(|made| fixed.iter().all(|kept| kept.value() != made.value()));
            pool.replace(fixed.iter().cloned().chain(found))
        })
    }
}
