//! Client keys and rate limits end to end: the mock upstream sees which key
//! arrives; limits are checked by their headers and refusals, locally and
//! shared through a real redis-server.

#![expect(clippy::unwrap_used, reason = "tests fail loudly on unexpected errors")]

mod common;

use std::time::Duration;

use common::redis::RedisServer;
use common::{Harness, error_of, http};
use serde_json::{Value, json};
use sluice::config::{Config, Secret, parse_client_keys};
use sluice::mock::MockOptions;

const CLIENT_KEYS: &str = "team-a:ck-team-a-0001,team-b:ck-team-b-0002";

/// sluice with client keys, the upstream's own key, and `tweak`.
async fn managed(tweak: impl FnOnce(&mut Config)) -> Harness {
    Harness::start_with(MockOptions::default(), |c| {
        c.auth.client_keys = parse_client_keys(CLIENT_KEYS).unwrap();
        c.auth.client_keys_env = Some("CLIENT_KEYS".into());
        c.upstreams[0].api_key = Some(Secret::new("sk-upstream-key"));
        c.upstreams[0].api_key_env = Some("UPSTREAM_KEY".into());
        tweak(c);
    })
    .await
}

fn chat(content: &str) -> Value {
    json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": content}]})
}

async fn post_as(h: &Harness, key: Option<&str>, body: &Value) -> reqwest::Response {
    let mut request = http().post(h.url("/v1/chat/completions")).json(body);
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    request.send().await.unwrap()
}

fn header(response: &reqwest::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_owned())
}

fn number(response: &reqwest::Response, name: &str) -> u64 {
    header(response, name)
        .unwrap_or_else(|| panic!("no {name}"))
        .parse()
        .unwrap()
}

#[tokio::test]
async fn client_keys_are_required_and_swapped_for_the_upstream_key() {
    let h = managed(|_| {}).await;

    for (key, code) in [
        (None, "missing_api_key"),
        (Some("ck-wrong"), "invalid_api_key"),
        (Some("sk-upstream-key"), "invalid_api_key"),
    ] {
        let response = post_as(&h, key, &chat("hello")).await;
        assert_eq!(response.status(), 401, "{key:?}");
        assert_eq!(
            header(&response, "www-authenticate").as_deref(),
            Some("Bearer")
        );
        assert!(header(&response, "x-request-id").is_some());
        let error = error_of(response).await;
        assert_eq!(error["type"], "authentication_error");
        assert_eq!(error["code"], code);
        assert!(!error["message"].as_str().unwrap().contains("ck-wrong"));
    }
    // Passed-through paths need a key too; the admin paths do not.
    let models = http().get(h.url("/v1/models")).send().await.unwrap();
    assert_eq!(models.status(), 401);
    for path in ["/healthz", "/readyz", "/metrics"] {
        let response = http().get(h.url(path)).send().await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
    }
    assert!(
        h.mock.requests().is_empty(),
        "nothing refused reached the upstream"
    );

    let response = post_as(&h, Some("ck-team-a-0001"), &chat("hello")).await;
    assert_eq!(response.status(), 200);
    response.bytes().await.unwrap();
    let upstream = h.last_upstream_request("/v1/chat/completions");
    assert_eq!(upstream.headers["authorization"], "Bearer sk-upstream-key");
    assert_eq!(upstream.headers.get_all("authorization").iter().count(), 1);

    // The official SDK's way of sending a key works as is.
    let client = async_openai::Client::with_config(
        async_openai::config::OpenAIConfig::new()
            .with_api_base(h.sluice.base_url())
            .with_api_key("ck-team-b-0002"),
    );
    let answer = client
        .chat()
        .create(common::from_json(chat("via sdk")))
        .await
        .unwrap();
    assert!(!answer.choices.is_empty());
    let models = http()
        .get(h.url("/v1/models"))
        .bearer_auth("ck-team-b-0002")
        .send()
        .await
        .unwrap();
    assert_eq!(models.status(), 200);
    let upstream = h.last_upstream_request("/v1/models");
    assert_eq!(upstream.headers["authorization"], "Bearer sk-upstream-key");
}

#[tokio::test]
async fn cache_entries_are_kept_per_client_key_name() {
    let h = managed(|_| {}).await;
    let body = chat("cached per client");
    let first = post_as(&h, Some("ck-team-a-0001"), &body).await;
    assert_eq!(header(&first, "x-sluice-cache").as_deref(), Some("miss"));
    first.bytes().await.unwrap();
    let again = post_as(&h, Some("ck-team-a-0001"), &body).await;
    assert_eq!(header(&again, "x-sluice-cache").as_deref(), Some("hit"));
    let other = post_as(&h, Some("ck-team-b-0002"), &body).await;
    assert_eq!(
        header(&other, "x-sluice-cache").as_deref(),
        Some("miss"),
        "another client never gets team-a's answer"
    );
}

#[tokio::test]
async fn without_client_keys_the_client_key_passes_through() {
    let h = Harness::start().await;
    let response = post_as(&h, Some("sk-client-own"), &chat("hi")).await;
    assert_eq!(response.status(), 200);
    response.bytes().await.unwrap();
    let upstream = h.last_upstream_request("/v1/chat/completions");
    assert_eq!(upstream.headers["authorization"], "Bearer sk-client-own");
}

#[tokio::test]
async fn requests_per_minute_are_limited_per_client() {
    let h = managed(|c| c.rate_limit.requests_per_minute = Some(3)).await;
    for expected in [2, 1, 0] {
        let response = post_as(&h, Some("ck-team-a-0001"), &chat("rpm")).await;
        assert_eq!(response.status(), 200);
        assert_eq!(number(&response, "x-ratelimit-limit-requests"), 3);
        assert_eq!(
            number(&response, "x-ratelimit-remaining-requests"),
            expected
        );
        assert!(header(&response, "x-ratelimit-reset-requests").is_some());
        assert!(header(&response, "x-ratelimit-limit-tokens").is_none());
    }
    let calls = h.mock.requests().len();
    let refused = post_as(&h, Some("ck-team-a-0001"), &chat("rpm")).await;
    assert_eq!(refused.status(), 429);
    let retry_after: u64 = header(&refused, "retry-after").unwrap().parse().unwrap();
    assert!((19..=20).contains(&retry_after), "{retry_after}");
    let retry_ms = number(&refused, "retry-after-ms");
    assert!((19_000..=20_000).contains(&retry_ms), "{retry_ms}");
    assert_eq!(number(&refused, "x-ratelimit-remaining-requests"), 0);
    let error = error_of(refused).await;
    assert_eq!(error["type"], "rate_limit_error");
    assert_eq!(error["code"], "rate_limit_exceeded");
    assert_eq!(
        h.mock.requests().len(),
        calls,
        "refused before the upstream"
    );

    // sluice's own errors from further down carry the headers too.
    let broken = http()
        .post(h.url("/v1/chat/completions"))
        .bearer_auth("ck-team-b-0002")
        .header("x-mock-fault", "drop")
        .json(&chat("rpm broken"))
        .send()
        .await
        .unwrap();
    assert_eq!(broken.status(), 502);
    assert_eq!(number(&broken, "x-ratelimit-remaining-requests"), 2);
    assert_eq!(error_of(broken).await["type"], "upstream_error");

    // Another client has its own allowance; cache hits count as requests.
    let other = post_as(&h, Some("ck-team-b-0002"), &chat("rpm")).await;
    assert_eq!(other.status(), 200);
    assert_eq!(number(&other, "x-ratelimit-remaining-requests"), 1);
}

#[tokio::test]
async fn tokens_per_minute_reserve_max_tokens_and_settle_with_usage() {
    let h = managed(|c| {
        c.rate_limit.tokens_per_minute = Some(1000);
        c.cache.enabled = false;
    })
    .await;
    let key = Some("ck-team-a-0001");
    let with_max = |content: &str, max: u64| {
        let mut body = chat(content);
        body["max_tokens"] = json!(max);
        body
    };
    let first = post_as(&h, key, &with_max("first", 600)).await;
    assert_eq!(first.status(), 200);
    assert_eq!(number(&first, "x-ratelimit-limit-tokens"), 1000);
    let prompt = number(&first, "x-sluice-prompt-tokens-original");
    let left = number(&first, "x-ratelimit-remaining-tokens");
    assert!(
        left <= 1000 - 600 - prompt && left + 2 >= 1000 - 600 - prompt,
        "{left} left after {prompt} + 600"
    );
    let answer: Value = first.json().await.unwrap();
    let used = answer["usage"]["total_tokens"].as_u64().unwrap();
    assert!(used < 600, "the mock answers briefly ({used})");

    // Settled with the reported usage: the unused part came back, so a
    // second such request fits (it would not on the reservation alone).
    let second = post_as(&h, key, &with_max("second", 600)).await;
    assert_eq!(
        second.status(),
        200,
        "the first request's reservation was not settled"
    );
    let left = number(&second, "x-ratelimit-remaining-tokens");
    assert!(left + 2 >= 1000 - used - 600 - prompt, "{left}");

    // Streamed without asking for usage: sluice asks, and the client does
    // not see the extra chunk.
    let mut streamed = with_max("streamed", 100);
    streamed["stream"] = json!(true);
    let response = post_as(&h, key, &streamed).await;
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    let events = common::sse_data(&text);
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    for event in &events[..events.len() - 1] {
        let chunk: Value = serde_json::from_str(event).unwrap();
        assert!(
            !chunk["choices"].as_array().unwrap().is_empty(),
            "usage chunk reached a client that did not ask: {event}"
        );
    }
    let upstream: Value =
        serde_json::from_slice(&h.last_upstream_request("/v1/chat/completions").body).unwrap();
    assert_eq!(upstream["stream_options"]["include_usage"], true);

    // A client that asks gets it.
    let (_, _, usage) = {
        let mut asked = streamed.clone();
        asked["stream_options"] = json!({"include_usage": true});
        let client = async_openai::Client::with_config(
            async_openai::config::OpenAIConfig::new()
                .with_api_base(h.sluice.base_url())
                .with_api_key("ck-team-b-0002"),
        );
        let chunks: Vec<async_openai::types::chat::CreateChatCompletionStreamResponse> = {
            use futures_util::StreamExt;
            client
                .chat()
                .create_stream(common::from_json(asked))
                .await
                .unwrap()
                .map(Result::unwrap)
                .collect()
                .await
        };
        ((), (), chunks.iter().any(|c| c.usage.is_some()))
    };
    assert!(usage);

    // Over the limit: refused with the wait until enough tokens are back.
    let refused = post_as(&h, key, &with_max("big", 900)).await;
    assert_eq!(refused.status(), 429);
    assert!(header(&refused, "retry-after").is_some());
    let error = error_of(refused).await;
    assert_eq!(error["code"], "rate_limit_exceeded");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("tokens per minute")
    );

    // More than a whole minute's allowance: never fits, no Retry-After.
    let too_large = post_as(&h, key, &with_max("huge", 5000)).await;
    assert_eq!(too_large.status(), 429);
    assert!(header(&too_large, "retry-after").is_none());
    assert_eq!(error_of(too_large).await["code"], "request_too_large");
}

#[tokio::test]
async fn cache_hits_give_their_tokens_back() {
    let h = managed(|c| c.rate_limit.tokens_per_minute = Some(1000)).await;
    let key = Some("ck-team-a-0001");
    let mut body = chat("hit me");
    body["max_tokens"] = json!(400);
    let miss = post_as(&h, key, &body).await;
    let after_miss = number(&miss, "x-ratelimit-remaining-tokens");
    let used = miss.json::<Value>().await.unwrap()["usage"]["total_tokens"]
        .as_u64()
        .unwrap();
    // Each hit reserves 400+ again and gives it all back when done: many
    // hits in a row all fit.
    for _ in 0..5 {
        let hit = post_as(&h, key, &body).await;
        assert_eq!(hit.status(), 200);
        assert_eq!(header(&hit, "x-sluice-cache").as_deref(), Some("hit"));
        hit.bytes().await.unwrap();
    }
    let last = post_as(&h, key, &body).await;
    assert_eq!(last.status(), 200);
    // Only the miss's usage is spent.
    let left = number(&last, "x-ratelimit-remaining-tokens");
    assert!(
        left + used + 2 >= after_miss,
        "{left} + {used} vs {after_miss}"
    );
}

fn redis_or_skip() -> Option<RedisServer> {
    RedisServer::start()
}

#[tokio::test]
async fn two_instances_share_one_limit_through_redis() {
    let Some(redis) = redis_or_skip() else {
        return;
    };
    let url = redis.url();
    let a = managed(|c| {
        c.rate_limit.requests_per_minute = Some(4);
        c.rate_limit.tokens_per_minute = Some(1_000);
        c.rate_limit.redis_url = Some(url.clone());
    })
    .await;
    let mut config = common::config_for(&a.mock.base_url());
    config.auth.client_keys = parse_client_keys(CLIENT_KEYS).unwrap();
    config.rate_limit.requests_per_minute = Some(4);
    config.rate_limit.tokens_per_minute = Some(1_000);
    config.rate_limit.redis_url = Some(url);
    let b = sluice::server::start(config).await.unwrap();
    let b_url = format!("http://{}/v1/chat/completions", b.addr());

    let send_body = |to_b: bool, key: &'static str, body: Value| {
        let request = if to_b {
            http().post(&b_url)
        } else {
            http().post(a.url("/v1/chat/completions"))
        };
        request.bearer_auth(key).json(&body).send()
    };
    let send = |to_b: bool, key: &'static str| send_body(to_b, key, chat("shared"));
    let rate_keys = || {
        redis
            .query::<Vec<String>>(&["KEYS", "sluice:rl:*"])
            .unwrap_or_default()
    };
    // Each instance connects to Redis in the background: wait until each
    // keeps its limits there (another client's requests show it).
    for to_b in [false, true] {
        let shared = common::eventually(Duration::from_secs(10), || async {
            redis.query::<String>(&["FLUSHALL"]);
            send(to_b, "ck-team-b-0002").await.unwrap();
            !rate_keys().is_empty()
        })
        .await;
        assert!(shared, "instance b: {to_b}: the limit never reached Redis");
    }
    redis.query::<String>(&["FLUSHALL"]);

    let mut remaining = Vec::new();
    let mut tokens = Vec::new();
    for i in 0..4 {
        // A new prompt each time: no cache hit gives its tokens back.
        let body = chat(&format!("shared {i}"));
        let response = send_body(i % 2 == 1, "ck-team-a-0001", body).await.unwrap();
        assert_eq!(response.status(), 200, "request {i}");
        remaining.push(number(&response, "x-ratelimit-remaining-requests"));
        tokens.push(number(&response, "x-ratelimit-remaining-tokens"));
        response.bytes().await.unwrap();
    }
    assert!(
        tokens.windows(2).all(|w| w[1] < w[0]) && tokens[0] < 1_000,
        "one token allowance across both instances: {tokens:?}"
    );
    assert_eq!(
        remaining,
        [3, 2, 1, 0],
        "one allowance across both instances"
    );
    for to_b in [false, true] {
        let refused = send(to_b, "ck-team-a-0001").await.unwrap();
        assert_eq!(refused.status(), 429, "instance b: {to_b}");
        assert!(header(&refused, "retry-after").is_some());
    }
    // The state is one Redis key per client and limit, with an expiry.
    let keys = rate_keys();
    assert_eq!(keys.len(), 2, "{keys:?}");
    for key in &keys {
        let ttl: i64 = redis.query(&["PTTL", key]).unwrap();
        assert!(ttl > 0 && ttl <= 61_000, "{key}: {ttl}");
    }
    // A request needing more than a minute's tokens, through the script.
    let mut huge = chat("huge");
    huge["max_tokens"] = json!(2_000);
    let too_large = http()
        .post(&b_url)
        .bearer_auth("ck-team-b-0002")
        .json(&huge)
        .send()
        .await
        .unwrap();
    assert_eq!(too_large.status(), 429);
    assert_eq!(error_of(too_large).await["code"], "request_too_large");
    b.shutdown();
}

#[tokio::test]
async fn redis_down_fails_open_to_the_local_limit() {
    let Some(redis) = redis_or_skip() else {
        return;
    };
    let url = redis.url();
    let h = managed(|c| {
        c.rate_limit.requests_per_minute = Some(3);
        c.rate_limit.tokens_per_minute = Some(100_000);
        c.rate_limit.redis_url = Some(url);
    })
    .await;
    let fallbacks = || async {
        common::metric(&h.url(""), "sluice_rate_limit_redis_fallbacks_total")
            .await
            .unwrap_or(0.0)
    };
    redis.stop();
    let before = fallbacks().await;
    let started = std::time::Instant::now();
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let response = post_as(&h, Some("ck-team-a-0001"), &chat("redis down")).await;
        statuses.push(response.status().as_u16());
        assert!(header(&response, "x-ratelimit-limit-requests").is_some());
        response.bytes().await.unwrap();
    }
    assert_eq!(
        statuses,
        [200, 200, 200, 429],
        "this process's limit applies"
    );
    assert!(fallbacks().await >= before + 4.0);
    // Bounded by the Redis timeout (and then the breaker), never stuck.
    assert!(started.elapsed() < Duration::from_secs(5));
}

/// The `sluice` binary with `args` and `env`, its JSON log lines collected;
/// returns the child, the address it listens on and the log reader.
fn spawn_sluice(
    args: &[&str],
    env: &[(&str, &str)],
) -> (
    std::process::Child,
    String,
    std::thread::JoinHandle<Vec<String>>,
) {
    use std::io::{BufRead, BufReader};
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"));
    command
        .args(args)
        .env_remove("RUST_LOG")
        .env("SLUICE_LOG__FORMAT", "json")
        .env("SLUICE_LOG__LEVEL", "debug")
        .current_dir(std::env::temp_dir())
        .stderr(std::process::Stdio::piped());
    for (k, v) in env {
        command.env(k, v);
    }
    let mut child = command.spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut lines = Vec::new();
        for line in BufReader::new(stderr).lines() {
            let line = line.unwrap();
            if let Ok(v) = serde_json::from_str::<Value>(&line)
                && let Some(addr) = v["fields"]["addr"].as_str()
            {
                let _ = addr_tx.send(addr.to_owned());
            }
            lines.push(line);
        }
        lines
    });
    let addr = addr_rx.recv_timeout(Duration::from_secs(30)).unwrap();
    (child, addr, reader)
}

#[tokio::test]
async fn keys_never_reach_the_logs() {
    let mock = sluice::mock::MockUpstream::start(MockOptions::default())
        .await
        .unwrap();
    let env = [
        ("CLIENT_KEYS", "team-a:ck-secret-team-a"),
        ("UPSTREAM_KEY", "sk-secret-upstream"),
        ("SLUICE_AUTH__CLIENT_KEYS_ENV", "CLIENT_KEYS"),
        ("SLUICE_UPSTREAMS__0__API_KEY_ENV", "UPSTREAM_KEY"),
        ("SLUICE_UPSTREAMS__0__PREWARM", "0"),
        ("SLUICE_RATE_LIMIT__REQUESTS_PER_MINUTE", "2"),
    ];
    let (mut child, addr, reader) = spawn_sluice(
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            &mock.base_url(),
        ],
        &env,
    );
    let url = format!("http://{addr}/v1/chat/completions");
    for key in [
        Some("ck-secret-team-a"),
        Some("ck-secret-wrong"),
        None,
        Some("ck-secret-team-a"),
        Some("ck-secret-team-a"),
    ] {
        let mut request = http().post(&url).json(&chat("log me"));
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        let response = request.send().await.unwrap();
        let body = response.text().await.unwrap();
        assert!(
            !body.contains("ck-secret") && !body.contains("sk-secret"),
            "{body}"
        );
    }
    let _ = child.kill();
    let _ = child.wait();
    let lines = reader.join().unwrap();
    assert!(
        lines.iter().any(|l| l.contains("\"status\":401")),
        "the refusals are logged: {lines:?}"
    );
    assert!(
        lines.iter().any(|l| l.contains("\"status\":429")),
        "{lines:?}"
    );
    for line in &lines {
        assert!(
            !line.contains("ck-secret") && !line.contains("sk-secret"),
            "a key in the log: {line}"
        );
    }

    // check-config shows neither.
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["check-config"])
        .envs(env)
        .current_dir(std::env::temp_dir())
        .output()
        .unwrap();
    assert!(output.status.success());
    let printed = String::from_utf8_lossy(&output.stdout);
    assert!(
        printed.contains("client_keys_env = \"CLIENT_KEYS\""),
        "{printed}"
    );
    assert!(
        !printed.contains("ck-secret") && !printed.contains("sk-secret"),
        "{printed}"
    );
}

#[test]
fn an_upstream_key_open_to_the_network_refuses_to_start() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["serve", "--listen", "0.0.0.0:0"])
        .env("UPSTREAM_KEY", "sk-secret-upstream")
        .env("SLUICE_UPSTREAMS__0__API_KEY_ENV", "UPSTREAM_KEY")
        .current_dir(std::env::temp_dir())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("upstreams[0].api_key_env") && stderr.contains("client_keys_env"),
        "{stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    assert!(!stderr.contains("sk-secret"));
}
