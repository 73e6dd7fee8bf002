//! Random selection: uniform, or weighted with exact shares, in `O(1)`.
//!
//! A weighted draw reads Vose's alias table: `n` columns of height `W` (the
//! sum of the weights), column `c` owned by backend `c` up to its threshold
//! and by its alias above. Thresholds are integers (`w_i * n` split into
//! columns of `W`), so backend i's share of the `n * W` cells is exactly
//! `w_i / W`. A draw takes one 64-bit random word: the high half of
//! `word * n` picks the column, the low half, times `W`, the height (the
//! bias is below `n * W / 2^64`). Equal weights skip the table.
//!
//! Randomness: without a seed, each thread draws from a generator of its
//! own (wyrand, seeded once per thread from the standard library's random
//! hash keys), so a pick writes no shared cache line and allocates nothing. With a seed, draw `k` is
//! `splitmix64(seed + k)` over a shared counter: reproducible whatever the
//! threads, at the cost of one shared `fetch_add` a pick (as round-robin),
//! and the mutex-backed form with the same seed makes the same picks.
//!
//! Off the plain path a pick draws as usual and accepts the backend only if
//! it may take the pick (and, in slow start, with its ramp's probability);
//! after 16 rejections it draws among the backends that may, by weight
//! times ramp, in one pass. Both are exact: each draws backend i with
//! probability proportional to `w_i * ramp_i` among those that may.
//! Failures eject a backend as for every algorithm but do not lower its
//! weight: like nginx's `random`, it draws by configured weights.

use std::cell::Cell;

use crossbeam_utils::CachePadded;

use crate::assemble::{Assemble, Parts};
use crate::backends::{Backends, Weights};
use crate::balancer_type::{balancer_type, Balanced, Pick};
use crate::driver::{self, Choose};
use crate::health::FULL;
use crate::mutex_form::Locked;
use crate::selection::Slow;
use crate::sync::atomic::{AtomicU64, Ordering};
use crate::{BuildError, Context, Guard, PickError};

/// Options of the random balancers.
///
/// # Examples
///
/// ```
/// use loadbalance::{lockfree, locked, Balancer, Context, RandomOptions};
///
/// let options = RandomOptions::default().seed(7);
/// let a = lockfree::Random::with_options([("a", 3), ("b", 1)], options.clone())?;
/// let b = locked::Random::with_options([("a", 3), ("b", 1)], options)?;
/// for _ in 0..100 {
///     assert_eq!(*a.pick(&Context::new())?, *b.pick(&Context::new())?);
/// }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RandomOptions {
    seed: Option<u64>,
}

impl RandomOptions {
    /// Draws from `splitmix64(seed + k)`: the same picks on every run (and
    /// in both forms), for tests and simulations.
    #[must_use]
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }
}

balancer_type! {
    /// Lock-free random selection, uniform or weighted with exact shares,
    /// `O(1)` a pick whatever n (see the [module docs](crate::docs)).
    ///
    /// # Examples
    ///
    /// ```
    /// use loadbalance::{lockfree::Random, Balancer, Context};
    ///
    /// let lb = Random::weighted([("a", 3), ("b", 1)])?;
    /// let picks = (0..4000).filter(|_| *lb.pick(&Context::new()).unwrap() == "a").count();
    /// assert!((2700..3300).contains(&picks)); // three quarters
    /// # Ok::<(), loadbalance::BuildError>(())
    /// ```
    Random, Draw
}

balancer_type! {
    /// Mutex-backed random selection: the same draws from a generator the
    /// mutex guards.
    ///
    /// # Examples
    ///
    /// ```
    /// use loadbalance::{locked::Random, Balancer, Context};
    ///
    /// let lb = Random::new(["a", "b"])?;
    /// assert!(["a", "b"].contains(&*lb.pick(&Context::new())?));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    LockedRandom, Locked<RandomState>
}

impl<T> Random<T> {
    /// Uniform over `backends`.
    ///
    /// # Errors
    ///
    /// [`BuildError::NoBackends`] or [`BuildError::TooManyBackends`].
    pub fn new(backends: impl IntoIterator<Item = T>) -> Result<Self, BuildError> {
        Self::weighted(backends.into_iter().map(|backend| (backend, 1)))
    }

    /// Weighted over `(backend, weight)` pairs.
    ///
    /// # Errors
    ///
    /// [`BuildError::NoBackends`], [`BuildError::TooManyBackends`],
    /// [`BuildError::ZeroWeight`] or [`BuildError::WeightOverflow`].
    pub fn weighted(backends: impl IntoIterator<Item = (T, u32)>) -> Result<Self, BuildError> {
        Self::with_options(backends, RandomOptions::default())
    }

    /// Weighted, with options (a seed).
    ///
    /// # Errors
    ///
    /// As [`weighted`](Self::weighted).
    pub fn with_options(
        backends: impl IntoIterator<Item = (T, u32)>,
        options: RandomOptions,
    ) -> Result<Self, BuildError> {
        let (backends, weights) = Backends::weighted(backends, false)?;
        Ok(Self(Balanced {
            backends,
            algorithm: Draw::new(&weights, &options, 0),
        }))
    }
}

impl<T> LockedRandom<T> {
    /// Uniform over `backends`.
    ///
    /// # Errors
    ///
    /// As [`Random::new`].
    pub fn new(backends: impl IntoIterator<Item = T>) -> Result<Self, BuildError> {
        Self::weighted(backends.into_iter().map(|backend| (backend, 1)))
    }

    /// Weighted over `(backend, weight)` pairs.
    ///
    /// # Errors
    ///
    /// As [`Random::weighted`].
    pub fn weighted(backends: impl IntoIterator<Item = (T, u32)>) -> Result<Self, BuildError> {
        Self::with_options(backends, RandomOptions::default())
    }

    /// Weighted, with options (a seed).
    ///
    /// # Errors
    ///
    /// As [`Random::weighted`].
    pub fn with_options(
        backends: impl IntoIterator<Item = (T, u32)>,
        options: RandomOptions,
    ) -> Result<Self, BuildError> {
        let (backends, weights) = Backends::weighted(backends, false)?;
        let state = RandomState::new(&weights, &options, 0);
        Ok(Self(Balanced::locked(backends, state)))
    }
}

/// Vose's alias table with integer thresholds (see the module docs), or
/// nothing for equal weights.
#[derive(Clone, Debug)]
struct Alias {
    /// `None`: every weight is equal, a draw is uniform.
    columns: Option<Box<[Column]>>,
    weights: Box<[u32]>,
    total: u64,
}

#[derive(Clone, Copy, Debug)]
struct Column {
    /// Heights below this (out of `total`) belong to the column's backend.
    threshold: u64,
    alias: u16,
}

impl Alias {
    fn new(weights: &Weights) -> Self {
        let w = weights.as_slice();
        let total = u64::from(weights.total());
        let equal = w.iter().all(|&x| x == w[0]);
        Self {
            columns: (!equal).then(|| vose(w, total)),
            weights: w.into(),
            total,
        }
    }

    /// A backend drawn by weight from one random word: the high half of
    /// `word * n` picks the column, the low half (uniform over the column's
    /// share of words) the height.
    #[inline]
    fn draw(&self, word: u64) -> usize {
        let product = u128::from(word) * self.weights.len() as u128;
        let c = (product >> 64) as usize;
        match &self.columns {
            None => c,
            Some(columns) => {
                let cell = columns[c];
                if below(product as u64, self.total) < cell.threshold {
                    c
                } else {
                    usize::from(cell.alias)
                }
            }
        }
    }
}

/// Vose's method on integers: each backend brings `w_i * n` units; columns
/// hold `total` units each.
fn vose(w: &[u32], total: u64) -> Box<[Column]> {
    let n = w.len() as u64;
    let mut units: Vec<u64> = w.iter().map(|&x| u64::from(x) * n).collect();
    let mut columns = vec![
        Column {
            threshold: total,
            alias: 0
        };
        w.len()
    ];
    let (mut small, mut large): (Vec<usize>, Vec<usize>) =
        (0..w.len()).partition(|&i| units[i] < total);
    while let (Some(&s), Some(&l)) = (small.last(), large.last()) {
        small.pop();
        // Indices fit u16: at most MAX_BACKENDS backends.
        columns[s] = Column {
            threshold: units[s],
            alias: l as u16,
        };
        units[l] -= total - units[s];
        if units[l] < total {
            large.pop();
            small.push(l);
        }
    }
    // What is left is exactly full (the units add up to n * total).
    for i in small.into_iter().chain(large) {
        columns[i] = Column {
            threshold: total,
            alias: i as u16,
        };
    }
    columns.into_boxed_slice()
}

/// A uniform integer below `n` from a random word: the high half of the
/// 128-bit product (Lemire's method without the rejection step).
#[inline]
fn below(word: u64, n: u64) -> u64 {
    ((u128::from(word) * u128::from(n)) >> 64) as u64
}

/// SplitMix64's output for counter value `x`: the seeded stream.
#[inline]
fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

thread_local! {
    /// This thread's wyrand state; 0 until first used.
    static THREAD_RNG: Cell<u64> = const { Cell::new(0) };
}

/// The next word of this thread's generator (wyrand).
#[inline]
fn thread_word() -> u64 {
    THREAD_RNG.with(|state| {
        let mut s = state.get();
        if s == 0 {
            // Seeded from the standard library's per-process random keys
            // (no allocation, unlike a first use of `rand`'s thread rng).
            use std::hash::BuildHasher;
            s = std::collections::hash_map::RandomState::new()
                .hash_one(state as *const Cell<u64> as usize)
                | 1;
        }
        s = s.wrapping_add(0xA076_1D64_78BD_642F);
        state.set(s);
        let t = u128::from(s) * u128::from(s ^ 0xE703_7ED1_A0B4_28DB);
        ((t >> 64) as u64) ^ (t as u64)
    })
}

/// How many rejections the slow path draws before one pass by weight.
const REJECTIONS: usize = 16;

/// The slow path's draw, shared by both forms: accept a drawn backend that
/// may take the pick (with its ramp's probability), else one pass.
fn draw_available<T>(
    alias: &Alias,
    slow: &mut Slow<'_, '_, T>,
    mut word: impl FnMut() -> u64,
) -> Result<Option<usize>, PickError> {
    let selection = slow.selection()?;
    for _ in 0..REJECTIONS {
        let index = alias.draw(word());
        if selection.eligible(index) {
            let ramp = selection.ramp(index);
            if ramp >= FULL || below(word(), FULL) < ramp {
                return Ok(Some(index));
            }
        }
    }
    let weight = |i: usize| {
        if selection.eligible(i) {
            u64::from(alias.weights[i]) * selection.ramp(i)
        } else {
            0
        }
    };
    let total: u64 = (0..alias.weights.len()).map(weight).sum();
    if total == 0 {
        return Ok(None);
    }
    let mut at = below(word(), total);
    Ok((0..alias.weights.len()).find(|&i| {
        let w = weight(i);
        if at < w {
            true
        } else {
            at -= w;
            false
        }
    }))
}

/// The lock-free form: the alias table and where its random words come
/// from.
pub(crate) struct Draw {
    alias: Alias,
    /// `Some`: the seed, and the count of words drawn (shared).
    seeded: Option<(u64, CachePadded<AtomicU64>)>,
}

impl Draw {
    fn new(weights: &Weights, options: &RandomOptions, drawn: u64) -> Self {
        Self {
            alias: Alias::new(weights),
            seeded: options
                .seed
                .map(|seed| (seed, CachePadded::new(AtomicU64::new(drawn)))),
        }
    }

    #[inline]
    fn word(&self) -> u64 {
        match &self.seeded {
            None => thread_word(),
            Some((seed, drawn)) => {
                // Relaxed: the counter only hands out draw numbers.
                splitmix(seed.wrapping_add(drawn.fetch_add(1, Ordering::Relaxed)))
            }
        }
    }

    fn drawn(&self) -> u64 {
        // Relaxed: read once to carry the stream over a rebuild.
        self.seeded
            .as_ref()
            .map_or(0, |(_, drawn)| drawn.load(Ordering::Relaxed))
    }
}

impl Pick for Draw {
    #[inline]
    fn pick<T>(&self, ctx: &Context<'_>, backends: &Backends<T>) -> Result<Guard<T>, PickError> {
        driver::pick(&mut &*self, ctx, backends)
    }
}

impl Choose for &Draw {
    #[inline]
    fn plain<T>(&mut self, _: &Context<'_>, _: &Backends<T>) -> Result<usize, PickError> {
        Ok(self.alias.draw(self.word()))
    }

    fn choose<T>(
        &mut self,
        _: &Context<'_>,
        slow: &mut Slow<'_, '_, T>,
    ) -> Result<Option<usize>, PickError> {
        draw_available(&self.alias, slow, || self.word())
    }
}

/// The sequential form: the table and a generator of its own (seeded, or
/// from the operating system when built).
#[derive(Debug)]
pub(crate) struct RandomState {
    alias: Alias,
    stream: Stream,
}

/// The seeded stream `splitmix64(seed + k)`: its seed and how many words
/// it has given.
#[derive(Debug)]
struct Stream {
    seed: u64,
    drawn: u64,
}

impl Stream {
    #[inline]
    fn word(&mut self) -> u64 {
        let word = splitmix(self.seed.wrapping_add(self.drawn));
        self.drawn = self.drawn.wrapping_add(1);
        word
    }
}

impl RandomState {
    fn new(weights: &Weights, options: &RandomOptions, drawn: u64) -> Self {
        Self {
            alias: Alias::new(weights),
            stream: Stream {
                seed: options.seed.unwrap_or_else(rand::random),
                drawn,
            },
        }
    }
}

impl Choose for RandomState {
    #[inline]
    fn plain<T>(&mut self, _: &Context<'_>, _: &Backends<T>) -> Result<usize, PickError> {
        Ok(self.alias.draw(self.stream.word()))
    }

    fn choose<T>(
        &mut self,
        _: &Context<'_>,
        slow: &mut Slow<'_, '_, T>,
    ) -> Result<Option<usize>, PickError> {
        let Self { alias, stream } = self;
        draw_available(alias, slow, || stream.word())
    }
}

impl<T: Send + Sync> Assemble for Random<T> {
    type Value = T;
    type Options = RandomOptions;
    const EFFECTIVE_WEIGHTS: bool = false;

    fn assemble(
        parts: Parts<'_, T>,
        options: &RandomOptions,
        previous: Option<&Self>,
    ) -> Result<Self, BuildError> {
        let drawn = previous.map_or(0, |previous| previous.0.algorithm.drawn());
        Ok(Self(Balanced {
            backends: Backends::from_entries(parts.entries)?,
            algorithm: Draw::new(&parts.weights, options, drawn),
        }))
    }
}

impl<T: Send + Sync> Assemble for LockedRandom<T> {
    type Value = T;
    type Options = RandomOptions;
    const EFFECTIVE_WEIGHTS: bool = false;

    fn assemble(
        parts: Parts<'_, T>,
        options: &RandomOptions,
        previous: Option<&Self>,
    ) -> Result<Self, BuildError> {
        let drawn = previous.map_or(0, |previous| previous.0.algorithm.lock().stream.drawn);
        let backends = Backends::from_entries(parts.entries)?;
        let state = RandomState::new(&parts.weights, options, drawn);
        Ok(Self(Balanced::locked(backends, state)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn weights(w: &[u32]) -> Weights {
        Weights::new(w.to_vec()).expect("valid weights")
    }

    /// Every backend's cells in the table are exactly `w_i * n` of
    /// `n * total`: the shares are exact, whatever the draw.
    #[test]
    fn alias_cells_are_exactly_the_weights() {
        for w in [
            vec![1, 1],
            vec![1, 2],
            vec![5, 1, 1],
            vec![7, 3, 11, 1, 9],
            (1..=100).collect::<Vec<u32>>(),
        ] {
            let alias = Alias::new(&weights(&w));
            let n = w.len() as u64;
            let mut cells = vec![0u64; w.len()];
            match &alias.columns {
                None => cells.iter_mut().for_each(|c| *c = alias.total),
                Some(columns) => {
                    for (c, column) in columns.iter().enumerate() {
                        cells[c] += column.threshold;
                        cells[usize::from(column.alias)] += alias.total - column.threshold;
                    }
                }
            }
            for (i, &cell) in cells.iter().enumerate() {
                assert_eq!(cell, u64::from(w[i]) * n, "{w:?}: backend {i}");
            }
        }
    }

    /// The weighted-rs counter-example: of two equal backends, both are
    /// drawn, at the ends of the range too.
    #[test]
    fn two_equal_backends_are_both_drawn() {
        let alias = Alias::new(&weights(&[1, 1]));
        assert_eq!(alias.draw(0), 0);
        assert_eq!(alias.draw(u64::MAX), 1);
        let alias = Alias::new(&weights(&[2, 1, 1]));
        let drawn: std::collections::HashSet<usize> =
            (0..64u64).map(|k| alias.draw(splitmix(k))).collect();
        assert_eq!(drawn.len(), 3);
    }
}
