//! Response bodies of the mock upstream: a whole buffer, or a server-sent-event stream
//! whose events are prepared up front and released one frame at a time, each after its
//! own delay, so a client sees them arrive as a real model would send them. A stream
//! can be cut short after some events, failing or stalling instead of ending
//! (`x-mock-fail-after-chunks`, `x-mock-stall-after-chunks`).

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use serde::Serialize;
use tokio::time::{Instant, Sleep};

/// One server-sent event and the pause before it leaves.
#[derive(Debug, Clone)]
pub(crate) struct Event {
    pub delay: Duration,
    pub bytes: Bytes,
}

/// The terminating event of chat and completion streams.
pub(crate) const DONE: &[u8] = b"data: [DONE]\n\n";

/// `data: <json>\n\n`, serialized once straight into the frame buffer.
pub(crate) fn data_event<T: Serialize>(value: &T) -> Result<Bytes, serde_json::Error> {
    let mut buf = Vec::with_capacity(256);
    buf.extend_from_slice(b"data: ");
    serde_json::to_writer(&mut buf, value)?;
    buf.extend_from_slice(b"\n\n");
    Ok(buf.into())
}

/// `event: <name>\ndata: <json>\n\n`, as the Responses API frames its events.
pub(crate) fn named_event<T: Serialize>(name: &str, value: &T) -> Result<Bytes, serde_json::Error> {
    let mut buf = Vec::with_capacity(256);
    buf.extend_from_slice(b"event: ");
    buf.extend_from_slice(name.as_bytes());
    buf.extend_from_slice(b"\ndata: ");
    serde_json::to_writer(&mut buf, value)?;
    buf.extend_from_slice(b"\n\n");
    Ok(buf.into())
}

/// Body of every mock response.
#[derive(Debug)]
pub(crate) struct MockBody {
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    Full(Option<Bytes>),
    Events {
        queue: VecDeque<Event>,
        /// Allocated on the first delay and reset for later ones.
        sleep: Option<Pin<Box<Sleep>>>,
        /// The event at the head of `queue` has had its delay started.
        waiting: bool,
        /// What happens once `queue` is empty.
        tail: Tail,
    },
}

/// How a stream cut short ends after its last event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum End {
    /// The body fails with an I/O error, so the server cuts the connection (HTTP/1.1)
    /// or resets the stream (HTTP/2) without the body's proper end.
    Fail,
    /// Nothing more is sent and the body never ends.
    Stall,
}

/// The state of a stream's end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tail {
    Finish,
    Stall,
    /// To fail; `yielded` once the task has yielded after the last event.
    Fail {
        yielded: bool,
    },
    /// The failure was returned; the body is over.
    Failed,
}

impl MockBody {
    /// A body of exactly `bytes`.
    pub(crate) fn full(bytes: impl Into<Bytes>) -> Self {
        let bytes = bytes.into();
        Self {
            kind: Kind::Full((!bytes.is_empty()).then_some(bytes)),
        }
    }

    /// A body releasing `events` in order, each after its delay.
    pub(crate) fn events(events: Vec<Event>) -> Self {
        Self {
            kind: Kind::Events {
                queue: events.into(),
                sleep: None,
                waiting: false,
                tail: Tail::Finish,
            },
        }
    }

    /// Keeps only the first `events` events of a stream, which then ends as `end` says.
    /// A whole-buffer body is left as it is.
    pub(crate) fn cut_after(mut self, events: usize, end: End) -> Self {
        if let Kind::Events { queue, tail, .. } = &mut self.kind {
            queue.truncate(events);
            *tail = match end {
                End::Fail => Tail::Fail { yielded: false },
                End::Stall => Tail::Stall,
            };
        }
        self
    }
}

impl Body for MockBody {
    type Data = Bytes;
    /// Only from a stream cut with [`End::Fail`].
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match &mut self.get_mut().kind {
            Kind::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Kind::Events {
                queue,
                sleep,
                waiting,
                tail,
            } => {
                let Some(next) = queue.front() else {
                    return poll_tail(tail, cx);
                };
                if !next.delay.is_zero() {
                    if !*waiting {
                        let deadline = Instant::now() + next.delay;
                        match sleep {
                            Some(s) => s.as_mut().reset(deadline),
                            None => *sleep = Some(Box::pin(tokio::time::sleep_until(deadline))),
                        }
                        *waiting = true;
                    }
                    if let Some(s) = sleep {
                        ready!(s.as_mut().poll(cx));
                    }
                    *waiting = false;
                }
                Poll::Ready(queue.pop_front().map(|e| Ok(Frame::data(e.bytes))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Full(bytes) => bytes.is_none(),
            Kind::Events { queue, tail, .. } => {
                queue.is_empty() && matches!(tail, Tail::Finish | Tail::Failed)
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Full(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
            Kind::Events { .. } => SizeHint::default(),
        }
    }
}

/// What a stream sends once its events are out.
fn poll_tail(
    tail: &mut Tail,
    cx: &mut Context<'_>,
) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
    match *tail {
        Tail::Finish | Tail::Failed => Poll::Ready(None),
        // Never woken: the connection ends when the client goes away or the server stops.
        Tail::Stall => Poll::Pending,
        Tail::Fail { yielded: false } => {
            // hyper's HTTP/1 writer drops what it has buffered when a body fails, so
            // yield once: it flushes the head and the events before polling again.
            *tail = Tail::Fail { yielded: true };
            cx.waker().wake_by_ref();
            Poll::Pending
        }
        Tail::Fail { yielded: true } => {
            *tail = Tail::Failed;
            Poll::Ready(Some(Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionAborted,
                "mock upstream: stream cut as asked by x-mock-fail-after-chunks",
            ))))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn full_body_is_one_frame_with_exact_size() {
        let body = MockBody::full(Bytes::from_static(b"hello"));
        assert_eq!(body.size_hint().exact(), Some(5));
        let collected = body.collect().await.map(|c| c.to_bytes()).ok();
        assert_eq!(collected.as_deref(), Some(&b"hello"[..]));
        assert!(MockBody::full(Bytes::new()).is_end_stream());
    }

    #[tokio::test(start_paused = true)]
    async fn events_wait_for_their_delays() {
        let start = Instant::now();
        let mut body = MockBody::events(vec![
            Event {
                delay: Duration::ZERO,
                bytes: Bytes::from_static(b"a"),
            },
            Event {
                delay: Duration::from_millis(100),
                bytes: Bytes::from_static(b"b"),
            },
            Event {
                delay: Duration::from_millis(100),
                bytes: Bytes::from_static(b"c"),
            },
        ]);
        let mut seen = Vec::new();
        while let Some(Ok(frame)) = body.frame().await {
            if let Ok(data) = frame.into_data() {
                seen.push((data, start.elapsed()));
            }
        }
        assert_eq!(seen.len(), 3);
        assert_eq!(seen[0].1, Duration::ZERO);
        assert_eq!(seen[1].1, Duration::from_millis(100));
        assert_eq!(seen[2].1, Duration::from_millis(200));
        assert!(body.is_end_stream());
    }

    fn three_events() -> MockBody {
        let event = |b: &'static [u8]| Event {
            delay: Duration::ZERO,
            bytes: Bytes::from_static(b),
        };
        MockBody::events(vec![event(b"a"), event(b"b"), event(b"c")])
    }

    #[tokio::test]
    async fn cut_stream_fails_after_its_events() {
        let mut body = three_events().cut_after(2, End::Fail);
        let mut frames = Vec::new();
        while let Some(frame) = body.frame().await {
            frames.push(frame.map(|f| f.into_data().ok()).map_err(|e| e.kind()));
        }
        assert_eq!(
            frames,
            [
                Ok(Some(Bytes::from_static(b"a"))),
                Ok(Some(Bytes::from_static(b"b"))),
                Err(std::io::ErrorKind::ConnectionAborted),
            ]
        );

        let empty = three_events().cut_after(0, End::Fail);
        assert!(
            !empty.is_end_stream(),
            "the head must not claim an empty body"
        );
        let whole = MockBody::full(Bytes::from_static(b"x")).cut_after(0, End::Fail);
        assert_eq!(whole.size_hint().exact(), Some(1));
    }

    #[tokio::test(start_paused = true)]
    async fn stalled_stream_sends_nothing_more() {
        let mut body = three_events().cut_after(1, End::Stall);
        assert!(matches!(body.frame().await, Some(Ok(_))));
        assert!(!body.is_end_stream());
        let next = tokio::time::timeout(Duration::from_secs(3600), body.frame()).await;
        assert!(next.is_err(), "a stalled stream sent {next:?}");
    }
}
