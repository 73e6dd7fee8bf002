//! Memory of a keyed limiter holding 10^6 client addresses, beside
//! governor's keyed limiter on the same quota, counted by a global
//! allocator that tracks the bytes live. Prints one table; run with
//! `cargo bench --bench limit_memory`.
#![allow(missing_docs)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicUsize, Ordering};

use loadbalance::limit::{Capacity, ClientGrouping, KeyedRateLimiter, Quota};

/// The system allocator, counting the bytes live.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call forwards to `System` with the caller's arguments; the
// counter only observes sizes.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // Relaxed: a statistic.
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: forwarded as given.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: forwarded as given.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const KEYS: u32 = 1_000_000;

fn address(i: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(i.wrapping_mul(0x9E37_79B1)))
}

/// Bytes live after `build` and `KEYS` checks of distinct addresses, with
/// the limiter still alive, and the limiter.
fn measure<L>(build: impl FnOnce() -> L, check: impl Fn(&L, IpAddr) -> bool) -> (usize, u32, L) {
    let before = LIVE.load(Ordering::Relaxed);
    let limiter = build();
    let mut allowed = 0;
    for i in 0..KEYS {
        allowed += u32::from(check(&limiter, address(i)));
    }
    let bytes = LIVE.load(Ordering::Relaxed) - before;
    (bytes, allowed, black_box(limiter))
}

fn main() {
    let clients = ClientGrouping::default();
    let quota = Quota::per_second(100)
        .and_then(|q| q.burst(20))
        .expect("valid");
    // Once-per-process state (the time-stamp counter's calibration, the
    // thread's random generator) is not the limiter's: make it first.
    let warm = KeyedRateLimiter::<u32>::new(quota, Capacity::Entries(8)).expect("8 keys");
    black_box(warm.check(&1).is_ok());
    let theirs_quota = governor::Quota::per_second(NonZeroU32::new(100).expect("non-zero"))
        .allow_burst(NonZeroU32::new(20).expect("non-zero"));
    let (ours, ours_allowed, limiter) = measure(
        || KeyedRateLimiter::new(quota, Capacity::Bytes(16 << 20)).expect("16 MiB"),
        |limiter, ip| limiter.check(&clients.key(ip)).is_ok(),
    );
    let (theirs, theirs_allowed, _governor) = measure(
        || governor::RateLimiter::keyed(theirs_quota),
        |limiter, ip| limiter.check_key(&ip).is_ok(),
    );
    let mib = |bytes: usize| bytes as f64 / f64::from(1 << 20);
    println!("keyed limiter memory, {KEYS} distinct IPv4 addresses, one check each");
    println!("| limiter | bytes | MiB | allowed |");
    println!("|---|---:|---:|---:|");
    println!(
        "| loadbalance, Capacity::Bytes(16 MiB) | {ours} | {:.1} | {ours_allowed} |",
        mib(ours)
    );
    println!(
        "| governor 0.10 keyed (DashMap) | {theirs} | {:.1} | {theirs_allowed} |",
        mib(theirs)
    );
    println!("ratio: {:.3}", ours as f64 / theirs as f64);
    let stats = limiter.stats();
    println!(
        "loadbalance held {} keys at the end ({} slots); {} refilled keys made room (exact), {} live keys were evicted",
        stats.keys, stats.capacity, stats.evicted_idle, stats.evicted_live
    );
}
