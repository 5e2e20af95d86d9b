use super::*;
use serde_json::json;
use std::collections::HashSet;

const ENCODING: Encoding = Encoding::O200kBase;

fn budget(max_tokens: u64, max_messages: usize) -> Budget {
    Budget {
        max_tokens,
        max_messages,
        keep_file_content_turns: 1,
        cut_depth: None,
    }
}

/// Prunes `messages`; the kept ones as values (the input when unchanged).
fn run(messages: &Value, budget: &Budget) -> (Vec<Value>, Option<(u64, u64)>) {
    let items: Vec<String> = messages
        .as_array()
        .map(|all| all.iter().map(Value::to_string).collect())
        .unwrap_or_default();
    let items: Vec<&str> = items.iter().map(String::as_str).collect();
    let counter = Counter::new(ENCODING);
    match prune(&counter, ENCODING, &items, 0, budget) {
        None => (messages.as_array().cloned().unwrap_or_default(), None),
        Some(pruned) => {
            let kept: Vec<Value> = serde_json::from_str(&pruned.to_json()).unwrap_or_default();
            // The reported count is the real count of what is kept.
            let recount: u64 = pruned
                .items
                .iter()
                .map(|i| prompt::message(&counter, ENCODING, i))
                .sum::<u64>()
                + REPLY_PRIMING;
            assert_eq!(recount, pruned.after);
            (kept, Some((pruned.before, pruned.after)))
        }
    }
}

fn tokens(messages: &[Value]) -> u64 {
    let counter = Counter::new(ENCODING);
    messages
        .iter()
        .map(|m| prompt::message(&counter, ENCODING, &m.to_string()))
        .sum::<u64>()
        + REPLY_PRIMING
}

fn prose(words: usize, seed: usize) -> String {
    const WORDS: [&str; 12] = [
        "the", "proxy", "answers", "from", "memory", "while", "streams", "relay", "each", "chunk",
        "upstream", "quickly",
    ];
    (0..words)
        .map(|i| WORDS[(i * 7 + seed) % WORDS.len()])
        .collect::<Vec<_>>()
        .join(" ")
}

fn file(name: &str, lines: usize) -> String {
    (0..lines)
        .map(|i| format!("fn {name}_{i}() -> u32 {{ {i} }}\n"))
        .collect()
}

/// An agent transcript: system, task, then rounds of a tool call reading a
/// file, its result and a comment; a last user question.
fn agent(rounds: usize, question: &str) -> Value {
    let mut messages = vec![
        json!({"role": "system", "content": "You are a coding agent."}),
        json!({"role": "user", "content": "Please refactor the cache module."}),
    ];
    for r in 0..rounds {
        let id = format!("call_{r}");
        messages.push(json!({"role": "assistant", "content": null, "tool_calls": [
            {"id": id, "type": "function", "function": {"name": "read_file", "arguments": format!("{{\"path\":\"src/m{r}.rs\"}}")}}
        ]}));
        messages.push(
            json!({"role": "tool", "tool_call_id": id, "content": file(&format!("m{r}"), 60)}),
        );
        messages.push(json!({"role": "assistant", "content": prose(40, r)}));
        if r % 3 == 2 {
            messages.push(json!({"role": "user", "content": prose(20, r + 1)}));
        }
    }
    messages.push(json!({"role": "user", "content": question}));
    Value::Array(messages)
}

/// Every tool result follows its call, every call has its results.
fn assert_integrity(kept: &[Value]) {
    let mut open: HashSet<String> = HashSet::new();
    let mut answered: HashSet<String> = HashSet::new();
    for m in kept {
        if let Some(calls) = m["tool_calls"].as_array() {
            for c in calls {
                open.insert(c["id"].as_str().unwrap_or_default().to_owned());
            }
        }
        if m["type"] == "function_call" {
            open.insert(m["call_id"].as_str().unwrap_or_default().to_owned());
        }
        let result = m["tool_call_id"].as_str().or_else(|| {
            (m["type"] == "function_call_output").then(|| m["call_id"].as_str().unwrap_or_default())
        });
        if let Some(id) = result {
            assert!(open.contains(id), "result {id} without its call");
            answered.insert(id.to_owned());
        }
    }
    for id in open {
        assert!(answered.contains(&id), "call {id} without its result");
    }
}

#[test]
fn within_budget_is_untouched() {
    let messages = json!([
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "bye"},
    ]);
    let (_, pruned) = run(&messages, &budget(4000, 5));
    assert!(pruned.is_none());
}

#[test]
fn long_transcripts_fit_the_budget_with_system_and_question_kept() {
    let messages = agent(30, "What should we do next?");
    let before = tokens(messages.as_array().map_or(&[][..], Vec::as_slice));
    assert!(before > 20_000, "{before}");
    for max in [1000, 4000, 8000] {
        let (kept, counts) = run(&messages, &budget(max, 5));
        let (b, after) = counts.unwrap_or_default();
        assert_eq!(b, before);
        assert!(after <= max, "{after} > {max}");
        assert_eq!(tokens(&kept), after);
        assert_eq!(kept[0]["role"], "system");
        assert_eq!(
            kept.last().map(|m| m["content"].clone()),
            Some(json!("What should we do next?"))
        );
        assert!(kept.iter().filter(|m| m["role"] != "system").count() <= 5 + 1);
        assert_integrity(&kept);
    }
}

#[test]
fn max_messages_bounds_the_window_newest_first() {
    let mut messages = vec![json!({"role": "system", "content": "s"})];
    for i in 0..20 {
        let role = if i % 2 == 0 { "user" } else { "assistant" };
        messages.push(json!({"role": role, "content": format!("message {i}")}));
    }
    let (kept, counts) = run(&Value::Array(messages), &budget(4000, 5));
    assert!(counts.is_some());
    let contents: Vec<&str> = kept.iter().filter_map(|m| m["content"].as_str()).collect();
    assert_eq!(
        contents,
        // The latest user message (18), the reply after it (19), three more.
        [
            "s",
            "message 15",
            "message 16",
            "message 17",
            "message 18",
            "message 19"
        ]
    );
}

#[test]
fn tool_calls_are_kept_or_dropped_with_all_their_results() {
    // Parallel calls with two results, then more rounds.
    let mut messages = vec![json!({"role": "user", "content": "go"})];
    for r in 0..12 {
        let (a, b) = (format!("a{r}"), format!("b{r}"));
        messages.push(json!({"role": "assistant", "content": null, "tool_calls": [
            {"id": a, "type": "function", "function": {"name": "run", "arguments": "{}"}},
            {"id": b, "type": "function", "function": {"name": "run", "arguments": "{}"}},
        ]}));
        messages.push(json!({"role": "tool", "tool_call_id": a, "content": prose(30 + r * 10, r)}));
        messages.push(json!({"role": "tool", "tool_call_id": b, "content": prose(50, r)}));
    }
    messages.push(json!({"role": "user", "content": "status?"}));
    // An orphan result (its call is not in the list) is never sent.
    messages.insert(
        1,
        json!({"role": "tool", "tool_call_id": "gone", "content": "old"}),
    );
    let messages = Value::Array(messages);
    for max in [100, 300, 700, 1500, 3000] {
        for max_messages in [1, 3, 5, 8] {
            let (kept, _) = run(&messages, &budget(max, max_messages));
            assert_integrity(&kept);
            assert!(kept.iter().all(|m| m["tool_call_id"] != "gone"));
        }
    }
}

#[test]
fn older_file_contents_become_markers_before_messages_are_dropped() {
    let messages = json!([
        {"role": "user", "content": "read the files"},
        {"role": "assistant", "content": null, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "read_file", "arguments": "{\"path\":\"src/a.rs\"}"}}
        ]},
        {"role": "tool", "tool_call_id": "c1", "content": file("a", 200)},
        {"role": "assistant", "content": "read it"},
        {"role": "user", "content": "and now?"},
    ]);
    let (kept, counts) = run(&messages, &budget(1000, 5));
    assert!(counts.is_some());
    assert_eq!(kept.len(), 5, "nothing dropped: {kept:?}");
    let marker = kept[2]["content"].as_str().unwrap_or_default();
    assert!(
        marker
            .starts_with(r#"[sluice removed 200 lines: output of read_file({"path":"src/a.rs"})"#),
        "{marker}"
    );
    // The current turn keeps its files.
    let current = json!([
        {"role": "user", "content": "read the files"},
        {"role": "assistant", "content": null, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "read_file", "arguments": "{}"}}
        ]},
        {"role": "tool", "tool_call_id": "c1", "content": file("a", 40)},
    ]);
    let (kept, _) = run(&current, &budget(1000, 5));
    assert_eq!(kept[2]["content"], file("a", 40));
}

#[test]
fn messages_the_question_names_outlive_the_window() {
    let messages = agent(20, "Before we stop: in src/m1.rs, what does m1_17 return?");
    let (kept, _) = run(&messages, &budget(4000, 5));
    let all: String = kept.iter().map(Value::to_string).collect();
    assert!(all.contains("fn m1_17() -> u32 { 17 }"), "{all}");
    assert_integrity(&kept);
    // A plain window would not have kept it: the answer is 19 rounds old.
    let window: Vec<&Value> = messages
        .as_array()
        .map(|m| m.iter().rev().skip(1).take(6).collect())
        .unwrap_or_default();
    assert!(!window.iter().any(|m| m.to_string().contains("m1_17")));
}

#[test]
fn an_oversized_question_is_cut_not_dropped() {
    let long = format!("{}\nWHAT IS THE TAIL?", prose(6000, 1));
    let messages = json!([
        {"role": "system", "content": "Be brief."},
        {"role": "assistant", "content": "earlier"},
        {"role": "user", "content": long},
    ]);
    let (kept, counts) = run(&messages, &budget(500, 5));
    let (_, after) = counts.unwrap_or_default();
    assert!(after <= 500, "{after}");
    assert_eq!(kept[0]["role"], "system");
    let text = kept
        .last()
        .and_then(|m| m["content"].as_str())
        .unwrap_or_default();
    assert!(text.starts_with("proxy "), "{text}");
    assert!(text.ends_with("WHAT IS THE TAIL?"));
    assert!(text.contains("tokens omitted"));
}

#[test]
fn the_turn_in_progress_is_cut_to_fit() {
    let messages = json!([
        {"role": "user", "content": "run the tests"},
        {"role": "assistant", "content": null, "tool_calls": [
            {"id": "t", "type": "function", "function": {"name": "run_command", "arguments": "{\"cmd\":\"cargo test\"}"}}
        ]},
        {"role": "tool", "tool_call_id": "t", "content": file("log", 400)},
    ]);
    let (kept, counts) = run(&messages, &budget(1500, 5));
    let (_, after) = counts.unwrap_or_default();
    assert!(after <= 1500, "{after}");
    assert_eq!(kept.len(), 3);
    let output = kept[2]["content"].as_str().unwrap_or_default();
    assert!(output.starts_with("fn log_0()") && output.ends_with("fn log_399() -> u32 { 399 }\n"));
}

#[test]
fn pruning_a_pruned_list_changes_nothing() {
    for (messages, b) in [
        (agent(25, "what next?"), budget(4000, 5)),
        (agent(10, "and src/m2.rs m2_3?"), budget(2000, 3)),
        (agent(40, "go on"), budget(800, 8)),
    ] {
        let (kept, counts) = run(&messages, &b);
        assert!(counts.is_some());
        let (again, counts) = run(&Value::Array(kept.clone()), &b);
        assert!(counts.is_none(), "pruned twice");
        assert_eq!(again, kept);
    }
}

#[test]
fn responses_items_keep_calls_with_outputs_and_reasoning() {
    let mut input = vec![json!({"role": "user", "content": "start"})];
    for r in 0..15 {
        let id = format!("fc{r}");
        input.push(json!({"type": "reasoning", "id": format!("rs{r}"), "summary": []}));
        input.push(
            json!({"type": "function_call", "call_id": id, "name": "read_file", "arguments": "{}"}),
        );
        input.push(json!({"type": "function_call_output", "call_id": id, "output": file(&format!("r{r}"), 30)}));
        input.push(json!({"role": "assistant", "content": [{"type": "output_text", "text": prose(30, r)}]}));
    }
    input.push(json!({"role": "user", "content": [{"type": "input_text", "text": "done?"}]}));
    let input = Value::Array(input);
    for max in [300, 1000, 3000] {
        let (kept, counts) = run(&input, &budget(max, 5));
        assert!(counts.is_some_and(|(_, after)| after <= max));
        assert_integrity(&kept);
        // A reasoning item never stays without what it led to.
        for (i, item) in kept.iter().enumerate() {
            if item["type"] == "reasoning" {
                assert_eq!(
                    kept.get(i + 1).map(|n| n["type"].clone()),
                    Some(json!("function_call"))
                );
            }
        }
    }
}
