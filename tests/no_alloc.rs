//! 10,000 picks and drops of every lock-free balancer allocate nothing:
//! a counting global allocator watches this thread while they run.
// A global allocator cannot be written without `unsafe`; the library itself
// forbids it.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::net::{IpAddr, Ipv4Addr};

use loadbalance::{lockfree, Balancer, Context};

thread_local! {
    /// Allocations made by this thread while `COUNTING` is set.
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
    static COUNTING: Cell<bool> = const { Cell::new(false) };
}

struct Counting;

// SAFETY: every call is forwarded unchanged to the system allocator; the
// only addition is a thread-local counter, which does not allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: the caller upholds `alloc`'s contract, passed on as is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: the caller upholds `realloc`'s contract, passed on as is.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

fn count() {
    // `try_with`: the thread-locals may be gone while the thread exits.
    let counting = COUNTING.try_with(Cell::get).unwrap_or(false);
    if counting {
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Allocations made by `work` on this thread.
fn allocations(work: impl FnOnce()) -> usize {
    ALLOCATIONS.with(|n| n.set(0));
    COUNTING.with(|c| c.set(true));
    work();
    COUNTING.with(|c| c.set(false));
    ALLOCATIONS.with(Cell::get)
}

#[test]
fn lock_free_picks_do_not_allocate() {
    let weights = (0..64u32).map(|i| (i, 1 + i % 100));
    let balancers: Vec<(&str, Box<dyn Balancer<u32>>)> = vec![
        (
            "round_robin",
            Box::new(lockfree::RoundRobin::new(0..64u32).expect("valid")),
        ),
        (
            "weighted_round_robin",
            Box::new(lockfree::WeightedRoundRobin::new(weights.clone()).expect("valid")),
        ),
        (
            "least_conn",
            Box::new(lockfree::LeastConn::new(0..64u32).expect("valid")),
        ),
        (
            "weighted_least_conn",
            Box::new(lockfree::LeastConn::weighted(weights.clone()).expect("valid")),
        ),
        (
            "ip_hash",
            Box::new(lockfree::IpHash::weighted(weights.clone()).expect("valid")),
        ),
        (
            "weighted_random",
            Box::new(lockfree::Random::weighted(weights.clone()).expect("valid")),
        ),
        (
            "random_least_conn",
            Box::new(lockfree::RandomLeastConn::weighted(weights.clone()).expect("valid")),
        ),
        (
            "peak_ewma",
            Box::new(lockfree::PeakEwma::weighted(weights).expect("valid")),
        ),
    ];
    for (name, lb) in &balancers {
        let mut held = Vec::with_capacity(16);
        let made = allocations(|| {
            for i in 0..10_000u32 {
                let ctx =
                    Context::from_addr(IpAddr::V4(Ipv4Addr::from(i.wrapping_mul(2_654_435_761))));
                let guard = lb.pick(&ctx).expect("pick");
                // Hold some guards so that least-connections sees real loads.
                if held.len() < held.capacity() && i % 3 == 0 {
                    held.push(guard);
                } else if i % 7 == 0 {
                    held.clear();
                }
            }
            held.clear();
        });
        assert_eq!(made, 0, "{name} allocated {made} times in 10,000 picks");
    }
}

#[test]
fn the_counter_sees_allocations() {
    let made = allocations(|| drop(std::hint::black_box(vec![1u8; 100])));
    assert_eq!(made, 1);
}

/// Issue 11 item 9: past `SCHEDULE_LIMIT` the lock-free smooth weighted
/// round-robin computes its sequence in windows; picks still allocate
/// nothing after warm-up, windows crossed included. Weights 1..=1024 over
/// 1,024 backends (windows of 1,024 picks) over 10,000 picks; weights
/// [1000000, 1] (windows of 2^19 picks) over 2,000,000 picks, since 10,000
/// would not cross a window.
#[test]
fn windowed_smooth_weighted_round_robin_picks_do_not_allocate() {
    let cases: [(&str, Vec<u32>, u32); 2] = [
        ("weights 1..=1024", (1..=1024).collect(), 10_000),
        ("weights [1000000, 1]", vec![1_000_000, 1], 2_000_000),
    ];
    let mut allocating = Vec::new();
    for (name, weights, picks) in cases {
        let lb = lockfree::WeightedRoundRobin::new((0u32..).zip(weights)).expect("valid");
        assert!(!lb.is_precomputed(), "{name}: the windowed form");
        let ctx = Context::new();
        for _ in 0..1_000 {
            drop(lb.pick(&ctx).expect("pick"));
        }
        let made = allocations(|| {
            for _ in 0..picks {
                drop(lb.pick(&ctx).expect("pick"));
            }
        });
        if made > 0 {
            allocating.push(format!("{name}: {made} allocations in {picks} picks"));
        }
    }
    assert!(allocating.is_empty(), "{}", allocating.join("; "));
}
