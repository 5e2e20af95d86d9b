//! The ledger's one writer: a thread with a runtime of its own that takes
//! queued records in batches and writes each batch as one statement.

use std::str::FromStr;
use std::time::{Duration, Instant};

use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};
use tokio::sync::{mpsc, oneshot};

use super::{LEDGER_ROWS_TOTAL, Message, Record};
use crate::config::LedgerConfig;

/// Wait before trying an unreachable database again.
const RETRY_AFTER: Duration = Duration::from_secs(1);
/// At most one warning about the database per this long.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// The database a ledger URL names.
#[derive(Debug, Clone)]
pub(super) enum Target {
    Sqlite(Box<SqliteConnectOptions>),
    Postgres(String),
}

impl Target {
    pub(super) fn parse(url: &str) -> Result<Target, String> {
        let url = url.trim();
        if url.starts_with("sqlite:") {
            let options = SqliteConnectOptions::from_str(url)
                .map_err(|e| e.to_string())?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                // With WAL, NORMAL syncs at checkpoints, not every commit;
                // a power cut can lose the last batches, never corrupt.
                .synchronous(sqlx::sqlite::SqliteSynchronous::Normal)
                .busy_timeout(Duration::from_secs(5));
            Ok(Target::Sqlite(Box::new(options)))
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Target::Postgres(url.to_owned()))
        } else {
            Err("must start with sqlite: or postgres://".to_owned())
        }
    }
}

/// A connected, migrated database.
pub(super) enum Db {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

impl Db {
    pub(super) async fn connect(target: &Target) -> Result<Db, sqlx::Error> {
        match target {
            Target::Sqlite(options) => {
                let pool = SqlitePoolOptions::new()
                    .max_connections(1)
                    .acquire_timeout(Duration::from_secs(5))
                    .connect_with((**options).clone())
                    .await?;
                sqlx::migrate!("migrations/sqlite").run(&pool).await?;
                Ok(Db::Sqlite(pool))
            }
            Target::Postgres(url) => {
                let pool = PgPoolOptions::new()
                    .max_connections(2)
                    .acquire_timeout(Duration::from_secs(5))
                    .connect(url)
                    .await?;
                sqlx::migrate!("migrations/postgres").run(&pool).await?;
                Ok(Db::Postgres(pool))
            }
        }
    }

    async fn insert(&self, rows: &[Record]) -> Result<(), sqlx::Error> {
        match self {
            // In-process: one prepared statement (parsed once, then cached)
            // run per row in one transaction costs far less than parsing a
            // new multi-row statement for every batch.
            // Full chunks share one multi-row statement text (so its plan
            // is cached too), and each statement is one trip to the
            // driver's thread; the rest go row by row.
            Db::Sqlite(pool) => {
                let mut tx = pool.begin().await?;
                for chunk in rows.chunks(SQLITE_CHUNK) {
                    if chunk.len() == SQLITE_CHUNK {
                        let mut builder = sqlx::QueryBuilder::new(INSERT_HEAD);
                        builder.push_values(chunk, |mut row, r| {
                            fields!(row, push_bind, r);
                        });
                        builder.build().execute(&mut *tx).await?;
                    } else {
                        for r in chunk {
                            let query = sqlx::query(INSERT_ONE);
                            fields!(query, bind, r).execute(&mut *tx).await?;
                        }
                    }
                }
                tx.commit().await
            }
            // Over the network: one statement, one round trip, per batch.
            Db::Postgres(pool) => {
                let mut builder = sqlx::QueryBuilder::new(INSERT_HEAD);
                builder.push_values(rows, |mut row, r| {
                    fields!(row, push_bind, r);
                });
                builder.build().execute(pool).await.map(|_| ())
            }
        }
    }
}

/// The columns of a record, in [`INSERT_HEAD`]'s order, bound with `$bind`.
macro_rules! fields {
    ($target:expr, $bind:ident, $r:expr) => {
        $target
            .$bind($r.time_ms)
            .$bind($r.request_id.clone())
            .$bind($r.key.clone())
            .$bind($r.model.clone())
            .$bind($r.response_model.clone())
            .$bind($r.upstream.clone())
            .$bind($r.endpoint)
            .$bind($r.status.map(i32::from))
            .$bind(tokens($r.prompt_tokens))
            .$bind(tokens($r.completion_tokens))
            .$bind(tokens($r.cached_tokens))
            .$bind($r.usage_source)
            .$bind($r.cost)
            .$bind($r.cache)
            .$bind(tokens($r.tokens_saved))
            .$bind($r.attempts.map(|a| i32::try_from(a).unwrap_or(i32::MAX)))
            .$bind($r.ttfb_ms)
            .$bind($r.duration_ms)
            .$bind($r.end.as_str())
    };
}
use fields;

const INSERT_HEAD: &str = "INSERT INTO usage_records (time_ms, request_id, key, model, \
    response_model, upstream, endpoint, status, prompt_tokens, completion_tokens, cached_tokens, \
    usage_source, cost, cache, tokens_saved, attempts, ttfb_ms, duration_ms, end_reason) ";

/// Rows per multi-row statement on SQLite (19 values each, well under its
/// limit of 32,766).
const SQLITE_CHUNK: usize = 32;

const INSERT_ONE: &str = "INSERT INTO usage_records (time_ms, request_id, key, model, \
    response_model, upstream, endpoint, status, prompt_tokens, completion_tokens, cached_tokens, \
    usage_source, cost, cache, tokens_saved, attempts, ttfb_ms, duration_ms, end_reason) \
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19)";

/// A token count as the database's signed 64-bit integer.
fn tokens(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

pub(super) fn spawn(
    target: Target,
    config: &LedgerConfig,
    queue: mpsc::Receiver<Message>,
) -> std::io::Result<()> {
    let batch_size = config.batch_size.max(1);
    let interval = config.flush_interval;
    std::thread::Builder::new()
        .name("sluice-ledger".to_owned())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(error) => {
                    tracing::error!(%error, "cannot start the ledger's runtime; no usage records are written");
                    return;
                }
            };
            runtime.block_on(run(target, batch_size, interval, queue));
        })
        .map(|_| ())
}

/// Takes records until every sender is gone and everything is written.
async fn run(
    target: Target,
    batch_size: usize,
    interval: Duration,
    mut queue: mpsc::Receiver<Message>,
) {
    let mut db: Option<Db> = None;
    let mut batch: Vec<Record> = Vec::with_capacity(batch_size);
    let mut flushes: Vec<oneshot::Sender<()>> = Vec::new();
    let mut closed = false;
    let mut warned: Option<Instant> = None;
    loop {
        if batch.is_empty() && flushes.is_empty() {
            match queue.recv().await {
                Some(message) => take(message, &mut batch, &mut flushes),
                None => closed = true,
            }
        }
        // Fill the batch for up to `interval`, unless a flush is waiting.
        let until = tokio::time::Instant::now() + interval;
        while !closed && flushes.is_empty() && batch.len() < batch_size {
            match tokio::time::timeout_at(until, queue.recv()).await {
                Err(_) => break,
                Ok(None) => closed = true,
                Ok(Some(message)) => take(message, &mut batch, &mut flushes),
            }
        }
        while !batch.is_empty() {
            if db.is_none() {
                match Db::connect(&target).await {
                    Ok(connected) => {
                        tracing::info!("ledger database connected");
                        db = Some(connected);
                    }
                    Err(error) => {
                        warn(&mut warned, "cannot connect to the ledger database", &error)
                    }
                }
            }
            if let Some(connected) = &db {
                match connected.insert(&batch).await {
                    Ok(()) => {
                        let n = batch.len() as u64;
                        metrics::counter!(LEDGER_ROWS_TOTAL, "outcome" => "written").increment(n);
                        batch.clear();
                        break;
                    }
                    Err(error) => {
                        warn(&mut warned, "cannot write usage records", &error);
                        // Connect afresh next time: the server may have restarted.
                        db = None;
                    }
                }
            }
            if closed {
                // Shutting down with the database unreachable: given up.
                let n = batch.len() as u64;
                metrics::counter!(LEDGER_ROWS_TOTAL, "outcome" => "dropped").increment(n);
                batch.clear();
                break;
            }
            // The batch is kept meanwhile; the queue fills, then drops.
            tokio::time::sleep(RETRY_AFTER).await;
        }
        for flush in flushes.drain(..) {
            let _ = flush.send(());
        }
        if closed && batch.is_empty() {
            return;
        }
    }
}

fn take(message: Message, batch: &mut Vec<Record>, flushes: &mut Vec<oneshot::Sender<()>>) {
    match message {
        Message::Record(record) => batch.push(*record),
        Message::Flush(done) => flushes.push(done),
    }
}

fn warn(warned: &mut Option<Instant>, what: &str, error: &sqlx::Error) {
    if warned.is_none_or(|at| at.elapsed() >= WARN_EVERY) {
        *warned = Some(Instant::now());
        tracing::warn!(%error, "{what}; usage records wait in the queue, and are dropped once it is full");
    }
}
