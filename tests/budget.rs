//! Token budget end to end: what the upstream receives when sluice prunes
//! and compresses, and the prompt-token headers.

#![expect(clippy::unwrap_used, reason = "tests fail loudly on unexpected errors")]

mod common;

use common::prompt::{count, counts, send};
use common::{Harness, error_of};
use serde_json::{Value, json};
use sluice::config::CompressLevel;
use sluice::mock::MockOptions;
use sluice::openai::Endpoint;
use sluice::tokens::Encoding;

fn file(name: &str, lines: usize) -> String {
    (0..lines)
        .map(|i| format!("pub fn {name}_{i}(x: u32) -> u32 {{ x + {i} }}\n"))
        .collect()
}

/// A coding-agent conversation of about `rounds` × 1,000 tokens.
fn agent(rounds: usize, question: &str) -> Value {
    let mut messages =
        vec![json!({"role": "system", "content": "You are a careful coding agent."})];
    messages.push(json!({"role": "user", "content": "Refactor the cache."}));
    for r in 0..rounds {
        let id = format!("call_{r}");
        messages.push(json!({"role": "assistant", "content": null, "tool_calls": [{
            "id": id, "type": "function",
            "function": {"name": "read_file", "arguments": format!("{{\"path\":\"src/f{r}.rs\"}}")}
        }]}));
        messages.push(
            json!({"role": "tool", "tool_call_id": id, "content": file(&format!("f{r}"), 60)}),
        );
        messages.push(
            json!({"role": "assistant", "content": format!("Read src/f{r}.rs; it adds offsets.")}),
        );
    }
    messages.push(json!({"role": "user", "content": question}));
    json!({"model": "gpt-4o", "messages": messages})
}

fn upstream_body(h: &Harness, path: &str) -> Value {
    serde_json::from_slice(&h.last_upstream_request(path).body).unwrap()
}

#[tokio::test]
async fn every_understood_request_reports_its_prompt_tokens() {
    let h = Harness::start().await;
    let body = json!({"model": "gpt-4o-mini", "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "How many tokens is this?"},
    ]});
    let response = send(&h, "/v1/chat/completions", &body, &[]).await;
    assert_eq!(response.status(), 200);
    let expected = count(Endpoint::ChatCompletions, &body);
    assert_eq!(counts(&response), (expected, expected));
    // Nothing to change: the client's own bytes went upstream.
    assert_eq!(
        h.last_upstream_request("/v1/chat/completions").body,
        serde_json::to_vec(&body).unwrap()
    );
    // A cache hit reports the same.
    let hit = send(&h, "/v1/chat/completions", &body, &[]).await;
    assert_eq!(hit.headers()["x-sluice-cache"], "hit");
    assert_eq!(counts(&hit), (expected, expected));

    let embeddings = json!({"model": "text-embedding-3-small", "input": ["one two", "three"]});
    let response = send(&h, "/v1/embeddings", &embeddings, &[]).await;
    assert_eq!(response.status(), 200);
    let miss = counts(&response);
    assert!(miss.0 > 0);
    // Its hit, put together from stored items, reports what the miss did
    // (not the upstream's own count, which differs here).
    let hit = send(&h, "/v1/embeddings", &embeddings, &[]).await;
    assert_eq!(hit.headers()["x-sluice-cache"], "hit");
    assert_eq!(counts(&hit), miss);
    // And a request mixing stored and new items counts them all.
    let mixed = json!({"model": "text-embedding-3-small", "input": ["three", "four five six"]});
    let response = send(&h, "/v1/embeddings", &mixed, &[]).await;
    let (original, sent) = counts(&response);
    assert_eq!(original, sent);
    assert!(original > 0);
    let completion = json!({"model": "gpt-3.5-turbo-instruct", "prompt": "Say hi"});
    let response = send(&h, "/v1/completions", &completion, &[]).await;
    let expected = count(Endpoint::Completions, &completion);
    // The completion model counts with cl100k_base.
    assert_eq!(counts(&response).0, Encoding::Cl100kBase.count("Say hi"));
    assert!(expected > 0);
}

#[tokio::test]
async fn pruning_on_request_cuts_the_conversation_upstream_receives() {
    let h = Harness::start().await;
    let body = agent(40, "What should we change next?");
    let response = send(
        &h,
        "/v1/chat/completions",
        &body,
        &[("x-sluice-prune", "on")],
    )
    .await;
    assert_eq!(response.status(), 200);
    let (original, sent) = counts(&response);
    assert_eq!(original, count(Endpoint::ChatCompletions, &body));
    assert!(original > 30_000, "{original}");
    assert!(sent <= 4000, "{sent}");
    let upstream = upstream_body(&h, "/v1/chat/completions");
    assert_eq!(count(Endpoint::ChatCompletions, &upstream), sent);
    let messages = upstream["messages"].as_array().unwrap();
    assert_eq!(messages[0]["role"], "system");
    assert_eq!(
        messages.last().unwrap()["content"],
        "What should we change next?"
    );
    // At most 5 entries besides the system message, tool results counted.
    let counted = messages.iter().filter(|m| m["role"] != "system").count();
    assert!(counted <= 5, "{counted}");
    assert_eq!(upstream["model"], "gpt-4o");
    // Off by default: the same request without the header goes whole.
    let body = agent(3, "And now?");
    let response = send(&h, "/v1/chat/completions", &body, &[]).await;
    let (original, sent) = counts(&response);
    assert_eq!(original, sent);
    assert_eq!(upstream_body(&h, "/v1/chat/completions"), body);
}

#[tokio::test]
async fn pruning_by_config_and_off_by_header() {
    let h = Harness::start_with(MockOptions::default(), |c| {
        c.prune.enabled = true;
        c.prune.max_context_tokens = 2000;
    })
    .await;
    let body = agent(10, "Which file next?");
    let response = send(&h, "/v1/chat/completions", &body, &[]).await;
    let (original, sent) = counts(&response);
    assert!(sent <= 2000 && original > sent, "{original} {sent}");
    let response = send(
        &h,
        "/v1/chat/completions",
        &body,
        &[("x-sluice-prune", "off")],
    )
    .await;
    assert_eq!(response.headers()["x-sluice-cache"], "miss");
    let (original, sent) = counts(&response);
    assert_eq!(original, sent);
    assert_eq!(upstream_body(&h, "/v1/chat/completions"), body);
}

#[tokio::test]
async fn the_question_about_an_early_file_keeps_its_answer() {
    let h = Harness::start_with(MockOptions::default(), |c| c.prune.enabled = true).await;
    let body = agent(30, "Before we stop: what does f2_41 in src/f2.rs add?");
    let response = send(&h, "/v1/chat/completions", &body, &[]).await;
    assert_eq!(response.status(), 200);
    let upstream = upstream_body(&h, "/v1/chat/completions").to_string();
    assert!(
        upstream.contains("pub fn f2_41(x: u32) -> u32 { x + 41 }"),
        "{upstream}"
    );
    assert!(upstream.contains("[sluice removed 60 lines: output of read_file"));
}

#[tokio::test]
async fn large_and_streamed_requests_are_pruned_too() {
    let h = Harness::start_with(MockOptions::default(), |c| c.prune.enabled = true).await;
    let mut body = agent(60, "Summarise.");
    body["stream"] = json!(true);
    // Large enough to be pruned off the async workers.
    assert!(serde_json::to_vec(&body).unwrap().len() > 100_000);
    let response = send(&h, "/v1/chat/completions", &body, &[]).await;
    assert_eq!(response.status(), 200);
    let (original, sent) = counts(&response);
    assert!(original > 50_000 && sent <= 4000, "{original} {sent}");
    let text = response.text().await.unwrap();
    assert!(text.trim_end().ends_with("data: [DONE]"));
    // The SDK, unchanged, gets its answer.
    let (content, chunks, _) = h.sdk_chat_stream(&body).await;
    assert!(!content.is_empty() && chunks > 1);
}

#[tokio::test]
async fn responses_input_items_are_pruned_with_their_outputs() {
    let h = Harness::start_with(MockOptions::default(), |c| c.prune.enabled = true).await;
    let mut input = vec![json!({"role": "user", "content": "start"})];
    for r in 0..30 {
        let id = format!("fc_{r}");
        input.push(
            json!({"type": "function_call", "call_id": id, "name": "read_file", "arguments": "{}"}),
        );
        input.push(json!({"type": "function_call_output", "call_id": id, "output": file(&format!("r{r}"), 50)}));
    }
    input.push(json!({"role": "user", "content": "next?"}));
    let body = json!({"model": "gpt-4.1", "instructions": "Be careful.", "input": input});
    let response = send(&h, "/v1/responses", &body, &[]).await;
    assert_eq!(response.status(), 200);
    let (original, sent) = counts(&response);
    assert!(original > 20_000 && sent <= 4000, "{original} {sent}");
    let upstream = upstream_body(&h, "/v1/responses");
    assert_eq!(upstream["instructions"], "Be careful.");
    let items = upstream["input"].as_array().unwrap();
    let calls: Vec<&Value> = items
        .iter()
        .filter(|i| i["type"] == "function_call")
        .collect();
    let outputs: Vec<&Value> = items
        .iter()
        .filter(|i| i["type"] == "function_call_output")
        .collect();
    assert_eq!(calls.len(), outputs.len());
    for (call, output) in calls.iter().zip(&outputs) {
        assert_eq!(call["call_id"], output["call_id"]);
    }
}

#[tokio::test]
async fn compression_levels_by_config_and_header() {
    let h = Harness::start().await;
    let text = "Look at this:   \r\n\r\n\r\n\r\n```rust\n// a comment\nfn main() {} // entry\n\n\n```\nThanks.  ";
    let body = json!({"model": "gpt-4o", "messages": [{"role": "user", "content": text}]});
    // safe, the default: whitespace outside fences only.
    send(&h, "/v1/chat/completions", &body, &[]).await;
    let sent = upstream_body(&h, "/v1/chat/completions");
    assert_eq!(
        sent["messages"][0]["content"],
        "Look at this:\n\n```rust\n// a comment\nfn main() {} // entry\n\n\n```\nThanks."
    );
    // aggressive: comments and blank lines in the code too.
    let response = send(
        &h,
        "/v1/chat/completions",
        &body,
        &[("x-sluice-compress", "aggressive")],
    )
    .await;
    let (original, sent_tokens) = counts(&response);
    assert!(sent_tokens < original, "{original} {sent_tokens}");
    let sent = upstream_body(&h, "/v1/chat/completions");
    assert_eq!(
        sent["messages"][0]["content"],
        "Look at this:\n\n```rust\nfn main() {}\n```\nThanks."
    );
    // off: the client's bytes.
    send(
        &h,
        "/v1/chat/completions",
        &body,
        &[("x-sluice-compress", "off")],
    )
    .await;
    assert_eq!(
        h.last_upstream_request("/v1/chat/completions").body,
        serde_json::to_vec(&body).unwrap()
    );

    let off = Harness::start_with(MockOptions::default(), |c| {
        c.compress.level = CompressLevel::Off
    })
    .await;
    send(&off, "/v1/chat/completions", &body, &[]).await;
    assert_eq!(
        off.last_upstream_request("/v1/chat/completions").body,
        serde_json::to_vec(&body).unwrap()
    );
}

#[tokio::test]
async fn aggressive_compression_cuts_an_oversized_message() {
    let h = Harness::start_with(MockOptions::default(), |c| {
        c.compress.level = CompressLevel::Aggressive;
        c.compress.max_prompt_tokens = 500;
    })
    .await;
    let log: String = (0..3000)
        .map(|i| format!("request {i} served in {}ms\n", i % 17))
        .collect();
    let body = json!({"model": "gpt-4o", "messages": [{"role": "user", "content": log}]});
    let response = send(&h, "/v1/chat/completions", &body, &[]).await;
    let (original, sent) = counts(&response);
    assert!(original > 20_000 && sent < 520, "{original} {sent}");
    let content = upstream_body(&h, "/v1/chat/completions")["messages"][0]["content"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(content.starts_with("request 0 served"));
    assert!(content.ends_with("request 2999 served in 7ms\n"));
    assert!(content.contains("tokens omitted"));
}

#[tokio::test]
async fn bad_override_headers_are_400_and_the_next_request_is_served() {
    let h = Harness::start().await;
    let body = json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]});
    for (name, value) in [
        ("x-sluice-prune", "maybe"),
        ("x-sluice-compress", "extreme"),
    ] {
        let response = send(&h, "/v1/chat/completions", &body, &[(name, value)]).await;
        assert_eq!(response.status(), 400);
        let error = error_of(response).await;
        assert_eq!(error["code"], "invalid_header");
        assert!(error["message"].as_str().unwrap().contains(name));
    }
    assert_eq!(h.mock.request_count(), 0);
    let response = send(
        &h,
        "/v1/chat/completions",
        &body,
        &[("x-sluice-prune", "on")],
    )
    .await;
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn odd_bodies_are_forwarded_not_failed() {
    let h = Harness::start_with(MockOptions::default(), |c| {
        c.prune.enabled = true;
        c.compress.level = CompressLevel::Aggressive;
    })
    .await;
    for body in [
        json!({"model": "gpt-4o", "messages": "not a list"}),
        json!({"model": "gpt-4o", "messages": [1, null, {"role": 5}]}),
        json!({"model": 7, "messages": [{"role": "user", "content": [{"type": "text"}]}]}),
        json!({"messages": [{"role": "tool", "content": "orphan"}]}),
        json!({"model": "gpt-4.1", "input": {"odd": true}}),
    ] {
        let path = if body.get("input").is_some() {
            "/v1/responses"
        } else {
            "/v1/chat/completions"
        };
        let response = send(&h, path, &body, &[]).await;
        assert!(
            response.status().as_u16() < 500,
            "{body}: {}",
            response.status()
        );
    }
}

/// The requests of an agent run, turn by turn: the conversation as it
/// stood after each tool result, growing at the end.
fn agent_turns(rounds: usize) -> Vec<Value> {
    let whole = agent(rounds, "unused");
    let messages = whole["messages"].as_array().unwrap();
    (0..messages.len())
        .filter(|&i| messages[i]["role"] == "tool")
        .map(|i| json!({"model": "gpt-4o", "messages": messages[..=i].to_vec()}))
        .collect()
}

async fn pruned_upstream(h: &Harness, body: &Value) -> bytes::Bytes {
    let response = send(h, "/v1/chat/completions", body, &[]).await;
    assert_eq!(response.status(), 200);
    h.last_upstream_request("/v1/chat/completions").body
}

fn messages_of(body: &[u8]) -> Vec<Value> {
    let value: Value = serde_json::from_slice(body).unwrap();
    value["messages"].as_array().unwrap().clone()
}

/// Replays a growing agent run through a fresh sluice; the prompts sent,
/// turn by turn, and the number of turns pruning acted on whose prompt
/// began with the previous turn's, message for message.
async fn replay_run(prefix_stable: bool) -> (Vec<bytes::Bytes>, usize, usize) {
    let h = Harness::start_with(MockOptions::default(), |c| {
        c.prune.enabled = true;
        c.prune.max_context_tokens = 8000;
        c.prune.max_messages = 1000;
        c.prune.prefix_stable = prefix_stable;
        c.cache.enabled = false;
        c.compress.level = CompressLevel::Off;
    })
    .await;
    let turns = agent_turns(40);
    let mut bodies = Vec::new();
    let mut sent: Vec<Vec<Value>> = Vec::new();
    for turn in &turns {
        let body = pruned_upstream(&h, turn).await;
        let messages = messages_of(&body);
        assert!(
            count(Endpoint::ChatCompletions, &json!({"messages": messages})) <= 8000,
            "over the budget"
        );
        sent.push(messages);
        bodies.push(body);
    }
    let pruned: Vec<usize> = (1..turns.len())
        .filter(|&t| sent[t].len() < turns[t]["messages"].as_array().unwrap().len())
        .collect();
    let appended = pruned
        .iter()
        .filter(|&&t| sent[t].starts_with(&sent[t - 1]))
        .count();
    (bodies, appended, pruned.len())
}

/// With `prefix_stable` a growing agent run's pruned prompts grow by
/// appending on most turns: each begins with the previous one, message for
/// message, so the provider's prompt cache keeps serving it, where the
/// tightest cut changes the beginning on most turns. The cut is made from
/// the conversation alone: a second replica, started fresh, sends the same
/// bytes for the same turn.
#[tokio::test]
async fn prefix_stable_cuts_append_and_are_the_same_on_a_fresh_replica() {
    let (stable, appended, pruned) = replay_run(true).await;
    assert!(pruned >= 10, "pruning acted on {pruned} turns");
    let (_, tight_appended, tight_pruned) = replay_run(false).await;
    assert_eq!(pruned, tight_pruned);
    assert!(
        appended * 2 >= pruned && appended >= tight_appended * 2,
        "prefix-stable: {appended} of {pruned} turns appended; tightest cut: {tight_appended}"
    );
    // A fresh replica sends the same bytes, turn by turn.
    let (again, _, _) = replay_run(true).await;
    assert_eq!(again, stable);
}

/// A message carrying a client's cache marker (`cache_control`) is sent as
/// the client wrote it: not compressed, not cut, not dropped; a
/// `prompt_cache_key` goes upstream as sent.
#[tokio::test]
async fn messages_with_cache_markers_are_sent_as_written() {
    let h = Harness::start_with(MockOptions::default(), |c| {
        c.prune.enabled = true;
        c.prune.max_context_tokens = 2000;
        c.compress.level = CompressLevel::Aggressive;
    })
    .await;
    let mut body = agent(20, "What next?");
    let marked = json!({"role": "user", "content": [{
        "type": "text",
        "text": format!("Context, kept as is:   \n\n\n\n{}", file("marked", 40)),
        "cache_control": {"type": "ephemeral"}
    }]});
    let messages = body["messages"].as_array_mut().unwrap();
    messages.insert(1, marked.clone());
    body["prompt_cache_key"] = json!("agent-run-7");
    let response = send(&h, "/v1/chat/completions", &body, &[]).await;
    let (original, sent) = counts(&response);
    assert!(sent < original, "nothing was pruned: {original} {sent}");
    let upstream = h.last_upstream_request("/v1/chat/completions").body;
    let text = std::str::from_utf8(&upstream).unwrap();
    assert!(
        text.contains(&serde_json::to_string(&marked).unwrap()),
        "the marked message was changed or dropped"
    );
    let value: Value = serde_json::from_slice(&upstream).unwrap();
    assert_eq!(value["prompt_cache_key"], "agent-run-7");
}

/// `max_messages` counts the entries of the list (system messages aside):
/// a tool call with its results counts each of them, and a group that
/// would pass the limit goes whole.
#[tokio::test]
async fn max_messages_counts_entries_and_keeps_tool_groups_whole() {
    let h = Harness::start_with(MockOptions::default(), |c| {
        c.prune.enabled = true;
        c.prune.max_context_tokens = 100_000;
        c.prune.max_messages = 10;
    })
    .await;
    let mut messages = vec![
        json!({"role": "system", "content": "Be brief."}),
        json!({"role": "user", "content": "Look around."}),
    ];
    for r in 0..6 {
        let ids: Vec<String> = (0..3).map(|i| format!("call_{r}_{i}")).collect();
        messages.push(
            json!({"role": "assistant", "content": null, "tool_calls": ids.iter().map(|id| json!({
            "id": id, "type": "function", "function": {"name": "ls", "arguments": "{}"}
        })).collect::<Vec<_>>()}),
        );
        for id in &ids {
            messages.push(json!({"role": "tool", "tool_call_id": id, "content": "a b c"}));
        }
        messages.push(json!({"role": "assistant", "content": format!("Round {r} done.")}));
    }
    messages.push(json!({"role": "user", "content": "Summarise."}));
    let body = json!({"model": "gpt-4o", "messages": messages});
    send(&h, "/v1/chat/completions", &body, &[]).await;
    let sent = messages_of(&h.last_upstream_request("/v1/chat/completions").body);
    let counted = sent.iter().filter(|m| m["role"] != "system").count();
    assert!(counted <= 10, "{counted} entries sent");
    assert!(counted >= 6, "{counted} entries sent: more fit");
    // Every call sent has all three of its results, and every result its call.
    let calls: Vec<&str> = sent
        .iter()
        .filter_map(|m| m["tool_calls"].as_array())
        .flatten()
        .filter_map(|c| c["id"].as_str())
        .collect();
    let results: Vec<&str> = sent
        .iter()
        .filter_map(|m| m["tool_call_id"].as_str())
        .collect();
    let mut sorted_calls = calls.clone();
    sorted_calls.sort_unstable();
    let mut sorted_results = results.clone();
    sorted_results.sort_unstable();
    assert_eq!(sorted_calls, sorted_results);
}
