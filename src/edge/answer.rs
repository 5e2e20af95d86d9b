//! The answer the client gets: errors become OpenAI-shaped answers, and
//! what happened to the request becomes the `x-sluice-*` headers.
//!
//! Every layer below returns `Result<Response, Error>` and notes what it did
//! in the answer's [`Outcome`]; this layer, just inside the request id's,
//! is the one place that logs an error and turns it into its answer
//! ([`Error::into_response`]), and the one place that writes the outcome's
//! headers ([`Outcome::write_headers`]).
//!
//! ```text
//! let svc = ServiceBuilder::new().layer(AnswerLayer).service(inner);
//! ```

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Instant;

use http::{Request, Response};
use pin_project_lite::pin_project;
use tower::{Layer, Service};
use tracing::Span;

use super::EdgeError;
use crate::body::Body;
use crate::context::Outcome;
use crate::error::{Error, ErrorSource};

#[derive(Debug, Clone, Copy, Default)]
pub struct AnswerLayer;

impl<S> Layer<S> for AnswerLayer {
    type Service = Answer<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Answer { inner }
    }
}

#[derive(Debug, Clone)]
pub struct Answer<S> {
    inner: S,
}

impl<S> Service<Request<Body>> for Answer<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Error>,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = AnswerFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // The inner stack never fails readiness with an error it could not
        // answer; treat an error there as ready and let `call` report it.
        match ready!(self.inner.poll_ready(cx)) {
            Ok(()) | Err(_) => Poll::Ready(Ok(())),
        }
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        AnswerFuture {
            inner: self.inner.call(req),
        }
    }
}

pin_project! {
    pub struct AnswerFuture<F> {
        #[pin]
        inner: F,
    }
}

impl<F> Future for AnswerFuture<F>
where
    F: Future<Output = Result<Response<Body>, Error>>,
{
    type Output = Result<Response<Body>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut response = match ready!(self.project().inner.poll(cx)) {
            Ok(response) => {
                tracing::debug!(status = response.status().as_u16(), "answered");
                response
            }
            Err(error) => {
                log_error(&Span::current(), &error);
                error.into_response()
            }
        };
        if let Some(outcome) = response.extensions_mut().remove::<Outcome>() {
            outcome.write_headers(response.headers_mut());
        }
        Poll::Ready(Ok(response))
    }
}

fn log_error(span: &Span, error: &Error) {
    let mapping = error.mapping();
    let status = mapping.status.as_u16();
    // Turned away for overload or shutdown: the first in a while is a
    // warning, the rest in the same second are counted into the next one.
    let throttle = match error {
        Error::Edge(EdgeError::Overloaded) => Some(&OVERLOADED),
        Error::Edge(EdgeError::ShuttingDown) => Some(&SHUTTING_DOWN),
        _ => None,
    };
    if let Some(throttle) = throttle {
        span.in_scope(|| match throttle.admit(now_ms()) {
            Some(suppressed) => {
                tracing::warn!(status, %error, suppressed, "request turned away");
            }
            None => tracing::debug!(status, %error, "request turned away"),
        });
        return;
    }
    span.in_scope(|| match mapping.source {
        ErrorSource::Internal => tracing::warn!(status, %error, "request failed inside sluice"),
        ErrorSource::Upstream => tracing::warn!(status, %error, "upstream failed"),
        // The breaker said so once when it opened; one line per turned-away
        // request would flood the log during an outage.
        ErrorSource::OutOfRotation => {
            tracing::debug!(status, %error, "no upstream in rotation");
        }
        ErrorSource::Client => tracing::info!(status, %error, "bad request"),
    });
}

static OVERLOADED: Throttle = Throttle::new();
static SHUTTING_DOWN: Throttle = Throttle::new();

/// Milliseconds since the first call (never 0, so 0 can mean "never").
fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    let start = *START.get_or_init(Instant::now);
    u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX) + 1
}

/// At most one warning per [`Throttle::EVERY_MS`] for a kind of event that
/// can come thousands of times a second: two atomics, no lock.
struct Throttle {
    /// When the last warning was let through (0: never).
    last_ms: AtomicU64,
    /// Events since then that were not.
    suppressed: AtomicU64,
}

impl Throttle {
    const EVERY_MS: u64 = 1000;

    const fn new() -> Throttle {
        Throttle {
            last_ms: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(events suppressed since the last warning)` when this one is to
    /// be a warning, `None` when it is to be counted.
    fn admit(&self, now_ms: u64) -> Option<u64> {
        let last = self.last_ms.load(Ordering::Relaxed);
        let due = last == 0 || now_ms.saturating_sub(last) >= Self::EVERY_MS;
        if due
            && self
                .last_ms
                .compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            return Some(self.suppressed.swap(0, Ordering::Relaxed));
        }
        self.suppressed.fetch_add(1, Ordering::Relaxed);
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::CacheOutcome;
    use tower::ServiceExt;

    #[test]
    fn turned_away_requests_warn_once_a_second_with_a_count() {
        let throttle = Throttle::new();
        assert_eq!(throttle.admit(1), Some(0), "the first one warns");
        for ms in 2..500 {
            assert_eq!(throttle.admit(ms), None);
        }
        assert_eq!(throttle.admit(999), None);
        assert_eq!(throttle.admit(1001), Some(499), "the next second's first");
        assert_eq!(throttle.admit(1002), None);
        assert_eq!(throttle.admit(60_000), Some(1));
    }

    #[tokio::test]
    async fn the_outcome_becomes_headers_and_leaves_the_extensions() {
        let inner = tower::service_fn(|_req: Request<Body>| async {
            let mut response = Response::new(crate::body::empty());
            Outcome::of(&mut response).cache = Some(CacheOutcome::Miss);
            Outcome::of(&mut response).attempts = Some(1);
            Ok::<_, Error>(response)
        });
        let Ok(response) = AnswerLayer
            .layer(inner)
            .oneshot(Request::new(crate::body::empty()))
            .await;
        assert_eq!(response.headers()["x-sluice-cache"], "miss");
        assert_eq!(response.headers()["x-sluice-attempts"], "1");
        assert!(response.extensions().get::<Outcome>().is_none());
    }

    #[tokio::test]
    async fn errors_become_openai_shaped_answers() {
        let inner = tower::service_fn(|_req: Request<Body>| async {
            Err::<Response<Body>, _>(Error::from(EdgeError::Overloaded))
        });
        let Ok(response) = AnswerLayer
            .layer(inner)
            .oneshot(Request::new(crate::body::empty()))
            .await;
        assert_eq!(response.status(), 503);
        assert_eq!(response.headers()["retry-after"], "1");
    }
}
