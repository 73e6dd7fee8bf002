//! Allow and deny lists by CIDR: the boundaries of each prefix length,
//! IPv4-mapped clients and networks, every parse error, Display round
//! trips, lookups that allocate nothing, and `IpList::contains` against a
//! linear scan of its networks (and `IpNet::contains` against a bit count)
//! on random lists probed at and beside their boundaries.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use loadbalance::limit::{CidrError, IpList, IpNet};
use proptest::prelude::*;

fn net(text: &str) -> IpNet {
    text.parse()
        .unwrap_or_else(|error| panic!("{text:?} should parse: {error}"))
}

fn ip(text: &str) -> IpAddr {
    text.parse()
        .unwrap_or_else(|error| panic!("{text:?} should be an address: {error}"))
}

fn list(networks: &[&str]) -> IpList {
    IpList::parse(networks).unwrap_or_else(|error| panic!("{error}"))
}

fn parse_error(text: &str) -> CidrError {
    match text.parse::<IpNet>() {
        Ok(net) => panic!("{text:?} should not parse, got {net}"),
        Err(error) => error,
    }
}

fn v4(addr: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(addr))
}

fn v6(addr: u128) -> IpAddr {
    IpAddr::V6(Ipv6Addr::from(addr))
}

fn mapped(addr: u32) -> IpAddr {
    IpAddr::V6(Ipv4Addr::from(addr).to_ipv6_mapped())
}

/// Asserts that `network`, alone and as a one-network list, holds exactly
/// the `inside` addresses of `inside` and `outside`.
fn check(network: &str, inside: &[&str], outside: &[&str]) {
    let parsed = net(network);
    let one = IpList::new([parsed]);
    for addr in inside {
        assert!(parsed.contains(ip(addr)), "{network} should contain {addr}");
        assert!(one.contains(ip(addr)), "[{network}] should contain {addr}");
    }
    for addr in outside {
        assert!(
            !parsed.contains(ip(addr)),
            "{network} should not contain {addr}"
        );
        assert!(
            !one.contains(ip(addr)),
            "[{network}] should not contain {addr}"
        );
    }
}

#[test]
fn ipv4_prefix_boundaries() {
    check(
        "0.0.0.0/0",
        &[
            "0.0.0.0",
            "255.255.255.255",
            "::ffff:0.0.0.0",
            "::ffff:1.2.3.4",
        ],
        &[
            "::",
            "::1",
            "::1.2.3.4",
            "64:ff9b::1.2.3.4",
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
        ],
    );
    check(
        "10.0.0.0/8",
        &["10.0.0.0", "10.0.0.1", "10.128.0.0", "10.255.255.255"],
        &["9.255.255.255", "11.0.0.0", "0.0.0.0", "255.255.255.255"],
    );
    check(
        "10.0.0.0/31",
        &["10.0.0.0", "10.0.0.1"],
        &["9.255.255.255", "10.0.0.2"],
    );
    check(
        "10.0.0.1/32",
        &["10.0.0.1", "::ffff:10.0.0.1"],
        &["10.0.0.0", "10.0.0.2", "::10.0.0.1"],
    );
    check(
        "255.255.255.255/32",
        &["255.255.255.255"],
        &["255.255.255.254", "0.0.0.0"],
    );
    check(
        "128.0.0.0/1",
        &["128.0.0.0", "255.255.255.255"],
        &["127.255.255.255", "0.0.0.0"],
    );
}

#[test]
fn ipv6_prefix_boundaries() {
    check(
        "::/0",
        &[
            "::",
            "::1",
            "2001:db8::",
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
        ],
        // A mapped client is its IPv4 address, which no IPv6 network holds.
        &["0.0.0.0", "10.0.0.1", "::ffff:10.0.0.1"],
    );
    check(
        "2001:db8::/32",
        &["2001:db8::", "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff"],
        &["2001:db7:ffff:ffff:ffff:ffff:ffff:ffff", "2001:db9::"],
    );
    check(
        "2001:db8::/127",
        &["2001:db8::", "2001:db8::1"],
        &["2001:db7:ffff:ffff:ffff:ffff:ffff:ffff", "2001:db8::2"],
    );
    check(
        "2001:db8::1/128",
        &["2001:db8::1"],
        &["2001:db8::", "2001:db8::2"],
    );
    check(
        "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128",
        &["ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"],
        &["ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe", "255.255.255.255"],
    );
    // IPv4-compatible (deprecated) and NAT64 addresses are IPv6 clients.
    check("::/96", &["::10.0.0.1"], &["10.0.0.1", "::ffff:10.0.0.1"]);
    check(
        "64:ff9b::/96",
        &["64:ff9b::10.0.0.1"],
        &["10.0.0.1", "::ffff:10.0.0.1"],
    );
}

#[test]
fn families_never_cross() {
    let v4_only = list(&["0.0.0.0/0"]);
    let v6_only = list(&["::/0"]);
    for addr in ["::", "::1", "2001:db8::1", "::10.0.0.1", "fe80::1"] {
        assert!(!v4_only.contains(ip(addr)), "{addr}");
        assert!(v6_only.contains(ip(addr)), "{addr}");
    }
    for addr in ["0.0.0.0", "10.0.0.1", "::ffff:10.0.0.1", "255.255.255.255"] {
        assert!(v4_only.contains(ip(addr)), "{addr}");
        assert!(!v6_only.contains(ip(addr)), "{addr}");
    }
}

#[test]
fn mapped_networks_are_ipv4_networks() {
    assert_eq!(net("::ffff:10.0.0.0/104"), net("10.0.0.0/8"));
    assert_eq!(net("::ffff:10.0.0.0/104").to_string(), "10.0.0.0/8");
    assert_eq!(net("::ffff:0:0/96"), net("0.0.0.0/0"));
    assert_eq!(net("::ffff:10.0.0.1"), net("10.0.0.1/32"));
    assert_eq!(net("::ffff:10.0.0.1/128"), net("10.0.0.1"));

    let mapped_addr = ip("::ffff:10.0.0.0");
    let built = IpNet::new(mapped_addr, 104).expect("a mapped /104");
    assert_eq!(built, net("10.0.0.0/8"));
    assert_eq!(built.addr(), ip("10.0.0.0"));
    assert_eq!(built.prefix_len(), 8);

    // Shorter than the mapped prefix: an IPv6 network, and `ffff` is host
    // bits.
    assert_eq!(
        parse_error("::ffff:0:0/95"),
        CidrError::HostBitsSet {
            input: "::ffff:0:0/95".to_owned(),
            network: net("::fffe:0:0/95"),
        }
    );
    assert_eq!(
        parse_error("::ffff:10.0.0.1/104"),
        CidrError::HostBitsSet {
            input: "::ffff:10.0.0.1/104".to_owned(),
            network: net("10.0.0.0/8"),
        }
    );
}

#[test]
fn accessors_give_the_network() {
    let network = net("192.168.0.0/16");
    assert_eq!(network.addr(), ip("192.168.0.0"));
    assert_eq!(network.prefix_len(), 16);
    assert_eq!(net("2001:db8::1").prefix_len(), 128);
    assert_eq!(net("10.0.0.1").prefix_len(), 32);
    assert_eq!(net("10.0.0.0/08"), net("10.0.0.0/8"));
}

#[test]
fn overlapping_and_adjacent_networks_merge() {
    // Nested, repeated, overlapping and adjacent: 10.0.0.0 to 10.0.1.255,
    // then a gap (10.0.2.0/24), then 10.0.3.0/24.
    let merged = list(&[
        "10.0.1.0/24",
        "10.0.0.0/25",
        "10.0.0.128/25",
        "10.0.0.64/26",
        "10.0.0.0/25",
        "10.0.3.0/24",
        "10.0.3.7",
    ]);
    assert_eq!(merged.len(), 7);
    for addr in [
        "10.0.0.0",
        "10.0.0.127",
        "10.0.0.128",
        "10.0.1.0",
        "10.0.1.255",
        "10.0.3.0",
        "10.0.3.255",
        "::ffff:10.0.1.255",
    ] {
        assert!(merged.contains(ip(addr)), "{addr}");
    }
    for addr in [
        "9.255.255.255",
        "10.0.2.0",
        "10.0.2.255",
        "10.0.4.0",
        "::a00:0",
    ] {
        assert!(!merged.contains(ip(addr)), "{addr}");
    }
    assert_eq!(
        format!("{merged:?}"),
        "IpList { len: 7, v4: [10.0.0.0..=10.0.1.255, 10.0.3.0..=10.0.3.255], v6: [] }"
    );

    let wide = list(&["10.1.0.0/16", "10.0.0.0/8", "10.255.255.255", "11.0.0.0/8"]);
    assert!(wide.contains(ip("11.255.255.255")));
    assert!(!wide.contains(ip("12.0.0.0")));
    assert!(!wide.contains(ip("9.255.255.255")));

    let top = list(&["255.255.255.0/24", "0.0.0.0/0", "::/0", "ffff::/16"]);
    assert!(top.contains(ip("255.255.255.255")));
    assert!(top.contains(ip("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")));
    assert!(top.contains(ip("::")));

    let v6 = list(&["2001:db8::/33", "2001:db8:8000::/33", "2001:db8::5"]);
    assert!(v6.contains(ip("2001:db8:7fff:ffff:ffff:ffff:ffff:ffff")));
    assert!(v6.contains(ip("2001:db8:8000::")));
    assert!(!v6.contains(ip("2001:db9::")));
    assert_eq!(
        format!("{v6:?}"),
        "IpList { len: 3, v4: [], v6: [2001:db8::..=2001:db8:ffff:ffff:ffff:ffff:ffff:ffff] }"
    );
}

#[test]
fn empty_lists_contain_nothing() {
    for empty in [IpList::default(), IpList::new([]), list(&[])] {
        assert!(empty.is_empty());
        assert_eq!(empty.len(), 0);
        for addr in ["0.0.0.0", "255.255.255.255", "::", "::ffff:10.0.0.1"] {
            assert!(!empty.contains(ip(addr)), "{addr}");
        }
    }
    let one = list(&["10.0.0.1"]);
    assert!(!one.is_empty());
    assert_eq!(one.len(), 1);
}

#[test]
fn lists_collect_from_networks() {
    let collected: IpList = ["10.0.0.0/8", "2001:db8::/32"]
        .into_iter()
        .map(net)
        .collect();
    assert_eq!(collected.len(), 2);
    assert!(collected.contains(ip("10.1.1.1")));
    assert!(collected.contains(ip("2001:db8::1")));
    let owned = vec![String::from("10.0.0.0/8")];
    assert_eq!(IpList::parse(&owned).map(|list| list.len()), Ok(1));
}

#[test]
fn parse_returns_the_first_error() {
    let error = IpList::parse(["10.0.0.0/8", "10.0.0.1/8", "nonsense", ""]);
    assert_eq!(
        error.map(|list| list.len()),
        Err(CidrError::HostBitsSet {
            input: "10.0.0.1/8".to_owned(),
            network: net("10.0.0.0/8"),
        })
    );
}

#[test]
fn every_error_names_its_input() {
    let cases: [(&str, CidrError, &str); 17] = [
        ("", CidrError::Empty, "an IP network cannot be empty"),
        (
            "10.0.0.256/8",
            CidrError::BadAddress {
                input: "10.0.0.256/8".to_owned(),
            },
            r#"no IPv4 or IPv6 address in "10.0.0.256/8""#,
        ),
        (
            "example.com",
            CidrError::BadAddress {
                input: "example.com".to_owned(),
            },
            r#"no IPv4 or IPv6 address in "example.com""#,
        ),
        (
            "/8",
            CidrError::BadAddress {
                input: "/8".to_owned(),
            },
            r#"no IPv4 or IPv6 address in "/8""#,
        ),
        (
            " 10.0.0.0/8",
            CidrError::BadAddress {
                input: " 10.0.0.0/8".to_owned(),
            },
            r#"no IPv4 or IPv6 address in " 10.0.0.0/8""#,
        ),
        (
            "fe80::1%eth0/64",
            CidrError::BadAddress {
                input: "fe80::1%eth0/64".to_owned(),
            },
            r#"no IPv4 or IPv6 address in "fe80::1%eth0/64""#,
        ),
        (
            "10.0.0.0/33",
            CidrError::BadPrefix {
                input: "10.0.0.0/33".to_owned(),
                max: 32,
            },
            r#"the prefix length in "10.0.0.0/33" is not a number from 0 to 32"#,
        ),
        (
            "10.0.0.0/",
            CidrError::BadPrefix {
                input: "10.0.0.0/".to_owned(),
                max: 32,
            },
            r#"the prefix length in "10.0.0.0/" is not a number from 0 to 32"#,
        ),
        (
            "10.0.0.0/+8",
            CidrError::BadPrefix {
                input: "10.0.0.0/+8".to_owned(),
                max: 32,
            },
            r#"the prefix length in "10.0.0.0/+8" is not a number from 0 to 32"#,
        ),
        (
            "10.0.0.0/-1",
            CidrError::BadPrefix {
                input: "10.0.0.0/-1".to_owned(),
                max: 32,
            },
            r#"the prefix length in "10.0.0.0/-1" is not a number from 0 to 32"#,
        ),
        (
            "10.0.0.0/8 ",
            CidrError::BadPrefix {
                input: "10.0.0.0/8 ".to_owned(),
                max: 32,
            },
            r#"the prefix length in "10.0.0.0/8 " is not a number from 0 to 32"#,
        ),
        (
            "10.0.0.0/8/8",
            CidrError::BadPrefix {
                input: "10.0.0.0/8/8".to_owned(),
                max: 32,
            },
            r#"the prefix length in "10.0.0.0/8/8" is not a number from 0 to 32"#,
        ),
        (
            "10.0.0.0/eight",
            CidrError::BadPrefix {
                input: "10.0.0.0/eight".to_owned(),
                max: 32,
            },
            r#"the prefix length in "10.0.0.0/eight" is not a number from 0 to 32"#,
        ),
        (
            "2001:db8::/129",
            CidrError::BadPrefix {
                input: "2001:db8::/129".to_owned(),
                max: 128,
            },
            r#"the prefix length in "2001:db8::/129" is not a number from 0 to 128"#,
        ),
        (
            "::/99999999999999999999",
            CidrError::BadPrefix {
                input: "::/99999999999999999999".to_owned(),
                max: 128,
            },
            r#"the prefix length in "::/99999999999999999999" is not a number from 0 to 128"#,
        ),
        (
            "10.0.0.1/8",
            CidrError::HostBitsSet {
                input: "10.0.0.1/8".to_owned(),
                network: net("10.0.0.0/8"),
            },
            r#"host bits are set in "10.0.0.1/8": the network would be 10.0.0.0/8"#,
        ),
        (
            "2001:db8::1/32",
            CidrError::HostBitsSet {
                input: "2001:db8::1/32".to_owned(),
                network: net("2001:db8::/32"),
            },
            r#"host bits are set in "2001:db8::1/32": the network would be 2001:db8::/32"#,
        ),
    ];
    for (text, expected, message) in cases {
        let error = parse_error(text);
        assert_eq!(error, expected, "{text:?}");
        assert_eq!(error.to_string(), message, "{text:?}");
        assert_eq!(error.input(), text);
    }
}

#[test]
fn new_rejects_as_parse_does() {
    assert_eq!(
        IpNet::new(ip("10.0.0.0"), 33),
        Err(CidrError::BadPrefix {
            input: "10.0.0.0/33".to_owned(),
            max: 32
        })
    );
    assert_eq!(
        IpNet::new(ip("::"), 129),
        Err(CidrError::BadPrefix {
            input: "::/129".to_owned(),
            max: 128
        })
    );
    assert_eq!(
        IpNet::new(ip("::ffff:10.0.0.0"), 129),
        Err(CidrError::BadPrefix {
            input: "::ffff:10.0.0.0/129".to_owned(),
            max: 128
        })
    );
    assert_eq!(
        IpNet::new(ip("10.0.0.1"), 8),
        Err(CidrError::HostBitsSet {
            input: "10.0.0.1/8".to_owned(),
            network: net("10.0.0.0/8")
        })
    );
    assert_eq!(IpNet::new(ip("0.0.0.0"), 0), Ok(net("0.0.0.0/0")));
    assert_eq!(IpNet::new(ip("::"), 0), Ok(net("::/0")));
}

#[test]
fn display_round_trips() {
    for (text, shown) in [
        ("0.0.0.0/0", "0.0.0.0/0"),
        ("10.0.0.0/8", "10.0.0.0/8"),
        ("10.0.0.1", "10.0.0.1/32"),
        ("255.255.255.254/31", "255.255.255.254/31"),
        ("::/0", "::/0"),
        ("2001:db8::/32", "2001:db8::/32"),
        ("2001:DB8::1", "2001:db8::1/128"),
        ("::ffff:10.0.0.0/104", "10.0.0.0/8"),
        ("::ffff:0:0/96", "0.0.0.0/0"),
        ("::fffe:0:0/95", "::fffe:0:0/95"),
        ("::10.0.0.0/104", "::a00:0/104"),
        ("10.0.0.0/008", "10.0.0.0/8"),
    ] {
        let parsed = net(text);
        assert_eq!(parsed.to_string(), shown, "{text}");
        assert_eq!(net(shown), parsed, "{text}");
    }
}

#[test]
fn lists_are_send_sync_clone_debug() {
    fn shareable<T: Send + Sync + Clone + std::fmt::Debug + 'static>() {}
    shareable::<IpList>();
    shareable::<IpNet>();
    shareable::<CidrError>();
    let original = list(&["10.0.0.0/8"]);
    let copy = original.clone();
    drop(original);
    assert!(copy.contains(ip("10.0.0.1")));
}

#[cfg(feature = "serde")]
#[test]
fn serde_uses_the_string_form() {
    let networks = vec![
        net("10.0.0.0/8"),
        net("2001:db8::/32"),
        net("::ffff:1.2.3.4"),
    ];
    let json = serde_json::to_string(&networks).expect("serialises");
    assert_eq!(json, r#"["10.0.0.0/8","2001:db8::/32","1.2.3.4/32"]"#);
    assert_eq!(
        serde_json::from_str::<Vec<IpNet>>(&json).expect("parses"),
        networks
    );

    #[derive(serde::Deserialize)]
    struct Lists {
        deny: Vec<IpNet>,
    }
    let lists: Lists = toml::from_str(r#"deny = ["10.0.0.0/8", "192.168.0.1"]"#).expect("parses");
    assert_eq!(IpList::new(lists.deny).len(), 2);

    let error = serde_json::from_str::<IpNet>(r#""10.0.0.1/8""#)
        .err()
        .map(|error| error.to_string())
        .unwrap_or_default();
    assert!(
        error.contains(r#"host bits are set in "10.0.0.1/8": the network would be 10.0.0.0/8"#),
        "{error}"
    );
    let error = toml::from_str::<Lists>(r#"deny = ["10.0.0.0/33"]"#)
        .err()
        .map(|error| error.to_string())
        .unwrap_or_default();
    assert!(
        error.contains(r#"the prefix length in "10.0.0.0/33" is not a number from 0 to 32"#),
        "{error}"
    );
    assert!(serde_json::from_str::<IpNet>("8").is_err());
}

// Lookups allocate nothing: a counting allocator watches this thread.

use crate::counting_alloc;

#[test]
fn lookups_allocate_nothing() {
    let deny = list(&[
        "10.0.0.0/8",
        "192.168.0.0/16",
        "2001:db8::/32",
        "::ffff:172.16.0.0/108",
    ]);
    let network = net("10.0.0.0/8");
    let clients: Vec<IpAddr> = (0..10_000u32)
        .map(|i| {
            let spread = i.wrapping_mul(2_654_435_761);
            match i % 3 {
                0 => v4(spread),
                1 => mapped(spread),
                _ => v6(0x2001_0db8u128 << 96 | u128::from(spread)),
            }
        })
        .collect();
    let mut hits = 0;
    let allocated = counting_alloc::allocations(|| {
        for &client in &clients {
            hits += usize::from(deny.contains(client)) + usize::from(network.contains(client));
        }
    });
    assert_eq!(allocated, 0);
    assert!(hits > 0);
}

// Random lists against a linear scan.

/// A network from any address and prefix, its host bits cleared. Drawn
/// around a few bases so that networks nest, overlap and touch.
fn network() -> impl Strategy<Value = IpNet> {
    let v4_base = prop_oneof![
        Just(0x0A00_0000u32),
        Just(0xC0A8_0000),
        Just(0),
        Just(u32::MAX),
    ];
    let near_v4 = (v4_base, any::<u16>(), 12u8..=32)
        .prop_map(|(base, low, prefix)| host_network(v4(base ^ u32::from(low)), prefix));
    let any_v4 = (any::<u32>(), 0u8..=32).prop_map(|(addr, prefix)| host_network(v4(addr), prefix));
    let v6_base = prop_oneof![Just(0x2001_0db8u128 << 96), Just(0), Just(u128::MAX),];
    let near_v6 = (v6_base, any::<u16>(), 108u8..=128)
        .prop_map(|(base, low, prefix)| host_network(v6(base ^ u128::from(low)), prefix));
    let any_v6 =
        (any::<u128>(), 0u8..=128).prop_map(|(addr, prefix)| host_network(v6(addr), prefix));
    // Mapped networks, which become IPv4 ones.
    let mapped_v4 = (any::<u16>(), 96u8..=128)
        .prop_map(|(low, prefix)| host_network(mapped(0x0A00_0000 | u32::from(low)), prefix));
    prop_oneof![
        4 => near_v4,
        1 => any_v4,
        3 => near_v6,
        1 => any_v6,
        1 => mapped_v4,
    ]
}

/// The network of `addr` with a `prefix`-bit prefix, whatever its host bits.
fn host_network(addr: IpAddr, prefix: u8) -> IpNet {
    let cleared = match addr {
        IpAddr::V4(a) => {
            v4(u32::from(a) & u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0))
        }
        IpAddr::V6(a) => {
            v6(u128::from(a) & u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0))
        }
    };
    IpNet::new(cleared, prefix).unwrap_or_else(|error| panic!("{error}"))
}

/// A client: beside the first or last address of one of the networks
/// (`which` picks it, wrapping), or anywhere, in any form.
#[derive(Clone, Debug)]
enum Probe {
    Edge {
        which: usize,
        last: bool,
        delta: i8,
        as_mapped: bool,
    },
    Anywhere(IpAddr),
}

fn probe() -> impl Strategy<Value = Probe> {
    prop_oneof![
        6 => (any::<usize>(), any::<bool>(), -2i8..=2, any::<bool>()).prop_map(
            |(which, last, delta, as_mapped)| Probe::Edge { which, last, delta, as_mapped }
        ),
        1 => any::<u32>().prop_map(v4).prop_map(Probe::Anywhere),
        1 => any::<u32>().prop_map(mapped).prop_map(Probe::Anywhere),
        1 => any::<u128>().prop_map(v6).prop_map(Probe::Anywhere),
    ]
}

/// The address `probe` names among `networks`.
fn resolve(probe: &Probe, networks: &[IpNet]) -> Option<IpAddr> {
    let (which, last, delta, as_mapped) = match *probe {
        Probe::Anywhere(addr) => return Some(addr),
        Probe::Edge {
            which,
            last,
            delta,
            as_mapped,
        } => (which, last, delta, as_mapped),
    };
    let network = networks.get(which % networks.len().max(1))?;
    let delta = i128::from(delta);
    Some(match network.addr() {
        IpAddr::V4(a) => {
            let first = u32::from(a);
            let size_less_one = u32::MAX
                .checked_shr(u32::from(network.prefix_len()))
                .unwrap_or(0);
            let edge = if last { first | size_less_one } else { first };
            let addr = (i128::from(edge) + delta) as u32;
            if as_mapped { mapped(addr) } else { v4(addr) }
        }
        IpAddr::V6(a) => {
            let first = u128::from(a);
            let size_less_one = u128::MAX
                .checked_shr(u32::from(network.prefix_len()))
                .unwrap_or(0);
            let edge = if last { first | size_less_one } else { first };
            v6(edge.wrapping_add_signed(delta))
        }
    })
}

/// Whether `network` holds `client`, by counting the leading bits they
/// share.
fn shares_prefix(network: IpNet, client: IpAddr) -> bool {
    let client = match client {
        IpAddr::V6(a) => a.to_ipv4_mapped().map_or(client, IpAddr::V4),
        v4 => v4,
    };
    let common = match (network.addr(), client) {
        (IpAddr::V4(n), IpAddr::V4(c)) => (u32::from(n) ^ u32::from(c)).leading_zeros(),
        (IpAddr::V6(n), IpAddr::V6(c)) => (u128::from(n) ^ u128::from(c)).leading_zeros(),
        _ => return false,
    };
    common >= u32::from(network.prefix_len())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn list_matches_a_linear_scan(
        networks in prop::collection::vec(network(), 0..24),
        probes in prop::collection::vec(probe(), 1..64),
    ) {
        let list = IpList::new(networks.iter().copied());
        prop_assert_eq!(list.len(), networks.len());
        prop_assert_eq!(list.is_empty(), networks.is_empty());
        for probe in &probes {
            let Some(client) = resolve(probe, &networks) else { continue };
            let scan = networks.iter().any(|network| network.contains(client));
            prop_assert_eq!(list.contains(client), scan, "client {} in {:?}", client, list);
            let by_bits = networks.iter().any(|&network| shares_prefix(network, client));
            prop_assert_eq!(scan, by_bits, "client {}", client);
        }
    }

    #[test]
    fn display_parses_back(network in network()) {
        let shown = network.to_string();
        prop_assert_eq!(shown.parse::<IpNet>(), Ok(network));
        prop_assert_eq!(IpNet::new(network.addr(), network.prefix_len()), Ok(network));
    }

    #[test]
    fn host_bits_are_named(addr in any::<u32>(), prefix in 0u8..32) {
        let text = format!("{}/{prefix}", Ipv4Addr::from(addr));
        let network = host_network(v4(addr), prefix);
        match text.parse::<IpNet>() {
            Ok(parsed) => {
                prop_assert_eq!(parsed, network);
                prop_assert_eq!(parsed.addr(), v4(addr));
            }
            Err(error) => prop_assert_eq!(
                error,
                CidrError::HostBitsSet { input: text.clone(), network }
            ),
        }
    }
}
