//! Shared pieces of the end-to-end tests: a mock upstream on a free port,
//! sluice in front of it on another, and clients pointed at sluice.

#![allow(dead_code, reason = "each test binary uses a different subset")]
#![expect(clippy::unwrap_used, reason = "tests fail loudly on unexpected errors")]

pub mod hostile;
pub mod net;
pub mod postgres;
pub mod prompt;
pub mod redis;

use std::future::Future;
use std::time::Duration;

use async_openai::Client;
use async_openai::config::OpenAIConfig;
use async_openai::types::chat::{CreateChatCompletionRequest, CreateChatCompletionStreamResponse};
use futures_util::StreamExt;
use serde_json::{Value, json};
use sluice::config::Config;
use sluice::mock::{MockOptions, MockUpstream};
use sluice::server::Running;

pub struct Harness {
    pub mock: MockUpstream,
    pub sluice: Running,
}

impl Harness {
    /// A mock upstream (recording requests) and sluice in front of it.
    pub async fn start() -> Harness {
        Harness::start_with(MockOptions::default(), |_| {}).await
    }

    pub async fn start_with(mut opts: MockOptions, tweak: impl FnOnce(&mut Config)) -> Harness {
        opts.record = true;
        let mock = MockUpstream::start(opts).await.unwrap();
        let mut config = config_for(&mock.base_url());
        tweak(&mut config);
        let sluice = sluice::server::start(config).await.unwrap();
        Harness { mock, sluice }
    }

    /// `http://ADDR` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.sluice.addr())
    }

    pub fn sdk(&self) -> Client<OpenAIConfig> {
        sdk(&self.sluice.base_url())
    }

    /// POSTs `body` as JSON to sluice's `path`.
    pub async fn post(&self, path: &str, body: &Value) -> reqwest::Response {
        http().post(self.url(path)).json(body).send().await.unwrap()
    }

    /// A chat completion through the SDK: the first choice's content.
    pub async fn sdk_chat(&self, request: &Value) -> String {
        let answer = self
            .sdk()
            .chat()
            .create(from_json::<CreateChatCompletionRequest>(request.clone()))
            .await
            .unwrap();
        answer.choices[0].message.content.clone().unwrap()
    }

    /// A streamed chat completion through the SDK: the content of the first
    /// choice's deltas joined, how many chunks came, whether one had usage.
    pub async fn sdk_chat_stream(&self, request: &Value) -> (String, usize, bool) {
        let chunks: Vec<CreateChatCompletionStreamResponse> = self
            .sdk()
            .chat()
            .create_stream(from_json(request.clone()))
            .await
            .unwrap()
            .map(Result::unwrap)
            .collect()
            .await;
        let text = chunks
            .iter()
            .filter_map(|c| c.choices.first()?.delta.content.clone())
            .collect();
        let usage = chunks.iter().any(|c| c.usage.is_some());
        (text, chunks.len(), usage)
    }

    /// The last request the mock received on `path`.
    pub fn last_upstream_request(&self, path: &str) -> sluice::mock::RecordedRequest {
        self.mock
            .requests()
            .into_iter()
            .rev()
            .find(|r| r.path_and_query.starts_with(path))
            .unwrap_or_else(|| panic!("no upstream request on {path}"))
    }
}

/// A config that listens on a free port and forwards to `base_url`, without
/// pre-warming (so upstream request counts are exact).
pub fn config_for(base_url: &str) -> Config {
    let mut config = Config::default();
    config.server.listen = "127.0.0.1:0".parse().unwrap();
    config.upstreams[0].base_url = base_url.to_owned();
    config.upstreams[0].prewarm = 0;
    config
}

pub fn install_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

pub fn http() -> reqwest::Client {
    install_crypto();
    reqwest::Client::builder().build().unwrap()
}

pub fn sdk(base_url: &str) -> Client<OpenAIConfig> {
    install_crypto();
    Client::with_config(
        OpenAIConfig::new()
            .with_api_base(base_url)
            .with_api_key("sk-client"),
    )
}

pub fn chat(prompt: &str) -> Value {
    json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": prompt}]})
}

/// A streamed chat request.
pub fn chat_stream(prompt: &str) -> Value {
    let mut request = chat(prompt);
    request["stream"] = json!(true);
    request
}

pub fn from_json<T: serde::de::DeserializeOwned>(v: Value) -> T {
    serde_json::from_value(v).unwrap()
}

/// The `data:` payloads of an SSE body, `[DONE]` included.
pub fn sse_data(body: &str) -> Vec<String> {
    body.split("\n\n")
        .filter_map(|event| event.lines().find_map(|l| l.strip_prefix("data: ")))
        .map(str::to_owned)
        .collect()
}

/// Asserts an OpenAI-shaped error body and returns its `error` object.
pub async fn error_of(response: reqwest::Response) -> Value {
    assert!(
        response.headers().contains_key("x-request-id"),
        "error without x-request-id"
    );
    let body: Value = response.json().await.unwrap();
    let error = body["error"].clone();
    assert!(
        error["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    assert!(error["type"].is_string(), "{body}");
    assert!(error.get("param").is_some_and(Value::is_null), "{body}");
    assert!(error.get("code").is_some(), "{body}");
    error
}

/// Polls `check` until it holds or `deadline` passes.
pub async fn eventually<F, Fut>(deadline: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let until = tokio::time::Instant::now() + deadline;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= until {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The `/metrics` text of sluice at `base` (`http://ADDR`).
pub async fn metrics_text(base: &str) -> String {
    http()
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The value of the first `/metrics` line of sluice at `base` (`http://ADDR`)
/// that starts with `series` (a name, or a name with labels), if any.
pub async fn metric(base: &str, series: &str) -> Option<f64> {
    metrics_text(base)
        .await
        .lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| {
            l.strip_prefix(series)
                .is_some_and(|rest| rest.starts_with([' ', '{']) || series.ends_with('}'))
        })
        .and_then(|l| l.split_whitespace().last()?.parse().ok())
}

/// The child's stderr, line by line, on a channel (read on a thread of its
/// own, so the child never blocks on a full pipe).
pub fn stderr_lines(child: &mut std::process::Child) -> std::sync::mpsc::Receiver<String> {
    use std::io::BufRead;
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

/// The client's exact bytes, sent to `url`; the status, content type and
/// body that came back.
pub async fn raw_post(url: &str, body: &'static str) -> (u16, String, bytes::Bytes) {
    let response = http()
        .post(url)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    (status, content_type, response.bytes().await.unwrap())
}
