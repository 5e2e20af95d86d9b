//! Token counting with OpenAI's encodings.
//!
//! The model name picks the encoding ([`Encoding::for_model`]): `o200k_base`
//! for the gpt-4o, gpt-4.1, gpt-4.5, gpt-5 and o-series families,
//! `cl100k_base` for gpt-4, gpt-3.5 and the ada / 3-small / 3-large
//! embeddings, and the configured fallback (`[tokens] fallback_encoding`)
//! for anything else, such as the open models behind vLLM or Ollama.
//!
//! Counting uses sluice's own compact byte-pair encoder ([`bpe`]): tiktoken's
//! pre-tokenizer and merge order, so tiktoken's exact counts, with the ranks
//! in a few megabytes (the `bpe-openai` crate, as fast on prose, holds tens
//! of megabytes per encoding; `benches/tokens.rs` compares them with
//! tiktoken-rs). Long pieces merge in O(n log n). Each encoding is loaded
//! once, on first use, and shared by every worker.
//!
//! A [`Counter`] adds a bounded count cache keyed by a hash of the counted
//! text (or of a message's JSON text), so a conversation that resends its
//! history pays only for its new messages. How a whole prompt is counted
//! (messages, names, tool calls, tool definitions) is in [`prompt`].
//!
//! ```
//! use sluice::tokens::{Counter, Encoding};
//! let counter = Counter::new(Encoding::O200kBase);
//! let encoding = counter.encoding(Some("gpt-4o-mini"));
//! assert_eq!(encoding, Encoding::O200kBase);
//! assert_eq!(counter.text(encoding, "Hello, world!"), 4);
//! ```

pub mod bpe;
pub mod prompt;
pub mod service;
pub mod truncate;

use std::cell::RefCell;
use std::fmt;
use std::sync::LazyLock;
use std::sync::atomic::{AtomicBool, Ordering};

use rustc_hash::FxHashMap;

pub use bpe::Bpe;
pub use service::{Original, TokensLayer};
pub use truncate::head_tail;

pub use crate::context::PromptTokens;

/// Texts shorter than this are counted directly: hashing and a cache lookup
/// would cost about as much as counting them (counting runs at roughly
/// 15-30 MB/s; a lookup costs about a microsecond).
const CACHED_MIN_BYTES: usize = 32;
/// Counts kept in the cache (each a 16-byte hash and a number).
const CACHE_ENTRIES: u64 = 100_000;

/// Pieces longer than this are counted in chunks (see [`count_piece`]).
pub const MAX_PIECE_BYTES: usize = 64 * 1024;
/// Pieces up to this long have their counts kept per thread.
const CACHED_PIECE_BYTES: usize = 24;
/// Piece counts kept per thread and encoding (about 40 bytes each); the
/// table starts over when full.
const PIECES_PER_THREAD: usize = 50_000;

thread_local! {
    static PIECES: RefCell<[FxHashMap<Box<[u8]>, u32>; 2]> = RefCell::default();
}

/// Which encodings have been loaded, by `Encoding as usize`.
static LOADED: [AtomicBool; 2] = [AtomicBool::new(false), AtomicBool::new(false)];

pub use crate::config::Encoding;

impl Encoding {
    /// The shared tokenizer, loaded on first use (tens of milliseconds:
    /// callers on an async worker check [`Encoding::is_loaded`] first).
    pub fn tokenizer(self) -> &'static Bpe {
        static O200K: LazyLock<Bpe> = LazyLock::new(Bpe::o200k_base);
        static CL100K: LazyLock<Bpe> = LazyLock::new(Bpe::cl100k_base);
        let tokenizer: &'static Bpe = match self {
            Encoding::O200kBase => &O200K,
            Encoding::Cl100kBase => &CL100K,
        };
        LOADED[self as usize].store(true, Ordering::Release);
        tokenizer
    }

    /// Loads the tokenizer on a thread of its own, once per process, so
    /// that no async worker waits for it when it first counts.
    pub fn preload(self) {
        static STARTED: [std::sync::Once; 2] = [std::sync::Once::new(), std::sync::Once::new()];
        if self.is_loaded() {
            return;
        }
        STARTED[self as usize].call_once(|| {
            let loader = std::thread::Builder::new().name("sluice-tokens-load".into());
            if let Err(error) = loader.spawn(move || {
                let _ = self.tokenizer();
            }) {
                tracing::debug!(%error, "token encoder loads on first use instead");
            }
        });
    }

    /// Whether the tokenizer is loaded: counting with it now is quick.
    pub fn is_loaded(self) -> bool {
        LOADED[self as usize].load(Ordering::Acquire)
    }

    /// Tokens in `text`, counted now.
    ///
    /// The encoder splits a text into pieces (words, runs of digits or
    /// punctuation, whitespace) and encodes each on its own, so the count
    /// of a text is the sum of its pieces' counts. Short pieces repeat a lot
    /// (words, identifiers): their counts are kept per thread, which about
    /// doubles the speed on prose and code.
    pub fn count(self, text: &str) -> u64 {
        let tokenizer = self.tokenizer();
        PIECES.with(|pieces| {
            let mut pieces = pieces.borrow_mut();
            let known = &mut pieces[self as usize];
            if known.len() >= PIECES_PER_THREAD {
                known.clear();
            }
            tokenizer
                .split(text)
                .map(|piece| {
                    let bytes = piece.as_bytes();
                    if bytes.len() > CACHED_PIECE_BYTES {
                        return count_piece(tokenizer, piece);
                    }
                    if let Some(&count) = known.get(bytes) {
                        return u64::from(count);
                    }
                    let count = tokenizer.count_piece(bytes);
                    known.insert(bytes.into(), count as u32);
                    count as u64
                })
                .sum()
        })
    }
}

/// Tokens of one piece. A piece longer than [`MAX_PIECE_BYTES`] (a run
/// with no whitespace or change of character class, such as a base64 blob or
/// adversarial input) is counted in chunks of that size: within a token per
/// chunk of the exact count, in bounded time and memory.
pub fn count_piece(tokenizer: &Bpe, piece: &str) -> u64 {
    if piece.len() <= MAX_PIECE_BYTES {
        return tokenizer.count_piece(piece.as_bytes()) as u64;
    }
    chunks(piece, MAX_PIECE_BYTES)
        .map(|chunk| tokenizer.count_piece(chunk.as_bytes()) as u64)
        .sum()
}

/// `text` in consecutive chunks of about `size` bytes, each ending on a char
/// boundary (so a chunk may be a few bytes longer).
pub fn chunks(text: &str, size: usize) -> impl Iterator<Item = &str> {
    let mut from = 0;
    std::iter::from_fn(move || {
        if from >= text.len() {
            return None;
        }
        let mut to = (from + size.max(1)).min(text.len());
        while !text.is_char_boundary(to) {
            to += 1;
        }
        let chunk = &text[from..to];
        from = to;
        Some(chunk)
    })
}

/// Token counts with a shared, bounded cache of counts already made.
#[derive(Clone)]
pub struct Counter {
    fallback: Encoding,
    cache: moka::sync::Cache<u128, u32>,
}

impl fmt::Debug for Counter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Counter")
            .field("fallback", &self.fallback)
            .field("cached", &self.cache.entry_count())
            .finish()
    }
}

impl Counter {
    pub fn new(fallback: Encoding) -> Counter {
        Counter {
            fallback,
            cache: moka::sync::Cache::builder()
                .max_capacity(CACHE_ENTRIES)
                .build(),
        }
    }

    /// The encoding for a request's model (the fallback without one).
    pub fn encoding(&self, model: Option<&str>) -> Encoding {
        model.map_or(self.fallback, |m| Encoding::for_model(m, self.fallback))
    }

    /// Tokens in `text`; texts seen before (by content) are not counted again.
    pub fn text(&self, encoding: Encoding, text: &str) -> u64 {
        if text.len() < CACHED_MIN_BYTES {
            return encoding.count(text);
        }
        self.cached(encoding, b't', text.as_bytes(), || encoding.count(text))
    }

    /// A count of `bytes` made by `count`, cached under the hash of
    /// (encoding, kind, bytes): `kind` separates what was counted the same
    /// bytes in different ways (a text, a message's JSON, …).
    pub fn cached(
        &self,
        encoding: Encoding,
        kind: u8,
        bytes: &[u8],
        count: impl FnOnce() -> u64,
    ) -> u64 {
        let mut hasher = blake3::Hasher::new();
        hasher.update(&[encoding as u8, kind]);
        hasher.update(bytes);
        let hash = hasher.finalize();
        let mut key = [0u8; 16];
        key.copy_from_slice(&hash.as_bytes()[..16]);
        let key = u128::from_le_bytes(key);
        if let Some(count) = self.cache.get(&key) {
            return u64::from(count);
        }
        let counted = count();
        self.cache
            .insert(key, u32::try_from(counted).unwrap_or(u32::MAX));
        counted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn models_pick_their_encoding() {
        let fallback = Encoding::Cl100kBase;
        for model in [
            "gpt-4o",
            "gpt-4o-mini-2024-07-18",
            "gpt-4.1-nano",
            "gpt-5",
            "o1-mini",
            "o3",
            "o4-mini",
            "chatgpt-4o-latest",
            "ft:gpt-4o-mini:acme::abc123",
        ] {
            assert_eq!(
                Encoding::for_model(model, fallback),
                Encoding::O200kBase,
                "{model}"
            );
        }
        for model in [
            "gpt-4",
            "gpt-4-turbo",
            "gpt-3.5-turbo-0125",
            "gpt-35-turbo",
            "text-embedding-3-small",
            "text-embedding-ada-002",
        ] {
            assert_eq!(
                Encoding::for_model(model, Encoding::O200kBase),
                Encoding::Cl100kBase,
                "{model}"
            );
        }
        assert_eq!(
            Encoding::for_model("llama-3.1-8b", Encoding::Cl100kBase),
            Encoding::Cl100kBase
        );
        assert_eq!(
            Encoding::for_model("qwen2.5", Encoding::O200kBase),
            Encoding::O200kBase
        );
    }

    #[test]
    fn counts_are_cached_by_content() {
        let counter = Counter::new(Encoding::O200kBase);
        let text = "the quick brown fox ".repeat(50);
        let direct = Encoding::O200kBase.count(&text);
        assert_eq!(counter.text(Encoding::O200kBase, &text), direct);
        counter.cache.run_pending_tasks();
        assert_eq!(counter.cache.entry_count(), 1);
        assert_eq!(counter.text(Encoding::O200kBase, &text), direct);
        counter.cache.run_pending_tasks();
        assert_eq!(counter.cache.entry_count(), 1);
        // Another encoding is another count.
        let cl = counter.text(Encoding::Cl100kBase, &text);
        assert_eq!(cl, Encoding::Cl100kBase.count(&text));
        counter.cache.run_pending_tasks();
        assert_eq!(counter.cache.entry_count(), 2);
    }

    #[test]
    fn piece_counts_add_up_to_the_encoders_count() {
        let text = "fn main() { println!(\"héllo, wörld 12345\"); }\n\n   \t  x".repeat(50)
            + &"a".repeat(5000)
            + "中文 emoji 🎉 <|endoftext|>";
        for encoding in [Encoding::O200kBase, Encoding::Cl100kBase] {
            let expected = encoding.tokenizer().count(text.as_str()) as u64;
            // Twice: the second time from the piece table.
            assert_eq!(encoding.count(&text), expected);
            assert_eq!(encoding.count(&text), expected);
        }
    }

    #[test]
    fn giant_pieces_are_counted_in_chunks_close_to_exact() {
        let text = "ab".repeat(100_000);
        for encoding in [Encoding::O200kBase, Encoding::Cl100kBase] {
            let exact = encoding.tokenizer().count(&text) as u64;
            let chunked = encoding.count(&text);
            let chunks = (text.len() / MAX_PIECE_BYTES + 1) as u64;
            assert!(chunked.abs_diff(exact) <= chunks, "{chunked} vs {exact}");
        }
    }
}
