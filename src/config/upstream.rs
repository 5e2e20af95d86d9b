//! `[[upstreams]]`, `[retry]` and `[breaker]`: where requests go and how
//! failures are retried and held against an upstream.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::*;

/// One `[[upstreams]]` entry: an OpenAI-compatible API sluice forwards to.
///
/// `name` and `base_url` are required in the file; the other keys default to the values
/// of [`UpstreamConfig::default`], which is also the upstream used when the file has none.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// Shown in `x-sluice-upstream`, logs and metrics; unique.
    pub name: String,
    /// Base URL as SDKs take it, version prefix included (`https://api.openai.com/v1`).
    /// Printed and serialized with any password masked.
    #[serde(serialize_with = "secret::serialize_masked_url")]
    pub base_url: String,
    /// Environment variable holding this upstream's API key; unset = the client's
    /// `Authorization` passes through.
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// Glob patterns of the model names this upstream serves (`"*"` = any).
    #[serde(default = "UpstreamConfig::default_models")]
    pub models: Vec<String>,
    /// Relative share of traffic among upstreams serving the same models.
    #[serde(default = "UpstreamConfig::default_weight")]
    pub weight: u32,
    /// Longest one exchange with this upstream may take, answer body included.
    #[serde(default = "UpstreamConfig::default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Streamed answers: longest wait for the first byte of the answer body; past it the
    /// attempt has failed (and is retried, since nothing reached the client yet).
    #[serde(
        default = "UpstreamConfig::default_first_byte_timeout",
        with = "humantime_serde"
    )]
    pub first_byte_timeout: Duration,
    /// Longest silence between two pieces of an answer body once it has started; past
    /// it a stream ends with an error event.
    #[serde(
        default = "UpstreamConfig::default_idle_timeout",
        with = "humantime_serde"
    )]
    pub idle_timeout: Duration,
    /// Longest wait for a new connection (TCP and TLS).
    #[serde(
        default = "UpstreamConfig::default_connect_timeout",
        with = "humantime_serde"
    )]
    pub connect_timeout: Duration,
    /// Idle keep-alive connections kept to this upstream.
    #[serde(default = "UpstreamConfig::default_pool_max_idle")]
    pub pool_max_idle: usize,
    /// Connections opened at start.
    #[serde(default = "UpstreamConfig::default_prewarm")]
    pub prewarm: usize,
    /// The key read from `api_key_env` by [`Config::load`]; never read from the file.
    #[serde(skip)]
    pub api_key: Option<Secret>,
}

impl Default for UpstreamConfig {
    /// The built-in upstream: OpenAI, serving every model, with the client's key.
    fn default() -> Self {
        Self {
            name: "openai".to_owned(),
            base_url: "https://api.openai.com/v1".to_owned(),
            api_key_env: None,
            models: vec!["*".to_owned()],
            weight: 1,
            timeout: Duration::from_secs(10 * 60),
            first_byte_timeout: Duration::from_secs(2 * 60),
            idle_timeout: Duration::from_secs(2 * 60),
            connect_timeout: Duration::from_secs(5),
            pool_max_idle: 64,
            prewarm: 2,
            api_key: None,
        }
    }
}

// serde's per-field defaults for `[[upstreams]]` items (a container-level default would
// make `name` and `base_url` optional too); the values come from `Default`.
impl UpstreamConfig {
    fn default_models() -> Vec<String> {
        Self::default().models
    }
    fn default_weight() -> u32 {
        Self::default().weight
    }
    fn default_timeout() -> Duration {
        Self::default().timeout
    }
    fn default_first_byte_timeout() -> Duration {
        Self::default().first_byte_timeout
    }
    fn default_idle_timeout() -> Duration {
        Self::default().idle_timeout
    }
    fn default_connect_timeout() -> Duration {
        Self::default().connect_timeout
    }
    fn default_pool_max_idle() -> usize {
        Self::default().pool_max_idle
    }
    fn default_prewarm() -> usize {
        Self::default().prewarm
    }
}

impl std::fmt::Debug for UpstreamConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamConfig")
            .field("name", &self.name)
            .field("base_url", &mask_url(&self.base_url))
            .field("api_key_env", &self.api_key_env)
            .field("models", &self.models)
            .field("weight", &self.weight)
            .field("timeout", &self.timeout)
            .field("first_byte_timeout", &self.first_byte_timeout)
            .field("idle_timeout", &self.idle_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("pool_max_idle", &self.pool_max_idle)
            .field("prewarm", &self.prewarm)
            .field("api_key", &self.api_key)
            .finish()
    }
}

/// `[retry]`: retrying failed upstream attempts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    /// Attempts after the first.
    pub max_retries: u32,
    /// Backoff before the first retry; grows exponentially, with jitter.
    #[serde(with = "humantime_serde")]
    pub base_delay: Duration,
    /// Upper bound of one backoff.
    #[serde(with = "humantime_serde")]
    pub max_delay: Duration,
    /// Upstream status codes that are retried.
    pub retry_on: Vec<u16>,
    /// Retries may add at most this fraction to recent requests (0.2 = 20%).
    pub budget: f64,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            max_retries: 2,
            base_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(10),
            retry_on: vec![429, 500, 502, 503, 504],
            budget: 0.2,
        }
    }
}

/// `[breaker]`: passive health of each upstream from its recent outcomes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BreakerConfig {
    /// Share of failed attempts (connect errors, timeouts, 5xx, broken streams) over
    /// `window` that opens an upstream's breaker.
    pub failure_ratio: f64,
    /// Attempts within `window` needed before the ratio counts.
    pub min_requests: u32,
    /// How far back outcomes count.
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// How long an open breaker keeps the upstream out of rotation before one probe
    /// request is let through.
    #[serde(with = "humantime_serde")]
    pub cooldown: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            failure_ratio: 0.5,
            min_requests: 5,
            window: Duration::from_secs(10),
            cooldown: Duration::from_secs(30),
        }
    }
}
