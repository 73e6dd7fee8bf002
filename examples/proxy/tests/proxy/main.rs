//! The proxy over loopback: end to end against real backends, and two
//! proxies sharing a client's rate through a real Redis (feature `redis`).

#[path = "../support/backend.rs"]
#[allow(dead_code)]
mod backend;
#[path = "../../../../tests/dns_support/mod.rs"]
mod dns_support;
#[cfg(feature = "redis")]
#[path = "../../../../tests/redis_support/mod.rs"]
mod redis_support;

mod cache;
mod compression;
mod end_to_end;
mod grpc;
mod harness;
mod heads;
mod hostile;
mod http2;
mod logs;
mod resolve;
#[cfg(feature = "redis")]
mod shared_limit;
mod tail;
mod tls;
mod websocket;
