//! One request through the mock: count and optionally record it, read its body, apply
//! the `x-mock-*` controls (timing and faults), dispatch by path, and add OpenAI's
//! response headers.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use http::request::Parts;
use http::{HeaderName, HeaderValue, Method, Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use super::body::{End, MockBody};
use super::controls::{Controls, Fault};
use super::echo::{self, BodyDigest};
use super::fault::{self, Dropped, KeyHasher};
use super::reply::ApiError;
use super::synth::Fnv;
use super::{State, chat, completions, embeddings, models, responses};

const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const PROCESSING_MS: HeaderName = HeaderName::from_static("openai-processing-ms");
const OPENAI_VERSION: HeaderName = HeaderName::from_static("openai-version");
/// The retry hint OpenAI sends beside `Retry-After`, in milliseconds.
const RETRY_AFTER_MS: HeaderName = HeaderName::from_static("retry-after-ms");

/// What a request is asking for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Route<'a> {
    Chat,
    Completions,
    Embeddings,
    Responses,
    Models,
    Model(&'a str),
    Echo,
    NotFound,
}

impl<'a> Route<'a> {
    pub(crate) fn of(method: &Method, path: &'a str) -> Self {
        let Some(rest) = path.strip_prefix("/v1/") else {
            return Self::NotFound;
        };
        match (method, rest) {
            (&Method::POST, "chat/completions") => Self::Chat,
            (&Method::POST, "completions") => Self::Completions,
            (&Method::POST, "embeddings") => Self::Embeddings,
            (&Method::POST, "responses") => Self::Responses,
            (&Method::GET, "models") => Self::Models,
            (&Method::GET, _) => match rest.strip_prefix("models/") {
                Some(id) if !id.is_empty() => Self::Model(id),
                _ => Self::Echo,
            },
            _ => Self::Echo,
        }
    }

    /// The endpoint parses the body as JSON, so it must be held whole.
    fn parses_body(self) -> bool {
        matches!(
            self,
            Self::Chat | Self::Completions | Self::Embeddings | Self::Responses
        )
    }
}

/// Answers one request; failures become OpenAI-shaped error responses, and
/// `x-mock-fault: drop` the error that makes hyper close the connection unanswered.
pub(crate) async fn handle(
    state: Arc<State>,
    req: Request<Incoming>,
) -> Result<Response<MockBody>, Dropped> {
    let started = Instant::now();
    let seq = state.requests.fetch_add(1, Ordering::Relaxed);
    let request_id = req
        .headers()
        .get(&X_REQUEST_ID)
        .cloned()
        .unwrap_or_else(new_request_id);
    let mut response = match answer(&state, seq, req).await {
        Ok(response) => response,
        Err(Refusal::Error(error)) => error.into_response(),
        Err(Refusal::Drop) => return Err(Dropped),
    };
    let headers = response.headers_mut();
    headers.insert(X_REQUEST_ID, request_id);
    let elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    headers.insert(PROCESSING_MS, HeaderValue::from(elapsed_ms));
    headers.insert(OPENAI_VERSION, HeaderValue::from_static("2020-10-01"));
    Ok(response)
}

/// A request answered other than normally.
enum Refusal {
    /// An error answer.
    Error(ApiError),
    /// No answer at all.
    Drop,
}

impl From<ApiError> for Refusal {
    fn from(error: ApiError) -> Self {
        Self::Error(error)
    }
}

async fn answer(
    state: &State,
    seq: usize,
    req: Request<Incoming>,
) -> Result<Response<MockBody>, Refusal> {
    let (parts, body) = req.into_parts();
    let route = Route::of(&parts.method, parts.uri.path());
    let controls = Controls::from_headers(&parts.headers, &state.opts);
    // Counting by `x-mock-fail-times` needs the fault key, which may cover the body.
    let mut key = match &controls {
        Ok(c) if c.fault.is_some() && c.when.times.is_some() => {
            Some(KeyHasher::new(&c.when, &parts))
        }
        _ => None,
    };
    let keep = state.opts.record || route.parses_body();
    let (bytes, digest) = read_body(body, keep, route == Route::Echo, key.as_mut())
        .await
        .map_err(|e| {
            ApiError::invalid_request(format!("could not read the request body: {e}"), None)
        })?;
    if state.opts.record {
        state.record(seq, &parts, bytes.clone());
    }
    if route == Route::NotFound {
        return Err(ApiError::invalid_url(&parts.method, parts.uri.path()).into());
    }

    let controls = controls.map_err(|e| ApiError::invalid_request(e.to_string(), None))?;
    let fault = controls.fault.as_ref().filter(|_| {
        fault::applies(
            &controls.when,
            key.as_ref().map(KeyHasher::finish),
            &state.faults,
        )
    });
    if !controls.latency.is_zero() {
        tokio::time::sleep(controls.latency).await;
    }
    let cut = match fault {
        None => None,
        Some(Fault::Status {
            status,
            retry_after,
            retry_after_ms,
        }) => {
            let mut response = ApiError::injected(*status, retry_after.clone()).into_response();
            if let Some(ms) = retry_after_ms {
                response.headers_mut().insert(RETRY_AFTER_MS, ms.clone());
            }
            return Ok(response);
        }
        Some(Fault::Drop) => return Err(Refusal::Drop),
        // Dropped, and the connection with it, when the client goes away.
        Some(Fault::Hang) => return std::future::pending().await,
        Some(Fault::FailAfterChunks(events)) => Some((*events, End::Fail)),
        Some(Fault::StallAfterChunks(events)) => Some((*events, End::Stall)),
    };

    let response = match route {
        Route::Chat => chat::handle(&bytes, &controls),
        Route::Completions => completions::handle(&bytes, &controls),
        Route::Embeddings => embeddings::handle(&bytes),
        Route::Responses => responses::handle(&bytes, &controls),
        Route::Models => models::list(),
        Route::Model(id) => models::retrieve(id),
        Route::Echo => echo::handle(&parts, digest),
        Route::NotFound => Err(ApiError::invalid_url(&parts.method, parts.uri.path())),
    }?;
    Ok(match cut {
        // Only event streams are cut; whole answers go out as they are.
        Some((events, end)) => response.map(|body| body.cut_after(events, end)),
        None => response,
    })
}

/// Reads the body to its end, counting it, hashing it when `hash`, feeding it to the
/// fault `key` when given, and keeping the bytes only when `keep`, so large uploads
/// stream through without being held.
async fn read_body(
    mut body: Incoming,
    keep: bool,
    hash: bool,
    mut key: Option<&mut KeyHasher>,
) -> Result<(Bytes, BodyDigest), hyper::Error> {
    let mut len = 0u64;
    let mut fnv = Fnv::new();
    let mut kept: Vec<Bytes> = Vec::new();
    while let Some(frame) = body.frame().await {
        // Trailers carry no body bytes.
        let Ok(data) = frame?.into_data() else {
            continue;
        };
        len += data.len() as u64;
        if hash {
            fnv.update(&data);
        }
        if let Some(key) = key.as_deref_mut() {
            key.update(&data);
        }
        if keep && !data.is_empty() {
            kept.push(data);
        }
    }
    let bytes = match kept.len() {
        0 => Bytes::new(),
        1 => kept.pop().unwrap_or_default(),
        _ => {
            let mut buf = BytesMut::with_capacity(kept.iter().map(Bytes::len).sum());
            kept.iter().for_each(|b| buf.extend_from_slice(b));
            buf.freeze()
        }
    };
    let digest = BodyDigest {
        len,
        fnv1a64: fnv.finish(),
    };
    Ok((bytes, digest))
}

fn new_request_id() -> HeaderValue {
    let id = format!("req_{:032x}", fastrand::u128(..));
    HeaderValue::try_from(id).unwrap_or_else(|_| HeaderValue::from_static("req_mock"))
}

impl State {
    fn record(&self, seq: usize, parts: &Parts, body: Bytes) {
        let request = super::RecordedRequest {
            method: parts.method.clone(),
            path_and_query: parts
                .uri
                .path_and_query()
                .map_or_else(|| parts.uri.path().to_owned(), |pq| pq.as_str().to_owned()),
            headers: parts.headers.clone(),
            body,
        };
        self.recorded_lock().push((seq, request));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_by_method_and_path() {
        let post = Method::POST;
        let get = Method::GET;
        assert_eq!(Route::of(&post, "/v1/chat/completions"), Route::Chat);
        assert_eq!(Route::of(&post, "/v1/completions"), Route::Completions);
        assert_eq!(Route::of(&post, "/v1/embeddings"), Route::Embeddings);
        assert_eq!(Route::of(&post, "/v1/responses"), Route::Responses);
        assert_eq!(Route::of(&get, "/v1/models"), Route::Models);
        assert_eq!(
            Route::of(&get, "/v1/models/org/m-1"),
            Route::Model("org/m-1")
        );
        assert_eq!(Route::of(&get, "/v1/models/"), Route::Echo);
        assert_eq!(Route::of(&get, "/v1/chat/completions"), Route::Echo);
        assert_eq!(Route::of(&post, "/v1/files"), Route::Echo);
        assert_eq!(Route::of(&Method::DELETE, "/v1/models/x"), Route::Echo);
        assert_eq!(Route::of(&get, "/v1"), Route::NotFound);
        assert_eq!(Route::of(&get, "/healthz"), Route::NotFound);
        assert_eq!(Route::of(&post, "/chat/completions"), Route::NotFound);
    }
}
