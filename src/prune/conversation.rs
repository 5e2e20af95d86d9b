//! Pruning a list of chat messages or Responses input items to a budget.
//!
//! The steps, each only while the list is still over its budget
//! ([`Budget`]: tokens, and non-system messages where a tool call with its
//! results counts as one):
//! 1. file contents (long tool outputs, long fenced code) in turns older
//!    than `keep_file_content_turns` become markers, oldest first
//!    ([`super::files`]);
//! 2. messages are grouped into units that are kept or dropped whole: an
//!    assistant message with `tool_calls` (a run of `function_call` items)
//!    with all of its results; a reasoning item with what follows it; a
//!    tool result whose call is not in the list is dropped;
//! 3. kept always: system and developer messages and the latest user
//!    message (cut to its head and tail if these alone exceed the budget);
//! 4. then, newest first: the newest unit (its outputs cut to head and tail
//!    if it alone does not fit), the units the latest user message refers
//!    to ([`super::relevance`]) within half of what is left, and the rest
//!    newest first while they fit.
//!
//! Kept messages keep their order and, unless cut or stripped, their exact
//! JSON text. A list within its budget is returned unchanged, so pruning a
//! pruned list changes nothing.

use std::collections::{HashMap, HashSet};

use serde::Deserialize;
use serde_json::Value;

use super::files::{self, Call};
use super::relevance;
use crate::openai::content;
use crate::tokens::{Counter, Encoding, head_tail, prompt};

/// Tokens for priming the reply, counted once per request.
const REPLY_PRIMING: u64 = 3;
/// Smallest budget worth cutting the newest unit's outputs down to.
const MIN_CUT_TOKENS: u64 = 128;
/// What the latest user message is cut to at the least.
const MIN_USER_TOKENS: u64 = 64;
/// Head share when cutting a message to fit.
const HEAD_RATIO: f64 = 0.6;

/// Limits of one pruning.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    pub max_tokens: u64,
    pub max_messages: usize,
    pub keep_file_content_turns: usize,
}

/// A pruned list.
#[derive(Debug)]
pub struct Pruned {
    /// The kept messages' JSON texts, in order.
    pub items: Vec<String>,
    /// Tokens of the list (with `fixed` and reply priming) before and after.
    pub before: u64,
    pub after: u64,
    pub messages_before: usize,
}

impl Pruned {
    /// The kept messages as one JSON array.
    pub fn to_json(&self) -> String {
        content::json_array(&self.items)
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Kind {
    /// System or developer: always kept.
    Fixed,
    User,
    /// Tool calls, by id.
    Call(Vec<String>),
    /// A tool result, by the id of its call.
    Result(String),
    Reasoning,
    Other,
}

/// The fields that classify a message or item.
#[derive(Deserialize, Default)]
#[serde(default)]
struct Head {
    #[serde(rename = "type")]
    kind: Option<String>,
    role: Option<String>,
    tool_calls: Option<Vec<ToolCall>>,
    tool_call_id: Option<String>,
    call_id: Option<String>,
    name: Option<String>,
    arguments: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ToolCall {
    id: Option<String>,
    function: Option<Function>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Function {
    name: Option<String>,
    arguments: Option<String>,
}

struct Item<'a> {
    raw: &'a str,
    /// Rewritten JSON text, when stripped or cut.
    rewritten: Option<String>,
    kind: Kind,
    tokens: u64,
}

impl Item<'_> {
    fn text(&self) -> &str {
        self.rewritten.as_deref().unwrap_or(self.raw)
    }
}

#[derive(Debug)]
struct Unit {
    members: Vec<usize>,
    mandatory: bool,
    orphan: bool,
}

/// Prunes `raws` to `budget`; `fixed` tokens (instructions) always go too.
/// `None` when the list is within its budget.
pub fn prune(
    counter: &Counter,
    encoding: Encoding,
    raws: &[&str],
    fixed: u64,
    budget: &Budget,
) -> Option<Pruned> {
    let mut calls: HashMap<String, Call> = HashMap::new();
    let mut items: Vec<Item<'_>> = raws
        .iter()
        .map(|raw| {
            let head: Head = serde_json::from_str(raw).unwrap_or_default();
            let kind = classify(&head, &mut calls);
            Item {
                raw,
                rewritten: None,
                kind,
                tokens: prompt::message(counter, encoding, raw),
            }
        })
        .collect();
    let overhead = fixed + REPLY_PRIMING;
    let before = overhead + items.iter().map(|i| i.tokens).sum::<u64>();
    let latest_user = items.iter().rposition(|i| i.kind == Kind::User);
    let grouped = units(&items, latest_user);
    let conversational = grouped
        .iter()
        .filter(|u| u.members.iter().any(|&m| items[m].kind != Kind::Fixed))
        .count();
    let orphans = grouped.iter().any(|u| u.orphan);
    if before <= budget.max_tokens && conversational <= budget.max_messages && !orphans {
        return None;
    }
    let query = latest_user
        .and_then(|l| serde_json::from_str::<Value>(items[l].raw).ok())
        .map(|v| content::texts(&v).join("\n"))
        .unwrap_or_default();
    let terms = relevance::terms(&query);

    // 1. File contents of older turns, oldest first, while over budget.
    let mut total = before;
    let mut users_after = items.iter().filter(|i| i.kind == Kind::User).count();
    for (index, item) in items.iter_mut().enumerate() {
        if item.kind == Kind::User {
            users_after -= 1;
        }
        if total <= budget.max_tokens {
            break;
        }
        if users_after < budget.keep_file_content_turns
            || item.kind == Kind::Fixed
            || Some(index) == latest_user
        {
            continue;
        }
        let call = match &item.kind {
            Kind::Result(id) => calls.get(id),
            _ => None,
        };
        let stripped = serde_json::from_str::<Value>(item.raw)
            .ok()
            .and_then(|value| files::strip(&value, call, &terms));
        if let Some(stripped) = stripped {
            let text = stripped.to_string();
            let tokens = prompt::message(counter, encoding, &text);
            total = total - item.tokens + tokens;
            item.tokens = tokens;
            item.rewritten = Some(text);
        }
    }

    // 2. Units (stripping changed no kinds).
    let units = grouped;

    // 3. What is always kept; the latest user message cut if need be.
    let mandatory_tokens = |items: &[Item<'_>]| -> u64 {
        units
            .iter()
            .filter(|u| u.mandatory)
            .flat_map(|u| &u.members)
            .map(|&m| items[m].tokens)
            .sum()
    };
    if let Some(l) = latest_user
        && overhead + mandatory_tokens(&items) > budget.max_tokens
    {
        let others = mandatory_tokens(&items) - items[l].tokens;
        let target = budget
            .max_tokens
            .saturating_sub(overhead + others)
            .max(MIN_USER_TOKENS);
        cut(counter, encoding, &mut items[l], target);
    }
    let mut avail = budget
        .max_tokens
        .saturating_sub(overhead + mandatory_tokens(&items));
    let mandatory_messages = units
        .iter()
        .filter(|u| u.mandatory && u.members.iter().any(|&m| items[m].kind != Kind::Fixed))
        .count();
    let mut slots = budget.max_messages.saturating_sub(mandatory_messages);

    // 4. The rest, newest first.
    let mut candidates: Vec<usize> = (0..units.len())
        .filter(|&u| !units[u].mandatory && !units[u].orphan)
        .collect();
    candidates.sort_by_key(|&u| std::cmp::Reverse(units[u].members.iter().max().copied()));
    let unit_tokens = |items: &[Item<'_>], u: usize| -> u64 {
        units[u].members.iter().map(|&m| items[m].tokens).sum()
    };
    // Toward `max_messages`, a unit counts as one message: a tool call with
    // its results (or a reasoning item with what follows) is one exchange,
    // kept or dropped whole.
    let messages = |_: usize| 1usize;
    let mut kept: HashSet<usize> = HashSet::new();
    if let Some(&newest) = candidates.first() {
        if unit_tokens(&items, newest) > avail && avail >= MIN_CUT_TOKENS {
            cut_unit(counter, encoding, &mut items, &units[newest].members, avail);
        }
        // Past the latest user message, the newest unit is the turn in
        // progress (an agent's latest tool results): kept even past
        // `max_messages`.
        let in_progress = latest_user.is_none_or(|l| units[newest].members[0] > l);
        if unit_tokens(&items, newest) <= avail && (in_progress || messages(newest) <= slots) {
            avail -= unit_tokens(&items, newest);
            slots = slots.saturating_sub(messages(newest));
            kept.insert(newest);
        }
    }
    let texts: Vec<String> = candidates
        .iter()
        .map(|&u| units[u].members.iter().map(|&m| items[m].text()).collect())
        .collect();
    let text_bytes: Vec<&[u8]> = texts.iter().map(|t| t.as_bytes()).collect();
    let scores = relevance::scores(&terms, &text_bytes);
    let mut relevant: Vec<(usize, f64)> = candidates
        .iter()
        .zip(&scores)
        .filter(|(_, s)| **s > 0.0)
        .map(|(&u, &s)| (u, s))
        .collect();
    // Highest score first; ties to the newer (candidates are newest first,
    // and the sort is stable).
    relevant.sort_by(|a, b| b.1.total_cmp(&a.1));
    let mut relevance_tokens = avail / 2;
    let mut relevance_slots = slots.div_ceil(2);
    for (u, _) in relevant {
        let tokens = unit_tokens(&items, u);
        if kept.contains(&u) || tokens > relevance_tokens || messages(u) > relevance_slots {
            continue;
        }
        relevance_tokens -= tokens;
        relevance_slots -= messages(u);
        avail -= tokens;
        slots -= messages(u);
        kept.insert(u);
    }
    for &u in &candidates {
        if kept.contains(&u) {
            continue;
        }
        let tokens = unit_tokens(&items, u);
        if tokens > avail || messages(u) > slots {
            break;
        }
        avail -= tokens;
        slots -= messages(u);
        kept.insert(u);
    }

    let mut keep: Vec<usize> = units
        .iter()
        .enumerate()
        .filter(|(u, unit)| unit.mandatory || kept.contains(u))
        .flat_map(|(_, unit)| unit.members.iter().copied())
        .collect();
    keep.sort_unstable();
    let after = overhead + keep.iter().map(|&i| items[i].tokens).sum::<u64>();
    let messages_before = items.len();
    let mut items: Vec<Option<Item<'_>>> = items.into_iter().map(Some).collect();
    let items = keep
        .iter()
        .filter_map(|&i| items[i].take())
        .map(|item| item.rewritten.unwrap_or_else(|| item.raw.to_owned()))
        .collect();
    Some(Pruned {
        items,
        before,
        after,
        messages_before,
    })
}

fn classify(head: &Head, calls: &mut HashMap<String, Call>) -> Kind {
    match (head.kind.as_deref(), head.role.as_deref()) {
        (_, Some("system" | "developer")) => Kind::Fixed,
        (Some("function_call" | "custom_tool_call"), _) => {
            let id = head.call_id.clone().unwrap_or_default();
            calls.insert(
                id.clone(),
                Call {
                    name: head.name.clone().unwrap_or_default(),
                    arguments: head.arguments.clone().unwrap_or_default(),
                },
            );
            Kind::Call(vec![id])
        }
        (Some("function_call_output" | "custom_tool_call_output"), _) => {
            Kind::Result(head.call_id.clone().unwrap_or_default())
        }
        (Some("reasoning"), _) => Kind::Reasoning,
        (_, Some("tool")) => Kind::Result(head.tool_call_id.clone().unwrap_or_default()),
        (_, Some("assistant")) if head.tool_calls.as_ref().is_some_and(|c| !c.is_empty()) => {
            let ids = head
                .tool_calls
                .iter()
                .flatten()
                .map(|call| {
                    let id = call.id.clone().unwrap_or_default();
                    let function = call.function.as_ref();
                    calls.insert(
                        id.clone(),
                        Call {
                            name: function.and_then(|f| f.name.clone()).unwrap_or_default(),
                            arguments: function
                                .and_then(|f| f.arguments.clone())
                                .unwrap_or_default(),
                        },
                    );
                    id
                })
                .collect();
            Kind::Call(ids)
        }
        (_, Some("user")) => Kind::User,
        _ => Kind::Other,
    }
}

/// Groups items into units kept or dropped whole.
fn units(items: &[Item<'_>], latest_user: Option<usize>) -> Vec<Unit> {
    let mut units: Vec<Unit> = Vec::new();
    // Which unit holds the call with this id.
    let mut call_unit: HashMap<&str, usize> = HashMap::new();
    let mut reasoning: Vec<usize> = Vec::new();
    for (index, item) in items.iter().enumerate() {
        match &item.kind {
            Kind::Reasoning => {
                reasoning.push(index);
                continue;
            }
            Kind::Result(id) => {
                if let Some(&u) = call_unit.get(id.as_str()) {
                    units[u].members.push(index);
                } else {
                    units.push(Unit {
                        members: vec![index],
                        mandatory: false,
                        orphan: true,
                    });
                }
                continue;
            }
            Kind::Call(ids) => {
                // A run of calls (parallel function_call items) is one unit.
                let previous = index.checked_sub(1).map(|p| &items[p].kind);
                let joins = matches!(previous, Some(Kind::Call(_))) && reasoning.is_empty();
                let u = if joins {
                    units.len() - 1
                } else {
                    units.push(Unit {
                        members: std::mem::take(&mut reasoning),
                        mandatory: false,
                        orphan: false,
                    });
                    units.len() - 1
                };
                units[u].members.push(index);
                for id in ids {
                    call_unit.insert(id, u);
                }
                continue;
            }
            _ => {}
        }
        let mut members = std::mem::take(&mut reasoning);
        members.push(index);
        units.push(Unit {
            mandatory: item.kind == Kind::Fixed || Some(index) == latest_user,
            members,
            orphan: false,
        });
    }
    if !reasoning.is_empty() {
        units.push(Unit {
            members: reasoning,
            mandatory: false,
            orphan: false,
        });
    }
    for unit in &mut units {
        unit.members.sort_unstable();
    }
    units
}

/// Cuts `item`'s texts to head and tail so it counts at most `target`.
fn cut(counter: &Counter, encoding: Encoding, item: &mut Item<'_>, target: u64) {
    let Ok(mut value) = serde_json::from_str::<Value>(item.text()) else {
        return;
    };
    let text_tokens: Vec<u64> = content::texts(&value)
        .iter()
        .map(|t| counter.text(encoding, t))
        .collect();
    let texts_total: u64 = text_tokens.iter().sum();
    let excess = item.tokens.saturating_sub(target);
    if texts_total == 0 || excess == 0 {
        return;
    }
    let mut shares = text_tokens.iter();
    let changed = content::rewrite_texts(&mut value, &mut |text| {
        let tokens = *shares.next()?;
        // Each text gives up its share of the excess.
        let give = (excess * tokens).div_ceil(texts_total);
        let keep = tokens.saturating_sub(give);
        match head_tail(encoding, text, keep, HEAD_RATIO) {
            std::borrow::Cow::Owned(cut) => Some(cut),
            std::borrow::Cow::Borrowed(_) => None,
        }
    });
    if changed {
        let text = value.to_string();
        item.tokens = prompt::message(counter, encoding, &text);
        item.rewritten = Some(text);
    }
}

/// Cuts the texts of a unit's items so the unit counts at most `avail`.
fn cut_unit(
    counter: &Counter,
    encoding: Encoding,
    items: &mut [Item<'_>],
    members: &[usize],
    avail: u64,
) {
    let total: u64 = members.iter().map(|&m| items[m].tokens).sum();
    if total <= avail {
        return;
    }
    // Fixed costs (overheads, call arguments) stay; texts give up the rest.
    let excess = total - avail;
    for &m in members {
        let tokens = items[m].tokens;
        let give = (excess * tokens).div_ceil(total);
        cut(
            counter,
            encoding,
            &mut items[m],
            tokens.saturating_sub(give),
        );
    }
}

#[cfg(test)]
mod tests;
