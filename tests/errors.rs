//! Every error sluice itself produces: status, OpenAI shape, x-request-id, and
//! the next request served normally.

#![expect(clippy::unwrap_used, reason = "tests fail loudly on unexpected errors")]
#![expect(
    clippy::disallowed_methods,
    reason = "test clients and servers, each awaited or dropped by its test"
)]

mod common;

use std::time::Duration;

use common::{Harness, chat, error_of, http};
use serde_json::json;
use sluice::mock::MockOptions;

async fn next_request_is_served(h: &Harness) {
    let response = http()
        .post(h.url("/v1/chat/completions"))
        .json(&chat("still fine?"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn invalid_json_and_non_objects_get_400() {
    let h = Harness::start().await;
    for (path, body) in [
        ("/v1/chat/completions", "{\"model\": \"gpt-4o\", "),
        ("/v1/chat/completions", "[1, 2, 3]"),
        ("/v1/embeddings", "\"just a string\""),
        ("/v1/completions", ""),
        ("/v1/responses", "\u{0}\u{1}garbage"),
        ("/v1/responses", "null"),
    ] {
        let response = http()
            .post(h.url(path))
            .header("content-type", "application/json")
            .header("x-request-id", "bad-1")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{path} {body:?}");
        assert_eq!(response.headers()["x-request-id"], "bad-1");
        let error = error_of(response).await;
        assert_eq!(error["type"], "invalid_request_error");
    }
    let invalid_utf8 = http()
        .post(h.url("/v1/chat/completions"))
        .body(vec![b'{', 0xff, 0xfe, b'}'])
        .send()
        .await
        .unwrap();
    assert_eq!(invalid_utf8.status(), 400);
    assert_eq!(
        h.mock.request_count(),
        0,
        "bad requests reached the upstream"
    );
    next_request_is_served(&h).await;
}

#[tokio::test]
async fn paths_outside_v1_get_404() {
    let h = Harness::start().await;
    for path in [
        "/",
        "/v1",
        "/v2/chat/completions",
        "/chat/completions",
        "/healthz/x",
    ] {
        let response = http().get(h.url(path)).send().await.unwrap();
        assert_eq!(response.status(), 404, "{path}");
        let error = error_of(response).await;
        assert_eq!(error["type"], "invalid_request_error");
    }
    assert_eq!(h.mock.request_count(), 0);
}

#[tokio::test]
async fn unrouted_model_gets_404_model_not_found() {
    let h = Harness::start_with(MockOptions::default(), |c| {
        c.upstreams[0].models = vec!["gpt-*".into()];
    })
    .await;
    let response = http()
        .post(h.url("/v1/chat/completions"))
        .json(&json!({"model": "llama-3", "messages": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    assert_eq!(error_of(response).await["code"], "model_not_found");
    next_request_is_served(&h).await;
}

#[tokio::test]
async fn bodies_over_the_limit_get_413() {
    let h = Harness::start_with(MockOptions::default(), |c| {
        c.server.max_body_size = bytesize::ByteSize::kib(64);
    })
    .await;
    let big = format!(
        "{{\"model\":\"gpt-4o\",\"messages\":[{{\"role\":\"user\",\"content\":\"{}\"}}]}}",
        "a".repeat(100 * 1024)
    );
    // Declared length, understood endpoint.
    let response = http()
        .post(h.url("/v1/chat/completions"))
        .body(big.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    assert_eq!(error_of(response).await["type"], "invalid_request_error");
    // Chunked, no length: understood endpoint and pass-through upload.
    for path in ["/v1/chat/completions", "/v1/files"] {
        let chunks = big
            .clone()
            .into_bytes()
            .chunks(8 * 1024)
            .map(|c| Ok::<_, std::io::Error>(bytes::Bytes::copy_from_slice(c)))
            .collect::<Vec<_>>();
        let response = http()
            .post(h.url(path))
            .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
                chunks,
            )))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 413, "{path}");
        error_of(response).await;
    }
    next_request_is_served(&h).await;
}

#[tokio::test]
async fn unreachable_upstream_gets_502() {
    // A port that was free a moment ago: nothing listens there.
    let port = common::net::free_port();
    let h = Harness::start_with(MockOptions::default(), |c| {
        c.upstreams[0].base_url = format!("http://127.0.0.1:{port}/v1");
    })
    .await;
    let response = http()
        .post(h.url("/v1/chat/completions"))
        .json(&chat("anyone?"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 502);
    let error = error_of(response).await;
    assert_eq!(error["type"], "upstream_error");
}

#[tokio::test]
async fn slow_upstream_gets_504_within_the_request_timeout() {
    let h = Harness::start_with(MockOptions::default(), |c| {
        c.server.request_timeout = Duration::from_millis(300);
    })
    .await;
    let started = std::time::Instant::now();
    let response = http()
        .post(h.url("/v1/chat/completions"))
        .header("x-mock-latency-ms", "5000")
        .json(&chat("slow"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 504);
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(error_of(response).await["type"], "timeout_error");
    next_request_is_served(&h).await;
}

#[tokio::test]
async fn slow_upstream_gets_504_within_the_upstream_timeout() {
    let h = Harness::start_with(MockOptions::default(), |c| {
        c.upstreams[0].timeout = Duration::from_millis(300);
    })
    .await;
    let response = http()
        .post(h.url("/v1/embeddings"))
        .header("x-mock-latency-ms", "5000")
        .json(&json!({"model": "text-embedding-3-small", "input": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 504);
    assert_eq!(error_of(response).await["type"], "timeout_error");
}

#[tokio::test]
async fn over_max_concurrency_gets_503_with_retry_after() {
    let h = Harness::start_with(MockOptions::default(), |c| {
        c.server.max_concurrency = 1;
    })
    .await;
    let slow = tokio::spawn({
        let url = h.url("/v1/chat/completions");
        async move {
            http()
                .post(url)
                .header("x-mock-latency-ms", "1500")
                .json(&chat("hold the slot"))
                .send()
                .await
                .unwrap()
                .status()
        }
    });
    // The slow request holds the only slot once it has reached the upstream.
    let deadline = Duration::from_secs(5);
    let holding = common::eventually(deadline, || async { h.mock.request_count() == 1 }).await;
    assert!(holding, "the slow request never reached the upstream");
    let shed = common::eventually(deadline, || async {
        let response = http()
            .post(h.url("/v1/chat/completions"))
            .json(&chat("one more"))
            .send()
            .await
            .unwrap();
        if response.status() != 503 {
            return false;
        }
        assert_eq!(response.headers()["retry-after"], "1");
        let error = error_of(response).await;
        assert_eq!(error["code"], "overloaded");
        true
    })
    .await;
    assert!(shed, "no request was shed while the only slot was taken");
    // Probes are answered even when saturated.
    let health = http().get(h.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    assert_eq!(slow.await.unwrap(), 200);
    next_request_is_served(&h).await;
}

#[tokio::test]
async fn slow_client_headers_are_cut_off() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let h = Harness::start_with(MockOptions::default(), |c| {
        c.server.header_read_timeout = Duration::from_millis(300);
    })
    .await;
    let mut stream = tokio::net::TcpStream::connect(h.sluice.addr())
        .await
        .unwrap();
    // Headers that never end.
    stream
        .write_all(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut buf)).await;
    assert!(
        read.is_ok(),
        "connection still open after the header timeout"
    );
    assert_eq!(h.mock.request_count(), 0);
    next_request_is_served(&h).await;
}
