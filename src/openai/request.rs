//! A parsed request to one of the understood endpoints.
//!
//! The body is parsed once, at ingress, into a JSON object that keeps every
//! field as sent (unknown ones included, in their order). Layers read it through
//! typed accessors; a layer that rewrites it marks it modified. Unmodified
//! requests are forwarded as the client's original bytes.

use bytes::Bytes;
use serde_json::{Map, Value};

use super::Endpoint;

/// An understood request, parsed once.
#[derive(Debug, Clone)]
pub struct ApiRequest {
    endpoint: Endpoint,
    original: Bytes,
    body: Map<String, Value>,
    modified: bool,
}

/// Why a body could not be parsed.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    #[error("request body is not valid JSON: {0}")]
    InvalidJson(#[from] serde_json::Error),
    #[error("request body must be a JSON object")]
    NotAnObject,
}

impl ApiRequest {
    /// Parses `original` as the JSON object body of a request to `endpoint`.
    pub fn parse(endpoint: Endpoint, original: Bytes) -> Result<ApiRequest, ParseError> {
        match serde_json::from_slice::<Value>(&original)? {
            Value::Object(body) => Ok(ApiRequest {
                endpoint,
                original,
                body,
                modified: false,
            }),
            _ => Err(ParseError::NotAnObject),
        }
    }

    pub fn endpoint(&self) -> Endpoint {
        self.endpoint
    }

    /// The `model` field, when it is a string.
    pub fn model(&self) -> Option<&str> {
        self.body.get("model").and_then(Value::as_str)
    }

    /// Whether the client asked for a streamed (SSE) answer.
    pub fn stream(&self) -> bool {
        self.body
            .get("stream")
            .and_then(Value::as_bool)
            .unwrap_or(false)
    }

    /// The parsed body, read-only.
    pub fn body(&self) -> &Map<String, Value> {
        &self.body
    }

    /// The parsed body for rewriting; the request is then sent re-serialized.
    pub fn body_mut(&mut self) -> &mut Map<String, Value> {
        self.modified = true;
        &mut self.body
    }

    /// Whether a layer has rewritten the body.
    pub fn is_modified(&self) -> bool {
        self.modified
    }

    /// The bytes to send upstream: the client's own bytes unless modified.
    pub fn to_bytes(&self) -> Bytes {
        if !self.modified {
            return self.original.clone();
        }
        match serde_json::to_vec(&self.body) {
            Ok(bytes) => bytes.into(),
            // A map of JSON values always serializes; keep the original if not.
            Err(_) => self.original.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &'static str) -> Result<ApiRequest, ParseError> {
        ApiRequest::parse(Endpoint::ChatCompletions, Bytes::from_static(s.as_bytes()))
    }

    #[test]
    fn reads_model_and_stream() {
        let req = parse(r#"{"model":"gpt-4o","stream":true,"messages":[]}"#);
        let req = req.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(req.model(), Some("gpt-4o"));
        assert!(req.stream());
        let req = parse(r#"{"model":7}"#).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(req.model(), None);
        assert!(!req.stream());
    }

    #[test]
    fn rejects_non_objects_and_bad_json() {
        assert!(matches!(parse("[1,2]"), Err(ParseError::NotAnObject)));
        assert!(matches!(parse("\"x\""), Err(ParseError::NotAnObject)));
        assert!(matches!(parse("{"), Err(ParseError::InvalidJson(_))));
        assert!(matches!(parse(""), Err(ParseError::InvalidJson(_))));
    }

    #[test]
    fn unmodified_requests_keep_their_exact_bytes() {
        let raw = "{ \"z\": 1,\n \"model\": \"m\", \"x_unknown\": {\"a\": [1.50]} }";
        let req = parse(raw).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(req.to_bytes(), raw.as_bytes());
        assert!(!req.is_modified());
    }

    #[test]
    fn modified_requests_keep_unknown_fields_in_order() {
        let mut req =
            parse(r#"{"z":1,"model":"m","x_unknown":{"a":[1]}}"#).unwrap_or_else(|e| panic!("{e}"));
        req.body_mut().insert("model".into(), Value::from("n"));
        assert!(req.is_modified());
        assert_eq!(
            req.to_bytes(),
            r#"{"z":1,"model":"n","x_unknown":{"a":[1]}}"#.as_bytes()
        );
    }
}
