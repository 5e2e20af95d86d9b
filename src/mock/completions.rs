//! `POST /v1/completions` (legacy): a `text_completion` object, or with `"stream": true`
//! `text_completion` chunks carrying the text in `chunks` pieces, a finishing chunk per
//! choice, a usage chunk when `stream_options.include_usage`, then `data: [DONE]`.

use std::borrow::Cow;
use std::time::Duration;

use bytes::Bytes;
use http::Response;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::body::{DONE, Event, MockBody, data_event};
use super::chat::{StreamOptions, choice_count};
use super::controls::Controls;
use super::reply::{self, ApiError};
use super::synth::{self, CREATED, DEFAULT_MODEL, FINGERPRINT};

#[derive(Deserialize)]
struct CompletionRequest<'a> {
    #[serde(default, borrow)]
    model: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    prompt: Option<&'a RawValue>,
    #[serde(default)]
    n: Option<u64>,
    #[serde(default)]
    max_tokens: Option<u64>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
}

#[derive(Serialize)]
struct Usage {
    prompt_tokens: u32,
    completion_tokens: u32,
    total_tokens: u32,
}

#[derive(Serialize)]
struct TextCompletion<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    system_fingerprint: &'static str,
    choices: &'a [Choice<'a>],
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<Option<&'a Usage>>,
}

#[derive(Serialize)]
struct Choice<'a> {
    text: &'a str,
    index: usize,
    logprobs: Option<()>,
    finish_reason: Option<&'static str>,
}

/// Answers a legacy completion request.
pub(crate) fn handle(body: &[u8], controls: &Controls) -> Result<Response<MockBody>, ApiError> {
    let req: CompletionRequest<'_> = reply::parse_object(body)?;
    let n = choice_count(req.n)?;
    let model = req.model.as_deref().unwrap_or(DEFAULT_MODEL);
    let prompt = req.prompt.map_or("", |p| p.get());
    let seed = synth::fnv1a64(prompt.as_bytes());
    let generated = synth::generate(seed, n, req.max_tokens);
    let prompt_tokens = synth::tokens_for_len(prompt.len());
    let completion_tokens = generated.iter().map(|g| g.tokens).sum::<u32>();
    let usage = Usage {
        prompt_tokens,
        completion_tokens,
        total_tokens: prompt_tokens + completion_tokens,
    };
    let id = format!("cmpl-mock{:016x}", synth::fnv1a64(body));
    let object = |choices, usage| TextCompletion {
        id: &id,
        object: "text_completion",
        created: CREATED,
        model,
        system_fingerprint: FINGERPRINT,
        choices,
        usage,
    };

    if req.stream != Some(true) {
        let choices: Vec<Choice<'_>> = generated
            .iter()
            .enumerate()
            .map(|(index, g)| Choice {
                text: &g.text,
                index,
                logprobs: None,
                finish_reason: Some(g.finish_reason),
            })
            .collect();
        return reply::json(&object(&choices, Some(Some(&usage))));
    }

    let include_usage = req
        .stream_options
        .and_then(|o| o.include_usage)
        .unwrap_or(false);
    let chunk = |index: usize, text: &str, finish_reason: Option<&'static str>| {
        let choices = [Choice {
            text,
            index,
            logprobs: None,
            finish_reason,
        }];
        data_event(&TextCompletion {
            id: &id,
            object: "text_completion",
            created: CREATED,
            model,
            system_fingerprint: FINGERPRINT,
            choices: &choices,
            usage: include_usage.then_some(None),
        })
    };
    let pieces: Vec<Vec<&str>> = generated
        .iter()
        .map(|g| synth::split_even(&g.text, controls.chunks))
        .collect();
    let mut events = Vec::with_capacity(n * (controls.chunks + 1) + 2);
    for k in 0..controls.chunks {
        for (index, choice_pieces) in pieces.iter().enumerate() {
            events.push(Event {
                // One pause per round of pieces, as if every choice got a token at once.
                delay: if index == 0 {
                    controls.chunk_delay
                } else {
                    Duration::ZERO
                },
                bytes: chunk(index, choice_pieces[k], None)?,
            });
        }
    }
    let now = |bytes| Event {
        delay: Duration::ZERO,
        bytes,
    };
    for (index, g) in generated.iter().enumerate() {
        events.push(now(chunk(index, "", Some(g.finish_reason))?));
    }
    if include_usage {
        events.push(now(data_event(&object(&[], Some(Some(&usage))))?));
    }
    events.push(now(Bytes::from_static(DONE)));
    Ok(reply::event_stream(events))
}
