//! Active health checks: an HTTP GET to a configured path on every
//! backend of a pool at an interval. `fall` failures in a row mark a
//! backend down, `rise` successes in a row mark it up again; passive
//! health (failures reported by requests) works beside it, in the pool.
//! Streaks and unchanged checks carry over reloads.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use hyper::{Request, Uri};
use loadbalance::AdminState;
use parking_lot::Mutex;
use tokio::task::{JoinHandle, JoinSet};

use super::Shared;
use super::body::UpstreamBody;
use super::config::{CheckConfig, Config};

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
        for server in servers {
            let shared = Arc::clone(&shared);
            let path = check.path.clone();
            let timeout = Duration::from_millis(check.timeout_ms);
            let name = name.clone();
            probes.spawn(async move {
                let ok = probe(&shared, &name, &server, &path, timeout).await;
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

/// One GET on pool `pool`'s own protocol (`links.rs`): a 2xx or 3xx
/// within the timeout is a success.
async fn probe(shared: &Shared, pool: &str, server: &str, path: &str, timeout: Duration) -> bool {
    let state = shared.state.load_full();
    let Some(upstream) = state.upstream(pool) else {
        return false;
    };
    let link = upstream.link(&shared.client);
    let Ok(uri) = Uri::builder()
        .scheme(link.scheme())
        .authority(server)
        .path_and_query(path)
        .build()
    else {
        return false;
    };
    let mut request = Request::new(UpstreamBody::Empty);
    *request.uri_mut() = uri;
    match tokio::time::timeout(timeout, link.request(request)).await {
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
            tracing::warn!(
                "health: {name} {server} {} by active checks",
                if down { "down" } else { "up" }
            );
        }
    }
}
