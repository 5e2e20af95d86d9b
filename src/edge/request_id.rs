//! `x-request-id`, the request's tracing span, and error answers.
//!
//! The outermost layer. It keeps the client's `x-request-id` (or makes one),
//! runs the rest of the stack inside a span carrying it, so every log line of
//! the request names it, and sets it on the answer. Errors from the layers
//! below become OpenAI-shaped answers here, in one place.
//!
//! ```ignore
//! let svc = ServiceBuilder::new().layer(RequestIdLayer).service(inner);
//! ```

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Instant;

use http::{HeaderName, HeaderValue, Request, Response};
use pin_project_lite::pin_project;
use tower::{Layer, Service};
use tracing::instrument::Instrumented;
use tracing::{Instrument, Span};

use super::EdgeError;
use crate::body::Body;
use crate::error::{Error, ErrorSource};

/// The header sluice reads and sets.
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The request's id, in the request's extensions for layers below.
#[derive(Debug, Clone)]
pub struct RequestId(pub HeaderValue);

/// Longest client-sent id kept; longer ones are replaced.
const MAX_ID_LEN: usize = 128;

#[derive(Debug, Clone, Copy, Default)]
pub struct RequestIdLayer;

impl<S> Layer<S> for RequestIdLayer {
    type Service = RequestIdService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        RequestIdService { inner }
    }
}

#[derive(Debug, Clone)]
pub struct RequestIdService<S> {
    inner: S,
}

impl<S> Service<Request<Body>> for RequestIdService<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Error>,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = RequestIdFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // The inner stack never fails readiness with an error it could not
        // answer; treat an error there as ready and let `call` report it.
        match ready!(self.inner.poll_ready(cx)) {
            Ok(()) | Err(_) => Poll::Ready(Ok(())),
        }
    }

    fn call(&mut self, mut req: Request<Body>) -> Self::Future {
        let id = req
            .headers()
            .get(&X_REQUEST_ID)
            .filter(|v| !v.is_empty() && v.len() <= MAX_ID_LEN)
            .cloned()
            .unwrap_or_else(new_id);
        let span = tracing::info_span!(
            "request",
            id = %String::from_utf8_lossy(id.as_bytes()),
            method = %req.method(),
            path = req.uri().path(),
        );
        req.extensions_mut().insert(RequestId(id.clone()));
        let inner = {
            let _entered = span.enter();
            self.inner.call(req)
        };
        RequestIdFuture {
            inner: inner.instrument(span),
            id,
        }
    }
}

pin_project! {
    pub struct RequestIdFuture<F> {
        #[pin]
        inner: Instrumented<F>,
        id: HeaderValue,
    }
}

impl<F> Future for RequestIdFuture<F>
where
    F: Future<Output = Result<Response<Body>, Error>>,
{
    type Output = Result<Response<Body>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let span = this.inner.span().clone();
        let mut response = match ready!(this.inner.poll(cx)) {
            Ok(response) => {
                span.in_scope(|| tracing::debug!(status = response.status().as_u16(), "answered"));
                response
            }
            Err(error) => {
                log_error(&span, &error);
                error.into_response()
            }
        };
        response
            .headers_mut()
            .insert(X_REQUEST_ID.clone(), this.id.clone());
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

/// A fresh random id: 32 hex digits.
fn new_id() -> HeaderValue {
    let id = format!("{:032x}", fastrand::u128(..));
    // Hex digits are always a valid header value.
    HeaderValue::from_str(&id).unwrap_or(HeaderValue::from_static("0"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::edge::EdgeError;
    use tower::ServiceExt;

    async fn run(req: Request<Body>, fail: bool) -> Response<Body> {
        let inner = tower::service_fn(move |req: Request<Body>| async move {
            if fail {
                return Err(Error::from(EdgeError::Overloaded));
            }
            // The id is in the extensions for the layers below.
            let id = req.extensions().get::<RequestId>().map(|r| r.0.clone());
            let mut resp = Response::new(crate::body::empty());
            if let Some(id) = id {
                resp.headers_mut().insert("seen-id", id);
            }
            Ok(resp)
        });
        match RequestIdLayer.layer(inner).oneshot(req).await {
            Ok(resp) => resp,
            Err(never) => match never {},
        }
    }

    #[tokio::test]
    async fn keeps_client_id() {
        let req = Request::builder()
            .header("x-request-id", "abc-123")
            .body(crate::body::empty())
            .unwrap_or_default();
        let resp = run(req, false).await;
        assert_eq!(resp.headers()["x-request-id"], "abc-123");
        assert_eq!(resp.headers()["seen-id"], "abc-123");
    }

    #[tokio::test]
    async fn makes_one_when_missing_or_oversized() {
        let resp = run(Request::new(crate::body::empty()), false).await;
        let id = resp.headers()["x-request-id"].clone();
        assert_eq!(id.len(), 32);
        assert_eq!(resp.headers()["seen-id"], id);
        let long = "x".repeat(MAX_ID_LEN + 1);
        let req = Request::builder()
            .header("x-request-id", long.as_str())
            .body(crate::body::empty())
            .unwrap_or_default();
        let resp = run(req, false).await;
        assert_ne!(resp.headers()["x-request-id"], long.as_str());
    }

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
    async fn errors_become_answers_with_the_id() {
        let req = Request::builder()
            .header("x-request-id", "r1")
            .body(crate::body::empty())
            .unwrap_or_default();
        let resp = run(req, true).await;
        assert_eq!(resp.status(), 503);
        assert_eq!(resp.headers()["x-request-id"], "r1");
    }
}
