//! Backends that misbehave on purpose, written by hand (each found by a
//! review, each a test that failed first): bytes or a close that come
//! after an answer, early answers to uploads, resets.

use super::*;
use crate::body::{Capped, ClientFault, UpstreamBody};
use hyper::StatusCode;
use hyper::body::Incoming;
use hyper::{Request, Response};
use std::convert::Infallible;
use std::io::{Read, Write};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

fn client() -> Http1 {
    Http1::new(Duration::from_secs(1), Duration::from_secs(1))
}

fn headers() -> &'static hyper::HeaderMap {
    let mut headers = hyper::HeaderMap::new();
    headers.insert("host", "backend".parse().expect("value"));
    Box::leak(Box::new(headers))
}

fn get() -> Outgoing<'static> {
    Outgoing {
        method: &hyper::Method::GET,
        target: "/",
        headers: headers(),
        body: UpstreamBody::Empty,
    }
}

async fn read_whole(response: Response<Streaming>) -> Vec<u8> {
    use http_body_util::BodyExt;
    let body = response.into_body().collect().await.expect("body");
    body.to_bytes().to_vec()
}

/// A backend on its own thread (blocking IO, so it runs while the test's
/// runtime is blocked): `serve` gets each connection and its number.
fn thread_backend(serve: fn(std::net::TcpStream, usize)) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = listener.local_addr().expect("address").to_string();
    std::thread::spawn(move || {
        for (n, stream) in listener.incoming().enumerate() {
            let Ok(stream) = stream else { return };
            std::thread::spawn(move || serve(stream, n));
        }
    });
    address
}

/// Reads a request head (blocking); all the bytes read.
fn read_head_blocking(stream: &mut std::net::TcpStream) -> Vec<u8> {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
    }
    seen
}

/// A streamed request body: what a hyper server reads of a chunked
/// request that the returned stream writes (its head written already).
async fn streamed() -> (UpstreamBody, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    let mut writer = TcpStream::connect(address).await.expect("connect");
    let (stream, _) = listener.accept().await.expect("accept");
    let (tx, rx) = tokio::sync::oneshot::channel();
    let tx = std::sync::Mutex::new(Some(tx));
    tokio::spawn(async move {
        let service = hyper::service::service_fn(move |request: Request<Incoming>| {
            if let Some(tx) = tx.lock().expect("lock").take() {
                let _ = tx.send(request.into_body());
            }
            std::future::pending::<Result<Response<String>, Infallible>>()
        });
        let _ = hyper::server::conn::http1::Builder::new()
            .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
            .await;
    });
    writer
        .write_all(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
        .await
        .expect("write");
    let incoming = rx.await.expect("a request");
    let capped = Capped::new(
        incoming,
        u64::MAX,
        Duration::from_secs(30),
        ClientFault::new(),
    );
    (UpstreamBody::Streamed(Box::new(capped)), writer)
}

fn post(body: UpstreamBody) -> Outgoing<'static> {
    Outgoing {
        method: &hyper::Method::POST,
        target: "/",
        headers: headers(),
        body,
    }
}

/// Bytes a backend sent past its answer's end that are in this host's
/// socket when the connection is next taken are seen, whether or not the
/// runtime's IO driver has run since they came.
#[tokio::test]
async fn bytes_past_an_answer_already_received_keep_the_connection_from_reuse() {
    let address = thread_backend(|mut stream, n| {
        read_head_blocking(&mut stream);
        if n == 0 {
            // An answer whose body is longer than its Content-Length says
            // (a miscounted body), the rest a moment later.
            stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                .expect("write");
            std::thread::sleep(Duration::from_millis(20));
            stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nevil")
                .expect("write");
            read_head_blocking(&mut stream);
        }
        let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\ngood");
        std::thread::sleep(Duration::from_secs(1));
    });
    let client = client();
    let response = client.request(&address, get()).await.expect("answer");
    assert_eq!(read_whole(response).await, b"ok");
    // The worker busy elsewhere for 100 ms (its IO driver not polled): the
    // stray bytes are in the socket's buffer by then.
    std::thread::sleep(Duration::from_millis(100));
    let response = client.request(&address, get()).await.expect("answer");
    assert_eq!(String::from_utf8_lossy(&read_whole(response).await), "good");
}

/// A connection the backend closed (its keep-alive timeout) while the
/// worker was busy is not used for the next request.
#[tokio::test]
async fn a_close_already_received_keeps_the_connection_from_reuse() {
    let address = thread_backend(|mut stream, _| {
        read_head_blocking(&mut stream);
        stream
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            .expect("write");
        // Its keep-alive timeout, 20 ms later.
        std::thread::sleep(Duration::from_millis(20));
    });
    let client = client();
    let response = client.request(&address, get()).await.expect("answer");
    assert_eq!(read_whole(response).await, b"ok");
    std::thread::sleep(Duration::from_millis(100));
    let response = client
        .request(&address, post(UpstreamBody::Whole(Some("x".into()))))
        .await
        .expect("answer on a new connection");
    assert_eq!(read_whole(response).await, b"ok");
}

/// A backend that refuses an upload early (413) and closes: the client
/// gets the 413, not the error of the upload's next write. (hyper's
/// dispatcher reads before it writes.)
#[tokio::test]
async fn an_early_answer_and_close_during_an_upload_is_the_answer() {
    static GO: std::sync::Mutex<Option<std::sync::mpsc::Receiver<()>>> =
        std::sync::Mutex::new(None);
    static READY: std::sync::Mutex<Option<std::sync::mpsc::Sender<()>>> =
        std::sync::Mutex::new(None);
    let (go_tx, go_rx) = std::sync::mpsc::channel();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    *GO.lock().expect("lock") = Some(go_rx);
    *READY.lock().expect("lock") = Some(ready_tx);
    let address = thread_backend(|mut stream, _| {
        read_head_blocking(&mut stream);
        // The upload fills the socket buffers meanwhile.
        std::thread::sleep(Duration::from_millis(200));
        let _ = READY.lock().expect("lock").take().expect("once").send(());
        let _ = GO.lock().expect("lock").take().expect("once").recv();
        stream
            .write_all(
                b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            )
            .expect("write");
        // Closed with the upload unread: a reset follows the answer.
    });
    let (body, mut writer) = streamed().await;
    tokio::spawn(async move {
        let chunk = format!("4000\r\n{}\r\n", "x".repeat(0x4000));
        while writer.write_all(chunk.as_bytes()).await.is_ok() {}
    });
    let sent = tokio::spawn(async move {
        client()
            .request(&address, post(body))
            .await
            .map(|response| response.status())
            .map_err(|error| error.to_string())
    });
    while ready_rx.try_recv().is_err() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // The answer and the reset both arrive while the worker is busy.
    go_tx.send(()).expect("go");
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(sent.await.expect("join"), Ok(StatusCode::PAYLOAD_TOO_LARGE));
}

/// A backend that accepts an upload at once (202) and reads it on gets
/// all of it, as from hyper's client, whose connection task sends the
/// body on whether or not the answer is still being read.
#[tokio::test]
async fn an_upload_answered_early_is_sent_to_its_end() {
    static WHOLE: std::sync::Mutex<Option<std::sync::mpsc::Sender<bool>>> =
        std::sync::Mutex::new(None);
    let (whole_tx, whole_rx) = std::sync::mpsc::channel();
    *WHOLE.lock().expect("lock") = Some(whole_tx);
    let address = thread_backend(|mut stream, _| {
        let mut seen = read_head_blocking(&mut stream);
        stream
            .write_all(b"HTTP/1.1 202 Accepted\r\nContent-Length: 2\r\n\r\nok")
            .expect("write");
        let mut buf = [0u8; 4096];
        while !seen.ends_with(b"0\r\n\r\n") {
            match stream.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
        let whole = seen.ends_with(b"5\r\nworld\r\n0\r\n\r\n");
        let _ = WHOLE
            .lock()
            .expect("lock")
            .take()
            .expect("once")
            .send(whole);
    });
    let (body, mut writer) = streamed().await;
    writer.write_all(b"5\r\nhello\r\n").await.expect("write");
    let response = client()
        .request(&address, post(body))
        .await
        .expect("answer");
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    assert_eq!(read_whole(response).await, b"ok");
    // The rest of the client's body comes after the answer.
    writer
        .write_all(b"5\r\nworld\r\n0\r\n\r\n")
        .await
        .expect("write");
    let whole = tokio::task::spawn_blocking(move || {
        whole_rx
            .recv_timeout(Duration::from_secs(2))
            .unwrap_or(false)
    })
    .await
    .expect("join");
    assert!(whole, "the backend got a cut upload");
}

/// The same early answer with a body that comes after its head: the body
/// reaches the client whole, not the error of the upload's next write.
#[tokio::test]
async fn an_early_answers_body_is_read_whole_though_the_upload_broke() {
    static GO: std::sync::Mutex<Option<std::sync::mpsc::Receiver<()>>> =
        std::sync::Mutex::new(None);
    let (go_tx, go_rx) = std::sync::mpsc::channel();
    *GO.lock().expect("lock") = Some(go_rx);
    let address = thread_backend(|mut stream, _| {
        read_head_blocking(&mut stream);
        std::thread::sleep(Duration::from_millis(200));
        stream
            .write_all(
                b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 5\r\nConnection: close\r\n\r\n",
            )
            .expect("write");
        let _ = GO.lock().expect("lock").take().expect("once").recv();
        stream.write_all(b"large").expect("write");
        // Closed with the upload unread: a reset follows the body.
    });
    let (body, mut writer) = streamed().await;
    tokio::spawn(async move {
        let chunk = format!("4000\r\n{}\r\n", "x".repeat(0x4000));
        while writer.write_all(chunk.as_bytes()).await.is_ok() {}
    });
    let response = client()
        .request(&address, post(body))
        .await
        .expect("the early answer's head");
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    go_tx.send(()).expect("go");
    // The body and the reset both arrive while the worker is busy.
    std::thread::sleep(Duration::from_millis(100));
    use http_body_util::BodyExt;
    let body = response.into_body().collect().await.map(|b| b.to_bytes());
    assert_eq!(
        body.map_err(|error| error.to_string()).as_deref(),
        Ok(&b"large"[..])
    );
}
