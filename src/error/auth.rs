//! Why auth refused a request.

/// Why a request was refused.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error(
        "You didn't provide an API key. Send your sluice client key as `Authorization: Bearer <key>`."
    )]
    Missing,
    #[error("Incorrect API key provided. Use one of the client keys this sluice was given.")]
    Invalid,
}
