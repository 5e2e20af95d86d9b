//! The background writer: queued stores sent to Redis in batches.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use redis::Cmd;
use tokio::sync::mpsc;

use super::*;

/// Drains the write queue: each batch is encoded, then sent as concurrent SETs
/// over the multiplexed connection under one timeout.
pub(crate) async fn write_loop(shared: Arc<Shared>, mut queue: mpsc::Receiver<Write>) {
    let mut batch = Vec::with_capacity(MAX_WRITE_BATCH);
    while queue.recv_many(&mut batch, MAX_WRITE_BATCH).await > 0 {
        let count = batch.len();
        let conn = if shared.breaker.allows() {
            shared.connection()
        } else {
            None
        };
        match conn {
            None => {
                tracing::debug!(count, "redis unavailable, queued writes dropped");
                shared.dropped(count, DropReason::BreakerOpen);
                batch.clear();
            }
            Some(conn) => write_batch(&shared, conn, &mut batch).await,
        }
        shared.done(count);
    }
}

pub(crate) async fn write_batch(shared: &Shared, conn: Conn, batch: &mut Vec<Write>) {
    let commands: Vec<Cmd> = batch
        .drain(..)
        .map(|write| {
            let mut cmd = redis::cmd("SET");
            cmd.arg(shared.full_key(&write.key))
                .arg(codec::encode(&write.value))
                .arg("EX")
                .arg(write.ttl_secs);
            cmd
        })
        .collect();
    let sets = commands.iter().map(|cmd| {
        let mut conn = conn.clone();
        async move { conn.query::<()>(cmd).await }
    });
    let timeout = write_timeout(shared.options.timeout);
    match tokio::time::timeout(timeout, futures_util::future::join_all(sets)).await {
        Ok(results) => {
            for result in results {
                match result {
                    Ok(()) => {
                        shared.breaker.record(true);
                        shared.writes.fetch_add(1, Ordering::Relaxed);
                        metrics::counter!("sluice_redis_writes_total").increment(1);
                    }
                    Err(error) => {
                        shared.breaker.record(false);
                        count_error("set", "error");
                        tracing::debug!(%error, "redis set failed");
                    }
                }
            }
        }
        Err(_elapsed) => {
            // One slow round trip is one failure, however many writes it held.
            shared.breaker.record(false);
            count_error("set", "timeout");
            tracing::debug!(count = commands.len(), "redis set batch timed out");
        }
    }
}
