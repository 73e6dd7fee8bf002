//! Concurrent checks on one Redis server go together: checks queue, and
//! while four batches are in flight, the checks that arrive wait for one
//! to come back and then go as one script run over all their keys (up to
//! 64). Redis runs one script, and the client sends one command, instead of
//! one per check; with one check at a time a batch is that check, sent at
//! once. The batches in flight pipeline on the multiplexed connection.
//!
//! A queued check whose caller has gone (its deadline passed, its future
//! dropped) is never sent, so it spends nothing; a batch that cannot be
//! sent within the deadline is abandoned, so nothing answered by the
//! failure policy is replayed once Redis is back, and the batching task
//! ends when the limiter is dropped.
//!
//! Not for a cluster, whose keys live on different nodes: there each check
//! is its own script run.

use crate::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use redis::Script;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::time::Instant;

use super::connection::Connection;

/// The most keys in one script run: about 2 µs of Redis's time each, so a
/// batch holds up other clients for at most ~0.1 ms.
const MOST: usize = 64;

/// Queued checks waiting for their batch.
const QUEUE: usize = 4096;

/// Batches in flight at once: enough to keep the connection busy, few
/// enough that checks queue up into large batches under load (1, 2, 8 and
/// 16 measured slower on the bench).
const IN_FLIGHT: usize = 4;

/// One check, waiting for its batch.
struct Request {
    key: String,
    want: u64,
    partial: bool,
    /// When its caller stops waiting.
    deadline: Instant,
    reply: oneshot::Sender<Option<(i64, i64)>>,
}

impl Request {
    /// Its caller still waits for it.
    fn wanted(&self, now: Instant) -> bool {
        !self.reply.is_closed() && self.deadline > now
    }
}

/// The sending side of the batching task (which ends when this drops).
pub(super) struct Batcher {
    queue: mpsc::Sender<Request>,
    /// Script runs sent (Relaxed: statistics).
    runs: Arc<AtomicU64>,
    deadline: Duration,
}

impl Batcher {
    /// Starts the batching task on the current tokio runtime.
    pub(super) fn start(
        connection: Connection,
        script: Script,
        quota: [u64; 2],
        deadline: Duration,
    ) -> Self {
        let (queue, requests) = mpsc::channel(QUEUE);
        let runs = Arc::new(AtomicU64::new(0));
        tokio::spawn(batches(
            requests,
            connection,
            script,
            quota,
            Arc::clone(&runs),
        ));
        Self {
            queue,
            runs,
            deadline,
        }
    }

    /// Script runs sent so far.
    pub(super) fn runs(&self) -> u64 {
        // Relaxed: statistics.
        self.runs.load(Ordering::Relaxed)
    }

    /// The script's reply for `key`, or `None` when the round trip failed.
    /// Cancellation-safe: a dropped check is not sent, or its reply is
    /// discarded.
    pub(super) async fn check(&self, key: String, want: u64, partial: bool) -> Option<(i64, i64)> {
        let (reply, answer) = oneshot::channel();
        let request = Request {
            key,
            want,
            partial,
            deadline: Instant::now() + self.deadline,
            reply,
        };
        self.queue.send(request).await.ok()?;
        answer.await.ok().flatten()
    }
}

async fn batches(
    mut requests: mpsc::Receiver<Request>,
    connection: Connection,
    script: Script,
    quota: [u64; 2],
    runs: Arc<AtomicU64>,
) {
    let in_flight = Arc::new(Semaphore::new(IN_FLIGHT));
    // Ends when the limiter (every sender) is gone and the queue is empty.
    while let Some(first) = requests.recv().await {
        // Never closed: the semaphore lives here.
        let Ok(permit) = Arc::clone(&in_flight).acquire_owned().await else {
            return;
        };
        let now = Instant::now();
        let mut batch: Vec<Request> = Vec::with_capacity(MOST);
        let mut next = Some(first);
        while let Some(request) = next.take() {
            if request.wanted(now) {
                batch.push(request);
            }
            if batch.len() < MOST {
                next = requests.try_recv().ok();
            }
        }
        let Some(deadline) = batch.iter().map(|request| request.deadline).max() else {
            continue;
        };
        // Relaxed: statistics.
        runs.fetch_add(1, Ordering::Relaxed);
        let (connection, script) = (connection.clone(), script.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let keys: Vec<&str> = batch.iter().map(|request| request.key.as_str()).collect();
            let mut args = quota.to_vec();
            for request in &batch {
                args.extend([request.want, u64::from(request.partial)]);
            }
            // Past every caller's deadline nobody waits: abandon the batch
            // rather than send it to a server that comes back later.
            let run = connection.run(&script, &keys, &args);
            let replies = tokio::time::timeout_at(deadline, run)
                .await
                .ok()
                .and_then(Result::ok);
            for (i, request) in batch.into_iter().enumerate() {
                let reply = replies
                    .as_ref()
                    .and_then(|flat| Some((*flat.get(2 * i)?, *flat.get(2 * i + 1)?)));
                // The check may have gone (its deadline passed): nothing to do.
                let _ = request.reply.send(reply);
            }
        });
    }
}
