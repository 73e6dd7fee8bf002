//! Real HTTP over loopback through the tower service: three hyper 1
//! servers, hyper-util's client as the inner service, and the `Balance`
//! service between them. Shares, retries over distinct backends, the retry
//! budget, and waiting for capacity under `max_conns`, each counted by the
//! servers themselves.
#![cfg(feature = "tower")]

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use loadbalance::tower::{BalanceError, BalanceLayer, HttpReplay};
use loadbalance::{
    AdminState, Algorithm, Backend, HealthPolicy, PickError, Pool, RetryBudget, RetryPolicy,
};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tower_layer::Layer;
use tower_service::Service;

/// What one server saw.
#[derive(Default)]
struct Seen {
    /// Requests per path.
    by_path: Mutex<HashMap<String, usize>>,
    /// Request ids (the `x-id` header) it saw.
    ids: Mutex<Vec<String>>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

impl Seen {
    fn count(&self, path: &str) -> usize {
        self.by_path
            .lock()
            .expect("unpoisoned")
            .get(path)
            .copied()
            .unwrap_or(0)
    }
}

/// A hyper server on 127.0.0.1:0 answering with its name: `/flaky` is a
/// 503 on `flaky` servers, `/down` a 503 everywhere, `/slow` takes 10 ms.
struct Server {
    addr: String,
    name: &'static str,
    seen: Arc<Seen>,
    task: tokio::task::JoinHandle<()>,
}

async fn server(name: &'static str, flaky: bool) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("loopback");
    let addr = listener.local_addr().expect("bound").to_string();
    let seen = Arc::new(Seen::default());
    let state = Arc::clone(&seen);
    let task = tokio::spawn(async move {
        // Dropped with the accept loop: every connection ends with it.
        let mut connections = JoinSet::new();
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let seen = Arc::clone(&state);
            let handle = service_fn(move |req: Request<Incoming>| {
                let seen = Arc::clone(&seen);
                async move {
                    let path = req.uri().path().to_owned();
                    *seen
                        .by_path
                        .lock()
                        .expect("unpoisoned")
                        .entry(path.clone())
                        .or_default() += 1;
                    if let Some(id) = req.headers().get("x-id") {
                        seen.ids
                            .lock()
                            .expect("unpoisoned")
                            .push(id.to_str().expect("ascii id").to_owned());
                    }
                    let now = seen.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                    seen.max_in_flight.fetch_max(now, Ordering::SeqCst);
                    if path == "/slow" {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    let status = match path.as_str() {
                        "/down" => StatusCode::SERVICE_UNAVAILABLE,
                        "/flaky" if flaky => StatusCode::SERVICE_UNAVAILABLE,
                        _ => StatusCode::OK,
                    };
                    seen.in_flight.fetch_sub(1, Ordering::SeqCst);
                    let mut res = Response::new(Full::new(Bytes::from(name)));
                    *res.status_mut() = status;
                    Ok::<_, Infallible>(res)
                }
            });
            connections.spawn(async move {
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), handle)
                    .await;
            });
        }
    });
    Server {
        addr,
        name,
        seen,
        task,
    }
}

/// Three servers, `b` the flaky one, and a pool over them.
async fn setup(algorithm: Algorithm, max_conns: u32) -> (Vec<Server>, Arc<Pool<String>>) {
    let servers = vec![
        server("a", false).await,
        server("b", true).await,
        server("c", false).await,
    ];
    let pool = Pool::builder(algorithm)
        // Failures here are the test's own 503s: no ejection.
        .health(HealthPolicy::none())
        .build(
            servers
                .iter()
                .map(|s| Backend::new(s.addr.clone()).max_conns(max_conns)),
        )
        .expect("valid pool");
    (servers, Arc::new(pool))
}

fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

fn get(path: &str) -> Request<Full<Bytes>> {
    Request::get(path)
        .body(Full::new(Bytes::new()))
        .expect("valid request")
}

fn stop(servers: Vec<Server>) {
    for server in servers {
        server.task.abort();
    }
}

/// Runs a test's body under a deadline.
async fn bounded<F: Future<Output = ()>>(body: F) {
    tokio::time::timeout(Duration::from_secs(20), body)
        .await
        .expect("the test took over 20 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_shares_are_exact() {
    bounded(async {
        let (servers, pool) = setup(Algorithm::RoundRobin, 0).await;
        let mut balanced = BalanceLayer::new(Arc::clone(&pool))
            .hold_body()
            .layer(client());
        let mut names: HashMap<String, usize> = HashMap::new();
        let active = |pool: &Pool<String>| pool.stats().iter().map(|s| s.active).sum::<usize>();
        for _ in 0..300 {
            let res = balanced.call(get("/")).await.expect("answered");
            assert_eq!(res.status(), StatusCode::OK);
            // The backend is held until the body ends.
            assert_eq!(active(&pool), 1);
            assert!(res.body().holds_backend());
            let body = res
                .into_body()
                .collect()
                .await
                .expect("whole body")
                .to_bytes();
            *names
                .entry(String::from_utf8(body.to_vec()).expect("utf-8 name"))
                .or_default() += 1;
            assert_eq!(active(&pool), 0);
        }
        for server in &servers {
            assert_eq!(names.get(server.name), Some(&100), "{names:?}");
            assert_eq!(server.seen.count("/"), 100);
        }
        for stats in pool.stats() {
            assert_eq!((stats.active, stats.picks, stats.failures), (0, 100, 0));
            assert!(stats.latency.is_some());
        }
        println!("shares over 300 requests: {names:?}");
        stop(servers);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_503_is_retried_on_another_backend() {
    bounded(async {
        let (servers, pool) = setup(Algorithm::RoundRobin, 0).await;
        let balanced = BalanceLayer::new(Arc::clone(&pool))
            .policy(HttpReplay)
            .retry(RetryPolicy::attempts(3))
            .layer(client());
        // Concurrent, from spawned tasks: the futures are Send.
        let mut requests = JoinSet::new();
        for _ in 0..60 {
            let mut balanced = balanced.clone();
            requests.spawn(async move {
                let res = balanced.call(get("/flaky")).await.expect("answered");
                let status = res.status();
                let body = res
                    .into_body()
                    .collect()
                    .await
                    .expect("whole body")
                    .to_bytes();
                (status, body)
            });
        }
        while let Some(answer) = requests.join_next().await {
            let (status, body) = answer.expect("no panic");
            assert_eq!(status, StatusCode::OK);
            assert_ne!(body, "b");
        }
        let hits: Vec<usize> = servers.iter().map(|s| s.seen.count("/flaky")).collect();
        // Every request that met `b` was retried once, elsewhere.
        assert!(hits[1] > 0, "{hits:?}");
        assert_eq!(hits[0] + hits[2], 60, "{hits:?}");
        let b = pool.stats_of(&servers[1].addr).expect("present");
        assert_eq!((b.picks, b.failures), (hits[1] as u64, hits[1] as u64));
        println!("/flaky, 60 requests: server hits a, b, c = {hits:?}");
        stop(servers);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_go_to_distinct_backends() {
    bounded(async {
        let (servers, pool) = setup(Algorithm::RoundRobin, 0).await;
        // More attempts than backends: each backend is tried once at most.
        let mut balanced = BalanceLayer::new(Arc::clone(&pool))
            .policy(HttpReplay)
            .retry(RetryPolicy::attempts(5))
            .layer(client());
        for id in 0..10 {
            let mut req = get("/down");
            req.headers_mut().insert("x-id", id.into());
            let res = balanced.call(req).await.expect("answered");
            // The last attempt's answer is forwarded.
            assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
        }
        for server in &servers {
            let ids = server.seen.ids.lock().expect("unpoisoned").clone();
            let expected: Vec<String> = (0..10).map(|id: i32| id.to_string()).collect();
            assert_eq!(ids, expected, "server {}", server.name);
        }
        for stats in pool.stats() {
            assert_eq!((stats.picks, stats.failures), (10, 10));
        }
        // No backend up: a typed error, not a response.
        for server in &servers {
            pool.set_state(&server.addr, AdminState::Down)
                .expect("present");
        }
        let answer = balanced.call(get("/")).await;
        assert!(matches!(
            answer,
            Err(BalanceError::Pick(PickError::AllDown))
        ));
        stop(servers);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_budget_caps_retries() {
    bounded(async {
        let (servers, pool) = setup(Algorithm::RoundRobin, 0).await;
        // Nothing earned per request or per second: five retries in all.
        let budget = Arc::new(RetryBudget::new(0, 0, 5));
        let mut balanced = BalanceLayer::new(Arc::clone(&pool))
            .policy(HttpReplay)
            .retry(RetryPolicy::attempts(3).budget(Arc::clone(&budget)))
            .layer(client());
        for _ in 0..20 {
            let res = balanced.call(get("/down")).await.expect("answered");
            assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
        }
        let hits: usize = servers.iter().map(|s| s.seen.count("/down")).sum();
        assert_eq!(hits, 20 + 5);
        assert_eq!(budget.available(), 0);
        println!("/down, 20 requests, budget 5: {hits} attempts");
        stop(servers);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_wait_for_capacity_under_max_conns() {
    bounded(async {
        let (servers, pool) = setup(Algorithm::LeastConn, 1).await;
        let balanced = BalanceLayer::new(Arc::clone(&pool))
            .hold_body()
            .layer(client());
        let started = Instant::now();
        // 12 clients, 5 requests each, into 3 slots: most requests wait.
        let mut clients = JoinSet::new();
        for _ in 0..12 {
            let mut balanced = balanced.clone();
            clients.spawn(async move {
                for _ in 0..5 {
                    let res = balanced.call(get("/slow")).await.expect("answered");
                    assert_eq!(res.status(), StatusCode::OK);
                    res.into_body().collect().await.expect("whole body");
                }
            });
        }
        while let Some(done) = clients.join_next().await {
            done.expect("no panic");
        }
        let elapsed = started.elapsed();
        let served: Vec<usize> = servers.iter().map(|s| s.seen.count("/slow")).collect();
        assert_eq!(served.iter().sum::<usize>(), 60, "{served:?}");
        for server in &servers {
            // The servers' own count: never two at once.
            assert_eq!(server.seen.max_in_flight.load(Ordering::SeqCst), 1);
        }
        // 60 requests of 10 ms through 3 slots take 200 ms at least.
        assert!(elapsed >= Duration::from_millis(195), "{elapsed:?}");
        for stats in pool.stats() {
            assert_eq!(stats.active, 0);
        }
        println!("max_conns 1 x 3, 12 clients x 5 requests: served {served:?} in {elapsed:?}");
        stop(servers);
    })
    .await;
}

/// An inner service over requests whose body is `Send` but not `Sync`,
/// as axum's is.
#[derive(Clone)]
struct Unsync;

impl Service<Request<std::cell::Cell<u8>>> for Unsync {
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Infallible>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Request<std::cell::Cell<u8>>) -> Self::Future {
        std::future::ready(Ok(Response::new(Full::new(Bytes::new()))))
    }
}

#[test]
fn futures_are_send_for_requests_that_are_not_sync() {
    fn send<F: Future + Send + 'static>(future: F) -> F {
        future
    }
    let pool = Arc::new(
        Pool::builder(Algorithm::RoundRobin)
            .build([Backend::new("127.0.0.1:1".to_owned())])
            .expect("valid pool"),
    );
    let mut balanced = BalanceLayer::new(Arc::clone(&pool)).layer(Unsync);
    let mut holding = BalanceLayer::new(pool).hold_body().layer(Unsync);
    let answer =
        futures_lite::future::block_on(send(balanced.call(Request::new(std::cell::Cell::new(0)))));
    assert_eq!(answer.expect("answered").status(), StatusCode::OK);
    let answer =
        futures_lite::future::block_on(send(holding.call(Request::new(std::cell::Cell::new(0)))));
    // An empty body has ended: the backend is back at once.
    assert!(!answer.expect("answered").body().holds_backend());
}

type AxumProxy = loadbalance::tower::Balance<
    Client<HttpConnector, axum::body::Body>,
    String,
    loadbalance::tower::Http,
    loadbalance::tower::UntilBodyEnd,
>;

/// A reverse proxy as an axum handler: the request, body streaming
/// (axum's body is `Send` but not `Sync`), through the tower service.
async fn axum_proxy(
    axum::extract::State(mut balanced): axum::extract::State<AxumProxy>,
    req: Request<axum::body::Body>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    match balanced.call(req).await {
        Ok(res) => res.map(axum::body::Body::new).into_response(),
        Err(BalanceError::Pick(_)) => StatusCode::SERVICE_UNAVAILABLE.into_response(),
        Err(_) => StatusCode::BAD_GATEWAY.into_response(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_axum_proxy_balances_over_the_pool() {
    bounded(async {
        let (servers, pool) = setup(Algorithm::RoundRobin, 0).await;
        let balanced: AxumProxy = BalanceLayer::new(Arc::clone(&pool))
            .hold_body()
            .layer(Client::builder(TokioExecutor::new()).build_http());
        let app = axum::Router::new()
            .fallback(axum_proxy)
            .with_state(balanced);
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("loopback");
        let proxy = listener.local_addr().expect("bound");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let client = client();
        let mut names: HashMap<String, usize> = HashMap::new();
        for _ in 0..30 {
            let uri = format!("http://{proxy}/via-axum");
            let res = client.request(get(&uri)).await.expect("proxied");
            assert_eq!(res.status(), StatusCode::OK);
            let body = res.into_body().collect().await.expect("whole body");
            let name = String::from_utf8(body.to_bytes().to_vec()).expect("utf-8 name");
            *names.entry(name).or_default() += 1;
        }
        for server in &servers {
            assert_eq!(names.get(server.name), Some(&10), "{names:?}");
            assert_eq!(server.seen.count("/via-axum"), 10);
        }
        for server in &servers {
            pool.set_state(&server.addr, AdminState::Down)
                .expect("present");
        }
        let res = client
            .request(get(&format!("http://{proxy}/via-axum")))
            .await
            .expect("answered");
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
        task.abort();
        stop(servers);
    })
    .await;
}

/// An inner service that answers at once, for readiness alone.
#[derive(Clone)]
struct Answer;

impl Service<Request<()>> for Answer {
    type Response = Response<()>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Response<()>, Infallible>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Infallible>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Request<()>) -> Self::Future {
        std::future::ready(Ok(Response::new(())))
    }
}

/// Readiness comes from capacity: with the one backend at its
/// `max_conns`, `poll_ready` is pending, and the guard that frees the slot
/// wakes it ready; a pool with every backend down is ready (the call says
/// why).
#[test]
fn readiness_follows_capacity() {
    use futures_lite::future::{block_on, poll_fn, poll_once};
    let pool = Arc::new(
        Pool::builder(Algorithm::LeastConn)
            .build([Backend::new("10.0.0.1:80".to_owned()).max_conns(1)])
            .expect("valid"),
    );
    let mut service = BalanceLayer::new(Arc::clone(&pool)).layer(Answer);
    assert!(block_on(poll_once(poll_fn(|cx| service.poll_ready(cx)))).is_some());
    let busy = pool.pick(&loadbalance::Context::new()).expect("the slot");
    assert_eq!(pool.capacity(), Err(PickError::AllFull));
    let mut ready = Box::pin(poll_fn(|cx| service.poll_ready(cx)));
    assert!(block_on(poll_once(&mut ready)).is_none(), "full: pending");
    let freer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(10));
        drop(busy);
    });
    // Woken by the freed slot (a lost wake-up would hang; bounded below).
    let deadline = Instant::now() + Duration::from_secs(10);
    assert!(block_on(futures_lite::future::or(
        async { ready.await.map(|()| true).unwrap_or(false) },
        async {
            while Instant::now() < deadline {
                futures_lite::future::yield_now().await;
            }
            false
        },
    )));
    freer.join().expect("no panic");
    pool.set_state("10.0.0.1:80", AdminState::Down)
        .expect("present");
    assert!(block_on(poll_once(poll_fn(|cx| service.poll_ready(cx)))).is_some());
}
