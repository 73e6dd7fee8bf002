//! A property of request-head handling (issue 24): an arbitrary head,
//! built from hostile pieces (dot segments, escapes, odd hosts, repeated
//! and conflicting framing, spoofed forwarding headers, bytes that are not
//! text), is either refused with a 4xx (or a 501) and reaches no backend,
//! or reaches exactly one, in a form a strict parser (httparse) reads the
//! same way: same method, the path in normal form (computed here by a
//! model written from RFC 3986 §5.2.4, not the proxy's code), one valid
//! `Host`, one body framing, no hop-by-hop headers, and the backend of
//! the route the normalised path and the host select.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::{Config as Cases, TestRunner};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::harness::{pool_at, server_section, start};

/// What one backend received: its pool, the head as httparse read it
/// (`None`: not a valid head), and whether the whole body arrived.
#[derive(Clone, Debug)]
struct Seen {
    pool: &'static str,
    head: Option<ParsedHead>,
    complete: bool,
}

#[derive(Clone, Debug)]
struct ParsedHead {
    method: String,
    path: String,
    headers: Vec<(String, Vec<u8>)>,
}

impl ParsedHead {
    fn all(&self, name: &str) -> Vec<&[u8]> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
            .collect()
    }
}

type Log = Arc<Mutex<Vec<Seen>>>;

/// A backend of pool `pool` that records each request and answers with
/// the pool's name, one request a connection.
async fn recording(pool: &'static str, log: Log) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("binds");
    let addr = listener.local_addr().expect("an address");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(record(stream, pool, Arc::clone(&log)));
        }
    });
    addr
}

async fn record(mut stream: TcpStream, pool: &'static str, log: Log) {
    let mut bytes = Vec::new();
    let mut buf = [0_u8; 4096];
    // A head within 64 KiB, then the body its framing announces.
    let head_end = loop {
        if let Some(at) = bytes.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        if bytes.len() > 65_536 {
            return;
        }
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => bytes.extend_from_slice(&buf[..n]),
        }
    };
    let head = parse(&bytes[..head_end]);
    let (length, chunked) = head.as_ref().map_or((None, false), |head| {
        let length = head
            .all("content-length")
            .first()
            .and_then(|v| std::str::from_utf8(v).ok()?.trim().parse::<usize>().ok());
        (length, !head.all("transfer-encoding").is_empty())
    });
    let done = |body: &[u8]| match (length, chunked) {
        (Some(n), _) => body.len() >= n,
        (None, true) => body.ends_with(b"0\r\n\r\n"),
        (None, false) => true,
    };
    let mut complete = done(&bytes[head_end..]);
    while !complete && bytes.len() < 1 << 20 {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => bytes.extend_from_slice(&buf[..n]),
        }
        complete = done(&bytes[head_end..]);
    }
    log.lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(Seen {
            pool,
            head,
            complete,
        });
    let answer = format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{pool}",
        pool.len()
    );
    let _ = stream.write_all(answer.as_bytes()).await;
}

/// httparse's strict reading of a head.
fn parse(head: &[u8]) -> Option<ParsedHead> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(head) {
        Ok(httparse::Status::Complete(_)) => Some(ParsedHead {
            method: request.method?.to_owned(),
            path: request.path?.to_owned(),
            headers: request
                .headers
                .iter()
                .map(|h| (h.name.to_owned(), h.value.to_vec()))
                .collect(),
        }),
        _ => None,
    }
}

/// RFC 3986 §5.2.4 as written (its input and output buffers), after
/// unreserved escapes are decoded and slashes merged; `None` for what the
/// proxy must refuse: a climb above the root, an encoded slash,
/// backslash or NUL, a bad escape, a dot segment with parameters.
fn model_path(path: &str) -> Option<String> {
    if !path.starts_with('/') {
        return None;
    }
    let bytes = path.as_bytes();
    let mut decoded = String::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => return None,
            b'%' => {
                let hex = path.get(i + 1..i + 3)?;
                if !hex.bytes().all(|c| c.is_ascii_hexdigit()) {
                    return None;
                }
                let value = u8::from_str_radix(hex, 16).ok()?;
                match value {
                    b'/' | b'\\' | 0 => return None,
                    c if c.is_ascii_alphanumeric() || b"-._~".contains(&c) => {
                        decoded.push(char::from(c));
                    }
                    c => decoded.push_str(&format!("%{c:02X}")),
                }
                i += 3;
            }
            c => {
                decoded.push(char::from(c));
                i += 1;
            }
        }
    }
    let mut input = String::new();
    for c in decoded.chars() {
        if !(c == '/' && input.ends_with('/')) {
            input.push(c);
        }
    }
    for segment in input.split('/') {
        let name = segment.split(';').next().unwrap_or(segment);
        if (name == "." || name == "..") && name != segment {
            return None;
        }
    }
    let mut output = String::new();
    // Removes the last segment of `output`; false when there is none.
    let pop = |output: &mut String| match output.rfind('/') {
        Some(at) => {
            output.truncate(at);
            true
        }
        None => false,
    };
    while !input.is_empty() {
        if input.starts_with("/./") {
            input.replace_range(..3, "/");
        } else if input == "/." {
            input = "/".to_owned();
        } else if input.starts_with("/../") {
            input.replace_range(..4, "/");
            if !pop(&mut output) {
                return None;
            }
        } else if input == "/.." {
            input = "/".to_owned();
            if !pop(&mut output) {
                return None;
            }
        } else {
            let end = input[1..].find('/').map_or(input.len(), |at| at + 1);
            output.push_str(&input[..end]);
            input.replace_range(..end, "");
        }
    }
    Some(output)
}

/// The route the configuration below selects.
fn model_route(host: &str, path: &str) -> &'static str {
    let host = host.to_ascii_lowercase();
    let name = match host.rfind(':') {
        Some(at) if !host.ends_with(']') => &host[..at],
        _ => &host[..],
    };
    if name.trim_end_matches('.') == "admin.test" {
        "admin"
    } else if path == "/exact" {
        "exact"
    } else if path.starts_with("/public/") {
        "public"
    } else {
        "default"
    }
}

const ROUTES: &str = "\n[[routes]]\nname = \"admin\"\nhost = \"admin.test\"\npath = \"/\"\npool = \"admin\"\n\
    \n[[routes]]\nname = \"exact\"\npath = \"= /exact\"\npool = \"exact\"\n\
    \n[[routes]]\nname = \"public\"\npath = \"/public/\"\npool = \"public\"\n\
    \n[[routes]]\nname = \"default\"\npath = \"/\"\npool = \"default\"\n";

/// One generated request.
#[derive(Clone, Debug)]
struct Case {
    /// Sent as `X-Case`, so a record arriving late is matched to its case.
    id: u64,
    method: &'static str,
    absolute: bool,
    path: String,
    query: &'static str,
    version: &'static str,
    headers: Vec<&'static [u8]>,
    body: &'static [u8],
}

impl Case {
    fn bytes(&self) -> Vec<u8> {
        let scheme = if self.absolute {
            "http://site.test"
        } else {
            ""
        };
        let mut out = format!(
            "{} {scheme}{}{} {}\r\n",
            self.method, self.path, self.query, self.version
        )
        .into_bytes();
        for header in &self.headers {
            out.extend_from_slice(header);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(format!("X-Case: {}\r\n", self.id).as_bytes());
        out.extend_from_slice(b"Connection: close\r\n\r\n");
        out.extend_from_slice(self.body);
        out
    }

    /// The single `Host` line's value, if exactly one was sent.
    fn host_lines(&self) -> Vec<&'static [u8]> {
        self.headers
            .iter()
            .filter_map(|h| {
                let (name, value) = h.split_at(h.iter().position(|&b| b == b':')?);
                name.eq_ignore_ascii_case(b"host")
                    .then(|| value[1..].trim_ascii())
            })
            .collect()
    }
}

fn cases() -> impl Strategy<Value = Case> {
    // Plain pieces more often than hostile ones, so that both refusals and
    // forwards are common.
    let segment = prop_oneof![
        6 => prop::sample::select(vec!["public", "exact", "internal", "a", "~u", "%41", "%7e", "%20", ";p"]),
        4 => prop::sample::select(vec![
            "", ".", "..", "%2e", "%2E%2e", "%2f", "%5C", "%00", "%zz", "%2", "..;x", "\\",
        ]),
    ];
    let host = prop_oneof![
        6 => prop::sample::select(vec![
            vec![&b"Host: site.test"[..]],
            vec![b"Host: admin.test"],
            vec![b"Host: ADMIN.TEST:80"],
            vec![b"Host:admin.test."],
            vec![b"Host: "],
        ]),
        3 => prop::sample::select(vec![
            vec![],
            vec![&b"Host: a b"[..]],
            vec![b"Host: x@admin.test"],
            vec![b"Host: site.test/x"],
            vec![b"Host: site.test", b"Host: admin.test"],
            vec![b" Host: folded"],
        ]),
    ];
    let header = prop::sample::select(vec![
        &b"Content-Length: 3"[..],
        b"Content-Length: 0",
        b"Content-Length: 03",
        b"Content-Length: 3, 3",
        b"Content-Length: -1",
        b"Transfer-Encoding: chunked",
        b"Transfer-Encoding: gzip, chunked",
        b"Transfer-Encoding: chunked, chunked",
        b"X-Forwarded-For: 1.2.3.4",
        b"Forwarded: for=1.2.3.4",
        b"X-Real-IP: 9.9.9.9",
        b"X-Forwarded-Host: admin.test",
        b"Connection: x-secret",
        b"X-Secret: 1",
        b"Keep-Alive: timeout=5",
        b"Upgrade: websocket",
        b"TE: trailers",
        b"X-Odd: \xff\xfe",
        b"Bad Header: x",
    ]);
    (
        prop::sample::select(vec![
            "GET", "GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "TRACE", "CONNECT",
        ]),
        any::<bool>(),
        prop_oneof![
            1 => Just(vec!["exact"]),
            1 => Just(vec!["public", "x"]),
            4 => prop::collection::vec(segment, 0..5),
        ],
        prop::sample::select(vec!["", "?q=a", "?q=/../x", "?%2e"]),
        prop::sample::select(vec!["HTTP/1.1", "HTTP/1.1", "HTTP/1.0"]),
        host,
        prop::collection::vec(header, 0..3),
        prop::sample::select(vec![&b""[..], b"", b"abc", b"3\r\nabc\r\n0\r\n\r\n"]),
    )
        .prop_map(
            |(method, absolute, segments, query, version, host, others, body)| {
                let mut headers = host;
                headers.extend(others);
                Case {
                    id: 0,
                    method,
                    absolute,
                    path: format!("/{}", segments.join("/")),
                    query,
                    version,
                    headers,
                    body,
                }
            },
        )
}

/// Sends `case` on a new connection, half-closes, and reads the answer
/// until the proxy closes (bounded).
async fn exchange(proxy: SocketAddr, case: &Case) -> String {
    let mut stream = TcpStream::connect(proxy).await.expect("connects");
    stream.write_all(&case.bytes()).await.expect("writes");
    let _ = stream.shutdown().await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(3), stream.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).into_owned()
}

/// The case a record belongs to (its `X-Case`).
fn case_of(seen: &Seen) -> Option<u64> {
    let head = seen.head.as_ref()?;
    let value = head.all("x-case").first().copied()?;
    std::str::from_utf8(value).ok()?.parse().ok()
}

/// What every forwarded head must be, whenever its record arrives.
fn check_head(case: &Case, seen: &Seen) -> Result<(), TestCaseError> {
    let path = model_path(&case.path);
    prop_assert!(path.is_some(), "a path the model refuses was forwarded");
    let refused_coding = case
        .headers
        .iter()
        .any(|h| h.starts_with(b"Transfer-Encoding: gzip") || h.ends_with(b"chunked, chunked"));
    prop_assert!(!refused_coding, "a refused coding was forwarded");
    let head = seen.head.as_ref();
    prop_assert!(head.is_some(), "httparse reads what the backend got");
    let head = head.expect("checked");
    prop_assert_eq!(&head.method, case.method);
    let expected_path = format!("{}{}", path.expect("checked"), case.query);
    prop_assert_eq!(&head.path, &expected_path);
    prop_assert_eq!(head.all("host").len(), 1, "one Host");
    let sent_hosts = case.host_lines();
    let expected_host: &[u8] = if case.absolute {
        b"site.test"
    } else {
        match sent_hosts.as_slice() {
            [one] => one,
            [] if case.version == "HTTP/1.0" => b"",
            other => {
                return Err(TestCaseError::fail(format!(
                    "forwarded with Host {other:?}"
                )));
            }
        }
    };
    let expected_host = String::from_utf8_lossy(expected_host).into_owned();
    let route_path = expected_path.split('?').next().unwrap_or("");
    prop_assert_eq!(seen.pool, model_route(&expected_host, route_path));
    let lengths = head.all("content-length");
    let codings = head.all("transfer-encoding");
    prop_assert!(lengths.len() + codings.len() <= 1, "one framing");
    for coding in codings {
        prop_assert_eq!(coding, b"chunked");
    }
    for hop in ["connection", "keep-alive", "upgrade", "te"] {
        prop_assert!(head.all(hop).is_empty(), "{hop} forwarded");
    }
    // A header the client's `Connection` names is hop-by-hop too.
    if case.headers.contains(&&b"Connection: x-secret"[..]) {
        prop_assert!(head.all("x-secret").is_empty(), "x-secret forwarded");
    }
    prop_assert_eq!(head.all("x-real-ip"), vec![&b"127.0.0.1"[..]]);
    let forwarded = head.all("forwarded");
    prop_assert_eq!(forwarded.len(), 1);
    prop_assert!(forwarded[0].starts_with(b"for=127.0.0.1;"));
    Ok(())
}

/// Checks one case's answer and what reached the backends for it so far.
/// A head forwarded before the client's body broke off may be recorded
/// after the answer; the sweep at the end checks those.
fn check(case: &Case, answer: &str, seen: &[Seen]) -> Result<(), TestCaseError> {
    let status: u16 = answer.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    if seen.is_empty() {
        prop_assert!(
            (400..500).contains(&status) || status == 501,
            "refused with {status}: {answer:?}"
        );
        if model_path(&case.path).is_none() {
            prop_assert!(matches!(status, 400 | 405 | 501), "{status}");
        }
        return Ok(());
    }
    prop_assert_eq!(seen.len(), 1, "one request reaches one backend");
    let seen = &seen[0];
    check_head(case, seen)?;
    if seen.complete {
        prop_assert_eq!(status, 200, "{:?}", answer);
        if case.method != "HEAD" {
            prop_assert!(answer.ends_with(seen.pool), "{answer:?}");
        }
    } else {
        // The client's body broke off: its fault, answered as such.
        prop_assert!(matches!(status, 400 | 408 | 413), "{status}");
    }
    Ok(())
}

#[test]
fn arbitrary_heads_are_refused_or_forwarded_as_read_and_routed_by_the_normal_path() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let log: Log = Arc::default();
    let proxy = runtime.block_on(async {
        let mut pools = String::new();
        for pool in ["admin", "exact", "public", "default"] {
            let addr = recording(pool, Arc::clone(&log)).await;
            pools.push_str(&pool_at(pool, "", &[addr]));
        }
        let toml = format!(
            "{}{ROUTES}{pools}",
            server_section(
                "client_body_timeout_ms = 1000\nupstream_timeout_ms = 1000\nattempts = 1"
            )
        );
        start(&toml).await
    });
    let addr = proxy.addr();
    let mut runner = TestRunner::new(Cases {
        cases: 256,
        failure_persistence: None,
        ..Cases::default()
    });
    let sent: Mutex<Vec<Case>> = Mutex::default();
    let result = runner.run(&cases(), |mut case| {
        let id = {
            let mut sent = sent.lock().unwrap_or_else(PoisonError::into_inner);
            case.id = sent.len() as u64;
            sent.push(case.clone());
            case.id
        };
        let answer = runtime.block_on(exchange(addr, &case));
        // The backend records a complete request before it answers, and
        // the proxy answers after the backend: that record is in by now.
        let seen: Vec<Seen> = log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter(|seen| case_of(seen) == Some(id))
            .cloned()
            .collect();
        check(&case, &answer, &seen)
    });
    runtime.block_on(proxy.shutdown());
    if let Err(failure) = result {
        panic!("{failure}");
    }
    // Every head that reached a backend, late records included.
    let sent = sent.into_inner().unwrap_or_else(PoisonError::into_inner);
    let log = log.lock().unwrap_or_else(PoisonError::into_inner);
    // Both sides of the property were exercised, every route reached.
    let forwarded = log.len();
    eprintln!("{forwarded} of {} cases forwarded", sent.len());
    assert!(
        forwarded * 10 >= sent.len() && forwarded * 10 <= sent.len() * 9,
        "{forwarded} of {} forwarded",
        sent.len()
    );
    for pool in ["admin", "exact", "public", "default"] {
        assert!(
            log.iter().any(|seen| seen.pool == pool),
            "no case reached {pool}"
        );
    }
    for seen in log.iter() {
        let case = case_of(seen).and_then(|id| sent.get(usize::try_from(id).ok()?));
        let Some(case) = case else {
            panic!("a backend got a head with no case: {seen:?}");
        };
        if let Err(failure) = check_head(case, seen) {
            panic!("{failure} for {case:?}: {seen:?}");
        }
    }
}
