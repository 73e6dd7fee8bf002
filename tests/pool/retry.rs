//! Requests with retries: distinct backends, the attempt limit, verdicts,
//! the retry budget (share of requests, time allowance, concurrent
//! withdrawals), and cancellation.

use std::cell::RefCell;
use std::collections::HashSet;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use futures_lite::future::{block_on, pending, poll_once};
use loadbalance::{
    AdminState, Algorithm, Backend, Context, HealthPolicy, ManualClock, PickError, Pool,
    RetryBudget, RetryError, RetryPolicy, Verdict,
};

fn pool(n: usize) -> Pool<String> {
    Pool::builder(Algorithm::LeastConn)
        .health(HealthPolicy::none())
        .build((0..n).map(|i| Backend::new(format!("10.0.0.{i}:80"))))
        .expect("valid")
}

fn retry_errors(result: &Result<u16, &'static str>) -> Verdict {
    match result {
        Ok(_) => Verdict::Success,
        Err("bad request") => Verdict::Fail,
        Err(_) => Verdict::Retry,
    }
}

#[test]
fn retries_go_to_distinct_backends_up_to_the_limit() {
    let pool = pool(4);
    let seen = RefCell::new(Vec::new());
    let result = block_on(pool.run(
        &Context::new(),
        &RetryPolicy::attempts(3),
        |backend| {
            seen.borrow_mut().push(backend);
            async { Err::<u16, _>("refused") }
        },
        retry_errors,
    ));
    assert_eq!(result, Err(RetryError::Attempt("refused")));
    let seen = seen.into_inner();
    assert_eq!(seen.len(), 3);
    assert_eq!(seen.iter().collect::<HashSet<_>>().len(), 3, "{seen:?}");
    let failures: u64 = pool.stats().iter().map(|s| s.failures).sum();
    assert_eq!(failures, 3);
    assert!(pool.stats().iter().all(|s| s.active == 0));
    // More attempts than backends: each backend once, then the last result.
    let calls = RefCell::new(0);
    let result = block_on(pool.run(
        &Context::new(),
        &RetryPolicy::attempts(10),
        |_| {
            *calls.borrow_mut() += 1;
            async { Err::<u16, _>("refused") }
        },
        retry_errors,
    ));
    assert_eq!(
        (result, calls.into_inner()),
        (Err(RetryError::Attempt("refused")), 4)
    );
}

#[test]
fn a_final_verdict_or_a_success_ends_the_request() {
    let pool = pool(4);
    let calls = RefCell::new(0);
    let result = block_on(pool.run(
        &Context::new(),
        &RetryPolicy::attempts(4),
        |_| {
            *calls.borrow_mut() += 1;
            async { Err::<u16, _>("bad request") }
        },
        retry_errors,
    ));
    assert_eq!(
        (result, *calls.borrow()),
        (Err(RetryError::Attempt("bad request")), 1)
    );
    // A 503 is an Ok the classifier calls a failure: retried, and returned
    // as the last result when nothing better came.
    let result = block_on(pool.run(
        &Context::new(),
        &RetryPolicy::attempts(2),
        |_| async { Ok::<u16, &str>(503) },
        |result| match result {
            Ok(503) => Verdict::Retry,
            _ => Verdict::Success,
        },
    ));
    assert_eq!(result, Ok(503));
    // Every backend down: the first pick's error.
    for i in 0..4 {
        pool.set_state(format!("10.0.0.{i}:80").as_str(), AdminState::Down)
            .expect("present");
    }
    let result = block_on(pool.run(
        &Context::new(),
        &RetryPolicy::attempts(2),
        |_| async { Ok::<u16, &str>(200) },
        retry_errors,
    ));
    assert_eq!(result, Err(RetryError::Pick(PickError::AllDown)));
}

/// With a budget of 20% and nothing saved or earned by time, 1,000 requests
/// whose every attempt fails retry 200 times, not the 4,000 the attempt
/// limit allows.
#[test]
fn the_budget_bounds_retries_to_a_share_of_requests() {
    let pool = pool(8);
    let clock = Arc::new(ManualClock::new());
    let budget = Arc::new(RetryBudget::with_clock(20, 0, 0, Arc::clone(&clock)));
    let policy = RetryPolicy::attempts(5).budget(Arc::clone(&budget));
    let attempts = RefCell::new(0u32);
    for _ in 0..1_000 {
        let _ = block_on(pool.run(
            &Context::new(),
            &policy,
            |_| {
                *attempts.borrow_mut() += 1;
                async { Err::<u16, _>("refused") }
            },
            retry_errors,
        ));
    }
    let retries = attempts.into_inner() - 1_000;
    assert!((195..=200).contains(&retries), "{retries}");
}

#[test]
fn the_time_allowance_and_the_burst() {
    let clock = Arc::new(ManualClock::new());
    let budget = RetryBudget::with_clock(0, 10, 25, Arc::clone(&clock));
    assert_eq!(budget.available(), 25, "starts with its burst");
    for _ in 0..25 {
        assert!(budget.try_withdraw());
    }
    assert!(!budget.try_withdraw());
    clock.advance(Duration::from_millis(500));
    assert_eq!(budget.available(), 5);
    clock.advance(Duration::from_secs(60));
    assert_eq!(budget.available(), 25, "saved up to the burst only");
}

#[test]
fn concurrent_withdrawals_spend_each_token_once() {
    let budget = Arc::new(RetryBudget::with_clock(0, 0, 10_000, ManualClock::new()));
    let threads: Vec<_> = (0..2)
        .map(|_| {
            let budget = Arc::clone(&budget);
            thread::spawn(move || (0..20_000).filter(|_| budget.try_withdraw()).count())
        })
        .collect();
    let spent: usize = threads
        .into_iter()
        .map(|t| t.join().expect("no panic"))
        .sum();
    assert_eq!(spent, 10_000);
}

/// A request dropped in the middle of an attempt reports nothing and gives
/// its backend back.
#[test]
fn a_cancelled_request_takes_nothing_with_it() {
    let pool = pool(2);
    let (ctx, policy) = (Context::new(), RetryPolicy::attempts(2));
    let mut request = Box::pin(pool.run(
        &ctx,
        &policy,
        |_| pending::<Result<u16, &str>>(),
        retry_errors,
    ));
    assert!(block_on(poll_once(&mut request)).is_none());
    assert_eq!(pool.stats().iter().map(|s| s.active).sum::<usize>(), 1);
    drop(request);
    assert!(
        pool.stats()
            .iter()
            .all(|s| s.active == 0 && s.failures == 0)
    );
}

/// Issue 22, item 3: `Tried`'s identity rule as its docs state it. A
/// backend removed and added back while a guard of it lives is the same
/// backend to `Tried` (every pick of the whole rotation skips it); after
/// its last guard is gone it is a new backend, which a retry may take.
#[test]
fn tried_identity_lasts_while_a_guard_of_the_backend_lives() {
    use loadbalance::{Balancer, Live, Tried, lockfree};
    let lb = Live::<lockfree::RoundRobin<u32>>::new((0..3).map(Backend::new)).expect("valid");
    let mut tried = Tried::new();
    let failed = lb.pick(&Context::new()).expect("pick");
    assert_eq!(*failed, 0);
    tried.insert(&failed);
    lb.remove(&0).expect("present");
    lb.add(Backend::new(0)).expect("absent");
    for _ in 0..6 {
        let guard = lb.pick(&Context::new().with_tried(&tried)).expect("pick");
        assert_ne!(
            *guard, 0,
            "a tried backend brought back while its guard lives"
        );
    }
    drop(failed);
    lb.remove(&0).expect("present");
    lb.add(Backend::new(0)).expect("absent");
    let picks: Vec<u32> = (0..6)
        .map(|_| *lb.pick(&Context::new().with_tried(&tried)).expect("pick"))
        .collect();
    assert!(picks.contains(&0), "a new backend is not tried: {picks:?}");
    let new = picks.iter().position(|&p| p == 0).expect("picked");
    assert!(
        new < 3,
        "round-robin reaches it within a rotation: {picks:?}"
    );
}
