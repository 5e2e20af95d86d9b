//! Chat completions and legacy completions, plain and streamed.

#![expect(clippy::unwrap_used, reason = "tests fail loudly on unexpected errors")]

use async_openai::types::chat::{
    CreateChatCompletionRequest, CreateChatCompletionStreamResponse, FinishReason, Role,
};
use async_openai::types::completions::CreateCompletionRequest;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{Value, json};

use super::*;

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

    request["max_tokens"] = json!(5);
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
            .all(|c| c.message.content.as_deref().unwrap().len() == 20)
    );
    // Choices differ within their first tokens.
    assert_ne!(
        cut.choices[0].message.content,
        cut.choices[1].message.content
    );
    assert_eq!(cut.usage.unwrap().completion_tokens, 15);

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
