//! The one body type that flows through the stack, plus small constructors.
//!
//! Requests and responses carry a boxed `http_body::Body` so that streamed
//! bodies (client uploads, upstream SSE) pass through untouched and buffered
//! ones (parsed requests, error answers) share the same type.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use pin_project_lite::pin_project;

/// Any error a body can raise.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body of every request and response inside sluice.
///
/// A struct rather than an alias of `BoxBody` so that generic code over
/// `Request<Body>` does not trip over the trait object's lifetime.
pub struct Body(BoxBody<Bytes, BoxError>);

impl Default for Body {
    fn default() -> Self {
        empty()
    }
}

impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Body")
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Pin::new(&mut self.get_mut().0).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.0.size_hint()
    }
}

/// A body holding `bytes` in full.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Body(
        Full::new(bytes.into())
            .map_err(|never| match never {})
            .boxed(),
    )
}

/// A body with nothing in it.
pub fn empty() -> Body {
    Body(Empty::new().map_err(|never| match never {}).boxed())
}

/// Boxes any body whose data is `Bytes`.
pub fn boxed<B>(body: B) -> Body
where
    B: http_body::Body<Data = Bytes> + Send + Sync + 'static,
    B::Error: Into<BoxError>,
{
    Body(body.map_err(Into::into).boxed())
}

/// Keeps `guard` alive until `body` has ended or been dropped.
///
/// Used for whatever must outlive the response head: a concurrency permit,
/// the in-flight gauge, the request's duration measurement. A streamed answer
/// is in flight until its last byte, not until its headers.
pub fn guarded<G: Send + Sync + 'static>(body: Body, guard: G) -> Body {
    Body(
        Guarded {
            inner: body,
            guard: Some(guard),
            ended: None,
        }
        .boxed(),
    )
}

/// [`guarded`], and `ended` runs on the guard when the body reaches its end
/// (its end of stream, or a last frame after which it says it has ended,
/// where servers stop polling), so the guard can tell that from a body
/// dropped before its end (the client left) or one that failed.
pub fn watched<G: Send + Sync + 'static>(body: Body, guard: G, ended: fn(&mut G)) -> Body {
    Body(
        Guarded {
            inner: body,
            guard: Some(guard),
            ended: Some(ended),
        }
        .boxed(),
    )
}

pin_project! {
    struct Guarded<G> {
        #[pin]
        inner: Body,
        guard: Option<G>,
        ended: Option<fn(&mut G)>,
    }
}

impl<G> http_body::Body for Guarded<G> {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        let polled = this.inner.as_mut().poll_frame(cx);
        match &polled {
            Poll::Ready(None) => {
                if let (Some(ended), Some(guard)) = (this.ended, this.guard.as_mut()) {
                    ended(guard);
                }
                // End of stream: release now rather than when the
                // connection gets around to dropping the body.
                this.guard.take();
            }
            Poll::Ready(Some(Err(_))) => {
                this.guard.take();
            }
            Poll::Ready(Some(Ok(_))) => {
                if let (Some(ended), Some(guard)) = (this.ended, this.guard.as_mut())
                    && this.inner.is_end_stream()
                {
                    ended(guard);
                }
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct CountOnDrop(Arc<AtomicUsize>);
    impl Drop for CountOnDrop {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[tokio::test]
    async fn guard_released_at_end_of_stream_not_before() {
        let dropped = Arc::new(AtomicUsize::new(0));
        let mut body = guarded(full("abc"), CountOnDrop(dropped.clone()));
        assert_eq!(dropped.load(Ordering::SeqCst), 0);
        let frame = body.frame().await;
        assert!(frame.is_some());
        assert_eq!(dropped.load(Ordering::SeqCst), 0, "released before the end");
        assert!(body.frame().await.is_none());
        assert_eq!(dropped.load(Ordering::SeqCst), 1);
        drop(body);
        assert_eq!(dropped.load(Ordering::SeqCst), 1, "released twice");
    }

    #[tokio::test]
    async fn watched_tells_an_end_from_a_drop() {
        let ended = Arc::new(AtomicUsize::new(0));
        let mark = |g: &mut CountOnDrop| {
            g.0.fetch_add(100, Ordering::SeqCst);
        };
        // Read to its last frame (a full body says it has ended then).
        let mut body = watched(full("abc"), CountOnDrop(ended.clone()), mark);
        assert!(body.frame().await.is_some());
        drop(body);
        assert_eq!(ended.load(Ordering::SeqCst), 101);
        // Dropped before its end.
        let early = Arc::new(AtomicUsize::new(0));
        drop(watched(full("abc"), CountOnDrop(early.clone()), mark));
        assert_eq!(early.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn guard_released_when_body_dropped_early() {
        let dropped = Arc::new(AtomicUsize::new(0));
        let body = guarded(full("abc"), CountOnDrop(dropped.clone()));
        drop(body);
        assert_eq!(dropped.load(Ordering::SeqCst), 1);
    }
}
