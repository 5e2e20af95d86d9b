//! A request over its client's rate limit, and the verdict that refused it.

use std::time::Duration;

use http::HeaderMap;

/// Which limit refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Requests,
    Tokens,
    /// The request alone needs more tokens than a minute's allowance.
    TooLarge {
        requested: u64,
    },
}

/// A refusal and how long until the request would pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Denied {
    pub kind: Kind,
    pub retry_after: Duration,
}

/// One limit as a client sees it after a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub limit: u64,
    pub remaining: u64,
    /// Until the whole allowance is back.
    pub reset: Duration,
}

/// The outcome of taking a request's share.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Verdict {
    pub requests: Option<Window>,
    pub tokens: Option<Window>,
    pub denied: Option<Denied>,
}

/// A request over its client's limit.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct RateLimitError {
    pub message: String,
    pub denied: Denied,
    /// The `x-ratelimit-*` and `retry-after-ms` headers of the answer.
    pub headers: HeaderMap,
}

impl RateLimitError {
    /// Seconds for `Retry-After` (rounded up); none when waiting cannot help.
    pub fn retry_after_secs(&self) -> Option<u32> {
        match self.denied.kind {
            Kind::TooLarge { .. } => None,
            _ => Some(
                self.denied
                    .retry_after
                    .as_secs_f64()
                    .ceil()
                    .clamp(1.0, 86_400.0) as u32,
            ),
        }
    }
}
