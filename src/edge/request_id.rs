//! `x-request-id` and the request's tracing span.
//!
//! The outermost layer. It keeps the client's `x-request-id` (or makes one),
//! runs the rest of the stack inside a span carrying it, so every log line of
//! the request names it, and sets it on the answer. The answers below it are
//! already made (errors included: see [`super::answer`]).
//!
//! ```text
//! let svc = ServiceBuilder::new()
//!     .layer(RequestIdLayer)
//!     .layer(AnswerLayer)
//!     .service(inner);
//! ```

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use http::{HeaderName, HeaderValue, Request, Response};
use pin_project_lite::pin_project;
use tower::{Layer, Service};
use tracing::Instrument;
use tracing::instrument::Instrumented;

use crate::body::Body;

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
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible>,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = RequestIdFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
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
    F: Future<Output = Result<Response<Body>, Infallible>>,
{
    type Output = Result<Response<Body>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Ok(mut response) = ready!(this.inner.poll(cx));
        response
            .headers_mut()
            .insert(X_REQUEST_ID.clone(), this.id.clone());
        Poll::Ready(Ok(response))
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
    use crate::edge::answer::AnswerLayer;
    use crate::error::Error;
    use tower::{ServiceBuilder, ServiceExt};

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
        let stack = ServiceBuilder::new()
            .layer(RequestIdLayer)
            .layer(AnswerLayer)
            .service(inner);
        match stack.oneshot(req).await {
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
