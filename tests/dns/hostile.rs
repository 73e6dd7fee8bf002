//! A hostile DNS server on loopback (UDP and TCP on one port): each query
//! answered as the test's closure says, `None` dropping it (a stall).

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use hickory_server::proto::op::{Message, OpCode, Query};
use hickory_server::proto::rr::rdata::{A, AAAA, CNAME, SRV};
use hickory_server::proto::rr::{Name, RData, Record, RecordType};
use loadbalance::discover::{DnsErrorKind, DnsName, HickoryResolver, Resolve};

use super::runtime;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};
use tokio::task::JoinHandle;

/// Answers and additionals; `None`: no reply at all.
type Reply = Option<(Vec<Record>, Vec<Record>)>;
type Answer = Arc<dyn Fn(&Query) -> Reply + Send + Sync>;

struct Hostile {
    addr: SocketAddr,
    tasks: [JoinHandle<()>; 2],
}

impl Drop for Hostile {
    fn drop(&mut self) {
        self.tasks.iter().for_each(JoinHandle::abort);
    }
}

fn respond(answer: &Answer, bytes: &[u8]) -> Option<Vec<u8>> {
    let request = Message::from_vec(bytes).ok()?;
    let query = request.queries.first()?.clone();
    let (answers, additionals) = answer(&query)?;
    let mut response = Message::response(request.metadata.id, OpCode::Query);
    response.metadata.recursion_desired = request.metadata.recursion_desired;
    response.metadata.recursion_available = true;
    response.add_query(query);
    response.add_answers(answers);
    response.add_additionals(additionals);
    response.to_vec().ok()
}

impl Hostile {
    async fn start(answer: impl Fn(&Query) -> Reply + Send + Sync + 'static) -> Self {
        let answer: Answer = Arc::new(answer);
        // A free UDP port whose TCP port is free too.
        let (udp, addr, tcp) = loop {
            let udp = UdpSocket::bind("127.0.0.1:0").await.expect("binds UDP");
            let addr = udp.local_addr().expect("an address");
            if let Ok(tcp) = TcpListener::bind(addr).await {
                break (udp, addr, tcp);
            }
        };
        let on_udp = Arc::clone(&answer);
        let udp_task = tokio::spawn(async move {
            let mut buf = vec![0; 65_535];
            while let Ok((len, from)) = udp.recv_from(&mut buf).await {
                let Some(mut bytes) = respond(&on_udp, &buf[..len]) else {
                    continue;
                };
                if bytes.len() > 1_232 {
                    // Too long for UDP: truncated, so the client asks over TCP.
                    let mut cut = Message::from_vec(&bytes).expect("ours");
                    cut.answers.clear();
                    cut.additionals.clear();
                    cut.metadata.truncation = true;
                    bytes = cut.to_vec().expect("encodes");
                }
                let _ = udp.send_to(&bytes, from).await;
            }
        });
        let tcp_task = tokio::spawn(async move {
            while let Ok((mut stream, _)) = tcp.accept().await {
                let answer = Arc::clone(&answer);
                tokio::spawn(async move {
                    loop {
                        let Ok(len) = stream.read_u16().await else {
                            return;
                        };
                        let mut buf = vec![0; usize::from(len)];
                        if stream.read_exact(&mut buf).await.is_err() {
                            return;
                        }
                        let Some(bytes) = respond(&answer, &buf) else {
                            continue;
                        };
                        let _ = stream.write_u16(bytes.len() as u16).await;
                        let _ = stream.write_all(&bytes).await;
                    }
                });
            }
        });
        Self {
            addr,
            tasks: [udp_task, tcp_task],
        }
    }

    fn resolver(&self, timeout: Duration) -> HickoryResolver {
        HickoryResolver::with_nameservers(&[self.addr], timeout).expect("a resolver")
    }
}

fn name(text: &str) -> Name {
    Name::from_str(text).expect("a name")
}

fn a(owner: &str, ip: Ipv4Addr, ttl: u32) -> Record {
    Record::from_rdata(name(owner), ttl, RData::A(A(ip)))
}

fn srv(owner: &str, priority: u16, port: u16, target: &str) -> Record {
    Record::from_rdata(
        name(owner),
        30,
        RData::SRV(SRV::new(priority, 1, port, name(target))),
    )
}

/// RFC 2782: the lowest priority is tried first, whatever the answer's
/// order. 64 records of priority 20, then one of priority 10.
#[test]
fn the_lowest_priority_survives_a_long_srv_answer() {
    runtime().block_on(async {
        let server = Hostile::start(|query: &Query| {
            let owner = query.name().to_string();
            match query.query_type() {
                RecordType::SRV => {
                    let mut records: Vec<Record> = (0..64)
                        .map(|i| srv(&owner, 20, 1_000 + i, "t.test."))
                        .collect();
                    records.push(srv(&owner, 10, 2_000, "t.test."));
                    Some((records, vec![a("t.test.", Ipv4Addr::LOCALHOST, 30)]))
                }
                _ => Some((Vec::new(), Vec::new())),
            }
        })
        .await;
        let service: DnsName = "_http._tcp.web.test".parse().expect("a name");
        let answer = server
            .resolver(Duration::from_secs(2))
            .resolve(&service)
            .await
            .expect("resolves");
        let primaries: Vec<u16> = answer
            .endpoints()
            .iter()
            .filter(|e| !e.backup)
            .map(|e| e.addr.port())
            .collect();
        assert_eq!(primaries, [2_000], "priority 10 is the only primary");
    });
}

/// A server that answers SRV at once and never answers for the targets.
#[test]
fn a_service_lookup_is_bounded_near_the_timeout() {
    runtime().block_on(async {
        let server = Hostile::start(|query: &Query| match query.query_type() {
            RecordType::SRV => {
                let owner = query.name().to_string();
                let records = (0..64)
                    .map(|i| srv(&owner, 10, 80, &format!("t{i}.test.")))
                    .collect();
                Some((records, Vec::new()))
            }
            _ => None,
        })
        .await;
        let timeout = Duration::from_millis(100);
        let service: DnsName = "_http._tcp.web.test".parse().expect("a name");
        let start = Instant::now();
        let answer = server.resolver(timeout).resolve(&service).await;
        let took = start.elapsed();
        assert!(answer.is_err());
        assert!(
            took < 10 * timeout,
            "one lookup took {took:?} with a {timeout:?} timeout"
        );
    });
}

/// The watch asks again within its maximum TTL, and must get the server's
/// answer, also behind a CNAME (here to a name the server answers apart).
#[test]
fn a_cname_target_is_asked_again_not_cached() {
    runtime().block_on(async {
        let asked = Arc::new(AtomicU32::new(0));
        let count = Arc::clone(&asked);
        let server = Hostile::start(move |query: &Query| {
            let owner = query.name().to_string();
            match (owner.as_str(), query.query_type()) {
                ("web.test.", _) => {
                    let cname = Record::from_rdata(
                        name(&owner),
                        1,
                        RData::CNAME(CNAME(name("real.test."))),
                    );
                    Some((vec![cname], Vec::new()))
                }
                ("real.test.", RecordType::A) => {
                    let n = count.fetch_add(1, Ordering::Relaxed) as u8;
                    Some((
                        vec![a(&owner, Ipv4Addr::new(127, 0, 0, 1 + n), 3_600)],
                        Vec::new(),
                    ))
                }
                _ => Some((Vec::new(), Vec::new())),
            }
        })
        .await;
        let resolver = server.resolver(Duration::from_secs(2));
        let web: DnsName = "web.test:80".parse().expect("a name");
        let first = resolver.resolve(&web).await.expect("resolves");
        let second = resolver.resolve(&web).await.expect("resolves");
        assert_eq!(
            asked.load(Ordering::Relaxed),
            2,
            "real.test. asked once: cached for its 3,600 s"
        );
        assert_ne!(first.endpoints(), second.endpoints());
    });
}

/// AAAA answered once, then silent: the answer without it is a partial
/// failure, not a good answer that removes the IPv6 backends.
#[test]
fn a_lookup_that_half_timed_out_is_not_a_good_answer() {
    runtime().block_on(async {
        let aaaa_asked = Arc::new(AtomicU32::new(0));
        let count = Arc::clone(&aaaa_asked);
        let server = Hostile::start(move |query: &Query| {
            let owner = query.name().to_string();
            match query.query_type() {
                RecordType::A => Some((vec![a(&owner, Ipv4Addr::LOCALHOST, 1)], Vec::new())),
                RecordType::AAAA if count.fetch_add(1, Ordering::Relaxed) == 0 => {
                    let v6 =
                        Record::from_rdata(name(&owner), 1, RData::AAAA(AAAA(Ipv6Addr::LOCALHOST)));
                    Some((vec![v6], Vec::new()))
                }
                _ => None,
            }
        })
        .await;
        let resolver = server.resolver(Duration::from_millis(200));
        let web: DnsName = "web.test:80".parse().expect("a name");
        let first = resolver.resolve(&web).await.expect("resolves");
        assert_eq!(first.endpoints().len(), 2);
        // A failure, so the watch keeps the last good answer; never an
        // answer without the IPv6 backend.
        let second = resolver.resolve(&web).await;
        assert_eq!(
            second.map_err(|e| e.kind),
            Err(DnsErrorKind::Timeout),
            "the IPv6 backend dropped on a timeout"
        );
    });
}
