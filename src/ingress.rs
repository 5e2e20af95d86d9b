//! Ingress: requests to the understood endpoints are read and parsed once.
//!
//! For `POST /v1/chat/completions`, `/v1/completions`, `/v1/embeddings` and
//! `/v1/responses` the body is read (bounded by the edge's body limit) and
//! parsed into an [`ApiRequest`], which goes into the request's extensions for
//! the layers below; the request body is then left empty. Invalid JSON, a
//! body that is not an object or one nested deeper than `max_json_depth` is
//! answered 400 here; a body whose next piece takes longer than
//! `body_read_timeout` to come, 408. Every other `/v1/` request passes
//! untouched, its body still streaming (paced by the same timeout: a stalled
//! upload fails instead of holding an upstream connection). Any request whose
//! path and query are longer than `max_uri_length` gets 414 first.
//!
//! ```text
//! let svc = ServiceBuilder::new()
//!     .layer(IngressLayer::new(Limits::from(&config.server)))
//!     .service(inner);
//! ```

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::future::Either;
use http::{Request, Response};
use http_body::{Body as _, Frame, SizeHint};
use http_body_util::BodyExt;
use pin_project_lite::pin_project;
use tower::{Layer, Service};

use crate::body::{self, Body};
use crate::config::{CompressLevel, ServerConfig};
use crate::edge::EdgeError;
use crate::edge::body_limit::is_length_limit_error;
use crate::error::Error;
use crate::openai::request::ParseError;
use crate::openai::{ApiRequest, Endpoint};

pub use crate::error::IngressError;

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
            ParseError::TooDeep { max } => IngressError::TooDeep { max },
        }
    }
}

/// What a client may send, as far as ingress checks it (`[server]`).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// `max_body_size`, named in the 413 message (the edge enforces it).
    pub body: u64,
    /// `max_uri_length`: longest path and query.
    pub uri: usize,
    /// `max_json_depth`.
    pub json_depth: usize,
    /// `body_read_timeout`: longest wait for the next piece of a body.
    pub body_read_timeout: Duration,
}

impl From<&ServerConfig> for Limits {
    fn from(server: &ServerConfig) -> Self {
        Limits {
            body: server.max_body_size.as_u64(),
            uri: usize::try_from(server.max_uri_length.as_u64()).unwrap_or(usize::MAX),
            json_depth: server.max_json_depth,
            body_read_timeout: server.body_read_timeout,
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct IngressLayer {
    limits: Limits,
}

impl IngressLayer {
    pub fn new(limits: Limits) -> Self {
        IngressLayer { limits }
    }
}

impl<S> Layer<S> for IngressLayer {
    type Service = Ingress<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Ingress {
            inner,
            limits: self.limits,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Ingress<S> {
    inner: S,
    limits: Limits,
}

type BoxFuture = Pin<Box<dyn Future<Output = Result<Response<Body>, Error>> + Send>>;

impl<S> Service<Request<Body>> for Ingress<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Error> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = Error;
    type Future =
        Either<Either<std::future::Ready<Result<Response<Body>, Error>>, S::Future>, BoxFuture>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<Body>) -> Self::Future {
        let uri_len = req.uri().path_and_query().map_or(0, |pq| pq.as_str().len());
        if uri_len > self.limits.uri {
            let error = IngressError::UriTooLong {
                limit: self.limits.uri,
            };
            return Either::Left(Either::Left(std::future::ready(Err(error.into()))));
        }
        if let Err(error) = check_target(&req) {
            return Either::Left(Either::Left(std::future::ready(Err(error.into()))));
        }
        let endpoint = Endpoint::classify(req.method(), req.uri().path());
        if !endpoint.is_understood() {
            if !req.body().is_end_stream() {
                let after = self.limits.body_read_timeout;
                req = req.map(|body| body::boxed(Paced::new(body, after)));
            }
            return Either::Left(Either::Right(self.inner.call(req)));
        }
        // The ready service is the one to call; leave a fresh clone behind.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let limits = self.limits;
        Either::Right(Box::pin(async move {
            let overrides = Overrides::from_headers(req.headers())?;
            let (mut parts, body) = req.into_parts();
            parts.extensions.insert(overrides);
            let bytes = read_body(body, &limits).await?;
            let api = ApiRequest::parse_within_depth(endpoint, bytes, limits.json_depth)
                .map_err(IngressError::from)?;
            if let (Some(tally), Some(model)) =
                (parts.extensions.get::<crate::report::Tally>(), api.model())
            {
                tally.set_model(model);
            }
            parts.extensions.insert(api);
            inner.call(Request::from_parts(parts, body::empty())).await
        }))
    }
}

/// Refuses a path that leaves `/v1/` (404: it is never forwarded) and a
/// request with two `Host` headers (400, as RFC 9112 §3.2 requires).
fn check_target(req: &Request<Body>) -> Result<(), IngressError> {
    let path = req.uri().path();
    if !crate::openai::path::inside_v1(path) {
        return Err(IngressError::PathOutside {
            path: path.to_owned(),
        });
    }
    let mut hosts = req.headers().get_all(http::header::HOST).iter();
    if hosts.next().is_some() && hosts.next().is_some() {
        return Err(IngressError::DuplicateHost);
    }
    Ok(())
}

/// A streamed request body's next piece did not come within
/// `body_read_timeout`; the upstream forwarder answers it with 408.
#[derive(Debug, thiserror::Error)]
#[error(
    "The request body stopped arriving: nothing came for {}.",
    humantime::format_duration(*after)
)]
pub struct BodyTimedOut {
    pub after: Duration,
}

pin_project! {
    /// A request body streamed through that fails with [`BodyTimedOut`]
    /// when its reader waits longer than `after` for the next piece. Only
    /// time spent waiting on the client counts, not time the reader (the
    /// upstream) took before asking.
    pub struct Paced<B> {
        #[pin]
        inner: B,
        #[pin]
        idle: tokio::time::Sleep,
        after: Duration,
        waiting: bool,
    }
}

impl<B> Paced<B> {
    pub fn new(inner: B, after: Duration) -> Self {
        Paced {
            inner,
            idle: tokio::time::sleep(after),
            after,
            waiting: false,
        }
    }
}

impl<B> http_body::Body for Paced<B>
where
    B: http_body::Body<Data = Bytes, Error = body::BoxError>,
{
    type Data = Bytes;
    type Error = body::BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, body::BoxError>>> {
        let mut this = self.project();
        if !*this.waiting {
            *this.waiting = true;
            let by = tokio::time::Instant::now() + *this.after;
            this.idle.as_mut().reset(by);
        }
        match this.inner.poll_frame(cx) {
            Poll::Ready(frame) => {
                *this.waiting = false;
                Poll::Ready(frame)
            }
            Poll::Pending => match this.idle.poll(cx) {
                Poll::Ready(()) => {
                    let after = *this.after;
                    Poll::Ready(Some(Err(Box::new(BodyTimedOut { after }))))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Most bytes reserved for a body before they arrive.
const PREALLOCATE_MAX: usize = 1 << 20;

/// The whole body, failing when its next piece takes longer than
/// `body_read_timeout` to come. One timer for the whole read, moved on as
/// data comes; one buffer, sized from the declared length.
async fn read_body(mut body: Body, limits: &Limits) -> Result<Bytes, Error> {
    let after = limits.body_read_timeout;
    let idle = tokio::time::sleep(after);
    tokio::pin!(idle);
    let mut first: Option<Bytes> = None;
    let mut joined: Option<BytesMut> = None;
    loop {
        let frame = tokio::select! {
            biased;
            frame = body.frame() => frame,
            () = &mut idle => return Err(IngressError::BodyTimeout { after }.into()),
        };
        let data = match frame {
            None => break,
            Some(Err(error)) => return Err(read_error(error, limits.body)),
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) if !data.is_empty() => data,
                // Trailers, empty chunks.
                _ => continue,
            },
        };
        idle.as_mut().reset(tokio::time::Instant::now() + after);
        match (&mut first, &mut joined) {
            (None, _) => first = Some(data),
            (Some(_), Some(buffer)) => buffer.extend_from_slice(&data),
            (Some(head), None) => {
                // What is still to come by the declared length, but no more
                // than a little up front: a client that declares a large body
                // and stalls must not make sluice reserve it.
                let expected = usize::try_from(body.size_hint().lower())
                    .unwrap_or(0)
                    .min(PREALLOCATE_MAX);
                let mut buffer = BytesMut::with_capacity(head.len() + data.len() + expected);
                buffer.extend_from_slice(head);
                buffer.extend_from_slice(&data);
                joined = Some(buffer);
            }
        }
    }
    Ok(match (joined, first) {
        (Some(buffer), _) => buffer.freeze(),
        (None, Some(only)) => only,
        (None, None) => Bytes::new(),
    })
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

    fn limits() -> Limits {
        Limits {
            body: 1024,
            uri: 64,
            json_depth: 4,
            body_read_timeout: Duration::from_secs(5),
        }
    }

    async fn send(path: &str, body: &'static str) -> Result<Response<Body>, Error> {
        send_body(path, body::full(body)).await
    }

    async fn send_body(path: &str, body: Body) -> Result<Response<Body>, Error> {
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
            .body(body)
            .unwrap_or_default();
        IngressLayer::new(limits()).layer(inner).oneshot(req).await
    }

    fn status(result: Result<Response<Body>, Error>) -> u16 {
        match result {
            Ok(response) => response.status().as_u16(),
            Err(error) => error.mapping().status.as_u16(),
        }
    }

    #[tokio::test]
    async fn long_uris_get_414_on_every_path() {
        let long = format!("/v1/files?{}", "q".repeat(64));
        assert_eq!(status(send(&long, "").await), 414);
        let long = format!("/v1/chat/completions?{}", "q".repeat(64));
        assert_eq!(status(send(&long, "{}").await), 414);
        assert_eq!(status(send("/v1/files?short", "").await), 200);
    }

    #[tokio::test]
    async fn deep_bodies_get_400() {
        let result = send("/v1/chat/completions", r#"{"a":[[[{}]]]}"#).await;
        assert!(matches!(
            result,
            Err(Error::Ingress(IngressError::TooDeep { max: 4 }))
        ));
        assert_eq!(
            status(send("/v1/chat/completions", r#"{"a":[[[1]]]}"#).await),
            200
        );
    }

    /// Only time the reader waits on the client counts: a reader that
    /// comes late (an upstream slow to ask) finds the data, a reader kept
    /// waiting past the timeout gets `BodyTimedOut`.
    #[tokio::test(start_paused = true)]
    async fn paced_bodies_count_only_waiting_on_the_client() {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, body::BoxError>>(4);
        let frames = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|frame| (frame, rx))
        });
        let mut paced = std::pin::pin!(Paced::new(
            http_body_util::StreamBody::new(frames),
            Duration::from_secs(5),
        ));
        let _ = tx.send(Ok(Frame::data(Bytes::from_static(b"a")))).await;
        tokio::time::sleep(Duration::from_secs(60)).await;
        let first = paced.as_mut().frame().await;
        assert!(matches!(first, Some(Ok(_))), "data waiting was not read");
        let waited = paced.as_mut().frame().await;
        let Some(Err(error)) = waited else {
            panic!("no timeout")
        };
        assert!(error.is::<BodyTimedOut>());
        drop(tx);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_body_gets_408_and_a_slow_one_is_read() {
        // Two pieces 4s apart (under the 5s timeout), then nothing.
        let (tx, rx) =
            tokio::sync::mpsc::channel::<Result<http_body::Frame<Bytes>, std::io::Error>>(4);
        let frames = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|frame| (frame, rx))
        });
        let stalled = body::boxed(http_body_util::StreamBody::new(frames));
        #[expect(clippy::disallowed_methods, reason = "a test task, awaited below")]
        let sender = tokio::spawn(async move {
            for piece in ["{\"model\"", ":\"m\"}"] {
                let frame = http_body::Frame::data(Bytes::from_static(piece.as_bytes()));
                let _ = tx.send(Ok(frame)).await;
                tokio::time::sleep(Duration::from_secs(4)).await;
            }
            // Held open, never finished.
            tokio::time::sleep(Duration::from_secs(3600)).await;
            drop(tx);
        });
        let result = send_body("/v1/chat/completions", stalled).await;
        assert!(matches!(
            result,
            Err(Error::Ingress(IngressError::BodyTimeout { .. }))
        ));
        assert_eq!(status(result), 408);
        sender.abort();

        let pieces = futures_util::stream::iter(["{\"model\"", ":\"m\"}"].map(|piece| {
            Ok::<_, std::io::Error>(http_body::Frame::data(Bytes::from_static(piece.as_bytes())))
        }));
        let resp = send_body(
            "/v1/chat/completions",
            body::boxed(http_body_util::StreamBody::new(pieces)),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(resp.headers()["parsed-model"], "m");
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
