//! A DNS server on loopback for the tests: hickory-server's catalog over
//! an in-memory zone `test.`, whose records a test sets while clients
//! ask, and which it can stop (the port then refuses) or silence (the
//! port takes queries and never answers) and start again on the same
//! port.

#![allow(dead_code, unreachable_pub)]

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;

use hickory_server::Server;
use hickory_server::net::runtime::TokioRuntimeProvider;
use hickory_server::proto::rr::rdata::{A, AAAA, SOA, SRV};
use hickory_server::proto::rr::{Name, RData, Record, RecordSet, RecordType, RrKey};
use hickory_server::store::in_memory::InMemoryZoneHandler;
use hickory_server::zone_handler::{AxfrPolicy, Catalog, ZoneType};
use tokio::net::UdpSocket;
use tokio::task::JoinHandle;

/// The zone every test name is in.
pub const ZONE: &str = "test.";

type Zone = InMemoryZoneHandler<TokioRuntimeProvider>;

/// A running server and its zone.
pub struct DnsServer {
    pub addr: SocketAddr,
    zone: Arc<Zone>,
    running: Option<JoinHandle<()>>,
}

impl DnsServer {
    /// Serves the zone `test.` (empty but for its SOA) on a free UDP port.
    pub async fn start() -> Self {
        let origin = Name::from_str(ZONE).expect("the zone's name");
        let mut zone = Zone::empty(origin.clone(), ZoneType::Primary, AxfrPolicy::Deny);
        let soa = SOA::new(
            Name::from_str("ns.test.").expect("a name"),
            Name::from_str("admin.test.").expect("a name"),
            1,
            60,
            60,
            60,
            0,
        );
        zone.upsert_mut(Record::from_rdata(origin, 0, RData::SOA(soa)), 1);
        let socket = UdpSocket::bind("127.0.0.1:0").await.expect("binds UDP");
        let addr = socket.local_addr().expect("an address");
        let mut server = Self {
            addr,
            zone: Arc::new(zone),
            running: None,
        };
        server.serve(socket);
        server
    }

    fn serve(&mut self, socket: UdpSocket) {
        let mut catalog = Catalog::new();
        let origin = Name::from_str(ZONE).expect("the zone's name");
        catalog.upsert(origin.into(), vec![Arc::clone(&self.zone) as _]);
        let mut server = Server::new(catalog);
        server.register_socket(socket);
        self.running = Some(tokio::spawn(async move {
            let _ = server.block_until_done().await;
        }));
    }

    /// Stops answering: the port is closed, so queries are refused.
    pub async fn stop(&mut self) {
        if let Some(running) = self.running.take() {
            running.abort();
            let _ = running.await;
        }
    }

    /// Stops as [`stop`](Self::stop), then holds the port and never
    /// answers: each query times out. Returns the socket holding it.
    pub async fn silence(&mut self) -> UdpSocket {
        self.stop().await;
        self.rebind().await
    }

    /// Answers again on the same port (after `stop`, or with the socket
    /// `silence` returned dropped).
    pub async fn restart(&mut self) {
        self.stop().await;
        let socket = self.rebind().await;
        self.serve(socket);
    }

    /// The server's port again: the stopped server's socket closes in a
    /// task of its own a moment after the abort, so the bind is retried
    /// for up to 2 s.
    async fn rebind(&self) -> UdpSocket {
        for _ in 0..200 {
            if let Ok(socket) = UdpSocket::bind(self.addr).await {
                return socket;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        UdpSocket::bind(self.addr)
            .await
            .expect("binds the same port")
    }

    /// Makes `name`'s A records exactly `addresses`, each with `ttl`
    /// seconds (none: the name has no A record).
    pub async fn set_a(&self, name: &str, addresses: &[Ipv4Addr], ttl: u32) {
        let rdata = addresses.iter().map(|ip| RData::A(A(*ip))).collect();
        self.set(name, RecordType::A, rdata, ttl).await;
    }

    /// Makes `name`'s AAAA records exactly `addresses`.
    pub async fn set_aaaa(&self, name: &str, addresses: &[Ipv6Addr], ttl: u32) {
        let rdata = addresses.iter().map(|ip| RData::AAAA(AAAA(*ip))).collect();
        self.set(name, RecordType::AAAA, rdata, ttl).await;
    }

    /// Makes `name`'s SRV records exactly `records`: (priority, weight,
    /// port, target).
    pub async fn set_srv(&self, name: &str, records: &[(u16, u16, u16, &str)], ttl: u32) {
        let rdata = records
            .iter()
            .map(|&(priority, weight, port, target)| {
                let target = Name::from_str(target).expect("a target");
                RData::SRV(SRV::new(priority, weight, port, target))
            })
            .collect();
        self.set(name, RecordType::SRV, rdata, ttl).await;
    }

    async fn set(&self, name: &str, record_type: RecordType, rdata: Vec<RData>, ttl: u32) {
        let name = Name::from_str(name).expect("a name");
        let key = RrKey::new(name.clone().into(), record_type);
        let mut records = self.zone.records_mut().await;
        if rdata.is_empty() {
            records.remove(&key);
            return;
        }
        let mut set = RecordSet::with_ttl(name, record_type, ttl);
        for data in rdata {
            set.add_rdata(data);
        }
        records.insert(key, Arc::new(set));
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        if let Some(running) = self.running.take() {
            running.abort();
        }
    }
}
