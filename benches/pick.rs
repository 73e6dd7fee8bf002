//! Per-pick latency: pick plus guard drop, every algorithm in both forms,
//! on one thread and on two threads sharing one balancer, beside the
//! hardware baselines a pick is made of (an atomic increment, a guard's
//! increment and decrement, a mutex, a SipHash).
#![allow(missing_docs)]

use std::hash::Hasher;
use std::hint::black_box;
use std::net::Ipv6Addr;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use criterion::{
    BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main,
};
use loadbalance::{
    Algorithm, Backend, Balancer, BuildError, Context, Live, Pool, ProbingOptions, lockfree,
};
use parking_lot::Mutex;
use siphasher::sip::SipHasher13;

const SIZES: [usize; 4] = [4, 64, 1024, 4096];

#[path = "support/matrix.rs"]
mod matrix;

/// Every balancer over `n` backends `0..n`, named `algorithm/form`.
fn balancers(n: usize) -> Vec<(&'static str, matrix::Boxed<usize>)> {
    matrix::builders()
        .into_iter()
        .map(|(name, build)| {
            let lb = build((0..n).collect(), matrix::weights(n));
            (name, lb.expect("benchmark backends are valid"))
        })
        .collect()
}

/// One pick and its guard's drop. Hashing balancers get a different client
/// each time, so they are not measured on one hot table entry.
#[inline]
fn pick_once(lb: &dyn Balancer<usize>, hashing: bool, client: &mut u32) -> Option<usize> {
    if hashing {
        *client = client.wrapping_add(0x9E37_79B9);
        let ctx = Context::from_addr(IpAddr::V4(Ipv4Addr::from(*client)));
        lb.pick(&ctx).ok().map(|guard| guard.index())
    } else {
        lb.pick(&Context::new()).ok().map(|guard| guard.index())
    }
}

fn baselines(c: &mut Criterion) {
    let mut group = c.benchmark_group("baseline");
    group.throughput(Throughput::Elements(1));
    let counter = AtomicUsize::new(0);
    group.bench_function("fetch_add", |b| {
        b.iter(|| black_box(counter.fetch_add(1, Ordering::Relaxed)))
    });
    group.bench_function("fetch_add+fetch_sub", |b| {
        b.iter(|| {
            black_box(counter.fetch_add(1, Ordering::Relaxed));
            black_box(counter.fetch_sub(1, Ordering::Release))
        })
    });
    let mutex = Mutex::new(0usize);
    group.bench_function("mutex_lock_unlock", |b| {
        b.iter(|| {
            let mut guard = mutex.lock();
            *guard += 1;
            black_box(*guard)
        })
    });
    let mut client = 0u32;
    group.bench_function("siphash13_ipv4", |b| {
        b.iter(|| {
            client = client.wrapping_add(0x9E37_79B9);
            let mut hasher = SipHasher13::new_with_key(&[7; 16]);
            hasher.write(&black_box(client).to_be_bytes());
            black_box(hasher.finish())
        })
    });
    group.bench_function("siphash13_ipv6", |b| {
        b.iter(|| {
            client = client.wrapping_add(0x9E37_79B9);
            let addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0)
                | Ipv6Addr::from(u128::from(black_box(client)));
            let mut hasher = SipHasher13::new_with_key(&[7; 16]);
            hasher.write(&addr.octets());
            black_box(hasher.finish())
        })
    });
    group.finish();
}

fn single_thread(c: &mut Criterion) {
    for n in SIZES {
        let mut group = c.benchmark_group(format!("pick/n={n}"));
        group.throughput(Throughput::Elements(1));
        let counter = AtomicUsize::new(0);
        group.bench_function("baseline/fetch_add", |b| {
            b.iter(|| black_box(counter.fetch_add(1, Ordering::Relaxed)))
        });
        for (name, lb) in balancers(n) {
            let hashing = name.contains("hash");
            let mut client = 0u32;
            group.bench_function(BenchmarkId::from_parameter(name), |b| {
                b.iter(|| black_box(pick_once(&*lb, hashing, &mut client)))
            });
        }
        group.finish();
    }
}

/// Time for `iters` picks split over two threads sharing `work`'s target:
/// the inverse of their combined throughput.
fn two_threads(iters: u64, work: impl Fn(u64) + Sync) -> Duration {
    let start = Instant::now();
    std::thread::scope(|s| {
        s.spawn(|| work(iters / 2));
        work(iters - iters / 2);
    });
    start.elapsed()
}

fn two_thread(c: &mut Criterion) {
    for n in SIZES {
        let mut group = c.benchmark_group(format!("pick_2threads/n={n}"));
        group.throughput(Throughput::Elements(1));
        // Flat sampling gives every sample many iterations, so the two
        // thread spawns per sample (tens of microseconds) do not count.
        group.sampling_mode(SamplingMode::Flat).sample_size(20);
        let counter = AtomicUsize::new(0);
        group.bench_function("baseline/fetch_add", |b| {
            b.iter_custom(|iters| {
                two_threads(iters, |k| {
                    for _ in 0..k {
                        black_box(counter.fetch_add(1, Ordering::Relaxed));
                    }
                })
            })
        });
        for (name, lb) in balancers(n) {
            let hashing = name.contains("hash");
            group.bench_function(BenchmarkId::from_parameter(name), |b| {
                b.iter_custom(|iters| {
                    two_threads(iters, |k| {
                        let mut client = k as u32; // threads hash different clients
                        for _ in 0..k {
                            black_box(pick_once(&*lb, hashing, &mut client));
                        }
                    })
                })
            });
        }
        group.finish();
    }
}

/// Least-connections when nothing ties: backend 0 idle and every other
/// holding one guard, so each pick compares every count (the figures above
/// have every backend tie, which adds the tie-break's pass).
fn least_conn_one_idle(c: &mut Criterion) {
    let n = 1024;
    let mut group = c.benchmark_group(format!("least_conn_one_idle/n={n}"));
    group.throughput(Throughput::Elements(1));
    let counter = AtomicUsize::new(0);
    group.bench_function("baseline/fetch_add", |b| {
        b.iter(|| black_box(counter.fetch_add(1, Ordering::Relaxed)))
    });
    for (name, lb) in balancers(n) {
        // The full scans only: random least-conn does not always find the
        // one idle backend, by design.
        if !(name.starts_with("least_conn") || name.starts_with("weighted_least_conn")) {
            continue;
        }
        // Picks go to idle backends while any is idle: keep every guard but
        // backend 0's until each other backend holds one.
        let mut held = Vec::new();
        while held.len() < n - 1 {
            let guard = lb.pick(&Context::new()).expect("no limits are set");
            if guard.index() != 0 {
                held.push(guard);
            }
        }
        group.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| black_box(pick_once(&*lb, false, &mut 0)))
        });
        assert_eq!(lb.pick(&Context::new()).map(|guard| guard.index()), Ok(0));
    }
    group.finish();
}

/// The probing pick with its pool full of answers (the default 8, and
/// Prequal's 16), each steering up to 255 picks, beside peak EWMA's pick:
/// what the goal compares. Every 1,000 picks the bench answers 16
/// fresh probes (about 0.5 ns a pick amortised), so the pool never runs
/// dry and the pick never falls back.
fn probing_answered(c: &mut Criterion) {
    for n in [4, 64, 1024] {
        let mut group = c.benchmark_group(format!("probing_answered/n={n}"));
        group.throughput(Throughput::Elements(1));
        let peak = lockfree::PeakEwma::new(0..n).expect("valid");
        group.bench_function("peak_ewma/lockfree", |b| {
            b.iter(|| black_box(pick_once(&peak, false, &mut 0)))
        });
        for pool in [8, 16] {
            let options = ProbingOptions::default().probes(8).uses(255).pool(pool);
            let probing =
                lockfree::Probing::with_options((0..n).map(|i| (i, 1)), options).expect("valid");
            let answer = |lb: &lockfree::Probing<usize>| {
                for probe in lb.probes().into_iter().chain(lb.probes()) {
                    let load = *probe.backend() as u32 % 7;
                    probe.answer(load, Duration::from_millis(u64::from(1 + load)));
                }
            };
            group.bench_function(format!("probing/lockfree/pool={pool}"), |b| {
                let mut picks = 0u32;
                b.iter(|| {
                    picks += 1;
                    if picks % 1_000 == 0 {
                        answer(&probing);
                    }
                    black_box(pick_once(&probing, false, &mut 0))
                })
            });
        }
        group.finish();
    }
}

/// Balancers by name.
type Named = Vec<(String, matrix::Boxed<usize>)>;

/// Builds a static balancer over `(backend, weight)` pairs.
type BuildStatic<B> = fn(Vec<(usize, u32)>) -> Result<B, BuildError>;

/// The lock-free balancers three ways over the same backends: static, live
/// (one snapshot load more), and live with a `max_conns` limit on every
/// backend, which sends each pick down the slow path that checks
/// availability and takes a slot.
fn live_balancers(n: usize) -> Result<Named, BuildError> {
    fn three<B>(
        name: &str,
        weighted: bool,
        n: usize,
        build: BuildStatic<B>,
    ) -> Result<Named, BuildError>
    where
        B: loadbalance::Assemble<Value = usize> + Balancer<usize> + 'static,
    {
        let weights = if weighted {
            matrix::weights(n)
        } else {
            vec![1; n]
        };
        let pairs: Vec<(usize, u32)> = (0..n).zip(weights).collect();
        let backends = |limit: u32| {
            pairs
                .iter()
                .map(move |&(id, weight)| Backend::new(id).weight(weight).max_conns(limit))
        };
        Ok(vec![
            (format!("{name}/static"), Box::new(build(pairs.clone())?)),
            (
                format!("{name}/live"),
                Box::new(Live::<B>::new(backends(0))?),
            ),
            (
                format!("{name}/live_max_conns"),
                Box::new(Live::<B>::new(backends(u32::MAX))?),
            ),
        ])
    }
    let mut all = three::<lockfree::RoundRobin<usize>>("round_robin", false, n, |b| {
        lockfree::RoundRobin::new(b.into_iter().map(|(id, _)| id))
    })?;
    all.extend(three::<lockfree::WeightedRoundRobin<usize>>(
        "weighted_round_robin",
        true,
        n,
        lockfree::WeightedRoundRobin::new,
    )?);
    all.extend(three::<lockfree::LeastConn<usize>>(
        "least_conn",
        false,
        n,
        |b| lockfree::LeastConn::new(b.into_iter().map(|(id, _)| id)),
    )?);
    all.extend(three::<lockfree::LeastConn<usize>>(
        "weighted_least_conn",
        true,
        n,
        lockfree::LeastConn::weighted,
    )?);
    all.extend(three::<lockfree::IpHash<usize>>(
        "ip_hash",
        true,
        n,
        lockfree::IpHash::weighted,
    )?);
    Ok(all)
}

/// What a live set costs a pick: the same balancers static, live, and live
/// on the slow path, beside the same `fetch_add` baseline.
fn live(c: &mut Criterion) {
    for n in [4, 1024] {
        let mut group = c.benchmark_group(format!("live/n={n}"));
        group.throughput(Throughput::Elements(1));
        let counter = AtomicUsize::new(0);
        group.bench_function("baseline/fetch_add", |b| {
            b.iter(|| black_box(counter.fetch_add(1, Ordering::Relaxed)))
        });
        let balancers = live_balancers(n).expect("benchmark backends are valid");
        for (name, lb) in balancers {
            let hashing = name.contains("hash");
            let mut client = 0u32;
            group.bench_function(BenchmarkId::from_parameter(&name), |b| {
                b.iter(|| black_box(pick_once(&*lb, hashing, &mut client)))
            });
        }
        group.finish();
    }
}

/// One pick and drop through a static call (no `dyn`): what the pool's
/// dispatch adds is measured against the live type's own pick.
fn direct<L: Balancer<usize>>(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    lb: &L,
    hashing: bool,
) {
    let mut client = 0u32;
    group.bench_function(BenchmarkId::from_parameter(name), |b| {
        b.iter(|| {
            client = client.wrapping_add(0x9E37_79B9);
            let ctx = if hashing {
                Context::from_addr(IpAddr::V4(Ipv4Addr::from(client)))
            } else {
                Context::new()
            };
            black_box(lb.pick(&ctx).ok().map(|guard| guard.index()))
        })
    });
}

/// The pool against the live type it runs, both called directly: its
/// bare pick (`Pool::pick_guard`, one `match` more), and its timed pick
/// (`Pool::pick`, which also reads the clock).
fn pool(c: &mut Criterion) {
    fn one<B>(
        group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
        name: &str,
        algorithm: Algorithm,
        n: usize,
    ) where
        B: loadbalance::Assemble<Value = usize> + Balancer<usize> + 'static,
        B::Options: Default,
    {
        let hashing = algorithm.keyed();
        let backends = || (0..n).map(|i| Backend::new(i).weight(matrix::weights(n)[i]));
        let live = Live::<B>::new(backends()).expect("valid");
        direct(group, &format!("{name}/live"), &live, hashing);
        let pool = Pool::builder(algorithm).build(backends()).expect("valid");
        direct(group, &format!("{name}/pool"), &pool, hashing);
        let mut client = 0u32;
        group.bench_function(
            BenchmarkId::from_parameter(format!("{name}/pool_timed")),
            |b| {
                b.iter(|| {
                    client = client.wrapping_add(0x9E37_79B9);
                    let ctx = if hashing {
                        Context::from_addr(IpAddr::V4(Ipv4Addr::from(client)))
                    } else {
                        Context::new()
                    };
                    black_box(pool.pick(&ctx).ok().map(|picked| picked.guard().index()))
                })
            },
        );
    }
    for n in [4, 1024] {
        let mut group = c.benchmark_group(format!("pool/n={n}"));
        group.throughput(Throughput::Elements(1));
        one::<lockfree::WeightedRoundRobin<usize>>(
            &mut group,
            "round_robin",
            Algorithm::RoundRobin,
            n,
        );
        one::<lockfree::LeastConn<usize>>(&mut group, "least_conn", Algorithm::LeastConn, n);
        one::<lockfree::Random<usize>>(
            &mut group,
            "random",
            Algorithm::Random(Default::default()),
            n,
        );
        one::<lockfree::IpHash<usize>>(
            &mut group,
            "consistent_hash",
            Algorithm::ConsistentHash(Default::default()),
            n,
        );
        group.finish();
    }
}

/// What building costs: the hash slot table at its default and a large
/// size, and one structural update of a live set (a re-weight, which
/// rebuilds the snapshot: for hashing, its table).
fn builds(c: &mut Criterion) {
    let mut group = c.benchmark_group("build");
    group.sample_size(10).sampling_mode(SamplingMode::Flat);
    for bits in [16u8, 20] {
        for n in [4u32, 1024] {
            let options = loadbalance::HashOptions::default().table_bits(bits);
            group.bench_function(format!("hash_table/bits={bits}/n={n}"), |b| {
                b.iter(|| {
                    let backends = (0..n).map(|i| (i, 1 + i % 3));
                    black_box(lockfree::IpHash::with_options(backends, options.clone()))
                })
            });
        }
    }
    for n in [4u32, 1024] {
        let hashed = Live::<lockfree::IpHash<u32>>::new((0..n).map(Backend::new))
            .expect("benchmark backends are valid");
        let plain = Live::<lockfree::RoundRobin<u32>>::new((0..n).map(Backend::new))
            .expect("benchmark backends are valid");
        let mut weight = 1;
        group.bench_function(format!("live_set_weight/ip_hash/n={n}"), |b| {
            b.iter(|| {
                weight = weight % 7 + 1;
                hashed.set_weight(&0, weight).expect("valid weight")
            })
        });
        group.bench_function(format!("live_set_weight/round_robin/n={n}"), |b| {
            b.iter(|| {
                weight = weight % 7 + 1;
                plain.set_weight(&0, weight).expect("valid weight")
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = baselines, single_thread, two_thread, least_conn_one_idle, probing_answered, live, pool, builds
}
criterion_main!(benches);
