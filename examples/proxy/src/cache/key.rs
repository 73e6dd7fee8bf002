//! Cache keys. A response is found by its URI (the scheme, the host
//! without its port, lower case, and the path in the normal form routes
//! match, with the query as sent: nginx's `$scheme$proxy_host$request_uri`);
//! a response that varies (RFC 9111 §4.1) is found under its URI's
//! variants, by the request's values of the headers it names.
//! `Accept-Encoding` is keyed by the codings it takes, not by its text,
//! so clients that write it differently share a variant.

use hyper::header::{ACCEPT_ENCODING, HeaderMap, HeaderName, VARY};

use crate::compress::{Accepted, Coding};

/// The codings `Accept-Encoding` is keyed by.
const CODINGS: [Coding; 3] = [Coding::Zstd, Coding::Brotli, Coding::Gzip];

/// Header names one `Vary` may list; a response naming more is not
/// stored (a bound on the work each lookup does).
pub(crate) const MAX_VARY: usize = 16;

/// The key of a URI: its host with the port as the backend receives it
/// (a response made for `a.test:8080`, which may name it in a link or a
/// redirect, is not `a.test`'s).
pub(crate) fn primary(scheme: &str, host: &str, path_and_query: &str) -> String {
    format!("{scheme}://{}{path_and_query}", host.to_ascii_lowercase())
}

/// The header names a response varies by, in lower case; `None` when
/// they cannot be read or are too many (not stored).
pub(crate) fn vary_names(headers: &HeaderMap) -> Option<Vec<HeaderName>> {
    let mut names = Vec::new();
    for line in headers.get_all(VARY) {
        for name in line.to_str().ok()?.split(',') {
            let name = name.trim();
            if name.is_empty() {
                continue;
            }
            let name = HeaderName::from_bytes(name.as_bytes()).ok()?;
            if !names.contains(&name) {
                names.push(name);
            }
            if names.len() > MAX_VARY {
                return None;
            }
        }
    }
    Some(names)
}

/// The key of the variant of `primary` (in generation `generation`) that
/// a request with `headers` selects.
pub(crate) fn variant(
    primary: &str,
    generation: u64,
    names: &[HeaderName],
    headers: &HeaderMap,
) -> String {
    let mut key = format!("{primary}\n{generation}");
    for name in names {
        key.push('\n');
        if *name == ACCEPT_ENCODING {
            key.push_str(&Accepted::read(headers).normal_form(&CODINGS));
            continue;
        }
        // Lines joined as one list, whitespace around items dropped
        // (§4.1 allows this normalisation).
        let mut first = true;
        for line in headers.get_all(name) {
            for item in line.as_bytes().split(|b| *b == b',') {
                if !first {
                    key.push(',');
                }
                first = false;
                push_escaped(&mut key, item.trim_ascii());
            }
        }
        if first {
            // Absent differs from empty.
            key.push('\u{0}');
        }
    }
    key
}

/// `bytes` as text, each byte that is not visible ASCII (nor a space) as
/// `\xNN`, and `\` doubled: distinct values stay distinct.
fn push_escaped(key: &mut String, bytes: &[u8]) {
    use std::fmt::Write as _;
    for &byte in bytes {
        match byte {
            b'\\' => key.push_str("\\\\"),
            b' '..=b'~' => key.push(char::from(byte)),
            _ => {
                let _ = write!(key, "\\x{byte:02x}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    #[test]
    fn a_uri_is_keyed_with_its_port_without_its_host_case() {
        assert_eq!(
            primary("http", "Example.COM:8080", "/a?b"),
            "http://example.com:8080/a?b"
        );
        assert_ne!(
            primary("https", "[::1]:443", "/"),
            primary("https", "[::1]", "/")
        );
        assert_ne!(
            primary("http", "a.test", "/"),
            primary("https", "a.test", "/")
        );
    }

    #[test]
    fn variants_by_the_named_headers() {
        let names = [HeaderName::from_static("accept-language"), ACCEPT_ENCODING];
        let key = |pairs: &[(&'static str, &str)]| {
            let mut headers = HeaderMap::new();
            for (name, value) in pairs {
                headers.append(*name, HeaderValue::from_str(value).expect("a value"));
            }
            variant("http://a.test/", 7, &names, &headers)
        };
        let base = key(&[
            ("accept-language", "en, fr"),
            ("accept-encoding", "gzip, br"),
        ]);
        assert_eq!(
            base,
            key(&[
                ("accept-language", "en"),
                ("accept-language", " fr"),
                ("accept-encoding", "br;q=0.5, gzip")
            ]),
            "lines and spacing, and the codings taken, not their text"
        );
        assert_ne!(
            base,
            key(&[
                ("accept-language", "fr, en"),
                ("accept-encoding", "gzip, br")
            ])
        );
        assert_ne!(
            base,
            key(&[("accept-language", "en, fr"), ("accept-encoding", "gzip")])
        );
        assert_ne!(
            key(&[]),
            key(&[("accept-language", "")]),
            "absent is not empty"
        );
    }

    #[test]
    fn vary_names_are_bounded() {
        let mut headers = HeaderMap::new();
        headers.insert(
            VARY,
            HeaderValue::from_static("Accept-Encoding, accept-encoding, Origin"),
        );
        assert_eq!(
            vary_names(&headers),
            Some(vec![ACCEPT_ENCODING, HeaderName::from_static("origin")])
        );
        let many: Vec<String> = (0..=MAX_VARY).map(|i| format!("x-{i}")).collect();
        headers.insert(
            VARY,
            HeaderValue::from_str(&many.join(",")).expect("a value"),
        );
        assert_eq!(vary_names(&headers), None);
    }
}
