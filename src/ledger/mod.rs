//! The usage ledger: one record per request under `/v1/`, written to
//! SQLite or Postgres off the request path.
//!
//! The metrics layer makes each request's [`Record`] when the request ends
//! (see [`crate::report::Finished::record`]) and hands it to
//! [`Ledger::write`], which only puts it in a bounded queue: a full queue
//! drops the record (counted in `sluice_ledger_rows_total{outcome="dropped"}`)
//! rather than hold the request. One writer, on a thread of its own, takes
//! the queue in batches (`batch_size` records, or what came within
//! `flush_interval`) and writes each batch in one transaction; while the
//! database is unreachable it keeps its batch and tries again, and the
//! queue fills and drops. The schema's migrations are embedded in the
//! binary and run when the writer first connects.
//!
//! ```no_run
//! # async fn example() {
//! let config = sluice::config::LedgerConfig {
//!     url: "sqlite://sluice-ledger.db".into(),
//!     ..Default::default()
//! };
//! let ledger = sluice::ledger::Ledger::start(&config).unwrap();
//! ledger.flush(std::time::Duration::from_secs(5)).await;
//! # }
//! ```

pub mod report;
mod writer;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use crate::config::LedgerConfig;

pub const LEDGER_ROWS_TOTAL: &str = "sluice_ledger_rows_total";

/// How a request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// Its answer's last byte went to the client.
    Complete,
    /// The client left before the answer's end.
    ClientGone,
    /// The upstream failed, or answered with a server error.
    UpstreamError,
    /// No answer in time (504).
    Timeout,
    /// sluice refused it (a 4xx of its own or the upstream's).
    Refused,
}

impl End {
    pub fn as_str(self) -> &'static str {
        match self {
            End::Complete => "complete",
            End::ClientGone => "client_gone",
            End::UpstreamError => "upstream_error",
            End::Timeout => "timeout",
            End::Refused => "refused",
        }
    }

    /// How a request with this answer status (`None`: none was sent)
    /// ended; `ended`: its body reached its end.
    pub fn of(status: Option<http::StatusCode>, ended: bool) -> End {
        match status {
            None => End::ClientGone,
            Some(s) if s.is_success() && !ended => End::ClientGone,
            Some(s) if s == http::StatusCode::GATEWAY_TIMEOUT => End::Timeout,
            Some(s) if s.is_server_error() => End::UpstreamError,
            Some(s) if s.is_client_error() => End::Refused,
            Some(_) => End::Complete,
        }
    }
}

/// One request's usage record.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// When it ended, in milliseconds since the Unix epoch.
    pub time_ms: i64,
    pub request_id: Option<String>,
    /// The client identity: a key's name, `client-<hex>`, `anonymous`.
    pub key: String,
    /// The model the request asked for.
    pub model: Option<String>,
    /// The model the answer names.
    pub response_model: Option<String>,
    pub upstream: Option<String>,
    pub endpoint: &'static str,
    /// `None`: the client left before the answer's head.
    pub status: Option<u16>,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub cached_tokens: u64,
    /// `upstream` or `counted`; `None` when nothing was used upstream.
    pub usage_source: Option<&'static str>,
    /// Estimated cost in dollars, when the model has a price.
    pub cost: Option<f64>,
    /// `miss`, `hit`, `coalesced`, `bypass`.
    pub cache: Option<&'static str>,
    /// Prompt tokens pruning and compression kept from the upstream, and
    /// the usage of an answer served from the cache or shared.
    pub tokens_saved: u64,
    pub attempts: Option<u32>,
    pub ttfb_ms: Option<f64>,
    pub duration_ms: f64,
    pub end: End,
}

#[derive(Debug)]
enum Message {
    Record(Box<Record>),
    /// Answered once everything queued before it is written (or given up).
    Flush(oneshot::Sender<()>),
}

/// The handle the request path writes through.
#[derive(Debug)]
pub struct Ledger {
    queue: mpsc::Sender<Message>,
    /// Records dropped since the last warning, and when that was
    /// (milliseconds after `started`; 0: never).
    dropped: AtomicU64,
    warned_ms: AtomicU64,
    started: Instant,
}

/// Records dropped are logged at most once per this long.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// Why the ledger could not start.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("ledger.url: {0}")]
    Url(String),
    #[error("cannot start the ledger's writer thread: {0}")]
    Thread(std::io::Error),
}

impl Ledger {
    /// Starts the writer for `config` (whose `url` is set). The database
    /// need not be up: the writer connects, migrates and writes when it is.
    pub fn start(config: &LedgerConfig) -> Result<Arc<Ledger>, LedgerError> {
        let target = writer::Target::parse(&config.url).map_err(LedgerError::Url)?;
        let (queue, rx) = mpsc::channel(config.queue_size.max(1));
        writer::spawn(target, config, rx).map_err(LedgerError::Thread)?;
        Ok(Arc::new(Ledger {
            queue,
            dropped: AtomicU64::new(0),
            warned_ms: AtomicU64::new(0),
            started: Instant::now(),
        }))
    }

    /// Queues `record`; never waits. A full queue drops it, counted.
    pub fn write(&self, record: Record) {
        if self
            .queue
            .try_send(Message::Record(Box::new(record)))
            .is_err()
        {
            metrics::counter!(LEDGER_ROWS_TOTAL, "outcome" => "dropped").increment(1);
            self.warn_dropped();
        }
    }

    /// Waits, up to `deadline`, until every record queued so far is written
    /// (or given up on because the database stayed unreachable).
    pub async fn flush(&self, deadline: Duration) {
        let started = Instant::now();
        let (done, flushed) = oneshot::channel();
        let sent = tokio::time::timeout(deadline, self.queue.send(Message::Flush(done))).await;
        if !matches!(sent, Ok(Ok(()))) {
            return;
        }
        let left = deadline.saturating_sub(started.elapsed());
        if tokio::time::timeout(left, flushed).await.is_err() {
            tracing::warn!("shutdown grace passed with usage records still unwritten");
        }
    }

    /// Logs the records dropped so far, at most once per [`WARN_EVERY`].
    fn warn_dropped(&self) {
        let dropped = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
        let now = u64::try_from(self.started.elapsed().as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        let last = self.warned_ms.load(Ordering::Relaxed);
        let every = u64::try_from(WARN_EVERY.as_millis()).unwrap_or(u64::MAX);
        let due = last == 0 || now.saturating_sub(last) >= every;
        if due
            && self
                .warned_ms
                .compare_exchange(last, now, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        {
            self.dropped.fetch_sub(dropped, Ordering::Relaxed);
            tracing::warn!(
                dropped,
                "usage records dropped: the ledger's queue is full (its database is slow or unreachable)"
            );
        }
    }
}

/// Describes the ledger's counters for `/metrics`.
pub fn describe() {
    metrics::describe_counter!(
        LEDGER_ROWS_TOTAL,
        "Usage records by outcome: written to the ledger's database, or dropped (queue full, or the database unreachable until shutdown)."
    );
}
