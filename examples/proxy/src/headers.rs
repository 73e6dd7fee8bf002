//! What the proxy changes in the headers it passes on: hop-by-hop headers
//! are the connection's own and stop here (RFC 9110 §7.6.1), and the
//! backend learns who the client is (`X-Forwarded-For`, `Forwarded`).

use std::net::IpAddr;

use hyper::header::{CONNECTION, HeaderMap, HeaderName, HeaderValue};

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
/// names. `Upgrade` goes too: this proxy does not tunnel.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // The names listed in Connection, collected before it is removed.
    let named: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        if !END_TO_END.contains(&name.as_str()) {
            headers.remove(name);
        }
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
    headers.remove("upgrade");
}

/// Appends the peer to `X-Forwarded-For` (nginx's
/// `$proxy_add_x_forwarded_for`) and adds an RFC 7239 `Forwarded` element
/// for it. The chain the client sent is kept: the backend trusts it only as
/// far as it trusts this proxy's own configuration.
pub(crate) fn add_forwarded(headers: &mut HeaderMap, peer: IpAddr, host: Option<&str>) {
    let peer_text = peer.to_string();
    // Every line the client sent is one list (RFC 9110 §5.3).
    let mut chain = String::new();
    for earlier in headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
    {
        chain.push_str(earlier);
        chain.push_str(", ");
    }
    chain.push_str(&peer_text);
    if let Ok(value) = HeaderValue::from_str(&chain) {
        headers.insert("x-forwarded-for", value);
    }
    let node = match peer {
        IpAddr::V4(_) => peer_text,
        IpAddr::V6(_) => format!("\"[{peer_text}]\""),
    };
    let mut element = format!("for={node};proto=http");
    if let Some(host) = host.filter(|h| {
        h.bytes()
            .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
    }) {
        element.push_str(";host=\"");
        element.push_str(host);
        element.push('"');
    }
    if let Ok(value) = HeaderValue::from_str(&element) {
        headers.append("forwarded", value);
    }
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
        add_forwarded(
            &mut headers,
            "::1".parse().expect("address"),
            Some("example.com"),
        );
        assert_eq!(headers["x-forwarded-for"], "203.0.113.9, ::1");
        assert_eq!(
            headers["forwarded"],
            "for=\"[::1]\";proto=http;host=\"example.com\""
        );
    }
}
