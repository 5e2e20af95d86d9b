//! A parsed request to one of the understood endpoints.
//!
//! The body is parsed once, at ingress: the whole document is validated and
//! its top-level object split into fields, each kept as the exact bytes the
//! client sent (a slice of the original body, nothing copied). Layers read a
//! field by deserializing just that field, and replace fields they rewrite.
//! Unknown fields, their order, and numbers as written are kept. A request no
//! layer changed is forwarded as the client's original bytes.

use std::borrow::Cow;
use std::fmt;
use std::ops::Range;
use std::sync::OnceLock;

use bytes::Bytes;
use serde::Deserialize;
use serde::de::{self, DeserializeOwned, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;

use super::Endpoint;

/// An understood request, parsed once.
#[derive(Debug, Clone)]
pub struct ApiRequest {
    endpoint: Endpoint,
    original: Bytes,
    fields: Vec<Field>,
    model: Option<String>,
    stream: bool,
    modified: bool,
}

/// One top-level field: its key, its value's JSON text, and, once some
/// layer asked, where each element of an array value lies in that text.
#[derive(Debug, Clone)]
struct Field {
    key: String,
    value: Bytes,
    items: OnceLock<Vec<Range<usize>>>,
}

impl Field {
    fn new(key: String, value: Bytes) -> Field {
        Field {
            key,
            value,
            items: OnceLock::new(),
        }
    }

    /// The elements of an array value, split on the first call only.
    fn items(&self) -> impl Iterator<Item = &str> {
        let ranges = self.items.get_or_init(|| {
            let base = self.value.as_ptr() as usize;
            serde_json::from_slice::<Vec<&RawValue>>(&self.value)
                .unwrap_or_default()
                .into_iter()
                .map(|raw| {
                    let start = raw.get().as_ptr() as usize - base;
                    start..start + raw.get().len()
                })
                .collect()
        });
        // Each range is a whole JSON value serde_json read as UTF-8, so
        // none is left out here.
        ranges
            .iter()
            .filter_map(|range| std::str::from_utf8(&self.value[range.clone()]).ok())
    }
}

/// Why a body could not be parsed.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    #[error("request body is not valid JSON: {0}")]
    InvalidJson(#[from] serde_json::Error),
    #[error("request body must be a JSON object")]
    NotAnObject,
    #[error("request body nests arrays and objects more than {max} levels deep")]
    TooDeep { max: usize },
}

impl ApiRequest {
    /// [`parse`](Self::parse), refusing bodies that nest arrays and objects
    /// more than `max_depth` levels deep before parsing them.
    pub fn parse_within_depth(
        endpoint: Endpoint,
        original: Bytes,
        max_depth: usize,
    ) -> Result<ApiRequest, ParseError> {
        if nested_deeper_than(&original, max_depth) {
            return Err(ParseError::TooDeep { max: max_depth });
        }
        Self::parse(endpoint, original)
    }

    /// Parses `original` as the JSON object body of a request to `endpoint`.
    pub fn parse(endpoint: Endpoint, original: Bytes) -> Result<ApiRequest, ParseError> {
        let first = original.iter().find(|b| !b.is_ascii_whitespace()).copied();
        if first != Some(b'{') {
            // Valid JSON that is not an object, or not JSON at all.
            serde_json::from_slice::<IgnoredAny>(&original)?;
            return Err(ParseError::NotAnObject);
        }
        let top: TopLevel<'_> = serde_json::from_slice(&original)?;
        let base = original.as_ptr() as usize;
        let fields: Vec<Field> = top
            .0
            .into_iter()
            .map(|(key, raw)| {
                let text = raw.get();
                let start = text.as_ptr() as usize - base;
                Field::new(key.into_owned(), original.slice(start..start + text.len()))
            })
            .collect();
        let mut request = ApiRequest {
            endpoint,
            original,
            fields,
            model: None,
            stream: false,
            modified: false,
        };
        request.model = request.get::<String>("model").and_then(Result::ok);
        request.stream = request
            .get::<bool>("stream")
            .and_then(Result::ok)
            .unwrap_or(false);
        Ok(request)
    }

    pub fn endpoint(&self) -> Endpoint {
        self.endpoint
    }

    /// The `model` field, when it is a string.
    pub fn model(&self) -> Option<&str> {
        self.model.as_deref()
    }

    /// Whether the client asked for a streamed (SSE) answer.
    pub fn stream(&self) -> bool {
        self.stream
    }

    /// The JSON text of a top-level field, as sent. With duplicate keys the
    /// last one counts, as in most JSON parsers.
    pub fn raw(&self, key: &str) -> Option<&[u8]> {
        self.fields
            .iter()
            .rev()
            .find(|f| f.key == key)
            .map(|f| f.value.as_ref())
    }

    /// The elements of an array field (chat `messages`, Responses `input`)
    /// as their JSON text: split once per request however many layers ask,
    /// and again only after the field is set. Empty when the field is
    /// absent or not an array.
    pub fn items(&self, key: &str) -> Vec<&str> {
        self.fields
            .iter()
            .rev()
            .find(|f| f.key == key)
            .map(|f| f.items().collect())
            .unwrap_or_default()
    }

    /// Every top-level field, in document order: key and JSON text as sent.
    pub fn fields(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.fields
            .iter()
            .map(|f| (f.key.as_str(), f.value.as_ref()))
    }

    /// Length of the client's original body.
    pub fn original_len(&self) -> usize {
        self.original.len()
    }

    /// A top-level field deserialized as `T`; `None` when absent.
    pub fn get<T: DeserializeOwned>(&self, key: &str) -> Option<Result<T, serde_json::Error>> {
        self.raw(key).map(serde_json::from_slice)
    }

    /// Sets (or adds, at the end) a top-level field; the request is then
    /// sent re-serialized.
    pub fn set(
        &mut self,
        key: &str,
        value: &impl serde::Serialize,
    ) -> Result<(), serde_json::Error> {
        self.set_raw(key, Bytes::from(serde_json::to_vec(value)?));
        Ok(())
    }

    /// Sets (or adds, at the end) a top-level field to JSON text the caller
    /// built (it must be one valid JSON value).
    pub fn set_raw(&mut self, key: &str, value: Bytes) {
        match self.fields.iter_mut().rev().find(|f| f.key == key) {
            Some(field) => *field = Field::new(key.to_owned(), value),
            None => self.fields.push(Field::new(key.to_owned(), value)),
        }
        self.after_change(key);
    }

    /// Removes a top-level field (every occurrence).
    pub fn remove(&mut self, key: &str) {
        let before = self.fields.len();
        self.fields.retain(|f| f.key != key);
        if self.fields.len() != before {
            self.after_change(key);
        }
    }

    fn after_change(&mut self, key: &str) {
        self.modified = true;
        match key {
            "model" => self.model = self.get::<String>("model").and_then(Result::ok),
            "stream" => {
                self.stream = self
                    .get::<bool>("stream")
                    .and_then(Result::ok)
                    .unwrap_or(false);
            }
            _ => {}
        }
    }

    /// Length of the body [`to_bytes`](Self::to_bytes) would give (for a
    /// rewritten one, at most a few bytes more), without building it.
    pub fn body_len(&self) -> usize {
        if !self.modified {
            return self.original.len();
        }
        2 + self
            .fields
            .iter()
            .map(|f| f.key.len() + f.value.len() + 4)
            .sum::<usize>()
    }

    /// Whether a layer has rewritten the body.
    pub fn is_modified(&self) -> bool {
        self.modified
    }

    /// The bytes to send upstream: the client's own bytes unless modified;
    /// then the fields in order, unchanged ones exactly as sent.
    pub fn to_bytes(&self) -> Bytes {
        if !self.modified {
            return self.original.clone();
        }
        let len: usize = self
            .fields
            .iter()
            .map(|f| f.key.len() + f.value.len() + 4)
            .sum();
        let mut out = Vec::with_capacity(len + 2);
        out.push(b'{');
        for (i, field) in self.fields.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            // Writing a string into a Vec cannot fail.
            let _ = serde_json::to_writer(&mut out, &field.key);
            out.push(b':');
            out.extend_from_slice(&field.value);
        }
        out.push(b'}');
        out.into()
    }
}

/// Whether `json` nests arrays and objects more than `max` levels deep (the
/// top-level object is level 1). A quick scan, not a parse: string contents
/// are skipped (most of a request's bytes, jumped over with `memchr`), and
/// the text need not be valid JSON; the parser judges that afterwards.
///
/// serde_json stops at 128 levels, but only where it builds values: a raw
/// field is skipped without a limit and would fail later, in a layer.
pub fn nested_deeper_than(json: &[u8], max: usize) -> bool {
    // No deeper than it has openers: most bodies are told by a quick count.
    if memchr::memchr2_iter(b'[', b'{', json).take(max + 1).count() <= max {
        return false;
    }
    let mut depth = 0usize;
    let mut at = 0;
    while let Some(&byte) = json.get(at) {
        at += 1;
        match byte {
            b'"' => loop {
                // Past the closing quote; an escape skips the byte after it.
                let Some(rest) = json.get(at..) else {
                    return false;
                };
                match memchr::memchr2(b'"', b'\\', rest) {
                    Some(found) if rest[found] == b'"' => {
                        at += found + 1;
                        break;
                    }
                    Some(found) => at += found + 2,
                    // Unterminated: not JSON, the parser says so.
                    None => return false,
                }
            },
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// The top-level object as (key, raw value) pairs borrowed from the input.
struct TopLevel<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'de> Deserialize<'de> for TopLevel<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Fields;
        impl<'de> Visitor<'de> for Fields {
            type Value = TopLevel<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut fields = Vec::with_capacity(map.size_hint().unwrap_or(8));
                while let Some(key) = map.next_key::<Key<'de>>()? {
                    fields.push((key.0, map.next_value::<&'de RawValue>()?));
                }
                Ok(TopLevel(fields))
            }
        }
        deserializer.deserialize_map(Fields)
    }
}

/// A key, borrowed unless it had escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string key")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Key(Cow::Owned(v)))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn parse(s: &'static str) -> Result<ApiRequest, ParseError> {
        ApiRequest::parse(Endpoint::ChatCompletions, Bytes::from_static(s.as_bytes()))
    }

    fn ok(s: &'static str) -> ApiRequest {
        parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn splits_array_fields_into_their_elements_as_sent() {
        let mut req = ok(r#"{"messages":[ {"role":"user","content":"a, b"} ,"x", [1,2]],"n":1}"#);
        let expected = [r#"{"role":"user","content":"a, b"}"#, r#""x""#, "[1,2]"];
        assert_eq!(req.items("messages"), expected);
        assert_eq!(req.items("messages"), expected, "asked again");
        assert!(req.items("n").is_empty(), "not an array");
        assert!(req.items("absent").is_empty());
        req.set_raw("messages", Bytes::from_static(br#"[{"role":"system"}]"#));
        assert_eq!(req.items("messages"), [r#"{"role":"system"}"#], "set anew");
        let copy = req.clone();
        assert_eq!(copy.items("messages"), [r#"{"role":"system"}"#]);
    }

    #[test]
    fn reads_model_and_stream() {
        let req = ok(r#"{"model":"gpt-4o","stream":true,"messages":[]}"#);
        assert_eq!(req.model(), Some("gpt-4o"));
        assert!(req.stream());
        let req = ok(r#"{"model":7, "stream": "yes"}"#);
        assert_eq!(req.model(), None);
        assert!(!req.stream());
        let req = ok(r#" {"mo\u0064el" : "esc\"aped"} "#);
        assert_eq!(req.model(), Some("esc\"aped"));
    }

    #[test]
    fn rejects_non_objects_and_bad_json() {
        assert!(matches!(parse("[1,2]"), Err(ParseError::NotAnObject)));
        assert!(matches!(parse(" \"x\""), Err(ParseError::NotAnObject)));
        assert!(matches!(parse("null"), Err(ParseError::NotAnObject)));
        for bad in [
            "{",
            "",
            "[1,",
            "{\"a\":}",
            "{\"a\":1} trailing",
            "{\"a\":[1,}",
            "{\"a\":\"\\x\"}",
        ] {
            assert!(
                matches!(parse(bad), Err(ParseError::InvalidJson(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn fields_read_on_demand() {
        let req = ok(r#"{"messages":[{"role":"user","content":"hi"}],"n":2,"temperature":0.50}"#);
        let messages: Value = req.get("messages").and_then(Result::ok).unwrap_or_default();
        assert_eq!(messages[0]["content"], "hi");
        assert_eq!(req.raw("temperature"), Some(&b"0.50"[..]));
        assert_eq!(req.get::<u32>("n").and_then(Result::ok), Some(2));
        assert!(req.raw("missing").is_none());
    }

    #[test]
    fn unmodified_requests_keep_their_exact_bytes() {
        let raw = "{ \"z\": 1,\n \"model\": \"m\", \"x_unknown\": {\"a\": [1.50]} }";
        let req = ok(raw);
        assert_eq!(req.to_bytes(), raw.as_bytes());
        assert!(!req.is_modified());
    }

    #[test]
    fn modified_requests_keep_other_fields_as_written_and_in_order() {
        let mut req = ok(r#"{"z":1.50,"model":"m","x_unknown":{"a":[1e3]}}"#);
        req.set("model", &"n").unwrap_or_else(|e| panic!("{e}"));
        assert!(req.is_modified());
        assert_eq!(req.model(), Some("n"));
        assert_eq!(
            req.to_bytes(),
            r#"{"z":1.50,"model":"n","x_unknown":{"a":[1e3]}}"#.as_bytes()
        );
        req.set("stream", &true).unwrap_or_else(|e| panic!("{e}"));
        assert!(req.stream());
        req.remove("z");
        let v: Value = serde_json::from_slice(&req.to_bytes()).unwrap_or_default();
        assert_eq!(
            v,
            json!({"model": "n", "x_unknown": {"a": [1000.0]}, "stream": true})
        );
    }

    #[test]
    fn nesting_depth_is_scanned_outside_strings() {
        assert!(!nested_deeper_than(b"{}", 1));
        assert!(nested_deeper_than(b"{\"a\":[]}", 1));
        assert!(!nested_deeper_than(b"{\"a\":[]}", 2));
        assert!(!nested_deeper_than(b"{\"a\":[1],\"b\":{\"c\":2}}", 2));
        // Brackets in strings, escaped quotes and backslashes do not count.
        assert!(!nested_deeper_than(
            br#"{"a":"[[[{{{","b":"\"[[[","c":"\\"}"#,
            1
        ));
        assert!(nested_deeper_than(br#"{"a":"\\",  "b":[]}"#, 1));
        // Not JSON: whatever the answer, no panic.
        for text in [&b"\""[..], b"\"\\", b"]]]]", b"{\"\\", b""] {
            let _ = nested_deeper_than(text, 1);
        }
        let deep = format!("{{\"a\":{}1{}}}", "[".repeat(200), "]".repeat(200));
        assert!(nested_deeper_than(deep.as_bytes(), 64));
        assert!(!nested_deeper_than(deep.as_bytes(), 201));
        let request = |depth: usize| {
            ApiRequest::parse_within_depth(
                Endpoint::ChatCompletions,
                Bytes::from(deep.clone()),
                depth,
            )
        };
        assert!(matches!(request(64), Err(ParseError::TooDeep { max: 64 })));
        // The parse alone keeps a raw field of any depth: hence the scan.
        assert!(request(201).is_ok());
    }

    #[test]
    fn duplicate_keys_last_wins() {
        let req = ok(r#"{"model":"a","model":"b"}"#);
        assert_eq!(req.model(), Some("b"));
    }
}
