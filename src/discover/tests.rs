//! The watch against a scripted resolver on tokio's paused clock: when it
//! asks, what it keeps, what it hands on; and a property test against a
//! sequential model of "the union of each name's last good answer".

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use proptest::prelude::*;
use tokio::time::Instant;

use super::*;

/// Answers from a script, name by name; a name with nothing left times out.
#[derive(Default)]
struct Script {
    answers: Mutex<HashMap<DnsName, VecDeque<Result<Resolution, DnsError>>>>,
    asked: Mutex<Vec<(DnsName, Instant)>>,
}

impl Script {
    fn push(&self, name: &DnsName, answer: Result<Resolution, DnsError>) {
        self.answers
            .lock()
            .entry(name.clone())
            .or_default()
            .push_back(answer);
    }

    fn asked(&self, name: &DnsName) -> Vec<Instant> {
        let asked = self.asked.lock();
        asked
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, at)| *at)
            .collect()
    }
}

impl Resolve for Arc<Script> {
    fn resolve<'a>(&'a self, name: &'a DnsName) -> ResolveFuture<'a> {
        self.asked.lock().push((name.clone(), Instant::now()));
        let answer = self
            .answers
            .lock()
            .get_mut(name)
            .and_then(VecDeque::pop_front);
        Box::pin(async move {
            answer.unwrap_or_else(|| Err(DnsError::new(name, DnsErrorKind::Timeout)))
        })
    }
}

fn at(last: u8) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, last], 80))
}

fn answer(lasts: &[u8], ttl_secs: u64) -> Result<Resolution, DnsError> {
    Ok(Resolution::new(
        lasts.iter().map(|&last| Endpoint::new(at(last))),
        Duration::from_secs(ttl_secs),
    ))
}

fn paused() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("a runtime")
}

type Seen = Arc<Mutex<Vec<Vec<SocketAddr>>>>;

fn recorder() -> (
    Seen,
    impl FnMut(&[Endpoint]) -> Result<(), String> + Send + 'static,
) {
    let seen: Seen = Arc::default();
    let log = Arc::clone(&seen);
    (seen, move |endpoints: &[Endpoint]| {
        log.lock().push(endpoints.iter().map(|e| e.addr).collect());
        Ok(())
    })
}

#[test]
fn each_name_is_asked_again_when_its_clamped_ttl_ends() {
    paused().block_on(async {
        let script = Arc::new(Script::default());
        let short: DnsName = "short.test:80".parse().expect("a name");
        let long: DnsName = "long.test:80".parse().expect("a name");
        for _ in 0..4 {
            script.push(&short, answer(&[1], 0)); // clamped up to 2 s
            script.push(&long, answer(&[2], 3_600)); // clamped down to 5 s
        }
        let discovery = Discovery::new(Arc::clone(&script))
            .name(short.clone())
            .name(long.clone())
            .ttl_bounds(Duration::from_secs(2), Duration::from_secs(5))
            .expect("bounds");
        let start = Instant::now();
        let found = discovery.resolve().await;
        assert_eq!(found.endpoints().len(), 2);
        let (seen, on_change) = recorder();
        let watch = discovery.watch(found, on_change);
        tokio::time::sleep(Duration::from_millis(10_500)).await;
        let offsets = |name: &DnsName| -> Vec<u64> {
            script
                .asked(name)
                .iter()
                .map(|t| (*t - start).as_secs())
                .collect()
        };
        assert_eq!(offsets(&short), [0, 2, 4, 6, 8, 10]);
        assert_eq!(offsets(&long), [0, 5, 10]);
        assert!(seen.lock().is_empty(), "nothing changed, nothing applied");
        assert_eq!(watch.stats().lookups, 7);
    });
}

#[test]
fn a_failed_or_empty_answer_keeps_the_last_good_one_and_backs_off() {
    paused().block_on(async {
        let script = Arc::new(Script::default());
        let name: DnsName = "web.test:80".parse().expect("a name");
        script.push(&name, answer(&[1, 2], 1));
        script.push(&name, Ok(Resolution::new([], Duration::from_secs(1))));
        script.push(&name, Err(DnsError::new(&name, DnsErrorKind::NoRecords)));
        // Then nothing: every later lookup times out.
        let discovery = Discovery::new(Arc::clone(&script)).name(name.clone());
        let start = Instant::now();
        let found = discovery.resolve().await;
        let (seen, on_change) = recorder();
        let watch = discovery.watch(found, on_change);
        tokio::time::sleep(Duration::from_millis(40_500)).await;
        let offsets: Vec<u64> = script
            .asked(&name)
            .iter()
            .map(|t| (*t - start).as_secs())
            .collect();
        // A 1 s TTL, then failures in a row: 1, 2, 4, 8, 8, ... seconds apart.
        assert_eq!(offsets, [0, 1, 2, 4, 8, 16, 24, 32, 40]);
        assert!(seen.lock().is_empty(), "the last good answer was kept");
        let stats = watch.stats();
        assert_eq!((stats.lookups, stats.failures, stats.changes), (8, 8, 0));
    });
}

#[test]
fn a_change_is_applied_once_and_a_refused_one_offered_again() {
    paused().block_on(async {
        let script = Arc::new(Script::default());
        let name: DnsName = "web.test:80".parse().expect("a name");
        script.push(&name, answer(&[1], 1));
        script.push(&name, answer(&[1, 2], 1));
        script.push(&name, answer(&[1, 2], 1));
        script.push(&name, answer(&[3], 1));
        script.push(&name, answer(&[3], 1));
        for _ in 0..10 {
            script.push(&name, answer(&[3], 1));
        }
        let discovery = Discovery::new(Arc::clone(&script)).name(name);
        let found = discovery.resolve().await;
        let seen: Seen = Arc::default();
        let log = Arc::clone(&seen);
        let mut refuse = 1;
        let watch = discovery.watch(found, move |endpoints: &[Endpoint]| {
            let addrs: Vec<SocketAddr> = endpoints.iter().map(|e| e.addr).collect();
            if addrs == [at(3)] && refuse > 0 {
                refuse -= 1;
                return Err("refused once");
            }
            log.lock().push(addrs);
            Ok(())
        });
        tokio::time::sleep(Duration::from_millis(5_500)).await;
        assert_eq!(*seen.lock(), [vec![at(1), at(2)], vec![at(3)]]);
        let stats = watch.stats();
        assert_eq!((stats.changes, stats.refused), (2, 1));
        drop(watch);
        let asked = script.asked.lock().len();
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(
            script.asked.lock().len(),
            asked,
            "a dropped watch asks no more"
        );
    });
}

#[test]
fn srv_like_answers_keep_their_weights_and_backups_through_the_union() {
    paused().block_on(async {
        let script = Arc::new(Script::default());
        let service: DnsName = "_http._tcp.web.test".parse().expect("a name");
        let host: DnsName = "web.test:80".parse().expect("a name");
        let primary = Endpoint {
            addr: at(1),
            weight: 5,
            backup: false,
        };
        let backup = Endpoint {
            addr: at(2),
            weight: 1,
            backup: true,
        };
        script.push(
            &service,
            Ok(Resolution::new([backup, primary], Duration::from_secs(9))),
        );
        // The host repeats one of the service's addresses: kept once.
        script.push(&host, answer(&[2, 3], 9));
        let discovery = Discovery::new(Arc::clone(&script)).name(service).name(host);
        let found = discovery.resolve().await;
        assert_eq!(found.endpoints(), [primary, backup, Endpoint::new(at(3))]);
        assert_eq!(found.errors().count(), 0);
    });
}

#[test]
fn ttl_bounds_are_checked() {
    let discovery = Discovery::new(Arc::new(Script::default()));
    assert!(
        discovery
            .clone()
            .ttl_bounds(Duration::ZERO, Duration::from_secs(1))
            .is_err()
    );
    assert!(
        discovery
            .clone()
            .ttl_bounds(Duration::from_secs(2), Duration::from_secs(1))
            .is_err()
    );
    assert!(
        discovery
            .ttl_bounds(Duration::from_secs(1), Duration::from_secs(1))
            .is_ok()
    );
}

/// One round's answer for a name in the property test.
#[derive(Clone, Debug)]
enum Step {
    Good(Vec<u8>),
    Empty,
    Failed,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        proptest::collection::vec(1..6_u8, 1..4).prop_map(Step::Good),
        Just(Step::Empty),
        Just(Step::Failed),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// After every answer, what was last applied is the union of each
    /// name's last good answer (the sequential model), and nothing is
    /// applied when that union did not change.
    #[test]
    fn the_applied_set_is_the_union_of_the_last_good_answers(
        rounds in proptest::collection::vec((step(), step()), 1..12),
    ) {
        paused().block_on(async {
            let script = Arc::new(Script::default());
            let names: [DnsName; 2] = [
                "a.test:80".parse().expect("a name"),
                "b.test:80".parse().expect("a name"),
            ];
            // Round 0 is the first resolution; each answer lives 1 s, so
            // every failure's retry (1 s) and every TTL line up.
            let script_step = |name: &DnsName, step: &Step| match step {
                Step::Good(lasts) => script.push(name, answer(lasts, 1)),
                Step::Empty => script.push(name, Ok(Resolution::new([], Duration::from_secs(1)))),
                Step::Failed => script.push(name, Err(DnsError::new(name, DnsErrorKind::Timeout))),
            };
            for (a, b) in &rounds {
                script_step(&names[0], a);
                script_step(&names[1], b);
            }
            let discovery = Discovery::new(Arc::clone(&script))
                .name(names[0].clone())
                .name(names[1].clone())
                .ttl_bounds(Duration::from_secs(1), Duration::from_secs(1))
                .expect("bounds");
            let found = discovery.resolve().await;
            let (seen, on_change) = recorder();
            let _watch = discovery.watch(found, on_change);
            // The model.
            let mut last: [Option<Vec<u8>>; 2] = [None, None];
            let mut applied: Vec<SocketAddr> = Vec::new();
            let mut expected: Vec<Vec<SocketAddr>> = Vec::new();
            let union_of = |last: &[Option<Vec<u8>>; 2]| {
                let mut union: Vec<SocketAddr> = Vec::new();
                for addr in last.iter().flatten().flatten().map(|&l| at(l)) {
                    if !union.contains(&addr) {
                        union.push(addr);
                    }
                }
                union
            };
            for (index, (a, b)) in rounds.iter().enumerate() {
                // The first round is taken whole; after it each answer is
                // applied as it comes, a's before b's.
                for (slot, step) in [a, b].into_iter().enumerate() {
                    if let Step::Good(lasts) = step {
                        let mut lasts = lasts.clone();
                        lasts.sort_unstable();
                        lasts.dedup();
                        last[slot] = Some(lasts);
                    }
                    let union = union_of(&last);
                    if index > 0 && !union.is_empty() && union != applied {
                        applied = union.clone();
                        expected.push(union);
                    }
                }
                if index == 0 {
                    applied = union_of(&last);
                }
            }
            tokio::time::sleep(Duration::from_millis(rounds.len() as u64 * 1_000 - 500)).await;
            prop_assert_eq!(&*seen.lock(), &expected);
            Ok(())
        })?;
    }
}

// What a review of the watch found, each a test that failed first.

/// The script, but `slow`'s lookups after its first take an hour.
struct Stalling {
    script: Arc<Script>,
    slow: DnsName,
    first: std::sync::atomic::AtomicBool,
}

impl Resolve for Stalling {
    fn resolve<'a>(&'a self, name: &'a DnsName) -> ResolveFuture<'a> {
        let stall =
            *name == self.slow && !self.first.swap(false, std::sync::atomic::Ordering::Relaxed);
        let answer = self.script.resolve(name);
        Box::pin(async move {
            if stall {
                tokio::time::sleep(Duration::from_secs(3_600)).await;
            }
            answer.await
        })
    }
}

#[test]
fn a_stalled_name_does_not_hold_the_others_up() {
    paused().block_on(async {
        let script = Arc::new(Script::default());
        let fast: DnsName = "fast.test:80".parse().expect("a name");
        let slow: DnsName = "slow.test:80".parse().expect("a name");
        script.push(&slow, answer(&[9], 1));
        script.push(&fast, answer(&[1], 1));
        for _ in 0..60 {
            script.push(&fast, answer(&[2], 1));
        }
        let resolver = Stalling {
            script: Arc::clone(&script),
            slow: slow.clone(),
            first: true.into(),
        };
        let discovery = Discovery::new(resolver).name(fast.clone()).name(slow);
        let found = discovery.resolve().await;
        let (seen, on_change) = recorder();
        let _watch = discovery.watch(found, on_change);
        tokio::time::sleep(Duration::from_secs(30)).await;
        let asked = script.asked(&fast).len();
        assert!(
            asked >= 20,
            "fast.test asked {asked} times in 30 s (TTL 1 s)"
        );
        assert_eq!(
            *seen.lock(),
            [vec![at(2), at(9)]],
            "fast.test's change applied"
        );
    });
}

#[test]
fn a_panicking_callback_does_not_end_the_watch() {
    paused().block_on(async {
        let script = Arc::new(Script::default());
        let name: DnsName = "web.test:80".parse().expect("a name");
        script.push(&name, answer(&[1], 1));
        script.push(&name, answer(&[2], 1)); // t = 1 s: the callback panics
        for _ in 0..10 {
            script.push(&name, answer(&[3], 1)); // t = 2 s on: to be applied
        }
        let discovery = Discovery::new(Arc::clone(&script)).name(name);
        let found = discovery.resolve().await;
        let seen: Seen = Arc::default();
        let log = Arc::clone(&seen);
        let watch = discovery.watch(found, move |endpoints: &[Endpoint]| {
            let addrs: Vec<SocketAddr> = endpoints.iter().map(|e| e.addr).collect();
            // A user's mapping, a backend's Eq or Hash (Live::replace resumes its panic).
            assert_ne!(addrs, [at(2)], "a panic in the callback");
            log.lock().push(addrs);
            Ok::<(), String>(())
        });
        tokio::time::sleep(Duration::from_millis(5_500)).await;
        assert_eq!(
            *seen.lock(),
            [vec![at(3)]],
            "the watch went on after the panic"
        );
        assert!(watch.stats().lookups >= 5, "{:?}", watch.stats());
    });
}

#[test]
fn a_watch_asks_exactly_its_discoverys_names() {
    paused().block_on(async {
        let script = Arc::new(Script::default());
        let a: DnsName = "a.test:80".parse().expect("a name");
        let b: DnsName = "b.test:80".parse().expect("a name");
        for _ in 0..30 {
            script.push(&a, answer(&[1], 1));
            script.push(&b, answer(&[2], 1));
        }
        // A name added between the first round and the watch.
        let only_a = Discovery::new(Arc::clone(&script)).name(a.clone());
        let found = only_a.resolve().await;
        let watch = only_a
            .clone()
            .name(b.clone())
            .watch(found, |_: &[Endpoint]| Ok::<(), String>(()));
        tokio::time::sleep(Duration::from_millis(5_500)).await;
        drop(watch);
        assert!(!script.asked(&b).is_empty(), "b.test is never asked");
        // A round of more names than the watch's discovery has.
        let both = Discovery::new(Arc::clone(&script)).name(a.clone()).name(b);
        let found = both.resolve().await;
        let before = script.asked(&a).len();
        let _watch = only_a.watch(found, |_: &[Endpoint]| Ok::<(), String>(()));
        tokio::time::sleep(Duration::from_millis(5_500)).await;
        let after = script.asked(&a).len();
        assert!(
            after >= before + 5,
            "a.test asked {} times in 5.5 s: the task panicked",
            after - before
        );
    });
}

#[test]
fn an_unbounded_maximum_ttl_does_not_panic() {
    paused().block_on(async {
        let script = Arc::new(Script::default());
        let name: DnsName = "web.test:80".parse().expect("a name");
        // A registry's "valid until further notice".
        script.push(
            &name,
            Ok(Resolution::new([Endpoint::new(at(1))], Duration::MAX)),
        );
        let discovery = Discovery::new(Arc::clone(&script))
            .name(name)
            .ttl_bounds(Duration::from_secs(1), Duration::MAX)
            .expect("accepted bounds: no maximum");
        let found = discovery.resolve().await;
        assert_eq!(found.endpoints(), [Endpoint::new(at(1))]);
    });
}

#[test]
fn a_watch_started_again_during_an_outage_keeps_what_the_old_one_knew() {
    paused().block_on(async {
        let script = Arc::new(Script::default());
        let a: DnsName = "a.test:80".parse().expect("a name");
        let b: DnsName = "b.test:80".parse().expect("a name");
        script.push(&a, answer(&[1], 1));
        script.push(&a, answer(&[2], 1));
        let old = Discovery::new(Arc::clone(&script)).name(a.clone());
        let found = old.resolve().await;
        let (_, on_change) = recorder();
        let watch = old.clone().watch(found, on_change);
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        assert_eq!(
            watch.last_good(&a).map(|r| r.endpoints().to_vec()),
            Some(vec![Endpoint::new(at(2))])
        );
        // Now every lookup times out; a new watch of a and b starts.
        let new = old.name(b.clone());
        let mut found = new.resolve().await;
        assert!(found.endpoints().is_empty());
        found.keep_last_good(&watch);
        drop(watch);
        assert_eq!(found.endpoints(), [Endpoint::new(at(2))]);
    });
}
