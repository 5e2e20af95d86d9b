//! Upstream resilience end to end: retries with backoff and Retry-After,
//! streams that fail or stall after bytes left, fallback to another
//! upstream, circuit breaking and the retry budget. Faults are injected with
//! the mock upstream's `x-mock-*` controls.

#![expect(clippy::unwrap_used, reason = "tests fail loudly on unexpected errors")]

mod common;

use std::time::{Duration, Instant, SystemTime};

use async_openai::types::chat::CreateChatCompletionRequest;
use common::{Harness, chat, chat_stream, config_for, from_json, http};
use futures_util::StreamExt;
use http::{HeaderMap, HeaderValue};
use serde_json::Value;
use sluice::config::{Config, Secret, UpstreamConfig};
use sluice::mock::{MockOptions, MockUpstream};
use sluice::server::Running;

/// Quick backoff so the tests do not sleep for long; everything else default.
fn quick(config: &mut Config) {
    config.retry.base_delay = Duration::from_millis(10);
    config.retry.max_delay = Duration::from_millis(40);
}

async fn harness(tweak: impl FnOnce(&mut Config)) -> Harness {
    Harness::start_with(MockOptions::default(), |c| {
        quick(c);
        tweak(c);
    })
    .await
}

async fn post(url: &str, body: &Value, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut request = http().post(url).json(body);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.unwrap()
}

/// POSTs `body` to sluice's chat endpoint with `fault` applied to the first
/// `times` upstream requests of a key of its own; later ones are served.
async fn flaky(h: &Harness, body: &Value, fault: &[(&str, &str)], times: u32) -> reqwest::Response {
    let key = format!("{}", fastrand::u64(..));
    let times = times.to_string();
    let mut headers = fault.to_vec();
    headers.push(("x-mock-fail-times", &times));
    headers.push(("x-mock-fault-key", &key));
    post(&h.url("/v1/chat/completions"), body, &headers).await
}

/// Waits until the first upstream's breaker has cooled down: `/readyz`
/// shows it available again (a probe may go through).
async fn cooled_down(sluice: &sluice::server::Running) -> bool {
    common::eventually(Duration::from_secs(10), || async {
        readyz(sluice).await["upstreams"][0]["available"] == true
    })
    .await
}

/// sluice's `/readyz` body; upstream health never makes sluice unready.
async fn readyz(sluice: &Running) -> Value {
    let ready = http()
        .get(format!("http://{}/readyz", sluice.addr()))
        .send()
        .await
        .unwrap();
    assert_eq!(
        ready.status(),
        200,
        "upstream health never makes sluice unready"
    );
    ready.json().await.unwrap()
}

fn attempts(response: &reqwest::Response) -> u32 {
    response.headers()["x-sluice-attempts"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

fn header<'a>(response: &'a reqwest::Response, name: &str) -> &'a str {
    response
        .headers()
        .get(name)
        .map_or("", |v| v.to_str().unwrap_or(""))
}

/// The `data:` payloads of an SSE body and whether it ended with an error event.
fn events(body: &[u8]) -> (Vec<String>, Option<Value>) {
    let text = String::from_utf8_lossy(body);
    let mut data = Vec::new();
    let mut error = None;
    for event in text.split("\n\n").filter(|e| !e.trim().is_empty()) {
        let payload: String = event
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .collect();
        if event.starts_with("event: error") {
            error = serde_json::from_str(&payload).ok();
        } else {
            data.push(payload);
        }
    }
    (data, error)
}

#[tokio::test]
async fn a_429_with_retry_after_is_waited_out_then_served() {
    let h = harness(|_| {}).await;
    let started = Instant::now();
    let response = flaky(
        &h,
        &chat("busy?"),
        &[("x-mock-status", "429"), ("x-mock-retry-after", "1")],
        1,
    )
    .await;
    assert_eq!(response.status(), 200);
    assert_eq!(attempts(&response), 2);
    // Waited as told: a second, not the 10-40 ms backoff.
    assert!(started.elapsed() >= Duration::from_millis(950));
    assert_eq!(h.mock.request_count(), 2);

    // retry-after-ms (OpenAI's) and an HTTP date are honoured too.
    let started = Instant::now();
    let response = flaky(
        &h,
        &chat("busy in ms?"),
        &[("x-mock-status", "429"), ("x-mock-retry-after-ms", "300")],
        1,
    )
    .await;
    assert_eq!(response.status(), 200);
    assert!(started.elapsed() >= Duration::from_millis(290));
    let date = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(2));
    let response = flaky(
        &h,
        &chat("busy until?"),
        &[("x-mock-status", "429"), ("x-mock-retry-after", &date)],
        1,
    )
    .await;
    assert_eq!(response.status(), 200);
    assert_eq!(attempts(&response), 2);
}

#[tokio::test]
async fn a_retry_after_past_the_deadline_returns_the_upstreams_answer_at_once() {
    let h = harness(|c| c.server.request_timeout = Duration::from_secs(3)).await;
    let started = Instant::now();
    let response = post(
        &h.url("/v1/chat/completions"),
        &chat("come back later"),
        &[("x-mock-status", "429"), ("x-mock-retry-after", "60")],
    )
    .await;
    assert_eq!(response.status(), 429);
    assert_eq!(header(&response, "retry-after"), "60");
    assert_eq!(attempts(&response), 1);
    assert!(started.elapsed() < Duration::from_secs(3));
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["type"], "rate_limit_error");
}

#[tokio::test]
async fn two_503s_then_200() {
    let h = harness(|_| {}).await;
    let response = flaky(&h, &chat("flaky"), &[("x-mock-status", "503")], 2).await;
    assert_eq!(response.status(), 200);
    assert_eq!(attempts(&response), 3);
    assert_eq!(header(&response, "x-sluice-upstream"), "openai");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(h.mock.request_count(), 3);
}

#[tokio::test]
async fn exhausted_retries_return_the_upstreams_own_status_and_body() {
    let h = harness(|_| {}).await;
    let response = post(
        &h.url("/v1/chat/completions"),
        &chat("down"),
        &[("x-mock-status", "502")],
    )
    .await;
    assert_eq!(response.status(), 502);
    assert_eq!(attempts(&response), 3);
    // The mock's own error body and request id, not sluice's.
    assert!(!header(&response, "x-upstream-request-id").is_empty());
    let body: Value = response.json().await.unwrap();
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(!message.is_empty(), "{body}");
    assert_ne!(body["error"]["code"], "upstream_failed", "{body}");
    assert_eq!(h.mock.request_count(), 3);
}

#[tokio::test]
async fn other_client_errors_are_never_retried() {
    let h = harness(|_| {}).await;
    for status in ["400", "401", "404", "422"] {
        let response = post(
            &h.url("/v1/chat/completions"),
            &chat(status),
            &[("x-mock-status", status)],
        )
        .await;
        assert_eq!(response.status().as_str(), status);
        assert_eq!(attempts(&response), 1);
    }
    assert_eq!(h.mock.request_count(), 4);
}

#[tokio::test]
async fn a_dropped_connection_is_retried() {
    let h = harness(|_| {}).await;
    let response = flaky(&h, &chat("reset"), &[("x-mock-fault", "drop")], 1).await;
    assert_eq!(response.status(), 200);
    assert_eq!(attempts(&response), 2);
}

#[tokio::test]
async fn connection_refused_gives_502_in_openai_shape() {
    let port = common::net::free_port();
    let mut config = config_for(&format!("http://127.0.0.1:{port}/v1"));
    quick(&mut config);
    let sluice = sluice::server::start(config).await.unwrap();
    let response = post(
        &format!("http://{}/v1/chat/completions", sluice.addr()),
        &chat("anyone?"),
        &[],
    )
    .await;
    assert_eq!(response.status(), 502);
    assert_eq!(attempts(&response), 3);
    assert!(!header(&response, "x-request-id").is_empty());
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["type"], "upstream_error");
    assert_eq!(body["error"]["code"], "upstream_unreachable");
    assert!(body["error"]["param"].is_null());
}

#[tokio::test]
async fn a_hung_upstream_gives_504_within_its_timeout() {
    let h = harness(|c| {
        c.upstreams[0].timeout = Duration::from_millis(300);
        c.retry.max_retries = 1;
    })
    .await;
    let started = Instant::now();
    let response = post(
        &h.url("/v1/chat/completions"),
        &chat("hello?"),
        &[("x-mock-fault", "hang")],
    )
    .await;
    assert_eq!(response.status(), 504);
    assert_eq!(attempts(&response), 2);
    // Two attempts of 300 ms and a short backoff, not a hang.
    assert!(started.elapsed() < Duration::from_secs(5));
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["type"], "timeout_error");
    assert_eq!(body["error"]["code"], "upstream_timeout");
}

#[tokio::test]
async fn a_stream_failing_after_three_chunks_ends_with_an_error_event() {
    let h = harness(|_| {}).await;
    let headers = [("x-mock-fail-after-chunks", "3")];
    let response = post(
        &h.url("/v1/chat/completions"),
        &chat_stream("break"),
        &headers,
    )
    .await;
    assert_eq!(response.status(), 200);
    assert_eq!(attempts(&response), 1);
    let body = response.bytes().await.unwrap();
    let (data, error) = events(&body);
    // The three chunks once each, then the error event; no [DONE].
    assert_eq!(data.len(), 3, "{}", String::from_utf8_lossy(&body));
    let unique: std::collections::HashSet<_> = data.iter().collect();
    assert_eq!(unique.len(), 3);
    assert!(!data.iter().any(|d| d == "[DONE]"));
    let error = error.unwrap_or_else(|| panic!("no error event in {body:?}"));
    assert_eq!(error["error"]["type"], "upstream_error");
    assert_eq!(error["error"]["code"], "upstream_stream_failed");
    // Not retried after bytes left.
    assert_eq!(h.mock.request_count(), 1);

    // A real client library raises instead of returning a cut answer.
    let mut config = async_openai::config::OpenAIConfig::new()
        .with_api_base(h.sluice.base_url())
        .with_api_key("sk-client");
    config = config.with_header("x-mock-fail-after-chunks", "3").unwrap();
    let client = async_openai::Client::with_config(config);
    let request: CreateChatCompletionRequest = from_json(chat_stream("break via sdk"));
    let mut stream = client.chat().create_stream(request).await.unwrap();
    let mut ok = 0;
    let mut error = None;
    while let Some(item) = stream.next().await {
        match item {
            Ok(_) => ok += 1,
            Err(e) => {
                error = Some(e.to_string());
                break;
            }
        }
    }
    assert_eq!(ok, 3);
    let error = error.unwrap_or_else(|| panic!("the SDK returned a cut stream as whole"));
    assert!(error.contains("stopped in the middle"), "{error}");
}

#[tokio::test]
async fn a_stalled_stream_ends_within_the_idle_timeout() {
    let h = harness(|c| c.upstreams[0].idle_timeout = Duration::from_millis(300)).await;
    let started = Instant::now();
    let response = post(
        &h.url("/v1/chat/completions"),
        &chat_stream("stall"),
        &[("x-mock-stall-after-chunks", "2")],
    )
    .await;
    assert_eq!(response.status(), 200);
    let body = response.bytes().await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
    let (data, error) = events(&body);
    assert_eq!(data.len(), 2);
    let error = error.unwrap_or_else(|| panic!("no error event"));
    let message = error["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("nothing came for 300ms"), "{message}");
    assert_eq!(h.mock.request_count(), 1);
}

#[tokio::test]
async fn a_stream_failing_or_silent_before_its_first_chunk_is_retried() {
    let h = harness(|c| c.upstreams[0].first_byte_timeout = Duration::from_millis(300)).await;
    for fault in ["x-mock-fail-after-chunks", "x-mock-stall-after-chunks"] {
        let response = flaky(&h, &chat_stream(fault), &[(fault, "0")], 1).await;
        assert_eq!(response.status(), 200, "{fault}");
        assert_eq!(attempts(&response), 2, "{fault}");
        let (data, error) = events(&response.bytes().await.unwrap());
        assert!(error.is_none(), "{fault}");
        assert_eq!(data.last().map(String::as_str), Some("[DONE]"), "{fault}");
    }
}

/// A mock whose every request gets `controls` unless it says otherwise.
async fn mock_with(controls: &[(&'static str, &'static str)]) -> MockUpstream {
    let mut map = HeaderMap::new();
    for (name, value) in controls {
        map.insert(*name, HeaderValue::from_static(value));
    }
    MockUpstream::start(MockOptions {
        controls: map,
        ..MockOptions::default()
    })
    .await
    .unwrap()
}

fn upstream(name: &str, mock: &MockUpstream, models: &[&str]) -> UpstreamConfig {
    UpstreamConfig {
        name: name.to_owned(),
        base_url: mock.base_url(),
        models: models.iter().map(|m| (*m).to_owned()).collect(),
        prewarm: 0,
        ..UpstreamConfig::default()
    }
}

async fn start(upstreams: Vec<UpstreamConfig>, tweak: impl FnOnce(&mut Config)) -> Running {
    let mut config = config_for("http://127.0.0.1:9/v1");
    config.upstreams = upstreams;
    quick(&mut config);
    tweak(&mut config);
    sluice::server::start(config).await.unwrap()
}

#[tokio::test]
async fn a_failing_upstream_falls_back_to_the_next() {
    let primary = mock_with(&[("x-mock-status", "503")]).await;
    let secondary = mock_with(&[]).await;
    let sluice = start(
        vec![
            upstream("primary", &primary, &["gpt-*"]),
            upstream("secondary", &secondary, &["*"]),
        ],
        |c| c.breaker.min_requests = 1000,
    )
    .await;
    let url = format!("http://{}/v1/chat/completions", sluice.addr());
    let response = post(&url, &chat("fall back"), &[]).await;
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "x-sluice-upstream"), "secondary");
    // Three tries at the primary (one and two retries), one at the secondary.
    assert_eq!(attempts(&response), 4);
    assert_eq!(primary.request_count(), 3);
    assert_eq!(secondary.request_count(), 1);

    // A refused connection falls back too.
    drop(primary);
    let response = post(&url, &chat("fall back again"), &[]).await;
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "x-sluice-upstream"), "secondary");
}

#[tokio::test]
async fn a_429_to_sluices_own_key_takes_the_upstream_out_of_rotation() {
    let primary = mock_with(&[("x-mock-status", "429"), ("x-mock-retry-after", "30")]).await;
    let secondary = mock_with(&[]).await;
    let mut keyed = upstream("primary", &primary, &["gpt-*"]);
    keyed.api_key = Some(Secret::new("sk-sluice"));
    let sluice = start(
        vec![keyed, upstream("secondary", &secondary, &["*"])],
        |_| {},
    )
    .await;
    let url = format!("http://{}/v1/chat/completions", sluice.addr());
    let started = Instant::now();
    let response = post(&url, &chat("rate limited"), &[]).await;
    // Moved on at once rather than waiting 30 s.
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "x-sluice-upstream"), "secondary");
    assert_eq!(attempts(&response), 2);
    assert!(started.elapsed() < Duration::from_secs(10));
    // The next request goes straight to the secondary.
    let response = post(&url, &chat("still limited"), &[]).await;
    assert_eq!(attempts(&response), 1);
    assert_eq!(header(&response, "x-sluice-upstream"), "secondary");
    assert_eq!(primary.request_count(), 1);
    // /readyz says so, and stays 200.
    let ready = readyz(&sluice).await;
    assert_eq!(ready["upstreams"][0]["name"], "primary");
    assert_eq!(ready["upstreams"][0]["available"], false);
    assert_eq!(ready["upstreams"][1]["available"], true);
}

#[tokio::test]
async fn the_breaker_opens_and_closes() {
    // The first upstream fails its first 3 requests, then recovers; the
    // second is healthy throughout.
    let mock = mock_with(&[
        ("x-mock-status", "500"),
        ("x-mock-fail-times", "3"),
        ("x-mock-fault-key", "all"),
    ])
    .await;
    let spare = mock_with(&[]).await;
    // Different `models` lists: the spare is a fallback, not a share.
    let sluice = start(
        vec![
            upstream("breaker", &mock, &["*"]),
            upstream("spare", &spare, &["gpt-*", "*"]),
        ],
        |c| {
            c.retry.max_retries = 0;
            c.breaker.min_requests = 3;
            c.breaker.failure_ratio = 0.5;
            c.breaker.cooldown = Duration::from_millis(800);
        },
    )
    .await;
    let url = format!("http://{}/v1/chat/completions", sluice.addr());
    let ready = || async {
        let ready = readyz(&sluice).await;
        ready["upstreams"][0]["breaker"]
            .as_str()
            .unwrap_or("")
            .to_owned()
    };
    for i in 0..3 {
        let response = post(&url, &chat(&format!("fail {i}")), &[]).await;
        assert_eq!(response.status(), 200, "served by the spare");
        assert_eq!(header(&response, "x-sluice-upstream"), "spare");
    }
    assert_eq!(mock.request_count(), 3);
    assert_eq!(ready().await, "open");
    // Open with a healthy alternative: the failing upstream is spared.
    let response = post(&url, &chat("while open"), &[]).await;
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "x-sluice-upstream"), "spare");
    assert_eq!(mock.request_count(), 3);
    let metrics = common::metrics_text(&format!("http://{}", sluice.addr())).await;
    assert!(
        metrics.contains("sluice_upstream_breaker_state{upstream=\"breaker\"} 2"),
        "{metrics}"
    );
    // After the cooldown a probe goes through, succeeds, and closes it.
    assert!(
        cooled_down(&sluice).await,
        "the breaker stayed out of rotation"
    );
    let response = post(&url, &chat("probe"), &[]).await;
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "x-sluice-upstream"), "breaker");
    assert_eq!(ready().await, "closed");
    let response = post(&url, &chat("after"), &[]).await;
    assert_eq!(response.status(), 200);
    assert_eq!(mock.request_count(), 5);
}

/// Serves the mock API on `addr` again (the port an earlier mock had).
async fn restart_mock_on(addr: std::net::SocketAddr) -> tokio::sync::oneshot::Sender<()> {
    let mut listener = None;
    for _ in 0..100 {
        match tokio::net::TcpListener::bind(addr).await {
            Ok(bound) => {
                listener = Some(bound);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    let listener = listener.unwrap_or_else(|| panic!("cannot listen on {addr} again"));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    #[expect(
        clippy::disallowed_methods,
        reason = "stopped by the sender the test keeps"
    )]
    tokio::spawn(sluice::mock::serve(
        listener,
        MockOptions::default(),
        async {
            let _ = stopped.await;
        },
    ));
    stop
}

/// The default breaker and retries, as a new user has them: upstreams go
/// down, requests fail and open the breakers, and the first request after
/// an upstream is back is served by it (panic mode), with no wait.
#[tokio::test]
async fn a_recovered_upstream_is_used_on_the_next_request() {
    for count in [1, 2] {
        let mocks: Vec<MockUpstream> = futures_util::future::join_all(
            (0..count).map(|_| MockUpstream::start(MockOptions::default())),
        )
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
        let addrs: Vec<_> = mocks.iter().map(MockUpstream::addr).collect();
        let upstreams = mocks
            .iter()
            .enumerate()
            .map(|(i, m)| upstream(&format!("u{i}"), m, &["*"]))
            .collect();
        let sluice = start(upstreams, |_| {}).await;
        let url = format!("http://{}/v1/chat/completions", sluice.addr());
        assert_eq!(post(&url, &chat("up"), &[]).await.status(), 200);
        drop(mocks);
        for i in 0..3 {
            let response = post(&url, &chat(&format!("down {i}")), &[]).await;
            assert_eq!(response.status(), 502, "{count} upstreams, request {i}");
        }
        let ready = readyz(&sluice).await;
        assert!(
            ready["upstreams"]
                .as_array()
                .unwrap()
                .iter()
                .all(|u| u["breaker"] == "open"),
            "{ready}"
        );
        // The last one comes back: served at once.
        let _stop = restart_mock_on(addrs[count - 1]).await;
        let response = post(&url, &chat("back"), &[]).await;
        assert_eq!(response.status(), 200, "{count} upstreams");
        assert!(
            response.headers().get("retry-after").is_none(),
            "told to wait"
        );
        assert_eq!(
            header(&response, "x-sluice-upstream"),
            format!("u{}", count - 1)
        );
        let ready = readyz(&sluice).await;
        assert_eq!(
            ready["upstreams"][count - 1]["breaker"],
            "closed",
            "{ready}"
        );
    }
}

#[tokio::test]
async fn the_budget_limits_retries_when_everything_fails() {
    let h = harness(|c| {
        c.retry.max_retries = 2;
        c.retry.budget = 0.2;
        c.retry.base_delay = Duration::from_millis(1);
        c.retry.max_delay = Duration::from_millis(2);
        c.breaker.min_requests = 100_000;
    })
    .await;
    let requests = 60;
    for i in 0..requests {
        let response = post(
            &h.url("/v1/chat/completions"),
            &chat(&format!("doomed {i}")),
            &[("x-mock-status", "503")],
        )
        .await;
        assert_eq!(response.status(), 503);
    }
    let calls = h.mock.request_count();
    // Without a budget: 180 calls. With it: the requests, 20 % of them, and
    // a reserve of one retry a second over the 10 s window.
    assert!(calls > requests, "{calls}");
    assert!(calls <= requests + requests / 5 + 10 + 2, "{calls}");
}

#[tokio::test]
async fn a_streamed_upload_is_sent_once() {
    let h = harness(|_| {}).await;
    let chunks: Vec<Result<&'static str, std::io::Error>> = vec![Ok("part one,"), Ok("part two")];
    let body = reqwest::Body::wrap_stream(futures_util::stream::iter(chunks));
    let response = http()
        .post(h.url("/v1/files"))
        .header("x-mock-status", "503")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(attempts(&response), 1);
    assert_eq!(h.mock.request_count(), 1);
    // A bodiless request is retried like any other.
    let response = http()
        .get(h.url("/v1/models"))
        .header("x-mock-status", "503")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(attempts(&response), 3);
}

#[tokio::test]
async fn pools_are_warmed_again_when_an_upstream_recovers() {
    let mut controls = HeaderMap::new();
    for (name, value) in [
        ("x-mock-status", "500"),
        ("x-mock-fail-times", "2"),
        ("x-mock-fault-key", "all"),
    ] {
        controls.insert(name, HeaderValue::from_static(value));
    }
    let mock = MockUpstream::start(MockOptions {
        controls,
        record: true,
        ..MockOptions::default()
    })
    .await
    .unwrap();
    let mut only = upstream("only", &mock, &["*"]);
    only.prewarm = 2;
    let sluice = start(vec![only], |c| {
        c.server.workers = 1;
        c.retry.max_retries = 0;
        c.breaker.min_requests = 2;
        c.breaker.cooldown = Duration::from_millis(300);
    })
    .await;
    let warmed = || async { mock.connection_count() == 2 };
    assert!(common::eventually(Duration::from_secs(5), warmed).await);
    assert_eq!(mock.request_count(), 0, "warming sends no request");
    let url = format!("http://{}/v1/chat/completions", sluice.addr());
    for i in 0..2 {
        let response = post(&url, &chat(&format!("fail {i}")), &[]).await;
        assert_eq!(response.status(), 500);
    }
    assert!(
        cooled_down(&sluice).await,
        "the breaker stayed out of rotation"
    );
    // The probe succeeds and closes the breaker: two fresh connections are
    // opened, and still no request the clients did not make.
    let response = post(&url, &chat("probe"), &[]).await;
    assert_eq!(response.status(), 200);
    assert!(
        common::eventually(Duration::from_secs(5), || async {
            mock.connection_count() == 4
        })
        .await,
        "{} connections",
        mock.connection_count()
    );
    assert_eq!(mock.request_count(), 3);
}
