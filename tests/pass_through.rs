//! The pass-through path: with nothing switched on, sluice relays the
//! client's bytes and the upstream's unchanged and does no work on the
//! prompt. Its own test binary: the metrics recorder is one per process,
//! and these tests read its counters.

#![expect(clippy::unwrap_used, reason = "tests fail loudly on unexpected errors")]

mod common;

use common::prompt::{count, counts, header, send};
use common::{Harness, raw_post};
use serde_json::{Value, json};
use sluice::config::CompressLevel;
use sluice::mock::MockOptions;
use sluice::openai::Endpoint;
use sluice::tokens::{Counter, Encoding};

/// With pruning, compression and token limits off nothing needs the
/// prompt's token count, so none is made: no count headers, no counted
/// tokens in the metrics. A request that asks for pruning itself is still
/// counted, before and after.
#[tokio::test]
async fn nothing_switched_on_counts_nothing() {
    let h = quiet().await;
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

/// The value of the `/metrics` series of `name` whose labels include all
/// of `labels` (`key="value"` each).
async fn series(h: &Harness, name: &str, labels: &[&str]) -> Option<f64> {
    let text = common::metrics_text(&format!("http://{}", h.sluice.addr())).await;
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .find(|l| labels.iter().all(|label| l.contains(label)))
        .and_then(|l| l.split_whitespace().last()?.parse().ok())
}

/// sluice with nothing switched on: no cache, no pruning, no compression,
/// no limits.
async fn quiet() -> Harness {
    Harness::start_with(MockOptions::default(), |c| {
        c.compress.level = CompressLevel::Off;
        c.prune.enabled = false;
        c.cache.enabled = false;
    })
    .await
}

/// With nothing switched on, a stream passes byte for byte both ways: the
/// upstream gets the client's request as written (no `stream_options`
/// added), the client gets the upstream's stream as sent. Its usage is
/// then counted by sluice, and labelled so.
#[tokio::test]
async fn a_default_stream_is_relayed_byte_for_byte() {
    let h = quiet().await;
    // Odd spacing and key order: anything re-serialized would show.
    const REQUEST: &str = "{ \"stream\" : true,\n  \"messages\":[{\"content\":\"Tell me about rivers\",\"role\":\"user\"}],\"model\":\"pass-through-1\" }";
    let direct = raw_post(&format!("{}/chat/completions", h.mock.base_url()), REQUEST).await;
    let relayed = raw_post(&h.url("/v1/chat/completions"), REQUEST).await;
    assert_eq!(relayed.0, 200);
    assert!(relayed.1.starts_with("text/event-stream"), "{}", relayed.1);
    assert_eq!(
        String::from_utf8_lossy(&relayed.2),
        String::from_utf8_lossy(&direct.2),
        "the client did not get the upstream's stream"
    );
    assert_eq!(relayed, direct);
    let sent = h.last_upstream_request("/v1/chat/completions");
    assert_eq!(
        sent.body,
        REQUEST.as_bytes(),
        "the upstream did not get the client's bytes"
    );

    // The completion, counted from the streamed text.
    let text: String = common::sse_data(&String::from_utf8_lossy(&direct.2))
        .iter()
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|chunk| {
            chunk["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    let counter = Counter::new(Encoding::O200kBase);
    let expected = counter.text(counter.encoding(Some("pass-through-1")), &text);
    assert!(expected > 0);
    let labels = [
        "model=\"pass-through-1\"",
        "kind=\"completion\"",
        "usage_source=\"counted\"",
    ];
    let counted = common::eventually(std::time::Duration::from_secs(5), || async {
        series(&h, "sluice_usage_tokens_total", &labels).await == Some(expected as f64)
    })
    .await;
    assert!(
        counted,
        "counted {:?}, expected {expected}",
        series(&h, "sluice_usage_tokens_total", &labels).await
    );
}

/// A client that asks for usage gets the upstream's usage chunk untouched,
/// and the upstream's figures are the ones counted.
#[tokio::test]
async fn a_stream_that_asks_for_usage_keeps_the_upstreams_figures() {
    let h = quiet().await;
    const REQUEST: &str = r#"{"model":"pass-through-2","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"Count for me"}]}"#;
    let direct = raw_post(&format!("{}/chat/completions", h.mock.base_url()), REQUEST).await;
    let relayed = raw_post(&h.url("/v1/chat/completions"), REQUEST).await;
    assert_eq!(relayed, direct);
    let usage = common::sse_data(&String::from_utf8_lossy(&direct.2))
        .iter()
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .find_map(|chunk| chunk["usage"]["completion_tokens"].as_u64())
        .unwrap();
    let labels = [
        "model=\"pass-through-2\"",
        "kind=\"completion\"",
        "usage_source=\"upstream\"",
    ];
    let reported = common::eventually(std::time::Duration::from_secs(5), || async {
        series(&h, "sluice_usage_tokens_total", &labels).await == Some(usage as f64)
    })
    .await;
    assert!(
        reported,
        "{:?}",
        series(&h, "sluice_usage_tokens_total", &labels).await
    );
}

/// A JSON answer passes byte for byte too.
#[tokio::test]
async fn a_default_json_request_is_relayed_byte_for_byte() {
    let h = quiet().await;
    const REQUEST: &str =
        "{\"messages\" :[{\"role\":\"user\",\"content\":\"hi\"}], \"model\":\"pass-through-3\"}";
    let direct = raw_post(&format!("{}/chat/completions", h.mock.base_url()), REQUEST).await;
    let relayed = raw_post(&h.url("/v1/chat/completions"), REQUEST).await;
    assert_eq!(relayed, direct);
    let sent = h.last_upstream_request("/v1/chat/completions");
    assert_eq!(sent.body, REQUEST.as_bytes());
}
