//! Chat completions in both forms: a recorded stream assembled into the plain
//! answer, and a plain answer replayed as a stream.
//!
//! The cache stores one entry per request whatever form it came in, so a
//! streamed request can be served from a stored plain answer and the other
//! way round, and the SDKs parse the result to the same content.

use serde_json::{Map, Value, json};

use super::sse;

/// Highest choice or tool call index a recorded stream may use (OpenAI's `n`
/// is at most 128). An index sizes a vector: a stream that says
/// `"index": 4000000000` is not assembled (nor cached) rather than make
/// sluice allocate for it.
pub(super) const MAX_INDEX: u64 = 1024;

/// Assembles the `chat.completion` a recorded chunk stream amounts to.
/// `None` unless the stream ended cleanly with `[DONE]` and every choice
/// has a finish reason.
pub fn assemble(stream: &[u8]) -> Option<Value> {
    let events = sse::data_events(stream);
    let (last, chunks) = events.split_last()?;
    if last.as_slice() != b"[DONE]" {
        return None;
    }
    let mut header: Option<Map<String, Value>> = None;
    let mut choices: Vec<Choice> = Vec::new();
    let mut usage = Value::Null;
    for chunk in chunks {
        let chunk: Value = serde_json::from_slice(chunk).ok()?;
        if chunk.get("error").is_some() {
            return None;
        }
        if header.is_none() {
            let mut h = Map::new();
            for field in [
                "id",
                "created",
                "model",
                "system_fingerprint",
                "service_tier",
            ] {
                if let Some(v) = chunk.get(field) {
                    h.insert(field.to_owned(), v.clone());
                }
            }
            header = Some(h);
        }
        if let Some(u) = chunk.get("usage").filter(|u| !u.is_null()) {
            usage = u.clone();
        }
        for delta_choice in chunk
            .get("choices")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let index = delta_choice
                .get("index")
                .and_then(Value::as_u64)
                .unwrap_or(0);
            let index = usize::try_from(index).ok().filter(|_| index < MAX_INDEX)?;
            if choices.len() <= index {
                choices.resize_with(index + 1, Choice::default);
            }
            choices[index].absorb(delta_choice)?;
        }
    }
    if choices.is_empty() || choices.iter().any(|c| c.finish_reason.is_null()) {
        return None;
    }
    let mut answer = header.unwrap_or_default();
    answer.insert("object".into(), json!("chat.completion"));
    answer.insert(
        "choices".into(),
        Value::Array(
            choices
                .into_iter()
                .enumerate()
                .map(|(i, c)| c.into_value(i))
                .collect(),
        ),
    );
    if !usage.is_null() {
        answer.insert("usage".into(), usage);
    }
    Some(Value::Object(answer))
}

#[derive(Default)]
struct Choice {
    role: Option<Value>,
    content: Option<String>,
    refusal: Option<String>,
    tool_calls: Vec<Map<String, Value>>,
    finish_reason: Value,
}

impl Choice {
    /// Adds one chunk's delta; `None` for a tool call index past [`MAX_INDEX`].
    fn absorb(&mut self, choice: &Value) -> Option<()> {
        if let Some(reason) = choice.get("finish_reason").filter(|r| !r.is_null()) {
            self.finish_reason = reason.clone();
        }
        let Some(delta) = choice.get("delta") else {
            return Some(());
        };
        if let Some(role) = delta.get("role").filter(|r| !r.is_null()) {
            self.role = Some(role.clone());
        }
        if let Some(text) = delta.get("content").and_then(Value::as_str) {
            self.content.get_or_insert_with(String::new).push_str(text);
        }
        if let Some(text) = delta.get("refusal").and_then(Value::as_str) {
            self.refusal.get_or_insert_with(String::new).push_str(text);
        }
        for call in delta
            .get("tool_calls")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let index = call.get("index").and_then(Value::as_u64).unwrap_or(0);
            let index = usize::try_from(index).ok().filter(|_| index < MAX_INDEX)?;
            if self.tool_calls.len() <= index {
                self.tool_calls.resize_with(index + 1, Map::new);
            }
            let slot = &mut self.tool_calls[index];
            for field in ["id", "type"] {
                if let Some(v) = call.get(field).filter(|v| !v.is_null()) {
                    slot.insert(field.to_owned(), v.clone());
                }
            }
            if let Some(function) = call.get("function") {
                let entry = slot
                    .entry("function")
                    .or_insert_with(|| json!({"name": "", "arguments": ""}));
                for part in ["name", "arguments"] {
                    if let Some(text) = function.get(part).and_then(Value::as_str)
                        && let Some(Value::String(acc)) = entry.get_mut(part)
                    {
                        acc.push_str(text);
                    }
                }
            }
        }
        Some(())
    }

    fn into_value(self, index: usize) -> Value {
        let mut message = Map::new();
        message.insert(
            "role".into(),
            self.role.unwrap_or_else(|| json!("assistant")),
        );
        message.insert(
            "content".into(),
            self.content.map_or(Value::Null, Value::String),
        );
        message.insert(
            "refusal".into(),
            self.refusal.map_or(Value::Null, Value::String),
        );
        if !self.tool_calls.is_empty() {
            message.insert(
                "tool_calls".into(),
                Value::Array(self.tool_calls.into_iter().map(Value::Object).collect()),
            );
        }
        json!({
            "index": index,
            "message": message,
            "logprobs": null,
            "finish_reason": self.finish_reason,
        })
    }
}

/// The text a chat or completions stream generated, from its events'
/// `data` payloads, whether or not it ended cleanly: each choice's
/// `delta.content`, `delta.refusal`, `delta.reasoning_content`, tool call
/// names and arguments, and completions' `text`, joined in order.
pub fn streamed_text(events: &[Vec<u8>]) -> String {
    use serde::Deserialize;
    #[derive(Deserialize)]
    struct Chunk<'a> {
        #[serde(borrow, default)]
        choices: Vec<Choice<'a>>,
    }
    #[derive(Deserialize)]
    struct Choice<'a> {
        #[serde(borrow)]
        delta: Option<Delta<'a>>,
        #[serde(borrow)]
        text: Option<std::borrow::Cow<'a, str>>,
    }
    #[derive(Deserialize)]
    struct Delta<'a> {
        #[serde(borrow)]
        content: Option<std::borrow::Cow<'a, str>>,
        #[serde(borrow)]
        refusal: Option<std::borrow::Cow<'a, str>>,
        #[serde(borrow)]
        reasoning_content: Option<std::borrow::Cow<'a, str>>,
        #[serde(borrow, default)]
        tool_calls: Option<Vec<ToolCall<'a>>>,
    }
    #[derive(Deserialize)]
    struct ToolCall<'a> {
        #[serde(borrow)]
        function: Option<Function<'a>>,
    }
    #[derive(Deserialize)]
    struct Function<'a> {
        #[serde(borrow)]
        name: Option<std::borrow::Cow<'a, str>>,
        #[serde(borrow)]
        arguments: Option<std::borrow::Cow<'a, str>>,
    }
    let mut text = String::new();
    for data in events {
        let Ok(chunk) = serde_json::from_slice::<Chunk<'_>>(data) else {
            continue;
        };
        for choice in &chunk.choices {
            if let Some(piece) = &choice.text {
                text.push_str(piece);
            }
            let Some(delta) = &choice.delta else { continue };
            for piece in [&delta.content, &delta.refusal, &delta.reasoning_content]
                .into_iter()
                .flatten()
            {
                text.push_str(piece);
            }
            for call in delta.tool_calls.iter().flatten() {
                let Some(function) = &call.function else {
                    continue;
                };
                for piece in [&function.name, &function.arguments].into_iter().flatten() {
                    text.push_str(piece);
                }
            }
        }
    }
    text
}

/// Content pieces of about this many characters per synthesised chunk.
const PIECE_CHARS: usize = 24;

/// Replays a plain `chat.completion` as the chunk stream an upstream would
/// have sent: a role chunk, content pieces, tool calls, the finish chunk, a
/// usage chunk when `include_usage`, then `[DONE]`.
pub fn synthesize(answer: &Value, include_usage: bool) -> Option<Vec<u8>> {
    let mut writer = ChunkWriter::new(answer, "chat.completion.chunk");
    let mut emit = |choices: Value, usage: Option<&Value>| writer.emit(choices, usage);
    for choice in answer.get("choices")?.as_array()? {
        let index = choice.get("index").cloned().unwrap_or(json!(0));
        let message = choice.get("message")?;
        let delta_choice = |delta: Value, finish: Value| json!([{"index": index, "delta": delta, "logprobs": null, "finish_reason": finish}]);
        let role = message.get("role").cloned().unwrap_or(json!("assistant"));
        emit(
            delta_choice(json!({"role": role, "content": ""}), Value::Null),
            None,
        );
        if let Some(content) = message.get("content").and_then(Value::as_str) {
            for piece in pieces(content) {
                emit(delta_choice(json!({"content": piece}), Value::Null), None);
            }
        }
        if let Some(refusal) = message.get("refusal").and_then(Value::as_str) {
            emit(delta_choice(json!({"refusal": refusal}), Value::Null), None);
        }
        if let Some(calls) = message.get("tool_calls").and_then(Value::as_array) {
            let calls: Vec<Value> = calls
                .iter()
                .enumerate()
                .map(|(i, call)| {
                    let mut call = call.clone();
                    if let Some(obj) = call.as_object_mut() {
                        obj.insert("index".into(), json!(i));
                    }
                    call
                })
                .collect();
            emit(
                delta_choice(json!({"tool_calls": calls}), Value::Null),
                None,
            );
        }
        let finish = choice
            .get("finish_reason")
            .cloned()
            .unwrap_or(json!("stop"));
        emit(delta_choice(json!({}), finish), None);
    }
    if include_usage {
        emit(json!([]), Some(answer.get("usage").unwrap_or(&Value::Null)));
    }
    Some(writer.done())
}

/// Writes the chunk events of a replayed answer: each carries the answer's
/// identifying fields, the stream ends with `[DONE]`.
pub struct ChunkWriter {
    base: Map<String, Value>,
    out: Vec<u8>,
}

impl ChunkWriter {
    /// Chunks of `answer` with `object` as their type.
    pub fn new(answer: &Value, object: &str) -> ChunkWriter {
        let mut base = Map::new();
        for field in [
            "id",
            "created",
            "model",
            "system_fingerprint",
            "service_tier",
        ] {
            if let Some(v) = answer.get(field) {
                base.insert(field.to_owned(), v.clone());
            }
        }
        base.insert("object".into(), json!(object));
        ChunkWriter {
            base,
            out: Vec::new(),
        }
    }

    /// One chunk with these `choices` (and `usage`, for the final one).
    pub fn emit(&mut self, choices: Value, usage: Option<&Value>) {
        let mut chunk = self.base.clone();
        chunk.insert("choices".into(), choices);
        if let Some(usage) = usage {
            chunk.insert("usage".into(), usage.clone());
        }
        if let Ok(bytes) = serde_json::to_vec(&chunk) {
            sse::event(&bytes, &mut self.out);
        }
    }

    /// The stream, `[DONE]` appended.
    pub fn done(mut self) -> Vec<u8> {
        sse::event(b"[DONE]", &mut self.out);
        self.out
    }
}

/// Splits `text` into pieces of about [`PIECE_CHARS`] characters, on char
/// boundaries.
pub fn pieces(text: &str) -> Vec<&str> {
    let mut pieces = Vec::new();
    let mut start = 0;
    let mut count = 0;
    for (i, _) in text.char_indices() {
        if count == PIECE_CHARS {
            pieces.push(&text[start..i]);
            start = i;
            count = 0;
        }
        count += 1;
    }
    if start < text.len() {
        pieces.push(&text[start..]);
    }
    pieces
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streamed_text_takes_every_generated_piece_even_without_an_end() {
        let events: Vec<Vec<u8>> = [
            r#"{"choices":[{"index":0,"delta":{"role":"assistant","content":"Hel"}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"content":"lo","reasoning_content":" think"}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"name":"f","arguments":"{\"a\":1}"}}]}}]}"#,
            r#"{"choices":[{"index":0,"text":" done"}]}"#,
            "not json",
        ]
        .map(|e| e.as_bytes().to_vec())
        .to_vec();
        assert_eq!(streamed_text(&events), "Hello thinkf{\"a\":1} done");
    }

    fn stream_of(chunks: &[Value]) -> Vec<u8> {
        let mut out = Vec::new();
        for c in chunks {
            sse::event(c.to_string().as_bytes(), &mut out);
        }
        sse::event(b"[DONE]", &mut out);
        out
    }

    #[test]
    fn assembles_content_tool_calls_and_usage() {
        let base =
            json!({"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m"});
        let with = |choices: Value, usage: Value| {
            let mut c = base.clone();
            c["choices"] = choices;
            c["usage"] = usage;
            c
        };
        let stream = stream_of(&[
            with(
                json!([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": null}]),
                Value::Null,
            ),
            with(
                json!([{"index": 0, "delta": {"content": "Hel"}, "finish_reason": null}]),
                Value::Null,
            ),
            with(
                json!([{"index": 0, "delta": {"content": "lo ✓"}, "finish_reason": null}]),
                Value::Null,
            ),
            with(
                json!([{"index": 0, "delta": {"tool_calls": [{"index": 0, "id": "t1", "type": "function", "function": {"name": "get", "arguments": "{\"a\""}}]}, "finish_reason": null}]),
                Value::Null,
            ),
            with(
                json!([{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": ":1}"}}]}, "finish_reason": null}]),
                Value::Null,
            ),
            with(
                json!([{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]),
                Value::Null,
            ),
            with(
                json!([]),
                json!({"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}),
            ),
        ]);
        let answer = assemble(&stream).unwrap_or_else(|| panic!("not assembled"));
        assert_eq!(answer["object"], "chat.completion");
        assert_eq!(answer["id"], "c1");
        let message = &answer["choices"][0]["message"];
        assert_eq!(message["content"], "Hello ✓");
        assert_eq!(
            message["tool_calls"][0]["function"]["arguments"],
            "{\"a\":1}"
        );
        assert_eq!(message["tool_calls"][0]["function"]["name"], "get");
        assert_eq!(answer["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(answer["usage"]["total_tokens"], 7);
    }

    #[test]
    fn incomplete_streams_are_not_assembled() {
        let chunk = json!({"id": "c", "choices": [{"index": 0, "delta": {"content": "x"}, "finish_reason": null}]});
        let mut out = Vec::new();
        sse::event(chunk.to_string().as_bytes(), &mut out);
        assert!(assemble(&out).is_none(), "no [DONE]");
        sse::event(b"[DONE]", &mut out);
        assert!(assemble(&out).is_none(), "no finish reason");
    }

    /// Found while writing the `sse` fuzz target (which reproduces it): an
    /// index sized a vector, so one upstream chunk could make sluice allocate
    /// hundreds of GiB (an abort) or overflow `index + 1`.
    #[test]
    fn huge_indexes_are_not_assembled() {
        for choices in [
            json!([{"index": 4_000_000_000_u64, "delta": {"content": "x"}, "finish_reason": "stop"}]),
            json!([{"index": u64::MAX, "delta": {"content": "x"}, "finish_reason": "stop"}]),
            json!([{"index": 0, "delta": {"tool_calls": [{"index": u64::MAX, "function": {"name": "f"}}]}, "finish_reason": "stop"}]),
            json!([{"index": 0, "delta": {"tool_calls": [{"index": MAX_INDEX, "function": {"name": "f"}}]}, "finish_reason": "stop"}]),
        ] {
            let stream = stream_of(&[json!({"id": "c", "choices": choices})]);
            assert!(assemble(&stream).is_none(), "{choices}");
        }
        let fine = json!([{"index": 0, "delta": {"tool_calls": [{"index": MAX_INDEX - 1, "function": {"name": "f"}}]}, "finish_reason": "stop"}]);
        assert!(assemble(&stream_of(&[json!({"id": "c", "choices": fine})])).is_some());
    }

    #[test]
    fn synthesised_stream_assembles_back_to_the_answer() {
        let answer = json!({
            "id": "c9", "object": "chat.completion", "created": 5, "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "A fairly long answer with ünïcode that spans pieces.", "refusal": null}, "logprobs": null, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}
        });
        let stream = synthesize(&answer, true).unwrap_or_default();
        let events = sse::data_events(&stream);
        assert!(events.len() > 4);
        let back = assemble(&stream).unwrap_or_else(|| panic!("not assembled"));
        assert_eq!(
            back["choices"][0]["message"]["content"],
            answer["choices"][0]["message"]["content"]
        );
        assert_eq!(back["usage"], answer["usage"]);
        let without = synthesize(&answer, false).unwrap_or_default();
        assert!(assemble(&without).is_some_and(|a| a.get("usage").is_none()));
    }
}
