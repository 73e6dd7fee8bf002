//! One connection to Redis or to a Redis Cluster, shared by every check:
//! redis-rs multiplexes concurrent commands on one socket per node, so
//! checks from many tasks pipeline, and reconnects in the background after
//! a connection error.

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{Client, RedisResult, Script};

/// A server's connection manager, or a cluster's connection.
#[derive(Clone)]
pub(super) enum Connection {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl Connection {
    /// A single server's connection, made on the first check (so a server
    /// down at start-up is answered by the failure policy, not an error).
    /// Each command and each connection attempt time out after `timeout`.
    /// After a connection error, one reconnection is tried in the
    /// background; if it fails, the next command starts another. So while
    /// the server is down each check fails at once (no queue of commands
    /// waiting on a reconnection), and nothing waits once the limiter is
    /// dropped.
    pub(super) fn single(url: &str, timeout: std::time::Duration) -> RedisResult<Self> {
        let client = Client::open(url)?;
        let config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(timeout))
            .set_connection_timeout(Some(timeout))
            .set_number_of_retries(1)
            .set_max_delay(timeout);
        Ok(Self::Single(ConnectionManager::new_lazy_with_config(
            client, config,
        )?))
    }

    /// A cluster's connection, from any of its nodes: it learns the slot map
    /// at once, and follows `MOVED` and reconnects on its own afterwards.
    pub(super) async fn cluster(
        urls: &[String],
        timeout: std::time::Duration,
    ) -> RedisResult<Self> {
        let client = ClusterClient::builder(urls.iter().map(String::as_str))
            .connection_timeout(timeout)
            .response_timeout(timeout)
            .retries(1)
            .build()?;
        Ok(Self::Cluster(client.get_async_connection().await?))
    }

    /// Runs `script` on `keys` with `args`, loading it first if the
    /// server does not have it (EVALSHA, then SCRIPT LOAD on NOSCRIPT).
    pub(super) async fn run<A: redis::ToRedisArgs>(
        &self,
        script: &Script,
        keys: &[&str],
        args: &[A],
    ) -> RedisResult<Vec<i64>> {
        self.run_for(script, keys, args).await
    }

    /// As [`run`](Self::run), the reply read as `T`.
    pub(super) async fn run_for<A: redis::ToRedisArgs, T: redis::FromRedisValue>(
        &self,
        script: &Script,
        keys: &[&str],
        args: &[A],
    ) -> RedisResult<T> {
        let mut invocation = script.prepare_invoke();
        for key in keys {
            invocation.key(*key);
        }
        for arg in args {
            invocation.arg(arg);
        }
        match self {
            Self::Single(connection) => invocation.invoke_async(&mut connection.clone()).await,
            Self::Cluster(connection) => invocation.invoke_async(&mut connection.clone()).await,
        }
    }
}
