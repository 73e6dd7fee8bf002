//! The best of `d` distinct candidates drawn by weight: the core of
//! power-of-two-choices least-connections and of peak EWMA.
//!
//! The plain path draws a candidate from the alias table and draws again
//! while it repeats one already drawn (at most 16 times: with one backend
//! holding nearly all the weight, the pick may go ahead with fewer
//! candidates). The slow path draws each candidate among the backends that
//! may take the pick and were not drawn yet (`draw_available`). Either way
//! the first candidate drawn wins ties, so ties fall at random by weight.

use std::fmt;
use std::marker::PhantomData;

use super::alias::{Alias, draw_available};
use super::words::{SeededStream, Words};
use crate::backend::peak::Estimate;
use crate::error::{BuildError, PickError};
use crate::pick::{Candidates, Choose, Context};
use crate::table::{Backends, Weights};

/// Static tables of more backends than this keep a dense copy of the
/// active counts: a pick reads its candidates' counts from a few kilobytes
/// rather than from a cache line per backend (`Backends::weighted_dense`).
pub(super) const DENSE_ABOVE: usize = 64;

/// The fewest candidates a pick draws.
pub(super) const MIN_CHOICES: u8 = 2;
/// The most candidates a pick draws: past a handful, more candidates only
/// make the pick a scan.
pub(super) const MAX_CHOICES: u8 = 8;

/// How many redraws the plain path makes for a candidate that repeats one
/// already drawn.
const REDRAWS: usize = 16;

/// Checks a requested number of candidates.
pub(super) fn check_choices(choices: u8) -> Result<usize, BuildError> {
    if (MIN_CHOICES..=MAX_CHOICES).contains(&choices) {
        Ok(usize::from(choices))
    } else {
        Err(BuildError::Choices {
            choices,
            min: MIN_CHOICES,
            max: MAX_CHOICES,
        })
    }
}

/// The plain path: the best of `choices` distinct candidates (every
/// backend, the first drawn at random, when there are no more than that).
#[inline]
pub(super) fn plain_best(
    alias: &Alias,
    choices: usize,
    mut word: impl FnMut() -> u64,
    mut better: impl FnMut(usize, usize) -> bool,
) -> usize {
    let n = alias.weights.len();
    let mut best = alias.draw(word());
    if n <= choices {
        // Every backend is a candidate; the one drawn first wins ties.
        let first = best;
        for i in (first + 1..n).chain(0..first) {
            if better(i, best) {
                best = i;
            }
        }
        return best;
    }
    let mut drawn = [0usize; MAX_CHOICES as usize];
    drawn[0] = best;
    for k in 1..choices {
        let Some(candidate) = (0..REDRAWS)
            .map(|_| alias.draw(word()))
            .find(|candidate| !drawn[..k].contains(candidate))
        else {
            break;
        };
        drawn[k] = candidate;
        if better(candidate, best) {
            best = candidate;
        }
    }
    best
}

/// The slow path: the best of `choices` distinct candidates among the
/// backends that may take the pick; `None` when none may.
pub(super) fn slow_best<T>(
    alias: &Alias,
    choices: usize,
    candidates: &mut Candidates<'_, '_, T>,
    mut word: impl FnMut() -> u64,
    mut better: impl FnMut(usize, usize) -> bool,
) -> Result<Option<usize>, PickError> {
    let mut drawn = [0usize; MAX_CHOICES as usize];
    let mut best = None;
    for k in 0..choices {
        let Some(candidate) = draw_available(alias, candidates, &drawn[..k], &mut word)? else {
            break;
        };
        drawn[k] = candidate;
        best = match best {
            Some(best) if !better(candidate, best) => Some(best),
            _ => Some(candidate),
        };
    }
    Ok(best)
}

/// What makes one candidate better than another.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Cost {
    /// Fewer active guards per unit of weight (`a_i * w_j < a_j * w_i`).
    Load,
    /// Lower peak-EWMA latency times (active + 1), per unit of weight;
    /// `decay` and `default_rtt` in nanoseconds.
    Latency { decay: f64, default_rtt: f64 },
}

impl Cost {
    /// Whether candidate `a` is better than `b`.
    #[inline(always)]
    fn better<T>(self, backends: &Backends<T>, weights: &[u32], a: usize, b: usize) -> bool {
        match self {
            Self::Load => {
                let load = |i: usize| backends.steering_active(i) as u128;
                load(a) * u128::from(weights[b]) < load(b) * u128::from(weights[a])
            }
            Self::Latency { decay, default_rtt } => {
                // Every record is seeded before a snapshot holding it is
                // published; the default here only covers the impossible.
                let estimate = |i: usize| {
                    backends
                        .record(i)
                        .peak
                        .get()
                        .unwrap_or(Estimate::new(default_rtt, 0))
                };
                // (active + 1) / weight, cross-multiplied.
                let load = |i: usize, other: usize| {
                    (backends.steering_active(i) + 1) as f64 * f64::from(weights[other])
                };
                estimate(a).cheaper(load(a, b), estimate(b), load(b, a), decay)
            }
        }
    }
}

/// The lock-free state of the algorithms that keep the best of `d`
/// candidates drawn by weight; `O` is their options
/// ([`ChoiceOptions`](crate::ChoiceOptions): the least loaded,
/// [`PeakEwmaOptions`](crate::PeakEwmaOptions): the lowest peak-EWMA cost).
pub struct Choices<O> {
    alias: Alias,
    choices: usize,
    cost: Cost,
    pub(super) words: Words,
    options: PhantomData<fn(O)>,
}

impl<O> Choices<O> {
    /// The least loaded of two candidates (power-of-two-choices
    /// least-connections), as another algorithm's fallback.
    pub(crate) fn least_loaded(weights: &Weights, seed: Option<u64>) -> Self {
        Self::new(weights, usize::from(MIN_CHOICES), Cost::Load, seed)
    }

    pub(super) fn new(weights: &Weights, choices: usize, cost: Cost, seed: Option<u64>) -> Self {
        Self {
            alias: Alias::new(weights),
            choices,
            cost,
            words: Words::new(seed, 0),
            options: PhantomData,
        }
    }

    /// A seeded stream goes on where `previous` left off.
    pub(crate) fn resume(&mut self, previous: &Self) {
        self.words.resume(previous.words.drawn());
    }
}

impl<O> Choose for &Choices<O> {
    #[inline]
    fn plain<T>(
        &mut self,
        _: &Context<'_>,
        backends: &Backends<T>,
    ) -> Result<Option<usize>, PickError> {
        let (cost, weights) = (self.cost, &self.alias.weights);
        Ok(Some(plain_best(
            &self.alias,
            self.choices,
            || self.words.word(),
            |a, b| cost.better(backends, weights, a, b),
        )))
    }

    fn choose<T>(
        &mut self,
        _: &Context<'_>,
        candidates: &mut Candidates<'_, '_, T>,
    ) -> Result<Option<usize>, PickError> {
        let (cost, weights) = (self.cost, &self.alias.weights);
        let backends = candidates.backends();
        slow_best(
            &self.alias,
            self.choices,
            candidates,
            || self.words.word(),
            |a, b| cost.better(backends, weights, a, b),
        )
    }
}

/// The sequential state of the algorithms that keep the best of `d`
/// candidates: the same draws from a stream the lock guards.
pub struct ChoicesState<O> {
    alias: Alias,
    choices: usize,
    cost: Cost,
    pub(super) stream: SeededStream,
    options: PhantomData<fn(O)>,
}

impl<O> ChoicesState<O> {
    pub(super) fn new(weights: &Weights, choices: usize, cost: Cost, seed: Option<u64>) -> Self {
        Self {
            alias: Alias::new(weights),
            choices,
            cost,
            stream: SeededStream::new(seed, 0),
            options: PhantomData,
        }
    }

    /// As [`Choices`]'.
    pub(super) fn resume(&mut self, previous: &Self) {
        self.stream.drawn = previous.stream.drawn;
    }
}

impl<O> Choose for ChoicesState<O> {
    #[inline]
    fn plain<T>(
        &mut self,
        _: &Context<'_>,
        backends: &Backends<T>,
    ) -> Result<Option<usize>, PickError> {
        let Self {
            alias,
            choices,
            cost,
            stream,
            ..
        } = self;
        Ok(Some(plain_best(
            alias,
            *choices,
            || stream.word(),
            |a, b| cost.better(backends, &alias.weights, a, b),
        )))
    }

    fn choose<T>(
        &mut self,
        _: &Context<'_>,
        candidates: &mut Candidates<'_, '_, T>,
    ) -> Result<Option<usize>, PickError> {
        let Self {
            alias,
            choices,
            cost,
            stream,
            ..
        } = self;
        let backends = candidates.backends();
        slow_best(
            alias,
            *choices,
            candidates,
            || stream.word(),
            |a, b| cost.better(backends, &alias.weights, a, b),
        )
    }
}

impl<O> fmt::Debug for Choices<O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Choices")
            .field("choices", &self.choices)
            .field("cost", &self.cost)
            .finish_non_exhaustive()
    }
}

impl<O> fmt::Debug for ChoicesState<O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChoicesState")
            .field("choices", &self.choices)
            .field("cost", &self.cost)
            .finish_non_exhaustive()
    }
}

/// Implements [`Build`](crate::Build) for both forms of the algorithm whose
/// options are `$options`: `$rule` turns the set and the options into the
/// number of candidates, the cost and the seed (checking them).
macro_rules! choices_build {
    ($(#[$doc:meta])* $options:ty => |$set:ident, $opts:ident| $rule:block) => {
        choices_build!(@form Choices, $options, $set, $opts, $rule, $(#[$doc])*);
        choices_build!(@form ChoicesState, $options, $set, $opts, $rule, $(#[$doc])*);
    };
    (@form $state:ident, $options:ty, $set:ident, $opts:ident, $rule:block, $(#[$doc:meta])*) => {
        $(#[$doc])*
        impl<T> crate::pick::Build<T> for super::choices::$state<$options> {
            type Options = $options;
            const DENSE_ABOVE: usize = super::choices::DENSE_ABOVE;
            const RESUMES: bool = true;

            fn build(
                $set: &crate::pick::Set<'_, T>,
                $opts: &$options,
            ) -> Result<Self, crate::error::BuildError> {
                let (choices, cost, seed) = $rule;
                Ok(Self::new($set.validated(), choices, cost, seed))
            }

            /// A seeded stream goes on where the previous state's left off.
            fn resume(&mut self, previous: &Self) {
                super::choices::$state::resume(self, previous);
            }
        }
    };
}
pub(super) use choices_build;
