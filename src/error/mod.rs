//! sluice's own errors and the one place that turns them into HTTP answers.
//!
//! Each part of the pipeline has its own error enum, defined in a file of
//! this folder (so this module needs none of the layers) and re-exported by
//! its layer; [`Error`] nests them.
//! [`Error::into_response`] maps every variant, exhaustively, to a status and
//! OpenAI's error JSON, so SDKs raise their usual exceptions.

use http::{HeaderValue, StatusCode, header};

pub mod auth;
pub mod edge;
pub mod ingress;
pub mod rate_limit;
pub mod session;
pub mod upstream;

pub use auth::AuthError;
pub use edge::EdgeError;
pub use ingress::IngressError;
pub use rate_limit::{Denied, Kind, RateLimitError, Verdict, Window};
pub use session::SessionError;
pub use upstream::UpstreamError;

use crate::body::{self, Body};
use crate::openai::error::ErrorBody;

/// Any error sluice itself answers with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Edge(#[from] EdgeError),
    #[error(transparent)]
    Ingress(#[from] IngressError),
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    #[error(transparent)]
    Session(#[from] SessionError),
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error(transparent)]
    RateLimit(Box<RateLimitError>),
    /// An error from further down, answered with headers a layer on the way
    /// up adds to every answer (the rate limits').
    #[error("{0}")]
    WithHeaders(Box<Error>, http::HeaderMap),
}

impl From<RateLimitError> for Error {
    fn from(e: RateLimitError) -> Error {
        Error::RateLimit(Box::new(e))
    }
}

/// Who caused an error: tells logs and metrics where to look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorSource {
    /// The client's request was at fault.
    Client,
    /// The upstream failed or did not answer.
    Upstream,
    /// sluice itself: overload, shutdown, a bug.
    Internal,
    /// Every upstream for the request is out of rotation (breaker open, or
    /// resting after a 429): answered at once, logged when the breaker opened.
    OutOfRotation,
}

/// How an error becomes an HTTP answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mapping {
    pub status: StatusCode,
    /// OpenAI's `error.type`.
    pub kind: &'static str,
    /// OpenAI's `error.code`.
    pub code: &'static str,
    /// Seconds for `Retry-After`, when waiting can help.
    pub retry_after: Option<u32>,
    pub source: ErrorSource,
}

/// A [`Mapping`] from its parts, in field order.
const fn m(
    status: StatusCode,
    kind: &'static str,
    code: &'static str,
    retry_after: Option<u32>,
    source: ErrorSource,
) -> Mapping {
    Mapping {
        status,
        kind,
        code,
        retry_after,
        source,
    }
}

impl Error {
    /// Status, error type and code of this error. Exhaustive on purpose: a new
    /// variant does not compile until it has an answer.
    pub fn mapping(&self) -> Mapping {
        use ErrorSource::{Client, Internal, Upstream};
        match self {
            Error::Ingress(e) => match e {
                IngressError::InvalidJson(_) => m(
                    StatusCode::BAD_REQUEST,
                    "invalid_request_error",
                    "invalid_json",
                    None,
                    Client,
                ),
                IngressError::NotAnObject => m(
                    StatusCode::BAD_REQUEST,
                    "invalid_request_error",
                    "invalid_json",
                    None,
                    Client,
                ),
                IngressError::BodyRead(_) => m(
                    StatusCode::BAD_REQUEST,
                    "invalid_request_error",
                    "invalid_body",
                    None,
                    Client,
                ),
                IngressError::InvalidHeader { .. } => m(
                    StatusCode::BAD_REQUEST,
                    "invalid_request_error",
                    "invalid_header",
                    None,
                    Client,
                ),
                IngressError::TooDeep { .. } => m(
                    StatusCode::BAD_REQUEST,
                    "invalid_request_error",
                    "json_too_deep",
                    None,
                    Client,
                ),
                IngressError::BodyTimeout { .. } => m(
                    StatusCode::REQUEST_TIMEOUT,
                    "invalid_request_error",
                    "request_body_timeout",
                    None,
                    Client,
                ),
                IngressError::PathOutside { .. } => m(
                    StatusCode::NOT_FOUND,
                    "invalid_request_error",
                    "not_found",
                    None,
                    Client,
                ),
                IngressError::DuplicateHost => m(
                    StatusCode::BAD_REQUEST,
                    "invalid_request_error",
                    "duplicate_host",
                    None,
                    Client,
                ),
                IngressError::UriTooLong { .. } => m(
                    StatusCode::URI_TOO_LONG,
                    "invalid_request_error",
                    "uri_too_long",
                    None,
                    Client,
                ),
            },
            Error::Edge(e) => match e {
                EdgeError::NotFound { .. } => m(
                    StatusCode::NOT_FOUND,
                    "invalid_request_error",
                    "not_found",
                    None,
                    Client,
                ),
                EdgeError::PayloadTooLarge { .. } => m(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "invalid_request_error",
                    "request_too_large",
                    None,
                    Client,
                ),
                EdgeError::Overloaded => m(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "overloaded_error",
                    "overloaded",
                    Some(1),
                    Internal,
                ),
                EdgeError::ShuttingDown => m(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "overloaded_error",
                    "shutting_down",
                    Some(1),
                    Internal,
                ),
                EdgeError::Timeout { .. } => m(
                    StatusCode::GATEWAY_TIMEOUT,
                    "timeout_error",
                    "request_timeout",
                    None,
                    Upstream,
                ),
                EdgeError::Panic => m(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "server_error",
                    "internal_error",
                    None,
                    Internal,
                ),
            },
            Error::Upstream(e) => upstream(e),
            Error::Session(e) => match e {
                SessionError::InvalidHeader { .. } => m(
                    StatusCode::BAD_REQUEST,
                    "invalid_request_error",
                    "invalid_header",
                    None,
                    Client,
                ),
                // The client's own earlier request of the session holds it.
                SessionError::Busy { .. } => m(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "overloaded_error",
                    "session_busy",
                    Some(1),
                    Client,
                ),
            },
            Error::Auth(e) => m(
                StatusCode::UNAUTHORIZED,
                "authentication_error",
                match e {
                    AuthError::Missing => "missing_api_key",
                    AuthError::Invalid => "invalid_api_key",
                },
                None,
                Client,
            ),
            Error::RateLimit(e) => m(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_error",
                match e.denied.kind {
                    Kind::TooLarge { .. } => "request_too_large",
                    _ => "rate_limit_exceeded",
                },
                e.retry_after_secs(),
                Client,
            ),
            Error::WithHeaders(e, _) => e.mapping(),
        }
    }

    /// This error, answered with `headers` too.
    pub fn with_headers(self, headers: http::HeaderMap) -> Error {
        match self {
            Error::WithHeaders(e, mut first) => {
                first.extend(headers);
                Error::WithHeaders(e, first)
            }
            e => Error::WithHeaders(Box::new(e), headers),
        }
    }

    /// The answer the client gets: status, OpenAI error JSON, `Retry-After`.
    pub fn into_response(self) -> http::Response<Body> {
        let (error, extra) = match self {
            Error::WithHeaders(e, headers) => (*e, Some(headers)),
            e => (e, None),
        };
        let mut response = error.answer();
        if let Some(extra) = extra {
            response.headers_mut().extend(extra);
        }
        response
    }

    fn answer(self) -> http::Response<Body> {
        let mapping = self.mapping();
        let json = ErrorBody {
            message: &self.to_string(),
            kind: mapping.kind,
            code: mapping.code,
        }
        .to_bytes();
        let mut response = http::Response::new(body::full(json));
        *response.status_mut() = mapping.status;
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Some(secs) = mapping.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if let Error::RateLimit(e) = &self {
            headers.extend(e.headers.clone());
        }
        if let Error::Auth(_) = &self {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Error::Upstream(e) = &self
            && let Some(attempts) = e.attempts()
        {
            crate::context::Outcome::of(&mut response).attempts = Some(attempts);
        }
        response
    }
}

/// How an upstream error becomes an answer.
fn upstream(e: &UpstreamError) -> Mapping {
    use ErrorSource::{Client, Upstream};
    match e {
        UpstreamError::Connect { .. } => m(
            StatusCode::BAD_GATEWAY,
            "upstream_error",
            "upstream_unreachable",
            None,
            Upstream,
        ),
        UpstreamError::Timeout { .. } => m(
            StatusCode::GATEWAY_TIMEOUT,
            "timeout_error",
            "upstream_timeout",
            None,
            Upstream,
        ),
        UpstreamError::Failed { .. } => m(
            StatusCode::BAD_GATEWAY,
            "upstream_error",
            "upstream_failed",
            None,
            Upstream,
        ),
        UpstreamError::RequestBodyTooLarge { .. } => m(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request_error",
            "request_too_large",
            None,
            Client,
        ),
        UpstreamError::Unavailable {
            retry_after,
            rate_limited,
            ..
        } => {
            // Rounded up: waiting a bit less would find it still out.
            let seconds = retry_after.as_secs_f64().ceil().clamp(1.0, 86_400.0) as u32;
            if *rate_limited {
                m(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limit_error",
                    "upstream_rate_limited",
                    Some(seconds),
                    ErrorSource::OutOfRotation,
                )
            } else {
                m(
                    StatusCode::BAD_GATEWAY,
                    "upstream_error",
                    "upstream_unavailable",
                    Some(seconds),
                    ErrorSource::OutOfRotation,
                )
            }
        }
        UpstreamError::After { error, .. } => upstream(error),
        UpstreamError::PathOutside { .. } => m(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            "not_found",
            None,
            Client,
        ),
        UpstreamError::NoRoute { .. } => m(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            "model_not_found",
            None,
            Client,
        ),
        UpstreamError::RequestBody { .. } => m(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "invalid_body",
            None,
            Client,
        ),
        UpstreamError::RequestBodyTimeout { .. } => m(
            StatusCode::REQUEST_TIMEOUT,
            "invalid_request_error",
            "request_body_timeout",
            None,
            Client,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(e: impl Into<Error>) -> (u16, &'static str, Option<u32>) {
        let m = e.into().mapping();
        (m.status.as_u16(), m.kind, m.retry_after)
    }

    fn json_error() -> serde_json::Error {
        match serde_json::from_str::<serde_json::Value>("{") {
            Err(e) => e,
            Ok(_) => unreachable!("`{{` is not JSON"),
        }
    }

    #[test]
    fn ingress_errors_are_client_400s() {
        assert_eq!(
            status(IngressError::InvalidJson(json_error())),
            (400, "invalid_request_error", None)
        );
        assert_eq!(
            status(IngressError::NotAnObject),
            (400, "invalid_request_error", None)
        );
        assert_eq!(
            status(IngressError::BodyRead("reset".into())),
            (400, "invalid_request_error", None)
        );
        assert_eq!(
            status(IngressError::InvalidHeader {
                name: "x-sluice-prune",
                expected: "on, off"
            }),
            (400, "invalid_request_error", None)
        );
        assert_eq!(
            status(IngressError::TooDeep { max: 64 }),
            (400, "invalid_request_error", None)
        );
        assert_eq!(
            status(IngressError::BodyTimeout {
                after: std::time::Duration::from_secs(30)
            }),
            (408, "invalid_request_error", None)
        );
        assert_eq!(
            status(IngressError::UriTooLong { limit: 8192 }),
            (414, "invalid_request_error", None)
        );
        assert_eq!(
            status(IngressError::PathOutside {
                path: "/v1/../x".into()
            }),
            (404, "invalid_request_error", None)
        );
        assert_eq!(
            status(IngressError::DuplicateHost),
            (400, "invalid_request_error", None)
        );
    }

    #[test]
    fn edge_errors() {
        let not_found = EdgeError::NotFound {
            method: http::Method::GET,
            path: "/x".into(),
        };
        assert_eq!(status(not_found), (404, "invalid_request_error", None));
        assert_eq!(
            status(EdgeError::PayloadTooLarge { limit: 10 }),
            (413, "invalid_request_error", None)
        );
        assert_eq!(
            status(EdgeError::Overloaded),
            (503, "overloaded_error", Some(1))
        );
        assert_eq!(
            status(EdgeError::ShuttingDown),
            (503, "overloaded_error", Some(1))
        );
        assert_eq!(
            status(EdgeError::Timeout {
                after: std::time::Duration::from_secs(1)
            }),
            (504, "timeout_error", None)
        );
        assert_eq!(status(EdgeError::Panic), (500, "server_error", None));
    }

    #[test]
    fn upstream_errors() {
        let name = || "openai".to_string();
        assert_eq!(
            status(UpstreamError::Connect {
                upstream: name(),
                reason: "refused".into()
            }),
            (502, "upstream_error", None)
        );
        assert_eq!(
            status(UpstreamError::Timeout { upstream: name() }),
            (504, "timeout_error", None)
        );
        assert_eq!(
            status(UpstreamError::Failed {
                upstream: name(),
                reason: "reset".into()
            }),
            (502, "upstream_error", None)
        );
        assert_eq!(
            status(UpstreamError::PathOutside {
                path: "/v1/../x".into()
            }),
            (404, "invalid_request_error", None)
        );
        assert_eq!(
            status(UpstreamError::RequestBodyTooLarge { limit: 1 }),
            (413, "invalid_request_error", None)
        );
        assert_eq!(
            status(UpstreamError::RequestBody {
                reason: "truncated".into()
            }),
            (400, "invalid_request_error", None)
        );
        assert_eq!(
            status(UpstreamError::RequestBodyTimeout {
                after: std::time::Duration::from_secs(30)
            }),
            (408, "invalid_request_error", None)
        );
        assert_eq!(
            status(UpstreamError::NoRoute {
                model: "llama".into()
            }),
            (404, "invalid_request_error", None)
        );
    }

    #[test]
    fn session_errors() {
        let invalid = SessionError::InvalidHeader {
            header: http::HeaderName::from_static("x-session-id"),
        };
        assert_eq!(
            status(invalid.clone()),
            (400, "invalid_request_error", None)
        );
        assert_eq!(Error::from(invalid).mapping().code, "invalid_header");
        let busy = SessionError::Busy {
            waited: std::time::Duration::from_secs(1),
        };
        assert_eq!(status(busy.clone()), (503, "overloaded_error", Some(1)));
        assert_eq!(Error::from(busy).mapping().code, "session_busy");
    }

    #[tokio::test]
    async fn response_is_openai_shaped() {
        use http_body_util::BodyExt;
        let response = Error::from(EdgeError::Overloaded).into_response();
        assert_eq!(response.status(), 503);
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");
        let bytes = match response.into_body().collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(e) => panic!("body: {e}"),
        };
        let v: serde_json::Value = match serde_json::from_slice(&bytes) {
            Ok(v) => v,
            Err(e) => panic!("json: {e}"),
        };
        assert_eq!(v["error"]["type"], "overloaded_error");
        assert_eq!(v["error"]["code"], "overloaded");
        assert!(v["error"]["param"].is_null());
        assert!(
            v["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
    }
}
