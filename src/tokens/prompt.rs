//! How a whole prompt is counted, per endpoint.
//!
//! Chat messages follow OpenAI's convention (the cookbook's "How to count
//! tokens with tiktoken"), extended to tool calls:
//! - each message: 3, plus its `role`, its `content` (a string, or the text
//!   of its text parts; images and audio count 0 here), `name` plus 1,
//!   `tool_call_id`, and per entry of `tool_calls` (or a legacy
//!   `function_call`) 3 plus the function's name and arguments;
//! - 3 for priming the reply, once;
//! - tool definitions with the cookbook's `num_tokens_for_tools` rule.
//!
//! Responses API input items count the same way: a message item as a
//! message, a `function_call` as a tool call, a `function_call_output` as
//! 3 plus its output, a reasoning item as 3 plus its summary text;
//! `instructions` as a system message. Completion prompts and embedding
//! inputs are their text's tokens (token arrays: their length).
//!
//! `tests/fixtures/tokens/reference.py` computes the same with OpenAI's
//! tiktoken; the tests below hold these counts to it.

use std::borrow::Cow;

use serde::Deserialize;
use serde::de::IgnoredAny;

use super::{Counter, Encoding};
use crate::openai::{ApiRequest, Endpoint};

/// Per message, per tool call, and for priming the reply.
const PER_MESSAGE: u64 = 3;
const PER_NAME: u64 = 1;
const REPLY_PRIMING: u64 = 3;

/// The cookbook's constants for tool definitions.
const FUNC_INIT: i64 = 7;
const PROP_INIT: i64 = 3;
const PROP_KEY: i64 = 3;
const ENUM_INIT: i64 = -3;
const ENUM_ITEM: i64 = 3;
const FUNC_END: i64 = 12;

/// Cache kind of a message's (or item's) JSON text.
const KIND_MESSAGE: u8 = b'm';
const KIND_TOOLS: u8 = b'f';

/// The prompt tokens of a request, as the upstream would count them.
pub fn request(counter: &Counter, api: &ApiRequest) -> u64 {
    let encoding = counter.encoding(api.model());
    match api.endpoint() {
        Endpoint::ChatCompletions => {
            let messages: u64 = api
                .items("messages")
                .into_iter()
                .map(|m| message(counter, encoding, m))
                .sum();
            messages + REPLY_PRIMING + api.raw("tools").map_or(0, |t| tools(counter, encoding, t))
        }
        Endpoint::Responses => {
            let instructions = instructions(counter, encoding, api);
            let input = api.raw("input").map_or(0, |raw| match first_byte(raw) {
                Some(b'[') => api
                    .items("input")
                    .into_iter()
                    .map(|m| message(counter, encoding, m))
                    .sum(),
                _ => serde_json::from_slice::<String>(raw).map_or(0, |text| {
                    PER_MESSAGE + encoding.count("user") + counter.text(encoding, &text)
                }),
            });
            instructions
                + input
                + REPLY_PRIMING
                + api.raw("tools").map_or(0, |t| tools(counter, encoding, t))
        }
        Endpoint::Completions => api
            .raw("prompt")
            .map_or(0, |raw| text_or_tokens(counter, encoding, raw)),
        Endpoint::Embeddings => api
            .raw("input")
            .map_or(0, |raw| text_or_tokens(counter, encoding, raw)),
        Endpoint::Other => 0,
    }
}

/// Responses `instructions`, counted as a system message (0 without).
pub fn instructions(counter: &Counter, encoding: Encoding, api: &ApiRequest) -> u64 {
    api.get::<String>("instructions")
        .and_then(Result::ok)
        .map_or(0, |text| {
            PER_MESSAGE + encoding.count("system") + counter.text(encoding, &text)
        })
}

/// The first byte of a JSON text that is not whitespace.
pub fn first_byte(raw: &[u8]) -> Option<u8> {
    raw.iter().copied().find(|b| !b.is_ascii_whitespace())
}

/// A prompt or embedding input: a string, an array of strings, an array of
/// tokens, or an array of token arrays.
fn text_or_tokens(counter: &Counter, encoding: Encoding, raw: &[u8]) -> u64 {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Input<'a> {
        Text(#[serde(borrow)] Cow<'a, str>),
        Token(#[expect(dead_code, reason = "a token counts one, whatever its id")] u64),
        Many(Vec<Input<'a>>),
        Other(IgnoredAny),
    }
    fn count(counter: &Counter, encoding: Encoding, input: &Input<'_>) -> u64 {
        match input {
            Input::Text(text) => counter.text(encoding, text),
            Input::Token(_) => 1,
            Input::Many(inputs) => inputs.iter().map(|i| count(counter, encoding, i)).sum(),
            Input::Other(_) => 0,
        }
    }
    serde_json::from_slice::<Input<'_>>(raw).map_or(0, |input| count(counter, encoding, &input))
}

/// One chat message or Responses input item, by its JSON text (cached).
pub fn message(counter: &Counter, encoding: Encoding, raw: &str) -> u64 {
    if raw.len() < super::CACHED_MIN_BYTES {
        return count_message(counter, encoding, raw);
    }
    counter.cached(encoding, KIND_MESSAGE, raw.as_bytes(), || {
        count_message(counter, encoding, raw)
    })
}

/// The fields of a message or item that count.
#[derive(Deserialize, Default)]
#[serde(default)]
struct Message<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow)]
    role: Option<Cow<'a, str>>,
    #[serde(borrow)]
    content: Option<Content<'a>>,
    #[serde(borrow)]
    name: Option<Cow<'a, str>>,
    #[serde(borrow)]
    tool_call_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    tool_calls: Option<Vec<ToolCall<'a>>>,
    #[serde(borrow)]
    function_call: Option<Function<'a>>,
    #[serde(borrow)]
    arguments: Option<Cow<'a, str>>,
    #[serde(borrow)]
    output: Option<Content<'a>>,
    #[serde(borrow)]
    summary: Option<Vec<Part<'a>>>,
}

/// A string, or parts of which the text ones count.
#[derive(Deserialize)]
#[serde(untagged)]
pub(crate) enum Content<'a> {
    Text(#[serde(borrow)] Cow<'a, str>),
    Parts(#[serde(borrow)] Vec<Part<'a>>),
    Other(IgnoredAny),
}

#[derive(Deserialize)]
pub(crate) struct Part<'a> {
    #[serde(rename = "type", borrow, default)]
    pub(crate) kind: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub(crate) text: Option<Cow<'a, str>>,
}

impl Part<'_> {
    /// The text of a text part (`text`, `input_text`, `output_text`,
    /// `summary_text`).
    pub(crate) fn text(&self) -> Option<&str> {
        let kind = self.kind.as_deref().unwrap_or("text");
        matches!(kind, "text" | "input_text" | "output_text" | "summary_text")
            .then_some(self.text.as_deref())
            .flatten()
    }
}

#[derive(Deserialize)]
struct ToolCall<'a> {
    #[serde(borrow, default)]
    function: Option<Function<'a>>,
}

#[derive(Deserialize)]
struct Function<'a> {
    #[serde(borrow, default)]
    name: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    arguments: Option<Cow<'a, str>>,
}

fn content(counter: &Counter, encoding: Encoding, content: &Content<'_>) -> u64 {
    match content {
        Content::Text(text) => counter.text(encoding, text),
        Content::Parts(parts) => parts
            .iter()
            .filter_map(Part::text)
            .map(|t| counter.text(encoding, t))
            .sum(),
        Content::Other(_) => 0,
    }
}

fn count_message(counter: &Counter, encoding: Encoding, raw: &str) -> u64 {
    let Ok(m) = serde_json::from_str::<Message<'_>>(raw) else {
        return PER_MESSAGE;
    };
    let text = |s: &Option<Cow<'_, str>>| s.as_deref().map_or(0, |s| counter.text(encoding, s));
    let function = |f: &Function<'_>| PER_MESSAGE + text(&f.name) + text(&f.arguments);
    match m.kind.as_deref() {
        Some("function_call" | "custom_tool_call") => {
            PER_MESSAGE + text(&m.name) + text(&m.arguments)
        }
        Some("function_call_output" | "custom_tool_call_output") => {
            PER_MESSAGE
                + m.output
                    .as_ref()
                    .map_or(0, |o| content(counter, encoding, o))
        }
        Some("reasoning") => {
            PER_MESSAGE
                + m.summary
                    .iter()
                    .flatten()
                    .filter_map(Part::text)
                    .map(|t| counter.text(encoding, t))
                    .sum::<u64>()
        }
        _ => {
            PER_MESSAGE
                + text(&m.role)
                + m.content
                    .as_ref()
                    .map_or(0, |c| content(counter, encoding, c))
                + m.name
                    .as_ref()
                    .map_or(0, |n| counter.text(encoding, n) + PER_NAME)
                + text(&m.tool_call_id)
                + m.tool_calls
                    .iter()
                    .flatten()
                    .filter_map(|c| c.function.as_ref())
                    .map(function)
                    .sum::<u64>()
                + m.function_call.as_ref().map_or(0, function)
        }
    }
}

/// Tool definitions, chat (`{"type":"function","function":{…}}`) or
/// Responses (`{"type":"function","name":…}`) form, by the cookbook's rule.
fn tools(counter: &Counter, encoding: Encoding, raw: &[u8]) -> u64 {
    counter.cached(encoding, KIND_TOOLS, raw, || {
        let Ok(tools) = serde_json::from_slice::<Vec<serde_json::Value>>(raw) else {
            return 0;
        };
        let mut total: i64 = 0;
        let count = |s: &str| encoding.count(s) as i64;
        let functions: Vec<&serde_json::Value> = tools
            .iter()
            .map(|t| t.get("function").unwrap_or(t))
            .filter(|f| f.get("name").is_some())
            .collect();
        for function in &functions {
            total += FUNC_INIT;
            let name = str_of(function, "name");
            let description = str_of(function, "description");
            total += count(&format!("{name}:{}", description.trim_end_matches('.')));
            let properties = function
                .get("parameters")
                .and_then(|p| p.get("properties"))
                .and_then(serde_json::Value::as_object);
            let Some(properties) = properties.filter(|p| !p.is_empty()) else {
                continue;
            };
            total += PROP_INIT;
            for (key, property) in properties {
                total += PROP_KEY;
                if let Some(values) = property.get("enum").and_then(serde_json::Value::as_array) {
                    total += ENUM_INIT;
                    for value in values {
                        total += ENUM_ITEM;
                        total += match value {
                            serde_json::Value::String(s) => count(s),
                            other => count(&other.to_string()),
                        };
                    }
                }
                let kind = match property.get("type") {
                    Some(serde_json::Value::String(s)) => s.clone(),
                    Some(other) => other.to_string(),
                    None => String::new(),
                };
                let description = str_of(property, "description");
                total += count(&format!(
                    "{key}:{kind}:{}",
                    description.trim_end_matches('.')
                ));
            }
        }
        if !functions.is_empty() {
            total += FUNC_END;
        }
        u64::try_from(total).unwrap_or(0)
    })
}

fn str_of<'a>(value: &'a serde_json::Value, key: &str) -> &'a str {
    value
        .get(key)
        .and_then(serde_json::Value::as_str)
        .unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use serde_json::{Value, json};

    fn reference() -> Value {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/tokens/reference.json"
        );
        let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    fn chat(body: &Value) -> ApiRequest {
        let bytes = Bytes::from(serde_json::to_vec(body).unwrap_or_default());
        ApiRequest::parse(Endpoint::ChatCompletions, bytes).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn texts_count_exactly_as_tiktoken() {
        let reference = reference();
        let texts = reference["texts"].as_array().cloned().unwrap_or_default();
        assert!(texts.len() >= 20, "reference texts missing");
        let counter = Counter::new(Encoding::O200kBase);
        for case in texts {
            let text = case["text"].as_str().unwrap_or_default();
            for encoding in [Encoding::O200kBase, Encoding::Cl100kBase] {
                let expected = case[encoding.name()].as_u64();
                assert_eq!(
                    Some(counter.text(encoding, text)),
                    expected,
                    "{encoding} on {:?}",
                    text.chars().take(60).collect::<String>()
                );
            }
        }
    }

    #[test]
    fn chats_count_within_one_percent_of_tiktoken() {
        let reference = reference();
        let chats = reference["chats"].as_array().cloned().unwrap_or_default();
        assert!(chats.len() >= 10, "reference chats missing");
        let counter = Counter::new(Encoding::O200kBase);
        for case in chats {
            let mut body = json!({"model": case["model"], "messages": case["messages"]});
            if let Some(tools) = case.get("tools") {
                body["tools"] = tools.clone();
            }
            for (encoding, model) in [
                (Encoding::O200kBase, "gpt-4o"),
                (Encoding::Cl100kBase, "gpt-4"),
            ] {
                body["model"] = json!(model);
                let counted = request(&counter, &chat(&body)) as f64;
                let expected = case[encoding.name()].as_f64().unwrap_or(-1.0);
                assert!(
                    (counted - expected).abs() <= expected * 0.01,
                    "{encoding}: counted {counted}, tiktoken {expected}: {body}"
                );
            }
        }
    }

    #[test]
    fn resent_history_is_counted_from_the_cache() {
        let counter = Counter::new(Encoding::O200kBase);
        let long = "fn main() { println!(\"hello\"); }\n".repeat(40);
        let first = json!({"model": "gpt-4o", "messages": [
            {"role": "user", "content": long},
        ]});
        let n = request(&counter, &chat(&first));
        counter.cache.run_pending_tasks();
        let cached = counter.cache.entry_count();
        assert!(cached >= 1);
        let second = json!({"model": "gpt-4o", "messages": [
            {"role": "user", "content": long},
            {"role": "assistant", "content": "ok"},
        ]});
        let m = request(&counter, &chat(&second));
        assert_eq!(m, n + PER_MESSAGE + 1 + 1);
    }

    #[test]
    fn other_endpoints() {
        let counter = Counter::new(Encoding::O200kBase);
        let parse = |endpoint, body: Value| {
            ApiRequest::parse(endpoint, Bytes::from(body.to_string()))
                .unwrap_or_else(|e| panic!("{e}"))
        };
        let hello = Encoding::Cl100kBase.count("hello world");
        let embeddings = parse(
            Endpoint::Embeddings,
            json!({"model": "text-embedding-3-small", "input": ["hello world", "hello world"]}),
        );
        assert_eq!(request(&counter, &embeddings), 2 * hello);
        let tokens = parse(
            Endpoint::Embeddings,
            json!({"model": "text-embedding-3-small", "input": [[1, 2, 3], [4]]}),
        );
        assert_eq!(request(&counter, &tokens), 4);
        let completion = parse(
            Endpoint::Completions,
            json!({"model": "gpt-3.5-turbo-instruct", "prompt": "hello world"}),
        );
        assert_eq!(request(&counter, &completion), hello);
        let user = Encoding::O200kBase.count("user");
        let o_hello = Encoding::O200kBase.count("hello world");
        let responses = parse(
            Endpoint::Responses,
            json!({"model": "gpt-4.1", "input": "hello world"}),
        );
        assert_eq!(request(&counter, &responses), 3 + user + o_hello + 3);
        let items = parse(
            Endpoint::Responses,
            json!({"model": "gpt-4.1", "input": [
                {"role": "user", "content": [{"type": "input_text", "text": "hello world"}]},
                {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
                {"type": "function_call_output", "call_id": "c1", "output": "hello world"},
            ]}),
        );
        let f = Encoding::O200kBase.count("f") + Encoding::O200kBase.count("{}");
        assert_eq!(
            request(&counter, &items),
            (3 + user + o_hello) + (3 + f) + (3 + o_hello) + 3
        );
    }

    #[test]
    fn malformed_fields_count_without_failing() {
        let counter = Counter::new(Encoding::O200kBase);
        for body in [
            json!({"messages": "not an array"}),
            json!({"messages": [1, null, {"content": {"odd": true}}]}),
            json!({"messages": [], "tools": {"not": "a list"}}),
            json!({"messages": [], "tools": [{"type": "function", "function": {"name": 3}}]}),
        ] {
            let _ = request(&counter, &chat(&body));
        }
    }
}
