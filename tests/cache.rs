//! The response cache end to end: sluice in front of the mock upstream.

#![expect(clippy::unwrap_used, reason = "tests fail loudly on unexpected errors")]
#![expect(
    clippy::disallowed_methods,
    reason = "test clients and servers, each awaited or dropped by its test"
)]

mod common;

use std::time::Duration;

use common::{Harness, chat, from_json, http};
use futures_util::StreamExt;
use serde_json::{Value, json};
use sluice::config::CacheScope;
use sluice::mock::MockOptions;

async fn send(h: &Harness, body: &str, headers: &[(&str, &str)]) -> (String, reqwest::Response) {
    let mut request = http()
        .post(h.url("/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(body.to_owned());
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap();
    let outcome = response
        .headers()
        .get("x-sluice-cache")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (outcome, response)
}

const BODY: &str = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"cache me"}]}"#;

#[tokio::test]
async fn second_identical_request_is_a_hit() {
    let h = Harness::start().await;
    let (outcome, first) = send(&h, BODY, &[]).await;
    assert_eq!(outcome, "miss");
    let first_body: Value = first.json().await.unwrap();
    let (outcome, second) = send(&h, BODY, &[]).await;
    assert_eq!(outcome, "hit");
    assert_eq!(second.status(), 200);
    assert_eq!(second.headers()["x-sluice-cache-tier"], "memory");
    assert!(
        second.headers()["age"]
            .to_str()
            .unwrap()
            .parse::<u64>()
            .is_ok()
    );
    assert!(second.headers().contains_key("x-request-id"));
    assert_eq!(second.headers()["content-type"], "application/json");
    let second_body: Value = second.json().await.unwrap();
    assert_eq!(first_body, second_body);
    assert_eq!(h.mock.request_count(), 1, "the hit reached the upstream");
}

#[tokio::test]
async fn key_order_and_whitespace_share_an_entry() {
    let h = Harness::start().await;
    assert_eq!(send(&h, BODY, &[]).await.0, "miss");
    let reordered = "{\n  \"messages\" : [ { \"content\": \"cache me\", \"role\": \"user\" } ],\n  \"model\": \"gpt-4o-mini\", \"stream\": false, \"user\": \"end-user-7\"\n}";
    assert_eq!(send(&h, reordered, &[]).await.0, "hit");
    assert_eq!(h.mock.request_count(), 1);
}

#[tokio::test]
async fn client_keys_do_not_share_entries_unless_global() {
    let h = Harness::start().await;
    let alice = [("authorization", "Bearer sk-alice")];
    let bob = [("authorization", "Bearer sk-bob")];
    assert_eq!(send(&h, BODY, &alice).await.0, "miss");
    assert_eq!(send(&h, BODY, &bob).await.0, "miss");
    assert_eq!(send(&h, BODY, &alice).await.0, "hit");
    assert_eq!(send(&h, BODY, &bob).await.0, "hit");
    assert_eq!(h.mock.request_count(), 2);

    let global = Harness::start_with(MockOptions::default(), |c| {
        c.cache.scope = CacheScope::Global
    })
    .await;
    assert_eq!(send(&global, BODY, &alice).await.0, "miss");
    assert_eq!(send(&global, BODY, &bob).await.0, "hit");
}

#[tokio::test]
async fn cache_control_directives() {
    let h = Harness::start().await;
    // no-store: neither looked up nor stored.
    assert_eq!(
        send(&h, BODY, &[("cache-control", "no-store")]).await.0,
        "bypass"
    );
    assert_eq!(send(&h, BODY, &[]).await.0, "miss");
    // no-cache: not served from the cache, but the fresh answer is stored.
    assert_eq!(
        send(&h, BODY, &[("cache-control", "no-cache")]).await.0,
        "miss"
    );
    assert_eq!(h.mock.request_count(), 3);
    assert_eq!(send(&h, BODY, &[]).await.0, "hit");
    // Cache-Control is sluice's to read: it does not travel upstream.
    let received = h.last_upstream_request("/v1/chat/completions");
    assert!(!received.headers.contains_key("cache-control"));
    // max-age: an entry older than allowed is not served.
    let stale = common::eventually(Duration::from_secs(5), || async {
        send(&h, BODY, &[("cache-control", "max-age=0")]).await.0 == "miss"
    })
    .await;
    assert!(stale, "max-age=0 kept being served from the cache");
}

#[tokio::test]
async fn per_request_ttl_expires() {
    let h = Harness::start().await;
    let body = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"short-lived"}]}"#;
    assert_eq!(
        send(&h, body, &[("x-sluice-cache-ttl", "1")]).await.0,
        "miss"
    );
    assert_eq!(send(&h, body, &[]).await.0, "hit");
    let expired = common::eventually(Duration::from_secs(5), || async {
        send(&h, body, &[("x-sluice-cache-ttl", "1")]).await.0 == "miss"
    })
    .await;
    assert!(expired, "entry outlived its one-second ttl");
}

#[tokio::test]
async fn errors_are_not_stored() {
    // One attempt per request, so the count below is the requests'.
    let h = Harness::start_with(MockOptions::default(), |c| c.retry.max_retries = 0).await;
    for _ in 0..2 {
        let (outcome, response) = send(&h, BODY, &[("x-mock-status", "500")]).await;
        assert_eq!(response.status(), 500);
        assert_eq!(outcome, "miss");
    }
    assert_eq!(h.mock.request_count(), 2);
}

#[tokio::test]
async fn streams_and_disabled_cache_bypass() {
    let h = Harness::start().await;
    let response = http()
        .post(h.url("/v1/chat/completions"))
        .header("cache-control", "no-store")
        .json(&common::chat_stream("s"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-sluice-cache"], "bypass");
    response.bytes().await.unwrap();

    let off = Harness::start_with(MockOptions::default(), |c| c.cache.enabled = false).await;
    assert_eq!(
        send(&off, BODY, &[("cache-control", "no-cache")]).await.0,
        "bypass"
    );
    let received = off.last_upstream_request("/v1/chat/completions");
    assert!(!received.headers.contains_key("cache-control"));
    assert_eq!(send(&off, BODY, &[]).await.0, "bypass");
    assert_eq!(off.mock.request_count(), 2);
    // Pass-through paths carry no cache header.
    let models = http().get(off.url("/v1/models")).send().await.unwrap();
    assert!(models.headers().get("x-sluice-cache").is_none());
}

#[tokio::test]
async fn deterministic_only_caches_reproducible_requests() {
    let h = Harness::start_with(MockOptions::default(), |c| {
        c.cache.deterministic_only = true
    })
    .await;
    let sampled = json!({"model": "gpt-4o-mini", "temperature": 0.7, "messages": [{"role": "user", "content": "x"}]});
    assert_eq!(send(&h, &sampled.to_string(), &[]).await.0, "bypass");
    let greedy = json!({"model": "gpt-4o-mini", "temperature": 0, "messages": [{"role": "user", "content": "x"}]});
    assert_eq!(send(&h, &greedy.to_string(), &[]).await.0, "miss");
    assert_eq!(send(&h, &greedy.to_string(), &[]).await.0, "hit");
    let seeded =
        json!({"model": "gpt-4o-mini", "seed": 7, "messages": [{"role": "user", "content": "x"}]});
    assert_eq!(send(&h, &seeded.to_string(), &[]).await.0, "miss");
}

#[tokio::test]
async fn hits_are_counted_in_metrics() {
    let h = Harness::start().await;
    let body = chat("metrics").to_string();
    send(&h, &body, &[]).await.1.bytes().await.unwrap();
    send(&h, &body, &[]).await.1.bytes().await.unwrap();
    let text = common::metrics_text(&h.url("")).await;
    for needle in [
        "sluice_cache_requests_total{result=\"hit\"}",
        "sluice_cache_lookups_total{tier=\"memory\",result=\"hit\"}",
        "sluice_cache_tokens_saved_total",
        "sluice_cache_entries",
        "sluice_cache_stored_bytes",
    ] {
        assert!(text.contains(needle), "missing {needle}");
    }
}

#[tokio::test]
async fn identical_requests_in_flight_share_one_upstream_call() {
    let h = Harness::start_with(
        MockOptions {
            latency: Duration::from_millis(400),
            ..MockOptions::default()
        },
        |_| {},
    )
    .await;
    let body = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"together"}]}"#;
    let requests = (0..20).map(|_| {
        let url = h.url("/v1/chat/completions");
        tokio::spawn(async move {
            let response = http()
                .post(url)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap();
            let outcome = response.headers()["x-sluice-cache"]
                .to_str()
                .unwrap()
                .to_owned();
            assert_eq!(response.status(), 200);
            (outcome, response.text().await.unwrap())
        })
    });
    let requests: Vec<_> = requests.collect();
    let mut outcomes = Vec::new();
    let mut bodies = Vec::new();
    for request in requests {
        let (outcome, body) = request.await.unwrap();
        outcomes.push(outcome);
        bodies.push(body);
    }
    assert_eq!(h.mock.request_count(), 1, "outcomes: {outcomes:?}");
    assert_eq!(
        outcomes.iter().filter(|o| *o == "miss").count(),
        1,
        "{outcomes:?}"
    );
    assert!(
        outcomes.iter().any(|o| o == "coalesced"),
        "nobody waited on the flight: {outcomes:?}"
    );
    assert!(bodies.iter().all(|b| *b == bodies[0]));
}

#[tokio::test]
async fn followers_of_a_failed_leader_are_not_stranded() {
    let h = Harness::start_with(
        MockOptions {
            latency: Duration::from_millis(200),
            ..MockOptions::default()
        },
        // Every attempt fails here: keep the breaker out of it, so each
        // follower gets the upstream's own 503.
        |c| c.breaker.min_requests = 1000,
    )
    .await;
    let body = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"doomed"}]}"#;
    let requests = (0..5).map(|_| {
        let url = h.url("/v1/chat/completions");
        tokio::spawn(async move {
            http()
                .post(url)
                .header("content-type", "application/json")
                .header("x-mock-status", "503")
                .body(body)
                .send()
                .await
                .unwrap()
                .status()
        })
    });
    let requests: Vec<_> = requests.collect();
    for request in requests {
        let status = tokio::time::timeout(Duration::from_secs(20), request)
            .await
            .unwrap_or_else(|_| panic!("a follower hung"))
            .unwrap();
        assert_eq!(status, 503);
    }
}

#[tokio::test]
async fn streams_are_recorded_and_replayed() {
    let h = Harness::start().await;
    let request = common::chat_stream("stream me");
    let (first, first_chunks, _) = h.sdk_chat_stream(&request).await;
    let (second, second_chunks, _) = h.sdk_chat_stream(&request).await;
    assert_eq!(first, second);
    assert_eq!(
        first_chunks, second_chunks,
        "chunk structure changed on replay"
    );
    assert_eq!(h.mock.request_count(), 1);
    // The same over raw HTTP: the replay is byte for byte what was relayed.
    let raw = common::chat_stream("raw stream");
    let first = h.post("/v1/chat/completions", &raw).await;
    assert_eq!(first.headers()["x-sluice-cache"], "miss");
    let first = first.bytes().await.unwrap();
    let second = h.post("/v1/chat/completions", &raw).await;
    assert_eq!(second.headers()["x-sluice-cache"], "hit");
    assert!(
        second.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    assert_eq!(second.bytes().await.unwrap(), first);
}

#[tokio::test]
async fn one_entry_serves_both_forms() {
    let h = Harness::start().await;
    // Plain first, then a stream replayed from it.
    let plain_request = chat("both ways");
    let plain = h.sdk_chat(&plain_request).await;
    let mut stream_request = plain_request.clone();
    stream_request["stream"] = json!(true);
    stream_request["stream_options"] = json!({"include_usage": true});
    let (streamed, _, usage) = h.sdk_chat_stream(&stream_request).await;
    assert_eq!(streamed, plain);
    assert!(usage, "include_usage asked for a usage chunk");
    assert_eq!(h.mock.request_count(), 1);

    // Stream first, then a plain answer assembled from it.
    let stream_request = common::chat_stream("the other way");
    let (streamed, _, _) = h.sdk_chat_stream(&stream_request).await;
    let plain = h.sdk_chat(&chat("the other way")).await;
    assert_eq!(plain, streamed);
    assert_eq!(h.mock.request_count(), 2);
}

#[tokio::test]
async fn a_stream_left_by_its_client_is_still_finished_and_stored() {
    let h = Harness::start_with(
        MockOptions {
            chunk_delay: Duration::from_millis(20),
            chunks: 20,
            ..MockOptions::default()
        },
        |_| {},
    )
    .await;
    let request = common::chat_stream("left early");
    let response = h.post("/v1/chat/completions", &request).await;
    assert_eq!(response.headers()["x-sluice-cache"], "miss");
    let mut stream = response.bytes_stream();
    stream.next().await.unwrap().unwrap();
    drop(stream);
    // sluice reads the rest on its own and stores it: the work is not lost.
    let stored = common::eventually(Duration::from_secs(10), || async {
        let response = h.post("/v1/chat/completions", &request).await;
        let outcome = response.headers()["x-sluice-cache"]
            .to_str()
            .unwrap()
            .to_owned();
        response.bytes().await.unwrap();
        outcome == "hit"
    })
    .await;
    assert!(stored, "the abandoned stream was not stored");
}

#[tokio::test]
async fn a_stream_cut_short_is_not_stored() {
    // The upstream's timeout ends the stream halfway: nothing is stored.
    let h = Harness::start_with(
        MockOptions {
            chunk_delay: Duration::from_millis(100),
            chunks: 20,
            ..MockOptions::default()
        },
        |c| c.upstreams[0].timeout = Duration::from_millis(500),
    )
    .await;
    let request = common::chat_stream("cut short");
    for _ in 0..2 {
        let response = h.post("/v1/chat/completions", &request).await;
        assert_eq!(response.headers()["x-sluice-cache"], "miss");
        // The stream ends with an error event, never with [DONE].
        let body = response.bytes().await.unwrap_or_default();
        let text = String::from_utf8_lossy(&body);
        assert!(text.contains("event: error\ndata: {\"error\""), "{text}");
        assert!(!text.contains("[DONE]"), "{text}");
    }
    assert_eq!(h.mock.request_count(), 2);
}

#[tokio::test]
async fn embeddings_are_cached_item_by_item() {
    let h = Harness::start().await;
    let embed = |input: Value| json!({"model": "text-embedding-3-small", "input": input});
    let vectors = |v: &Value| -> Vec<Value> {
        v["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["embedding"].clone())
            .collect()
    };
    let first = h
        .post("/v1/embeddings", &embed(json!(["alpha", "beta"])))
        .await;
    assert_eq!(first.headers()["x-sluice-cache"], "miss");
    let first: Value = first.json().await.unwrap();
    let (alpha, beta) = (vectors(&first)[0].clone(), vectors(&first)[1].clone());

    // Only the new item goes upstream; the answer is in the client's order.
    let mixed = h
        .post("/v1/embeddings", &embed(json!(["beta", "gamma", "alpha"])))
        .await;
    assert_eq!(mixed.headers()["x-sluice-cache"], "miss");
    let mixed: Value = mixed.json().await.unwrap();
    let received: Value =
        serde_json::from_slice(&h.last_upstream_request("/v1/embeddings").body).unwrap();
    assert_eq!(received["input"], json!(["gamma"]));
    let got = vectors(&mixed);
    assert_eq!(got[0], beta);
    assert_eq!(got[2], alpha);
    let indexes: Vec<u64> = mixed["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["index"].as_u64().unwrap())
        .collect();
    assert_eq!(indexes, [0, 1, 2]);
    assert!(mixed["usage"]["prompt_tokens"].as_u64().unwrap() > 0);

    // All known: a hit, parsed by the SDK.
    let all = h
        .post("/v1/embeddings", &embed(json!(["gamma", "alpha"])))
        .await;
    assert_eq!(all.headers()["x-sluice-cache"], "hit");
    assert_eq!(h.mock.request_count(), 2);
    let sdk = h
        .sdk()
        .embeddings()
        .create(from_json::<
            async_openai::types::embeddings::CreateEmbeddingRequest,
        >(embed(json!(["alpha", "gamma", "beta"]))))
        .await
        .unwrap();
    assert_eq!(sdk.data.len(), 3);
    assert_eq!(
        sdk.data.iter().map(|d| d.index).collect::<Vec<_>>(),
        [0, 1, 2]
    );
}

#[tokio::test]
async fn responses_and_completions_streams_both_ways() {
    use async_openai::types::responses::{CreateResponse, ResponseStreamEvent};
    let h = Harness::start().await;
    let request = json!({"model": "gpt-4.1-mini", "input": "Tell me about caches"});
    let plain = h
        .sdk()
        .responses()
        .create(from_json::<CreateResponse>(request.clone()))
        .await
        .unwrap();
    let mut streamed_request = request.clone();
    streamed_request["stream"] = json!(true);
    // Replayed from the stored plain answer, parsed by the SDK.
    let events: Vec<ResponseStreamEvent> = h
        .sdk()
        .responses()
        .create_stream(from_json(streamed_request))
        .await
        .unwrap()
        .map(Result::unwrap)
        .collect()
        .await;
    let text: String = events
        .iter()
        .filter_map(|e| match e {
            ResponseStreamEvent::ResponseOutputTextDelta(d) => Some(d.delta.clone()),
            _ => None,
        })
        .collect();
    let plain_text = serde_json::to_value(&plain).unwrap()["output"][0]["content"][0]["text"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(text, plain_text);
    assert!(matches!(
        events.last(),
        Some(ResponseStreamEvent::ResponseCompleted(_))
    ));
    assert_eq!(h.mock.request_count(), 1);

    // Legacy completions: a recorded stream serves a plain request.
    let completion = json!({"model": "gpt-3.5-turbo-instruct", "prompt": "Once", "stream": true});
    let first = h.post("/v1/completions", &completion).await;
    assert_eq!(first.headers()["x-sluice-cache"], "miss");
    let streamed = common::sse_data(&first.text().await.unwrap());
    let text: String = streamed
        .iter()
        .filter_map(|e| serde_json::from_str::<Value>(e).ok())
        .filter_map(|e| e["choices"][0]["text"].as_str().map(str::to_owned))
        .collect();
    let mut plain_request = completion.clone();
    plain_request["stream"] = json!(false);
    let plain = h.post("/v1/completions", &plain_request).await;
    assert_eq!(plain.headers()["x-sluice-cache"], "hit");
    let plain: Value = plain.json().await.unwrap();
    assert_eq!(plain["choices"][0]["text"], text);
    assert_eq!(h.mock.request_count(), 2);
}

#[tokio::test]
async fn a_late_stream_joins_the_one_in_flight() {
    let h = Harness::start_with(
        MockOptions {
            chunk_delay: Duration::from_millis(60),
            chunks: 10,
            ..MockOptions::default()
        },
        |_| {},
    )
    .await;
    let request = common::chat_stream("share the stream");
    let leader = h.post("/v1/chat/completions", &request).await;
    assert_eq!(leader.headers()["x-sluice-cache"], "miss");
    let mut leader_stream = leader.bytes_stream();
    let mut leader_body = leader_stream.next().await.unwrap().unwrap().to_vec();

    // Joins mid-stream: gets the chunks so far, then the rest live.
    let follower = h.post("/v1/chat/completions", &request).await;
    assert_eq!(follower.headers()["x-sluice-cache"], "coalesced");
    assert!(
        follower.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let follower_body = tokio::spawn(async move { follower.bytes().await.unwrap() });
    while let Some(chunk) = leader_stream.next().await {
        leader_body.extend_from_slice(&chunk.unwrap());
    }
    let follower_body = follower_body.await.unwrap();
    assert_eq!(follower_body.as_ref(), leader_body.as_slice());
    assert!(
        common::sse_data(&String::from_utf8(leader_body).unwrap())
            .last()
            .is_some_and(|e| e == "[DONE]")
    );
    assert_eq!(h.mock.request_count(), 1);
}

#[tokio::test]
async fn streams_arriving_together_share_one_upstream_call() {
    let h = Harness::start_with(
        MockOptions {
            latency: Duration::from_millis(200),
            chunk_delay: Duration::from_millis(20),
            chunks: 5,
            ..MockOptions::default()
        },
        |_| {},
    )
    .await;
    let request = common::chat_stream("together, streamed");
    let clients: Vec<_> = (0..8)
        .map(|_| {
            let url = h.url("/v1/chat/completions");
            let request = request.clone();
            tokio::spawn(async move {
                let response = http().post(url).json(&request).send().await.unwrap();
                let outcome = response.headers()["x-sluice-cache"]
                    .to_str()
                    .unwrap()
                    .to_owned();
                (outcome, response.bytes().await.unwrap())
            })
        })
        .collect();
    let mut results = Vec::new();
    for client in clients {
        results.push(client.await.unwrap());
    }
    assert_eq!(
        h.mock.request_count(),
        1,
        "{:?}",
        results.iter().map(|r| &r.0).collect::<Vec<_>>()
    );
    assert!(results.iter().all(|(_, body)| *body == results[0].1));
}

/// An upstream answering a JSON array where the endpoint answers an object:
/// relayed as it came, never stored and replayed.
#[tokio::test]
async fn an_answer_not_of_the_endpoints_shape_is_not_stored() {
    let upstream = common::hostile::Hostile::start(|stream, _head| {
        common::hostile::answer(stream, "200 OK", "application/json", br#"[{"evil": 2}]"#)
    })
    .await;
    let config = common::config_for(&upstream.base_url());
    let sluice = sluice::server::start(config).await.unwrap();
    for _ in 0..3 {
        let response = http()
            .post(format!("{}/chat/completions", sluice.base_url()))
            .header("content-type", "application/json")
            .body(BODY)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_ne!(response.headers()["x-sluice-cache"], "hit");
        assert_eq!(response.text().await.unwrap(), r#"[{"evil": 2}]"#);
    }
    assert_eq!(
        upstream.requests(),
        3,
        "an array answer was served from the cache"
    );
}

/// One SSE chat chunk carrying `n` bytes of text.
fn sse_chunk(n: usize) -> Vec<u8> {
    format!(
        "data: {{\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"model\":\"m\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"{}\"}}}}]}}\n\n",
        "a".repeat(n)
    )
    .into_bytes()
}

/// An upstream whose streams never end: a chunk every `every`, until the
/// connection breaks.
async fn endless(every: Duration) -> common::hostile::Hostile {
    common::hostile::Hostile::start(move |mut stream, _head| async move {
        if common::hostile::start_stream(&mut stream).await.is_err() {
            return;
        }
        let chunk = sse_chunk(16 * 1024);
        while common::hostile::chunk(&mut stream, &chunk).await.is_ok() {
            if !every.is_zero() {
                tokio::time::sleep(every).await;
            }
        }
    })
    .await
}

async fn stream_request(base: &str, prompt: &str) -> reqwest::Response {
    http()
        .post(format!("{base}/chat/completions"))
        .json(&common::chat_stream(prompt))
        .send()
        .await
        .unwrap()
}

/// A stream that never ends grows past the cache's entry limit: the
/// recording and the live buffer followers read from are dropped, so the
/// memory a stream holds is bounded. A follower gets what it had and an
/// error; the next identical request goes upstream on its own.
#[tokio::test]
async fn a_stream_past_the_entry_limit_stops_being_shared() {
    let upstream = endless(Duration::ZERO).await;
    let sluice = sluice::server::start(common::config_for(&upstream.base_url()))
        .await
        .unwrap();
    let base = sluice.base_url();
    let mut leader = stream_request(&base, "endless").await.bytes_stream();
    let first = leader.next().await.unwrap().unwrap();
    assert!(!first.is_empty());
    let follower = stream_request(&base, "endless").await;
    assert_eq!(follower.headers()["x-sluice-cache"], "coalesced");
    // The leader reads on while the follower reads to its end.
    let reader = tokio::spawn(async move {
        let mut read = 0usize;
        while let Some(Ok(chunk)) = leader.next().await {
            read += chunk.len();
            if read > 64 * 1024 * 1024 {
                break;
            }
        }
        read
    });
    let mut received = 0usize;
    let mut ended_with_error = false;
    let mut body = follower.bytes_stream();
    let ended = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(chunk) = body.next().await {
            match chunk {
                Ok(chunk) => received += chunk.len(),
                Err(_) => {
                    ended_with_error = true;
                    break;
                }
            }
        }
    })
    .await;
    assert!(
        ended.is_ok(),
        "the follower's stream never ended ({received} bytes)"
    );
    let limit = sluice::cache::MAX_ENTRY_BYTES;
    assert!(
        received <= limit + 64 * 1024,
        "the follower got {received} bytes, past the {limit}-byte limit"
    );
    assert!(
        ended_with_error || received > 0,
        "the follower got nothing and no error"
    );
    // A new identical request is not made to follow a dropped live stream.
    let again = stream_request(&base, "endless").await;
    assert_ne!(again.headers()["x-sluice-cache"], "coalesced");
    drop(again);
    reader.abort();
    assert_eq!(upstream.requests(), 2);
}

/// Clients that leave a stream early: at most `read_on_abandoned` of their
/// upstream requests are read on for the cache; the others are cancelled
/// at once, as the upstream would see without sluice.
#[tokio::test]
async fn reading_on_after_a_client_left_is_bounded() {
    let upstream = endless(Duration::from_millis(50)).await;
    let mut config = common::config_for(&upstream.base_url());
    config.cache.read_on_abandoned = 1;
    let sluice = sluice::server::start(config).await.unwrap();
    let base = sluice.base_url();
    for i in 0..5 {
        let mut body = stream_request(&base, &format!("leave early {i}"))
            .await
            .bytes_stream();
        assert!(body.next().await.is_some());
        drop(body);
    }
    assert_eq!(upstream.requests(), 5);
    let settled =
        common::eventually(Duration::from_secs(10), || async { upstream.open() <= 1 }).await;
    assert!(
        settled,
        "{} upstream streams still read after their clients left",
        upstream.open()
    );
    let addr = format!("http://{}", sluice.addr());
    let cancelled =
        common::metric(&addr, "sluice_cache_read_on_total{outcome=\"cancelled\"}").await;
    assert!(cancelled.unwrap_or(0.0) >= 4.0, "{cancelled:?}");
}
