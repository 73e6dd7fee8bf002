//! The response cache (issue 26) against origins that set each header,
//! over loopback: what is stored and for how long, `Vary`, `Age`,
//! validation with `304`, clients' own conditional requests,
//! invalidation and purge, `stale-while-revalidate`, `stale-if-error`
//! through an outage, collapsing, and the byte bound.

use crate::harness::*;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::HeaderMap;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use loadbalance_proxy::Proxy;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

/// What an origin answers.
pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(&'static str, String)>,
    pub(crate) body: Bytes,
    /// Waited before the answer.
    pub(crate) delay: Duration,
    /// Awaited before the answer, when set.
    pub(crate) gate: Option<Arc<tokio::sync::Notify>>,
}

impl Answer {
    pub(crate) fn ok(headers: &[(&'static str, &str)], body: impl Into<Bytes>) -> Self {
        Self {
            status: 200,
            headers: headers.iter().map(|(n, v)| (*n, (*v).to_owned())).collect(),
            body: body.into(),
            delay: Duration::ZERO,
            gate: None,
        }
    }

    pub(crate) fn status(mut self, status: u16) -> Self {
        self.status = status;
        self
    }

    pub(crate) fn after(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// Answers once `gate` is notified.
    pub(crate) fn gated(mut self, gate: &Arc<tokio::sync::Notify>) -> Self {
        self.gate = Some(Arc::clone(gate));
        self
    }
}

type Respond = dyn Fn(&hyper::http::request::Parts, usize) -> Answer + Send + Sync;

/// A loopback origin that answers with `respond(request, n)` (n counts
/// its requests from 1), and can be stopped: its listener and every
/// connection closed.
pub(crate) struct Origin {
    pub(crate) addr: SocketAddr,
    pub(crate) requests: Arc<AtomicUsize>,
    /// The last request's headers.
    pub(crate) last: Arc<parking_lot::Mutex<HeaderMap>>,
    task: tokio::task::JoinHandle<()>,
}

impl Origin {
    pub(crate) async fn start(
        respond: impl Fn(&hyper::http::request::Parts, usize) -> Answer + Send + Sync + 'static,
    ) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("binds");
        let addr = listener.local_addr().expect("an address");
        let requests = Arc::new(AtomicUsize::new(0));
        let last = Arc::new(parking_lot::Mutex::new(HeaderMap::new()));
        let respond: Arc<Respond> = Arc::new(respond);
        let (count, seen) = (Arc::clone(&requests), Arc::clone(&last));
        let task = tokio::spawn(async move {
            let mut connections = JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                let (respond, count, seen) =
                    (Arc::clone(&respond), Arc::clone(&count), Arc::clone(&seen));
                let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                    let n = count.fetch_add(1, Relaxed) + 1;
                    let (parts, _) = request.into_parts();
                    *seen.lock() = parts.headers.clone();
                    let answer = respond(&parts, n);
                    async move {
                        tokio::time::sleep(answer.delay).await;
                        if let Some(gate) = &answer.gate {
                            gate.notified().await;
                        }
                        let mut response = Response::new(Full::new(answer.body));
                        *response.status_mut() =
                            StatusCode::from_u16(answer.status).expect("a status");
                        for (name, value) in answer.headers {
                            response
                                .headers_mut()
                                .append(name, value.parse().expect("a header value"));
                        }
                        Ok::<_, std::convert::Infallible>(response)
                    }
                });
                // No `Date`: a stored answer's age starts at 0 rather than
                // anywhere in the second `Date` names.
                connections.spawn(
                    hyper::server::conn::http1::Builder::new()
                        .auto_date_header(false)
                        .serve_connection(TokioIo::new(stream), service),
                );
            }
        });
        Self {
            addr,
            requests,
            last,
            task,
        }
    }

    pub(crate) fn count(&self) -> usize {
        self.requests.load(Relaxed)
    }

    /// Closes the listener and every connection: the origin is down.
    pub(crate) fn stop(&self) {
        self.task.abort();
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A proxy with one cached route over `origin`, `[cache]` `cache` lines,
/// `pool` lines in the pool.
pub(crate) async fn cached(origin: &Origin, cache: &str, pool: &str) -> Proxy {
    cached_at(origin.addr, cache, pool).await
}

pub(crate) async fn fetch(
    client: &HttpClient,
    proxy: &Proxy,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
) -> Reply {
    let mut request = build(method, proxy.addr(), "cache.test", path);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    send(client, request.body(Full::default()).expect("a request")).await
}

/// Whether `proxy` has stored `n` responses in all within 2 s. A response
/// is stored a moment after its client has all of it (its pump keeps it
/// once the last bytes are handed on), so a request that must find it
/// waits for this first.
pub(crate) async fn has_stored(proxy: &Proxy, n: u64) -> bool {
    eventually(Duration::from_secs(2), || {
        let scrape = parse_metrics(&proxy.metrics());
        sample(&scrape, "proxy_cache_stored_total", &[]).is_some_and(|stored| stored >= n as f64)
    })
    .await
}

fn status(reply: &Reply) -> &str {
    reply
        .headers
        .get("cache-status")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

fn age(reply: &Reply) -> Option<u64> {
    reply.headers.get("age")?.to_str().ok()?.parse().ok()
}

// max-age: stored at the miss, then hits with Age and Cache-Status, HEAD
// answered from the GET's entry; the backend asked once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fresh_responses_are_answered_from_the_cache() {
    bounded(async {
        let origin = Origin::start(|_, n| {
            Answer::ok(
                &[("cache-control", "max-age=60"), ("etag", "\"v1\"")],
                format!("body {n}"),
            )
        })
        .await;
        let proxy = cached(&origin, "", "").await;
        let client = client();
        let first = fetch(&client, &proxy, Method::GET, "/a?x=1", &[]).await;
        assert_eq!(first.body, "body 1");
        assert!(
            status(&first).contains("fwd=uri-miss"),
            "{}",
            status(&first)
        );
        assert!(status(&first).contains("stored"), "{}", status(&first));
        assert!(has_stored(&proxy, 1).await, "the first response is stored");
        for _ in 0..3 {
            let hit = fetch(&client, &proxy, Method::GET, "/a?x=1", &[]).await;
            assert_eq!(hit.body, "body 1");
            assert!(
                status(&hit).starts_with("loadbalance; hit"),
                "{}",
                status(&hit)
            );
            assert!(age(&hit).is_some_and(|age| age < 60), "{:?}", hit.headers);
            assert_eq!(hit.headers["etag"], "\"v1\"");
        }
        let head = fetch(&client, &proxy, Method::HEAD, "/a?x=1", &[]).await;
        assert_eq!(head.status, StatusCode::OK);
        assert_eq!(head.body, "");
        assert_eq!(head.headers["content-length"], "6");
        assert!(status(&head).contains("hit"));
        // Another query is another URI.
        let other = fetch(&client, &proxy, Method::GET, "/a?x=2", &[]).await;
        assert_eq!(other.body, "body 2");
        assert_eq!(origin.count(), 2);
        let scrape = parse_metrics(&proxy.metrics());
        assert_eq!(sample(&scrape, "proxy_cache_hits_total", &[]), Some(4.0));
        assert_eq!(sample(&scrape, "proxy_cache_misses_total", &[]), Some(2.0));
        assert_eq!(
            sample(&scrape, "proxy_cache_hit_bytes_total", &[]),
            Some(18.0)
        );
        assert!(sample(&scrape, "proxy_cache_bytes", &[]).is_some_and(|b| b > 0.0));
        proxy.shutdown().await;
    })
    .await;
}

// Each response a shared cache must not keep goes to the backend every
// time: no-store (either side), private, Set-Cookie, Authorization
// without the response's leave (§3.5), Vary: *, and statuses with no
// freshness; Authorization with `public` or `s-maxage` is kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_shared_cache_must_not_store_is_never_stored() {
    bounded(async {
        let origin = Origin::start(|request, n| {
            let said: &[(&'static str, &str)] = match request.uri.path() {
                "/no-store" => &[("cache-control", "max-age=60, no-store")],
                "/private" => &[("cache-control", "private, max-age=60")],
                "/cookie" => &[("cache-control", "max-age=60"), ("set-cookie", "id=1")],
                "/vary-any" => &[("cache-control", "max-age=60"), ("vary", "*")],
                "/auth-public" => &[("cache-control", "public, max-age=60")],
                "/auth-shared" => &[("cache-control", "s-maxage=60")],
                "/error" => &[],
                _ => &[("cache-control", "max-age=60")],
            };
            let answer = Answer::ok(said, format!("{n}"));
            if request.uri.path() == "/error" {
                answer.status(500)
            } else {
                answer
            }
        })
        .await;
        let proxy = cached(&origin, "", "").await;
        let client = client();
        type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], bool);
        let cases: [Case; 9] = [
            ("/no-store", &[], false),
            ("/private", &[], false),
            ("/cookie", &[], false),
            ("/vary-any", &[], false),
            ("/error", &[], false),
            ("/plain", &[("cache-control", "no-store")], false),
            ("/auth", &[("authorization", "Bearer a")], false),
            ("/auth-public", &[("authorization", "Bearer a")], true),
            ("/auth-shared", &[("authorization", "Bearer a")], true),
        ];
        for (path, headers, kept) in cases {
            let before = origin.count();
            let first = fetch(&client, &proxy, Method::GET, path, headers).await;
            let second = fetch(&client, &proxy, Method::GET, path, headers).await;
            let asked = origin.count() - before;
            assert_eq!(asked, if kept { 1 } else { 2 }, "{path} {headers:?}");
            if kept {
                assert_eq!(first.body, second.body, "{path}");
            }
        }
        proxy.shutdown().await;
    })
    .await;
}

// Vary: one stored response per variant of the headers it names; a
// client's Accept-Encoding spelt differently but taking the same
// codings is the same variant.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_vary_by_the_headers_they_name() {
    bounded(async {
        let origin = Origin::start(|request, _| {
            let language = request
                .headers
                .get("accept-language")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("none")
                .to_owned();
            Answer::ok(
                &[
                    ("cache-control", "max-age=60"),
                    ("vary", "Accept-Language, Accept-Encoding"),
                ],
                language,
            )
        })
        .await;
        let proxy = cached(&origin, "", "").await;
        let client = client();
        let get = |language: &'static str, encoding: &'static str| {
            let client = client.clone();
            let proxy = &proxy;
            async move {
                fetch(
                    &client,
                    proxy,
                    Method::GET,
                    "/page",
                    &[("accept-language", language), ("accept-encoding", encoding)],
                )
                .await
            }
        };
        assert_eq!(get("en", "gzip, br").await.body, "en");
        assert!(has_stored(&proxy, 1).await, "the en variant is stored");
        assert_eq!(get("fr", "gzip, br").await.body, "fr");
        let again = get("en", "br;q=0.9, GZIP").await;
        assert_eq!(again.body, "en");
        assert!(status(&again).contains("hit"), "{}", status(&again));
        let other = get("en", "identity").await;
        assert!(status(&other).contains("vary-miss"), "{}", status(&other));
        assert_eq!(origin.count(), 3);
        proxy.shutdown().await;
    })
    .await;
}

// A stale entry is validated with its ETag; the backend's 304 updates
// it (its new Cache-Control) and the client gets the stored body. A
// client's own If-None-Match is answered 304 from the cache.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_entries_are_validated_and_clients_conditionals_answered() {
    bounded(async {
        let origin = Origin::start(|request, _| {
            if request
                .headers
                .get("if-none-match")
                .is_some_and(|t| t == "\"v1\"")
            {
                return Answer::ok(&[("cache-control", "max-age=60"), ("etag", "\"v1\"")], "")
                    .status(304);
            }
            // `/stale` is stale as soon as it is stored.
            let said = if request.uri.path() == "/stale" {
                "max-age=0"
            } else {
                "max-age=60"
            };
            Answer::ok(&[("cache-control", said), ("etag", "\"v1\"")], "the body")
        })
        .await;
        let proxy = cached(&origin, "", "").await;
        let client = client();
        assert_eq!(
            fetch(&client, &proxy, Method::GET, "/v", &[]).await.body,
            "the body"
        );
        assert!(has_stored(&proxy, 1).await, "/v is stored");
        let mine = fetch(
            &client,
            &proxy,
            Method::GET,
            "/v",
            &[("if-none-match", "\"v1\"")],
        )
        .await;
        assert_eq!(mine.status, StatusCode::NOT_MODIFIED);
        assert_eq!(mine.headers["etag"], "\"v1\"");
        assert!(status(&mine).contains("hit"));
        let other = fetch(
            &client,
            &proxy,
            Method::GET,
            "/v",
            &[("if-none-match", "\"v0\"")],
        )
        .await;
        assert_eq!(other.status, StatusCode::OK);
        assert_eq!(origin.count(), 1);
        assert_eq!(
            fetch(&client, &proxy, Method::GET, "/stale", &[])
                .await
                .body,
            "the body"
        );
        assert!(has_stored(&proxy, 2).await, "/stale is stored");
        let validated = fetch(&client, &proxy, Method::GET, "/stale", &[]).await;
        assert_eq!(validated.body, "the body");
        assert!(
            status(&validated).contains("fwd=stale; fwd-status=304"),
            "{}",
            status(&validated)
        );
        assert_eq!(origin.last.lock()["if-none-match"], "\"v1\"");
        assert_eq!(
            validated.headers["cache-control"], "max-age=60",
            "the 304's fields"
        );
        let hit = fetch(&client, &proxy, Method::GET, "/stale", &[]).await;
        assert!(status(&hit).contains("hit"), "{}", status(&hit));
        assert_eq!(origin.count(), 3);
        let scrape = parse_metrics(&proxy.metrics());
        assert_eq!(
            sample(&scrape, "proxy_cache_revalidated_total", &[]),
            Some(1.0)
        );
        proxy.shutdown().await;
    })
    .await;
}

// An unsafe method answered without an error invalidates its URI
// (§4.4); the admin port purges one URI, or everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsafe_methods_and_purges_invalidate() {
    bounded(async {
        let origin =
            Origin::start(|_, n| Answer::ok(&[("cache-control", "max-age=60")], format!("{n}")))
                .await;
        let proxy = cached(&origin, "", "").await;
        let client = client();
        let get = |path: &'static str| {
            let client = client.clone();
            let proxy = &proxy;
            async move { fetch(&client, proxy, Method::GET, path, &[]).await.body }
        };
        assert_eq!(get("/a").await, "1");
        assert_eq!(get("/a").await, "1");
        let post = fetch(&client, &proxy, Method::POST, "/a", &[]).await;
        assert!(status(&post).contains("fwd=method"), "{}", status(&post));
        assert_eq!(get("/a").await, "3", "invalidated by the POST");
        assert_eq!(get("/b").await, "4");
        let admin = proxy.admin_addr();
        let purge = |path: String| {
            let client = client.clone();
            async move {
                let request = Request::builder()
                    .method(Method::DELETE)
                    .uri(format!("http://{admin}{path}"))
                    .body(Full::default())
                    .expect("a request");
                send(&client, request).await.status
            }
        };
        assert_eq!(
            // The path in the routes' normal form: `/./a` is `/a`.
            purge("/cache/cache.test/./a".to_owned()).await,
            StatusCode::OK
        );
        assert_eq!(get("/a").await, "5", "purged");
        assert_eq!(get("/b").await, "4", "kept");
        assert_eq!(purge("/cache".to_owned()).await, StatusCode::OK);
        assert_eq!(get("/b").await, "6", "everything purged");
        proxy.shutdown().await;
    })
    .await;
}

// stale-while-revalidate: a stale entry within the window is answered at
// once, stale, while one background request refreshes it (the backend
// holds that refresh until the stale answers are in: a proxy that waited
// for it would never answer).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_while_revalidate_answers_at_once_and_refreshes() {
    bounded(async {
        let gate = Arc::new(tokio::sync::Notify::new());
        let refresh = Arc::clone(&gate);
        // Stale as soon as it is stored; the refresh is fresh for a minute.
        let origin = Origin::start(move |_, n| {
            if n == 1 {
                Answer::ok(
                    &[("cache-control", "max-age=0, stale-while-revalidate=30")],
                    "v1",
                )
            } else {
                Answer::ok(&[("cache-control", "max-age=60")], format!("v{n}")).gated(&refresh)
            }
        })
        .await;
        let proxy = cached(&origin, "", "").await;
        let client = client();
        assert_eq!(
            fetch(&client, &proxy, Method::GET, "/s", &[]).await.body,
            "v1"
        );
        assert!(has_stored(&proxy, 1).await, "v1 is stored");
        let stale = fetch(&client, &proxy, Method::GET, "/s", &[]).await;
        assert_eq!(stale.body, "v1");
        assert!(
            status(&stale).contains("detail=stale-while-revalidate"),
            "{}",
            status(&stale)
        );
        assert_eq!(
            fetch(&client, &proxy, Method::GET, "/s", &[]).await.body,
            "v1"
        );
        assert!(
            eventually(Duration::from_secs(3), || origin.count() == 2).await,
            "one background refresh"
        );
        gate.notify_one();
        let mut fresh = String::new();
        for _ in 0..100 {
            fresh = fetch(&client, &proxy, Method::GET, "/s", &[]).await.body;
            if fresh == "v2" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(fresh, "v2");
        assert_eq!(origin.count(), 2);
        proxy.shutdown().await;
    })
    .await;
}

// stale-if-error: with every backend of the pool down, stale entries
// keep being answered (the response's window, or `[cache]`'s); one that
// must be revalidated is not, and the client gets the error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_answers_stand_in_while_every_backend_is_down() {
    bounded(async {
        let failing = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&failing);
        let origin = Origin::start(move |request, _| {
            let said = if request.uri.path() == "/strict" {
                "max-age=1, must-revalidate"
            } else {
                "max-age=1"
            };
            // Fresh for a second, and a second old on arrival (`Age`):
            // stale at once, though it was meant to be kept.
            let answer = Answer::ok(&[("cache-control", said), ("age", "1")], "kept");
            if flag.load(Relaxed) {
                answer.status(503)
            } else {
                answer
            }
        })
        .await;
        let proxy = cached(&origin, "stale_if_error_ms = 60000", "").await;
        let client = client();
        for path in ["/page", "/strict"] {
            assert_eq!(
                fetch(&client, &proxy, Method::GET, path, &[]).await.body,
                "kept"
            );
        }
        assert!(has_stored(&proxy, 2).await, "both responses are stored");
        // Both stale already. The backend answers 503.
        failing.store(true, Relaxed);
        let stale = fetch(&client, &proxy, Method::GET, "/page", &[]).await;
        assert_eq!(
            (stale.status, stale.body.as_str()),
            (StatusCode::OK, "kept")
        );
        assert!(
            status(&stale).contains("fwd-status=503; detail=stale-if-error"),
            "{}",
            status(&stale)
        );
        let strict = fetch(&client, &proxy, Method::GET, "/strict", &[]).await;
        assert_eq!(strict.status, StatusCode::SERVICE_UNAVAILABLE);
        // The backend is gone: connections refused, the proxy's own 502.
        origin.stop();
        tokio::time::sleep(Duration::from_millis(50)).await;
        for _ in 0..3 {
            let stale = fetch(&client, &proxy, Method::GET, "/page", &[]).await;
            assert_eq!(
                (stale.status, stale.body.as_str()),
                (StatusCode::OK, "kept")
            );
            assert!(
                status(&stale).contains("detail=stale-if-error"),
                "{}",
                status(&stale)
            );
        }
        let strict = fetch(&client, &proxy, Method::GET, "/strict", &[]).await;
        assert!(strict.status.is_server_error(), "{:?}", strict.status);
        let scrape = parse_metrics(&proxy.metrics());
        assert!(sample(&scrape, "proxy_cache_stale_total", &[]).is_some_and(|n| n >= 4.0));
        proxy.shutdown().await;
    })
    .await;
}

// A burst of 100 concurrent misses for one URI sends one request to the
// backend; the rest wait for it and are answered from the cache.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_misses_is_one_backend_request() {
    bounded(async {
        let origin = Origin::start(|_, n| {
            Answer::ok(&[("cache-control", "max-age=60")], format!("v{n}"))
                .after(Duration::from_millis(300))
        })
        .await;
        let proxy = cached(&origin, "", "").await;
        let client = client();
        let mut burst = JoinSet::new();
        for _ in 0..100 {
            let client = client.clone();
            let addr = proxy.addr();
            burst.spawn(async move {
                let request = build(Method::GET, addr, "cache.test", "/hot")
                    .body(Full::default())
                    .expect("a request");
                send(&client, request).await
            });
        }
        let mut answered = 0;
        while let Some(reply) = burst.join_next().await {
            let reply = reply.expect("the task");
            assert_eq!((reply.status, reply.body.as_str()), (StatusCode::OK, "v1"));
            answered += 1;
        }
        assert_eq!(answered, 100);
        assert_eq!(origin.count(), 1, "one request to the backend");
        // A request that reaches the proxy only once the response is
        // stored (a slow machine) is a plain hit rather than a collapsed
        // one; a collapsed one answered from the cache counts as a hit too.
        let scrape = parse_metrics(&proxy.metrics());
        let count = |name| sample(&scrape, name, &[]).unwrap_or(-1.0);
        let collapsed = count("proxy_cache_collapsed_total");
        assert_eq!(
            count("proxy_cache_hits_total"),
            99.0,
            "the rest from the cache"
        );
        assert_eq!(
            count("proxy_cache_misses_total"),
            collapsed + 1.0,
            "every miss but the first waited for it"
        );
        proxy.shutdown().await;
    })
    .await;
}

// The byte bound: many distinct responses through a small cache never
// hold more than its bytes; one over the per-entry limit passes
// uncached; only-if-cached with nothing stored is 504.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cache_holds_at_most_its_bytes() {
    bounded(async {
        let origin = Origin::start(|request, _| {
            let size = if request.uri.path() == "/big" {
                40_000
            } else {
                1_000
            };
            Answer::ok(&[("cache-control", "max-age=60")], vec![b'x'; size])
        })
        .await;
        let proxy = cached(&origin, "max_bytes = 65536\nmax_entry_bytes = 16384", "").await;
        let client = client();
        for i in 0..300 {
            fetch(&client, &proxy, Method::GET, &format!("/item/{i}"), &[]).await;
            if i % 50 == 0 {
                let scrape = parse_metrics(&proxy.metrics());
                let bytes = sample(&scrape, "proxy_cache_bytes", &[]).unwrap_or(-1.0);
                assert!((0.0..=65536.0).contains(&bytes), "{bytes}");
            }
        }
        let scrape = parse_metrics(&proxy.metrics());
        let bytes = sample(&scrape, "proxy_cache_bytes", &[]).unwrap_or(-1.0);
        assert!(bytes > 8_192.0 && bytes <= 65_536.0, "{bytes}");
        let before = origin.count();
        let big = fetch(&client, &proxy, Method::GET, "/big", &[]).await;
        assert_eq!(big.body.len(), 40_000);
        assert!(!status(&big).contains("stored"), "{}", status(&big));
        fetch(&client, &proxy, Method::GET, "/big", &[]).await;
        assert_eq!(origin.count() - before, 2, "passed through uncached");
        // Preconditions the backend must judge (412) are passed to it.
        let judged = fetch(
            &client,
            &proxy,
            Method::GET,
            "/item/1",
            &[("if-match", "\"x\"")],
        )
        .await;
        assert!(
            status(&judged).contains("fwd=bypass"),
            "{}",
            status(&judged)
        );
        let only = fetch(
            &client,
            &proxy,
            Method::GET,
            "/never",
            &[("cache-control", "only-if-cached")],
        )
        .await;
        assert_eq!(only.status, StatusCode::GATEWAY_TIMEOUT);
        proxy.shutdown().await;
    })
    .await;
}

// A response is stored as it streams: the client has its first bytes
// while the backend still holds the rest back, and once the body has
// ended the next request is a hit with all of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_stream_to_the_client_while_they_are_stored() {
    use http_body_util::StreamBody;
    use hyper::body::Frame;
    bounded(async {
        let release = Arc::new(tokio::sync::Notify::new());
        let requests = Arc::new(AtomicUsize::new(0));
        let (gate, count) = (Arc::clone(&release), Arc::clone(&requests));
        let origin = custom(move |_| {
            let gate = Arc::clone(&gate);
            count.fetch_add(1, Relaxed);
            async move {
                let pieces = futures_lite::stream::unfold(0, move |step| {
                    let gate = Arc::clone(&gate);
                    async move {
                        match step {
                            0 => Some((Ok(Frame::data(Bytes::from_static(b"first "))), 1)),
                            1 => {
                                gate.notified().await;
                                Some((Ok(Frame::data(Bytes::from_static(b"last"))), 2))
                            }
                            _ => None,
                        }
                    }
                });
                let mut response = Response::new(BodyExt::boxed(StreamBody::new(pieces)));
                response
                    .headers_mut()
                    .insert("cache-control", "max-age=60".parse().expect("a value"));
                response
            }
        })
        .await;
        let proxy = start(&format!(
            "{}\n[[routes]]\nname = \"all\"\npath = \"/\"\npool = \"web\"\ncache = true\n{}",
            server_section(""),
            pool_at("web", "", &[origin])
        ))
        .await;
        let client = client();
        let request = build(Method::GET, proxy.addr(), "cache.test", "/stream")
            .body(Full::default())
            .expect("a request");
        let response = client.request(request).await.expect("an answer");
        let mut body = response.into_body();
        let first = body
            .frame()
            .await
            .expect("a frame")
            .expect("data")
            .into_data()
            .expect("data");
        assert_eq!(
            &first[..],
            b"first ",
            "before the backend has sent the rest"
        );
        release.notify_one();
        let rest = body.collect().await.expect("the rest").to_bytes();
        assert_eq!(&rest[..], b"last");
        let mut hit = Reply {
            status: StatusCode::OK,
            headers: HeaderMap::new(),
            body: String::new(),
        };
        for _ in 0..50 {
            hit = fetch(&client, &proxy, Method::GET, "/stream", &[]).await;
            if status(&hit).contains("hit") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(status(&hit).contains("hit"), "{}", status(&hit));
        assert_eq!(hit.body, "first last");
        assert_eq!(requests.load(Relaxed), 1);
        proxy.shutdown().await;
    })
    .await;
}

// A client that asks first and then reads slowly holds up nobody: the
// response is read from the backend at the backend's pace into the
// cache, and the misses that waited for it are answered as soon as it is
// stored, not when the slow client has read it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_reader_does_not_hold_up_the_misses_behind_it() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    bounded(async {
        const SIZE: usize = 6 << 20;
        let origin =
            Origin::start(|_, _| Answer::ok(&[("cache-control", "max-age=60")], vec![b'x'; SIZE]))
                .await;
        // Waiters would wait past the test's own bound for the slow client.
        let proxy = cached(
            &origin,
            "max_entry_bytes = 8388608\ncollapse_timeout_ms = 60000",
            "",
        )
        .await;
        let mut slow = tokio::net::TcpStream::connect(proxy.addr())
            .await
            .expect("connects");
        slow.write_all(b"GET /big HTTP/1.1\r\nhost: cache.test\r\n\r\n")
            .await
            .expect("asks");
        let mut head = [0u8; 64];
        let read = slow.read(&mut head).await.expect("the head's start");
        assert!(
            head[..read].starts_with(b"HTTP/1.1 200"),
            "{:?}",
            &head[..read]
        );
        // It reads nothing more; another client asks for the same.
        let client = client();
        let other = fetch(&client, &proxy, Method::GET, "/big", &[]).await;
        assert_eq!(other.body.len(), SIZE);
        assert!(status(&other).contains("hit"), "{}", status(&other));
        assert_eq!(origin.count(), 1);
        drop(slow);
        proxy.shutdown().await;
    })
    .await;
}

// Review findings, each first a failing test.

// A backend's 304 that carries a Set-Cookie or `private` for one client
// never reaches another through the stored entry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_304_for_one_client_does_not_leak_into_the_entry() {
    bounded(async {
        let origin = Origin::start(|request, _| {
            if request.headers.contains_key("if-none-match") {
                return Answer::ok(
                    &[
                        ("cache-control", "private, max-age=60"),
                        ("set-cookie", "session=for-alice"),
                        ("etag", "\"v1\""),
                    ],
                    "",
                )
                .status(304);
            }
            Answer::ok(
                &[("cache-control", "max-age=0"), ("etag", "\"v1\"")],
                "page",
            )
        })
        .await;
        let proxy = cached(&origin, "", "").await;
        let client = client();
        fetch(&client, &proxy, Method::GET, "/p", &[]).await;
        assert!(has_stored(&proxy, 1).await, "the page is stored");
        let alice = fetch(&client, &proxy, Method::GET, "/p", &[]).await;
        assert_eq!(alice.body, "page");
        let bob = fetch(&client, &proxy, Method::GET, "/p", &[]).await;
        assert_eq!(bob.body, "page");
        assert!(bob.headers.get("set-cookie").is_none(), "{:?}", bob.headers);
        assert!(!status(&bob).contains("hit"), "{}", status(&bob));
        proxy.shutdown().await;
    })
    .await;
}

// The port the backend sees is part of the key: a response made for
// `cache.test:1337` is not another port's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_port_the_backend_sees_is_keyed() {
    bounded(async {
        let origin = Origin::start(|request, _| {
            let host = request
                .headers
                .get("host")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned();
            Answer::ok(&[("cache-control", "max-age=60")], host)
        })
        .await;
        let proxy = cached(&origin, "", "").await;
        let client = client();
        let get = |host: &'static str| {
            let client = client.clone();
            let addr = proxy.addr();
            async move {
                let request = build(Method::GET, addr, host, "/login")
                    .body(Full::default())
                    .expect("a request");
                send(&client, request).await.body
            }
        };
        assert_eq!(get("cache.test:1337").await, "cache.test:1337");
        assert_eq!(get("cache.test").await, "cache.test");
        assert_eq!(get("CACHE.test:1337").await, "cache.test:1337", "a hit");
        assert_eq!(origin.count(), 2);
        proxy.shutdown().await;
    })
    .await;
}

// A response with nothing saying it may be shared (no freshness, no
// validator) is not stored: neither a collapsed miss nor an outage hands
// one client's page to another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_without_cache_headers_is_never_shared() {
    bounded(async {
        let failing = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&failing);
        let origin = Origin::start(move |request, _| {
            let user = request
                .headers
                .get("cookie")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned();
            let answer =
                Answer::ok(&[], format!("account of {user}")).after(Duration::from_millis(200));
            if flag.load(Relaxed) {
                answer.status(503)
            } else {
                answer
            }
        })
        .await;
        let proxy = cached(&origin, "", "").await;
        let client = client();
        let (alice, bob) = tokio::join!(
            fetch(
                &client,
                &proxy,
                Method::GET,
                "/account",
                &[("cookie", "user=alice")]
            ),
            fetch(
                &client,
                &proxy,
                Method::GET,
                "/account",
                &[("cookie", "user=bob")]
            ),
        );
        assert_eq!(alice.body, "account of user=alice");
        assert_eq!(bob.body, "account of user=bob");
        failing.store(true, Relaxed);
        let carol = fetch(
            &client,
            &proxy,
            Method::GET,
            "/account",
            &[("cookie", "user=carol")],
        )
        .await;
        assert_eq!(
            carol.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{}",
            carol.body
        );
        proxy.shutdown().await;
    })
    .await;
}

// A full cache keeps storing: new entries push old ones out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_cache_keeps_storing_new_entries() {
    bounded(async {
        let origin =
            Origin::start(|_, _| Answer::ok(&[("cache-control", "max-age=60")], vec![b'x'; 1_000]))
                .await;
        let proxy = cached(&origin, "max_bytes = 65536\nmax_entry_bytes = 16384", "").await;
        let client = client();
        for i in 0..200 {
            fetch(&client, &proxy, Method::GET, &format!("/old/{i}"), &[]).await;
        }
        let mut kept = 0;
        for i in 0..10 {
            let path = format!("/new/{i}");
            fetch(&client, &proxy, Method::GET, &path, &[]).await;
            let again = fetch(&client, &proxy, Method::GET, &path, &[]).await;
            if status(&again).contains("hit") {
                kept += 1;
            }
        }
        assert!(kept >= 8, "{kept} of 10 new entries kept");
        proxy.shutdown().await;
    })
    .await;
}

// Behind a trusted proxy, the forwarding headers that describe the URL
// reach the backend, so they key the response: a response built for one
// `X-Forwarded-Host` is never another's (nor a request's without one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trusted_proxys_url_headers_are_keyed() {
    bounded(async {
        let origin = Origin::start(|request, _| {
            let host = request
                .headers
                .get("x-forwarded-host")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("none")
                .to_owned();
            Answer::ok(&[("cache-control", "max-age=60")], host)
        })
        .await;
        let proxy = start(&format!(
            "{}\n[clients]\ntrusted_proxies = [\"127.0.0.1/32\"]\n\n\
             [[routes]]\nname = \"all\"\npath = \"/\"\npool = \"web\"\ncache = true\n{}",
            server_section(""),
            pool_at("web", "", &[origin.addr])
        ))
        .await;
        let client = client();
        let get = |forwarded: Option<&'static str>| {
            let client = client.clone();
            let proxy = &proxy;
            async move {
                let headers: Vec<(&str, &str)> = forwarded
                    .map(|host| vec![("x-forwarded-host", host)])
                    .unwrap_or_default();
                fetch(&client, proxy, Method::GET, "/login", &headers).await
            }
        };
        // Without one, the proxy writes the host the client named.
        assert_eq!(get(None).await.body, "cache.test");
        assert!(has_stored(&proxy, 1).await, "the plain response is stored");
        assert_eq!(get(Some("evil.test")).await.body, "evil.test");
        assert!(
            has_stored(&proxy, 2).await,
            "evil.test's response is stored"
        );
        let plain = get(None).await;
        assert_eq!(plain.body, "cache.test");
        let evil = get(Some("evil.test")).await;
        assert_eq!(evil.body, "evil.test");
        assert!(status(&evil).contains("hit"), "{}", status(&evil));
        assert_eq!(get(Some("other.test")).await.body, "other.test");
        proxy.shutdown().await;
        // From a peer not trusted, the header is the client's own: dropped
        // before the backend, it keys nothing and finds nothing.
        let proxy = cached(&origin, "", "").await;
        let evil = fetch(
            &client,
            &proxy,
            Method::GET,
            "/login",
            &[("x-forwarded-host", "evil.test")],
        )
        .await;
        assert_eq!(evil.body, "cache.test");
        assert!(has_stored(&proxy, 1).await, "the response is stored");
        let plain = fetch(&client, &proxy, Method::GET, "/login", &[]).await;
        assert_eq!(plain.body, "cache.test");
        assert!(status(&plain).contains("hit"), "{}", status(&plain));
        proxy.shutdown().await;
    })
    .await;
}

/// An origin that streams `first` bytes, then holds the rest until `gate`.
async fn held_stream(
    content_type: &'static str,
    first: usize,
    gate: Arc<tokio::sync::Notify>,
) -> SocketAddr {
    use http_body_util::StreamBody;
    use hyper::body::Frame;
    custom(move |_| {
        let gate = Arc::clone(&gate);
        async move {
            let pieces = futures_lite::stream::unfold(0, move |step| {
                let gate = Arc::clone(&gate);
                async move {
                    match step {
                        0 => Some((Ok(Frame::data(Bytes::from(vec![b'x'; first]))), 1)),
                        1 => {
                            gate.notified().await;
                            Some((Ok(Frame::data(Bytes::from_static(b"end"))), 2))
                        }
                        _ => None,
                    }
                }
            });
            let mut response = Response::new(BodyExt::boxed(StreamBody::new(pieces)));
            let headers = response.headers_mut();
            headers.insert("cache-control", "max-age=60".parse().expect("a value"));
            headers.insert("content-type", content_type.parse().expect("a value"));
            response
        }
    })
    .await
}

/// [`cached`] over an origin given by address.
async fn cached_at(origin: SocketAddr, cache: &str, pool: &str) -> Proxy {
    start(&format!(
        "{}\n[cache]\n{cache}\n\n[[routes]]\nname = \"all\"\npath = \"/\"\npool = \"web\"\ncache = true\n{}",
        server_section(""),
        pool_at("web", pool, &[origin])
    ))
    .await
}

// An event stream is never stored: a second client of the same URI does
// not wait for the first one's stream to end (it never might).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_streams_are_not_stored_nor_waited_for() {
    bounded(async {
        let gate = Arc::new(tokio::sync::Notify::new());
        let origin = held_stream("text/event-stream", 10, Arc::clone(&gate)).await;
        let proxy = cached_at(origin, "collapse_timeout_ms = 60000", "").await;
        let client = client();
        let open = |client: HttpClient| {
            let addr = proxy.addr();
            async move {
                let request = build(Method::GET, addr, "cache.test", "/events")
                    .body(Full::default())
                    .expect("a request");
                let response = client.request(request).await.expect("an answer");
                let mut body = response.into_body();
                let first = body.frame().await.expect("a frame").expect("data");
                (first.into_data().expect("data").len(), body)
            }
        };
        let (first, _one) = open(client.clone()).await;
        assert_eq!(first, 10);
        let (second, _two) = open(client.clone()).await;
        assert_eq!(second, 10, "its own stream, at once");
        gate.notify_waiters();
        proxy.shutdown().await;
    })
    .await;
}

// A response too large to keep, whose client leaves while the backend
// holds the rest: the proxy lets the backend go at once, without waiting
// for a byte that may never come. (The client is on HTTP/2, whose
// stream reset the proxy sees at once.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_leaving_an_uncached_stream_frees_its_backend() {
    bounded(async {
        let gate = Arc::new(tokio::sync::Notify::new());
        let origin = held_stream("text/plain", 20_000, Arc::clone(&gate)).await;
        let proxy = cached_at(
            origin,
            "max_entry_bytes = 16384",
            "algorithm = \"least_conn\"",
        )
        .await;
        let stream = tokio::net::TcpStream::connect(proxy.addr())
            .await
            .expect("connects");
        let (mut sender, connection) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            TokioIo::new(stream),
        )
        .await
        .expect("an h2c connection");
        tokio::spawn(connection);
        let request = Request::get(format!("http://cache.test:{}/big", proxy.addr().port()))
            .body(http_body_util::Empty::<Bytes>::new())
            .expect("a request");
        let response = sender.send_request(request).await.expect("an answer");
        let mut body = response.into_body();
        body.frame().await.expect("a frame").expect("data");
        let active = || {
            proxy
                .pool("web")
                .expect("the pool")
                .active_of(origin.to_string().as_str())
        };
        assert_eq!(active(), Some(1), "the backend is held while it streams");
        drop(body);
        assert!(
            eventually(Duration::from_secs(2), || active() == Some(0)).await,
            "let go when the client left: {:?}",
            active()
        );
        gate.notify_waiters();
        proxy.shutdown().await;
    })
    .await;
}
