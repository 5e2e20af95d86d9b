//! The tier's connection: parsing the URL (single node or Cluster),
//! connecting, and the background supervisor that reconnects and probes.

use std::sync::Arc;
use std::time::Duration;

use redis::cluster::ClusterClientBuilder;
use redis::{AsyncConnectionConfig, Cmd, FromRedisValue, RedisResult, ScriptInvocation};

use super::*;

impl Conn {
    pub(crate) async fn query<T: FromRedisValue>(&mut self, cmd: &Cmd) -> RedisResult<T> {
        match self {
            Conn::Single(conn) => cmd.query_async(conn).await,
            Conn::Cluster(conn) => cmd.query_async(conn).await,
        }
    }

    /// Runs a script by its digest, loading it first when Redis does not
    /// know it yet.
    pub(crate) async fn invoke<T: FromRedisValue>(
        &mut self,
        invocation: &ScriptInvocation<'_>,
    ) -> RedisResult<T> {
        match self {
            Conn::Single(conn) => invocation.invoke_async(conn).await,
            Conn::Cluster(conn) => invocation.invoke_async(conn).await,
        }
    }
}

/// Writes are off the request path and may carry large answers, so a batch
/// gets more time than a lookup.
pub(crate) fn write_timeout(timeout: Duration) -> Duration {
    timeout.saturating_mul(4)
}

/// Connecting happens in the background; a cold TCP (and AUTH) handshake to a
/// remote Redis may take longer than a lookup is allowed to.
pub(crate) fn connect_timeout(timeout: Duration) -> Duration {
    timeout.max(Duration::from_secs(1))
}

impl Target {
    pub(crate) fn parse(url: &str, response_timeout: Duration) -> Result<Target, RedisTierError> {
        let url = url.trim();
        let invalid = |why: String| RedisTierError::InvalidUrl(why);
        let nodes: Vec<String> = if let Some(rest) = url.strip_prefix("redis+cluster://") {
            let rest = rest.trim_end_matches('/');
            let mut hosts = rest.split(',').map(str::trim);
            let first = hosts.next().unwrap_or_default();
            // Credentials written once, on the first node, apply to all.
            let (auth, first) = match first.rsplit_once('@') {
                Some((auth, host)) => (format!("{auth}@"), host),
                None => (String::new(), first),
            };
            std::iter::once(first)
                .chain(hosts)
                .map(|host| format!("redis://{auth}{host}"))
                .collect()
        } else if url.contains(',') {
            url.split(',').map(|node| node.trim().to_owned()).collect()
        } else {
            let client = redis::Client::open(url).map_err(|e| invalid(e.to_string()))?;
            return Ok(Target::Single(client));
        };
        if nodes
            .iter()
            .any(|node| node.is_empty() || node.ends_with("://") || node.ends_with('@'))
        {
            return Err(invalid(format!("empty cluster node in {url:?}")));
        }
        let client = ClusterClientBuilder::new(nodes)
            .connection_timeout(connect_timeout(response_timeout))
            .response_timeout(response_timeout)
            .build()
            .map_err(|e| invalid(e.to_string()))?;
        Ok(Target::Cluster(client))
    }

    pub(crate) async fn connect(&self, timeout: Duration) -> Result<Conn, RedisTierError> {
        let connect_timeout = connect_timeout(timeout);
        let connecting = async {
            match self {
                Target::Single(client) => {
                    let config = AsyncConnectionConfig::new()
                        .set_connection_timeout(Some(connect_timeout))
                        .set_response_timeout(Some(write_timeout(timeout)));
                    client
                        .get_multiplexed_async_connection_with_config(&config)
                        .await
                        .map(Conn::Single)
                }
                Target::Cluster(client) => client.get_async_connection().await.map(Conn::Cluster),
            }
        };
        match tokio::time::timeout(connect_timeout, connecting).await {
            Ok(conn) => Ok(conn?),
            Err(_elapsed) => Err(RedisTierError::Timeout),
        }
    }
}

/// Keeps the breaker honest: connects, and after the breaker opens waits
/// its cool-down (which the circuit doubles while Redis stays down) and
/// probes with PING.
pub(crate) async fn supervise(shared: Arc<Shared>, target: Target) {
    let mut reported_down = false;
    loop {
        shared.breaker.half_open();
        match probe(&shared, &target).await {
            Ok(()) => {
                shared.breaker.close();
                // Sleep until a request, write or probe trips the breaker
                // (which warns itself, so failed probes after it log at debug).
                while shared.breaker.allows() {
                    shared.breaker.opened.notified().await;
                }
                reported_down = true;
                tokio::time::sleep(shared.breaker.retry_in()).await;
            }
            Err(error) => {
                shared.breaker.reopen();
                let retry_in = shared.breaker.retry_in();
                let kind = match error {
                    RedisTierError::Timeout => "timeout",
                    _ => "error",
                };
                count_error("probe", kind);
                if reported_down {
                    tracing::debug!(%error, ?retry_in, "redis probe failed");
                } else {
                    tracing::warn!(%error, ?retry_in, "redis unreachable, retrying in the background");
                    reported_down = true;
                }
                tokio::time::sleep(retry_in).await;
            }
        }
    }
}

/// PINGs the current connection; when that fails, replaces the connection
/// (a dead or stuck one is never reused) and PINGs the new one.
pub(crate) async fn probe(shared: &Shared, target: &Target) -> Result<(), RedisTierError> {
    let timeout = shared.options.timeout;
    if let Some(conn) = shared.connection() {
        if ping(conn, timeout).await.is_ok() {
            return Ok(());
        }
        shared.set_connection(None);
    }
    let conn = target.connect(timeout).await?;
    ping(conn.clone(), timeout).await?;
    shared.set_connection(Some(conn));
    Ok(())
}

pub(crate) async fn ping(mut conn: Conn, timeout: Duration) -> Result<(), RedisTierError> {
    match tokio::time::timeout(timeout, conn.query::<()>(&redis::cmd("PING"))).await {
        Ok(answer) => Ok(answer?),
        Err(_elapsed) => Err(RedisTierError::Timeout),
    }
}
