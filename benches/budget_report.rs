//! The token-budget evaluation: the corpus in `benches/corpus/conversations`
//! through pruning and compression, next to a plain sliding window.
//!
//! `cargo bench --bench budget_report` prints, per budget: mean prompt
//! tokens before and after, the reduction, budget and integrity
//! violations, and how often the fact the last question needs survived —
//! for sluice's pruning and for a newest-first window on the same budget.
//! Then what `safe` and `aggressive` compression save, and whether the
//! short chats passed untouched.

#![expect(
    clippy::unwrap_used,
    clippy::print_stdout,
    reason = "a report printed by a benchmark harness"
)]

use std::collections::HashSet;
use std::sync::Arc;

use serde_json::Value;
use sluice::compress::Compressor;
use sluice::config::{CompressConfig, CompressLevel, PruneConfig};
use sluice::prune::{PruneLayer, run};
use sluice::tokens::{Counter, Encoding, prompt};

#[path = "support/corpus.rs"]
mod corpus;

use corpus::*;

/// Picks (and shapes) the request of a conversation for a set, or not.
type Select = fn(&Conversation) -> Option<Value>;

#[derive(Default)]
struct Tally {
    runs: usize,
    before: u64,
    after: u64,
    over_budget: usize,
    integrity: usize,
    facts: usize,
    facts_kept: usize,
}

impl Tally {
    fn add(
        &mut self,
        before: u64,
        after: u64,
        budget: u64,
        items: &[Value],
        fact: Option<&str>,
        sent: &Value,
    ) {
        self.runs += 1;
        self.before += before;
        self.after += after;
        self.over_budget += usize::from(after > budget);
        self.integrity += integrity_violations(items);
        if let Some(fact) = fact {
            self.facts += 1;
            // The fact as the upstream would read it (JSON-escaped in the body).
            let escaped = serde_json::to_string(fact).unwrap();
            let escaped = &escaped[1..escaped.len() - 1];
            self.facts_kept += usize::from(sent.to_string().contains(escaped));
        }
    }

    fn row(&self, label: &str) {
        let runs = self.runs.max(1) as f64;
        let before = self.before as f64 / runs;
        let after = self.after as f64 / runs;
        println!(
            "| {label} | {} | {before:.0} | {after:.0} | {:.1} % | {} | {} | {}/{} ({:.0} %) |",
            self.runs,
            100.0 * (1.0 - after / before.max(1.0)),
            self.over_budget,
            self.integrity,
            self.facts_kept,
            self.facts,
            100.0 * self.facts_kept as f64 / self.facts.max(1) as f64
        );
    }
}

/// Only the file reads of an agent transcript: each `read_file` call with
/// its result (the file-heavy part of the prompt).
fn files_only(c: &Conversation) -> Value {
    let field = list_field(c.endpoint);
    let items = c.request[field].as_array().cloned().unwrap_or_default();
    let mut reads: HashSet<String> = HashSet::new();
    let mut kept = Vec::new();
    for item in items {
        if let Some(calls) = item["tool_calls"].as_array() {
            let ids: Vec<String> = calls
                .iter()
                .filter(|call| call["function"]["name"] == "read_file")
                .filter_map(|call| call["id"].as_str().map(str::to_owned))
                .collect();
            if ids.len() == calls.len() && !ids.is_empty() {
                reads.extend(ids);
                kept.push(item);
            }
        } else if item["type"] == "function_call" && item["name"] == "read_file" {
            reads.insert(item["call_id"].as_str().unwrap_or_default().to_owned());
            kept.push(item);
        } else if let Some(id) = item["tool_call_id"]
            .as_str()
            .or_else(|| item["call_id"].as_str())
            && reads.contains(id)
        {
            kept.push(item);
        }
    }
    let mut body = c.request.clone();
    body[field] = Value::Array(kept);
    body
}

fn main() {
    let corpus = corpus();
    assert!(!corpus.is_empty(), "no corpus");
    let counter = Arc::new(Counter::new(Encoding::O200kBase));
    println!("corpus: {} conversations", corpus.len());
    for c in &corpus {
        let tokens = prompt::request(&counter, &api(c.endpoint, &c.request));
        let items = c.request[list_field(c.endpoint)]
            .as_array()
            .map_or(0, Vec::len);
        println!(
            "  {:<32} {:<6} {:>7} tokens {:>4} items",
            c.name, c.kind, tokens, items
        );
    }

    println!("\n## Pruning (max_messages 5, keep_file_content_turns 1)\n");
    println!(
        "| budget, set, method | runs | mean tokens before | mean after | reduction | over budget | integrity violations | fact kept |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- |");
    for budget in [2000u64, 4000, 8000] {
        for (set, filter) in [
            (
                "agent 45-55k",
                (|c: &Conversation, t: u64| c.kind == "agent" && (45_000..=55_000).contains(&t))
                    as fn(&Conversation, u64) -> bool,
            ),
            ("all long", |c: &Conversation, _| c.kind != "short"),
        ] {
            for (mode, prefix_stable) in [("prefix-stable", true), ("tightest cut", false)] {
                let layer = PruneLayer::new(
                    &PruneConfig {
                        enabled: true,
                        max_context_tokens: budget as usize,
                        prefix_stable,
                        ..PruneConfig::default()
                    },
                    counter.clone(),
                );
                let mut pruned = Tally::default();
                let mut windowed = Tally::default();
                for c in &corpus {
                    let request = api(c.endpoint, &c.request);
                    let total = prompt::request(&counter, &request);
                    if !filter(c, total) {
                        continue;
                    }
                    let field = list_field(c.endpoint);
                    let before = budgeted(&counter, c.endpoint, &c.request);
                    let outcome = run(&layer, &request, None);
                    let sent: Value = outcome.pruned.as_ref().map_or(c.request.clone(), |p| {
                        serde_json::from_slice(&p.to_bytes()).unwrap()
                    });
                    let after = budgeted(&counter, c.endpoint, &sent);
                    let items = sent[field].as_array().cloned().unwrap_or_default();
                    pruned.add(before, after, budget, &items, c.fact.as_deref(), &sent);
                    if std::env::var_os("BUDGET_REPORT_VERBOSE").is_some() {
                        let kept = c.fact.as_deref().is_none_or(|f| {
                            let escaped = serde_json::to_string(f).unwrap();
                            sent.to_string().contains(&escaped[1..escaped.len() - 1])
                        });
                        println!(
                            "  {budget} {set} {}: {before} -> {after}, {} items, fact kept: {kept}",
                            c.name,
                            items.len()
                        );
                        if std::env::var("BUDGET_REPORT_VERBOSE").is_ok_and(|v| v == c.name) {
                            for item in &items {
                                println!(
                                    "    {}",
                                    item.to_string().chars().take(1500).collect::<String>()
                                );
                            }
                        }
                    }

                    let plain = window(&counter, c, budget, 5);
                    let after = budgeted(&counter, c.endpoint, &plain);
                    let items = plain[field].as_array().cloned().unwrap_or_default();
                    windowed.add(before, after, budget, &items, c.fact.as_deref(), &plain);
                }
                pruned.row(&format!("{budget}, {set}, sluice prune, {mode}"));
                if prefix_stable {
                    windowed.row(&format!("{budget}, {set}, sliding window"));
                }
            }
        }
    }

    println!("\n## Short chats through pruning at 4000 (must pass untouched)\n");
    let layer = PruneLayer::new(
        &PruneConfig {
            enabled: true,
            ..PruneConfig::default()
        },
        counter.clone(),
    );
    let short: Vec<&Conversation> = corpus.iter().filter(|c| c.kind == "short").collect();
    let touched: Vec<&str> = short
        .iter()
        .filter(|c| {
            run(&layer, &api(c.endpoint, &c.request), None)
                .pruned
                .is_some()
        })
        .map(|c| c.name.as_str())
        .collect();
    println!(
        "{} short chats, {} changed {:?}",
        short.len(),
        touched.len(),
        touched
    );

    println!("\n## Compression alone (no pruning)\n");
    println!("| set | level | mean tokens before | mean after | saved |");
    println!("| --- | --- | --- | --- | --- |");
    let sets: [(&str, Select); 4] = [
        ("agent transcripts, whole", |c| {
            (c.kind == "agent").then(|| c.request.clone())
        }),
        ("agent transcripts, files read only", |c| {
            (c.kind == "agent").then(|| files_only(c))
        }),
        ("docqa", |c| (c.kind == "docqa").then(|| c.request.clone())),
        ("short", |c| (c.kind == "short").then(|| c.request.clone())),
    ];
    for (set, select) in sets {
        for level in [CompressLevel::Safe, CompressLevel::Aggressive] {
            let compressor = Compressor::new(&CompressConfig::default(), counter.clone());
            let (mut before, mut after, mut runs) = (0u64, 0u64, 0u64);
            for (c, body) in corpus.iter().filter_map(|c| select(c).map(|b| (c, b))) {
                let request = api(c.endpoint, &body);
                before += prompt::request(&counter, &request);
                after += compressor.run(&request, level).map_or_else(
                    || prompt::request(&counter, &request),
                    |r| prompt::request(&counter, &r),
                );
                runs += 1;
            }
            let runs = runs.max(1) as f64;
            println!(
                "| {set} | {level:?} | {:.0} | {:.0} | {:.1} % |",
                before as f64 / runs,
                after as f64 / runs,
                100.0 * (1.0 - after as f64 / before.max(1) as f64)
            );
        }
    }
}
