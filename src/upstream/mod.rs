//! The upstream end of the pipeline: pick the upstream for a request, send it
//! over that upstream's pooled client, and hand its answer back as it comes.
//!
//! - [`route`]: the request's `model` against each upstream's glob patterns,
//!   first match wins; requests without a model go to the first upstream.
//! - [`pool`]: one shared HTTP client per upstream (keep-alive pool, TCP_NODELAY,
//!   timeouts, HTTP/2 by ALPN) and the pre-warming of its connections.
//! - [`forward`]: header rules and the forwarding of one request, streaming
//!   both ways.

pub mod forward;
pub mod pool;
pub mod route;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use tower::Service;

pub use route::{Upstream, Upstreams};

use crate::body::Body;
use crate::error::Error;

/// Errors on the way to or back from an upstream.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("could not connect to upstream {upstream}: {reason}")]
    Connect { upstream: String, reason: String },
    #[error("upstream {upstream} did not answer in time")]
    Timeout { upstream: String },
    #[error("upstream {upstream} failed: {reason}")]
    Failed { upstream: String, reason: String },
    #[error("request body is larger than the limit of {limit} bytes")]
    RequestBodyTooLarge { limit: u64 },
    #[error("could not read the request body: {reason}")]
    RequestBody { reason: String },
    #[error("The model `{model}` is not served here: no upstream's `models` matches it.")]
    NoRoute { model: String },
}

/// The innermost service: forwards to the routed upstream.
#[derive(Debug, Clone)]
pub struct UpstreamService {
    upstreams: Arc<Upstreams>,
    body_limit: u64,
}

impl UpstreamService {
    pub fn new(upstreams: Arc<Upstreams>, body_limit: u64) -> Self {
        UpstreamService {
            upstreams,
            body_limit,
        }
    }
}

type BoxFuture = Pin<Box<dyn Future<Output = Result<Response<Body>, Error>> + Send>>;

impl Service<Request<Body>> for UpstreamService {
    type Response = Response<Body>;
    type Error = Error;
    type Future = BoxFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let upstreams = self.upstreams.clone();
        let body_limit = self.body_limit;
        Box::pin(async move {
            let upstream = upstreams.route(&req)?;
            forward::forward(upstream, req, body_limit).await
        })
    }
}
