//! Per-client rate limits: requests and tokens per minute.
//!
//! Each client identity ([`crate::context::Identity`]) may send
//! `requests_per_minute`
//! requests and use `tokens_per_minute` tokens a minute, with bursts up to a
//! whole minute's allowance (GCRA). A request's tokens are its prompt as
//! counted by sluice plus the completion it may ask for (`max_tokens` and
//! the like, times `n`), reserved before it is sent and settled with the
//! upstream's reported usage when the answer is done: cache hits and failed
//! requests give their tokens back, and a request without a completion
//! bound pays for what it used afterwards.
//!
//! Over a limit: 429 `rate_limit_error` with `Retry-After` and
//! `retry-after-ms`. Every answer carries OpenAI's `x-ratelimit-limit-*`,
//! `x-ratelimit-remaining-*` and `x-ratelimit-reset-*` headers.
//!
//! With a Redis URL the limits are shared by every replica (one script call
//! per request, bounded by the Redis timeout); while Redis is slow or down
//! this process's own limiter decides, so requests never fail or wait on
//! Redis (counted in `sluice_rate_limit_redis_fallbacks_total`).

pub mod local;
pub mod shared;

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::future::{BoxFuture, Either};
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response};
use tower::{Layer, Service};

use crate::body::{self, Body};
use crate::config::{CacheConfig, RateLimitConfig};
use crate::context::Identity;
use crate::error::Error;
use crate::openai::ApiRequest;
use crate::report::usage::UsageSlot;
use crate::tokens::Counter;
use crate::tokens::layer::Original;

pub use local::Local;
pub use shared::Shared;

pub const RATE_LIMITED_TOTAL: &str = "sluice_rate_limited_total";
pub const REDIS_FALLBACKS_TOTAL: &str = "sluice_rate_limit_redis_fallbacks_total";

pub use crate::error::{Denied, Kind, RateLimitError, Verdict, Window};

/// The limits of one config: this process's limiter and, with Redis, the
/// shared one.
pub struct Limits {
    tokens_per_minute: Option<u64>,
    local: Local,
    shared: Option<Shared>,
    counter: Arc<Counter>,
}

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
                    let prompt = crate::tokens::layer::count(&limits.counter, &api).await;
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

/// Where a request's share was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Local,
    Shared,
}

impl Limits {
    async fn take(&self, client: &Identity, cost: u64) -> (Verdict, Backend) {
        if let Some(shared) = &self.shared {
            match shared.take(client, cost).await {
                Ok(verdict) => return (verdict, Backend::Shared),
                Err(error) => {
                    metrics::counter!(REDIS_FALLBACKS_TOTAL).increment(1);
                    tracing::debug!(%error, "shared rate limit unavailable, using this process's");
                }
            }
        }
        (self.local.take(client, cost), Backend::Local)
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

/// The most completion tokens the request asks for (`max_tokens`,
/// `max_completion_tokens` or `max_output_tokens`, times `n`); 0 when
/// unbounded (settled with the usage afterwards).
fn completion_bound(api: &ApiRequest) -> u64 {
    let bound = ["max_completion_tokens", "max_tokens", "max_output_tokens"]
        .iter()
        .find_map(|key| api.get::<u64>(key).and_then(Result::ok))
        .unwrap_or(0);
    let n = api
        .get::<u64>("n")
        .and_then(Result::ok)
        .unwrap_or(1)
        .clamp(1, 128);
    bound.saturating_mul(n)
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::Requests => "requests",
            Kind::Tokens => "tokens",
            Kind::TooLarge { .. } => "too_large",
        }
    }
}

fn message(verdict: &Verdict, denied: Denied) -> String {
    let wait = reset_text(denied.retry_after);
    match denied.kind {
        Kind::Requests => format!(
            "Rate limit reached for requests per minute (limit {}). Please try again in {wait}.",
            verdict.requests.map_or(0, |w| w.limit)
        ),
        Kind::Tokens => format!(
            "Rate limit reached for tokens per minute (limit {}, remaining {}). Please try again in {wait}.",
            verdict.tokens.map_or(0, |w| w.limit),
            verdict.tokens.map_or(0, |w| w.remaining)
        ),
        Kind::TooLarge { requested } => format!(
            "Request too large for the tokens per minute limit: limit {}, requested {requested} \
             (prompt plus max_tokens). Shorten the prompt or lower max_tokens.",
            verdict.tokens.map_or(0, |w| w.limit)
        ),
    }
}

static LIMIT_REQUESTS: HeaderName = HeaderName::from_static("x-ratelimit-limit-requests");
static LIMIT_TOKENS: HeaderName = HeaderName::from_static("x-ratelimit-limit-tokens");
static REMAINING_REQUESTS: HeaderName = HeaderName::from_static("x-ratelimit-remaining-requests");
static REMAINING_TOKENS: HeaderName = HeaderName::from_static("x-ratelimit-remaining-tokens");
static RESET_REQUESTS: HeaderName = HeaderName::from_static("x-ratelimit-reset-requests");
static RESET_TOKENS: HeaderName = HeaderName::from_static("x-ratelimit-reset-tokens");
static RETRY_AFTER_MS: HeaderName = HeaderName::from_static("retry-after-ms");

/// OpenAI's rate limit headers for `verdict` (and `retry-after-ms` when
/// refused).
fn verdict_headers(verdict: &Verdict) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (window, names) in [
        (
            verdict.requests,
            [&LIMIT_REQUESTS, &REMAINING_REQUESTS, &RESET_REQUESTS],
        ),
        (
            verdict.tokens,
            [&LIMIT_TOKENS, &REMAINING_TOKENS, &RESET_TOKENS],
        ),
    ] {
        let Some(window) = window else { continue };
        let [limit, remaining, reset] = names;
        headers.insert(limit.clone(), HeaderValue::from(window.limit));
        headers.insert(remaining.clone(), HeaderValue::from(window.remaining));
        if let Ok(value) = HeaderValue::from_str(&reset_text(window.reset)) {
            headers.insert(reset.clone(), value);
        }
    }
    if let Some(denied) = verdict.denied
        && !matches!(denied.kind, Kind::TooLarge { .. })
    {
        let ms = denied.retry_after.as_millis().max(1);
        headers.insert(
            RETRY_AFTER_MS.clone(),
            HeaderValue::from(u64::try_from(ms).unwrap_or(u64::MAX)),
        );
    }
    headers
}

/// A duration as OpenAI writes resets: `20ms`, `1.5s`, `6m0s`.
fn reset_text(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let secs = d.as_secs();
    if secs < 60 {
        let text = format!("{:.3}", d.as_secs_f64());
        let text = text.trim_end_matches('0').trim_end_matches('.');
        return format!("{text}s");
    }
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    if h > 0 {
        format!("{h}h{m}m{s}s")
    } else {
        format!("{m}m{s}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resets_are_written_like_openai() {
        assert_eq!(reset_text(Duration::from_millis(20)), "20ms");
        assert_eq!(reset_text(Duration::from_millis(1500)), "1.5s");
        assert_eq!(reset_text(Duration::from_secs(1)), "1s");
        assert_eq!(reset_text(Duration::from_secs(360)), "6m0s");
        assert_eq!(reset_text(Duration::from_secs(3725)), "1h2m5s");
    }

    #[test]
    fn headers_name_each_limit_set() {
        let verdict = Verdict {
            requests: Some(Window {
                limit: 60,
                remaining: 59,
                reset: Duration::from_secs(1),
            }),
            tokens: None,
            denied: None,
        };
        let h = verdict_headers(&verdict);
        assert_eq!(h["x-ratelimit-limit-requests"], "60");
        assert_eq!(h["x-ratelimit-remaining-requests"], "59");
        assert_eq!(h["x-ratelimit-reset-requests"], "1s");
        assert!(!h.contains_key("x-ratelimit-limit-tokens"));
        assert!(!h.contains_key("retry-after-ms"));
    }

    #[test]
    fn completion_bound_reads_each_api_s_name_and_n() {
        let parse = |body: &'static str| {
            ApiRequest::parse(
                crate::openai::Endpoint::ChatCompletions,
                bytes::Bytes::from_static(body.as_bytes()),
            )
            .unwrap_or_else(|e| panic!("{e}"))
        };
        assert_eq!(completion_bound(&parse(r#"{"max_tokens":100}"#)), 100);
        assert_eq!(
            completion_bound(&parse(r#"{"max_completion_tokens":50,"n":3}"#)),
            150
        );
        assert_eq!(completion_bound(&parse(r#"{"max_output_tokens":7}"#)), 7);
        assert_eq!(completion_bound(&parse(r#"{"messages":[]}"#)), 0);
    }
}
