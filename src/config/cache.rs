//! `[cache]`: the response cache and who may be served from it.

use std::time::Duration;

use bytesize::ByteSize;
use serde::{Deserialize, Serialize};

use super::*;

/// Who may be served a cached answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CacheScope {
    /// Only the client credential that stored it.
    #[default]
    Key,
    /// Every client.
    Global,
}

/// `[cache]`: the response cache (memory, optionally backed by Redis).
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    pub enabled: bool,
    /// How long a stored answer is served.
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
    /// Memory used by the in-process tier.
    #[serde(with = "de::size")]
    pub memory_max_size: ByteSize,
    /// Redis tier (`redis://`, `redis+cluster://`, `redis+unix://`, `unix://`); empty = memory
    /// only. Printed and serialized with any password masked.
    #[serde(serialize_with = "secret::serialize_masked_url")]
    pub redis_url: String,
    pub scope: CacheScope,
    /// Cache only requests whose answer is meant to be reproducible.
    pub deterministic_only: bool,
    /// Longest wait for Redis before falling back to memory and the upstream.
    #[serde(with = "humantime_serde")]
    pub redis_timeout: Duration,
    /// Answers read on to the end for the cache after their client left, at
    /// most this many at a time; past it (and with `0`) an abandoned
    /// answer's upstream request is cancelled at once.
    pub read_on_abandoned: usize,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            ttl: Duration::from_secs(60 * 60),
            memory_max_size: ByteSize::mib(256),
            redis_url: String::new(),
            scope: CacheScope::Key,
            deterministic_only: false,
            redis_timeout: Duration::from_millis(50),
            read_on_abandoned: 4,
        }
    }
}

impl std::fmt::Debug for CacheConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheConfig")
            .field("enabled", &self.enabled)
            .field("ttl", &self.ttl)
            .field("memory_max_size", &self.memory_max_size)
            .field("redis_url", &mask_url(&self.redis_url))
            .field("scope", &self.scope)
            .field("deterministic_only", &self.deterministic_only)
            .field("redis_timeout", &self.redis_timeout)
            .field("read_on_abandoned", &self.read_on_abandoned)
            .finish()
    }
}
