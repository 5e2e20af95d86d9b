//! Admin routes, answered before any client-facing layer: `/healthz`,
//! `/readyz`, `/metrics`. Any path outside `/v1/` and these is a 404.
//!
//! They sit above load shedding on purpose: probes and scrapes must be
//! answered while sluice is saturated, or orchestrators would kill a busy,
//! healthy instance.

use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::future::Either;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use tower::{Layer, Service};

use crate::body::{self, Body};
use crate::edge::EdgeError;
use crate::error::Error;
use crate::lifecycle::{Lifecycle, Phase};
use crate::upstream::health::Health;

type HealthList = Arc<Vec<Arc<Health>>>;

#[derive(Debug, Clone)]
pub struct AdminLayer {
    lifecycle: Arc<Lifecycle>,
    health: HealthList,
}

impl AdminLayer {
    pub fn new(lifecycle: Arc<Lifecycle>, health: HealthList) -> Self {
        AdminLayer { lifecycle, health }
    }
}

impl<S> Layer<S> for AdminLayer {
    type Service = Admin<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Admin {
            inner,
            lifecycle: self.lifecycle.clone(),
            health: self.health.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Admin<S> {
    inner: S,
    lifecycle: Arc<Lifecycle>,
    health: HealthList,
}

impl<S> Service<Request<Body>> for Admin<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Error>,
{
    type Response = Response<Body>;
    type Error = Error;
    type Future = Either<std::future::Ready<Result<Response<Body>, Error>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let path = req.uri().path();
        if path.starts_with("/v1/") {
            return Either::Right(self.inner.call(req));
        }
        let is_read = req.method() == Method::GET || req.method() == Method::HEAD;
        let answer = match path {
            "/healthz" if is_read => Ok(text(StatusCode::OK, "ok\n")),
            "/readyz" if is_read => Ok(self.readiness()),
            "/metrics" if is_read => Ok(metrics()),
            _ => Err(EdgeError::NotFound {
                method: req.method().clone(),
                path: path.to_owned(),
            }
            .into()),
        };
        Either::Left(std::future::ready(answer))
    }
}

impl<S> Admin<S> {
    /// 200 when sluice itself can serve, 503 while starting or draining.
    /// Upstream health is reported in the body but never makes sluice
    /// unready: a provider outage must give clients clear 502s, not take
    /// every replica out of its load balancer.
    fn readiness(&self) -> Response<Body> {
        let (status, phase) = match self.lifecycle.phase() {
            Phase::Ready => (StatusCode::OK, "ready"),
            Phase::Starting => (StatusCode::SERVICE_UNAVAILABLE, "starting"),
            Phase::Draining => (StatusCode::SERVICE_UNAVAILABLE, "draining"),
        };
        let now = std::time::Instant::now();
        let upstreams: Vec<_> = self.health.iter().map(|h| h.report(now)).collect();
        let body = serde_json::json!({ "status": phase, "upstreams": upstreams });
        let mut response = Response::new(body::full(body.to_string()));
        *response.status_mut() = status;
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        response
    }
}

fn metrics() -> Response<Body> {
    match crate::observe::prometheus() {
        Some(handle) => {
            let mut text = handle.render();
            crate::report::costs::render(&mut text);
            let mut response = Response::new(body::full(text));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            response
        }
        None => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "metrics recorder not installed\n",
        ),
    }
}

fn text(status: StatusCode, message: &'static str) -> Response<Body> {
    let mut response = Response::new(body::full(message));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::ServiceExt;

    async fn call(lifecycle: Arc<Lifecycle>, method: Method, path: &str) -> Result<u16, Error> {
        let inner = tower::service_fn(|_req: Request<Body>| async {
            let mut r = Response::new(body::empty());
            *r.status_mut() = StatusCode::IM_A_TEAPOT;
            Ok::<_, Error>(r)
        });
        let req = Request::builder()
            .method(method)
            .uri(path)
            .body(body::empty())
            .unwrap_or_default();
        AdminLayer::new(lifecycle, Arc::new(Vec::new()))
            .layer(inner)
            .oneshot(req)
            .await
            .map(|r| r.status().as_u16())
    }

    #[tokio::test]
    async fn routes() {
        let lifecycle = Arc::new(Lifecycle::default());
        assert_eq!(
            call(lifecycle.clone(), Method::GET, "/healthz").await.ok(),
            Some(200)
        );
        assert_eq!(
            call(lifecycle.clone(), Method::GET, "/readyz").await.ok(),
            Some(503)
        );
        lifecycle.set(Phase::Ready);
        assert_eq!(
            call(lifecycle.clone(), Method::GET, "/readyz").await.ok(),
            Some(200)
        );
        lifecycle.set(Phase::Draining);
        assert_eq!(
            call(lifecycle.clone(), Method::GET, "/readyz").await.ok(),
            Some(503)
        );
        assert_eq!(
            call(lifecycle.clone(), Method::GET, "/metrics").await.ok(),
            Some(200)
        );
        assert_eq!(
            call(lifecycle.clone(), Method::POST, "/v1/x").await.ok(),
            Some(418)
        );
        for (method, path) in [
            (Method::GET, "/"),
            (Method::GET, "/v1"),
            (Method::POST, "/healthz"),
        ] {
            let result = call(lifecycle.clone(), method, path).await;
            assert!(
                matches!(result, Err(Error::Edge(EdgeError::NotFound { .. }))),
                "{path}"
            );
        }
    }
}
