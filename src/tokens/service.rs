//! The prompt-token headers: counted while the upstream works.
//!
//! The lowest layer above the upstream. When a configured feature works with
//! token counts (pruning, compression, a token rate limit) it counts every
//! understood request; otherwise only those another layer counted or
//! rewrote, so a pass-through request is never counted. It counts the prompt as the client
//! sent it and as it goes out, and sets `x-sluice-prompt-tokens-original`
//! and `x-sluice-prompt-tokens-sent` on the answer. No layer above waits
//! for these counts, so they are made concurrently with the upstream call:
//! the request is handed to the upstream first, then counted on this worker
//! (small prompts) or on the blocking pool (large ones), and the answer's
//! head is released once both are there. A rewriting layer that needed the
//! original count already (pruning) leaves it in [`Original`], together
//! with the request as the client sent it.

use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::future::BoxFuture;
use http::{Request, Response};
use tower::{Layer, Service};

use super::{Counter, PromptTokens, prompt};
use crate::body::Body;
use crate::error::Error;
use crate::observe::{COMPRESS_TOKENS_SAVED_TOTAL, PROMPT_TOKENS_TOTAL};
use crate::openai::ApiRequest;

/// Prompts whose body is larger than this are counted off the async worker.
pub const BLOCKING_BYTES: usize = 32 * 1024;

/// The request as the client sent it, kept by the first layer that
/// rewrites it, with its token count when that layer made one.
#[derive(Debug, Clone)]
pub struct Original {
    pub request: ApiRequest,
    pub tokens: Option<u64>,
    /// Tokens after pruning, when it pruned: what compression started from.
    pub pruned: Option<u64>,
}

impl Original {
    /// Keeps `api` as the original unless one is kept already.
    pub fn keep(extensions: &mut http::Extensions, api: &ApiRequest, tokens: Option<u64>) {
        if extensions.get::<Original>().is_none() {
            extensions.insert(Original {
                request: api.clone(),
                tokens,
                pruned: None,
            });
        }
    }
}

/// Whether work on `api` fits on an async worker: a small body, and its
/// encoding loaded already (loading takes tens of milliseconds).
pub fn inline(counter: &Counter, api: &ApiRequest) -> bool {
    api.body_len() <= BLOCKING_BYTES && counter.encoding(api.model()).is_loaded()
}

/// The future of a rewriting layer's call: the inner service's own when
/// the rewrite ran inline, else the rewrite on the blocking pool then it.
pub type Rewritten<F> =
    futures_util::future::Either<F, BoxFuture<'static, Result<Response<Body>, Error>>>;

/// Runs `work` (a rewrite of `req`'s body) on this thread when `inline`,
/// else on the blocking pool; `apply` puts its result into `req`, which then
/// goes to `inner`. For the rewriting layers (pruning, compression).
pub fn rewrite<S, T>(
    inner: &mut S,
    mut req: Request<Body>,
    inline: bool,
    work: impl FnOnce() -> T + Send + 'static,
    apply: impl FnOnce(&mut Request<Body>, T) + Send + 'static,
) -> Rewritten<S::Future>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Error> + Clone + Send + 'static,
    S::Future: Send + 'static,
    T: Send + 'static,
{
    if inline {
        apply(&mut req, work());
        return futures_util::future::Either::Left(inner.call(req));
    }
    // The ready service is the one to call; leave a fresh clone behind.
    let clone = inner.clone();
    let mut inner = std::mem::replace(inner, clone);
    futures_util::future::Either::Right(Box::pin(async move {
        let done = tokio::task::spawn_blocking(work)
            .await
            .map_err(|_| crate::edge::EdgeError::Panic)?;
        apply(&mut req, done);
        inner.call(req).await
    }))
}

/// Counts `api` now, on this thread when [`inline`], else on the blocking
/// pool.
pub async fn count(counter: &Arc<Counter>, api: &ApiRequest) -> u64 {
    if inline(counter, api) {
        return prompt::request(counter, api);
    }
    let counter = counter.clone();
    let api = api.clone();
    tokio::task::spawn_blocking(move || prompt::request(&counter, &api))
        .await
        .unwrap_or(0)
}

/// Which requests the tokens layer counts.
#[derive(Debug, Clone)]
pub enum TokensLayer {
    /// Every understood request: some configured feature (pruning,
    /// compression, a token rate limit) works with token counts anyway.
    Every(Arc<Counter>),
    /// Only requests another layer counted or rewrote (a per-request
    /// `x-sluice-prune: on`, say); every other request passes at the cost
    /// of one extension lookup, so pass-through counts nothing.
    WhenRewritten(Arc<Counter>),
}

impl TokensLayer {
    /// The layer for `config`: counting every request only when a
    /// configured feature needs token counts.
    pub fn new(config: &crate::config::Config, counter: Arc<Counter>) -> TokensLayer {
        if needs_counts(config) {
            TokensLayer::Every(counter)
        } else {
            TokensLayer::WhenRewritten(counter)
        }
    }
}

/// Whether a configured feature works with the prompt's token counts:
/// pruning, compression, a tokens-per-minute limit.
pub fn needs_counts(config: &crate::config::Config) -> bool {
    config.prune.enabled
        || config.compress.level != crate::config::CompressLevel::Off
        || config.rate_limit.tokens_per_minute.is_some()
}

impl<S> Layer<S> for TokensLayer {
    type Service = Tokens<S>;
    fn layer(&self, inner: S) -> Tokens<S> {
        let (counter, every) = match self {
            TokensLayer::Every(counter) => (counter.clone(), true),
            TokensLayer::WhenRewritten(counter) => (counter.clone(), false),
        };
        Tokens {
            inner,
            counter,
            every,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Tokens<S> {
    inner: S,
    counter: Arc<Counter>,
    every: bool,
}

impl<S> Service<Request<Body>> for Tokens<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Error> + Send,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = Error;
    type Future =
        futures_util::future::Either<S::Future, BoxFuture<'static, Result<Response<Body>, Error>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let original = req.extensions().get::<Original>().cloned();
        if !self.every && original.is_none() {
            return futures_util::future::Either::Left(self.inner.call(req));
        }
        let Some(sent) = req.extensions().get::<ApiRequest>().cloned() else {
            return futures_util::future::Either::Left(self.inner.call(req));
        };
        let tally = req.extensions().get::<crate::report::Tally>().cloned();
        let counter = self.counter.clone();
        let answer = self.inner.call(req);
        futures_util::future::Either::Right(Box::pin(async move {
            let counting = async {
                // Let the upstream's connection send the request first.
                tokio::task::yield_now().await;
                let (original_tokens, pruned) = match original {
                    Some(Original {
                        tokens: Some(tokens),
                        pruned,
                        ..
                    }) => (Some(tokens), pruned),
                    Some(Original {
                        request, pruned, ..
                    }) => (Some(count(&counter, &request).await), pruned),
                    None => (None, None),
                };
                // Unchanged since the client sent it: counted once.
                let sent_tokens = match original_tokens {
                    Some(tokens) if !sent.is_modified() => tokens,
                    _ => count(&counter, &sent).await,
                };
                let original_tokens = original_tokens.unwrap_or(sent_tokens);
                // Compression started from the pruned prompt, if pruned.
                let compressed = pruned
                    .unwrap_or(original_tokens)
                    .saturating_sub(sent_tokens);
                metrics::counter!(COMPRESS_TOKENS_SAVED_TOTAL).increment(compressed);
                if let Some(tally) = &tally
                    && compressed > 0
                {
                    tally.compressed(compressed);
                }
                metrics::counter!(PROMPT_TOKENS_TOTAL, "stage" => "original")
                    .increment(original_tokens);
                metrics::counter!(PROMPT_TOKENS_TOTAL, "stage" => "sent").increment(sent_tokens);
                PromptTokens {
                    original: original_tokens,
                    sent: sent_tokens,
                }
            };
            let (answer, counts) = tokio::join!(answer, counting);
            let mut answer = answer?;
            crate::context::Outcome::of(&mut answer).prompt_tokens = Some(counts);
            Ok(answer)
        }))
    }
}
