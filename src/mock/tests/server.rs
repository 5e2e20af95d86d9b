//! Errors, controls, recording, headers, protocols and shutdown.

#![expect(clippy::unwrap_used, reason = "tests fail loudly on unexpected errors")]

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::*;

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
    let client = h2c();
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
    #[expect(clippy::disallowed_methods, reason = "a test server, awaited below")]
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
