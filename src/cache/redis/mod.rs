//! The Redis tier of the response cache: answers shared by every sluice replica.
//!
//! The cache layer looks here after a memory miss ([`RedisTier::get`]) and
//! stores fresh answers here ([`RedisTier::put`]). Redis never fails or holds
//! up a request: a lookup is bounded by `redis_timeout`, a store is queued for
//! a background writer and never waited on, and a failing Redis trips a
//! circuit breaker so lookups return at once until a background probe sees it
//! answer again. The tier starts disconnected and connects in the background,
//! so sluice starts with Redis unreachable.
//!
//! The connection, the writer and the probe run on a dedicated thread with its
//! own current-thread runtime, so the tier can be called from any of sluice's
//! per-worker runtimes and lives as long as any clone of the handle.
//!
//! `redis_url` is a `redis://` URL, or for Redis Cluster `redis+cluster://`
//! with comma-separated nodes (`redis+cluster://:pw@10.0.0.1:7000,10.0.0.2:7000`)
//! or a comma-separated list of `redis://` node URLs.
//!
//! ```text
//! let tier = RedisTier::start(RedisOptions {
//!     url: "redis://127.0.0.1:6379".into(),
//!     timeout: Duration::from_millis(50),
//!     prefix: "sluice:v2:".into(),
//!     queue: 10_000,
//! })?;
//! tier.put(key.clone(), answer, Duration::from_secs(3600));
//! let hit: Option<Bytes> = tier.get(&key).await.unwrap_or(None);
//! ```

mod breaker;
mod codec;
mod connection;
#[cfg(test)]
mod tests;
mod writes;

use connection::{supervise, write_timeout};
use writes::write_loop;

use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use bytes::Bytes;
use redis::aio::MultiplexedConnection;
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{FromRedisValue, Script, ScriptInvocation, ToRedisArgs};
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::time::Instant;

pub use self::breaker::BreakerState;
use self::breaker::{Breaker, BreakerConfig};

/// Most queued writes sent to Redis together.
const MAX_WRITE_BATCH: usize = 64;

/// Settings of the Redis tier, from the `[cache]` section.
#[derive(Debug, Clone)]
pub struct RedisOptions {
    /// `redis_url`: `redis://…`, `redis+cluster://h1:p1,h2:p2` or `redis://…,redis://…`.
    pub url: String,
    /// `redis_timeout`: bound of every lookup and of the probe.
    pub timeout: Duration,
    /// Prepended to every key, e.g. `sluice:v2:`.
    pub prefix: String,
    /// Writes waiting for the writer; more are dropped.
    pub queue: usize,
}

/// Why a Redis tier call did not return a value.
#[derive(Debug, thiserror::Error)]
pub enum RedisTierError {
    /// `redis_url` cannot be used (configuration error; retrying does not help).
    #[error("invalid redis_url: {0}")]
    InvalidUrl(String),
    /// The tier's background thread could not be started (internal).
    #[error("cannot start the redis thread: {0}")]
    Start(#[source] std::io::Error),
    /// The breaker is open or no connection is up; Redis was not called.
    #[error("redis unavailable")]
    Unavailable,
    /// Redis did not answer within `redis_timeout`.
    #[error("redis did not answer within the timeout")]
    Timeout,
    /// Redis answered with an error or the connection failed.
    #[error("redis error: {0}")]
    Redis(#[from] redis::RedisError),
}

/// Counts since the tier started (also exported as metrics).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RedisTierStats {
    /// Values written to Redis.
    pub writes: u64,
    /// Writes dropped because the write queue was full.
    pub dropped_queue_full: u64,
    /// Writes dropped because Redis was unavailable.
    pub dropped_breaker_open: u64,
}

/// The Redis tier. Cheap to clone; the background thread stops when the last
/// clone is dropped.
#[derive(Clone)]
pub struct RedisTier {
    handle: Arc<Handle>,
}

struct Handle {
    shared: Arc<Shared>,
    writes: mpsc::Sender<Write>,
    /// Dropping it (with the last handle) stops the background thread.
    _stop: oneshot::Sender<()>,
}

/// State used by callers and by the background thread.
struct Shared {
    options: RedisOptions,
    breaker: Breaker,
    /// The live connection; `None` until connected and while reconnecting.
    /// Only the background thread sets it, so connections (and the tasks
    /// driving them) always belong to the background runtime.
    conn: RwLock<Option<Conn>>,
    /// Writes queued and not yet written or dropped.
    pending: AtomicUsize,
    /// Woken when `pending` drops to zero.
    idle: Notify,
    writes: AtomicU64,
    dropped_queue_full: AtomicU64,
    dropped_breaker_open: AtomicU64,
}

struct Write {
    key: String,
    value: Bytes,
    ttl_secs: u64,
}

/// A multiplexed handle on one node or on a cluster; clones share the connection.
#[derive(Clone)]
enum Conn {
    Single(MultiplexedConnection),
    Cluster(ClusterConnection),
}

/// Where to connect, parsed from `redis_url` at start.
enum Target {
    Single(redis::Client),
    Cluster(ClusterClient),
}

impl RedisTier {
    /// Starts the tier and its background thread; connects in the background.
    ///
    /// Never waits for Redis. Fails only for a malformed URL or when the
    /// thread or its runtime cannot be created.
    pub fn start(options: RedisOptions) -> Result<RedisTier, RedisTierError> {
        Self::start_with(options, BreakerConfig::default())
    }

    fn start_with(
        options: RedisOptions,
        breaker: BreakerConfig,
    ) -> Result<RedisTier, RedisTierError> {
        let target = Target::parse(&options.url, write_timeout(options.timeout))?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(RedisTierError::Start)?;
        let (writes, queue) = mpsc::channel(options.queue.max(1));
        let (stop, stopped) = oneshot::channel();
        let shared = Arc::new(Shared {
            options,
            breaker: Breaker::new(breaker),
            conn: RwLock::new(None),
            pending: AtomicUsize::new(0),
            idle: Notify::new(),
            writes: AtomicU64::new(0),
            dropped_queue_full: AtomicU64::new(0),
            dropped_breaker_open: AtomicU64::new(0),
        });
        let background = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("sluice-redis".into())
            .spawn(move || {
                runtime.block_on(async move {
                    #[expect(clippy::disallowed_methods, reason = "the writer runs on the Redis thread's own runtime and is ended with it when the tier stops")]
                    let writer = tokio::spawn(write_loop(Arc::clone(&background), queue));
                    tokio::select! {
                        _ = stopped => {}
                        () = supervise(background, target) => {}
                    }
                    writer.abort();
                });
            })
            .map_err(RedisTierError::Start)?;
        Ok(RedisTier {
            handle: Arc::new(Handle {
                shared,
                writes,
                _stop: stop,
            }),
        })
    }

    /// Looks up `prefix + key`; `Ok(None)` on a miss or an unreadable value.
    ///
    /// Bounded by `redis_timeout`; returns [`RedisTierError::Unavailable`] at
    /// once, without touching the network, while the breaker is open.
    pub async fn get(&self, key: &str) -> Result<Option<Bytes>, RedisTierError> {
        let shared = &self.handle.shared;
        let mut conn = shared.usable_connection("get")?;
        let mut cmd = redis::cmd("GET");
        cmd.arg(shared.full_key(key));
        let outcome =
            tokio::time::timeout(shared.options.timeout, conn.query::<Option<Vec<u8>>>(&cmd)).await;
        match outcome {
            Ok(Ok(found)) => {
                shared.breaker.record(true);
                Ok(found.and_then(|stored| {
                    let value = codec::decode(Bytes::from(stored));
                    if value.is_none() {
                        super::count_invalid();
                        tracing::debug!(key, "unreadable redis cache value, treated as a miss");
                    }
                    value
                }))
            }
            Ok(Err(error)) => {
                shared.breaker.record(false);
                count_error("get", "error");
                tracing::debug!(key, %error, "redis get failed");
                Err(RedisTierError::Redis(error))
            }
            Err(_elapsed) => {
                shared.breaker.record(false);
                count_error("get", "timeout");
                tracing::debug!(key, "redis get timed out");
                Err(RedisTierError::Timeout)
            }
        }
    }

    /// Runs `script` over `keys` (each prefixed) and `args`, bounded by
    /// `redis_timeout`, behind the breaker like [`RedisTier::get`]: returns
    /// [`RedisTierError::Unavailable`] at once while it is open. `op` names
    /// the call in the error metric.
    pub async fn eval<T: FromRedisValue>(
        &self,
        op: &'static str,
        script: &Script,
        keys: &[&str],
        args: &[&dyn ToRedisArgsRef],
    ) -> Result<T, RedisTierError> {
        let shared = &self.handle.shared;
        let mut conn = shared.usable_connection(op)?;
        let mut invocation = script.prepare_invoke();
        for key in keys {
            invocation.key(shared.full_key(key));
        }
        for arg in args {
            arg.add_to(&mut invocation);
        }
        match tokio::time::timeout(shared.options.timeout, conn.invoke::<T>(&invocation)).await {
            Ok(Ok(value)) => {
                shared.breaker.record(true);
                Ok(value)
            }
            Ok(Err(error)) => {
                shared.breaker.record(false);
                count_error(op, "error");
                tracing::debug!(op, %error, "redis script failed");
                Err(RedisTierError::Redis(error))
            }
            Err(_elapsed) => {
                shared.breaker.record(false);
                count_error(op, "timeout");
                tracing::debug!(op, "redis script timed out");
                Err(RedisTierError::Timeout)
            }
        }
    }

    /// Queues `SET prefix+key value EX ttl` (at least one second) for the
    /// background writer. Never waits: when the queue is full or Redis is
    /// unavailable the write is dropped and counted.
    pub fn put(&self, key: String, value: Bytes, ttl: Duration) {
        let shared = &self.handle.shared;
        if !shared.breaker.allows() {
            shared.dropped(1, DropReason::BreakerOpen);
            return;
        }
        let write = Write {
            key,
            value,
            ttl_secs: ttl.as_secs().max(1),
        };
        shared.pending.fetch_add(1, Ordering::AcqRel);
        match self.handle.writes.try_send(write) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(write)) => {
                tracing::debug!(key = %write.key, "redis write queue full, write dropped");
                shared.dropped(1, DropReason::QueueFull);
                shared.done(1);
            }
            // The writer only stops with the runtime, after the last handle
            // is gone; treat it like an unavailable Redis.
            Err(mpsc::error::TrySendError::Closed(_)) => {
                shared.dropped(1, DropReason::BreakerOpen);
                shared.done(1);
            }
        }
    }

    /// Waits, at most `deadline`, until every queued write is written or dropped.
    pub async fn flush(&self, deadline: Duration) {
        let shared = &self.handle.shared;
        let until = Instant::now() + deadline;
        loop {
            let idle = shared.idle.notified();
            tokio::pin!(idle);
            idle.as_mut().enable();
            let pending = shared.pending.load(Ordering::Acquire);
            if pending == 0 {
                return;
            }
            if tokio::time::timeout_at(until, idle).await.is_err() {
                tracing::debug!(pending, "redis flush deadline reached");
                return;
            }
        }
    }

    /// Where the circuit breaker stands.
    pub fn breaker_state(&self) -> BreakerState {
        self.handle.shared.breaker.state()
    }

    /// Counts of writes and dropped writes since start.
    pub fn stats(&self) -> RedisTierStats {
        let shared = &self.handle.shared;
        RedisTierStats {
            writes: shared.writes.load(Ordering::Relaxed),
            dropped_queue_full: shared.dropped_queue_full.load(Ordering::Relaxed),
            dropped_breaker_open: shared.dropped_breaker_open.load(Ordering::Relaxed),
        }
    }
}

impl fmt::Debug for RedisTier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shared = &self.handle.shared;
        f.debug_struct("RedisTier")
            .field("prefix", &shared.options.prefix)
            .field("timeout", &shared.options.timeout)
            .field("breaker", &shared.breaker.state())
            .field("pending_writes", &shared.pending.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// An argument of [`RedisTier::eval`] (object safe, unlike `ToRedisArgs`).
pub trait ToRedisArgsRef: Sync {
    fn add_to(&self, invocation: &mut ScriptInvocation<'_>);
}

impl<T: ToRedisArgs + Sync> ToRedisArgsRef for T {
    fn add_to(&self, invocation: &mut ScriptInvocation<'_>) {
        invocation.arg(self);
    }
}

#[derive(Clone, Copy)]
enum DropReason {
    QueueFull,
    BreakerOpen,
}

impl Shared {
    /// The connection for a call named `op`, unless the breaker is open or
    /// none is up (counted as `unavailable`).
    fn usable_connection(&self, op: &'static str) -> Result<Conn, RedisTierError> {
        let conn = if self.breaker.allows() {
            self.connection()
        } else {
            None
        };
        conn.ok_or_else(|| {
            count_error(op, "unavailable");
            RedisTierError::Unavailable
        })
    }

    fn connection(&self) -> Option<Conn> {
        self.conn
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn set_connection(&self, conn: Option<Conn>) {
        *self.conn.write().unwrap_or_else(PoisonError::into_inner) = conn;
    }

    fn full_key(&self, key: &str) -> String {
        let mut full = String::with_capacity(self.options.prefix.len() + key.len());
        full.push_str(&self.options.prefix);
        full.push_str(key);
        full
    }

    fn dropped(&self, count: usize, reason: DropReason) {
        let count = u64::try_from(count).unwrap_or(u64::MAX);
        let (counter, label) = match reason {
            DropReason::QueueFull => (&self.dropped_queue_full, "queue_full"),
            DropReason::BreakerOpen => (&self.dropped_breaker_open, "breaker_open"),
        };
        counter.fetch_add(count, Ordering::Relaxed);
        metrics::counter!("sluice_redis_writes_dropped_total", "reason" => label).increment(count);
    }

    /// `count` queued writes were written or dropped.
    fn done(&self, count: usize) {
        if self.pending.fetch_sub(count, Ordering::AcqRel) == count {
            self.idle.notify_waiters();
        }
    }
}

fn count_error(op: &'static str, kind: &'static str) {
    metrics::counter!("sluice_redis_errors_total", "op" => op, "kind" => kind).increment(1);
}
