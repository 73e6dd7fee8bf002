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

use loadbalance::{locked, lockfree, Balancer, BuildError};

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

/// The benchmark's weights: 1..=100 from a fixed xorshift64 seed.
fn weights(n: usize) -> Vec<u32> {
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    (0..n)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % 100) as u32 + 1
        })
        .collect()
}

type Boxed = Box<dyn Balancer<SocketAddr>>;

/// Heap bytes `build` leaves allocated: the entries holding the values, the
/// counts and the algorithm state.
fn held_bytes(
    build: impl FnOnce() -> Result<Boxed, BuildError>,
) -> Result<(isize, Boxed), BuildError> {
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
    type Build = fn(Vec<SocketAddr>, Vec<u32>) -> Result<Boxed, BuildError>;
    let builders: [(&str, Build); 10] = [
        ("round_robin/lockfree", |a, _| {
            Ok(Box::new(lockfree::RoundRobin::new(a)?))
        }),
        ("round_robin/locked", |a, _| {
            Ok(Box::new(locked::RoundRobin::new(a)?))
        }),
        ("weighted_round_robin/lockfree", |a, w| {
            Ok(Box::new(lockfree::WeightedRoundRobin::new(
                a.into_iter().zip(w),
            )?))
        }),
        ("weighted_round_robin/locked", |a, w| {
            Ok(Box::new(locked::WeightedRoundRobin::new(
                a.into_iter().zip(w),
            )?))
        }),
        ("least_conn/lockfree", |a, _| {
            Ok(Box::new(lockfree::LeastConn::new(a)?))
        }),
        ("least_conn/locked", |a, _| {
            Ok(Box::new(locked::LeastConn::new(a)?))
        }),
        ("weighted_least_conn/lockfree", |a, w| {
            Ok(Box::new(lockfree::LeastConn::weighted(
                a.into_iter().zip(w),
            )?))
        }),
        ("weighted_least_conn/locked", |a, w| {
            Ok(Box::new(locked::LeastConn::weighted(a.into_iter().zip(w))?))
        }),
        ("ip_hash/lockfree", |a, w| {
            Ok(Box::new(lockfree::IpHash::weighted(a.into_iter().zip(w))?))
        }),
        ("ip_hash/locked", |a, w| {
            Ok(Box::new(locked::IpHash::weighted(a.into_iter().zip(w))?))
        }),
    ];
    for (name, build) in builders {
        let mut cells = Vec::new();
        for n in [4usize, 64, 1024, 4096] {
            let addrs = || {
                (0..n)
                    .map(|i| SocketAddr::from(([10, 0, (i >> 8) as u8, i as u8], 80)))
                    .collect()
            };
            let (bytes, lb) = held_bytes(|| build(addrs(), weights(n)))?;
            cells.push(format!("{:>10.1}", bytes as f64 / n as f64));
            drop(lb);
        }
        println!("{name:<32} {}", cells.join(" "));
    }
    for n in [4usize, 64, 1024, 4096] {
        let w = weights(n);
        let gcd = w.iter().fold(0u32, |g, &x| gcd(g, x));
        let period = w.iter().map(|&x| u64::from(x)).sum::<u64>() / u64::from(gcd);
        println!(
            "\nweighted_round_robin/lockfree at n = {n}: period {period} picks, schedule {} bytes{}",
            2 * period,
            if period as usize <= loadbalance::SCHEDULE_LIMIT { "" } else { " (past the bound: windowed)" }
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
