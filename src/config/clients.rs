//! `[rate_limit]`, `[sessions]` and `[auth]`: what each client may send.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::*;

/// `[rate_limit]`: per client limits; none when unset.
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitConfig {
    /// Requests a client may send per minute (bursts up to the whole minute's).
    pub requests_per_minute: Option<u32>,
    /// Tokens a client may use per minute: its prompt as counted by sluice plus
    /// `max_tokens` reserved up front, settled with the upstream's usage.
    pub tokens_per_minute: Option<u64>,
    /// Redis shared by every replica for the limits; unset = `[cache] redis_url`,
    /// `""` = limits kept in this process only. Printed with any password masked.
    #[serde(serialize_with = "secret::serialize_masked_opt_url")]
    pub redis_url: Option<String>,
}

impl RateLimitConfig {
    /// Whether any limit is set.
    pub fn enabled(&self) -> bool {
        self.requests_per_minute.is_some() || self.tokens_per_minute.is_some()
    }

    /// The Redis the limits are shared through, if any: `redis_url`, else the
    /// cache's.
    pub fn shared_redis<'a>(&'a self, cache: &'a CacheConfig) -> Option<&'a str> {
        let url = self.redis_url.as_deref().unwrap_or(&cache.redis_url).trim();
        (!url.is_empty()).then_some(url)
    }
}

impl std::fmt::Debug for RateLimitConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimitConfig")
            .field("requests_per_minute", &self.requests_per_minute)
            .field("tokens_per_minute", &self.tokens_per_minute)
            .field("redis_url", &self.redis_url.as_deref().map(mask_url))
            .finish()
    }
}

/// `[sessions]`: serialising the requests of one session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SessionsConfig {
    /// Request header carrying the session id.
    pub header: String,
    /// Requests of one session run at once.
    pub max_concurrent: usize,
    /// A session is forgotten after this long without requests.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
}

impl Default for SessionsConfig {
    fn default() -> Self {
        Self {
            header: "x-session-id".to_owned(),
            max_concurrent: 1,
            idle_timeout: Duration::from_secs(5 * 60),
        }
    }
}

/// `[auth]`: client authentication.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Environment variable holding the comma-separated client keys (`name:key` or
    /// `key`); unset = clients' `Authorization` passes through.
    pub client_keys_env: Option<String>,
    /// The keys read from `client_keys_env` by [`Config::load`]; never read from
    /// the file.
    #[serde(skip)]
    pub client_keys: Vec<ClientKey>,
}

/// One client key from `client_keys_env`: `name:key`, or a bare `key` named
/// `key-` and 8 hex digits of its digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientKey {
    pub name: String,
    pub key: Secret,
}

/// Parses a `client_keys_env` value: comma-separated `name:key` or bare `key`
/// entries (blank entries ignored). Errors never quote a key.
pub fn parse_client_keys(value: &str) -> Result<Vec<ClientKey>, String> {
    let mut keys: Vec<ClientKey> = Vec::new();
    for (i, entry) in value.split(',').map(str::trim).enumerate() {
        if entry.is_empty() {
            continue;
        }
        let n = i + 1;
        let (name, key) = match entry.split_once(':') {
            Some((name, key)) => (name.trim().to_owned(), key.trim()),
            None => {
                let digest = blake3::hash(entry.as_bytes()).to_hex();
                (format!("key-{}", &digest[..8]), entry)
            }
        };
        if name.is_empty()
            || name.len() > 64
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        {
            return Err(format!(
                "entry {n}: a key's name must be 1 to 64 letters, digits, '-', '_' or '.'"
            ));
        }
        if key.is_empty() {
            return Err(format!("entry {n} ({name}): the key is empty"));
        }
        if !key.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(format!(
                "entry {n} ({name}): a key must be printable ASCII without spaces"
            ));
        }
        if keys.iter().any(|k| k.key.expose() == key) {
            return Err(format!("entry {n} ({name}): the same key is listed twice"));
        }
        keys.push(ClientKey {
            name,
            key: Secret::new(key),
        });
    }
    if keys.is_empty() {
        return Err("holds no keys (expected `name:key,name2:key2`)".to_owned());
    }
    Ok(keys)
}
