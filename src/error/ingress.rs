//! Errors raised while reading and parsing an understood request.

use std::time::Duration;

/// Errors raised while reading and parsing an understood request.
#[derive(Debug, thiserror::Error)]
pub enum IngressError {
    #[error("We could not parse the JSON body of your request: {0}")]
    InvalidJson(serde_json::Error),
    #[error("The request body must be a JSON object.")]
    NotAnObject,
    #[error("could not read the request body: {0}")]
    BodyRead(String),
    #[error("The request body nests arrays and objects more than {max} levels deep, the limit.")]
    TooDeep { max: usize },
    #[error(
        "The request body stopped arriving: nothing came for {}.",
        humantime::format_duration(*after)
    )]
    BodyTimeout { after: Duration },
    #[error("The path {path} leaves /v1/ (dot segments are refused) and is not forwarded.")]
    PathOutside { path: String },
    #[error("The request carries more than one Host header.")]
    DuplicateHost,
    #[error("The request URI is longer than the limit of {limit} bytes.")]
    UriTooLong { limit: usize },
    #[error("The {name} header must be one of: {expected}.")]
    InvalidHeader {
        name: &'static str,
        expected: &'static str,
    },
}
