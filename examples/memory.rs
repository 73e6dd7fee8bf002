//! Bytes each balancer holds per backend, measured by a global allocator
//! that tracks live heap bytes, for n = 4, 64, 1024 and 4096 with the
//! benchmark's weights (1..=100 from a fixed seed).
//!
//! Run with `cargo run --release --example memory`.
// A global allocator cannot be written without `unsafe`; the library itself
// forbids it.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicIsize, Ordering};

use loadbalance::BuildError;

/// Live heap bytes of the whole process.
static LIVE: AtomicIsize = AtomicIsize::new(0);

struct Tracking;

// SAFETY: every call is forwarded unchanged to the system allocator; the
// only addition is an atomic counter of live bytes.
unsafe impl GlobalAlloc for Tracking {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: the caller upholds `alloc`'s contract, passed on as is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Tracking = Tracking;

#[path = "../benches/support/matrix.rs"]
mod matrix;

/// Heap bytes `build` leaves allocated: the entries holding the values, the
/// counts and the algorithm state.
fn held_bytes<T>(
    build: impl FnOnce() -> Result<matrix::Boxed<T>, BuildError>,
) -> Result<(isize, matrix::Boxed<T>), BuildError> {
    let before = LIVE.load(Ordering::Relaxed);
    let lb = build()?;
    Ok((LIVE.load(Ordering::Relaxed) - before, lb))
}

fn main() -> Result<(), BuildError> {
    println!(
        "heap bytes per backend (T = SocketAddr, {} bytes inline)\n",
        size_of::<SocketAddr>()
    );
    println!(
        "{:<32} {:>10} {:>10} {:>10} {:>10}",
        "balancer", "n = 4", "n = 64", "n = 1024", "n = 4096"
    );
    for (name, build) in matrix::builders::<SocketAddr>() {
        let mut cells = Vec::new();
        for n in [4usize, 64, 1024, 4096] {
            let addrs = || {
                (0..n)
                    .map(|i| SocketAddr::from(([10, 0, (i >> 8) as u8, i as u8], 80)))
                    .collect()
            };
            let (bytes, lb) = held_bytes(|| build(addrs(), matrix::weights(n)))?;
            cells.push(format!("{:>10.1}", bytes as f64 / n as f64));
            drop(lb);
        }
        println!("{name:<32} {}", cells.join(" "));
    }
    for n in [4usize, 64, 1024, 4096] {
        let w = matrix::weights(n);
        let gcd = w.iter().fold(0u32, |g, &x| gcd(g, x));
        let period = w.iter().map(|&x| u64::from(x)).sum::<u64>() / u64::from(gcd);
        println!(
            "\nweighted_round_robin/lockfree at n = {n}: period {period} picks, schedule {} bytes in two buffers{}",
            2 * 2 * period,
            if period as usize <= loadbalance::lockfree::WeightedRoundRobin::<u32>::SCHEDULE_LIMIT {
                ""
            } else {
                " (past the bound: windowed)"
            }
        );
    }
    Ok(())
}

fn gcd(mut a: u32, mut b: u32) -> u32 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}
