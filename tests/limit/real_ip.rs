//! The client behind proxies: forwarded headers believed only from trusted
//! proxies, walked from the right (nginx's real_ip_recursive), in every
//! address form proxies write.

use std::net::IpAddr;

use loadbalance::limit::{ForwardedHeader, IpList, TrustedProxies, UnreadableForwarded};

fn ip(text: &str) -> IpAddr {
    text.parse().expect("an address")
}

fn proxies(header: ForwardedHeader) -> TrustedProxies {
    TrustedProxies::new(
        IpList::parse(["10.0.0.0/8", "2001:db8:ffff::/48"]).expect("valid"),
        header,
    )
}

#[test]
fn an_untrusted_peer_cannot_spoof_its_address() {
    let xff = proxies(ForwardedHeader::XForwardedFor);
    let peer = ip("198.51.100.9");
    assert_eq!(xff.client(peer, ["203.0.113.1"]), peer);
    assert_eq!(xff.client(peer, ["10.0.0.1, 203.0.113.1"]), peer);
    assert_eq!(
        proxies(ForwardedHeader::XRealIp).client(peer, ["203.0.113.1"]),
        peer
    );
    assert_eq!(
        proxies(ForwardedHeader::Forwarded).client(peer, ["for=203.0.113.1"]),
        peer
    );
}

#[test]
fn trusted_hops_are_walked_from_the_right() {
    let xff = proxies(ForwardedHeader::XForwardedFor);
    let lb = ip("10.0.0.5");
    // The client appended a spoofed entry on the left: the first untrusted
    // address from the right is what the trusted proxy saw.
    assert_eq!(
        xff.client(lb, ["6.6.6.6, 203.0.113.7, 10.9.9.9"]),
        ip("203.0.113.7")
    );
    // Several header lines are one list, in order.
    assert_eq!(
        xff.client(lb, ["6.6.6.6", "203.0.113.7", "10.9.9.9"]),
        ip("203.0.113.7")
    );
    // All trusted: the leftmost.
    assert_eq!(xff.client(lb, ["10.1.1.1, 10.2.2.2"]), ip("10.1.1.1"));
    // No header: the peer.
    assert_eq!(xff.client(lb, std::iter::empty()), lb);
    // An entry that is not an address stops the walk at the last one.
    assert_eq!(
        xff.client(lb, ["203.0.113.7, unknown, 10.2.2.2"]),
        ip("10.2.2.2")
    );
    assert_eq!(xff.client(lb, ["garbage"]), lb);
    // Ports, brackets, IPv6, IPv4-mapped proxies.
    assert_eq!(
        xff.client(lb, ["[2001:db8::7]:443, 10.1.1.1:8080"]),
        ip("2001:db8::7")
    );
    assert_eq!(
        xff.client(ip("::ffff:10.0.0.5"), ["203.0.113.8:1234"]),
        ip("203.0.113.8")
    );
    assert_eq!(
        xff.client(ip("2001:db8:ffff::1"), ["2001:db8::9"]),
        ip("2001:db8::9")
    );
}

#[test]
fn forwarded_and_x_real_ip() {
    let forwarded = proxies(ForwardedHeader::Forwarded);
    let lb = ip("10.0.0.5");
    assert_eq!(
        forwarded.client(
            lb,
            ["for=6.6.6.6, for=\"[2001:db8::7]:443\";proto=https, For=10.1.1.1;by=10.0.0.5"]
        ),
        ip("2001:db8::7")
    );
    assert_eq!(
        forwarded.client(lb, ["proto=https;for=203.0.113.1"]),
        ip("203.0.113.1")
    );
    assert_eq!(
        forwarded.client(lb, ["for=_hidden, for=10.1.1.1"]),
        ip("10.1.1.1")
    );
    let real = proxies(ForwardedHeader::XRealIp);
    // X-Real-IP is one address, trusted or not.
    assert_eq!(real.client(lb, ["10.3.3.3"]), ip("10.3.3.3"));
    assert_eq!(real.client(lb, ["203.0.113.4"]), ip("203.0.113.4"));
}

#[test]
fn try_client_fails_closed_on_what_a_trusted_proxy_vouches_for() {
    let xff = proxies(ForwardedHeader::XForwardedFor);
    let lb = ip("10.0.0.5");
    let bytes = |lines: &[&'static [u8]]| lines.to_vec();
    // A byte that is not text where the client should be: an error, never
    // the trusted proxy itself (which `client` falls back to).
    for line in [
        &b"203.0.113.7\xff"[..],
        b"\xc3\xa9",
        b"unknown",
        b"garbage, 10.2.2.2",
        b"203.0.113.7, , 10.2.2.2",
    ] {
        assert_eq!(
            xff.try_client(lb, bytes(&[line]))
                .map_err(|e| e.to_string()),
            Err(UnreadableForwarded::default().to_string()),
            "{}",
            String::from_utf8_lossy(line)
        );
    }
    assert_eq!(xff.client(lb, ["garbage, 10.2.2.2"]), ip("10.2.2.2"));
    // What lies left of the client is the client's own and not read.
    assert_eq!(
        xff.try_client(lb, bytes(&[b"\xff\xfe", b"junk, 203.0.113.7, 10.9.9.9"])),
        Ok(ip("203.0.113.7"))
    );
    // From a peer not trusted nothing is read.
    let stranger = ip("198.51.100.9");
    assert_eq!(xff.try_client(stranger, bytes(&[b"\xff"])), Ok(stranger));
    // No header: the peer.
    assert_eq!(xff.try_client(lb, bytes(&[])), Ok(lb));
    let forwarded = proxies(ForwardedHeader::Forwarded);
    assert_eq!(
        forwarded
            .try_client(lb, bytes(&[b"for=_hidden, for=10.1.1.1"]))
            .map_err(|e| e.to_string()),
        Err(UnreadableForwarded::default().to_string())
    );
    assert_eq!(
        forwarded.try_client(lb, bytes(&[b"for=\"[2001:db8::7]:443\";proto=https"])),
        Ok(ip("2001:db8::7"))
    );
}

proptest::proptest! {
    /// Where every entry walked can be read, both forms agree.
    #[test]
    fn try_client_agrees_with_client_where_it_can_read(
        entries in proptest::collection::vec(
            proptest::sample::select(vec![
                "10.0.0.1", "10.9.9.9", "203.0.113.7", "198.51.100.1", "[2001:db8::7]:443",
                "2001:db8:ffff::2", "unknown", "", " 10.3.3.3 ",
            ]),
            0..6,
        ),
        lines in 1usize..3,
        header in proptest::sample::select(vec![
            ForwardedHeader::XForwardedFor, ForwardedHeader::XRealIp,
        ]),
    ) {
        let trusted = proxies(header);
        let per_line = entries.len().div_ceil(lines).max(1);
        let values: Vec<String> = entries.chunks(per_line).map(|c| c.join(",")).collect();
        let lb = ip("10.0.0.5");
        let text = trusted.client(lb, values.iter().map(String::as_str));
        match trusted.try_client(lb, values.iter().map(String::as_bytes)) {
            Ok(client) => proptest::prop_assert_eq!(client, text),
            // An unreadable entry was walked: `client` stopped before it,
            // at a trusted address (or the peer).
            Err(_) => proptest::prop_assert!(
                text == lb || IpList::parse(["10.0.0.0/8", "2001:db8:ffff::/48"])
                    .expect("valid")
                    .contains(text)
            ),
        }
    }
}
