//! nginx-compatible hashes: `ip_hash`, `hash $key consistent` and
//! `hash $key`, computed bit for bit as nginx computes them, so that a site
//! moving from nginx keeps every client on the backend it had.
//!
//! Each hash gives a client a sequence of candidate backends in nginx's
//! order (an iterator: [`IpWalk`](ip_hash::IpWalk),
//! [`RingWalk`](hash::RingWalk), [`KeyWalk`](hash::KeyWalk)). While every
//! backend can take a pick, the first candidate is the answer. Otherwise a
//! pick takes the first of the first [`CANDIDATES`] candidates that may
//! take it (not down, tried, ejected or full), as nginx does; past them
//! nginx falls back to round-robin, which depends on every other request
//! in flight. Here the fallback is deterministic instead: the first backend
//! that may take the pick at or after the last candidate, in index order,
//! wrapping (see [`walk`]). A capacity check (bounded loads) slots into the
//! same walk.

mod addr_text;
mod crc32;
pub(crate) mod hash;
pub(crate) mod ip_hash;

pub use hash::NginxKeyTable;
pub use ip_hash::NginxIpTable;

use super::bounded_load::{Bound, from_home};
use crate::error::PickError;
use crate::pick::Candidates;
use crate::table::{Backends, Weights};

/// How many candidates nginx tries before it falls back to round-robin:
/// its loops give up when `++tries > 20`, after the 21st.
pub(crate) const CANDIDATES: usize = 21;

/// What nginx counts as a try when a retry walks again (see [`walk`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Retry {
    /// `ip_hash` and `hash`: a retry continues the hash past the step an
    /// earlier attempt picked, so that step is not a try.
    Continues,
    /// `hash ... consistent`: a retry starts again at the point an earlier
    /// attempt picked, now tried, and counts it as a try.
    Revisits,
}

/// The first of a client's `candidates` that may take the pick, trying at
/// most [`CANDIDATES`] as nginx does; past them, the first backend that
/// may at or after the last candidate, in index order, wrapping (nginx
/// would go round-robin). `None` when no backend may.
///
/// A retry walks from the start again, where nginx continues the walk it
/// kept for the request: the two agree step for step (so in the limit
/// too) if a tried backend, at its first step in the walk, is taken as an
/// earlier attempt's pick, which [`Retry::Continues`] does not count as a
/// try. That is nginx's model, where the tried set holds only the
/// request's picks; the check re-runs the walk's prefix (`O(steps^2)`,
/// retries only, no allocation).
pub(crate) fn walk<T, I>(
    candidates: I,
    len: usize,
    retry: Retry,
    open: &mut Candidates<'_, '_, T>,
) -> Result<Option<usize>, PickError>
where
    I: Iterator<Item = usize> + Clone,
{
    let (mut last, mut tries) = (0, 0);
    // Ends: every step is a try but the first step of each tried backend,
    // so the walk takes at most CANDIDATES + len steps.
    for (step, candidate) in candidates.clone().enumerate() {
        if open.eligible(candidate)? {
            return Ok(Some(candidate));
        }
        last = candidate;
        let earlier_pick = retry == Retry::Continues
            && open.tried(candidate)
            && !candidates.clone().take(step).any(|seen| seen == candidate);
        if !earlier_pick {
            tries += 1;
            if tries == CANDIDATES {
                break;
            }
        }
    }
    let selection = open.selection()?;
    Ok((0..len)
        .map(|step| (last + step) % len)
        .find(|&index| selection.eligible(index)))
}

/// The plain path: the first candidate, or with bounded loads the first
/// under capacity of the key's preference order (its first [`CANDIDATES`]
/// candidates in nginx's order, then every backend from the first on).
#[inline]
pub(crate) fn first<T, I>(
    bound: Option<&Bound>,
    mut candidates: I,
    len: usize,
    backends: &Backends<T>,
) -> usize
where
    I: Iterator<Item = usize> + Clone,
{
    let order = candidates.clone().take(CANDIDATES);
    let home = candidates.next().unwrap_or(0);
    match bound {
        None => home,
        Some(bound) => bound.place(
            backends,
            bound.load_of_all(backends),
            home,
            order.chain(from_home(home, len)),
            |_| true,
        ),
    }
}

/// The slow path: [`walk`], then with bounded loads the first backend under
/// capacity that may take the pick, in the order [`first`] uses.
pub(crate) fn walk_bounded<T, I>(
    bound: Option<&Bound>,
    candidates: I,
    len: usize,
    retry: Retry,
    open: &mut Candidates<'_, '_, T>,
) -> Result<Option<usize>, PickError>
where
    I: Iterator<Item = usize> + Clone,
{
    let home = walk(candidates.clone(), len, retry, open)?;
    let (Some(bound), Some(home)) = (bound, home) else {
        return Ok(home);
    };
    let (selection, backends) = (open.selection()?, open.backends());
    let eligible = |index: usize| selection.eligible(index);
    let load = bound.load_among(backends, eligible);
    let order = candidates.take(CANDIDATES).chain(from_home(home, len));
    Ok(Some(bound.place(backends, load, home, order, eligible)))
}

/// nginx's pick by weight: `w` in `0..total` falls to the backend whose
/// share of the range holds it, walking the backends in order and
/// subtracting weights. Cumulative ends and a binary search give the same
/// backend in `O(log n)`.
#[derive(Clone, Debug)]
pub(crate) struct ByWeight {
    /// `ends[i]`: the sum of the weights of backends `0..=i`.
    ends: Box<[u32]>,
}

impl ByWeight {
    pub(crate) fn new(weights: &Weights) -> Self {
        let ends = weights
            .as_slice()
            .iter()
            .scan(0u32, |sum, &w| {
                // Within u32: `Weights` checked the total.
                *sum += w;
                Some(*sum)
            })
            .collect();
        Self { ends }
    }

    /// The sum of the weights (nginx's `total_weight`), at least 1.
    #[inline]
    pub(crate) fn total(&self) -> u32 {
        self.ends.last().copied().unwrap_or(1)
    }

    /// The backend for `w < total`: nginx's
    /// `while (w >= peer->weight) { w -= peer->weight; peer = peer->next; }`.
    #[inline]
    pub(crate) fn backend(&self, w: u32) -> usize {
        self.ends.partition_point(|&end| end <= w)
    }

    pub(crate) fn len(&self) -> usize {
        self.ends.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn by_weight_is_nginx_subtraction_walk() {
        let weights = Weights::new(vec![1, 2, 3, 1]).expect("valid");
        let by_weight = ByWeight::new(&weights);
        assert_eq!(by_weight.total(), 7);
        let nginx = |mut w: u32| {
            let mut p = 0;
            while w >= weights.as_slice()[p] {
                w -= weights.as_slice()[p];
                p += 1;
            }
            p
        };
        for w in 0..7 {
            assert_eq!(by_weight.backend(w), nginx(w), "w = {w}");
        }
    }
}
