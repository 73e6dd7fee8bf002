//! A random script of picks, retries, drops, state changes, limits,
//! latency reports and clock ticks, run on two live balancers that must make
//! the same picks: a lock-free form and its mutex-backed form (the
//! sequential model), seeded alike.

use std::sync::Arc;
use std::time::Duration;

use loadbalance::{
    AdminState, Assemble, Backend, Balancer, Context, Live, ManualClock, Outcome, Tried,
};
use proptest::prelude::*;

#[derive(Clone, Debug)]
pub(crate) enum Op {
    Pick {
        retry: bool,
    },
    Drop(usize),
    Down(usize),
    Up(usize),
    Cap(usize, u32),
    /// A held guard reports a success of this many milliseconds.
    Report(usize, u8),
    /// Both clocks advance this many milliseconds.
    Tick(u16),
}

pub(crate) fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => prop::bool::weighted(0.2).prop_map(|retry| Op::Pick { retry }),
        3 => any::<usize>().prop_map(Op::Drop),
        1 => any::<usize>().prop_map(Op::Down),
        2 => any::<usize>().prop_map(Op::Up),
        1 => (any::<usize>(), 0..3u32).prop_map(|(i, m)| Op::Cap(i, m)),
        2 => (any::<usize>(), any::<u8>()).prop_map(|(i, ms)| Op::Report(i, ms)),
        1 => any::<u16>().prop_map(Op::Tick),
    ]
}

fn live<B>(weights: &[u32], options: B::Options, clock: &Arc<ManualClock>) -> Live<B>
where
    B: Assemble<Value = usize> + Balancer<usize> + 'static,
{
    Live::<B>::builder()
        .options(options)
        .clock(Arc::clone(clock))
        .build((0..weights.len()).map(|i| Backend::new(i).weight(weights[i])))
        .expect("valid")
}

/// Runs `ops` on a live `A` and a live `B` built with the given options
/// and asserts every pick agrees.
pub(crate) fn same_picks<A, B>(
    weights: &[u32],
    options: (A::Options, B::Options),
    ops: &[Op],
) -> Result<(), TestCaseError>
where
    A: Assemble<Value = usize> + Balancer<usize> + 'static,
    B: Assemble<Value = usize> + Balancer<usize> + 'static,
{
    let n = weights.len();
    let clocks = (Arc::new(ManualClock::new()), Arc::new(ManualClock::new()));
    let a = live::<A>(weights, options.0, &clocks.0);
    let b = live::<B>(weights, options.1, &clocks.1);
    let (mut held_a, mut held_b) = (Vec::new(), Vec::new());
    let (mut tried_a, mut tried_b) = (Tried::new(), Tried::new());
    for op in ops {
        match *op {
            Op::Pick { retry } => {
                if !retry {
                    tried_a.clear();
                    tried_b.clear();
                }
                let x = a.pick(&Context::new().with_tried(&tried_a));
                let y = b.pick(&Context::new().with_tried(&tried_b));
                prop_assert_eq!(x.as_deref().ok(), y.as_deref().ok(), "{:?}", op);
                prop_assert_eq!(x.as_ref().err(), y.as_ref().err());
                if let (Ok(x), Ok(y)) = (x, y) {
                    tried_a.insert(&x);
                    tried_b.insert(&y);
                    held_a.push(x);
                    held_b.push(y);
                }
            }
            Op::Drop(i) => {
                if !held_a.is_empty() {
                    held_a.swap_remove(i % held_a.len());
                    held_b.swap_remove(i % held_b.len());
                }
            }
            Op::Down(i) => {
                a.set_state(&(i % n), AdminState::Down).expect("present");
                b.set_state(&(i % n), AdminState::Down).expect("present");
            }
            Op::Up(i) => {
                a.set_state(&(i % n), AdminState::Up).expect("present");
                b.set_state(&(i % n), AdminState::Up).expect("present");
            }
            Op::Cap(i, m) => {
                a.set_max_conns(&(i % n), m).expect("present");
                b.set_max_conns(&(i % n), m).expect("present");
            }
            Op::Report(i, ms) => {
                if !held_a.is_empty() {
                    let outcome = Outcome::Success {
                        latency: Duration::from_millis(u64::from(ms)),
                    };
                    held_a[i % held_a.len()].report(outcome);
                    held_b[i % held_b.len()].report(outcome);
                }
            }
            Op::Tick(ms) => {
                let by = Duration::from_millis(u64::from(ms));
                clocks.0.advance(by);
                clocks.1.advance(by);
            }
        }
    }
    Ok(())
}
