//! Live balancers: updates by identity, passive health, capacity, slow
//! start, backups, retries and stats, for every algorithm in both forms.
//! Time is a `ManualClock`, so nothing sleeps.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use loadbalance::{
    AdminState, Assemble, Backend, BackendState, Balancer, Context, Guard, HealthPolicy, Live,
    ManualClock, Outcome, PickError, Tried, WhenAllEjected, locked, lockfree,
};

type V = &'static str;

/// A balancer type a live balancer can run.
trait Algo: Assemble<Value = V, Options: Default> + Balancer<V> + 'static {}
impl<B: Assemble<Value = V> + Balancer<V> + 'static> Algo for B {}

const FAIL: Outcome = Outcome::Failure {
    latency: Duration::from_millis(5),
};
const OK: Outcome = Outcome::Success {
    latency: Duration::from_millis(1),
};

/// Pick number `i`: each with its own key, so hashing spreads too.
fn pick<B: Algo>(lb: &Live<B>, i: usize) -> Result<Guard<V>, PickError> {
    let key = format!("client-{i}");
    lb.pick(&Context::from_key(key.as_bytes()))
}

/// Backend names of `picks` picks, each guard dropped at once.
fn names<B: Algo>(lb: &Live<B>, from: usize, picks: usize) -> Vec<V> {
    (from..from + picks)
        .map(|i| *pick(lb, i).expect("a backend is available"))
        .collect()
}

fn count(names: &[V], name: V) -> usize {
    names.iter().filter(|&&n| n == name).count()
}

fn live<B: Algo>(backends: &[(V, u32)], policy: HealthPolicy, clock: &Arc<ManualClock>) -> Live<B> {
    Live::<B>::builder()
        .health(policy)
        .clock(Arc::clone(clock))
        .build(
            backends
                .iter()
                .map(|&(name, weight)| Backend::new(name).weight(weight)),
        )
        .expect("valid backends")
}

fn active_by_name<B: Algo>(lb: &Live<B>) -> HashMap<V, usize> {
    lb.stats()
        .iter()
        .map(|stats| (stats.backend, stats.active))
        .collect()
}

fn state_of<B: Algo>(lb: &Live<B>, name: V) -> BackendState {
    lb.stats()
        .into_iter()
        .find(|stats| stats.backend == name)
        .map(|stats| stats.state)
        .expect("backend in the set")
}

fn check_updates_keep_counts_by_identity<B: Algo>(form: &str) {
    let clock = Arc::new(ManualClock::new());
    let lb = live::<B>(
        &[("a", 1), ("b", 1), ("c", 1)],
        HealthPolicy::default(),
        &clock,
    );
    let held: Vec<Guard<V>> = (0..30).map(|i| pick(&lb, i).expect("pick")).collect();
    let before = active_by_name(&lb);
    assert_eq!(before.values().sum::<usize>(), 30, "{form}");
    lb.add(Backend::new("d").weight(2)).expect("add");
    lb.set_weight("a", 3).expect("re-weight");
    lb.remove("b").expect("remove");
    let after = active_by_name(&lb);
    assert_eq!(after.len(), 3, "{form}");
    assert_eq!(
        (after["a"], after["c"], after["d"]),
        (before["a"], before["c"], 0),
        "{form}"
    );
    assert!(
        names(&lb, 100, 200).iter().all(|&n| n != "b"),
        "{form}: picked a removed backend"
    );
    let removed: Vec<&Guard<V>> = held.iter().filter(|g| ***g == "b").collect();
    assert_eq!(
        removed.len(),
        before["b"],
        "{form}: guards of the removed backend stay valid"
    );
    drop(held);
    assert!(lb.stats().iter().all(|s| s.active == 0), "{form}");
    assert_eq!(
        lb.add(Backend::new("a")),
        Err(loadbalance::UpdateError::Duplicate),
        "{form}"
    );
    assert_eq!(
        lb.remove("zz"),
        Err(loadbalance::UpdateError::NotFound),
        "{form}"
    );
    assert!(
        matches!(
            lb.set_weight("a", 0),
            Err(loadbalance::UpdateError::Build(_))
        ),
        "{form}"
    );
    assert_eq!(lb.len(), 3, "{form}: a rejected update changes nothing");
    lb.remove("a").expect("remove");
    lb.remove("c").expect("remove");
    assert_eq!(
        lb.remove("d"),
        Err(loadbalance::UpdateError::LastBackend),
        "{form}"
    );
}

#[test]
fn updates_keep_counts_by_identity() {
    for_every_form!(check_updates_keep_counts_by_identity);
}

/// nginx's smooth weighted round-robin, with effective weights.
struct Nginx {
    weight: Vec<i64>,
    effective: Vec<i64>,
    current: Vec<i64>,
}

impl Nginx {
    fn new(weights: &[i64]) -> Self {
        Self {
            weight: weights.to_vec(),
            effective: weights.to_vec(),
            current: vec![0; weights.len()],
        }
    }

    fn step(&mut self) -> usize {
        let mut best = 0;
        let mut total = 0;
        for i in 0..self.weight.len() {
            self.current[i] += self.effective[i];
            total += self.effective[i];
            if self.effective[i] < self.weight[i] {
                self.effective[i] += 1;
            }
            if self.current[i] > self.current[best] {
                best = i;
            }
        }
        self.current[best] -= total;
        best
    }
}

fn check_smooth_weighted_round_robin_is_exact_from_the_update_on<B: Algo>(form: &str) {
    let clock = Arc::new(ManualClock::new());
    let lb = live::<B>(
        &[("a", 5), ("b", 1), ("c", 1)],
        HealthPolicy::default(),
        &clock,
    );
    assert_eq!(
        names(&lb, 0, 7),
        ["a", "a", "b", "a", "c", "a", "a"],
        "{form}"
    );
    names(&lb, 0, 3);
    lb.set_weight("b", 3).expect("re-weight");
    lb.add(Backend::new("d").weight(2)).expect("add");
    let mut reference = Nginx::new(&[5, 3, 1, 2]);
    let expected: Vec<V> = (0..33)
        .map(|_| ["a", "b", "c", "d"][reference.step()])
        .collect();
    assert_eq!(names(&lb, 0, 33), expected, "{form}");
}

#[test]
fn smooth_weighted_round_robin_is_exact_from_the_update_on() {
    check_smooth_weighted_round_robin_is_exact_from_the_update_on::<lockfree::WeightedRoundRobin<V>>(
        "lockfree",
    );
    check_smooth_weighted_round_robin_is_exact_from_the_update_on::<locked::WeightedRoundRobin<V>>(
        "locked",
    );
}

fn check_hash_moves_only_clients_of_backends_out<B: Algo>(form: &str) {
    let clock = Arc::new(ManualClock::new());
    let all = ["a", "b", "c", "d", "e", "f", "g", "h"];
    let lb = live::<B>(&all.map(|n| (n, 1)), HealthPolicy::default(), &clock);
    let clients = 20_000;
    let original = names(&lb, 0, clients);
    let check_only_e_moved = |now: &[V]| {
        for (before, after) in original.iter().zip(now) {
            assert_ne!(
                *after, "e",
                "{form}: a client went to the backend that is out"
            );
            if *before != "e" {
                assert_eq!(before, after, "{form}: a client of another backend moved");
            }
        }
    };
    lb.set_state("e", AdminState::Down).expect("down");
    check_only_e_moved(&names(&lb, 0, clients));
    lb.set_state("e", AdminState::Up).expect("up");
    assert_eq!(
        names(&lb, 0, clients),
        original,
        "{form}: clients came back"
    );
    lb.remove("e").expect("remove");
    check_only_e_moved(&names(&lb, 0, clients));
    lb.add(Backend::new("e")).expect("add");
    assert_eq!(
        names(&lb, 0, clients),
        original,
        "{form}: clients came back"
    );
}

#[test]
fn hash_moves_only_clients_of_backends_out() {
    check_hash_moves_only_clients_of_backends_out::<lockfree::IpHash<V>>("lockfree");
    check_hash_moves_only_clients_of_backends_out::<locked::IpHash<V>>("locked");
}

fn check_draining_and_down_keep_guards_and_take_no_picks<B: Algo>(form: &str) {
    let clock = Arc::new(ManualClock::new());
    let lb = live::<B>(
        &[("a", 1), ("b", 1), ("c", 1)],
        HealthPolicy::default(),
        &clock,
    );
    let held = (0..)
        .map(|i| pick(&lb, i).expect("pick"))
        .find(|g| **g == "a")
        .expect("a");
    lb.set_state("a", AdminState::Draining).expect("drain");
    assert_eq!(count(&names(&lb, 0, 300), "a"), 0, "{form}");
    assert_eq!(state_of(&lb, "a"), BackendState::Draining, "{form}");
    assert_eq!(active_by_name(&lb)["a"], 1, "{form}");
    lb.set_state("b", AdminState::Down).expect("down");
    assert!(names(&lb, 0, 300).iter().all(|&n| n == "c"), "{form}");
    lb.set_state("c", AdminState::Down).expect("down");
    assert_eq!(pick(&lb, 0).err(), Some(PickError::AllDown), "{form}");
    lb.set_state("a", AdminState::Up).expect("up");
    assert!(names(&lb, 0, 30).iter().all(|&n| n == "a"), "{form}");
    assert_eq!(*held, "a");
    drop(held);
    assert_eq!(active_by_name(&lb)["a"], 0, "{form}");
}

#[test]
fn draining_and_down_keep_guards_and_take_no_picks() {
    for_every_form!(check_draining_and_down_keep_guards_and_take_no_picks);
}

/// A guard of backend `name`, picked by some client.
fn guard_of<B: Algo>(lb: &Live<B>, name: V) -> Guard<V> {
    (0..10_000)
        .map(|i| pick(lb, i).expect("pick"))
        .find(|g| **g == name)
        .expect("the backend takes picks")
}

fn check_ejection_cooldown_trial_and_rejoin<B: Algo>(form: &str) {
    let clock = Arc::new(ManualClock::new());
    let timeout = Duration::from_secs(10);
    let policy = HealthPolicy::default()
        .max_fails(2)
        .fail_timeout(timeout)
        .when_all_ejected(WhenAllEjected::Fail);
    let lb = live::<B>(&[("a", 1), ("b", 1), ("c", 1)], policy, &clock);
    // Failures further apart than fail_timeout do not add up.
    guard_of(&lb, "a").report(FAIL);
    clock.advance(timeout + Duration::from_secs(1));
    guard_of(&lb, "a").report(FAIL);
    assert_eq!(state_of(&lb, "a"), BackendState::Up, "{form}");
    // Two within the window eject.
    guard_of(&lb, "a").report(FAIL);
    assert_eq!(state_of(&lb, "a"), BackendState::Ejected, "{form}");
    assert_eq!(count(&names(&lb, 0, 300), "a"), 0, "{form}");
    // After the cooldown exactly one pick is a trial; it fails.
    clock.advance(timeout);
    assert_eq!(state_of(&lb, "a"), BackendState::Trial, "{form}");
    let picks: Vec<Guard<V>> = (0..300).map(|i| pick(&lb, i).expect("pick")).collect();
    let trials: Vec<&Guard<V>> = picks.iter().filter(|g| ***g == "a").collect();
    assert_eq!(trials.len(), 1, "{form}: one trial a cooldown");
    trials[0].report(FAIL);
    drop(picks);
    assert_eq!(state_of(&lb, "a"), BackendState::Ejected, "{form}");
    // The next trial succeeds: the backend rejoins.
    clock.advance(timeout);
    let trial = guard_of(&lb, "a");
    trial.report(OK);
    drop(trial);
    assert_eq!(state_of(&lb, "a"), BackendState::Up, "{form}");
    assert!(
        count(&names(&lb, 0, 300), "a") >= 50,
        "{form}: back in rotation"
    );
    let stats = lb.stats();
    assert_eq!(stats[0].failures, 4, "{form}");
    assert!(stats[0].latency.is_some(), "{form}");
}

#[test]
fn ejection_cooldown_trial_and_rejoin() {
    for_every_form!(check_ejection_cooldown_trial_and_rejoin, latency_blind);
}

fn check_when_all_are_ejected_the_policy_decides<B: Algo>(form: &str) {
    let clock = Arc::new(ManualClock::new());
    for (policy, works) in [(WhenAllEjected::Panic, true), (WhenAllEjected::Fail, false)] {
        let policy = HealthPolicy::default().when_all_ejected(policy);
        let lb = live::<B>(&[("a", 1), ("b", 1)], policy, &clock);
        guard_of(&lb, "a").report(FAIL);
        guard_of(&lb, "b").report(FAIL);
        let result = pick(&lb, 0);
        assert_eq!(result.is_ok(), works, "{form}");
        if !works {
            assert_eq!(result.err(), Some(PickError::AllEjected), "{form}");
        }
    }
}

#[test]
fn when_all_are_ejected_the_policy_decides() {
    for_every_form!(check_when_all_are_ejected_the_policy_decides);
}

fn check_max_conns_caps_every_backend<B: Algo>(form: &str) {
    let lb = Live::<B>::new([
        Backend::new("a").max_conns(2),
        Backend::new("b").max_conns(1),
    ])
    .expect("valid");
    let mut held: Vec<Guard<V>> = (0..3).map(|i| pick(&lb, i).expect("room left")).collect();
    assert_eq!(pick(&lb, 3).err(), Some(PickError::AllFull), "{form}");
    let active = active_by_name(&lb);
    assert_eq!((active["a"], active["b"]), (2, 1), "{form}");
    held.retain(|g| **g != "b");
    assert_eq!(*pick(&lb, 4).expect("b has room"), "b", "{form}");
    lb.set_max_conns("a", 0).expect("lift the limit");
    held.push(pick(&lb, 5).expect("a unlimited"));
}

#[test]
fn max_conns_caps_every_backend() {
    for_every_form!(check_max_conns_caps_every_backend);
}

fn check_backups_take_picks_only_while_no_primary_can<B: Algo>(form: &str) {
    let lb = Live::<B>::new([
        Backend::new("a"),
        Backend::new("b"),
        Backend::new("c").backup(true),
    ])
    .expect("valid");
    assert_eq!(count(&names(&lb, 0, 300), "c"), 0, "{form}");
    lb.set_state("a", AdminState::Down).expect("down");
    lb.set_state("b", AdminState::Draining).expect("drain");
    assert!(names(&lb, 0, 100).iter().all(|&n| n == "c"), "{form}");
    lb.set_state("a", AdminState::Up).expect("up");
    assert!(names(&lb, 0, 100).iter().all(|&n| n == "a"), "{form}");
    lb.set_backup("c", false).expect("promote");
    assert!(count(&names(&lb, 0, 300), "c") > 0, "{form}");
}

#[test]
fn backups_take_picks_only_while_no_primary_can() {
    for_every_form!(check_backups_take_picks_only_while_no_primary_can);
}

fn check_retries_never_repeat_a_tried_backend<B: Algo>(form: &str) {
    let lb =
        Live::<B>::new([Backend::new("a"), Backend::new("b"), Backend::new("c")]).expect("valid");
    for client in 0..20 {
        let key = format!("client-{client}");
        let mut tried = Tried::new();
        for _ in 0..3 {
            let ctx = Context::from_key(key.as_bytes()).with_tried(&tried);
            let guard = lb.pick(&ctx).expect("an untried backend is left");
            assert!(!tried.contains(&guard), "{form}");
            tried.insert(&guard);
        }
        let ctx = Context::from_key(key.as_bytes()).with_tried(&tried);
        assert_eq!(lb.pick(&ctx).err(), Some(PickError::AllTried), "{form}");
    }
}

#[test]
fn retries_never_repeat_a_tried_backend() {
    for_every_form!(check_retries_never_repeat_a_tried_backend);
}

fn check_slow_start_ramps_an_added_backend<B: Algo>(form: &str) {
    let clock = Arc::new(ManualClock::new());
    let policy = HealthPolicy::default().slow_start(Duration::from_secs(100));
    let lb = live::<B>(&[("a", 1), ("b", 1), ("c", 1)], policy, &clock);
    lb.add(Backend::new("d")).expect("add");
    let picks = 4_000;
    let mut shares = Vec::new();
    for step in [10, 40, 51] {
        clock.advance(Duration::from_secs(step)); // to 10 s, 50 s, 101 s
        shares.push(count(&names(&lb, 0, picks), "d") as f64 / picks as f64);
    }
    let fair = 0.25;
    assert!(shares[0] < 0.3 * fair, "{form}: {shares:?}");
    assert!(
        shares[0] < shares[1] && shares[1] < shares[2],
        "{form}: {shares:?}"
    );
    assert!((shares[2] - fair).abs() < 0.2 * fair, "{form}: {shares:?}");
    assert_eq!(state_of(&lb, "d"), BackendState::Up, "{form}");
}

#[test]
fn slow_start_ramps_an_added_backend() {
    for_every_form!(check_slow_start_ramps_an_added_backend);
}

#[test]
fn a_failure_lowers_the_effective_weight_exactly_as_nginx() {
    let clock = Arc::new(ManualClock::new());
    let policy = HealthPolicy::default()
        .max_fails(4)
        .fail_timeout(Duration::from_secs(1000));
    let lb = live::<locked::WeightedRoundRobin<V>>(&[("a", 8), ("b", 4)], policy, &clock);
    let mut reference = Nginx::new(&[8, 4]);
    let sequence = |n: usize, reference: &mut Nginx| -> Vec<V> {
        (0..n).map(|_| ["a", "b"][reference.step()]).collect()
    };
    assert_eq!(names(&lb, 0, 5), sequence(5, &mut reference));
    for _ in 0..2 {
        let guard = pick(&lb, 0).expect("pick");
        let index = reference.step();
        assert_eq!(*guard, ["a", "b"][index]);
        guard.report(FAIL);
        // weight / max_fails, as nginx.
        reference.effective[index] =
            (reference.effective[index] - reference.weight[index] / 4).max(0);
    }
    assert_eq!(names(&lb, 0, 40), sequence(40, &mut reference));
    // Restored one unit a pick: the stats say so, and the state is plain again.
    assert!(lb.stats().iter().all(|s| s.effective_weight == s.weight));

    // The lock-free form restores the same way; its shares converge.
    let lb = live::<lockfree::WeightedRoundRobin<V>>(&[("a", 8), ("b", 4)], policy, &clock);
    let (first, second) = (guard_of(&lb, "a"), guard_of(&lb, "a"));
    first.report(FAIL);
    second.report(FAIL);
    drop((first, second));
    let stats = lb.stats();
    assert_eq!(
        (stats[0].effective_weight, stats[0].state),
        (4, BackendState::Up)
    );
    // nginx's loop from here, with a's effective weight 8 - 2 * 8/4 = 4.
    let mut reference = Nginx::new(&[8, 4]);
    reference.effective[0] = 4;
    assert_eq!(names(&lb, 0, 4), sequence(4, &mut reference));
    let many = names(&lb, 0, 1_200);
    assert_eq!(count(&many, "a"), 800);
    assert!(lb.stats().iter().all(|s| s.effective_weight == s.weight));
}

#[test]
fn stats_count_picks_failures_and_states() {
    let clock = Arc::new(ManualClock::new());
    let lb = live::<lockfree::LeastConn<V>>(&[("a", 1), ("b", 2)], HealthPolicy::default(), &clock);
    let held: Vec<Guard<V>> = (0..6).map(|i| pick(&lb, i).expect("pick")).collect();
    held.iter().find(|g| ***g == "a").expect("a").report(OK);
    let stats = lb.stats();
    assert_eq!((stats[0].active, stats[1].active), (2, 4));
    assert_eq!((stats[0].picks, stats[1].picks), (2, 4));
    assert_eq!(stats[0].latency, Some(Duration::from_millis(1)));
    assert_eq!((stats[0].weight, stats[1].weight), (1, 2));
    drop(held);
    lb.set_state("b", AdminState::Down).expect("down");
    let stats = lb.stats();
    assert_eq!(
        (stats[0].state, stats[1].state),
        (BackendState::Up, BackendState::Down)
    );
    assert_eq!((stats[0].active, stats[1].picks), (0, 4));
}
