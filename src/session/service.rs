//! The session layer: waits for the session's turn, holds it until the
//! answer's last byte, answers 503 at the deadline.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use http::{HeaderName, Request, Response};
use pin_project_lite::pin_project;
use tower::{Layer, Service};

use super::*;

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

pub(crate) type BoxFuture = Pin<Box<dyn Future<Output = Result<Response<Body>, Error>> + Send>>;

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

/// Keeps the session's turn until the answer's body has ended or been
/// dropped.
pub(crate) fn hold_until_done(response: Response<Body>, turn: Turn) -> Response<Body> {
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
