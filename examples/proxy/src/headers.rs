//! What the proxy changes in the headers it passes on: hop-by-hop headers
//! are the connection's own and stop here (RFC 9110 §7.6.1), and the
//! backend learns who the client is (`X-Forwarded-For`, `Forwarded`,
//! `X-Real-IP`, `X-Forwarded-Proto`, `X-Forwarded-Host`), in headers an
//! untrusted client cannot write.

use std::net::IpAddr;

use bytes::Bytes;

use hyper::header::{CONNECTION, HeaderMap, HeaderName, HeaderValue, UPGRADE};

/// Headers that only concern one connection, never forwarded (RFC 9110
/// §7.6.1; the `Proxy-*` credentials are for this proxy).
const HOP_BY_HOP: [&str; 7] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "transfer-encoding",
];

/// Headers a `Connection` header cannot remove: the request's target.
const END_TO_END: [&str; 1] = ["host"];

/// Removes the hop-by-hop headers and those the `Connection` header
/// names. `Upgrade` goes too; a tunnel puts it back (`tunnel/ask.rs`).
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // The names listed in Connection, collected before it is removed.
    let named: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .filter(|name| !END_TO_END.contains(&name.as_str()))
        .collect();
    remove_where(headers, |name| {
        HOP_BY_HOP.contains(&name.as_str()) || name == UPGRADE || named.contains(name)
    });
}

/// Removes the headers `doomed` names, in one pass over the names present
/// (a request carries a handful; most carry none to remove), rather than
/// one lookup a listed name.
fn remove_where(headers: &mut HeaderMap, doomed: impl Fn(&HeaderName) -> bool) {
    let found: Vec<HeaderName> = headers
        .keys()
        .filter(|name| doomed(name))
        .cloned()
        .collect();
    for name in found {
        headers.remove(name);
    }
}

/// Headers that say how a request came through proxies: what URL the
/// client asked for ([`URL_FORWARDING`]) and who the client and the proxy
/// are ([`WHO_FORWARDED`]). From a peer that is not a trusted proxy they
/// are the client's own words and are removed, then written by this proxy
/// (nginx's `proxy_set_header X-Real-IP $remote_addr`); from a trusted
/// proxy they are kept, and added to.
/// The lists hold the names frameworks believe: Spring and Werkzeug take
/// `X-Forwarded-Prefix`, IIS and Symfony `X-Original-URL` and
/// `X-Rewrite-URL`, CDNs' client-address headers are read as such.
fn forwarding(name: &str) -> bool {
    URL_FORWARDING.contains(&name) || WHO_FORWARDED.contains(&name)
}

/// Forwarding headers that say what URL the client asked for (its host,
/// scheme, port, prefix or path), which a backend may build links and
/// redirects from: passed on from a trusted proxy, so the cache keys its
/// responses by them too (an unkeyed `X-Forwarded-Host` is the classic
/// way to poison a cache).
const URL_FORWARDING: [&str; 11] = [
    "forwarded",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-forwarded-port",
    "x-forwarded-prefix",
    "x-forwarded-ssl",
    "x-forwarded-scheme",
    "x-forwarded-protocol",
    "x-url-scheme",
    "x-original-url",
    "x-rewrite-url",
];

/// Forwarding headers that name the client or a proxy on the way
/// (`X-Forwarded-For` is not among them: it is appended to, never
/// replaced).
const WHO_FORWARDED: [&str; 5] = [
    "x-real-ip",
    "x-forwarded-server",
    "x-client-ip",
    "true-client-ip",
    "cf-connecting-ip",
];

/// The URL-describing forwarding headers `headers` carries.
pub(crate) fn url_forwarding(headers: &HeaderMap) -> Vec<HeaderName> {
    URL_FORWARDING
        .iter()
        .filter(|name| headers.contains_key(**name))
        .map(|name| HeaderName::from_static(name))
        .collect()
}

/// Who sent a request, as the backend should learn it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Hop<'a> {
    /// The socket's peer.
    pub(crate) peer: IpAddr,
    /// The client: the peer, or whom a trusted peer forwarded for.
    pub(crate) client: IpAddr,
    /// Whether the peer is a trusted proxy.
    pub(crate) trusted: bool,
    /// The host the request named (checked).
    pub(crate) host: Option<&'a str>,
    /// `http` or `https`: how the client reached this proxy.
    pub(crate) scheme: &'static str,
}

/// Writes the forwarding headers: the peer appended to `X-Forwarded-For`
/// (nginx's `$proxy_add_x_forwarded_for`; a backend believes only the
/// entries its own proxies added, the last one first), an RFC 7239
/// `Forwarded` element, `X-Real-IP` (the client), and
/// `X-Forwarded-Proto` and `X-Forwarded-Host` unless a trusted proxy set
/// them. What an untrusted client wrote of these is removed first.
pub(crate) fn set_forwarding(headers: &mut HeaderMap, hop: Hop<'_>) {
    // Names with `_` are dropped from everyone, as nginx does
    // (`underscores_in_headers off`): CGI-style backends read `X_Real_IP`
    // and `X-Real-IP` as one variable, so one could stand for the other.
    remove_where(headers, |name| {
        let name = name.as_str();
        (!hop.trusted && forwarding(name)) || name.contains('_')
    });
    // Written once and shared (a header value is reference-counted): the
    // common request has no chain before it and comes from its client.
    let peer = hop.peer.to_string();
    let peer_value = address(&peer);
    // Every line the client sent is one list (RFC 9110 §5.3).
    let mut earlier = headers
        .get_all(&X_FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .peekable();
    let forwarded_for = if earlier.peek().is_none() {
        peer_value.clone()
    } else {
        let mut chain = String::new();
        for entry in earlier {
            chain.push_str(entry);
            chain.push_str(", ");
        }
        chain.push_str(&peer);
        // A line that is not text cannot be extended: the peer alone.
        HeaderValue::from_maybe_shared(Bytes::from(chain)).unwrap_or_else(|_| peer_value.clone())
    };
    headers.insert(X_FORWARDED_FOR, forwarded_for);
    let host = hop.host.filter(|h| !h.is_empty());
    if let Some(element) = forwarded_element(&peer, hop.peer, hop.scheme, host) {
        headers.append(FORWARDED, element);
    }
    let client = if hop.client == hop.peer {
        peer_value
    } else {
        address(&hop.client.to_string())
    };
    headers.insert(X_REAL_IP, client);
    if !headers.contains_key(X_FORWARDED_PROTO) {
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(hop.scheme));
    }
    if let Some(host) = host {
        if !headers.contains_key(X_FORWARDED_HOST) {
            if let Ok(value) = HeaderValue::from_str(host) {
                headers.insert(X_FORWARDED_HOST, value);
            }
        }
    }
}

// The names written, made once (a name given as text is parsed, and a
// name outside the standard set copied, on every use).
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const FORWARDED: HeaderName = HeaderName::from_static("forwarded");
const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// An RFC 7239 element for this hop, `for=...;proto=...;host="..."`,
/// written into one buffer of its exact length (no copy on the way to a
/// header value).
fn forwarded_element(
    peer: &str,
    address: IpAddr,
    scheme: &str,
    host: Option<&str>,
) -> Option<HeaderValue> {
    // An IPv6 node is quoted and bracketed (RFC 7239 §6).
    let (open, close) = match address {
        IpAddr::V4(_) => ("", ""),
        IpAddr::V6(_) => ("\"[", "]\""),
    };
    let parts = [
        "for=",
        open,
        peer,
        close,
        ";proto=",
        scheme,
        if host.is_some() { ";host=\"" } else { "" },
        // Checked: letters, digits, `-._:[]` only.
        host.unwrap_or(""),
        if host.is_some() { "\"" } else { "" },
    ];
    let mut element = Vec::with_capacity(parts.iter().map(|part| part.len()).sum());
    for part in parts {
        element.extend_from_slice(part.as_bytes());
    }
    HeaderValue::from_maybe_shared(Bytes::from(element)).ok()
}

/// An address's text as a header value.
fn address(text: &str) -> HeaderValue {
    // An address's text is ASCII digits, dots, colons and hex.
    HeaderValue::from_str(text).unwrap_or(HeaderValue::from_static("unknown"))
}

/// Whether a gRPC answer (its headers, for a trailers-only answer, or its
/// trailers) says UNAVAILABLE (14): the one gRPC status that is the
/// backend's failure and may be retried elsewhere (gRPC's own retry
/// policy); every other status is the call's own outcome.
pub(crate) fn grpc_unavailable(headers: &HeaderMap) -> bool {
    headers
        .get("grpc-status")
        .is_some_and(|status| status.as_bytes() == b"14")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_and_connection_named_headers_are_removed() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "connection",
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        headers.insert("x-secret", HeaderValue::from_static("1"));
        headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        headers.insert("te", HeaderValue::from_static("trailers"));
        headers.insert("upgrade", HeaderValue::from_static("websocket"));
        headers.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut headers);
        let left: Vec<&str> = headers.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, ["x-kept"]);
    }

    #[test]
    fn the_peer_is_appended() {
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", HeaderValue::from_static("203.0.113.9"));
        let peer = "::1".parse().expect("address");
        let hop = Hop {
            peer,
            client: peer,
            trusted: false,
            host: Some("example.com"),
            scheme: "http",
        };
        set_forwarding(&mut headers, hop);
        assert_eq!(headers["x-forwarded-for"], "203.0.113.9, ::1");
        assert_eq!(
            headers["forwarded"],
            "for=\"[::1]\";proto=http;host=\"example.com\""
        );
        assert_eq!(headers["x-real-ip"], "::1");
        assert_eq!(headers["x-forwarded-proto"], "http");
        assert_eq!(headers["x-forwarded-host"], "example.com");
    }

    #[test]
    fn an_untrusted_client_cannot_write_forwarding_headers() {
        let spoofed = [
            ("x_real_ip", "10.0.0.9"),
            ("forwarded", "for=10.0.0.1;proto=https"),
            ("x-real-ip", "10.0.0.1"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "admin.example"),
            ("x-forwarded-port", "443"),
        ];
        let peer: IpAddr = "198.51.100.7".parse().expect("address");
        for trusted in [false, true] {
            let mut headers = HeaderMap::new();
            for (name, value) in spoofed {
                headers.insert(name, HeaderValue::from_static(value));
            }
            let client = if trusted {
                "203.0.113.5".parse().expect("address")
            } else {
                peer
            };
            let hop = Hop {
                peer,
                client,
                trusted,
                host: Some("www.example"),
                scheme: "http",
            };
            set_forwarding(&mut headers, hop);
            let all = |name: &str| -> Vec<&str> {
                headers
                    .get_all(name)
                    .iter()
                    .map(|v| v.to_str().expect("text"))
                    .collect()
            };
            if trusted {
                assert_eq!(
                    all("forwarded"),
                    [
                        "for=10.0.0.1;proto=https",
                        "for=198.51.100.7;proto=http;host=\"www.example\""
                    ]
                );
                assert_eq!(all("x-real-ip"), ["203.0.113.5"]);
                assert_eq!(all("x-forwarded-proto"), ["https"]);
                assert_eq!(all("x-forwarded-host"), ["admin.example"]);
                assert_eq!(all("x-forwarded-port"), ["443"]);
                assert!(all("x_real_ip").is_empty());
            } else {
                assert_eq!(
                    all("forwarded"),
                    ["for=198.51.100.7;proto=http;host=\"www.example\""]
                );
                assert_eq!(all("x-real-ip"), ["198.51.100.7"]);
                assert_eq!(all("x-forwarded-proto"), ["http"]);
                assert_eq!(all("x-forwarded-host"), ["www.example"]);
                assert!(all("x-forwarded-port").is_empty());
                assert!(all("x_real_ip").is_empty());
            }
        }
    }
}
