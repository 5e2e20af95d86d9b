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

use std::hash::Hasher;
use std::io::{BufRead, BufReader};
use std::panic::{RefUnwindSafe, UnwindSafe};

use flate2::bufread::GzDecoder;
use hashbrown::HashTable;
use hashbrown::hash_table::Entry;
use regex_automata::meta::{self, Regex};
use regex_automata::util::pool::{Pool, PoolGuard};
use regex_automata::{Anchored, Input};
use rustc_hash::FxHasher;

/// OpenAI's `o200k_base.tiktoken`, gzipped.
const O200K_BASE_GZ: &[u8] = include_bytes!("data/o200k_base.tiktoken.gz");
/// OpenAI's `cl100k_base.tiktoken`, gzipped.
const CL100K_BASE_GZ: &[u8] = include_bytes!("data/cl100k_base.tiktoken.gz");

/// tiktoken's `o200k_base` pattern, with `\s+(?!\S)` rewritten as `\s+$` and
/// the look-ahead pattern `\s+\s` (patterns from `bpe-openai`). The `bool`
/// marks a pattern whose last character is a look-ahead.
const O200K_BASE_PATTERNS: [(&str, bool); 3] = [
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
const CL100K_BASE_PATTERNS: [(&str, bool); 3] = [
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
    #[allow(
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

    /// Builds an encoding from a gzipped `.tiktoken` file (lines of
    /// `base64(token) rank`, ranks 0, 1, 2, ... in order) and the
    /// pre-tokenizer's patterns.
    fn load(gz: &[u8], patterns: &[(&str, bool)]) -> Result<Bpe, String> {
        let pre = Pretokenizer::new(patterns)?;

        let mut reader = BufReader::with_capacity(1 << 16, GzDecoder::new(gz));
        // The token bytes take a little less room than the compressed file.
        let mut bytes = Vec::with_capacity(gz.len());
        let mut offsets = Vec::with_capacity(gz.len() / 7);
        offsets.push(0u32);
        let mut line = Vec::with_capacity(128);
        let mut line_no = 0usize;
        loop {
            line.clear();
            let read = reader
                .read_until(b'\n', &mut line)
                .map_err(|e| format!("decompressing: {e}"))?;
            if read == 0 {
                break;
            }
            line_no += 1;
            let text = line.strip_suffix(b"\n").unwrap_or(&line);
            let text = text.strip_suffix(b"\r").unwrap_or(text);
            if text.is_empty() {
                continue;
            }
            let bad = |what: &str| format!("line {line_no}: {what}");
            let space = text
                .iter()
                .position(|&b| b == b' ')
                .ok_or_else(|| bad("no space"))?;
            let (token, rank) = (&text[..space], &text[space + 1..]);
            let expected = offsets.len() - 1;
            if parse_decimal(rank) != Some(expected) {
                return Err(bad("rank out of order"));
            }
            let start = bytes.len();
            decode_base64(token, &mut bytes).ok_or_else(|| bad("bad base64"))?;
            if bytes.len() == start {
                return Err(bad("empty token"));
            }
            offsets.push(u32::try_from(bytes.len()).map_err(|_| bad("too many bytes"))?);
        }
        let count = offsets.len() - 1;
        if u32::try_from(count).map_or(true, |count| count == NO_RANK) {
            return Err("too many tokens".to_owned());
        }

        let mut index = HashTable::with_capacity(count);
        for rank in 0..count {
            // `count` fits in a u32 (checked above).
            let rank = u32::try_from(rank).map_err(|_| "too many tokens".to_owned())?;
            let token = token_bytes(&bytes, &offsets, rank);
            let entry = index.entry(
                hash_bytes(token),
                |&other| token_bytes(&bytes, &offsets, other) == token,
                |&other| hash_bytes(token_bytes(&bytes, &offsets, other)),
            );
            match entry {
                Entry::Vacant(slot) => {
                    slot.insert(rank);
                }
                Entry::Occupied(_) => return Err(format!("rank {rank}: duplicate token")),
            }
        }

        let max_token = offsets
            .windows(2)
            .map(|w| w[1].saturating_sub(w[0]) as usize)
            .max()
            .unwrap_or(0);
        let bpe = Bpe {
            bytes: bytes.into_boxed_slice(),
            offsets: offsets.into_boxed_slice(),
            index,
            max_token,
            pre: Some(pre),
        };
        // Merging starts from single bytes, so each must be a token.
        if let Some(byte) = (0..=u8::MAX).find(|&b| bpe.rank(&[b]).is_none()) {
            return Err(format!("byte {byte} is not a token"));
        }
        Ok(bpe)
    }

    /// The rank of the token `bytes`, if it is one.
    #[inline]
    fn rank(&self, bytes: &[u8]) -> Option<u32> {
        self.index
            .find(hash_bytes(bytes), |&rank| {
                token_bytes(&self.bytes, &self.offsets, rank) == bytes
            })
            .copied()
    }

    /// The rank of `piece[start..end]`, or [`NO_RANK`].
    #[inline]
    fn rank_of(&self, piece: &[u8], start: usize, end: usize) -> u32 {
        piece
            .get(start..end)
            .and_then(|bytes| self.rank(bytes))
            .unwrap_or(NO_RANK)
    }

    /// tiktoken's `byte_pair_merge` for a piece of 2 to [`SHORT_PIECE`]
    /// bytes: returns the number of parts left.
    fn merge_short(&self, piece: &[u8]) -> usize {
        let n = piece.len();
        if n > SHORT_PIECE {
            return self.merge_long::<usize>(piece);
        }
        // Part k starts at `start[k]`; `rank[k]` is the rank of merging part k
        // with part k + 1. Entry `len - 1` is the end of the piece.
        let mut start = [0u8; SHORT_PIECE + 1];
        let mut rank = [NO_RANK; SHORT_PIECE + 1];
        for i in 0..=n {
            // n <= SHORT_PIECE < 256.
            start[i] = i as u8;
            if i + 1 < n {
                rank[i] = self.rank_of(piece, i, i + 2);
            }
        }
        let mut len = n + 1;
        // The rank of merging part k with part k + 1, once part k + 1 has been
        // merged into part k + 2 but is still in the array (as tiktoken does).
        let merged_rank = |start: &[u8; SHORT_PIECE + 1], len: usize, k: usize| {
            if k + 3 < len {
                self.rank_of(piece, usize::from(start[k]), usize::from(start[k + 3]))
            } else {
                NO_RANK
            }
        };
        loop {
            let mut best = (NO_RANK, 0);
            for (k, &r) in rank[..len - 1].iter().enumerate() {
                if r < best.0 {
                    best = (r, k);
                }
            }
            if best.0 == NO_RANK {
                break;
            }
            let i = best.1;
            if i > 0 {
                rank[i - 1] = merged_rank(&start, len, i - 1);
            }
            rank[i] = merged_rank(&start, len, i);
            start.copy_within(i + 2..len, i + 1);
            rank.copy_within(i + 2..len, i + 1);
            len -= 1;
        }
        len - 1
    }

    /// The same merges as [`Bpe::merge_short`] in O(n log n), for long
    /// pieces, with a [`MinTree`] over the parts' pair ranks. Returns the
    /// number of parts left. `I` holds positions: `u32` whenever the piece is
    /// short enough, to halve the memory.
    fn merge_long<I: Pos>(&self, piece: &[u8]) -> usize {
        let n = piece.len();
        if n < 2 {
            return n;
        }
        // Node i describes the part starting at byte i, if there is one
        // (`end` is 0 otherwise); its `pair` is the leaf i of the tree.
        let mut nodes: Vec<Node<I>> = (0..n)
            .map(|i| Node {
                end: I::new(i + 1),
                pair: NO_RANK,
            })
            .collect();
        for (i, node) in nodes.iter_mut().enumerate().take(n - 1) {
            node.pair = self.rank_of(piece, i, i + 2);
        }
        let mut tree = MinTree::new(&nodes);
        let mut parts = n;
        loop {
            let left = tree.min();
            let Some(&Node { end, pair }) = nodes.get(left) else {
                break;
            };
            if pair == NO_RANK {
                break; // no adjacent pair is a token
            }
            // Merge the part at `left` with the one after it, at `right`.
            let right = end.get();
            let right_end = nodes[right].end.get();
            nodes[right] = Node {
                end: I::new(0),
                pair: NO_RANK,
            };
            tree.update(&nodes, right);
            parts -= 1;
            // The new pair to the right: this part and the one at `right_end`.
            let next = match nodes.get(right_end) {
                Some(after) => self.rank_of(piece, left, after.end.get()),
                None => NO_RANK,
            };
            nodes[left] = Node {
                end: I::new(right_end),
                pair: next,
            };
            tree.update(&nodes, left);
            // The new pair to the left: the previous part and this one. The
            // previous part is a token, so it starts at most `max_token`
            // bytes before; the positions in between hold no part.
            if let Some(before) = (left.saturating_sub(self.max_token)..left)
                .rev()
                .find(|&i| nodes[i].end.get() != 0)
            {
                nodes[before].pair = self.rank_of(piece, before, right_end);
                tree.update(&nodes, before);
            }
        }
        parts
    }
}

/// Token `rank`'s bytes (empty if there is no such rank).
#[inline]
fn token_bytes<'a>(bytes: &'a [u8], offsets: &[u32], rank: u32) -> &'a [u8] {
    let rank = rank as usize;
    match (offsets.get(rank), offsets.get(rank + 1)) {
        (Some(&start), Some(&end)) => bytes.get(start as usize..end as usize).unwrap_or(&[]),
        _ => &[],
    }
}

/// The hash of a token's bytes in the index.
#[inline]
fn hash_bytes(bytes: &[u8]) -> u64 {
    let mut hasher = FxHasher::default();
    hasher.write(bytes);
    hasher.finish()
}

/// A decimal number of ASCII digits.
fn parse_decimal(digits: &[u8]) -> Option<usize> {
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0usize, |n, &d| {
        let digit = d.checked_sub(b'0').filter(|&d| d < 10)?;
        n.checked_mul(10)?.checked_add(usize::from(digit))
    })
}

/// Marks a byte that is not a base64 digit in [`BASE64`].
const NOT_BASE64: u8 = 0xff;

/// The value of each base64 digit, by byte.
const BASE64: [u8; 256] = {
    let mut table = [NOT_BASE64; 256];
    let digits = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut i = 0;
    while i < digits.len() {
        table[digits[i] as usize] = i as u8;
        i += 1;
    }
    table
};

/// Appends the bytes of standard base64 (`=` padding optional) to `out`.
fn decode_base64(text: &[u8], out: &mut Vec<u8>) -> Option<()> {
    let text = text.strip_suffix(b"=").unwrap_or(text);
    let text = text.strip_suffix(b"=").unwrap_or(text);
    if text.len() % 4 == 1 {
        return None;
    }
    let mut acc = 0u32;
    let mut bits = 0u32;
    for &c in text {
        let value = BASE64[usize::from(c)];
        if value == NOT_BASE64 {
            return None;
        }
        acc = (acc << 6) | u32::from(value);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(())
}

/// A part of a piece in [`Bpe::merge_long`], by the position it starts at.
#[derive(Clone, Copy)]
struct Node<I> {
    /// Where the part ends (the next part starts); 0 if no part starts here.
    end: I,
    /// The rank of merging this part with the next one; [`NO_RANK`] if that
    /// is not a token, or if no part starts here any more.
    pair: u32,
}

/// A position in a piece, as stored by [`Bpe::merge_long`]: `u32` when the
/// piece is short enough, to halve the memory, else `usize`.
trait Pos: Copy {
    fn new(i: usize) -> Self;
    fn get(self) -> usize;
}

impl Pos for u32 {
    // Only used for pieces shorter than u32::MAX bytes.
    #[inline]
    fn new(i: usize) -> u32 {
        i as u32
    }
    #[inline]
    fn get(self) -> usize {
        self as usize
    }
}

impl Pos for usize {
    #[inline]
    fn new(i: usize) -> usize {
        i
    }
    #[inline]
    fn get(self) -> usize {
        self
    }
}

/// The lowest (rank, position) among the parts of [`Bpe::merge_long`]: a
/// tournament tree over the nodes' `pair`s, whose inner node k holds the
/// position of the smallest leaf below it (inner node 1 is the root; the
/// children of k are 2k and 2k + 1; child c >= n is leaf c - n). Comparing
/// (rank, position) makes ties go to the leftmost pair, as in tiktoken, and
/// makes the tree's shape irrelevant. It takes one position per byte and no
/// stale entries, unlike a heap of candidate merges, and an update stops
/// climbing as soon as a subtree's minimum is unchanged.
struct MinTree<I> {
    /// Inner nodes; index 0 is unused.
    inner: Vec<I>,
}

impl<I: Pos> MinTree<I> {
    fn new(nodes: &[Node<I>]) -> MinTree<I> {
        let n = nodes.len();
        let mut tree = MinTree {
            inner: vec![I::new(0); n],
        };
        for k in (1..n).rev() {
            let min = tree.smaller(nodes, 2 * k, 2 * k + 1);
            tree.inner[k] = I::new(min);
        }
        tree
    }

    /// The position of the lowest pair (0 if there are fewer than two
    /// nodes; check its rank).
    #[inline]
    fn min(&self) -> usize {
        self.inner.get(1).map_or(0, |&i| i.get())
    }

    /// The position of the smallest leaf below child `c`.
    #[inline]
    fn leaf(&self, c: usize) -> usize {
        match self.inner.get(c) {
            Some(i) => i.get(),
            None => c - self.inner.len(),
        }
    }

    /// The smaller of the minima below children `a` and `b`.
    #[inline]
    fn smaller(&self, nodes: &[Node<I>], a: usize, b: usize) -> usize {
        let (a, b) = (self.leaf(a), self.leaf(b));
        let rank = |i: usize| nodes.get(i).map_or(NO_RANK, |node| node.pair);
        if (rank(b), b) < (rank(a), a) { b } else { a }
    }

    /// Restores the minima above leaf `pos`, whose rank changed.
    fn update(&mut self, nodes: &[Node<I>], pos: usize) {
        let mut k = (pos + self.inner.len()) / 2;
        while k >= 1 {
            let min = self.smaller(nodes, 2 * k, 2 * k + 1);
            let old = self.inner[k].get();
            if min == old && min != pos {
                break; // this subtree's minimum, so every one above, is unchanged
            }
            self.inner[k] = I::new(min);
            k /= 2;
        }
    }
}

/// tiktoken's pre-tokenizer regex, as several patterns, some of which end in
/// a one-character look-ahead (see the module docs).
struct Pretokenizer {
    regex: Regex,
    /// Per pattern: whether its last character is a look-ahead, to be
    /// dropped from the piece.
    lookahead: Vec<bool>,
    /// Search caches (lazy DFA states), reused across calls and threads.
    caches: Pool<meta::Cache, CacheFn>,
}

impl Pretokenizer {
    fn new(patterns: &[(&str, bool)]) -> Result<Pretokenizer, String> {
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
    fn piece_len(&self, cache: &mut meta::Cache, rest: &str) -> usize {
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
struct Splits<'a> {
    /// The pre-tokenizer and a cache taken from its pool for this split;
    /// `None` for the byte-counting fallback (the text is one piece).
    pre: Option<(&'a Pretokenizer, PoolGuard<'a, meta::Cache, CacheFn>)>,
    text: &'a str,
    pos: usize,
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

#[cfg(test)]
#[expect(
    clippy::expect_used,
    reason = "tests fail loudly on a malformed fixture"
)]
mod tests {
    use std::sync::LazyLock;

    use super::*;

    static O200K: LazyLock<Bpe> = LazyLock::new(Bpe::o200k_base);
    static CL100K: LazyLock<Bpe> = LazyLock::new(Bpe::cl100k_base);

    const REFERENCE: &str = include_str!("../../tests/fixtures/tokens/reference.json");

    /// tiktoken's `byte_pair_merge`, as written there (a `Vec` of parts and
    /// `remove`), for any length: the reference for both merge paths.
    fn reference_count(bpe: &Bpe, piece: &[u8]) -> usize {
        if piece.len() < 2 {
            return piece.len();
        }
        if bpe.rank(piece).is_some() {
            return 1;
        }
        let rank = |bytes: &[u8]| bpe.rank(bytes).unwrap_or(NO_RANK);
        let mut parts: Vec<(usize, u32)> = (0..piece.len() - 1)
            .map(|i| (i, rank(&piece[i..i + 2])))
            .collect();
        parts.push((piece.len() - 1, NO_RANK));
        parts.push((piece.len(), NO_RANK));
        let get_rank = |parts: &Vec<(usize, u32)>, i: usize| {
            if i + 3 < parts.len() {
                rank(&piece[parts[i].0..parts[i + 3].0])
            } else {
                NO_RANK
            }
        };
        // The leftmost pair of the lowest rank, if any is a token.
        while let Some((i, _)) = parts[..parts.len() - 1]
            .iter()
            .enumerate()
            .filter(|&(_, &(_, r))| r != NO_RANK)
            .min_by_key(|&(i, &(_, r))| (r, i))
        {
            if i > 0 {
                parts[i - 1].1 = get_rank(&parts, i - 1);
            }
            parts[i].1 = get_rank(&parts, i);
            parts.remove(i + 1);
        }
        parts.len() - 1
    }

    /// A deterministic xorshift generator.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    /// Random text from characters that exercise every pattern.
    fn random_text(rng: &mut Rng, len: usize) -> String {
        const PARTS: &[&str] = &[
            " ",
            "  ",
            "\n",
            "\r\n",
            "\t",
            "\u{a0}",
            "\u{3000}",
            "\u{2028}",
            "a",
            "e",
            "T",
            "HTTP",
            "Server",
            "'s",
            "'T",
            "'LL",
            "'re",
            "'",
            "ſ",
            "1",
            "23",
            "4567",
            "٣",
            "!",
            "...",
            "/",
            "//",
            "<|endoftext|>",
            "中",
            "文字",
            "한국",
            "🚀",
            "👍🏽",
            "\u{301}",
            "é",
            "ß",
            "Ж",
            "λ",
            "x",
            "_",
            "-",
            "=",
            "\u{200d}",
            "\u{feff}",
            "\0",
            "\u{7f}",
            "ǅ",
            "ʰ",
            "Ⅻ",
        ];
        let mut text = String::new();
        while text.len() < len {
            text.push_str(PARTS[rng.below(PARTS.len())]);
        }
        text
    }

    #[test]
    fn real_encodings_load() {
        let o200k = Bpe::load(O200K_BASE_GZ, &O200K_BASE_PATTERNS);
        let cl100k = Bpe::load(CL100K_BASE_GZ, &CL100K_BASE_PATTERNS);
        assert_eq!(o200k.as_ref().map(Bpe::len), Ok(199_998));
        assert_eq!(cl100k.as_ref().map(Bpe::len), Ok(100_256));
        assert_eq!(O200K.len(), 199_998);
        assert_eq!(CL100K.len(), 100_256);
    }

    #[test]
    fn tokens_are_in_rank_order() {
        // Ranks 0..256 of both encodings are the printable bytes first.
        for bpe in [&*O200K, &*CL100K] {
            assert_eq!(token_bytes(&bpe.bytes, &bpe.offsets, 0), b"!");
            assert_eq!(bpe.rank(b"!"), Some(0));
            assert_eq!(bpe.rank(b"\""), Some(1));
            assert_eq!(bpe.rank(b"not a token at all, surely"), None);
            let last = u32::try_from(bpe.len() - 1).unwrap_or(0);
            let token = token_bytes(&bpe.bytes, &bpe.offsets, last);
            assert_eq!(bpe.rank(token), Some(last));
        }
    }

    #[test]
    fn matches_tiktoken_reference_fixture() {
        let fixture: serde_json::Value =
            serde_json::from_str(REFERENCE).expect("reference.json parses");
        let texts = fixture["texts"].as_array().expect("texts");
        assert!(texts.len() > 40);
        for entry in texts {
            let text = entry["text"].as_str().expect("text");
            for (name, bpe) in [("o200k_base", &*O200K), ("cl100k_base", &*CL100K)] {
                let expected = entry[name].as_u64().expect("count") as usize;
                assert_eq!(
                    bpe.count(text),
                    expected,
                    "{name} {}: {text:?}",
                    entry["name"]
                );
            }
        }
    }

    #[test]
    fn known_counts() {
        assert_eq!(O200K.count(""), 0);
        assert_eq!(O200K.count("Hello, world!"), 4);
        assert_eq!(CL100K.count("Hello, world!"), 4);
        assert_eq!(CL100K.count("hello world"), 2);
        assert_eq!(O200K.count_piece(b""), 0);
        assert_eq!(O200K.count_piece(b"\xff"), 1);
        assert_eq!(O200K.count_piece(b" world"), 1);
    }

    #[test]
    fn splits_like_tiktoken() {
        fn pieces<'a>(bpe: &'a Bpe, text: &'a str) -> Vec<&'a str> {
            bpe.split(text).collect()
        }
        for bpe in [&*O200K, &*CL100K] {
            assert_eq!(pieces(bpe, "hello world   "), ["hello", " world", "   "]);
            assert_eq!(pieces(bpe, "a  b"), ["a", " ", " b"]);
            assert_eq!(pieces(bpe, "a   \tb"), ["a", "   ", "\tb"]);
            assert_eq!(pieces(bpe, "x \n\n  y"), ["x", " \n\n", " ", " y"]);
            assert_eq!(pieces(bpe, "1234567"), ["123", "456", "7"]);
            assert_eq!(pieces(bpe, ""), Vec::<&str>::new());
            assert_eq!(pieces(bpe, " "), [" "]);
        }
        assert_eq!(pieces(&O200K, "HTTPServer's"), ["HTTPServer's"]);
        assert_eq!(pieces(&O200K, "helloWorld"), ["hello", "World"]);
        assert_eq!(pieces(&CL100K, "HTTPServer's"), ["HTTPServer", "'s"]);
        assert_eq!(pieces(&O200K, "a/b\n"), ["a", "/b", "\n"]);
        assert_eq!(pieces(&O200K, "x.//\n"), ["x", ".//\n"]);
        // A whitespace run to the end: one piece for cl100k_base (`\s++$`
        // comes first), split after the last newline for o200k_base.
        assert_eq!(pieces(&CL100K, "x\n\t"), ["x", "\n\t"]);
        assert_eq!(pieces(&O200K, "x\n\t"), ["x", "\n", "\t"]);
        // A lone space before a non-space is its own piece; the look-ahead
        // drops a whole (multi-byte) character.
        assert_eq!(
            pieces(&O200K, "\u{3000}\u{3000}x"),
            ["\u{3000}", "\u{3000}x"]
        );
    }

    #[test]
    fn split_covers_the_text() {
        let mut rng = Rng(0x5eed);
        for _ in 0..300 {
            let len = rng.below(200);
            let text = random_text(&mut rng, len);
            for bpe in [&*O200K, &*CL100K] {
                let joined: String = bpe.split(&text).collect();
                assert_eq!(joined, text);
                assert!(bpe.split(&text).all(|piece| !piece.is_empty()));
            }
        }
    }

    #[test]
    fn both_merge_paths_match_tiktoken() {
        let mut rng = Rng(42);
        let sources: Vec<Vec<u8>> = vec![
            b"a".repeat(400),
            b"ab".repeat(200),
            b"abc ".repeat(100),
            "中文字".repeat(50).into_bytes(),
            "🚀👍🏽".repeat(30).into_bytes(),
            b"-=".repeat(200),
            b"0123456789".repeat(40),
            (0..400u32).map(|i| (i * 7 % 256) as u8).collect(),
            random_text(&mut rng, 400).into_bytes(),
            random_text(&mut rng, 400).replace(' ', "").into_bytes(),
            b"Zm9vYmFyYmF6cXV4".repeat(25),
        ];
        for bpe in [&*O200K, &*CL100K] {
            for source in &sources {
                for len in (2..=160).chain([200, 255, 256, 257, 399]) {
                    for offset in [0, 1, 3] {
                        let Some(piece) = source.get(offset..offset + len) else {
                            continue;
                        };
                        let expected = reference_count(bpe, piece);
                        assert_eq!(bpe.count_piece(piece), expected, "{piece:?}");
                        if bpe.rank(piece).is_none() {
                            assert_eq!(bpe.merge_long::<u32>(piece), expected, "{piece:?}");
                            assert_eq!(bpe.merge_long::<usize>(piece), expected);
                            if len <= SHORT_PIECE {
                                assert_eq!(bpe.merge_short(piece), expected, "{piece:?}");
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn min_tree_finds_the_leftmost_lowest() {
        let mut rng = Rng(3);
        for n in [1, 2, 3, 5, 8, 13, 64, 100, 1000] {
            let mut nodes: Vec<Node<u32>> = (0..n)
                .map(|_| Node {
                    end: 1,
                    pair: (rng.next() % 20) as u32,
                })
                .collect();
            let mut tree = MinTree::new(&nodes);
            for round in 0..2000 {
                let expected = (0..n).min_by_key(|&i| (nodes[i].pair, i)).unwrap_or(0);
                assert_eq!(tree.min(), expected, "n {n} round {round}");
                let i = rng.below(n);
                nodes[i].pair = match rng.below(3) {
                    0 => NO_RANK,
                    _ => (rng.next() % 20) as u32,
                };
                tree.update(&nodes, i);
            }
        }
    }

    #[test]
    fn long_single_letter_piece() {
        let text = "a".repeat(1 << 20);
        assert_eq!(O200K.split(&text).count(), 1);
        let count = O200K.count(&text);
        assert!(count > 0 && count < text.len() / 4, "{count}");
        // Equal to the reference on a length it can afford.
        let piece = &text.as_bytes()[..3000];
        assert_eq!(O200K.count_piece(piece), reference_count(&O200K, piece));
        assert_eq!(CL100K.count_piece(piece), reference_count(&CL100K, piece));
    }

    #[test]
    fn fallback_counts_bytes() {
        let bpe = Bpe::bytes_only();
        assert_eq!(bpe.len(), 0);
        assert_eq!(bpe.count(""), 0);
        assert_eq!(bpe.count("héllo world"), 12);
        assert_eq!(bpe.split("a b").collect::<Vec<_>>(), ["a b"]);
        assert_eq!(bpe.count_piece(&[b'x'; 300]), 300);
    }

    #[test]
    fn bad_data_is_an_error() {
        assert!(Bpe::load(b"not gzip", &O200K_BASE_PATTERNS).is_err());
        assert!(Bpe::load(O200K_BASE_GZ, &[("(", false)]).is_err());
        assert!(Bpe::load(&[], &O200K_BASE_PATTERNS).is_err());
    }

    #[test]
    fn decodes_base64() {
        let decode = |text: &[u8]| {
            let mut out = Vec::new();
            decode_base64(text, &mut out).map(|()| out)
        };
        assert_eq!(decode(b"IQ=="), Some(b"!".to_vec()));
        assert_eq!(decode(b"IHdvcmxk"), Some(b" world".to_vec()));
        assert_eq!(decode(b"4pyF"), Some("✅".as_bytes().to_vec()));
        assert_eq!(decode(b"/+8="), Some(vec![0xff, 0xef]));
        assert_eq!(decode(b"I"), None);
        assert_eq!(decode(b"I*=="), None);
        assert_eq!(parse_decimal(b"199997"), Some(199_997));
        assert_eq!(parse_decimal(b""), None);
        assert_eq!(parse_decimal(b"1x"), None);
    }

    #[test]
    fn is_shareable() {
        fn check<T: Send + Sync + UnwindSafe + RefUnwindSafe>() {}
        check::<Bpe>();
    }

    #[test]
    fn counts_from_many_threads() {
        let text = random_text(&mut Rng(7), 5000);
        let expected = O200K.count(&text);
        std::thread::scope(|scope| {
            for _ in 0..4 {
                scope.spawn(|| {
                    for _ in 0..20 {
                        assert_eq!(O200K.count(&text), expected);
                    }
                });
            }
        });
    }
}
