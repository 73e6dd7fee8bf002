//! What may be stored (RFC 9111 §3, §3.5), for how long (§4.2.1, with
//! heuristic freshness as §4.2.2 allows it) and how old a stored response
//! is (§4.2.3).

use std::time::{Duration, SystemTime};

use hyper::header::{AUTHORIZATION, DATE, EXPIRES, HeaderMap, LAST_MODIFIED, SET_COOKIE, VARY};
use hyper::{Method, StatusCode};

use super::directives::{RequestDirectives, ResponseDirectives};

/// Why a response is not stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum NotStored {
    /// Only GET's responses are stored.
    Method,
    /// An interim, partial (206) or not-modified (304) status.
    Status,
    /// `no-store` in the request or the response.
    NoStore,
    /// `private`: for the client's cache only.
    Private,
    /// The request carried `Authorization` and the response did not say a
    /// shared cache may keep it (§3.5).
    Authorization,
    /// `Set-Cookie`: one client's, never handed to another (nginx keeps
    /// such responses out of its cache too).
    SetCookie,
    /// `Vary: *`: no later request can match.
    VaryAny,
    /// Neither explicit freshness nor a validator.
    NothingToKeep,
}

/// Statuses RFC 9110 §15.1 makes cacheable by default (heuristic
/// freshness applies to them).
fn heuristically_cacheable(status: StatusCode) -> bool {
    matches!(
        status.as_u16(),
        200 | 203 | 204 | 300 | 301 | 308 | 404 | 405 | 410 | 414 | 501
    )
}

/// Reads an HTTP date (IMF-fixdate, RFC 850 or asctime).
pub(crate) fn date(headers: &HeaderMap, name: hyper::header::HeaderName) -> Option<SystemTime> {
    let value = headers.get(name)?.to_str().ok()?;
    httpdate::parse_http_date(value.trim()).ok()
}

/// The heuristic: a share of the time since the last modification,
/// capped (§4.2.2's "typical setting" is 10%).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Heuristic {
    pub(crate) percent: u32,
    pub(crate) max: Duration,
}

/// Whether the response to `method` with `request` headers may be stored;
/// the reason when not.
pub(crate) fn storable(
    method: &Method,
    request: &HeaderMap,
    asked: &RequestDirectives,
    status: StatusCode,
    response: &HeaderMap,
    said: &ResponseDirectives,
) -> Result<(), NotStored> {
    if *method != Method::GET {
        return Err(NotStored::Method);
    }
    if status.is_informational()
        || status == StatusCode::PARTIAL_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return Err(NotStored::Status);
    }
    if asked.no_store || said.no_store {
        return Err(NotStored::NoStore);
    }
    if said.private {
        return Err(NotStored::Private);
    }
    if request.contains_key(AUTHORIZATION)
        && !(said.must_revalidate || said.public || said.s_maxage.is_some())
    {
        return Err(NotStored::Authorization);
    }
    if response.contains_key(SET_COOKIE) {
        return Err(NotStored::SetCookie);
    }
    let vary_any = response.get_all(VARY).iter().any(|v| {
        v.to_str()
            .map_or(true, |v| v.split(',').any(|name| name.trim() == "*"))
    });
    if vary_any {
        return Err(NotStored::VaryAny);
    }
    // Explicit freshness, or a validator (`Last-Modified` is also what
    // heuristic freshness needs). A status cacheable by default with
    // neither is not kept: nothing says it may be shared (nginx keeps
    // such answers out too).
    let explicit = said.public
        || said.max_age.is_some()
        || said.s_maxage.is_some()
        || response.contains_key(EXPIRES);
    let validator =
        response.contains_key(hyper::header::ETAG) || response.contains_key(LAST_MODIFIED);
    if !(explicit || validator) {
        return Err(NotStored::NothingToKeep);
    }
    Ok(())
}

/// How long a response stays fresh (§4.2.1): `s-maxage`, else `max-age`,
/// else `Expires` less `Date`, else the heuristic for a cacheable status
/// with `Last-Modified`, else not at all.
pub(crate) fn lifetime(
    status: StatusCode,
    headers: &HeaderMap,
    said: &ResponseDirectives,
    response_time: SystemTime,
    heuristic: Heuristic,
) -> Duration {
    if let Some(age) = said.s_maxage.or(said.max_age) {
        return age;
    }
    let sent = date(headers, DATE).unwrap_or(response_time);
    if headers.contains_key(EXPIRES) {
        // An Expires that cannot be read is in the past (§5.3).
        return date(headers, EXPIRES)
            .and_then(|expires| expires.duration_since(sent).ok())
            .unwrap_or(Duration::ZERO);
    }
    if !(heuristically_cacheable(status) || said.public) {
        return Duration::ZERO;
    }
    let Some(modified) = date(headers, LAST_MODIFIED) else {
        return Duration::ZERO;
    };
    let since = sent.duration_since(modified).unwrap_or(Duration::ZERO);
    (since / 100 * heuristic.percent).min(heuristic.max)
}

/// A stored response's age (§4.2.3): what it had when it arrived, then
/// the time it has spent here.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Age {
    /// `corrected_initial_age`.
    initial: Duration,
    /// When it was received (monotonic: resident time never runs back).
    received: tokio::time::Instant,
}

impl Age {
    /// The age of a response asked for at `request_time` and received at
    /// `response_time` (now) with `headers`.
    pub(crate) fn at_arrival(
        headers: &HeaderMap,
        request_time: SystemTime,
        response_time: SystemTime,
    ) -> Self {
        let apparent = date(headers, DATE)
            .and_then(|date| response_time.duration_since(date).ok())
            .unwrap_or(Duration::ZERO);
        // Delta-seconds (RFC 9111 §1.2.2): digits, at most 2^31 however
        // many; anything else is no Age.
        let age_value = headers
            .get(hyper::header::AGE)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
            .map_or(Duration::ZERO, |v| {
                Duration::from_secs(v.parse::<u64>().unwrap_or(u64::MAX).min(1 << 31))
            });
        let delay = response_time
            .duration_since(request_time)
            .unwrap_or(Duration::ZERO);
        Self {
            initial: apparent.max(age_value + delay),
            received: tokio::time::Instant::now(),
        }
    }

    /// When it was received here.
    pub(crate) fn received(&self) -> tokio::time::Instant {
        self.received
    }

    /// The age now.
    pub(crate) fn now(&self) -> Duration {
        self.initial + self.received.elapsed()
    }

    /// The same response revalidated: as old as the validation's answer.
    pub(crate) fn renewed(headers: &HeaderMap, request_time: SystemTime) -> Self {
        Self::at_arrival(headers, request_time, SystemTime::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::{CACHE_CONTROL, HeaderValue};

    const HEURISTIC: Heuristic = Heuristic {
        percent: 10,
        max: Duration::from_secs(86_400),
    };

    fn map(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(*name, HeaderValue::from_str(value).expect("a value"));
        }
        headers
    }

    fn check(
        method: Method,
        request: &[(&'static str, &str)],
        status: u16,
        response: &[(&'static str, &str)],
    ) -> Result<(), NotStored> {
        let request = map(request);
        let response = map(response);
        storable(
            &method,
            &request,
            &RequestDirectives::read(&request),
            StatusCode::from_u16(status).expect("a status"),
            &response,
            &ResponseDirectives::read(&response),
        )
    }

    #[test]
    fn what_a_shared_cache_may_store() {
        let max_age = [("cache-control", "max-age=60")];
        assert_eq!(check(Method::GET, &[], 200, &max_age), Ok(()));
        assert_eq!(
            check(Method::POST, &[], 200, &max_age),
            Err(NotStored::Method)
        );
        assert_eq!(
            check(Method::HEAD, &[], 200, &max_age),
            Err(NotStored::Method)
        );
        assert_eq!(
            check(Method::GET, &[], 206, &max_age),
            Err(NotStored::Status)
        );
        assert_eq!(
            check(Method::GET, &[], 304, &max_age),
            Err(NotStored::Status)
        );
        assert_eq!(
            check(Method::GET, &[("cache-control", "no-store")], 200, &max_age),
            Err(NotStored::NoStore)
        );
        assert_eq!(
            check(
                Method::GET,
                &[],
                200,
                &[("cache-control", "max-age=60, no-store")]
            ),
            Err(NotStored::NoStore)
        );
        assert_eq!(
            check(
                Method::GET,
                &[],
                200,
                &[("cache-control", "private, max-age=60")]
            ),
            Err(NotStored::Private)
        );
        assert_eq!(
            check(
                Method::GET,
                &[],
                200,
                &[("cache-control", "private=\"x\", max-age=60")]
            ),
            Err(NotStored::Private)
        );
        assert_eq!(
            check(Method::GET, &[], 200, &[("set-cookie", "a=b"), max_age[0]]),
            Err(NotStored::SetCookie)
        );
        assert_eq!(
            check(Method::GET, &[], 200, &[("vary", "accept, *"), max_age[0]]),
            Err(NotStored::VaryAny)
        );
        // §3.5: Authorization needs the response's leave.
        let auth = [("authorization", "Bearer x")];
        assert_eq!(
            check(Method::GET, &auth, 200, &max_age),
            Err(NotStored::Authorization)
        );
        for leave in ["public", "s-maxage=10", "must-revalidate, max-age=5"] {
            assert_eq!(
                check(Method::GET, &auth, 200, &[("cache-control", leave)]),
                Ok(()),
                "{leave}"
            );
        }
        // A validator is enough; a status cacheable by default without
        // one or explicit freshness is not.
        assert_eq!(
            check(Method::GET, &[], 404, &[]),
            Err(NotStored::NothingToKeep)
        );
        assert_eq!(
            check(Method::GET, &[], 200, &[]),
            Err(NotStored::NothingToKeep)
        );
        assert_eq!(
            check(
                Method::GET,
                &[],
                200,
                &[("last-modified", "Sun, 06 Dec 2026 00:00:00 GMT")]
            ),
            Ok(())
        );
        assert_eq!(check(Method::GET, &[], 500, &[("etag", "\"a\"")]), Ok(()));
        assert_eq!(
            check(Method::GET, &[], 500, &[]),
            Err(NotStored::NothingToKeep)
        );
        assert_eq!(
            check(Method::GET, &[], 302, &[]),
            Err(NotStored::NothingToKeep)
        );
        assert_eq!(
            check(
                Method::GET,
                &[],
                302,
                &[("expires", "Thu, 01 Jan 2099 00:00:00 GMT")]
            ),
            Ok(())
        );
    }

    fn life(status: u16, pairs: &[(&'static str, &str)], now: SystemTime) -> Duration {
        let headers = map(pairs);
        lifetime(
            StatusCode::from_u16(status).expect("a status"),
            &headers,
            &ResponseDirectives::read(&headers),
            now,
            HEURISTIC,
        )
    }

    #[test]
    fn freshness_lifetime_in_the_rfcs_order() {
        let now = httpdate::parse_http_date("Sun, 06 Dec 2026 10:00:00 GMT").expect("a date");
        let date = ("date", "Sun, 06 Dec 2026 10:00:00 GMT");
        let secs = Duration::from_secs;
        assert_eq!(
            life(
                200,
                &[(CACHE_CONTROL.as_str(), "max-age=10, s-maxage=20")],
                now
            ),
            secs(20)
        );
        assert_eq!(life(200, &[("cache-control", "max-age=10")], now), secs(10));
        assert_eq!(
            life(
                200,
                &[date, ("expires", "Sun, 06 Dec 2026 10:05:00 GMT")],
                now
            ),
            secs(300)
        );
        assert_eq!(
            life(
                200,
                &[date, ("expires", "Sun, 06 Dec 2026 09:00:00 GMT")],
                now
            ),
            Duration::ZERO
        );
        assert_eq!(life(200, &[date, ("expires", "0")], now), Duration::ZERO);
        assert_eq!(
            life(
                200,
                &[("cache-control", "max-age=5"), ("expires", "0")],
                now
            ),
            secs(5),
            "max-age wins over Expires"
        );
        // 10% of the ten hours since the last change; capped at a day.
        let modified = ("last-modified", "Sun, 06 Dec 2026 00:00:00 GMT");
        assert_eq!(life(200, &[date, modified], now), secs(3600));
        let long_ago = ("last-modified", "Sat, 01 Jan 2000 00:00:00 GMT");
        assert_eq!(life(200, &[date, long_ago], now), secs(86_400));
        assert_eq!(life(302, &[date, modified], now), Duration::ZERO);
        assert_eq!(life(200, &[date], now), Duration::ZERO);
    }

    #[test]
    fn age_counts_the_apparent_age_the_age_header_and_the_delay() {
        let response_time =
            httpdate::parse_http_date("Sun, 06 Dec 2026 10:00:10 GMT").expect("a date");
        let request_time = response_time - Duration::from_secs(2);
        let age = Age::at_arrival(
            &map(&[("date", "Sun, 06 Dec 2026 10:00:00 GMT")]),
            request_time,
            response_time,
        );
        assert_eq!(age.initial, Duration::from_secs(10));
        let age = Age::at_arrival(&map(&[("age", "30")]), request_time, response_time);
        assert_eq!(age.initial, Duration::from_secs(32), "Age plus the delay");
        let age = Age::at_arrival(
            &map(&[("date", "Sun, 06 Dec 2026 11:00:00 GMT"), ("age", "x")]),
            request_time,
            response_time,
        );
        assert_eq!(age.initial, Duration::from_secs(2), "a Date ahead counts 0");
        let age = Age::at_arrival(
            &map(&[("age", "99999999999999999999999")]),
            request_time,
            response_time,
        );
        assert_eq!(
            age.initial,
            Duration::from_secs((1 << 31) + 2),
            "2^31 at most"
        );
    }
}
