//! A check stalled between reading the clock and deciding: a clock that
//! blocks one thread after its reading, while other threads spend the
//! budget and time moves on. The stalled check then decides on a stale
//! time, which may only make it stricter: the admitted total never passes
//! the burst plus one per interval elapsed.

use std::net::IpAddr;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use loadbalance::limit::{Capacity, FlowControl, KeyedRateLimiter, Quota, RateLimiter, Reason};
use loadbalance::{Clock, ManualClock};

/// The thread to stall, the channel saying it read the time, and the one
/// that lets it go.
type Stall = (thread::ThreadId, Sender<()>, Receiver<()>);

/// A manual clock whose next reading, in the thread that arms it, waits
/// for a release after the time was read.
#[derive(Debug)]
struct StallingClock {
    time: ManualClock,
    stall: Mutex<Option<Stall>>,
}

impl StallingClock {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            time: ManualClock::new(),
            stall: Mutex::new(None),
        })
    }

    /// Arms a stall for `thread`; returns (stalled, release): the first
    /// signals when the thread has read the time, the second lets it go.
    fn arm(&self, thread: thread::ThreadId) -> (Receiver<()>, Sender<()>) {
        let (read_tx, read_rx) = channel();
        let (release_tx, release_rx) = channel();
        *self.stall.lock().expect("no panic") = Some((thread, read_tx, release_rx));
        (read_rx, release_tx)
    }
}

impl Clock for StallingClock {
    fn now(&self) -> Duration {
        let now = self.time.now();
        let mut stall = self.stall.lock().expect("no panic");
        if stall
            .as_ref()
            .is_some_and(|(id, _, _)| *id == thread::current().id())
        {
            let (_, read, release) = stall.take().expect("armed");
            drop(stall);
            read.send(()).expect("the test waits");
            release.recv().expect("the test releases");
        }
        now
    }
}

/// Runs `stalled` on a thread stalled after its clock reading; runs
/// `meanwhile` while it waits; returns the stalled call's result.
fn with_stalled<T: Send + 'static>(
    clock: &Arc<StallingClock>,
    stalled: impl FnOnce() -> T + Send + 'static,
    meanwhile: impl FnOnce(),
) -> T {
    let (go_tx, go_rx) = channel::<()>();
    let handle = thread::spawn(move || {
        go_rx.recv().expect("armed");
        stalled()
    });
    let (read, release) = clock.arm(handle.thread().id());
    go_tx.send(()).expect("thread waits");
    read.recv().expect("the stalled thread read the time");
    meanwhile();
    release.send(()).expect("the stalled thread waits");
    handle.join().expect("no panic")
}

fn quota() -> Quota {
    // One per 10 ms, burst 2.
    Quota::new(1, Duration::from_millis(10))
        .and_then(|q| q.burst(2))
        .expect("valid")
}

#[test]
fn a_stalled_direct_check_cannot_overspend() {
    let clock = StallingClock::new();
    let limiter = Arc::new(RateLimiter::with_clock(quota(), Arc::clone(&clock)));
    let stalled = {
        let limiter = Arc::clone(&limiter);
        move || limiter.check()
    };
    let mut admitted = 0;
    let result = with_stalled(&clock, stalled, || {
        // At 0: the burst. At 10 ms: one more, the last the quota allows.
        admitted += u32::from(limiter.check().is_ok()) + u32::from(limiter.check().is_ok());
        clock.time.advance(Duration::from_millis(10));
        admitted += u32::from(limiter.check().is_ok());
    });
    assert_eq!(admitted, 3);
    // Decided at its stale time 0 against a schedule already at 30 ms.
    assert_eq!(
        result.map_err(|d| d.retry_after),
        Err(Duration::from_millis(20))
    );
}

#[test]
fn a_stalled_keyed_check_cannot_overspend() {
    let clock = StallingClock::new();
    let limiter = Arc::new(
        KeyedRateLimiter::<u32>::with_clock(quota(), Capacity::Entries(8), Arc::clone(&clock))
            .expect("8 keys"),
    );
    let stalled = {
        let limiter = Arc::clone(&limiter);
        move || limiter.check(&1)
    };
    let mut admitted = 0;
    let result = with_stalled(&clock, stalled, || {
        admitted += u32::from(limiter.check(&1).is_ok()) + u32::from(limiter.check(&1).is_ok());
        clock.time.advance(Duration::from_millis(10));
        admitted += u32::from(limiter.check(&1).is_ok());
        // Other keys fill the set meanwhile: key 1 stays (live), none lost.
        for key in 2..9 {
            assert!(limiter.check(&key).is_ok());
        }
    });
    assert_eq!(admitted, 3);
    assert_eq!(
        result.map_err(|d| d.retry_after),
        Err(Duration::from_millis(20))
    );
    assert_eq!(limiter.stats().evicted_live, 0);
}

/// The decision: a check stalled after its clock reading while the same
/// client is banned meanwhile; the stalled check is refused (it reads the
/// ban, not a stale bucket).
#[test]
fn a_stalled_decision_sees_a_ban_set_meanwhile() {
    let clock = StallingClock::new();
    let flow = Arc::new(
        FlowControl::builder()
            .rate(quota())
            .ban(
                loadbalance::limit::BanRule::new(
                    1,
                    Duration::from_secs(1),
                    Duration::from_secs(60),
                )
                .expect("valid"),
            )
            .clock(Arc::clone(&clock))
            .build()
            .expect("valid"),
    );
    let client: IpAddr = "192.0.2.1".parse().expect("an address");
    let stalled = {
        let flow = Arc::clone(&flow);
        move || flow.check(client).map(|_| ()).map_err(|r| r.reason())
    };
    let result = with_stalled(&clock, stalled, || {
        assert!(flow.check(client).is_ok());
        assert!(flow.check(client).is_ok());
        // The first refusal bans (one strike).
        let refused = flow.check(client).expect_err("over the rate");
        assert_eq!(refused.reason(), Reason::Banned);
        clock.time.advance(Duration::from_millis(500));
    });
    assert_eq!(result, Err(Reason::Banned));
}
