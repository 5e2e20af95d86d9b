//! The edge of the stack: what every request passes through before sluice
//! looks at what it is for.
//!
//! - [`request_id`]: keeps or makes the `x-request-id` and opens the
//!   request's tracing span.
//! - [`answer`]: sluice's errors become OpenAI-shaped answers, and the
//!   request's [`Outcome`](crate::context::Outcome) its `x-sluice-*` headers.
//! - [`catch_panic`]: a panic while handling a request becomes a 500; the
//!   process and the other requests carry on.
//! - [`metrics`]: requests by endpoint and status, durations, in-flight gauge.
//! - [`load_shed`]: at most `max_concurrency` requests in flight; the excess
//!   gets 503 at once instead of queueing.
//! - [`body_limit`]: bodies over `max_body_size` get 413.
//! - [`timeout`]: no answer head within `request_timeout` gives 504.
//!
//! # Why not tower-http's layers
//!
//! tower-http has a layer for most of these; sluice keeps its own where
//! tower-http's would break a rule of the answer, and would take one where
//! it fits (none does today, so the crate is not a dependency):
//!
//! - request id: `SetRequestId` + `PropagateRequestId` are two layers that
//!   copy the id; sluice's one also refuses ids over 128 bytes and opens the
//!   request's span in the same call, so every log line below names it.
//! - timeout: tower-http's `TimeoutLayer` answers with an empty body (408,
//!   or the status given to `with_status_code`); a client of an OpenAI API
//!   expects 504 with the error JSON its SDK raises, and only the answer's
//!   head is timed (a stream may run on).
//! - catch panic: `CatchPanicLayer` builds the answer itself; sluice's turns
//!   a panic into an [`EdgeError::Panic`] so that [`answer`] stays the one
//!   place errors become answers.
//! - body limit: `RequestBodyLimitLayer` answers 413 in plain text and
//!   changes the body type for every layer below; sluice's checks the
//!   declared length first and keeps `crate::body::Body` throughout.
//! - tracing: `TraceLayer` times until the answer's head; the metrics layer
//!   times streams to their last byte and writes the access line with what
//!   the layers below noted.

pub mod answer;
pub mod body_limit;
pub mod catch_panic;
pub mod load_shed;
pub mod metrics;
pub mod request_id;
pub mod timeout;

pub use crate::error::EdgeError;
