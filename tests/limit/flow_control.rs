//! The one decision per request, exact on a manual clock: lists first,
//! bans after N strikes in a window and for their cooldown, the rate with
//! its retry-after, in-flight limits per client and per server with their
//! permits given back, and the reasons mapped to 403, 429 and 503.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use loadbalance::ManualClock;
use loadbalance::limit::{
    BanRule, Bans, Capacity, ConcurrencyLimit, FlowControl, IpList, Quota, Reason, Strike,
};

fn ip(text: &str) -> IpAddr {
    text.parse().expect("an address")
}

fn reason(
    result: Result<loadbalance::limit::Admission, loadbalance::limit::Rejection>,
) -> Option<Reason> {
    result.err().map(|rejection| rejection.reason())
}

#[test]
fn lists_come_first_and_allow_skips_per_client_limits() {
    let clock = Arc::new(ManualClock::new());
    let flow = FlowControl::builder()
        .deny(IpList::parse(["10.0.0.0/8", "2001:db8:bad::/48"]).expect("valid"))
        .allow(IpList::parse(["10.1.0.0/16", "192.0.2.0/24"]).expect("valid"))
        .rate(
            Quota::per_second(1)
                .and_then(|q| q.burst(1))
                .expect("valid"),
        )
        .clock(Arc::clone(&clock))
        .build()
        .expect("valid");
    // Deny wins over allow; a mapped client is its IPv4 address.
    assert_eq!(reason(flow.check(ip("10.1.2.3"))), Some(Reason::DenyListed));
    assert_eq!(
        reason(flow.check(ip("::ffff:10.9.9.9"))),
        Some(Reason::DenyListed)
    );
    assert_eq!(
        reason(flow.check(ip("2001:db8:bad:1::7"))),
        Some(Reason::DenyListed)
    );
    let denied = flow.check(ip("10.0.0.1")).expect_err("refused");
    assert_eq!((denied.status(), denied.retry_after()), (403, None));
    // Allow-listed: no rate limit, no remaining figure.
    for _ in 0..100 {
        let admitted = flow.check(ip("192.0.2.50")).expect("allow-listed");
        assert_eq!(admitted.remaining(), None);
    }
    // Anyone else: burst 1.
    assert_eq!(
        flow.check(ip("198.51.100.1")).map(|a| a.remaining()),
        Ok(Some(0))
    );
    assert_eq!(
        reason(flow.check(ip("198.51.100.1"))),
        Some(Reason::RateLimited)
    );
}

#[test]
fn rate_limited_requests_get_exact_retry_after() {
    let clock = Arc::new(ManualClock::new());
    let flow = FlowControl::builder()
        .rate(
            Quota::new(3, Duration::from_secs(1))
                .and_then(|q| q.burst(2))
                .expect("valid"),
        )
        .clock(Arc::clone(&clock))
        .build()
        .expect("valid");
    let client = ip("2001:db8::1");
    assert!(flow.check(client).is_ok());
    assert!(flow.check(client).is_ok());
    let refused = flow.check(client).expect_err("refused");
    assert_eq!(refused.status(), 429);
    // One interval: 333,333,334 ns (rounded up), 1 s as a header.
    assert_eq!(
        refused.retry_after(),
        Some(Duration::from_nanos(333_333_334))
    );
    assert_eq!(refused.retry_after_secs(), Some(1));
    assert_eq!(refused.client().to_string(), "2001:db8::/64");
    // Another address of the same /64 is the same client.
    assert_eq!(
        reason(flow.check(ip("2001:db8::ffff"))),
        Some(Reason::RateLimited)
    );
    clock.advance(Duration::from_nanos(333_333_333));
    assert_eq!(reason(flow.check(client)), Some(Reason::RateLimited));
    clock.advance(Duration::from_nanos(1));
    assert!(flow.check(client).is_ok());
}

/// Three refusals within 10 s of the first ban the client for 60 s: it is
/// refused as banned, with the ban's end, without its bucket consulted
/// (which refilled long before), and let in at the end to the nanosecond.
#[test]
fn strikes_ban_for_the_cooldown_exactly() {
    let clock = Arc::new(ManualClock::new());
    let flow = FlowControl::builder()
        .rate(Quota::per_second(1).expect("valid"))
        .ban(BanRule::new(3, Duration::from_secs(10), Duration::from_secs(60)).expect("valid"))
        .clock(Arc::clone(&clock))
        .build()
        .expect("valid");
    let client = ip("198.51.100.7");
    let other = ip("198.51.100.8");
    assert!(flow.check(client).is_ok());
    assert_eq!(reason(flow.check(client)), Some(Reason::RateLimited)); // strike 1
    clock.advance(Duration::from_secs(5));
    assert!(flow.check(client).is_ok());
    assert_eq!(reason(flow.check(client)), Some(Reason::RateLimited)); // strike 2
    clock.advance(Duration::from_millis(4_999));
    // Strike 3, 9.999 s after the first: banned from now.
    assert!(flow.check(client).is_ok());
    let banned = flow.check(client).expect_err("refused");
    assert_eq!((banned.reason(), banned.status()), (Reason::Banned, 403));
    assert_eq!(banned.retry_after(), Some(Duration::from_secs(60)));
    assert!(flow.check(other).is_ok());
    clock.advance(Duration::from_secs(30));
    let still = flow.check(client).expect_err("refused");
    assert_eq!(
        (still.reason(), still.retry_after()),
        (Reason::Banned, Some(Duration::from_secs(30)))
    );
    clock.advance(Duration::from_secs(30) - Duration::from_nanos(1));
    assert_eq!(reason(flow.check(client)), Some(Reason::Banned));
    clock.advance(Duration::from_nanos(1));
    assert!(flow.check(client).is_ok());
    // Strikes after the ban start a new window.
    assert_eq!(reason(flow.check(client)), Some(Reason::RateLimited));
}

/// Strikes further apart than the window never ban: each window starts at
/// its first strike.
#[test]
fn strikes_outside_the_window_start_over() {
    let clock = Arc::new(ManualClock::new());
    let rule = BanRule::new(3, Duration::from_secs(10), Duration::from_secs(60)).expect("valid");
    let bans =
        Bans::<u32>::with_clock(rule, Capacity::Entries(8), Arc::clone(&clock)).expect("8 keys");
    assert_eq!(bans.strike(&1), Strike::Counted(1));
    clock.advance(Duration::from_secs(6));
    assert_eq!(bans.strike(&1), Strike::Counted(2));
    // 10 s after the first: that window is over.
    clock.advance(Duration::from_secs(4));
    assert_eq!(bans.strike(&1), Strike::Counted(1));
    clock.advance(Duration::from_secs(9));
    assert_eq!(bans.strike(&1), Strike::Counted(2));
    assert_eq!(bans.banned(&1), None);
    assert_eq!(bans.strike(&1), Strike::Banned(Duration::from_secs(60)));
    assert_eq!(bans.strike(&1), Strike::Banned(Duration::from_secs(60)));
    assert_eq!(bans.banned(&2), None);
    assert!(BanRule::new(1, Duration::ZERO, Duration::from_secs(1)).is_err());
    assert!(BanRule::new(1, Duration::from_secs(1), Duration::MAX).is_err());
}

/// A full table of bans gives up counting keys before banned ones.
#[test]
fn bans_outlast_strikes_when_the_table_is_full() {
    let clock = Arc::new(ManualClock::new());
    let rule = BanRule::new(2, Duration::from_secs(10), Duration::from_secs(60)).expect("valid");
    let bans =
        Bans::<u32>::with_clock(rule, Capacity::Entries(8), Arc::clone(&clock)).expect("8 keys");
    for key in 0..4 {
        bans.strike(&key);
        assert!(matches!(bans.strike(&key), Strike::Banned(_)));
    }
    for key in 4..20 {
        bans.strike(&key);
    }
    for key in 0..4 {
        assert_eq!(
            bans.banned(&key),
            Some(Duration::from_secs(60)),
            "key {key}"
        );
    }
    assert_eq!(bans.stats().keys, 8);
    assert_eq!(bans.stats().evicted_live, 12);
}

#[test]
fn in_flight_limits_hold_permits_until_the_admission_drops() {
    let global = ConcurrencyLimit::new(NonZeroU32::new(3).expect("non-zero"));
    let flow = FlowControl::builder()
        .in_flight_per_client(NonZeroU32::new(2).expect("non-zero"))
        .in_flight(global.clone())
        .ban(BanRule::new(2, Duration::from_secs(10), Duration::from_secs(60)).expect("valid"))
        .clock(ManualClock::new())
        .build()
        .expect("valid");
    let a = ip("192.0.2.1");
    let b = ip("192.0.2.2");
    let first = flow.check(a).expect("1 of 2");
    let second = flow.check(a).expect("2 of 2");
    let refused = flow.check(a).expect_err("refused");
    assert_eq!(
        (refused.reason(), refused.status()),
        (Reason::ClientInFlight, 429)
    );
    let third = flow.check(b).expect("the server's third");
    let full = flow.check(ip("192.0.2.3")).expect_err("refused");
    assert_eq!(
        (full.reason(), full.status()),
        (Reason::ServerInFlight, 503)
    );
    assert_eq!(global.in_flight(), 3);
    drop(first);
    assert_eq!(global.in_flight(), 2);
    assert_eq!(
        flow.per_client().map(|l| l.in_flight(&flow.client_key(a))),
        Some(1)
    );
    let again = flow.check(a).expect("a slot came back");
    // A second in-flight refusal within the window: banned (2 strikes).
    let banned = flow.check(a).expect_err("refused");
    assert_eq!(banned.reason(), Reason::Banned);
    assert_eq!(banned.retry_after(), Some(Duration::from_secs(60)));
    drop((second, third, again));
    assert_eq!(global.in_flight(), 0);
    assert_eq!(flow.per_client().map(|l| l.stats().keys), Some(0));
}

#[test]
fn default_capacities_hold_what_the_docs_say() {
    let flow = FlowControl::builder()
        .rate(Quota::per_second(10).expect("valid"))
        .ban(BanRule::new(3, Duration::from_secs(10), Duration::from_secs(60)).expect("valid"))
        .in_flight_per_client(NonZeroU32::new(2).expect("non-zero"))
        .build()
        .expect("valid");
    let rates = flow.rate().map(|r| r.stats().capacity);
    let in_flight = flow.per_client().map(|l| l.stats().capacity);
    let strikes = flow.bans().map(|b| b.stats().capacity);
    assert_eq!(
        (rates, in_flight, strikes),
        (Some(262_136), Some(262_136), Some(174_752))
    );
    for memory in [
        flow.rate().map(|r| r.stats().memory),
        flow.per_client().map(|l| l.stats().memory),
        flow.bans().map(|b| b.stats().memory),
    ] {
        assert!(memory.is_some_and(|bytes| bytes <= 4 << 20));
    }
}

#[test]
fn refusals_read_as_sentences() {
    use loadbalance::limit::KeyedConcurrencyError;
    assert_eq!(
        KeyedConcurrencyError::AtLimit { max: 1 }.to_string(),
        "the key has 1 request in flight already"
    );
    assert_eq!(
        KeyedConcurrencyError::AtLimit { max: 3 }.to_string(),
        "the key has 3 requests in flight already"
    );
}

/// At an eighth of the capacity in flight, almost no new client finds its
/// set of 8 full of clients in flight (Poisson with mean 1: about 1 in
/// 100,000); the bound allows 4 in 1,024.
#[test]
fn an_eighth_full_in_flight_table_refuses_almost_no_one() {
    use loadbalance::limit::{KeyedConcurrencyError, KeyedConcurrencyLimit};
    for _ in 0..8 {
        let limit = KeyedConcurrencyLimit::<u32>::new(NonZeroU32::MIN, Capacity::Entries(8192))
            .expect("8192 keys");
        let mut permits = Vec::new();
        let mut full = 0;
        for key in 0..1024u32 {
            match limit.try_acquire(&key) {
                Ok(permit) => permits.push(permit),
                Err(KeyedConcurrencyError::TableFull) => full += 1,
                Err(error) => panic!("{error}"),
            }
        }
        assert!(full <= 4, "{full} of 1024 refused");
    }
}
