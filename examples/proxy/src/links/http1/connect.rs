//! Opening a TCP connection to a backend's address: a socket address,
//! or a name resolved and its addresses tried in turn.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpStream;

/// Where hyper-util's connector connects for an address without a port.
const DEFAULT_PORT: u16 = 80;

/// A TCP connection to `address`: a socket address, or a name, with or
/// without a port (80), each of its addresses tried in turn within an
/// equal share of `timeout`, as hyper-util's connector does (without its
/// IPv4/IPv6 race). The name's resolution is outside that timeout,
/// bounded by the request's upstream timeout.
pub(super) async fn open(address: &str, timeout: Duration) -> io::Result<TcpStream> {
    if let Ok(socket) = address.parse::<SocketAddr>() {
        return connect_any(&[socket], timeout).await;
    }
    let (host, port) = host_and_port(address)?;
    let sockets: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), port))
        .await?
        .collect();
    connect_any(&sockets, timeout).await
}

/// The host (IPv6 without its brackets) and port (80 if none) of a
/// backend's `address`.
fn host_and_port(address: &str) -> io::Result<(String, u16)> {
    let invalid = || io::Error::new(io::ErrorKind::InvalidInput, "not a backend address");
    let authority = address
        .parse::<hyper::http::uri::Authority>()
        .map_err(|_| invalid())?;
    let text = authority.as_str();
    // An authority may carry credentials; a backend's address may not.
    if text.contains('@') {
        return Err(invalid());
    }
    // The port's text, after an IPv6 address's brackets or the last `:`;
    // one that is there but is not a port is an error, never port 80.
    let port = match text.rfind(']') {
        Some(end) => text[end + 1..].strip_prefix(':'),
        None => text.rsplit_once(':').map(|(_, port)| port),
    };
    let port = match port {
        None => DEFAULT_PORT,
        Some(port) => port.parse::<u16>().map_err(|_| invalid())?,
    };
    let host = authority.host();
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    Ok((host.to_owned(), port))
}

/// The first of `sockets` to accept a connection, each given an equal
/// share of `timeout`; else the error that says most of the backend.
async fn connect_any(sockets: &[SocketAddr], timeout: Duration) -> io::Result<TcpStream> {
    let count = u32::try_from(sockets.len()).unwrap_or(u32::MAX).max(1);
    let share = timeout / count;
    let mut failed = Vec::new();
    // As many turns as there are addresses.
    for socket in sockets {
        match tokio::time::timeout(share, TcpStream::connect(socket)).await {
            Ok(Ok(stream)) => return Ok(stream),
            Ok(Err(error)) => failed.push(error),
            Err(_) => failed.push(io::Error::new(io::ErrorKind::TimedOut, "connect timed out")),
        }
    }
    Err(reported(failed))
}

/// Which of a name's failed addresses is reported: the first that is the
/// backend's (refused, timed out, ...) rather than an address this host
/// cannot use at all (`EADDRNOTAVAIL`: `::1` where IPv6 is off), which
/// the proxy would otherwise read as running out of its own ports.
fn reported(failed: Vec<io::Error>) -> io::Error {
    const EADDRNOTAVAIL: i32 = 99;
    let mut failed = failed.into_iter();
    let mut first = None;
    // As many turns as there were addresses.
    for error in failed.by_ref() {
        if error.raw_os_error() != Some(EADDRNOTAVAIL) {
            return error;
        }
        first.get_or_insert(error);
    }
    first.unwrap_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no address"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    #[test]
    fn an_address_without_a_port_is_port_80() {
        let parts = |address| host_and_port(address).expect("an address");
        assert_eq!(parts("backend"), ("backend".to_owned(), 80));
        assert_eq!(parts("backend:8080"), ("backend".to_owned(), 8080));
        assert_eq!(parts("10.0.0.1"), ("10.0.0.1".to_owned(), 80));
        assert_eq!(parts("[::1]"), ("::1".to_owned(), 80));
        assert_eq!(parts("[::1]:9000"), ("::1".to_owned(), 9000));
        assert!(host_and_port("back end").is_err());
        // A port that is there but is not one is an error, never port 80.
        for bad in [
            "backend:99999",
            "backend:8o80",
            "backend:",
            "[::1]:99999",
            "u@backend:81",
        ] {
            assert!(host_and_port(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn an_address_this_host_cannot_use_gives_way_to_the_backends_own_error() {
        let unusable = || io::Error::from_raw_os_error(99);
        let refused = io::Error::from(io::ErrorKind::ConnectionRefused);
        let error = reported(vec![unusable(), refused]);
        assert_eq!(error.kind(), io::ErrorKind::ConnectionRefused);
        assert_eq!(reported(vec![unusable()]).raw_os_error(), Some(99));
        assert_eq!(reported(Vec::new()).kind(), io::ErrorKind::NotFound);
    }

    #[tokio::test]
    async fn a_refused_address_gives_way_to_the_next() {
        let closed = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let refused = closed.local_addr().expect("address");
        drop(closed);
        let live = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let open = live.local_addr().expect("address");
        let stream = connect_any(&[refused, open], Duration::from_secs(1))
            .await
            .expect("the second address");
        assert_eq!(stream.peer_addr().expect("peer"), open);
    }
}
