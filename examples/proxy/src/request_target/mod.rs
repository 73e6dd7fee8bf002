//! What a request asks for, checked and in normal form before it chooses a
//! route: its host ([`host`]) and its path ([`path`]). The route is chosen
//! by, and the backend receives, the same normal form, so nothing a client
//! writes matches one route here and resolves elsewhere at the backend.

mod host;
mod path;

use std::borrow::Cow;
use std::fmt;

use hyper::Version;
use hyper::header::HOST;
use hyper::http::request::Parts;

pub(crate) use host::HostError;
pub(crate) use path::{PathError, normalise, without_parameters};

/// A request's target, checked.
#[derive(Debug)]
pub(crate) struct Target<'a> {
    /// The authority the request names (an absolute-form target's, else
    /// `Host`), checked; empty for an HTTP/1.0 request without one.
    pub(crate) host: &'a str,
    /// The path in normal form: what routes match and backends receive.
    pub(crate) path: Cow<'a, str>,
    /// The query, as sent, without its `?`.
    pub(crate) query: Option<&'a str>,
}

impl Target<'_> {
    /// The path and query sent to the backend.
    pub(crate) fn path_and_query(&self) -> String {
        match self.query {
            Some(query) => format!("{}?{query}", self.path),
            None => self.path.clone().into_owned(),
        }
    }
}

/// Why a target is refused (400).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TargetError {
    Host(HostError),
    Path(PathError),
    /// An absolute-form target of a scheme other than http or https.
    Scheme,
}

impl fmt::Display for TargetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Host(error) => error.fmt(f),
            Self::Path(error) => error.fmt(f),
            Self::Scheme => f.write_str("a scheme other than http or https"),
        }
    }
}

/// Reads and checks `request`'s target. An absolute-form target names
/// the host itself and `Host` is then ignored (RFC 9112 §3.2.2), but must
/// still be one valid line; otherwise an HTTP/1.1 request needs exactly
/// one `Host` (§3.2).
pub(crate) fn read(head: &Parts) -> Result<Target<'_>, TargetError> {
    let mut lines = head.headers.get_all(HOST).iter();
    let header = lines.next();
    if lines.next().is_some() {
        return Err(TargetError::Host(HostError::Repeated));
    }
    if let Some(value) = header {
        host::check(value.as_bytes()).map_err(TargetError::Host)?;
    }
    let uri = &head.uri;
    if let Some(scheme) = uri.scheme_str() {
        if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
            return Err(TargetError::Scheme);
        }
    }
    let host = match uri.authority() {
        Some(authority) => {
            host::check(authority.as_str().as_bytes()).map_err(TargetError::Host)?;
            authority.as_str()
        }
        None => match header {
            // Checked above: visible ASCII only.
            Some(value) => value
                .to_str()
                .map_err(|_| TargetError::Host(HostError::Invalid))?,
            None if head.version == Version::HTTP_10 => "",
            None => return Err(TargetError::Host(HostError::Missing)),
        },
    };
    // An authority-form or asterisk-form target has no path to route by:
    // its path is empty or `*`, which `normalise` refuses.
    let path = path::normalise(uri.path()).map_err(TargetError::Path)?;
    Ok(Target {
        host,
        path,
        query: uri.query(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(version: Version, target: &str, hosts: &[&str]) -> Parts {
        let mut builder = hyper::Request::builder().version(version).uri(target);
        for host in hosts {
            builder = builder.header(HOST, *host);
        }
        builder.body(()).expect("a request").into_parts().0
    }

    #[test]
    fn host_rules() {
        let read_host = |version, target, hosts: &[&str]| {
            read(&request(version, target, hosts)).map(|t| t.host.to_owned())
        };
        let v11 = Version::HTTP_11;
        assert_eq!(read_host(v11, "/", &["a.test"]), Ok("a.test".to_owned()));
        assert_eq!(
            read_host(v11, "/", &[]),
            Err(TargetError::Host(HostError::Missing))
        );
        assert_eq!(read_host(Version::HTTP_10, "/", &[]), Ok(String::new()));
        assert_eq!(
            read_host(v11, "/", &["a.test", "b.test"]),
            Err(TargetError::Host(HostError::Repeated))
        );
        assert_eq!(
            read_host(v11, "http://shop.test/x", &["other.test"]),
            Ok("shop.test".to_owned())
        );
        assert_eq!(
            read_host(v11, "http://admin.test:x@evil.test/", &["a.test"]),
            Err(TargetError::Host(HostError::Userinfo))
        );
        assert_eq!(
            read_host(v11, "http://shop.test/x", &["bad host"]),
            Err(TargetError::Host(HostError::Invalid))
        );
    }

    #[test]
    fn the_path_is_normal_and_the_query_kept() {
        let request = request(Version::HTTP_11, "/a/../b//c?x=/../y", &["a.test"]);
        let target = read(&request).expect("valid");
        assert_eq!(target.path, "/b/c");
        assert_eq!(target.path_and_query(), "/b/c?x=/../y");
        for target in ["*", "a.test:443"] {
            assert_eq!(
                read(&self::request(Version::HTTP_11, target, &["a.test"])).map(|_| ()),
                Err(TargetError::Path(PathError::NotAPath)),
                "{target}"
            );
        }
        let absolute = self::request(Version::HTTP_11, "http://a.test", &["a.test"]);
        assert_eq!(read(&absolute).expect("valid").path, "/");
    }
}
