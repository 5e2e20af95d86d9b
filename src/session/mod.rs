//! Sessions: the requests of one session run one at a time.
//!
//! A request carrying the session header (`[sessions] header`, default
//! `x-session-id`) runs only while fewer than `max_concurrent` requests of
//! its session are running; the others wait for their turn in arrival order.
//! A request runs until its answer's body has ended or been dropped, streams
//! included, so an agent's next step never reaches the upstream before the
//! previous answer is complete. Requests without the header, and requests of
//! other sessions, are never held back. A session belongs to a client: it is
//! keyed by the client's [`Identity`] and the session id, so two clients
//! that happen to use the same id never wait on each other.
//!
//! ```text
//! POST /v1/chat/completions  x-session-id: job-7   runs
//! POST /v1/chat/completions  x-session-id: job-7   waits for the first answer's last byte
//! POST /v1/chat/completions  x-session-id: job-8   runs
//! POST /v1/chat/completions                        runs
//! ```
//!
//! The header is addressed to sluice and removed before forwarding; a value
//! that is not 1 to 256 visible ASCII characters is a 400. A request still
//! waiting when its deadline comes gets 503 `session_busy`. Sessions idle for
//! `idle_timeout` are forgotten, so the map of sessions stays bounded.
//!
//! The layer sits below the cache: a cached answer never waits for its
//! session.

mod sessions;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use http::{HeaderMap, HeaderName, Request, Response};
use pin_project_lite::pin_project;
use tower::{Layer, Service};

use crate::body::Body;
use crate::config::SessionsConfig;
use crate::context::Identity;
use crate::edge::timeout::Deadline;
use crate::error::Error;
pub use sessions::{Sessions, Ticket, Turn};

pub use crate::error::session::MAX_ID_LEN;

pub use crate::error::SessionError;

#[derive(Debug, Clone)]
pub struct SessionLayer {
    header: HeaderName,
    sessions: Arc<Sessions>,
}

impl SessionLayer {
    /// The layer for `config`, with its map of sessions. Inside a Tokio
    /// runtime, a background task forgets idle sessions even when no new
    /// ones arrive; it ends when the last clone of the layer is dropped.
    pub fn new(config: &SessionsConfig) -> SessionLayer {
        // `validate` rejects a bad name; the default keeps a config built
        // in code (unvalidated) working.
        let header = HeaderName::from_bytes(config.header.as_bytes())
            .unwrap_or_else(|_| HeaderName::from_static("x-session-id"));
        let sessions = Sessions::new(config.max_concurrent, config.idle_timeout);
        sessions.sweep_in_background();
        SessionLayer { header, sessions }
    }

    /// The map of sessions (for tests and introspection).
    pub fn sessions(&self) -> &Arc<Sessions> {
        &self.sessions
    }
}

impl<S> Layer<S> for SessionLayer {
    type Service = Session<S>;
    fn layer(&self, inner: S) -> Session<S> {
        Session {
            inner,
            header: self.header.clone(),
            sessions: self.sessions.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Session<S> {
    inner: S,
    header: HeaderName,
    sessions: Arc<Sessions>,
}

type BoxFuture = Pin<Box<dyn Future<Output = Result<Response<Body>, Error>> + Send>>;

impl<S> Service<Request<Body>> for Session<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Error> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = Error;
    type Future = SessionFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<Body>) -> Self::Future {
        let id = match session_id(&self.header, req.headers()) {
            Ok(Some(id)) => id,
            Ok(None) => {
                return SessionFuture::Pass {
                    inner: self.inner.call(req),
                };
            }
            Err(error) => return SessionFuture::Reject { error },
        };
        req.headers_mut().remove(&self.header);
        let client = req
            .extensions()
            .get::<Identity>()
            .cloned()
            .unwrap_or_else(|| Identity::of_credentials(req.headers()));
        let ticket = match self.sessions.join(client, id).try_turn() {
            Ok(turn) => {
                self.sessions.record_wait(Duration::ZERO);
                return SessionFuture::Hold {
                    inner: self.inner.call(req),
                    turn: Some(turn),
                };
            }
            Err(ticket) => ticket,
        };
        let until = req.extensions().get::<Deadline>().map(|d| give_up_at(d.0));
        // The ready service is the one to call; leave a fresh clone behind.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let sessions = self.sessions.clone();
        SessionFuture::Wait {
            waiting: Box::pin(async move {
                let turn = sessions.wait(ticket, until).await?;
                let response = inner.call(req).await?;
                Ok(hold_until_done(response, turn))
            }),
        }
    }
}

/// When a request waiting for its session gives up, given the request's
/// deadline.
///
/// The edge Timeout layer answers 504 at the deadline itself. When both
/// timers fire in the same tick, which answer the client gets depends on
/// which future is polled first: today the Timeout polls the request before
/// its own timer, so the 503 would win, but a layer in between that moves
/// the request to another task (or over a channel) would turn that into a
/// race. Giving up a little earlier — 1% of the time left, at most 50 ms —
/// leaves room for the 503 to travel up, and costs a waiting request
/// nothing it could have used: its answer head could not have arrived in
/// that sliver anyway.
fn give_up_at(deadline: tokio::time::Instant) -> tokio::time::Instant {
    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
    deadline - (left / 100).min(Duration::from_millis(50))
}

/// The request's session id: `None` without the header; an error when a
/// value is empty, longer than [`MAX_ID_LEN`], not visible ASCII (spaces
/// inside allowed), or when the header is repeated.
fn session_id(header: &HeaderName, headers: &HeaderMap) -> Result<Option<Box<str>>, SessionError> {
    let mut values = headers.get_all(header).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    let bytes = value.as_bytes();
    let visible = |b: &u8| (b' '..=b'~').contains(b);
    if values.next().is_some()
        || bytes.is_empty()
        || bytes.len() > MAX_ID_LEN
        || !bytes.iter().all(visible)
    {
        return Err(SessionError::InvalidHeader {
            header: header.clone(),
        });
    }
    // All visible ASCII, so valid UTF-8.
    Ok(Some(String::from_utf8_lossy(bytes).into()))
}

/// Keeps the session's turn until the answer's body has ended or been
/// dropped.
fn hold_until_done(response: Response<Body>, turn: Turn) -> Response<Body> {
    let (parts, body) = response.into_parts();
    Response::from_parts(parts, crate::body::guarded(body, turn))
}

pin_project! {
    /// The session layer's future: passes through, holds a turn taken at
    /// once, waits for one, or rejects the request.
    #[project = SessionProj]
    pub enum SessionFuture<F> {
        /// No session header.
        Pass { #[pin] inner: F },
        /// The session had room: the turn goes into the answer's body.
        Hold { #[pin] inner: F, turn: Option<Turn> },
        /// The session was busy: waits for a turn, then calls.
        Wait { waiting: BoxFuture },
        /// The header's value is unusable.
        Reject { error: SessionError },
    }
}

impl<F> Future for SessionFuture<F>
where
    F: Future<Output = Result<Response<Body>, Error>>,
{
    type Output = Result<Response<Body>, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            SessionProj::Pass { inner } => inner.poll(cx),
            SessionProj::Hold { inner, turn } => {
                let result = ready!(inner.poll(cx));
                Poll::Ready(result.map(|response| match turn.take() {
                    Some(turn) => hold_until_done(response, turn),
                    None => response,
                }))
            }
            SessionProj::Wait { waiting } => waiting.as_mut().poll(cx),
            SessionProj::Reject { error } => Poll::Ready(Err(error.clone().into())),
        }
    }
}

#[cfg(test)]
mod tests;
