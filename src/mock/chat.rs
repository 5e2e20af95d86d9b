//! `POST /v1/chat/completions`: a `chat.completion` object, or with `"stream": true` the
//! `chat.completion.chunk` events OpenAI sends: a role chunk, the content in
//! `chunks` pieces, a finish chunk, a usage chunk when `stream_options.include_usage`,
//! then `data: [DONE]`.

use std::borrow::Cow;

use bytes::Bytes;
use http::Response;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::body::{DONE, Event, MockBody, data_event};
use super::controls::Controls;
use super::reply::{self, ApiError};
use super::synth::{self, CREATED, DEFAULT_MODEL, FINGERPRINT, Generated};

/// Largest `n` OpenAI accepts.
pub(crate) const MAX_N: u64 = 128;

#[derive(Deserialize)]
struct ChatRequest<'a> {
    #[serde(default, borrow)]
    model: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    messages: Option<&'a RawValue>,
    #[serde(default)]
    n: Option<u64>,
    #[serde(default)]
    max_tokens: Option<u64>,
    #[serde(default)]
    max_completion_tokens: Option<u64>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
}

#[derive(Deserialize, Default)]
pub(crate) struct StreamOptions {
    #[serde(default)]
    pub include_usage: Option<bool>,
}

/// Checks `n` against OpenAI's bounds.
pub(crate) fn choice_count(n: Option<u64>) -> Result<usize, ApiError> {
    match n.unwrap_or(1) {
        0 => Err(ApiError::invalid_request(
            "0 is less than the minimum of 1 - 'n'",
            Some("n"),
        )),
        n if n > MAX_N => Err(ApiError::invalid_request(
            format!("{n} is greater than the maximum of {MAX_N} - 'n'"),
            Some("n"),
        )),
        // Bounded by MAX_N above.
        n => Ok(n as usize),
    }
}

#[derive(Serialize)]
struct Usage {
    prompt_tokens: u32,
    completion_tokens: u32,
    total_tokens: u32,
    prompt_tokens_details: PromptDetails,
    completion_tokens_details: CompletionDetails,
}

#[derive(Serialize)]
struct PromptDetails {
    cached_tokens: u32,
    audio_tokens: u32,
}

#[derive(Serialize)]
struct CompletionDetails {
    reasoning_tokens: u32,
    audio_tokens: u32,
    accepted_prediction_tokens: u32,
    rejected_prediction_tokens: u32,
}

impl Usage {
    fn new(prompt_tokens: u32, choices: &[Generated]) -> Self {
        let completion_tokens = choices.iter().map(|c| c.tokens).sum::<u32>();
        Self {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens + completion_tokens,
            prompt_tokens_details: PromptDetails {
                cached_tokens: 0,
                audio_tokens: 0,
            },
            completion_tokens_details: CompletionDetails {
                reasoning_tokens: 0,
                audio_tokens: 0,
                accepted_prediction_tokens: 0,
                rejected_prediction_tokens: 0,
            },
        }
    }
}

#[derive(Serialize)]
struct Completion<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: Vec<Choice<'a>>,
    usage: Usage,
    service_tier: &'static str,
    system_fingerprint: &'static str,
}

#[derive(Serialize)]
struct Choice<'a> {
    index: usize,
    message: Message<'a>,
    logprobs: Option<()>,
    finish_reason: &'static str,
}

#[derive(Serialize)]
struct Message<'a> {
    role: &'static str,
    content: &'a str,
    refusal: Option<()>,
    annotations: [(); 0],
}

#[derive(Serialize)]
struct Chunk<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    service_tier: &'static str,
    system_fingerprint: &'static str,
    choices: &'a [ChunkChoice<'a>],
    /// Absent unless usage was asked for; then `null` on every chunk but the last.
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<Option<&'a Usage>>,
}

#[derive(Serialize)]
struct ChunkChoice<'a> {
    index: usize,
    delta: Delta<'a>,
    logprobs: Option<()>,
    finish_reason: Option<&'static str>,
}

#[derive(Serialize, Default)]
struct Delta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    refusal: Option<Option<()>>,
}

/// Answers a chat completion request.
pub(crate) fn handle(body: &[u8], controls: &Controls) -> Result<Response<MockBody>, ApiError> {
    let req: ChatRequest<'_> = reply::parse_object(body)?;
    let n = choice_count(req.n)?;
    let model = req.model.as_deref().unwrap_or(DEFAULT_MODEL);
    let messages = req.messages.map_or("", |m| m.get());
    let seed = synth::fnv1a64(messages.as_bytes());
    let choices = synth::generate(seed, n, req.max_completion_tokens.or(req.max_tokens));
    let usage = Usage::new(synth::tokens_for_len(messages.len()), &choices);
    let id = format!("chatcmpl-mock{:016x}", synth::fnv1a64(body));

    if req.stream != Some(true) {
        return reply::json(&Completion {
            id: &id,
            object: "chat.completion",
            created: CREATED,
            model,
            choices: choices
                .iter()
                .enumerate()
                .map(|(index, c)| Choice {
                    index,
                    message: Message {
                        role: "assistant",
                        content: &c.text,
                        refusal: None,
                        annotations: [],
                    },
                    logprobs: None,
                    finish_reason: c.finish_reason,
                })
                .collect(),
            usage,
            service_tier: "default",
            system_fingerprint: FINGERPRINT,
        });
    }

    let include_usage = req
        .stream_options
        .and_then(|o| o.include_usage)
        .unwrap_or(false);
    let chunk = |choices: &[ChunkChoice<'_>], usage: Option<&Usage>| {
        data_event(&Chunk {
            id: &id,
            object: "chat.completion.chunk",
            created: CREATED,
            model,
            service_tier: "default",
            system_fingerprint: FINGERPRINT,
            choices,
            usage: include_usage.then_some(usage),
        })
    };

    let pieces: Vec<Vec<&str>> = choices
        .iter()
        .map(|c| synth::split_even(&c.text, controls.chunks))
        .collect();
    let mut events = Vec::with_capacity(n * (controls.chunks + 2) + 2);
    let now = |bytes: Bytes| Event {
        delay: std::time::Duration::ZERO,
        bytes,
    };
    for index in 0..n {
        let delta = Delta {
            role: Some("assistant"),
            content: Some(""),
            refusal: Some(None),
        };
        events.push(now(chunk(&one(index, delta, None), None)?));
    }
    for k in 0..controls.chunks {
        for (index, choice_pieces) in pieces.iter().enumerate() {
            let delta = Delta {
                content: Some(choice_pieces[k]),
                ..Delta::default()
            };
            events.push(Event {
                // One pause per round of pieces, as if every choice got a token at once.
                delay: if index == 0 {
                    controls.chunk_delay
                } else {
                    std::time::Duration::ZERO
                },
                bytes: chunk(&one(index, delta, None), None)?,
            });
        }
    }
    for (index, c) in choices.iter().enumerate() {
        events.push(now(chunk(
            &one(index, Delta::default(), Some(c.finish_reason)),
            None,
        )?));
    }
    if include_usage {
        events.push(now(chunk(&[], Some(&usage))?));
    }
    events.push(now(Bytes::from_static(DONE)));
    Ok(reply::event_stream(events))
}

/// The `choices` of a chunk about one choice.
fn one<'a>(
    index: usize,
    delta: Delta<'a>,
    finish_reason: Option<&'static str>,
) -> [ChunkChoice<'a>; 1] {
    [ChunkChoice {
        index,
        delta,
        logprobs: None,
        finish_reason,
    }]
}
