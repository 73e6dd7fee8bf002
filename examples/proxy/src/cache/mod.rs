//! A shared HTTP cache (RFC 9111) in front of the routes that enable it
//! (nginx's `proxy_cache`): fewer requests reach the backends, and hits
//! are answered from memory.
//!
//! - [`directives`]: `Cache-Control` read (§5.2);
//! - [`freshness`]: what may be stored (§3, §3.5), how long it is fresh
//!   (§4.2.1, heuristics §4.2.2) and how old it is (§4.2.3);
//! - [`key`]: the URI's key and its variants' (`Vary`, §4.1);
//! - [`conditional`]: clients' conditional requests answered, stale
//!   entries validated (§4.3);
//! - [`collapse`]: one request to the backend for a burst of misses;
//! - [`counters`]: what /metrics shows;
//! - [`recording`]: a response stored as it streams;
//! - [`store`]: the entries, bounded by their bytes.
//!
//! A GET or HEAD without a body is looked up; a fresh entry is the
//! answer (`Age` and `Cache-Status: loadbalance; hit`). A stale one is
//! validated with its validators, served stale within its
//! `stale-while-revalidate` while a background request refreshes it
//! (RFC 5861), and served stale when the validation fails with an error
//! (`stale-if-error`, or `[cache] stale_if_error_ms` when the response
//! did not say: the cache keeps answering while every backend of a pool
//! is down), unless the response forbade stale answers. An unsafe method
//! answered without an error invalidates its URI (§4.4).

mod collapse;
mod conditional;
mod counters;
mod directives;
mod freshness;
mod key;
mod recording;
mod store;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use hyper::header::{
    AGE, CONTENT_ENCODING, CONTENT_LENGTH, HeaderMap, HeaderName, HeaderValue, SET_COOKIE,
};
use hyper::http::request::Parts;
use hyper::{Method, Request, Response, StatusCode};
use loadbalance::limit::Admission;
use serde::Deserialize;

pub(crate) use key::primary;

use crate::body::ProxyBody;
use crate::compress::Accepted;
use collapse::{Flight, Flights, Joined};
use conditional::{PRECONDITIONS, not_modified, not_modified_headers, updated, validators};
use directives::{RequestDirectives, ResponseDirectives};
use freshness::{Age, Heuristic, lifetime, storable};
use recording::{Pending, Recording};
use store::{Slot, Store, Stored};

pub(crate) use counters::Counters;

/// `Cache-Status` (RFC 9211).
pub(crate) const CACHE_STATUS: HeaderName = HeaderName::from_static("cache-status");

/// `[cache]`: the cache the routes with `cache = true` share. Read at
/// start.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct CacheConfig {
    /// The bytes the entries may hold in all: never exceeded.
    pub(crate) max_bytes: u64,
    /// A response larger than this passes through uncached.
    pub(crate) max_entry_bytes: u64,
    /// How long a miss waits for another miss of the same key in flight
    /// before it goes to the backend itself (nginx's
    /// `proxy_cache_lock_timeout`).
    pub(crate) collapse_timeout_ms: u64,
    /// How long past its freshness an entry may be served when its
    /// validation fails with an error, if the response did not say
    /// (`stale-if-error`); 0: never.
    pub(crate) stale_if_error_ms: u64,
    /// Heuristic freshness (§4.2.2): this share of the time since
    /// `Last-Modified`, at most `heuristic_max_ms`.
    pub(crate) heuristic_percent: u32,
    pub(crate) heuristic_max_ms: u64,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            max_bytes: 64 << 20,
            max_entry_bytes: 1 << 20,
            collapse_timeout_ms: 5_000,
            stale_if_error_ms: 86_400_000,
            heuristic_percent: 10,
            heuristic_max_ms: 86_400_000,
        }
    }
}

impl CacheConfig {
    /// The field that is wrong, and why.
    pub(crate) fn check(&self) -> Result<(), (&'static str, String)> {
        if self.max_bytes == 0 {
            return Err(("max_bytes", "more than 0".to_owned()));
        }
        if self.max_entry_bytes == 0 || self.max_entry_bytes > self.max_bytes {
            return Err((
                "max_entry_bytes",
                "more than 0, at most max_bytes".to_owned(),
            ));
        }
        if self.max_entry_bytes > u64::from(u32::MAX) / 2 {
            return Err(("max_entry_bytes", "at most 2 GiB".to_owned()));
        }
        if self.heuristic_percent > 100 {
            return Err(("heuristic_percent", "at most 100".to_owned()));
        }
        Ok(())
    }
}

/// The settings in use.
#[derive(Clone, Debug)]
pub(crate) struct Settings {
    pub(crate) max_entry_bytes: usize,
    /// A backend silent this long mid-body has failed
    /// (`upstream_timeout_ms`).
    stall: Duration,
    collapse_timeout: Duration,
    stale_if_error: Duration,
    heuristic: Heuristic,
}

/// Where a cache's misses go: the route's backends. Owned, so that a
/// background refresh can outlive the request that started it.
pub(crate) trait Origin: Send + Sync + 'static {
    /// Sends `head` (no body) to a backend; `admission` is the client's
    /// when a client waits for the answer.
    fn fetch(
        self: Arc<Self>,
        head: Parts,
        admission: Option<Admission>,
    ) -> Pin<Box<dyn Future<Output = Fetched> + Send>>;
}

/// An answer, and the backend that gave it (for the access log).
pub(crate) struct Fetched {
    pub(crate) response: Response<ProxyBody>,
    pub(crate) upstream: Option<String>,
    pub(crate) upstream_time: Option<Duration>,
}

impl Fetched {
    fn local(response: Response<ProxyBody>) -> Self {
        Self {
            response,
            upstream: None,
            upstream_time: None,
        }
    }
}

/// What a request is stored and found by: its URI's key, and the request
/// headers keyed beside the response's own `Vary` (what a trusted proxy
/// says of the URL).
#[derive(Debug)]
pub(crate) struct Key {
    pub(crate) uri: String,
    pub(crate) also_by: Vec<HeaderName>,
}

/// Header names one URI's variants may be keyed by in all; past this a
/// response is not stored.
const MAX_NAMES: usize = 32;

/// What a lookup found.
enum Found {
    /// An entry (at `variant`, when the URI's responses vary).
    Entry {
        stored: Arc<Stored>,
        variant: Option<String>,
    },
    /// Nothing for the URI.
    UriMiss,
    /// The URI's responses vary, and not this request's variant.
    VaryMiss(String),
}

/// What to do with a stored entry.
#[derive(Debug, PartialEq, Eq)]
enum Use {
    /// Answer with it.
    Hit,
    /// Answer with it, stale, and refresh it in the background.
    StaleWhileRevalidate,
    /// Validate it first; `true` when the request's own directives asked.
    Validate { asked: bool },
}

/// The shared cache.
pub(crate) struct Cache {
    store: Arc<Store>,
    flights: Arc<Flights>,
    pub(crate) settings: Settings,
    pub(crate) counters: Arc<Counters>,
    max_bytes: u64,
    /// The next generation of variant keys.
    generations: AtomicU64,
    /// Bytes clients have not read yet of responses on their way.
    unread: Arc<AtomicU64>,
}

impl Cache {
    /// The cache `config` describes; the field that is wrong, and why.
    /// A backend silent for `stall` mid-body has failed.
    pub(crate) fn new(
        config: &CacheConfig,
        stall: Duration,
    ) -> Result<Arc<Self>, (&'static str, String)> {
        config.check()?;
        Ok(Arc::new(Self {
            store: Arc::new(Store::new(
                config.max_bytes,
                store::entry_weight_bound(config.max_entry_bytes),
            )),
            flights: Arc::default(),
            settings: Settings {
                max_entry_bytes: usize::try_from(config.max_entry_bytes).unwrap_or(usize::MAX),
                stall,
                collapse_timeout: Duration::from_millis(config.collapse_timeout_ms),
                stale_if_error: Duration::from_millis(config.stale_if_error_ms),
                heuristic: Heuristic {
                    percent: config.heuristic_percent,
                    max: Duration::from_millis(config.heuristic_max_ms),
                },
            },
            counters: Arc::default(),
            max_bytes: config.max_bytes,
            generations: AtomicU64::new(1),
            unread: Arc::default(),
        }))
    }

    /// Bytes held, entries, and the bound, for /metrics.
    pub(crate) fn size(&self) -> (u64, u64, u64) {
        self.store.settle();
        (self.store.bytes(), self.store.entries(), self.max_bytes)
    }

    /// Whether the cache can answer a `head` request: GET or HEAD, no
    /// body, no range (a part is passed through), and no precondition
    /// but those it answers itself (`If-Match`, `If-Unmodified-Since` and
    /// `If-Range` go to the backend, which can answer 412).
    pub(crate) fn handles(head: &Parts, has_body: bool) -> bool {
        use hyper::header::{IF_MATCH, IF_RANGE, IF_UNMODIFIED_SINCE, RANGE};
        (head.method == Method::GET || head.method == Method::HEAD)
            && !has_body
            && ![RANGE, IF_MATCH, IF_UNMODIFIED_SINCE, IF_RANGE]
                .iter()
                .any(|name| head.headers.contains_key(name))
    }

    /// Forgets `key`'s responses: an unsafe method's non-error answer
    /// (§4.4), or a purge.
    pub(crate) fn invalidate(&self, key: &str) {
        self.counters.invalidated.fetch_add(1, Relaxed);
        // A response of the URI on its way into the cache is old now.
        self.flights.invalidate(key, || self.store.remove(key));
    }

    /// Forgets every response.
    pub(crate) fn clear(&self) {
        self.store.clear();
    }

    /// Stores `slot` at `key`, counted.
    fn keep(&self, key: String, slot: Slot) {
        self.store.keep(key, slot, &self.counters);
    }

    fn lookup(&self, key: &str, also_by: &[HeaderName], headers: &HeaderMap) -> Found {
        match self.store.get(key) {
            None => Found::UriMiss,
            // Keyed by more than the entry was: fetched and stored by all.
            Some(Slot::Response(_)) if !also_by.is_empty() => Found::UriMiss,
            // A coding the client does not take is never sent, even when
            // the backend forgot its `Vary: Accept-Encoding`.
            Some(Slot::Response(stored)) if !takes(headers, &stored.headers) => Found::UriMiss,
            Some(Slot::Response(stored)) => Found::Entry {
                stored,
                variant: None,
            },
            Some(Slot::Variants { names, generation }) => {
                if also_by.iter().any(|name| !names.contains(name)) {
                    let mut wider = names.to_vec();
                    wider.extend(also_by.iter().cloned());
                    return Found::VaryMiss(key::variant(key, generation, &wider, headers));
                }
                let variant = key::variant(key, generation, &names, headers);
                match self.store.get(&variant) {
                    Some(Slot::Response(stored)) if takes(headers, &stored.headers) => {
                        Found::Entry {
                            stored,
                            variant: Some(variant),
                        }
                    }
                    _ => Found::VaryMiss(variant),
                }
            }
        }
    }

    /// Answers `head` (a GET or HEAD without a body) for the URI `key`:
    /// from the cache, or from `origin` and then into the cache.
    pub(crate) async fn serve(
        self: &Arc<Self>,
        origin: Arc<dyn Origin>,
        head: Parts,
        key: Key,
        admission: Admission,
    ) -> Fetched {
        let Key { uri: key, also_by } = key;
        let also_by: Arc<[HeaderName]> = also_by.into();
        let asked = RequestDirectives::read(&head.headers);
        match self.lookup(&key, &also_by, &head.headers) {
            Found::Entry { stored, variant } => {
                let age = stored.age.now();
                match decide(&stored, age, &asked) {
                    Use::Hit => {
                        self.counters.hits.fetch_add(1, Relaxed);
                        Fetched::local(self.answer(&head, &stored, age, &hit(&stored, age, None)))
                    }
                    Use::StaleWhileRevalidate => {
                        self.counters.stale.fetch_add(1, Relaxed);
                        let flight_key = variant.clone().unwrap_or_else(|| key.clone());
                        let keys = (key, flight_key, Arc::clone(&also_by));
                        self.refresh(origin, &head, keys, Arc::clone(&stored));
                        let text = hit(&stored, age, Some("stale-while-revalidate"));
                        Fetched::local(self.answer(&head, &stored, age, &text))
                    }
                    Use::Validate { .. } if asked.only_if_cached => {
                        Fetched::local(only_if_cached())
                    }
                    Use::Validate { asked: by_request } => {
                        let flight_key = variant.unwrap_or_else(|| key.clone());
                        let fwd = if by_request { "request" } else { "stale" };
                        let keys = (key, flight_key, also_by);
                        self.forward(origin, head, keys, Some(stored), fwd, admission)
                            .await
                    }
                }
            }
            Found::UriMiss | Found::VaryMiss(_) if asked.only_if_cached => {
                Fetched::local(only_if_cached())
            }
            Found::UriMiss => {
                self.counters.misses.fetch_add(1, Relaxed);
                let keys = (key.clone(), key, also_by);
                self.forward(origin, head, keys, None, "uri-miss", admission)
                    .await
            }
            Found::VaryMiss(variant) => {
                self.counters.misses.fetch_add(1, Relaxed);
                self.forward(
                    origin,
                    head,
                    (key, variant, also_by),
                    None,
                    "vary-miss",
                    admission,
                )
                .await
            }
        }
    }

    /// Goes to the backend for `key` (validating `stale` if there is one),
    /// one request for a burst of them, and stores what may be stored.
    #[allow(clippy::too_many_arguments)]
    async fn forward(
        self: &Arc<Self>,
        origin: Arc<dyn Origin>,
        head: Parts,
        (key, flight_key, also_by): (String, String, Arc<[HeaderName]>),
        stale: Option<Arc<Stored>>,
        fwd: &'static str,
        admission: Admission,
    ) -> Fetched {
        let flight = match self.flights.join(&flight_key) {
            Joined::Leader(flight) => {
                // A request whose lookup missed just before another's
                // response was stored leads only after that flight ended:
                // the entry is here now and answers, as it would have.
                if let Found::Entry { stored, .. } = self.lookup(&key, &also_by, &head.headers) {
                    let age = stored.age.now();
                    let asked = RequestDirectives::read(&head.headers);
                    let newer = stale.as_ref().is_none_or(|old| !Arc::ptr_eq(old, &stored));
                    if newer && decide(&stored, age, &asked) == Use::Hit {
                        drop(flight);
                        self.counters.hits.fetch_add(1, Relaxed);
                        let text = hit(&stored, age, None);
                        return Fetched::local(self.answer(&head, &stored, age, &text));
                    }
                }
                Some(flight)
            }
            Joined::Waiter(waiting) => {
                self.counters.collapsed.fetch_add(1, Relaxed);
                let started = tokio::time::Instant::now();
                collapse::wait(waiting, self.settings.collapse_timeout).await;
                if let Found::Entry { stored, .. } = self.lookup(&key, &also_by, &head.headers) {
                    let age = stored.age.now();
                    let asked = RequestDirectives::read(&head.headers);
                    // An entry fresh by its own terms answers; one received
                    // since this request began is as good as this request's
                    // own fetch, whatever its `no-cache` or `max-age` (a
                    // burst of them is one request too).
                    let fresh = decide(&stored, age, &RequestDirectives::default()) == Use::Hit;
                    if fresh
                        && (stored.age.received() >= started
                            || decide(&stored, age, &asked) == Use::Hit)
                    {
                        self.counters.hits.fetch_add(1, Relaxed);
                        let text = hit(&stored, age, Some("collapsed"));
                        return Fetched::local(self.answer(&head, &stored, age, &text));
                    }
                }
                // Not stored, or not in time: on its own.
                None
            }
        };
        let mut sent = fetch_head(&head);
        let validating = stale
            .as_ref()
            .and_then(|stored| validators(&stored.headers));
        if let Some(conditions) = &validating {
            sent.headers.extend(conditions.clone());
        }
        let request_time = SystemTime::now();
        let fetched = origin.fetch(sent, Some(admission)).await;
        let Fetched {
            response,
            upstream,
            upstream_time,
        } = fetched;
        let status = response.status();
        let response = match stale {
            Some(stored) if validating.is_some() && status == StatusCode::NOT_MODIFIED => {
                let stored = self.revalidated(
                    (&key, &also_by),
                    &head.headers,
                    &stored,
                    response.headers(),
                    request_time,
                );
                drop(flight);
                let age = stored.age.now();
                self.answer(&head, &stored, age, &format!("fwd={fwd}; fwd-status=304"))
            }
            Some(stored)
                if failed(status) && self.may_serve_stale_on_error(&stored, &head.headers) =>
            {
                self.counters.stale.fetch_add(1, Relaxed);
                drop(response);
                drop(flight);
                let age = stored.age.now();
                let text = format!(
                    "fwd={fwd}; fwd-status={}; detail=stale-if-error",
                    status.as_u16()
                );
                self.answer(&head, &stored, age, &text)
            }
            _ => {
                let (response, stored) =
                    self.store(response, &head, (&key, &also_by), request_time, flight);
                let mut status_text = format!("fwd={fwd}; fwd-status={}", status.as_u16());
                if stored {
                    status_text.push_str("; stored");
                }
                self.to_client(&head, response, &status_text)
            }
        };
        Fetched {
            response,
            upstream,
            upstream_time,
        }
    }

    /// Refreshes a stale entry in the background (`stale-while-revalidate`),
    /// unless a request for it is already under way.
    fn refresh(
        self: &Arc<Self>,
        origin: Arc<dyn Origin>,
        head: &Parts,
        (key, flight_key, also_by): (String, String, Arc<[HeaderName]>),
        stale: Arc<Stored>,
    ) {
        let Some(flight) = self.flights.lead(&flight_key) else {
            return;
        };
        let cache = Arc::clone(self);
        let mut sent = fetch_head(head);
        let client = fetch_head(head);
        if let Some(conditions) = validators(&stale.headers) {
            sent.headers.extend(conditions);
        }
        tokio::spawn(async move {
            let request_time = SystemTime::now();
            let response = origin.fetch(sent, None).await.response;
            if response.status() == StatusCode::NOT_MODIFIED {
                cache.revalidated(
                    (&key, &also_by),
                    &client.headers,
                    &stale,
                    response.headers(),
                    request_time,
                );
            } else if !failed(response.status()) {
                // Stored by its pump; nobody reads it here.
                let keys = (key.as_str(), &also_by[..]);
                drop(cache.store(response, &client, keys, request_time, Some(flight)));
            }
        });
    }

    /// The stored entry updated by a `304` and stored again.
    fn revalidated(
        &self,
        (key, also_by): (&str, &[HeaderName]),
        request: &HeaderMap,
        stored: &Stored,
        fresh: &HeaderMap,
        request_time: SystemTime,
    ) -> Arc<Stored> {
        self.counters.revalidated.fetch_add(1, Relaxed);
        let headers = updated(&stored.headers, fresh);
        let said = ResponseDirectives::read(&headers);
        // What the 304 says of this client (its cookie, `private`) is its
        // own: the entry keeps the rest, or goes when it may no longer be
        // shared.
        let shared = !(said.private || said.no_store);
        let mut kept = headers.clone();
        kept.remove(SET_COOKIE);
        let entry = Arc::new(Stored {
            status: stored.status,
            lifetime: lifetime(
                stored.status,
                &headers,
                &said,
                SystemTime::now(),
                self.settings.heuristic,
            ),
            age: Age::renewed(fresh, request_time),
            said,
            headers,
            body: stored.body.clone(),
        });
        if let Some(store_key) = self.store_key((key, also_by), &kept, request) {
            if shared {
                let stored = Stored {
                    status: entry.status,
                    headers: kept,
                    body: entry.body.clone(),
                    age: entry.age,
                    lifetime: entry.lifetime,
                    said: entry.said.clone(),
                };
                self.keep(store_key, Slot::Response(Arc::new(stored)));
            } else {
                self.store.remove(&store_key);
            }
        }
        entry
    }

    /// `response` on its way to the client, and into the cache when it
    /// may be stored; whether it is being stored.
    fn store(
        self: &Arc<Self>,
        response: Response<ProxyBody>,
        head: &Parts,
        key: (&str, &[HeaderName]),
        request_time: SystemTime,
        flight: Option<Flight>,
    ) -> (Response<ProxyBody>, bool) {
        let status = response.status();
        let said = ResponseDirectives::read(response.headers());
        let asked = RequestDirectives::read(&head.headers);
        // What was fetched was a GET, whatever the client's method.
        let allowed = storable(
            &Method::GET,
            &head.headers,
            &asked,
            status,
            response.headers(),
            &said,
        )
        .is_ok();
        let length = response
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let fits = length.is_none_or(|length| length <= self.settings.max_entry_bytes as u64);
        // An event stream never ends as a response to keep.
        let streaming = response
            .headers()
            .get(hyper::header::CONTENT_TYPE)
            .is_some_and(|t| t.as_bytes().starts_with(b"text/event-stream"));
        let fits = fits && !streaming;
        if !allowed || !fits {
            if allowed {
                self.counters.not_stored.fetch_add(1, Relaxed);
            }
            return (response, false);
        }
        let Some(store_key) = self.store_key(key, response.headers(), &head.headers) else {
            return (response, false);
        };
        let now = SystemTime::now();
        let entry = Stored {
            status,
            lifetime: lifetime(
                status,
                response.headers(),
                &said,
                now,
                self.settings.heuristic,
            ),
            age: Age::at_arrival(response.headers(), request_time, now),
            said,
            headers: response.headers().clone(),
            body: Bytes::new(),
        };
        let (parts, body) = response.into_parts();
        let pending = Pending {
            store: Arc::clone(&self.store),
            counters: Arc::clone(&self.counters),
            limit: self.settings.max_entry_bytes,
            stall: self.settings.stall,
            unread: Arc::clone(&self.unread),
            budget: self.max_bytes,
            key: store_key,
            entry,
            flight,
        };
        let body = ProxyBody::Layered(Box::new(Recording::new(body, pending)));
        (Response::from_parts(parts, body), true)
    }

    /// The key a response with `headers` to a request with `request`
    /// headers is stored at: the URI's, or its variant's (the URI's slot
    /// then names the headers it varies by). `None`: not storable here.
    fn store_key(
        &self,
        (key, also_by): (&str, &[HeaderName]),
        headers: &HeaderMap,
        request: &HeaderMap,
    ) -> Option<String> {
        let mut names = key::vary_names(headers)?;
        for name in also_by {
            if !names.contains(name) {
                names.push(name.clone());
            }
        }
        // The URI's variants are keyed by every name any of its responses
        // or requests needed (so they never flap between two sets).
        let known = match self.store.get(key) {
            Some(Slot::Variants {
                names: known,
                generation,
            }) if names.iter().all(|name| known.contains(name)) => {
                return Some(key::variant(key, generation, &known, request));
            }
            Some(Slot::Variants { names: known, .. }) => known.to_vec(),
            _ if names.is_empty() => return Some(key.to_owned()),
            _ => Vec::new(),
        };
        let mut wider = known;
        for name in names {
            if !wider.contains(&name) {
                wider.push(name);
            }
        }
        if wider.len() > MAX_NAMES {
            return None;
        }
        let generation = self.generations.fetch_add(1, Relaxed);
        let slot = Slot::Variants {
            names: wider.clone().into(),
            generation,
        };
        if !self.store.insert(key.to_owned(), slot) {
            return None;
        }
        Some(key::variant(key, generation, &wider, request))
    }

    /// Whether `stored` may answer while its validation failed with an
    /// error: within the response's `stale-if-error`, the request's, or
    /// the configured window, unless stale answers are forbidden.
    fn may_serve_stale_on_error(&self, stored: &Stored, request: &HeaderMap) -> bool {
        if stored.said.forbids_stale() || stored.said.no_cache {
            return false;
        }
        // The response's own word; else, where the operator allows stale
        // answers at all, the client's or the operator's, for an entry
        // that was ever fresh (one with no freshness was never meant to
        // answer for others).
        let window = match stored.said.stale_if_error {
            Some(window) => window,
            None if self.settings.stale_if_error.is_zero() || stored.lifetime.is_zero() => {
                return false;
            }
            None => RequestDirectives::read(request)
                .stale_if_error
                .unwrap_or(self.settings.stale_if_error),
        };
        let staleness = stored.age.now().saturating_sub(stored.lifetime);
        staleness <= window
    }

    /// A stored entry as the answer to `head`.
    fn answer(
        &self,
        head: &Parts,
        stored: &Stored,
        age: Duration,
        status_text: &str,
    ) -> Response<ProxyBody> {
        let mut response =
            if not_modified(&head.method, &head.headers, stored.status, &stored.headers) {
                let mut response = Response::new(ProxyBody::Full(None));
                *response.status_mut() = StatusCode::NOT_MODIFIED;
                *response.headers_mut() = not_modified_headers(&stored.headers);
                response
            } else {
                let body = if head.method == Method::HEAD {
                    ProxyBody::Full(None)
                } else {
                    self.counters
                        .hit_bytes
                        .fetch_add(stored.body.len() as u64, Relaxed);
                    ProxyBody::Full(Some(stored.body.clone()))
                };
                let mut response = Response::new(body);
                *response.status_mut() = stored.status;
                *response.headers_mut() = stored.headers.clone();
                response
                    .headers_mut()
                    .insert(CONTENT_LENGTH, HeaderValue::from(stored.body.len()));
                response
            };
        let headers = response.headers_mut();
        headers.insert(AGE, HeaderValue::from(age.as_secs()));
        set_status(headers, status_text);
        response
    }

    /// A fetched response as the answer to the client's `head`: `304`
    /// when the client's own conditions hold (the body, still being
    /// stored, read to its end in the background).
    fn to_client(
        &self,
        head: &Parts,
        response: Response<ProxyBody>,
        status_text: &str,
    ) -> Response<ProxyBody> {
        let mut response = response;
        if not_modified(
            &head.method,
            &head.headers,
            response.status(),
            response.headers(),
        ) {
            // The body, if being stored, goes on into the cache.
            let (parts, _) = response.into_parts();
            let mut answer = Response::new(ProxyBody::Full(None));
            *answer.status_mut() = StatusCode::NOT_MODIFIED;
            *answer.headers_mut() = not_modified_headers(&parts.headers);
            response = answer;
        } else if head.method == Method::HEAD {
            // The GET fetched for the cache: its head answers, its body
            // goes into the cache.
            let (parts, _) = response.into_parts();
            response = Response::from_parts(parts, ProxyBody::Full(None));
        }
        set_status(response.headers_mut(), status_text);
        response
    }
}

/// `Cache-Status` of a hit: how long it stays fresh (negative: how long
/// it has been stale), and why it was used.
fn hit(stored: &Stored, age: Duration, detail: Option<&str>) -> String {
    let ttl = i128::from(stored.lifetime.as_secs()) - i128::from(age.as_secs());
    match detail {
        Some(detail) => format!("hit; ttl={ttl}; detail={detail}"),
        None => format!("hit; ttl={ttl}"),
    }
}

/// Whether a backend's answer is the error stale answers stand in for:
/// the proxy's own 502, 503 and 504 when no backend could answer, or a
/// backend's 500, 502, 503 or 504.
fn failed(status: StatusCode) -> bool {
    matches!(status.as_u16(), 500 | 502 | 503 | 504)
}

/// What to do with `stored`, `age` old, for a request that `asked`.
fn decide(stored: &Stored, age: Duration, asked: &RequestDirectives) -> Use {
    if asked.no_cache || asked.max_age.is_some_and(|max_age| age > max_age) {
        return Use::Validate { asked: true };
    }
    if stored.said.no_cache {
        return Use::Validate { asked: false };
    }
    let fresh_for = stored.lifetime.saturating_sub(age);
    if stored.lifetime > age {
        if asked
            .min_fresh
            .is_some_and(|min_fresh| fresh_for < min_fresh)
        {
            return Use::Validate { asked: true };
        }
        return Use::Hit;
    }
    if stored.said.forbids_stale() {
        return Use::Validate { asked: false };
    }
    let staleness = age - stored.lifetime;
    if asked
        .max_stale
        .is_some_and(|max_stale| staleness <= max_stale)
    {
        return Use::Hit;
    }
    if stored
        .said
        .stale_while_revalidate
        .is_some_and(|window| staleness <= window)
    {
        return Use::StaleWhileRevalidate;
    }
    Use::Validate { asked: false }
}

/// Whether a client whose request has `request` headers takes the coding
/// of a stored response with `stored` headers.
fn takes(request: &HeaderMap, stored: &HeaderMap) -> bool {
    let encoding = stored.get(CONTENT_ENCODING).and_then(|v| v.to_str().ok());
    encoding.is_none() || Accepted::read(request).takes(encoding)
}

/// The head sent to fetch what `head` asks for: the same request without
/// the client's preconditions (the cache wants the whole response).
fn fetch_head(head: &Parts) -> Parts {
    let mut request = Request::new(());
    *request.method_mut() = Method::GET;
    *request.uri_mut() = head.uri.clone();
    *request.version_mut() = head.version;
    let mut headers = head.headers.clone();
    for name in &PRECONDITIONS {
        headers.remove(name);
    }
    *request.headers_mut() = headers;
    request.into_parts().0
}

/// `only-if-cached` with nothing usable stored (§5.2.1.7).
fn only_if_cached() -> Response<ProxyBody> {
    let mut response = Response::new(ProxyBody::text("504 not in the cache (only-if-cached)\n"));
    *response.status_mut() = StatusCode::GATEWAY_TIMEOUT;
    set_status(response.headers_mut(), "fwd=miss; detail=only-if-cached");
    response
}

/// Sets `Cache-Status: loadbalance; TEXT`.
pub(crate) fn set_status(headers: &mut HeaderMap, text: &str) {
    if let Ok(value) = HeaderValue::from_str(&format!("loadbalance; {text}")) {
        headers.insert(CACHE_STATUS, value);
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};
    use std::sync::atomic::AtomicUsize;

    use http_body_util::BodyExt;

    use super::*;

    /// An origin that answers `max-age=60` and counts its fetches.
    struct Counting(AtomicUsize);

    impl Origin for Counting {
        fn fetch(
            self: Arc<Self>,
            _: Parts,
            _: Option<Admission>,
        ) -> Pin<Box<dyn Future<Output = Fetched> + Send>> {
            self.0.fetch_add(1, Relaxed);
            Box::pin(async {
                let mut response = Response::new(ProxyBody::owned("body".to_owned()));
                response.headers_mut().insert(
                    hyper::header::CACHE_CONTROL,
                    HeaderValue::from_static("max-age=60"),
                );
                Fetched::local(response)
            })
        }
    }

    fn admission() -> Admission {
        loadbalance::limit::FlowControl::builder()
            .build()
            .expect("no limits")
            .check(IpAddr::V4(Ipv4Addr::LOCALHOST))
            .expect("let in")
    }

    fn get() -> Parts {
        Request::get("/a")
            .body(())
            .expect("a request")
            .into_parts()
            .0
    }

    /// A miss looked up before another request's response was stored,
    /// and led a flight only after that one ended (a helper saw it once in
    /// 32 loaded runs, a second backend request): the entry answers it.
    #[tokio::test]
    async fn a_leader_that_missed_before_a_store_answers_from_the_entry() {
        let cache = Cache::new(&CacheConfig::default(), Duration::from_secs(5)).expect("valid");
        let origin = Arc::new(Counting(AtomicUsize::new(0)));
        let key = "http://a/a".to_owned();
        let first = cache
            .serve(
                Arc::clone(&origin) as Arc<dyn Origin>,
                get(),
                Key {
                    uri: key.clone(),
                    also_by: Vec::new(),
                },
                admission(),
            )
            .await;
        let body = first
            .response
            .into_body()
            .collect()
            .await
            .expect("the body");
        assert_eq!(body.to_bytes(), "body");
        // Stored by its pump a moment after the last byte.
        for _ in 0..200 {
            if cache.counters.stored.load(Relaxed) == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(cache.counters.stored.load(Relaxed), 1);
        // The request that looked up before the store, leading now.
        let also_by: Arc<[HeaderName]> = Vec::new().into();
        let second = cache
            .forward(
                Arc::clone(&origin) as Arc<dyn Origin>,
                get(),
                (key.clone(), key, also_by),
                None,
                "uri-miss",
                admission(),
            )
            .await;
        assert_eq!(origin.0.load(Relaxed), 1, "the backend asked once");
        let status = second.response.headers()[&CACHE_STATUS]
            .to_str()
            .expect("ascii");
        assert!(status.contains("hit"), "{status}");
    }
}
