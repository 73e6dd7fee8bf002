//! Active health checks: an HTTP GET to a configured path on every
//! backend of a pool at an interval. `fall` failures in a row mark a
//! backend down, `rise` successes in a row mark it up again; passive
//! health (failures reported by requests) works beside it, in the pool.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use http_body_util::{Either, Empty};
use hyper::{Request, Uri};
use loadbalance::AdminState;
use tokio::task::JoinSet;

use super::Shared;
use super::config::CheckConfig;

/// Streaks of one backend: successes and failures in a row.
#[derive(Default)]
struct Streak {
    ok: u32,
    failed: u32,
}

/// Checks pool `name` with `check` until aborted (on reload or shutdown).
pub(crate) async fn run(shared: Arc<Shared>, name: String, check: CheckConfig) {
    let mut streaks: HashMap<String, Streak> = HashMap::new();
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
        for server in servers {
            let shared = Arc::clone(&shared);
            let path = check.path.clone();
            let timeout = Duration::from_millis(check.timeout_ms);
            probes.spawn(async move {
                let ok = probe(&shared, &server, &path, timeout).await;
                (server, ok)
            });
        }
        while let Some(Ok((server, ok))) = probes.join_next().await {
            let streak = streaks.entry(server.clone()).or_default();
            let held = shared.held.is_down(&name, &server);
            if ok {
                streak.ok += 1;
                streak.failed = 0;
                if held && streak.ok >= check.rise {
                    mark(&shared, &name, &server, false).await;
                }
            } else {
                shared.counters.checks_failed.fetch_add(1, Relaxed);
                streak.failed += 1;
                streak.ok = 0;
                if !held && streak.failed >= check.fall {
                    mark(&shared, &name, &server, true).await;
                }
            }
        }
    }
}

/// One GET: a 2xx or 3xx within the timeout is a success.
async fn probe(shared: &Shared, server: &str, path: &str, timeout: Duration) -> bool {
    let Ok(uri) = Uri::builder()
        .scheme("http")
        .authority(server)
        .path_and_query(path)
        .build()
    else {
        return false;
    };
    let mut request = Request::new(Either::Right(Empty::new()));
    *request.uri_mut() = uri;
    match tokio::time::timeout(timeout, shared.client.request(request)).await {
        Ok(Ok(response)) => {
            let status = response.status();
            status.is_success() || status.is_redirection()
        }
        _ => false,
    }
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
            eprintln!(
                "health: {name} {server} {} by active checks",
                if down { "down" } else { "up" }
            );
        }
    }
}
