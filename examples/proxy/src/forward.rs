//! One request, from the client's connection to a backend and back:
//! checked (framing, client limits, size), routed, picked, forwarded with
//! both bodies streaming, retried on another backend when that is safe,
//! and answered with a short error of the proxy's own when nothing can
//! serve it.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use tokio::time::Instant;

use hyper::body::{Body, Incoming};
use hyper::header::{
    ALLOW, CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, HOST, HeaderMap, HeaderValue, RETRY_AFTER, TE,
    TRAILER,
};
use hyper::http::request::Parts;
use hyper::{Method, Request, Response, StatusCode, Version};
use loadbalance::limit::{
    AdaptivePermit, Admission, ForwardedHeader, Reason, Rejection, UnreadableForwarded,
};
use loadbalance::{PickError, Tried};

use std::future::Future;
use std::pin::Pin;

use hyper::upgrade::OnUpgrade;

use super::Shared;
use super::body::{BoxError, Capped, ClientFault, Fault, Held, ProxyBody, UpstreamBody};
use super::cache::{self, Cache, Fetched};
use super::compress::Accepted;
use super::framing::Head;
use super::headers::{Hop, grpc_unavailable, set_forwarding, strip_hop_by_hop, url_forwarding};
use super::links::{self, Answer, Http1, Link, Outgoing, Own};
use super::request_target;
use super::state::{Adaptive, State, Upstream};
use super::tunnel;

/// How a request came: the protocol, and TLS's version if any.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Protocol {
    /// HTTP/1.1 (or 1.0) in plaintext.
    Http1,
    /// HTTP/1.1 over TLS (1.3, or else 1.2).
    Https1 { tls13: bool },
    /// HTTP/2 over TLS.
    H2 { tls13: bool },
    /// HTTP/2 in plaintext, by prior knowledge (gRPC clients).
    H2c,
}

impl Protocol {
    /// The scheme the client used.
    pub(crate) fn scheme(self) -> &'static str {
        match self {
            Self::Http1 | Self::H2c => "http",
            Self::Https1 { .. } | Self::H2 { .. } => "https",
        }
    }
}

/// Handles one request; never fails (every error is a response).
pub(crate) async fn handle(
    shared: Arc<Shared>,
    backends: Http1,
    peer: SocketAddr,
    protocol: Protocol,
    head: Head,
    request: Request<Incoming>,
) -> Response<ProxyBody> {
    let mut outcome = shared.access_log.as_ref().map(|_| Outcome::default());
    let mut response = serve(
        &shared,
        &backends,
        peer,
        protocol,
        head,
        request,
        outcome.as_mut(),
    )
    .await;
    shared.counters.response(response.status());
    if let Some(outcome) = outcome {
        response.extensions_mut().insert(outcome);
    }
    response
}

/// What the access log learns of a request as it is handled: the client
/// (after trusted proxies), the route, the backend and its time to the
/// response head. Gathered only while the log is on.
#[derive(Clone, Debug, Default)]
pub(crate) struct Outcome {
    pub(crate) client: Option<IpAddr>,
    pub(crate) route: Option<String>,
    pub(crate) upstream: Option<String>,
    pub(crate) upstream_time: Option<Duration>,
}

async fn serve(
    shared: &Arc<Shared>,
    backends: &Http1,
    peer: SocketAddr,
    protocol: Protocol,
    head: Head,
    request: Request<Incoming>,
    mut outcome: Option<&mut Outcome>,
) -> Response<ProxyBody> {
    match head {
        Head::Clean => {}
        Head::Conflicting => {
            shared.counters.malformed.fetch_add(1, Relaxed);
            return closing(error(
                StatusCode::BAD_REQUEST,
                "400 bad request: conflicting or invalid body framing\n",
            ));
        }
        Head::UnsupportedCoding => {
            shared.counters.malformed.fetch_add(1, Relaxed);
            return closing(error(
                StatusCode::NOT_IMPLEMENTED,
                "501 a transfer coding other than chunked\n",
            ));
        }
    }
    // No tunnels to arbitrary addresses: CONNECT only as a WebSocket over
    // HTTP/2 (RFC 8441). TRACE would echo what the client sent (cross-site
    // tracing), so nginx refuses it too.
    let (mut head, body) = request.into_parts();
    let connect = head.method == Method::CONNECT && !tunnel::websocket_over_h2(&head);
    if connect || head.method == Method::TRACE {
        let mut response = error(StatusCode::METHOD_NOT_ALLOWED, "405 method not allowed\n");
        response.headers_mut().insert(
            ALLOW,
            HeaderValue::from_static("GET, HEAD, POST, PUT, DELETE, PATCH, OPTIONS"),
        );
        return response;
    }
    let state = shared.state.load_full();
    let Ok(client) = client_address(&state, peer.ip(), &head.headers) else {
        // Fail closed: never fall back to the trusted proxy itself, to
        // which no limit applies.
        shared.counters.malformed.fetch_add(1, Relaxed);
        return error(
            StatusCode::BAD_REQUEST,
            "400 a trusted proxy forwarded an unreadable client address\n",
        );
    };
    if let Some(outcome) = outcome.as_deref_mut() {
        outcome.client = Some(client);
    }
    let admission = match admit(&state, client).await {
        Ok(admission) => admission,
        Err(rejection) => return rejected(shared, &rejection),
    };
    let (host, path) = match request_target::read(&head) {
        Ok(target) => (target.host.to_owned(), target.path_and_query()),
        Err(problem) => {
            shared.counters.malformed.fetch_add(1, Relaxed);
            let mut response =
                Response::new(ProxyBody::owned(format!("400 bad request: {problem}\n")));
            *response.status_mut() = StatusCode::BAD_REQUEST;
            return response;
        }
    };
    if content_length(&head.headers).is_some_and(|length| length > shared.settings.max_body_bytes) {
        return closing(error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "413 request body too large\n",
        ));
    }
    // The route by the path in normal form, without its query, and
    // without `;` parameters, which Java servers strip before they
    // resolve a path (`/admin;x/secret` is their `/admin/secret`).
    let route_path = path.split_once('?').map_or(path.as_str(), |(path, _)| path);
    let route_path = request_target::without_parameters(route_path);
    let Some(matched) = state.router.route(&host, &route_path) else {
        return error(StatusCode::NOT_FOUND, "404 no route\n");
    };
    let index = *matched.target();
    let route = &state.routes[index];
    let upstream = &state.upstreams[route.upstream];
    if let Some(outcome) = outcome.as_deref_mut() {
        outcome.route = Some(matched.rule().to_owned());
    }
    let trusted = state
        .clients
        .trusted
        .as_ref()
        .is_some_and(|trusted| trusted.trusts(peer.ip()));
    let has_body = !body.is_end_stream();
    // A tunnel is never cached (checked last: only cached routes pay).
    if route.cache && Cache::handles(&head, has_body) && tunnel::requested(&head).is_none() {
        let key = cache::primary(protocol.scheme(), &host, &path);
        let origin = Arc::new(ToBackends {
            shared: Arc::clone(shared),
            backends: backends.clone(),
            state: Arc::clone(&state),
            route: index,
            peer: peer.ip(),
            client,
            trusted,
            host,
            scheme: protocol.scheme(),
            path,
        });
        // What a trusted proxy says of the URL reaches the backend, so it
        // keys the response as `Vary` would.
        // An untrusted client's words of the URL never reach the backend
        // (`set_forwarding` drops them): dropped here, they key nothing.
        let also_by = url_forwarding(&head.headers);
        let also_by = if trusted {
            also_by
        } else {
            for name in &also_by {
                head.headers.remove(name);
            }
            Vec::new()
        };
        let key = cache::Key { uri: key, also_by };
        // Boxed: the cache's future would otherwise widen every request's.
        let fetched = Box::pin(shared.cache.serve(origin, head, key, admission)).await;
        if let Some(outcome) = outcome {
            outcome.upstream = fetched.upstream;
            outcome.upstream_time = fetched.upstream_time;
        }
        return fetched.response;
    }
    let hop = Hop {
        peer: peer.ip(),
        client,
        trusted,
        host: Some(host.as_str()),
        scheme: protocol.scheme(),
    };
    let method = head.method.clone();
    let accepted = route
        .compression
        .as_ref()
        .map(|_| Accepted::read(&head.headers));
    let routed = Routed {
        upstream,
        route_limit: route.adaptive.as_ref(),
        hop,
        path: &path,
        admission: Some(admission),
        outcome,
    };
    // Boxed: every future around it (the connection's service, the access
    // log's) would otherwise be as wide and be moved whole per request.
    let mut response = Box::pin(forward(
        shared,
        backends,
        routed,
        head,
        has_body.then_some(body),
    ))
    .await;
    if route.cache {
        // Past the cache: an unsafe method answered without an error
        // invalidates its URI (RFC 9111 §4.4).
        let safe = matches!(
            method,
            Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
        );
        let status = response.status();
        if !safe && (status.is_success() || status.is_redirection()) {
            shared
                .cache
                .invalidate(&cache::primary(protocol.scheme(), &host, &path));
        }
        let why = if safe { "fwd=bypass" } else { "fwd=method" };
        cache::set_status(response.headers_mut(), why);
    }
    match (&route.compression, accepted) {
        (Some(compression), Some(accepted)) => compression.apply(&method, &accepted, response),
        _ => response,
    }
}

/// Where an adaptive limit shed a request.
#[derive(Clone, Copy)]
enum Scope {
    Route,
    Pool,
}

/// A request an adaptive concurrency limit shed: 503 at once, to be tried
/// again in a second.
fn shed(shared: &Shared, scope: Scope) -> Response<ProxyBody> {
    let counter = match scope {
        Scope::Route => &shared.counters.shed_by_route,
        Scope::Pool => &shared.counters.shed_by_pool,
    };
    counter.fetch_add(1, Relaxed);
    let mut response = error(
        StatusCode::SERVICE_UNAVAILABLE,
        "503 busy: past the adaptive concurrency limit\n",
    );
    response
        .headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

/// The adaptive permits a request to the backends holds (its route's and
/// its pool's). Only a backend's answer, or its silence past the upstream
/// timeout, teaches the limits its latency ([`finish`](Self::finish)); a
/// request the proxy answers itself gives its slots back untaught.
struct Limits(Option<AdaptivePermit>, Option<AdaptivePermit>);

impl Limits {
    /// The route's permit, then the pool's: `Err` with the limit that
    /// shed the request.
    fn take(route: Option<&Adaptive>, pool: Option<&Adaptive>) -> Result<Self, Scope> {
        let take = |adaptive: Option<&Adaptive>, scope| match adaptive {
            Some(adaptive) => adaptive.limit.try_acquire().map(Some).map_err(|_| scope),
            None => Ok(None),
        };
        let route = take(route, Scope::Route)?;
        let pool = take(pool, Scope::Pool)?;
        Ok(Self(route, pool))
    }

    fn finish(self) {
        for permit in [self.0, self.1].into_iter().flatten() {
            permit.finish();
        }
    }
}

/// A cached route's backends, as a miss reaches them: owned, so a
/// background refresh can outlive its request.
struct ToBackends {
    shared: Arc<Shared>,
    backends: Http1,
    state: Arc<State>,
    /// The route (an index into `state.routes`).
    route: usize,
    peer: IpAddr,
    client: IpAddr,
    trusted: bool,
    host: String,
    scheme: &'static str,
    path: String,
}

impl cache::Origin for ToBackends {
    fn fetch(
        self: Arc<Self>,
        head: Parts,
        admission: Option<Admission>,
    ) -> Pin<Box<dyn Future<Output = Fetched> + Send>> {
        Box::pin(async move {
            let route = &self.state.routes[self.route];
            let hop = Hop {
                peer: self.peer,
                client: self.client,
                trusted: self.trusted,
                host: Some(self.host.as_str()),
                scheme: self.scheme,
            };
            let method = head.method.clone();
            let accepted = route
                .compression
                .as_ref()
                .map(|_| Accepted::read(&head.headers));
            let mut outcome = Outcome::default();
            let routed = Routed {
                upstream: &self.state.upstreams[route.upstream],
                route_limit: route.adaptive.as_ref(),
                hop,
                path: &self.path,
                admission,
                outcome: Some(&mut outcome),
            };
            let response = forward(&self.shared, &self.backends, routed, head, None).await;
            // Compressed before it is stored: each coding a variant.
            let response = match (&route.compression, accepted) {
                (Some(compression), Some(accepted)) => {
                    compression.apply(&method, &accepted, response)
                }
                _ => response,
            };
            Fetched {
                response,
                upstream: outcome.upstream,
                upstream_time: outcome.upstream_time,
            }
        })
    }
}

/// A request past its checks and routed: where it goes, what the backend
/// is told of its client, the path it gets, the client's admission, and
/// what the access log is to learn.
struct Routed<'a> {
    upstream: &'a Upstream,
    /// The route's adaptive limit, if it has one.
    route_limit: Option<&'a Adaptive>,
    hop: Hop<'a>,
    path: &'a str,
    /// The client's admission; none for the cache's background refresh.
    admission: Option<Admission>,
    outcome: Option<&'a mut Outcome>,
}

/// The client: the peer, or what a trusted proxy says it forwarded for;
/// an error when a trusted proxy's header cannot be read.
fn client_address(
    state: &State,
    peer: IpAddr,
    headers: &HeaderMap,
) -> Result<IpAddr, UnreadableForwarded> {
    let Some(trusted) = &state.clients.trusted else {
        return Ok(peer);
    };
    let name = match trusted.header() {
        ForwardedHeader::Forwarded => "forwarded",
        ForwardedHeader::XRealIp => "x-real-ip",
        _ => "x-forwarded-for",
    };
    let values = headers.get_all(name).iter().map(HeaderValue::as_bytes);
    trusted.try_client(peer, values)
}

async fn admit(state: &State, client: IpAddr) -> Result<Admission, Rejection> {
    #[cfg(feature = "redis")]
    if let Some(shared) = &state.clients.shared {
        return state.clients.flow.check_shared_limits(client, shared).await;
    }
    state.clients.flow.check(client)
}

fn rejected(shared: &Shared, rejection: &Rejection) -> Response<ProxyBody> {
    let counters = &shared.counters;
    let (counter, text) = match rejection.reason() {
        Reason::DenyListed => (&counters.denied, "403 forbidden\n"),
        Reason::Banned => (&counters.banned, "403 forbidden: banned for a while\n"),
        Reason::RateLimited => (&counters.rate_limited, "429 too many requests\n"),
        Reason::ClientInFlight => (&counters.in_flight, "429 too many requests in flight\n"),
        Reason::ServerInFlight => (&counters.in_flight, "503 busy\n"),
        _ => (
            &counters.unavailable,
            "503 the shared limit is unavailable\n",
        ),
    };
    counter.fetch_add(1, Relaxed);
    let status =
        StatusCode::from_u16(rejection.status()).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
    let mut response = error(status, text);
    if let Some(seconds) = rejection.retry_after_secs() {
        response
            .headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from(seconds));
    }
    response
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers.get(CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
}

/// Idempotent methods (RFC 9110 §9.2.2): sending one twice does no harm.
fn idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

/// Picks, forwards and retries. A request may be retried when its method
/// is idempotent and it has no body (a streamed body cannot be replayed),
/// on a backend it has not tried, while attempts and the retry budget
/// last; a refused connection, a timeout and a 502/503/504 are retried.
/// A probing pool's probes go out after each pick. The route's and the
/// pool's adaptive limits are asked once the body is read, before the
/// first pick: a slow sender holds no slot of theirs.
async fn forward(
    shared: &Shared,
    backends: &Http1,
    routed: Routed<'_>,
    head: Parts,
    body: Option<Incoming>,
) -> Response<ProxyBody> {
    let Routed {
        upstream,
        route_limit,
        hop,
        path,
        admission,
        mut outcome,
    } = routed;
    let settings = &shared.settings;
    // A tunnel asked for: its place first (429 past the client's limit),
    // and the client's side of the switch, taken before the request is
    // taken apart.
    let mut head = head;
    let asked = tunnel::requested(&head);
    let mut permit = None;
    let mut client_upgrade = None;
    if asked.is_some() {
        // A tunnel is HTTP/1.1's to the backend.
        if matches!(upstream.own, Some(Own::H2c(_))) {
            return error(
                StatusCode::NOT_IMPLEMENTED,
                "501 no tunnels to an h2c pool\n",
            );
        }
        permit = shared.tunnels.open(hop.client);
        if permit.is_none() {
            return error(StatusCode::TOO_MANY_REQUESTS, "429 too many tunnels\n");
        }
        client_upgrade = head.extensions.remove::<OnUpgrade>();
    }
    let Parts {
        method,
        uri,
        mut headers,
        ..
    } = head;
    let method = match &asked {
        Some(asked) => asked.method(method),
        None => method,
    };
    // gRPC needs `TE: trailers` (RFC 9113 §8.2.2 allows it end to end
    // over HTTP/2); other `TE` is hop-by-hop.
    let te_trailers = upstream.own.is_some()
        && headers
            .get(TE)
            .is_some_and(|te| te.as_bytes().eq_ignore_ascii_case(b"trailers"));
    let link = upstream.link(backends);
    let body = body.filter(|body| !body.is_end_stream());
    let fault = body.as_ref().map(|_| ClientFault::new());
    // The body is read before a backend is picked, whole up to
    // `request_buffer_bytes`: a slow sender holds no backend.
    let mut body = match (&fault, body) {
        (Some(fault), Some(body)) => {
            let capped = Capped::new(
                body,
                settings.max_body_bytes,
                settings.client_body_timeout(),
                fault.clone(),
            );
            // Boxed: a body is the rarer case, and its reading would
            // otherwise widen every request's future (moved whole per
            // request).
            match Box::pin(UpstreamBody::read(capped, settings.request_buffer_bytes)).await {
                Ok(body) => body,
                Err(fault) => return body_fault(shared, fault),
            }
        }
        _ => UpstreamBody::Empty,
    };
    // A gRPC call that came back UNAVAILABLE was not processed (gRPC's
    // retry rule): it may go to another backend when its body was read
    // whole, whatever its method.
    let grpc = headers
        .get(CONTENT_TYPE)
        .is_some_and(|t| t.as_bytes().starts_with(b"application/grpc"));
    let replayable = (idempotent(&method) || grpc) && body.replayable();
    // An absolute-form target's authority (checked) is the Host; a
    // request without one (HTTP/1.0) sends an empty one (RFC 9112 §3.2),
    // never the backend's address.
    match uri.authority() {
        Some(authority) => {
            if let Ok(value) = HeaderValue::from_str(authority.as_str()) {
                headers.insert(HOST, value);
            }
        }
        None if !headers.contains_key(HOST) => {
            headers.insert(HOST, HeaderValue::from_static(""));
        }
        None => {}
    }
    strip_hop_by_hop(&mut headers);
    if !links::sendable(path) {
        return error(StatusCode::BAD_REQUEST, "400 bad request target\n");
    }
    if let Some(asked) = &asked {
        asked.ask(&mut headers);
    }
    if te_trailers {
        headers.insert(TE, HeaderValue::from_static("trailers"));
    }
    // Request trailers are dropped (`Capped`), and so is their notice.
    headers.remove(TRAILER);
    set_forwarding(&mut headers, hop);
    let ctx = upstream.context(hop.client, path.as_bytes());
    let pool = &upstream.pool;
    let limits = match Limits::take(route_limit, upstream.adaptive.as_ref()) {
        Ok(limits) => limits,
        Err(scope) => return shed(shared, scope),
    };

    shared.budget.deposit();
    let mut tried = Tried::new();
    // The last attempt's answer, when a retry finds no backend left: a
    // backend's 5xx, or the proxy's own 502 or 504.
    let mut last: Option<Response<Answer>> = None;
    let mut last_error: Option<(StatusCode, &'static str)> = None;
    loop {
        let picked = if tried.is_empty() {
            match tokio::time::timeout(settings.pick_timeout(), pool.pick_wait(&ctx)).await {
                Ok(Ok(picked)) => picked,
                Ok(Err(e)) => return no_backend(shared, e),
                Err(_) => return no_backend(shared, PickError::AllFull),
            }
        } else {
            match pool.pick(&ctx.with_tried(&tried)) {
                Ok(picked) => picked,
                Err(e) => {
                    return match (last, last_error) {
                        (Some(response), _) => {
                            limits.finish();
                            plain(response, admission)
                        }
                        (None, Some((status, text))) => error(status, text),
                        (None, None) => no_backend(shared, e),
                    };
                }
            }
        };
        tried.insert(picked.guard());
        if let Some(prober) = &upstream.prober {
            prober.send(upstream, backends, pool.probes());
        }
        let outgoing = Outgoing {
            method: &method,
            target: path,
            headers: &headers,
            body: body.attempt(),
        };
        let more =
            replayable && tried.len() < settings.attempts as usize && tried.len() < pool.len();
        let sent = exchange(
            &link,
            picked.as_str(),
            outgoing,
            fault.as_ref(),
            settings.upstream_timeout(),
        );
        let sent_at = Instant::now();
        let sent = sent.await;
        if let Some(outcome) = outcome.as_deref_mut() {
            outcome.upstream = Some(picked.as_str().to_owned());
            outcome.upstream_time = Some(sent_at.elapsed());
        }
        match sent {
            Ok(Ok(mut response)) => {
                let status = response.status();
                if status == StatusCode::SWITCHING_PROTOCOLS {
                    let backend_side = links::switched(&mut response);
                    let (mut parts, _) = response.into_parts();
                    let (Some(asked), Some(client_side), Some(place)) =
                        (&asked, client_upgrade.take(), permit.take())
                    else {
                        // A switch nobody asked for.
                        picked.failure();
                        shared.counters.upstream_errors.fetch_add(1, Relaxed);
                        return error(StatusCode::BAD_GATEWAY, "502 bad gateway\n");
                    };
                    if !asked.agreed(&mut parts) {
                        // A switch to nothing, or not the one asked for.
                        picked.failure();
                        shared.counters.upstream_errors.fetch_add(1, Relaxed);
                        return error(StatusCode::BAD_GATEWAY, "502 bad gateway\n");
                    }
                    let held = tunnel::Held {
                        picked,
                        admission,
                        permit: place,
                    };
                    limits.finish();
                    tokio::spawn(tunnel::run(
                        client_side,
                        backend_side,
                        held,
                        shared.stop.clone(),
                        settings.shutdown_grace(),
                    ));
                    return Response::from_parts(parts, ProxyBody::Full(None));
                }
                if asked.as_ref().is_some_and(|asked| !asked.relayable(status)) {
                    // The backend answered a tunnel with a success that
                    // opens none.
                    picked.failure();
                    shared.counters.upstream_errors.fetch_add(1, Relaxed);
                    return error(StatusCode::BAD_GATEWAY, "502 bad gateway\n");
                }
                let failed = settings.failure_statuses.contains(&status.as_u16())
                    || grpc_unavailable(response.headers());
                if failed && more && shared.budget.try_withdraw() {
                    picked.failure();
                    shared.counters.retries.fetch_add(1, Relaxed);
                    last = Some(response);
                    continue;
                }
                limits.finish();
                let (parts, body) = response.into_parts();
                let held = Held::new(
                    body,
                    picked,
                    !failed,
                    admission,
                    fault,
                    settings.upstream_timeout(),
                );
                return answer(parts, held);
            }
            Ok(Err(failure)) => {
                // Out of descriptors, ports or buffers here is the proxy's
                // own state, not the backend's.
                if locally_exhausted(failure.as_ref()) {
                    drop(picked);
                    return error(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "503 the proxy is out of local resources\n",
                    );
                }
                // The client's own body broke the exchange: the backend is
                // not blamed.
                if let Some(fault) = fault.as_ref().and_then(ClientFault::get) {
                    drop(picked);
                    return body_fault(shared, fault);
                }
                picked.failure();
                shared.counters.upstream_errors.fetch_add(1, Relaxed);
                last_error = Some((StatusCode::BAD_GATEWAY, "502 bad gateway\n"));
                if more && shared.budget.try_withdraw() {
                    shared.counters.retries.fetch_add(1, Relaxed);
                    continue;
                }
                return error(StatusCode::BAD_GATEWAY, "502 bad gateway\n");
            }
            Err(_) => {
                picked.failure();
                shared.counters.upstream_timeouts.fetch_add(1, Relaxed);
                last_error = Some((StatusCode::GATEWAY_TIMEOUT, "504 gateway timeout\n"));
                if more && shared.budget.try_withdraw() {
                    shared.counters.retries.fetch_add(1, Relaxed);
                    continue;
                }
                limits.finish();
                return error(StatusCode::GATEWAY_TIMEOUT, "504 gateway timeout\n");
            }
        }
    }
}

/// Sends `outgoing` and waits for the response head, for at most
/// `timeout` of the backend's own time: while the client's body is
/// awaited the clock stands still (`client_body_timeout_ms` bounds that),
/// so a client that stalls its upload is never counted against the
/// backend. `Err` when the backend took too long.
async fn exchange(
    link: &Link<'_>,
    address: &str,
    outgoing: Outgoing<'_>,
    body: Option<&ClientFault>,
    timeout: Duration,
) -> Result<Result<Response<Answer>, BoxError>, Elapsed> {
    let request = link.request(address, outgoing);
    let mut request = std::pin::pin!(request);
    let mut deadline = Instant::now() + timeout;
    // Each turn ends in the answer, the timeout, or a later deadline: the
    // client's body moved or is awaited (bounded by its own timeout).
    loop {
        tokio::select! {
            biased;
            answer = &mut request => return Ok(answer),
            () = tokio::time::sleep_until(deadline) => {}
        }
        let now = Instant::now();
        deadline = match body {
            Some(body) if body.waiting() => now + timeout,
            Some(body) if body.progressed_at() + timeout > now => body.progressed_at() + timeout,
            _ => return Err(Elapsed),
        };
    }
}

/// Whether `failure` comes from this process or system running out of
/// something of its own: file descriptors (`EMFILE`, `ENFILE`), local
/// ports (`EADDRNOTAVAIL`), buffers or memory (`ENOBUFS`, `ENOMEM`).
fn locally_exhausted(failure: &(dyn std::error::Error + 'static)) -> bool {
    const ENOMEM: i32 = 12;
    const EADDRNOTAVAIL: i32 = 99;
    const ENOBUFS: i32 = 105;
    let mut source = Some(failure);
    // Error chains are a few links long; 8 bounds a cyclic one.
    for _ in 0..8 {
        let Some(error) = source else {
            return false;
        };
        if let Some(io) = error.downcast_ref::<std::io::Error>() {
            if matches!(
                io.raw_os_error(),
                Some(super::EMFILE | super::ENFILE | ENOMEM | EADDRNOTAVAIL | ENOBUFS)
            ) {
                return true;
            }
        }
        source = error.source();
    }
    false
}

/// The backend did not answer within `upstream_timeout_ms`.
#[derive(Debug)]
struct Elapsed;

fn answer(mut parts: hyper::http::response::Parts, held: Held) -> Response<ProxyBody> {
    strip_hop_by_hop(&mut parts.headers);
    // The proxy speaks its own version (RFC 9110 §6.2), whatever the
    // backend's.
    parts.version = Version::HTTP_11;
    Response::from_parts(parts, ProxyBody::Upstream(held))
}

/// A response already reported (a retried 5xx that was the last word).
fn plain(response: Response<Answer>, admission: Option<Admission>) -> Response<ProxyBody> {
    let (mut parts, body) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    parts.version = Version::HTTP_11;
    Response::from_parts(parts, ProxyBody::Unheld(body, admission))
}

fn no_backend(shared: &Shared, error_: PickError) -> Response<ProxyBody> {
    shared.counters.no_backend.fetch_add(1, Relaxed);
    let text = match error_ {
        PickError::AllFull => "503 every backend is busy\n",
        PickError::AllEjected => "503 every backend is failing\n",
        _ => "503 no backend available\n",
    };
    error(StatusCode::SERVICE_UNAVAILABLE, text)
}

/// The answer to a body the client broke: never the backend's failure.
fn body_fault(shared: &Shared, fault: Fault) -> Response<ProxyBody> {
    closing(match fault {
        Fault::TooLarge => error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "413 request body too large\n",
        ),
        Fault::Broken => error(StatusCode::BAD_REQUEST, "400 the request body broke off\n"),
        Fault::TimedOut => {
            shared.counters.client_timeouts.fetch_add(1, Relaxed);
            error(
                StatusCode::REQUEST_TIMEOUT,
                "408 the request body stopped arriving\n",
            )
        }
    })
}

/// `response`, after which the connection closes: what is left of the
/// request cannot be read safely.
fn closing(mut response: Response<ProxyBody>) -> Response<ProxyBody> {
    response
        .headers_mut()
        .insert(CONNECTION, HeaderValue::from_static("close"));
    response
}

/// A short response of the proxy's own.
pub(crate) fn error(status: StatusCode, text: &'static str) -> Response<ProxyBody> {
    let mut response = Response::new(ProxyBody::text(text));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert("content-type", HeaderValue::from_static("text/plain"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An error wrapping `inner`, as hyper-util wraps a connect error.
    #[derive(Debug)]
    struct Wrapped(std::io::Error);

    impl std::fmt::Display for Wrapped {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("connect failed")
        }
    }

    impl std::error::Error for Wrapped {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn local_exhaustion_is_told_from_a_backend_refusing() {
        for errno in [24, 23, 12, 99, 105] {
            let error = Wrapped(std::io::Error::from_raw_os_error(errno));
            assert!(locally_exhausted(&error), "errno {errno}");
        }
        // ECONNREFUSED, ETIMEDOUT, EHOSTUNREACH: the backend's side.
        for errno in [111, 110, 113] {
            let error = Wrapped(std::io::Error::from_raw_os_error(errno));
            assert!(!locally_exhausted(&error), "errno {errno}");
        }
    }
}
