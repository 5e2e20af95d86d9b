//! Response bodies of the mock upstream: a whole buffer, or a server-sent-event stream
//! whose events are prepared up front and released one frame at a time, each after its
//! own delay, so a client sees them arrive as a real model would send them.

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
    },
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
            },
        }
    }
}

impl Body for MockBody {
    type Data = Bytes;
    // Never produced yet; an I/O error type leaves room for mid-stream failures.
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
            } => {
                let Some(next) = queue.front() else {
                    return Poll::Ready(None);
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
            Kind::Events { queue, .. } => queue.is_empty(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Full(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
            Kind::Events { .. } => SizeHint::default(),
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
}
