//! OpenAI's error body: `{"error":{"message","type","param","code"}}`.

use serde::Serialize;

/// An error body in OpenAI's shape; `param` is always null.
#[derive(Debug, Clone, Copy)]
pub struct ErrorBody<'a> {
    pub message: &'a str,
    pub kind: &'a str,
    pub code: &'a str,
}

#[derive(Serialize)]
struct Outer<'a> {
    error: Inner<'a>,
}

#[derive(Serialize)]
struct Inner<'a> {
    message: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    param: Option<()>,
    code: &'a str,
}

impl ErrorBody<'_> {
    /// Serialized JSON, ready to send.
    pub fn to_bytes(&self) -> bytes::Bytes {
        let outer = Outer {
            error: Inner {
                message: self.message,
                kind: self.kind,
                param: None,
                code: self.code,
            },
        };
        // Serializing plain strings into a Vec cannot fail.
        serde_json::to_vec(&outer).unwrap_or_default().into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shape_and_escaping() {
        let bytes = ErrorBody {
            message: "bad \"quote\"\n",
            kind: "invalid_request_error",
            code: "invalid_json",
        }
        .to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
        assert_eq!(v["error"]["message"], "bad \"quote\"\n");
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert_eq!(v["error"]["code"], "invalid_json");
        assert!(v["error"]["param"].is_null());
        assert_eq!(v.as_object().map(|o| o.len()), Some(1));
    }
}
