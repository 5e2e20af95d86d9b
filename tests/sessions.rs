//! Sessions end to end: requests carrying `x-session-id` run one at a time
//! per client and session, up to `[sessions] max_concurrent`; other sessions
//! and requests without one run freely; a waiting request gets 503 at its
//! deadline; idle sessions are forgotten.
//!
//! A request "holds" its session with a streamed answer that the mock
//! stalls after its first event (`x-mock-stall-after-chunks: 1`): the
//! answer stays open until the client drops it. Those requests carry
//! `Cache-Control: no-store`, since a recorded miss keeps reading a stream
//! its client left, for the cache (and rightly keeps its session meanwhile).

#![expect(clippy::unwrap_used, reason = "tests fail loudly on unexpected errors")]
#![expect(
    clippy::disallowed_methods,
    reason = "test clients and servers, each awaited or dropped by its test"
)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{Harness, chat, chat_stream, error_of, eventually, http, sse_data};
use serde_json::Value;
use sluice::config::Config;
use sluice::mock::MockOptions;

const CHAT: &str = "/v1/chat/completions";

/// The tests read a process-wide gauge that every sluice in this binary
/// sets: they run one at a time.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// sluice in front of the mock; a request held back by mistake fails with
/// 503 within 10 s instead of hanging the test.
async fn harness(tweak: impl FnOnce(&mut Config)) -> Harness {
    Harness::start_with(MockOptions::default(), |c| {
        c.server.request_timeout = Duration::from_secs(10);
        tweak(c);
    })
    .await
}

async fn post(h: &Harness, body: &Value, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut request = http().post(h.url(CHAT)).json(body);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.unwrap()
}

/// A streamed request of `session` whose answer stays open until dropped;
/// returns once the mock has it and its answer has begun.
async fn hold(h: &Harness, prompt: &str, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut headers = headers.to_vec();
    headers.extend([
        ("x-mock-stall-after-chunks", "1"),
        ("cache-control", "no-store"),
    ]);
    let mut response = post(h, &chat_stream(prompt), &headers).await;
    assert_eq!(response.status(), 200);
    // The first event arrived: the answer is under way and still open.
    assert!(response.chunk().await.unwrap().is_some());
    response
}

/// Sends in the background; the answer's status and body.
fn spawn_post(
    h: &Arc<Harness>,
    body: Value,
    headers: &[(&str, &str)],
) -> tokio::task::JoinHandle<(u16, String)> {
    let h = h.clone();
    let headers: Vec<(String, String)> = headers
        .iter()
        .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
        .collect();
    tokio::spawn(async move {
        let headers: Vec<(&str, &str)> = headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        let response = post(&h, &body, &headers).await;
        (response.status().as_u16(), response.text().await.unwrap())
    })
}

/// The prompt of a recorded upstream chat request.
fn prompt_of(body: &[u8]) -> String {
    let v: Value = serde_json::from_slice(body).unwrap();
    v["messages"][0]["content"].as_str().unwrap().to_owned()
}

/// Prompts in the order the mock received them.
fn upstream_order(h: &Harness) -> Vec<String> {
    h.mock
        .requests()
        .iter()
        .map(|r| prompt_of(&r.body))
        .collect()
}

/// The value of `sluice_sessions_active` in sluice's `/metrics`.
async fn sessions_active(h: &Harness) -> Option<f64> {
    common::metric(&h.url(""), "sluice_sessions_active").await
}

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn the_requests_of_a_session_run_one_after_another() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let h = Arc::new(harness(|_| {}).await);
    // Streams that last: 8 events 40 ms apart after a 50 ms think.
    let slow = [
        ("x-session-id", "agent-1"),
        ("x-mock-latency-ms", "50"),
        ("x-mock-chunk-delay-ms", "40"),
        ("x-mock-chunks", "8"),
    ];
    let tasks: Vec<_> = (0..4)
        .map(|i| {
            let h = h.clone();
            tokio::spawn(async move {
                let prompt = format!("step {i}");
                let response = post(&h, &chat_stream(&prompt), &slow).await;
                assert_eq!(response.status(), 200);
                // How many requests the upstream had when this answer began.
                let seen_at_start = h.mock.request_count();
                let body = response.text().await.unwrap();
                assert_eq!(sse_data(&body).last().map(String::as_str), Some("[DONE]"));
                (prompt, seen_at_start)
            })
        })
        .collect();
    let mut started = Vec::new();
    for task in tasks {
        started.push(task.await.unwrap());
    }
    let order = upstream_order(&h);
    assert_eq!(order.len(), 4);
    for (prompt, seen_at_start) in started {
        let position = order.iter().position(|p| *p == prompt).unwrap() + 1;
        // Together, the four would all have reached the upstream before any
        // answer began (seen = 4 each); one after another, the n-th answer
        // began while the upstream had seen exactly n: the next request
        // only left once this answer had ended.
        assert_eq!(
            seen_at_start, position,
            "{prompt}: the upstream had {seen_at_start} requests when its answer began, order {order:?}"
        );
    }
}

#[tokio::test]
async fn other_sessions_and_requests_without_one_are_not_held_back() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let h = harness(|_| {}).await;
    let held = hold(&h, "long task", &[("x-session-id", "a")]).await;
    // While session a's answer is open, the others come and go.
    for (prompt, headers) in [
        ("other session", vec![("x-session-id", "b")]),
        ("another one", vec![("x-session-id", "c")]),
        ("no session", vec![]),
    ] {
        let response = post(&h, &chat(prompt), &headers).await;
        assert_eq!(response.status(), 200, "{prompt}");
        response.bytes().await.unwrap();
    }
    assert_eq!(
        upstream_order(&h),
        ["long task", "other session", "another one", "no session"]
    );
    drop(held);
}

#[tokio::test]
async fn max_concurrent_two_runs_two_at_once_but_not_three() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let h = Arc::new(harness(|c| c.sessions.max_concurrent = 2).await);
    let session = [("x-session-id", "pair")];
    let first = hold(&h, "first", &session).await;
    let second = hold(&h, "second", &session).await;
    assert_eq!(h.mock.request_count(), 2, "two run at once");
    let third = spawn_post(&h, chat("third"), &session);
    // Give the third every chance to slip through; it must not.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(h.mock.request_count(), 2, "a third ran beside two");
    assert!(!third.is_finished());
    drop(first);
    let (status, _) = third.await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(upstream_order(&h), ["first", "second", "third"]);
    drop(second);
}

#[tokio::test]
async fn idle_sessions_are_forgotten_while_a_streaming_one_is_kept() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let h = Arc::new(harness(|c| c.sessions.idle_timeout = Duration::from_millis(200)).await);
    let long = hold(&h, "long stream", &[("x-session-id", "long")]).await;
    for session in ["short-1", "short-2"] {
        let response = post(&h, &chat(session), &[("x-session-id", session)]).await;
        response.bytes().await.unwrap();
    }
    // The short ones go; the one with an open stream stays.
    assert!(
        eventually(WAIT, || async { sessions_active(&h).await == Some(1.0) }).await,
        "sessions: {:?}",
        sessions_active(&h).await
    );
    // Well past idle_timeout, its session is still the same one: a second
    // request waits for the stream.
    let next = spawn_post(&h, chat("after the stream"), &[("x-session-id", "long")]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(sessions_active(&h).await, Some(1.0));
    assert_eq!(h.mock.request_count(), 3, "ran beside the open stream");
    drop(long);
    let (status, _) = next.await.unwrap();
    assert_eq!(status, 200);
    assert!(
        eventually(WAIT, || async { sessions_active(&h).await == Some(0.0) }).await,
        "sessions: {:?}",
        sessions_active(&h).await
    );
}

#[tokio::test]
async fn a_request_waiting_past_its_deadline_gets_503_and_the_session_goes_on() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let h = harness(|c| c.server.request_timeout = Duration::from_secs(3)).await;
    let session = [("x-session-id", "busy")];
    let held = hold(&h, "holding", &session).await;
    let response = post(&h, &chat("waiting"), &session).await;
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "1");
    let error = error_of(response).await;
    assert_eq!(error["type"], "overloaded_error");
    assert_eq!(error["code"], "session_busy");
    assert_eq!(
        h.mock.request_count(),
        1,
        "the waiting request went upstream"
    );
    drop(held);
    // Once the holder is gone, the session serves again.
    let response = post(&h, &chat("afterwards"), &session).await;
    assert_eq!(response.status(), 200);
    assert_eq!(upstream_order(&h), ["holding", "afterwards"]);
}

#[tokio::test]
async fn the_session_header_is_read_and_removed() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let h = harness(|c| c.sessions.header = "X-Conversation".into()).await;
    let response = post(&h, &chat("hello"), &[("x-conversation", "conv-1")]).await;
    assert_eq!(response.status(), 200);
    let upstream = h.last_upstream_request(CHAT);
    assert!(!upstream.headers.contains_key("x-conversation"));
    // The default name means nothing once another is configured.
    let response = post(&h, &chat("plain"), &[("x-session-id", "s")]).await;
    assert_eq!(response.status(), 200);
    assert_eq!(h.last_upstream_request(CHAT).headers["x-session-id"], "s");

    let long = "x".repeat(257);
    for bad in [long.as_str(), "  "] {
        let response = post(&h, &chat("bad"), &[("x-conversation", bad)]).await;
        assert_eq!(response.status(), 400, "{bad:?}");
        let error = error_of(response).await;
        assert_eq!(error["type"], "invalid_request_error");
        assert_eq!(error["code"], "invalid_header");
    }
    assert_eq!(h.mock.request_count(), 2);
}

#[tokio::test]
async fn two_clients_with_the_same_session_id_do_not_wait_on_each_other() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let h = Arc::new(harness(|_| {}).await);
    let held = hold(
        &h,
        "client a",
        &[("x-session-id", "main"), ("authorization", "Bearer sk-a")],
    )
    .await;
    let response = post(
        &h,
        &chat("client b"),
        &[("x-session-id", "main"), ("authorization", "Bearer sk-b")],
    )
    .await;
    assert_eq!(response.status(), 200);
    // The same client with the same id does wait.
    let same = spawn_post(
        &h,
        chat("client a again"),
        &[("x-session-id", "main"), ("authorization", "Bearer sk-a")],
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!same.is_finished());
    drop(held);
    assert_eq!(same.await.unwrap().0, 200);
    assert_eq!(
        upstream_order(&h),
        ["client a", "client b", "client a again"]
    );
}

#[tokio::test]
async fn a_cache_hit_does_not_wait_for_its_session() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let h = harness(|_| {}).await;
    let session = [("x-session-id", "cached")];
    let first = post(&h, &chat("asked before"), &session).await;
    assert_eq!(first.headers()["x-sluice-cache"], "miss");
    first.bytes().await.unwrap();
    let held = hold(&h, "holding", &session).await;
    let again = post(&h, &chat("asked before"), &session).await;
    assert_eq!(again.status(), 200);
    assert_eq!(again.headers()["x-sluice-cache"], "hit");
    assert_eq!(h.mock.request_count(), 2);
    drop(held);
}
