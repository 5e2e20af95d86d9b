//! The layer order, pinned by behaviour: what a request that stops early in
//! the pipeline does not pay for, and which rewriting layer sees what.
//!
//! The metrics these tests read are process-wide, so they run one at a time.

#![expect(clippy::unwrap_used, reason = "tests fail loudly on unexpected errors")]

mod common;

use common::{Harness, chat, http, metric};
use serde_json::{Value, json};
use sluice::config::{CompressLevel, Config, Secret, parse_client_keys};
use sluice::mock::MockOptions;

static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const ORIGINAL_TOKENS: &str = "sluice_prompt_tokens_total{stage=\"original\"}";
const CACHE_REQUESTS: &str = "sluice_cache_requests_total";

async fn counted_tokens(h: &Harness) -> f64 {
    metric(&h.url(""), ORIGINAL_TOKENS).await.unwrap_or(0.0)
}

async fn cache_requests(h: &Harness) -> f64 {
    let text = common::metrics_text(&h.url("")).await;
    text.lines()
        .filter(|l| l.starts_with(CACHE_REQUESTS))
        .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn a_cache_hit_counts_no_tokens() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let h = Harness::start().await;
    let body = chat("counted once, when it was a miss");
    let miss = h.post("/v1/chat/completions", &body).await;
    assert_eq!(miss.headers()["x-sluice-cache"], "miss");
    miss.bytes().await.unwrap();
    let after_miss = counted_tokens(&h).await;
    assert!(after_miss > 0.0, "the miss's prompt was counted");

    let hit = h.post("/v1/chat/completions", &body).await;
    assert_eq!(hit.headers()["x-sluice-cache"], "hit");
    hit.bytes().await.unwrap();
    assert_eq!(
        counted_tokens(&h).await,
        after_miss,
        "a hit is answered above the tokens layer"
    );
}

#[tokio::test]
async fn a_request_refused_by_auth_reaches_no_other_layer() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let h = Harness::start_with(MockOptions::default(), |c: &mut Config| {
        c.auth.client_keys = parse_client_keys("team:ck-team-0001").unwrap();
        c.auth.client_keys_env = Some("CLIENT_KEYS".into());
        c.upstreams[0].api_key = Some(Secret::new("sk-upstream"));
        c.upstreams[0].api_key_env = Some("UPSTREAM_KEY".into());
        c.rate_limit.requests_per_minute = Some(1);
    })
    .await;
    let tokens_before = counted_tokens(&h).await;
    let cache_before = cache_requests(&h).await;
    for _ in 0..3 {
        let refused = http()
            .post(h.url("/v1/chat/completions"))
            .bearer_auth("ck-not-a-key")
            .json(&chat("let me in"))
            .send()
            .await
            .unwrap();
        assert_eq!(refused.status(), 401);
        assert!(
            refused
                .headers()
                .get("x-ratelimit-limit-requests")
                .is_none()
        );
        assert!(refused.headers().get("x-sluice-cache").is_none());
    }
    assert_eq!(h.mock.request_count(), 0, "nothing reached the upstream");
    assert_eq!(
        counted_tokens(&h).await,
        tokens_before,
        "nothing was counted"
    );
    assert_eq!(cache_requests(&h).await, cache_before, "no cache lookup");

    // The one request a minute is still there for the real client.
    let allowed = http()
        .post(h.url("/v1/chat/completions"))
        .bearer_auth("ck-team-0001")
        .json(&chat("let me in"))
        .send()
        .await
        .unwrap();
    assert_eq!(allowed.status(), 200);
}

/// Old turns whose text is one log line repeated: long as sent, a few
/// tokens once compression has folded the repeats.
fn repetitive_conversation(turns: usize) -> Value {
    let log = "2026-12-05T10:00:00Z ERROR upstream connection refused: 10.0.0.7:5432 (retrying)\n"
        .repeat(60);
    let mut messages = vec![json!({"role": "system", "content": "You are a helpful assistant."})];
    for turn in 0..turns {
        messages.push(
            json!({"role": "user", "content": format!("turn {turn}: here is the log\n{log}")}),
        );
        messages.push(json!({"role": "assistant", "content": format!("noted turn {turn}")}));
    }
    messages.push(json!({"role": "user", "content": "what should I check first?"}));
    json!({"model": "gpt-4o-mini", "messages": messages})
}

#[tokio::test]
async fn pruning_runs_before_compression() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let h = Harness::start_with(MockOptions::default(), |c: &mut Config| {
        c.cache.enabled = false;
        c.prune.enabled = true;
        c.prune.max_context_tokens = 1_500;
        c.compress.level = CompressLevel::Aggressive;
    })
    .await;
    let body = repetitive_conversation(10);
    let sent = body["messages"].as_array().unwrap().len();
    let answer = h.post("/v1/chat/completions", &body).await;
    assert_eq!(answer.status(), 200);
    answer.bytes().await.unwrap();
    let upstream: Value =
        serde_json::from_slice(&h.last_upstream_request("/v1/chat/").body).unwrap();
    let kept = upstream["messages"].as_array().unwrap().len();
    assert!(kept < sent / 2, "cut to the budget: {kept} of {sent} kept");
    // Pruning saw the old turns as the client sent them (61 lines each) and
    // cut them to its own marker; compressed first, they would have reached
    // pruning as three short lines, been kept, and shown compression's.
    let text = upstream["messages"].to_string();
    assert!(
        text.contains("[sluice removed 61 lines"),
        "pruning saw the uncompressed turns: {text}"
    );
    assert!(
        !text.contains("previous line repeated"),
        "compression did not reach the turns before pruning: {text}"
    );
}
