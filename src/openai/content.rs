//! The texts inside a chat message or a Responses input item.
//!
//! A message's `content` is a string or a list of parts, of which the text
//! parts (`text`, `input_text`, `output_text`) hold text; a Responses
//! `function_call_output` holds its text in `output`. Tool call arguments
//! are JSON for a program, not text for a reader, and are never listed
//! here.

use serde_json::Value;

const TEXT_PARTS: [&str; 3] = ["text", "input_text", "output_text"];

/// The texts of a message or item, in order.
pub fn texts(item: &Value) -> Vec<&str> {
    let mut out = Vec::new();
    for key in ["content", "output"] {
        match item.get(key) {
            Some(Value::String(text)) => out.push(text.as_str()),
            Some(Value::Array(parts)) => {
                out.extend(
                    parts
                        .iter()
                        .filter(|p| is_text_part(p))
                        .filter_map(|p| p["text"].as_str()),
                );
            }
            _ => {}
        }
    }
    out
}

/// Calls `rewrite` on each text of a message or item and puts back the
/// texts it returns; whether any changed.
pub fn rewrite_texts(item: &mut Value, rewrite: &mut dyn FnMut(&str) -> Option<String>) -> bool {
    let mut changed = false;
    for key in ["content", "output"] {
        match item.get_mut(key) {
            Some(Value::String(text)) => {
                if let Some(new) = rewrite(text) {
                    *text = new;
                    changed = true;
                }
            }
            Some(Value::Array(parts)) => {
                for part in parts.iter_mut().filter(|p| is_text_part(p)) {
                    if let Some(Value::String(text)) = part.get_mut("text")
                        && let Some(new) = rewrite(text)
                    {
                        *text = new;
                        changed = true;
                    }
                }
            }
            _ => {}
        }
    }
    changed
}

/// Whether a message or item carries a client's prompt-cache marker: a
/// `cache_control` field anywhere in it (Anthropic-style breakpoints on
/// content parts, passed through by OpenAI-compatible gateways). Such a
/// message is sent as the client wrote it, or the marker means nothing.
pub fn cache_marked(raw: &str) -> bool {
    fn has_key(value: &Value) -> bool {
        match value {
            Value::Object(map) => map
                .iter()
                .any(|(key, value)| key == CACHE_CONTROL || has_key(value)),
            Value::Array(values) => values.iter().any(has_key),
            _ => false,
        }
    }
    memchr::memmem::find(raw.as_bytes(), CACHE_CONTROL.as_bytes()).is_some()
        && serde_json::from_str::<Value>(raw).is_ok_and(|value| has_key(&value))
}

const CACHE_CONTROL: &str = "cache_control";

/// One JSON array of the given JSON texts.
pub fn json_array<S: AsRef<str>>(items: &[S]) -> String {
    let len = items.iter().map(|i| i.as_ref().len() + 1).sum::<usize>() + 2;
    let mut out = String::with_capacity(len);
    out.push('[');
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(item.as_ref());
    }
    out.push(']');
    out
}

fn is_text_part(part: &Value) -> bool {
    part.get("type")
        .and_then(Value::as_str)
        .is_none_or(|kind| TEXT_PARTS.contains(&kind))
        && part.get("text").is_some_and(Value::is_string)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn texts_of_strings_parts_and_outputs() {
        let message = json!({"role": "user", "content": [
            {"type": "text", "text": "a"},
            {"type": "image_url", "image_url": {"url": "x"}},
            {"type": "input_text", "text": "b"},
        ]});
        assert_eq!(texts(&message), ["a", "b"]);
        let output = json!({"type": "function_call_output", "call_id": "c", "output": "out"});
        assert_eq!(texts(&output), ["out"]);
        let call = json!({"role": "assistant", "content": null, "tool_calls": [
            {"id": "c", "function": {"name": "f", "arguments": "{\"a\":1}"}}
        ]});
        assert!(texts(&call).is_empty());
    }

    #[test]
    fn rewrites_only_texts() {
        let mut message = json!({"role": "user", "content": [
            {"type": "text", "text": "a"},
            {"type": "image_url", "image_url": {"url": "a"}},
        ]});
        let changed = rewrite_texts(&mut message, &mut |t| Some(format!("{t}{t}")));
        assert!(changed);
        assert_eq!(message["content"][0]["text"], "aa");
        assert_eq!(message["content"][1]["image_url"]["url"], "a");
        assert!(!rewrite_texts(&mut message, &mut |_| None));
    }
}
