//! The probing balancer's state: the map from the probe pool's record ids
//! to this set's indices, the rule, and the fallback pick.

use super::ProbingOptions;
use super::rule::Rule;
use crate::algorithms::random::Choices;
use crate::algorithms::random::least_conn::ChoiceOptions;
use crate::error::{BuildError, PickError};
use crate::pick::{Build, Candidates, Choose, Context, Set};
use crate::table::Backends;

/// The state of the probing balancer, for both forms (the probe pool has a
/// lock of its own, which a pick only tries).
pub struct ProbingState {
    /// `(record id, index)` of every backend, by id.
    ids: Box<[(u64, u32)]>,
    /// This state's stamp, unique among the states alive: the pool's
    /// slots cache their index for it.
    epoch: u64,
    rule: Rule,
    /// The pick while the pool has no answer that may take it, or while
    /// another thread holds it: power-of-two-choices least-connections.
    fallback: Choices<ChoiceOptions>,
}

impl ProbingState {
    /// Backend `id`'s index in this set.
    #[inline]
    fn index_of(&self, id: u64) -> Option<usize> {
        self.ids
            .binary_search_by_key(&id, |&(id, _)| id)
            .ok()
            .map(|found| self.ids[found].1 as usize)
    }

    /// The backend the pool steers this pick to, if it has one that may
    /// take it and no one else holds the pool.
    #[inline]
    fn steered<T>(
        &self,
        backends: &Backends<T>,
        eligible: impl FnMut(usize) -> Result<bool, PickError>,
    ) -> Result<Option<usize>, PickError> {
        let Some(mut ring) = backends
            .common()
            .probes()
            .and_then(|board| board.try_ring())
        else {
            return Ok(None);
        };
        self.rule
            .select(&mut ring, self.epoch, |id| self.index_of(id), eligible)
    }
}

/// A stamp for a new state: never 0 (an empty slot's), and distinct from
/// every other state's (a 64-bit count does not wrap).
fn next_epoch() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    // Relaxed: the stamps need only be distinct.
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

impl<T> Build<T> for ProbingState {
    type Options = ProbingOptions;
    const RESUMES: bool = true;

    fn build(set: &Set<'_, T>, options: &ProbingOptions) -> Result<Self, BuildError> {
        let (rule, settings) = options.check()?;
        let board = set.common().start_probes(settings);
        let epoch = next_epoch();
        board.built(epoch);
        let mut ids: Vec<(u64, u32)> = set
            .records()
            .zip(0u32..)
            .map(|(record, index)| (record.id, index))
            .collect();
        ids.sort_unstable();
        Ok(Self {
            ids: ids.into_boxed_slice(),
            epoch,
            rule,
            fallback: Choices::least_loaded(set.validated(), options.seed),
        })
    }

    /// A seeded fallback goes on where the previous state's left off.
    fn resume(&mut self, previous: &Self) {
        self.fallback.resume(&previous.fallback);
    }
}

impl Choose for &ProbingState {
    #[inline]
    fn plain<T>(
        &mut self,
        ctx: &Context<'_>,
        backends: &Backends<T>,
    ) -> Result<Option<usize>, PickError> {
        match self.steered(backends, |_| Ok(true))? {
            Some(index) => Ok(Some(index)),
            None => (&self.fallback).plain(ctx, backends),
        }
    }

    fn choose<T>(
        &mut self,
        ctx: &Context<'_>,
        candidates: &mut Candidates<'_, '_, T>,
    ) -> Result<Option<usize>, PickError> {
        let backends = candidates.backends();
        match self.steered(backends, |index| candidates.eligible(index))? {
            Some(index) => Ok(Some(index)),
            None => (&self.fallback).choose(ctx, candidates),
        }
    }
}

crate::algorithms::choose_through_ref!(ProbingState);

impl std::fmt::Debug for ProbingState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProbingState")
            .field("backends", &self.ids.len())
            .field("rule", &self.rule)
            .finish_non_exhaustive()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use std::sync::mpsc;
    use std::time::Duration;

    use super::super::ProbingOptions;
    use crate::algorithms::lockfree;
    use crate::pick::{Balancer, Context};

    /// A pick never waits for the pool: with another thread holding it, a
    /// pick in this one falls back and returns (it would hang on a lock).
    #[test]
    fn a_pick_never_waits_for_the_pool() {
        let options = ProbingOptions::default().probes(2).uses(255);
        let lb = lockfree::Probing::with_options([("a", 1), ("b", 1)], options).expect("valid");
        for probe in lb.probes() {
            probe.answer(0, Duration::from_millis(1));
        }
        let board = lb.table().common().probes().expect("a probing pool");
        let (held_tx, held_rx) = mpsc::channel();
        let (done_tx, done_rx) = mpsc::channel();
        std::thread::scope(|scope| {
            scope.spawn(move || {
                let _ring = board.hold();
                held_tx.send(()).expect("main waits");
                // Held until the pick below has returned, or 5 s.
                let _ = done_rx.recv_timeout(Duration::from_secs(5));
            });
            held_rx.recv().expect("the holder runs");
            let (tx, rx) = mpsc::channel();
            let lb = &lb;
            scope.spawn(move || tx.send(lb.pick(&Context::new()).map(|g| *g)));
            let picked = rx.recv_timeout(Duration::from_secs(2));
            done_tx.send(()).expect("the holder waits");
            assert!(
                matches!(picked, Ok(Ok("a" | "b"))),
                "the pick returned while the pool was held: {picked:?}"
            );
        });
    }
}
