//! The mock driven over real sockets by the official-shape Rust SDK (async-openai) and
//! by plain HTTP clients.

#![expect(clippy::unwrap_used, reason = "tests fail loudly on unexpected errors")]

use std::time::{Duration, Instant};

use async_openai::Client;
use async_openai::config::OpenAIConfig;
use async_openai::types::chat::{
    CreateChatCompletionRequest, CreateChatCompletionStreamResponse, FinishReason, Role,
};
use async_openai::types::completions::CreateCompletionRequest;
use async_openai::types::embeddings::CreateEmbeddingRequest;
use async_openai::types::responses::{
    CreateResponse, OutputItem, OutputMessageContent, Response, ResponseStreamEvent, Status,
};
use bytes::Bytes;
use futures_util::StreamExt;
use serde_json::{Value, json};

use super::synth::fnv1a64;
use super::*;

fn install_crypto() {
    // reqwest is built without a default TLS provider; plain http needs none, but the
    // client builder still asks for one.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn sdk(mock: &MockUpstream) -> Client<OpenAIConfig> {
    install_crypto();
    Client::with_config(
        OpenAIConfig::new()
            .with_api_base(mock.base_url())
            .with_api_key("sk-test"),
    )
}

fn http() -> reqwest::Client {
    install_crypto();
    reqwest::Client::new()
}

async fn start(opts: MockOptions) -> MockUpstream {
    MockUpstream::start(opts).await.unwrap()
}

async fn post(
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

async fn post_json(mock: &MockUpstream, path: &str, body: &Value) -> (reqwest::StatusCode, Value) {
    let resp = post(mock, path, body.to_string(), &[]).await;
    let status = resp.status();
    (status, resp.json().await.unwrap())
}

fn chat_request(prompt: &str) -> Value {
    json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": prompt}]})
}

fn from_json<T: serde::de::DeserializeOwned>(v: Value) -> T {
    serde_json::from_value(v).unwrap()
}

/// The `data:` payloads of an SSE body, `[DONE]` included.
fn sse_data(body: &str) -> Vec<&str> {
    body.split("\n\n")
        .filter_map(|event| event.lines().find_map(|l| l.strip_prefix("data: ")))
        .collect()
}

#[tokio::test]
async fn chat_plain_parsed_by_sdk() {
    let mock = start(MockOptions::default()).await;
    let client = sdk(&mock);
    let resp = client
        .chat()
        .create(from_json::<CreateChatCompletionRequest>(chat_request(
            "Say hi",
        )))
        .await
        .unwrap();
    assert!(resp.id.starts_with("chatcmpl-"), "{}", resp.id);
    assert_eq!(resp.object, "chat.completion");
    assert_eq!(resp.model, "gpt-4o-mini");
    assert_eq!(resp.choices.len(), 1);
    let choice = &resp.choices[0];
    assert_eq!(choice.index, 0);
    assert_eq!(choice.message.role, Role::Assistant);
    assert_eq!(choice.finish_reason, Some(FinishReason::Stop));
    let content = choice.message.content.clone().unwrap();
    assert!(content.starts_with("Mock answer #"), "{content}");
    let usage = resp.usage.unwrap();
    assert!(usage.prompt_tokens > 0 && usage.completion_tokens > 0);
    assert_eq!(
        usage.total_tokens,
        usage.prompt_tokens + usage.completion_tokens
    );

    let other = client
        .chat()
        .create(from_json::<CreateChatCompletionRequest>(chat_request(
            "Say bye",
        )))
        .await
        .unwrap();
    assert_ne!(
        other.choices[0].message.content.as_deref(),
        Some(content.as_str())
    );
}

#[tokio::test]
async fn chat_stream_concatenates_to_plain_answer() {
    let mock = start(MockOptions::default()).await;
    let client = sdk(&mock);
    let plain = client
        .chat()
        .create(from_json::<CreateChatCompletionRequest>(chat_request(
            "Tell a story",
        )))
        .await
        .unwrap();
    let plain_content = plain.choices[0].message.content.clone().unwrap();

    let mut request = chat_request("Tell a story");
    request["stream"] = json!(true);
    let chunks: Vec<CreateChatCompletionStreamResponse> = client
        .chat()
        .create_stream(from_json(request))
        .await
        .unwrap()
        .map(Result::unwrap)
        .collect()
        .await;
    // Role chunk, 8 content chunks, finish chunk.
    assert_eq!(chunks.len(), 10);
    assert_eq!(chunks[0].choices[0].delta.role, Some(Role::Assistant));
    assert_eq!(chunks[0].choices[0].delta.content.as_deref(), Some(""));
    assert!(chunks.iter().all(|c| c.object == "chat.completion.chunk"));
    assert!(
        chunks
            .iter()
            .all(|c| c.id == chunks[0].id && c.usage.is_none())
    );
    let streamed: String = chunks
        .iter()
        .flat_map(|c| c.choices.iter())
        .filter_map(|c| c.delta.content.as_deref())
        .collect();
    assert_eq!(streamed, plain_content);
    let last = chunks.last().unwrap();
    assert_eq!(last.choices[0].finish_reason, Some(FinishReason::Stop));
    assert!(last.choices[0].delta.content.is_none());
}

#[tokio::test]
async fn chunk_delay_spaces_events() {
    let mock = start(MockOptions {
        chunks: 5,
        chunk_delay: Duration::from_millis(100),
        ..MockOptions::default()
    })
    .await;
    let mut request = chat_request("slowly");
    request["stream"] = json!(true);
    let resp = post(&mock, "/v1/chat/completions", request.to_string(), &[]).await;
    assert_eq!(resp.status(), 200);
    let mut stream = resp.bytes_stream();
    let mut arrivals = Vec::new();
    let mut body = String::new();
    while let Some(bytes) = stream.next().await {
        let bytes = bytes.unwrap();
        let text = std::str::from_utf8(&bytes).unwrap();
        for _ in 0..text.matches("data: ").count() {
            arrivals.push(Instant::now());
        }
        body.push_str(text);
    }
    // Role, 5 content chunks, finish, [DONE].
    assert_eq!(sse_data(&body).len(), 8);
    assert_eq!(arrivals.len(), 8);
    let spread = *arrivals.last().unwrap() - arrivals[0];
    assert!(spread >= Duration::from_millis(300), "spread {spread:?}");
}

#[tokio::test]
async fn header_controls_override_options() {
    let mock = start(MockOptions::default()).await;
    let mut request = chat_request("controlled");
    request["stream"] = json!(true);
    let started = Instant::now();
    let resp = post(
        &mock,
        "/v1/chat/completions",
        request.to_string(),
        &[
            ("x-mock-latency-ms", "150"),
            ("x-mock-chunks", "3"),
            ("x-mock-chunk-delay-ms", "50"),
        ],
    )
    .await;
    assert!(started.elapsed() >= Duration::from_millis(150));
    let body = resp.text().await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(300));
    // Role, 3 content chunks, finish, [DONE].
    assert_eq!(sse_data(&body).len(), 6);

    let bad = post(
        &mock,
        "/v1/chat/completions",
        "{}",
        &[("x-mock-chunks", "zero")],
    )
    .await;
    assert_eq!(bad.status(), 400);
    let err: Value = bad.json().await.unwrap();
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("x-mock-chunks")
    );
}

#[tokio::test]
async fn include_usage_adds_final_usage_chunk() {
    let mock = start(MockOptions::default()).await;
    let mut request = chat_request("count me");
    request["stream"] = json!(true);
    request["stream_options"] = json!({"include_usage": true});
    let chunks: Vec<CreateChatCompletionStreamResponse> = sdk(&mock)
        .chat()
        .create_stream(from_json(request.clone()))
        .await
        .unwrap()
        .map(Result::unwrap)
        .collect()
        .await;
    let (last, rest) = chunks.split_last().unwrap();
    assert!(last.choices.is_empty());
    let usage = last.usage.clone().unwrap();
    assert_eq!(
        usage.total_tokens,
        usage.prompt_tokens + usage.completion_tokens
    );
    assert!(
        rest.iter()
            .all(|c| c.usage.is_none() && c.choices.len() == 1)
    );

    // OpenAI sends `"usage": null` on every other chunk when usage was asked for.
    let body = post(&mock, "/v1/chat/completions", request.to_string(), &[])
        .await
        .text()
        .await
        .unwrap();
    let events = sse_data(&body);
    assert_eq!(events.last(), Some(&"[DONE]"));
    for event in &events[..events.len() - 2] {
        let v: Value = serde_json::from_str(event).unwrap();
        assert_eq!(v.get("usage"), Some(&Value::Null), "{event}");
    }
}

#[tokio::test]
async fn n_choices_and_length_truncation() {
    let mock = start(MockOptions::default()).await;
    let mut request = chat_request("many");
    request["n"] = json!(3);
    let resp = sdk(&mock)
        .chat()
        .create(from_json::<CreateChatCompletionRequest>(request.clone()))
        .await
        .unwrap();
    assert_eq!(resp.choices.len(), 3);
    let contents: Vec<_> = resp
        .choices
        .iter()
        .map(|c| c.message.content.clone())
        .collect();
    assert_ne!(contents[0], contents[1]);
    assert_ne!(contents[1], contents[2]);
    assert!(
        resp.choices
            .iter()
            .enumerate()
            .all(|(i, c)| c.index as usize == i)
    );

    request["max_tokens"] = json!(3);
    let cut = sdk(&mock)
        .chat()
        .create(from_json::<CreateChatCompletionRequest>(request.clone()))
        .await
        .unwrap();
    assert!(
        cut.choices
            .iter()
            .all(|c| c.finish_reason == Some(FinishReason::Length))
    );
    assert!(
        cut.choices
            .iter()
            .all(|c| c.message.content.as_deref().unwrap().len() <= 12)
    );
    assert_eq!(cut.usage.unwrap().completion_tokens, 9);

    request["n"] = json!(0);
    let (status, body) = post_json(&mock, "/v1/chat/completions", &request).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["param"], "n");
}

#[tokio::test]
async fn completions_plain_and_streamed() {
    let mock = start(MockOptions::default()).await;
    let client = sdk(&mock);
    let request = json!({"model": "gpt-3.5-turbo-instruct", "prompt": "Once upon a time"});
    let plain = client
        .completions()
        .create(from_json::<CreateCompletionRequest>(request.clone()))
        .await
        .unwrap();
    assert_eq!(plain.object, "text_completion");
    assert_eq!(plain.model, "gpt-3.5-turbo-instruct");
    assert!(plain.id.starts_with("cmpl-"));
    let text = plain.choices[0].text.clone();
    assert!(text.starts_with("Mock answer #"));
    assert!(plain.usage.is_some());

    let mut streamed_request = request;
    streamed_request["stream"] = json!(true);
    streamed_request["stream_options"] = json!({"include_usage": true});
    let chunks: Vec<_> = client
        .completions()
        .create_stream(from_json(streamed_request))
        .await
        .unwrap()
        .map(Result::unwrap)
        .collect()
        .await;
    // 8 text chunks, finish chunk, usage chunk.
    assert_eq!(chunks.len(), 10);
    let streamed: String = chunks
        .iter()
        .flat_map(|c| c.choices.iter())
        .map(|c| c.text.as_str())
        .collect();
    assert_eq!(streamed, text);
    assert!(chunks.iter().all(|c| c.object == "text_completion"));
    let last = chunks.last().unwrap();
    assert!(last.choices.is_empty());
    assert_eq!(last.usage, plain.usage);
    assert!(chunks[8].choices[0].finish_reason.is_some());
}

#[tokio::test]
async fn embeddings_float_and_base64_agree() {
    let mock = start(MockOptions::default()).await;
    let client = sdk(&mock);
    let request = json!({"model": "text-embedding-3-small", "input": ["alpha", "beta", "alpha"]});
    let floats = client
        .embeddings()
        .create(from_json::<CreateEmbeddingRequest>(request.clone()))
        .await
        .unwrap();
    assert_eq!(floats.object, "list");
    assert_eq!(floats.model, "text-embedding-3-small");
    assert_eq!(floats.data.len(), 3);
    for (i, e) in floats.data.iter().enumerate() {
        assert_eq!(e.index as usize, i);
        assert_eq!(e.embedding.len(), 8);
        let norm: f32 = e.embedding.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "norm {norm}");
    }
    assert_eq!(floats.data[0].embedding, floats.data[2].embedding);
    assert_ne!(floats.data[0].embedding, floats.data[1].embedding);
    assert!(floats.usage.prompt_tokens > 0);
    assert_eq!(floats.usage.total_tokens, floats.usage.prompt_tokens);

    let mut b64_request = request;
    b64_request["encoding_format"] = json!("base64");
    let b64 = client
        .embeddings()
        .create_base64(from_json::<CreateEmbeddingRequest>(b64_request))
        .await
        .unwrap();
    assert_eq!(b64.data.len(), 3);
    for (float, encoded) in floats.data.iter().zip(b64.data) {
        assert_eq!(encoded.index, float.index);
        let decoded: Vec<f32> = encoded.embedding.into();
        assert_eq!(decoded.len(), float.embedding.len());
        for (a, b) in decoded.iter().zip(&float.embedding) {
            assert!((a - b).abs() <= 1e-7, "{a} vs {b}");
        }
    }
}

#[tokio::test]
async fn embeddings_dimensions_and_input_forms() {
    let mock = start(MockOptions::default()).await;
    let embed = |input: Value, dims: Option<u64>| {
        let mut body = json!({"model": "text-embedding-3-small", "input": input});
        if let Some(d) = dims {
            body["dimensions"] = json!(d);
        }
        let mock = &mock;
        async move { post_json(mock, "/v1/embeddings", &body).await }
    };
    let (status, one) = embed(json!("solo"), Some(32)).await;
    assert_eq!(status, 200);
    assert_eq!(one["data"].as_array().unwrap().len(), 1);
    assert_eq!(one["data"][0]["embedding"].as_array().unwrap().len(), 32);
    assert_eq!(one["data"][0]["object"], "embedding");

    let (_, listed) = embed(json!(["a", "b", "c", "d"]), None).await;
    let indices: Vec<u64> = listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["index"].as_u64().unwrap())
        .collect();
    assert_eq!(indices, [0, 1, 2, 3]);
    // Each input's vector does not depend on its position or neighbours.
    let (_, single_c) = embed(json!("c"), None).await;
    assert_eq!(
        listed["data"][2]["embedding"],
        single_c["data"][0]["embedding"]
    );

    let (status, tokens) = embed(json!([1, 2, 3]), None).await;
    assert_eq!(status, 200);
    assert_eq!(tokens["data"].as_array().unwrap().len(), 1);
    assert_eq!(tokens["usage"]["prompt_tokens"], 3);
    let (status, token_lists) = embed(json!([[1, 2], [3]]), None).await;
    assert_eq!(status, 200);
    assert_eq!(token_lists["data"].as_array().unwrap().len(), 2);

    for (input, dims) in [
        (json!([]), None),
        (json!("x"), Some(0)),
        (json!({"a": 1}), None),
    ] {
        let (status, err) = embed(input.clone(), dims).await;
        assert_eq!(status, 400, "{input} {dims:?}");
        assert_eq!(err["error"]["type"], "invalid_request_error");
    }
}

fn response_text(resp: &Response) -> String {
    resp.output
        .iter()
        .filter_map(|item| match item {
            OutputItem::Message(m) => Some(m),
            _ => None,
        })
        .flat_map(|m| m.content.iter())
        .filter_map(|c| match c {
            OutputMessageContent::OutputText(t) => Some(t.text.as_str()),
            OutputMessageContent::Refusal(_) => None,
        })
        .collect()
}

#[tokio::test]
async fn responses_plain_and_streamed() {
    let mock = start(MockOptions::default()).await;
    let client = sdk(&mock);
    let request = json!({
        "model": "gpt-4.1-mini",
        "instructions": "Be brief.",
        "input": [{"role": "user", "content": "Hello there"}],
        "temperature": 0.5,
    });
    let plain = client
        .responses()
        .create(from_json::<CreateResponse>(request.clone()))
        .await
        .unwrap();
    assert!(plain.id.starts_with("resp_"));
    assert_eq!(plain.object, "response");
    assert_eq!(plain.status, Status::Completed);
    assert_eq!(plain.model, "gpt-4.1-mini");
    assert_eq!(plain.temperature, Some(0.5));
    let text = response_text(&plain);
    assert!(text.starts_with("Mock answer #"), "{text}");
    let usage = plain.usage.clone().unwrap();
    assert_eq!(usage.total_tokens, usage.input_tokens + usage.output_tokens);

    let events: Vec<ResponseStreamEvent> = client
        .responses()
        .create_stream(from_json(request))
        .await
        .unwrap()
        .map(Result::unwrap)
        .collect()
        .await;
    // created, in_progress, item added, part added, 8 deltas, text done, part done,
    // item done, completed.
    assert_eq!(events.len(), 16);
    let mut deltas = String::new();
    let mut kinds = Vec::new();
    for event in &events {
        let v = serde_json::to_value(event).unwrap();
        kinds.push(v["type"].as_str().unwrap().to_owned());
        if let ResponseStreamEvent::ResponseOutputTextDelta(d) = event {
            deltas.push_str(&d.delta);
        }
    }
    assert_eq!(deltas, text);
    assert_eq!(kinds[0], "response.created");
    assert_eq!(kinds[1], "response.in_progress");
    assert_eq!(kinds[2], "response.output_item.added");
    assert_eq!(kinds[3], "response.content_part.added");
    assert!(
        kinds[4..12]
            .iter()
            .all(|k| k == "response.output_text.delta")
    );
    assert_eq!(
        kinds[12..],
        [
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.completed"
        ]
    );
    let ResponseStreamEvent::ResponseCompleted(done) = events.last().unwrap() else {
        panic!("last event is not response.completed");
    };
    assert_eq!(done.sequence_number, 15);
    assert_eq!(response_text(&done.response), text);
    assert_eq!(done.response.status, Status::Completed);
}

#[tokio::test]
async fn responses_stream_frames_named_events() {
    let mock = start(MockOptions::default()).await;
    let body = post(
        &mock,
        "/v1/responses",
        json!({"model": "gpt-4o", "input": "hi", "stream": true}).to_string(),
        &[],
    )
    .await
    .text()
    .await
    .unwrap();
    let events: Vec<&str> = body.split_terminator("\n\n").collect();
    assert_eq!(events.len(), 16);
    for (sequence, event) in events.into_iter().enumerate() {
        let mut lines = event.lines();
        let name = lines.next().unwrap().strip_prefix("event: ").unwrap();
        let data: Value =
            serde_json::from_str(lines.next().unwrap().strip_prefix("data: ").unwrap()).unwrap();
        assert_eq!(data["type"], name);
        assert_eq!(data["sequence_number"], sequence);
    }
    assert!(!body.contains("[DONE]"));

    let cut = post(
        &mock,
        "/v1/responses",
        json!({"model": "gpt-4o", "input": "hi", "max_output_tokens": 2}).to_string(),
        &[],
    )
    .await;
    let cut: Response = cut.json().await.unwrap();
    assert_eq!(cut.status, Status::Incomplete);
    assert_eq!(response_text(&cut).len(), 8);
}

#[tokio::test]
async fn models_list_and_retrieve() {
    let mock = start(MockOptions::default()).await;
    let client = sdk(&mock);
    let list = client.models().list().await.unwrap();
    assert_eq!(list.object, "list");
    let ids: Vec<_> = list.data.iter().map(|m| m.id.as_str()).collect();
    for id in ["gpt-4o-mini", "gpt-4o", "text-embedding-3-small"] {
        assert!(ids.contains(&id), "{id} missing from {ids:?}");
    }
    let model = client.models().retrieve("gpt-4o").await.unwrap();
    assert_eq!(model.id, "gpt-4o");
    assert_eq!(model.object, "model");
}

#[tokio::test]
async fn echo_streams_chunked_upload() {
    let mock = start(MockOptions::default()).await;
    const CHUNK: usize = 64 * 1024;
    const CHUNKS: usize = 320; // 20 MiB
    let chunk: Bytes = (0..CHUNK)
        .map(|i| (i % 251) as u8)
        .collect::<Vec<u8>>()
        .into();
    let mut expected = super::synth::Fnv::new();
    (0..CHUNKS).for_each(|_| expected.update(&chunk));
    let upload = futures_util::stream::iter(
        (0..CHUNKS).map(move |_| Ok::<_, std::io::Error>(chunk.clone())),
    );
    let resp = http()
        .post(format!("{}/files?purpose=batch", mock.base_url()))
        .header("x-custom", "one")
        .header("content-type", "application/octet-stream")
        .body(reqwest::Body::wrap_stream(upload))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let echo: Value = resp.json().await.unwrap();
    assert_eq!(echo["object"], "mock.echo");
    assert_eq!(echo["method"], "POST");
    assert_eq!(echo["path"], "/v1/files");
    assert_eq!(echo["query"], "purpose=batch");
    assert_eq!(echo["headers"]["x-custom"], "one");
    assert_eq!(echo["headers"]["transfer-encoding"], "chunked");
    assert_eq!(echo["body_bytes"], (CHUNK * CHUNKS) as u64);
    assert_eq!(echo["body_fnv1a64"], format!("{:016x}", expected.finish()));

    let get: Value = http()
        .get(format!("{}/batches/abc", mock.base_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(get["method"], "GET");
    assert_eq!(get["query"], Value::Null);
    assert_eq!(get["body_bytes"], 0);
    assert_eq!(get["body_fnv1a64"], format!("{:016x}", fnv1a64(b"")));
}

#[tokio::test]
async fn outside_v1_is_openai_404() {
    let mock = start(MockOptions::default()).await;
    let resp = http()
        .get(format!("http://{}/healthz", mock.addr()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    assert_eq!(resp.headers()["content-type"], "application/json");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["message"], "Invalid URL (GET /healthz)");
    assert_eq!(body["error"]["type"], "invalid_request_error");
    assert_eq!(body["error"]["param"], Value::Null);
    assert_eq!(body["error"]["code"], Value::Null);
}

#[tokio::test]
async fn bad_json_is_400_on_understood_endpoints() {
    let mock = start(MockOptions::default()).await;
    for path in [
        "/v1/chat/completions",
        "/v1/completions",
        "/v1/embeddings",
        "/v1/responses",
    ] {
        for body in ["{not json", "[1, 2]", "", r#"{"model": 5}"#] {
            let resp = post(&mock, path, body, &[]).await;
            assert_eq!(resp.status(), 400, "{path} {body:?}");
            let err: Value = resp.json().await.unwrap();
            assert_eq!(
                err["error"]["type"], "invalid_request_error",
                "{path} {body:?}"
            );
            assert_eq!(err["error"]["code"], Value::Null);
            assert!(
                err["error"]["message"]
                    .as_str()
                    .is_some_and(|m| !m.is_empty())
            );
        }
    }
}

#[tokio::test]
async fn injected_status_with_retry_after() {
    let mock = start(MockOptions::default()).await;
    let resp = post(
        &mock,
        "/v1/chat/completions",
        chat_request("x").to_string(),
        &[
            ("x-mock-status", "429"),
            ("x-mock-retry-after", "7"),
            ("x-request-id", "req-from-client"),
        ],
    )
    .await;
    assert_eq!(resp.status(), 429);
    assert_eq!(resp.headers()["retry-after"], "7");
    assert_eq!(resp.headers()["x-request-id"], "req-from-client");
    let err: Value = resp.json().await.unwrap();
    assert_eq!(err["error"]["type"], "rate_limit_error");
    assert_eq!(err["error"]["code"], "rate_limit_exceeded");

    let resp = post(&mock, "/v1/embeddings", "{}", &[("x-mock-status", "503")]).await;
    assert_eq!(resp.status(), 503);
    assert!(resp.headers().get("retry-after").is_none());
    let err: Value = resp.json().await.unwrap();
    assert_eq!(err["error"]["type"], "server_error");

    // Faults apply to echoed paths too.
    let resp = post(&mock, "/v1/files", "x", &[("x-mock-status", "400")]).await;
    assert_eq!(resp.status(), 400);
}

#[tokio::test]
async fn records_requests_and_counts() {
    let mock = start(MockOptions {
        record: true,
        ..MockOptions::default()
    })
    .await;
    let chat_body = chat_request("recorded").to_string();
    post(
        &mock,
        "/v1/chat/completions",
        chat_body.clone(),
        &[("x-test", "1")],
    )
    .await;
    let client = http();
    client
        .get(format!("{}/models?limit=2", mock.base_url()))
        .send()
        .await
        .unwrap();
    client
        .get(format!("http://{}/nowhere", mock.addr()))
        .send()
        .await
        .unwrap();
    assert_eq!(mock.request_count(), 3);
    let recorded = mock.requests();
    assert_eq!(recorded.len(), 3);
    assert_eq!(recorded[0].method, http::Method::POST);
    assert_eq!(recorded[0].path_and_query, "/v1/chat/completions");
    assert_eq!(recorded[0].headers["x-test"], "1");
    assert_eq!(recorded[0].body, chat_body.as_bytes());
    assert_eq!(recorded[1].path_and_query, "/v1/models?limit=2");
    assert_eq!(recorded[2].path_and_query, "/nowhere");
    // `post` used its own client: two connections; the second client reused its own.
    assert_eq!(mock.connection_count(), 2);

    let unrecorded = start(MockOptions::default()).await;
    post(&unrecorded, "/v1/files", "abc", &[]).await;
    assert_eq!(unrecorded.request_count(), 1);
    assert!(unrecorded.requests().is_empty());
}

#[tokio::test]
async fn same_request_same_bytes() {
    let mock = start(MockOptions::default()).await;
    let mut streamed = chat_request("repeat");
    streamed["stream"] = json!(true);
    let cases = [
        ("/v1/chat/completions", chat_request("repeat")),
        ("/v1/chat/completions", streamed),
        (
            "/v1/completions",
            json!({"model": "m", "prompt": "p", "stream": true}),
        ),
        ("/v1/embeddings", json!({"model": "m", "input": ["p", "q"]})),
        ("/v1/responses", json!({"model": "m", "input": "p"})),
        (
            "/v1/responses",
            json!({"model": "m", "input": "p", "stream": true}),
        ),
    ];
    for (path, body) in cases {
        let first = post(&mock, path, body.to_string(), &[])
            .await
            .bytes()
            .await
            .unwrap();
        let second = post(&mock, path, body.to_string(), &[])
            .await
            .bytes()
            .await
            .unwrap();
        assert!(!first.is_empty());
        assert_eq!(first, second, "{path} {body}");
    }
}

#[tokio::test]
async fn openai_response_headers() {
    let mock = start(MockOptions::default()).await;
    let resp = post(
        &mock,
        "/v1/chat/completions",
        chat_request("h").to_string(),
        &[],
    )
    .await;
    let headers = resp.headers();
    assert_eq!(headers["content-type"], "application/json");
    let id = headers["x-request-id"].to_str().unwrap();
    assert!(id.starts_with("req_") && id.len() == 36, "{id}");
    let ms = headers["openai-processing-ms"].to_str().unwrap();
    assert!(ms.parse::<u64>().is_ok(), "{ms}");

    let mut streamed = chat_request("h");
    streamed["stream"] = json!(true);
    let resp = post(
        &mock,
        "/v1/chat/completions",
        streamed.to_string(),
        &[("x-request-id", "abc-123")],
    )
    .await;
    assert_eq!(
        resp.headers()["content-type"],
        "text/event-stream; charset=utf-8"
    );
    assert_eq!(resp.headers()["x-request-id"], "abc-123");
}

#[tokio::test]
async fn serves_h2c() {
    let mock = start(MockOptions::default()).await;
    install_crypto();
    let client = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let mut streamed = chat_request("over h2");
    streamed["stream"] = json!(true);
    let resp = client
        .post(format!("{}/chat/completions", mock.base_url()))
        .body(streamed.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.version(), http::Version::HTTP_2);
    let body = resp.text().await.unwrap();
    assert_eq!(sse_data(&body).last(), Some(&"[DONE]"));
}

#[tokio::test]
async fn serve_stops_when_shutdown_resolves() {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve(listener, MockOptions::default(), async move {
        let _ = stopped.await;
    }));
    install_crypto();
    let resp = reqwest::get(format!("http://{addr}/v1/models"))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    stop.send(()).unwrap();
    let result = tokio::time::timeout(Duration::from_secs(10), server).await;
    assert!(matches!(result, Ok(Ok(Ok(())))), "{result:?}");
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn dropping_the_handle_stops_the_server() {
    let mock = start(MockOptions::default()).await;
    let addr = mock.addr();
    assert!(tokio::net::TcpStream::connect(addr).await.is_ok());
    drop(mock);
    let deadline = Instant::now() + Duration::from_secs(5);
    while tokio::net::TcpStream::connect(addr).await.is_ok() {
        assert!(Instant::now() < deadline, "still accepting after drop");
        tokio::task::yield_now().await;
    }
}
