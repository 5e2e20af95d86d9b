//! The edge of the stack: what every request passes through before sluice
//! looks at what it is for.
//!
//! - [`request_id`]: keeps or makes the `x-request-id`, opens the request's
//!   tracing span and turns sluice's errors into OpenAI-shaped answers.
//! - [`catch_panic`]: a panic while handling a request becomes a 500; the
//!   process and the other requests carry on.
//! - [`metrics`]: requests by endpoint and status, durations, in-flight gauge.
//! - [`load_shed`]: at most `max_concurrency` requests in flight; the excess
//!   gets 503 at once instead of queueing.
//! - [`body_limit`]: bodies over `max_body_size` get 413.
//! - [`timeout`]: no answer head within `request_timeout` gives 504.

pub mod body_limit;
pub mod catch_panic;
pub mod load_shed;
pub mod metrics;
pub mod request_id;
pub mod timeout;

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
