//! Pruning and the provider's prompt cache: each agent and document
//! conversation of `benches/corpus/conversations` replayed turn by turn.
//!
//! A turn is the request a client makes before each assistant reply (and
//! the whole conversation, its last question, at the end): the list so
//! far. Each turn goes through a strategy — no pruning, a newest-first
//! window, sluice's tightest cut (`prefix_stable = false`), sluice's
//! prefix-stable cuts at several `cut_depth`s — and what it sends is
//! compared with what the same strategy sent the turn before:
//!
//! - **reuse**: the tokens of the leading messages the turn's prompt shares
//!   byte for byte with the previous turn's, as a share of the previous
//!   turn's prompt, over the transitions into turns that are over the
//!   budget (where pruning acts);
//! - **cost**: every turn priced as a prompt-caching provider prices it,
//!   given the previous turn's prompt: the longest common prefix (tool
//!   definitions, then the shared messages), if it is 1,024 tokens or more,
//!   in 128-token steps at the cached input price, the rest at the full
//!   price (OpenAI's list prices: gpt-4o $2.50 and $1.25 per million input
//!   tokens, gpt-4.1 $2.00 and $0.50). Output is the same for every
//!   strategy and left out;
//! - budget violations, broken tool pairings, and at the last turn the
//!   reduction and whether the fact the last question needs was sent.
//!
//! `cargo bench --bench prefix_replay` prints the tables of
//! benches/RESULTS.md.

#![expect(
    clippy::unwrap_used,
    clippy::print_stdout,
    reason = "a report printed by a benchmark harness"
)]

#[path = "support/corpus.rs"]
mod corpus;

use std::sync::Arc;

use corpus::*;
use serde_json::Value;
use sluice::config::PruneConfig;
use sluice::openai::Endpoint;
use sluice::prune::{PruneLayer, run};
use sluice::tokens::{Counter, Encoding, prompt};

/// A provider caches prefixes of at least this many tokens...
const MIN_CACHED: u64 = 1024;
/// ...in steps of this many.
const CACHE_STEP: u64 = 128;

#[derive(Clone, Copy)]
enum Strategy {
    None,
    Window,
    Sluice { prefix_stable: bool, depth: f64 },
}

impl Strategy {
    fn name(&self) -> String {
        match self {
            Strategy::None => "no pruning".into(),
            Strategy::Window => "newest-first window".into(),
            Strategy::Sluice {
                prefix_stable: false,
                ..
            } => "sluice, prefix_stable = false (tightest cut)".into(),
            Strategy::Sluice { depth, .. } => {
                format!("sluice, prefix_stable = true, cut_depth = {depth}")
            }
        }
    }
}

/// (input, cached input) in dollars per million tokens.
fn prices(model: &str) -> (f64, f64) {
    if model.starts_with("gpt-4.1") {
        (2.00, 0.50)
    } else {
        (2.50, 1.25)
    }
}

/// Where the turns of a list are: before each assistant reply, and the end.
fn turns(items: &[Value]) -> Vec<usize> {
    let replying = |item: &Value| {
        item["role"] == "assistant"
            || matches!(
                item["type"].as_str(),
                Some("function_call" | "reasoning" | "custom_tool_call")
            )
    };
    let mut points: Vec<usize> = (1..items.len())
        .filter(|&i| replying(&items[i]) && !replying(&items[i - 1]))
        .collect();
    points.push(items.len());
    points
}

#[derive(Default)]
struct Tally {
    transitions: usize,
    previous_sent: u64,
    reused: u64,
    cost: f64,
    cost_uncached: f64,
    turns: usize,
    over_budget: usize,
    violations: usize,
    last_before: u64,
    last_after: u64,
    last_runs: usize,
    facts: usize,
    facts_kept: usize,
}

fn main() {
    let corpus = corpus();
    let counter = Arc::new(Counter::new(Encoding::O200kBase));
    let long: Vec<&Conversation> = corpus.iter().filter(|c| c.kind != "short").collect();
    let transitions: usize = long
        .iter()
        .map(|c| turns(c.request[list_field(c.endpoint)].as_array().unwrap()).len() - 1)
        .sum();
    println!(
        "{} conversations (agent and docqa), {transitions} transitions",
        long.len()
    );
    let strategies = [
        Strategy::None,
        Strategy::Window,
        Strategy::Sluice {
            prefix_stable: false,
            depth: 0.5,
        },
        Strategy::Sluice {
            prefix_stable: true,
            depth: 0.25,
        },
        Strategy::Sluice {
            prefix_stable: true,
            depth: 0.5,
        },
        Strategy::Sluice {
            prefix_stable: true,
            depth: 0.75,
        },
    ];
    for budget in [4000u64, 8000, 16000] {
        println!("\n## budget {budget} tokens, max_messages 1000\n");
        println!(
            "| strategy | reuse (over-budget turns) | reused tokens / turn | input cost, all turns | vs no pruning | over budget | broken pairs | last turn: reduction | fact kept |"
        );
        println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
        let mut baseline = None;
        for strategy in strategies {
            let tally = replay(&counter, &long, strategy, budget);
            let cost_none = *baseline.get_or_insert(tally.cost);
            println!(
                "| {} | {:.1} % | {} | ${:.4} | {:+.1} % | {} | {} | {:.1} % | {}/{} |",
                strategy.name(),
                100.0 * tally.reused as f64 / tally.previous_sent.max(1) as f64,
                tally.reused / tally.transitions.max(1) as u64,
                tally.cost,
                100.0 * (tally.cost / cost_none - 1.0),
                tally.over_budget,
                tally.violations,
                100.0 * (1.0 - tally.last_after as f64 / tally.last_before.max(1) as f64),
                tally.facts_kept,
                tally.facts,
            );
            if std::env::var_os("PREFIX_REPLAY_VERBOSE").is_some() {
                println!(
                    "    {} turns, {} over-budget transitions, uncached cost ${:.4}",
                    tally.turns, tally.transitions, tally.cost_uncached
                );
            }
        }
    }
}

fn replay(
    counter: &Arc<Counter>,
    long: &[&Conversation],
    strategy: Strategy,
    budget: u64,
) -> Tally {
    let layer = match strategy {
        Strategy::Sluice {
            prefix_stable,
            depth,
        } => Some(PruneLayer::new(
            &PruneConfig {
                enabled: true,
                max_context_tokens: budget as usize,
                max_messages: 1000,
                prefix_stable,
                cut_depth: depth,
                ..PruneConfig::default()
            },
            counter.clone(),
        )),
        _ => None,
    };
    let mut tally = Tally::default();
    for c in long {
        let field = list_field(c.endpoint);
        let model = c.request["model"].as_str().unwrap_or_default();
        let encoding = counter.encoding(Some(model));
        let (price, cached_price) = prices(model);
        let tools_tokens = c
            .request
            .get("tools")
            .map_or(0, |t| counter.text(encoding, &t.to_string()));
        let all = c.request[field].as_array().unwrap().clone();
        let points = turns(&all);
        let mut previous: Option<Vec<String>> = None;
        for (t, &end) in points.iter().enumerate() {
            let mut body = c.request.clone();
            body[field] = Value::Array(all[..end].to_vec());
            let before = budgeted(counter, c.endpoint, &body);
            let sent_body: Value = match (strategy, &layer) {
                (Strategy::Window, _) => {
                    let conversation = Conversation {
                        name: c.name.clone(),
                        kind: c.kind.clone(),
                        endpoint: c.endpoint,
                        request: body.clone(),
                        fact: None,
                    };
                    window(counter, &conversation, budget, 1000)
                }
                (Strategy::Sluice { .. }, Some(layer)) => {
                    let outcome = run(layer, &api(c.endpoint, &body), None);
                    outcome.pruned.as_ref().map_or(body.clone(), |p| {
                        serde_json::from_slice(&p.to_bytes()).unwrap()
                    })
                }
                _ => body.clone(),
            };
            let sent: Vec<String> = sent_body[field]
                .as_array()
                .unwrap()
                .iter()
                .map(Value::to_string)
                .collect();
            let tokens: Vec<u64> = sent
                .iter()
                .map(|m| prompt::message(counter, encoding, m))
                .collect();
            let after = budgeted(counter, c.endpoint, &sent_body);
            let instructions = if c.endpoint == Endpoint::Responses {
                after.saturating_sub(tokens.iter().sum::<u64>())
            } else {
                0
            };
            let total = tools_tokens + after;
            tally.turns += 1;
            if strategy_prunes(strategy) && after > budget {
                tally.over_budget += 1;
            }
            tally.violations += integrity_violations(sent_body[field].as_array().unwrap());
            // The prefix shared with the previous turn's prompt.
            let shared_messages = previous.as_ref().map_or(0, |prev: &Vec<String>| {
                prev.iter()
                    .zip(&sent)
                    .take_while(|(a, b)| a == b)
                    .zip(&tokens)
                    .map(|(_, t)| *t)
                    .sum::<u64>()
            });
            let prefix = if previous.is_some() {
                tools_tokens + instructions + shared_messages
            } else {
                0
            };
            let cached = if prefix >= MIN_CACHED {
                MIN_CACHED + (prefix - MIN_CACHED) / CACHE_STEP * CACHE_STEP
            } else {
                0
            };
            tally.cost += ((total - cached) as f64 * price + cached as f64 * cached_price) / 1e6;
            tally.cost_uncached += total as f64 * price / 1e6;
            if let Some(prev) = &previous
                && before > budget
                && std::env::var_os("PREFIX_REPLAY_BREAKS").is_some()
                && matches!(strategy, Strategy::Sluice { prefix_stable: true, depth } if depth == 0.5)
            {
                let same = prev.iter().zip(&sent).take_while(|(a, b)| a == b).count();
                if same < prev.len() {
                    println!(
                        "    break {} turn {t}: kept {same} of {} (sent {}), first changed role {}",
                        c.name,
                        prev.len(),
                        sent.len(),
                        prev[same].get(..40).unwrap_or(&prev[same])
                    );
                    if std::env::var_os("PREFIX_REPLAY_DIFF").is_some() {
                        let now = sent.get(same).map_or("", String::as_str);
                        println!(
                            "      was {}: {}",
                            prev[same].len(),
                            prev[same]
                                .get(prev[same].len().saturating_sub(300)..)
                                .unwrap_or("")
                        );
                        println!(
                            "      now {}: {}",
                            now.len(),
                            now.get(now.len().saturating_sub(300)..).unwrap_or("")
                        );
                    }
                }
            }
            if let Some(prev) = &previous
                && before > budget
            {
                tally.transitions += 1;
                tally.previous_sent += prev_tokens(counter, encoding, prev);
                tally.reused += shared_messages;
            }
            if t + 1 == points.len() && before > budget {
                tally.last_runs += 1;
                tally.last_before += before;
                tally.last_after += after;
                if let Some(fact) = &c.fact {
                    tally.facts += 1;
                    let escaped = serde_json::to_string(fact).unwrap();
                    if sent_body[field]
                        .to_string()
                        .contains(&escaped[1..escaped.len() - 1])
                    {
                        tally.facts_kept += 1;
                    } else if std::env::var_os("PREFIX_REPLAY_VERBOSE").is_some() {
                        println!("    fact lost: {} ({})", c.name, strategy.name());
                    }
                }
            }
            previous = Some(sent);
        }
    }
    tally
}

fn strategy_prunes(strategy: Strategy) -> bool {
    !matches!(strategy, Strategy::None)
}

fn prev_tokens(counter: &Counter, encoding: sluice::tokens::Encoding, sent: &[String]) -> u64 {
    sent.iter()
        .map(|m| prompt::message(counter, encoding, m))
        .sum()
}
