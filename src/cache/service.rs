//! The cache layer's tower service: looks an understood request up, answers
//! hits (replaying streams), joins identical requests in flight, and records
//! what the upstream answers to a miss.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::BytesMut;
use coalesce::{FlightGuard, Role};
use directives::Directives;
use futures_util::FutureExt;
use futures_util::future::{Either, Map};
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use live::{LiveStream, Publisher};
use record::{Recorder, Recording};
use replay::{Wanted, follow, hit};
use tower::{Layer, Service};

use crate::body::{self, Body};
use crate::config::CacheConfig;
use crate::error::Error;
use crate::openai::{ApiRequest, Endpoint};
use crate::report::usage::UsageSlot;

use super::*;

/// The cache layer: enabled, or a pass-through that marks understood
/// requests `bypass`.
#[derive(Debug, Clone)]
pub enum CacheLayer {
    Enabled(Arc<Cache>),
    Disabled,
}

impl CacheLayer {
    pub fn new(config: &CacheConfig, settings: String) -> CacheLayer {
        if config.enabled {
            CacheLayer::Enabled(Arc::new(Cache::new(config, settings)))
        } else {
            CacheLayer::Disabled
        }
    }
}

impl<S> Layer<S> for CacheLayer {
    type Service = CacheService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        CacheService {
            inner,
            cache: match self {
                CacheLayer::Enabled(cache) => Some(cache.clone()),
                CacheLayer::Disabled => None,
            },
        }
    }
}

#[derive(Debug, Clone)]
pub struct CacheService<S> {
    inner: S,
    cache: Option<Arc<Cache>>,
}

type BoxFuture = Pin<Box<dyn Future<Output = Result<Response<Body>, Error>> + Send>>;
type Marked<F> = Map<F, fn(Result<Response<Body>, Error>) -> Result<Response<Body>, Error>>;

impl<S> Service<Request<Body>> for CacheService<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Error> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = Error;
    type Future = Either<Either<S::Future, Marked<S::Future>>, BoxFuture>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        if req.extensions().get::<ApiRequest>().is_none() {
            // Pass-through paths are not the cache's business.
            return Either::Left(Either::Left(self.inner.call(req)));
        }
        // Cache-Control is addressed to sluice, cache on or off: read here,
        // never forwarded.
        let mut req = req;
        let directives = Directives::from_headers(req.headers());
        req.headers_mut().remove(header::CACHE_CONTROL);
        let Some(cache) = self.cache.clone() else {
            return Either::Left(Either::Right(
                self.inner.call(req).map(mark_bypass as fn(_) -> _),
            ));
        };
        // The ready service is the one to call; leave a fresh clone behind.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        Either::Right(Box::pin(handle(cache, inner, req, directives)))
    }
}

fn mark_bypass(result: Result<Response<Body>, Error>) -> Result<Response<Body>, Error> {
    result.map(|response| mark(response, CacheOutcome::Bypass))
}

async fn handle<S>(
    cache: Arc<Cache>,
    mut inner: S,
    mut req: Request<Body>,
    directives: Directives,
) -> Result<Response<Body>, Error>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Error>,
{
    let Some(api) = req.extensions().get::<ApiRequest>() else {
        return inner.call(req).await.map(|r| mark(r, CacheOutcome::Bypass));
    };
    if !cache.cacheable(api, &directives) {
        return inner.call(req).await.map(|r| mark(r, CacheOutcome::Bypass));
    }
    if api.endpoint() == Endpoint::Embeddings
        && let Some(inputs) = api
            .get::<serde_json::Value>("input")
            .and_then(Result::ok)
            .as_ref()
            .and_then(embeddings::items)
    {
        let api = api.clone();
        return embeddings::handle(cache, inner, req, api, inputs, directives).await;
    }
    let Ok(key) = cache.key(&req, api) else {
        return inner.call(req).await.map(|r| mark(r, CacheOutcome::Bypass));
    };
    let limit_set = api.raw("max_tokens").is_some()
        || api.raw("max_completion_tokens").is_some()
        || api.raw("max_output_tokens").is_some();

    // A request for a key in flight waits for that flight, then looks
    // again; a leader that failed or went away leaves nothing to find, and
    // the follower tries itself (after a few rounds, without coalescing).
    let mut waited = false;
    let mut flight: Option<FlightGuard> = None;
    let mut publisher: Option<Publisher> = None;
    let wants = Wanted::of(api);
    if !directives.no_cache {
        for _ in 0..MAX_FLIGHT_ROUNDS {
            if let Some((entry, tier)) = cache.lookup(&key, &directives).await
                && let Some(answer) = hit(&entry, tier, wants)
            {
                let outcome = if waited {
                    CacheOutcome::Coalesced
                } else {
                    CacheOutcome::Hit
                };
                if let Some(tally) = req.extensions().get::<crate::report::Tally>() {
                    tally.served_from_cache(entry.usage, waited);
                }
                return Ok(mark(answer, outcome));
            }
            // A streamed request leads with a live stream others can follow.
            let offer = wants.stream.then(|| (LiveStream::new(), wants.usage));
            match cache.in_flight.join(key, offer.clone()) {
                Role::Leader(guard) => {
                    flight = Some(guard);
                    publisher = offer.map(|(live, _)| Publisher(live));
                    break;
                }
                Role::Follower { done, live } => {
                    // A stream joins a streaming leader where it is: the
                    // chunks so far, then the rest live. Otherwise it waits
                    // for the flight to end and looks again.
                    if let Some((live, usage)) = live
                        && wants.stream
                        && usage == wants.usage
                        && live.started().await
                    {
                        if let Some(tally) = req.extensions().get::<crate::report::Tally>() {
                            tally.followed(live.usage());
                        }
                        return Ok(mark(follow(&live), CacheOutcome::Coalesced));
                    }
                    coalesce::landed(done).await;
                    waited = true;
                }
            }
        }
    }

    // Store what any client can read: the upstream's identity encoding.
    req.headers_mut().remove(header::ACCEPT_ENCODING);
    let usage = req.extensions().get::<UsageSlot>().cloned();
    let response = inner.call(req).await?;
    // A copy, not a clone: a header value may point into the connection's
    // whole read buffer, which a stored entry would then keep alive.
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| HeaderValue::from_bytes(v.as_bytes()).ok());
    let expected: &[u8] = if wants.stream {
        b"text/event-stream"
    } else {
        b"application/json"
    };
    let storable = response.status() == StatusCode::OK
        && !response.headers().contains_key(header::CONTENT_ENCODING)
        && content_type
            .as_ref()
            .is_some_and(|ct| ct.as_bytes().starts_with(expected));
    let response = mark(response, CacheOutcome::Miss);
    let (Some(content_type), true) = (content_type, storable) else {
        return Ok(response);
    };
    let (parts, body) = response.into_parts();
    let ttl = directives.ttl.unwrap_or(cache.ttl);
    let prompt = parts
        .extensions
        .get::<crate::context::Outcome>()
        .and_then(|o| o.prompt_tokens);
    if let (Some(publisher), Some(prompt)) = (&publisher, prompt) {
        publisher.0.set_prompt(prompt);
    }
    if let (Some(publisher), Some(slot)) = (&publisher, &usage) {
        publisher.0.set_usage(slot.clone());
    }
    let recorder = Recorder {
        inner: body,
        publisher,
        state: Some(Recording {
            cache,
            key,
            ttl,
            content_type,
            limit_set,
            wants,
            prompt,
            usage,
            buffer: BytesMut::new(),
            _flight: flight,
        }),
    };
    Ok(Response::from_parts(parts, body::boxed(recorder)))
}
