//! File contents in older turns, replaced by a marker saying what was there.
//!
//! A long tool output (a file read, a command's output) or a long fenced
//! code block becomes one line naming what was removed (the tool call or
//! the file's path when the text names it, the line count, the first
//! line); lines that mention a term of the latest user message are kept
//! under it, with their line numbers, so a question about them can still be
//! answered. A marker is short, so stripping it again changes nothing.

use serde_json::Value;

use super::relevance::Term;
use crate::openai::content;

/// A text shorter than this (in lines and bytes) is not a file.
const MIN_LINES: usize = 12;
const MIN_BYTES: usize = 2000;
/// Lines kept from a removed text because the question names them: the
/// best-matching lines, with context.
const MAX_ANCHORS: usize = 3;
const CONTEXT_BEFORE: usize = 1;
const CONTEXT_AFTER: usize = 6;
const MAX_KEPT_LINES: usize = 24;
/// A user message still this long once its fences are stripped is pasted
/// text (a document, a log) and is stripped whole.
const MIN_PASTED_BYTES: usize = 4000;
const MAX_LINE_CHARS: usize = 200;
const MAX_FIRST_LINE_CHARS: usize = 100;

/// The call a tool result answers: its function and arguments.
#[derive(Debug, Clone)]
pub struct Call {
    pub name: String,
    pub arguments: String,
}

/// `item` with its file contents replaced by markers, or `None` when it
/// has none. `call` is the call it answers, for a tool result.
pub fn strip(item: &Value, call: Option<&Call>, terms: &[Term]) -> Option<Value> {
    let role = item.get("role").and_then(Value::as_str);
    let tool_result = role == Some("tool")
        || item.get("type").and_then(Value::as_str) == Some("function_call_output");
    let user = role == Some("user");
    let mut item = item.clone();
    let changed = content::rewrite_texts(&mut item, &mut |text| {
        if tool_result {
            return is_long(text).then(|| marker(&what_output(call), text, 0, terms));
        }
        let stripped = strip_fences(text, terms);
        let rest = stripped.as_deref().unwrap_or(text);
        if user && rest.len() >= MIN_PASTED_BYTES {
            return Some(marker("pasted text", rest, 0, terms));
        }
        stripped
    });
    changed.then_some(item)
}

fn is_long(text: &str) -> bool {
    text.len() >= MIN_BYTES || text.lines().count() >= MIN_LINES
}

fn what_output(call: Option<&Call>) -> String {
    match call {
        Some(call) => {
            let arguments: String = call.arguments.chars().take(160).collect();
            format!("output of {}({arguments})", call.name)
        }
        None => "tool output".to_owned(),
    }
}

/// The marker for `removed` (which started at line `first_line` of its
/// message), with the lines that best match the terms and a few after each.
fn marker(what: &str, removed: &str, first_line: usize, terms: &[Term]) -> String {
    let lines: Vec<&str> = removed.lines().collect();
    let first = lines
        .iter()
        .map(|l| l.trim())
        .find(|l| !l.is_empty())
        .unwrap_or("");
    let first: String = first.chars().take(MAX_FIRST_LINE_CHARS).collect();
    let mut out = format!(
        "[sluice removed {} lines: {what}; first line: {first}",
        lines.len()
    );
    let kept = excerpt(&lines, terms);
    if kept.is_empty() {
        out.push(']');
        return out;
    }
    out.push_str("; lines kept:]");
    let mut previous: Option<usize> = None;
    for i in kept {
        if previous.is_some_and(|p| p + 1 != i) {
            out.push_str("\n…");
        }
        let line: String = lines[i].trim_end().chars().take(MAX_LINE_CHARS).collect();
        out.push_str(&format!("\n{}: {line}", first_line + i + 1));
        previous = Some(i);
    }
    out
}

/// Which lines to keep: the best-matching lines (terms weighted by how
/// specific and how rare in this text they are), each with one line before
/// and a few after (a definition's body follows its name), in order.
fn excerpt(lines: &[&str], terms: &[Term]) -> Vec<usize> {
    if terms.is_empty() {
        return Vec::new();
    }
    let n = lines.len() as f64;
    let weights: Vec<f64> = terms
        .iter()
        .map(|term| {
            let df = lines
                .iter()
                .filter(|l| l.contains(term.text.as_str()))
                .count() as f64;
            if df == 0.0 {
                0.0
            } else {
                (1.0 + n / df).ln() * if term.specific { 2.0 } else { 1.0 }
            }
        })
        .collect();
    let mut scored: Vec<(usize, f64)> = lines
        .iter()
        .enumerate()
        .map(|(i, line)| {
            let score: f64 = terms
                .iter()
                .zip(&weights)
                .filter(|(t, _)| line.contains(t.text.as_str()))
                .map(|(_, w)| w)
                .sum();
            (i, score)
        })
        .filter(|(_, score)| *score > 0.0)
        .collect();
    // Best first; among equals, the earliest.
    scored.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    let mut keep: Vec<usize> = Vec::new();
    for &(anchor, _) in scored.iter().take(MAX_ANCHORS) {
        let from = anchor.saturating_sub(CONTEXT_BEFORE);
        let to = (anchor + CONTEXT_AFTER).min(lines.len() - 1);
        keep.extend(from..=to);
    }
    keep.sort_unstable();
    keep.dedup();
    keep.truncate(MAX_KEPT_LINES);
    keep
}

/// `text` with its long fenced code blocks replaced by markers.
fn strip_fences(text: &str, terms: &[Term]) -> Option<String> {
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let mut out = String::new();
    let mut changed = false;
    let mut i = 0;
    while i < lines.len() {
        let Some((fence_char, fence_len, lang)) = fence_open(lines[i]) else {
            out.push_str(lines[i]);
            i += 1;
            continue;
        };
        // The block runs to its closing fence, or to the end.
        let close = (i + 1..lines.len()).find(|&j| is_fence_close(lines[j], fence_char, fence_len));
        let end = close.unwrap_or(lines.len());
        let body: String = lines[i + 1..end].concat();
        let after = close.map_or(lines.len(), |c| c + 1);
        if end - i > MIN_LINES || body.len() >= MIN_BYTES {
            let path = i
                .checked_sub(1)
                .and_then(|p| lines.get(p))
                .and_then(|l| path_in(l));
            let what = match (path, lang.is_empty()) {
                (Some(path), _) => format!("file {path}"),
                (None, false) => format!("{lang} code block"),
                (None, true) => "code block".to_owned(),
            };
            out.push_str(&marker(&what, &body, i + 1, terms));
            out.push('\n');
            changed = true;
        } else {
            for line in &lines[i..after] {
                out.push_str(line);
            }
        }
        i = after;
    }
    changed.then_some(out)
}

/// An opening fence: its character, length and language tag.
fn fence_open(line: &str) -> Option<(char, usize, &str)> {
    let indent = line.len() - line.trim_start_matches(' ').len();
    if indent > 3 {
        return None;
    }
    let rest = &line[indent..];
    let fence_char = rest.chars().next().filter(|c| *c == '`' || *c == '~')?;
    let len = rest.len() - rest.trim_start_matches(fence_char).len();
    if len < 3 {
        return None;
    }
    let info = rest[len..].trim();
    if fence_char == '`' && info.contains('`') {
        return None;
    }
    Some((
        fence_char,
        len,
        info.split_whitespace().next().unwrap_or(""),
    ))
}

fn is_fence_close(line: &str, fence_char: char, fence_len: usize) -> bool {
    let trimmed = line.trim();
    let indent = line.len() - line.trim_start_matches(' ').len();
    indent <= 3 && trimmed.len() >= fence_len && trimmed.chars().all(|c| c == fence_char)
}

/// A file path named on `line` (the one before a fence), if any.
fn path_in(line: &str) -> Option<&str> {
    line.split(|c: char| c.is_whitespace() || "`'\"()[],:".contains(c))
        .map(|w| w.trim_end_matches('.'))
        .find(|w| {
            let ext = w.rsplit_once('.');
            let has_ext = ext.is_some_and(|(stem, ext)| {
                !stem.is_empty()
                    && (1..=5).contains(&ext.len())
                    && ext.chars().all(|c| c.is_ascii_alphanumeric())
                    && ext.chars().any(|c| c.is_ascii_alphabetic())
            });
            has_ext || (w.contains('/') && w.len() > 2)
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prune::relevance::terms;
    use serde_json::json;

    fn file(lines: usize) -> String {
        (0..lines)
            .map(|i| format!("let value_{i} = {i};\n"))
            .collect()
    }

    #[test]
    fn long_tool_outputs_become_markers() {
        let item = json!({"role": "tool", "tool_call_id": "c1", "content": file(40)});
        let call = Call {
            name: "read_file".into(),
            arguments: r#"{"path":"src/lib.rs"}"#.into(),
        };
        let stripped = strip(&item, Some(&call), &[]).unwrap_or_default();
        let text = stripped["content"].as_str().unwrap_or_default();
        assert_eq!(
            text,
            r#"[sluice removed 40 lines: output of read_file({"path":"src/lib.rs"}); first line: let value_0 = 0;]"#
        );
        assert_eq!(stripped["tool_call_id"], "c1");
        // Short outputs stay; a marker is short.
        assert!(strip(&stripped, Some(&call), &[]).is_none());
        let short = json!({"role": "tool", "tool_call_id": "c1", "content": "ok"});
        assert!(strip(&short, None, &[]).is_none());
    }

    #[test]
    fn lines_the_question_names_are_kept() {
        let item = json!({"type": "function_call_output", "call_id": "c", "output": file(100)});
        let terms = terms("what was value_42 set to?");
        let stripped = strip(&item, None, &terms).unwrap_or_default();
        let text = stripped["output"].as_str().unwrap_or_default();
        assert!(
            text.contains("lines kept:]\n42: let value_41 = 41;\n43: let value_42 = 42;\n44: "),
            "{text}"
        );
        assert!(text.contains("\n49: let value_48 = 48;"), "{text}");
        assert!(!text.contains("value_49 ="), "{text}");
        assert!(strip(&stripped, None, &terms).is_none());
    }

    #[test]
    fn long_pasted_texts_in_user_messages_go_with_what_the_question_names() {
        let doc: String = (0..120)
            .map(|i| format!("Section {i}: the proxy keeps option_{i} at its default.\n"))
            .collect();
        let item = json!({"role": "user", "content": format!("Here is the manual:\n{doc}")});
        let terms = terms("what is option_77's default?");
        let stripped = strip(&item, None, &terms).unwrap_or_default();
        let text = stripped["content"].as_str().unwrap_or_default();
        assert!(
            text.starts_with(
                "[sluice removed 121 lines: pasted text; first line: Here is the manual:"
            ),
            "{text}"
        );
        assert!(
            text.contains("79: Section 77: the proxy keeps option_77 at its default."),
            "{text}"
        );
        // An assistant's long answer is not pasted text.
        let answer = json!({"role": "assistant", "content": doc});
        assert!(strip(&answer, None, &terms).is_none());
    }

    #[test]
    fn long_fences_go_short_ones_and_prose_stay() {
        let text = format!(
            "Here is src/cache/store.rs:\n```rust\n{}```\nand a snippet:\n```\nx = 1\n```\nThoughts?",
            file(30)
        );
        let item = json!({"role": "user", "content": text});
        let stripped = strip(&item, None, &[]).unwrap_or_default();
        assert_eq!(
            stripped["content"],
            "Here is src/cache/store.rs:\n[sluice removed 30 lines: file src/cache/store.rs; first line: let value_0 = 0;]\nand a snippet:\n```\nx = 1\n```\nThoughts?"
        );
        // Unclosed fences run to the end.
        let open = json!({"role": "assistant", "content": format!("~~~python\n{}", file(20))});
        let stripped = strip(&open, None, &[]).unwrap_or_default();
        assert!(
            stripped["content"]
                .as_str()
                .unwrap_or_default()
                .starts_with("[sluice removed 20 lines: python code block")
        );
        let plain = json!({"role": "user", "content": file(30)});
        assert!(strip(&plain, None, &[]).is_none());
    }
}
