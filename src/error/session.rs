//! Errors of the session layer.

use std::time::Duration;

use http::HeaderName;

/// Longest session id accepted, in bytes.
pub const MAX_ID_LEN: usize = 256;

/// Errors of the session layer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SessionError {
    #[error("invalid {header} header: expected 1 to {MAX_ID_LEN} visible ASCII characters")]
    InvalidHeader { header: HeaderName },
    #[error(
        "an earlier request of this session was still running after {}; retry shortly",
        humantime::format_duration(*waited)
    )]
    Busy { waited: Duration },
}
