//! Both forms of smooth weighted round-robin continue nginx's sequence
//! through every flag toggle, retry, down/up and held connection: random
//! scripts of picks (some retries), drops and updates run on a live
//! lock-free and a live mutex-backed balancer, which must make exactly the
//! same picks on one thread; then, everything back to plain, three periods
//! of plain picks (where the lock-free form finds its way back to a
//! precomputed period) must agree too. Reports are left out: the two forms
//! restore effective weights on different clocks (see README).

use loadbalance::{
    AdminState, Assemble, Backend, Balancer, Context, Guard, Live, PickError, Tried, locked,
    lockfree,
};
use proptest::prelude::*;

type V = u32;

#[derive(Clone, Debug)]
enum Op {
    Pick { retry: bool },
    Drop(usize),
    SetState(usize, u8),
    SetMaxConns(usize, u8),
    SetBackup(usize, bool),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => prop::bool::weighted(0.2).prop_map(|retry| Op::Pick { retry }),
        3 => any::<usize>().prop_map(Op::Drop),
        2 => (any::<usize>(), 0..3u8).prop_map(|(i, s)| Op::SetState(i, s)),
        2 => (any::<usize>(), 0..4u8).prop_map(|(i, m)| Op::SetMaxConns(i, m)),
        1 => (any::<usize>(), prop::bool::weighted(0.3)).prop_map(|(i, b)| Op::SetBackup(i, b)),
    ]
}

/// One form under the script: its balancer, held guards and tried set.
struct Run<B: Assemble<Value = V>> {
    lb: Live<B>,
    held: Vec<Guard<V>>,
    tried: Tried,
}

impl<B: Assemble<Value = V> + Balancer<V>> Run<B> {
    fn new(weights: &[u32]) -> Self {
        let backends = (0..weights.len() as V).map(|i| Backend::new(i).weight(weights[i as usize]));
        Self {
            lb: Live::new(backends).expect("valid"),
            held: Vec::new(),
            tried: Tried::new(),
        }
    }

    /// What `op` did, as comparable text.
    fn apply(&mut self, op: &Op, n: usize) -> String {
        match *op {
            Op::Pick { retry } => {
                let ctx = Context::new();
                let picked = if retry {
                    self.lb.pick(&ctx.with_tried(&self.tried))
                } else {
                    self.tried.clear();
                    self.lb.pick(&ctx)
                };
                match picked {
                    Ok(guard) => {
                        let id = *guard;
                        self.tried.insert(&guard);
                        self.held.push(guard);
                        format!("{id}")
                    }
                    Err(error) => format!("{error:?}"),
                }
            }
            Op::Drop(i) => {
                if !self.held.is_empty() {
                    self.held.swap_remove(i % self.held.len());
                }
                String::new()
            }
            Op::SetState(i, s) => {
                let state =
                    [AdminState::Up, AdminState::Down, AdminState::Draining][usize::from(s)];
                self.lb.set_state(&((i % n) as V), state).expect("present");
                String::new()
            }
            Op::SetMaxConns(i, m) => {
                let limit = [0, 1, 2, 1000][usize::from(m)];
                self.lb
                    .set_max_conns(&((i % n) as V), limit)
                    .expect("present");
                String::new()
            }
            Op::SetBackup(i, b) => {
                self.lb.set_backup(&((i % n) as V), b).expect("present");
                String::new()
            }
        }
    }

    /// Everything back to plain: guards dropped, every backend up,
    /// unlimited and primary.
    fn plain(&mut self, n: usize) {
        self.held.clear();
        for id in 0..n as V {
            self.lb.set_state(&id, AdminState::Up).expect("present");
            self.lb.set_max_conns(&id, 0).expect("present");
            self.lb.set_backup(&id, false).expect("present");
        }
    }

    fn picks(&self, count: usize) -> Vec<Result<V, PickError>> {
        (0..count)
            .map(|_| self.lb.pick(&Context::new()).map(|guard| *guard))
            .collect()
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn both_forms_make_the_same_picks(
        weights in prop::collection::vec(1..6u32, 2..6),
        ops in prop::collection::vec(op(), 1..120),
    ) {
        let n = weights.len();
        let mut free = Run::<lockfree::WeightedRoundRobin<V>>::new(&weights);
        let mut locked = Run::<locked::WeightedRoundRobin<V>>::new(&weights);
        for (step, op) in ops.iter().enumerate() {
            let (a, b) = (free.apply(op, n), locked.apply(op, n));
            prop_assert_eq!(a, b, "step {} ({:?})", step, op);
        }
        free.plain(n);
        locked.plain(n);
        let period: u32 = weights.iter().sum();
        let count = 3 * period as usize + 7;
        prop_assert_eq!(free.picks(count), locked.picks(count), "back to plain");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// As above past the schedule limit, where the lock-free form computes
    /// the sequence in windows: leaving them for explicit weights and
    /// rebasing new windows on return keep nginx's picks.
    #[test]
    fn both_forms_make_the_same_picks_past_the_schedule_limit(
        heavy in (1u32 << 19)..(1 << 21),
        weights in prop::collection::vec(1..6u32, 1..4),
        ops in prop::collection::vec(op(), 1..80),
    ) {
        let weights: Vec<u32> = std::iter::once(heavy).chain(weights).collect();
        let n = weights.len();
        let mut free = Run::<lockfree::WeightedRoundRobin<V>>::new(&weights);
        let mut locked = Run::<locked::WeightedRoundRobin<V>>::new(&weights);
        for (step, op) in ops.iter().enumerate() {
            let (a, b) = (free.apply(op, n), locked.apply(op, n));
            prop_assert_eq!(a, b, "step {} ({:?})", step, op);
        }
        free.plain(n);
        locked.plain(n);
        prop_assert_eq!(free.picks(2_000), locked.picks(2_000), "back to plain");
    }
}
