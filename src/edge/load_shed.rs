//! At most `max_concurrency` requests in flight; the excess fails fast.
//!
//! A request takes a permit or is answered 503 with `Retry-After` at once,
//! instead of queueing without bound. The permit is held until the answer's
//! last byte, so open streams count. While draining, new requests get 503 too.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use http::{Request, Response};
use pin_project_lite::pin_project;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower::{Layer, Service};

use super::EdgeError;
use crate::body::{self, Body};
use crate::error::Error;
use crate::lifecycle::Lifecycle;

#[derive(Debug, Clone)]
pub struct LoadShedLayer {
    permits: Arc<Semaphore>,
    lifecycle: Arc<Lifecycle>,
}

impl LoadShedLayer {
    pub fn new(max_concurrency: usize, lifecycle: Arc<Lifecycle>) -> Self {
        LoadShedLayer {
            permits: Arc::new(Semaphore::new(max_concurrency)),
            lifecycle,
        }
    }
}

impl<S> Layer<S> for LoadShedLayer {
    type Service = LoadShed<S>;
    fn layer(&self, inner: S) -> Self::Service {
        LoadShed {
            inner,
            permits: self.permits.clone(),
            lifecycle: self.lifecycle.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct LoadShed<S> {
    inner: S,
    permits: Arc<Semaphore>,
    lifecycle: Arc<Lifecycle>,
}

impl<S> Service<Request<Body>> for LoadShed<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Error>,
{
    type Response = Response<Body>;
    type Error = Error;
    type Future = LoadShedFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        if self.lifecycle.is_draining() {
            return LoadShedFuture::refused(EdgeError::ShuttingDown);
        }
        match self.permits.clone().try_acquire_owned() {
            Ok(permit) => LoadShedFuture {
                kind: Kind::Admitted {
                    future: self.inner.call(req),
                    permit: Some(permit),
                },
            },
            Err(_) => LoadShedFuture::refused(EdgeError::Overloaded),
        }
    }
}

pin_project! {
    pub struct LoadShedFuture<F> {
        #[pin]
        kind: Kind<F>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F> {
        Admitted { #[pin] future: F, permit: Option<OwnedSemaphorePermit> },
        Refused { error: Option<EdgeError> },
    }
}

impl<F> LoadShedFuture<F> {
    fn refused(error: EdgeError) -> Self {
        LoadShedFuture {
            kind: Kind::Refused { error: Some(error) },
        }
    }
}

impl<F> Future for LoadShedFuture<F>
where
    F: Future<Output = Result<Response<Body>, Error>>,
{
    type Output = Result<Response<Body>, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Admitted { future, permit } => {
                let response = ready!(future.poll(cx))?;
                let (parts, body) = response.into_parts();
                let body = match permit.take() {
                    Some(permit) => body::guarded(body, permit),
                    None => body,
                };
                Poll::Ready(Ok(Response::from_parts(parts, body)))
            }
            KindProj::Refused { error } => {
                Poll::Ready(Err(error.take().unwrap_or(EdgeError::Overloaded).into()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lifecycle::Phase;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    fn ok_service() -> impl Service<
        Request<Body>,
        Response = Response<Body>,
        Error = Error,
        Future = impl Future<Output = Result<Response<Body>, Error>>,
    > + Clone {
        tower::service_fn(|_req: Request<Body>| async {
            Ok::<_, Error>(Response::new(body::full("streamed answer")))
        })
    }

    #[tokio::test]
    async fn permit_held_until_body_ends() {
        let lifecycle = Arc::new(Lifecycle::default());
        let layer = LoadShedLayer::new(1, lifecycle);
        let svc = layer.layer(ok_service());
        let first = svc.clone().oneshot(Request::new(body::empty())).await;
        let Ok(first) = first else {
            panic!("first request refused")
        };
        // The first answer's body is still open: the second is shed.
        let second = svc.clone().oneshot(Request::new(body::empty())).await;
        assert!(matches!(second, Err(Error::Edge(EdgeError::Overloaded))));
        // Reading the first body to its end releases the permit.
        let _ = first.into_body().collect().await;
        let third = svc.oneshot(Request::new(body::empty())).await;
        assert!(third.is_ok());
    }

    #[tokio::test]
    async fn draining_refuses_new_requests() {
        let lifecycle = Arc::new(Lifecycle::default());
        lifecycle.set(Phase::Draining);
        let svc = LoadShedLayer::new(8, lifecycle).layer(ok_service());
        let result = svc.oneshot(Request::new(body::empty())).await;
        assert!(matches!(result, Err(Error::Edge(EdgeError::ShuttingDown))));
    }
}
