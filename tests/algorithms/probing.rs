//! The probing pick (Prequal's hot-cold rule): answers steer picks, used
//! up, aged out, kept across a live set's rebuilds, never sending a pick
//! where it may not go; under threads that pick, answer and update at
//! once, every count returns to zero and no `max_conns` is exceeded.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use loadbalance::{
    AdminState, Algorithm, Backend, Balancer, Context, HealthPolicy, Live, ManualClock, Pool,
    ProbingOptions, locked, lockfree,
};

const MS: Duration = Duration::from_millis(1);

/// A pool over `names` probing every backend after each pick, on `clock`.
fn pool(
    names: &[&'static str],
    options: ProbingOptions,
    clock: &Arc<ManualClock>,
) -> Pool<&'static str> {
    Pool::builder(Algorithm::Probing(options.seed(9)))
        .clock(Arc::clone(clock))
        .health(HealthPolicy::none())
        .build(names.iter().map(|&name| Backend::new(name)))
        .expect("a pool")
}

/// Answers every probe the pool asks for now with `load(backend)`.
fn answer_all(pool: &Pool<&'static str>, load: impl Fn(&str) -> (u32, u64)) -> usize {
    let probes = pool.probes();
    let asked = probes.len();
    for probe in probes {
        let (in_flight, ms) = load(probe.backend());
        probe.answer(in_flight, MS * ms as u32);
    }
    asked
}

#[test]
fn a_pick_takes_the_cold_answer_of_lowest_latency_until_it_is_used_up() {
    let clock = Arc::new(ManualClock::new());
    let options = ProbingOptions::default()
        .probes(4)
        .uses(2)
        .hot_percentile(50);
    let pool = pool(&["a", "b", "c", "d"], options, &clock);
    // In flight 1, 2, 2, 9 (hot above the median, 2); latency lowest at d,
    // which is hot, then at c.
    let asked = answer_all(&pool, |backend| match backend {
        "a" => (1, 30),
        "b" => (2, 20),
        "c" => (2, 10),
        _ => (9, 1),
    });
    assert_eq!(asked, 4, "every backend is probed when it asks for as many");
    // Each pick counts one more request in the answer it took, and an
    // answer steers two picks: c (in flight 2 -> 3, now above the median
    // 2), b (2 -> 3; the median is 3 now), c (its last use), b (its last),
    // then a, the one cold answer left beside d.
    let picks: Vec<_> = (0..5)
        .map(|_| pool.pick(&Context::new()).expect("a pick"))
        .collect();
    let order: Vec<&str> = picks.iter().map(|picked| **picked.guard()).collect();
    assert_eq!(order, ["c", "b", "c", "b", "a"]);
}

#[test]
fn an_answer_leaves_the_pool_when_one_comes_past_its_age() {
    let clock = Arc::new(ManualClock::new());
    // Nothing is hot at the 100th percentile: latency alone decides.
    let options = ProbingOptions::default()
        .probes(2)
        .uses(100)
        .hot_percentile(100)
        .max_age(MS * 100);
    let pool = pool(&["a", "b"], options, &clock);
    answer_all(
        &pool,
        |backend| if backend == "a" { (0, 1) } else { (0, 50) },
    );
    let held: Vec<_> = (0..3)
        .map(|_| pool.pick(&Context::new()).expect("a pick"))
        .collect();
    assert!(
        held.iter().all(|picked| **picked.guard() == "a"),
        "the answer steers"
    );
    // 101 ms on, b answers again (a's probe gets no answer): a's answer
    // is past its age, and b's (50 ms) is the only one left.
    clock.advance(MS * 101);
    for probe in pool.probes() {
        if *probe.backend() == "b" {
            probe.answer(0, MS * 50);
        }
    }
    for _ in 0..3 {
        assert_eq!(**pool.pick(&Context::new()).expect("a pick").guard(), "b");
    }
}

#[test]
fn an_answer_never_sends_a_pick_where_it_may_not_go() {
    let clock = Arc::new(ManualClock::new());
    let pool = pool(
        &["a", "b", "c"],
        ProbingOptions::default().probes(3).uses(50),
        &clock,
    );
    answer_all(
        &pool,
        |backend| if backend == "c" { (0, 1) } else { (0, 40) },
    );
    pool.set_state("c", AdminState::Down)
        .expect("c is a member");
    for _ in 0..20 {
        let picked = pool.pick(&Context::new()).expect("a pick");
        assert_ne!(**picked.guard(), "c", "c is down");
    }
    // Nor is a down backend probed.
    for _ in 0..20 {
        assert!(pool.probes().iter().all(|probe| *probe.backend() != "c"));
    }
    pool.set_state("c", AdminState::Up).expect("c is a member");
    let picked = pool.pick(&Context::new()).expect("a pick");
    assert_eq!(**picked.guard(), "c", "its answer is still in the pool");
}

#[test]
fn the_pool_outlives_a_rebuild_and_forgets_removed_backends() {
    let clock = Arc::new(ManualClock::new());
    let pool = pool(
        &["a", "b", "c"],
        ProbingOptions::default().probes(3).uses(50),
        &clock,
    );
    answer_all(&pool, |backend| match backend {
        "a" => (0, 1),
        "b" => (0, 2),
        _ => (0, 40),
    });
    pool.add(Backend::new("d")).expect("a new backend");
    assert_eq!(**pool.pick(&Context::new()).expect("a pick").guard(), "a");
    pool.remove("a").expect("a is a member");
    assert_eq!(**pool.pick(&Context::new()).expect("a pick").guard(), "b");
}

#[test]
fn other_algorithms_ask_for_no_probes() {
    let lb = lockfree::PeakEwma::new(["a", "b"]).expect("valid");
    assert!(lb.probes().is_empty());
    let none = lockfree::Probing::with_options([("a", 1)], ProbingOptions::default().probes(0))
        .expect("valid");
    assert!(
        none.probes().is_empty(),
        "0 probes a pick: the caller's own schedule"
    );
}

/// Threads pick, answer and mark backends down and up at once; one
/// answering thread stalls between its answers. Every pick succeeds, no
/// backend ever holds more than its `max_conns`, and every count returns
/// to zero.
fn stress<B>(name: &str)
where
    B: loadbalance::Assemble<Value = u32> + Balancer<u32> + 'static,
    B::Options: From<ProbingOptions>,
{
    const MAX: u32 = 3;
    let lb = Arc::new(
        Live::<B>::builder()
            .options(ProbingOptions::default().probes(3).uses(4).seed(1).into())
            .build((0..8u32).map(|i| Backend::new(i).max_conns(MAX)))
            .expect("valid"),
    );
    let held: Arc<Vec<AtomicUsize>> = Arc::new((0..8).map(|_| AtomicUsize::new(0)).collect());
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    for t in 0..4u32 {
        let (lb, held) = (Arc::clone(&lb), Arc::clone(&held));
        threads.push(std::thread::spawn(move || {
            for i in 0..5_000u32 {
                let Ok(guard) = lb.pick(&Context::new()) else {
                    continue; // all full: the others hold every slot
                };
                let now = held[*guard as usize].fetch_add(1, Ordering::SeqCst) + 1;
                assert!(now <= MAX as usize, "backend {} held {now}", *guard);
                for probe in lb.probes() {
                    if t == 0 && i % 500 == 0 {
                        std::thread::sleep(MS); // a stalled answer
                    }
                    let in_flight = (*probe.backend() + i) % 7;
                    probe.answer(in_flight, MS * (1 + i % 13));
                }
                held[*guard as usize].fetch_sub(1, Ordering::SeqCst);
                drop(guard);
            }
        }));
    }
    let updater = {
        let (lb, stop) = (Arc::clone(&lb), Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut i = 0u32;
            while !stop.load(Ordering::Relaxed) {
                let state = if i % 2 == 0 {
                    AdminState::Down
                } else {
                    AdminState::Up
                };
                lb.set_state(&(i % 8), state).expect("a member");
                i += 1;
                std::thread::yield_now();
            }
            for backend in 0..8u32 {
                lb.set_state(&backend, AdminState::Up).expect("a member");
            }
        })
    };
    for thread in threads {
        thread.join().expect(name);
    }
    stop.store(true, Ordering::Relaxed);
    updater.join().expect(name);
    for backend in 0..8u32 {
        assert_eq!(lb.active_of(&backend), Some(0), "{name}: backend {backend}");
    }
}

#[test]
fn under_threads_counts_return_to_zero_and_no_limit_is_exceeded() {
    stress::<lockfree::Probing<u32>>("lock-free");
    stress::<locked::Probing<u32>>("locked");
}

/// Off the plain path (a backend down), the answer chosen is the best of
/// those that may take the pick, not merely one that may: a, b, c and d
/// answered 1, 30, 3 and 20 ms, a is down, so every pick is c.
#[test]
fn off_the_plain_path_the_best_answer_that_may_take_the_pick_wins() {
    let clock = Arc::new(ManualClock::new());
    let options = ProbingOptions::default()
        .probes(4)
        .uses(255)
        .hot_percentile(100);
    let pool = pool(&["a", "b", "c", "d"], options, &clock);
    answer_all(&pool, |backend| match backend {
        "a" => (0, 1),
        "b" => (0, 30),
        "c" => (0, 3),
        _ => (0, 20),
    });
    pool.set_state("a", AdminState::Down)
        .expect("a is a member");
    for _ in 0..10 {
        assert_eq!(**pool.pick(&Context::new()).expect("a pick").guard(), "c");
    }
}

/// A clock that, on the one thread that armed it, stops its next reading
/// until released: a pick held mid-way, as a preempted thread would be.
#[derive(Debug)]
struct GateClock;

thread_local! {
    static ARMED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

static GATE: std::sync::Mutex<
    Option<(std::sync::mpsc::Sender<()>, std::sync::mpsc::Receiver<()>)>,
> = std::sync::Mutex::new(None);

impl loadbalance::Clock for GateClock {
    fn now(&self) -> Duration {
        if ARMED.with(|armed| armed.replace(false)) {
            let gate = GATE.lock().expect("the gate").take();
            if let Some((entered, release)) = gate {
                let _ = entered.send(());
                let _ = release.recv_timeout(Duration::from_secs(5));
            }
        }
        Duration::ZERO
    }
}

/// A pick begun on the set before a backend was added (held mid-way)
/// finishes on that set, and does not make the pool forget the new
/// backend's answer: the next pick, on the new set, takes it.
#[test]
fn a_pick_begun_before_a_rebuild_keeps_the_new_backends_answer() {
    let options = ProbingOptions::default()
        .probes(8)
        .uses(255)
        .hot_percentile(100)
        .seed(1);
    let lb = Arc::new(
        Live::<lockfree::Probing<&'static str>>::builder()
            .clock(GateClock)
            .health(HealthPolicy::none())
            .options(options)
            .build(["a", "b", "c"].map(Backend::new))
            .expect("valid"),
    );
    // A backend down sends picks to the slow path, which reads the clock.
    lb.set_state("c", AdminState::Down).expect("a member");
    for probe in lb.probes() {
        let ms = if *probe.backend() == "a" { 30 } else { 40 };
        probe.answer(0, MS * ms);
    }
    let (entered_tx, entered_rx) = std::sync::mpsc::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel();
    *GATE.lock().expect("the gate") = Some((entered_tx, release_rx));
    let straggler = {
        let lb = Arc::clone(&lb);
        std::thread::spawn(move || {
            ARMED.with(|armed| armed.set(true));
            *lb.pick(&Context::new()).expect("a pick")
        })
    };
    entered_rx
        .recv_timeout(Duration::from_secs(5))
        .expect("the straggler is held mid-pick");
    lb.add(Backend::new("d")).expect("d is new");
    for probe in lb.probes() {
        if *probe.backend() == "d" {
            probe.answer(0, MS); // the best answer
        }
    }
    release_tx.send(()).expect("the straggler waits");
    assert_eq!(straggler.join().expect("the straggler"), "a");
    assert_eq!(*lb.pick(&Context::new()).expect("a pick"), "d");
}
