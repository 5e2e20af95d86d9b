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

use std::collections::HashMap;

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
/// The share of the budget a prefix-stable cut leaves for recalls.
const RECALL_SHARE: f64 = 0.125;
/// Head share when cutting a message to fit.
const HEAD_RATIO: f64 = 0.6;

/// Limits of one pruning.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    pub max_tokens: u64,
    /// Entries of the list, as it counts them.
    pub max_messages: usize,
    pub keep_file_content_turns: usize,
    /// Prefix-stable cuts, each freeing this share of the budget; `None`:
    /// the tightest cut.
    pub cut_depth: Option<f64>,
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
    /// Carries a client's cache marker: never rewritten or dropped.
    marked: bool,
    kind: Kind,
    /// Tokens of [`Item::text`].
    tokens: u64,
}

impl Item<'_> {
    fn text(&self) -> &str {
        self.rewritten.as_deref().unwrap_or(self.raw)
    }

    /// Tokens of the item as the client sent it.
    fn tokens_raw(&self, counter: &Counter, encoding: Encoding) -> u64 {
        match self.rewritten {
            None => self.tokens,
            Some(_) => prompt::message(counter, encoding, self.raw),
        }
    }
}

#[derive(Debug)]
struct Unit {
    members: Vec<usize>,
    mandatory: bool,
    orphan: bool,
}

/// A conversation read for pruning: its items, their units, and what the
/// latest user message asks about.
struct Prepared<'a> {
    items: Vec<Item<'a>>,
    units: Vec<Unit>,
    calls: HashMap<String, Call>,
    latest_user: Option<usize>,
    /// Fixed tokens (instructions) and reply priming.
    overhead: u64,
    before: u64,
    terms: Vec<relevance::Term>,
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
    let items: Vec<Item<'_>> = raws
        .iter()
        .map(|raw| {
            let head: Head = serde_json::from_str(raw).unwrap_or_default();
            let kind = classify(&head, &mut calls);
            Item {
                raw,
                rewritten: None,
                marked: content::cache_marked(raw),
                kind,
                tokens: prompt::message(counter, encoding, raw),
            }
        })
        .collect();
    let overhead = fixed + REPLY_PRIMING;
    let before = overhead + items.iter().map(|i| i.tokens).sum::<u64>();
    let latest_user = items.iter().rposition(|i| i.kind == Kind::User);
    let units = units(&items, latest_user);
    let orphans = units.iter().any(|u| u.orphan);
    let conversational = units
        .iter()
        .filter(|u| u.members.iter().any(|&m| items[m].kind != Kind::Fixed))
        .count();
    if before <= budget.max_tokens && conversational <= budget.max_messages && !orphans {
        return None;
    }
    let query = latest_user
        .and_then(|l| serde_json::from_str::<Value>(items[l].raw).ok())
        .map(|v| content::texts(&v).join("\n"))
        .unwrap_or_default();
    let mut conversation = Prepared {
        terms: relevance::terms(&query),
        items,
        units,
        calls,
        latest_user,
        overhead,
        before,
    };
    let stable = budget
        .cut_depth
        .and_then(|depth| stable(counter, encoding, &mut conversation, budget, depth));
    let keep = match stable {
        Some(keep) => keep,
        None => tight(counter, encoding, &mut conversation, budget),
    };
    let Prepared {
        items,
        units,
        overhead,
        before,
        ..
    } = conversation;
    let mut keep: Vec<usize> = keep
        .iter()
        .flat_map(|&u| units[u].members.iter().copied())
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

/// The tightest cut: file contents of older turns stripped (with the lines
/// the latest question names) while over budget, then the units to keep
/// chosen newest first with relevance, as many as fit. Returns the kept
/// units.
fn tight(
    counter: &Counter,
    encoding: Encoding,
    conversation: &mut Prepared<'_>,
    budget: &Budget,
) -> Vec<usize> {
    let Prepared {
        items,
        units,
        calls,
        latest_user,
        overhead,
        before,
        terms,
    } = conversation;
    let (latest_user, overhead) = (*latest_user, *overhead);

    // 1. File contents of older turns, oldest first, while over budget.
    let mut total = *before;
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
            || item.marked
            || Some(index) == latest_user
        {
            continue;
        }
        if let Some((text, tokens)) = aged(counter, encoding, item, calls, terms) {
            total = total - item.tokens + tokens;
            item.tokens = tokens;
            item.rewritten = Some(text);
        }
    }

    // 2. What is always kept; the latest user message cut if need be.
    let mandatory_tokens = |items: &[Item<'_>]| -> u64 {
        units
            .iter()
            .filter(|u| u.mandatory)
            .flat_map(|u| &u.members)
            .map(|&m| items[m].tokens)
            .sum()
    };
    if let Some(l) = latest_user
        && overhead + mandatory_tokens(items) > budget.max_tokens
        && !items[l].marked
    {
        let others = mandatory_tokens(items) - items[l].tokens;
        let target = budget
            .max_tokens
            .saturating_sub(overhead + others)
            .max(MIN_USER_TOKENS);
        cut(counter, encoding, &mut items[l], target);
    }
    let mut avail = budget
        .max_tokens
        .saturating_sub(overhead + mandatory_tokens(items));
    // Toward `max_messages`, a unit counts its entries of the list (system
    // and developer messages aside): a tool call with its three results is
    // four, kept or dropped whole.
    let entry_counts = entries_of(items, units);
    let entries = |u: usize| entry_counts[u];
    let mandatory_entries: usize = (0..units.len())
        .filter(|&u| units[u].mandatory)
        .map(entries)
        .sum();
    let mut slots = budget.max_messages.saturating_sub(mandatory_entries);

    // 3. The rest, newest first.
    let mut candidates: Vec<usize> = (0..units.len())
        .filter(|&u| !units[u].mandatory && !units[u].orphan)
        .collect();
    candidates.sort_by_key(|&u| std::cmp::Reverse(units[u].members.iter().max().copied()));
    let unit_tokens = |items: &[Item<'_>], u: usize| -> u64 {
        units[u].members.iter().map(|&m| items[m].tokens).sum()
    };
    let mut kept: Vec<usize> = (0..units.len()).filter(|&u| units[u].mandatory).collect();
    if let Some(&newest) = candidates.first() {
        if unit_tokens(items, newest) > avail && avail >= MIN_CUT_TOKENS {
            cut_unit(counter, encoding, items, &units[newest].members, avail);
        }
        // Past the latest user message, the newest unit is the turn in
        // progress (an agent's latest tool results): kept even past
        // `max_messages`.
        let in_progress = latest_user.is_none_or(|l| units[newest].members[0] > l);
        if unit_tokens(items, newest) <= avail && (in_progress || entries(newest) <= slots) {
            avail -= unit_tokens(items, newest);
            slots = slots.saturating_sub(entries(newest));
            kept.push(newest);
        }
    }
    let texts: Vec<String> = candidates
        .iter()
        .map(|&u| units[u].members.iter().map(|&m| items[m].text()).collect())
        .collect();
    let text_bytes: Vec<&[u8]> = texts.iter().map(|t| t.as_bytes()).collect();
    let scores = relevance::scores(terms, &text_bytes);
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
        let tokens = unit_tokens(items, u);
        if kept.contains(&u) || tokens > relevance_tokens || entries(u) > relevance_slots {
            continue;
        }
        relevance_tokens -= tokens;
        relevance_slots -= entries(u);
        avail -= tokens;
        slots -= entries(u);
        kept.push(u);
    }
    for &u in &candidates {
        if kept.contains(&u) {
            continue;
        }
        let tokens = unit_tokens(items, u);
        if tokens > avail || entries(u) > slots {
            break;
        }
        avail -= tokens;
        slots -= entries(u);
        kept.push(u);
    }
    kept
}

/// Prefix-stable cuts: the prompt of the next turn begins with this one's.
///
/// Every choice is a function of positions in the conversation that do not
/// move as it grows: the units before an *aging boundary* have their file
/// contents stripped (the same way every time: markers without excerpts),
/// the units before a *drop boundary* go, and both boundaries are taken
/// from a fixed grid of token positions (`cut_depth` × the budget apart; the
/// drop boundary also from a grid of entry counts, `cut_depth` ×
/// `max_messages` apart): the first grid points at which the conversation
/// fits. So as turns are appended the boundaries stay where they are until
/// the budget is passed, then jump a whole step, and the turns after only
/// append again. Aging moves in batches and keeps what it aged before; a
/// drop frees about `cut_depth` of the budget.
///
/// When the latest user message names something that is in none of the
/// kept messages but in an older one, that message is recalled (its
/// matching lines, as the tightest cut keeps them) where it stood, in the
/// room the cut left: the one choice that follows the question, made only
/// when the kept prompt cannot answer it.
///
/// `None` when no grid point fits (the newest unit or the latest user
/// message alone is too large): the tightest cut, which can cut them, runs.
fn stable(
    counter: &Counter,
    encoding: Encoding,
    conversation: &mut Prepared<'_>,
    budget: &Budget,
    depth: f64,
) -> Option<Vec<usize>> {
    let Prepared {
        items,
        units,
        calls,
        latest_user,
        overhead,
        terms,
        ..
    } = conversation;
    let n = units.len();
    // Units in the order of the list.
    units.sort_by_key(|u| u.members.first().copied());
    // Turns younger than `keep_file_content_turns` keep their contents.
    let young_item = items
        .iter()
        .enumerate()
        .filter(|(_, i)| i.kind == Kind::User)
        .map(|(index, _)| index)
        .rev()
        .nth(budget.keep_file_content_turns.saturating_sub(1))
        .filter(|_| budget.keep_file_content_turns > 0)
        .unwrap_or(if budget.keep_file_content_turns == 0 {
            items.len()
        } else {
            0
        });
    let young = units
        .iter()
        .position(|u| u.members.first().is_some_and(|&m| m >= young_item))
        .unwrap_or(n);
    let countable = |u: &Unit| !u.mandatory && !u.orphan;
    let entry_counts = entries_of(items, units);

    // Each unit's tokens as sent, aged, and its entries.
    let mut aged_forms: Vec<Vec<(usize, String, u64)>> = vec![Vec::new(); n];
    let mut raw_tokens = vec![0u64; n];
    let mut aged_tokens = vec![0u64; n];
    let mut mandatory_tokens = 0u64;
    let mut mandatory_entries = 0usize;
    for (u, unit) in units.iter().enumerate() {
        raw_tokens[u] = unit.members.iter().map(|&m| items[m].tokens).sum();
        aged_tokens[u] = raw_tokens[u];
        if unit.mandatory {
            mandatory_tokens += raw_tokens[u];
            mandatory_entries += entry_counts[u];
            continue;
        }
        if unit.orphan || u >= young || unit.members.iter().any(|&m| items[m].marked) {
            continue;
        }
        for &m in &unit.members {
            if let Some((text, tokens)) = aged(counter, encoding, &items[m], calls, &[]) {
                aged_tokens[u] = aged_tokens[u] - items[m].tokens + tokens;
                aged_forms[u].push((m, text, tokens));
            }
        }
    }
    if *overhead + mandatory_tokens > budget.max_tokens || mandatory_entries > budget.max_messages {
        return None;
    }
    // Prefix sums over the units that can go: positions that appending
    // never moves.
    let mut position = vec![0u64; n + 1];
    let mut aged_position = vec![0u64; n + 1];
    let mut entry_position = vec![0usize; n + 1];
    let (mut raw_sum, mut aged_sum) = (vec![0u64; n + 1], vec![0u64; n + 1]);
    let mut entry_sum = vec![0usize; n + 1];
    for (u, unit) in units.iter().enumerate() {
        let entries = entry_counts[u];
        position[u + 1] = position[u] + raw_tokens[u];
        aged_position[u + 1] = aged_position[u] + aged_tokens[u];
        entry_position[u + 1] = entry_position[u] + entries;
        let counts = countable(unit);
        raw_sum[u + 1] = raw_sum[u] + if counts { raw_tokens[u] } else { 0 };
        aged_sum[u + 1] = aged_sum[u] + if counts { aged_tokens[u] } else { 0 };
        entry_sum[u + 1] = entry_sum[u] + if counts { entries } else { 0 };
    }
    let step = ((budget.max_tokens as f64 * depth) as u64).max(1);
    let entry_step = ((budget.max_messages as f64 * depth).ceil() as usize).max(1);
    // The first unit at or past each multiple of `step` in `positions`.
    fn grid<T: Copy + Ord + std::ops::Mul<Output = T> + TryFrom<usize>>(
        positions: &[T],
        step: T,
        limit: usize,
    ) -> Vec<usize> {
        let mut points = vec![0];
        let mut k = 1usize;
        let mut u = 0;
        while let Ok(multiple) = T::try_from(k) {
            let target = multiple * step;
            while u < limit && positions[u] < target {
                u += 1;
            }
            if u >= limit {
                break;
            }
            if points.last() != Some(&u) {
                points.push(u);
            }
            k += 1;
        }
        points
    }
    // The drop boundary never passes the newest unit that can go.
    let newest = (0..n).rev().find(|&u| countable(&units[u]));
    let drop_limit = newest.map_or(0, |u| u + 1);
    let mut drops = grid(&aged_position, step, drop_limit);
    drops.extend(grid(&entry_position, entry_step, drop_limit));
    drops.sort_unstable();
    drops.dedup();
    let agings = grid(&position, step, young.min(n));
    // The cut leaves a fixed share of the budget to recalls.
    let reserve = (budget.max_tokens as f64 * RECALL_SHARE) as u64;
    let room = budget.max_tokens - reserve;
    let fits = |drop: usize, aging: usize| -> bool {
        let aging = aging.max(drop);
        let tokens = *overhead
            + mandatory_tokens
            + (aged_sum[aging] - aged_sum[drop])
            + (raw_sum[n] - raw_sum[aging]);
        let entries = mandatory_entries + entry_sum[n] - entry_sum[drop];
        tokens <= room && entries <= budget.max_messages
    };
    let (drop, aging) = drops
        .iter()
        .find_map(|&d| agings.iter().find(|&&g| fits(d, g)).map(|&g| (d, g.max(d))))?;

    let mut kept: Vec<usize> = Vec::with_capacity(n);
    let mut entries = mandatory_entries;
    for u in 0..n {
        if units[u].mandatory {
            kept.push(u);
        } else if countable(&units[u]) && u >= drop {
            kept.push(u);
            if u < aging {
                for (m, text, tokens) in std::mem::take(&mut aged_forms[u]) {
                    items[m].rewritten = Some(text);
                    items[m].tokens = tokens;
                }
            }
            entries += entry_counts[u];
        }
    }

    // Recalls, each for a kept user message that names something (an
    // identifier, a path) that none of the kept messages before it holds
    // but an older one does: that message comes back where it stood, with
    // the lines that name it (older turns), or whole. Each depends only on
    // the messages up to its user message and on the cut, so the recalls
    // of earlier turns are made again the same way and the prompt still
    // only grows; they share a reserve of the budget that the cut leaves.
    let mut reserve = reserve;
    let behind = aging.max(drop);
    let mut kept_items: Vec<usize> = kept
        .iter()
        .flat_map(|&u| units[u].members.iter().copied())
        .collect();
    kept_items.sort_unstable();
    // The latest user message first: what it asks about has the first
    // claim on the reserve; then the earlier ones, oldest first.
    let asks: Vec<usize> = latest_user
        .iter()
        .copied()
        .chain(
            kept_items
                .iter()
                .copied()
                .filter(|&m| items[m].kind == Kind::User && Some(m) != *latest_user),
        )
        .collect();
    let mut recalled: Vec<usize> = Vec::new();
    for ask in asks {
        let asked = if Some(ask) == *latest_user {
            terms.clone()
        } else {
            serde_json::from_str::<Value>(items[ask].raw)
                .map(|v| relevance::terms(&content::texts(&v).join("\n")))
                .unwrap_or_default()
        };
        // Older units (dropped, or aged without excerpts) that lost
        // something this message names: a specific term (a path, an
        // identifier) in what the client sent that the form kept does not
        // hold, or two plain words when the message names nothing specific.
        // Taken oldest first, each on its own merits: the decision for one
        // unit does not depend on the units after it, so as the
        // conversation grows, what was recalled stays recalled.
        let specific = asked.iter().any(|t| t.specific);
        let needed = if specific { 1 } else { 2 };
        let relevant: Vec<(usize, ())> = (0..behind)
            .filter(|&u| countable(&units[u]) && !recalled.contains(&u))
            .filter(|&u| units[u].members.first().is_some_and(|&m| m < ask))
            .filter(|&u| {
                let lost = asked
                    .iter()
                    .filter(|term| term.specific || !specific)
                    .filter(|term| {
                        let finder = memchr::memmem::Finder::new(term.text.as_bytes());
                        units[u].members.iter().any(|&m| {
                            let item = &items[m];
                            (u < drop || item.rewritten.is_some())
                                && finder.find(item.raw.as_bytes()).is_some()
                                && (u < drop || finder.find(item.text().as_bytes()).is_none())
                        })
                    })
                    .count();
                lost >= needed
            })
            .map(|u| (u, ()))
            .collect();
        let missing = asked;
        for (u, _) in relevant {
            let dropped = u < drop;
            let now: u64 = if dropped {
                0
            } else {
                units[u].members.iter().map(|&m| items[m].tokens).sum()
            };
            let forms: Vec<(usize, String, u64)> = units[u]
                .members
                .iter()
                .map(|&m| {
                    let item = &items[m];
                    let form = (u < young && !item.marked)
                        .then(|| aged(counter, encoding, item, calls, &missing))
                        .flatten();
                    match form {
                        Some((text, tokens)) => (m, text, tokens),
                        None => (m, item.raw.to_owned(), item.tokens_raw(counter, encoding)),
                    }
                })
                .collect();
            let cost = forms.iter().map(|f| f.2).sum::<u64>().saturating_sub(now);
            let added_entries = if dropped { entry_counts[u] } else { 0 };
            if cost > reserve || entries + added_entries > budget.max_messages {
                continue;
            }
            reserve -= cost;
            entries += added_entries;
            for (m, text, tokens) in forms {
                items[m].rewritten = (text != items[m].raw).then_some(text);
                items[m].tokens = tokens;
            }
            recalled.push(u);
            if dropped {
                kept.push(u);
            }
        }
    }
    Some(kept)
}

/// Each unit's entries as `max_messages` counts them: its members that are
/// not instructions (system, developer).
fn entries_of(items: &[Item<'_>], units: &[Unit]) -> Vec<usize> {
    units
        .iter()
        .map(|u| {
            u.members
                .iter()
                .filter(|&&m| items[m].kind != Kind::Fixed)
                .count()
        })
        .collect()
}

/// `item` with its file contents stripped (keeping the lines `terms` name),
/// and its tokens; `None` when it has none.
fn aged(
    counter: &Counter,
    encoding: Encoding,
    item: &Item<'_>,
    calls: &HashMap<String, Call>,
    terms: &[relevance::Term],
) -> Option<(String, u64)> {
    let call = match &item.kind {
        Kind::Result(id) => calls.get(id),
        _ => None,
    };
    let value = serde_json::from_str::<Value>(item.raw).ok()?;
    let text = files::strip(&value, call, terms)?.to_string();
    let tokens = prompt::message(counter, encoding, &text);
    Some((text, tokens))
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
        // A client's cache marker holds its message, and so its unit.
        unit.mandatory |= !unit.orphan && unit.members.iter().any(|&m| items[m].marked);
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
