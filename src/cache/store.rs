//! The memory tier: stored answers in a size-bounded, per-entry-TTL cache.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::HeaderValue;
use moka::notification::RemovalCause;
use moka::sync::Cache;

use super::key::CacheKey;
use crate::observe::{CACHE_ENTRIES, CACHE_EVICTIONS_TOTAL, CACHE_STORED_BYTES};

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
    /// Tokens the upstream reported for it (`usage.total_tokens`): what each
    /// hit saves.
    pub tokens: u64,
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
        self.cache.insert(key, Arc::new(entry));
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
            tokens: 0,
        }
    }

    #[test]
    fn stores_and_expires_per_entry() {
        let tier = MemoryTier::new(1 << 20);
        let key = CacheKey([1; 32]);
        tier.insert(key, entry(10, Duration::from_millis(50)));
        assert!(tier.get(&key).is_some());
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
