//! Legacy completions and Responses API answers in both forms, as
//! [`super::chat_stream`] does for chat completions: a recorded stream
//! assembled into its plain answer, a plain answer replayed as a stream.

use serde_json::{Map, Value, json};

use super::sse;

/// The `text_completion` a recorded `/v1/completions` stream amounts to;
/// `None` unless it ended with `[DONE]` and every choice finished.
pub fn assemble_completion(stream: &[u8]) -> Option<Value> {
    let events = sse::data_events(stream);
    let (last, chunks) = events.split_last()?;
    if last.as_slice() != b"[DONE]" {
        return None;
    }
    let mut header = Map::new();
    let mut texts: Vec<(String, Value)> = Vec::new();
    let mut usage = Value::Null;
    for chunk in chunks {
        let chunk: Value = serde_json::from_slice(chunk).ok()?;
        if header.is_empty() {
            for field in ["id", "created", "model", "system_fingerprint"] {
                if let Some(v) = chunk.get(field) {
                    header.insert(field.to_owned(), v.clone());
                }
            }
        }
        if let Some(u) = chunk.get("usage").filter(|u| !u.is_null()) {
            usage = u.clone();
        }
        for choice in chunk
            .get("choices")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let index = choice.get("index").and_then(Value::as_u64).unwrap_or(0);
            // Bounded: the index sizes `texts` (see `chat_stream::MAX_INDEX`).
            let index = usize::try_from(index)
                .ok()
                .filter(|_| index < super::chat_stream::MAX_INDEX)?;
            if texts.len() <= index {
                texts.resize_with(index + 1, || (String::new(), Value::Null));
            }
            if let Some(text) = choice.get("text").and_then(Value::as_str) {
                texts[index].0.push_str(text);
            }
            if let Some(reason) = choice.get("finish_reason").filter(|r| !r.is_null()) {
                texts[index].1 = reason.clone();
            }
        }
    }
    if texts.is_empty() || texts.iter().any(|(_, reason)| reason.is_null()) {
        return None;
    }
    header.insert("object".into(), json!("text_completion"));
    header.insert(
        "choices".into(),
        Value::Array(
            texts
                .into_iter()
                .enumerate()
                .map(|(index, (text, reason))| {
                    json!({"text": text, "index": index, "logprobs": null, "finish_reason": reason})
                })
                .collect(),
        ),
    );
    if !usage.is_null() {
        header.insert("usage".into(), usage);
    }
    Some(Value::Object(header))
}

/// Replays a plain `text_completion` as the stream an upstream would send.
pub fn synthesize_completion(answer: &Value, include_usage: bool) -> Option<Vec<u8>> {
    let mut writer = super::chat_stream::ChunkWriter::new(answer, "text_completion");
    let mut emit = |choices: Value, usage: Option<&Value>| writer.emit(choices, usage);
    for choice in answer.get("choices")?.as_array()? {
        let index = choice.get("index").cloned().unwrap_or(json!(0));
        let text = choice.get("text").and_then(Value::as_str).unwrap_or("");
        for piece in super::chat_stream::pieces(text) {
            emit(
                json!([{"text": piece, "index": index, "logprobs": null, "finish_reason": null}]),
                None,
            );
        }
        let reason = choice
            .get("finish_reason")
            .cloned()
            .unwrap_or(json!("stop"));
        emit(
            json!([{"text": "", "index": index, "logprobs": null, "finish_reason": reason}]),
            None,
        );
    }
    if include_usage {
        emit(json!([]), Some(answer.get("usage").unwrap_or(&Value::Null)));
    }
    Some(writer.done())
}

/// The `response` a recorded Responses stream ended with: the payload of its
/// `response.completed` event; `None` for any other ending.
pub fn assemble_response(stream: &[u8]) -> Option<Value> {
    let last = sse::data_events(stream).pop()?;
    let event: Value = serde_json::from_slice(&last).ok()?;
    if event.get("type")?.as_str()? != "response.completed" {
        return None;
    }
    let response = event.get("response")?.clone();
    (response.get("status")?.as_str()? == "completed").then_some(response)
}

/// Replays a stored `response` as the event stream the Responses API sends.
/// Only answers made of text messages can be replayed this way; `None` for
/// others (tool calls, reasoning items), which then go upstream.
pub fn synthesize_response(response: &Value) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut sequence = 0u64;
    let mut emit = |kind: &str, mut fields: Value| {
        if let Some(obj) = fields.as_object_mut() {
            obj.insert("type".into(), json!(kind));
            obj.insert("sequence_number".into(), json!(sequence));
        }
        sequence += 1;
        if let Ok(bytes) = serde_json::to_vec(&fields) {
            out.extend_from_slice(b"event: ");
            out.extend_from_slice(kind.as_bytes());
            out.push(b'\n');
            sse::event(&bytes, &mut out);
        }
    };
    let mut pending = response.clone();
    let pending_obj = pending.as_object_mut()?;
    pending_obj.insert("status".into(), json!("in_progress"));
    pending_obj.insert("output".into(), json!([]));
    pending_obj.insert("usage".into(), Value::Null);
    emit("response.created", json!({"response": pending}));
    emit("response.in_progress", json!({"response": pending}));
    for (output_index, item) in response.get("output")?.as_array()?.iter().enumerate() {
        if item.get("type")?.as_str()? != "message" {
            return None;
        }
        let item_id = item.get("id").cloned().unwrap_or(Value::Null);
        let mut open_item = item.clone();
        open_item["status"] = json!("in_progress");
        open_item["content"] = json!([]);
        emit(
            "response.output_item.added",
            json!({"output_index": output_index, "item": open_item}),
        );
        for (content_index, part) in item.get("content")?.as_array()?.iter().enumerate() {
            if part.get("type")?.as_str()? != "output_text" {
                return None;
            }
            let text = part.get("text")?.as_str()?;
            let ids = json!({"item_id": item_id, "output_index": output_index, "content_index": content_index});
            let with = |extra: Value| {
                let mut fields = ids.clone();
                if let (Some(f), Some(e)) = (fields.as_object_mut(), extra.as_object()) {
                    f.extend(e.clone());
                }
                fields
            };
            emit(
                "response.content_part.added",
                with(json!({"part": {"type": "output_text", "text": "", "annotations": []}})),
            );
            for piece in super::chat_stream::pieces(text) {
                emit(
                    "response.output_text.delta",
                    with(json!({"delta": piece, "logprobs": []})),
                );
            }
            emit(
                "response.output_text.done",
                with(json!({"text": text, "logprobs": []})),
            );
            emit("response.content_part.done", with(json!({"part": part})));
        }
        emit(
            "response.output_item.done",
            json!({"output_index": output_index, "item": item}),
        );
    }
    emit("response.completed", json!({"response": response}));
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completions_round_trip() {
        let answer = json!({"id": "cmpl-1", "object": "text_completion", "created": 1, "model": "m",
            "choices": [{"text": "Once upon a time there was a proxy.", "index": 0, "logprobs": null, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}});
        let stream = synthesize_completion(&answer, true).unwrap_or_default();
        let back = assemble_completion(&stream).unwrap_or_default();
        assert_eq!(back["choices"][0]["text"], answer["choices"][0]["text"]);
        assert_eq!(back["usage"], answer["usage"]);
        assert!(assemble_completion(b"data: {\"choices\":[]}\n\n").is_none());
    }

    /// The same as `chat_stream`'s `huge_indexes_are_not_assembled`.
    #[test]
    fn huge_completion_indexes_are_not_assembled() {
        let stream = b"data: {\"choices\":[{\"index\":4000000000,\"text\":\"x\",\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n";
        assert!(assemble_completion(stream).is_none());
    }

    #[test]
    fn responses_round_trip() {
        let response = json!({"id": "resp_1", "object": "response", "status": "completed", "model": "m",
            "output": [{"type": "message", "id": "msg_1", "status": "completed", "role": "assistant",
                "content": [{"type": "output_text", "text": "Hello from the cache.", "annotations": []}]}],
            "usage": {"input_tokens": 1, "output_tokens": 2, "total_tokens": 3}});
        let stream = synthesize_response(&response).unwrap_or_default();
        assert_eq!(assemble_response(&stream), Some(response.clone()));
        let deltas: String = sse::data_events(&stream)
            .iter()
            .filter_map(|e| serde_json::from_slice::<Value>(e).ok())
            .filter(|e| e["type"] == "response.output_text.delta")
            .filter_map(|e| e["delta"].as_str().map(str::to_owned))
            .collect();
        assert_eq!(deltas, "Hello from the cache.");
        let mut tool = response.clone();
        tool["output"][0]["type"] = json!("function_call");
        assert!(synthesize_response(&tool).is_none());
        let mut failed = response;
        failed["status"] = json!("incomplete");
        let incomplete = format!(
            "data: {}\n\n",
            json!({"type": "response.completed", "response": failed})
        );
        assert!(assemble_response(incomplete.as_bytes()).is_none());
    }
}
