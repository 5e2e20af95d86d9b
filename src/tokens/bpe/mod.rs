//! Exact, compact token counting for OpenAI's byte-pair encodings
//! (`o200k_base`, `cl100k_base`): the same counts as `tiktoken`, in a few
//! megabytes per encoding.
//!
//! # How tiktoken counts
//!
//! tiktoken encodes a text in two steps, and this module does the same:
//!
//! 1. **Pre-tokenization.** A regex splits the text into pieces (words with
//!    their leading space, runs of up to three digits, runs of punctuation,
//!    runs of whitespace, ...). Pieces never merge with each other, so the
//!    count of a text is the sum of the counts of its pieces ([`Bpe::split`]).
//! 2. **Byte-pair merging** of each piece ([`Bpe::count_piece`]). A piece
//!    that is itself a token is one token. Otherwise the piece starts as one
//!    part per byte, and the adjacent pair of parts whose concatenation has
//!    the lowest rank (the earliest-learned merge; the leftmost on a tie) is
//!    merged, again and again, until no adjacent pair is a token. The number
//!    of parts left is the piece's token count.
//!
//! Pieces up to [`SHORT_PIECE`] bytes are merged exactly like tiktoken's
//! `byte_pair_merge`: a scan of a small array for the lowest rank, O(n²) but
//! fast for the short pieces real text is made of. Longer pieces (a run of
//! one letter, a long base64 blob, a line of dashes) use an O(n log n)
//! version of the same procedure: each part records where it ends and the
//! rank of merging it with the next part, and a tournament tree over those
//! ranks (a binary tree whose inner nodes hold the position of the lowest
//! (rank, position) below them) gives the merge to make; a merge updates the
//! ranks of three parts, each update climbing the tree only while the
//! minimum changes. Unlike tiktoken's heap of candidate merges with lazy
//! invalidation, the tree holds one entry per byte and no stale entries:
//! 12 bytes per byte of the piece while it is counted. Both paths make the
//! same merges, so give the same counts; a client cannot stall a worker
//! with one long word (1 MiB of one letter counts in about 0.15 s).
//!
//! # The look-ahead trick
//!
//! tiktoken's patterns end with `\s+(?!\S)`: a whitespace run, minus its last
//! character when a non-space follows (so that the space is kept for the next
//! word, as in `" world"`). The `regex` family has no look-around, so, as the
//! MIT-licensed `bpe-openai` crate does (its `Pretokenizer::new_lookahead`,
//! from which this technique and the patterns are taken), the pattern is
//! split into several patterns of one `regex_automata::meta::Regex`, matched
//! anchored at the current position with leftmost-first priority:
//!
//! * the alternatives before the look-ahead, plus `\s+$` (`\s+(?!\S)` at the
//!   end of the text is a plain run to the end);
//! * `\s+\s`, a "look-ahead" pattern: when it wins, its last character is
//!   dropped from the piece, which is exactly what `\s+(?!\S)` matches when a
//!   non-space follows the run (the run minus its last character; this
//!   pattern needs two characters, as `\s+(?!\S)` fails on a lone space
//!   before a word);
//! * the final `\s+` (`\s` for `cl100k_base`), for that lone space.
//!
//! `cl100k_base` uses tiktoken's current pattern, which tries `\s++$` before
//! `\s*[\r\n]`: a whitespace run that reaches the end of the text is one
//! piece even when it contains a newline (`"x\n\t"` ends with the piece
//! `"\n\t"`). `o200k_base` has no such alternative, so there `\s+$` comes
//! after `\s*[\r\n]+` and the same text ends with `"\n"`, `"\t"`. tiktoken's
//! possessive quantifiers (`?+`, `++`) are written as plain ones: in these
//! patterns they match the same text.
//!
//! # Memory
//!
//! The ranks are stored compactly: every token's bytes concatenated in rank
//! order in one buffer, a `u32` offset per rank, and a
//! `hashbrown::HashTable<u32>` of ranks keyed by their bytes (hashed with
//! `FxHasher`; the keys are fixed, so a client cannot aim collisions at it).
//! That is about 3.5 MB for `o200k_base` and 1.8 MB for `cl100k_base`, with
//! no allocation per token, instead of the tens of megabytes of automata the
//! `bpe-openai` crate deserializes. The regex takes about 0.5 MB more, and
//! its lazy DFA caches (a few hundred kB each on real text, at most a few
//! MB) are kept in a pool and reused, one per concurrent [`Bpe::split`].
//! Counting allocates nothing for pieces up to [`SHORT_PIECE`] bytes, and 12
//! bytes per byte of a longer piece while it is merged.
//!
//! # The data
//!
//! `data/o200k_base.tiktoken.gz` and `data/cl100k_base.tiktoken.gz` are
//! OpenAI's tiktoken encoding files (lines of `base64(token bytes) rank`),
//! gzipped as shipped by the MIT-licensed `bpe-openai` crate; decompressed,
//! they are byte for byte the files tiktoken downloads (see `data/README.md`
//! for their sha256). They are embedded in the binary and decoded when an
//! encoding is built; the decoded text is not kept.

use std::panic::{RefUnwindSafe, UnwindSafe};

use hashbrown::HashTable;
use regex_automata::meta::{self};

mod merge;
mod pretokenizer;
#[cfg(test)]
mod tests;
mod vocab;

use pretokenizer::*;
use vocab::*;

/// Pieces up to this many bytes are merged by scanning an array, longer ones
/// with a tournament tree (both in [`Bpe::count_piece`]). Must stay below
/// 256: the short path keeps part starts in `u8`s.
const SHORT_PIECE: usize = 128;

/// No rank: the pair is not a token.
const NO_RANK: u32 = u32::MAX;

/// Creates a lazy DFA cache for the pre-tokenizer's regex.
type CacheFn = Box<dyn Fn() -> meta::Cache + Send + Sync + UnwindSafe + RefUnwindSafe>;

/// One encoding: its pre-tokenizer and its merge ranks.
pub struct Bpe {
    /// Every token's bytes, concatenated in rank order.
    bytes: Box<[u8]>,
    /// Token `r` is `bytes[offsets[r]..offsets[r + 1]]`; one more entry than
    /// there are tokens (or none at all when empty).
    offsets: Box<[u32]>,
    /// The ranks, found by their token's bytes (hashed with [`hash_bytes`]).
    index: HashTable<u32>,
    /// The length of the longest token.
    max_token: usize,
    /// The pre-tokenizer; `None` only for the byte-counting fallback, which
    /// treats the whole text as one piece.
    pre: Option<Pretokenizer>,
}

impl Bpe {
    /// `o200k_base` (gpt-4o, gpt-4.1, gpt-5, o-series), built from the
    /// embedded encoding file.
    ///
    /// Does not panic: if the embedded data or the pattern could not be
    /// built (which the tests rule out: they check the real encodings load
    /// with 199,998 and 100,256 ranks), this returns an empty encoding that
    /// counts one token per byte, an overestimate.
    pub fn o200k_base() -> Bpe {
        Self::load(O200K_BASE_GZ, &O200K_BASE_PATTERNS).unwrap_or_else(|_| Self::bytes_only())
    }

    /// `cl100k_base` (gpt-4, gpt-3.5-turbo, text-embedding-3), built from the
    /// embedded encoding file; like [`Bpe::o200k_base`], falls back to
    /// counting bytes instead of panicking.
    pub fn cl100k_base() -> Bpe {
        Self::load(CL100K_BASE_GZ, &CL100K_BASE_PATTERNS).unwrap_or_else(|_| Self::bytes_only())
    }

    /// The pieces the encoding's pre-tokenizer splits `text` into (tiktoken's regex).
    ///
    /// The pieces are consecutive and cover the whole text.
    pub fn split<'a>(&'a self, text: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        Splits {
            pre: self.pre.as_ref().map(|pre| (pre, pre.caches.get())),
            text,
            pos: 0,
        }
    }

    /// Tokens of one piece (byte-pair merges by rank, as tiktoken does).
    pub fn count_piece(&self, piece: &[u8]) -> usize {
        match piece.len() {
            // Every byte is a token (checked when loading); the fallback
            // without tokens counts bytes.
            len if len < 2 || self.index.is_empty() => len,
            _ if self.rank(piece).is_some() => 1,
            len if len <= SHORT_PIECE => self.merge_short(piece),
            len if len < u32::MAX as usize => self.merge_long::<u32>(piece),
            _ => self.merge_long::<usize>(piece),
        }
    }

    /// Tokens of a whole text: the sum over its pieces.
    pub fn count(&self, text: &str) -> usize {
        self.split(text)
            .map(|piece| self.count_piece(piece.as_bytes()))
            .sum()
    }

    /// Number of ranks (tokens) in the encoding, for tests.
    #[expect(
        clippy::len_without_is_empty,
        reason = "an encoding is never meant to be empty; len is for tests"
    )]
    pub fn len(&self) -> usize {
        self.offsets.len().saturating_sub(1)
    }

    /// The fallback encoding: no tokens and no pre-tokenizer, so a text is
    /// one piece and counts one token per byte.
    fn bytes_only() -> Bpe {
        Bpe {
            bytes: Box::default(),
            offsets: Box::default(),
            index: HashTable::new(),
            max_token: 0,
            pre: None,
        }
    }
}
