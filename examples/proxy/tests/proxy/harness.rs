//! What every proxy test uses: configurations on ephemeral loopback
//! ports, a proxy started in process, clients (hyper's, and raw TCP for
//! what a well-behaved client never sends), backends, and readings of
//! pools and metrics.

use crate::backend;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::HeaderMap;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::client::legacy::{Client, connect::HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioIo};
use loadbalance::BackendState;
use prometheus_parse::{Scrape, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub(crate) use backend::Backend;
use loadbalance_proxy::{Config, Proxy};

/// Every test's bound, start to end.
pub(crate) const LIMIT: Duration = Duration::from_secs(8);

/// Runs a test's body within [`LIMIT`].
pub(crate) async fn bounded<F: Future>(test: F) -> F::Output {
    tokio::time::timeout(LIMIT, test)
        .await
        .expect("the test finished within its time limit")
}

/// `[server]` on ephemeral loopback ports, no file watching, plus `extra`
/// settings (one a line).
pub(crate) fn server_section(extra: &str) -> String {
    let watch = if extra.contains("watch_ms") {
        ""
    } else {
        "watch_ms = 0\n"
    };
    format!("[server]\nlisten = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\n{watch}{extra}\n")
}

/// A `[pools.NAME]` section over `backends` with `extra` lines (algorithm
/// `round_robin` unless `extra` names another).
pub(crate) fn pool_section(name: &str, extra: &str, backends: &[&Backend]) -> String {
    let addrs: Vec<SocketAddr> = backends.iter().map(|b| b.addr).collect();
    pool_at(name, extra, &addrs)
}

/// [`pool_section`] over servers given by address.
pub(crate) fn pool_at(name: &str, extra: &str, servers: &[SocketAddr]) -> String {
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

/// One route for every host and path to pool `pool`.
pub(crate) fn catch_all(pool: &str) -> String {
    format!("\n[[routes]]\nname = \"all\"\npath = \"/\"\npool = \"{pool}\"\n")
}

pub(crate) async fn start(toml: &str) -> Proxy {
    let config = Config::parse(toml).expect("the test's configuration parses");
    Proxy::start(config, None)
        .await
        .expect("the proxy starts on loopback")
}

pub(crate) async fn backend(name: &str) -> Backend {
    Backend::start(name).await.expect("a loopback backend")
}

pub(crate) type HttpClient = Client<HttpConnector, Full<Bytes>>;

pub(crate) fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// A response, read whole.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: String,
}

pub(crate) fn build(
    method: Method,
    addr: SocketAddr,
    host: &str,
    path: &str,
) -> hyper::http::request::Builder {
    Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"))
        .header("host", host)
}

pub(crate) async fn send(client: &HttpClient, request: Request<Full<Bytes>>) -> Reply {
    let response = client.request(request).await.expect("the proxy answers");
    let (parts, body) = response.into_parts();
    let body = body.collect().await.expect("the whole body").to_bytes();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

pub(crate) async fn get(client: &HttpClient, addr: SocketAddr, host: &str, path: &str) -> Reply {
    let request = build(Method::GET, addr, host, path)
        .body(Full::default())
        .expect("a valid request");
    send(client, request).await
}

/// Writes `bytes` on a new connection and reads until the peer closes it
/// (or `wait` passes); returns what was read.
pub(crate) async fn raw(addr: SocketAddr, bytes: &[u8], wait: Duration) -> String {
    let mut stream = TcpStream::connect(addr).await.expect("connects");
    stream.write_all(bytes).await.expect("writes the request");
    read_all(&mut stream, wait).await.0
}

/// Reads until the peer closes (or `wait` passes); what was read, and
/// whether the peer closed.
pub(crate) async fn read_all(stream: &mut TcpStream, wait: Duration) -> (String, bool) {
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

/// Polls `done` every 10 ms until it holds; false if `within` passes first.
pub(crate) async fn eventually(within: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if done() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    done()
}

/// A backend `web` that answers after `delay`.
pub(crate) async fn slow_web(delay: Duration) -> Backend {
    let web = backend("web").await;
    web.control.set_delay(delay, Duration::ZERO);
    web
}

/// The headers of the last request `web` saw.
pub(crate) fn last_headers(web: &Backend) -> HeaderMap {
    web.control
        .last_headers
        .lock()
        .clone()
        .expect("the backend saw the request")
}

/// Whether `web` holds `n` requests in flight within 2 s.
pub(crate) async fn in_flight_at(web: &Backend, n: usize) -> bool {
    eventually(Duration::from_secs(2), || {
        web.control.in_flight.load(Relaxed) == n
    })
    .await
}

pub(crate) fn state_of(proxy: &Proxy, pool: &str, backend: &Backend) -> BackendState {
    proxy
        .pool(pool)
        .expect("the pool runs")
        .stats_of(backend.addr.to_string().as_str())
        .expect("the backend is in the pool")
        .state
}

pub(crate) fn picks_of(proxy: &Proxy, pool: &str, backend: &Backend) -> u64 {
    proxy
        .pool(pool)
        .expect("the pool runs")
        .stats_of(backend.addr.to_string().as_str())
        .expect("the backend is in the pool")
        .picks
}

/// One sample's value from metrics text, by name and labels.
pub(crate) fn sample(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    scrape
        .samples
        .iter()
        .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match s.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => v,
            _ => f64::NAN,
        })
}

pub(crate) fn parse_metrics(text: &str) -> Scrape {
    Scrape::parse(text.lines().map(|line| Ok(line.to_owned()))).expect("valid metrics text")
}

/// A path to a file of this test's own (removed when dropped).
pub(crate) struct TempFile(pub(crate) PathBuf);

impl TempFile {
    pub(crate) fn new(name: &str) -> Self {
        Self(std::env::temp_dir().join(format!(
            "loadbalance-proxy-{}-{name}.toml",
            std::process::id()
        )))
    }

    pub(crate) fn write(&self, text: &str) {
        std::fs::write(&self.0, text).expect("writes the configuration file");
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

pub(crate) type Answer = Response<BoxBody<Bytes, Infallible>>;

/// A loopback HTTP/1.1 server answering every request with `respond`,
/// for behaviours `support/backend.rs` does not have.
pub(crate) async fn custom<F, Fut>(respond: F) -> SocketAddr
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Answer> + Send + 'static,
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

/// A proxy over one backend `web` with `extra` `[server]` settings.
pub(crate) async fn single(web: &Backend, extra: &str) -> Proxy {
    start(&web_config(extra, "", &[web])).await
}

/// Every request to pool `web` over `backends`, with `server` settings in
/// `[server]` and `pool` lines in the pool's section.
pub(crate) fn web_config(server: &str, pool: &str, backends: &[&Backend]) -> String {
    format!(
        "{}{}{}",
        server_section(server),
        catch_all("web"),
        pool_section("web", pool, backends)
    )
}

pub(crate) fn retry_after(reply: &Reply) -> u64 {
    reply
        .headers
        .get("retry-after")
        .expect("a 429 says when to retry")
        .to_str()
        .expect("ascii")
        .parse()
        .expect("whole seconds")
}
