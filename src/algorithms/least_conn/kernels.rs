//! The lock-free scan's kernels over many counts: the run of counts level
//! with the first, read in blocks, and the first highest current weight,
//! over four lanes.

use crate::sync::atomic::{AtomicI64, AtomicU32, Ordering};

/// How many of `counts`, from the first, equal `level`. Blocks of 8 are
/// read whole and their differences OR-ed: one branch a block rather than
/// one a count. A block that differs ends the run at its start (the general
/// scan takes it from there).
#[inline]
pub(super) fn level_run(counts: &[AtomicU32], level: u32) -> usize {
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
pub(super) fn first_highest(
    bases: &[AtomicI64],
    weights: &[u32],
    current: impl Fn(i64, u32) -> i64,
) -> usize {
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
