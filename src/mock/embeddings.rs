//! `POST /v1/embeddings`: one deterministic unit vector per input (a string, a list of
//! strings, a token list or a list of token lists), `dimensions` long (default 8, small
//! for speed), as float arrays or, with `encoding_format: "base64"`, as base64 of the
//! little-endian f32 bytes (what the official Python SDK asks for by default).

use std::borrow::Cow;

use http::Response;
use serde::{Deserialize, Serialize};

use super::body::MockBody;
use super::reply::{self, ApiError};
use super::synth::{self, DEFAULT_MODEL, Fnv};

/// Vector length when the request gives no `dimensions`.
pub(crate) const DEFAULT_DIMENSIONS: u64 = 8;
/// Largest `dimensions` accepted.
pub(crate) const MAX_DIMENSIONS: u64 = 8192;
/// Largest number of inputs per request, as OpenAI.
pub(crate) const MAX_INPUTS: usize = 2048;

#[derive(Deserialize)]
struct EmbeddingRequest<'a> {
    #[serde(default, borrow)]
    model: Option<Cow<'a, str>>,
    #[serde(default)]
    input: Option<Input>,
    #[serde(default)]
    dimensions: Option<u64>,
    #[serde(default, borrow)]
    encoding_format: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Input {
    Text(String),
    Texts(Vec<String>),
    Tokens(Vec<u64>),
    TokenLists(Vec<Vec<u64>>),
}

/// One input's hash and rough token count.
struct Item {
    seed: u64,
    tokens: u32,
}

impl Input {
    fn items(&self) -> Vec<Item> {
        fn text(s: &str) -> Item {
            Item {
                seed: synth::fnv1a64(s.as_bytes()),
                tokens: synth::tokens_for_len(s.len()),
            }
        }
        fn tokens(t: &[u64]) -> Item {
            let mut h = Fnv::new();
            // A marker so a token list never hashes like a string of the same bytes.
            h.update(b"tokens:");
            t.iter().for_each(|x| h.update(&x.to_le_bytes()));
            Item {
                seed: h.finish(),
                tokens: u32::try_from(t.len()).unwrap_or(u32::MAX),
            }
        }
        match self {
            Self::Text(s) => vec![text(s)],
            Self::Texts(v) => v.iter().map(|s| text(s)).collect(),
            Self::Tokens(t) => vec![tokens(t)],
            Self::TokenLists(v) => v.iter().map(|t| tokens(t)).collect(),
        }
    }

    fn is_empty(&self) -> bool {
        match self {
            Self::Text(s) => s.is_empty(),
            Self::Texts(v) => v.is_empty() || v.iter().any(String::is_empty),
            Self::Tokens(t) => t.is_empty(),
            Self::TokenLists(v) => v.is_empty() || v.iter().any(Vec::is_empty),
        }
    }
}

#[derive(Serialize)]
struct EmbeddingList<'a> {
    object: &'static str,
    data: Vec<Embedding>,
    model: &'a str,
    usage: Usage,
}

#[derive(Serialize)]
struct Embedding {
    object: &'static str,
    index: usize,
    embedding: Vector,
}

#[derive(Serialize)]
#[serde(untagged)]
enum Vector {
    Float(Vec<f32>),
    Base64(String),
}

#[derive(Serialize)]
struct Usage {
    prompt_tokens: u32,
    total_tokens: u32,
}

/// Answers an embeddings request.
pub(crate) fn handle(body: &[u8]) -> Result<Response<MockBody>, ApiError> {
    let req: EmbeddingRequest<'_> = reply::parse_object(body)?;
    let model = req.model.as_deref().unwrap_or(DEFAULT_MODEL);
    let input = req.input.ok_or_else(|| {
        ApiError::invalid_request("'input' is a required property", Some("input"))
    })?;
    if input.is_empty() {
        return Err(ApiError::invalid_request(
            "'$.input' is invalid: inputs must be non-empty",
            Some("input"),
        ));
    }
    let items = input.items();
    if items.len() > MAX_INPUTS {
        return Err(ApiError::invalid_request(
            format!("'$.input' is invalid: at most {MAX_INPUTS} inputs per request"),
            Some("input"),
        ));
    }
    let dims = req.dimensions.unwrap_or(DEFAULT_DIMENSIONS);
    if !(1..=MAX_DIMENSIONS).contains(&dims) {
        return Err(ApiError::invalid_request(
            format!("{dims} is not a valid 'dimensions': expected 1 to {MAX_DIMENSIONS}"),
            Some("dimensions"),
        ));
    }
    // Bounded by MAX_DIMENSIONS above.
    let dims = dims as usize;
    let base64 = match req.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(ApiError::invalid_request(
                format!("'{other}' is not one of ['float', 'base64'] - 'encoding_format'"),
                Some("encoding_format"),
            ));
        }
    };
    let prompt_tokens = items.iter().map(|i| i.tokens).sum::<u32>();
    let data = items
        .iter()
        .enumerate()
        .map(|(index, item)| {
            let v = synth::embedding(item.seed, dims);
            Embedding {
                object: "embedding",
                index,
                embedding: if base64 {
                    Vector::Base64(synth::embedding_base64(&v))
                } else {
                    Vector::Float(v)
                },
            }
        })
        .collect();
    reply::json(&EmbeddingList {
        object: "list",
        data,
        model,
        usage: Usage {
            prompt_tokens,
            total_tokens: prompt_tokens,
        },
    })
}
