//! `[ledger]`: where each request's usage record is written.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::*;

/// `[ledger]`: one usage record per request under `/v1/`, written off the
/// request path to SQLite or Postgres. No `url`: no ledger.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LedgerConfig {
    /// `sqlite://PATH` (a file, created when missing) or `postgres://…`;
    /// empty = no ledger. Printed and serialized with any password masked.
    #[serde(serialize_with = "secret::serialize_masked_url")]
    pub url: String,
    /// Records waiting to be written, at most; past it they are dropped
    /// (and counted), so a slow or absent database never holds a request.
    pub queue_size: usize,
    /// Records written in one statement, at most.
    pub batch_size: usize,
    /// Longest a record waits for its batch to fill before it is written.
    #[serde(with = "humantime_serde")]
    pub flush_interval: Duration,
}

impl Default for LedgerConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            queue_size: 100_000,
            batch_size: 500,
            flush_interval: Duration::from_millis(200),
        }
    }
}

impl std::fmt::Debug for LedgerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LedgerConfig")
            .field("url", &mask_url(&self.url))
            .field("queue_size", &self.queue_size)
            .field("batch_size", &self.batch_size)
            .field("flush_interval", &self.flush_interval)
            .finish()
    }
}
