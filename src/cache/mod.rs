//! The response cache: answers to repeated requests served from memory.
//!
//! For an understood, cacheable request the layer builds a [`key::CacheKey`]
//! (scope, endpoint, canonical body, rewriting settings), answers from the
//! memory tier when it holds a fresh entry (`x-sluice-cache: hit`), and
//! otherwise forwards the request and records the answer while relaying it,
//! storing it once it has ended cleanly (`miss`). Identical requests that
//! arrive while one is in flight wait for it and are answered from what it
//! stored (`coalesced`, see [`coalesce`]); a streamed request joining a
//! streamed one in flight gets its chunks so far, then the rest live
//! ([`live`]). Requests it must not serve from or store into pass with
//! `bypass`. It reads, and removes before
//! forwarding, `Cache-Control` (`no-cache`, `no-store`, `max-age=N`); it reads
//! `x-sluice-cache-ttl`.
//!
//! Stored: 200 JSON answers of the understood endpoints, at most
//! [`MAX_ENTRY_BYTES`], never an answer cut short by the token limit the
//! client did not set (`finish_reason: "length"` without `max_tokens`) nor an
//! incomplete Responses answer. Streamed answers are recorded as they
//! are relayed and stored, as the stream and as the plain answer it amounts
//! to, only once they ended cleanly (`[DONE]`, or `response.completed` for
//! the Responses API); one entry serves both forms.
//!
//! ```text
//! let layer = CacheLayer::new(&config.cache, settings);
//! ```

pub mod coalesce;
pub mod directives;
pub mod embeddings;
pub mod key;
pub mod live;
mod record;
pub mod redis;
mod replay;
mod service;
pub mod store;

pub use service::*;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use coalesce::InFlight;
use directives::Directives;
use http::{Request, Response};
use key::{CacheKey, Scope};
use store::{Entry, MemoryTier};

use crate::body::Body;
use crate::config::{CacheConfig, CacheScope};
use crate::context::Identity;
use crate::observe::{CACHE_LOOKUPS_TOTAL, CACHE_REQUESTS_TOTAL, CACHE_TOKENS_SAVED_TOTAL};
use crate::openai::ApiRequest;

pub use crate::context::{CacheOutcome, X_SLUICE_CACHE, X_SLUICE_CACHE_TIER};

/// Redis keys: a versioned prefix, so a change of format never reads old
/// entries under a new meaning.
pub const REDIS_PREFIX: &str = "sluice:v2:";
/// Writes to Redis waiting for the writer; beyond this they are dropped.
const REDIS_WRITE_QUEUE: usize = 10_000;

/// How many flights a request waits for before going upstream on its own.
const MAX_FLIGHT_ROUNDS: usize = 3;

/// Largest answer stored; larger ones are relayed and not kept.
pub const MAX_ENTRY_BYTES: usize = 8 * 1024 * 1024;

/// The cache itself, shared by every worker.
#[derive(Debug)]
pub struct Cache {
    memory: MemoryTier,
    /// The tier shared by every replica, when `redis_url` is set.
    redis: Option<redis::RedisTier>,
    in_flight: Arc<InFlight>,
    /// Answers still being read after their client went away.
    tasks: tokio_util::task::TaskTracker,
    ttl: Duration,
    scope: CacheScope,
    deterministic_only: bool,
    /// Slots for answers read on after their client left (`None`: none).
    read_on: Option<Arc<tokio::sync::Semaphore>>,
    max_entry: usize,
    /// The settings of request-rewriting layers below, part of every key.
    settings: String,
}

impl Cache {
    pub fn new(config: &CacheConfig, settings: String) -> Cache {
        let memory_max = config.memory_max_size.as_u64();
        let redis = (!config.redis_url.is_empty())
            .then(|| {
                redis::RedisTier::start(redis::RedisOptions {
                    url: config.redis_url.clone(),
                    timeout: config.redis_timeout,
                    prefix: REDIS_PREFIX.to_owned(),
                    queue: REDIS_WRITE_QUEUE,
                })
            })
            .and_then(|started| {
                started
                    .map_err(|error| {
                        tracing::error!(%error, "Redis tier not started; the cache runs on memory only");
                    })
                    .ok()
            });
        Cache {
            memory: MemoryTier::new(memory_max),
            redis,
            in_flight: Arc::default(),
            tasks: tokio_util::task::TaskTracker::new(),
            ttl: config.ttl,
            scope: config.scope,
            deterministic_only: config.deterministic_only,
            read_on: (config.read_on_abandoned > 0)
                .then(|| Arc::new(tokio::sync::Semaphore::new(config.read_on_abandoned))),
            // Not bounded by the memory tier's size: Redis may keep what
            // memory cannot.
            max_entry: MAX_ENTRY_BYTES,
            settings,
        }
    }

    /// A fresh entry for `key` (within the request's `max-age`): from
    /// memory, else from Redis (then kept in memory too). Counted per tier.
    async fn lookup(
        &self,
        key: &CacheKey,
        directives: &Directives,
    ) -> Option<(Arc<Entry>, &'static str)> {
        let fresh = |entry: &Arc<Entry>| {
            directives
                .max_age
                .is_none_or(|max| entry.age() <= max.as_secs())
        };
        let found = self.memory.get(key).filter(fresh);
        count_lookup("memory", found.is_some());
        let (entry, tier) = match found {
            Some(entry) => (entry, "memory"),
            None => {
                let redis = self.redis.as_ref()?;
                let hex = key.to_hex();
                let entry = match redis.get(&hex).await {
                    Ok(Some(bytes)) => {
                        let entry = store::wire::decode(bytes, SystemTime::now());
                        if entry.is_none() {
                            // Overwritten by the fresh answer this miss stores.
                            count_invalid();
                            tracing::debug!(key = %hex, "unusable redis cache entry, treated as a miss");
                        }
                        entry.map(Arc::new)
                    }
                    Ok(None) | Err(_) => None,
                };
                let entry = entry.filter(fresh);
                count_lookup("redis", entry.is_some());
                let entry = entry?;
                // Keep it in memory for the rest of its life.
                let remaining = entry.ttl.saturating_sub(Duration::from_secs(entry.age()));
                if !remaining.is_zero() {
                    self.memory.insert_shared(*key, entry.clone(), remaining);
                }
                (entry, "redis")
            }
        };
        metrics::counter!(CACHE_TOKENS_SAVED_TOTAL).increment(entry.usage.total);
        Some((entry, tier))
    }

    /// Stores a complete answer in memory and, without waiting, in Redis.
    fn store(&self, key: CacheKey, entry: Entry) {
        if let Some(redis) = &self.redis {
            redis.put(key.to_hex(), store::wire::encode(&entry), entry.ttl);
        }
        self.memory.insert(key, entry);
    }

    /// For shutdown: waits (up to `deadline`) for answers still being read
    /// for the cache, then for queued Redis writes.
    pub async fn flush(&self, deadline: Duration) {
        self.tasks.close();
        let started = std::time::Instant::now();
        if tokio::time::timeout(deadline, self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("shutdown grace passed with answers still being read for the cache");
        }
        if let Some(redis) = &self.redis {
            redis
                .flush(deadline.saturating_sub(started.elapsed()))
                .await;
        }
    }

    /// Whether this request may be served from and stored in the cache.
    fn cacheable(&self, api: &ApiRequest, directives: &Directives) -> bool {
        if directives.no_store {
            return false;
        }
        !self.deterministic_only || is_deterministic(api)
    }

    fn key(&self, req: &Request<Body>, api: &ApiRequest) -> Result<CacheKey, serde_json::Error> {
        let path = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
        // Per-request rewriting overrides change the request sent, so the key.
        let overridden = ["x-sluice-prune", "x-sluice-compress"]
            .iter()
            .any(|name| req.headers().contains_key(*name));
        let settings = if overridden {
            let mut settings = self.settings.clone();
            for name in ["x-sluice-prune", "x-sluice-compress"] {
                if let Some(value) = req.headers().get(name) {
                    settings.push_str(name);
                    settings.push('=');
                    settings.push_str(&String::from_utf8_lossy(value.as_bytes()));
                    settings.push(';');
                }
            }
            std::borrow::Cow::Owned(settings)
        } else {
            std::borrow::Cow::Borrowed(self.settings.as_str())
        };
        match self.scope {
            CacheScope::Global => key::build(Scope::Global, path, api, &settings),
            CacheScope::Key => match req.extensions().get::<Identity>() {
                Some(client) => key::build(Scope::Client(client.digest()), path, api, &settings),
                // Built without the auth layer (unit tests): the same scope it gives.
                None => {
                    let client = Identity::of_credentials(req.headers());
                    key::build(Scope::Client(client.digest()), path, api, &settings)
                }
            },
        }
    }
}

/// `temperature: 0` or a `seed`: the client asked for a reproducible answer.
fn is_deterministic(api: &ApiRequest) -> bool {
    let zero_temperature = api
        .get::<f64>("temperature")
        .and_then(Result::ok)
        .is_some_and(|t| t == 0.0);
    let seeded = api.raw("seed").is_some_and(|raw| raw != b"null");
    zero_temperature || seeded
}

/// A Redis value that is no usable entry (unreadable, out of range).
fn count_invalid() {
    metrics::counter!(crate::observe::CACHE_INVALID_ENTRIES_TOTAL, "tier" => "redis").increment(1);
}

fn count_lookup(tier: &'static str, hit: bool) {
    let result = if hit { "hit" } else { "miss" };
    metrics::counter!(CACHE_LOOKUPS_TOTAL, "tier" => tier, "result" => result).increment(1);
}

fn mark(mut response: Response<Body>, outcome: CacheOutcome) -> Response<Body> {
    metrics::counter!(CACHE_REQUESTS_TOTAL, "result" => outcome.as_str()).increment(1);
    crate::context::Outcome::of(&mut response).cache = Some(outcome);
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::openai::Endpoint;
    use bytes::BytesMut;
    use http::header::HeaderValue;
    use record::Recording;
    use replay::Wanted;

    fn store(body: &str, limit_set: bool) -> bool {
        let cache = Arc::new(Cache::new(&CacheConfig::default(), String::new()));
        let key = CacheKey([7; 32]);
        Recording {
            cache: cache.clone(),
            key,
            ttl: Duration::from_secs(60),
            content_type: HeaderValue::from_static("application/json"),
            limit_set,
            wants: Wanted {
                endpoint: Endpoint::ChatCompletions,
                stream: false,
                usage: false,
            },
            prompt: None,
            usage: None,
            buffer: BytesMut::from(body.as_bytes()),
            _flight: None,
        }
        .finish();
        cache.memory.get(&key).is_some()
    }

    #[test]
    fn only_complete_answers_are_stored() {
        let stop = r#"{"choices":[{"finish_reason":"stop"}],"usage":{"total_tokens":12}}"#;
        let length = r#"{"choices":[{"finish_reason":"stop"},{"finish_reason":"length"}]}"#;
        assert!(store(stop, false));
        assert!(
            !store(length, false),
            "cut short by a limit the client did not set"
        );
        assert!(
            store(length, true),
            "cut short by the client's own max_tokens"
        );
        assert!(!store(
            r#"{"object":"response","status":"incomplete"}"#,
            true
        ));
        assert!(store(
            r#"{"object":"response","status":"completed"}"#,
            false
        ));
        assert!(store(r#"{"object":"list","data":[]}"#, false));
        assert!(
            !store(r#"{"choices":[{"finish_reason":"stop"}]"#, false),
            "truncated JSON"
        );
    }

    #[test]
    fn tokens_saved_come_from_the_answer_usage() {
        let cache = Arc::new(Cache::new(&CacheConfig::default(), String::new()));
        let key = CacheKey([9; 32]);
        Recording {
            cache: cache.clone(),
            key,
            ttl: Duration::from_secs(60),
            content_type: HeaderValue::from_static("application/json"),
            limit_set: false,
            wants: Wanted {
                endpoint: Endpoint::ChatCompletions,
                stream: false,
                usage: false,
            },
            prompt: None,
            usage: None,
            buffer: BytesMut::from(&br#"{"usage":{"prompt_tokens":5,"total_tokens":42}}"#[..]),
            _flight: None,
        }
        .finish();
        assert_eq!(cache.memory.get(&key).map(|e| e.usage.total), Some(42));
    }
}
