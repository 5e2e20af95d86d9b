//! The vocabulary: the embedded encoding files, decompressed and indexed
//! into rank order once per encoding.

use super::*;
use std::hash::Hasher;
use std::io::{BufRead, BufReader};

use flate2::bufread::GzDecoder;
use hashbrown::HashTable;
use hashbrown::hash_table::Entry;
use rustc_hash::FxHasher;

/// OpenAI's `o200k_base.tiktoken`, gzipped.
pub(crate) const O200K_BASE_GZ: &[u8] = include_bytes!("../data/o200k_base.tiktoken.gz");
/// OpenAI's `cl100k_base.tiktoken`, gzipped.
pub(crate) const CL100K_BASE_GZ: &[u8] = include_bytes!("../data/cl100k_base.tiktoken.gz");

impl Bpe {
    /// Builds an encoding from a gzipped `.tiktoken` file (lines of
    /// `base64(token) rank`, ranks 0, 1, 2, ... in order) and the
    /// pre-tokenizer's patterns.
    pub(crate) fn load(gz: &[u8], patterns: &[(&str, bool)]) -> Result<Bpe, String> {
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
}

/// Token `rank`'s bytes (empty if there is no such rank).
#[inline]
pub(crate) fn token_bytes<'a>(bytes: &'a [u8], offsets: &[u32], rank: u32) -> &'a [u8] {
    let rank = rank as usize;
    match (offsets.get(rank), offsets.get(rank + 1)) {
        (Some(&start), Some(&end)) => bytes.get(start as usize..end as usize).unwrap_or(&[]),
        _ => &[],
    }
}

/// The hash of a token's bytes in the index.
#[inline]
pub(crate) fn hash_bytes(bytes: &[u8]) -> u64 {
    let mut hasher = FxHasher::default();
    hasher.write(bytes);
    hasher.finish()
}

/// A decimal number of ASCII digits.
pub(crate) fn parse_decimal(digits: &[u8]) -> Option<usize> {
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0usize, |n, &d| {
        let digit = d.checked_sub(b'0').filter(|&d| d < 10)?;
        n.checked_mul(10)?.checked_add(usize::from(digit))
    })
}

/// Marks a byte that is not a base64 digit in [`BASE64`].
pub(crate) const NOT_BASE64: u8 = 0xff;

/// The value of each base64 digit, by byte.
pub(crate) const BASE64: [u8; 256] = {
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
pub(crate) fn decode_base64(text: &[u8], out: &mut Vec<u8>) -> Option<()> {
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
