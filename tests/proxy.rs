//! Forwarding end to end: real SDK and raw HTTP clients -> sluice -> mock upstream.

#![expect(clippy::unwrap_used, reason = "tests fail loudly on unexpected errors")]

mod common;

use std::time::{Duration, Instant};

use async_openai::types::chat::CreateChatCompletionRequest;
use async_openai::types::completions::CreateCompletionRequest;
use async_openai::types::embeddings::CreateEmbeddingRequest;
use async_openai::types::responses::{CreateResponse, ResponseStreamEvent};
use common::{Harness, chat, from_json, http, sse_data};
use futures_util::StreamExt;
use serde_json::{Value, json};
use sluice::config::Secret;
use sluice::mock::MockOptions;

#[tokio::test]
async fn plain_chat_through_the_sdk() {
    let h = Harness::start().await;
    let answer = h
        .sdk()
        .chat()
        .create(from_json::<CreateChatCompletionRequest>(chat("Say hi")))
        .await
        .unwrap();
    let content = answer.choices[0].message.content.clone().unwrap();
    assert!(content.starts_with("Mock answer #"), "{content}");
    assert_eq!(answer.model, "gpt-4o-mini");
    assert_eq!(h.mock.request_count(), 1);
}

#[tokio::test]
async fn streamed_chat_through_the_sdk_matches_plain() {
    let h = Harness::start().await;
    let plain = h.sdk_chat(&chat("Tell a story")).await;
    let (streamed, chunks, _) = h
        .sdk_chat_stream(&common::chat_stream("Tell a story"))
        .await;
    assert!(chunks >= 3, "{chunks} chunks");
    assert_eq!(streamed, plain);
}

#[tokio::test]
async fn embeddings_completions_and_responses_through_the_sdk() {
    // Every call forwarded (the cache would answer the stream from the plain
    // answer; tests/cache.rs covers that).
    let h = Harness::start_with(MockOptions::default(), |c| c.cache.enabled = false).await;
    let sdk = h.sdk();
    let embeddings = sdk
        .embeddings()
        .create(from_json::<CreateEmbeddingRequest>(json!({
            "model": "text-embedding-3-small",
            "input": ["first", "second", "third"],
        })))
        .await
        .unwrap();
    let indexes: Vec<u32> = embeddings.data.iter().map(|e| e.index).collect();
    assert_eq!(indexes, [0, 1, 2]);
    assert!(!embeddings.data[0].embedding.is_empty());

    let completion = sdk
        .completions()
        .create(from_json::<CreateCompletionRequest>(json!({
            "model": "gpt-3.5-turbo-instruct",
            "prompt": "Once upon a time",
        })))
        .await
        .unwrap();
    assert!(!completion.choices[0].text.is_empty());

    let request = json!({"model": "gpt-4.1-mini", "input": "Hello there"});
    let response = sdk
        .responses()
        .create(from_json::<CreateResponse>(request.clone()))
        .await
        .unwrap();
    assert_eq!(response.object, "response");
    let mut request = request;
    request["stream"] = json!(true);
    let events: Vec<ResponseStreamEvent> = sdk
        .responses()
        .create_stream(from_json(request))
        .await
        .unwrap()
        .map(Result::unwrap)
        .collect()
        .await;
    assert!(
        matches!(
            events.last(),
            Some(ResponseStreamEvent::ResponseCompleted(_))
        ),
        "last event: {:?}",
        events.last()
    );
    assert_eq!(h.mock.request_count(), 4);
}

#[tokio::test]
async fn models_and_other_paths_pass_through() {
    let h = Harness::start().await;
    let models = h.sdk().models().list().await.unwrap();
    assert!(!models.data.is_empty());

    let echo: Value = http()
        .delete(h.url("/v1/files/file-abc?purpose=batch&x=%20y"))
        .header("openai-beta", "assistants=v2")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(echo["method"], "DELETE");
    assert_eq!(echo["path"], "/v1/files/file-abc");
    assert_eq!(echo["query"], "purpose=batch&x=%20y");
    assert_eq!(echo["headers"]["openai-beta"], "assistants=v2");
}

#[tokio::test]
async fn large_chunked_upload_streams_through_intact() {
    let h = Harness::start().await;
    // 24 MiB in 64 KiB chunks, no content-length: sent chunked.
    let chunk = bytes::Bytes::from(vec![b'x'; 64 * 1024]);
    let chunks = (0..384).map(move |i| {
        let mut c = chunk.to_vec();
        c[0] = (i % 251) as u8;
        Ok::<_, std::io::Error>(bytes::Bytes::from(c))
    });
    let body = reqwest::Body::wrap_stream(futures_util::stream::iter(chunks.clone()));
    let expected_len = 384 * 64 * 1024;
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for c in chunks.clone() {
        for b in c.unwrap().iter() {
            hash ^= u64::from(*b);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    let echo: Value = http()
        .post(h.url("/v1/files"))
        .header("content-type", "application/octet-stream")
        .body(body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(echo["body_bytes"], expected_len);
    assert_eq!(echo["body_fnv1a64"], format!("{hash:016x}"));
    assert_eq!(echo["headers"]["transfer-encoding"], "chunked");
}

#[tokio::test]
async fn understood_requests_are_forwarded_byte_for_byte() {
    let h = Harness::start().await;
    let raw = "{ \"model\" : \"gpt-4o-mini\",\n  \"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\n  \"x_vendor_field\": {\"keep\": [1.50, 2e3]} }";
    let response = http()
        .post(h.url("/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(raw)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let received = h.last_upstream_request("/v1/chat/completions");
    assert_eq!(received.body, raw.as_bytes());
    assert_eq!(received.path_and_query, "/v1/chat/completions");
}

#[tokio::test]
async fn header_rules_on_the_way_up_and_down() {
    let h = Harness::start().await;
    let response = http()
        .post(h.url("/v1/chat/completions?api-version=2024-10-21"))
        .header("authorization", "Bearer sk-client-own")
        .header("x-sluice-cache-ttl", "60")
        .header("x-sluice-anything", "1")
        .header("openai-organization", "org-1")
        .header("x-request-id", "client-id-1")
        .header("connection", "keep-alive, x-hop")
        .header("x-hop", "1")
        .json(&chat("headers"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let headers = response.headers();
    assert_eq!(headers["x-request-id"], "client-id-1");
    assert_eq!(headers["x-sluice-upstream"], "openai");
    assert_eq!(headers["x-sluice-attempts"], "1");
    assert!(
        headers.contains_key("openai-processing-ms"),
        "upstream header lost"
    );

    let received = h.last_upstream_request("/v1/chat/completions");
    assert_eq!(
        received.path_and_query,
        "/v1/chat/completions?api-version=2024-10-21"
    );
    assert_eq!(received.headers["authorization"], "Bearer sk-client-own");
    assert_eq!(received.headers["openai-organization"], "org-1");
    assert_eq!(received.headers["x-request-id"], "client-id-1");
    for stripped in ["x-sluice-cache-ttl", "x-sluice-anything", "x-hop"] {
        assert!(
            !received.headers.contains_key(stripped),
            "{stripped} forwarded"
        );
    }
    assert_ne!(
        received.headers.get("host").map(|v| v.as_bytes()),
        Some(h.sluice.addr().to_string().as_bytes()),
        "client's Host forwarded"
    );
}

#[tokio::test]
async fn generated_request_id_when_client_sends_none() {
    let h = Harness::start().await;
    let response = http()
        .post(h.url("/v1/chat/completions"))
        .json(&chat("id"))
        .send()
        .await
        .unwrap();
    let id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(id.len(), 32);
    // The upstream's own id is kept under another name.
    assert!(response.headers().contains_key("x-upstream-request-id"));
}

#[tokio::test]
async fn upstream_key_replaces_the_client_key() {
    let h = Harness::start_with(MockOptions::default(), |c| {
        c.upstreams[0].api_key = Some(Secret::new("sk-upstream-own"));
    })
    .await;
    http()
        .post(h.url("/v1/chat/completions"))
        .header("authorization", "Bearer sk-client")
        .json(&chat("key"))
        .send()
        .await
        .unwrap();
    let received = h.last_upstream_request("/v1/chat/completions");
    assert_eq!(received.headers["authorization"], "Bearer sk-upstream-own");
}

#[tokio::test]
async fn upstream_errors_come_back_unchanged() {
    let h = Harness::start().await;
    let response = http()
        .post(h.url("/v1/chat/completions"))
        .header("x-mock-status", "429")
        .header("x-mock-retry-after", "7")
        .json(&chat("limited"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["retry-after"], "7");
    assert_eq!(response.headers()["x-sluice-upstream"], "openai");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["type"], "rate_limit_error");
}

#[tokio::test]
async fn routes_by_model_pattern() {
    let local = sluice::mock::MockUpstream::start(MockOptions {
        record: true,
        ..MockOptions::default()
    })
    .await
    .unwrap();
    let h = Harness::start_with(MockOptions::default(), |c| {
        let mut first = c.upstreams[0].clone();
        first.name = "local".into();
        first.base_url = local.base_url();
        first.models = vec!["llama-*".into(), "qwen*".into()];
        c.upstreams.insert(0, first);
    })
    .await;
    for (model, upstream) in [
        ("llama-3.1-8b", "local"),
        ("gpt-4o", "openai"),
        ("qwen2.5", "local"),
    ] {
        let response = http()
            .post(h.url("/v1/chat/completions"))
            .json(&json!({"model": model, "messages": []}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.headers()["x-sluice-upstream"], upstream, "{model}");
    }
    assert_eq!(local.request_count(), 2);
    assert_eq!(h.mock.request_count(), 1);
}

#[tokio::test]
async fn streams_are_relayed_incrementally() {
    let delay = Duration::from_millis(150);
    let h = Harness::start_with(
        MockOptions {
            chunk_delay: delay,
            chunks: 6,
            ..MockOptions::default()
        },
        |_| {},
    )
    .await;
    let response = h
        .post("/v1/chat/completions", &common::chat_stream("slowly"))
        .await;
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let mut stream = response.bytes_stream();
    let mut arrivals = Vec::new();
    let mut body = String::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.unwrap();
        arrivals.push(Instant::now());
        body.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    let events = sse_data(&body);
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    // Role chunk, 6 content chunks, finish chunk, [DONE].
    assert_eq!(events.len(), 9, "{body}");
    assert!(
        arrivals.len() >= 6,
        "stream arrived in {} reads",
        arrivals.len()
    );
    let first = arrivals[0];
    let last = arrivals[arrivals.len() - 1];
    // Six delays separate the first content chunk from the end: the client
    // saw the beginning long before the mock produced the end.
    assert!(
        last - first >= delay * 5,
        "first and last chunk only {:?} apart",
        last - first
    );
}

#[tokio::test]
async fn client_disconnect_drops_the_upstream_stream() {
    // One request at a time: a second one is admitted only once everything
    // held by the first answer, upstream stream included, has been dropped.
    // (With the cache on, a cacheable stream is read to its end for the
    // cache instead; see tests/cache.rs.)
    let h = Harness::start_with(
        MockOptions {
            chunk_delay: Duration::from_millis(100),
            chunks: 200,
            ..MockOptions::default()
        },
        |c| {
            c.server.max_concurrency = 1;
            c.cache.enabled = false;
        },
    )
    .await;
    let response = h
        .post("/v1/chat/completions", &common::chat_stream("long"))
        .await;
    let mut stream = response.bytes_stream();
    stream.next().await.unwrap().unwrap();
    let busy = http()
        .post(h.url("/v1/chat/completions"))
        .json(&chat("meanwhile"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        busy.status(),
        503,
        "the open stream should hold the only slot"
    );
    drop(stream);
    let admitted = common::eventually(Duration::from_secs(5), || async {
        http()
            .post(h.url("/v1/chat/completions"))
            .json(&chat("after"))
            .send()
            .await
            .unwrap()
            .status()
            == 200
    })
    .await;
    assert!(admitted, "the dropped stream still holds its slot");
}

#[tokio::test]
async fn http2_cleartext_clients_are_served() {
    let h = Harness::start().await;
    common::install_crypto();
    let client = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let response = client
        .post(h.url("/v1/chat/completions"))
        .json(&chat("h2"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["object"], "chat.completion");
}

/// With the default config (memory cache and safe compression on, neither
/// of which has anything to change here), a streamed request reaches the
/// upstream as the client wrote it (no `stream_options` added) and the
/// client gets the upstream's stream as it was sent.
#[tokio::test]
async fn a_default_config_stream_passes_unchanged_both_ways() {
    let h = Harness::start().await;
    const REQUEST: &str = "{\"model\": \"gpt-4o-mini\", \"stream\": true,\n \"messages\": [{\"role\": \"user\", \"content\": \"Stream, unchanged\"}]}";
    let direct =
        common::raw_post(&format!("{}/chat/completions", h.mock.base_url()), REQUEST).await;
    let relayed = common::raw_post(&h.url("/v1/chat/completions"), REQUEST).await;
    assert_eq!(relayed.0, 200);
    assert_eq!(relayed, direct);
    let sent = h.last_upstream_request("/v1/chat/completions");
    assert_eq!(sent.body, REQUEST.as_bytes());
}
