//! Request metrics: count by endpoint and status, duration to the last byte,
//! requests in flight.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Instant;

use http::{Request, Response, StatusCode};
use pin_project_lite::pin_project;
use tower::{Layer, Service};

use crate::body::{self, Body};
use crate::error::Error;
use crate::observe::{REQUEST_DURATION, REQUESTS_IN_FLIGHT, REQUESTS_TOTAL, status_label};
use crate::openai::Endpoint;

#[derive(Debug, Clone, Copy, Default)]
pub struct MetricsLayer;

impl<S> Layer<S> for MetricsLayer {
    type Service = Metrics<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Metrics { inner }
    }
}

#[derive(Debug, Clone)]
pub struct Metrics<S> {
    inner: S,
}

impl<S> Service<Request<Body>> for Metrics<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Error>,
{
    type Response = Response<Body>;
    type Error = Error;
    type Future = MetricsFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let endpoint = endpoint_label(&req);
        metrics::gauge!(REQUESTS_IN_FLIGHT).increment(1.0);
        let record = Record {
            endpoint,
            start: Instant::now(),
            status: None,
        };
        MetricsFuture {
            inner: self.inner.call(req),
            record: Some(record),
        }
    }
}

fn endpoint_label<B>(req: &Request<B>) -> &'static str {
    let path = req.uri().path();
    if path.starts_with("/v1/") {
        Endpoint::classify(req.method(), path).label()
    } else {
        "admin"
    }
}

/// Records one request when dropped: at the end of the answer's body, or at
/// once for an error answered without a body from below.
struct Record {
    endpoint: &'static str,
    start: Instant,
    status: Option<StatusCode>,
}

impl Drop for Record {
    fn drop(&mut self) {
        // No status: the client went away before the answer's head.
        let status = match self.status {
            Some(status) => status_label(status),
            None => metrics::SharedString::const_str("cancelled"),
        };
        metrics::gauge!(REQUESTS_IN_FLIGHT).decrement(1.0);
        metrics::counter!(REQUESTS_TOTAL, "endpoint" => self.endpoint, "status" => status)
            .increment(1);
        metrics::histogram!(REQUEST_DURATION, "endpoint" => self.endpoint)
            .record(self.start.elapsed().as_secs_f64());
    }
}

pin_project! {
    pub struct MetricsFuture<F> {
        #[pin]
        inner: F,
        record: Option<Record>,
    }
}

impl<F> Future for MetricsFuture<F>
where
    F: Future<Output = Result<Response<Body>, Error>>,
{
    type Output = Result<Response<Body>, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.inner.poll(cx));
        let Some(mut record) = this.record.take() else {
            return Poll::Ready(result);
        };
        match result {
            Ok(response) => {
                record.status = Some(response.status());
                let (parts, body) = response.into_parts();
                Poll::Ready(Ok(Response::from_parts(parts, body::guarded(body, record))))
            }
            Err(error) => {
                record.status = Some(error.mapping().status);
                drop(record);
                Poll::Ready(Err(error))
            }
        }
    }
}
