//! A panic while handling a request becomes a 500 answer.
//!
//! The panic is caught at the request's future, logged, and answered in
//! OpenAI's error shape; the connection and the process carry on.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use futures_util::FutureExt;
use futures_util::future::CatchUnwind;
use http::{Request, Response};
use pin_project_lite::pin_project;
use tower::{Layer, Service};

use super::EdgeError;
use crate::body::Body;
use crate::error::Error;

#[derive(Debug, Clone, Copy, Default)]
pub struct CatchPanicLayer;

impl<S> Layer<S> for CatchPanicLayer {
    type Service = CatchPanic<S>;
    fn layer(&self, inner: S) -> Self::Service {
        CatchPanic { inner }
    }
}

#[derive(Debug, Clone)]
pub struct CatchPanic<S> {
    inner: S,
}

impl<S> Service<Request<Body>> for CatchPanic<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Error>,
{
    type Response = Response<Body>;
    type Error = Error;
    type Future = CatchPanicFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let inner = match std::panic::catch_unwind(AssertUnwindSafe(|| self.inner.call(req))) {
            Ok(future) => Kind::Future {
                future: AssertUnwindSafe(future).catch_unwind(),
            },
            Err(payload) => {
                log_panic(payload.as_ref());
                Kind::Panicked
            }
        };
        CatchPanicFuture { kind: inner }
    }
}

pin_project! {
    pub struct CatchPanicFuture<F> {
        #[pin]
        kind: Kind<F>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F> {
        Future { #[pin] future: CatchUnwind<AssertUnwindSafe<F>> },
        Panicked,
    }
}

impl<F> Future for CatchPanicFuture<F>
where
    F: Future<Output = Result<Response<Body>, Error>>,
{
    type Output = Result<Response<Body>, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Future { future } => match ready!(future.poll(cx)) {
                Ok(result) => Poll::Ready(result),
                Err(payload) => {
                    log_panic(payload.as_ref());
                    Poll::Ready(Err(EdgeError::Panic.into()))
                }
            },
            KindProj::Panicked => Poll::Ready(Err(EdgeError::Panic.into())),
        }
    }
}

fn log_panic(payload: &(dyn std::any::Any + Send)) {
    let message = payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)");
    tracing::error!(panic = message, "request handler panicked");
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::ServiceExt;

    #[tokio::test]
    async fn panics_in_future_and_in_call_become_500() {
        let in_future = tower::service_fn(|_req: Request<Body>| async move {
            if true {
                panic!("boom");
            }
            Ok::<_, Error>(Response::new(crate::body::empty()))
        });
        let result = CatchPanicLayer
            .layer(in_future)
            .oneshot(Request::new(crate::body::empty()))
            .await;
        assert!(matches!(result, Err(Error::Edge(EdgeError::Panic))));

        #[derive(Clone)]
        struct PanicsInCall;
        impl Service<Request<Body>> for PanicsInCall {
            type Response = Response<Body>;
            type Error = Error;
            type Future = std::future::Ready<Result<Response<Body>, Error>>;
            fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Error>> {
                Poll::Ready(Ok(()))
            }
            fn call(&mut self, _: Request<Body>) -> Self::Future {
                panic!("boom in call")
            }
        }
        let result = CatchPanicLayer
            .layer(PanicsInCall)
            .oneshot(Request::new(crate::body::empty()))
            .await;
        assert!(matches!(result, Err(Error::Edge(EdgeError::Panic))));
    }
}
