//! `POST /v1/responses`: a `response` object with one assistant message, or with
//! `"stream": true` the Responses API's named events (`response.created` …
//! `response.output_text.delta` × chunks … `response.completed`), each carrying `type`
//! and `sequence_number`. Request settings the official SDKs read back (instructions,
//! tools, temperature, text format, …) are echoed as sent. A small `max_output_tokens`
//! cuts the text and ends the response `incomplete`.

use std::borrow::Cow;
use std::time::Duration;

use http::Response;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::body::{Event, MockBody, named_event};
use super::controls::Controls;
use super::reply::{self, ApiError};
use super::synth::{self, CREATED, DEFAULT_MODEL, Fnv};

#[derive(Deserialize)]
struct ResponsesRequest<'a> {
    #[serde(default, borrow)]
    model: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    input: Option<&'a RawValue>,
    #[serde(default, borrow)]
    instructions: Option<&'a RawValue>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    max_output_tokens: Option<u64>,
    #[serde(default, borrow)]
    metadata: Option<&'a RawValue>,
    #[serde(default)]
    parallel_tool_calls: Option<bool>,
    #[serde(default, borrow)]
    previous_response_id: Option<&'a RawValue>,
    #[serde(default, borrow)]
    reasoning: Option<&'a RawValue>,
    #[serde(default)]
    store: Option<bool>,
    #[serde(default, borrow)]
    temperature: Option<&'a RawValue>,
    #[serde(default, borrow)]
    text: Option<&'a RawValue>,
    #[serde(default, borrow)]
    tool_choice: Option<&'a RawValue>,
    #[serde(default, borrow)]
    tools: Option<&'a RawValue>,
    #[serde(default, borrow)]
    top_p: Option<&'a RawValue>,
    #[serde(default, borrow)]
    truncation: Option<&'a RawValue>,
}

/// The request's value, or the API's default written as JSON.
fn echo<'a>(sent: Option<&'a RawValue>, default: &'static str) -> Result<&'a RawValue, ApiError> {
    match sent {
        Some(v) => Ok(v),
        None => Ok(serde_json::from_str(default)?),
    }
}

#[derive(Serialize)]
struct ResponseObject<'a> {
    id: &'a str,
    object: &'static str,
    created_at: u64,
    status: &'static str,
    background: bool,
    error: Option<()>,
    incomplete_details: Option<IncompleteDetails>,
    instructions: &'a RawValue,
    max_output_tokens: Option<u64>,
    max_tool_calls: Option<()>,
    model: &'a str,
    output: &'a [OutputMessage<'a>],
    parallel_tool_calls: bool,
    previous_response_id: &'a RawValue,
    prompt_cache_key: Option<()>,
    reasoning: &'a RawValue,
    safety_identifier: Option<()>,
    service_tier: &'static str,
    store: bool,
    temperature: &'a RawValue,
    text: &'a RawValue,
    tool_choice: &'a RawValue,
    tools: &'a RawValue,
    top_logprobs: u32,
    top_p: &'a RawValue,
    truncation: &'a RawValue,
    usage: Option<&'a Usage>,
    user: Option<()>,
    metadata: &'a RawValue,
}

#[derive(Serialize, Clone, Copy)]
struct IncompleteDetails {
    reason: &'static str,
}

#[derive(Serialize)]
struct OutputMessage<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    status: &'static str,
    content: &'a [OutputText<'a>],
    role: &'static str,
}

#[derive(Serialize)]
struct OutputText<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    annotations: [(); 0],
    logprobs: [(); 0],
    text: &'a str,
}

impl<'a> OutputText<'a> {
    fn new(text: &'a str) -> Self {
        Self {
            kind: "output_text",
            annotations: [],
            logprobs: [],
            text,
        }
    }
}

#[derive(Serialize)]
struct Usage {
    input_tokens: u32,
    input_tokens_details: InputDetails,
    output_tokens: u32,
    output_tokens_details: OutputDetails,
    total_tokens: u32,
}

#[derive(Serialize)]
struct InputDetails {
    cached_tokens: u32,
}

#[derive(Serialize)]
struct OutputDetails {
    reasoning_tokens: u32,
}

/// A streamed event: its `type`, its `sequence_number`, then its own fields.
#[derive(Serialize)]
struct StreamEvent<T> {
    #[serde(rename = "type")]
    kind: &'static str,
    sequence_number: u64,
    #[serde(flatten)]
    fields: T,
}

#[derive(Serialize)]
struct WithResponse<'a> {
    response: &'a ResponseObject<'a>,
}

#[derive(Serialize)]
struct WithItem<'a> {
    output_index: u32,
    item: &'a OutputMessage<'a>,
}

#[derive(Serialize)]
struct WithPart<'a> {
    item_id: &'a str,
    output_index: u32,
    content_index: u32,
    part: &'a OutputText<'a>,
}

#[derive(Serialize)]
struct TextDelta<'a> {
    item_id: &'a str,
    output_index: u32,
    content_index: u32,
    delta: &'a str,
    logprobs: [(); 0],
}

#[derive(Serialize)]
struct TextDone<'a> {
    item_id: &'a str,
    output_index: u32,
    content_index: u32,
    text: &'a str,
    logprobs: [(); 0],
}

/// Answers a Responses API request.
pub(crate) fn handle(body: &[u8], controls: &Controls) -> Result<Response<MockBody>, ApiError> {
    let req: ResponsesRequest<'_> = reply::parse_object(body)?;
    let model = req.model.as_deref().unwrap_or(DEFAULT_MODEL);
    let input = req.input.map_or("", |v| v.get());
    let instructions_sent = req.instructions.map_or("", |v| v.get());
    let mut h = Fnv::new();
    h.update(instructions_sent.as_bytes());
    h.update(b"\0");
    h.update(input.as_bytes());
    let seed = h.finish();
    let full = synth::answer(seed, 0);
    let (text, cut) = synth::truncate_to_tokens(&full, req.max_output_tokens);
    let (status, incomplete_details) = if cut {
        (
            "incomplete",
            Some(IncompleteDetails {
                reason: "max_output_tokens",
            }),
        )
    } else {
        ("completed", None)
    };
    let input_tokens = synth::tokens_for_len(input.len() + instructions_sent.len());
    let output_tokens = if text.is_empty() {
        0
    } else {
        synth::tokens_for_len(text.len())
    };
    let usage = Usage {
        input_tokens,
        input_tokens_details: InputDetails { cached_tokens: 0 },
        output_tokens,
        output_tokens_details: OutputDetails {
            reasoning_tokens: 0,
        },
        total_tokens: input_tokens + output_tokens,
    };
    let id = format!("resp_mock{:016x}", synth::fnv1a64(body));
    let message_id = format!("msg_mock{seed:016x}");
    let content = [OutputText::new(text)];
    let message = [OutputMessage {
        id: &message_id,
        kind: "message",
        status,
        content: &content,
        role: "assistant",
    }];
    let done = ResponseObject {
        id: &id,
        object: "response",
        created_at: CREATED,
        status,
        background: false,
        error: None,
        incomplete_details,
        instructions: echo(req.instructions, "null")?,
        max_output_tokens: req.max_output_tokens,
        max_tool_calls: None,
        model,
        output: &message,
        parallel_tool_calls: req.parallel_tool_calls.unwrap_or(true),
        previous_response_id: echo(req.previous_response_id, "null")?,
        prompt_cache_key: None,
        reasoning: echo(req.reasoning, r#"{"effort":null,"summary":null}"#)?,
        safety_identifier: None,
        service_tier: "default",
        store: req.store.unwrap_or(true),
        temperature: echo(req.temperature, "1.0")?,
        text: echo(
            req.text,
            r#"{"format":{"type":"text"},"verbosity":"medium"}"#,
        )?,
        tool_choice: echo(req.tool_choice, r#""auto""#)?,
        tools: echo(req.tools, "[]")?,
        top_logprobs: 0,
        top_p: echo(req.top_p, "1.0")?,
        truncation: echo(req.truncation, r#""disabled""#)?,
        usage: Some(&usage),
        user: None,
        metadata: echo(req.metadata, "{}")?,
    };
    if req.stream != Some(true) {
        return reply::json(&done);
    }

    let started = ResponseObject {
        status: "in_progress",
        incomplete_details: None,
        output: &[],
        usage: None,
        ..done
    };
    let empty_content = [];
    let item_started = OutputMessage {
        status: "in_progress",
        content: &empty_content,
        ..message[0]
    };
    let empty_part = OutputText::new("");

    let mut events = Events::with_capacity(controls.chunks + 8);
    let zero = Duration::ZERO;
    events.push(
        "response.created",
        zero,
        &WithResponse { response: &started },
    )?;
    events.push(
        "response.in_progress",
        zero,
        &WithResponse { response: &started },
    )?;
    let item_added = WithItem {
        output_index: 0,
        item: &item_started,
    };
    events.push("response.output_item.added", zero, &item_added)?;
    let part = |part| WithPart {
        item_id: &message_id,
        output_index: 0,
        content_index: 0,
        part,
    };
    events.push("response.content_part.added", zero, &part(&empty_part))?;
    for delta in synth::split_even(text, controls.chunks) {
        let delta = TextDelta {
            item_id: &message_id,
            output_index: 0,
            content_index: 0,
            delta,
            logprobs: [],
        };
        events.push("response.output_text.delta", controls.chunk_delay, &delta)?;
    }
    let text_done = TextDone {
        item_id: &message_id,
        output_index: 0,
        content_index: 0,
        text,
        logprobs: [],
    };
    events.push("response.output_text.done", zero, &text_done)?;
    events.push("response.content_part.done", zero, &part(&content[0]))?;
    let item_done = WithItem {
        output_index: 0,
        item: &message[0],
    };
    events.push("response.output_item.done", zero, &item_done)?;
    let last = if cut {
        "response.incomplete"
    } else {
        "response.completed"
    };
    events.push(last, zero, &WithResponse { response: &done })?;
    Ok(reply::event_stream(events.list))
}

/// The events of one stream, numbered as they are added.
struct Events {
    list: Vec<Event>,
}

impl Events {
    fn with_capacity(capacity: usize) -> Self {
        Self {
            list: Vec::with_capacity(capacity),
        }
    }

    fn push<T: Serialize>(
        &mut self,
        kind: &'static str,
        delay: Duration,
        fields: &T,
    ) -> Result<(), ApiError> {
        let event = StreamEvent {
            kind,
            sequence_number: self.list.len() as u64,
            fields,
        };
        let bytes = named_event(kind, &event)?;
        self.list.push(Event { delay, bytes });
        Ok(())
    }
}
