//! The request's host, checked before it chooses a virtual host: RFC 9112
//! §3.2 (an HTTP/1.1 request has exactly one `Host`) and RFC 9110 §4.2.4
//! (no userinfo), and nginx's checks of the name (no `..`, no separators),
//! so `admin.example:x@evil.example` or `a b` never reaches a route.

use std::fmt;
use std::net::Ipv6Addr;

/// The longest host name (RFC 1035: 253 characters in text form), a
/// trailing dot and the port aside; the router matches no longer one.
const MAX_NAME: usize = 253;

/// Why a host is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum HostError {
    /// An HTTP/1.1 request without `Host`.
    Missing,
    /// More than one `Host`.
    Repeated,
    /// Userinfo (`user@host`): the authority must not carry credentials.
    Userinfo,
    /// Not `name[:port]` or `[v6][:port]` of the allowed bytes.
    Invalid,
}

impl fmt::Display for HostError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Missing => "an HTTP/1.1 request without Host",
            Self::Repeated => "more than one Host header",
            Self::Userinfo => "userinfo in the host",
            Self::Invalid => "an invalid host",
        })
    }
}

/// Checks an authority (a `Host` value, or an absolute-form target's):
/// a name of letters, digits, `-`, `.` and `_` (not `..`), an IPv4
/// address, or a bracketed IPv6 address; then an optional `:port` of up to
/// five digits. An empty value is allowed (RFC 9110 §7.2).
pub(crate) fn check(authority: &[u8]) -> Result<(), HostError> {
    if authority.contains(&b'@') {
        return Err(HostError::Userinfo);
    }
    let (name, port) = match authority {
        [b'[', rest @ ..] => {
            let close = rest
                .iter()
                .position(|&b| b == b']')
                .ok_or(HostError::Invalid)?;
            let literal = std::str::from_utf8(&rest[..close]).map_err(|_| HostError::Invalid)?;
            literal
                .parse::<Ipv6Addr>()
                .map_err(|_| HostError::Invalid)?;
            (&[][..], &rest[close + 1..])
        }
        _ => match authority.iter().position(|&b| b == b':') {
            Some(colon) => (&authority[..colon], &authority[colon..]),
            None => (authority, &[][..]),
        },
    };
    let bare = name.strip_suffix(b".").unwrap_or(name);
    let name_ok = bare.len() <= MAX_NAME
        && name
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
        && !name.windows(2).any(|w| w == b"..");
    let port_ok = match port {
        [] => true,
        [b':', digits @ ..] => digits.len() <= 5 && digits.iter().all(u8::is_ascii_digit),
        _ => false,
    };
    if name_ok && port_ok {
        Ok(())
    } else {
        Err(HostError::Invalid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_hosts() {
        for host in [
            "",
            "example.com",
            "Example.COM.",
            "a-b_c.example:8080",
            "192.0.2.1",
            "192.0.2.1:80",
            "[2001:db8::1]",
            "[::1]:8443",
            "localhost:",
        ] {
            assert_eq!(check(host.as_bytes()), Ok(()), "{host:?}");
        }
    }

    #[test]
    fn invalid_hosts() {
        for (host, error) in [
            ("admin.example:x@evil.example", HostError::Userinfo),
            ("user@example.com", HostError::Userinfo),
            ("a b", HostError::Invalid),
            ("example.com/x", HostError::Invalid),
            ("example.com?x", HostError::Invalid),
            ("example.com#x", HostError::Invalid),
            ("example.com\\x", HostError::Invalid),
            ("..", HostError::Invalid),
            ("a..b", HostError::Invalid),
            ("example.com:80:80", HostError::Invalid),
            ("example.com:http", HostError::Invalid),
            ("example.com:123456", HostError::Invalid),
            ("[2001:db8::1", HostError::Invalid),
            ("[not-v6]", HostError::Invalid),
            ("[::1]x", HostError::Invalid),
            ("caf\u{e9}.example", HostError::Invalid),
        ] {
            assert_eq!(check(host.as_bytes()), Err(error), "{host:?}");
        }
        assert_eq!(
            check(&"a".repeat(256).into_bytes()),
            Err(HostError::Invalid)
        );
    }
}
