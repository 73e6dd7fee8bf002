//! Backends on loopback for the demo and the proxy's tests: each answers
//! with its name after a configurable delay, fails a configurable share
//! of requests with 503, reports its health on `/healthz`, and counts what
//! it served (peak in flight included), all changeable while it runs.
//!
//! Paths: `/healthz` (200, or 503 while unhealthy); `/probe` answers a
//! probing proxy's probe after the backend's delay, stating its requests
//! in flight in `x-in-flight` (503 while down); `/echo` streams the
//! request body back; `/stream` sends `chunks` chunks 10 ms apart;
//! anything else is answered `200 <name>` (or 503 while failing).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::header::HeaderMap;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// What a backend does, changeable while it runs. Counters are
/// independent figures (`Relaxed`).
#[derive(Debug, Default)]
pub(crate) struct Control {
    /// Added to every answer but `/healthz`, in microseconds.
    pub(crate) delay_us: AtomicU64,
    /// Up to this much more, uniformly, in microseconds.
    pub(crate) jitter_us: AtomicU64,
    /// Per mille of answers that are 503.
    pub(crate) fail_per_mille: AtomicU32,
    /// Every answer is 503 (`/healthz` included) while set.
    pub(crate) down: AtomicBool,
    /// `/healthz` answers 503 while set.
    pub(crate) unhealthy: AtomicBool,
    pub(crate) in_flight: AtomicUsize,
    pub(crate) peak_in_flight: AtomicUsize,
    /// Answers other than `/healthz`, by status.
    pub(crate) ok: AtomicU64,
    pub(crate) failed: AtomicU64,
    pub(crate) health_checks: AtomicU64,
    /// The headers of the last request other than `/healthz`.
    pub(crate) last_headers: Mutex<Option<HeaderMap>>,
    /// `Cache-Control` of every 200 answer, when set.
    pub(crate) cache_control: Mutex<Option<hyper::header::HeaderValue>>,
}

impl Control {
    pub(crate) fn set_delay(&self, delay: Duration, jitter: Duration) {
        self.delay_us.store(micros(delay), Relaxed);
        self.jitter_us.store(micros(jitter), Relaxed);
    }

    /// Requests answered, failures included.
    pub(crate) fn served(&self) -> u64 {
        self.ok.load(Relaxed) + self.failed.load(Relaxed)
    }
}

fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

/// A running backend; stops when dropped.
#[derive(Debug)]
pub(crate) struct Backend {
    pub(crate) name: String,
    pub(crate) addr: SocketAddr,
    pub(crate) control: Arc<Control>,
    task: JoinHandle<()>,
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Backend {
    /// Starts a backend named `name` on a free loopback port.
    pub(crate) async fn start(name: &str) -> std::io::Result<Self> {
        Self::start_at(name, SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    /// Starts a backend named `name` on `addr` (port 0: a free one).
    pub(crate) async fn start_at(name: &str, addr: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let control = Arc::new(Control::default());
        let task = tokio::spawn(serve(listener, name.to_owned(), Arc::clone(&control)));
        Ok(Self {
            name: name.to_owned(),
            addr,
            control,
            task,
        })
    }
}

async fn serve(listener: TcpListener, name: String, control: Arc<Control>) {
    let name = Bytes::from(name);
    let mut connections = tokio::task::JoinSet::new();
    while let Ok((stream, _)) = listener.accept().await {
        let _ = stream.set_nodelay(true);
        let (name, control) = (name.clone(), Arc::clone(&control));
        let service = service_fn(move |request| {
            let (name, control) = (name.clone(), Arc::clone(&control));
            async move { Ok::<_, Infallible>(answer(request, name, control).await) }
        });
        connections.spawn(http1::Builder::new().serve_connection(TokioIo::new(stream), service));
        while connections.try_join_next().is_some() {}
    }
}

type Reply = Response<http_body_util::combinators::UnsyncBoxBody<Bytes, hyper::Error>>;

async fn answer(request: Request<Incoming>, name: Bytes, control: Arc<Control>) -> Reply {
    let path = request.uri().path().to_owned();
    if path == "/healthz" {
        control.health_checks.fetch_add(1, Relaxed);
        let bad = control.unhealthy.load(Relaxed) || control.down.load(Relaxed);
        return text(
            if bad {
                StatusCode::SERVICE_UNAVAILABLE
            } else {
                StatusCode::OK
            },
            name,
        );
    }
    if path == "/probe" {
        // As slow as a request (it waits its turn as one would), but no
        // work: Prequal's probe.
        tokio::time::sleep(Duration::from_micros(control.delay_us.load(Relaxed))).await;
        if control.down.load(Relaxed) {
            return text(StatusCode::SERVICE_UNAVAILABLE, name);
        }
        let mut response = text(StatusCode::OK, name);
        response.headers_mut().insert(
            "x-in-flight",
            hyper::header::HeaderValue::from(control.in_flight.load(Relaxed)),
        );
        return response;
    }
    *control.last_headers.lock() = Some(request.headers().clone());
    let _busy = InFlight::enter(&control);
    let delay = control.delay_us.load(Relaxed);
    let jitter = control.jitter_us.load(Relaxed);
    let pause = delay + if jitter > 0 { rand_below(jitter) } else { 0 };
    if pause > 0 {
        tokio::time::sleep(Duration::from_micros(pause)).await;
    }
    let failing = control.down.load(Relaxed)
        || rand_below(1000) < u64::from(control.fail_per_mille.load(Relaxed));
    if failing {
        control.failed.fetch_add(1, Relaxed);
        return text(StatusCode::SERVICE_UNAVAILABLE, name);
    }
    control.ok.fetch_add(1, Relaxed);
    match path.as_str() {
        "/echo" => Response::new(Echo(request.into_body()).boxed_unsync()),
        "/stream" => {
            let chunks: u32 = request
                .uri()
                .query()
                .and_then(|q| q.strip_prefix("chunks="))
                .and_then(|n| n.parse().ok())
                .unwrap_or(5);
            let (sender, receiver) = tokio::sync::mpsc::channel(1);
            tokio::spawn(async move {
                for index in 0..chunks {
                    let chunk = Bytes::from(format!("chunk {index}\n"));
                    if sender.send(Ok(Frame::data(chunk))).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            });
            let stream = tokio_stream(receiver);
            Response::new(StreamBody::new(stream).boxed_unsync())
        }
        _ => {
            let mut response = text(StatusCode::OK, name);
            if let Some(value) = control.cache_control.lock().clone() {
                response
                    .headers_mut()
                    .insert(hyper::header::CACHE_CONTROL, value);
            }
            response
        }
    }
}

fn text(status: StatusCode, body: Bytes) -> Reply {
    let mut response = Response::new(
        Full::new(body)
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *response.status_mut() = status;
    response
}

/// Counts a request in flight and the peak.
struct InFlight<'a>(&'a Control);

impl<'a> InFlight<'a> {
    fn enter(control: &'a Control) -> Self {
        let now = control.in_flight.fetch_add(1, Relaxed) + 1;
        control.peak_in_flight.fetch_max(now, Relaxed);
        Self(control)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Relaxed);
    }
}

/// The request body, frame by frame, as the response body.
struct Echo(Incoming);

impl Body for Echo {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        Pin::new(&mut self.get_mut().0).poll_frame(cx)
    }

    fn size_hint(&self) -> SizeHint {
        self.0.size_hint()
    }
}

type Frames = tokio::sync::mpsc::Receiver<Result<Frame<Bytes>, hyper::Error>>;

/// A receiver as a stream of frames.
fn tokio_stream(
    receiver: Frames,
) -> impl futures_lite::Stream<Item = Result<Frame<Bytes>, hyper::Error>> {
    futures_lite::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|frame| (frame, receiver))
    })
}

/// A uniform draw below `n` (not for cryptography).
fn rand_below(n: u64) -> u64 {
    rand::random_range(0..n)
}
