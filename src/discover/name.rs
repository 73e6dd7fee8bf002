//! What a pool names instead of addresses: a host (its A and AAAA records,
//! at a port) or a service (its SRV records).

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

/// The longest name DNS carries (RFC 1035 §2.3.4, without the root dot).
const MAX_NAME: usize = 253;

/// The longest label of a name (RFC 1035 §2.3.4).
const MAX_LABEL: usize = 63;

/// A DNS name whose records are backends.
///
/// Parsed from text as an operator writes it: `name:port` is a host, each
/// of its A and AAAA addresses a backend at `port`; a name whose first
/// label starts with `_` (`_http._tcp.web.internal`, RFC 2782) is a
/// service, each SRV record's target and port a backend.
///
/// # Examples
///
/// ```
/// use loadbalance::discover::DnsName;
///
/// let host: DnsName = "web.internal:8080".parse()?;
/// assert_eq!(host, DnsName::host("web.internal", 8080)?);
/// let service: DnsName = "_http._tcp.web.internal".parse()?;
/// assert_eq!(service, DnsName::srv("_http._tcp.web.internal")?);
/// assert!("10.0.0.1:80".parse::<DnsName>().is_err()); // an address: a backend as it is
/// # Ok::<(), loadbalance::discover::ParseDnsNameError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum DnsName {
    /// The A and AAAA records of `name`, each address at `port`.
    Host {
        /// The host name.
        name: String,
        /// The backends' port.
        port: u16,
    },
    /// The SRV records of `name`: each target's addresses at the record's
    /// port, its weight the backend's, the lowest priority the primaries
    /// and every other priority backups.
    Srv {
        /// The service's name, `_service._proto.domain`.
        name: String,
    },
}

impl DnsName {
    /// A host's A and AAAA records, at `port`.
    ///
    /// # Errors
    ///
    /// When `name` is not a host name or `port` is 0.
    pub fn host(name: &str, port: u16) -> Result<Self, ParseDnsNameError> {
        check_name(name)?;
        if port == 0 {
            return Err(ParseDnsNameError::new(name, "port 0"));
        }
        Ok(Self::Host {
            name: name.to_owned(),
            port,
        })
    }

    /// A service's SRV records.
    ///
    /// # Errors
    ///
    /// When `name` is not a name whose first label starts with `_`.
    pub fn srv(name: &str) -> Result<Self, ParseDnsNameError> {
        check_name(name)?;
        if !name.starts_with('_') {
            return Err(ParseDnsNameError::new(
                name,
                "a service's name starts with _ (_service._proto.domain)",
            ));
        }
        Ok(Self::Srv {
            name: name.to_owned(),
        })
    }

    /// The name looked up.
    pub fn name(&self) -> &str {
        match self {
            Self::Host { name, .. } | Self::Srv { name } => name,
        }
    }
}

impl fmt::Display for DnsName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Host { name, port } => write!(f, "{name}:{port}"),
            Self::Srv { name } => f.write_str(name),
        }
    }
}

impl FromStr for DnsName {
    type Err = ParseDnsNameError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.parse::<SocketAddr>().is_ok() {
            return Err(ParseDnsNameError::new(
                text,
                "an address, not a name: list it as a backend",
            ));
        }
        if text.starts_with('_') {
            return Self::srv(text);
        }
        let Some((name, port)) = text.rsplit_once(':') else {
            return Err(ParseDnsNameError::new(
                text,
                "a host needs a port (name:port); a service starts with _",
            ));
        };
        let port = port.parse::<u16>().map_err(|_| {
            ParseDnsNameError::new(text, "the port is not a number from 1 to 65535")
        })?;
        Self::host(name, port)
    }
}

/// Letters, digits, `-` and `_` in labels of 1 to 63 bytes, at most 253
/// in all, an optional final dot; not an IP address.
fn check_name(name: &str) -> Result<(), ParseDnsNameError> {
    let bare = name.strip_suffix('.').unwrap_or(name);
    if bare.is_empty() || bare.len() > MAX_NAME {
        return Err(ParseDnsNameError::new(name, "a name of 1 to 253 bytes"));
    }
    if bare.parse::<std::net::IpAddr>().is_ok() {
        return Err(ParseDnsNameError::new(
            name,
            "an address, not a name: list it as a backend",
        ));
    }
    for label in bare.split('.') {
        let allowed = |b: u8| b.is_ascii_alphanumeric() || b == b'-' || b == b'_';
        if label.is_empty() || label.len() > MAX_LABEL || !label.bytes().all(allowed) {
            return Err(ParseDnsNameError::new(
                name,
                "labels of 1 to 63 letters, digits, - or _",
            ));
        }
    }
    Ok(())
}

/// A name that is not one [`DnsName`] can look up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseDnsNameError {
    text: String,
    reason: &'static str,
}

impl ParseDnsNameError {
    fn new(text: &str, reason: &'static str) -> Self {
        Self {
            text: text.to_owned(),
            reason,
        }
    }
}

impl fmt::Display for ParseDnsNameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {}", self.text, self.reason)
    }
}

impl std::error::Error for ParseDnsNameError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_as_operators_write_them() {
        assert_eq!(
            "web.internal:80".parse::<DnsName>(),
            DnsName::host("web.internal", 80)
        );
        assert_eq!(
            "_grpc._tcp.api.".parse::<DnsName>(),
            DnsName::srv("_grpc._tcp.api.")
        );
        for bad in [
            "",
            "web.internal",
            "web.internal:0",
            "web.internal:65536",
            "web..internal:80",
            "web internal:80",
            "10.0.0.1:80",
            "[::1]:80",
            "10.0.0.1",
            "_srv:80",
            ":80",
        ] {
            assert!(bad.parse::<DnsName>().is_err(), "{bad:?}");
        }
        let long = format!("{}.{}:80", "a".repeat(63), "b".repeat(64));
        assert!(long.parse::<DnsName>().is_err());
        let too_long = format!("{}:80", vec!["a".repeat(63); 4].join("."));
        assert!(too_long.parse::<DnsName>().is_err());
    }

    #[test]
    fn names_print_as_they_were_written() {
        for text in ["web.internal:8080", "_http._tcp.web.internal"] {
            let name: DnsName = text.parse().expect("a name");
            assert_eq!(name.to_string(), text);
        }
    }
}
