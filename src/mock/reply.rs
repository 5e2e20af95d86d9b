//! Building mock responses: JSON bodies, event streams, and errors in OpenAI's shape
//! (`{"error":{"message","type","param","code"}}`) so SDKs raise their usual exceptions.

use http::{HeaderValue, Response, StatusCode, header};
use serde::Serialize;

use super::body::{Event, MockBody};

const JSON: HeaderValue = HeaderValue::from_static("application/json");
const EVENT_STREAM: HeaderValue = HeaderValue::from_static("text/event-stream; charset=utf-8");

/// A 200 JSON response with `value` serialized once.
pub(crate) fn json<T: Serialize>(value: &T) -> Result<Response<MockBody>, ApiError> {
    let bytes = serde_json::to_vec(value)?;
    Ok(with_type(StatusCode::OK, JSON, MockBody::full(bytes)))
}

/// A 200 server-sent-event response releasing `events` one by one.
pub(crate) fn event_stream(events: Vec<Event>) -> Response<MockBody> {
    let mut response = with_type(StatusCode::OK, EVENT_STREAM, MockBody::events(events));
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

fn with_type(status: StatusCode, content_type: HeaderValue, body: MockBody) -> Response<MockBody> {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, content_type);
    response
}

/// An error answer in OpenAI's shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub kind: &'static str,
    pub param: Option<&'static str>,
    pub code: Option<&'static str>,
    pub retry_after: Option<HeaderValue>,
}

impl ApiError {
    /// 400 `invalid_request_error`.
    pub(crate) fn invalid_request(message: impl Into<String>, param: Option<&'static str>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            kind: "invalid_request_error",
            param,
            code: None,
            retry_after: None,
        }
    }

    /// 400 for a body that is not a JSON object, worded like OpenAI's.
    pub(crate) fn bad_json(detail: impl std::fmt::Display) -> Self {
        Self::invalid_request(
            format!(
                "We could not parse the JSON body of your request ({detail}). \
                 The OpenAI API expects a JSON payload."
            ),
            None,
        )
    }

    /// 404 for a path the API does not have, worded like OpenAI's.
    pub(crate) fn invalid_url(method: &http::Method, path: &str) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            message: format!("Invalid URL ({method} {path})"),
            kind: "invalid_request_error",
            param: None,
            code: None,
            retry_after: None,
        }
    }

    /// The error a client asked for with `x-mock-status` (or implied by
    /// `x-mock-fail-times` / `x-mock-fail-rate`); its type fits the status.
    pub(crate) fn injected(status: StatusCode, retry_after: Option<HeaderValue>) -> Self {
        let (kind, code) = if status == StatusCode::TOO_MANY_REQUESTS {
            ("rate_limit_error", Some("rate_limit_exceeded"))
        } else if status.is_server_error() {
            ("server_error", None)
        } else {
            ("invalid_request_error", None)
        };
        Self {
            status,
            message: format!("Mock upstream answered {status} as asked by its x-mock controls."),
            kind,
            param: None,
            code,
            retry_after,
        }
    }

    /// 500 for a failure inside the mock itself.
    pub(crate) fn internal(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: message.into(),
            kind: "server_error",
            param: None,
            code: None,
            retry_after: None,
        }
    }

    pub(crate) fn into_response(self) -> Response<MockBody> {
        #[derive(Serialize)]
        struct Envelope<'a> {
            error: Inner<'a>,
        }
        #[derive(Serialize)]
        struct Inner<'a> {
            message: &'a str,
            #[serde(rename = "type")]
            kind: &'a str,
            param: Option<&'a str>,
            code: Option<&'a str>,
        }
        let envelope = Envelope {
            error: Inner {
                message: &self.message,
                kind: self.kind,
                param: self.param,
                code: self.code,
            },
        };
        // Serializing plain strings cannot fail; an empty body would still carry the status.
        let bytes = serde_json::to_vec(&envelope).unwrap_or_default();
        let mut response = with_type(self.status, JSON, MockBody::full(bytes));
        if let Some(retry_after) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, retry_after);
        }
        response
    }
}

impl From<serde_json::Error> for ApiError {
    fn from(err: serde_json::Error) -> Self {
        Self::internal(format!(
            "mock upstream could not serialize its answer: {err}"
        ))
    }
}

/// Parses an understood endpoint's body: a JSON object into `T`, or a 400.
pub(crate) fn parse_object<'a, T: serde::Deserialize<'a>>(body: &'a [u8]) -> Result<T, ApiError> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    if first != Some(&b'{') {
        return Err(ApiError::bad_json("expected a JSON object"));
    }
    serde_json::from_slice(body).map_err(|e| {
        if e.is_data() {
            ApiError::invalid_request(format!("Invalid request body: {e}"), None)
        } else {
            ApiError::bad_json(e)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind_of(status: u16) -> (&'static str, Option<&'static str>) {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::IM_A_TEAPOT);
        let e = ApiError::injected(status, None);
        (e.kind, e.code)
    }

    #[test]
    fn injected_error_types_fit_status() {
        assert_eq!(
            kind_of(429),
            ("rate_limit_error", Some("rate_limit_exceeded"))
        );
        assert_eq!(kind_of(500), ("server_error", None));
        assert_eq!(kind_of(503), ("server_error", None));
        assert_eq!(kind_of(400), ("invalid_request_error", None));
        assert_eq!(kind_of(404), ("invalid_request_error", None));
    }

    #[test]
    fn parse_object_rejects_non_objects() {
        #[derive(serde::Deserialize)]
        struct Any {}
        for body in [&b"[1]"[..], b"", b"nope", b"{\"a\":"] {
            let err = parse_object::<Any>(body).err().map(|e| (e.status, e.kind));
            assert_eq!(
                err,
                Some((StatusCode::BAD_REQUEST, "invalid_request_error")),
                "{body:?}"
            );
        }
        assert!(parse_object::<Any>(b" {\"x\": 1}").is_ok());
    }
}
