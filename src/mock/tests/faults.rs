//! Injected faults: error statuses with retry hints, dropped and hung connections,
//! streams cut or stalled mid-way, and which requests get them (fail-times, fail-rate,
//! server-wide defaults).

#![expect(clippy::unwrap_used, reason = "tests fail loudly on unexpected errors")]

use std::time::Duration;

use futures_util::StreamExt;
use http::{HeaderMap, HeaderValue};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;

const CHAT: &str = "/v1/chat/completions";
/// How long a test waits to be sure nothing more arrives.
const QUIET: Duration = Duration::from_millis(300);

fn stream_request(prompt: &str) -> String {
    let mut request = chat_request(prompt);
    request["stream"] = json!(true);
    request.to_string()
}

/// Sends one raw HTTP/1.1 request and returns every byte the server sent before closing.
async fn raw_exchange(mock: &MockUpstream, headers: &str, body: &str) -> Vec<u8> {
    let mut stream = tokio::net::TcpStream::connect(mock.addr()).await.unwrap();
    let request = format!(
        "POST {CHAT} HTTP/1.1\r\nhost: mock\r\ncontent-type: application/json\r\n\
         {headers}content-length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut received = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut received))
        .await
        .unwrap_or_else(|_| panic!("the connection stayed open"));
    // A reset instead of a clean close is fine too; either way nothing was answered.
    if let Err(e) = read {
        assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}");
    }
    received
}

/// Reads a streamed body until it ends, fails, or stays quiet for [`QUIET`].
async fn read_stream(resp: reqwest::Response) -> (String, StreamEnd) {
    let mut body = Vec::new();
    let mut stream = resp.bytes_stream();
    let end = loop {
        match tokio::time::timeout(QUIET, stream.next()).await {
            Ok(Some(Ok(chunk))) => body.extend_from_slice(&chunk),
            Ok(Some(Err(_))) => break StreamEnd::Failed,
            Ok(None) => break StreamEnd::Finished,
            Err(_) => break StreamEnd::Quiet,
        }
    };
    (String::from_utf8(body).unwrap(), end)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StreamEnd {
    Finished,
    Failed,
    Quiet,
}

#[tokio::test]
async fn injected_status_with_retry_hints() {
    let mock = start(MockOptions::default()).await;
    let date = "Wed, 21 Oct 2015 07:28:00 GMT";
    let resp = post(
        &mock,
        CHAT,
        chat_request("x").to_string(),
        &[
            ("x-mock-status", "429"),
            ("x-mock-retry-after", date),
            ("x-mock-retry-after-ms", "1500"),
        ],
    )
    .await;
    assert_eq!(resp.status(), 429);
    assert_eq!(resp.headers()["retry-after"], date);
    assert_eq!(resp.headers()["retry-after-ms"], "1500");
    let err: Value = resp.json().await.unwrap();
    let fields: Vec<&str> = err["error"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(fields, ["message", "type", "param", "code"]);
    assert_eq!(err["error"]["type"], "rate_limit_error");

    let resp = post(&mock, CHAT, "{}", &[("x-mock-status", "502")]).await;
    assert_eq!(resp.status(), 502);
    assert!(resp.headers().get("retry-after-ms").is_none());
    let err: Value = resp.json().await.unwrap();
    assert_eq!(err["error"]["type"], "server_error");
}

#[tokio::test]
async fn drop_closes_the_connection_unanswered() {
    let mock = start(MockOptions::default()).await;
    let body = chat_request("dropped").to_string();
    let received = raw_exchange(&mock, "x-mock-fault: drop\r\n", &body).await;
    assert!(
        received.is_empty(),
        "got {:?}",
        String::from_utf8_lossy(&received)
    );
    assert_eq!(mock.request_count(), 1, "the request was not read");

    // The same exchange without the fault is answered: the raw client is sound.
    let received = raw_exchange(&mock, "connection: close\r\n", &body).await;
    assert!(received.starts_with(b"HTTP/1.1 200 OK\r\n"));

    let err = http()
        .post(format!("{}/chat/completions", mock.base_url()))
        .header("x-mock-fault", "drop")
        .body(body)
        .send()
        .await
        .err();
    assert!(err.is_some(), "a dropped request was answered");
}

#[tokio::test]
async fn hang_never_sends_the_head() {
    let mock = start(MockOptions::default()).await;
    let request = http()
        .post(format!("{}/chat/completions", mock.base_url()))
        .header("x-mock-fault", "hang")
        .body(chat_request("hung").to_string())
        .send();
    let outcome = tokio::time::timeout(QUIET, request).await;
    assert!(outcome.is_err(), "a hung request was answered: {outcome:?}");
    assert_eq!(mock.request_count(), 1);
    // Other requests are not held up.
    let (status, _) = post_json(&mock, CHAT, &chat_request("fine")).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn fail_after_chunks_cuts_the_stream() {
    let mock = start(MockOptions::default()).await;
    for k in [0, 1, 3] {
        let resp = post(
            &mock,
            CHAT,
            stream_request("cut"),
            &[("x-mock-fail-after-chunks", &k.to_string())],
        )
        .await;
        assert_eq!(resp.status(), 200);
        assert_eq!(
            resp.headers()["content-type"],
            "text/event-stream; charset=utf-8"
        );
        let (body, end) = read_stream(resp).await;
        assert_eq!(end, StreamEnd::Failed, "k={k}: {body}");
        assert_eq!(sse_data(&body).len(), k, "k={k}: {body}");
        assert!(!body.contains("[DONE]"));
    }

    // Named Responses API events and legacy completions are cut the same way.
    let resp = post(
        &mock,
        "/v1/responses",
        json!({"model": "m", "input": "p", "stream": true}).to_string(),
        &[("x-mock-fail-after-chunks", "2")],
    )
    .await;
    let (body, end) = read_stream(resp).await;
    assert_eq!(end, StreamEnd::Failed);
    assert_eq!(body.matches("event: ").count(), 2, "{body}");
    let resp = post(
        &mock,
        "/v1/completions",
        json!({"model": "m", "prompt": "p", "stream": true}).to_string(),
        &[("x-mock-fail-after-chunks", "4")],
    )
    .await;
    let (body, end) = read_stream(resp).await;
    assert_eq!((sse_data(&body).len(), end), (4, StreamEnd::Failed));

    // An answer that is not streamed is sent whole.
    let resp = post(
        &mock,
        CHAT,
        chat_request("whole").to_string(),
        &[("x-mock-fail-after-chunks", "1")],
    )
    .await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["object"], "chat.completion");
}

#[tokio::test]
async fn stall_after_chunks_keeps_the_connection_open() {
    let mock = start(MockOptions::default()).await;
    for k in [0, 2] {
        let resp = post(
            &mock,
            CHAT,
            stream_request("stall"),
            &[("x-mock-stall-after-chunks", &k.to_string())],
        )
        .await;
        assert_eq!(resp.status(), 200);
        let (body, end) = read_stream(resp).await;
        assert_eq!(end, StreamEnd::Quiet, "k={k}: {body}");
        assert_eq!(sse_data(&body).len(), k, "k={k}: {body}");
    }
}

#[tokio::test]
async fn fail_times_counts_per_key() {
    let mock = start(MockOptions::default()).await;
    let send = |body: Value, headers: &'static [(&'static str, &'static str)]| {
        let mock = &mock;
        async move {
            post(mock, CHAT, body.to_string(), headers)
                .await
                .status()
                .as_u16()
        }
    };
    // Keyed by method, path and body: the same request fails twice, then succeeds.
    const TWICE: &[(&str, &str)] = &[("x-mock-status", "500"), ("x-mock-fail-times", "2")];
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(send(chat_request("retry me"), TWICE).await);
    }
    statuses.push(send(chat_request("another"), TWICE).await);
    assert_eq!(statuses, [500, 500, 200, 500]);

    // Keyed by x-mock-fault-key: different bodies share a count, other keys do not.
    const KEY_A: &[(&str, &str)] = &[("x-mock-fail-times", "1"), ("x-mock-fault-key", "a")];
    const KEY_B: &[(&str, &str)] = &[("x-mock-fail-times", "1"), ("x-mock-fault-key", "b")];
    let statuses = [
        send(chat_request("one"), KEY_A).await,
        send(chat_request("two"), KEY_A).await,
        send(chat_request("one"), KEY_B).await,
        send(chat_request("three"), KEY_B).await,
    ];
    assert_eq!(statuses, [503, 200, 503, 200]);

    // Connection faults are counted the same way: a retry after a drop succeeds.
    let attempt = || {
        http()
            .post(format!("{}/chat/completions", mock.base_url()))
            .header("x-mock-fault", "drop")
            .header("x-mock-fail-times", "1")
            .body(chat_request("dropped once").to_string())
            .send()
    };
    assert!(attempt().await.is_err());
    assert_eq!(attempt().await.unwrap().status(), 200);
}

#[tokio::test]
async fn fail_rate_ends_are_deterministic() {
    let mock = start(MockOptions::default()).await;
    for _ in 0..20 {
        let resp = post(&mock, CHAT, "{}", &[("x-mock-fail-rate", "0")]).await;
        assert_eq!(resp.status(), 200);
        let resp = post(&mock, CHAT, "{}", &[("x-mock-fail-rate", "1")]).await;
        assert_eq!(resp.status(), 503);
        let err: Value = resp.json().await.unwrap();
        assert_eq!(err["error"]["type"], "server_error");
    }
    let resp = post(
        &mock,
        CHAT,
        "{}",
        &[("x-mock-fail-rate", "1.0"), ("x-mock-status", "429")],
    )
    .await;
    assert_eq!(resp.status(), 429);
}

fn controls(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.insert(*name, HeaderValue::from_static(value));
    }
    map
}

#[tokio::test]
async fn server_defaults_apply_unless_overridden() {
    let mock = start(MockOptions {
        controls: controls(&[("x-mock-status", "503"), ("x-mock-retry-after", "2")]),
        ..MockOptions::default()
    })
    .await;
    let resp = post(&mock, CHAT, "{}", &[]).await;
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.headers()["retry-after"], "2");
    // A request's own header wins.
    let resp = post(&mock, CHAT, "{}", &[("x-mock-status", "429")]).await;
    assert_eq!(resp.status(), 429);
    let resp = post(&mock, CHAT, "{}", &[("x-mock-fail-rate", "0")]).await;
    assert_eq!(resp.status(), 200);
    // A fault of its own replaces the default one.
    let resp = post(
        &mock,
        CHAT,
        stream_request("own fault"),
        &[("x-mock-fail-after-chunks", "1")],
    )
    .await;
    assert_eq!(resp.status(), 200);
    let (body, end) = read_stream(resp).await;
    assert_eq!((sse_data(&body).len(), end), (1, StreamEnd::Failed));

    // The first 10 requests of key `a` fail, whatever they are.
    let flaky = start(MockOptions {
        controls: controls(&[("x-mock-fail-times", "10"), ("x-mock-fault-key", "a")]),
        ..MockOptions::default()
    })
    .await;
    let mut statuses = Vec::new();
    for i in 0..11 {
        let body = chat_request(&format!("request {i}")).to_string();
        statuses.push(post(&flaky, CHAT, body, &[]).await.status().as_u16());
    }
    assert_eq!(statuses[..10], [503; 10]);
    assert_eq!(statuses[10], 200);
    let resp = post(&flaky, CHAT, "{}", &[("x-mock-fault-key", "b")]).await;
    assert_eq!(resp.status(), 503);
}

#[tokio::test]
async fn unusable_defaults_fail_the_start() {
    for pairs in [
        &[("x-mock-fault", "explode")][..],
        &[("x-mock-status", "503"), ("x-mock-fault", "drop")],
        &[("x-mock-unknown", "1")],
    ] {
        let started = MockUpstream::start(MockOptions {
            controls: controls(pairs),
            ..MockOptions::default()
        })
        .await;
        let kind = started.err().map(|e| e.kind());
        assert_eq!(kind, Some(std::io::ErrorKind::InvalidInput), "{pairs:?}");
    }
}

#[tokio::test]
async fn bad_fault_headers_are_400_naming_the_header() {
    let mock = start(MockOptions::default()).await;
    for (headers, named) in [
        (&[("x-mock-fault", "explode")][..], "x-mock-fault"),
        (&[("x-mock-fail-rate", "2")], "x-mock-fail-rate"),
        (&[("x-mock-fail-times", "-1")], "x-mock-fail-times"),
        (
            &[("x-mock-fail-after-chunks", "x")],
            "x-mock-fail-after-chunks",
        ),
        (
            &[("x-mock-retry-after-ms", "soon")],
            "x-mock-retry-after-ms",
        ),
        (
            &[("x-mock-status", "500"), ("x-mock-stall-after-chunks", "1")],
            "x-mock-stall-after-chunks",
        ),
    ] {
        let resp = post(&mock, CHAT, "{}", headers).await;
        assert_eq!(resp.status(), 400, "{headers:?}");
        let err: Value = resp.json().await.unwrap();
        assert_eq!(err["error"]["type"], "invalid_request_error");
        let message = err["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(named), "{headers:?}: {message}");
    }
}

#[tokio::test]
async fn hung_and_stalled_answers_end_when_the_client_leaves() {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    #[expect(clippy::disallowed_methods, reason = "a test server, awaited below")]
    let server = tokio::spawn(serve(listener, MockOptions::default(), async move {
        let _ = stopped.await;
    }));
    let client = http();
    let hung = client
        .post(format!("http://{addr}{CHAT}"))
        .header("x-mock-fault", "hang")
        .body(chat_request("hung").to_string())
        .send();
    assert!(tokio::time::timeout(QUIET, hung).await.is_err());
    let stalled = client
        .post(format!("http://{addr}{CHAT}"))
        .header("x-mock-stall-after-chunks", "1")
        .body(stream_request("stalled"))
        .send()
        .await
        .unwrap();
    let (_, end) = read_stream(stalled).await;
    assert_eq!(end, StreamEnd::Quiet);
    drop(client);
    // Shutdown waits for open connections up to its grace period of 5 s; ending well
    // before it shows the server let go of both once their client went away.
    stop.send(()).unwrap();
    let result = tokio::time::timeout(Duration::from_secs(3), server).await;
    assert!(matches!(result, Ok(Ok(Ok(())))), "{result:?}");
}

#[tokio::test]
async fn faults_over_h2() {
    let mock = start(MockOptions::default()).await;
    let client = h2c();
    let send = |header: &'static str, value: &'static str| {
        client
            .post(format!("{}/chat/completions", mock.base_url()))
            .header(header, value)
            .body(stream_request("h2"))
            .send()
    };
    // A dropped request resets its stream; the connection serves the next one.
    assert!(send("x-mock-fault", "drop").await.is_err());
    let resp = send("x-mock-fail-after-chunks", "3").await.unwrap();
    assert_eq!(resp.version(), http::Version::HTTP_2);
    let (body, end) = read_stream(resp).await;
    assert_eq!((sse_data(&body).len(), end), (3, StreamEnd::Failed));
    let resp = send("x-mock-stall-after-chunks", "2").await.unwrap();
    let (body, end) = read_stream(resp).await;
    assert_eq!((sse_data(&body).len(), end), (2, StreamEnd::Quiet));
    assert_eq!(mock.connection_count(), 1);
}
