//! Deterministic answer material for the mock upstream: hashes, answer texts, rough token
//! counts, stream piece splitting, embedding vectors and base64. Plain functions over
//! plain data, so the same request always yields the same bytes.

/// Fixed `created` / `created_at` timestamp, so identical requests give identical bodies.
pub(crate) const CREATED: u64 = 1_700_000_000;

/// `system_fingerprint` reported on chat completions.
pub(crate) const FINGERPRINT: &str = "fp_sluice_mock";

/// Model named in answers when the request names none.
pub(crate) const DEFAULT_MODEL: &str = "gpt-4o-mini";

const SENTENCE: &str =
    "This is a deterministic reply from the sluice mock upstream; no model was consulted.";

/// 64-bit FNV-1a, fed incrementally. Not a cache key: only answer seeds and the echo
/// endpoint's body fingerprint use it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Fnv(u64);

impl Fnv {
    pub(crate) const fn new() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }

    pub(crate) fn update(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    pub(crate) const fn finish(self) -> u64 {
        self.0
    }
}

impl Default for Fnv {
    fn default() -> Self {
        Self::new()
    }
}

/// FNV-1a of `bytes`.
pub(crate) fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h = Fnv::new();
    h.update(bytes);
    h.finish()
}

/// The answer text for a prompt whose hash is `seed`. Choice `index` > 0 (when `n` > 1)
/// gets its own number, so choices differ even when cut short.
pub(crate) fn answer(seed: u64, index: usize) -> String {
    let seed = if index == 0 {
        seed
    } else {
        let mut state = seed ^ index as u64;
        splitmix64(&mut state)
    };
    let short = (seed >> 32) as u32;
    format!("Mock answer #{short:08x}: {SENTENCE}")
}

/// Rough token count of `len` bytes of text: a quarter of the bytes, at least one.
pub(crate) fn tokens_for_len(len: usize) -> u32 {
    u32::try_from(len.div_ceil(4)).unwrap_or(u32::MAX).max(1)
}

/// `text` cut to at most `max_tokens` (by [`tokens_for_len`]), and whether it was cut.
pub(crate) fn truncate_to_tokens(text: &str, max_tokens: Option<u64>) -> (&str, bool) {
    let Some(max) = max_tokens else {
        return (text, false);
    };
    let limit = usize::try_from(max.saturating_mul(4)).unwrap_or(usize::MAX);
    if text.len() <= limit {
        return (text, false);
    }
    (&text[..floor_char_boundary(text, limit)], true)
}

/// One generated choice: its text, why it ended, and its token count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Generated {
    pub text: String,
    pub finish_reason: &'static str,
    pub tokens: u32,
}

/// The `n` answers for a prompt hashed to `seed`, each cut to `max_tokens` when given
/// (finish reason `length` then, `stop` otherwise).
pub(crate) fn generate(seed: u64, n: usize, max_tokens: Option<u64>) -> Vec<Generated> {
    (0..n)
        .map(|i| {
            let full = answer(seed, i);
            let (text, cut) = truncate_to_tokens(&full, max_tokens);
            let tokens = if text.is_empty() {
                0
            } else {
                tokens_for_len(text.len())
            };
            Generated {
                text: text.to_owned(),
                finish_reason: if cut { "length" } else { "stop" },
                tokens,
            }
        })
        .collect()
}

/// `text` split into exactly `n` consecutive pieces of near-equal byte length (on char
/// boundaries); pieces are empty when `n` exceeds the text's length.
pub(crate) fn split_even(text: &str, n: usize) -> Vec<&str> {
    let n = n.max(1);
    let len = text.len();
    let mut pieces = Vec::with_capacity(n);
    let mut start = 0;
    for i in 1..=n {
        let end = floor_char_boundary(text, len * i / n).max(start);
        pieces.push(&text[start..end]);
        start = end;
    }
    pieces
}

fn floor_char_boundary(text: &str, mut i: usize) -> usize {
    if i >= text.len() {
        return text.len();
    }
    while !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// A unit-length embedding of `dims` dimensions drawn from `seed`.
pub(crate) fn embedding(seed: u64, dims: usize) -> Vec<f32> {
    let mut state = seed;
    let mut v: Vec<f64> = (0..dims)
        .map(|_| {
            let bits = splitmix64(&mut state) >> 11;
            // 53 random bits mapped onto [-1, 1).
            (bits as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
        })
        .collect();
    let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
    v.into_iter().map(|x| x as f32).collect()
}

fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Standard base64 (with padding) of `bytes`.
pub(crate) fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18u32, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> shift) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The little-endian f32 bytes of `v`, base64-encoded, as OpenAI sends
/// `encoding_format: "base64"` embeddings.
pub(crate) fn embedding_base64(v: &[f32]) -> String {
    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    base64(&bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv_matches_reference_vectors() {
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
        let mut h = Fnv::new();
        h.update(b"foo");
        h.update(b"bar");
        assert_eq!(h.finish(), fnv1a64(b"foobar"));
    }

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (input, want) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(input.as_bytes()), want, "input {input:?}");
        }
    }

    #[test]
    fn split_even_covers_text_in_n_pieces() {
        let text = "abcdefghij";
        let pieces = split_even(text, 3);
        assert_eq!(pieces, ["abc", "def", "ghij"]);
        assert_eq!(split_even(text, 1), [text]);
        let many = split_even("ab", 4);
        assert_eq!(many.len(), 4);
        assert_eq!(many.concat(), "ab");
        let utf8 = split_even("héllo wörld", 5);
        assert_eq!(utf8.concat(), "héllo wörld");
    }

    #[test]
    fn answers_depend_on_seed_and_choice() {
        assert_eq!(answer(1 << 40, 0), answer(1 << 40, 0));
        assert_ne!(answer(1 << 40, 0), answer(2 << 40, 0));
        assert_ne!(answer(1 << 40, 0), answer(1 << 40, 1));
    }

    #[test]
    fn truncation_reports_length() {
        let full = answer(7, 0);
        assert_eq!(truncate_to_tokens(&full, None), (full.as_str(), false));
        assert_eq!(
            truncate_to_tokens(&full, Some(1000)),
            (full.as_str(), false)
        );
        let (cut, was_cut) = truncate_to_tokens(&full, Some(2));
        assert!(was_cut);
        assert_eq!(cut, &full[..8]);
        let generated = generate(7, 2, Some(2));
        assert_eq!(generated.len(), 2);
        assert!(
            generated
                .iter()
                .all(|g| g.finish_reason == "length" && g.tokens == 2)
        );
    }

    #[test]
    fn embeddings_are_unit_and_deterministic() {
        let a = embedding(42, 16);
        assert_eq!(a.len(), 16);
        assert_eq!(a, embedding(42, 16));
        assert_ne!(a, embedding(43, 16));
        let norm: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "norm {norm}");
    }
}
