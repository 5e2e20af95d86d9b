//! The pre-tokenizer: tiktoken's split of a text into pieces, before
//! merging.

use super::*;

use regex_automata::meta::{self, Regex};
use regex_automata::util::pool::{Pool, PoolGuard};
use regex_automata::{Anchored, Input};

/// tiktoken's `o200k_base` pattern, with `\s+(?!\S)` rewritten as `\s+$` and
/// the look-ahead pattern `\s+\s` (patterns from `bpe-openai`). The `bool`
/// marks a pattern whose last character is a look-ahead.
pub(crate) const O200K_BASE_PATTERNS: [(&str, bool); 3] = [
    (
        concat!(
            r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
            r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
            r"|\p{N}{1,3}",
            r"| ?[^\s\p{L}\p{N}]+[\r\n/]*",
            r"|\s*[\r\n]+",
            r"|\s+$",
        ),
        false,
    ),
    (r"\s+\s", true),
    (r"\s+", false),
];

/// tiktoken's current `cl100k_base` pattern,
/// `'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s`,
/// without possessive quantifiers and with the look-ahead rewritten.
pub(crate) const CL100K_BASE_PATTERNS: [(&str, bool); 3] = [
    (
        concat!(
            r"'(?i:[sdmt]|ll|ve|re)",
            r"|[^\r\n\p{L}\p{N}]?\p{L}+",
            r"|\p{N}{1,3}",
            r"| ?[^\s\p{L}\p{N}]+[\r\n]*",
            r"|\s+$",
            r"|\s*[\r\n]",
        ),
        false,
    ),
    (r"\s+\s", true),
    (r"\s", false),
];

/// tiktoken's pre-tokenizer regex, as several patterns, some of which end in
/// a one-character look-ahead (see the module docs).
pub(crate) struct Pretokenizer {
    pub(crate) regex: Regex,
    /// Per pattern: whether its last character is a look-ahead, to be
    /// dropped from the piece.
    pub(crate) lookahead: Vec<bool>,
    /// Search caches (lazy DFA states), reused across calls and threads.
    pub(crate) caches: Pool<meta::Cache, CacheFn>,
}

impl Pretokenizer {
    pub(crate) fn new(patterns: &[(&str, bool)]) -> Result<Pretokenizer, String> {
        let sources: Vec<&str> = patterns.iter().map(|&(pattern, _)| pattern).collect();
        let regex = Regex::new_many(&sources).map_err(|e| format!("pattern: {e}"))?;
        let lookahead = patterns.iter().map(|&(_, lookahead)| lookahead).collect();
        let for_caches = regex.clone();
        let create: CacheFn = Box::new(move || for_caches.create_cache());
        Ok(Pretokenizer {
            regex,
            lookahead,
            caches: Pool::new(create),
        })
    }

    /// The length of the piece at the start of `rest` (not empty).
    #[inline]
    pub(crate) fn piece_len(&self, cache: &mut meta::Cache, rest: &str) -> usize {
        let input = Input::new(rest).anchored(Anchored::Yes);
        let end = match self.regex.search_with(cache, &input) {
            Some(m) if self.lookahead.get(m.pattern().as_usize()) == Some(&true) => {
                let last = rest
                    .get(..m.end())
                    .and_then(|matched| matched.chars().next_back());
                m.end().saturating_sub(last.map_or(0, char::len_utf8))
            }
            Some(m) => m.end(),
            None => 0,
        };
        if end == 0 || !rest.is_char_boundary(end) {
            // Not reached: every character starts a match of some pattern,
            // and look-ahead patterns match at least two characters. Take one
            // character so the split always advances.
            rest.chars().next().map_or(rest.len(), char::len_utf8)
        } else {
            end
        }
    }
}

/// The iterator behind [`Bpe::split`]: anchored matches one after another,
/// each starting where the previous piece ended.
pub(crate) struct Splits<'a> {
    /// The pre-tokenizer and a cache taken from its pool for this split;
    /// `None` for the byte-counting fallback (the text is one piece).
    pub(crate) pre: Option<(&'a Pretokenizer, PoolGuard<'a, meta::Cache, CacheFn>)>,
    pub(crate) text: &'a str,
    pub(crate) pos: usize,
}

impl<'a> Iterator for Splits<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let rest = self.text.get(self.pos..).filter(|rest| !rest.is_empty())?;
        let len = match &mut self.pre {
            Some((pre, cache)) => pre.piece_len(cache, rest),
            None => rest.len(),
        };
        let piece = rest.get(..len).unwrap_or(rest);
        self.pos += piece.len();
        Some(piece)
    }
}
