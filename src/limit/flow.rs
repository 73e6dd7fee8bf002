//! One decision per request: the allow and deny lists, bans, the client's
//! rate, its requests in flight and the server's, checked in that order
//! with one clock read and one hash, answered as a typed [`Admission`] or
//! [`Rejection`] that a server maps to its response in one line.
//!
//! Order and why:
//! 1. the deny list (403): a listed network gets nothing else;
//! 2. the allow list: a listed network skips every per-client limit (the
//!    server-wide in-flight limit still holds);
//! 3. bans (403 with the ban's end): a banned client costs one lookup;
//! 4. the client's rate (429 with the `Retry-After`): every request that
//!    gets this far counts against the rate, even one refused below;
//! 5. the client's requests in flight (429);
//! 6. the server's requests in flight (503).
//!
//! Refusals at 4 and 5 are strikes towards a ban.

use std::fmt;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use super::ban::{BanRule, Bans, Strike};
use super::capacity::{Capacity, CapacityError};
use super::client::{ClientGrouping, ClientKey};
use super::concurrency::{ConcurrencyLimit, Permit};
use super::gcra::one;
use super::keyed::KeyedRateLimiter;
use super::keyed_concurrency::{KeyedConcurrencyError, KeyedConcurrencyLimit, KeyedPermit};
use super::table::KeyHasher;
use super::time::Time;
use super::{IpList, Quota};
use crate::time::Clock;

/// The flow control of one server: who gets in, how fast, how many at
/// once (`Send + Sync`; share it by reference or `Arc`).
///
/// # Examples
///
/// ```
/// use loadbalance::limit::{FlowControl, IpList, Quota, Reason};
/// use std::net::IpAddr;
///
/// let flow = FlowControl::builder()
///     .deny(IpList::parse(["203.0.113.0/24"])?)
///     .rate(Quota::per_second(10)?.burst(2)?)
///     .build()?;
/// let client: IpAddr = "192.0.2.1".parse()?;
/// let admitted = flow.check(client)?; // hold it for the request's life
/// assert_eq!(admitted.remaining(), Some(1));
/// let _second = flow.check(client)?;
/// let refused = flow.check(client).unwrap_err();
/// assert_eq!((refused.reason(), refused.status()), (Reason::RateLimited, 429));
/// assert_eq!(refused.retry_after_secs(), Some(1));
/// let denied = flow.check("203.0.113.9".parse()?).unwrap_err();
/// assert_eq!((denied.reason(), denied.status()), (Reason::DenyListed, 403));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct FlowControl {
    deny: IpList,
    allow: IpList,
    grouping: ClientGrouping,
    hasher: KeyHasher,
    time: Time,
    bans: Option<Bans<ClientKey>>,
    rate: Option<KeyedRateLimiter<ClientKey>>,
    per_client: Option<KeyedConcurrencyLimit<ClientKey>>,
    global: Option<ConcurrencyLimit>,
}

/// Builds a [`FlowControl`]; every part is optional.
#[derive(Debug)]
pub struct FlowControlBuilder {
    deny: IpList,
    allow: IpList,
    grouping: ClientGrouping,
    time: Option<Time>,
    bans: Option<(BanRule, Capacity)>,
    rate: Option<(Quota, Capacity)>,
    per_client: Option<(NonZeroU32, Capacity)>,
    global: Option<ConcurrencyLimit>,
}

/// The memory each keyed part takes unless told otherwise: 4 MiB, room
/// for 262,136 clients' rates or in-flight counts, or 174,752 clients'
/// strikes (nginx's `limit_req` holds about 16,000 clients a MiB). Keep
/// the clients active at once under a quarter of that (see
/// [`KeyedRateLimiter`]).
pub const DEFAULT_CAPACITY: Capacity = Capacity::Bytes(4 << 20);

impl FlowControl {
    /// A builder with nothing configured: it admits every request.
    #[must_use]
    pub fn builder() -> FlowControlBuilder {
        FlowControlBuilder {
            deny: IpList::default(),
            allow: IpList::default(),
            grouping: ClientGrouping::default(),
            time: None,
            bans: None,
            rate: None,
            per_client: None,
            global: None,
        }
    }

    /// Decides on one request from `client`. Keep the [`Admission`] until
    /// the request is done: it holds the in-flight permits.
    ///
    /// # Errors
    ///
    /// [`Rejection`] with the reason, the status to answer with and the
    /// retry-after where one applies.
    #[inline]
    pub fn check(&self, client: IpAddr) -> Result<Admission, Rejection> {
        let key = self.grouping.key(client);
        let reject = |reason, retry_after| Rejection {
            reason,
            retry_after,
            client: key,
        };
        if self.deny.contains(client) {
            return Err(reject(Reason::DenyListed, None));
        }
        if self.allow.contains(client) {
            return Ok(Admission {
                remaining: None,
                client: key,
                allow_listed: true,
                _global: self.global_permit(key)?,
                _per_client: None,
                #[cfg(feature = "redis")]
                _shared: Vec::new(),
            });
        }
        let hash = self.hasher.hash(&key);
        let now = if self.bans.is_some() || self.rate.is_some() {
            self.time.nanos()
        } else {
            0
        };
        if let Some(left) = self
            .bans
            .as_ref()
            .and_then(|bans| bans.banned_hashed(hash, now))
        {
            return Err(reject(Reason::Banned, Some(left)));
        }
        let strike = |reason, retry_after| match self
            .bans
            .as_ref()
            .map(|bans| bans.strike_hashed(hash, now))
        {
            Some(Strike::Banned(left)) => reject(Reason::Banned, Some(left)),
            _ => reject(reason, retry_after),
        };
        let remaining = match &self.rate {
            Some(rate) => match rate.check_hashed(1, hash, now) {
                Ok(allowed) => Some(allowed.remaining),
                Err(error) => {
                    return Err(strike(Reason::RateLimited, Some(one(error).retry_after)));
                }
            },
            None => None,
        };
        let per_client = match &self.per_client {
            Some(limit) => match limit.acquire_hashed(hash) {
                Ok(permit) => Some(permit),
                Err(KeyedConcurrencyError::AtLimit { .. }) => {
                    return Err(strike(Reason::ClientInFlight, None));
                }
                Err(_) => return Err(reject(Reason::ServerInFlight, None)),
            },
            None => None,
        };
        Ok(Admission {
            remaining,
            client: key,
            allow_listed: false,
            _global: self.global_permit(key)?,
            _per_client: per_client,
            #[cfg(feature = "redis")]
            _shared: Vec::new(),
        })
    }

    /// As [`check`](Self::check), then the client's shared rate in Redis
    /// (feature `redis`): local checks first, so deny-listed, banned, over
    /// their local rate or in-flight limit clients cost no round trip; a
    /// shared refusal is a strike like a local one. Allow-listed clients
    /// skip the shared limit too. The client's key in Redis is its
    /// [`ClientKey`] as text (`192.0.2.7`, `2001:db8::/64`).
    ///
    /// # Errors
    ///
    /// As [`check`](Self::check); [`Reason::RateLimited`] over the shared
    /// rate; [`Reason::Unavailable`] when Redis failed and the shared limit
    /// fails closed.
    #[cfg(feature = "redis")]
    pub async fn check_shared(
        &self,
        client: IpAddr,
        shared: &super::redis::RedisLimiter,
    ) -> Result<Admission, Rejection> {
        use super::redis::SharedDenied;
        let mut admission = self.check(client)?;
        if admission.allow_listed {
            return Ok(admission);
        }
        let key = admission.client;
        match shared.check(&key.to_string()).await {
            Ok(allowed) => {
                admission.remaining = Some(
                    admission
                        .remaining
                        .map_or(allowed.remaining, |local| local.min(allowed.remaining)),
                );
                Ok(admission)
            }
            Err(SharedDenied::Limited(denied)) => {
                Err(self.struck(key, Reason::RateLimited, Some(denied.retry_after)))
            }
            Err(SharedDenied::Unavailable) => Err(Rejection {
                reason: Reason::Unavailable,
                retry_after: None,
                client: key,
            }),
        }
    }

    /// As [`check`](Self::check), then the limits every instance shares
    /// through Redis (feature `redis`), each if given: bans decided by any
    /// instance (checked first, locally: no round trip), the client's rate
    /// (as [`check_shared`](Self::check_shared)), the client's requests in
    /// flight, and the requests in flight in all. Local checks first, so
    /// refused clients cost no round trip; a client over its shared
    /// in-flight limit is struck as over its local one, and a ban this
    /// instance's rule decides moves into the shared bans (written in the
    /// background), so a lift on any instance lifts it everywhere. Allow-listed
    /// clients skip the per-client limits and bans, not the limit in all.
    /// The [`Admission`] holds the shared permits too: dropping it releases
    /// them (in the background).
    ///
    /// # Errors
    ///
    /// As [`check_shared`](Self::check_shared); [`Reason::ClientInFlight`]
    /// or [`Reason::ServerInFlight`] when a shared in-flight limit is full;
    /// [`Reason::Unavailable`] when Redis failed and a limit fails closed.
    #[cfg(feature = "redis")]
    pub async fn check_shared_limits(
        &self,
        client: IpAddr,
        shared: &SharedLimits,
    ) -> Result<Admission, Rejection> {
        let Some(bans) = &shared.bans else {
            return self.check_shared_permits(client, shared).await;
        };
        let key = self.grouping.key(client);
        let text = key.to_string();
        if !self.deny.contains(client) && !self.allow.contains(client) {
            if let Some(left) = bans.banned(&text) {
                return Err(Rejection {
                    reason: Reason::Banned,
                    retry_after: Some(left),
                    client: key,
                });
            }
        }
        let checked = self.check_shared_permits(client, shared).await;
        if let Err(Rejection {
            reason: Reason::Banned,
            retry_after: Some(left),
            ..
        }) = &checked
        {
            // A ban this instance's rule just decided: every instance's,
            // in the background (the refusal does not wait on Redis). It
            // moves into the shared bans, so that a lift on any instance
            // lifts it here too.
            bans.ban_soon(&text, *left);
            if let Some(local) = &self.bans {
                local.lift(&key);
            }
        }
        checked
    }

    /// [`check_shared_limits`](Self::check_shared_limits) but the bans.
    #[cfg(feature = "redis")]
    async fn check_shared_permits(
        &self,
        client: IpAddr,
        shared: &SharedLimits,
    ) -> Result<Admission, Rejection> {
        use super::redis::PermitDenied;
        let mut admission = match &shared.rate {
            Some(rate) => self.check_shared(client, rate).await?,
            None => self.check(client)?,
        };
        let key = admission.client;
        let unavailable = Rejection {
            reason: Reason::Unavailable,
            retry_after: None,
            client: key,
        };
        if let (Some(limit), false) = (&shared.in_flight_per_client, admission.allow_listed) {
            match limit.acquire(&key.to_string()).await {
                Ok(permit) => admission._shared.push(permit),
                Err(PermitDenied::Full { .. }) => {
                    return Err(self.struck(key, Reason::ClientInFlight, None));
                }
                Err(PermitDenied::Unavailable) => return Err(unavailable),
            }
        }
        if let Some(limit) = &shared.in_flight {
            match limit.acquire(IN_FLIGHT_KEY).await {
                Ok(permit) => admission._shared.push(permit),
                Err(PermitDenied::Full { .. }) => {
                    return Err(Rejection {
                        reason: Reason::ServerInFlight,
                        retry_after: None,
                        client: key,
                    });
                }
                Err(PermitDenied::Unavailable) => return Err(unavailable),
            }
        }
        Ok(admission)
    }

    /// A refusal of `key` for `reason` that counts toward a ban: the ban,
    /// if this strike earned one.
    #[cfg(feature = "redis")]
    fn struck(&self, key: ClientKey, reason: Reason, retry_after: Option<Duration>) -> Rejection {
        let banned = self
            .bans
            .as_ref()
            .map(|bans| bans.strike_hashed(self.hasher.hash(&key), self.time.nanos()));
        match banned {
            Some(Strike::Banned(left)) => Rejection {
                reason: Reason::Banned,
                retry_after: Some(left),
                client: key,
            },
            _ => Rejection {
                reason,
                retry_after,
                client: key,
            },
        }
    }

    fn global_permit(&self, client: ClientKey) -> Result<Option<Permit>, Rejection> {
        self.global
            .as_ref()
            .map(|limit| {
                limit.try_acquire().map_err(|_| Rejection {
                    reason: Reason::ServerInFlight,
                    retry_after: None,
                    client,
                })
            })
            .transpose()
    }

    /// The group `client` counts in.
    pub fn client_key(&self, client: IpAddr) -> ClientKey {
        self.grouping.key(client)
    }

    /// The per-client rate limiter, if one is configured (for its
    /// figures).
    pub fn rate(&self) -> Option<&KeyedRateLimiter<ClientKey>> {
        self.rate.as_ref()
    }

    /// The bans, if configured (to strike clients for other reasons, such
    /// as failed logins, or for their figures).
    pub fn bans(&self) -> Option<&Bans<ClientKey>> {
        self.bans.as_ref()
    }

    /// The per-client in-flight limit, if configured.
    pub fn per_client(&self) -> Option<&KeyedConcurrencyLimit<ClientKey>> {
        self.per_client.as_ref()
    }

    /// The server-wide in-flight limit, if configured.
    pub fn global(&self) -> Option<&ConcurrencyLimit> {
        self.global.as_ref()
    }
}

impl FlowControlBuilder {
    /// Networks refused outright (403), checked first.
    #[must_use]
    pub fn deny(mut self, networks: IpList) -> Self {
        self.deny = networks;
        self
    }

    /// Networks exempt from every per-client limit.
    #[must_use]
    pub fn allow(mut self, networks: IpList) -> Self {
        self.allow = networks;
        self
    }

    /// How client addresses group (IPv6 by /64 by default).
    #[must_use]
    pub fn grouping(mut self, grouping: ClientGrouping) -> Self {
        self.grouping = grouping;
        self
    }

    /// Each client's rate, in [`DEFAULT_CAPACITY`].
    #[must_use]
    pub fn rate(self, quota: Quota) -> Self {
        self.rate_in(quota, DEFAULT_CAPACITY)
    }

    /// Each client's rate, holding as many clients as `capacity`.
    #[must_use]
    pub fn rate_in(mut self, quota: Quota, capacity: Capacity) -> Self {
        self.rate = Some((quota, capacity));
        self
    }

    /// Bans by `rule`, struck by rate and in-flight refusals, in
    /// [`DEFAULT_CAPACITY`].
    #[must_use]
    pub fn ban(self, rule: BanRule) -> Self {
        self.ban_in(rule, DEFAULT_CAPACITY)
    }

    /// Bans by `rule`, holding as many clients as `capacity`.
    #[must_use]
    pub fn ban_in(mut self, rule: BanRule, capacity: Capacity) -> Self {
        self.bans = Some((rule, capacity));
        self
    }

    /// At most `max` requests in flight per client, in
    /// [`DEFAULT_CAPACITY`].
    #[must_use]
    pub fn in_flight_per_client(self, max: NonZeroU32) -> Self {
        self.in_flight_per_client_in(max, DEFAULT_CAPACITY)
    }

    /// At most `max` requests in flight per client, for as many clients in
    /// flight at once as `capacity` holds.
    #[must_use]
    pub fn in_flight_per_client_in(mut self, max: NonZeroU32, capacity: Capacity) -> Self {
        self.per_client = Some((max, capacity));
        self
    }

    /// At most `limit`'s requests in flight on the server (a clone shares
    /// the limit, so other code can wait on it).
    #[must_use]
    pub fn in_flight(mut self, limit: ConcurrencyLimit) -> Self {
        self.global = Some(limit);
        self
    }

    /// Reads `clock` instead of the CPU's time-stamp counter.
    #[must_use]
    pub fn clock(mut self, clock: impl Clock + 'static) -> Self {
        self.time = Some(Time::custom(clock));
        self
    }

    /// The flow control.
    ///
    /// # Errors
    ///
    /// [`CapacityError`] when a keyed part's capacity holds not even 8
    /// clients or cannot be allocated.
    pub fn build(self) -> Result<FlowControl, CapacityError> {
        let time = self.time.unwrap_or_else(Time::counter);
        let hasher = KeyHasher::random();
        Ok(FlowControl {
            bans: self
                .bans
                .map(|(rule, capacity)| Bans::with_parts(rule, capacity, time.clone(), hasher))
                .transpose()?,
            rate: self
                .rate
                .map(|(quota, capacity)| {
                    KeyedRateLimiter::with_parts(quota, capacity, time.clone(), hasher)
                })
                .transpose()?,
            per_client: self
                .per_client
                .map(|(max, capacity)| KeyedConcurrencyLimit::with_hasher(max, capacity, hasher))
                .transpose()?,
            deny: self.deny,
            allow: self.allow,
            grouping: self.grouping,
            hasher,
            time,
            global: self.global,
        })
    }
}

/// The key of the requests in flight in all, in a [`SharedLimits`]'s
/// `in_flight` limit.
#[cfg(feature = "redis")]
const IN_FLIGHT_KEY: &str = "all";

/// The limits every instance shares through Redis (feature `redis`), for
/// [`FlowControl::check_shared_limits`]: each optional.
#[cfg(feature = "redis")]
#[derive(Clone, Debug, Default)]
pub struct SharedLimits {
    rate: Option<super::redis::RedisLimiter>,
    in_flight_per_client: Option<super::redis::RedisConcurrencyLimit>,
    in_flight: Option<super::redis::RedisConcurrencyLimit>,
    bans: Option<super::redis::SharedBans>,
}

#[cfg(feature = "redis")]
impl SharedLimits {
    /// None yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Each client's rate.
    #[must_use]
    pub fn rate(mut self, limiter: super::redis::RedisLimiter) -> Self {
        self.rate = Some(limiter);
        self
    }

    /// Each client's requests in flight (keyed by its [`ClientKey`] as
    /// text): past it, 429.
    #[must_use]
    pub fn in_flight_per_client(mut self, limit: super::redis::RedisConcurrencyLimit) -> Self {
        self.in_flight_per_client = Some(limit);
        self
    }

    /// The requests in flight in all (one key, `all`): past it, 503.
    #[must_use]
    pub fn in_flight(mut self, limit: super::redis::RedisConcurrencyLimit) -> Self {
        self.in_flight = Some(limit);
        self
    }

    /// Bans decided by any instance (the [`FlowControl`]'s own ban rule
    /// decides them here), enforced by all.
    #[must_use]
    pub fn bans(mut self, bans: super::redis::SharedBans) -> Self {
        self.bans = Some(bans);
        self
    }

    /// The shared bans, if given (to ban or lift by hand).
    pub fn shared_bans(&self) -> Option<&super::redis::SharedBans> {
        self.bans.as_ref()
    }

    /// Whether any limit is given.
    pub fn is_empty(&self) -> bool {
        self.rate.is_none()
            && self.in_flight_per_client.is_none()
            && self.in_flight.is_none()
            && self.bans.is_none()
    }
}

/// A request let in. Hold it until the request is done: dropping it gives
/// back its in-flight permits.
#[must_use = "the request counts as in flight until the admission is dropped"]
#[derive(Debug)]
pub struct Admission {
    remaining: Option<u32>,
    client: ClientKey,
    allow_listed: bool,
    /// Held for their `Drop`, which gives the slots back.
    _global: Option<Permit>,
    _per_client: Option<KeyedPermit>,
    /// Permits held in Redis ([`SharedLimits`]).
    #[cfg(feature = "redis")]
    _shared: Vec<super::redis::SharedPermit>,
}

impl Admission {
    /// Requests the client may still send at once (for a
    /// `RateLimit-Remaining` header); `None` without a rate limit or for an
    /// allow-listed client.
    pub fn remaining(&self) -> Option<u32> {
        self.remaining
    }

    /// The group the client counted in.
    pub fn client(&self) -> ClientKey {
        self.client
    }

    /// Whether the client's network is on the allow list (and skipped
    /// every per-client limit).
    pub fn allow_listed(&self) -> bool {
        self.allow_listed
    }
}

/// Why a request was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Reason {
    /// The client's network is on the deny list (403).
    DenyListed,
    /// The client is banned (403, with the ban's end as retry-after).
    Banned,
    /// The client is over its rate (429, with the retry-after).
    RateLimited,
    /// The client has its most requests in flight (429).
    ClientInFlight,
    /// The server has its most requests in flight, or its table of clients
    /// in flight is full (503).
    ServerInFlight,
    /// A shared limit could not be reached in time and fails closed (503).
    Unavailable,
}

impl Reason {
    /// The HTTP status for it.
    pub fn status(self) -> u16 {
        match self {
            Self::DenyListed | Self::Banned => 403,
            Self::RateLimited | Self::ClientInFlight => 429,
            Self::ServerInFlight | Self::Unavailable => 503,
        }
    }
}

/// A request refused: why, and when to try again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rejection {
    reason: Reason,
    retry_after: Option<Duration>,
    client: ClientKey,
}

impl Rejection {
    /// Why.
    pub fn reason(&self) -> Reason {
        self.reason
    }

    /// The HTTP status to answer with (403, 429 or 503).
    pub fn status(&self) -> u16 {
        self.reason.status()
    }

    /// How long until a request would pass, where that is known.
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }

    /// The retry-after in whole seconds, rounded up, for a `Retry-After`
    /// header (which takes seconds).
    pub fn retry_after_secs(&self) -> Option<u64> {
        self.retry_after
            .map(|after| after.as_secs() + u64::from(after.subsec_nanos() > 0))
    }

    /// The group the client counted in.
    pub fn client(&self) -> ClientKey {
        self.client
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.reason {
            Reason::DenyListed => "is on the deny list",
            Reason::Banned => "is banned",
            Reason::RateLimited => "is over its rate",
            Reason::ClientInFlight => "has its most requests in flight",
            Reason::ServerInFlight => "was refused: the server has its most requests in flight",
            Reason::Unavailable => "was refused: the shared rate limit is unavailable",
        };
        write!(f, "client {} {what}", self.client)?;
        match self.retry_after {
            Some(after) => write!(f, " (retry after {after:?})"),
            None => Ok(()),
        }
    }
}

impl std::error::Error for Rejection {}

impl fmt::Debug for FlowControl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FlowControl")
            .field("deny", &self.deny)
            .field("allow", &self.allow)
            .field("grouping", &self.grouping)
            .field("bans", &self.bans)
            .field("rate", &self.rate)
            .field("per_client", &self.per_client)
            .field("global", &self.global)
            .finish_non_exhaustive()
    }
}
