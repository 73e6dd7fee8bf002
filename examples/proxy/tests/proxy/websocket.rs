//! WebSocket tunnels through the proxy (issue 25): a real client and
//! server (tokio-tungstenite). Messages echo both ways; the backend is
//! counted active until the tunnel closes; an idle tunnel is closed at
//! the idle bound; one client's tunnels are limited; shutdown ends
//! tunnels after the grace period.

use crate::harness::*;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use loadbalance_proxy::Proxy;
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;
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

async fn echo(socket: &mut WebSocketStream<TcpStream>, text: &str) -> String {
    socket
        .send(Message::Text(text.to_owned()))
        .await
        .expect("sends");
    match socket.next().await {
        Some(Ok(Message::Text(reply))) => reply,
        other => panic!("no echo: {other:?}"),
    }
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
        first.close(None).await.expect("closes");
        second.close(None).await.expect("closes");
        // The close handshake done, the clients let their connections go.
        drop((first, second));
        assert!(
            eventually(Duration::from_secs(2), || active(&proxy, one) == Some(0)
                && active(&proxy, two) == Some(0))
            .await,
            "released at close"
        );
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
