//! The evaluation corpus (`benches/corpus/conversations`), read by the
//! reports, and what they compare sluice with: a newest-first window.

#![allow(
    dead_code,
    clippy::unwrap_used,
    reason = "shared by reports that each use part of it"
)]

use std::collections::HashSet;
use std::path::PathBuf;

use serde_json::Value;
use sluice::openai::{ApiRequest, Endpoint};
use sluice::tokens::{Counter, prompt};

pub struct Conversation {
    pub name: String,
    pub kind: String,
    pub endpoint: Endpoint,
    pub request: Value,
    pub fact: Option<String>,
}

pub fn corpus() -> Vec<Conversation> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("benches/corpus/conversations");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    files
        .iter()
        .map(|path| {
            let v: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
            Conversation {
                name: v["name"].as_str().unwrap_or_default().to_owned(),
                kind: v["kind"].as_str().unwrap_or_default().to_owned(),
                endpoint: if v["endpoint"] == "responses" {
                    Endpoint::Responses
                } else {
                    Endpoint::ChatCompletions
                },
                request: v["request"].clone(),
                fact: v["fact"].as_str().map(str::to_owned),
            }
        })
        .collect()
}

pub fn api(endpoint: Endpoint, body: &Value) -> ApiRequest {
    ApiRequest::parse(endpoint, serde_json::to_vec(body).unwrap().into()).unwrap()
}

pub fn list_field(endpoint: Endpoint) -> &'static str {
    if endpoint == Endpoint::Responses {
        "input"
    } else {
        "messages"
    }
}

/// Tokens of a request's messages as pruning budgets them (tools aside).
pub fn budgeted(counter: &Counter, endpoint: Endpoint, body: &Value) -> u64 {
    let mut body = body.clone();
    if let Some(obj) = body.as_object_mut() {
        obj.remove("tools");
    }
    prompt::request(counter, &api(endpoint, &body))
}

/// Tool calls without their results or results without their calls.
pub fn integrity_violations(items: &[Value]) -> usize {
    let mut calls: HashSet<String> = HashSet::new();
    let mut results: HashSet<String> = HashSet::new();
    let mut violations = 0;
    for item in items {
        for call in item["tool_calls"].as_array().into_iter().flatten() {
            calls.insert(call["id"].as_str().unwrap_or_default().to_owned());
        }
        if item["type"] == "function_call" {
            calls.insert(item["call_id"].as_str().unwrap_or_default().to_owned());
        }
        let result = item["tool_call_id"].as_str().or_else(|| {
            (item["type"] == "function_call_output")
                .then(|| item["call_id"].as_str().unwrap_or_default())
        });
        if let Some(id) = result {
            if !calls.contains(id) {
                violations += 1;
            }
            results.insert(id.to_owned());
        }
    }
    violations + calls.difference(&results).count()
}

pub fn is_fixed(item: &Value) -> bool {
    matches!(item["role"].as_str(), Some("system" | "developer"))
}

/// A plain sliding window: system messages, then the newest messages while
/// they fit the budget and the message limit.
pub fn window(
    counter: &Counter,
    conversation: &Conversation,
    max_tokens: u64,
    max_messages: usize,
) -> Value {
    let field = list_field(conversation.endpoint);
    let items = conversation.request[field]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let encoding = counter.encoding(conversation.request["model"].as_str());
    let tokens: Vec<u64> = items
        .iter()
        .map(|i| prompt::message(counter, encoding, &i.to_string()))
        .collect();
    let fixed: u64 = items
        .iter()
        .zip(&tokens)
        .filter(|(i, _)| is_fixed(i))
        .map(|(_, t)| t)
        .sum();
    let mut body = conversation.request.clone();
    body[field] = Value::Array(vec![]);
    let overhead = budgeted(counter, conversation.endpoint, &body);
    let mut room = max_tokens.saturating_sub(overhead + fixed);
    let mut slots = max_messages;
    let mut keep = vec![false; items.len()];
    for (i, item) in items.iter().enumerate() {
        keep[i] = is_fixed(item);
    }
    for i in (0..items.len()).rev() {
        if is_fixed(&items[i]) {
            continue;
        }
        if tokens[i] > room || slots == 0 {
            break;
        }
        room -= tokens[i];
        slots -= 1;
        keep[i] = true;
    }
    body[field] = Value::Array(
        items
            .into_iter()
            .zip(keep)
            .filter(|(_, k)| *k)
            .map(|(i, _)| i)
            .collect(),
    );
    body
}
