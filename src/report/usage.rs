//! The upstream's reported usage of a request, for whoever asked for it.
//!
//! A layer that needs to know how many tokens a request really used (the
//! tokens-per-minute limit) puts a [`UsageSlot`] in the request's
//! extensions. The upstream layer then asks for usage where it is optional
//! (`stream_options.include_usage` on streamed chat and completions; see
//! [`ask`]), reads it from the answer as it passes ([`Observed`]: the
//! `usage` object of a JSON answer, the usage chunk of a stream, the
//! `response.completed` event of a Responses stream) and fills the slot. A
//! usage chunk the client did not ask for is removed from the stream it
//! sees. Nothing is held back: each event is passed on as soon as it is
//! whole.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};

use bytes::{Bytes, BytesMut};
use http_body::{Body as HttpBody, Frame, SizeHint};
use serde::Deserialize;
use serde::de::IgnoredAny;

use crate::body::{Body, BoxError};
use crate::openai::{ApiRequest, Endpoint, sse};

/// Largest JSON answer read for its usage; a larger one is relayed unread.
const MAX_JSON: usize = 4 * 1024 * 1024;
/// Largest single event read; a larger one is passed on unread.
const MAX_EVENT: usize = 4 * 1024 * 1024;

/// What the upstream reported a request used.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reported {
    /// Prompt (input) tokens, the cached ones included.
    pub prompt: u64,
    /// Completion (output) tokens, reasoning included.
    pub completion: u64,
    /// Prompt tokens the upstream served from its own prompt cache.
    pub cached: u64,
    /// Prompt plus completion, as reported (or summed when not).
    pub total: u64,
}

/// Whose figures a request's usage is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The upstream reported them.
    Upstream,
    /// The upstream reported none; sluice counted them with its tokenizer.
    Counted,
}

impl Source {
    /// The `usage_source` label and access-log field.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Upstream => "upstream",
            Source::Counted => "counted",
        }
    }
}

/// Counts what a streamed answer that reported no usage used, from its
/// events' `data` payloads; `None` when it cannot tell.
pub type Count = Box<dyn FnOnce(&[Vec<u8>]) -> Option<Reported> + Send + Sync>;

/// What is known of a request's usage.
#[derive(Default)]
enum Known {
    #[default]
    Nothing,
    Reported(Reported, Source),
    /// The answer is over and kept; reading it is left to the first who
    /// asks, after its last byte went to the client.
    Later(Box<dyn FnOnce() -> Option<(Reported, Source)> + Send>),
}

#[derive(Default)]
struct Cell {
    known: Mutex<Known>,
    /// Usage is wanted for streams too: ask for it where it is optional.
    ask: AtomicBool,
}

impl std::fmt::Debug for Cell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cell")
            .field("ask", &self.ask.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// Where the usage the upstream reported for one request ends up. Clones
/// share it.
#[derive(Debug, Clone, Default)]
pub struct UsageSlot(Arc<Cell>);

impl UsageSlot {
    /// Total tokens (prompt plus completion) the request used, if known.
    pub fn get(&self) -> Option<u64> {
        self.report().map(|r| r.total)
    }

    /// Everything the request used, if known.
    pub fn report(&self) -> Option<Reported> {
        self.sourced().map(|(reported, _)| reported)
    }

    /// What the request used and whose figures they are, if known. The
    /// first call after a kept answer reads it.
    pub fn sourced(&self) -> Option<(Reported, Source)> {
        let mut known = self
            .0
            .known
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Known::Later(_) = &*known
            && let Known::Later(read) = std::mem::take(&mut *known)
        {
            if let Some((reported, source)) = read() {
                *known = Known::Reported(reported, source);
            }
        }
        match &*known {
            Known::Reported(reported, source) => Some((*reported, *source)),
            _ => None,
        }
    }

    /// Whether a kept answer waits to be read (by [`sourced`](Self::sourced),
    /// which then does work: best off the async workers).
    pub fn is_pending(&self) -> bool {
        matches!(
            *self
                .0
                .known
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
            Known::Later(_)
        )
    }

    /// Asks for usage on streams too (see [`ask`]).
    pub fn want_stream_usage(&self) {
        self.0.ask.store(true, Ordering::Relaxed);
    }

    /// Whether usage should be asked for on streams.
    pub fn wants_stream_usage(&self) -> bool {
        self.0.ask.load(Ordering::Relaxed)
    }

    fn set(&self, reported: Reported) {
        self.put(Known::Reported(reported, Source::Upstream));
    }

    fn put(&self, known: Known) {
        *self
            .0
            .known
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = known;
    }
}

/// Asks the upstream to report usage on a streamed chat or completions
/// request that did not ask itself; true when it did so (the usage chunk is
/// then the client's to be spared).
pub fn ask(api: &mut ApiRequest) -> bool {
    if !api.stream()
        || !matches!(
            api.endpoint(),
            Endpoint::ChatCompletions | Endpoint::Completions
        )
    {
        return false;
    }
    let mut options = match api.get::<serde_json::Value>("stream_options") {
        Some(Ok(serde_json::Value::Object(options))) => options,
        None | Some(Ok(serde_json::Value::Null)) => serde_json::Map::new(),
        // Not ours to fix: the upstream answers it as the client sent it.
        Some(_) => return false,
    };
    if options.get("include_usage") == Some(&serde_json::Value::Bool(true)) {
        return false;
    }
    options.insert("include_usage".into(), serde_json::Value::Bool(true));
    api.set("stream_options", &options).is_ok()
}

/// How the answer carries its usage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// One JSON document with a top-level `usage`.
    Json,
    /// Server-sent events. With `strip`, read event by event and the
    /// usage-only chunk removed; without, relayed frame by frame as they
    /// came and read once the last byte is gone.
    Events { strip: bool },
}

/// The most of a relayed stream kept to read its usage from afterwards;
/// past it the oldest frames go (the usage comes last) and nothing is
/// counted.
const MAX_KEPT: usize = 4 * 1024 * 1024;

/// The answer's body, read for its usage on the way through.
pub struct Observed {
    inner: Body,
    shape: Shape,
    slot: UsageSlot,
    /// JSON: the answer so far (until `MAX_JSON`). Events: the start of an
    /// event whose end has not arrived.
    pending: BytesMut,
    /// JSON: gave up reading (too large).
    skip: bool,
    done: bool,
    /// A stream relayed as it came: its frames, to read afterwards.
    kept: std::collections::VecDeque<Bytes>,
    kept_len: usize,
    /// Frames of `kept` were let go (the stream outgrew [`MAX_KEPT`]).
    cut: bool,
    /// Counts a kept stream that reported no usage.
    count: Option<Count>,
}

impl Observed {
    pub fn new(inner: Body, shape: Shape, slot: UsageSlot) -> Observed {
        Observed {
            inner,
            shape,
            slot,
            pending: BytesMut::new(),
            skip: false,
            done: false,
            kept: std::collections::VecDeque::new(),
            kept_len: 0,
            cut: false,
            count: None,
        }
    }

    /// Counts the answer with `count` when it is a relayed stream that
    /// reported no usage of its own.
    pub fn counted_by(mut self, count: Count) -> Observed {
        self.count = Some(count);
        self
    }

    /// Keeps a relayed frame (sharing its bytes) for reading afterwards.
    fn keep(&mut self, data: &Bytes) {
        self.kept_len += data.len();
        self.kept.push_back(data.clone());
        while self.kept_len > MAX_KEPT {
            let Some(old) = self.kept.pop_front() else {
                break;
            };
            self.kept_len -= old.len();
            self.cut = true;
        }
    }

    /// At the end of a relayed stream: the usage it carries, read from its
    /// last frames (where the event holding it is) right away; failing
    /// that, reading the whole stream, and counting it, is left to whoever
    /// asks first, once the client has it all.
    fn read_later(&mut self) {
        let kept = std::mem::take(&mut self.kept);
        if let Some(at) = kept.iter().rposition(|frame| has_usage_object(frame)) {
            // The event may have begun in the frame before.
            let tail = joined(kept.range(at.saturating_sub(1)..));
            if let Some(reported) = usage_of_stream(&tail) {
                self.slot.set(reported);
                return;
            }
        }
        let cut = self.cut;
        let count = self.count.take();
        self.slot.put(Known::Later(Box::new(move || {
            let whole = joined(kept.iter());
            if let Some(reported) = usage_of_stream(&whole) {
                return Some((reported, Source::Upstream));
            }
            if cut {
                return None;
            }
            count?(&sse::data_events(&whole)).map(|reported| (reported, Source::Counted))
        })));
    }

    /// Whole events of `data` (after what was pending) with the usage-only
    /// one removed when stripping; the unfinished rest stays pending.
    fn events(&mut self, data: Bytes, strip: bool) -> Option<Bytes> {
        let whole = if self.pending.is_empty() {
            data
        } else {
            self.pending.extend_from_slice(&data);
            self.pending.split().freeze()
        };
        let Some(end) = sse::event_ends(&whole).last() else {
            if whole.len() > MAX_EVENT {
                // Not an event stream we can follow: pass it on as is.
                return Some(whole);
            }
            self.pending.extend_from_slice(&whole);
            return None;
        };
        let complete = whole.slice(..end);
        self.pending.extend_from_slice(&whole[end..]);
        // Set once an event is left out: what is kept, copied.
        let mut kept: Option<BytesMut> = None;
        let mut copied_to = 0;
        let mut start = 0;
        for event_end in sse::event_ends(&complete) {
            let usage_only = self.read_event(&complete[start..event_end]);
            if strip && usage_only {
                let out = kept.get_or_insert_with(|| BytesMut::with_capacity(complete.len()));
                out.extend_from_slice(&complete[copied_to..start]);
                copied_to = event_end;
            }
            start = event_end;
        }
        match kept {
            None => Some(complete),
            Some(mut out) => {
                out.extend_from_slice(&complete[copied_to..]);
                Some(out.freeze())
            }
        }
    }

    /// Reads one event's usage into the slot; true when it is a chunk that
    /// carries only usage (no choices).
    fn read_event(&self, event: &[u8]) -> bool {
        if !has_usage_object(event) {
            return false;
        }
        let Some(data) = sse::data_of(event) else {
            return false;
        };
        match chunk_usage(&data) {
            Some((usage, usage_only)) => {
                self.slot.set(usage);
                usage_only
            }
            None => false,
        }
    }
}

impl HttpBody for Observed {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            let frame = match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
                Some(Ok(frame)) => frame,
                Some(Err(error)) => return Poll::Ready(Some(Err(error))),
                None => {
                    this.done = true;
                    return Poll::Ready(this.finish().map(|rest| Ok(Frame::data(rest))));
                }
            };
            let data = match frame.into_data() {
                Ok(data) => data,
                Err(frame) => return Poll::Ready(Some(Ok(frame))),
            };
            match this.shape {
                Shape::Json => {
                    // The whole answer in one piece (the usual case): read
                    // where it is, without a copy.
                    if this.pending.is_empty() && this.inner.is_end_stream() {
                        this.done = true;
                        if let Some(usage) = usage_of_answer(&data) {
                            this.slot.set(usage);
                        }
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                    if !this.skip {
                        if this.pending.len() + data.len() > MAX_JSON {
                            this.skip = true;
                            this.pending = BytesMut::new();
                        } else {
                            this.pending.extend_from_slice(&data);
                        }
                    }
                    // A body of known length may not be polled past its
                    // last frame: read the usage before handing it over.
                    if this.inner.is_end_stream() {
                        this.done = true;
                        this.finish();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Shape::Events { strip: false } => {
                    this.keep(&data);
                    if this.inner.is_end_stream() {
                        this.done = true;
                        this.read_later();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Shape::Events { strip: true } => {
                    if let Some(out) = this.events(data, true)
                        && !out.is_empty()
                    {
                        return Poll::Ready(Some(Ok(Frame::data(out))));
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done || (self.shape == Shape::Json && self.inner.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        match self.shape {
            Shape::Json => self.inner.size_hint(),
            Shape::Events { .. } => SizeHint::default(),
        }
    }
}

impl Observed {
    /// At the end of the answer: reads a JSON answer's usage; returns an
    /// event stream's unfinished tail, passed on as it is.
    fn finish(&mut self) -> Option<Bytes> {
        match self.shape {
            Shape::Json => {
                if !self.skip
                    && let Some(usage) = usage_of_answer(&self.pending)
                {
                    self.slot.set(usage);
                }
                None
            }
            Shape::Events { strip: false } => {
                self.read_later();
                None
            }
            Shape::Events { strip: true } => {
                let rest = self.pending.split().freeze();
                if !rest.is_empty() {
                    self.read_event(&rest);
                }
                (!rest.is_empty()).then_some(rest)
            }
        }
    }
}

/// The reported counts, under either API's names.
#[derive(Deserialize)]
pub(crate) struct Usage {
    total_tokens: Option<u64>,
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
    prompt_tokens_details: Option<Details>,
    input_tokens_details: Option<Details>,
}

#[derive(Deserialize)]
struct Details {
    cached_tokens: Option<u64>,
}

impl Usage {
    /// The counts, when there are any.
    pub(crate) fn reported(&self) -> Option<Reported> {
        let input = self.prompt_tokens.or(self.input_tokens);
        let output = self.completion_tokens.or(self.output_tokens);
        let total = match (self.total_tokens, input, output) {
            (Some(total), _, _) => total,
            (None, None, None) => return None,
            (None, a, b) => a.unwrap_or(0).saturating_add(b.unwrap_or(0)),
        };
        let cached = self
            .prompt_tokens_details
            .as_ref()
            .or(self.input_tokens_details.as_ref())
            .and_then(|d| d.cached_tokens)
            .unwrap_or(0);
        Some(Reported {
            prompt: input.unwrap_or(0),
            completion: output.unwrap_or(0),
            cached,
            total,
        })
    }
}

/// A JSON answer: only `usage` is read, the rest skipped unparsed.
#[derive(Deserialize)]
struct Answer {
    usage: Option<Usage>,
}

/// The top-level `usage` of a JSON answer. OpenAI-compatible APIs put it
/// last, so the object after the last `"usage":` key is read on its own
/// (a key, not text: quotes inside strings are escaped); when that does not
/// read as usage, the whole answer is parsed.
fn usage_of_answer(answer: &[u8]) -> Option<Reported> {
    if let Some(at) = memchr::memmem::rfind(answer, b"\"usage\"") {
        let rest = &answer[at + 7..];
        let value = rest
            .iter()
            .position(|b| !matches!(b, b' ' | b'\t' | b'\r' | b'\n' | b':'))
            .map(|i| &rest[i..]);
        if let Some(object) = value.filter(|v| v.first() == Some(&b'{')) {
            let mut objects = serde_json::Deserializer::from_slice(object).into_iter::<Usage>();
            if let Some(Ok(usage)) = objects.next()
                && let Some(reported) = usage.reported()
            {
                return Some(reported);
            }
        }
    }
    serde_json::from_slice::<Answer>(answer)
        .ok()?
        .usage
        .as_ref()
        .and_then(Usage::reported)
}

/// A streamed chunk (chat, completions) or event (Responses).
#[derive(Deserialize)]
struct Chunk {
    usage: Option<Usage>,
    choices: Option<Vec<IgnoredAny>>,
    response: Option<Answer>,
}

/// `frames` as one run of bytes: borrowed when there is one.
fn joined<'a>(mut frames: impl Iterator<Item = &'a Bytes>) -> std::borrow::Cow<'a, [u8]> {
    let Some(first) = frames.next() else {
        return std::borrow::Cow::Borrowed(&[]);
    };
    let Some(second) = frames.next() else {
        return std::borrow::Cow::Borrowed(first);
    };
    let mut whole = first.to_vec();
    whole.extend_from_slice(second);
    frames.for_each(|frame| whole.extend_from_slice(frame));
    std::borrow::Cow::Owned(whole)
}

/// The usage the last event that reports one in `stream` reports (the
/// usage comes last: events are looked at from the end).
fn usage_of_stream(stream: &[u8]) -> Option<Reported> {
    let mut starts: Vec<usize> = std::iter::once(0).chain(sse::event_ends(stream)).collect();
    starts.push(stream.len());
    starts.windows(2).rev().find_map(|w| {
        let event = &stream[w[0]..w[1]];
        if !has_usage_object(event) {
            return None;
        }
        sse::data_of(event)
            .and_then(|data| chunk_usage(&data))
            .map(|(usage, _)| usage)
    })
}

/// The usage of one streamed chunk (chat, completions) or event
/// (Responses), and whether the chunk carries only usage (no choices).
fn chunk_usage(data: &[u8]) -> Option<(Reported, bool)> {
    let chunk = serde_json::from_slice::<Chunk>(data).ok()?;
    if let Some(usage) = chunk.usage.as_ref().and_then(Usage::reported) {
        return Some((usage, chunk.choices.is_some_and(|c| c.is_empty())));
    }
    chunk
        .response
        .and_then(|r| r.usage)
        .as_ref()
        .and_then(Usage::reported)
        .map(|usage| (usage, false))
}

/// Whether `event` has a `"usage"` key whose value is an object (not the
/// `null` every other chunk carries once usage was asked for).
fn has_usage_object(event: &[u8]) -> bool {
    let mut rest = event;
    while let Some(at) = memchr::memmem::find(rest, b"\"usage\"") {
        rest = &rest[at + 7..];
        let value = rest
            .iter()
            .position(|b| !matches!(b, b' ' | b'\t' | b':'))
            .map(|i| rest[i]);
        if value == Some(b'{') {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    /// A body yielding `chunks` one frame each.
    fn body_of(chunks: &[&'static str]) -> Body {
        let frames: Vec<Result<Frame<Bytes>, BoxError>> = chunks
            .iter()
            .map(|c| Ok(Frame::data(Bytes::from_static(c.as_bytes()))))
            .collect();
        crate::body::boxed(http_body_util::StreamBody::new(futures_util::stream::iter(
            frames,
        )))
    }

    /// A relayed stream goes frame for frame as it came; with no usage of
    /// its own it is counted, once asked, and said to be counted.
    #[tokio::test]
    async fn a_relayed_stream_without_usage_is_counted_afterwards() {
        let slot = UsageSlot::default();
        let halves = [
            "data: {\"choices\":[{\"delta\":{\"con",
            "tent\":\"hi\"}}]}\n\n",
            DONE,
        ];
        let seen: std::sync::Arc<Mutex<Vec<Vec<u8>>>> = std::sync::Arc::default();
        let log = seen.clone();
        let observed = Observed::new(
            body_of(&halves),
            Shape::Events { strip: false },
            slot.clone(),
        )
        .counted_by(Box::new(move |events| {
            *log.lock().unwrap_or_else(|e| e.into_inner()) = events.to_vec();
            Some(Reported {
                prompt: 4,
                completion: 1,
                cached: 0,
                total: 5,
            })
        }));
        let mut frames = Vec::new();
        let mut body = std::pin::pin!(observed);
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(frame) => frames.extend(frame.into_data().ok()),
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(
            frames,
            halves.map(|h| Bytes::from_static(h.as_bytes())),
            "frames as they came"
        );
        assert!(
            seen.lock().unwrap_or_else(|e| e.into_inner()).is_empty(),
            "read only when asked"
        );
        assert!(slot.is_pending(), "kept for whoever asks");
        let (reported, source) = slot.sourced().unwrap_or_else(|| panic!("no usage"));
        assert_eq!((reported.total, source), (5, Source::Counted));
        assert!(!slot.is_pending());
        let events = seen.lock().unwrap_or_else(|e| e.into_inner()).clone();
        assert_eq!(
            events,
            [
                br#"{"choices":[{"delta":{"content":"hi"}}]}"#.to_vec(),
                b"[DONE]".to_vec()
            ]
        );
        assert_eq!(
            slot.sourced().map(|(r, s)| (r.total, s)),
            Some((5, Source::Counted)),
            "kept"
        );
    }

    /// A relayed stream that carries usage is not counted.
    #[tokio::test]
    async fn a_relayed_stream_with_usage_keeps_the_upstreams_figures() {
        let slot = UsageSlot::default();
        let observed = Observed::new(
            body_of(&[CHUNK, USAGE, DONE]),
            Shape::Events { strip: false },
            slot.clone(),
        )
        .counted_by(Box::new(|_| panic!("counted a stream that reported usage")));
        let out = match observed.collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(e) => panic!("{e}"),
        };
        assert_eq!(out, [CHUNK, USAGE, DONE].concat().as_bytes());
        assert!(!slot.is_pending(), "read from its last frames at its end");
        assert_eq!(
            slot.sourced().map(|(r, s)| (r.total, s)),
            Some((12, Source::Upstream))
        );
    }

    async fn run(chunks: &[&'static str], shape: Shape) -> (String, Option<u64>) {
        let slot = UsageSlot::default();
        let observed = Observed::new(body_of(chunks), shape, slot.clone());
        let bytes = match observed.collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(e) => panic!("{e}"),
        };
        (String::from_utf8_lossy(&bytes).into_owned(), slot.get())
    }

    const CHUNK: &str = "data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}],\"usage\":null}\n\n";
    const USAGE: &str = "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":7,\"total_tokens\":12}}\n\n";
    const DONE: &str = "data: [DONE]\n\n";

    #[test]
    fn prompt_completion_and_cached_tokens_are_read_under_either_api_s_names() {
        let read = |json: &str| {
            serde_json::from_str::<Usage>(json)
                .ok()
                .and_then(|u| u.reported())
        };
        let chat = read(
            r#"{"prompt_tokens":100,"completion_tokens":20,"total_tokens":120,"prompt_tokens_details":{"cached_tokens":64}}"#,
        );
        assert_eq!(
            chat,
            Some(Reported {
                prompt: 100,
                completion: 20,
                cached: 64,
                total: 120
            })
        );
        let responses = read(
            r#"{"input_tokens":50,"output_tokens":5,"input_tokens_details":{"cached_tokens":10}}"#,
        );
        assert_eq!(
            responses,
            Some(Reported {
                prompt: 50,
                completion: 5,
                cached: 10,
                total: 55
            })
        );
        assert_eq!(read("{}"), None);
        assert_eq!(read(r#"{"total_tokens":7}"#).map(|r| r.total), Some(7));
    }

    #[test]
    fn a_json_answer_s_usage_is_its_top_level_one() {
        let total = |json: &str| usage_of_answer(json.as_bytes()).map(|u| u.total);
        assert_eq!(
            total(
                r#"{"choices":[{"message":{"content":"a \"usage\": {\"total_tokens\":1}"}}],"usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}}"#
            ),
            Some(7)
        );
        assert_eq!(
            total(r#"{"usage": {"total_tokens": 9}, "choices": []}"#),
            Some(9)
        );
        // A later object under a "usage" key that is not usage: the whole
        // answer is read instead.
        assert_eq!(
            total(r#"{"usage":{"total_tokens":5},"meta":{"usage":{"note":"x"}}}"#),
            Some(5)
        );
        assert_eq!(total(r#"{"choices":[]}"#), None);
        assert_eq!(total("not json"), None);
    }

    #[tokio::test]
    async fn the_usage_chunk_is_read_and_left_out_when_not_asked_for() {
        let (out, usage) = run(&[CHUNK, CHUNK, USAGE, DONE], Shape::Events { strip: true }).await;
        assert_eq!(out, format!("{CHUNK}{CHUNK}{DONE}"));
        assert_eq!(usage, Some(12));
        let (out, usage) = run(&[CHUNK, USAGE, DONE], Shape::Events { strip: false }).await;
        assert_eq!(out, format!("{CHUNK}{USAGE}{DONE}"));
        assert_eq!(usage, Some(12));
    }

    #[tokio::test]
    async fn events_split_across_frames_are_joined_before_reading() {
        let stream = format!("{CHUNK}{USAGE}{DONE}");
        let text: &'static str = Box::leak(stream.into_boxed_str());
        // Every split point, including inside the usage chunk.
        for cut in 1..text.len() {
            let (a, b) = text.split_at(cut);
            let (out, usage) = run(&[a, b], Shape::Events { strip: true }).await;
            assert_eq!(out, format!("{CHUNK}{DONE}"), "cut at {cut}");
            assert_eq!(usage, Some(12), "cut at {cut}");
        }
        // One frame holding all, and CRLF framing.
        let (out, _) = run(&[text], Shape::Events { strip: true }).await;
        assert_eq!(out, format!("{CHUNK}{DONE}"));
        let crlf =
            "data: {\"choices\":[],\"usage\":{\"total_tokens\":3}}\r\n\r\ndata: [DONE]\r\n\r\n";
        let (out, usage) = run(&[crlf], Shape::Events { strip: true }).await;
        assert_eq!((out.as_str(), usage), ("data: [DONE]\r\n\r\n", Some(3)));
    }

    #[tokio::test]
    async fn an_unfinished_tail_is_passed_on() {
        let (out, usage) = run(&[CHUNK, "data: {\"partial"], Shape::Events { strip: true }).await;
        assert_eq!(out, format!("{CHUNK}data: {{\"partial"));
        assert_eq!(usage, None);
    }

    #[tokio::test]
    async fn json_answers_and_responses_events_report_usage() {
        let (out, usage) = run(
            &[
                "{\"id\":\"x\",\"usage\":{\"input_tokens\":4,",
                "\"output_tokens\":6},\"output\":[]}",
            ],
            Shape::Json,
        )
        .await;
        assert!(out.ends_with("\"output\":[]}"));
        assert_eq!(usage, Some(10));
        let (_, usage) = run(
            &["{\"data\":[],\"usage\":{\"prompt_tokens\":8,\"total_tokens\":8}}"],
            Shape::Json,
        )
        .await;
        assert_eq!(usage, Some(8));
        let (_, usage) = run(&["not json"], Shape::Json).await;
        assert_eq!(usage, None);
        let completed = "event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"usage\":{\"input_tokens\":2,\"output_tokens\":3,\"total_tokens\":5}}}\n\n";
        let (out, usage) = run(&[completed], Shape::Events { strip: true }).await;
        assert_eq!(out, completed, "a Responses event is never left out");
        assert_eq!(usage, Some(5));
    }

    #[test]
    fn usage_is_asked_for_on_streamed_chat_and_completions_only() {
        let parse = |endpoint, body: &'static str| {
            ApiRequest::parse(endpoint, Bytes::from_static(body.as_bytes()))
                .unwrap_or_else(|e| panic!("{e}"))
        };
        let mut api = parse(
            Endpoint::ChatCompletions,
            r#"{"stream":true,"stream_options":{"x":1}}"#,
        );
        assert!(ask(&mut api));
        assert_eq!(
            api.get::<serde_json::Value>("stream_options")
                .and_then(Result::ok),
            Some(serde_json::json!({"x": 1, "include_usage": true}))
        );
        let mut asked = parse(
            Endpoint::Completions,
            r#"{"stream":true,"stream_options":{"include_usage":true}}"#,
        );
        assert!(!ask(&mut asked), "the client asked: nothing to leave out");
        assert!(!asked.is_modified());
        let mut plain = parse(Endpoint::ChatCompletions, r#"{"stream":false}"#);
        assert!(!ask(&mut plain));
        let mut responses = parse(Endpoint::Responses, r#"{"stream":true}"#);
        assert!(!ask(&mut responses));
    }
}
