//! The proxy against hostile clients over loopback: a client that would
//! make the proxy blame a backend, escape a route, forge its identity,
//! spoof what the backend learns, crowd out other clients' connections,
//! name a host it should not, or frame a body two ways. Each class with
//! several payloads, each test bounded in time; at the end, what held
//! before issue 24 (request smuggling, slowloris, sizes, stalls, spoofed
//! addresses).

use crate::harness::*;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use loadbalance::BackendState;
use loadbalance_proxy::{Config, Proxy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

/// A backend that reads the whole request body, then answers `stored`.
async fn reader() -> SocketAddr {
    custom(|request: Request<Incoming>| async move {
        let text = match request.into_body().collect().await {
            Ok(_) => "stored",
            Err(_) => "broken",
        };
        Response::new(Full::new(Bytes::from_static(text.as_bytes())).boxed())
    })
    .await
}

/// A backend that answers with the target it received.
async fn target_echo() -> SocketAddr {
    custom(|request: Request<Incoming>| async move {
        let target = request.uri().to_string();
        Response::new(Full::new(Bytes::from(target)).boxed())
    })
    .await
}

/// The status line's code of a raw answer.
fn status_of(answer: &str) -> &str {
    answer.get(9..12).unwrap_or("")
}

/// The body of a raw answer (after the head).
fn body_of(answer: &str) -> &str {
    answer.split_once("\r\n\r\n").map_or("", |(_, body)| body)
}

// Issue 24, 1: a client that declares a body and stalls gets a 408 of its
// own, and the backend is not charged, however short the upstream
// timeout; a slow but steady upload is not cut by the upstream timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_stalling_its_body_gets_408_and_blames_no_backend() {
    bounded(async {
        let servers = [reader().await, reader().await];
        let toml = format!(
            "{}{}{}",
            server_section(
                "attempts = 1\nupstream_timeout_ms = 200\nclient_body_timeout_ms = 400"
            ),
            catch_all("web"),
            pool_at(
                "web",
                "health = { max_fails = 1, fail_timeout_ms = 10000, when_all_ejected = \"fail\" }",
                &servers
            )
        );
        let proxy = start(&toml).await;
        let payloads: [&'static [u8]; 4] = [
            b"POST /upload HTTP/1.1\r\nHost: site.test\r\nContent-Length: 10\r\n\r\nx",
            b"PUT /upload HTTP/1.1\r\nHost: site.test\r\nContent-Length: 5\r\n\r\n",
            b"POST /upload HTTP/1.1\r\nHost: site.test\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n",
            b"POST /upload HTTP/1.1\r\nHost: site.test\r\nTransfer-Encoding: chunked\r\n\r\n",
        ];
        let mut stalls = Vec::new();
        for payload in payloads {
            let addr = proxy.addr();
            stalls.push(tokio::spawn(async move {
                raw(addr, payload, Duration::from_secs(3)).await
            }));
        }
        for stall in stalls {
            let answer = stall.await.expect("the client task");
            assert_eq!(status_of(&answer), "408", "{answer:?}");
            assert!(answer.contains("connection: close"), "{answer:?}");
        }
        // A slow but steady upload: a byte every 100 ms, past the 200 ms
        // upstream timeout in all.
        let mut stream = TcpStream::connect(proxy.addr()).await.expect("connects");
        stream
            .write_all(b"POST /upload HTTP/1.1\r\nHost: site.test\r\nContent-Length: 6\r\nConnection: close\r\n\r\n")
            .await
            .expect("writes");
        for byte in b"abcdef" {
            tokio::time::sleep(Duration::from_millis(100)).await;
            stream.write_all(&[*byte]).await.expect("writes");
        }
        let (answer, _) = read_all(&mut stream, Duration::from_secs(2)).await;
        assert_eq!(status_of(&answer), "200", "{answer:?}");
        assert!(answer.ends_with("stored"), "{answer:?}");

        let pool = proxy.pool("web").expect("the pool runs");
        for server in servers {
            let stats = pool.stats_of(server.to_string().as_str()).expect("in the pool");
            assert_eq!((stats.failures, stats.state), (0, BackendState::Up), "{server}");
        }
        for _ in 0..4 {
            let reply = get(&client(), proxy.addr(), "site.test", "/").await;
            assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        }
        assert_eq!(proxy.counters().client_timeouts.load(Relaxed), 4);
        assert_eq!(proxy.counters().upstream_timeouts.load(Relaxed), 0);
        proxy.shutdown().await;
    })
    .await;
}

// Issue 24, 1, the same while the backend already streams its answer: its
// pause waiting for the client's body is not its stall.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_echoing_a_stalled_body_is_not_blamed() {
    bounded(async {
        let web = backend("web").await;
        let proxy = single(
            &web,
            "attempts = 1\nupstream_timeout_ms = 200\nclient_body_timeout_ms = 600\n\
             request_buffer_bytes = 0",
        )
        .await;
        let answer = raw(
            proxy.addr(),
            b"POST /echo HTTP/1.1\r\nHost: site.test\r\nContent-Length: 10\r\n\r\nhello",
            Duration::from_secs(3),
        )
        .await;
        // The backend answered at once and echoed what came; the client's
        // silence then cut the exchange.
        assert_eq!(status_of(&answer), "200", "{answer:?}");
        assert!(answer.contains("hello"), "{answer:?}");
        let stats = proxy
            .pool("web")
            .expect("the pool runs")
            .stats_of(web.addr.to_string().as_str())
            .expect("in the pool");
        assert_eq!(
            stats.failures, 0,
            "the client's silence is not the backend's stall"
        );
        proxy.shutdown().await;
    })
    .await;
}

/// Routes: `/public/` to pool public (a backend echoing its target), and
/// nothing else.
async fn public_only() -> Proxy {
    let public = target_echo().await;
    let toml = format!(
        "{}\n[[routes]]\nname = \"public\"\npath = \"/public/\"\npool = \"public\"\n{}",
        server_section(""),
        pool_at("public", "", &[public])
    );
    start(&toml).await
}

// Issue 24, 2: routes match the normalised path, backends receive it, and
// what a backend could read two ways is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_cannot_be_escaped() {
    bounded(async {
        let proxy = public_only().await;
        let send = |target: &str| {
            let request =
                format!("GET {target} HTTP/1.1\r\nHost: site.test\r\nConnection: close\r\n\r\n");
            let addr = proxy.addr();
            async move { raw(addr, request.as_bytes(), Duration::from_secs(2)).await }
        };
        // They resolve outside /public/: no route.
        for target in [
            "/public/../internal/x",
            "/public/%2e%2e/internal/x",
            "/public/%2E%2e/internal/x",
            "/public/./../internal/x",
            "/public//..//internal/x",
            "/public/a/../../internal/x",
            "/%70ublic/../internal/x",
        ] {
            let answer = send(target).await;
            assert_eq!(status_of(&answer), "404", "{target}: {answer:?}");
        }
        // Ambiguous, or above the root: refused.
        for target in [
            "/public/..%2finternal/x",
            "/public/..%2Finternal/x",
            "/public%2f..%2finternal/x",
            "/public/..%5cinternal/x",
            "/public/..;/internal/x",
            "/public/.;x/../../internal/x",
            "/../public/x",
            "/public/../../internal/x",
            "/public/%00",
            "/public/%zz",
            "/public/%2",
            "*",
        ] {
            let answer = send(target).await;
            assert_eq!(status_of(&answer), "400", "{target}: {answer:?}");
        }
        // Inside /public/: forwarded in normal form, the query untouched.
        for (target, forwarded) in [
            ("/public/a/../b", "/public/b"),
            ("/internal/../public/x", "/public/x"),
            ("/public//x///y", "/public/x/y"),
            ("/public/%7euser/%41", "/public/~user/A"),
            ("/public/a%20b?q=/../x", "/public/a%20b?q=/../x"),
            ("http://site.test/public/./x", "/public/x"),
        ] {
            let answer = send(target).await;
            assert_eq!(status_of(&answer), "200", "{target}: {answer:?}");
            assert_eq!(body_of(&answer), forwarded, "{target}");
        }
        proxy.shutdown().await;
    })
    .await;
}

// Issue 24, 3: a trusted proxy's forwarded address that cannot be read
// fails closed; the client never becomes the trusted proxy itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_forwarded_address_fails_closed() {
    bounded(async {
        let web = backend("web").await;
        for (header, lines) in [
            (
                "x-forwarded-for",
                [
                    &b"X-Forwarded-For: 203.0.113.9\xff"[..],
                    b"X-Forwarded-For: \xc3\xa9",
                    b"X-Forwarded-For: unknown",
                    b"X-Forwarded-For: 203.0.113.9, garbage",
                ],
            ),
            (
                "forwarded",
                [
                    &b"Forwarded: for=203.0.113.9\xff"[..],
                    b"Forwarded: for=_hidden",
                    b"Forwarded: proto=http",
                    b"Forwarded: for=unknown",
                ],
            ),
        ] {
            let toml = format!(
                "{}\n[clients]\ntrusted_proxies = [\"127.0.0.0/8\"]\nreal_ip_header = \"{header}\"\n\
                 deny = [\"203.0.113.0/24\"]\n{}{}",
                server_section(""),
                catch_all("web"),
                pool_section("web", "", &[&web])
            );
            let proxy = start(&toml).await;
            let served = web.control.served();
            for line in lines {
                let mut request = b"GET / HTTP/1.1\r\nHost: site.test\r\n".to_vec();
                request.extend_from_slice(line);
                request.extend_from_slice(b"\r\nConnection: close\r\n\r\n");
                let answer = raw(proxy.addr(), &request, Duration::from_secs(2)).await;
                assert_eq!(
                    status_of(&answer),
                    "400",
                    "{}: {answer:?}",
                    String::from_utf8_lossy(line)
                );
            }
            assert_eq!(web.control.served(), served, "none reached the backend");
            // A readable one still names the client, and the deny list holds.
            let value = if header == "forwarded" {
                "for=203.0.113.9"
            } else {
                "203.0.113.9"
            };
            let request = format!(
                "GET / HTTP/1.1\r\nHost: site.test\r\n{header}: {value}\r\nConnection: close\r\n\r\n"
            );
            let answer = raw(proxy.addr(), request.as_bytes(), Duration::from_secs(2)).await;
            assert_eq!(status_of(&answer), "403", "{answer:?}");
            // Junk left of the client is the client's own, not read.
            let request = format!(
                "GET / HTTP/1.1\r\nHost: site.test\r\n{header}: \u{e9}\r\n{header}: {value}\r\nConnection: close\r\n\r\n"
            );
            let answer = raw(proxy.addr(), request.as_bytes(), Duration::from_secs(2)).await;
            assert_eq!(status_of(&answer), "403", "{answer:?}");
            proxy.shutdown().await;
        }
    })
    .await;
}

// Issue 24, 4: from an untrusted peer the client's own forwarding headers
// are replaced by the proxy's; from a trusted proxy they are kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spoofed_forwarding_headers_never_reach_the_backend() {
    bounded(async {
        let web = backend("web").await;
        let spoofs = [
            "Forwarded: for=10.0.0.1;proto=https;host=admin.test\r\n\
             X-Real-IP: 10.0.0.1\r\nX-Forwarded-Proto: https\r\n\
             X-Forwarded-Host: admin.test\r\nX-Forwarded-Port: 443\r\n",
            "forwarded: for=10.0.0.1\r\nFORWARDED: for=10.0.0.2\r\nx-real-ip: 10.0.0.1\r\n\
             X-REAL-IP: 10.0.0.2\r\nx-forwarded-proto: https\r\nx-forwarded-host: a\r\n\
             x-forwarded-host: b\r\n",
            "Connection: x-real-ip\r\nX-Real-IP: 10.0.0.1\r\n",
        ];
        let proxy = single(&web, "").await;
        for spoof in spoofs {
            let request = format!(
                "GET / HTTP/1.1\r\nHost: site.test\r\n{spoof}Connection: close\r\n\r\n"
            );
            let answer = raw(proxy.addr(), request.as_bytes(), Duration::from_secs(2)).await;
            assert_eq!(status_of(&answer), "200", "{answer:?}");
            let seen = last_headers(&web);
            let all = |name: &str| -> Vec<String> {
                seen.get_all(name)
                    .iter()
                    .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                    .collect()
            };
            assert_eq!(
                all("forwarded"),
                ["for=127.0.0.1;proto=http;host=\"site.test\""],
                "{spoof}"
            );
            assert_eq!(all("x-real-ip"), ["127.0.0.1"], "{spoof}");
            assert_eq!(all("x-forwarded-proto"), ["http"], "{spoof}");
            assert_eq!(all("x-forwarded-host"), ["site.test"], "{spoof}");
            assert!(all("x-forwarded-port").is_empty(), "{spoof}");
        }
        proxy.shutdown().await;

        // Through a trusted proxy: its headers are kept and added to.
        let toml = format!(
            "{}\n[clients]\ntrusted_proxies = [\"127.0.0.0/8\"]\n{}{}",
            server_section(""),
            catch_all("web"),
            pool_section("web", "", &[&web])
        );
        let proxy = start(&toml).await;
        let request = format!(
            "GET / HTTP/1.1\r\nHost: site.test\r\nX-Forwarded-For: 198.51.100.4\r\n{}Connection: close\r\n\r\n",
            spoofs[0]
        );
        let answer = raw(proxy.addr(), request.as_bytes(), Duration::from_secs(2)).await;
        assert_eq!(status_of(&answer), "200", "{answer:?}");
        let seen = last_headers(&web);
        assert_eq!(seen.get_all("forwarded").iter().count(), 2);
        assert_eq!(seen["x-real-ip"], "198.51.100.4");
        assert_eq!(seen["x-forwarded-proto"], "https");
        assert_eq!(seen["x-forwarded-host"], "admin.test");
        assert_eq!(seen["x-forwarded-port"], "443");
        proxy.shutdown().await;
    })
    .await;
}

// Issue 24, 6: a host that is missing, repeated, malformed or carries
// userinfo is a 400 and chooses no virtual host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_hosts_are_refused() {
    bounded(async {
        let public = backend("public").await;
        let admin = backend("admin").await;
        let toml = format!(
            "{}\n[[routes]]\nname = \"admin\"\nhost = \"admin.test\"\npath = \"/\"\npool = \"admin\"\n\
             \n[[routes]]\nname = \"public\"\npath = \"/\"\npool = \"public\"\n{}{}",
            server_section(""),
            pool_section("public", "", &[&public]),
            pool_section("admin", "", &[&admin]),
        );
        let proxy = start(&toml).await;
        for head in [
            "GET / HTTP/1.1\r\n",
            "GET / HTTP/1.1\r\nHost: admin.test:x@evil.test\r\n",
            "GET / HTTP/1.1\r\nHost: x@admin.test\r\n",
            "GET http://admin.test:x@evil.test/ HTTP/1.1\r\nHost: evil.test\r\n",
            "GET http://x@admin.test/ HTTP/1.1\r\nHost: admin.test\r\n",
            "GET / HTTP/1.1\r\nHost: admin.test extra\r\n",
            "GET / HTTP/1.1\r\nHost: admin.test/x\r\n",
            "GET / HTTP/1.1\r\nHost: admin.test?x\r\n",
            "GET / HTTP/1.1\r\nHost: admin.test#x\r\n",
            "GET / HTTP/1.1\r\nHost: admin..test\r\n",
            "GET / HTTP/1.1\r\nHost: admin.test:80:80\r\n",
            "GET / HTTP/1.1\r\nHost: [::1\r\n",
            "GET / HTTP/1.1\r\nHost: admin.test\r\nHost: admin.test\r\n",
            "GET ftp://admin.test/ HTTP/1.1\r\nHost: admin.test\r\n",
            format!("GET / HTTP/1.1\r\nHost: {}.admin.test\r\n", "a".repeat(243)).as_str(),
        ] {
            let request = format!("{head}Connection: close\r\n\r\n");
            let answer = raw(proxy.addr(), request.as_bytes(), Duration::from_secs(2)).await;
            assert_eq!(status_of(&answer), "400", "{head:?}: {answer:?}");
        }
        assert_eq!((public.control.served(), admin.control.served()), (0, 0));
        // Valid forms still route: a port, a trailing dot, upper case, an
        // HTTP/1.0 request without Host (the default host).
        for (head, routed) in [
            ("GET / HTTP/1.1\r\nHost: ADMIN.test:8080\r\n", "admin"),
            ("GET / HTTP/1.1\r\nHost: admin.test.\r\n", "admin"),
            ("GET / HTTP/1.0\r\n", "public"),
            ("GET / HTTP/1.1\r\nHost: [::1]:80\r\n", "public"),
        ] {
            let request = format!("{head}Connection: close\r\n\r\n");
            let answer = raw(proxy.addr(), request.as_bytes(), Duration::from_secs(2)).await;
            assert_eq!(status_of(&answer), "200", "{head:?}: {answer:?}");
            assert!(answer.ends_with(routed), "{head:?}: {answer:?}");
        }
        proxy.shutdown().await;
    })
    .await;
}

/// A backend speaking HTTP/1.0: one answer a connection, then close.
async fn http10_backend() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("binds");
    let addr = listener.local_addr().expect("an address");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0_u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = stream
                    .write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 4\r\n\r\nold!")
                    .await;
            });
        }
    });
    addr
}

// Issue 24, 7: the client hears the proxy's version, not the backend's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_answers_in_its_own_version() {
    bounded(async {
        let old = http10_backend().await;
        let toml = format!(
            "{}{}{}",
            server_section(""),
            catch_all("web"),
            pool_at("web", "", &[old])
        );
        let proxy = start(&toml).await;
        let answer = raw(
            proxy.addr(),
            b"GET / HTTP/1.1\r\nHost: site.test\r\nConnection: close\r\n\r\n",
            Duration::from_secs(2),
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
        assert!(answer.ends_with("old!"), "{answer:?}");
        proxy.shutdown().await;
    })
    .await;
}

// Issue 24, 8: a transfer coding other than chunked is a 501 (and chunked
// twice a 400); neither is forwarded, and the connection closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfer_codings_other_than_chunked_are_refused() {
    bounded(async {
        let web = backend("web").await;
        let proxy = single(&web, "").await;
        for (codings, status) in [
            ("Transfer-Encoding: gzip, chunked\r\n", "501"),
            (
                "Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n",
                "501",
            ),
            ("Transfer-Encoding: identity, chunked\r\n", "501"),
            ("Transfer-Encoding: x-custom ,chunked\r\n", "501"),
            ("Transfer-Encoding: chunked, chunked\r\n", "400"),
            (
                "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
                "400",
            ),
        ] {
            // A pipelined second request must not be served either.
            let request = format!(
                "POST / HTTP/1.1\r\nHost: site.test\r\n{codings}\r\n1\r\nx\r\n0\r\n\r\n\
                 GET / HTTP/1.1\r\nHost: site.test\r\n\r\n"
            );
            let answer = raw(proxy.addr(), request.as_bytes(), Duration::from_secs(2)).await;
            assert_eq!(status_of(&answer), status, "{codings:?}: {answer:?}");
            assert_eq!(answer.matches("HTTP/1.1 ").count(), 1, "closed: {answer:?}");
        }
        assert_eq!(web.control.served(), 0);
        proxy.shutdown().await;
    })
    .await;
}

// Beyond the list: CONNECT and TRACE are refused (405), as nginx does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tunnels_and_traces_are_refused() {
    bounded(async {
        let web = backend("web").await;
        let proxy = single(&web, "").await;
        for head in [
            "CONNECT site.test:443 HTTP/1.1\r\nHost: site.test:443\r\n",
            "TRACE / HTTP/1.1\r\nHost: site.test\r\n",
        ] {
            let request = format!("{head}Connection: close\r\n\r\n");
            let answer = raw(proxy.addr(), request.as_bytes(), Duration::from_secs(2)).await;
            assert_eq!(status_of(&answer), "405", "{head:?}: {answer:?}");
        }
        assert_eq!(web.control.served(), 0);
        proxy.shutdown().await;
    })
    .await;
}

// Issue 24, 10 (and the review): request trailers are dropped, with their
// `Trailer` notice, as nginx does; a backend that merged them into its
// headers would take a client's `X-Real-IP` trailer for the proxy's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_trailers_are_dropped() {
    bounded(async {
        // A backend that answers with the trailers and `Trailer` it got.
        let web = custom(|request: Request<Incoming>| async move {
            let notice = request
                .headers()
                .get("trailer")
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
            let collected = request.into_body().collect().await;
            let trailers = collected.ok().and_then(|c| c.trailers().cloned());
            let text = format!("notice={notice:?} trailers={trailers:?}");
            Response::new(Full::new(Bytes::from(text)).boxed())
        })
        .await;
        for buffer in ["", "request_buffer_bytes = 0"] {
            let toml = format!(
                "{}{}{}",
                server_section(buffer),
                catch_all("web"),
                pool_at("web", "", &[web])
            );
            let proxy = start(&toml).await;
            let answer = raw(
                proxy.addr(),
                b"POST / HTTP/1.1\r\nHost: site.test\r\nTrailer: x-real-ip\r\n\
                  Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
                  3\r\nabc\r\n0\r\nX-Real-IP: 10.0.0.1\r\n\r\n",
                Duration::from_secs(2),
            )
            .await;
            assert_eq!(status_of(&answer), "200", "{buffer}: {answer:?}");
            assert!(
                answer.ends_with("notice=None trailers=None"),
                "{buffer}: {answer:?}"
            );
            proxy.shutdown().await;
        }
    })
    .await;
}

/// A connection from `source` (a loopback address) to `addr`.
async fn connect_from(source: [u8; 4], addr: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("a socket");
    socket
        .bind(SocketAddr::from((source, 0)))
        .expect("binds a loopback source");
    socket.connect(addr).await.expect("connects")
}

/// A GET on a new connection from `source`; its status.
async fn get_from(source: [u8; 4], addr: SocketAddr) -> String {
    let mut stream = connect_from(source, addr).await;
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: site.test\r\nConnection: close\r\n\r\n")
        .await
        .expect("writes");
    let (answer, _) = read_all(&mut stream, Duration::from_secs(2)).await;
    status_of(&answer).to_owned()
}

/// Whether the proxy closed `stream` within `wait`.
async fn closed(stream: &mut TcpStream, wait: Duration) -> bool {
    let mut buf = [0_u8; 64];
    matches!(
        tokio::time::timeout(wait, stream.read(&mut buf)).await,
        Ok(Ok(0) | Err(_))
    )
}

// Issue 24, 5: one client's connections past its limit are closed at once;
// another client is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_over_its_connection_limit_is_closed() {
    bounded(async {
        let web = backend("web").await;
        let proxy = single(&web, "max_connections_per_client = 10").await;
        let mut held = Vec::new();
        for _ in 0..30 {
            held.push(connect_from([127, 0, 0, 1], proxy.addr()).await);
        }
        let refused = || {
            let scrape = parse_metrics(&proxy.metrics());
            sample(
                &scrape,
                "proxy_connections_closed_total",
                &[("reason", "per_client")],
            )
        };
        assert!(
            eventually(Duration::from_secs(2), || refused() == Some(20.0)).await,
            "20 refused: {:?}",
            refused()
        );
        let mut cut = 0;
        for stream in &mut held {
            if closed(stream, Duration::from_millis(50)).await {
                cut += 1;
            }
        }
        assert_eq!(cut, 20, "all but ten closed");
        for _ in 0..5 {
            assert_eq!(get_from([127, 0, 0, 2], proxy.addr()).await, "200");
        }
        let scrape = parse_metrics(&proxy.metrics());
        assert_eq!(
            sample(
                &scrape,
                "proxy_connections_closed_total",
                &[("reason", "per_client")]
            ),
            Some(20.0)
        );
        drop(held);
        assert!(
            eventually(Duration::from_secs(2), || {
                let scrape = parse_metrics(&proxy.metrics());
                sample(&scrape, "proxy_connections", &[]) == Some(0.0)
            })
            .await,
            "every connection's slot is freed"
        );
        proxy.shutdown().await;
    })
    .await;
}

// Issue 24, 5: at the global limit the longest idle connections make room,
// so a client holding many cannot keep another out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_shed_for_new_clients() {
    bounded(async {
        let web = backend("web").await;
        let proxy = single(&web, "max_connections = 20").await;
        let mut held = Vec::new();
        for _ in 0..40 {
            held.push(connect_from([127, 0, 0, 1], proxy.addr()).await);
        }
        let shed = || {
            let scrape = parse_metrics(&proxy.metrics());
            sample(
                &scrape,
                "proxy_connections_closed_total",
                &[("reason", "shed_idle")],
            )
        };
        // Every one accepted, the first twenty shed for the last twenty.
        assert!(
            eventually(Duration::from_secs(2), || shed() == Some(20.0)).await,
            "20 shed: {:?}",
            shed()
        );
        for _ in 0..10 {
            assert_eq!(get_from([127, 0, 0, 2], proxy.addr()).await, "200");
        }
        let mut cut = 0;
        for stream in &mut held {
            if closed(stream, Duration::from_millis(50)).await {
                cut += 1;
            }
        }
        assert!(cut >= 20, "{cut} idle connections shed");
        let scrape = parse_metrics(&proxy.metrics());
        let open = sample(&scrape, "proxy_connections", &[]).unwrap_or(f64::NAN);
        assert!(open <= 20.0, "{open} connections open over a limit of 20");
        proxy.shutdown().await;
    })
    .await;
}

// Issue 24, 5, with the process's file limit lowered: the real binary
// under `ulimit -n 128`, its connection limit the default (derived from
// that limit); a client holding 200 idle connections, more than the
// process could open, cannot stop another's requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_flood_past_the_file_limit_cannot_stop_other_clients() {
    bounded(async {
        let web = backend("web").await;
        let file = TempFile::new("flood");
        file.write(&web_config("workers = 1", "", &[&web]));
        let mut child = tokio::process::Command::new("sh")
            .arg("-c")
            .arg("ulimit -n 128 && exec \"$0\" \"$1\"")
            .arg(env!("CARGO_BIN_EXE_loadbalance-proxy"))
            .arg(&file.0)
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("starts the proxy");
        let addr = listening_address(&mut child).await;
        let mut held = Vec::new();
        for _ in 0..200 {
            held.push(connect_from([127, 0, 0, 1], addr).await);
        }
        let mut served = 0;
        for _ in 0..10 {
            if get_from([127, 0, 0, 2], addr).await == "200" {
                served += 1;
            }
        }
        assert_eq!(served, 10, "every request of the second client");
        drop(held);
        child.kill().await.expect("stops the proxy by its PID");
    })
    .await;
}

/// The address the binary says it listens on (its first stderr line).
async fn listening_address(child: &mut tokio::process::Child) -> SocketAddr {
    use tokio::io::AsyncBufReadExt;
    let stderr = child.stderr.take().expect("stderr is piped");
    let mut lines = tokio::io::BufReader::new(stderr).lines();
    while let Some(line) = lines.next_line().await.expect("reads stderr") {
        if let Some(addr) = line.strip_prefix("listening on ") {
            // The rest of stderr is drained so the proxy never blocks on it.
            tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
            return addr.parse().expect("an address");
        }
    }
    panic!("the proxy exited before it listened");
}

// Issue 24, 9: reloads more often than fall × interval do not keep a dead
// backend up: streaks carry over, by identity, even as the check restarts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_do_not_reset_health_streaks() {
    bounded(async {
        let good = backend("good").await;
        let dead = backend("dead").await;
        dead.control.unhealthy.store(true, Relaxed);
        let config = |timeout: u32| {
            format!(
                "{}\n[checks.web]\npath = \"/healthz\"\ninterval_ms = 100\ntimeout_ms = {timeout}\n\
                 fall = 3\nrise = 2\n",
                web_config("", "", &[&good, &dead])
            )
        };
        let proxy = start(&config(500)).await;
        let mut down = false;
        // 20 reloads 120 ms apart, each changing the check (so it restarts):
        // without kept streaks, at most two probes a streak.
        for round in 0..20u32 {
            tokio::time::sleep(Duration::from_millis(120)).await;
            let next = Config::parse(&config(400 + round % 2)).expect("parses");
            proxy.apply(next).await.expect("applies");
            if state_of(&proxy, "web", &dead) == BackendState::Down {
                down = true;
                break;
            }
        }
        assert!(down, "the dead backend was marked down across reloads");
        assert_eq!(state_of(&proxy, "web", &good), BackendState::Up);
        proxy.shutdown().await;
    })
    .await;
}

// The review, 1: a client that finishes its body just before the stall
// timeout, while the backend already streams, does not make the backend's
// wait for that body its stall.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_finished_late_does_not_make_the_backend_stall() {
    bounded(async {
        // Answers at once with `start`, then reads the whole body, then `done`.
        let web = custom(|request: Request<Incoming>| async move {
            let (sender, receiver) = tokio::sync::mpsc::channel::<Bytes>(2);
            tokio::spawn(async move {
                let _ = sender.send(Bytes::from_static(b"start")).await;
                let _ = request.into_body().collect().await;
                let _ = sender.send(Bytes::from_static(b"done")).await;
            });
            let frames = futures_lite::stream::unfold(receiver, |mut receiver| async move {
                let chunk = receiver.recv().await?;
                Some((Ok::<_, Infallible>(hyper::body::Frame::data(chunk)), receiver))
            });
            Response::new(http_body_util::StreamBody::new(frames).boxed())
        })
        .await;
        let toml = format!(
            "{}{}{}",
            server_section(
                "request_buffer_bytes = 0\nupstream_timeout_ms = 400\nclient_body_timeout_ms = 2000"
            ),
            catch_all("web"),
            pool_at("web", "health = { max_fails = 1, fail_timeout_ms = 10000 }", &[web])
        );
        let proxy = start(&toml).await;
        let mut stream = TcpStream::connect(proxy.addr()).await.expect("connects");
        stream
            .write_all(b"POST / HTTP/1.1\r\nHost: site.test\r\nContent-Length: 2\r\nConnection: close\r\n\r\nx")
            .await
            .expect("writes");
        tokio::time::sleep(Duration::from_millis(350)).await;
        stream.write_all(b"y").await.expect("writes");
        let (answer, _) = read_all(&mut stream, Duration::from_secs(2)).await;
        assert!(answer.contains("done"), "{answer:?}");
        let stats = proxy
            .pool("web")
            .expect("the pool runs")
            .stats_of(web.to_string().as_str())
            .expect("in the pool");
        assert_eq!((stats.failures, stats.state), (0, BackendState::Up));
        proxy.shutdown().await;
    })
    .await;
}

// The review, 2: which of a backend's own statuses count against it is
// the operator's choice; `[]` is nginx's default (errors and timeouts).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failure_statuses_choose_what_a_backend_answer_costs_it() {
    bounded(async {
        let a = backend("a").await;
        let b = backend("b").await;
        a.control.down.store(true, Relaxed);
        b.control.down.store(true, Relaxed);
        let toml = format!(
            "{}{}{}",
            server_section("failure_statuses = []"),
            catch_all("web"),
            pool_section(
                "web",
                "health = { max_fails = 1, fail_timeout_ms = 10000 }",
                &[&a, &b]
            )
        );
        let proxy = start(&toml).await;
        for _ in 0..4 {
            let reply = get(&client(), proxy.addr(), "site.test", "/").await;
            assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
        }
        for web in [&a, &b] {
            assert_eq!(state_of(&proxy, "web", web), BackendState::Up);
        }
        assert_eq!(a.control.served() + b.control.served(), 4, "no retries");
        assert_eq!(proxy.counters().retries.load(Relaxed), 0);
        proxy.shutdown().await;
        assert!(
            Config::parse(&format!(
                "{}{}{}",
                server_section("failure_statuses = [600]"),
                catch_all("web"),
                pool_section("web", "", &[&a])
            ))
            .is_err()
        );
    })
    .await;
}

// The review, 3: connections still sending their first head are shed too
// (closed outright after a short grace), and stay counted until closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_heads_are_shed_and_counted_until_closed() {
    bounded(async {
        let web = backend("web").await;
        let proxy = single(&web, "max_connections = 5").await;
        let mut held = Vec::new();
        for index in 0..20u8 {
            let mut stream = connect_from([127, 0, 0, 10 + index], proxy.addr()).await;
            stream
                .write_all(b"GET /x HTTP/1.1\r\nHost: site.test\r\n")
                .await
                .expect("writes");
            held.push(stream);
        }
        let open = || {
            let scrape = parse_metrics(&proxy.metrics());
            sample(&scrape, "proxy_connections", &[]).unwrap_or(f64::NAN)
        };
        assert!(
            eventually(Duration::from_secs(2), || open() <= 5.0).await,
            "{} open over a limit of 5",
            open()
        );
        let mut cut = 0;
        for stream in &mut held {
            if closed(stream, Duration::from_millis(20)).await {
                cut += 1;
            }
        }
        assert!(cut >= 15, "{cut} of 20 partial heads closed");
        assert_eq!(get_from([127, 0, 0, 2], proxy.addr()).await, "200");
        proxy.shutdown().await;
    })
    .await;
}

// The review, 4: a body within `request_buffer_bytes` is read before a
// backend is picked, so a slow sender holds no backend.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_small_upload_holds_no_backend() {
    bounded(async {
        let web = backend("web").await;
        let proxy = single(&web, "").await;
        let pool = proxy.pool("web").expect("the pool runs");
        let id = web.addr.to_string();
        let mut stream = TcpStream::connect(proxy.addr()).await.expect("connects");
        stream
            .write_all(b"PUT / HTTP/1.1\r\nHost: site.test\r\nContent-Length: 8\r\nConnection: close\r\n\r\nabcd")
            .await
            .expect("writes");
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(pool.active_of(id.as_str()), Some(0), "no backend held");
        assert_eq!(web.control.in_flight.load(Relaxed), 0);
        stream.write_all(b"efgh").await.expect("writes");
        let (answer, _) = read_all(&mut stream, Duration::from_secs(2)).await;
        assert_eq!(status_of(&answer), "200", "{answer:?}");
        proxy.shutdown().await;
    })
    .await;
}

// The review, 5: `;` parameters cannot carry a path past a prefix route:
// routes match the path Java servers resolve; the backend gets it as sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_parameters_cannot_dodge_a_route() {
    bounded(async {
        let admin = target_echo().await;
        let web = target_echo().await;
        let toml = format!(
            "{}\n[[routes]]\nname = \"admin\"\npath = \"/admin/\"\npool = \"admin\"\n{}{}{}",
            server_section(""),
            catch_all("web"),
            pool_at("admin", "", &[admin]),
            pool_at("web", "", &[web])
        );
        let proxy = start(&toml).await;
        let pool = proxy.pool("admin").expect("the pool runs");
        for target in [
            "/admin;x/secret",
            "/admin;jsessionid=1/secret",
            "/admin/;x/secret",
        ] {
            let picks = pool.stats_of(admin.to_string().as_str()).expect("in").picks;
            let request =
                format!("GET {target} HTTP/1.1\r\nHost: site.test\r\nConnection: close\r\n\r\n");
            let answer = raw(proxy.addr(), request.as_bytes(), Duration::from_secs(2)).await;
            assert_eq!(body_of(&answer), target, "forwarded as sent: {answer:?}");
            let after = pool.stats_of(admin.to_string().as_str()).expect("in").picks;
            assert_eq!(after, picks + 1, "{target} went to the admin route");
        }
        proxy.shutdown().await;
    })
    .await;
}

// The review, 7 and 8: more forwarding names and underscored names are
// dropped; an HTTP/1.0 request without Host sends an empty one, never the
// backend's address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn framework_forwarding_headers_and_underscores_are_dropped() {
    bounded(async {
        let web = backend("web").await;
        let proxy = single(&web, "").await;
        let answer = raw(
            proxy.addr(),
            b"GET / HTTP/1.0\r\nX_Real_IP: 10.0.0.1\r\nX_Forwarded_For: 10.0.0.1\r\n\
              X-Forwarded-Prefix: /admin\r\nX-Original-URL: /admin\r\nX-Rewrite-URL: /admin\r\n\
              True-Client-IP: 10.0.0.1\r\nX-Client-IP: 10.0.0.1\r\nX-Forwarded-Ssl: on\r\n\r\n",
            Duration::from_secs(2),
        )
        .await;
        assert_eq!(status_of(&answer), "200", "{answer:?}");
        let seen = last_headers(&web);
        for name in [
            "x_real_ip",
            "x_forwarded_for",
            "x-forwarded-prefix",
            "x-original-url",
            "x-rewrite-url",
            "true-client-ip",
            "x-client-ip",
            "x-forwarded-ssl",
        ] {
            assert!(seen.get(name).is_none(), "{name} reached the backend");
        }
        assert_eq!(seen["host"], "", "an empty Host, not the backend's address");
        proxy.shutdown().await;
    })
    .await;
}

// What held before issue 24: smuggling, slowloris, sizes, stalls, spoofing.

/// A chunked upload of 2048 bytes in four chunks to `path`, then close.
fn chunked_upload(path: &str) -> Vec<u8> {
    let mut upload = format!(
        "POST {path} HTTP/1.1\r\nHost: site.test\r\nTransfer-Encoding: chunked\r\n\
         Connection: close\r\n\r\n"
    )
    .into_bytes();
    for _ in 0..4 {
        upload.extend_from_slice(b"200\r\n");
        upload.extend_from_slice(&[b'z'; 512]);
        upload.extend_from_slice(b"\r\n");
    }
    upload.extend_from_slice(b"0\r\n\r\n");
    upload
}

// 3.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_is_cut_at_the_header_timeout() {
    bounded(async {
        let web = backend("web").await;
        let toml = web_config("header_timeout_ms = 300", "", &[&web]);
        let proxy = start(&toml).await;
        let mut slow = TcpStream::connect(proxy.addr()).await.expect("connects");
        slow.write_all(b"GET / HTTP/1.1\r\nHost: site.test\r\nX-Slow: ")
            .await
            .expect("writes a partial head");
        let started = Instant::now();
        let closed = tokio::spawn(async move {
            let mut buf = [0_u8; 1024];
            loop {
                match slow.read(&mut buf).await {
                    Ok(0) | Err(_) => return Instant::now(),
                    // A 408, say: read on until the close.
                    Ok(_) => {}
                }
            }
        });
        // Meanwhile others are served.
        let client = client();
        for _ in 0..5 {
            let reply = get(&client, proxy.addr(), "site.test", "/").await;
            assert_eq!(reply.status, StatusCode::OK);
        }
        let closed_at = tokio::time::timeout(Duration::from_secs(2), closed)
            .await
            .expect("the stalled connection is closed within 2 s")
            .expect("the reader task");
        let after = closed_at - started;
        assert!(
            after >= Duration::from_millis(200),
            "closed after {after:?}, before the header timeout"
        );
        assert_eq!(web.control.served(), 5);
        assert_eq!(proxy.shutdown().await, 0);
    })
    .await;
}

// The admin port's header timeout: a half-sent head there is cut too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_sent_admin_request_is_cut_at_the_header_timeout() {
    bounded(async {
        let web = backend("web").await;
        let proxy = single(&web, "header_timeout_ms = 300").await;
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

// 4.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_bodies_get_413() {
    bounded(async {
        let web = backend("web").await;
        let toml = web_config("max_body_bytes = 1024", "", &[&web]);
        let proxy = start(&toml).await;
        let client = client();
        // Declared too large: refused before any backend is asked.
        let request = build(Method::POST, proxy.addr(), "site.test", "/echo")
            .body(Full::new(Bytes::from(vec![b'x'; 2000])))
            .expect("a valid request");
        let reply = send(&client, request).await;
        assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(web.control.served(), 0);
        // Within the limit: echoed.
        let request = build(Method::POST, proxy.addr(), "site.test", "/echo")
            .body(Full::new(Bytes::from(vec![b'y'; 1000])))
            .expect("a valid request");
        let reply = send(&client, request).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.body.len(), 1000);
        // Chunked, no length declared, to a backend that answers only
        // after a while: the limit trips while the body streams.
        web.control
            .set_delay(Duration::from_millis(300), Duration::ZERO);
        let answer = raw(proxy.addr(), &chunked_upload("/"), Duration::from_secs(2)).await;
        assert!(
            answer.starts_with("HTTP/1.1 413"),
            "a chunked body past max_body_bytes: {answer:?}"
        );
        let stats = proxy
            .pool("web")
            .expect("the pool runs")
            .stats_of(web.addr.to_string().as_str())
            .expect("in the pool");
        assert_eq!(stats.failures, 0, "the client's fault, not the backend's");
        assert_eq!(stats.active, 0);
        assert_eq!(proxy.shutdown().await, 0);
    })
    .await;
}

// 4, against a backend that answers at once (`/echo` streams the body
// back): the first chunk reaches it, its 200 head comes back, and only then
// does the body pass the limit. Bodies stream (nothing is buffered), so the
// 413 cannot be sent any more: the exchange is cut, and the backend, which
// did nothing wrong, is not blamed (a client could otherwise eject healthy
// backends at will).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunked_body_past_the_limit_after_the_answer_is_cut_and_spares_the_backend() {
    bounded(async {
        let web = backend("web").await;
        let proxy = single(&web, "max_body_bytes = 1024").await;
        let upload = chunked_upload("/echo");
        // The head and the first 512-byte chunk.
        let split = upload.len() - 3 * (5 + 512 + 2) - 5;
        let mut stream = TcpStream::connect(proxy.addr()).await.expect("connects");
        stream.write_all(&upload[..split]).await.expect("writes");
        tokio::time::sleep(Duration::from_millis(100)).await;
        // The rest, past the limit (a reset is fine: the proxy may stop reading).
        let _ = stream.write_all(&upload[split..]).await;
        let mut read = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            let mut buf = [0_u8; 4096];
            while let Ok(n @ 1..) = stream.read(&mut buf).await {
                read.extend_from_slice(&buf[..n]);
            }
        })
        .await;
        let answer = String::from_utf8_lossy(&read);
        let stats = proxy
            .pool("web")
            .expect("the pool runs")
            .stats_of(web.addr.to_string().as_str())
            .expect("in the pool");
        // A 413 if the limit tripped before the answer, else a cut body
        // (no last chunk): never a complete 200.
        assert!(
            answer.starts_with("HTTP/1.1 413") || !answer.ends_with("0\r\n\r\n"),
            "a chunked body past max_body_bytes: {answer:?}"
        );
        assert_eq!(stats.active, 0);
        assert_eq!(stats.failures, 0, "the client's fault, not the backend's");
        assert_eq!(proxy.shutdown().await, 0);
    })
    .await;
}

// A client aborting its own upload is not the backend's failure: no ejection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_aborting_its_upload_does_not_eject_the_backend() {
    bounded(async {
        // A backend that reads the whole body before it answers.
        let web = custom(|request: Request<Incoming>| async move {
            let text = match request.into_body().collect().await {
                Ok(_) => "stored",
                Err(_) => "broken",
            };
            Response::new(Full::new(Bytes::from_static(text.as_bytes())).boxed())
        })
        .await;
        let toml = format!(
            "{}{}{}",
            server_section("attempts = 1"),
            catch_all("web"),
            pool_at(
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
        let status = get(&client(), proxy.addr(), "site.test", "/").await.status;
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

// 5.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflicting_framing_is_refused() {
    bounded(async {
        let web = backend("web").await;
        let toml = web_config("", "", &[&web]);
        let proxy = start(&toml).await;
        for smuggled in [
            &b"POST / HTTP/1.1\r\nHost: site.test\r\nContent-Length: 5\r\n\
               Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n0\r\n\r\n"[..],
            &b"POST / HTTP/1.1\r\nHost: site.test\r\nTransfer-Encoding: chunked\r\n\
               Content-Length: 5\r\nConnection: close\r\n\r\n0\r\n\r\n"[..],
        ] {
            let answer = raw(proxy.addr(), smuggled, Duration::from_secs(2)).await;
            assert!(answer.starts_with("HTTP/1.1 400"), "{answer:?}");
        }
        assert_eq!(web.control.served(), 0, "the backend never saw them");
        assert_eq!(proxy.counters().malformed.load(Relaxed), 2);
        // The proxy still serves well-formed requests.
        let reply = get(&client(), proxy.addr(), "site.test", "/").await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(proxy.shutdown().await, 0);
    })
    .await;
}

// A request with two Host lines is a 400 (RFC 9112 §3.2), never forwarded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_host_headers_are_refused() {
    bounded(async {
        // Host admin.test to pool admin, every other to pool public.
        let routes = "\n[[routes]]\nname = \"admin\"\nhost = \"admin.test\"\npath = \"/\"\npool = \"admin\"\n\
                      \n[[routes]]\nname = \"public\"\npath = \"/\"\npool = \"public\"\n";
        let public = backend("public").await;
        let admin = backend("admin").await;
        let toml = format!(
            "{}{routes}{}{}",
            server_section(""),
            pool_section("public", "", &[&public]),
            pool_section("admin", "", &[&admin]),
        );
        let proxy = start(&toml).await;
        let request =
            b"GET / HTTP/1.1\r\nHost: www.test\r\nHost: admin.test\r\nConnection: close\r\n\r\n";
        let answer = raw(proxy.addr(), request, Duration::from_secs(2)).await;
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

// The head's size bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_head_gets_431() {
    bounded(async {
        let web = backend("web").await;
        let proxy = single(&web, "max_header_bytes = 8192").await;
        let mut head = b"GET / HTTP/1.1\r\nHost: site.test\r\nX-Big: ".to_vec();
        head.extend_from_slice(&[b'a'; 10_000]);
        head.extend_from_slice(b"\r\nConnection: close\r\n\r\n");
        let answer = raw(proxy.addr(), &head, Duration::from_secs(2)).await;
        assert!(answer.starts_with("HTTP/1.1 431"), "{answer:?}");
        assert_eq!(web.control.served(), 0);
        assert_eq!(proxy.shutdown().await, 0);
    })
    .await;
}

// 2 and 9.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spoofed_forwarded_for_does_not_escape_the_rate_limit() {
    bounded(async {
        let web = backend("web").await;
        let toml = format!(
            "{}[clients]\nrate = {{ per_second = 1, burst = 3 }}\n{}{}",
            server_section(""),
            catch_all("web"),
            pool_section("web", "", &[&web])
        );
        let proxy = start(&toml).await;
        let client = client();
        let mut statuses = Vec::new();
        let mut last = None;
        for i in 0..6 {
            let request = build(Method::GET, proxy.addr(), "site.test", "/")
                .header("x-forwarded-for", format!("198.51.100.{i}"))
                .body(Full::default())
                .expect("a valid request");
            let reply = send(&client, request).await;
            statuses.push(reply.status.as_u16());
            last = Some(reply);
        }
        assert_eq!(statuses, [200, 200, 200, 429, 429, 429]);
        let last = last.expect("six replies");
        assert!(retry_after(&last) >= 1, "{:?}", last.headers);
        assert_eq!(web.control.served(), 3);
        assert_eq!(proxy.counters().rate_limited.load(Relaxed), 3);
        assert_eq!(proxy.shutdown().await, 0);
    })
    .await;
}
