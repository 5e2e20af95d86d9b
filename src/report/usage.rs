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

#[derive(Debug, Default)]
struct Cell {
    reported: Mutex<Option<Reported>>,
    /// Usage is wanted for streams too: ask for it where it is optional.
    ask: AtomicBool,
}

/// Where the usage the upstream reported for one request ends up. Clones
/// share it.
#[derive(Debug, Clone, Default)]
pub struct UsageSlot(Arc<Cell>);

impl UsageSlot {
    /// Total tokens (prompt plus completion) the upstream reported, if it did.
    pub fn get(&self) -> Option<u64> {
        self.report().map(|r| r.total)
    }

    /// Everything the upstream reported, if it did.
    pub fn report(&self) -> Option<Reported> {
        *self
            .0
            .reported
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
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
        *self
            .0
            .reported
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(reported);
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
    /// Server-sent events; `strip` removes the usage-only chunk.
    Events { strip: bool },
}

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
        }
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
        let Ok(chunk) = serde_json::from_slice::<Chunk>(&data) else {
            return false;
        };
        if let Some(usage) = chunk.usage.as_ref().and_then(Usage::reported) {
            self.slot.set(usage);
            return chunk.choices.is_some_and(|c| c.is_empty());
        }
        if let Some(usage) = chunk
            .response
            .and_then(|r| r.usage)
            .as_ref()
            .and_then(Usage::reported)
        {
            self.slot.set(usage);
        }
        false
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
                Shape::Events { strip } => {
                    if let Some(out) = this.events(data, strip)
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
            Shape::Events { .. } => {
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
