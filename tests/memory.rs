//! 10^6 distinct IPv4 clients through a keyed limiter capped at 16 MiB:
//! a counting global allocator shows the bytes live never pass the cap,
//! from the build through every check, and the limiter still decides
//! right: refilled keys make room exactly, and every client gets its burst.
//!
//! The allocator counts every byte the measuring thread holds, so nothing
//! else may allocate on it while it measures: this binary has no test
//! harness (`harness = false`), and `main` runs each measurement in turn on
//! its own thread, switching the count on for the measurement alone (a
//! harness thread that ran a measuring test went on allocating, uncounted
//! only by luck, while the next test measured).
// A global allocator cannot be written without `unsafe`; the library itself
// forbids it.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use loadbalance::limit::{Capacity, ClientGrouping, KeyedRateLimiter, Quota};
use loadbalance::{Clock, ManualClock};

/// Bytes live, and the most live since the last reset, allocated by
/// the thread that measures.
static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static MEASURED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

fn measured() -> bool {
    // `try_with`: the thread-local may be gone while the thread exits.
    MEASURED.try_with(std::cell::Cell::get).unwrap_or(false)
}

struct Counting;

// SAFETY: every call is forwarded unchanged to the system allocator; the
// only addition is two counters, which do not allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if measured() {
            // Relaxed: statistics; one thread measures at a time.
            let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(live, Ordering::Relaxed);
        }
        // SAFETY: the caller upholds `alloc`'s contract, passed on as is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if measured() {
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        }
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Runs `measure` on a thread of its own with the count on, and switches
/// it off before the thread does anything else; a failed assertion fails
/// the run.
fn measuring(name: &str, measure: fn()) {
    eprint!("{name} ... ");
    let outcome = std::thread::spawn(move || {
        MEASURED.with(|on| on.set(true));
        let outcome = std::panic::catch_unwind(measure);
        MEASURED.with(|on| on.set(false));
        outcome.is_ok()
    })
    .join()
    .unwrap_or(false);
    eprintln!("{}", if outcome { "ok" } else { "FAILED" });
    if !outcome {
        std::process::exit(1);
    }
}

fn main() {
    measuring(
        "a_million_clients_stay_under_sixteen_mebibytes",
        a_million_clients_stay_under_sixteen_mebibytes,
    );
    measuring(
        "an_over_aligned_clock_counts_its_padding",
        an_over_aligned_clock_counts_its_padding,
    );
}

const CAP: usize = 16 << 20;
const CLIENTS: u32 = 1_000_000;

fn client(i: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(i.wrapping_mul(0x9E37_79B1)))
}

fn a_million_clients_stay_under_sixteen_mebibytes() {
    let clients = ClientGrouping::default();
    let quota = Quota::per_second(10)
        .and_then(|q| q.burst(2))
        .expect("valid");
    let clock = Arc::new(ManualClock::new());
    // Once-per-thread state (the random generator that keys the hash) is
    // not the limiter's: make it first.
    let warm = KeyedRateLimiter::<u32>::new(quota, Capacity::Entries(8)).expect("8 keys");
    drop(warm);
    let before = LIVE.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    let limiter = Box::new(
        KeyedRateLimiter::with_clock(quota, Capacity::Bytes(CAP), Arc::clone(&clock))
            .expect("16 MiB"),
    );
    // Round 1: each client twice at once, 1 us apart (1 s in all, so the
    // earliest clients refill, 100 ms an interval, while the last arrive).
    let mut first = 0u64;
    let mut second = 0u64;
    for i in 0..CLIENTS {
        let key = clients.key(client(i));
        first += u64::from(limiter.check(&key).is_ok_and(|a| a.remaining == 1));
        second += u64::from(limiter.check(&key).is_ok_and(|a| a.remaining == 0));
        assert!(
            limiter.check(&key).is_err(),
            "client {i} got a third request"
        );
        clock.advance(Duration::from_micros(1));
    }
    assert_eq!((first, second), (u64::from(CLIENTS), u64::from(CLIENTS)));
    let stats = limiter.stats();
    // Every new client took an empty slot or evicted a key.
    assert!(stats.capacity >= 1_000_000, "{stats:?}");
    assert!(stats.keys <= stats.capacity);
    assert_eq!(
        stats.keys as u64 + stats.evicted_idle + stats.evicted_live,
        u64::from(CLIENTS),
        "{stats:?}"
    );
    // Only clients of the last 200 ms (two intervals: their TAT is still
    // ahead) are live, about 200,000 over 131,071 sets of 8: a set is
    // rarely full of them (about 160 evictions a run, by the hash's luck).
    assert!(stats.evicted_idle >= 50_000, "{stats:?}");
    assert!(stats.evicted_live <= 2_000, "{stats:?}");
    // Round 2, after everyone refilled: the whole burst for every client,
    // evicted or not.
    clock.advance(Duration::from_secs(1));
    let mut full = 0u64;
    for i in (0..CLIENTS).step_by(7) {
        full += u64::from(
            limiter
                .check(&clients.key(client(i)))
                .is_ok_and(|a| a.remaining == 1),
        );
    }
    assert_eq!(full, u64::from(CLIENTS.div_ceil(7)));
    let peak = PEAK.load(Ordering::Relaxed) - before;
    assert!(peak <= CAP, "peak {peak} bytes over the {CAP}-byte cap");
    assert!(limiter.stats().memory <= CAP);
    eprintln!(
        "peak {peak} bytes for {CLIENTS} clients; {:?}",
        limiter.stats()
    );
}

/// A clock aligned past the two counts of its `Arc` is counted with the
/// padding: the limiter stays under a cap of exactly its own bytes plus
/// 1,000 sets.
fn an_over_aligned_clock_counts_its_padding() {
    #[derive(Debug, Default)]
    #[repr(align(256))]
    struct PaddedClock(ManualClock);
    impl Clock for PaddedClock {
        fn now(&self) -> Duration {
            self.0.now()
        }
    }
    let quota = Quota::per_second(10).expect("valid");
    drop(KeyedRateLimiter::<u32>::new(quota, Capacity::Entries(8)).expect("8 keys"));
    let own = std::mem::size_of::<KeyedRateLimiter<u32>>() + 16 + 256;
    let cap = own + 128 * 1000;
    let before = LIVE.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    let limiter = Box::new(
        KeyedRateLimiter::<u32>::with_clock(quota, Capacity::Bytes(cap), PaddedClock::default())
            .expect("fits"),
    );
    let peak = PEAK.load(Ordering::Relaxed) - before;
    assert!(limiter.stats().memory <= cap);
    assert!(peak <= cap, "peak {peak} bytes over the {cap}-byte cap");
}
