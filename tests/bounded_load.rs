//! Bounded-load hashing: the capacity bound at every pick under random
//! holds, keys that move only while their backend is over capacity, the
//! plain hash while nothing overflows, overflow counts, and concurrent
//! picks whose counts all return to zero.

use std::sync::{Arc, Barrier};
use std::thread;

use loadbalance::{
    locked, lockfree, Backend, Balancer, BuildError, Context, Guard, HashOptions, Live,
    NginxHashOptions, NginxIpHashOptions,
};

const N: usize = 8;
const PERCENT: u32 = 125;

type Boxed = Box<dyn Balancer<String> + Send + Sync>;

fn names() -> Vec<(String, u32)> {
    (0..N).map(|i| (format!("10.0.0.{i}:80"), 1)).collect()
}

/// Every keyed balancer, bounded (`Some(percent)`) or not.
fn keyed(percent: Option<u32>) -> Vec<(&'static str, Boxed)> {
    let hash = percent.map_or(HashOptions::default(), |p| {
        HashOptions::default().bounded_load(p)
    });
    let nginx = percent.map_or(NginxHashOptions::default(), |p| {
        NginxHashOptions::default().bounded_load(p)
    });
    let plain = nginx.clone().consistent(false);
    let ip = percent.map_or(NginxIpHashOptions::default(), |p| {
        NginxIpHashOptions::default().bounded_load(p)
    });
    vec![
        (
            "lockfree hash",
            Box::new(lockfree::IpHash::with_options(names(), hash.clone()).expect("valid")),
        ),
        (
            "locked hash",
            Box::new(locked::IpHash::with_options(names(), hash).expect("valid")),
        ),
        (
            "lockfree nginx consistent",
            Box::new(lockfree::NginxHash::with_options(names(), nginx.clone()).expect("valid")),
        ),
        (
            "locked nginx consistent",
            Box::new(locked::NginxHash::with_options(names(), nginx).expect("valid")),
        ),
        (
            "lockfree nginx hash",
            Box::new(lockfree::NginxHash::with_options(names(), plain).expect("valid")),
        ),
        (
            "lockfree nginx ip_hash",
            Box::new(lockfree::NginxIpHash::with_options(names(), ip.clone()).expect("valid")),
        ),
        (
            "locked nginx ip_hash",
            Box::new(locked::NginxIpHash::with_options(names(), ip).expect("valid")),
        ),
    ]
}

/// Client `k` of a skewed population: a few hot clients send most picks.
fn client(k: u64) -> Context<'static> {
    let octets = (k as u32).wrapping_mul(2_654_435_761).to_be_bytes();
    Context::from_addr(std::net::IpAddr::V4(octets.into()))
}

fn xorshift(mut state: u64) -> impl FnMut() -> u64 {
    move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    }
}

/// `ceil(percent% * mean)` with `total` guards over `N` backends.
fn cap(total: usize) -> usize {
    (PERCENT as usize * total).div_ceil(100 * N)
}

fn actives(lb: &dyn Balancer<String>) -> Vec<usize> {
    (0..lb.len())
        .map(|i| lb.active(i).expect("in range"))
        .collect()
}

/// Under random holds from a skewed set of clients, after every pick no
/// backend holds more than `ceil(c * mean)`, and the overflow counts add up
/// to the picks that left their hash choice.
#[test]
fn no_backend_exceeds_its_capacity_at_any_pick() {
    for (name, lb) in keyed(Some(PERCENT)) {
        let mut next = xorshift(0x9E37_79B9);
        let mut held: Vec<Guard<String>> = Vec::new();
        for _ in 0..20_000 {
            // Hot clients: 0..4 half the time, else one of 10,000.
            let k = if next() % 2 == 0 {
                next() % 4
            } else {
                next() % 10_000
            };
            let guard = lb.pick(&client(k)).expect("pick");
            held.push(guard);
            let actives = actives(&*lb);
            let total: usize = actives.iter().sum();
            let max = *actives.iter().max().expect("backends");
            assert!(
                max <= cap(total),
                "{name}: {max} > ceil(1.25 * {total} / {N}) = {}",
                cap(total)
            );
            if next() % 100 < 45 && !held.is_empty() {
                let at = (next() % held.len() as u64) as usize;
                held.swap_remove(at);
            }
        }
        let overflows: u64 = lb.stats().iter().map(|s| s.overflows).sum();
        assert!(overflows > 0, "{name}: hot clients overflow");
        drop(held);
        assert!(actives(&*lb).iter().all(|&a| a == 0), "{name}");
    }
}

/// While nothing overflows (every guard dropped at once), a bounded
/// balancer is the plain hash: the same backend for every client.
#[test]
fn with_guards_dropped_at_once_it_is_the_plain_hash() {
    for ((name, bounded), (_, plain)) in keyed(Some(PERCENT)).into_iter().zip(keyed(None)) {
        for k in 0..2_000 {
            let a = bounded.pick(&client(k)).expect("pick").index();
            let b = plain.pick(&client(k)).expect("pick").index();
            assert_eq!(a, b, "{name}: client {k}");
        }
        assert!(bounded.stats().iter().all(|s| s.overflows == 0), "{name}");
    }
}

/// A hot key fills its backend to capacity, then spills to one fixed next
/// backend of its own order (the same one at every pick), counted as an
/// overflow of its home; once its home has room again it comes back.
#[test]
fn a_key_moves_only_while_its_backend_is_over_capacity() {
    for (name, lb) in keyed(Some(PERCENT)) {
        let hot = client(7);
        let home = lb.pick(&hot).expect("pick").index();
        let mut held = Vec::new();
        // Other clients' load, spread: one guard on every backend.
        for k in 1_000.. {
            if held.len() == N {
                break;
            }
            let guard = lb.pick(&client(k)).expect("pick");
            if held
                .iter()
                .all(|g: &Guard<String>| g.index() != guard.index())
            {
                held.push(guard);
            }
        }
        let mut hot_guards = Vec::new();
        let spill = loop {
            let guard = lb.pick(&hot).expect("pick");
            if guard.index() != home {
                break guard.index();
            }
            hot_guards.push(guard);
            assert!(hot_guards.len() < 100, "{name}: never spilled");
        };
        // Home is at capacity: the key keeps going to the same next backend.
        for _ in 0..5 {
            assert_eq!(lb.pick(&hot).expect("pick").index(), spill, "{name}");
        }
        assert!(lb.stats()[home].overflows >= 6, "{name}");
        // Room again at home: back at once.
        hot_guards.pop();
        hot_guards.pop();
        assert_eq!(lb.pick(&hot).expect("pick").index(), home, "{name}");
    }
}

#[test]
fn a_factor_of_100_or_less_is_a_typed_error() {
    for percent in [0, 50, 100] {
        let error = Some(BuildError::BoundedLoad { percent });
        let hash = HashOptions::default().bounded_load(percent);
        assert_eq!(lockfree::IpHash::with_options(names(), hash).err(), error);
        let nginx = NginxHashOptions::default().bounded_load(percent);
        assert_eq!(locked::NginxHash::with_options(names(), nginx).err(), error);
        let ip = NginxIpHashOptions::default().bounded_load(percent);
        assert_eq!(
            lockfree::NginxIpHash::with_options(names(), ip).err(),
            error
        );
    }
}

/// Two threads pick at the same moment, round after round, with random
/// holds, on a live bounded balancer; after each round's picks (both
/// threads at a barrier, drops done before the picks) the mutex-backed form keeps the bound exactly, the lock-free
/// one within one guard (the other thread's racing pick may read the same
/// counts). Every count returns to zero, and with nothing held the map is
/// the plain hash again: the total the bound reads is back at 0.
#[test]
fn concurrent_picks_keep_the_bound_and_every_count_returns_to_zero() {
    fn run<B>(name: &str, slack: usize)
    where
        B: loadbalance::Assemble<Value = String, Options = HashOptions>
            + Balancer<String>
            + 'static,
    {
        let lb = Arc::new(
            Live::<B>::builder()
                .options(HashOptions::default().bounded_load(PERCENT))
                .build(
                    names()
                        .into_iter()
                        .map(|(name, w)| Backend::new(name).weight(w)),
                )
                .expect("valid"),
        );
        let barrier = Arc::new(Barrier::new(2));
        let threads: Vec<_> = (0..2u64)
            .map(|t| {
                let (lb, barrier) = (Arc::clone(&lb), Arc::clone(&barrier));
                thread::spawn(move || {
                    let mut next = xorshift(0xDEAD_BEEF + t);
                    let mut held: Vec<Guard<String>> = Vec::new();
                    for _ in 0..20_000 {
                        let k = if next() % 2 == 0 {
                            next() % 4
                        } else {
                            next() % 10_000
                        };
                        held.push(lb.pick(&client(k)).expect("pick"));
                        barrier.wait();
                        if t == 0 {
                            let actives = actives(&*lb);
                            let total: usize = actives.iter().sum();
                            let max = *actives.iter().max().expect("backends");
                            assert!(
                                max <= cap(total) + slack,
                                "{max} > {} + {slack}",
                                cap(total)
                            );
                        }
                        barrier.wait();
                        if next() % 100 < 55 {
                            let at = (next() % held.len() as u64) as usize;
                            held.swap_remove(at);
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("no panic");
        }
        assert!(actives(&*lb).iter().all(|&a| a == 0), "{name}");
        let plain = lockfree::IpHash::with_options(names(), HashOptions::default()).expect("valid");
        for k in 0..1_000 {
            assert_eq!(
                lb.pick(&client(k)).expect("pick").index(),
                plain.pick(&client(k)).expect("pick").index(),
                "{name}: client {k}"
            );
        }
    }
    run::<locked::IpHash<String>>("locked", 0);
    run::<lockfree::IpHash<String>>("lockfree", 1);
}
