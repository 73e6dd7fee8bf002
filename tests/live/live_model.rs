//! proptest state machine: random picks, drops, outcome reports, updates
//! and clock steps against a plain sequential model of the rules (states,
//! ejection, trials, panic mode, `max_conns`, backups, tried sets).
//! Round-robin's model predicts every pick exactly; for the other
//! algorithms it checks that each pick is one the rules allow (and for
//! least-connections, a least-loaded one), and that errors agree.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use loadbalance::{
    AdminState, Assemble, Backend, Balancer, Context, Guard, HealthPolicy, Live, ManualClock,
    Outcome, PickError, Tried, WhenAllEjected, locked, lockfree,
};
use proptest::prelude::*;

type V = u32;
const TIMEOUT: u64 = 10;
const MAX_FAILS: u32 = 2;

#[derive(Clone, Debug)]
enum Op {
    Pick { key: u8, retry: bool },
    Drop(usize),
    Report(usize, bool),
    Advance(u64),
    SetState(usize, u8),
    SetMaxConns(usize, u32),
    SetBackup(usize, bool),
    Add,
    Remove(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (any::<u8>(), prop::bool::weighted(0.2)).prop_map(|(key, retry)| Op::Pick { key, retry }),
        3 => any::<usize>().prop_map(Op::Drop),
        3 => (any::<usize>(), any::<bool>()).prop_map(|(i, ok)| Op::Report(i, ok)),
        2 => (0..15u64).prop_map(Op::Advance),
        2 => (any::<usize>(), 0..4u8).prop_map(|(i, s)| Op::SetState(i, s)),
        1 => (any::<usize>(), 0..3u32).prop_map(|(i, m)| Op::SetMaxConns(i, m)),
        1 => (any::<usize>(), prop::bool::weighted(0.3)).prop_map(|(i, b)| Op::SetBackup(i, b)),
        1 => Just(Op::Add),
        1 => any::<usize>().prop_map(Op::Remove),
    ]
}

#[derive(Clone, Debug, Default)]
struct Entry {
    backup: bool,
    down: bool,
    max_conns: u32,
    active: u32,
    /// Guards taken while a limit was set: what the limit counts.
    slots: u32,
    fails: u32,
    window_start: u64,
    ejected: bool,
    until: u64,
    trial: bool,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Status {
    Down,
    Tried,
    Ejected,
    Full,
    Open,
}

/// The rules, written plainly.
struct Model {
    entries: HashMap<V, Entry>,
    order: Vec<V>,
    cursor: usize,
    now: u64,
    panic: bool,
}

impl Model {
    fn status(&self, id: V, tried: &[V], ignore_health: bool) -> Status {
        let e = &self.entries[&id];
        if e.down {
            Status::Down
        } else if tried.contains(&id) {
            Status::Tried
        } else if !ignore_health && e.ejected && e.until > self.now {
            Status::Ejected
        } else if e.max_conns > 0 && e.slots >= e.max_conns {
            Status::Full
        } else {
            Status::Open
        }
    }

    /// Which tier picks come from and whether in panic mode, or the error.
    fn selection(&self, tried: &[V]) -> Result<(bool, bool), PickError> {
        let tier = |ignore: bool| {
            let open = |backup: bool| {
                self.order.iter().any(|&id| {
                    self.entries[&id].backup == backup
                        && self.status(id, tried, ignore) == Status::Open
                })
            };
            if open(false) {
                Some(false)
            } else if open(true) {
                Some(true)
            } else {
                None
            }
        };
        if let Some(backup) = tier(false) {
            return Ok((backup, false));
        }
        let count = |s: Status| {
            self.order
                .iter()
                .filter(|&&id| self.status(id, tried, false) == s)
                .count()
        };
        let ejected = count(Status::Ejected);
        if ejected > 0 && self.panic {
            if let Some(backup) = tier(true) {
                return Ok((backup, true));
            }
        }
        let (down, skipped) = (count(Status::Down), count(Status::Tried));
        Err(if down == self.order.len() {
            PickError::AllDown
        } else if down + skipped == self.order.len() {
            PickError::AllTried
        } else if ejected > 0 && !self.panic {
            PickError::AllEjected
        } else {
            PickError::AllFull
        })
    }

    fn eligible(&self, id: V, tried: &[V], (backup, panic): (bool, bool)) -> bool {
        self.entries[&id].backup == backup && self.status(id, tried, panic) == Status::Open
    }

    /// Takes the backend; returns whether the guard holds a `max_conns` slot.
    fn claim(&mut self, id: V, panic: bool) -> bool {
        let now = self.now;
        let e = self.entries.get_mut(&id).expect("known");
        e.active += 1;
        let slot = e.max_conns > 0;
        if slot {
            e.slots += 1;
        }
        if e.ejected && !panic {
            assert!(e.until <= now, "claimed a cooling backend");
            e.until = now + TIMEOUT;
            e.trial = true;
        }
        slot
    }

    /// Round-robin's exact pick.
    fn round_robin(&mut self, tried: &[V]) -> Result<(V, bool), PickError> {
        let n = self.order.len();
        let mut selection = None;
        for _ in 0..2 * n {
            let id = self.order[self.cursor % n];
            self.cursor += 1;
            let open_primary =
                !self.entries[&id].backup && self.status(id, tried, false) == Status::Open;
            let panic = if open_primary {
                false
            } else {
                let s = match selection {
                    Some(s) => s,
                    None => *selection.insert(self.selection(tried)?),
                };
                if !self.eligible(id, tried, s) {
                    continue;
                }
                s.1
            };
            return Ok((id, self.claim(id, panic)));
        }
        unreachable!("a selection with an eligible backend finds it within n steps")
    }

    fn report(&mut self, id: V, ok: bool) {
        let now = self.now;
        let e = self.entries.get_mut(&id).expect("known");
        if ok {
            if e.ejected && e.trial {
                e.trial = false;
                e.fails = 0;
                e.ejected = false;
            }
            return;
        }
        if e.ejected {
            e.trial = false;
            e.until = now + TIMEOUT;
            return;
        }
        if e.fails == 0 || now - e.window_start > TIMEOUT {
            e.fails = 0;
            e.window_start = now;
        }
        e.fails += 1;
        if e.fails >= MAX_FAILS {
            e.until = now + TIMEOUT;
            e.trial = false;
            e.ejected = true;
        }
    }

    /// A rebuild carries round-robin's position over, reduced to the old set.
    fn rebuilt(&mut self, old_len: usize) {
        self.cursor %= old_len;
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Check {
    Exact,
    Allowed,
    Least,
}

fn run<B>(ops: &[Op], panic: bool, check: Check) -> Result<(), TestCaseError>
where
    B: Assemble<Value = V> + Balancer<V>,
    B::Options: 'static,
{
    let clock = Arc::new(ManualClock::new());
    let policy = HealthPolicy::default()
        .max_fails(MAX_FAILS)
        .fail_timeout(Duration::from_nanos(TIMEOUT))
        .when_all_ejected(if panic {
            WhenAllEjected::Panic
        } else {
            WhenAllEjected::Fail
        });
    let lb = Live::<B>::builder()
        .health(policy)
        .clock(Arc::clone(&clock))
        .options(crate::live_forms::small_tables::<B>())
        .build((0..4).map(Backend::new))
        .expect("valid");
    let mut model = Model {
        entries: (0..4).map(|id| (id, Entry::default())).collect(),
        order: (0..4).collect(),
        cursor: 0,
        now: 0,
        panic,
    };
    // Each guard, and whether it holds a `max_conns` slot.
    let mut held: Vec<(Guard<V>, bool)> = Vec::new();
    let mut next_id: V = 4;
    for op in ops {
        let member = |i: usize, model: &Model| model.order[i % model.order.len()];
        match *op {
            Op::Pick { key, retry } => {
                let mut tried = Tried::new();
                let mut tried_ids = Vec::new();
                if retry {
                    for (guard, _) in &held {
                        tried.insert(guard);
                        tried_ids.push(**guard);
                    }
                }
                let key = [key];
                let ctx = Context::from_key(&key).with_tried(&tried);
                let got = lb.pick(&ctx);
                let mut slot = false;
                if check == Check::Exact {
                    let expected = model.round_robin(&tried_ids);
                    prop_assert_eq!(
                        got.as_ref().map(|g| **g).map_err(Clone::clone),
                        expected.clone().map(|(id, _)| id)
                    );
                    slot = expected.is_ok_and(|(_, slot)| slot);
                } else {
                    match (&got, model.selection(&tried_ids)) {
                        (Ok(guard), Ok(selection)) => {
                            let id = **guard;
                            prop_assert!(
                                model.eligible(id, &tried_ids, selection),
                                "{id} not allowed"
                            );
                            if check == Check::Least {
                                let least = model
                                    .order
                                    .iter()
                                    .filter(|&&other| model.eligible(other, &tried_ids, selection))
                                    .map(|other| model.entries[other].active)
                                    .min();
                                prop_assert_eq!(Some(model.entries[&id].active), least);
                            }
                            slot = model.claim(id, selection.1);
                        }
                        (Err(error), Err(expected)) => prop_assert_eq!(error, &expected),
                        (got, expected) => {
                            return Err(TestCaseError::fail(format!("{got:?} vs {expected:?}")));
                        }
                    }
                }
                if let Ok(guard) = got {
                    held.push((guard, slot));
                }
            }
            Op::Drop(i) if !held.is_empty() => {
                let (guard, slot) = held.swap_remove(i % held.len());
                let e = model.entries.get_mut(&*guard).expect("known");
                e.active -= 1;
                e.slots -= u32::from(slot);
            }
            Op::Report(i, ok) if !held.is_empty() => {
                let (guard, _) = &held[i % held.len()];
                guard.report(if ok {
                    Outcome::Success {
                        latency: Duration::ZERO,
                    }
                } else {
                    Outcome::Failure {
                        latency: Duration::ZERO,
                    }
                });
                model.report(**guard, ok);
            }
            Op::Advance(by) => {
                clock.advance(Duration::from_nanos(by));
                model.now += by;
            }
            Op::SetState(i, state) => {
                let id = member(i, &model);
                let state = [
                    AdminState::Up,
                    AdminState::Up,
                    AdminState::Down,
                    AdminState::Draining,
                ][usize::from(state)];
                lb.set_state(&id, state).expect("present");
                model.entries.get_mut(&id).expect("known").down = state != AdminState::Up;
            }
            Op::SetMaxConns(i, max) => {
                let id = member(i, &model);
                lb.set_max_conns(&id, max).expect("present");
                model.entries.get_mut(&id).expect("known").max_conns = max;
            }
            Op::SetBackup(i, backup) => {
                let id = member(i, &model);
                lb.set_backup(&id, backup).expect("present");
                model.entries.get_mut(&id).expect("known").backup = backup;
            }
            Op::Add => {
                lb.add(Backend::new(next_id)).expect("fresh");
                model.rebuilt(model.order.len());
                model.entries.insert(next_id, Entry::default());
                model.order.push(next_id);
                next_id += 1;
            }
            Op::Remove(i) => {
                let id = member(i, &model);
                let result = lb.remove(&id);
                if model.order.len() == 1 {
                    prop_assert_eq!(result, Err(loadbalance::UpdateError::LastBackend));
                } else {
                    prop_assert_eq!(result, Ok(()));
                    model.rebuilt(model.order.len());
                    model.order.retain(|&other| other != id);
                }
            }
            _ => {}
        }
        for stats in lb.stats() {
            let e = &model.entries[&stats.backend];
            prop_assert_eq!(stats.active as u32, e.active);
            prop_assert_eq!(stats.backup, e.backup);
            prop_assert_eq!(stats.max_conns, (e.max_conns > 0).then_some(e.max_conns));
        }
    }
    drop(held);
    prop_assert!(lb.stats().iter().all(|s| s.active == 0));
    Ok(())
}

macro_rules! model_test {
    ($name:ident, $form:ty, $check:expr) => {
        model_test!($name, $form, $check, 128);
    };
    ($name:ident, $form:ty, $check:expr, $cases:expr) => {
        proptest! {
            #![proptest_config(ProptestConfig::with_cases($cases))]
            #[test]
            fn $name(ops in prop::collection::vec(op(), 1..80), panic in any::<bool>()) {
                run::<$form>(&ops, panic, $check)?;
            }
        }
    };
}

// Round-robin's model is exact and cheap to run: more cases find the rare
// orders (a turn landing on a backup or full backend while others are open).
model_test!(
    lockfree_round_robin,
    lockfree::RoundRobin<V>,
    Check::Exact,
    2048
);
model_test!(
    locked_round_robin,
    locked::RoundRobin<V>,
    Check::Exact,
    2048
);
model_test!(
    lockfree_weighted_round_robin,
    lockfree::WeightedRoundRobin<V>,
    Check::Allowed
);
model_test!(
    locked_weighted_round_robin,
    locked::WeightedRoundRobin<V>,
    Check::Allowed
);
model_test!(lockfree_least_conn, lockfree::LeastConn<V>, Check::Least);
model_test!(locked_least_conn, locked::LeastConn<V>, Check::Least);
model_test!(lockfree_hash, lockfree::IpHash<V>, Check::Allowed);
model_test!(locked_hash, locked::IpHash<V>, Check::Allowed);
