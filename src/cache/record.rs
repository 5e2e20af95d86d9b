//! Recording an answer while it is relayed, and storing it once complete.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use bytes::{Bytes, BytesMut};
use http::header::HeaderValue;
use http_body_util::BodyExt;
use serde::Deserialize;

use super::Cache;
use super::coalesce::FlightGuard;
use super::key::CacheKey;
use super::live::Publisher;
use super::replay::{Wanted, assemble};
use super::store::{Entry, RecordedStream};
use crate::body::{self, Body};
use crate::observe::CACHE_READ_ON_TOTAL;
use crate::report::usage::{Usage, UsageSlot};
use crate::tokens::PromptTokens;

/// What followers of a stream that grew past the entry limit are told.
const TOO_LARGE: &str =
    "the shared answer grew past the cache's entry size limit; send the request again";

pub(super) struct Recording {
    pub(super) cache: Arc<Cache>,
    pub(super) key: CacheKey,
    pub(super) ttl: Duration,
    pub(super) content_type: HeaderValue,
    pub(super) limit_set: bool,
    pub(super) wants: Wanted,
    /// The request's prompt tokens, from the answer's headers.
    pub(super) prompt: Option<PromptTokens>,
    /// Where the upstream's reported usage lands, for answers that do not
    /// carry it themselves (a stream whose usage chunk the client did not
    /// ask for).
    pub(super) usage: Option<UsageSlot>,
    pub(super) buffer: BytesMut,
    /// Followers wait until this recording is stored or abandoned.
    pub(super) _flight: Option<FlightGuard>,
}

impl Recording {
    /// Stores the recorded answer if it is a complete one.
    pub(super) fn finish(self) {
        // Exactly sized: a grown buffer's spare capacity is not kept.
        let recorded = Bytes::copy_from_slice(&self.buffer);
        let (body, stream, content_type) = if self.wants.stream {
            // Stored as the plain answer it amounts to, plus the stream itself.
            let Some(plain) = assemble(self.wants.endpoint, &recorded) else {
                return;
            };
            let Ok(plain) = serde_json::to_vec(&plain) else {
                return;
            };
            let stream = RecordedStream {
                sse: recorded,
                usage: self.wants.usage,
            };
            (
                Bytes::from(plain),
                Some(stream),
                HeaderValue::from_static("application/json"),
            )
        } else {
            (recorded, None, self.content_type)
        };
        // These endpoints answer with a JSON object; anything else (an array
        // would deserialize into `Answer` too) is not stored.
        if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return;
        }
        let Ok(answer) = serde_json::from_slice::<Answer>(&body) else {
            return;
        };
        let cut_short = answer
            .choices
            .iter()
            .any(|c| c.finish_reason.as_deref() == Some("length"))
            && !self.limit_set;
        let incomplete = matches!(
            answer.status.as_deref(),
            Some("incomplete" | "failed" | "cancelled")
        );
        if cut_short || incomplete {
            return;
        }
        let usage = answer
            .usage
            .as_ref()
            .and_then(Usage::reported)
            .or_else(|| self.usage.as_ref().and_then(UsageSlot::report))
            .unwrap_or_default();
        let ttl = self.ttl;
        self.cache.store(
            self.key,
            Entry {
                body,
                content_type,
                stream,
                stored_at: SystemTime::now(),
                ttl,
                usage,
                prompt: self.prompt,
            },
        );
    }
}

/// The parts of an answer that decide whether it may be stored.
#[derive(Deserialize)]
struct Answer {
    #[serde(default)]
    usage: Option<Usage>,
    #[serde(default)]
    choices: Vec<Choice>,
    #[serde(default)]
    status: Option<String>,
}

#[derive(Deserialize)]
struct Choice {
    #[serde(default)]
    finish_reason: Option<String>,
}

/// Relays the answer frame by frame, keeping a copy; the copy is stored
/// when the body ends cleanly, dropped on error or size overflow. When the
/// client goes away first, the rest of the answer is still read from the
/// upstream on a tracked task (shutdown waits for it) and stored, so the
/// work already paid for is not lost.
pub(super) struct Recorder {
    pub(super) inner: Body,
    /// Followers of this stream, if it is one and any joined.
    pub(super) publisher: Option<Publisher>,
    pub(super) state: Option<Recording>,
}

impl Recording {
    /// Takes in one frame; `false` once the recording was given up.
    fn record(&mut self, data: &[u8]) -> bool {
        if self.buffer.len() + data.len() > self.cache.max_entry {
            return false;
        }
        self.buffer.extend_from_slice(data);
        true
    }
}

impl http_body::Body for Recorder {
    type Data = Bytes;
    type Error = body::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, body::BoxError>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(publisher), Some(data)) = (&this.publisher, frame.data_ref()) {
                    publisher.chunk(data);
                }
                if let (Some(state), Some(data)) = (this.state.as_mut(), frame.data_ref())
                    && !state.record(data)
                {
                    // Past the entry limit: neither the recording nor the
                    // live buffer is kept. Followers get what they had and
                    // an error; new requests go upstream themselves.
                    this.state = None;
                    if let Some(publisher) = this.publisher.take() {
                        publisher.finish(Some(TOO_LARGE.to_owned()));
                    }
                }
                // Servers stop polling once a body says it has ended.
                if this.inner.is_end_stream() {
                    this.end(None);
                }
            }
            Poll::Ready(None) => this.end(None),
            Poll::Ready(Some(Err(error))) => {
                this.state = None;
                this.end(Some(error.to_string()));
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

impl Recorder {
    /// The answer ended (cleanly, or with `failure`): store it, tell followers.
    fn end(&mut self, failure: Option<String>) {
        if let Some(state) = self.state.take()
            && failure.is_none()
        {
            state.finish();
        }
        if let Some(publisher) = self.publisher.take() {
            publisher.finish(failure);
        }
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        let Some(mut state) = self.state.take() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        // Reading on is bounded: so many at a time, else the upstream
        // request is cancelled now (dropping its body closes it).
        let Some(permit) = state
            .cache
            .read_on
            .as_ref()
            .and_then(|slots| slots.clone().try_acquire_owned().ok())
        else {
            metrics::counter!(CACHE_READ_ON_TOTAL, "outcome" => "cancelled").increment(1);
            return;
        };
        metrics::counter!(CACHE_READ_ON_TOTAL, "outcome" => "read_on").increment(1);
        let publisher = self.publisher.take();
        let mut inner = std::mem::take(&mut self.inner);
        let tasks = state.cache.tasks.clone();
        // Bounded: by the entry size cap, and by the upstream's timeout,
        // which the upstream body enforces itself.
        tasks.spawn_on(
            async move {
                while let Some(frame) = inner.frame().await {
                    let Ok(frame) = frame else { return };
                    if let Some(data) = frame.data_ref() {
                        if let Some(publisher) = &publisher {
                            publisher.chunk(data);
                        }
                        if !state.record(data) {
                            if let Some(publisher) = publisher {
                                publisher.finish(Some(TOO_LARGE.to_owned()));
                            }
                            return;
                        }
                    }
                }
                drop(permit);
                state.finish();
                if let Some(publisher) = publisher {
                    publisher.finish(None);
                }
            },
            &runtime,
        );
    }
}
