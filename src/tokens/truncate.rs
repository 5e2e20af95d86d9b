//! Cutting a text to a token budget by keeping its head and its tail.

use std::borrow::Cow;

use super::Encoding;

/// How far a cut may move back to land on a line break.
const LINE_SNAP_BYTES: usize = 240;
/// Pieces longer than this get boundaries inside them, every chunk.
const GIANT_PIECE_BYTES: usize = 1024;
const CHUNK_BYTES: usize = 256;

/// `text` in at most `max_tokens` tokens: its head (`head_ratio` of what is
/// kept) and its tail, with a marker between them saying how many tokens
/// were left out. `text` itself when it fits. Cuts fall between the
/// encoder's pieces, on a line break when one is near.
pub fn head_tail(encoding: Encoding, text: &str, max_tokens: u64, head_ratio: f64) -> Cow<'_, str> {
    let tokenizer = encoding.tokenizer();
    // Piece boundaries with the tokens before each.
    let mut bounds: Vec<(usize, u64)> = Vec::new();
    let mut total = 0u64;
    let mut at = 0usize;
    for piece in tokenizer.split(text) {
        bounds.push((at, total));
        let count = super::count_piece(tokenizer, piece);
        if piece.len() > GIANT_PIECE_BYTES {
            // One piece of many tokens (a run without spaces): boundaries
            // inside it too, by the tokens of its chunks.
            let mut inside = 0u64;
            let mut to = 0;
            for chunk in super::chunks(piece, CHUNK_BYTES) {
                inside += tokenizer.count_piece(chunk.as_bytes()) as u64;
                to += chunk.len();
                if to < piece.len() {
                    bounds.push((at + to, total + inside.min(count)));
                }
            }
        }
        total += count;
        at += piece.len();
    }
    bounds.push((text.len(), total));
    if total <= max_tokens {
        return Cow::Borrowed(text);
    }
    let mut slack = 4u64;
    loop {
        let marker_tokens = 16;
        let keep = max_tokens.saturating_sub(marker_tokens + slack);
        let head_tokens = (keep as f64 * head_ratio.clamp(0.0, 1.0)) as u64;
        let tail_tokens = keep - head_tokens;
        let head_end = cut_at(text, &bounds, head_tokens, true);
        let tail_start = cut_at(text, &bounds, total - tail_tokens, false).max(head_end);
        let omitted = tokens_before(&bounds, tail_start) - tokens_before(&bounds, head_end);
        let head = &text[..head_end];
        let break_before = if head.is_empty() || head.ends_with('\n') {
            ""
        } else {
            "\n"
        };
        let out = format!(
            "{head}{break_before}[… {omitted} tokens omitted …]\n{}",
            &text[tail_start..]
        );
        let counted = encoding.count(&out);
        if counted <= max_tokens || keep == 0 {
            return Cow::Owned(out);
        }
        slack += counted - max_tokens;
    }
}

/// The tokens before byte offset `at` (a piece boundary).
fn tokens_before(bounds: &[(usize, u64)], at: usize) -> u64 {
    match bounds.binary_search_by_key(&at, |b| b.0) {
        Ok(i) => bounds[i].1,
        // Inside a piece: count the whole piece as before it.
        Err(i) => bounds.get(i).map_or(0, |b| b.1),
    }
}

/// A byte offset where `tokens` tokens precede: for a head, the last piece
/// boundary at or below it; for a tail, the first at or above it. Then moved
/// to a line break within reach (backwards for a head, forwards for a tail).
fn cut_at(text: &str, bounds: &[(usize, u64)], tokens: u64, head: bool) -> usize {
    let i = bounds.partition_point(|b| b.1 <= tokens);
    let at = if head {
        bounds[i.saturating_sub(1)].0
    } else {
        // First boundary with at least `tokens` before it.
        let j = bounds.partition_point(|b| b.1 < tokens);
        bounds.get(j).map_or(text.len(), |b| b.0)
    };
    let bytes = text.as_bytes();
    if head {
        let from = at.saturating_sub(LINE_SNAP_BYTES);
        match memchr::memrchr(b'\n', &bytes[from..at]) {
            Some(nl) => from + nl + 1,
            None => at,
        }
    } else {
        let to = (at + LINE_SNAP_BYTES).min(bytes.len());
        match memchr::memchr(b'\n', &bytes[at..to]) {
            Some(nl) => at + nl + 1,
            None => at,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_texts_are_untouched() {
        let text = "a short prompt";
        assert!(matches!(
            head_tail(Encoding::O200kBase, text, 100, 0.6),
            Cow::Borrowed(_)
        ));
    }

    #[test]
    fn long_texts_keep_head_and_tail_within_budget() {
        let text: String = (0..2000)
            .map(|i| format!("line {i} of the log\n"))
            .collect();
        let total = Encoding::O200kBase.count(&text);
        for max in [50, 300, 1000] {
            let out = head_tail(Encoding::O200kBase, &text, max, 0.6);
            let counted = Encoding::O200kBase.count(&out);
            assert!(counted <= max, "{counted} > {max}");
            assert!(counted + 40 >= max, "{counted} far below {max}");
            assert!(out.starts_with("line 0 of the log\n"));
            assert!(out.ends_with("line 1999 of the log\n"));
            assert!(out.contains("tokens omitted"));
            // Cut on line breaks.
            for line in out.lines() {
                assert!(
                    line.starts_with("line ") || line.starts_with("[… "),
                    "{line:?}"
                );
            }
            let omitted: u64 = out
                .split("[… ")
                .nth(1)
                .and_then(|s| s.split(' ').next())
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            assert!(omitted > 0 && omitted < total);
        }
        // More head than tail.
        let out = head_tail(Encoding::O200kBase, &text, 500, 0.8);
        let (head, tail) = out.split_once("[… ").unwrap_or_default();
        assert!(head.len() > 3 * tail.len() / 2);
    }

    #[test]
    fn texts_without_breaks_are_cut_too() {
        let text = "a".repeat(200_000);
        let out = head_tail(Encoding::Cl100kBase, &text, 100, 0.5);
        let counted = Encoding::Cl100kBase.count(&out);
        assert!(counted <= 100 && counted > 60, "{counted}");
        assert!(out.starts_with("aaaa") && out.ends_with("aaaa"));
        let text = "é".repeat(10_000);
        let out = head_tail(Encoding::O200kBase, &text, 64, 0.6);
        assert!(Encoding::O200kBase.count(&out) <= 64);
    }

    #[test]
    fn truncating_twice_changes_nothing() {
        let text: String = (0..500).map(|i| format!("entry {i}\n")).collect();
        let once = head_tail(Encoding::O200kBase, &text, 200, 0.6).into_owned();
        let twice = head_tail(Encoding::O200kBase, &once, 200, 0.6);
        assert_eq!(once, twice);
    }
}
