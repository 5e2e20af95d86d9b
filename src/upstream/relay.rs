//! Relaying an upstream's answer body once it is on its way to the client.
//!
//! Frames pass through as they arrive. Two clocks watch them: the upstream's
//! `timeout` for the whole exchange, and `idle_timeout` between two frames.
//! When either runs out, or the upstream's connection breaks, the answer can
//! no longer be retried (bytes have left): an event stream ends with one
//! last SSE event carrying an error in OpenAI's shape, which the SDKs raise
//! instead of returning a silently truncated answer; any other body ends with
//! an error, which cuts the connection so the client cannot mistake it for a
//! whole answer. Either way the upstream's breaker counts a failure.

use std::future::poll_fn;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body as _, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::time::{Instant, Sleep};

use super::Upstream;
use super::forward::{count_error, root_cause};
use super::health::Outcome;
use crate::body::BoxError;
use crate::openai::error::ErrorBody;

pub struct Relay {
    inner: Incoming,
    upstream: Arc<Upstream>,
    started: Instant,
    /// The upstream's `timeout` for the whole exchange.
    ends_at: Instant,
    /// Wakes at the earlier of `ends_at` and the idle limit.
    timer: Pin<Box<Sleep>>,
    sse: bool,
    /// A frame read ahead (a stream's first chunk), sent before anything else.
    held: Option<Frame<Bytes>>,
    first_byte_seen: bool,
    state: State,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Relaying,
    /// The error event went out; the body ends next.
    Failed,
    Done,
}

impl Relay {
    pub fn new(
        inner: Incoming,
        upstream: Arc<Upstream>,
        started: Instant,
        ends_at: Instant,
        sse: bool,
    ) -> Relay {
        let idle_by = (Instant::now() + upstream.idle_timeout).min(ends_at);
        Relay {
            inner,
            upstream,
            started,
            ends_at,
            timer: Box::pin(tokio::time::sleep_until(idle_by)),
            sse,
            held: None,
            first_byte_seen: false,
            state: State::Relaying,
        }
    }

    /// Reads ahead to the first chunk with data and holds it. `Err` when the
    /// upstream's connection broke first; the caller bounds the wait.
    pub async fn first_chunk(&mut self) -> Result<(), String> {
        loop {
            let frame = poll_fn(|cx| Pin::new(&mut self.inner).poll_frame(cx)).await;
            match frame {
                None => return Ok(()),
                Some(Err(error)) => return Err(root_cause(&error)),
                Some(Ok(frame)) => {
                    let has_data = frame.data_ref().is_some_and(|d| !d.is_empty());
                    if has_data || !frame.is_data() {
                        self.saw_first_byte();
                        self.held = Some(frame);
                        self.rearm();
                        return Ok(());
                    }
                }
            }
        }
    }

    fn saw_first_byte(&mut self) {
        if !self.first_byte_seen {
            self.first_byte_seen = true;
            self.upstream
                .hot
                .first_byte
                .record(self.started.elapsed().as_secs_f64());
        }
    }

    /// Restarts the idle clock after a frame.
    fn rearm(&mut self) {
        let idle_by = (Instant::now() + self.upstream.idle_timeout).min(self.ends_at);
        self.timer.as_mut().reset(idle_by);
    }

    /// The answer broke after bytes left: counted, and ended as well as it can be.
    fn fail(
        &mut self,
        kind: &'static str,
        reason: String,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let upstream = &self.upstream;
        upstream
            .health
            .record(Outcome::Failure, std::time::Instant::now());
        count_error(upstream, kind);
        tracing::warn!(upstream = %upstream.name, %reason, "upstream answer ended mid-way");
        if !self.sse {
            self.state = State::Done;
            return Poll::Ready(Some(Err(reason.into())));
        }
        self.state = State::Failed;
        let message = format!(
            "The upstream {} stopped in the middle of this streamed answer ({reason}); the answer is incomplete.",
            upstream.name
        );
        Poll::Ready(Some(Ok(Frame::data(error_event(&message)))))
    }
}

/// An SSE event with OpenAI's error body: `event: error` and
/// `data: {"error":{...}}`, the form both SDKs raise on.
pub fn error_event(message: &str) -> Bytes {
    let json = ErrorBody {
        message,
        kind: "upstream_error",
        code: "upstream_stream_failed",
    }
    .to_bytes();
    let mut out = Vec::with_capacity(json.len() + 24);
    crate::openai::sse::named_event("error", &json, &mut out);
    Bytes::from(out)
}

impl http_body::Body for Relay {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if let Some(frame) = this.held.take() {
            return Poll::Ready(Some(Ok(frame)));
        }
        match this.state {
            State::Relaying => {}
            State::Failed => {
                this.state = State::Done;
                return Poll::Ready(None);
            }
            State::Done => return Poll::Ready(None),
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                this.saw_first_byte();
                this.rearm();
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(None) => {
                this.state = State::Done;
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(error))) => this.fail(
                "stream_broken",
                format!("connection lost: {}", root_cause(&error)),
            ),
            Poll::Pending => match this.timer.as_mut().poll(cx) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(()) => {
                    if Instant::now() >= this.ends_at {
                        let limit = humantime::format_duration(this.upstream.timeout);
                        this.fail("timeout", format!("its timeout of {limit} passed"))
                    } else {
                        let limit = humantime::format_duration(this.upstream.idle_timeout);
                        this.fail("stream_stalled", format!("nothing came for {limit}"))
                    }
                }
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.held.is_none()
            && match self.state {
                State::Relaying => self.inner.is_end_stream(),
                State::Failed => false,
                State::Done => true,
            }
    }

    fn size_hint(&self) -> SizeHint {
        match (&self.held, self.state) {
            (None, State::Relaying) => self.inner.size_hint(),
            _ => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_event_is_openai_shaped_sse() {
        let event = error_event("broke \"here\"");
        let text = String::from_utf8_lossy(&event);
        assert!(text.starts_with("event: error\ndata: {\"error\":"));
        assert!(text.ends_with("}\n\n"));
        let data = crate::openai::sse::data_events(&event);
        assert_eq!(data.len(), 1);
        let value: serde_json::Value =
            serde_json::from_slice(&data[0]).unwrap_or(serde_json::Value::Null);
        assert_eq!(value["error"]["message"], "broke \"here\"");
        assert_eq!(value["error"]["type"], "upstream_error");
        assert_eq!(value["error"]["code"], "upstream_stream_failed");
    }
}
