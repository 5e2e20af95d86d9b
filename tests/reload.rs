//! Config reload while requests flow: in process through `Running::reload`,
//! and in the real binary through SIGHUP and a changed config file, with a
//! bad config rejected and the running one kept.

#![expect(clippy::unwrap_used, reason = "tests fail loudly on unexpected errors")]
#![expect(
    clippy::disallowed_methods,
    reason = "test clients and servers, each awaited or dropped by its test"
)]

mod common;

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use common::{Harness, config_for, http};
use serde_json::{Value, json};
use sluice::config::Config;
use sluice::mock::{MockOptions, MockUpstream};

/// Sends requests in a loop over one keep-alive client until `stop`:
/// plain ones (each a new prompt) and streams that take a while. Returns
/// the upstream names seen, in order, and the number of failures.
async fn traffic(
    base: String,
    stop: Arc<AtomicBool>,
    worker: usize,
) -> (Vec<String>, usize, usize) {
    let client = http();
    let mut seen = Vec::new();
    let mut failures = 0;
    let mut streams = 0;
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let stream = n % 3 == 0;
        let body = json!({
            "model": "gpt-4o-mini",
            "stream": stream,
            "messages": [{"role": "user", "content": format!("worker {worker} request {n}")}],
        });
        let mut request = client
            .post(format!("{base}/v1/chat/completions"))
            .json(&body);
        if stream {
            request = request.header("x-mock-chunk-delay-ms", "15");
        }
        let response = match request.send().await {
            Ok(response) => response,
            Err(_) => {
                failures += 1;
                continue;
            }
        };
        let ok = response.status() == 200;
        let upstream = response
            .headers()
            .get("x-sluice-upstream")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let text = response.text().await.unwrap_or_default();
        let complete = if stream {
            text.trim_end().ends_with("data: [DONE]")
        } else {
            serde_json::from_str::<Value>(&text).is_ok_and(|v| v["choices"].is_array())
        };
        if ok && complete {
            seen.push(upstream);
            streams += usize::from(stream);
        } else {
            failures += 1;
        }
    }
    (seen, failures, streams)
}

/// Waits until `mock` has seen 120 requests more than `from`: each phase of
/// the reload test lasts until the traffic has run a while under it.
async fn phase(mock: &MockUpstream, from: usize) {
    assert!(
        common::eventually(Duration::from_secs(30), || async {
            mock.request_count() >= from + 120
        })
        .await,
        "the traffic stalled"
    );
}

fn named(config: &mut Config, name: &str, base_url: &str) {
    config.upstreams[0].name = name.into();
    config.upstreams[0].base_url = base_url.into();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_under_traffic_fails_no_request() {
    let h = Harness::start_with(MockOptions::default(), |c| {
        c.server.workers = 2;
        c.upstreams[0].name = "first".into();
    })
    .await;
    let second = MockUpstream::start(MockOptions::default()).await.unwrap();
    let mut config = config_for(&h.mock.base_url());
    config.server.workers = 2;
    named(&mut config, "first", &h.mock.base_url());

    let stop = Arc::new(AtomicBool::new(false));
    let base = format!("http://{}", h.sluice.addr());
    let workers: Vec<_> = (0..6)
        .map(|w| tokio::spawn(traffic(base.clone(), stop.clone(), w)))
        .collect();
    phase(&h.mock, 0).await;
    // To the second upstream, mid-traffic.
    let mut moved = config.clone();
    named(&mut moved, "second", &second.base_url());
    let done = h.sluice.reload(moved.clone()).unwrap();
    assert_eq!(done.sections, ["upstreams"]);
    phase(&second, 0).await;
    // And a change that keeps the upstreams and their pools.
    let mut limited = moved.clone();
    limited.compress.level = sluice::config::CompressLevel::Aggressive;
    let done = h.sluice.reload(limited.clone()).unwrap();
    assert_eq!(done.sections, ["compress"]);
    phase(&second, second.request_count()).await;
    stop.store(true, Ordering::Relaxed);

    let mut total = 0;
    let mut streams = 0;
    for worker in workers {
        let (seen, failures, worker_streams) = worker.await.unwrap();
        assert_eq!(failures, 0, "a request failed across the reloads");
        assert!(seen.iter().any(|u| u == "first"), "{seen:?}");
        assert!(seen.iter().any(|u| u == "second"), "{seen:?}");
        // Each worker's keep-alive connection moved over and stayed there.
        let switch = seen.iter().position(|u| u == "second").unwrap();
        assert!(seen[switch..].iter().all(|u| u == "second"), "{seen:?}");
        total += seen.len();
        streams += worker_streams;
    }
    assert!(
        total > 30 && streams > 6,
        "too little traffic: {total} ({streams} streams)"
    );
    // The same config again: nothing to do.
    let again = h.sluice.reload(limited).unwrap();
    assert!(again.sections.is_empty(), "{again:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_keeps_the_cache_and_applies_new_limits() {
    let h = Harness::start().await;
    let mut config = config_for(&h.mock.base_url());
    let body =
        json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "keep me"}]});
    let first = h.post("/v1/chat/completions", &body).await;
    assert_eq!(first.headers()["x-sluice-cache"], "miss");

    // Limits and prices change; the cache's settings do not.
    config.rate_limit.requests_per_minute = Some(2);
    config.usage.max_label_values = 7;
    let done = h.sluice.reload(config.clone()).unwrap();
    assert_eq!(done.sections, ["rate_limit", "usage"]);
    assert!(done.need_restart.is_empty());
    let again = h.post("/v1/chat/completions", &body).await;
    assert_eq!(
        again.headers()["x-sluice-cache"],
        "hit",
        "the reload emptied the cache"
    );
    assert_eq!(again.headers()["x-ratelimit-limit-requests"], "2");
    let second = h.post("/v1/chat/completions", &body).await;
    let third = h.post("/v1/chat/completions", &body).await;
    assert_eq!(
        (second.status().as_u16(), third.status().as_u16()),
        (200, 429)
    );

    // The cache's own settings change: a new, empty cache.
    config.cache.ttl = Duration::from_secs(120);
    config.rate_limit.requests_per_minute = None;
    h.sluice.reload(config.clone()).unwrap();
    let fresh = h.post("/v1/chat/completions", &body).await;
    assert_eq!(fresh.status(), 200);
    assert_eq!(fresh.headers()["x-sluice-cache"], "miss");
    assert!(fresh.headers().get("x-ratelimit-limit-requests").is_none());

    // Keys that need a restart are named and keep their effect.
    let mut moved = config.clone();
    moved.server.listen = "127.0.0.1:1".parse().unwrap();
    let done = h.sluice.reload(moved).unwrap();
    assert_eq!(done.need_restart, ["server.listen"]);
    assert_eq!(h.post("/v1/chat/completions", &body).await.status(), 200);
}

fn config_file(port: u16, name: &str, base_url: &str, extra: &str) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\nworkers = 1\nconfig_poll_interval = \"200ms\"\n\n[[upstreams]]\nname = \"{name}\"\nbase_url = \"{base_url}\"\n{extra}\n"
    )
}

async fn upstream_of(base: &str) -> String {
    let response = http()
        .post(format!("{base}/v1/chat/completions"))
        .json(&json!({"model": "m", "messages": [{"role": "user", "content": "who answers?"}]}))
        .header("cache-control", "no-store")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.headers()["x-sluice-upstream"]
        .to_str()
        .unwrap()
        .to_owned()
}

async fn eventually_upstream(base: &str, name: &str) -> bool {
    common::eventually(Duration::from_secs(10), || async {
        upstream_of(base).await == name
    })
    .await
}

fn wait_for(lines: &std::sync::mpsc::Receiver<String>, needle: &str) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
        match lines.recv_timeout(left) {
            Ok(line) if line.contains(needle) => return line,
            Ok(_) => {}
            Err(_) => break,
        }
    }
    panic!("no log line with {needle:?} within 10 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_and_file_changes_reload_and_bad_configs_are_rejected() {
    let mock = MockUpstream::start(MockOptions::default()).await.unwrap();
    let port = common::net::free_port();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sluice.toml");
    let url = mock.base_url();
    std::fs::write(&path, config_file(port, "one", &url, "")).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["serve", "--config"])
        .arg(&path)
        .current_dir(dir.path())
        .env("NO_COLOR", "1")
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = common::stderr_lines(&mut child);
    let base = format!("http://127.0.0.1:{port}");
    wait_for(&lines, "sluice listening");
    assert_eq!(upstream_of(&base).await, "one");

    // Traffic throughout; none of it may fail.
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicUsize::new(0));
    let background = tokio::spawn({
        let (base, stop, failures) = (base.clone(), stop.clone(), failures.clone());
        async move {
            let (_, failed, _) = traffic(base, stop, 0).await;
            failures.fetch_add(failed, Ordering::Relaxed);
        }
    });

    // The file changes: picked up without a signal.
    std::fs::write(&path, config_file(port, "two", &url, "")).unwrap();
    assert!(eventually_upstream(&base, "two").await);
    wait_for(&lines, "config reloaded");

    // A bad file: rejected with its key named, by the watcher and by SIGHUP.
    std::fs::write(&path, config_file(port, "three", &url, "bogus_key = 1")).unwrap();
    let line = wait_for(&lines, "config reload rejected");
    assert!(line.contains("bogus_key"), "{line}");
    let hup = Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    wait_for(&lines, "SIGHUP received");
    let line = wait_for(&lines, "config reload rejected");
    assert!(line.contains("bogus_key"), "{line}");
    assert_eq!(
        upstream_of(&base).await,
        "two",
        "the running config did not stay"
    );

    // A valid one through SIGHUP (the watcher may see it first: either way).
    std::fs::write(&path, config_file(port, "four", &url, "")).unwrap();
    let hup = Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    assert!(eventually_upstream(&base, "four").await);

    stop.store(true, Ordering::Relaxed);
    background.await.unwrap();
    assert_eq!(
        failures.load(Ordering::Relaxed),
        0,
        "a request failed across the reloads"
    );
    let term = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    assert!(child.wait().unwrap().success());
}
