//! Least-connections, weighted and unweighted: nginx's `least_conn`.
//!
//! A pick goes to a backend with the fewest active guards per unit of weight
//! (`a_i * w_j < a_j * w_i`, in `u64`). When several tie, nginx runs smooth
//! weighted round-robin over the tied backends only: their current weights
//! grow by their weights, the largest wins (lowest index on ties), and the
//! winner's drops by the tied backends' total. With every guard dropped
//! before the next pick all backends tie, so the sequence is exactly smooth
//! weighted round-robin (plain round-robin for equal weights).
//!
//! The lock-free form runs the same rule on atomics and, on one thread,
//! makes exactly nginx's picks. To keep the common all-tied pick `O(1)` in
//! writes it stores each current weight as `base_i + epoch * w_i`: raising
//! every backend's current weight is one `fetch_add` on `epoch`. A pick
//! reads every count once and, when several tie, every tied backend's
//! current weight once more: `O(n)`, as in nginx.
//!
//! A static balancer of many backends (above 64 lock-free, above 8
//! mutex-backed) also keeps a dense `u32` copy of the counts, raised on pick
//! and lowered by the guard's drop, so that a scan reads a few cache lines
//! rather than one line a backend. A live balancer's snapshots share their
//! entries, so they scan the entries' own counts.
//!
//! Under concurrency two picks may read the same counts and choose the same
//! minimum, and their current-weight updates interleave; every update still
//! adds exactly what it subtracts, so the current weights keep summing to
//! zero and ties keep rotating in proportion to weight. The mutex-backed form
//! never lets two picks see the same minimum.

use crate::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, Ordering};

use super::effective::{lazy_take, EffectiveWeights};
use super::weighted_round_robin::UNIT;
use crate::availability::Slow;
use crate::backends::{Backends, ScanActives, Weights};
use crate::balanced::{balancer_type, Assemble, Balanced, Locked, Parts, Pick};
use crate::driver::{self, Choose};
use crate::own_line::OwnLine;
use crate::{BuildError, Context, Guard, PickError};

balancer_type! {
    /// Lock-free least-connections, weighted or not (see the
    /// [`docs`](crate::docs) for how ties and concurrency behave).
    ///
    /// # Examples
    ///
    /// ```
    /// use loadbalance::{lockfree::LeastConn, Balancer, Context};
    ///
    /// let lb = LeastConn::new(["a", "b", "c"])?;
    /// let ctx = Context::new();
    /// let held = lb.pick(&ctx)?; // "a": all tie, round-robin order
    /// assert_eq!(*lb.pick(&ctx)?, "b"); // dropped at once
    /// assert_eq!(*lb.pick(&ctx)?, "c"); // "a" is busy; "b" and "c" tie
    /// assert_eq!(*held, "a");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    LeastConn, Scan
}

balancer_type! {
    /// Mutex-backed least-connections, weighted or not: nginx's
    /// `least_conn` exactly, ties included.
    ///
    /// # Examples
    ///
    /// ```
    /// use loadbalance::{locked::LeastConn, Balancer, Context};
    ///
    /// let lb = LeastConn::weighted([("big", 3), ("small", 1)])?;
    /// let ctx = Context::new();
    /// let held: Vec<_> = (0..4).map(|_| lb.pick(&ctx).unwrap()).collect();
    /// assert_eq!(held.iter().filter(|g| ***g == "big").count(), 3);
    /// # Ok::<(), loadbalance::BuildError>(())
    /// ```
    LockedLeastConn, Locked<LeastConnState>
}

impl<T> LeastConn<T> {
    /// Least-connections over equally weighted backends.
    ///
    /// # Errors
    ///
    /// [`BuildError::NoBackends`] or [`BuildError::TooManyBackends`].
    pub fn new(backends: impl IntoIterator<Item = T>) -> Result<Self, BuildError> {
        Self::weighted(backends.into_iter().map(|backend| (backend, 1)))
    }

    /// Weighted least-connections over `(backend, weight)` pairs.
    ///
    /// # Errors
    ///
    /// [`BuildError::NoBackends`], [`BuildError::TooManyBackends`],
    /// [`BuildError::ZeroWeight`] or [`BuildError::WeightOverflow`].
    pub fn weighted(backends: impl IntoIterator<Item = (T, u32)>) -> Result<Self, BuildError> {
        let (backends, weights) = Backends::weighted_dense(backends, true, DENSE_ABOVE)?;
        Ok(Self(Balanced {
            backends,
            algorithm: Scan::new(weights),
        }))
    }
}

impl<T> LockedLeastConn<T> {
    /// Least-connections over equally weighted backends.
    ///
    /// # Errors
    ///
    /// As [`LeastConn::new`].
    pub fn new(backends: impl IntoIterator<Item = T>) -> Result<Self, BuildError> {
        Self::weighted(backends.into_iter().map(|backend| (backend, 1)))
    }

    /// Weighted least-connections over `(backend, weight)` pairs.
    ///
    /// # Errors
    ///
    /// As [`LeastConn::weighted`].
    pub fn weighted(backends: impl IntoIterator<Item = (T, u32)>) -> Result<Self, BuildError> {
        let (backends, weights) = Backends::weighted_dense(backends, true, LOCKED_DENSE_ABOVE)?;
        Ok(Self(Balanced::locked(
            backends,
            LeastConnState::new(weights),
        )))
    }
}

/// Backends above which a static lock-free table keeps a dense copy of the
/// counts. Measured with `cargo bench --bench pick`: at 4 backends the copy's
/// two extra shared writes cost 40.6 against 33.7 ns a pick; at 64 both
/// scans cost 113 ns; at 1,024 the copy saves 1.51 against 1.22 µs.
const DENSE_ABOVE: usize = 64;

/// As `DENSE_ABOVE`, for the mutex-backed form, whose scans run twice a
/// pick (every backend ties when guards drop at once). With the copy, at 64
/// weighted backends 170 against 185 to 194 ns a pick (unweighted, about
/// equal), at 1,024 2.18 against 2.51 µs (weighted 2.01 against 2.45).
const LOCKED_DENSE_ABOVE: usize = 8;

/// Active count as compared: capped at `u32::MAX` so that a count times a
/// weight always fits in `u64`.
#[inline]
fn capped(active: usize) -> u64 {
    active.min(u32::MAX as usize) as u64
}

/// Backend `index`'s load, as the sequential form reads it.
#[inline]
fn load<T>(backends: &Backends<T>, index: usize) -> u64 {
    capped(backends.active(index))
}

/// Whether backend `(a_i, w_i)` has fewer active per weight than `(a_j, w_j)`,
/// or the same: `a_i / w_i` against `a_j / w_j`, cross-multiplied.
#[inline]
fn compare(a_i: u64, w_i: u32, a_j: u64, w_j: u32) -> std::cmp::Ordering {
    (a_i * u64::from(w_j)).cmp(&(a_j * u64::from(w_i)))
}

/// nginx's `ngx_http_upstream_get_least_conn_peer` as a sequential state
/// machine, written in its two-pass form.
#[derive(Debug)]
pub(crate) struct LeastConnState {
    weights: Weights,
    /// All weights are 1: the plain rule compares counts without products.
    unit: bool,
    current: Box<[i64]>,
    /// Used by the tie-break; restored one unit each time the backend ties.
    effective: EffectiveWeights,
}

impl LeastConnState {
    fn new(weights: Weights) -> Self {
        Self {
            effective: EffectiveWeights::new(&weights),
            unit: weights.all_one(),
            current: vec![0; weights.as_slice().len()].into_boxed_slice(),
            weights,
        }
    }

    /// Starts from backends' health as it is (a live balancer's snapshot).
    fn from_backends<T>(weights: Weights, backends: &Backends<T>) -> Self {
        let effective = EffectiveWeights::from_backends(&weights, backends);
        Self {
            effective,
            ..Self::new(weights)
        }
    }

    /// The plain rule: every backend available at full weight, given a way
    /// to read every backend's load in order (read twice when some tie).
    #[inline]
    fn least<I: Iterator<Item = u64>>(&mut self, loads: impl Fn() -> I) -> usize {
        if self.unit {
            self.least_with::<true, I>(loads)
        } else {
            self.least_with::<false, I>(loads)
        }
    }

    /// `least`, compiled once for all weights 1 (`UNIT_WEIGHTS`: no weight
    /// is read and no product taken) and once for any weights.
    #[inline(always)]
    fn least_with<const UNIT_WEIGHTS: bool, I: Iterator<Item = u64>>(
        &mut self,
        loads: impl Fn() -> I,
    ) -> usize {
        let w = self.weights.as_slice();
        let weight = |i: usize| if UNIT_WEIGHTS { 1 } else { u64::from(w[i]) };
        // Pass 1: the first backend with the least load per weight, and
        // whether others tie. The best so far stays in registers: re-read
        // through its index, it put a load in the loop-carried chain.
        let mut pass_1 = loads();
        let (mut best, mut best_load, mut best_weight) = (0, pass_1.next().unwrap_or(0), weight(0));
        let mut many = false;
        for (i, load) in pass_1.enumerate() {
            let (i, w_i) = (i + 1, weight(i + 1));
            // `load / w_i` against `best_load / best_weight`, cross-multiplied.
            let (this, least) = (load * best_weight, best_load * w_i);
            if this < least {
                (best, best_load, best_weight, many) = (i, load, w_i, false);
            } else if this == least {
                many = true;
            }
        }
        if !many {
            return best;
        }
        // Pass 2: smooth weighted round-robin over the tied backends only.
        let (first, first_load, first_weight) = (best, best_load, best_weight);
        let mut total = 0i64;
        let mut best_current = i64::MIN;
        let current = &mut self.current[..w.len()];
        for (i, load) in loads().enumerate().skip(first) {
            let w_i = weight(i);
            if load * first_weight != first_load * w_i {
                continue;
            }
            // Current weights stay within a few totals of zero: no overflow.
            let add = w_i as i64 * UNIT;
            current[i] += add;
            total += add;
            if current[i] > best_current {
                (best, best_current) = (i, current[i]);
            }
        }
        self.current[best] -= total;
        best
    }

    /// nginx's rule over the backends that can take the pick, comparing by
    /// slow-start-scaled weights and breaking ties by effective weights.
    fn least_available<T>(
        &mut self,
        slow: &mut Slow<'_, '_, T>,
    ) -> Result<Option<usize>, PickError> {
        let backends = slow.backends();
        backends.shared().slow_step();
        self.effective.catch_up(backends);
        let selection = slow.selection()?;
        let w = self.weights.as_slice();
        let ramped = |i: usize| ramped(w[i], selection.ramp(i));
        let mut best: Option<usize> = None;
        let mut many = false;
        for i in (0..w.len()).filter(|&i| selection.eligible(i)) {
            let Some(b) = best else {
                best = Some(i);
                continue;
            };
            match compare_ramped(load(backends, i), ramped(i), load(backends, b), ramped(b)) {
                std::cmp::Ordering::Less => (best, many) = (Some(i), false),
                std::cmp::Ordering::Equal => many = true,
                std::cmp::Ordering::Greater => {}
            }
        }
        let Some(mut best) = best else {
            return Ok(None);
        };
        if many {
            let (first, first_load, first_weight) = (best, load(backends, best), ramped(best));
            let mut total = 0i64;
            for i in (first..w.len()).filter(|&i| selection.eligible(i)) {
                if compare_ramped(load(backends, i), ramped(i), first_load, first_weight).is_ne() {
                    continue;
                }
                // Thousandths of a unit, as `ramped`; scaling all alike
                // leaves nginx's sequence as is.
                let used = self.effective.take(i, w[i], selection.ramp(i), backends);
                self.current[i] += used;
                total += used;
                if self.current[i] > self.current[best] {
                    best = i;
                }
            }
            self.current[best] -= total;
        }
        Ok(Some(best))
    }
}

impl Choose for LeastConnState {
    #[inline]
    fn plain<T>(&mut self, _: &Context<'_>, backends: &Backends<T>) -> Result<usize, PickError> {
        Ok(backends.scan_actives(SequentialLeast(self)))
    }

    fn choose<T>(
        &mut self,
        _: &Context<'_>,
        slow: &mut Slow<'_, '_, T>,
    ) -> Result<Option<usize>, PickError> {
        self.least_available(slow)
    }
}

/// A weight scaled by slow-start progress, in thousandths of a unit.
fn ramped(weight: u32, ramp: u64) -> u64 {
    u64::from(weight) * ramp
}

/// As [`compare`] for slow-start-scaled weights, whose products need 128 bits.
fn compare_ramped(a_i: u64, w_i: u64, a_j: u64, w_j: u64) -> std::cmp::Ordering {
    (u128::from(a_i) * u128::from(w_j)).cmp(&(u128::from(a_j) * u128::from(w_i)))
}

/// The lock-free form: a scan for the least loaded, then nginx's tie-break
/// on atomics.
pub(crate) struct Scan {
    weights: Weights,
    /// All weights are 1: the scan compares counts without multiplying.
    unit: bool,
    /// `base_i`: backend i's current weight is `base_i + epoch * w_i`,
    /// computed in wrapping arithmetic. The true value is small, so the
    /// wrapped result is exact however far `epoch` has run.
    base: Box<[AtomicI64]>,
    /// How many picks found every backend tied.
    epoch: OwnLine<AtomicU64>,
}

/// The first least-loaded backend, its load, and how many share that load.
struct Least {
    first: usize,
    load: u64,
    tied: usize,
}

impl Scan {
    fn new(weights: Weights) -> Self {
        let base = weights
            .as_slice()
            .iter()
            .map(|_| AtomicI64::new(0))
            .collect();
        let unit = weights.all_one();
        Self {
            weights,
            unit,
            base,
            epoch: OwnLine(AtomicU64::new(0)),
        }
    }

    /// Whether a load equal to the first backend's `first` ties with it:
    /// always for equal weights; with weights, only when both are 0.
    #[inline]
    fn level_ties(&self, first: u64) -> bool {
        self.unit || first == 0
    }

    /// Pass 1: the first least-loaded backend and how many tie with it.
    #[inline]
    fn least(&self, mut loads: impl Iterator<Item = u64>) -> Least {
        let first = loads.next().unwrap_or(0);
        let mut least = Least {
            first: 0,
            load: first,
            tied: 1,
        };
        // The run of backends level with the first, in a loop that carries
        // only the count rather than the general loop's chain of selects:
        // with every guard dropped at once, all backends tie.
        if self.level_ties(first) {
            let Some(other) = loads.by_ref().find(|&load| {
                least.tied += usize::from(load == first);
                load != first
            }) else {
                return least;
            };
            let at = least.tied;
            self.scan_from(least, at, std::iter::once(other).chain(loads))
        } else {
            self.scan_from(least, 1, loads)
        }
    }

    /// Pass 1 from backend `at` on, given the least of those before it.
    #[inline]
    fn scan_from(&self, mut least: Least, at: usize, loads: impl Iterator<Item = u64>) -> Least {
        if self.unit {
            // Count ties up to the next lower load, a rare event taken as a
            // branch: as one loop of selects, every count waited on the last.
            let mut loads = (at..).zip(loads);
            while let Some((i, load)) = loads.find(|&(_, load)| {
                least.tied += usize::from(load == least.load);
                load < least.load
            }) {
                least = Least {
                    first: i,
                    load,
                    tied: 1,
                };
            }
        } else {
            let w = self.weights.as_slice();
            let mut w_first = w[least.first];
            // As above, with loads per weight cross-multiplied.
            let mut loads = (at..).zip(loads.zip(&w[at..]));
            while let Some((i, (load, &w_i))) = loads.find(|&(_, (load, &w_i))| {
                let order = compare(load, w_i, least.load, w_first);
                least.tied += usize::from(order.is_eq());
                order.is_lt()
            }) {
                least = Least {
                    first: i,
                    load,
                    tied: 1,
                };
                w_first = w_i;
            }
        }
        least
    }

    /// The backend this pick goes to, given a way to read every backend's
    /// load in order (read twice when a subset ties).
    #[inline]
    fn next_index<L: Iterator<Item = u64>>(&self, loads: impl Fn() -> L) -> usize {
        self.settle(self.least(loads()), loads)
    }

    /// Pass 1 over a static table's dense counts: as [`least`](Self::least),
    /// with the run level with the first backend read in blocks.
    #[inline]
    fn least_dense(&self, counts: &[AtomicU32]) -> Least {
        // Relaxed: see `settle`.
        let load = |count: &AtomicU32| u64::from(count.load(Ordering::Relaxed));
        let Some((first, rest)) = counts.split_first() else {
            return Least {
                first: 0,
                load: 0,
                tied: 1,
            };
        };
        let first = first.load(Ordering::Relaxed);
        let mut least = Least {
            first: 0,
            load: u64::from(first),
            tied: 1,
        };
        if self.level_ties(u64::from(first)) {
            least.tied += level_run(rest, first);
        }
        let at = least.tied;
        self.scan_from(least, at, counts[at..].iter().map(load))
    }

    /// Pass 2: the backend among those tied at `least`, re-reading every
    /// backend's load in order when only some tie.
    #[inline]
    fn settle<L: Iterator<Item = u64>>(&self, least: Least, loads: impl Fn() -> L) -> usize {
        // Relaxed everywhere below: the counts and current weights only steer
        // the choice; nothing is published through them, and a stale read
        // costs at most a less even spread, never a wrong backend.
        if least.tied == 1 {
            return least.first;
        }
        let w = self.weights.as_slice();
        // Every current weight as this pick raises it: `base + (epoch+1) * w`.
        let raise = self.epoch.load(Ordering::Relaxed).wrapping_add(1) as i64;
        if least.tied == w.len() {
            // All tie: raising every backend is one step of the epoch.
            let step = raise.wrapping_mul(UNIT);
            let winner = if self.unit {
                first_highest(&self.base, w, |base, _| base.wrapping_add(step))
            } else {
                first_highest(&self.base, w, |base, w_i| {
                    base.wrapping_add(step.wrapping_mul(i64::from(w_i)))
                })
            };
            self.epoch.fetch_add(1, Ordering::Relaxed);
            self.base[winner].fetch_sub(i64::from(self.weights.total()) * UNIT, Ordering::Relaxed);
            return winner;
        }
        // Raise the tied backends one by one. Counts read now may differ
        // from pass 1's under concurrency; subtracting exactly what was
        // added keeps the current weights summing to zero regardless.
        let (mut winner, mut winner_weight) = (least.first, i64::MIN);
        let w_first = w[least.first];
        let mut added = 0i64;
        let tied = loads()
            .zip(w)
            .zip(&self.base[..])
            .enumerate()
            .skip(least.first);
        for (i, ((load, &w_i), base)) in tied {
            if compare(load, w_i, least.load, w_first).is_ne() {
                continue;
            }
            let before = base.fetch_add(i64::from(w_i) * UNIT, Ordering::Relaxed);
            added += i64::from(w_i) * UNIT;
            let raised = before.wrapping_add(raise.wrapping_mul(i64::from(w_i) * UNIT));
            if raised > winner_weight {
                (winner, winner_weight) = (i, raised);
            }
        }
        self.base[winner].fetch_sub(added, Ordering::Relaxed);
        winner
    }
}

/// How many of `counts`, from the first, equal `level`. Blocks of 8 are
/// read whole and their differences OR-ed: one branch a block rather than
/// one a count. A block that differs ends the run at its start (the general
/// scan takes it from there).
#[inline]
fn level_run(counts: &[AtomicU32], level: u32) -> usize {
    const BLOCK: usize = 8;
    // Relaxed: see `Scan::settle`.
    let differs = |count: &AtomicU32| count.load(Ordering::Relaxed) ^ level;
    let mut blocks = counts.chunks_exact(BLOCK);
    let mut run = 0;
    for block in &mut blocks {
        if block.iter().fold(0, |any, count| any | differs(count)) != 0 {
            return run;
        }
        run += BLOCK;
    }
    run + blocks
        .remainder()
        .iter()
        .take_while(|&count| differs(count) == 0)
        .count()
}

/// The first backend with the highest current weight, each computed once by
/// `current(base_i, w_i)`. Four running maxima over interleaved backends
/// carry no dependency from one backend to the next, so the loads overlap;
/// each keeps its first maximum, and ties between them go to the lower index.
#[inline]
fn first_highest(bases: &[AtomicI64], weights: &[u32], current: impl Fn(i64, u32) -> i64) -> usize {
    const LANES: usize = 4;
    // Relaxed: see `Scan::settle`.
    let read = |base: &AtomicI64, w_i: u32| current(base.load(Ordering::Relaxed), w_i);
    let mut winner = (i64::MIN, 0);
    // Too few backends for the lanes to pay for merging them: one loop.
    let mut rest = 0;
    if bases.len() >= 4 * LANES {
        // Each lane's maximum and the block it is in (its index is
        // `block * LANES + lane`); `usize::MAX`: none yet, which only a
        // current weight of `i64::MIN` leaves, every earlier one tying at it.
        let mut lanes = [(i64::MIN, usize::MAX); LANES];
        let blocks = bases.chunks_exact(LANES).zip(weights.chunks_exact(LANES));
        for (block, (bases, weights)) in blocks.enumerate() {
            for (lane, best) in lanes.iter_mut().enumerate() {
                let current = read(&bases[lane], weights[lane]);
                if current > best.0 {
                    *best = (current, block);
                }
            }
        }
        for (lane, (current, block)) in lanes.into_iter().enumerate() {
            if block == usize::MAX {
                continue;
            }
            let i = block * LANES + lane;
            if current > winner.0 || current == winner.0 && i < winner.1 {
                winner = (current, i);
            }
        }
        rest = bases.len() / LANES * LANES;
    }
    // Backends after every lane's: a tie keeps the earlier.
    let rest = bases.iter().zip(weights).enumerate().skip(rest);
    for (i, (base, &w_i)) in rest {
        let current = read(base, w_i);
        if current > winner.0 {
            winner = (current, i);
        }
    }
    winner.1
}

impl Scan {
    /// The rule over the backends that can take the pick, on atomics:
    /// loads compared by slow-start-scaled weights, ties broken by
    /// effective weights (lowered by failures, restored one unit a slow
    /// pick) added to the current weights one by one.
    fn least_available<T>(&self, slow: &mut Slow<'_, '_, T>) -> Result<Option<usize>, PickError> {
        let backends = slow.backends();
        let step = backends.shared().slow_step();
        let w = self.weights.as_slice();
        let selection = slow.selection()?;
        let ramped = |i: usize| ramped(w[i], selection.ramp(i));
        let eligible = || (0..w.len()).filter(|&i| selection.eligible(i));
        let mut least: Option<(usize, u64, u64)> = None;
        let mut tied = 0;
        for i in eligible() {
            let (load, weight) = (capped(backends.active(i)), ramped(i));
            match least {
                Some((_, least_load, least_weight)) => {
                    match compare_ramped(load, weight, least_load, least_weight) {
                        std::cmp::Ordering::Less => (least, tied) = (Some((i, load, weight)), 1),
                        std::cmp::Ordering::Equal => tied += 1,
                        std::cmp::Ordering::Greater => {}
                    }
                }
                None => (least, tied) = (Some((i, load, weight)), 1),
            }
        }
        let Some((first, least_load, least_weight)) = least else {
            return Ok(None);
        };
        let mut winner = first;
        if tied > 1 {
            // Relaxed: current weights only steer the choice, as in
            // `next_index`; each pick subtracts exactly what it added.
            let epoch = self.epoch.load(Ordering::Relaxed) as i64;
            let mut winner_weight = i64::MIN;
            let mut added = 0i64;
            for i in eligible().skip_while(|&i| i < first) {
                let load = capped(backends.active(i));
                if compare_ramped(load, ramped(i), least_load, least_weight).is_ne() {
                    continue;
                }
                let used = lazy_take(backends.record(i), w[i], step, selection.ramp(i));
                let before = self.base[i].fetch_add(used, Ordering::Relaxed);
                added += used;
                let raised = before
                    .wrapping_add(used)
                    .wrapping_add(epoch.wrapping_mul(i64::from(w[i]) * UNIT));
                if raised > winner_weight {
                    (winner, winner_weight) = (i, raised);
                }
            }
            self.base[winner].fetch_sub(added, Ordering::Relaxed);
        }
        Ok(Some(winner))
    }
}

/// `LeastConnState::least` over whichever way the table reads its counts.
struct SequentialLeast<'a>(&'a mut LeastConnState);

impl ScanActives<usize> for SequentialLeast<'_> {
    #[inline]
    fn scan<I: Iterator<Item = usize>>(self, actives: impl Fn() -> I) -> usize {
        self.0.least(|| actives().map(capped))
    }
}

/// `Scan::next_index` over whichever way the table reads its counts.
struct NextIndex<'a>(&'a Scan);

impl ScanActives<usize> for NextIndex<'_> {
    #[inline]
    fn scan<I: Iterator<Item = usize>>(self, actives: impl Fn() -> I) -> usize {
        self.0.next_index(|| actives().map(capped))
    }

    #[inline]
    fn scan_dense(self, counts: &[AtomicU32]) -> usize {
        // Relaxed: see `Scan::settle`.
        let loads = || {
            counts
                .iter()
                .map(|count| u64::from(count.load(Ordering::Relaxed)))
        };
        self.0.settle(self.0.least_dense(counts), loads)
    }
}

impl Pick for Scan {
    #[inline]
    fn pick<T>(&self, ctx: &Context<'_>, backends: &Backends<T>) -> Result<Guard<T>, PickError> {
        driver::pick(&mut &*self, ctx, backends)
    }
}

impl Choose for &Scan {
    #[inline]
    fn plain<T>(&mut self, _: &Context<'_>, backends: &Backends<T>) -> Result<usize, PickError> {
        Ok(backends.scan_actives(NextIndex(self)))
    }

    fn choose<T>(
        &mut self,
        _: &Context<'_>,
        slow: &mut Slow<'_, '_, T>,
    ) -> Result<Option<usize>, PickError> {
        self.least_available(slow)
    }
}

impl<T: Send + Sync> Assemble for LeastConn<T> {
    type Value = T;
    type Options = ();
    const EFFECTIVE_WEIGHTS: bool = true;

    fn assemble(parts: Parts<'_, T>, _: &(), _: Option<&Self>) -> Result<Self, BuildError> {
        Ok(Self(Balanced {
            backends: Backends::from_entries(parts.entries)?,
            algorithm: Scan::new(parts.weights),
        }))
    }
}

impl<T: Send + Sync> Assemble for LockedLeastConn<T> {
    type Value = T;
    type Options = ();
    const EFFECTIVE_WEIGHTS: bool = true;

    fn assemble(parts: Parts<'_, T>, _: &(), _: Option<&Self>) -> Result<Self, BuildError> {
        let backends = Backends::from_entries(parts.entries)?;
        let state = LeastConnState::from_backends(parts.weights, &backends);
        Ok(Self(Balanced::locked(backends, state)))
    }
}
