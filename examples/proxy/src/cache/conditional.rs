//! Conditional requests: a client's own (`If-None-Match`,
//! `If-Modified-Since`: RFC 9110 §13.1.2, §13.1.3) answered `304` from a
//! stored or fetched response, and the cache's validation of a stale
//! entry (RFC 9111 §4.3) with that entry's validators, its `304` folding
//! the new header fields into the stored ones (§4.3.4).

use hyper::header::{
    CACHE_CONTROL, CONTENT_LOCATION, DATE, ETAG, EXPIRES, HeaderMap, HeaderName, IF_MATCH,
    IF_MODIFIED_SINCE, IF_NONE_MATCH, IF_RANGE, IF_UNMODIFIED_SINCE, LAST_MODIFIED, VARY,
};
use hyper::{Method, StatusCode};

use super::freshness::date;

/// The preconditions a client may send; the cache strips them from what
/// it fetches to store (it wants the whole response) and answers them
/// itself.
pub(crate) const PRECONDITIONS: [HeaderName; 5] = [
    IF_MATCH,
    IF_NONE_MATCH,
    IF_MODIFIED_SINCE,
    IF_UNMODIFIED_SINCE,
    IF_RANGE,
];

/// Whether a `method` request with `request` headers is answered `304`
/// by a `status` response with `response` headers: its `If-None-Match`
/// matches the response's tag by weak comparison (§13.1.2), or, without
/// `If-None-Match`, the response was not modified since its
/// `If-Modified-Since` (§13.1.3, GET and HEAD only).
pub(crate) fn not_modified(
    method: &Method,
    request: &HeaderMap,
    status: StatusCode,
    response: &HeaderMap,
) -> bool {
    if status != StatusCode::OK || !(*method == Method::GET || *method == Method::HEAD) {
        return false;
    }
    if request.contains_key(IF_NONE_MATCH) {
        let Some(tag) = response.get(ETAG).and_then(|t| t.to_str().ok()) else {
            return false;
        };
        let tag = weak(tag);
        return request
            .get_all(IF_NONE_MATCH)
            .iter()
            .filter_map(|line| line.to_str().ok())
            .flat_map(|line| line.split(','))
            .map(str::trim)
            .any(|candidate| candidate == "*" || weak(candidate) == tag);
    }
    let (Some(since), Some(modified)) = (
        date(request, IF_MODIFIED_SINCE),
        date(response, LAST_MODIFIED).or_else(|| date(response, DATE)),
    ) else {
        return false;
    };
    modified <= since
}

/// An entity tag without its weakness mark (weak comparison).
fn weak(tag: &str) -> &str {
    tag.strip_prefix("W/").unwrap_or(tag)
}

/// The header fields of a `304` made from a `200`'s (RFC 9110 §15.4.5:
/// those that a `200` would have carried and that say how to cache it,
/// no representation metadata).
pub(crate) fn not_modified_headers(response: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::new();
    for name in [
        CACHE_CONTROL,
        CONTENT_LOCATION,
        DATE,
        ETAG,
        EXPIRES,
        VARY,
        LAST_MODIFIED,
    ] {
        for value in response.get_all(&name) {
            out.append(name.clone(), value.clone());
        }
    }
    out
}

/// The request headers that validate a stored response with `stored`
/// headers: its tag and its date of change. `None` when it has neither.
pub(crate) fn validators(stored: &HeaderMap) -> Option<HeaderMap> {
    let mut out = HeaderMap::new();
    if let Some(tag) = stored.get(ETAG) {
        out.insert(IF_NONE_MATCH, tag.clone());
    }
    if let Some(modified) = stored.get(LAST_MODIFIED) {
        out.insert(IF_MODIFIED_SINCE, modified.clone());
    }
    (!out.is_empty()).then_some(out)
}

/// The stored headers updated by a `304`'s (RFC 9111 §3.2): each field
/// the `304` carries replaces the stored one, but for the framing and
/// coding of the stored body, which the `304` does not describe.
pub(crate) fn updated(stored: &HeaderMap, fresh: &HeaderMap) -> HeaderMap {
    // The tag too: a 304 validates the stored body, whose tag may be the
    // weakened one of a compressed variant.
    const KEPT: [&str; 5] = [
        "content-length",
        "content-encoding",
        "transfer-encoding",
        "content-range",
        "etag",
    ];
    let mut out = stored.clone();
    for name in fresh.keys() {
        if KEPT.contains(&name.as_str()) {
            continue;
        }
        out.remove(name);
        for value in fresh.get_all(name) {
            out.append(name.clone(), value.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    fn map(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(*name, HeaderValue::from_str(value).expect("a value"));
        }
        headers
    }

    #[test]
    fn if_none_match_compares_weakly_and_wins_over_if_modified_since() {
        let response = map(&[
            ("etag", "W/\"v2\""),
            ("last-modified", "Sun, 06 Dec 2026 10:00:00 GMT"),
        ]);
        let get = Method::GET;
        let ok = StatusCode::OK;
        for (request, expected) in [
            (map(&[("if-none-match", "\"v2\"")]), true),
            (map(&[("if-none-match", "\"v1\", W/\"v2\"")]), true),
            (map(&[("if-none-match", "*")]), true),
            (map(&[("if-none-match", "\"v1\"")]), false),
            (
                map(&[
                    ("if-none-match", "\"v1\""),
                    ("if-modified-since", "Sun, 06 Dec 2026 11:00:00 GMT"),
                ]),
                false,
            ),
            (
                map(&[("if-modified-since", "Sun, 06 Dec 2026 11:00:00 GMT")]),
                true,
            ),
            (
                map(&[("if-modified-since", "Sun, 06 Dec 2026 10:00:00 GMT")]),
                true,
            ),
            (
                map(&[("if-modified-since", "Sun, 06 Dec 2026 09:59:59 GMT")]),
                false,
            ),
            (map(&[("if-modified-since", "yesterday")]), false),
            (map(&[]), false),
        ] {
            assert_eq!(
                not_modified(&get, &request, ok, &response),
                expected,
                "{request:?}"
            );
        }
        let request = map(&[("if-none-match", "\"v2\"")]);
        assert!(!not_modified(&Method::POST, &request, ok, &response));
        assert!(!not_modified(
            &get,
            &request,
            StatusCode::NOT_FOUND,
            &response
        ));
    }

    #[test]
    fn a_304_updates_all_but_the_bodys_framing() {
        let stored = map(&[
            ("content-length", "5"),
            ("content-encoding", "gzip"),
            ("cache-control", "max-age=1"),
            ("x-kept", "1"),
            ("etag", "\"a\""),
        ]);
        let fresh = map(&[
            ("content-length", "0"),
            ("cache-control", "max-age=60"),
            ("etag", "\"a\""),
            ("x-new", "2"),
        ]);
        let merged = updated(&stored, &fresh);
        assert_eq!(merged["content-length"], "5");
        assert_eq!(merged["content-encoding"], "gzip");
        assert_eq!(merged["cache-control"], "max-age=60");
        assert_eq!(merged["x-kept"], "1");
        assert_eq!(merged["x-new"], "2");
        assert_eq!(
            validators(&stored).expect("a tag")["if-none-match"],
            "\"a\""
        );
        assert!(validators(&map(&[])).is_none());
        let headers = not_modified_headers(&stored);
        assert!(headers.get("content-length").is_none());
        assert_eq!(headers["etag"], "\"a\"");
    }
}
