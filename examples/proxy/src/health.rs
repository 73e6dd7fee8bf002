//! Active health checks: an HTTP GET to a configured path on every
//! backend of a pool at an interval. `fall` failures in a row mark a
//! backend down, `rise` successes in a row mark it up again; passive
//! health (failures reported by requests) works beside it, in the pool.
//! Streaks and unchanged checks carry over reloads.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::header::{CONTENT_TYPE, HOST, HeaderMap, HeaderValue, TE};
use hyper::{Method, StatusCode};
use loadbalance::AdminState;
use parking_lot::Mutex;
use tokio::task::{JoinHandle, JoinSet};

use super::Shared;
use super::body::UpstreamBody;
use super::config::{CheckConfig, Config};
use super::links::Outgoing;

/// Streaks of one backend: successes and failures in a row.
#[derive(Clone, Copy, Debug, Default)]
struct Streak {
    ok: u32,
    failed: u32,
}

/// Every checked backend's streaks, by pool and server: kept across
/// reloads (by identity, as the pool's passive health is), so reloads more
/// often than `fall × interval_ms` cannot keep a dead backend up.
#[derive(Default)]
pub(crate) struct Streaks(Mutex<HashMap<(String, String), Streak>>);

impl Streaks {
    /// Adds one probe's outcome; the streak after it.
    fn record(&self, pool: &str, server: &str, ok: bool) -> Streak {
        let mut streaks = self.0.lock();
        let streak = streaks
            .entry((pool.to_owned(), server.to_owned()))
            .or_default();
        if ok {
            streak.ok = streak.ok.saturating_add(1);
            streak.failed = 0;
        } else {
            streak.failed = streak.failed.saturating_add(1);
            streak.ok = 0;
        }
        *streak
    }

    /// Forgets the backends `config` no longer checks.
    fn prune(&self, config: &Config) {
        self.0.lock().retain(|(pool, server), _| {
            config.checks.contains_key(pool)
                && config
                    .pools
                    .get(pool)
                    .is_some_and(|p| p.backends.iter().any(|b| &b.server == server))
        });
    }
}

/// The running checks by pool, with the settings each runs with.
pub(crate) type Running = HashMap<String, (CheckConfig, JoinHandle<()>)>;

/// Brings the running checks in line with the running configuration:
/// a check whose settings are unchanged keeps running (its interval's
/// phase kept), a changed one restarts, a removed one stops; streaks are
/// kept for every backend still checked. `running` is `None` once
/// shutdown began.
pub(crate) fn sync(shared: &Arc<Shared>, running: &mut Option<Running>) {
    let Some(running) = running.as_mut() else {
        return;
    };
    let state = shared.state.load();
    let checks = &state.config.checks;
    running.retain(|name, (check, task)| {
        let keep = checks.get(name) == Some(check) && !task.is_finished();
        if !keep {
            task.abort();
        }
        keep
    });
    for (name, check) in checks {
        if !running.contains_key(name) {
            let task = tokio::spawn(run(Arc::clone(shared), name.clone(), check.clone()));
            running.insert(name.clone(), (check.clone(), task));
        }
    }
    shared.streaks.prune(&state.config);
}

/// Checks pool `name` with `check` until aborted (on reload or shutdown).
async fn run(shared: Arc<Shared>, name: String, check: CheckConfig) {
    let mut ticker = tokio::time::interval(Duration::from_millis(check.interval_ms));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let servers: Vec<String> = {
            let state = shared.state.load();
            match state.config.pools.get(&name) {
                Some(pool) => pool.backends.iter().map(|b| b.server.clone()).collect(),
                None => return,
            }
        };
        let mut probes = JoinSet::new();
        let what = Arc::new(Probe {
            path: check.path.clone(),
            grpc_service: check.grpc_service.clone(),
        });
        for server in servers {
            let shared = Arc::clone(&shared);
            let what = Arc::clone(&what);
            let timeout = Duration::from_millis(check.timeout_ms);
            let name = name.clone();
            probes.spawn(async move {
                let ok = probe(&shared, &name, &server, &what, timeout).await;
                (server, ok)
            });
        }
        while let Some(Ok((server, ok))) = probes.join_next().await {
            let streak = shared.streaks.record(&name, &server, ok);
            let held = shared.held.is_down(&name, &server);
            if ok {
                if held && streak.ok >= check.rise {
                    mark(&shared, &name, &server, false).await;
                }
            } else {
                shared.counters.checks_failed.fetch_add(1, Relaxed);
                if !held && streak.failed >= check.fall {
                    mark(&shared, &name, &server, true).await;
                }
            }
        }
    }
}

/// What a probe asks.
struct Probe {
    path: String,
    grpc_service: Option<String>,
}

/// gRPC health checking's method (`grpc.health.v1.Health/Check`).
const GRPC_CHECK: &str = "/grpc.health.v1.Health/Check";

/// A `HealthCheckRequest { service }` in gRPC's framing: a zero
/// compression flag, the length, then the message (field 1, a string).
fn grpc_check_request(service: &str) -> Bytes {
    let mut message = Vec::with_capacity(service.len() + 3);
    if !service.is_empty() {
        message.push(0x0a);
        let mut length = service.len();
        while length >= 0x80 {
            message.push((length as u8 & 0x7f) | 0x80);
            length >>= 7;
        }
        message.push(length as u8);
        message.extend_from_slice(service.as_bytes());
    }
    let mut framed = vec![0];
    framed.extend_from_slice(
        &u32::try_from(message.len())
            .unwrap_or(u32::MAX)
            .to_be_bytes(),
    );
    framed.extend_from_slice(&message);
    Bytes::from(framed)
}

/// Whether a framed `HealthCheckResponse` says SERVING (field 1 = 1).
fn grpc_serving(framed: &[u8]) -> bool {
    // The flag, the length, then exactly the message `08 01`.
    matches!(framed, [0, 0, 0, 0, 2, 0x08, 0x01])
}

/// One probe on pool `pool`'s own protocol (`links.rs`): a GET to `path`,
/// a 2xx or 3xx within the timeout a success; or, with `grpc_service`, a
/// gRPC health check answered SERVING with status 0.
async fn probe(
    shared: &Shared,
    pool: &str,
    server: &str,
    check: &Probe,
    timeout: Duration,
) -> bool {
    let state = shared.state.load_full();
    let Some(upstream) = state.upstream(pool) else {
        return false;
    };
    let link = upstream.link(&shared.client);
    let path = match &check.grpc_service {
        Some(_) => GRPC_CHECK,
        None => check.path.as_str(),
    };
    // The backend's address names it, as hyper-util's clients would.
    let Ok(host) = HeaderValue::from_str(server) else {
        return false;
    };
    let mut headers = HeaderMap::new();
    headers.insert(HOST, host);
    let Some(service) = &check.grpc_service else {
        let request = Outgoing {
            method: &Method::GET,
            target: path,
            headers: &headers,
            body: UpstreamBody::Empty,
        };
        return match tokio::time::timeout(timeout, link.request(server, request)).await {
            Ok(Ok(response)) => {
                let status = response.status();
                status.is_success() || status.is_redirection()
            }
            _ => false,
        };
    };
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    headers.insert(TE, HeaderValue::from_static("trailers"));
    let request = Outgoing {
        method: &Method::POST,
        target: path,
        headers: &headers,
        body: UpstreamBody::Whole(Some(grpc_check_request(service))),
    };
    let answered = tokio::time::timeout(timeout, async {
        let response = link.request(server, request).await.ok()?;
        if response.status() != StatusCode::OK || grpc_failed(response.headers()) {
            return None;
        }
        // A health answer is a few bytes; a longer one is not SERVING.
        let body = Limited::new(response.into_body(), 64)
            .collect()
            .await
            .ok()?;
        let ok = body.trailers().is_some_and(|t| !grpc_failed(t));
        Some(ok && grpc_serving(&body.to_bytes()))
    });
    matches!(answered.await, Ok(Some(true)))
}

/// Whether gRPC headers or trailers carry a status other than 0.
fn grpc_failed(headers: &HeaderMap) -> bool {
    headers
        .get("grpc-status")
        .is_some_and(|status| status.as_bytes() != b"0")
}

/// Marks `server` of pool `name` down or up, and remembers it for reloads.
/// Serialised with reloads, so a reload never undoes a mark.
async fn mark(shared: &Shared, name: &str, server: &str, down: bool) {
    let _admin = shared.admin.lock().await;
    shared.held.set(name, server, down);
    let state = shared.state.load();
    let configured_up = state
        .config
        .pools
        .get(name)
        .and_then(|pool| pool.backends.iter().find(|b| b.server == server))
        .is_some_and(|b| b.state == "up");
    if let (Some(upstream), true) = (state.upstream(name), configured_up) {
        let state = if down {
            AdminState::Down
        } else {
            AdminState::Up
        };
        if upstream.pool.set_state(server, state).is_ok() {
            let counter = if down {
                &shared.counters.marked_down
            } else {
                &shared.counters.marked_up
            };
            counter.fetch_add(1, Relaxed);
            tracing::warn!(
                "health: {name} {server} {} by active checks",
                if down { "down" } else { "up" }
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_health_messages() {
        assert_eq!(&grpc_check_request("")[..], [0, 0, 0, 0, 0]);
        assert_eq!(
            &grpc_check_request("echo")[..],
            [0, 0, 0, 0, 6, 0x0a, 4, b'e', b'c', b'h', b'o']
        );
        let long = "s".repeat(200);
        let framed = grpc_check_request(&long);
        assert_eq!(&framed[..8], [0, 0, 0, 0, 203, 0x0a, 0xc8, 0x01]);
        assert!(grpc_serving(&[0, 0, 0, 0, 2, 0x08, 0x01]));
        for other in [&[0u8, 0, 0, 0, 2, 0x08, 0x02][..], &[0, 0, 0, 0, 0], &[]] {
            assert!(!grpc_serving(other));
        }
    }
}
