//! `Cache-Control` read as RFC 9111 §5.2 defines it: comma-separated
//! directives, names case-insensitive, arguments as tokens or quoted
//! strings, across every line of the header. A directive the cache does
//! not know is ignored (§5.2.3); a malformed delta-seconds is taken as the
//! stricter reading (§1.2.2: a value that cannot be read is treated as
//! invalid, so a `max-age=x` response is stale at once).

use std::time::Duration;

use hyper::header::{CACHE_CONTROL, HeaderMap, PRAGMA};

/// Delta-seconds beyond this are this (RFC 9111 §1.2.2: 2^31).
const MAX_SECONDS: u64 = 1 << 31;

/// A response's directives (§5.2.2).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct ResponseDirectives {
    pub(crate) max_age: Option<Duration>,
    pub(crate) s_maxage: Option<Duration>,
    pub(crate) no_store: bool,
    /// `no-cache`, qualified or not: validated before every use (a field
    /// list is read as the whole, which is stricter).
    pub(crate) no_cache: bool,
    /// `private`, qualified or not: never stored by a shared cache.
    pub(crate) private: bool,
    pub(crate) public: bool,
    pub(crate) must_revalidate: bool,
    pub(crate) proxy_revalidate: bool,
    pub(crate) no_transform: bool,
    /// RFC 5861.
    pub(crate) stale_while_revalidate: Option<Duration>,
    pub(crate) stale_if_error: Option<Duration>,
}

/// A request's directives (§5.2.1).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct RequestDirectives {
    pub(crate) max_age: Option<Duration>,
    /// `max-stale` without a value: any staleness.
    pub(crate) max_stale: Option<Duration>,
    pub(crate) min_fresh: Option<Duration>,
    pub(crate) no_cache: bool,
    pub(crate) no_store: bool,
    pub(crate) only_if_cached: bool,
    pub(crate) stale_if_error: Option<Duration>,
}

/// One directive: its name in lower case, its argument if any.
fn each(headers: &HeaderMap, mut directive: impl FnMut(&str, Option<&str>)) {
    for line in headers.get_all(CACHE_CONTROL) {
        let Ok(line) = line.to_str() else {
            continue;
        };
        for (name, argument) in split(line) {
            directive(&name.to_ascii_lowercase(), argument.as_deref());
        }
    }
}

/// A line's directives. A comma inside a quoted argument does not end
/// it; the line is bounded by the header's size.
fn split(line: &str) -> Vec<(&str, Option<String>)> {
    let mut out = Vec::new();
    let mut rest = line;
    while !rest.is_empty() {
        let end = rest.find([',', '=']).unwrap_or(rest.len());
        let name = rest[..end].trim();
        rest = &rest[end..];
        let argument = if let Some(after) = rest.strip_prefix('=') {
            let after = after.trim_start();
            if let Some(quoted) = after.strip_prefix('"') {
                // A quoted string, `\` escaping the next character.
                let mut value = String::new();
                let mut chars = quoted.char_indices();
                let mut closed = quoted.len();
                while let Some((i, c)) = chars.next() {
                    match c {
                        '"' => {
                            closed = i + 1;
                            break;
                        }
                        '\\' => {
                            if let Some((_, next)) = chars.next() {
                                value.push(next);
                            }
                        }
                        c => value.push(c),
                    }
                }
                rest = &quoted[closed.min(quoted.len())..];
                Some(value)
            } else {
                let end = after.find(',').unwrap_or(after.len());
                let value = after[..end].trim().to_owned();
                rest = &after[end..];
                Some(value)
            }
        } else {
            None
        };
        // Whatever follows the directive up to the next comma is not part
        // of it.
        rest = rest.find(',').map_or("", |comma| &rest[comma + 1..]);
        if !name.is_empty() {
            out.push((name, argument));
        }
    }
    out
}

/// Delta-seconds (§1.2.2): digits only, capped at 2^31; `None` when the
/// argument is missing or is not a number.
fn seconds(argument: Option<&str>) -> Option<Duration> {
    let digits = argument?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let value = digits
        .parse::<u64>()
        .unwrap_or(MAX_SECONDS)
        .min(MAX_SECONDS);
    Some(Duration::from_secs(value))
}

impl ResponseDirectives {
    pub(crate) fn read(headers: &HeaderMap) -> Self {
        let mut out = Self::default();
        each(headers, |name, argument| match name {
            // An unreadable max-age is invalid: stale at once.
            // The first of a repeated directive counts (§4.2.1).
            "max-age" if out.max_age.is_none() => {
                out.max_age = Some(seconds(argument).unwrap_or(Duration::ZERO));
            }
            "s-maxage" if out.s_maxage.is_none() => {
                out.s_maxage = Some(seconds(argument).unwrap_or(Duration::ZERO));
            }
            "no-store" => out.no_store = true,
            "no-cache" => out.no_cache = true,
            "private" => out.private = true,
            "public" => out.public = true,
            "must-revalidate" => out.must_revalidate = true,
            "proxy-revalidate" => out.proxy_revalidate = true,
            "no-transform" => out.no_transform = true,
            "stale-while-revalidate" => out.stale_while_revalidate = seconds(argument),
            "stale-if-error" => out.stale_if_error = seconds(argument),
            _ => {}
        });
        out
    }

    /// Whether a stale answer is forbidden (§4.2.4): `must-revalidate`,
    /// `proxy-revalidate` and `s-maxage` all forbid it to a shared cache.
    pub(crate) fn forbids_stale(&self) -> bool {
        self.must_revalidate || self.proxy_revalidate || self.s_maxage.is_some()
    }
}

impl RequestDirectives {
    pub(crate) fn read(headers: &HeaderMap) -> Self {
        let mut out = Self::default();
        let mut any = false;
        each(headers, |name, argument| {
            any = true;
            match name {
                "max-age" => out.max_age = Some(seconds(argument).unwrap_or(Duration::ZERO)),
                "max-stale" => {
                    out.max_stale = Some(seconds(argument).unwrap_or(Duration::MAX));
                }
                "min-fresh" => out.min_fresh = seconds(argument),
                "no-cache" => out.no_cache = true,
                "no-store" => out.no_store = true,
                "only-if-cached" => out.only_if_cached = true,
                "stale-if-error" => out.stale_if_error = seconds(argument),
                _ => {}
            }
        });
        // `Pragma: no-cache` counts only without Cache-Control (§5.4).
        if !any
            && headers.get_all(PRAGMA).iter().any(|v| {
                v.to_str().is_ok_and(|v| {
                    v.split(',')
                        .any(|t| t.trim().eq_ignore_ascii_case("no-cache"))
                })
            })
        {
            out.no_cache = true;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    fn headers(lines: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for line in lines {
            headers.append(CACHE_CONTROL, HeaderValue::from_str(line).expect("a value"));
        }
        headers
    }

    #[test]
    fn response_directives_are_read_across_lines_and_cases() {
        let read = ResponseDirectives::read(&headers(&[
            "Public, MAX-AGE=60",
            "s-maxage=\"120\", no-cache=\"set-cookie, x-a\", stale-while-revalidate=30",
            "private=\"x\" , must-revalidate, foo=bar, stale-if-error=600, no-transform",
        ]));
        assert_eq!(
            read,
            ResponseDirectives {
                max_age: Some(Duration::from_secs(60)),
                s_maxage: Some(Duration::from_secs(120)),
                no_store: false,
                no_cache: true,
                private: true,
                public: true,
                must_revalidate: true,
                proxy_revalidate: false,
                no_transform: true,
                stale_while_revalidate: Some(Duration::from_secs(30)),
                stale_if_error: Some(Duration::from_secs(600)),
            }
        );
    }

    #[test]
    fn bad_and_huge_ages_read_strictly() {
        let read = ResponseDirectives::read(&headers(&["max-age=abc, s-maxage=-1"]));
        assert_eq!(read.max_age, Some(Duration::ZERO));
        assert_eq!(read.s_maxage, Some(Duration::ZERO));
        let read = ResponseDirectives::read(&headers(&["max-age=99999999999999999999999"]));
        assert_eq!(read.max_age, Some(Duration::from_secs(MAX_SECONDS)));
        let read = ResponseDirectives::read(&headers(&["max-age"]));
        assert_eq!(read.max_age, Some(Duration::ZERO));
        let read = ResponseDirectives::read(&headers(&[
            "max-age=5",
            "max-age=600, s-maxage=1, s-maxage=9",
        ]));
        assert_eq!(
            read.max_age,
            Some(Duration::from_secs(5)),
            "the first counts"
        );
        assert_eq!(read.s_maxage, Some(Duration::from_secs(1)));
        assert_eq!(
            ResponseDirectives::read(&headers(&[""])),
            ResponseDirectives::default()
        );
        assert_eq!(
            ResponseDirectives::read(&headers(&[",,, =, \"", "max-age=\"5"])).max_age,
            Some(Duration::from_secs(5))
        );
    }

    #[test]
    fn request_directives_and_pragma() {
        let read = RequestDirectives::read(&headers(&[
            "max-age=0, max-stale, min-fresh=5, only-if-cached, no-store",
        ]));
        assert_eq!(read.max_age, Some(Duration::ZERO));
        assert_eq!(read.max_stale, Some(Duration::MAX));
        assert_eq!(read.min_fresh, Some(Duration::from_secs(5)));
        assert!(read.only_if_cached && read.no_store && !read.no_cache);
        let mut pragma = HeaderMap::new();
        pragma.insert(PRAGMA, HeaderValue::from_static("no-cache"));
        assert!(RequestDirectives::read(&pragma).no_cache);
        pragma.insert(CACHE_CONTROL, HeaderValue::from_static("max-age=10"));
        assert!(
            !RequestDirectives::read(&pragma).no_cache,
            "Cache-Control wins"
        );
    }
}
