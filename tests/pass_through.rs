//! The pass-through path: with nothing switched on, sluice relays the
//! client's bytes and the upstream's unchanged and does no work on the
//! prompt. Its own test binary: the metrics recorder is one per process,
//! and these tests read its counters.

#![expect(clippy::unwrap_used, reason = "tests fail loudly on unexpected errors")]

mod common;

use common::{Harness, http};
use serde_json::{Value, json};
use sluice::config::CompressLevel;
use sluice::mock::MockOptions;
use sluice::openai::{ApiRequest, Endpoint};
use sluice::tokens::{Counter, Encoding, prompt};

async fn send(
    h: &Harness,
    path: &str,
    body: &Value,
    headers: &[(&str, &str)],
) -> reqwest::Response {
    let mut request = http().post(h.url(path)).json(body);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.unwrap()
}

fn header(response: &reqwest::Response, name: &str) -> Option<u64> {
    response.headers().get(name)?.to_str().ok()?.parse().ok()
}

fn count(endpoint: Endpoint, body: &Value) -> u64 {
    let api = ApiRequest::parse(endpoint, serde_json::to_vec(body).unwrap().into()).unwrap();
    prompt::request(&Counter::new(Encoding::O200kBase), &api)
}

fn counts(response: &reqwest::Response) -> (u64, u64) {
    (
        header(response, "x-sluice-prompt-tokens-original").unwrap(),
        header(response, "x-sluice-prompt-tokens-sent").unwrap(),
    )
}

/// With pruning, compression and token limits off nothing needs the
/// prompt's token count, so none is made: no count headers, no counted
/// tokens in the metrics. A request that asks for pruning itself is still
/// counted, before and after.
#[tokio::test]
async fn nothing_switched_on_counts_nothing() {
    let h = Harness::start_with(MockOptions::default(), |c| {
        c.compress.level = CompressLevel::Off;
        c.prune.enabled = false;
        c.cache.enabled = false;
    })
    .await;
    let body =
        json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hello there"}]});
    let response = send(&h, "/v1/chat/completions", &body, &[]).await;
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "x-sluice-prompt-tokens-original"), None);
    assert_eq!(header(&response, "x-sluice-prompt-tokens-sent"), None);
    let base = format!("http://{}", h.sluice.addr());
    let counted = || async {
        common::metric(&base, "sluice_prompt_tokens_total{stage=\"original\"}")
            .await
            .unwrap_or(0.0)
    };
    assert_eq!(counted().await, 0.0, "a pass-through request was counted");

    let asked = send(
        &h,
        "/v1/chat/completions",
        &body,
        &[("x-sluice-prune", "on")],
    )
    .await;
    assert_eq!(asked.status(), 200);
    let (original, sent) = counts(&asked);
    assert_eq!(original, count(Endpoint::ChatCompletions, &body));
    assert_eq!(sent, original);
    assert!(counted().await >= original as f64);
}
