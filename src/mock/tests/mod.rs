//! The mock driven over real sockets by async-openai (the Rust OpenAI SDK) and by
//! plain HTTP clients.

#![expect(clippy::unwrap_used, reason = "tests fail loudly on unexpected errors")]

use async_openai::Client;
use async_openai::config::OpenAIConfig;
use serde_json::{Value, json};

use super::*;

mod chat;
mod endpoints;
mod faults;
mod server;

pub(super) fn install_crypto() {
    // reqwest is built without a default TLS provider; plain http needs none, but the
    // client builder still asks for one.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

pub(super) fn sdk(mock: &MockUpstream) -> Client<OpenAIConfig> {
    install_crypto();
    Client::with_config(
        OpenAIConfig::new()
            .with_api_base(mock.base_url())
            .with_api_key("sk-test"),
    )
}

pub(super) fn http() -> reqwest::Client {
    install_crypto();
    reqwest::Client::new()
}

/// A client speaking HTTP/2 without TLS (prior knowledge), as h2c upstreams are reached.
pub(super) fn h2c() -> reqwest::Client {
    install_crypto();
    reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap()
}

pub(super) async fn start(opts: MockOptions) -> MockUpstream {
    MockUpstream::start(opts).await.unwrap()
}

pub(super) async fn post(
    mock: &MockUpstream,
    path: &str,
    body: impl Into<reqwest::Body>,
    headers: &[(&str, &str)],
) -> reqwest::Response {
    let mut req = http()
        .post(format!("http://{}{path}", mock.addr()))
        .header("content-type", "application/json")
        .body(body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.send().await.unwrap()
}

pub(super) async fn post_json(
    mock: &MockUpstream,
    path: &str,
    body: &Value,
) -> (reqwest::StatusCode, Value) {
    let resp = post(mock, path, body.to_string(), &[]).await;
    let status = resp.status();
    (status, resp.json().await.unwrap())
}

pub(super) fn chat_request(prompt: &str) -> Value {
    json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": prompt}]})
}

pub(super) fn from_json<T: serde::de::DeserializeOwned>(v: Value) -> T {
    serde_json::from_value(v).unwrap()
}

/// The `data:` payloads of an SSE body, `[DONE]` included.
pub(super) fn sse_data(body: &str) -> Vec<&str> {
    body.split("\n\n")
        .filter_map(|event| event.lines().find_map(|l| l.strip_prefix("data: ")))
        .collect()
}
