//! The rate limit layer: takes each request's allowance before it goes on,
//! answers 429 over a limit, adds the `x-ratelimit-*` headers and settles
//! the token reservation when the answer is done.

use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::future::{BoxFuture, Either};
use http::{Request, Response};
use tower::{Layer, Service};

use crate::body::{self, Body};
use crate::config::{CacheConfig, RateLimitConfig};
use crate::context::Identity;
use crate::error::Error;
use crate::openai::ApiRequest;
use crate::report::usage::UsageSlot;
use crate::tokens::Counter;
use crate::tokens::service::Original;

use super::*;

/// The rate limit layer: limits configured, or off (a request then costs
/// one branch).
#[derive(Clone, Default)]
pub enum RateLimitLayer {
    Enabled(Arc<Limits>),
    #[default]
    Disabled,
}

impl std::fmt::Debug for Limits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limits")
            .field("local", &self.local)
            .field("shared", &self.shared.is_some())
            .finish()
    }
}

impl std::fmt::Debug for RateLimitLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RateLimitLayer::Enabled(limits) => f.debug_tuple("Enabled").field(limits).finish(),
            RateLimitLayer::Disabled => f.write_str("Disabled"),
        }
    }
}

impl RateLimitLayer {
    /// The limits of `config` (none when it sets none); shared through
    /// Redis when it, or else the cache, names one. Never waits for Redis.
    pub fn new(
        config: &RateLimitConfig,
        cache: &CacheConfig,
        counter: Arc<Counter>,
    ) -> RateLimitLayer {
        if !config.enabled() {
            return RateLimitLayer::Disabled;
        }
        let shared = config.shared_redis(cache).and_then(|url| {
            Shared::start(
                url,
                cache.redis_timeout,
                config.requests_per_minute,
                config.tokens_per_minute,
            )
            .map_err(|error| {
                tracing::error!(%error, "shared rate limits not started; each replica limits on its own");
            })
            .ok()
        });
        RateLimitLayer::Enabled(Arc::new(Limits {
            tokens_per_minute: config.tokens_per_minute,
            local: Local::new(config.requests_per_minute, config.tokens_per_minute),
            shared,
            counter,
        }))
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimit<S>;
    fn layer(&self, inner: S) -> RateLimit<S> {
        RateLimit {
            inner,
            limits: match self {
                RateLimitLayer::Enabled(limits) => Some(limits.clone()),
                RateLimitLayer::Disabled => None,
            },
        }
    }
}

#[derive(Clone)]
pub struct RateLimit<S> {
    inner: S,
    limits: Option<Arc<Limits>>,
}

impl<S> Service<Request<Body>> for RateLimit<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Error> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = Error;
    type Future = Either<S::Future, BoxFuture<'static, Result<Response<Body>, Error>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<Body>) -> Self::Future {
        let Some(limits) = self.limits.clone() else {
            return Either::Left(self.inner.call(req));
        };
        // The ready service is the one to call; leave a fresh clone behind.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Either::Right(Box::pin(async move {
            let client = req
                .extensions()
                .get::<Identity>()
                .cloned()
                .unwrap_or_else(|| Identity::of_credentials(req.headers()));
            let cost = match (
                &limits.tokens_per_minute,
                req.extensions().get::<ApiRequest>(),
            ) {
                (Some(_), Some(api)) => {
                    let api = api.clone();
                    let prompt = crate::tokens::service::count(&limits.counter, &api).await;
                    // Counted once: the tokens layer below reuses it.
                    Original::keep(req.extensions_mut(), &api, Some(prompt));
                    prompt.saturating_add(completion_bound(&api))
                }
                _ => 0,
            };
            let (verdict, backend) = limits.take(&client, cost).await;
            let headers = verdict_headers(&verdict);
            if let Some(denied) = verdict.denied {
                metrics::counter!(RATE_LIMITED_TOTAL, "limit" => denied.kind.label()).increment(1);
                return Err(Error::from(RateLimitError {
                    message: message(&verdict, denied),
                    denied,
                    headers,
                }));
            }
            let settle = limits.tokens_per_minute.is_some() && cost > 0;
            // The usage slot the metrics layer put in, or one of our own.
            let slot = match req.extensions().get::<UsageSlot>() {
                Some(slot) => slot.clone(),
                None => UsageSlot::default(),
            };
            if settle {
                slot.want_stream_usage();
                req.extensions_mut().insert(slot.clone());
            }
            let mut answer = match inner.call(req).await {
                Ok(answer) => answer,
                Err(error) => return Err(error.with_headers(headers)),
            };
            answer.headers_mut().extend(headers);
            if !settle {
                return Ok(answer);
            }
            let settlement = Settlement {
                limits,
                client,
                reserved: cost,
                slot,
                spent: answer.status().is_success() && !served_without_upstream(&answer),
                backend,
            };
            Ok(answer.map(|b| body::guarded(b, settlement)))
        }))
    }
}

/// Settles a request's token reservation once its answer is done (or
/// dropped): with the upstream's reported usage, or nothing when the answer
/// did not come from the upstream or failed; a successful answer without
/// usage keeps what was reserved.
struct Settlement {
    limits: Arc<Limits>,
    client: Identity,
    reserved: u64,
    slot: UsageSlot,
    spent: bool,
    backend: Backend,
}

impl Drop for Settlement {
    fn drop(&mut self) {
        let used = if self.spent {
            self.slot.get().unwrap_or(self.reserved)
        } else {
            0
        };
        let delta = i128::from(used) - i128::from(self.reserved);
        if delta == 0 {
            return;
        }
        match self.backend {
            Backend::Local => self.limits.local.settle(&self.client, delta),
            Backend::Shared => {
                let Ok(runtime) = tokio::runtime::Handle::try_current() else {
                    return;
                };
                let limits = self.limits.clone();
                let client = self.client.clone();
                runtime.spawn(async move {
                    if let Some(shared) = &limits.shared
                        && let Err(error) = shared.settle(&client, delta).await
                    {
                        tracing::debug!(%error, "shared rate limit not settled");
                    }
                });
            }
        }
    }
}

/// Answered by the cache (a hit, or a copy of an identical request's
/// answer): no upstream tokens were used.
fn served_without_upstream(answer: &Response<Body>) -> bool {
    use crate::context::{CacheOutcome, Outcome};
    Outcome::get(answer)
        .is_some_and(|o| matches!(o.cache, Some(CacheOutcome::Hit | CacheOutcome::Coalesced)))
}
