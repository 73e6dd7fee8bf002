//! The one pick driver every algorithm runs on, lock-free or behind a
//! mutex.
//!
//! An algorithm supplies only how it chooses ([`Choose`]): on the plain path
//! (every backend available at full weight, nothing to skip) and on the
//! slow path (some backend down, draining, full, ejected, ramping, degraded,
//! a backup, or tried by this request). The driver owns the rest: which path
//! a pick takes, the bounded choose → claim → choose-again loop when another
//! pick takes the last slot or the trial first, the guard, and the error
//! that says why no backend could take the pick.

use super::{Candidates, Choose, Context};
use crate::error::PickError;
use crate::table::{Backends, Guard};

/// One pick: the plain path when it applies, else the slow path.
#[inline]
pub(crate) fn pick<T, C: Choose>(
    chooser: &mut C,
    ctx: &Context<'_>,
    backends: &Backends<T>,
) -> Result<Guard<T>, PickError> {
    if backends.common().regular() && ctx.skips_nothing() {
        if let Some(index) = chooser.plain(ctx, backends)? {
            // `None` for an index out of range (an algorithm's mistake,
            // which the slow path corrects), or a live backend removed and
            // gone since this pick's snapshot was current, which removal's
            // wait rules out.
            if let Some(guard) = backends.guard(index) {
                return Ok(guard);
            }
        }
    }
    slow_pick(chooser, ctx, backends)
}

/// The slow path, out of line: inlined, it made the plain pick save every
/// callee-saved register and spill its scan's state to the stack (seen with
/// `perf annotate`).
#[inline(never)]
fn slow_pick<T, C: Choose>(
    chooser: &mut C,
    ctx: &Context<'_>,
    backends: &Backends<T>,
) -> Result<Guard<T>, PickError> {
    let mut candidates = Candidates::new(backends, ctx);
    // Each lost claim means another pick took a slot or a trial: bounded by
    // the number of backends, which cannot all be lost to without one of
    // them ending up full (then `any` below says so).
    for _ in 0..=backends.len() {
        if let Some(index) = chooser.choose(ctx, &mut candidates)? {
            if candidates.eligible(index)? {
                if let Some(guard) = candidates.claim(index) {
                    return Ok(guard);
                }
            }
        }
        candidates.refresh();
    }
    candidates.selection()?.any()
}
