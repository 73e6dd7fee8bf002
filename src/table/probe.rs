//! A probe a probing balancer asks for: which backend to ask for its load,
//! and where the answer goes.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::backends::Backends;
use crate::backend::common::Common;
use crate::backend::record::flag;
use crate::time::Nanos;

/// A probe to send: ask [`backend`](Self::backend) for the requests it has
/// in flight and its latency, by whatever transport the backend speaks
/// (the crate opens no sockets), then hand the answer to
/// [`answer`](Self::answer). A probe that gets no answer is dropped.
///
/// A probing balancer ([`Algorithm::Probing`](crate::Algorithm::Probing))
/// gives a few after every pick ([`Pool::probes`](crate::Pool::probes)); it
/// picks from the answers, so each pick reads what the backends said a
/// moment ago, not only what this balancer sent them.
///
/// # Examples
///
/// ```
/// use loadbalance::{Algorithm, Backend, Context, Pool, ProbingOptions};
/// use std::time::Duration;
///
/// let probing = ProbingOptions::default().probes(3);
/// let pool = Pool::builder(Algorithm::Probing(probing))
///     .build(["a", "b", "c"].map(Backend::new))?;
/// let first = pool.pick(&Context::new())?; // no answer yet: the least loaded
/// for probe in pool.probes() {
///     // Here, ask `probe.backend()` over the network; its answer:
///     let (in_flight, ms) = if *probe.backend() == "b" { (0, 1) } else { (5, 40) };
///     probe.answer(in_flight, Duration::from_millis(ms));
/// }
/// first.success();
/// assert_eq!(**pool.pick(&Context::new())?.guard(), "b");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Probe<T> {
    backend: T,
    id: u64,
    common: Arc<Common>,
}

impl<T> Probe<T> {
    /// The backend to ask.
    pub fn backend(&self) -> &T {
        &self.backend
    }

    /// Its answer: the requests it had in flight (its own count, every
    /// client's) and its latency now (its own estimate, or the probe's
    /// round trip). Kept in the balancer's probe pool; later picks take
    /// it into account.
    pub fn answer(self, in_flight: u32, latency: Duration) {
        if let Some(board) = self.common.probes() {
            // Read before the pool is taken: no caller code (a clock of the
            // caller's) runs while an answer holds it.
            let now = self.common.now();
            board.answer(self.id, in_flight, Nanos::saturating(latency), now);
        }
    }
}

impl<T: fmt::Debug> fmt::Debug for Probe<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Probe")
            .field("backend", &self.backend)
            .finish_non_exhaustive()
    }
}

impl<T: Clone> Backends<T> {
    /// The probes a probing balancer asks for after a pick: as many as it
    /// is set to, to distinct backends drawn at random among those not
    /// down or draining, pushed onto `out`. None for any other balancer.
    pub(crate) fn probes(&self, out: &mut Vec<Probe<T>>) {
        let common = self.common_arc();
        let Some(board) = common.probes() else {
            return;
        };
        let n = self.len();
        let wanted = board.per_pick() as usize;
        let start = out.len();
        // Every backend when it asks for as many; else draws, bounded: a
        // draw that repeats a backend, or finds one down, is retried at
        // most a few times a probe.
        let every = wanted >= n;
        let draws = if every { n } else { wanted.saturating_mul(4) };
        for draw in 0..draws {
            if out.len() - start == wanted {
                break;
            }
            let index = if every {
                draw
            } else {
                ((u128::from(board.word()) * n as u128) >> 64) as usize
            };
            let record = self.record(index);
            if record.flags() & (flag::DOWN | flag::DRAINING) != 0
                || out[start..].iter().any(|probe| probe.id == record.id)
            {
                continue;
            }
            if let Some(entry) = self.upgrade(index) {
                out.push(Probe {
                    backend: entry.value.clone(),
                    id: record.id,
                    common: Arc::clone(common),
                });
            }
        }
    }
}
