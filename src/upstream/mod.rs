//! The upstream end of the pipeline: pick the upstream for a request, send it
//! over that upstream's pooled client, retry or fall back while nothing has
//! reached the client, and hand the answer back as it comes.
//!
//! - [`route`]: the request's `model` against each upstream's glob patterns;
//!   upstreams with the same patterns share traffic by weight and speed,
//!   later matches are fallbacks.
//! - [`health`]: per-upstream circuit breaker, latency average and rest after
//!   a 429, shared by all workers.
//! - [`retry`]: the one retry policy (tower's `Retry` with sluice's
//!   [`RetryPolicy`](retry::RetryPolicy)): what is retried, backoff and
//!   `Retry-After`, fallback, the retry budget.
//! - [`attempt`]: one try at one upstream, up to the answer head (and a
//!   stream's first chunk).
//! - [`relay`]: the answer body on its way to the client: idle and overall
//!   timeouts, and an SSE error event when a stream breaks.
//! - [`pool`]: one shared HTTP client per upstream (keep-alive pool,
//!   TCP_NODELAY, timeouts, HTTP/2 by ALPN) and the pre-warming of its
//!   connections.
//! - [`forward`]: header rules, upstream URLs, send errors.

pub mod attempt;
pub mod forward;
pub mod health;
pub mod pool;
pub mod relay;
pub mod retry;
pub mod route;
use crate::report::usage;

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use http_body::Body as _;
use tower::{Service, ServiceExt};

pub use route::{Upstream, Upstreams};

use self::attempt::{Attempt, AttemptError, Payload, Prepared, Try};
use self::retry::{RetryPolicy, RetrySettings};
use crate::body::Body;
use crate::edge::timeout::Deadline;
use crate::error::Error;
use crate::openai::{ApiRequest, Endpoint, chat_stream};
use crate::tokens::{self, Counter};

pub use crate::error::UpstreamError;

/// The innermost service: forwards to the routed upstream, with retries and
/// fallback.
#[derive(Clone)]
pub struct UpstreamService {
    upstreams: Arc<Upstreams>,
    retry: Arc<RetrySettings>,
    body_limit: u64,
    /// Counts the completion of a stream that reported no usage.
    counter: Arc<Counter>,
}

impl UpstreamService {
    pub fn new(
        upstreams: Arc<Upstreams>,
        retry: Arc<RetrySettings>,
        body_limit: u64,
        counter: Arc<Counter>,
    ) -> Self {
        UpstreamService {
            upstreams,
            retry,
            body_limit,
            counter,
        }
    }
}

/// Reads the answer's usage into `slot` as it passes (and leaves out the
/// usage chunk the client did not ask for, when `strip`). A chat or
/// completions stream that reports no usage is counted with `counter` once
/// it is over.
fn observe(
    answer: Response<Body>,
    slot: usage::UsageSlot,
    strip: bool,
    prepared: &Arc<Prepared>,
    counter: &Arc<Counter>,
) -> Response<Body> {
    let events = answer
        .headers()
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
    let shape = if events {
        usage::Shape::Events { strip }
    } else {
        usage::Shape::Json
    };
    // The encoding a countable answer (a chat or completions stream whose
    // usage is not asked for) would be counted with.
    let countable = prepared
        .api
        .as_ref()
        .filter(|api| {
            events
                && !strip
                && matches!(
                    api.endpoint(),
                    Endpoint::ChatCompletions | Endpoint::Completions
                )
        })
        .map(|api| counter.encoding(api.model()));
    answer.map(|body| {
        let observed = usage::Observed::new(body, shape, slot);
        let Some(encoding) = countable else {
            return crate::body::boxed(observed);
        };
        encoding.preload();
        let (prepared, counter) = (prepared.clone(), counter.clone());
        crate::body::boxed(observed.counted_by(Box::new(move |events| {
            let api = prepared.api.as_ref()?;
            let completion = counter.text(encoding, &chat_stream::streamed_text(events));
            let prompt = tokens::prompt::request(&counter, api);
            Some(usage::Reported {
                prompt,
                completion,
                cached: 0,
                total: prompt + completion,
            })
        })))
    })
}

/// How long a request without a [`Deadline`] (one not built by sluice's
/// stack) may take at most.
const NO_DEADLINE: Duration = Duration::from_secs(24 * 60 * 60);

type BoxFuture = Pin<Box<dyn Future<Output = Result<Response<Body>, Error>> + Send>>;

impl Service<Request<Body>> for UpstreamService {
    type Response = Response<Body>;
    type Error = Error;
    type Future = BoxFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let upstreams = self.upstreams.clone();
        let retry = self.retry.clone();
        let body_limit = self.body_limit;
        let counter = self.counter.clone();
        Box::pin(async move {
            let (mut parts, body) = req.into_parts();
            let mut api = parts.extensions.remove::<ApiRequest>();
            // Someone above wants the usage of an understood request: read
            // it from the answer, asking for it where it is optional.
            let usage = match &api {
                Some(_) => parts.extensions.remove::<usage::UsageSlot>(),
                None => None,
            };
            let strip = match (&usage, api.as_mut()) {
                (Some(slot), Some(api)) if slot.wants_stream_usage() => usage::ask(api),
                _ => false,
            };
            let model = api.as_ref().and_then(ApiRequest::model);
            let first = upstreams.first(model, std::time::Instant::now())?;
            let deadline = parts
                .extensions
                .get::<Deadline>()
                .map_or_else(|| tokio::time::Instant::now() + NO_DEADLINE, |d| d.0);
            forward::strip_request_headers(&mut parts.headers);
            let payload = match &api {
                Some(api) => Payload::Bytes(api.to_bytes()),
                None if body.is_end_stream() || body.size_hint().exact() == Some(0) => {
                    Payload::Bytes(bytes::Bytes::new())
                }
                None => Payload::Once(Mutex::new(Some(body))),
            };
            let prepared = Prepared {
                method: parts.method,
                uri: parts.uri,
                headers: parts.headers,
                payload,
                stream: api.as_ref().is_some_and(ApiRequest::stream),
                api,
            };
            retry.deposit();
            let attempt = Attempt {
                settings: retry.clone(),
                body_limit,
            };
            let policy = RetryPolicy::new(retry, upstreams);
            let prepared = Arc::new(prepared);
            let t = Try {
                prepared: prepared.clone(),
                upstream: first,
                deadline,
            };
            let answer = tower::retry::Retry::new(policy, attempt)
                .oneshot(t)
                .await
                .map_err(AttemptError::into_error)?;
            Ok(match usage {
                Some(slot) if answer.status().is_success() => {
                    observe(answer, slot, strip, &prepared, &counter)
                }
                _ => answer,
            })
        })
    }
}
