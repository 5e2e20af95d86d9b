//! How cached answers are laid out in Redis: one header byte, then the payload.
//!
//! Header `0` means the payload is the answer as is; header `1` means it is an
//! LZ4 block (its uncompressed length first, little-endian `u32`). Answers over
//! [`COMPRESS_OVER`] bytes are compressed when that makes them smaller, which
//! cuts Redis memory and network time for long completions.
//!
//! ```text
//! let stored = encode(b"{\"id\":\"chatcmpl-1\"}");
//! assert_eq!(decode(Bytes::from(stored)).as_deref(), Some(&b"{\"id\":\"chatcmpl-1\"}"[..]));
//! ```

use bytes::Bytes;

/// Values larger than this many bytes are tried with compression.
pub const COMPRESS_OVER: usize = 1024;

const RAW: u8 = 0;
const LZ4: u8 = 1;

/// LZ4 cannot expand data by more than about 255×; a length header claiming
/// more than that is corrupt, and refusing it keeps a bad value from making
/// sluice allocate gigabytes.
const MAX_LZ4_RATIO: usize = 256;

/// Encodes an answer for storage: header byte plus raw or compressed payload.
pub fn encode(value: &[u8]) -> Vec<u8> {
    if value.len() > COMPRESS_OVER {
        let compressed = lz4_flex::block::compress_prepend_size(value);
        if compressed.len() < value.len() {
            let mut out = Vec::with_capacity(compressed.len() + 1);
            out.push(LZ4);
            out.extend_from_slice(&compressed);
            return out;
        }
    }
    let mut out = Vec::with_capacity(value.len() + 1);
    out.push(RAW);
    out.extend_from_slice(value);
    out
}

/// Decodes a stored value; `None` when it is not in the layout [`encode`] writes.
pub fn decode(stored: Bytes) -> Option<Bytes> {
    match *stored.first()? {
        RAW => Some(stored.slice(1..)),
        LZ4 => {
            let payload = stored.get(1..)?;
            let (len, block) = payload.split_first_chunk::<4>()?;
            let len = usize::try_from(u32::from_le_bytes(*len)).ok()?;
            if len > block.len().saturating_mul(MAX_LZ4_RATIO) {
                return None;
            }
            lz4_flex::block::decompress(block, len)
                .ok()
                .map(Bytes::from)
        }
        _ => None,
    }
}
