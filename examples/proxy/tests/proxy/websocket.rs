//! WebSocket tunnels through the proxy (issue 25): a real client and
//! server (tokio-tungstenite). Messages echo both ways; the backend is
//! counted active until the tunnel closes; an idle tunnel is closed at
//! the idle bound; one client's tunnels are limited; shutdown ends
//! tunnels after the grace period. WebSocket over HTTP/2 (RFC 8441)
//! reaches the same backends: hyper's HTTP/2 client opens the extended
//! CONNECT, tungstenite speaks WebSocket on the stream.

use crate::harness::*;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use hyper::ext::Protocol;
use hyper::upgrade::Upgraded;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use loadbalance_proxy::Proxy;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::{WebSocketStream, client_async};

/// A WebSocket server that echoes every message, prefixed with `name`.
async fn echo_server(name: &'static str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("binds");
    let addr = listener.local_addr().expect("an address");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut socket) = tokio_tungstenite::accept_async(stream).await else {
                    return;
                };
                while let Some(Ok(message)) = socket.next().await {
                    let reply = match message {
                        Message::Text(text) => Message::Text(format!("{name}: {text}")),
                        Message::Close(_) => break,
                        other => other,
                    };
                    if socket.send(reply).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

/// A proxy over WebSocket backends `servers`, `extra` in `[server]`.
async fn ws_proxy(servers: &[SocketAddr], extra: &str) -> Proxy {
    start(&format!(
        "{}{}{}",
        server_section(extra),
        catch_all("ws"),
        pool_at("ws", "algorithm = \"least_conn\"", servers)
    ))
    .await
}

/// A WebSocket through the proxy at `addr`.
async fn connect(addr: SocketAddr) -> Result<WebSocketStream<TcpStream>, String> {
    let stream = TcpStream::connect(addr).await.expect("connects");
    client_async(format!("ws://chat.test:{}/socket", addr.port()), stream)
        .await
        .map(|(socket, _)| socket)
        .map_err(|e| e.to_string())
}

/// An HTTP/2 connection to the proxy at `addr` (h2c, by prior knowledge).
async fn h2c(
    addr: SocketAddr,
) -> hyper::client::conn::http2::SendRequest<http_body_util::Empty<bytes::Bytes>> {
    let stream = TcpStream::connect(addr).await.expect("connects");
    let (sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("an h2c connection");
    tokio::spawn(connection);
    sender
}

type OverH2 = WebSocketStream<TokioIo<Upgraded>>;

/// A WebSocket over HTTP/2 (RFC 8441) on `sender`'s connection: an
/// extended CONNECT with `:protocol` `protocol`; the refusal's status.
async fn connect_h2(
    sender: &mut hyper::client::conn::http2::SendRequest<http_body_util::Empty<bytes::Bytes>>,
    port: u16,
    protocol: Option<&'static str>,
) -> Result<OverH2, StatusCode> {
    let mut request = Request::builder()
        .method(Method::CONNECT)
        .uri(format!("http://chat.test:{port}/socket"))
        .header("sec-websocket-version", "13")
        .body(http_body_util::Empty::new())
        .expect("a request");
    if let Some(protocol) = protocol {
        request
            .extensions_mut()
            .insert(Protocol::from_static(protocol));
    }
    sender.ready().await.expect("the connection is up");
    let response = sender.send_request(request).await.expect("an answer");
    if response.status() != StatusCode::OK {
        return Err(response.status());
    }
    let stream = hyper::upgrade::on(response)
        .await
        .expect("the stream opens");
    Ok(WebSocketStream::from_raw_socket(TokioIo::new(stream), Role::Client, None).await)
}

async fn echo<S>(socket: &mut WebSocketStream<S>, text: &str) -> String
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    socket
        .send(Message::Text(text.to_owned()))
        .await
        .expect("sends");
    match socket.next().await {
        Some(Ok(Message::Text(reply))) => reply,
        other => panic!("no echo: {other:?}"),
    }
}

/// Closes both sockets with the close handshake, then lets their
/// connections go.
async fn close_both<S>(mut first: WebSocketStream<S>, mut second: WebSocketStream<S>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    first.close(None).await.expect("closes");
    second.close(None).await.expect("closes");
}

/// Whether `servers` are all back to no active pick within 2 s.
async fn released(proxy: &Proxy, servers: [SocketAddr; 2]) -> bool {
    eventually(Duration::from_secs(2), || {
        servers.iter().all(|s| active(proxy, *s) == Some(0))
    })
    .await
}

fn active(proxy: &Proxy, server: SocketAddr) -> Option<usize> {
    proxy
        .pool("ws")
        .expect("the pool")
        .active_of(server.to_string().as_str())
}

// Messages echo both ways; the backend stays picked (active) for the
// tunnel's life, so least-connections sends the next tunnel elsewhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websockets_echo_through_and_hold_their_backend() {
    bounded(async {
        let one = echo_server("one").await;
        let two = echo_server("two").await;
        let proxy = ws_proxy(&[one, two], "").await;
        let mut first = connect(proxy.addr()).await.expect("a tunnel");
        let first_reply = echo(&mut first, "hello").await;
        let (first_server, other) = if first_reply.starts_with("one") {
            (one, two)
        } else {
            (two, one)
        };
        for n in 0..20 {
            let reply = echo(&mut first, &format!("message {n}")).await;
            assert!(reply.ends_with(&format!("message {n}")), "{reply}");
        }
        assert_eq!(active(&proxy, first_server), Some(1), "held while open");
        // Least-connections sees the open tunnel.
        let mut second = connect(proxy.addr()).await.expect("a tunnel");
        let reply = echo(&mut second, "hi").await;
        let expected = if other == one { "one: hi" } else { "two: hi" };
        assert_eq!(reply, expected);
        let scrape = parse_metrics(&proxy.metrics());
        assert_eq!(sample(&scrape, "proxy_tunnels", &[]), Some(2.0));
        close_both(first, second).await;
        assert!(released(&proxy, [one, two]).await, "released at close");
        proxy.shutdown().await;
    })
    .await;
}

// An idle tunnel is closed at the idle bound; one client's tunnels are
// limited (429 past it); a handshake the backend refuses is its answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_tunnels_close_and_each_client_has_a_limit() {
    bounded(async {
        let server = echo_server("one").await;
        let proxy = ws_proxy(
            &[server],
            "idle_timeout_ms = 300\nmax_tunnels_per_client = 2",
        )
        .await;
        let mut idle = connect(proxy.addr()).await.expect("a tunnel");
        let opened = Instant::now();
        let _busy = connect(proxy.addr()).await.expect("a second tunnel");
        let refused = connect(proxy.addr()).await.expect_err("a third is refused");
        assert!(refused.contains("429"), "{refused}");
        // Nothing either way: the tunnel is closed at the idle bound.
        let end = idle.next().await;
        assert!(
            matches!(end, None | Some(Err(_)) | Some(Ok(Message::Close(_)))),
            "{end:?}"
        );
        let lasted = opened.elapsed();
        assert!(
            lasted >= Duration::from_millis(250) && lasted < Duration::from_secs(3),
            "closed after {lasted:?}"
        );
        proxy.shutdown().await;
    })
    .await;
}

// Shutdown lets an open tunnel run until the grace period ends, then
// closes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_tunnels_after_the_grace_period() {
    bounded(async {
        let server = echo_server("one").await;
        let proxy = ws_proxy(&[server], "shutdown_grace_ms = 400").await;
        let mut socket = connect(proxy.addr()).await.expect("a tunnel");
        assert_eq!(echo(&mut socket, "before").await, "one: before");
        let started = Instant::now();
        let shutdown = tokio::spawn(proxy.shutdown());
        tokio::time::sleep(Duration::from_millis(100)).await;
        // Still open within the grace period.
        assert_eq!(echo(&mut socket, "during").await, "one: during");
        let end = socket.next().await;
        assert!(
            matches!(end, None | Some(Err(_)) | Some(Ok(Message::Close(_)))),
            "{end:?}"
        );
        let lasted = started.elapsed();
        assert!(
            lasted >= Duration::from_millis(350),
            "closed after {lasted:?}, within the grace"
        );
        shutdown.await.expect("shutdown ends");
    })
    .await;
}

// WebSocket over HTTP/2 (RFC 8441): two sockets on one HTTP/2
// connection, each its own tunnel to an HTTP/1.1 WebSocket backend,
// echoing both ways and holding its backend (least-connections sends the
// second elsewhere) until it closes. Only CONNECT for WebSocket opens
// one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websockets_over_http2_are_tunnelled_to_http1_backends() {
    bounded(async {
        let one = echo_server("one").await;
        let two = echo_server("two").await;
        let proxy = ws_proxy(&[one, two], "").await;
        let port = proxy.addr().port();
        let mut connection = h2c(proxy.addr()).await;
        let mut first = connect_h2(&mut connection, port, Some("websocket"))
            .await
            .expect("a tunnel");
        let mut second = connect_h2(&mut connection, port, Some("websocket"))
            .await
            .expect("a second tunnel");
        let first_reply = echo(&mut first, "hello").await;
        let second_reply = echo(&mut second, "hello").await;
        let mut names = [&first_reply[..3], &second_reply[..3]];
        names.sort_unstable();
        assert_eq!(names, ["one", "two"], "{first_reply}, {second_reply}");
        for n in 0..20 {
            let reply = echo(&mut first, &format!("message {n}")).await;
            assert!(reply.ends_with(&format!("message {n}")), "{reply}");
        }
        assert_eq!(active(&proxy, one), Some(1), "held while open");
        assert_eq!(active(&proxy, two), Some(1), "held while open");
        let scrape = parse_metrics(&proxy.metrics());
        assert_eq!(sample(&scrape, "proxy_tunnels", &[]), Some(2.0));

        // No tunnel to an address, nor for another protocol.
        for protocol in [None, Some("connect-udp")] {
            let refused = connect_h2(&mut connection, port, protocol).await;
            assert_eq!(
                refused.err(),
                Some(StatusCode::METHOD_NOT_ALLOWED),
                "{protocol:?}"
            );
        }
        close_both(first, second).await;
        assert!(released(&proxy, [one, two]).await, "released at close");
        proxy.shutdown().await;
    })
    .await;
}

/// A backend that answers every request with `head` and waits.
async fn answering(head: &'static str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("binds");
    let addr = listener.local_addr().expect("an address");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buffer = [0u8; 4096];
                let mut read = 0;
                while !buffer[..read].windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buffer[read..]).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => read += n,
                    }
                    if read == buffer.len() {
                        return;
                    }
                }
                let _ = stream.write_all(head.as_bytes()).await;
                tokio::time::sleep(Duration::from_secs(2)).await;
            });
        }
    });
    addr
}

// A backend that does not switch as asked never opens the client's
// HTTP/2 stream: a 101 with another handshake's accept, and a 200 (which
// would read as the tunnel opened), are the proxy's 502; a refusal is
// relayed as it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_over_http2_opens_only_on_the_backends_right_switch() {
    bounded(async {
        let cases = [
            (
                "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n\
                 connection: upgrade\r\n\
                 sec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n",
                StatusCode::BAD_GATEWAY,
            ),
            (
                "HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n",
                StatusCode::BAD_GATEWAY,
            ),
            (
                "HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\n\r\n",
                StatusCode::FORBIDDEN,
            ),
        ];
        for (head, expected) in cases {
            let backend = answering(head).await;
            let proxy = ws_proxy(&[backend], "").await;
            let mut connection = h2c(proxy.addr()).await;
            let answer = connect_h2(&mut connection, proxy.addr().port(), Some("websocket")).await;
            assert_eq!(answer.err(), Some(expected), "{head}");
            let scrape = parse_metrics(&proxy.metrics());
            assert_eq!(sample(&scrape, "proxy_tunnels", &[]), Some(0.0), "{head}");
            proxy.shutdown().await;
        }
    })
    .await;
}

// A tunnel is HTTP/1.1's to its backend: asked of a pool that speaks h2c
// it is refused (501), not sent where no backend can switch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tunnels_to_an_h2c_pool_are_refused() {
    bounded(async {
        let server = echo_server("one").await;
        let proxy = start(&format!(
            "{}{}{}\n[upstreams.ws]\nprotocol = \"h2c\"\n",
            server_section(""),
            catch_all("ws"),
            pool_at("ws", "", &[server])
        ))
        .await;
        let refused = connect(proxy.addr()).await.expect_err("refused");
        assert!(refused.contains("501"), "{refused}");
        let mut connection = h2c(proxy.addr()).await;
        let answer = connect_h2(&mut connection, proxy.addr().port(), Some("websocket")).await;
        assert_eq!(answer.err(), Some(StatusCode::NOT_IMPLEMENTED));
        assert_eq!(active(&proxy, server), Some(0));
        proxy.shutdown().await;
    })
    .await;
}
