//! Ingress: requests to the understood endpoints are read and parsed once.
//!
//! For `POST /v1/chat/completions`, `/v1/completions`, `/v1/embeddings` and
//! `/v1/responses` the body is read (bounded by the edge's body limit) and
//! parsed into an [`ApiRequest`], which goes into the request's extensions for
//! the layers below; the request body is then left empty. Invalid JSON or a
//! body that is not an object is answered 400 here. Every other `/v1/` request
//! passes untouched, its body still streaming.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::{Request, Response};
use http_body_util::BodyExt;
use tower::{Layer, Service};

use crate::body::{self, Body};
use crate::config::CompressLevel;
use crate::edge::EdgeError;
use crate::edge::body_limit::is_length_limit_error;
use crate::error::Error;
use crate::openai::request::ParseError;
use crate::openai::{ApiRequest, Endpoint};

/// Errors raised while reading and parsing an understood request.
#[derive(Debug, thiserror::Error)]
pub enum IngressError {
    #[error("We could not parse the JSON body of your request: {0}")]
    InvalidJson(serde_json::Error),
    #[error("The request body must be a JSON object.")]
    NotAnObject,
    #[error("could not read the request body: {0}")]
    BodyRead(String),
    #[error("The {name} header must be one of: {expected}.")]
    InvalidHeader {
        name: &'static str,
        expected: &'static str,
    },
}

/// Per-request overrides of the rewriting layers' settings, from the
/// `x-sluice-prune` and `x-sluice-compress` headers; in the extensions of
/// every understood request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Overrides {
    pub prune: Option<bool>,
    pub compress: Option<CompressLevel>,
}

impl Overrides {
    /// Reads the override headers; a value outside the allowed ones is the
    /// client's error.
    pub fn from_headers(headers: &http::HeaderMap) -> Result<Overrides, IngressError> {
        fn read<T>(
            headers: &http::HeaderMap,
            name: &'static str,
            expected: &'static str,
            parse: fn(&str) -> Option<T>,
        ) -> Result<Option<T>, IngressError> {
            let Some(value) = headers.get(name) else {
                return Ok(None);
            };
            value
                .to_str()
                .ok()
                .map(|v| v.trim().to_ascii_lowercase())
                .and_then(|v| parse(&v))
                .map(Some)
                .ok_or(IngressError::InvalidHeader { name, expected })
        }
        Ok(Overrides {
            prune: read(headers, "x-sluice-prune", "on, off", |v| match v {
                "on" => Some(true),
                "off" => Some(false),
                _ => None,
            })?,
            compress: read(
                headers,
                "x-sluice-compress",
                "off, safe, aggressive",
                |v| match v {
                    "off" => Some(CompressLevel::Off),
                    "safe" => Some(CompressLevel::Safe),
                    "aggressive" => Some(CompressLevel::Aggressive),
                    _ => None,
                },
            )?,
        })
    }
}

impl From<ParseError> for IngressError {
    fn from(e: ParseError) -> Self {
        match e {
            ParseError::InvalidJson(e) => IngressError::InvalidJson(e),
            ParseError::NotAnObject => IngressError::NotAnObject,
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct IngressLayer {
    limit: u64,
}

impl IngressLayer {
    /// `limit` is the body limit, named in the 413 message.
    pub fn new(limit: u64) -> Self {
        IngressLayer { limit }
    }
}

impl<S> Layer<S> for IngressLayer {
    type Service = Ingress<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Ingress {
            inner,
            limit: self.limit,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Ingress<S> {
    inner: S,
    limit: u64,
}

type BoxFuture = Pin<Box<dyn Future<Output = Result<Response<Body>, Error>> + Send>>;

impl<S> Service<Request<Body>> for Ingress<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Error> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = Error;
    type Future = futures_util::future::Either<S::Future, BoxFuture>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let endpoint = Endpoint::classify(req.method(), req.uri().path());
        if !endpoint.is_understood() {
            return futures_util::future::Either::Left(self.inner.call(req));
        }
        // The ready service is the one to call; leave a fresh clone behind.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let limit = self.limit;
        futures_util::future::Either::Right(Box::pin(async move {
            let overrides = Overrides::from_headers(req.headers())?;
            let (mut parts, body) = req.into_parts();
            parts.extensions.insert(overrides);
            let bytes = body
                .collect()
                .await
                .map_err(|e| read_error(e, limit))?
                .to_bytes();
            let api = ApiRequest::parse(endpoint, bytes).map_err(IngressError::from)?;
            parts.extensions.insert(api);
            inner.call(Request::from_parts(parts, body::empty())).await
        }))
    }
}

fn read_error(error: body::BoxError, limit: u64) -> Error {
    if is_length_limit_error(error.as_ref()) {
        EdgeError::PayloadTooLarge { limit }.into()
    } else {
        IngressError::BodyRead(error.to_string()).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::ServiceExt;

    async fn send(path: &str, body: &'static str) -> Result<Response<Body>, Error> {
        let inner = tower::service_fn(|req: Request<Body>| async move {
            let api = req.extensions().get::<ApiRequest>().cloned();
            let mut resp = Response::new(body::empty());
            if let Some(api) = api {
                resp.headers_mut().insert(
                    "parsed-model",
                    http::HeaderValue::from_str(api.model().unwrap_or("none"))
                        .unwrap_or(http::HeaderValue::from_static("bad")),
                );
            }
            Ok::<_, Error>(resp)
        });
        let req = Request::builder()
            .method("POST")
            .uri(path)
            .body(body::full(body))
            .unwrap_or_default();
        IngressLayer::new(1024).layer(inner).oneshot(req).await
    }

    #[tokio::test]
    async fn understood_endpoints_are_parsed() {
        let resp = send("/v1/chat/completions", r#"{"model":"gpt-4o"}"#).await;
        let resp = resp.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(resp.headers()["parsed-model"], "gpt-4o");
    }

    #[tokio::test]
    async fn other_paths_pass_unparsed() {
        let resp = send("/v1/files", "not json at all").await;
        let resp = resp.unwrap_or_else(|e| panic!("{e}"));
        assert!(resp.headers().get("parsed-model").is_none());
    }

    #[test]
    fn override_headers_are_read_and_checked() {
        let headers = |pairs: &[(&'static str, &'static str)]| {
            let mut map = http::HeaderMap::new();
            for (name, value) in pairs {
                map.insert(*name, http::HeaderValue::from_static(value));
            }
            map
        };
        assert_eq!(
            Overrides::from_headers(&headers(&[])).ok(),
            Some(Overrides::default())
        );
        let read = Overrides::from_headers(&headers(&[
            ("x-sluice-prune", "ON"),
            ("x-sluice-compress", "aggressive"),
        ]));
        assert_eq!(
            read.ok(),
            Some(Overrides {
                prune: Some(true),
                compress: Some(CompressLevel::Aggressive)
            })
        );
        for bad in [
            ("x-sluice-prune", "yes"),
            ("x-sluice-compress", "max"),
            ("x-sluice-compress", ""),
        ] {
            let error = Overrides::from_headers(&headers(&[bad])).err();
            assert!(
                matches!(error, Some(IngressError::InvalidHeader { name, .. }) if name == bad.0),
                "{bad:?}"
            );
        }
    }

    #[tokio::test]
    async fn bad_bodies_are_400() {
        for bad in ["{not json", "[1,2,3]", "\"text\"", "", "42"] {
            let result = send("/v1/embeddings", bad).await;
            let Err(error) = result else {
                panic!("{bad:?} accepted")
            };
            assert_eq!(error.mapping().status, 400, "{bad:?}");
        }
    }
}
