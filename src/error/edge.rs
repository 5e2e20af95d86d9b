//! Errors raised at the edge of the stack.

use std::time::Duration;

/// Errors raised at the edge.
#[derive(Debug, thiserror::Error)]
pub enum EdgeError {
    #[error("Invalid URL ({method} {path}): sluice serves /v1/* and /healthz, /readyz, /metrics")]
    NotFound { method: http::Method, path: String },
    #[error("request body is larger than the limit of {limit} bytes")]
    PayloadTooLarge { limit: u64 },
    #[error("sluice is overloaded (max_concurrency reached); retry shortly")]
    Overloaded,
    #[error("sluice is shutting down; retry on another instance")]
    ShuttingDown,
    #[error("no answer within the request timeout of {}", humantime::format_duration(*after))]
    Timeout { after: Duration },
    #[error("internal error while handling the request")]
    Panic,
}
