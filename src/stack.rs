//! The pipeline, assembled in one place, outermost layer first.
//!
//! A request runs down this list; its answer runs back up. Order is
//! deliberate and pinned by a test below.

use std::convert::Infallible;
use std::sync::Arc;

use http::{Request, Response};
use tower::{Service, ServiceBuilder};

use crate::admin::AdminLayer;
use crate::auth::AuthLayer;
use crate::body::Body;
use crate::cache::CacheLayer;
use crate::compress::CompressLayer;
use crate::config::Config;
use crate::edge::body_limit::BodyLimitLayer;
use crate::edge::catch_panic::CatchPanicLayer;
use crate::edge::load_shed::LoadShedLayer;
use crate::edge::metrics::MetricsLayer;
use crate::edge::request_id::RequestIdLayer;
use crate::edge::timeout::TimeoutLayer;
use crate::ingress::IngressLayer;
use crate::lifecycle::Lifecycle;
use crate::prune::PruneLayer;
use crate::rate_limit::RateLimitLayer;
use crate::report::Reporter;
use crate::session::SessionLayer;
use crate::tokens::{Counter, TokensLayer};
use crate::upstream::health::Health;
use crate::upstream::retry::RetrySettings;
use crate::upstream::{UpstreamService, Upstreams};

/// What the pipeline takes from the config, by value.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    pub body_limit: u64,
    /// What ingress lets a client send (URI, JSON depth, body pace).
    pub ingress: crate::ingress::Limits,
    pub max_concurrency: usize,
    pub request_timeout: std::time::Duration,
}

impl From<&Config> for Settings {
    fn from(config: &Config) -> Self {
        Settings {
            body_limit: config.server.max_body_size.as_u64(),
            ingress: crate::ingress::Limits::from(&config.server),
            max_concurrency: config.server.max_concurrency,
            request_timeout: config.server.request_timeout,
        }
    }
}

/// What every worker's pipeline shares: the process's phase and the one
/// concurrency limit for all workers.
#[derive(Debug, Clone)]
pub struct Shared {
    pub lifecycle: Arc<Lifecycle>,
    pub load_shed: LoadShedLayer,
    pub cache: CacheLayer,
    pub session: SessionLayer,
    pub prune: PruneLayer,
    pub compress: CompressLayer,
    pub tokens: TokensLayer,
    pub auth: AuthLayer,
    pub rate_limit: RateLimitLayer,
    /// Each upstream's health, by configuration index, for every worker.
    pub health: Arc<Vec<Arc<Health>>>,
    /// The retry policy's settings and its one retry budget.
    pub retry: Arc<RetrySettings>,
    /// Usage and savings counters, prices, the access log.
    pub reporter: Arc<Reporter>,
    /// The token count cache of the prune, compress and tokens layers.
    pub counter: Arc<Counter>,
}

impl Shared {
    pub fn new(config: &Config, settings: &Settings, lifecycle: Arc<Lifecycle>) -> Self {
        // One token count cache for every layer and worker.
        let counter = Arc::new(Counter::new(config.tokens.fallback_encoding));
        Shared {
            load_shed: LoadShedLayer::new(settings.max_concurrency, lifecycle.clone()),
            lifecycle,
            cache: CacheLayer::new(&config.cache, rewrite_settings(config)),
            session: SessionLayer::new(&config.sessions),
            prune: PruneLayer::new(&config.prune, counter.clone()),
            compress: CompressLayer::new(&config.compress, counter.clone()),
            auth: AuthLayer::new(&config.auth.client_keys),
            rate_limit: RateLimitLayer::new(&config.rate_limit, &config.cache, counter.clone()),
            tokens: TokensLayer::new(counter.clone()),
            health: Arc::new(crate::upstream::route::health_of(config)),
            retry: Arc::new(RetrySettings::new(&config.retry)),
            reporter: Reporter::new(config),
            counter,
        }
    }

    /// The shared parts for a reloaded config `new`, keeping from `old`
    /// (built from `was`) the state a change elsewhere leaves alone: the
    /// cache and its in-flight requests, rate limit and session state,
    /// upstream health, the retry budget, the load limit, counted tokens.
    pub fn reload(old: &Shared, was: &Config, new: &Config, settings: &Settings) -> Shared {
        let counter = if was.tokens == new.tokens {
            old.counter.clone()
        } else {
            Arc::new(Counter::new(new.tokens.fallback_encoding))
        };
        let keep_cache = was.cache == new.cache && rewrite_settings(was) == rewrite_settings(new);
        Shared {
            load_shed: if was.server.max_concurrency == new.server.max_concurrency {
                old.load_shed.clone()
            } else {
                LoadShedLayer::new(settings.max_concurrency, old.lifecycle.clone())
            },
            lifecycle: old.lifecycle.clone(),
            cache: if keep_cache {
                old.cache.clone()
            } else {
                CacheLayer::new(&new.cache, rewrite_settings(new))
            },
            session: if was.sessions == new.sessions {
                old.session.clone()
            } else {
                SessionLayer::new(&new.sessions)
            },
            prune: PruneLayer::new(&new.prune, counter.clone()),
            compress: CompressLayer::new(&new.compress, counter.clone()),
            auth: AuthLayer::new(&new.auth.client_keys),
            rate_limit: if was.rate_limit == new.rate_limit && was.cache == new.cache {
                old.rate_limit.clone()
            } else {
                RateLimitLayer::new(&new.rate_limit, &new.cache, counter.clone())
            },
            tokens: TokensLayer::new(counter.clone()),
            health: if same_upstreams(was, new) {
                old.health.clone()
            } else {
                Arc::new(crate::upstream::route::health_of(new))
            },
            retry: if was.retry == new.retry {
                old.retry.clone()
            } else {
                Arc::new(RetrySettings::new(&new.retry))
            },
            reporter: Reporter::new(new),
            counter,
        }
    }
}

/// Whether the upstreams (and their breakers) are configured alike, so
/// their clients, pools and health can stay.
pub fn same_upstreams(was: &Config, new: &Config) -> bool {
    was.upstreams == new.upstreams && was.breaker == new.breaker
}

/// The settings of the request-rewriting layers below the cache, as part of
/// every cache key: a change of them never serves an answer made under
/// other ones.
fn rewrite_settings(config: &Config) -> String {
    format!(
        "prune={:?};compress={:?};tokens={};",
        (
            config.prune.enabled,
            config.prune.max_messages,
            config.prune.max_context_tokens,
            config.prune.keep_file_content_turns
        ),
        (
            config.compress.level,
            config.compress.max_prompt_tokens,
            config.compress.head_ratio
        ),
        config.tokens.fallback_encoding
    )
}

/// Builds the whole request pipeline (one per worker thread; `upstreams`
/// holds that worker's own connection pools).
pub fn build(
    settings: Settings,
    shared: Shared,
    upstreams: Arc<Upstreams>,
) -> impl Service<
    Request<Body>,
    Response = Response<Body>,
    Error = Infallible,
    Future = impl Future<Output = Result<Response<Body>, Infallible>> + Send,
> + Clone
+ Send
+ Sync
+ 'static {
    let body_limit = settings.body_limit;
    ServiceBuilder::new()
        // Keeps or makes `x-request-id`, runs everything below in the
        // request's tracing span, sets the id on the answer, and turns every
        // error from below into an OpenAI-shaped answer.
        .layer(RequestIdLayer)
        // A panic below becomes a 500; the process and other requests go on.
        .layer(CatchPanicLayer)
        // Counts requests by endpoint and status, times them to their last
        // byte, tracks requests in flight; for requests under /v1/, tallies
        // usage and savings by model and client and logs the access line.
        .layer(MetricsLayer::new(shared.reporter.clone()))
        // Answers /healthz, /readyz and /metrics, and 404s anything outside
        // /v1/. Above load shedding so probes are answered under overload.
        .layer(AdminLayer::new(
            shared.lifecycle.clone(),
            shared.health.clone(),
        ))
        // At most `max_concurrency` requests (streams until their last byte);
        // the excess, and anything arriving while draining, gets 503.
        .layer(shared.load_shed)
        // Bodies over `max_body_size` get 413 (declared ones before reading).
        .layer(BodyLimitLayer::new(body_limit))
        // No answer head within `request_timeout`: 504.
        .layer(TimeoutLayer::new(settings.request_timeout))
        // URIs over `max_uri_length` get 414. Understood endpoints: reads
        // the body (408 when it stalls) and parses it once into an
        // `ApiRequest` in the extensions; bad or too deep JSON gets 400.
        // Other paths pass.
        .layer(IngressLayer::new(settings.ingress))
        // Client keys (`[auth]`): 401 without a known one, which is then
        // swapped for the upstream's; every request gets its client identity.
        .layer(shared.auth)
        // Requests and tokens per minute per client (`[rate_limit]`): 429
        // over the limit, `x-ratelimit-*` headers on every answer.
        .layer(shared.rate_limit)
        // Answers repeated understood requests from the cache (hit), records
        // and stores fresh answers (miss); reads and removes Cache-Control.
        .layer(shared.cache)
        // Requests with a session id (`[sessions] header`, removed here) run
        // at most `max_concurrent` at a time per client and session, until
        // their answer's last byte; the others wait in order (503 at deadline).
        .layer(shared.session)
        // Cuts conversations to the token budget (`[prune]`, or
        // `x-sluice-prune: on`): file contents of older turns first, then
        // whole messages, tool calls with their results, newest and most
        // relevant kept.
        .layer(shared.prune)
        // Shortens prompt texts (`[compress] level`, or `x-sluice-compress`):
        // whitespace, comments in code, repeated log lines, head and tail.
        .layer(shared.compress)
        // Counts the prompt as sent and as forwarded, while the upstream
        // works, into `x-sluice-prompt-tokens-original` / `-sent`.
        .layer(shared.tokens)
        // Routes by model, forwards over the upstream's pooled client,
        // retries and falls back while nothing has reached the client, and
        // relays the answer as it arrives.
        .service(UpstreamService::new(upstreams, shared.retry, body_limit))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The layer order is part of the design: pin it.
    #[test]
    fn layer_order_is_pinned() {
        let config = Config::default();
        let settings = Settings::from(&config);
        let shared = Shared::new(&config, &settings, Arc::new(Lifecycle::default()));
        let upstreams =
            Upstreams::with_health(&config, &shared.health).unwrap_or_else(|e| panic!("{e}"));
        let stack = build(settings, shared, Arc::new(upstreams));
        let type_name = std::any::type_name_of_val(&stack);
        let expected = [
            "RequestIdService",
            "CatchPanic",
            "Metrics",
            "Admin",
            "LoadShed",
            "BodyLimit",
            "Timeout",
            "Ingress",
            "Auth",
            "RateLimit",
            "CacheService",
            "Session",
            "Prune",
            "Compress",
            "Tokens",
            "UpstreamService",
        ];
        let mut rest = type_name;
        for name in expected {
            let needle = format!("::{name}<");
            let at = rest
                .find(&needle)
                .or_else(|| rest.find(&format!("::{name}")))
                .unwrap_or_else(|| panic!("{name} missing or out of order in {type_name}"));
            rest = &rest[at + needle.len() - 1..];
        }
    }
}
