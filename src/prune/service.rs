//! The prune layer: reads the request's overrides and budget, runs
//! [`super::run`] (off the async workers for long prompts) and puts the
//! pruned request in place.

use std::task::{Context, Poll};

use futures_util::future::Either;
use http::{Request, Response};
use tower::{Layer, Service};

use super::*;

impl<S> Layer<S> for PruneLayer {
    type Service = Prune<S>;
    fn layer(&self, inner: S) -> Prune<S> {
        Prune {
            inner,
            layer: self.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Prune<S> {
    inner: S,
    layer: PruneLayer,
}

impl<S> Service<Request<Body>> for Prune<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Error> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = Error;
    type Future = Rewritten<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<Body>) -> Self::Future {
        let on = req
            .extensions()
            .get::<Overrides>()
            .and_then(|o| o.prune)
            .unwrap_or(self.layer.enabled);
        let prunable = req.extensions().get::<ApiRequest>().is_some_and(|api| {
            matches!(
                api.endpoint(),
                Endpoint::ChatCompletions | Endpoint::Responses | Endpoint::Completions
            )
        });
        if !on || !prunable {
            return Either::Left(self.inner.call(req));
        }
        let Some(api) = req.extensions_mut().remove::<ApiRequest>() else {
            return Either::Left(self.inner.call(req));
        };
        // Counted once: by the token rate limit above, when it is on.
        let known = req
            .extensions()
            .get::<Original>()
            .and_then(|original| original.tokens)
            .filter(|_| !api.is_modified());
        let layer = self.layer.clone();
        let cheap = known.is_some() || inline(&layer.counter, &api);
        rewrite(
            &mut self.inner,
            req,
            cheap,
            move || run(&layer, &api, known),
            apply,
        )
    }
}

/// Puts the (pruned) request back, keeping the original for the token
/// headers, and reports.
pub(crate) fn apply(req: &mut Request<Body>, outcome: Outcome) {
    let endpoint = outcome.original.endpoint().label();
    let Outcome {
        original,
        pruned,
        before,
        after,
        messages_before,
        messages_after,
    } = outcome;
    let extensions = req.extensions_mut();
    Original::keep(extensions, &original, Some(before));
    match pruned {
        Some(pruned) => {
            tracing::debug!(
                endpoint,
                messages_before,
                messages_after,
                tokens_before = before,
                tokens_after = after,
                "pruned"
            );
            metrics::counter!(PRUNE_REQUESTS_TOTAL, "result" => "pruned").increment(1);
            metrics::counter!(PRUNE_TOKENS_REMOVED_TOTAL).increment(before.saturating_sub(after));
            if let Some(tally) = extensions.get::<crate::report::Tally>() {
                tally.pruned(before.saturating_sub(after));
            }
            if let Some(kept) = extensions.get_mut::<Original>() {
                kept.pruned = Some(after);
            }
            extensions.insert(pruned);
        }
        None => {
            metrics::counter!(PRUNE_REQUESTS_TOTAL, "result" => "within_budget").increment(1);
            extensions.insert(original);
        }
    }
}
