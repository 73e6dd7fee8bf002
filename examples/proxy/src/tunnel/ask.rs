//! What a request asks to switch to, how the switch is asked of the
//! backend, and how the backend's agreement is told to the client.
//!
//! An HTTP/1.1 client's `Upgrade` goes on as it came. An HTTP/2 client's
//! WebSocket (RFC 8441: an extended CONNECT with `:protocol` websocket)
//! goes to the backend as the HTTP/1.1 handshake WebSocket servers speak
//! (RFC 6455 §4.1), with a key of the proxy's own; the backend's `101`,
//! its accept checked, becomes the `200` that opens the client's stream.

use hyper::ext::Protocol;
use hyper::header::{
    CONNECTION, HeaderMap, HeaderValue, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, UPGRADE,
};
use hyper::http::request::Parts;
use hyper::http::response;
use hyper::{Method, StatusCode, Version};

use super::websocket_key::Key;
use crate::headers::strip_hop_by_hop;

/// A tunnel a request asks for.
#[derive(Debug)]
pub(crate) enum Asked {
    /// An HTTP/1.1 `Upgrade` to this protocol.
    Upgrade(HeaderValue),
    /// A WebSocket over HTTP/2, asked of the backend with this key.
    WebSocketOverH2(Key),
}

/// The tunnel a request with `head` asks for, if any.
pub(crate) fn requested(head: &Parts) -> Option<Asked> {
    if websocket_over_h2(head) {
        return Some(Asked::WebSocketOverH2(Key::new()));
    }
    upgrade(&head.method, head.version, &head.headers).map(Asked::Upgrade)
}

/// Whether a request with `head` is RFC 8441's WebSocket: an HTTP/2
/// CONNECT with `:protocol` websocket. Any other CONNECT is refused (no
/// tunnels to arbitrary addresses).
pub(crate) fn websocket_over_h2(head: &Parts) -> bool {
    head.method == Method::CONNECT
        && head.version == Version::HTTP_2
        && head
            .extensions
            .get::<Protocol>()
            .is_some_and(|protocol| protocol.as_str().eq_ignore_ascii_case("websocket"))
}

/// The protocol an HTTP/1.1 GET with `Connection: upgrade` asks for,
/// unless it is `h2c` (HTTP/2 is offered by ALPN or prior knowledge
/// instead).
fn upgrade(method: &Method, version: Version, headers: &HeaderMap) -> Option<HeaderValue> {
    if *method != Method::GET || version != Version::HTTP_11 {
        return None;
    }
    let upgrade = headers
        .get(CONNECTION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
        });
    let protocol = headers.get(UPGRADE)?;
    let h2c = protocol.to_str().map_or(true, |p| {
        p.split(',').any(|t| t.trim().eq_ignore_ascii_case("h2c"))
    });
    (upgrade && !h2c).then(|| protocol.clone())
}

impl Asked {
    /// The method the backend is asked with: a WebSocket handshake is a
    /// GET.
    pub(crate) fn method(&self, method: Method) -> Method {
        match self {
            Self::Upgrade(_) => method,
            Self::WebSocketOverH2(_) => Method::GET,
        }
    }

    /// Puts into `headers`, their hop-by-hop ones removed, what asks the
    /// backend to switch.
    pub(crate) fn ask(&self, headers: &mut HeaderMap) {
        headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
        match self {
            Self::Upgrade(protocol) => {
                headers.insert(UPGRADE, protocol.clone());
            }
            Self::WebSocketOverH2(key) => {
                headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
                headers.insert(SEC_WEBSOCKET_KEY, key.value());
            }
        }
    }

    /// Turns the backend's `101` head into the client's, or `false` when
    /// it is not the switch asked for: no protocol, or for a WebSocket over
    /// HTTP/2 another protocol or a wrong accept.
    pub(crate) fn agreed(&self, parts: &mut response::Parts) -> bool {
        let Some(protocol) = parts.headers.get(UPGRADE).cloned() else {
            return false;
        };
        strip_hop_by_hop(&mut parts.headers);
        match self {
            Self::Upgrade(_) => {
                parts
                    .headers
                    .insert(CONNECTION, HeaderValue::from_static("upgrade"));
                parts.headers.insert(UPGRADE, protocol);
                true
            }
            Self::WebSocketOverH2(key) => {
                let accept = parts.headers.remove(SEC_WEBSOCKET_ACCEPT);
                let websocket = protocol.as_bytes().eq_ignore_ascii_case(b"websocket");
                if !websocket || !accept.is_some_and(|a| key.accepted_by(a.as_bytes())) {
                    return false;
                }
                // RFC 8441 §5: a 2xx opens the stream; the accept belongs
                // to the hop the proxy spoke.
                parts.status = StatusCode::OK;
                parts.version = Version::HTTP_2;
                true
            }
        }
    }

    /// Whether a backend's answer other than `101` may reach the client as
    /// it is. A 2xx to an extended CONNECT would open a tunnel on the
    /// client's side that the backend never agreed to.
    pub(crate) fn relayable(&self, status: StatusCode) -> bool {
        match self {
            Self::Upgrade(_) => true,
            Self::WebSocketOverH2(_) => !status.is_success(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(method: Method, version: Version, headers: &[(&str, &str)]) -> Parts {
        let mut request = hyper::Request::new(());
        *request.method_mut() = method;
        *request.version_mut() = version;
        for (name, value) in headers {
            request.headers_mut().append(
                hyper::header::HeaderName::from_bytes(name.as_bytes()).expect("a name"),
                HeaderValue::from_str(value).expect("a value"),
            );
        }
        request.into_parts().0
    }

    #[test]
    fn an_http1_upgrade_is_asked_for_by_get_with_connection_upgrade() {
        let asks = |method, version, headers: &[(&str, &str)]| {
            requested(&request(method, version, headers)).is_some()
        };
        let websocket = [
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "websocket"),
        ];
        assert!(asks(Method::GET, Version::HTTP_11, &websocket));
        assert!(!asks(Method::POST, Version::HTTP_11, &websocket));
        assert!(!asks(Method::GET, Version::HTTP_10, &websocket));
        assert!(!asks(
            Method::GET,
            Version::HTTP_11,
            &[("upgrade", "websocket")]
        ));
        let h2c = [("connection", "upgrade"), ("upgrade", "h2c")];
        assert!(!asks(Method::GET, Version::HTTP_11, &h2c));
    }

    #[test]
    fn only_an_http2_connect_for_websocket_is_a_websocket_over_h2() {
        let mut connect = request(Method::CONNECT, Version::HTTP_2, &[]);
        assert!(!websocket_over_h2(&connect), "a plain CONNECT");
        connect
            .extensions
            .insert(Protocol::from_static("connect-udp"));
        assert!(!websocket_over_h2(&connect), "another protocol");
        connect
            .extensions
            .insert(Protocol::from_static("websocket"));
        assert!(websocket_over_h2(&connect));
        assert!(matches!(
            requested(&connect),
            Some(Asked::WebSocketOverH2(_))
        ));
        connect.version = Version::HTTP_11;
        assert!(!websocket_over_h2(&connect), "HTTP/1.1 has no :protocol");
    }

    #[test]
    fn a_websocket_over_h2_needs_the_backends_right_accept() {
        let Some(asked @ Asked::WebSocketOverH2(_)) = requested(&{
            let mut connect = request(Method::CONNECT, Version::HTTP_2, &[]);
            connect
                .extensions
                .insert(Protocol::from_static("websocket"));
            connect
        }) else {
            panic!("a websocket over h2");
        };
        let mut asking = HeaderMap::new();
        asking.insert("sec-websocket-version", HeaderValue::from_static("13"));
        asked.ask(&mut asking);
        assert_eq!(asked.method(Method::CONNECT), Method::GET);
        assert_eq!(asking[UPGRADE], "websocket");
        let Asked::WebSocketOverH2(key) = &asked else {
            unreachable!()
        };
        assert_eq!(asking[SEC_WEBSOCKET_KEY], key.value());

        let switched = |accept: &str, protocol: &str| {
            let mut response = hyper::Response::new(());
            *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
            let headers = response.headers_mut();
            headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
            headers.insert(UPGRADE, HeaderValue::from_str(protocol).expect("a value"));
            headers.insert(
                SEC_WEBSOCKET_ACCEPT,
                HeaderValue::from_str(accept).expect("a value"),
            );
            headers.insert("sec-websocket-protocol", HeaderValue::from_static("chat"));
            response.into_parts().0
        };
        let mut wrong = switched("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", "websocket");
        assert!(!asked.agreed(&mut wrong), "another key's accept");

        let right = key.accept();
        let mut other = switched(&right, "chat-v2");
        assert!(!asked.agreed(&mut other), "another protocol");
        let mut agreed = switched(&right, "websocket");
        assert!(asked.agreed(&mut agreed));
        assert_eq!(agreed.status, StatusCode::OK);
        assert!(agreed.headers.get(UPGRADE).is_none());
        assert!(agreed.headers.get(CONNECTION).is_none());
        assert!(agreed.headers.get(SEC_WEBSOCKET_ACCEPT).is_none());
        assert_eq!(agreed.headers["sec-websocket-protocol"], "chat");

        assert!(!asked.relayable(StatusCode::OK));
        assert!(asked.relayable(StatusCode::FORBIDDEN));
    }
}
