//! Review 16: failing tests for defects found in `examples/proxy`. Each
//! test states what should hold; each fails on the reviewed code.

#[path = "../examples/support/backend.rs"]
#[allow(dead_code)]
mod backend;
#[path = "../examples/proxy/server/mod.rs"]
#[allow(dead_code)]
mod server;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::{TokioExecutor, TokioIo};
use loadbalance::BackendState;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use backend::Backend;
use server::config::Config;
use server::Proxy;

const LIMIT: Duration = Duration::from_secs(10);

async fn bounded<F: Future>(test: F) -> F::Output {
    tokio::time::timeout(LIMIT, test)
        .await
        .expect("the test finished within its time limit")
}

fn server_section(extra: &str) -> String {
    format!("[server]\nlisten = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\nwatch_ms = 0\n{extra}\n")
}

fn catch_all(pool: &str) -> String {
    format!("\n[[routes]]\nname = \"all\"\npath = \"/\"\npool = \"{pool}\"\n")
}

fn pool_of(name: &str, extra: &str, servers: &[SocketAddr]) -> String {
    let servers: Vec<String> = servers
        .iter()
        .map(|addr| format!("{{ server = \"{addr}\" }}"))
        .collect();
    let algorithm = if extra.contains("algorithm") {
        ""
    } else {
        "algorithm = \"round_robin\"\n"
    };
    format!(
        "\n[pools.{name}]\n{algorithm}{extra}\nbackends = [{}]\n",
        servers.join(", ")
    )
}

async fn start(toml: &str) -> Proxy {
    let config = Config::parse(toml).expect("the test's configuration parses");
    Proxy::start(config, None)
        .await
        .expect("the proxy starts on loopback")
}

async fn backend(name: &str) -> Backend {
    Backend::start(name).await.expect("a loopback backend")
}

type HttpClient = Client<HttpConnector, Full<Bytes>>;

fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

fn get_request(addr: SocketAddr, host: &str, path: &str) -> Request<Full<Bytes>> {
    Request::builder()
        .method(Method::GET)
        .uri(format!("http://{addr}{path}"))
        .header("host", host)
        .body(Full::default())
        .expect("a valid request")
}

async fn get_status(client: &HttpClient, addr: SocketAddr) -> StatusCode {
    client
        .request(get_request(addr, "site.test", "/"))
        .await
        .expect("the proxy answers")
        .status()
}

/// Reads until the peer closes (or `wait` passes); what was read, and
/// whether the peer closed.
async fn read_all(stream: &mut TcpStream, wait: Duration) -> (String, bool) {
    let mut read = Vec::new();
    let closed = tokio::time::timeout(wait, async {
        let mut buf = [0_u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => read.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .is_ok();
    (String::from_utf8_lossy(&read).into_owned(), closed)
}

async fn eventually(within: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if done() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    done()
}

type Reply = Response<BoxBody<Bytes, Infallible>>;

/// A loopback HTTP/1.1 server answering every request with `respond`,
/// for behaviours `examples/support/backend.rs` does not have.
async fn custom<F, Fut>(respond: F) -> SocketAddr
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Reply> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("binds");
    let addr = listener.local_addr().expect("an address");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let respond = respond.clone();
            let service = hyper::service::service_fn(move |request| {
                let respond = respond.clone();
                async move { Ok::<_, Infallible>(respond(request).await) }
            });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service),
            );
        }
    });
    addr
}

fn full(text: &'static str) -> Reply {
    Response::new(Full::new(Bytes::from_static(text.as_bytes())).boxed())
}

// ---------------------------------------------------------------------
// 1. A client that aborts its own upload gets the backend blamed
//    (forward.rs:289-304): the request body's error surfaces as the
//    backend request's error, is not TooLarge, so `picked.failure()`
//    runs. With max_fails = 1 one aborted POST ejects a healthy backend
//    and every later request gets 503: any client can take backends out.
// ---------------------------------------------------------------------
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_aborting_its_upload_does_not_eject_the_backend() {
    bounded(async {
        // A backend that reads the whole body before it answers.
        let web = custom(|request: Request<Incoming>| async move {
            match request.into_body().collect().await {
                Ok(_) => full("stored"),
                Err(_) => full("broken"),
            }
        })
        .await;
        let toml = format!(
            "{}{}{}",
            server_section("attempts = 1"),
            catch_all("web"),
            pool_of(
                "web",
                "health = { max_fails = 1, fail_timeout_ms = 10000 }",
                &[web]
            )
        );
        let proxy = start(&toml).await;
        let pool = proxy.pool("web").expect("the pool runs");
        let id = web.to_string();

        let mut stream = TcpStream::connect(proxy.addr()).await.expect("connects");
        stream
            .write_all(
                b"POST /upload HTTP/1.1\r\nHost: site.test\r\nContent-Length: 1000\r\n\r\n0123456789",
            )
            .await
            .expect("writes");
        tokio::time::sleep(Duration::from_millis(200)).await;
        // The client gives up on its upload.
        stream.shutdown().await.expect("half-closes");
        let (answer, _) = read_all(&mut stream, Duration::from_secs(2)).await;
        drop(stream);
        tokio::time::sleep(Duration::from_millis(100)).await;

        let stats = pool.stats_of(id.as_str()).expect("in the pool");
        let status = get_status(&client(), proxy.addr()).await;
        assert_eq!(
            (stats.failures, stats.state, status),
            (0, BackendState::Up, StatusCode::OK),
            "a client's broken upload is not the backend's fault; the client saw {:?}; \
             upstream_errors = {}",
            answer.lines().next(),
            proxy.counters().upstream_errors.load(Relaxed)
        );
        proxy.shutdown().await;
    })
    .await;
}

// ---------------------------------------------------------------------
// 2. HeldDown is never cleared when a pool's [checks] section goes away
//    (state.rs:221-253, health.rs, mod.rs restart_checks): every later
//    build re-marks the backend "down" from HeldDown and no check task is
//    left to mark it up. The backend stays out of rotation forever.
// ---------------------------------------------------------------------
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_a_check_releases_the_backends_it_held_down() {
    bounded(async {
        let good = backend("good").await;
        let bad = backend("bad").await;
        let base = format!(
            "{}{}{}",
            server_section(""),
            catch_all("web"),
            pool_of("web", "health = { max_fails = 0 }", &[good.addr, bad.addr])
        );
        let checked = format!(
            "{base}\n[checks.web]\npath = \"/healthz\"\ninterval_ms = 50\ntimeout_ms = 200\n\
             fall = 1\nrise = 1\n"
        );
        let proxy = start(&checked).await;
        let state = |proxy: &Proxy| {
            proxy
                .pool("web")
                .expect("the pool runs")
                .stats_of(bad.addr.to_string().as_str())
                .expect("in the pool")
                .state
        };
        bad.control.unhealthy.store(true, Relaxed);
        assert!(
            eventually(Duration::from_secs(2), || state(&proxy)
                == BackendState::Down)
            .await,
            "marked down by the check"
        );
        // The operator drops the check; the backend is healthy again.
        proxy
            .apply(Config::parse(&base).expect("parses"))
            .await
            .expect("applies");
        bad.control.unhealthy.store(false, Relaxed);
        let released =
            eventually(Duration::from_secs(2), || state(&proxy) == BackendState::Up).await;
        assert!(
            released,
            "with no check left, the configured state (up) rules; still {:?}",
            state(&proxy)
        );
        proxy.shutdown().await;
    })
    .await;
}

// ---------------------------------------------------------------------
// 3. A reload that changes a pool's algorithm builds a fresh pool
//    (state.rs:290-310) whose counts start at 0 while the old pool's
//    requests are still in flight: max_conns is exceeded (and passive
//    health, slow start and ejections are lost the same way).
// ---------------------------------------------------------------------
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_algorithm_change_is_refused_so_max_conns_holds_for_requests_in_flight() {
    bounded(async {
        let web = backend("web").await;
        web.control
            .set_delay(Duration::from_millis(600), Duration::ZERO);
        let toml = |algorithm: &str| {
            format!(
                "{}{}\n[pools.web]\nalgorithm = \"{algorithm}\"\n\
                 backends = [{{ server = \"{}\", max_conns = 1 }}]\n",
                server_section("pick_timeout_ms = 3000"),
                catch_all("web"),
                web.addr
            )
        };
        let proxy = start(&toml("round_robin")).await;
        let addr = proxy.addr();
        let first = tokio::spawn(async move { get_status(&client(), addr).await });
        assert!(
            eventually(Duration::from_secs(2), || web
                .control
                .in_flight
                .load(Relaxed)
                == 1)
            .await
        );
        // A running pool keeps its algorithm: a new one would not count
        // the request in flight against max_conns. The reload is refused
        // and the old pool keeps serving.
        let refused = proxy
            .apply(Config::parse(&toml("least_conn")).expect("parses"))
            .await;
        assert!(
            matches!(&refused, Err(e) if e.to_string().contains("pools.web.algorithm")),
            "{refused:?}"
        );
        let second = tokio::spawn(async move { get_status(&client(), addr).await });
        assert_eq!(first.await.expect("first"), StatusCode::OK);
        assert_eq!(second.await.expect("second"), StatusCode::OK);
        assert_eq!(
            web.control.peak_in_flight.load(Relaxed),
            1,
            "max_conns = 1 held across the reload"
        );
        proxy.shutdown().await;
    })
    .await;
}

// ---------------------------------------------------------------------
// 4. The idle clock runs while the proxy waits on the *backend* for the
//    next chunk of a response (idle.rs: Busy ends when the service returns
//    the head). A stream whose backend pauses longer than idle_timeout_ms
//    is cut although the client reads everything at once; there is no
//    separate upstream read timeout.
// ---------------------------------------------------------------------
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_pausing_mid_stream_is_not_cut_by_the_client_idle_bound() {
    bounded(async {
        let web = custom(|_request: Request<Incoming>| async move {
            let frames = futures_lite::stream::unfold(0_u8, |step| async move {
                match step {
                    0 => Some((Ok(Frame::data(Bytes::from_static(b"a"))), 1)),
                    1 => {
                        tokio::time::sleep(Duration::from_millis(700)).await;
                        Some((Ok(Frame::data(Bytes::from_static(b"b"))), 2))
                    }
                    _ => None,
                }
            });
            Response::new(BodyExt::boxed(StreamBody::new(frames)))
        })
        .await;
        let toml = format!(
            "{}{}{}",
            server_section("idle_timeout_ms = 300\nupstream_timeout_ms = 5000"),
            catch_all("web"),
            pool_of("web", "", &[web])
        );
        let proxy = start(&toml).await;
        let response = client()
            .request(get_request(proxy.addr(), "site.test", "/sse"))
            .await
            .expect("a head");
        assert_eq!(response.status(), StatusCode::OK);
        let body = response.into_body().collect().await.map(|b| b.to_bytes());
        assert!(
            matches!(&body, Ok(bytes) if bytes.as_ref() == b"ab"),
            "the whole stream reaches a reading client: {body:?}"
        );
        proxy.shutdown().await;
    })
    .await;
}

// ---------------------------------------------------------------------
// 5. Two Host headers are forwarded (forward.rs:107-114 routes on the
//    first, the backend may use another). RFC 9112 §3.2: a server MUST
//    answer 400 to a request with more than one Host line.
// ---------------------------------------------------------------------
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_host_headers_are_refused() {
    bounded(async {
        let public = backend("public").await;
        let admin = backend("admin").await;
        let toml = format!(
            "{}\n[[routes]]\nname = \"admin\"\nhost = \"admin.test\"\npath = \"/\"\npool = \"admin\"\n\
             \n[[routes]]\nname = \"public\"\npath = \"/\"\npool = \"public\"\n{}{}",
            server_section(""),
            pool_of("public", "", &[public.addr]),
            pool_of("admin", "", &[admin.addr]),
        );
        let proxy = start(&toml).await;
        let mut stream = TcpStream::connect(proxy.addr()).await.expect("connects");
        stream
            .write_all(
                b"GET / HTTP/1.1\r\nHost: www.test\r\nHost: admin.test\r\nConnection: close\r\n\r\n",
            )
            .await
            .expect("writes");
        let (answer, _) = read_all(&mut stream, Duration::from_secs(2)).await;
        let seen = public
            .control
            .last_headers
            .lock()
            .clone()
            .map(|h| h.get_all("host").iter().cloned().collect::<Vec<_>>());
        assert!(
            answer.starts_with("HTTP/1.1 400"),
            "answered {:?}; the backend saw Host {seen:?}",
            answer.lines().next()
        );
        proxy.shutdown().await;
    })
    .await;
}

// ---------------------------------------------------------------------
// 6. `Connection: host` makes strip_hop_by_hop (headers.rs:238-254) drop
//    Host; hyper's client then writes the backend's own address, so the
//    backend sees another Host than the one the proxy routed on.
// ---------------------------------------------------------------------
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_header_cannot_remove_host() {
    bounded(async {
        let web = backend("web").await;
        let toml = format!(
            "{}{}{}",
            server_section(""),
            catch_all("web"),
            pool_of("web", "", &[web.addr])
        );
        let proxy = start(&toml).await;
        let mut stream = TcpStream::connect(proxy.addr()).await.expect("connects");
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: shop.test\r\nConnection: close, host\r\n\r\n")
            .await
            .expect("writes");
        let (answer, _) = read_all(&mut stream, Duration::from_secs(2)).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
        let seen = web
            .control
            .last_headers
            .lock()
            .clone()
            .expect("the backend saw the request");
        assert_eq!(
            seen.get("host")
                .map(|h| h.to_str().expect("ascii").to_owned()),
            Some("shop.test".to_owned())
        );
        proxy.shutdown().await;
    })
    .await;
}

// ---------------------------------------------------------------------
// 7. The admin listener (admin.rs:481-509) serves connections with no
//    header timeout and never closes them: a client that sends half a
//    head holds a connection (and a task) forever, even after shutdown.
// ---------------------------------------------------------------------
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_sent_admin_request_is_cut_at_the_header_timeout() {
    bounded(async {
        let web = backend("web").await;
        let toml = format!(
            "{}{}{}",
            server_section("header_timeout_ms = 300"),
            catch_all("web"),
            pool_of("web", "", &[web.addr])
        );
        let proxy = start(&toml).await;
        let mut stream = TcpStream::connect(proxy.admin_addr())
            .await
            .expect("connects");
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
            .await
            .expect("writes");
        let (_, closed) = read_all(&mut stream, Duration::from_secs(2)).await;
        assert!(closed, "a half-sent head on the admin port outlived 2 s");
        proxy.shutdown().await;
    })
    .await;
}
