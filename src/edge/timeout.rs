//! No answer head within `request_timeout`: 504.
//!
//! Bounds the time to the response head (body read, upstream connect and
//! upstream think time). A stream that has started is bounded by the
//! upstream's own `timeout` instead, so long answers are not cut mid-way.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use http::{Request, Response};
use pin_project_lite::pin_project;
use tower::{Layer, Service};

use super::EdgeError;
use crate::body::Body;
use crate::error::Error;

/// When the request must have its answer head: set on every request, so
/// the layers below (retries) never plan to wait past it.
#[derive(Debug, Clone, Copy)]
pub struct Deadline(pub tokio::time::Instant);

#[derive(Debug, Clone, Copy)]
pub struct TimeoutLayer {
    after: Duration,
}

impl TimeoutLayer {
    pub fn new(after: Duration) -> Self {
        TimeoutLayer { after }
    }
}

impl<S> Layer<S> for TimeoutLayer {
    type Service = Timeout<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Timeout {
            inner,
            after: self.after,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Timeout<S> {
    inner: S,
    after: Duration,
}

impl<S> Service<Request<Body>> for Timeout<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Error>,
{
    type Response = Response<Body>;
    type Error = Error;
    type Future = TimeoutFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<Body>) -> Self::Future {
        let deadline = tokio::time::Instant::now() + self.after;
        req.extensions_mut().insert(Deadline(deadline));
        TimeoutFuture {
            inner: tokio::time::timeout_at(deadline, self.inner.call(req)),
            after: self.after,
        }
    }
}

pin_project! {
    pub struct TimeoutFuture<F> {
        #[pin]
        inner: tokio::time::Timeout<F>,
        after: Duration,
    }
}

impl<F> Future for TimeoutFuture<F>
where
    F: Future<Output = Result<Response<Body>, Error>>,
{
    type Output = Result<Response<Body>, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        match ready!(this.inner.poll(cx)) {
            Ok(result) => Poll::Ready(result),
            Err(_elapsed) => Poll::Ready(Err(EdgeError::Timeout { after: *this.after }.into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::ServiceExt;

    #[tokio::test(start_paused = true)]
    async fn slow_inner_gives_timeout_error() {
        let slow = tower::service_fn(|_req: Request<Body>| async {
            tokio::time::sleep(Duration::from_secs(60)).await;
            Ok::<_, Error>(Response::new(crate::body::empty()))
        });
        let result = TimeoutLayer::new(Duration::from_secs(1))
            .layer(slow)
            .oneshot(Request::new(crate::body::empty()))
            .await;
        assert!(matches!(
            result,
            Err(Error::Edge(EdgeError::Timeout { .. }))
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn fast_inner_passes() {
        let fast = tower::service_fn(|_req: Request<Body>| async {
            Ok::<_, Error>(Response::new(crate::body::empty()))
        });
        let result = TimeoutLayer::new(Duration::from_secs(1))
            .layer(fast)
            .oneshot(Request::new(crate::body::empty()))
            .await;
        assert!(result.is_ok());
    }
}
