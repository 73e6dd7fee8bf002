//! gRPC's needs through the proxy (issue 25, first part): HTTP/2 from the
//! client by prior knowledge (h2c) and to `protocol = "h2c"` pools,
//! `TE: trailers` passed on, trailers carried back, a call's failing
//! status reaching the client, and UNAVAILABLE counted against the backend
//! and retried on another. The backends and the client here speak gRPC's
//! framing over hyper's HTTP/2.

use crate::harness::*;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::HeaderMap;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use loadbalance::BackendState;
use tokio::net::{TcpListener, TcpStream};

/// An h2c gRPC-like backend: answers `/echo.Echo/Say` with the request's
/// message and trailers `grpc-status: 0`, `x-served-by: name`; or, when
/// `unavailable`, a trailers-only UNAVAILABLE. Counts its calls and the
/// calls that came with `TE: trailers`.
async fn grpc_backend(name: &'static str, unavailable: bool) -> (SocketAddr, Arc<[AtomicU64; 2]>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("binds");
    let addr = listener.local_addr().expect("an address");
    let counts: Arc<[AtomicU64; 2]> = Arc::new([AtomicU64::new(0), AtomicU64::new(0)]);
    let served = Arc::clone(&counts);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let served = Arc::clone(&served);
            let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                let served = Arc::clone(&served);
                async move {
                    served[0].fetch_add(1, Relaxed);
                    if request
                        .headers()
                        .get("te")
                        .is_some_and(|te| te == "trailers")
                    {
                        served[1].fetch_add(1, Relaxed);
                    }
                    if unavailable {
                        let mut response = Response::new(
                            StreamBody::new(futures_lite::stream::empty::<
                                Result<Frame<Bytes>, Infallible>,
                            >())
                            .boxed(),
                        );
                        let headers = response.headers_mut();
                        headers
                            .insert("content-type", "application/grpc".parse().expect("a value"));
                        headers.insert("grpc-status", "14".parse().expect("a value"));
                        return Ok::<_, Infallible>(response);
                    }
                    let message = request
                        .into_body()
                        .collect()
                        .await
                        .map(|c| c.to_bytes())
                        .unwrap_or_default();
                    let mut trailers = HeaderMap::new();
                    trailers.insert("grpc-status", "0".parse().expect("a value"));
                    trailers.insert("x-served-by", name.parse().expect("a value"));
                    let frames = futures_lite::stream::iter([
                        Ok::<_, Infallible>(Frame::data(message)),
                        Ok(Frame::trailers(trailers)),
                    ]);
                    let mut response = Response::new(StreamBody::new(frames).boxed());
                    response
                        .headers_mut()
                        .insert("content-type", "application/grpc".parse().expect("a value"));
                    Ok(response)
                }
            });
            tokio::spawn(
                hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service),
            );
        }
    });
    (addr, counts)
}

/// A gRPC call over h2c to the proxy: the message, its trailers.
async fn call(
    proxy: SocketAddr,
    message: &'static [u8],
) -> (u16, Bytes, Option<HeaderMap>, HeaderMap) {
    let stream = TcpStream::connect(proxy).await.expect("connects");
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("an h2c connection");
    tokio::spawn(connection);
    let request = Request::post(format!("http://grpc.test:{}/echo.Echo/Say", proxy.port()))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Full::new(Bytes::from_static(message)))
        .expect("a request");
    let response = sender.send_request(request).await.expect("an answer");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let collected = response.into_body().collect().await.expect("the body");
    let trailers = collected.trailers().cloned();
    (status, collected.to_bytes(), trailers, headers)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_calls_pass_through_with_trailers_and_unavailable_is_retried() {
    bounded(async {
        let (good, good_counts) = grpc_backend("good", false).await;
        let (bad, bad_counts) = grpc_backend("bad", true).await;
        let toml = format!(
            "{}{}{}\n[upstreams.grpc]\nprotocol = \"h2c\"\n",
            server_section("attempts = 2"),
            catch_all("grpc"),
            pool_at("grpc", "health = { max_fails = 0 }", &[good, bad])
        );
        let proxy = start(&toml).await;
        for _ in 0..6 {
            let (status, message, trailers, _) =
                call(proxy.addr(), b"\x00\x00\x00\x00\x02hi").await;
            assert_eq!(status, 200);
            assert_eq!(&message[..], b"\x00\x00\x00\x00\x02hi");
            let trailers = trailers.expect("trailers carried back");
            assert_eq!(trailers["grpc-status"], "0");
            assert_eq!(trailers["x-served-by"], "good");
        }
        // Round-robin sent half the calls to the UNAVAILABLE backend first;
        // each was retried on the good one.
        let bad_calls = bad_counts[0].load(Relaxed);
        assert!(bad_calls >= 2, "{bad_calls} calls tried bad first");
        assert_eq!(good_counts[0].load(Relaxed), 6);
        assert_eq!(proxy.counters().retries.load(Relaxed), bad_calls);
        // `TE: trailers` reached both.
        assert_eq!(good_counts[1].load(Relaxed), 6);
        assert_eq!(bad_counts[1].load(Relaxed), bad_calls);
        let pool = proxy.pool("grpc").expect("the pool");
        let stats = pool
            .stats_of(bad.to_string().as_str())
            .expect("in the pool");
        assert_eq!(stats.failures, bad_calls, "UNAVAILABLE counts against it");
        assert_eq!(
            pool.stats_of(good.to_string().as_str())
                .expect("in")
                .failures,
            0
        );
        proxy.shutdown().await;

        // With the good backend gone, the client gets the call's status.
        let toml = format!(
            "{}{}{}\n[upstreams.grpc]\nprotocol = \"h2c\"\n",
            server_section("attempts = 1"),
            catch_all("grpc"),
            pool_at("grpc", "health = { max_fails = 0 }", &[bad])
        );
        let proxy = start(&toml).await;
        let (status, _, _, headers) = call(proxy.addr(), b"\x00\x00\x00\x00\x02hi").await;
        assert_eq!(status, 200);
        assert_eq!(headers["grpc-status"], "14");
        assert_eq!(
            proxy
                .pool("grpc")
                .expect("the pool")
                .stats_of(bad.to_string().as_str())
                .expect("in")
                .state,
            BackendState::Up,
            "max_fails = 0: counted, never ejected"
        );
        proxy.shutdown().await;
    })
    .await;
}

/// An h2c server of gRPC's health checking protocol: answers `Check`
/// SERVING while `serving`, else NOT_SERVING; keeps the last service
/// name asked for.
async fn health_backend(
    serving: Arc<std::sync::atomic::AtomicBool>,
    asked: Arc<parking_lot::Mutex<Vec<u8>>>,
) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("binds");
    let addr = listener.local_addr().expect("an address");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (serving, asked) = (Arc::clone(&serving), Arc::clone(&asked));
            let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                let (serving, asked) = (Arc::clone(&serving), Arc::clone(&asked));
                async move {
                    assert_eq!(request.uri().path(), "/grpc.health.v1.Health/Check");
                    let framed = request
                        .into_body()
                        .collect()
                        .await
                        .map(|c| c.to_bytes())
                        .unwrap_or_default();
                    // Flag, length, then field 1: tag, length, the name.
                    *asked.lock() = framed.get(7..).map(<[u8]>::to_vec).unwrap_or_default();
                    let status = if serving.load(Relaxed) { 1 } else { 2 };
                    let mut trailers = HeaderMap::new();
                    trailers.insert("grpc-status", "0".parse().expect("a value"));
                    let frames = futures_lite::stream::iter([
                        Ok::<_, Infallible>(Frame::data(Bytes::from(vec![
                            0, 0, 0, 0, 2, 0x08, status,
                        ]))),
                        Ok(Frame::trailers(trailers)),
                    ]);
                    Ok::<_, Infallible>(Response::new(StreamBody::new(frames)))
                }
            });
            tokio::spawn(
                hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service),
            );
        }
    });
    addr
}

// Issue 25, 4: active checks speak gRPC's health checking protocol.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_health_checks_mark_backends_down_and_up() {
    bounded(async {
        let serving = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let asked = Arc::new(parking_lot::Mutex::new(Vec::new()));
        let backend = health_backend(Arc::clone(&serving), Arc::clone(&asked)).await;
        let toml = format!(
            "{}{}{}\n[upstreams.grpc]\nprotocol = \"h2c\"\n\
             \n[checks.grpc]\ngrpc_service = \"echo.Echo\"\ninterval_ms = 50\ntimeout_ms = 500\nfall = 2\nrise = 2\n",
            server_section(""),
            catch_all("grpc"),
            pool_at("grpc", "", &[backend])
        );
        let proxy = start(&toml).await;
        let state = || {
            proxy
                .pool("grpc")
                .expect("the pool")
                .stats_of(backend.to_string().as_str())
                .expect("in the pool")
                .state
        };
        assert!(
            eventually(Duration::from_secs(2), || asked.lock().as_slice() == b"echo.Echo").await,
            "the check names its service"
        );
        assert_eq!(state(), BackendState::Up);
        serving.store(false, Relaxed);
        assert!(
            eventually(Duration::from_secs(2), || state() == BackendState::Down).await,
            "NOT_SERVING marks it down"
        );
        serving.store(true, Relaxed);
        assert!(
            eventually(Duration::from_secs(2), || state() == BackendState::Up).await,
            "SERVING marks it up"
        );
        proxy.shutdown().await;
        // A gRPC check on a pool that speaks HTTP/1.1 is refused.
        let bad = toml.replace("protocol = \"h2c\"", "protocol = \"http1\"");
        let error = loadbalance_proxy::Config::parse(&bad).expect_err("refused");
        assert!(error.to_string().contains("checks.grpc.grpc_service"), "{error}");
    })
    .await;
}

/// A tonic server with gRPC's health service, `echo` SERVING; its
/// reporter to change that.
async fn tonic_health_server() -> (SocketAddr, tonic_health::server::HealthReporter) {
    let (reporter, service) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("echo", tonic_health::ServingStatus::Serving)
        .await;
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("binds");
    let addr = listener.local_addr().expect("an address");
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(incoming),
    );
    (addr, reporter)
}

// Issue 25, 4, with real gRPC on both sides (tonic): a unary call, a
// server-streaming one that outlives a status change, and an error
// status, all through the proxy (h2c from the client, h2c to the pool).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tonic_calls_pass_through_unary_streaming_and_errors() {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;

    bounded(async {
        let (server, reporter) = tonic_health_server().await;
        let toml = format!(
            "{}{}{}\n[upstreams.grpc]\nprotocol = \"h2c\"\n",
            server_section(""),
            catch_all("grpc"),
            pool_at("grpc", "", &[server])
        );
        let proxy = start(&toml).await;
        let channel = tonic::transport::Channel::from_shared(format!("http://{}", proxy.addr()))
            .expect("a URI")
            .connect()
            .await
            .expect("connects through the proxy");
        let mut client = HealthClient::new(channel);
        let ask = |service: &str| {
            tonic::Request::new(HealthCheckRequest {
                service: service.to_owned(),
            })
        };
        // Unary.
        let answer = client.check(ask("echo")).await.expect("answered");
        assert_eq!(answer.into_inner().status(), ServingStatus::Serving);
        // An error status, with its message, from the server's trailers.
        let error = client
            .check(ask("unknown"))
            .await
            .expect_err("an error status");
        assert_eq!(error.code(), tonic::Code::NotFound, "{error:?}");
        // Server streaming: the current status, then a change.
        let mut watch = client
            .watch(ask("echo"))
            .await
            .expect("a stream")
            .into_inner();
        let first = watch.message().await.expect("a message").expect("one");
        assert_eq!(first.status(), ServingStatus::Serving);
        reporter
            .set_service_status("echo", tonic_health::ServingStatus::NotServing)
            .await;
        let next = watch.message().await.expect("a message").expect("one");
        assert_eq!(next.status(), ServingStatus::NotServing);
        drop(watch);
        proxy.shutdown().await;
    })
    .await;
}
