//! Sending requests and reading the prompt-token headers, for the token
//! budget and pass-through tests.

use serde_json::Value;
use sluice::openai::{ApiRequest, Endpoint};
use sluice::tokens::{Counter, Encoding, prompt};

use super::{Harness, http};

/// POSTs `body` as JSON to `path` with the extra `headers`.
pub async fn send(
    h: &Harness,
    path: &str,
    body: &Value,
    headers: &[(&str, &str)],
) -> reqwest::Response {
    let mut request = http().post(h.url(path)).json(body);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.unwrap()
}

/// A numeric header of the answer, if there is one.
pub fn header(response: &reqwest::Response, name: &str) -> Option<u64> {
    response.headers().get(name)?.to_str().ok()?.parse().ok()
}

/// The prompt tokens of `body` as sluice counts them (o200k_base).
pub fn count(endpoint: Endpoint, body: &Value) -> u64 {
    let api = ApiRequest::parse(endpoint, serde_json::to_vec(body).unwrap().into()).unwrap();
    prompt::request(&Counter::new(Encoding::O200kBase), &api)
}

/// The answer's `x-sluice-prompt-tokens-original` and `-sent`.
pub fn counts(response: &reqwest::Response) -> (u64, u64) {
    (
        header(response, "x-sluice-prompt-tokens-original").unwrap(),
        header(response, "x-sluice-prompt-tokens-sent").unwrap(),
    )
}
