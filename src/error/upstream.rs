//! Errors on the way to or back from an upstream.

use std::time::Duration;

/// Errors on the way to or back from an upstream.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("could not connect to upstream {upstream}: {reason}")]
    Connect { upstream: String, reason: String },
    #[error("upstream {upstream} did not answer in time")]
    Timeout { upstream: String },
    #[error("upstream {upstream} failed: {reason}")]
    Failed { upstream: String, reason: String },
    #[error("request body is larger than the limit of {limit} bytes")]
    RequestBodyTooLarge { limit: u64 },
    #[error("could not read the request body: {reason}")]
    RequestBody { reason: String },
    #[error(
        "The request body stopped arriving: nothing came for {}.",
        humantime::format_duration(*after)
    )]
    RequestBodyTimeout { after: Duration },
    /// A path outside `/v1/`, which is never joined to an upstream's URL.
    #[error("The path {path} is outside /v1/ and is not forwarded.")]
    PathOutside { path: String },
    #[error("The model `{model}` is not served here: no upstream's `models` matches it.")]
    NoRoute { model: String },
    /// Every upstream serving the request is out of rotation (breaker open,
    /// or resting after a 429 that said for how long).
    #[error("{message}")]
    Unavailable {
        message: String,
        retry_after: Duration,
        rate_limited: bool,
    },
    /// The last of several attempts failed with `error`.
    #[error("{error}")]
    After {
        attempts: u32,
        error: Box<UpstreamError>,
    },
}

impl UpstreamError {
    /// Upstream attempts made before this error, when there were any.
    pub fn attempts(&self) -> Option<u32> {
        match self {
            UpstreamError::After { attempts, .. } => Some(*attempts),
            _ => None,
        }
    }
}
