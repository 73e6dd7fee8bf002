//! A tower [`Service`] and [`Layer`] that balance requests over a [`Pool`]
//! (feature `tower`): hyper 1 clients, axum and tower middleware speak it.
//!
//! Each request is picked a backend, routed to it (for HTTP: the URI's
//! scheme and authority), sent through the inner service, classified, and
//! reported with its latency; the backend counts the request as active
//! until the response future resolves, or with
//! [`BalanceLayer::hold_body`] until the response body ends. A request
//! that a [`Policy`] can replay is retried on backends it has not tried,
//! under the [`RetryPolicy`]'s attempts and budget (the rule of
//! [`Pool::run`]).
//!
//! # Readiness
//!
//! [`Balance`] reports readiness from capacity: `poll_ready` is pending
//! while every backend that could take a pick is at its `max_conns`, and
//! a guard that frees a slot wakes it (tower's `LoadShed` and
//! `ConcurrencyLimit` see a full pool). It reserves nothing: which backend
//! has room can depend on the request (its hash key, the backends it
//! already tried), which `poll_ready` does not see, and a slot reserved
//! there would be held by a service that may never be called. So the
//! response future may still wait, with [`Pool::pick_wait`] (first come
//! first served, woken by freed slots, cancellation-safe), when another
//! request took the slot first. Bound the wait with a timeout around the
//! call (tower's `Timeout`, `tokio::time::timeout`). The inner service's
//! own readiness is awaited before each attempt.
//!
//! # Examples
//!
//! hyper-util's client as the one inner service for every backend,
//! retrying replayable requests once elsewhere within a budget, holding
//! each backend until its response body ends:
//!
//! ```no_run
//! use bytes::Bytes;
//! use http_body_util::Full;
//! use hyper_util::client::legacy::Client;
//! use hyper_util::rt::TokioExecutor;
//! use loadbalance::tower::{BalanceLayer, HttpReplay};
//! use loadbalance::{Backend, Pool, RetryBudget, RetryPolicy};
//! use std::sync::Arc;
//! use tower_layer::Layer;
//! use tower_service::Service;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let pool = Arc::new(Pool::builder("least_conn".parse()?).build([
//!     Backend::new("10.0.0.1:8080".to_owned()).max_conns(64),
//!     Backend::new("10.0.0.2:8080".to_owned()).max_conns(64),
//! ])?);
//! let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
//! let budget = Arc::new(RetryBudget::new(20, 10, 100));
//! let mut upstream = BalanceLayer::new(pool)
//!     .policy(HttpReplay)
//!     .retry(RetryPolicy::attempts(2).budget(budget))
//!     .hold_body()
//!     .layer(client);
//! let req = http::Request::get("/health").body(Full::new(Bytes::new()))?;
//! let res = upstream.call(req).await?;
//! println!("{}", res.status());
//! # Ok(())
//! # }
//! ```
//!
//! In axum, call it from a handler with the request as it came (its body
//! streams; [`Http`] does not replay it), answer [`BalanceError::Pick`]
//! with a 503 and the other errors with a 502, and turn the body into
//! axum's with `Body::new`. `tests/pool/tower.rs` has such a proxy.

use std::error::Error as StdError;
use std::fmt;
use std::future::{Future, poll_fn};
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use http::uri::{PathAndQuery, Scheme, Uri};
use http_body::{Body, Frame, SizeHint};
use tower_layer::Layer;
use tower_service::Service;

use super::{Picked, Pool, PoolBackend, RetryPolicy, Verdict};
use crate::error::PickError;
use crate::pick::{Context, Tried};

/// An error a [`Policy`] returns when it cannot route a request.
pub type BoxError = Box<dyn StdError + Send + Sync>;

/// How a [`Balance`] treats each request: what the balancer sees of it,
/// how it reaches the picked backend, how its outcome is judged, and
/// whether it can be sent again.
///
/// [`Http`] and [`HttpReplay`] cover HTTP; implement this for other
/// protocols, or to hash on a client address or a header.
///
/// # Examples
///
/// Requests for a session go to the same backend, by hashing the session
/// id; the rest is HTTP's:
///
/// ```
/// use loadbalance::tower::{BalanceLayer, BoxError, Http, Policy};
/// use loadbalance::{Backend, Context, Pool, Verdict};
/// use std::sync::Arc;
///
/// struct BySession;
///
/// impl<B, R, E, T: std::fmt::Display> Policy<http::Request<B>, T, http::Response<R>, E> for BySession {
///     fn context<'r>(&self, req: &'r http::Request<B>) -> Context<'r> {
///         match req.headers().get("session") {
///             Some(id) => Context::from_key(id.as_bytes()),
///             None => Context::from_key(b""),
///         }
///     }
///
///     fn route(&self, backend: &T, req: &mut http::Request<B>) -> Result<(), BoxError> {
///         Policy::<_, T, http::Response<R>, E>::route(&Http, backend, req)
///     }
///
///     fn classify(&self, result: &Result<http::Response<R>, E>) -> Verdict {
///         Policy::<http::Request<B>, T, _, _>::classify(&Http, result)
///     }
/// }
///
/// let pool = Pool::builder("hash".parse()?).build([Backend::new("10.0.0.1:80")])?;
/// let layer = BalanceLayer::new(Arc::new(pool)).policy(BySession);
/// # drop(layer);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub trait Policy<Req, T, Res, E> {
    /// What the balancer sees of the request: nothing (the default), a
    /// client address or a key (for the hashing algorithms).
    fn context<'r>(&self, _req: &'r Req) -> Context<'r> {
        Context::new()
    }

    /// Directs `req` to `backend`. An error ends the request with
    /// [`BalanceError::Route`], reported as the backend's failure.
    ///
    /// # Errors
    ///
    /// When the request cannot be sent to this backend.
    fn route(&self, backend: &T, req: &mut Req) -> Result<(), BoxError>;

    /// How an attempt went: [`Verdict::Success`], [`Verdict::Retry`] (on
    /// another backend, if the request can be replayed and the retry
    /// policy allows) or [`Verdict::Fail`].
    fn classify(&self, result: &Result<Res, E>) -> Verdict;

    /// A copy of `req` to send, keeping `req` for a retry; `None` (the
    /// default) when it cannot be sent twice, which makes its first
    /// attempt its last.
    fn replay(&self, _req: &Req) -> Option<Req> {
        None
    }
}

/// HTTP over a pool of `host:port` backends: routes a request to
/// `http://{backend}` keeping its path and query, counts an error or a 5xx
/// response as a failure, and retries an error, a 502, a 503 or a 504
/// elsewhere. Requests are not replayed (see [`HttpReplay`]), so a
/// streaming body (hyper's `Incoming`, axum's `Body`) is fine.
///
/// # Examples
///
/// ```
/// use loadbalance::tower::{Http, Policy};
/// use loadbalance::Verdict;
///
/// let mut req = http::Request::new(());
/// *req.uri_mut() = "/users?id=7".parse()?;
/// Policy::<_, _, http::Response<()>, ()>::route(&Http, &"10.0.0.1:8080", &mut req)?;
/// assert_eq!(req.uri(), "http://10.0.0.1:8080/users?id=7");
///
/// let unavailable: Result<_, ()> = Ok(http::Response::builder().status(503).body(())?);
/// assert_eq!(Policy::<http::Request<()>, &str, _, _>::classify(&Http, &unavailable), Verdict::Retry);
/// # Ok::<(), Box<dyn std::error::Error + Send + Sync>>(())
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct Http;

/// [`Http`], replaying requests whose body is `Clone` (`Full<Bytes>`,
/// `Empty`, `String`, ...) so that they can be retried.
///
/// Retrying resends a request that a failed backend may have partly
/// handled (an error can come after the request was sent): use it for
/// idempotent requests, or where resending is safe.
///
/// # Examples
///
/// ```
/// use loadbalance::tower::{HttpReplay, Policy};
///
/// let req = http::Request::new("body");
/// let copy = Policy::<_, &str, http::Response<()>, ()>::replay(&HttpReplay, &req);
/// assert_eq!(copy.map(|c| *c.body()), Some("body"));
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct HttpReplay;

/// Points `uri` at `http://{backend}`, keeping its path and query.
fn route_http<T: fmt::Display>(backend: &T, uri: &mut Uri) -> Result<(), BoxError> {
    let path = uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    *uri = Uri::builder()
        .scheme(Scheme::HTTP)
        .authority(backend.to_string())
        .path_and_query(path)
        .build()?;
    Ok(())
}

/// An error or a 5xx is a failure; an error, a 502, a 503 or a 504 may
/// succeed elsewhere.
fn classify_http<R, E>(result: &Result<http::Response<R>, E>) -> Verdict {
    match result {
        Err(_) => Verdict::Retry,
        Ok(res) => match res.status().as_u16() {
            502..=504 => Verdict::Retry,
            500..=599 => Verdict::Fail,
            _ => Verdict::Success,
        },
    }
}

impl<B, T: fmt::Display, R, E> Policy<http::Request<B>, T, http::Response<R>, E> for Http {
    fn route(&self, backend: &T, req: &mut http::Request<B>) -> Result<(), BoxError> {
        route_http(backend, req.uri_mut())
    }

    fn classify(&self, result: &Result<http::Response<R>, E>) -> Verdict {
        classify_http(result)
    }
}

impl<B: Clone, T: fmt::Display, R, E> Policy<http::Request<B>, T, http::Response<R>, E>
    for HttpReplay
{
    fn route(&self, backend: &T, req: &mut http::Request<B>) -> Result<(), BoxError> {
        route_http(backend, req.uri_mut())
    }

    fn classify(&self, result: &Result<http::Response<R>, E>) -> Verdict {
        classify_http(result)
    }

    fn replay(&self, req: &http::Request<B>) -> Option<http::Request<B>> {
        Some(req.clone())
    }
}

/// Why a [`Balance`] request ended without a response.
///
/// A proxy answers [`Pick`](Self::Pick) with a 503 and the others with a
/// 502, say. A response from the backend, a 503 included, is not an
/// error: it is forwarded.
///
/// # Examples
///
/// ```
/// use loadbalance::tower::{BalanceError, BalanceLayer};
/// use loadbalance::{AdminState, Algorithm, Backend, PickError, Pool};
/// use std::convert::Infallible;
/// use std::sync::Arc;
/// use std::task::{Context, Poll};
/// use tower_layer::Layer;
/// use tower_service::Service;
///
/// #[derive(Clone)]
/// struct Ok200;
///
/// impl Service<http::Request<()>> for Ok200 {
///     type Response = http::Response<()>;
///     type Error = Infallible;
///     type Future = std::future::Ready<Result<Self::Response, Infallible>>;
///
///     fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
///         Poll::Ready(Ok(()))
///     }
///
///     fn call(&mut self, _: http::Request<()>) -> Self::Future {
///         std::future::ready(Ok(http::Response::new(())))
///     }
/// }
///
/// let pool = Arc::new(Pool::builder(Algorithm::RoundRobin).build([Backend::new("10.0.0.1:80")])?);
/// pool.set_state("10.0.0.1:80", AdminState::Down)?;
/// let mut balanced = BalanceLayer::new(pool).layer(Ok200);
/// let answer = futures_lite::future::block_on(balanced.call(http::Request::new(())));
/// assert!(matches!(answer, Err(BalanceError::Pick(PickError::AllDown))));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum BalanceError<E> {
    /// No backend could take the request (none up, all tried, ...); a
    /// full pool is waited for, never this.
    Pick(PickError),
    /// The policy could not route the request to its backend.
    Route(BoxError),
    /// The inner service failed (the last attempt's error).
    Service(E),
}

impl<E: fmt::Display> fmt::Display for BalanceError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Pick(error) => write!(f, "no backend could take the request: {error}"),
            Self::Route(error) => write!(f, "the request could not be routed: {error}"),
            Self::Service(error) => write!(f, "the backend request failed: {error}"),
        }
    }
}

impl<E: StdError + 'static> StdError for BalanceError<E> {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match self {
            Self::Pick(error) => Some(error),
            Self::Route(error) => Some(&**error),
            Self::Service(error) => Some(error),
        }
    }
}

/// Marks a [`Balance`] that gives its backend back when the response
/// future resolves (the default).
///
/// # Examples
///
/// ```
/// use loadbalance::tower::{BalanceLayer, Http, UntilResponse};
/// use loadbalance::{Algorithm, Backend, Pool};
/// use std::sync::Arc;
///
/// let pool = Arc::new(Pool::builder(Algorithm::RoundRobin).build([Backend::new("10.0.0.1:80")])?);
/// let layer: BalanceLayer<&str, Http, UntilResponse> = BalanceLayer::new(pool);
/// # drop(layer);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct UntilResponse;

/// Marks a [`Balance`] that gives its backend back when the HTTP response
/// body ends ([`BalanceLayer::hold_body`]).
///
/// # Examples
///
/// ```
/// use loadbalance::tower::{BalanceLayer, Http, UntilBodyEnd};
/// use loadbalance::{Algorithm, Backend, Pool};
/// use std::sync::Arc;
///
/// let pool = Arc::new(Pool::builder(Algorithm::RoundRobin).build([Backend::new("10.0.0.1:80")])?);
/// let layer: BalanceLayer<&str, Http, UntilBodyEnd> = BalanceLayer::new(pool).hold_body();
/// # drop(layer);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct UntilBodyEnd;

/// Builds [`Balance`] services over one pool: the tower [`Layer`].
///
/// # Examples
///
/// ```
/// use loadbalance::tower::{BalanceLayer, HttpReplay};
/// use loadbalance::{Algorithm, Backend, Pool, RetryBudget, RetryPolicy};
/// use std::sync::Arc;
/// use tower_layer::Layer;
///
/// let pool = Pool::builder(Algorithm::LeastConn)
///     .build([Backend::new("10.0.0.1:80").max_conns(100), Backend::new("10.0.0.2:80")])?;
/// let retry = RetryPolicy::attempts(2).budget(Arc::new(RetryBudget::new(20, 10, 100)));
/// let layer = BalanceLayer::new(Arc::new(pool)).policy(HttpReplay).retry(retry).hold_body();
/// // `client` is any `Service<http::Request<B>>`: a hyper-util client, say.
/// # let client = ();
/// let balanced = layer.layer(client);
/// # drop(balanced);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct BalanceLayer<T: PoolBackend, P = Http, H = UntilResponse> {
    pool: Arc<Pool<T>>,
    policy: Arc<P>,
    retry: RetryPolicy,
    hold: PhantomData<fn() -> H>,
}

impl<T: PoolBackend> BalanceLayer<T> {
    /// Balances over `pool` with the [`Http`] policy, no retries, and the
    /// backend held until the response future resolves.
    pub fn new(pool: Arc<Pool<T>>) -> Self {
        Self {
            pool,
            policy: Arc::new(Http),
            retry: RetryPolicy::attempts(1),
            hold: PhantomData,
        }
    }
}

impl<T: PoolBackend, P, H> BalanceLayer<T, P, H> {
    /// Treats requests by `policy`.
    #[must_use]
    pub fn policy<Q>(self, policy: Q) -> BalanceLayer<T, Q, H> {
        BalanceLayer {
            pool: self.pool,
            policy: Arc::new(policy),
            retry: self.retry,
            hold: PhantomData,
        }
    }

    /// Retries under `retry`: attempts on distinct backends, and the
    /// budget. Only requests the policy can [replay](Policy::replay) are
    /// retried.
    #[must_use]
    pub fn retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Holds the backend until the HTTP response body ends (or fails, or
    /// is dropped), and reports the outcome then: a body that fails is a
    /// failure. The response body becomes a [`HoldBody`].
    #[must_use]
    pub fn hold_body(self) -> BalanceLayer<T, P, UntilBodyEnd> {
        BalanceLayer {
            pool: self.pool,
            policy: self.policy,
            retry: self.retry,
            hold: PhantomData,
        }
    }

    /// The pool it balances over.
    pub fn pool(&self) -> &Arc<Pool<T>> {
        &self.pool
    }
}

impl<T: PoolBackend, P, H> Clone for BalanceLayer<T, P, H> {
    fn clone(&self) -> Self {
        Self {
            pool: Arc::clone(&self.pool),
            policy: Arc::clone(&self.policy),
            retry: self.retry.clone(),
            hold: PhantomData,
        }
    }
}

impl<T: PoolBackend, P, H> fmt::Debug for BalanceLayer<T, P, H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BalanceLayer")
            .field("pool", &self.pool)
            .field("retry", &self.retry)
            .field("hold", &std::any::type_name::<H>())
            .finish_non_exhaustive()
    }
}

impl<S, T: PoolBackend, P, H> Layer<S> for BalanceLayer<T, P, H> {
    type Service = Balance<S, T, P, H>;

    fn layer(&self, inner: S) -> Self::Service {
        Balance {
            inner,
            layer: self.clone(),
            waiting: None,
        }
    }
}

/// A [`Service`] that sends each request to a backend of a pool through
/// the inner service `S` (one client for every backend, such as
/// hyper-util's), built by [`BalanceLayer`]. See the [module docs](self)
/// for what a call does and for readiness.
///
/// Its futures are `Send` and `'static` (boxed), so it runs on
/// multi-threaded executors and inside axum.
///
/// # Examples
///
/// ```
/// use loadbalance::tower::{Balance, BalanceLayer};
/// use loadbalance::{Algorithm, Backend, Pool};
/// use std::convert::Infallible;
/// use std::sync::Arc;
/// use std::task::{Context, Poll};
/// use tower_layer::Layer;
/// use tower_service::Service;
///
/// // An inner service that answers with the authority it was sent to.
/// #[derive(Clone)]
/// struct Echo;
///
/// impl Service<http::Request<()>> for Echo {
///     type Response = http::Response<String>;
///     type Error = Infallible;
///     type Future = std::future::Ready<Result<Self::Response, Infallible>>;
///
///     fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
///         Poll::Ready(Ok(()))
///     }
///
///     fn call(&mut self, req: http::Request<()>) -> Self::Future {
///         let authority = req.uri().authority().map(|a| a.to_string()).unwrap_or_default();
///         std::future::ready(Ok(http::Response::new(authority)))
///     }
/// }
///
/// let pool = Arc::new(Pool::builder(Algorithm::RoundRobin)
///     .build([Backend::new("10.0.0.1:80"), Backend::new("10.0.0.2:80")])?);
/// let mut balanced: Balance<Echo, &str> = BalanceLayer::new(pool).layer(Echo);
/// let first = futures_lite::future::block_on(balanced.call(http::Request::new(())))?;
/// let second = futures_lite::future::block_on(balanced.call(http::Request::new(())))?;
/// assert_eq!((first.body().as_str(), second.body().as_str()), ("10.0.0.1:80", "10.0.0.2:80"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Balance<S, T: PoolBackend, P = Http, H = UntilResponse> {
    inner: S,
    layer: BalanceLayer<T, P, H>,
    /// Registered for the next freed slot while the pool is full.
    waiting: Option<Pin<Box<event_listener::EventListener>>>,
}

impl<S, T: PoolBackend> Balance<S, T> {
    /// `BalanceLayer::new(pool).layer(inner)`.
    pub fn new(inner: S, pool: Arc<Pool<T>>) -> Self {
        BalanceLayer::new(pool).layer(inner)
    }
}

impl<S, T: PoolBackend, P, H> Balance<S, T, P, H> {
    /// The pool it balances over.
    pub fn pool(&self) -> &Arc<Pool<T>> {
        self.layer.pool()
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S: Clone, T: PoolBackend, P, H> Clone for Balance<S, T, P, H> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            layer: self.layer.clone(),
            waiting: None,
        }
    }
}

impl<S, T: PoolBackend, P, H> Balance<S, T, P, H> {
    /// Ready while a pick without a key could find a backend; while every
    /// backend is full, pending until a guard frees a slot. Any other state
    /// (all down, ...) is ready: the call says why.
    fn poll_capacity(&mut self, cx: &mut TaskContext<'_>) -> Poll<()> {
        loop {
            if self.layer.pool().capacity() != Err(PickError::AllFull) {
                self.waiting = None;
                return Poll::Ready(());
            }
            match &mut self.waiting {
                // Registered before the next look: a slot freed in between
                // wakes it.
                None => self.waiting = Some(Box::pin(self.layer.pool().common().listen_for_slot())),
                Some(listener) => {
                    std::task::ready!(listener.as_mut().poll(cx));
                    self.waiting = None;
                }
            }
        }
    }
}

impl<S: fmt::Debug, T: PoolBackend, P, H> fmt::Debug for Balance<S, T, P, H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Balance")
            .field("inner", &self.inner)
            .field("layer", &self.layer)
            .finish()
    }
}

/// A boxed, `Send` response future.
type BoxFuture<R, E> = Pin<Box<dyn Future<Output = Result<R, E>> + Send>>;

/// The last attempt: its response, and its backend with its verdict when
/// that is still to be reported (not when a retry found no backend left
/// and the attempt before it, reported already, is the answer).
type Answered<R, T> = (R, Option<(Picked<T>, Verdict)>);

/// One request, with its attempts: the rule of [`Pool::run`], waiting for
/// capacity at each pick.
async fn send<S, T, P, Req>(
    mut inner: S,
    layer: BalanceLayer<T, P, impl Sized>,
    mut req: Req,
) -> Result<Answered<S::Response, T>, BalanceError<S::Error>>
where
    S: Service<Req>,
    T: PoolBackend,
    P: Policy<Req, T, S::Response, S::Error>,
{
    let BalanceLayer {
        pool,
        policy,
        retry,
        ..
    } = layer;
    retry.start();
    let mut tried = Tried::new();
    let mut last: Option<Result<S::Response, S::Error>> = None;
    loop {
        // The context borrows from the request, but holds no reference
        // to it across the wait: a `Send` request need not be `Sync`
        // (axum's body is not).
        let ctx = policy.context(&req);
        let picked = pool.pick_wait(&ctx.with_tried(&tried)).await;
        let picked = match picked {
            Ok(picked) => picked,
            // A retry that finds no backend left ends with the attempt
            // before it.
            Err(error) => {
                return match last {
                    Some(result) => result.map(|res| (res, None)).map_err(BalanceError::Service),
                    None => Err(BalanceError::Pick(error)),
                };
            }
        };
        tried.insert(picked.guard());
        let kept = if retry.may_retry(tried.len(), pool.len()) {
            policy.replay(&req)
        } else {
            None
        };
        // With a copy to send, the request stays for a retry.
        let (mut attempt, kept) = match kept {
            Some(copy) => (copy, Some(req)),
            None => (req, None),
        };
        if let Err(error) = policy.route(&picked, &mut attempt) {
            picked.failure();
            return Err(BalanceError::Route(error));
        }
        let result = match poll_fn(|cx| inner.poll_ready(cx)).await {
            Ok(()) => inner.call(attempt).await,
            Err(error) => Err(error),
        };
        let verdict = policy.classify(&result);
        match kept {
            Some(kept) if verdict == Verdict::Retry && retry.withdraw() => {
                picked.failure();
                last = Some(result);
                req = kept;
            }
            _ => {
                return match result {
                    Ok(res) => Ok((res, Some((picked, verdict)))),
                    Err(error) => {
                        picked.finish(verdict == Verdict::Success);
                        Err(BalanceError::Service(error))
                    }
                };
            }
        }
    }
}

impl<S, T, P, Req> Service<Req> for Balance<S, T, P, UntilResponse>
where
    S: Service<Req> + Clone + Send + 'static,
    S::Future: Send,
    S::Response: Send + 'static,
    S::Error: Send + 'static,
    T: PoolBackend,
    P: Policy<Req, T, S::Response, S::Error> + Send + Sync + 'static,
    Req: Send + 'static,
{
    type Response = S::Response;
    type Error = BalanceError<S::Error>;
    type Future = BoxFuture<S::Response, BalanceError<S::Error>>;

    /// Pending while every backend is at its `max_conns`, until a slot
    /// frees (see the [module docs](self)).
    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.poll_capacity(cx).map(Ok)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let (inner, layer) = (self.inner.clone(), self.layer.clone());
        Box::pin(async move {
            let (res, picked) = send(inner, layer, req).await?;
            if let Some((picked, verdict)) = picked {
                picked.finish(verdict == Verdict::Success);
            }
            Ok(res)
        })
    }
}

impl<S, T, P, Req, B> Service<Req> for Balance<S, T, P, UntilBodyEnd>
where
    S: Service<Req, Response = http::Response<B>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Send + 'static,
    B: Body + Unpin + Send + 'static,
    T: PoolBackend,
    P: Policy<Req, T, S::Response, S::Error> + Send + Sync + 'static,
    Req: Send + 'static,
{
    type Response = http::Response<HoldBody<B, T>>;
    type Error = BalanceError<S::Error>;
    type Future = BoxFuture<Self::Response, BalanceError<S::Error>>;

    /// Pending while every backend is at its `max_conns`, until a slot
    /// frees (see the [module docs](self)).
    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.poll_capacity(cx).map(Ok)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let (inner, layer) = (self.inner.clone(), self.layer.clone());
        Box::pin(async move {
            let (res, picked) = send(inner, layer, req).await?;
            Ok(res.map(|body| HoldBody::new(body, picked)))
        })
    }
}

/// A response body that holds its backend until it ends: reported as the
/// response's verdict when the last frame is read, as a failure when the
/// body fails, and not at all when it is dropped unread (a client that
/// went away). From [`BalanceLayer::hold_body`].
///
/// # Examples
///
/// ```
/// use http_body_util::BodyExt;
/// use loadbalance::tower::HoldBody;
///
/// // Without a backend (a body passed through), it is the body.
/// let body = HoldBody::<_, &str>::unheld(http_body_util::Full::new(bytes::Bytes::from("hi")));
/// let bytes = futures_lite::future::block_on(body.collect())?.to_bytes();
/// assert_eq!(bytes, "hi");
/// # Ok::<(), std::convert::Infallible>(())
/// ```
pub struct HoldBody<B, T> {
    body: B,
    picked: Option<(Picked<T>, Verdict)>,
}

impl<B: Body, T> HoldBody<B, T> {
    fn new(body: B, picked: Option<(Picked<T>, Verdict)>) -> Self {
        let mut body = Self { body, picked };
        if body.body.is_end_stream() {
            body.finish(true);
        }
        body
    }

    /// `body`, holding no backend.
    pub fn unheld(body: B) -> Self {
        Self { body, picked: None }
    }

    /// Whether it still holds its backend.
    pub fn holds_backend(&self) -> bool {
        self.picked.is_some()
    }

    /// Reports once: the response's verdict if the body ended well.
    fn finish(&mut self, ended_well: bool) {
        if let Some((picked, verdict)) = self.picked.take() {
            picked.finish(ended_well && verdict == Verdict::Success);
        }
    }
}

impl<B: Body + Unpin, T> Body for HoldBody<B, T> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        let frame = Pin::new(&mut this.body).poll_frame(cx);
        match &frame {
            Poll::Ready(None) => this.finish(true),
            Poll::Ready(Some(Err(_))) => this.finish(false),
            Poll::Ready(Some(Ok(_))) if this.body.is_end_stream() => this.finish(true),
            _ => {}
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl<B: fmt::Debug, T: fmt::Debug> fmt::Debug for HoldBody<B, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HoldBody")
            .field("body", &self.body)
            .field(
                "backend",
                &self.picked.as_ref().map(|(picked, _)| &**picked),
            )
            .finish()
    }
}
