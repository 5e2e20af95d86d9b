//! Answering a hit in the form the request wants: a stored stream replayed,
//! a plain answer replayed as a stream, a stream assembled into a plain
//! answer, or a live follower of a stream in flight.

use std::sync::Arc;

use bytes::Bytes;
use http::Response;
use http::header::{self, HeaderValue};

use super::live::LiveStream;
use super::store::Entry;
use crate::body::{self, Body};
use crate::context::Outcome;
use crate::openai::{ApiRequest, Endpoint, chat_stream, other_streams};

/// The form of answer a request wants.
#[derive(Debug, Clone, Copy)]
pub(super) struct Wanted {
    pub(super) endpoint: Endpoint,
    pub(super) stream: bool,
    /// `stream_options.include_usage`: a final usage chunk.
    pub(super) usage: bool,
}

impl Wanted {
    pub(super) fn of(api: &ApiRequest) -> Wanted {
        let usage = api
            .get::<serde_json::Value>("stream_options")
            .and_then(Result::ok)
            .and_then(|o| o.get("include_usage").and_then(serde_json::Value::as_bool))
            .unwrap_or(false);
        Wanted {
            endpoint: api.endpoint(),
            stream: api.stream(),
            usage,
        }
    }
}

/// A follower's answer: the leader's stream, from its first chunk, live.
pub(super) fn follow(live: &Arc<LiveStream>) -> Response<Body> {
    let mut response = Response::new(live.follow());
    let outcome = Outcome::of(&mut response);
    outcome.prompt_tokens = live.prompt();
    outcome.attempts = Some(0);
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream; charset=utf-8"),
    );
    response
}

/// The plain answer a recorded stream of `endpoint` amounts to.
pub(super) fn assemble(endpoint: Endpoint, stream: &[u8]) -> Option<serde_json::Value> {
    match endpoint {
        Endpoint::ChatCompletions => chat_stream::assemble(stream),
        Endpoint::Completions => other_streams::assemble_completion(stream),
        Endpoint::Responses => other_streams::assemble_response(stream),
        Endpoint::Embeddings | Endpoint::Other => None,
    }
}

/// A plain answer of `endpoint` replayed as the stream its API sends.
fn synthesize(endpoint: Endpoint, plain: &serde_json::Value, usage: bool) -> Option<Vec<u8>> {
    match endpoint {
        Endpoint::ChatCompletions => chat_stream::synthesize(plain, usage),
        Endpoint::Completions => other_streams::synthesize_completion(plain, usage),
        Endpoint::Responses => other_streams::synthesize_response(plain),
        Endpoint::Embeddings | Endpoint::Other => None,
    }
}

/// The answer to a hit, in the form the request wants: the stored stream
/// as recorded when it fits, else one replayed from the plain answer; the
/// plain answer (recorded, or assembled from a recorded stream). `None` when
/// the stored answer cannot take the wanted form (then it is a miss).
pub(super) fn hit(entry: &Entry, tier: &'static str, wants: Wanted) -> Option<Response<Body>> {
    let (body, content_type) = if wants.stream {
        let stream = match &entry.stream {
            Some(recorded) if recorded.usage == wants.usage => recorded.sse.clone(),
            _ => {
                let plain = serde_json::from_slice(&entry.body).ok()?;
                Bytes::from(synthesize(wants.endpoint, &plain, wants.usage)?)
            }
        };
        (
            stream,
            HeaderValue::from_static("text/event-stream; charset=utf-8"),
        )
    } else {
        (entry.body.clone(), entry.content_type.clone())
    };
    let mut response = Response::new(body::full(body));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, content_type);
    headers.insert(header::AGE, HeaderValue::from(entry.age()));
    let outcome = Outcome::of(&mut response);
    outcome.cache_tier = Some(tier);
    outcome.prompt_tokens = entry.prompt;
    outcome.attempts = Some(0);
    Some(response)
}
