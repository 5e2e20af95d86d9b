//! The pipeline, assembled in one place, outermost layer first.
//!
//! A request runs down this list; its answer runs back up. Order is
//! deliberate and pinned by a test below. What the layers share between
//! workers and keep across reloads is built in [`crate::shared`].

use std::convert::Infallible;
use std::sync::Arc;

use http::{Request, Response};
use tower::{Service, ServiceBuilder};

use crate::admin::AdminLayer;
use crate::body::Body;
use crate::edge::answer::AnswerLayer;
use crate::edge::body_limit::BodyLimitLayer;
use crate::edge::catch_panic::CatchPanicLayer;
use crate::edge::metrics::MetricsLayer;
use crate::edge::request_id::RequestIdLayer;
use crate::edge::timeout::TimeoutLayer;
use crate::ingress::IngressLayer;
use crate::shared::{Settings, Shared};
use crate::upstream::{UpstreamService, Upstreams};

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
        // request's tracing span, sets the id on the answer.
        .layer(RequestIdLayer)
        // Every error from below becomes an OpenAI-shaped answer; the
        // request's `Outcome` (cache, upstream, attempts, prompt tokens)
        // becomes the `x-sluice-*` headers, written here alone.
        .layer(AnswerLayer)
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
        .service(UpstreamService::new(
            upstreams,
            shared.retry,
            body_limit,
            shared.counter,
        ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::lifecycle::Lifecycle;

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
            "Answer",
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
