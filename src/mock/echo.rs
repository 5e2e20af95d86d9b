//! Every other path under `/v1/` (files, batches, audio, …): a JSON description of what
//! arrived, so pass-through can be checked end to end. The body is counted and hashed
//! as it streams in, whatever its length or framing.

use std::collections::BTreeMap;

use http::Response;
use http::request::Parts;
use serde::Serialize;

use super::body::MockBody;
use super::reply::{self, ApiError};

/// Length and FNV-1a hash of a request body, measured while it was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BodyDigest {
    pub len: u64,
    pub fnv1a64: u64,
}

#[derive(Serialize)]
struct Echo<'a> {
    object: &'static str,
    method: &'a str,
    path: &'a str,
    query: Option<&'a str>,
    headers: BTreeMap<&'a str, String>,
    body_bytes: u64,
    body_fnv1a64: String,
}

/// Describes the request in `parts` whose body had `digest`.
pub(crate) fn handle(parts: &Parts, digest: BodyDigest) -> Result<Response<MockBody>, ApiError> {
    let mut headers: BTreeMap<&str, String> = BTreeMap::new();
    for (name, value) in &parts.headers {
        let value = String::from_utf8_lossy(value.as_bytes());
        headers
            .entry(name.as_str())
            .and_modify(|v| {
                v.push_str(", ");
                v.push_str(&value);
            })
            .or_insert_with(|| value.into_owned());
    }
    reply::json(&Echo {
        object: "mock.echo",
        method: parts.method.as_str(),
        path: parts.uri.path(),
        query: parts.uri.query(),
        headers,
        body_bytes: digest.len,
        body_fnv1a64: format!("{:016x}", digest.fnv1a64),
    })
}
