//! Embeddings, responses, models and the echo endpoint.

#![expect(clippy::unwrap_used, reason = "tests fail loudly on unexpected errors")]

use async_openai::types::embeddings::CreateEmbeddingRequest;
use async_openai::types::responses::{
    CreateResponse, OutputItem, OutputMessageContent, Response, ResponseStreamEvent, Status,
};
use bytes::Bytes;

use futures_util::StreamExt;
use serde_json::{Value, json};

use super::*;

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
    assert_eq!(
        get["body_fnv1a64"],
        format!("{:016x}", super::synth::fnv1a64(b""))
    );
}
