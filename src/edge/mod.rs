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

pub mod answer;
pub mod body_limit;
pub mod catch_panic;
pub mod load_shed;
pub mod metrics;
pub mod request_id;
pub mod timeout;

pub use crate::error::EdgeError;
