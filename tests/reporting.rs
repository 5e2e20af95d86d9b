//! Usage and savings reporting: the counters by model and client after a
//! scripted mix of requests, estimated cost from a price table, and the
//! access log line of each request (from the real binary's JSON logs).

#![expect(clippy::unwrap_used, reason = "tests fail loudly on unexpected errors")]

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{Harness, http, metric};
use serde_json::{Value, json};
use sluice::config::{ClientKey, Price, Secret, StreamUsage};
use sluice::mock::{MockOptions, MockUpstream};

const KEY: &str = "sk-report-team";
/// How long a background effect (a counter, a log line) may take to show.
const WAIT: Duration = Duration::from_secs(5);

fn chat_body(model: &str, content: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": content}]})
}

async fn post(h: &Harness, body: &Value, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut request = http()
        .post(h.url("/v1/chat/completions"))
        .bearer_auth(KEY)
        .json(body);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 200);
    response
}

/// The `usage` object of a JSON answer: (prompt, completion).
async fn usage_of(response: reqwest::Response) -> (u64, u64) {
    let body: Value = response.json().await.unwrap();
    let usage = &body["usage"];
    (
        usage["prompt_tokens"].as_u64().unwrap(),
        usage["completion_tokens"].as_u64().unwrap(),
    )
}

fn header_u64(response: &reqwest::Response, name: &str) -> u64 {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name}"))
}

async fn counter(h: &Harness, name: &str, model: &str, label: &str, value: &str) -> f64 {
    // Usage tokens are the upstream's own figures here.
    let source = if name == "sluice_usage_tokens_total" {
        ",usage_source=\"upstream\""
    } else {
        ""
    };
    let series = format!("{name}{{model=\"{model}\",client=\"team\",{label}=\"{value}\"{source}}}");
    metric(&format!("http://{}", h.sluice.addr()), &series)
        .await
        .unwrap_or(0.0)
}

async fn cost(h: &Harness, name: &str, model: &str, reason: Option<&str>) -> f64 {
    let reason = reason.map_or_else(String::new, |r| format!(",reason=\"{r}\""));
    let series = format!("{name}{{model=\"{model}\",client=\"team\"{reason}}}");
    metric(&format!("http://{}", h.sluice.addr()), &series)
        .await
        .unwrap_or(0.0)
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-12 + 1e-9 * b.abs()
}

/// A long agent conversation: pruning to five messages removes most of it.
fn long_conversation(model: &str) -> Value {
    let mut messages =
        vec![json!({"role": "system", "content": "You are a careful coding assistant."})];
    for turn in 0..16 {
        messages.push(json!({"role": "user", "content": format!("Step {turn}: look at module_{turn}.rs and explain what its parser does with nested blocks, quoted strings and escapes, in detail.")}));
        messages.push(json!({"role": "assistant", "content": format!("Module {turn} reads tokens one at a time, keeps a stack of open blocks, and treats quoted strings as opaque until the closing quote; escapes are resolved afterwards in a second pass over the string's bytes.")}));
    }
    messages.push(
        json!({"role": "user", "content": "Now summarise the whole parser in one paragraph."}),
    );
    json!({"model": model, "messages": messages})
}

/// A prompt with a pasted log: compression folds the repeated lines.
fn pasted_log(model: &str) -> Value {
    let mut log = String::from("Why does the worker keep restarting? Here is the log:\n");
    for _ in 0..60 {
        log.push_str(
            "2026-11-22T06:00:00Z WARN worker: connection reset by peer, retrying in 5s\n",
        );
    }
    log.push_str("2026-11-22T06:05:00Z ERROR worker: giving up after 60 attempts\n");
    json!({"model": model, "messages": [{"role": "user", "content": log}]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_and_costs_after_a_scripted_mix() {
    let model = "report-mix-1";
    let price = Price {
        input: 2.0,
        output: 8.0,
        cached_input: None,
    };
    let h = Harness::start_with(MockOptions::default(), |c| {
        c.auth.client_keys = vec![ClientKey {
            name: "team".into(),
            key: Secret::new(KEY),
        }];
        c.usage.prices.insert("report-*".into(), price);
        // The upstream's figures for every stream: sluice asks for them.
        c.usage.stream_usage = StreamUsage::Ask;
    })
    .await;
    let micro = |tokens: u64, per_million: f64| tokens as f64 * per_million / 1e6;

    // A fresh question, then the same again: one upstream call, one hit.
    let question = chat_body(model, "What is a reverse proxy?");
    let (p1, c1) = usage_of(post(&h, &question, &[]).await).await;
    let hit = post(&h, &question, &[]).await;
    assert_eq!(hit.headers()["x-sluice-cache"], "hit");
    // A stream whose client asked for usage (and sees it), and one that did
    // not (usage asked for upstream, removed from what the client sees).
    let mut asked = chat_body(model, "Stream a haiku about rivers.");
    asked["stream"] = json!(true);
    asked["stream_options"] = json!({"include_usage": true});
    let text = post(&h, &asked, &[]).await.text().await.unwrap();
    let usage_chunk = common::sse_data(&text)
        .into_iter()
        .filter_map(|d| serde_json::from_str::<Value>(&d).ok())
        .find(|v| v["usage"].is_object())
        .unwrap();
    let (p2, c2) = (
        usage_chunk["usage"]["prompt_tokens"].as_u64().unwrap(),
        usage_chunk["usage"]["completion_tokens"].as_u64().unwrap(),
    );
    let prompt_now = counter(&h, "sluice_usage_tokens_total", model, "kind", "prompt").await;
    let completion_now =
        counter(&h, "sluice_usage_tokens_total", model, "kind", "completion").await;
    assert_eq!(prompt_now as u64, p1 + p2);
    assert_eq!(completion_now as u64, c1 + c2);
    let mut unasked = chat_body(model, "Stream a haiku about lakes.");
    unasked["stream"] = json!(true);
    let text = post(&h, &unasked, &[]).await.text().await.unwrap();
    assert!(
        !text.contains("\"usage\":{"),
        "usage chunk reached the client: {text}"
    );
    let upstream_stream = h.last_upstream_request("/v1/chat/completions");
    let sent: Value = serde_json::from_slice(&upstream_stream.body).unwrap();
    assert_eq!(sent["stream_options"]["include_usage"], true);
    // Counted when the answer's last byte is gone.
    common::eventually(WAIT, || async {
        counter(&h, "sluice_usage_tokens_total", model, "kind", "prompt").await > prompt_now
            && counter(&h, "sluice_usage_tokens_total", model, "kind", "completion").await
                > completion_now
    })
    .await;
    let unasked_prompt =
        counter(&h, "sluice_usage_tokens_total", model, "kind", "prompt").await - prompt_now;
    let unasked_completion = counter(&h, "sluice_usage_tokens_total", model, "kind", "completion")
        .await
        - completion_now;
    assert!(
        unasked_prompt > 0.0 && unasked_completion > 0.0,
        "the unasked stream's usage was not counted"
    );
    let mut usage_prompt = p1 + p2 + unasked_prompt as u64;
    let mut usage_completion = c1 + c2 + unasked_completion as u64;

    // Pruning and compression, each alone.
    let pruned = post(
        &h,
        &long_conversation(model),
        &[("x-sluice-prune", "on"), ("x-sluice-compress", "off")],
    )
    .await;
    let pruned_tokens = header_u64(&pruned, "x-sluice-prompt-tokens-original")
        - header_u64(&pruned, "x-sluice-prompt-tokens-sent");
    assert!(pruned_tokens > 100, "pruned only {pruned_tokens}");
    let (p3, c3) = usage_of(pruned).await;
    let compressed = post(
        &h,
        &pasted_log(model),
        &[
            ("x-sluice-compress", "aggressive"),
            ("x-sluice-prune", "off"),
        ],
    )
    .await;
    let compressed_tokens = header_u64(&compressed, "x-sluice-prompt-tokens-original")
        - header_u64(&compressed, "x-sluice-prompt-tokens-sent");
    assert!(
        compressed_tokens > 100,
        "compressed only {compressed_tokens}"
    );
    let (p4, c4) = usage_of(compressed).await;

    // Three identical requests at once: one reaches the upstream.
    let slow = chat_body(model, "Explain request coalescing.");
    let (a, b, c) = tokio::join!(
        post(&h, &slow, &[("x-mock-latency-ms", "400")]),
        post(&h, &slow, &[("x-mock-latency-ms", "400")]),
        post(&h, &slow, &[("x-mock-latency-ms", "400")]),
    );
    let mut outcomes: Vec<String> = [&a, &b, &c]
        .iter()
        .map(|r| r.headers()["x-sluice-cache"].to_str().unwrap().to_owned())
        .collect();
    outcomes.sort();
    assert_eq!(outcomes, ["coalesced", "coalesced", "miss"]);
    let (p5, c5) = usage_of(a).await;
    drop((b, c));

    usage_prompt += p3 + p4 + p5;
    usage_completion += c3 + c4 + c5;
    // Counted once the answers' last bytes are gone.
    common::eventually(WAIT, || async {
        counter(&h, "sluice_usage_tokens_total", model, "kind", "prompt").await as u64
            == usage_prompt
            && counter(&h, "sluice_usage_tokens_total", model, "kind", "completion").await as u64
                == usage_completion
    })
    .await;
    let prompt_total = counter(&h, "sluice_usage_tokens_total", model, "kind", "prompt").await;
    let completion_total =
        counter(&h, "sluice_usage_tokens_total", model, "kind", "completion").await;
    assert_eq!(prompt_total as u64, usage_prompt);
    assert_eq!(completion_total as u64, usage_completion);

    let saved =
        |reason: &'static str| counter(&h, "sluice_saved_tokens_total", model, "reason", reason);
    assert_eq!(saved("cache").await as u64, p1 + c1);
    assert_eq!(saved("coalesced").await as u64, 2 * (p5 + c5));
    assert_eq!(saved("pruned").await as u64, pruned_tokens);
    assert_eq!(saved("compressed").await as u64, compressed_tokens);
    let requests =
        |reason: &'static str| counter(&h, "sluice_saved_requests_total", model, "reason", reason);
    assert_eq!(requests("cache").await, 1.0);
    assert_eq!(requests("coalesced").await, 2.0);

    // Costs: the usage at the table's prices.
    let spent = cost(&h, "sluice_cost_spent_total", model, None).await;
    let expected = micro(usage_prompt, 2.0) + micro(usage_completion, 8.0);
    assert!(close(spent, expected), "spent {spent}, expected {expected}");
    let saved_cost =
        |reason: &'static str| cost(&h, "sluice_cost_saved_total", model, Some(reason));
    let cache_cost = saved_cost("cache").await;
    assert!(
        close(cache_cost, micro(p1, 2.0) + micro(c1, 8.0)),
        "{cache_cost}"
    );
    let coalesced_cost = saved_cost("coalesced").await;
    assert!(
        close(coalesced_cost, 2.0 * (micro(p5, 2.0) + micro(c5, 8.0))),
        "{coalesced_cost}"
    );
    assert!(close(saved_cost("pruned").await, micro(pruned_tokens, 2.0)));
    assert!(close(
        saved_cost("compressed").await,
        micro(compressed_tokens, 2.0)
    ));

    // A model without a price is counted, never priced.
    let unpriced = "unpriced-model-1";
    post(&h, &chat_body(unpriced, "hello"), &[]).await;
    common::eventually(WAIT, || async {
        counter(&h, "sluice_usage_tokens_total", unpriced, "kind", "prompt").await > 0.0
    })
    .await;
    assert!(counter(&h, "sluice_usage_tokens_total", unpriced, "kind", "prompt").await > 0.0);
    assert_eq!(
        cost(&h, "sluice_cost_spent_total", unpriced, None).await,
        0.0
    );
}

/// sluice as a child process with JSON logs; its stderr lines arrive on the
/// returned channel.
fn spawn_sluice(
    config: &str,
    env: &[(&str, &str)],
) -> (Child, tempfile::TempDir, std::sync::mpsc::Receiver<String>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sluice.toml");
    std::fs::write(&path, config).unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_sluice"));
    command
        .args(["serve", "--config"])
        .arg(&path)
        .current_dir(dir.path())
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (name, value) in env {
        command.env(name, value);
    }
    let mut child = command.spawn().unwrap();
    let rx = common::stderr_lines(&mut child);
    (child, dir, rx)
}

/// Waits for a JSON log line whose fields match `pick`.
fn wait_line(rx: &std::sync::mpsc::Receiver<String>, pick: impl Fn(&Value) -> bool) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
        let Ok(line) = rx.recv_timeout(left) else {
            break;
        };
        if let Ok(value) = serde_json::from_str::<Value>(&line)
            && pick(&value)
        {
            return value;
        }
    }
    panic!("no matching log line within 10 s");
}

async fn wait_ready(base: &str) {
    let ready = common::eventually(Duration::from_secs(10), || async {
        http()
            .get(format!("{base}/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
    })
    .await;
    assert!(ready, "sluice did not become ready");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_access_line_carries_each_request() {
    let mock = MockUpstream::start(MockOptions::default()).await.unwrap();
    let port = common::net::free_port();
    let config = format!(
        r#"
[server]
listen = "127.0.0.1:{port}"
workers = 1
[[upstreams]]
name = "mock-a"
base_url = "{}"
[auth]
client_keys_env = "REPORT_KEYS"
[log]
format = "json"
"#,
        mock.base_url()
    );
    let (mut child, _dir, lines) = spawn_sluice(&config, &[("REPORT_KEYS", "alpha:sk-alpha")]);
    let base = format!("http://127.0.0.1:{port}");
    wait_ready(&base).await;
    let access = |id: String| {
        move |v: &Value| v["target"] == "sluice::access" && v["fields"]["request_id"] == id.as_str()
    };

    // A forwarded request, then the same from the cache.
    let body = chat_body("gpt-4o-mini", "access log please");
    let mut ids = Vec::new();
    for _ in 0..2 {
        let response = http()
            .post(format!("{base}/v1/chat/completions"))
            .bearer_auth("sk-alpha")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        ids.push(
            response.headers()["x-request-id"]
                .to_str()
                .unwrap()
                .to_owned(),
        );
        response.bytes().await.unwrap();
    }
    let miss = wait_line(&lines, access(ids[0].clone()));
    let fields = &miss["fields"];
    assert_eq!(miss["level"], "INFO");
    assert_eq!(fields["method"], "POST");
    assert_eq!(fields["path"], "/v1/chat/completions");
    assert_eq!(fields["endpoint"], "chat_completions");
    assert_eq!(fields["status"], 200);
    assert_eq!(fields["model"], "gpt-4o-mini");
    assert_eq!(fields["client"], "alpha");
    assert_eq!(fields["upstream"], "mock-a");
    assert_eq!(fields["attempts"], 1);
    assert_eq!(fields["cache"], "miss");
    assert!(fields["latency_ms"].as_f64().unwrap() > 0.0);
    assert!(fields["head_ms"].as_f64().unwrap() <= fields["latency_ms"].as_f64().unwrap());
    assert!(fields["prompt_tokens"].as_u64().unwrap() > 0);
    assert!(fields["completion_tokens"].as_u64().unwrap() > 0);
    assert!(fields["tokens_original"].as_u64().unwrap() > 0);
    let hit = wait_line(&lines, access(ids[1].clone()));
    assert_eq!(hit["fields"]["cache"], "hit");
    assert_eq!(hit["fields"]["attempts"], 0);
    assert!(hit["fields"].get("prompt_tokens").is_none(), "{hit}");

    // Refused before anything else: status and path, no model guessed.
    let refused = http()
        .post(format!("{base}/v1/chat/completions"))
        .bearer_auth("sk-wrong")
        .header("x-request-id", "refused-1")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    let line = wait_line(&lines, access("refused-1".into()));
    assert_eq!(line["fields"]["status"], 401);
    assert!(line["fields"].get("upstream").is_none(), "{line}");

    // A pass-through path, streamed through.
    let models = http()
        .get(format!("{base}/v1/models"))
        .bearer_auth("sk-alpha")
        .header("x-request-id", "models-1")
        .send()
        .await
        .unwrap();
    assert_eq!(models.status(), 200);
    models.bytes().await.unwrap();
    let line = wait_line(&lines, access("models-1".into()));
    assert_eq!(line["fields"]["path"], "/v1/models");
    assert_eq!(line["fields"]["upstream"], "mock-a");
    assert_eq!(line["fields"]["client"], "alpha");

    // The admin paths are not logged; and no line carries a key.
    http().get(format!("{base}/healthz")).send().await.unwrap();
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = child.wait().unwrap();
    assert!(status.success());
    let rest: Vec<String> = lines.try_iter().collect();
    assert!(rest.iter().all(|l| !l.contains("/healthz")), "{rest:?}");
    assert!(rest.iter().all(|l| !l.contains("sk-alpha")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_access_line_can_be_turned_off() {
    let mock = MockUpstream::start(MockOptions::default()).await.unwrap();
    let port = common::net::free_port();
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\nworkers = 1\n[[upstreams]]\nname = \"m\"\nbase_url = \"{}\"\n[log]\nformat = \"json\"\naccess = false\n",
        mock.base_url()
    );
    let (mut child, _dir, lines) = spawn_sluice(&config, &[]);
    let base = format!("http://127.0.0.1:{port}");
    wait_ready(&base).await;
    let response = http()
        .post(format!("{base}/v1/chat/completions"))
        .json(&chat_body("m", "quiet please"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.bytes().await.unwrap();
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    assert!(child.wait().unwrap().success());
    let all: Vec<String> = lines.iter().collect();
    assert!(
        all.iter().any(|l| l.contains("sluice listening")),
        "{all:?}"
    );
    assert!(all.iter().all(|l| !l.contains("sluice::access")), "{all:?}");
}
