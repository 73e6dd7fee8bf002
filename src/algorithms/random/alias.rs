//! Vose's alias table: a draw by weight with exact shares in `O(1)`.
//!
//! `n` columns of height `W` (the sum of the weights), column `c` owned by
//! backend `c` up to its threshold and by its alias above. Thresholds are
//! integers (`w_i * n` split into columns of `W`), so backend i's share of
//! the `n * W` cells is exactly `w_i / W`. A draw takes one 64-bit random
//! word: the high half of `word * n` picks the column, the low half, times
//! `W`, the height (the bias is below `n * W / 2^64`). Equal weights skip
//! the table.

use crate::backend::health::FULL;
use crate::error::PickError;
use crate::pick::Candidates;
use crate::table::Weights;

/// Vose's alias table with integer thresholds (see the module docs), or
/// nothing for equal weights.
#[derive(Clone, Debug)]
pub(super) struct Alias {
    /// `None`: every weight is equal, a draw is uniform.
    columns: Option<Box<[Column]>>,
    pub(super) weights: Box<[u32]>,
    total: u64,
}

#[derive(Clone, Copy, Debug)]
struct Column {
    /// Heights below this (out of `total`) belong to the column's backend.
    threshold: u64,
    alias: u16,
}

impl Alias {
    pub(super) fn new(weights: &Weights) -> Self {
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
    pub(super) fn draw(&self, word: u64) -> usize {
        let product = u128::from(word) * self.weights.len() as u128;
        let c = (product >> 64) as usize;
        match &self.columns {
            None => c,
            Some(columns) => {
                let cell = columns[c];
                let keep = below(product as u64, self.total) < cell.threshold;
                // Without a branch: which way a draw goes is a coin flip
                // no predictor can learn, and a missed branch costs more
                // than the whole select.
                let alias = usize::from(cell.alias);
                alias ^ ((c ^ alias) & usize::from(keep).wrapping_neg())
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
pub(super) fn below(word: u64, n: u64) -> u64 {
    ((u128::from(word) * u128::from(n)) >> 64) as u64
}

/// How many rejections the slow path draws before one pass by weight.
const REJECTIONS: usize = 16;

/// The slow path's draw, shared by every random algorithm: a backend that
/// may take the pick and is not in `skip` (the candidates already drawn),
/// drawn with probability proportional to `w_i * ramp_i` among those. It
/// accepts a drawn backend that qualifies (in slow start, with its ramp's
/// probability); after 16 rejections it draws in one pass by weight times
/// ramp. Both ways are exact. `None` when no backend qualifies.
pub(super) fn draw_available<T>(
    alias: &Alias,
    candidates: &mut Candidates<'_, '_, T>,
    skip: &[usize],
    mut word: impl FnMut() -> u64,
) -> Result<Option<usize>, PickError> {
    let selection = candidates.selection()?;
    let open = |i: usize| !skip.contains(&i) && selection.eligible(i);
    for _ in 0..REJECTIONS {
        let index = alias.draw(word());
        if open(index) {
            let ramp = selection.ramp(index);
            if ramp >= FULL || below(word(), FULL) < ramp {
                return Ok(Some(index));
            }
        }
    }
    let weight = |i: usize| {
        if open(i) {
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
        let drawn: std::collections::HashSet<usize> = (0..64u64)
            .map(|k| alias.draw(crate::mix::splitmix(k)))
            .collect();
        assert_eq!(drawn.len(), 3);
    }
}
