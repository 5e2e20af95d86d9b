//! Cache keys: blake3 over a canonical form of everything that can change
//! the answer.
//!
//! The key covers, each part tagged and length-prefixed so no two inputs can
//! run together: a version, the scope (a digest of the client's credential
//! headers, or "global"), the endpoint and query string, the body in
//! canonical JSON (object keys sorted, no insignificant whitespace, strings
//! re-escaped one way, numbers exactly as written) without the fields that do
//! not change the answer ([`VOLATILE_FIELDS`]), and the settings of layers
//! below the cache that rewrite requests. Two requests that differ only in
//! key order or whitespace share a key; anything else does not.

use crate::openai::ApiRequest;

/// Bumped whenever the key's layout changes, so old entries (in a shared
/// Redis) are never read under a new meaning.
const VERSION: &[u8] = b"sluice-cache-key-v2";

/// Top-level fields left out of the key: they change how an answer is
/// delivered or attributed, not what it says. `stream` and `stream_options`
/// (a stored answer serves both forms), `user` (an end-user id for abuse
/// tracking).
pub const VOLATILE_FIELDS: &[&str] = &["stream", "stream_options", "user"];

/// A cache key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CacheKey(pub [u8; 32]);

impl CacheKey {
    /// Lower-case hex, for Redis keys and logs.
    pub fn to_hex(&self) -> String {
        blake3::Hash::from_bytes(self.0).to_hex().to_string()
    }
}

/// Who may share an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope<'a> {
    /// Every client.
    Global,
    /// One client: the digest of its [`crate::context::Identity`].
    Client(&'a [u8; 32]),
}

/// Builds the key of `request` in `scope`; `path_and_query` is the request's
/// (`/v1/chat/completions?api-version=…`) and `settings` describes the
/// request-rewriting layers below the cache.
pub fn build(
    scope: Scope<'_>,
    path_and_query: &str,
    request: &ApiRequest,
    settings: &str,
) -> Result<CacheKey, serde_json::Error> {
    let mut hasher = blake3::Hasher::new();
    part(&mut hasher, b"version", VERSION);
    match scope {
        Scope::Global => part(&mut hasher, b"scope", b"global"),
        Scope::Client(digest) => part(&mut hasher, b"scope", digest),
    }
    part(&mut hasher, b"path", path_and_query.as_bytes());
    part(&mut hasher, b"settings", settings.as_bytes());
    let mut body = Vec::with_capacity(request.original_len());
    let mut fields: Vec<(&str, &[u8])> = request
        .fields()
        .filter(|(key, _)| !VOLATILE_FIELDS.contains(key))
        .collect();
    // Last occurrence of a duplicated key wins, as when the upstream parses it.
    fields.reverse();
    fields.sort_by(|a, b| a.0.cmp(b.0));
    fields.dedup_by(|later, earlier| later.0 == earlier.0);
    body.push(b'{');
    for (i, (key, value)) in fields.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        serde_json::to_writer(&mut body, key)?;
        body.push(b':');
        canonical(value, &mut body)?;
    }
    body.push(b'}');
    part(&mut hasher, b"body", &body);
    Ok(CacheKey(*hasher.finalize().as_bytes()))
}

/// A tagged, length-prefixed part: `tag`, its length, the bytes.
fn part(hasher: &mut blake3::Hasher, tag: &[u8], bytes: &[u8]) {
    hasher.update(&(tag.len() as u64).to_le_bytes());
    hasher.update(tag);
    hasher.update(&(bytes.len() as u64).to_le_bytes());
    hasher.update(bytes);
}

/// Writes the JSON `value` in canonical form: objects with sorted keys
/// (the last of duplicated keys kept), no whitespace, strings re-escaped one
/// way, numbers and literals exactly as written. One pass over the bytes.
pub fn canonical(value: &[u8], out: &mut Vec<u8>) -> Result<(), serde_json::Error> {
    let mut reader = Reader {
        input: value,
        pos: 0,
    };
    reader.value(out)?;
    reader.skip_ws();
    if reader.pos != value.len() {
        return Err(invalid());
    }
    Ok(())
}

fn invalid() -> serde_json::Error {
    <serde_json::Error as serde::de::Error>::custom("malformed JSON in a cache key")
}

/// Deepest nesting canonicalised; deeper documents are not cached.
const MAX_DEPTH: usize = 128;

struct Reader<'a> {
    input: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn skip_ws(&mut self) {
        while self
            .input
            .get(self.pos)
            .is_some_and(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
        {
            self.pos += 1;
        }
    }

    fn peek(&mut self) -> Result<u8, serde_json::Error> {
        self.skip_ws();
        self.input.get(self.pos).copied().ok_or_else(invalid)
    }

    fn expect(&mut self, byte: u8) -> Result<(), serde_json::Error> {
        if self.peek()? != byte {
            return Err(invalid());
        }
        self.pos += 1;
        Ok(())
    }

    fn value(&mut self, out: &mut Vec<u8>) -> Result<(), serde_json::Error> {
        self.nested(out, 0)
    }

    fn nested(&mut self, out: &mut Vec<u8>, depth: usize) -> Result<(), serde_json::Error> {
        if depth > MAX_DEPTH {
            return Err(invalid());
        }
        match self.peek()? {
            b'{' => self.object(out, depth),
            b'[' => {
                self.pos += 1;
                out.push(b'[');
                if self.peek()? == b']' {
                    self.pos += 1;
                } else {
                    loop {
                        self.nested(out, depth + 1)?;
                        match self.peek()? {
                            b',' => {
                                self.pos += 1;
                                out.push(b',');
                            }
                            b']' => {
                                self.pos += 1;
                                break;
                            }
                            _ => return Err(invalid()),
                        }
                    }
                }
                out.push(b']');
                Ok(())
            }
            b'"' => self.string(out),
            _ => {
                // A number or a literal: copied exactly as written.
                let start = self.pos;
                while self.input.get(self.pos).is_some_and(|b| {
                    !matches!(b, b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r')
                }) {
                    self.pos += 1;
                }
                if start == self.pos {
                    return Err(invalid());
                }
                out.extend_from_slice(&self.input[start..self.pos]);
                Ok(())
            }
        }
    }

    fn object(&mut self, out: &mut Vec<u8>, depth: usize) -> Result<(), serde_json::Error> {
        self.expect(b'{')?;
        let mut members: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        if self.peek()? == b'}' {
            self.pos += 1;
        } else {
            loop {
                let mut key = Vec::new();
                if self.peek()? != b'"' {
                    return Err(invalid());
                }
                self.string(&mut key)?;
                self.expect(b':')?;
                let mut value = Vec::new();
                self.nested(&mut value, depth + 1)?;
                members.push((key, value));
                match self.peek()? {
                    b',' => self.pos += 1,
                    b'}' => {
                        self.pos += 1;
                        break;
                    }
                    _ => return Err(invalid()),
                }
            }
        }
        // Last occurrence of a duplicated key wins: a stable sort keeps
        // document order among equal keys, then the last one is kept.
        members.sort_by(|a, b| a.0.cmp(&b.0));
        out.push(b'{');
        let mut first = true;
        for (i, (key, value)) in members.iter().enumerate() {
            if members.get(i + 1).is_some_and(|next| next.0 == *key) {
                continue;
            }
            if !first {
                out.push(b',');
            }
            first = false;
            out.extend_from_slice(key);
            out.push(b':');
            out.extend_from_slice(value);
        }
        out.push(b'}');
        Ok(())
    }

    /// A string, written with serde_json's escaping. Copied as it is when
    /// its escapes are all ones serde_json itself writes (`\"`, `\\`, `\n`,
    /// `\t`, `\r`, `\b`, `\f`): the two forms are then the same bytes.
    fn string(&mut self, out: &mut Vec<u8>) -> Result<(), serde_json::Error> {
        let start = self.pos;
        self.pos += 1;
        let mut canonical = true;
        loop {
            // Jump to the next quote or backslash: most of a body is text.
            let rest = self.input.get(self.pos..).ok_or_else(invalid)?;
            let found = memchr::memchr2(b'"', b'\\', rest).ok_or_else(invalid)?;
            self.pos += found;
            if self.input.get(self.pos) == Some(&b'"') {
                break;
            }
            let next = self.input.get(self.pos + 1).ok_or_else(invalid)?;
            if !matches!(next, b'"' | b'\\' | b'n' | b't' | b'r' | b'b' | b'f') {
                canonical = false;
            }
            self.pos += 2;
        }
        self.pos += 1;
        let raw = self.input.get(start..self.pos).ok_or_else(invalid)?;
        if canonical {
            out.extend_from_slice(raw);
        } else {
            let text: String = serde_json::from_slice(raw)?;
            serde_json::to_writer(&mut *out, &text)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::openai::Endpoint;
    use bytes::Bytes;

    fn key_of(body: &'static str, scope: Scope<'_>) -> CacheKey {
        let request = ApiRequest::parse(
            Endpoint::ChatCompletions,
            Bytes::from_static(body.as_bytes()),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        build(scope, "/v1/chat/completions", &request, "").unwrap_or_else(|e| panic!("{e}"))
    }

    fn canon(text: &str) -> String {
        let mut out = Vec::new();
        canonical(text.as_bytes(), &mut out).unwrap_or_else(|e| panic!("{text}: {e}"));
        String::from_utf8(out).unwrap_or_default()
    }

    #[test]
    fn canonical_form() {
        assert_eq!(
            canon(r#" { "b" : [ 1.50 , {"z":null, "a" : true} ], "a": "\u0041\n" } "#),
            r#"{"a":"A\n","b":[1.50,{"a":true,"z":null}]}"#
        );
        assert_eq!(canon("-0.0e+2"), "-0.0e+2");
        assert_eq!(canon(r#"{"a":1,"a":2}"#), r#"{"a":2}"#);
        assert_eq!(canon(r#"{"a":1,"b":[],"a":{}}"#), r#"{"a":{},"b":[]}"#);
        assert_eq!(
            canon(r#" [ "x\"y" , "\u00e9", "é" , {} ] "#),
            r#"["x\"y","é","é",{}]"#
        );
        assert_eq!(canon(r#"{"\u0061":1}"#), r#"{"a":1}"#);
        assert_eq!(canon(r#""a\/b\n\u000A""#), r#""a/b\n\n""#);
        assert_eq!(canon(r#""tab\tq\"""#), r#""tab\tq\"""#);
        for bad in ["{", "[1,", "{\"a\" 1}", "\"open", "[1] x", ""] {
            let mut out = Vec::new();
            assert!(canonical(bad.as_bytes(), &mut out).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn key_order_and_whitespace_do_not_matter() {
        let a = key_of(
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"temperature":0}"#,
            Scope::Global,
        );
        let b = key_of(
            "{ \"temperature\": 0,\n  \"messages\": [ {\"content\": \"hi\", \"role\": \"user\"} ],\n  \"model\": \"m\" }",
            Scope::Global,
        );
        assert_eq!(a, b);
    }

    #[test]
    fn volatile_fields_do_not_matter() {
        let a = key_of(r#"{"model":"m","messages":[]}"#, Scope::Global);
        let b = key_of(
            r#"{"model":"m","messages":[],"stream":true,"stream_options":{"include_usage":true},"user":"u-1"}"#,
            Scope::Global,
        );
        assert_eq!(a, b);
    }

    #[test]
    fn everything_else_matters() {
        let base = key_of(
            r#"{"model":"m","messages":[],"temperature":0}"#,
            Scope::Global,
        );
        for other in [
            r#"{"model":"n","messages":[],"temperature":0}"#,
            r#"{"model":"m","messages":[],"temperature":0.0}"#,
            r#"{"model":"m","messages":[],"temperature":0,"seed":1}"#,
            r#"{"model":"m","messages":[{}],"temperature":0}"#,
        ] {
            let other_key = key_of(other, Scope::Global);
            assert_ne!(base, other_key, "{other}");
        }
    }

    #[test]
    fn scopes_path_and_settings_separate_entries() {
        let body = r#"{"model":"m"}"#;
        let alice = crate::context::Identity::named("alice");
        let bob = crate::context::Identity::named("bob");
        let a = key_of(body, Scope::Client(alice.digest()));
        assert_eq!(a, key_of(body, Scope::Client(alice.digest())));
        assert_ne!(a, key_of(body, Scope::Client(bob.digest())));
        assert_ne!(a, key_of(body, Scope::Global));

        let request = ApiRequest::parse(
            Endpoint::ChatCompletions,
            Bytes::from_static(body.as_bytes()),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let k = |path: &str, settings: &str| {
            build(Scope::Global, path, &request, settings).unwrap_or_else(|e| panic!("{e}"))
        };
        assert_ne!(k("/v1/chat/completions", ""), k("/v1/completions", ""));
        assert_ne!(
            k("/v1/chat/completions", ""),
            k("/v1/chat/completions?api-version=1", "")
        );
        assert_ne!(
            k("/v1/chat/completions", ""),
            k("/v1/chat/completions", "prune=on")
        );
        // Parts cannot run together.
        assert_ne!(k("/v1/a", "b"), k("/v1/ab", ""));
    }
}
