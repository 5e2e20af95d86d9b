//! Start, readiness, pre-warming, metrics and graceful shutdown.

#![expect(clippy::unwrap_used, reason = "tests fail loudly on unexpected errors")]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Harness, chat, http, sse_data};
use futures_util::StreamExt;
use serde_json::json;
use sluice::lifecycle::Phase;
use sluice::mock::{MockOptions, MockUpstream};

#[tokio::test]
async fn health_and_readiness() {
    let h = Harness::start().await;
    let health = http().get(h.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let ready = http().get(h.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
}

#[tokio::test]
async fn metrics_are_exposed_in_prometheus_format() {
    let h = Harness::start().await;
    http()
        .post(h.url("/v1/chat/completions"))
        .json(&chat("count me"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let response = http().get(h.url("/metrics")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = response.text().await.unwrap();
    for needle in [
        "sluice_requests_total{endpoint=\"chat_completions\",status=\"200\"}",
        "sluice_request_duration_seconds_bucket{endpoint=\"chat_completions\"",
        "sluice_upstream_duration_seconds_bucket{upstream=\"openai\"",
        "sluice_upstream_requests_total{upstream=\"openai\",status=\"200\"}",
        "sluice_requests_in_flight",
        "# HELP sluice_requests_total",
    ] {
        assert!(text.contains(needle), "missing {needle} in\n{text}");
    }
}

#[tokio::test]
async fn prewarm_opens_connections_before_the_first_request() {
    let mock = MockUpstream::start(MockOptions::default()).await.unwrap();
    let mut config = common::config_for(&mock.base_url());
    config.upstreams[0].prewarm = 3;
    // One worker: each worker warms its share of the connections.
    config.server.workers = 1;
    let sluice = sluice::server::start(config).await.unwrap();
    let warmed = common::eventually(Duration::from_secs(5), || async {
        mock.connection_count() >= 3
    })
    .await;
    assert!(warmed, "{} connections", mock.connection_count());
    assert_eq!(mock.request_count(), 0, "warming sends no request");
    let response = http()
        .post(format!("http://{}/v1/chat/completions", sluice.addr()))
        .json(&common::chat("first"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(mock.request_count(), 1);
    assert_eq!(
        mock.connection_count(),
        3,
        "the first request took a warm connection"
    );
}

#[tokio::test]
async fn unreachable_upstream_does_not_hold_readiness() {
    // A listener that never accepts: connections complete in the kernel's
    // backlog but no answer ever comes, so pre-warming hangs; readiness must
    // not wait for it.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let mut config = common::config_for(&format!("http://127.0.0.1:{port}/v1"));
    config.upstreams[0].prewarm = 4;
    let sluice = sluice::server::start(config).await.unwrap();
    assert_eq!(sluice.lifecycle().phase(), Phase::Ready);
    let ready = http()
        .get(format!("http://{}/readyz", sluice.addr()))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
}

#[tokio::test]
async fn graceful_shutdown_finishes_an_open_stream() {
    let h = Harness::start_with(
        MockOptions {
            chunk_delay: Duration::from_millis(100),
            chunks: 10,
            ..MockOptions::default()
        },
        |c| c.server.shutdown_grace = Duration::from_secs(20),
    )
    .await;
    let response = h
        .post("/v1/chat/completions", &common::chat_stream("finish me"))
        .await;
    let mut stream = response.bytes_stream();
    let mut body = String::from_utf8(stream.next().await.unwrap().unwrap().to_vec()).unwrap();

    h.sluice.shutdown();
    let draining = common::eventually(Duration::from_secs(5), || async {
        h.sluice.lifecycle().phase() == Phase::Draining
    })
    .await;
    assert!(draining);
    // No new connections are accepted while draining.
    let refused = common::eventually(Duration::from_secs(5), || async {
        tokio::net::TcpStream::connect(h.sluice.addr())
            .await
            .is_err()
    })
    .await;
    assert!(refused, "still accepting after shutdown began");

    while let Some(chunk) = stream.next().await {
        body.push_str(std::str::from_utf8(&chunk.unwrap()).unwrap());
    }
    let events = sse_data(&body);
    assert_eq!(events.len(), 13, "{body}");
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let Harness { sluice, .. } = h;
    tokio::time::timeout(Duration::from_secs(10), sluice.wait())
        .await
        .unwrap();
}

/// The real binary: SIGTERM during a stream lets the stream finish, then the
/// process exits 0.
#[tokio::test]
async fn sigterm_drains_then_exits_zero() {
    let mock = MockUpstream::start(MockOptions {
        chunk_delay: Duration::from_millis(100),
        chunks: 10,
        ..MockOptions::default()
    })
    .await
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            &mock.base_url(),
        ])
        .env("SLUICE_LOG__FORMAT", "json")
        .env("SLUICE_LOG__LEVEL", "info")
        .env("SLUICE_UPSTREAMS__0__PREWARM", "0")
        .env_remove("RUST_LOG")
        .current_dir(std::env::temp_dir())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let log_reader = std::thread::spawn(move || {
        let mut lines = Vec::new();
        for line in BufReader::new(stderr).lines() {
            let line = line.unwrap();
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line)
                && let Some(addr) = v["fields"]["addr"].as_str()
            {
                let _ = addr_tx.send(addr.to_owned());
            }
            lines.push(line);
        }
        lines
    });
    let addr = addr_rx.recv_timeout(Duration::from_secs(30)).unwrap();

    let mut request = chat("finish me");
    request["stream"] = json!(true);
    let response = http()
        .post(format!("http://{addr}/v1/chat/completions"))
        .json(&request)
        .send()
        .await
        .unwrap();
    let mut stream = response.bytes_stream();
    let mut body = String::from_utf8(stream.next().await.unwrap().unwrap().to_vec()).unwrap();

    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    while let Some(chunk) = stream.next().await {
        body.push_str(std::str::from_utf8(&chunk.unwrap()).unwrap());
    }
    assert_eq!(sse_data(&body).last().map(String::as_str), Some("[DONE]"));

    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "exit status {status:?}");
    let lines = log_reader.join().unwrap();
    assert!(
        lines.iter().any(|l| l.contains("SIGTERM received")),
        "{lines:#?}"
    );
}
