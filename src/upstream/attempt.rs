//! One attempt at an upstream: send the prepared request, wait for its answer
//! head (and, for a stream, its first bytes), and say whether a failure is
//! worth another try.
//!
//! Everything that can still be retried happens here, before the answer is
//! handed up: a retryable status has its (small) error body read whole so the
//! last one can be returned as the upstream sent it; a stream is held until
//! its first chunk, so a stream that breaks or stays silent before that is
//! retried too. Once handed up, the answer is relayed by [`Relay`].

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap};
use http::{Method, Response, StatusCode, Uri};
use http_body_util::BodyExt;
use tokio::time::Instant;
use tower::Service;

use super::forward::{ClientBodyError, classify, strip_response_headers, upstream_uri};
use super::health::Outcome;
use super::relay::Relay;
use super::retry::{Reason, RetrySettings};
use super::{Upstream, UpstreamError};
use crate::body::{self, Body};
use crate::observe::{UPSTREAM_ATTEMPTS_TOTAL, UPSTREAM_REQUESTS_TOTAL, status_label};
use crate::openai::ApiRequest;

/// Error bodies of retryable answers are read up to this size (OpenAI's are
/// a few hundred bytes); a longer one is cut there.
const ERROR_BODY_LIMIT: usize = 64 * 1024;

/// A request as it goes upstream, kept so it can be sent again.
pub struct Prepared {
    pub method: Method,
    /// The client's URI (`/v1/...`); each upstream maps it onto its base URL.
    pub uri: Uri,
    /// The client's headers, less hop-by-hop ones and sluice's own.
    pub headers: HeaderMap,
    pub payload: Payload,
    /// The parsed request, for understood endpoints.
    pub api: Option<ApiRequest>,
    /// The client asked for a streamed answer.
    pub stream: bool,
}

/// The request body.
pub enum Payload {
    /// Held whole (understood endpoints, and bodiless requests): can be resent.
    Bytes(Bytes),
    /// Streamed through as it arrives (uploads): sent once, never retried.
    Once(Mutex<Option<Body>>),
}

/// What the retry policy works on: the prepared request, the upstream this
/// attempt goes to, and the request's deadline.
#[derive(Clone)]
pub struct Try {
    pub prepared: Arc<Prepared>,
    pub upstream: Arc<Upstream>,
    /// The client gets an answer by then (`server.request_timeout`).
    pub deadline: Instant,
}

impl Try {
    /// Whether the body can be sent again.
    pub fn replayable(&self) -> bool {
        matches!(self.prepared.payload, Payload::Bytes(_))
    }

    pub fn model(&self) -> Option<&str> {
        self.prepared.api.as_ref().and_then(ApiRequest::model)
    }
}

/// A failed attempt.
#[derive(Debug)]
pub struct AttemptError {
    pub error: UpstreamError,
    /// Why another try could help; `None` when it cannot.
    pub retryable: Option<Reason>,
    /// Attempts made for the request in all, set when the policy gives up.
    pub attempts: u32,
}

/// Sends one [`Try`].
#[derive(Clone)]
pub struct Attempt {
    pub settings: Arc<RetrySettings>,
    pub body_limit: u64,
}

impl Service<Try> for Attempt {
    type Response = Response<Body>;
    type Error = AttemptError;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, AttemptError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), AttemptError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, t: Try) -> Self::Future {
        let settings = self.settings.clone();
        let body_limit = self.body_limit;
        Box::pin(async move { attempt(t, &settings, body_limit).await })
    }
}

async fn attempt(
    t: Try,
    settings: &RetrySettings,
    body_limit: u64,
) -> Result<Response<Body>, AttemptError> {
    let upstream = &t.upstream;
    let prepared = &t.prepared;
    let request = build(upstream, prepared)?;
    let started = Instant::now();
    // The whole exchange is bounded by `timeout`; a stream's first bytes also
    // by `first_byte_timeout`; nothing waits past the request's deadline.
    let ends_at = started + upstream.timeout;
    let first_byte_by = if prepared.stream {
        ends_at.min(started + upstream.first_byte_timeout)
    } else {
        ends_at
    }
    .min(t.deadline);

    let sent = tokio::time::timeout_at(first_byte_by, upstream.client.request(request)).await;
    let answer = match sent {
        Err(_) => return Err(timed_out(upstream)),
        Ok(Err(error)) => {
            let (error, retryable) = classify(upstream, &error, body_limit);
            return Err(failed(upstream, error, retryable));
        }
        Ok(Ok(answer)) => answer,
    };
    let took = started.elapsed();
    upstream.health.observe_latency(took);
    upstream.hot.duration.record(took.as_secs_f64());
    let status = answer.status();
    if status == StatusCode::OK {
        upstream.hot.status_200.increment(1);
    } else {
        metrics::counter!(UPSTREAM_REQUESTS_TOTAL, "upstream" => upstream.label.clone(), "status" => status_label(status))
            .increment(1);
    }

    let (mut parts, incoming) = answer.into_parts();
    strip_response_headers(&mut parts.headers);
    parts
        .extensions
        .get_or_insert_default::<crate::context::Outcome>()
        .upstream = Some(upstream.name_header.clone());

    if settings.retries(status) {
        // Read whole so the last one can be returned as it came; its
        // connection goes back to the pool.
        record(upstream, status);
        count_attempt(upstream, Reason::Status(status).label());
        let bytes = read_limited(incoming, first_byte_by).await;
        parts.headers.remove(header::CONTENT_LENGTH);
        return Ok(Response::from_parts(parts, body::full(bytes)));
    }

    let sse = is_event_stream(&parts.headers);
    if sse {
        // A broken stream gets an error event appended: no fixed length.
        parts.headers.remove(header::CONTENT_LENGTH);
    }
    let mut relay = Relay::new(incoming, upstream.clone(), started, ends_at, sse);
    if sse && status == StatusCode::OK {
        // Held until the first chunk: a stream that fails before it is
        // retried like any answer that never came.
        match tokio::time::timeout_at(first_byte_by, relay.first_chunk()).await {
            Err(_) => return Err(timed_out(upstream)),
            Ok(Err(reason)) => {
                let error = UpstreamError::Failed {
                    upstream: upstream.name.clone(),
                    reason,
                };
                return Err(failed(upstream, error, Some(Reason::Reset)));
            }
            Ok(Ok(())) => {}
        }
    }
    record(upstream, status);
    if status.is_success() {
        upstream.hot.success.increment(1);
    } else {
        count_attempt(upstream, "status");
    }
    Ok(Response::from_parts(parts, body::boxed(relay)))
}

/// The upstream request for this attempt.
fn build(upstream: &Upstream, prepared: &Prepared) -> Result<http::Request<Body>, AttemptError> {
    let fail = |error: UpstreamError| AttemptError {
        error,
        retryable: None,
        attempts: 1,
    };
    let uri = upstream_uri(upstream, &prepared.uri).map_err(fail)?;
    let mut headers = prepared.headers.clone();
    if let Some(authorization) = &upstream.authorization {
        headers.insert(header::AUTHORIZATION, authorization.clone());
    }
    let body = match &prepared.payload {
        Payload::Bytes(bytes) => {
            // The body may have been rewritten: its length is the new one.
            headers.remove(header::CONTENT_LENGTH);
            body::full(bytes.clone())
        }
        Payload::Once(slot) => slot
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
            // Its errors marked as the client's (see `classify`).
            .map(|body| body::boxed(body.map_err(ClientBodyError)))
            .ok_or_else(|| {
                fail(UpstreamError::Failed {
                    upstream: upstream.name.clone(),
                    reason: "the request body was streamed already and cannot be sent again"
                        .to_owned(),
                })
            })?,
    };
    let mut request = http::Request::new(body);
    *request.method_mut() = prepared.method.clone();
    *request.uri_mut() = uri;
    // The pooled client speaks HTTP/2 on its own when the upstream offers it.
    *request.version_mut() = http::Version::HTTP_11;
    *request.headers_mut() = headers;
    Ok(request)
}

fn timed_out(upstream: &Upstream) -> AttemptError {
    super::forward::count_error(upstream, "timeout");
    let error = UpstreamError::Timeout {
        upstream: upstream.name.clone(),
    };
    failed(upstream, error, Some(Reason::Timeout))
}

/// A failed attempt, counted; one another try could help is also a failure
/// of the upstream for its breaker.
fn failed(upstream: &Upstream, error: UpstreamError, retryable: Option<Reason>) -> AttemptError {
    if retryable.is_some() {
        upstream
            .health
            .record(Outcome::Failure, std::time::Instant::now());
    }
    count_attempt(upstream, retryable.map_or("error", Reason::label));
    AttemptError {
        error,
        retryable,
        attempts: 1,
    }
}

/// An answer is a failure of the upstream when it is a 5xx.
fn record(upstream: &Upstream, status: StatusCode) {
    let outcome = if status.is_server_error() {
        Outcome::Failure
    } else {
        Outcome::Success
    };
    upstream.health.record(outcome, std::time::Instant::now());
}

fn count_attempt(upstream: &Upstream, outcome: &'static str) {
    metrics::counter!(UPSTREAM_ATTEMPTS_TOTAL, "upstream" => upstream.label.clone(), "outcome" => outcome)
        .increment(1);
}

fn is_event_stream(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.trim_start()
                .get(..17)
                .is_some_and(|t| t.eq_ignore_ascii_case("text/event-stream"))
        })
}

/// Reads an error body up to [`ERROR_BODY_LIMIT`] bytes or `by`, whichever
/// comes first; what arrived is kept.
async fn read_limited(mut incoming: hyper::body::Incoming, by: Instant) -> Bytes {
    let mut buffer = Vec::new();
    let read = async {
        while let Some(Ok(frame)) = incoming.frame().await {
            if let Ok(data) = frame.into_data() {
                let room = ERROR_BODY_LIMIT - buffer.len();
                buffer.extend_from_slice(&data[..data.len().min(room)]);
                if buffer.len() >= ERROR_BODY_LIMIT {
                    break;
                }
            }
        }
    };
    // Bounded by a short wait too, so a slow error body cannot hold a retry.
    let by = by.min(Instant::now() + Duration::from_secs(5));
    let _ = tokio::time::timeout_at(by, read).await;
    Bytes::from(buffer)
}

impl AttemptError {
    /// The error the client is answered with.
    pub fn into_error(self) -> crate::error::Error {
        crate::error::Error::Upstream(UpstreamError::After {
            attempts: self.attempts,
            error: Box::new(self.error),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn event_stream_content_types() {
        let mut h = HeaderMap::new();
        assert!(!is_event_stream(&h));
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream; charset=utf-8"),
        );
        assert!(is_event_stream(&h));
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("Text/Event-Stream"),
        );
        assert!(is_event_stream(&h));
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        assert!(!is_event_stream(&h));
    }
}
