//! Bodies over `max_body_size` get 413.
//!
//! A declared `Content-Length` over the limit is refused before anything is
//! read. Other bodies are wrapped so that reading past the limit fails; the
//! reader (ingress, or the upstream forwarder for streamed uploads) turns
//! that failure into 413 via [`is_length_limit_error`].

use std::task::{Context, Poll};

use futures_util::future::Either;
use http::{Request, Response, header};
use http_body::Body as _;
use http_body_util::{LengthLimitError, Limited};
use tower::{Layer, Service};

use super::EdgeError;
use crate::body::{self, Body};
use crate::error::Error;

#[derive(Debug, Clone, Copy)]
pub struct BodyLimitLayer {
    limit: u64,
}

impl BodyLimitLayer {
    pub fn new(limit: u64) -> Self {
        BodyLimitLayer { limit }
    }
}

impl<S> Layer<S> for BodyLimitLayer {
    type Service = BodyLimit<S>;
    fn layer(&self, inner: S) -> Self::Service {
        BodyLimit {
            inner,
            limit: self.limit,
        }
    }
}

#[derive(Debug, Clone)]
pub struct BodyLimit<S> {
    inner: S,
    limit: u64,
}

impl<S> Service<Request<Body>> for BodyLimit<S>
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
        let limit = self.limit;
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|len| len > limit) {
            return Either::Left(std::future::ready(Err(EdgeError::PayloadTooLarge {
                limit,
            }
            .into())));
        }
        let req = if req.body().is_end_stream() || declared.is_some() {
            // Empty, or hyper already enforces the declared length, which
            // is within the limit.
            req
        } else {
            req.map(|b| {
                body::boxed(Limited::new(
                    b,
                    usize::try_from(limit).unwrap_or(usize::MAX),
                ))
            })
        };
        Either::Right(self.inner.call(req))
    }
}

/// Whether `error` (or one of its causes) is a body read past the limit.
pub fn is_length_limit_error(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(e) = current {
        if e.is::<LengthLimitError>() {
            return true;
        }
        current = e.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    fn reader() -> impl Service<
        Request<Body>,
        Response = Response<Body>,
        Error = Error,
        Future = impl Future<Output = Result<Response<Body>, Error>>,
    > + Clone {
        tower::service_fn(|req: Request<Body>| async move {
            match req.into_body().collect().await {
                Ok(_) => Ok(Response::new(body::empty())),
                Err(e) if is_length_limit_error(e.as_ref()) => {
                    Err(EdgeError::PayloadTooLarge { limit: 4 }.into())
                }
                Err(_) => Ok(Response::new(body::empty())),
            }
        })
    }

    #[tokio::test]
    async fn declared_length_over_limit_is_refused_unread() {
        let req = Request::builder()
            .header("content-length", "5")
            .body(body::full("12345"))
            .unwrap_or_default();
        let result = BodyLimitLayer::new(4).layer(reader()).oneshot(req).await;
        assert!(matches!(
            result,
            Err(Error::Edge(EdgeError::PayloadTooLarge { limit: 4 }))
        ));
    }

    #[tokio::test]
    async fn undeclared_length_over_limit_fails_when_read() {
        let stream = futures_util::stream::iter(vec![
            Ok::<_, std::io::Error>(http_body::Frame::data(bytes::Bytes::from_static(b"123"))),
            Ok(http_body::Frame::data(bytes::Bytes::from_static(b"45"))),
        ]);
        let req = Request::new(body::boxed(http_body_util::StreamBody::new(stream)));
        let result = BodyLimitLayer::new(4).layer(reader()).oneshot(req).await;
        assert!(matches!(
            result,
            Err(Error::Edge(EdgeError::PayloadTooLarge { .. }))
        ));
    }

    #[tokio::test]
    async fn within_limit_passes() {
        let req = Request::new(body::full("1234"));
        let result = BodyLimitLayer::new(4).layer(reader()).oneshot(req).await;
        assert!(result.is_ok());
    }
}
