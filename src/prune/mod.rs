//! Pruning: conversations cut to a token budget before they go upstream.
//!
//! Off unless `[prune] enabled` or the request's `x-sluice-prune: on`.
//! Chat `messages` and Responses `input` items are pruned by
//! [`conversation::prune`] to `max_context_tokens` and `max_messages`;
//! a completion `prompt` (each one, in a batch) past `max_context_tokens`
//! is cut to its head and tail. The budget counts messages as the upstream
//! does, with their per-message overhead, reply priming, and Responses
//! `instructions`; tool definitions cannot be pruned and are not counted
//! against it. Embeddings are left alone.
//!
//! A pruned request leaves its original (and its token count) in
//! [`Original`] for the token headers. Large requests are pruned on the
//! blocking pool, never on the async workers.

pub mod conversation;
pub mod files;
pub mod relevance;

mod service;

pub use service::*;

use std::sync::Arc;

use bytes::Bytes;

use crate::body::Body;
use crate::config::PruneConfig;
use crate::error::Error;
use crate::ingress::Overrides;
use crate::observe::{PRUNE_REQUESTS_TOTAL, PRUNE_TOKENS_REMOVED_TOTAL};
use crate::openai::{ApiRequest, Endpoint};
use crate::tokens::service::{Rewritten, inline, rewrite};
use crate::tokens::{Counter, Original, head_tail, prompt};
pub use conversation::Budget;

/// Share of a cut prompt kept from its start.
const HEAD_RATIO: f64 = 0.6;

#[derive(Debug, Clone)]
pub struct PruneLayer {
    enabled: bool,
    budget: Budget,
    counter: Arc<Counter>,
}

impl PruneLayer {
    pub fn new(config: &PruneConfig, counter: Arc<Counter>) -> PruneLayer {
        PruneLayer {
            enabled: config.enabled,
            budget: Budget {
                max_tokens: config.max_context_tokens as u64,
                max_messages: config.max_messages,
                keep_file_content_turns: config.keep_file_content_turns,
                cut_depth: config.prefix_stable.then_some(config.cut_depth),
            },
            counter,
        }
    }
}

/// What pruning did to a request.
#[derive(Debug)]
pub struct Outcome {
    pub original: ApiRequest,
    /// The pruned request, when anything changed.
    pub pruned: Option<ApiRequest>,
    /// Prompt tokens before (as the token headers count them) and after.
    pub before: u64,
    pub after: u64,
    pub messages_before: usize,
    pub messages_after: usize,
}

/// Prunes `api` to the layer's budget. `known` is its token count when a
/// layer above counted it already (the token rate limit): not counted again.
pub fn run(layer: &PruneLayer, api: &ApiRequest, known: Option<u64>) -> Outcome {
    let counter = &layer.counter;
    let encoding = counter.encoding(api.model());
    let before = known.unwrap_or_else(|| prompt::request(counter, api));
    let unchanged = Outcome {
        original: api.clone(),
        pruned: None,
        before,
        after: before,
        messages_before: 0,
        messages_after: 0,
    };
    let budget = &layer.budget;
    let (field, fixed) = match api.endpoint() {
        Endpoint::ChatCompletions => ("messages", 0),
        Endpoint::Responses => ("input", prompt::instructions(counter, encoding, api)),
        Endpoint::Completions => return prune_prompt(layer, api, unchanged),
        _ => return unchanged,
    };
    let Some(raw) = api.raw(field) else {
        return unchanged;
    };
    if prompt::first_byte(raw) != Some(b'[') {
        // A Responses `input` string: one user message.
        let Ok(text) = serde_json::from_slice::<String>(raw) else {
            return unchanged;
        };
        let room = budget.max_tokens.saturating_sub(fixed + 3 + 4 + 3).max(64);
        return match head_tail(encoding, &text, room, HEAD_RATIO) {
            std::borrow::Cow::Borrowed(_) => unchanged,
            std::borrow::Cow::Owned(cut) => rewritten(counter, api, field, &cut, unchanged),
        };
    }
    let items = api.items(field);
    let Some(pruned) = conversation::prune(counter, encoding, &items, fixed, budget) else {
        return unchanged;
    };
    let mut request = api.clone();
    request.set_raw(field, Bytes::from(pruned.to_json()));
    // Only the list changed: what else the prompt holds (tool definitions)
    // counts the same as before, so no second count of the whole request.
    let after = before.saturating_sub(pruned.before) + pruned.after;
    Outcome {
        messages_before: pruned.messages_before,
        messages_after: pruned.items.len(),
        pruned: Some(request),
        after,
        ..unchanged
    }
}

/// A completion `prompt` (or each of a batch) cut to the budget.
fn prune_prompt(layer: &PruneLayer, api: &ApiRequest, unchanged: Outcome) -> Outcome {
    let encoding = layer.counter.encoding(api.model());
    let max = layer.budget.max_tokens;
    let cut = |text: &str| head_tail(encoding, text, max, HEAD_RATIO).into_owned();
    let prompt = match api.get::<serde_json::Value>("prompt").and_then(Result::ok) {
        Some(serde_json::Value::String(text)) if encoding.count(&text) > max => {
            serde_json::Value::String(cut(&text))
        }
        Some(serde_json::Value::Array(prompts))
            if prompts
                .iter()
                .any(|p| p.as_str().is_some_and(|t| encoding.count(t) > max)) =>
        {
            serde_json::Value::Array(
                prompts
                    .into_iter()
                    .map(|p| match p {
                        serde_json::Value::String(t) => serde_json::Value::String(cut(&t)),
                        other => other,
                    })
                    .collect(),
            )
        }
        _ => return unchanged,
    };
    rewritten(&layer.counter, api, "prompt", &prompt, unchanged)
}

fn rewritten(
    counter: &Counter,
    api: &ApiRequest,
    field: &str,
    value: &impl serde::Serialize,
    unchanged: Outcome,
) -> Outcome {
    let mut request = api.clone();
    if request.set(field, value).is_err() {
        return unchanged;
    }
    let after = prompt::request(counter, &request);
    Outcome {
        pruned: Some(request),
        after,
        messages_before: 1,
        messages_after: 1,
        ..unchanged
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_count_after_pruning_is_the_count_of_what_is_sent() {
        let layer = PruneLayer::new(
            &PruneConfig {
                enabled: true,
                max_context_tokens: 300,
                ..PruneConfig::default()
            },
            Arc::new(Counter::new(crate::tokens::Encoding::O200kBase)),
        );
        let mut messages = vec![json!({"role": "system", "content": "Be brief."})];
        for i in 0..30 {
            messages
                .push(json!({"role": "user", "content": format!("question {i} about the proxy")}));
            messages.push(
                json!({"role": "assistant", "content": format!("answer {i} about the cache")}),
            );
        }
        let tool = json!({"type": "function", "function": {"name": "read_file", "description": "Reads a file.",
            "parameters": {"type": "object", "properties": {"path": {"type": "string", "description": "The path."}}}}});
        for (endpoint, body) in [
            (
                Endpoint::ChatCompletions,
                json!({"model": "gpt-4o", "messages": messages, "tools": [tool]}),
            ),
            (
                Endpoint::Responses,
                json!({"model": "gpt-4.1", "instructions": "Be careful.", "input": messages[1..]}),
            ),
        ] {
            let api = ApiRequest::parse(endpoint, Bytes::from(body.to_string()))
                .unwrap_or_else(|e| panic!("{e}"));
            let outcome = run(&layer, &api, None);
            let pruned = outcome.pruned.unwrap_or_else(|| panic!("not pruned"));
            assert_eq!(outcome.after, prompt::request(&layer.counter, &pruned));
            assert!(outcome.after < outcome.before);
        }
    }
}
