//! The nginx-compatible hashes against a reference rewritten from nginx's
//! C source (`tests/nginx_reference.py`, its output checked in as
//! `tests/data/nginx_reference.txt`): every client's first pick and its
//! retry after the first failed, bit for bit, for four weighted servers,
//! one marked down, one removed and one added back; both forms, static and
//! live. Then how much each hash moves when a server goes.

use std::net::IpAddr;

use loadbalance::{
    AdminState, Assemble, Backend, Balancer, BuildError, Context, Live, NginxHashOptions,
    NginxIpHashOptions, PickError, Tried, locked, lockfree,
};

const REFERENCE: &str = include_str!("../data/nginx_reference.txt");

const SERVERS: [(&str, u32); 4] = [
    ("10.0.0.1:80", 1),
    ("10.0.0.2:80", 2),
    ("10.0.0.3:80", 3),
    ("10.0.0.4:80", 1),
];

/// One line of the reference.
struct Expected<'a> {
    algorithm: &'a str,
    config: &'a str,
    key: &'a str,
    first: &'a str,
    /// The retry's pick after `first` failed; `None` when the reference
    /// fell back already at the first pick, `Some("-")` when none is left.
    second: Option<&'a str>,
}

fn reference() -> Vec<Expected<'static>> {
    REFERENCE
        .lines()
        .map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let second = match fields.get(4) {
                Some(&"fallback") | None => None,
                Some(&second) => Some(second),
            };
            Expected {
                algorithm: fields[0],
                config: fields[1],
                key: fields[2],
                first: fields[3],
                second,
            }
        })
        .collect()
}

/// The servers of each static config, in order (`down2` is a live state
/// only).
fn servers(config: &str) -> Vec<(&'static str, u32)> {
    let without: Vec<_> = SERVERS
        .into_iter()
        .filter(|&(s, _)| s != "10.0.0.2:80")
        .collect();
    match config {
        "all" => SERVERS.to_vec(),
        "removed2" => without,
        "readded2" => without.into_iter().chain([SERVERS[1]]).collect(),
        other => panic!("no static config {other}"),
    }
}

/// The contexts a reference key stands for: a key's bytes; an address as
/// the client address, and (unless IPv4-mapped, which nginx's text would
/// spell differently) as its text too.
fn contexts(algorithm: &str, key: &'static str) -> Vec<Context<'static>> {
    let addr = key.parse::<IpAddr>().ok();
    let mut contexts = Vec::new();
    if let Some(addr) = addr {
        contexts.push(Context::from_addr(addr));
    }
    let mapped = key.starts_with("::ffff:");
    if algorithm != "ip_hash" && (addr.is_none() || !mapped) {
        contexts.push(Context::from_key(key.as_bytes()));
    }
    contexts
}

/// Checks `lb` against every reference line of `algorithm` and `config`:
/// the first pick, and the retry with the first tried.
fn check(lb: &dyn Balancer<&'static str>, algorithm: &str, config: &str, form: &str) -> usize {
    let mut checked = 0;
    for expected in reference()
        .into_iter()
        .filter(|e| e.algorithm == algorithm && e.config == config)
    {
        for ctx in contexts(algorithm, expected.key) {
            let first = lb.pick(&ctx).expect("a pick");
            let what = format!("{form} {algorithm} {config} {} ({ctx:?})", expected.key);
            assert_eq!(*first, expected.first, "{what}: first pick");
            if let Some(second) = expected.second {
                let mut tried = Tried::new();
                tried.insert(&first);
                let retry = lb.pick(&ctx.with_tried(&tried));
                match retry {
                    Ok(guard) => assert_eq!(*guard, second, "{what}: retry"),
                    Err(error) => assert_eq!(second, "-", "{what}: retry failed: {error}"),
                }
            }
            checked += 1;
        }
    }
    checked
}

fn ip_hash_forms(config: &str) -> [(&'static str, Box<dyn Balancer<&'static str>>); 2] {
    [
        (
            "lockfree",
            Box::new(lockfree::NginxIpHash::weighted(servers(config)).expect("valid")),
        ),
        (
            "locked",
            Box::new(locked::NginxIpHash::weighted(servers(config)).expect("valid")),
        ),
    ]
}

fn hash_forms(
    config: &str,
    consistent: bool,
) -> [(&'static str, Box<dyn Balancer<&'static str>>); 2] {
    let options = NginxHashOptions::default().consistent(consistent);
    [
        (
            "lockfree",
            Box::new(
                lockfree::NginxHash::with_options(servers(config), options.clone()).expect("valid"),
            ),
        ),
        (
            "locked",
            Box::new(locked::NginxHash::with_options(servers(config), options).expect("valid")),
        ),
    ]
}

#[test]
fn the_reference_is_there() {
    let lines = reference();
    assert_eq!(lines.len(), 6_000);
    // The retries reach the fallback only on the consistent ring with a
    // server down (21 points in a row of the tried and the down server).
    let fallbacks = REFERENCE
        .lines()
        .filter(|l| l.ends_with("fallback"))
        .count();
    assert_eq!(fallbacks, 6);
}

#[test]
fn static_maps_equal_nginx_bit_for_bit() {
    for config in ["all", "removed2", "readded2"] {
        for (form, lb) in ip_hash_forms(config) {
            assert_eq!(check(&*lb, "ip_hash", config, form), 300);
        }
        for (form, lb) in hash_forms(config, true) {
            assert!(check(&*lb, "chash", config, form) >= 570);
        }
        for (form, lb) in hash_forms(config, false) {
            assert!(check(&*lb, "hash", config, form) >= 570);
        }
    }
}

/// A live set through add, remove and down: each state maps as the
/// reference of the same config.
fn live_follows_nginx<B>(algorithm: &str, form: &str, options: B::Options)
where
    B: Assemble<Value = &'static str> + Balancer<&'static str>,
{
    let lb = Live::<B>::builder()
        .options(options)
        .build(SERVERS.map(|(s, w)| Backend::new(s).weight(w)))
        .expect("valid");
    check(&lb, algorithm, "all", form);
    lb.set_state("10.0.0.2:80", AdminState::Down)
        .expect("present");
    check(&lb, algorithm, "down2", form);
    lb.set_state("10.0.0.2:80", AdminState::Up)
        .expect("present");
    check(&lb, algorithm, "all", form);
    lb.remove("10.0.0.2:80").expect("present");
    check(&lb, algorithm, "removed2", form);
    lb.add(Backend::new("10.0.0.2:80").weight(2))
        .expect("absent");
    check(&lb, algorithm, "readded2", form);
}

#[test]
fn live_maps_equal_nginx_through_down_remove_and_add() {
    live_follows_nginx::<lockfree::NginxIpHash<&str>>(
        "ip_hash",
        "lockfree",
        NginxIpHashOptions::default(),
    );
    live_follows_nginx::<locked::NginxIpHash<&str>>(
        "ip_hash",
        "locked",
        NginxIpHashOptions::default(),
    );
    for (algorithm, consistent) in [("chash", true), ("hash", false)] {
        let options = NginxHashOptions::default().consistent(consistent);
        live_follows_nginx::<lockfree::NginxHash<&str>>(algorithm, "lockfree", options.clone());
        live_follows_nginx::<locked::NginxHash<&str>>(algorithm, "locked", options);
    }
}

/// 20,000 clients, each in a /24 of its own (ip_hash reads three octets).
fn many_clients() -> impl Iterator<Item = IpAddr> {
    (0..20_000u32).map(|i| IpAddr::from((i.wrapping_mul(2_654_435_761) | 0xff).to_be_bytes()))
}

/// The share of clients not on the removed server that move when it is
/// removed, for a balancer built by `build` over a list of servers.
fn moved_share(build: impl Fn(Vec<(&'static str, u32)>) -> Box<dyn Balancer<&'static str>>) -> f64 {
    let before = build(servers("all"));
    let after = build(servers("removed2"));
    let (mut stayed, mut moved) = (0u32, 0u32);
    for addr in many_clients() {
        let ctx = Context::from_addr(addr);
        let old = *before.pick(&ctx).expect("pick");
        if old == "10.0.0.2:80" {
            continue;
        }
        if *after.pick(&ctx).expect("pick") == old {
            stayed += 1;
        } else {
            moved += 1;
        }
    }
    f64::from(moved) / f64::from(moved + stayed)
}

/// Where the nginx hashes are not consistent: removing one of four servers
/// (weights 1,2,3,1; the removed one has weight 2) moves about half of the
/// other servers' clients under `ip_hash` and plain `hash`, none under
/// `hash ... consistent`. Marking it down moves none under any of them.
#[test]
fn removal_moves_clients_except_on_the_ring() {
    let ip_hash = moved_share(|s| Box::new(lockfree::NginxIpHash::weighted(s).expect("valid")));
    let plain = moved_share(|s| {
        let options = NginxHashOptions::default().consistent(false);
        Box::new(lockfree::NginxHash::with_options(s, options).expect("valid"))
    });
    let ring = moved_share(|s| Box::new(lockfree::NginxHash::weighted(s).expect("valid")));
    println!("moved on removal: ip_hash {ip_hash:.3}, hash {plain:.3}, hash consistent {ring:.3}");
    assert!((0.35..0.75).contains(&ip_hash), "ip_hash moved {ip_hash}");
    assert!((0.35..0.75).contains(&plain), "hash moved {plain}");
    assert_eq!(ring, 0.0, "hash consistent moved {ring}");
}

#[test]
fn down_moves_only_its_own_clients() {
    type Lb = Live<lockfree::NginxIpHash<&'static str>>;
    for consistent in [None, Some(true), Some(false)] {
        let backends = SERVERS.map(|(s, w)| Backend::new(s).weight(w));
        let lb: Box<dyn Balancer<&'static str>> = match consistent {
            None => Box::new(Lb::new(backends).expect("valid")),
            Some(consistent) => Box::new(
                Live::<lockfree::NginxHash<&str>>::builder()
                    .options(NginxHashOptions::default().consistent(consistent))
                    .build(backends)
                    .expect("valid"),
            ),
        };
        let before: Vec<&str> = many_clients()
            .map(|a| *lb.pick(&Context::from_addr(a)).expect("pick"))
            .collect();
        // Down through the live set's own handle: rebuild the same set.
        drop(lb);
        let backends = SERVERS.map(|(s, w)| Backend::new(s).weight(w));
        let after: Vec<&str> = match consistent {
            None => {
                let lb = Lb::new(backends).expect("valid");
                lb.set_state("10.0.0.2:80", AdminState::Down)
                    .expect("present");
                many_clients()
                    .map(|a| *lb.pick(&Context::from_addr(a)).expect("pick"))
                    .collect()
            }
            Some(consistent) => {
                let lb = Live::<lockfree::NginxHash<&str>>::builder()
                    .options(NginxHashOptions::default().consistent(consistent))
                    .build(backends)
                    .expect("valid");
                lb.set_state("10.0.0.2:80", AdminState::Down)
                    .expect("present");
                many_clients()
                    .map(|a| *lb.pick(&Context::from_addr(a)).expect("pick"))
                    .collect()
            }
        };
        for ((old, new), addr) in before.iter().zip(&after).zip(many_clients()) {
            assert_ne!(*new, "10.0.0.2:80");
            if *old != "10.0.0.2:80" {
                assert_eq!(old, new, "{consistent:?}: {addr} moved");
            }
        }
    }
}

#[test]
fn contexts_without_what_the_hash_reads_fail() {
    let ip = lockfree::NginxIpHash::new(["a", "b"]).expect("valid");
    assert_eq!(ip.pick(&Context::new()).err(), Some(PickError::MissingKey));
    assert_eq!(
        ip.pick(&Context::from_key(b"10.0.0.1")).err(),
        Some(PickError::MissingKey)
    );
    let hash = locked::NginxHash::new(["a", "b"]).expect("valid");
    assert_eq!(
        hash.pick(&Context::new()).err(),
        Some(PickError::MissingKey)
    );
}

#[test]
fn construction_rejects_what_nginx_could_not_tell_apart() {
    assert_eq!(
        lockfree::NginxHash::new(["10.0.0.1:80", "10.0.0.2:80", "10.0.0.1:80"]).err(),
        Some(BuildError::DuplicateBackend {
            first: 0,
            second: 2
        })
    );
    // The plain hash reads positions, not names.
    let options = NginxHashOptions::default().consistent(false);
    assert!(lockfree::NginxHash::with_options([("x", 1), ("x", 1)], options).is_ok());
    let max = NginxHashOptions::MAX_CONSISTENT_TOTAL_WEIGHT;
    assert_eq!(
        locked::NginxHash::weighted([("a", max), ("b", 1)]).err(),
        Some(BuildError::RingTooLarge {
            total_weight: max + 1,
            max
        })
    );
    assert_eq!(
        lockfree::NginxIpHash::<&str>::new([]).err(),
        Some(BuildError::NoBackends)
    );
}

/// A `SocketAddr` backend names itself as nginx's `server` line does.
#[test]
fn socket_addresses_name_themselves_as_server_lines() {
    use std::net::SocketAddr;
    let addrs: Vec<SocketAddr> = SERVERS
        .iter()
        .map(|(s, _)| s.parse().expect("an address"))
        .collect();
    let by_addr = lockfree::NginxHash::weighted(addrs.iter().copied().zip(SERVERS.map(|(_, w)| w)))
        .expect("valid");
    let by_text = lockfree::NginxHash::weighted(SERVERS).expect("valid");
    for i in 0..500 {
        let key = format!("key-{i}");
        let ctx = Context::from_key(key.as_bytes());
        assert_eq!(
            by_addr.pick(&ctx).expect("pick").index(),
            by_text.pick(&ctx).expect("pick").index()
        );
    }
}

/// With every backend unavailable but one, every key reaches it, past
/// nginx's 21 tries too (the deterministic fallback).
#[test]
fn the_fallback_finds_the_last_backend() {
    let lb =
        Live::<lockfree::NginxIpHash<&str>>::new(SERVERS.map(|(s, w)| Backend::new(s).weight(w)))
            .expect("valid");
    for (s, _) in &SERVERS[..3] {
        lb.set_state(s, AdminState::Down).expect("present");
    }
    for addr in many_clients().take(2_000) {
        assert_eq!(
            *lb.pick(&Context::from_addr(addr)).expect("pick"),
            "10.0.0.4:80"
        );
    }
    lb.set_state("10.0.0.4:80", AdminState::Down)
        .expect("present");
    assert_eq!(
        lb.pick(&Context::from_addr(IpAddr::from([1, 2, 3, 4])))
            .err(),
        Some(PickError::AllDown)
    );
}
