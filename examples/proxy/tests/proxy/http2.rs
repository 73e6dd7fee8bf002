//! HTTP/2's known abuses against the proxy's TLS listener (issue 25),
//! each from a client that crosses the bound: frames written by hand, as
//! a hostile client would, not through a client library that keeps to
//! the server's settings. Each test checks that the abusive connection is
//! stopped, the backend is spared, and another client is still served.

use crate::harness::*;
use crate::tls::{Authority, Dir, certificates, tls_stream};

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use loadbalance_proxy::Proxy;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const DATA: u8 = 0;
const HEADERS: u8 = 1;
const RST_STREAM: u8 = 3;
const SETTINGS: u8 = 4;
const PING: u8 = 6;
const GOAWAY: u8 = 7;
const WINDOW_UPDATE: u8 = 8;
const CONTINUATION: u8 = 9;
const END_STREAM: u8 = 1;
const END_HEADERS: u8 = 4;

/// One frame: its 9-byte header, then `payload`.
fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let length = u32::try_from(payload.len()).expect("a frame's length");
    let mut out = length.to_be_bytes()[1..].to_vec();
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// An HPACK integer with an `prefix`-bit prefix (RFC 7541 §5.1).
fn integer(out: &mut Vec<u8>, first: u8, prefix: u32, mut value: usize) {
    let max = (1usize << prefix) - 1;
    if value < max {
        out.push(first | value as u8);
        return;
    }
    out.push(first | max as u8);
    value -= max;
    while value >= 128 {
        out.push((value % 128) as u8 | 0x80);
        value /= 128;
    }
    out.push(value as u8);
}

/// A header block of literal fields, never indexed, no Huffman.
fn block(fields: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in fields {
        integer(&mut out, 0x00, 4, 0);
        integer(&mut out, 0x00, 7, name.len());
        out.extend_from_slice(name.as_bytes());
        integer(&mut out, 0x00, 7, value.len());
        out.extend_from_slice(value.as_bytes());
    }
    out
}

/// A GET's header block for `path`.
fn get_block(path: &str) -> Vec<u8> {
    block(&[
        (":method", "GET"),
        (":scheme", "https"),
        (":path", path),
        (":authority", "a.test"),
    ])
}

/// A proxy with TLS over one backend `web`, `extra` in `[http2]`.
async fn h2_proxy(dir: &Dir, web: &Backend, extra: &str) -> Proxy {
    let authority = Authority::new("test CA");
    authority.write(&dir.file("ca.pem"));
    start(&format!(
        "{}{}\n[http2]\n{extra}\n",
        web_config("", "", &[web]),
        certificates(dir, &authority, "one")
    ))
    .await
}

/// Reads frames until the server closes or sends GOAWAY (true), `enough`
/// of them are seen, or `wait` passes (false); counts the frame types.
async fn until_goaway<S: AsyncReadExt + Unpin>(
    stream: &mut S,
    wait: Duration,
    enough: impl Fn(&[u32; 10]) -> bool,
) -> (bool, [u32; 10]) {
    let mut seen = [0u32; 10];
    let mut buf = Vec::new();
    let mut ended = false;
    let _ = tokio::time::timeout(wait, async {
        let mut chunk = [0u8; 16_384];
        // Each turn reads what came; the timeout bounds the turns.
        loop {
            while buf.len() >= 9 {
                let length =
                    usize::from(buf[0]) << 16 | usize::from(buf[1]) << 8 | usize::from(buf[2]);
                if buf.len() < 9 + length {
                    break;
                }
                let kind = usize::from(buf[3]);
                if kind < seen.len() {
                    seen[kind] += 1;
                }
                if kind == usize::from(GOAWAY) {
                    ended = true;
                    return;
                }
                buf.drain(..9 + length);
            }
            if enough(&seen) {
                return;
            }
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => {
                    ended = true;
                    return;
                }
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await;
    (ended, seen)
}

/// Whether a well-behaved client (curl over HTTP/2) is served.
async fn others_served(dir: &Dir, proxy: &Proxy) -> bool {
    let port = proxy.tls_addr().expect("a TLS listener").port();
    let seen = crate::tls::curl(&dir.file("ca.pem"), "a.test", port, true).await;
    seen.ok && seen.body == "web"
}

// Rapid reset (CVE-2023-44487): streams opened and reset at once, by the
// thousand. The connection is ended with GOAWAY; the proxy keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rapid_reset_ends_the_connection() {
    if !crate::tls::have_curl() {
        return;
    }
    bounded(async {
        let dir = Dir::new("rapid-reset");
        let web = slow_web(Duration::from_millis(200)).await;
        let proxy = h2_proxy(&dir, &web, "").await;
        let addr = proxy.tls_addr().expect("a TLS listener");
        let mut stream = tls_stream(&dir.file("ca.pem"), addr, "a.test", b"h2").await;
        let mut out = PREFACE.to_vec();
        out.extend(frame(SETTINGS, 0, 0, &[]));
        for n in 0..2_000u32 {
            let id = 2 * n + 1;
            out.extend(frame(
                HEADERS,
                END_STREAM | END_HEADERS,
                id,
                &get_block("/"),
            ));
            out.extend(frame(RST_STREAM, 0, id, &8u32.to_be_bytes()));
        }
        let _ = stream.write_all(&out).await;
        let (ended, _) = until_goaway(&mut stream, Duration::from_secs(3), |_| false).await;
        assert!(ended, "the connection was ended");
        assert!(
            web.control.served() < 200,
            "{} of 2,000 reset streams reached the backend",
            web.control.served()
        );
        assert!(others_served(&dir, &proxy).await);
        proxy.shutdown().await;
    })
    .await;
}

// A header block that never ends: HEADERS without END_HEADERS, then
// CONTINUATION frames past the header list bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_continuation_flood_ends_at_the_header_list_bound() {
    if !crate::tls::have_curl() {
        return;
    }
    bounded(async {
        let dir = Dir::new("continuation");
        let web = backend("web").await;
        let proxy = h2_proxy(&dir, &web, "max_header_list_size = 8192").await;
        let addr = proxy.tls_addr().expect("a TLS listener");
        let mut stream = tls_stream(&dir.file("ca.pem"), addr, "a.test", b"h2").await;
        let mut out = PREFACE.to_vec();
        out.extend(frame(SETTINGS, 0, 0, &[]));
        out.extend(frame(HEADERS, END_STREAM, 1, &get_block("/")));
        let filler = block(&[("x-filler", &"a".repeat(1000))]);
        let mut written = 0;
        let mut refused = false;
        // Up to 16 MiB of header block, unless the proxy stops reading.
        for _ in 0..16_000 {
            if stream
                .write_all(&frame(CONTINUATION, 0, 1, &filler))
                .await
                .is_err()
            {
                refused = true;
                break;
            }
            written += filler.len();
        }
        let (ended, _) = until_goaway(&mut stream, Duration::from_secs(3), |_| false).await;
        assert!(refused || ended, "{written} bytes of header block taken in");
        assert_eq!(web.control.served(), 0);
        assert!(others_served(&dir, &proxy).await);
        proxy.shutdown().await;
    })
    .await;
}

// Streams past `max_concurrent_streams`, from a client that ignores the
// setting: the excess is refused, the backend never holds more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_past_the_concurrency_bound_are_refused() {
    if !crate::tls::have_curl() {
        return;
    }
    bounded(async {
        let dir = Dir::new("streams");
        let web = slow_web(Duration::from_millis(300)).await;
        let proxy = h2_proxy(&dir, &web, "max_concurrent_streams = 4").await;
        let addr = proxy.tls_addr().expect("a TLS listener");
        let mut stream = tls_stream(&dir.file("ca.pem"), addr, "a.test", b"h2").await;
        let mut out = PREFACE.to_vec();
        out.extend(frame(SETTINGS, 0, 0, &[]));
        // The server's SETTINGS arrive first, then 20 streams at once.
        stream.write_all(&out).await.expect("writes the preface");
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut out = Vec::new();
        for n in 0..20u32 {
            out.extend(frame(
                HEADERS,
                END_STREAM | END_HEADERS,
                2 * n + 1,
                &get_block("/"),
            ));
        }
        stream.write_all(&out).await.expect("writes the streams");
        // Done when the 16 streams over the bound are refused.
        let refused = |seen: &[u32; 10]| seen[usize::from(RST_STREAM)] >= 16;
        let (_, seen) = until_goaway(&mut stream, Duration::from_secs(2), refused).await;
        assert!(
            seen[usize::from(RST_STREAM)] >= 1 || seen[usize::from(GOAWAY)] >= 1,
            "excess streams refused: {seen:?}"
        );
        let peak = web.control.peak_in_flight.load(Relaxed);
        assert!(
            peak <= 4,
            "the backend held {peak} of this connection's requests"
        );
        assert!(others_served(&dir, &proxy).await);
        proxy.shutdown().await;
    })
    .await;
}

// Pings by the ten thousand, a window update that overflows, and data on
// a stream never opened: each answered within the protocol or ended, the
// proxy unharmed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_window_and_stray_frame_abuse_is_contained() {
    if !crate::tls::have_curl() {
        return;
    }
    bounded(async {
        let dir = Dir::new("ping");
        let web = backend("web").await;
        let proxy = h2_proxy(&dir, &web, "").await;
        let addr = proxy.tls_addr().expect("a TLS listener");
        for abuse in ["pings", "window", "stray data"] {
            let mut stream = tls_stream(&dir.file("ca.pem"), addr, "a.test", b"h2").await;
            let mut out = PREFACE.to_vec();
            out.extend(frame(SETTINGS, 0, 0, &[]));
            match abuse {
                "pings" => {
                    for n in 0..10_000u64 {
                        out.extend(frame(PING, 0, 0, &n.to_be_bytes()));
                    }
                }
                "window" => {
                    for _ in 0..4 {
                        out.extend(frame(WINDOW_UPDATE, 0, 0, &0x7fff_ffffu32.to_be_bytes()));
                    }
                }
                _ => out.extend(frame(DATA, END_STREAM, 99, b"x")),
            }
            let _ = stream.write_all(&out).await;
            // Pings are answered (each acknowledged); the others end it.
            let acknowledged = |seen: &[u32; 10]| seen[usize::from(PING)] >= 10_000;
            let (ended, seen) =
                until_goaway(&mut stream, Duration::from_secs(2), acknowledged).await;
            if abuse != "pings" {
                assert!(ended, "{abuse}: ended, {seen:?}");
            }
            assert!(others_served(&dir, &proxy).await, "{abuse}");
        }
        // Only the three well-behaved requests reached the backend.
        assert_eq!(web.control.served(), 3);
        proxy.shutdown().await;
    })
    .await;
}

/// What one `h2load` run saw: its requests' and status codes' lines, and
/// the protocol it spoke.
async fn h2load(url: String) -> String {
    let child = tokio::process::Command::new("h2load")
        // 400 requests, 4 connections, 16 streams each at once; the run
        // ends by itself, and a stuck one is killed with the test.
        .args(["-n", "400", "-c", "4", "-m", "16", "-t", "1", "-T", "5"])
        .arg(url)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(6), child)
        .await
        .expect("h2load ends")
        .expect("runs h2load");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

// A real HTTP/2 client, nghttp2's h2load, with many streams at once on
// each connection, over TLS (ALPN h2) and over h2c: every request is
// answered by the backend, none fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2load_is_served_over_tls_and_h2c() {
    if !crate::tls::have("h2load", "nghttp2-client") {
        return;
    }
    bounded(async {
        let dir = Dir::new("h2load");
        let authority = Authority::new("test CA");
        let web = backend("web").await;
        let toml = format!(
            "{}{}",
            web_config("", "", &[&web]),
            certificates(&dir, &authority, "one")
        );
        let proxy = start(&toml).await;
        let tls = proxy.tls_addr().expect("a TLS listener");
        for (url, protocol) in [
            (format!("https://127.0.0.1:{}/", tls.port()), "h2"),
            (format!("http://127.0.0.1:{}/", proxy.addr().port()), "h2c"),
        ] {
            let before = web.control.served();
            let seen = h2load(url).await;
            assert!(
                seen.contains("400 done, 400 succeeded, 0 failed"),
                "{protocol}: {seen}"
            );
            assert!(seen.contains("status codes: 400 2xx"), "{protocol}: {seen}");
            assert!(
                seen.contains(&format!("Application protocol: {protocol}")),
                "{protocol}: {seen}"
            );
            assert_eq!(web.control.served() - before, 400, "{protocol}");
        }
        proxy.shutdown().await;
    })
    .await;
}
