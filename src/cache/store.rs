//! The memory tier: stored answers in a size-bounded, per-entry-TTL cache.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::HeaderValue;
use moka::notification::RemovalCause;
use moka::sync::Cache;

use super::key::CacheKey;
use crate::observe::{CACHE_ENTRIES, CACHE_EVICTIONS_TOTAL, CACHE_STORED_BYTES};
use crate::report::usage::Reported;
use crate::tokens::PromptTokens;

/// One stored answer.
#[derive(Debug)]
pub struct Entry {
    /// The plain answer (for a recorded stream: the one it amounts to).
    pub body: Bytes,
    pub content_type: HeaderValue,
    /// The stream as the upstream sent it, when the answer was streamed.
    pub stream: Option<RecordedStream>,
    /// When it was stored, for `age` and `max-age`.
    pub stored_at: SystemTime,
    pub ttl: Duration,
    /// The usage the upstream reported for it: what each hit saves.
    pub usage: Reported,
    /// The request's prompt tokens before and after pruning and compression,
    /// for the token headers of hits.
    pub prompt: Option<PromptTokens>,
}

/// A recorded SSE stream.
#[derive(Debug, Clone)]
pub struct RecordedStream {
    pub sse: Bytes,
    /// Whether it carries the final usage chunk (`include_usage`).
    pub usage: bool,
}

impl Entry {
    /// Seconds since it was stored.
    pub fn age(&self) -> u64 {
        SystemTime::now()
            .duration_since(self.stored_at)
            .map_or(0, |d| d.as_secs())
    }
}

/// The longest an answer is kept, whatever a config, a request header or a
/// stored entry says: a year.
pub const MAX_TTL: Duration = Duration::from_secs(365 * 24 * 60 * 60);

/// How far in the future a stored entry's time may lie (another replica's
/// clock running ahead) before the entry is taken for garbage.
pub const MAX_CLOCK_SKEW: Duration = Duration::from_secs(5 * 60);

/// Bytes an entry is charged for beyond its body: key, headers, bookkeeping.
const ENTRY_OVERHEAD: u32 = 256;

/// The memory tier.
#[derive(Clone)]
pub struct MemoryTier {
    cache: Cache<CacheKey, Arc<Entry>>,
}

impl std::fmt::Debug for MemoryTier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryTier")
            .field("entries", &self.cache.entry_count())
            .finish()
    }
}

struct PerEntryTtl;

impl moka::Expiry<CacheKey, Arc<Entry>> for PerEntryTtl {
    fn expire_after_create(
        &self,
        _key: &CacheKey,
        entry: &Arc<Entry>,
        _now: Instant,
    ) -> Option<Duration> {
        Some(entry.ttl)
    }
}

impl MemoryTier {
    /// A tier holding at most `max_bytes` of answers.
    pub fn new(max_bytes: u64) -> Self {
        let cache = Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|_key, entry: &Arc<Entry>| {
                let stream = entry.stream.as_ref().map_or(0, |s| s.sse.len());
                u32::try_from(entry.body.len() + stream)
                    .unwrap_or(u32::MAX)
                    .saturating_add(ENTRY_OVERHEAD)
            })
            .expire_after(PerEntryTtl)
            .eviction_listener(|_key, _entry, cause| {
                if cause == RemovalCause::Size {
                    metrics::counter!(CACHE_EVICTIONS_TOTAL).increment(1);
                }
            })
            .build();
        MemoryTier { cache }
    }

    pub fn get(&self, key: &CacheKey) -> Option<Arc<Entry>> {
        self.cache.get(key)
    }

    pub fn insert(&self, key: CacheKey, entry: Entry) {
        self.insert_arc(key, Arc::new(entry));
    }

    /// Keeps an entry read from another tier for `remaining` of its life.
    pub fn insert_shared(&self, key: CacheKey, entry: Arc<Entry>, remaining: Duration) {
        let entry = if remaining < entry.ttl {
            Arc::new(Entry {
                body: entry.body.clone(),
                content_type: entry.content_type.clone(),
                stream: entry.stream.clone(),
                stored_at: entry.stored_at,
                ttl: remaining,
                usage: entry.usage,
                prompt: entry.prompt,
            })
        } else {
            entry
        };
        self.insert_arc(key, entry);
    }

    fn insert_arc(&self, key: CacheKey, entry: Arc<Entry>) {
        self.cache.insert(key, entry);
        self.cache.run_pending_tasks();
        metrics::gauge!(CACHE_ENTRIES).set(self.cache.entry_count() as f64);
        metrics::gauge!(CACHE_STORED_BYTES).set(self.cache.weighted_size() as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(len: usize, ttl: Duration) -> Entry {
        Entry {
            body: Bytes::from(vec![b'x'; len]),
            content_type: HeaderValue::from_static("application/json"),
            stream: None,
            stored_at: SystemTime::now(),
            ttl,
            usage: Reported::default(),
            prompt: None,
        }
    }

    #[test]
    fn stores_and_expires_per_entry() {
        let tier = MemoryTier::new(1 << 20);
        let key = CacheKey([1; 32]);
        tier.insert(key, entry(10, Duration::from_millis(50)));
        assert!(tier.get(&key).is_some());
        #[expect(
            clippy::disallowed_methods,
            reason = "a plain #[test], outside any runtime; moka's expiry runs on real time"
        )]
        std::thread::sleep(Duration::from_millis(120));
        assert!(tier.get(&key).is_none(), "entry outlived its ttl");
    }

    #[test]
    fn bounded_by_bytes() {
        let tier = MemoryTier::new(100 * 1024);
        for i in 0..100u8 {
            tier.insert(CacheKey([i; 32]), entry(10 * 1024, Duration::from_secs(60)));
        }
        tier.cache.run_pending_tasks();
        assert!(
            tier.cache.weighted_size() <= 100 * 1024,
            "{} bytes held",
            tier.cache.weighted_size()
        );
    }
}

/// Encoding of an entry for the shared Redis tier: a version byte, then
/// fixed-width numbers and length-prefixed byte strings. Anything that does
/// not decode is treated as a miss.
pub mod wire {
    use super::*;

    const VERSION: u8 = 3;

    pub fn encode(entry: &Entry) -> Bytes {
        let stream_len = entry.stream.as_ref().map_or(0, |s| s.sse.len());
        let mut out = Vec::with_capacity(40 + entry.body.len() + stream_len);
        out.push(VERSION);
        let stored = entry
            .stored_at
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        out.extend_from_slice(&stored.to_le_bytes());
        out.extend_from_slice(&entry.ttl.as_secs().to_le_bytes());
        let usage = &entry.usage;
        for n in [usage.prompt, usage.completion, usage.cached, usage.total] {
            out.extend_from_slice(&n.to_le_bytes());
        }
        match entry.prompt {
            None => out.push(0),
            Some(prompt) => {
                out.push(1);
                out.extend_from_slice(&prompt.original.to_le_bytes());
                out.extend_from_slice(&prompt.sent.to_le_bytes());
            }
        }
        bytes(&mut out, entry.content_type.as_bytes());
        bytes(&mut out, &entry.body);
        match &entry.stream {
            None => out.push(0),
            Some(stream) => {
                out.push(if stream.usage { 2 } else { 1 });
                bytes(&mut out, &stream.sse);
            }
        }
        out.into()
    }

    fn bytes(out: &mut Vec<u8>, b: &[u8]) {
        out.extend_from_slice(&(b.len() as u64).to_le_bytes());
        out.extend_from_slice(b);
    }

    /// The entry `input` encodes, if it is one that could have been stored
    /// by now: well formed to its last byte, stored no later than
    /// [`MAX_CLOCK_SKEW`] after `now`, for at most [`MAX_TTL`], and not
    /// expired. Anything else (garbage, a neighbour's bytes, a tampered
    /// value) is `None`: a miss, never a failed request.
    pub fn decode(input: Bytes, now: SystemTime) -> Option<Entry> {
        let entry = parse(input)?;
        let ttl_ok = !entry.ttl.is_zero() && entry.ttl <= MAX_TTL;
        let not_ahead = entry.stored_at <= now.checked_add(MAX_CLOCK_SKEW)?;
        let alive = entry.stored_at.checked_add(entry.ttl)? > now;
        let usage = &entry.usage;
        let tokens_ok = [usage.prompt, usage.completion, usage.cached, usage.total]
            .iter()
            .all(|n| *n <= MAX_TOKENS)
            && entry
                .prompt
                .is_none_or(|p| p.original.max(p.sent) <= MAX_TOKENS);
        (ttl_ok && not_ahead && alive && tokens_ok).then_some(entry)
    }

    /// More tokens than any model's context: a number no answer reports.
    const MAX_TOKENS: u64 = 1 << 40;

    fn parse(mut input: Bytes) -> Option<Entry> {
        if take(&mut input, 1)?.first() != Some(&VERSION) {
            return None;
        }
        let stored = number(&mut input)?;
        let ttl = number(&mut input)?;
        let usage = Reported {
            prompt: number(&mut input)?,
            completion: number(&mut input)?,
            cached: number(&mut input)?,
            total: number(&mut input)?,
        };
        let prompt = match take(&mut input, 1)?.first()? {
            0 => None,
            1 => Some(PromptTokens {
                original: number(&mut input)?,
                sent: number(&mut input)?,
            }),
            _ => return None,
        };
        let content_type = HeaderValue::from_maybe_shared(chunk(&mut input)?).ok()?;
        let body = chunk(&mut input)?;
        let stream = match take(&mut input, 1)?.first()? {
            0 => None,
            flag @ (1 | 2) => Some(RecordedStream {
                usage: *flag == 2,
                sse: chunk(&mut input)?,
            }),
            _ => return None,
        };
        if !input.is_empty() {
            return None;
        }
        Some(Entry {
            body,
            content_type,
            stream,
            stored_at: SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(stored))?,
            ttl: Duration::from_secs(ttl),
            usage,
            prompt,
        })
    }

    fn take(input: &mut Bytes, n: usize) -> Option<Bytes> {
        (input.len() >= n).then(|| input.split_to(n))
    }

    fn number(input: &mut Bytes) -> Option<u64> {
        let raw = take(input, 8)?;
        Some(u64::from_le_bytes(raw.as_ref().try_into().ok()?))
    }

    fn chunk(input: &mut Bytes) -> Option<Bytes> {
        let len = usize::try_from(number(input)?).ok()?;
        take(input, len)
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn round_trip_and_garbage() {
            let entry = Entry {
                body: Bytes::from_static(b"{\"a\":1}"),
                content_type: HeaderValue::from_static("application/json"),
                stream: Some(RecordedStream {
                    sse: Bytes::from_static(b"data: [DONE]\n\n"),
                    usage: true,
                }),
                stored_at: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
                ttl: Duration::from_secs(3600),
                usage: Reported {
                    prompt: 30,
                    completion: 12,
                    cached: 5,
                    total: 42,
                },
                prompt: Some(PromptTokens {
                    original: 900,
                    sent: 300,
                }),
            };
            let now = entry.stored_at + Duration::from_secs(10);
            let back = decode(encode(&entry), now).unwrap_or_else(|| panic!("no decode"));
            assert_eq!(back.body, entry.body);
            assert_eq!(back.content_type, entry.content_type);
            assert_eq!(back.stored_at, entry.stored_at);
            assert_eq!(back.ttl, entry.ttl);
            assert_eq!(back.usage, entry.usage);
            assert_eq!(back.prompt, entry.prompt);
            assert!(back.stream.is_some_and(|s| {
                s.usage
                    && s.sse
                        == entry
                            .stream
                            .as_ref()
                            .map(|s| s.sse.clone())
                            .unwrap_or_default()
            }));
            let encoded = encode(&entry);
            for cut in [0, 1, 9, encoded.len() - 1] {
                assert!(decode(encoded.slice(..cut), now).is_none(), "cut at {cut}");
            }
            assert!(decode(Bytes::from_static(b"\x09garbage"), now).is_none());
            let mut longer = encoded.to_vec();
            longer.push(0);
            assert!(decode(longer.into(), now).is_none(), "a trailing byte");
        }

        /// Fields out of range make a miss, never a panic.
        #[test]
        fn out_of_range_fields_are_refused() {
            let now = SystemTime::now();
            let entry = |stored_at: SystemTime, ttl: Duration| Entry {
                body: Bytes::from_static(b"{}"),
                content_type: HeaderValue::from_static("application/json"),
                stream: None,
                stored_at,
                ttl,
                usage: Reported::default(),
                prompt: None,
            };
            let hour = Duration::from_secs(3600);
            let good = encode(&entry(now, hour));
            assert!(decode(good.clone(), now).is_some());
            // `stored_at` (bytes 1..9) set to u64::MAX, and to just past now.
            let mut huge = good.to_vec();
            huge[1..9].copy_from_slice(&[0xff; 8]);
            assert!(decode(huge.into(), now).is_none());
            let ahead = encode(&entry(now + Duration::from_secs(3 * 3600), hour));
            assert!(decode(ahead, now).is_none(), "stored in the future");
            let skewed = encode(&entry(now + Duration::from_secs(30), hour));
            assert!(decode(skewed, now).is_some(), "a little clock skew");
            // TTL (bytes 9..17): absurd, zero, or already over.
            let mut absurd = good.to_vec();
            absurd[9..17].copy_from_slice(&[0xff; 8]);
            assert!(decode(absurd.into(), now).is_none());
            assert!(decode(encode(&entry(now, Duration::ZERO)), now).is_none());
            let expired = encode(&entry(now - 2 * hour, hour));
            assert!(decode(expired, now).is_none());
            // Usage numbers past any context.
            let mut tokens = good.to_vec();
            tokens[17..25].copy_from_slice(&[0xff; 8]);
            assert!(decode(tokens.into(), now).is_none());
            // A length that runs past the end.
            let mut length = good.to_vec();
            let at = length.len() - 1 - 2 - 8;
            length[at..at + 8].copy_from_slice(&[0xff; 8]);
            assert!(decode(length.into(), now).is_none());
        }
    }
}
