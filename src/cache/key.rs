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

use serde_json::value::RawValue;

use crate::openai::ApiRequest;

/// Bumped whenever the key's layout changes, so old entries (in a shared
/// Redis) are never read under a new meaning.
const VERSION: &[u8] = b"sluice-cache-key-v1";

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
    /// Clients presenting exactly these credential headers (name, value).
    Credential(&'a [(&'a str, &'a [u8])]),
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
        Scope::Credential(headers) => {
            let mut scope = blake3::Hasher::new();
            for (name, value) in headers {
                part(&mut scope, name.as_bytes(), value);
            }
            part(&mut hasher, b"scope", scope.finalize().as_bytes());
        }
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
        canonical(serde_json::from_slice::<&RawValue>(value)?, &mut body)?;
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

/// Writes `value` in canonical form: objects with sorted keys, no
/// whitespace, strings re-escaped by serde_json, numbers as written.
pub fn canonical(value: &RawValue, out: &mut Vec<u8>) -> Result<(), serde_json::Error> {
    let text = value.get();
    match text.as_bytes().first() {
        Some(b'{') => {
            let mut entries = serde_json::from_str::<Object<'_>>(text)?.0;
            // Last occurrence of a duplicated key wins.
            entries.reverse();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            entries.dedup_by(|later, earlier| later.0 == earlier.0);
            out.push(b'{');
            for (i, (key, value)) in entries.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                serde_json::to_writer(&mut *out, key)?;
                out.push(b':');
                canonical(value, out)?;
            }
            out.push(b'}');
        }
        Some(b'[') => {
            let items: Vec<&RawValue> = serde_json::from_str(text)?;
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                canonical(item, out)?;
            }
            out.push(b']');
        }
        Some(b'"') => {
            let s: std::borrow::Cow<'_, str> = serde_json::from_str(text)?;
            serde_json::to_writer(&mut *out, &s)?;
        }
        // Numbers, true, false, null: exactly as written (RawValue holds no
        // surrounding whitespace).
        _ => out.extend_from_slice(text.as_bytes()),
    }
    Ok(())
}

/// An object's entries in document order.
struct Object<'a>(Vec<(String, &'a RawValue)>);

impl<'de> serde::Deserialize<'de> for Object<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Entries;
        impl<'de> serde::de::Visitor<'de> for Entries {
            type Value = Object<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Self::Value, A::Error> {
                let mut entries = Vec::new();
                while let Some(key) = map.next_key::<String>()? {
                    entries.push((key, map.next_value::<&'de RawValue>()?));
                }
                Ok(Object(entries))
            }
        }
        deserializer.deserialize_map(Entries)
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
        let raw: &RawValue = serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}"));
        let mut out = Vec::new();
        canonical(raw, &mut out).unwrap_or_else(|e| panic!("{e}"));
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
        let alice: &[(&str, &[u8])] = &[("authorization", b"Bearer sk-alice")];
        let bob: &[(&str, &[u8])] = &[("authorization", b"Bearer sk-bob")];
        let a = key_of(body, Scope::Credential(alice));
        assert_eq!(a, key_of(body, Scope::Credential(alice)));
        assert_ne!(a, key_of(body, Scope::Credential(bob)));
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
