//! Request metrics: count by endpoint and status, duration to the last byte,
//! requests in flight; and, for requests under `/v1/`, the usage and savings
//! tally and the access log line (see [`crate::report`]).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use http::{Request, Response, StatusCode};
use pin_project_lite::pin_project;
use tower::{Layer, Service};

use crate::body::{self, Body};
use crate::error::Error;
use crate::observe::{REQUEST_DURATION, REQUESTS_IN_FLIGHT, REQUESTS_TOTAL, status_label};
use crate::openai::Endpoint;
use crate::report::{Finished, Marks, Reporter, Tally};

#[derive(Debug, Clone)]
pub struct MetricsLayer {
    reporter: Arc<Reporter>,
}

impl MetricsLayer {
    pub fn new(reporter: Arc<Reporter>) -> Self {
        MetricsLayer { reporter }
    }
}

impl<S> Layer<S> for MetricsLayer {
    type Service = Metrics<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Metrics {
            inner,
            reporter: self.reporter.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Metrics<S> {
    inner: S,
    reporter: Arc<Reporter>,
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

    fn call(&mut self, mut req: Request<Body>) -> Self::Future {
        let endpoint = endpoint_label(&req);
        metrics::gauge!(REQUESTS_IN_FLIGHT).increment(1.0);
        let access = (endpoint != "admin").then(|| {
            let (tally, usage) = self.reporter.begin();
            req.extensions_mut().insert(tally.clone());
            req.extensions_mut().insert(usage);
            Box::new(Access {
                tally,
                method: req.method().clone(),
                uri: req.uri().clone(),
                request_id: req
                    .extensions()
                    .get::<crate::edge::request_id::RequestId>()
                    .map(|id| id.0.clone()),
                head: None,
                marks: Marks::default(),
            })
        });
        let record = Record {
            endpoint,
            start: Instant::now(),
            status: None,
            ended: false,
            access,
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
    /// The answer's body reached its end (else the client left first).
    ended: bool,
    access: Option<Box<Access>>,
}

/// What the access line and the usage tally need of a request under `/v1/`.
struct Access {
    tally: Tally,
    method: http::Method,
    uri: http::Uri,
    request_id: Option<http::HeaderValue>,
    /// Time to the answer's head.
    head: Option<Duration>,
    /// What sluice's layers noted in the answer's head.
    marks: Marks,
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
        let latency = self.start.elapsed();
        metrics::histogram!(REQUEST_DURATION, "endpoint" => self.endpoint)
            .record(latency.as_secs_f64());
        let Some(access) = self.access.take() else {
            return;
        };
        let (endpoint, status, ended) = (self.endpoint, self.status, self.ended);
        let pending = access.tally.usage_pending();
        let record = move || {
            Finished {
                method: &access.method,
                path: access.uri.path(),
                endpoint,
                status,
                ended,
                latency,
                head: access.head,
                request_id: access.request_id.as_ref().and_then(|v| v.to_str().ok()),
                marks: &access.marks,
            }
            .record(&access.tally);
        };
        // A stream whose usage sluice counts is read now, after its last
        // byte: on the blocking pool, not on the worker serving others.
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) if pending => {
                drop(runtime.spawn_blocking(record));
            }
            _ => record(),
        }
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
                if let Some(access) = &mut record.access {
                    access.head = Some(record.start.elapsed());
                    if access.tally.logs_access() {
                        access.marks = Marks::get(&response).cloned().unwrap_or_default();
                    }
                }
                let (parts, body) = response.into_parts();
                // An empty body has ended already (it may never be polled).
                record.ended = http_body::Body::is_end_stream(&body);
                let body = body::watched(body, record, |record| record.ended = true);
                Poll::Ready(Ok(Response::from_parts(parts, body)))
            }
            Err(error) => {
                record.status = Some(error.mapping().status);
                record.ended = true;
                drop(record);
                Poll::Ready(Err(error))
            }
        }
    }
}
