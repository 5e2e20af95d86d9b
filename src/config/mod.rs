//! sluice's configuration: the typed sections of `config/sluice.toml`, their defaults,
//! and loading them from built-in defaults, a TOML file and `SLUICE_*` environment
//! variables (in that order of precedence, lowest first), followed by validation and
//! the resolution of upstream API keys from the environment.
//!
//! ```no_run
//! # fn main() -> Result<(), sluice::config::ConfigError> {
//! let mut config = sluice::config::Config::load(None)?;
//! config.apply_overrides(Some("0.0.0.0:8080"), None)?;
//! assert_eq!(config.server.listen.port(), 8080);
//! # Ok(())
//! # }
//! ```
//!
//! Every section and key is optional; the `Default` impls below are the one place where
//! default values live (`config/sluice.toml` shows them all). Errors are one line naming
//! where the bad value came from, the key path and what is wrong.

mod de;
mod encoding;
mod error;
mod load;
mod secret;
#[cfg(test)]
mod tests;
mod validate;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use bytesize::ByteSize;
use serde::{Deserialize, Serialize};

pub use encoding::Encoding;
pub use error::ConfigError;
pub(crate) use load::DEFAULT_PATH;
pub use secret::{Secret, mask_url};

/// The whole configuration, one field per TOML section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub upstreams: Vec<UpstreamConfig>,
    pub retry: RetryConfig,
    pub breaker: BreakerConfig,
    pub cache: CacheConfig,
    pub prune: PruneConfig,
    pub compress: CompressConfig,
    pub tokens: TokensConfig,
    pub rate_limit: RateLimitConfig,
    pub sessions: SessionsConfig,
    pub auth: AuthConfig,
    pub usage: UsageConfig,
    pub log: LogConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            server: ServerConfig::default(),
            upstreams: vec![UpstreamConfig::default()],
            retry: RetryConfig::default(),
            breaker: BreakerConfig::default(),
            cache: CacheConfig::default(),
            prune: PruneConfig::default(),
            compress: CompressConfig::default(),
            tokens: TokensConfig::default(),
            rate_limit: RateLimitConfig::default(),
            sessions: SessionsConfig::default(),
            auth: AuthConfig::default(),
            usage: UsageConfig::default(),
            log: LogConfig::default(),
        }
    }
}

/// `[server]`: the listening side.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address clients connect to.
    #[serde(deserialize_with = "de::socket_addr")]
    pub listen: SocketAddr,
    /// Largest request body accepted (larger: 413).
    #[serde(with = "de::size")]
    pub max_body_size: ByteSize,
    /// Longest wait for an answer to begin (its head); past it, 504.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Time in-flight requests get to finish after SIGTERM/SIGINT.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// Requests handled at once; more are shed with 503.
    pub max_concurrency: usize,
    /// Time a client gets to send its request headers; also how long an idle
    /// keep-alive HTTP/1.1 connection is kept open waiting for its next request.
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// Longest wait for the next piece of a request body, read or streamed
    /// through (past it: 408), so a client trickling its body cannot hold a
    /// request slot or an upstream connection.
    #[serde(with = "humantime_serde")]
    pub body_read_timeout: Duration,
    /// Most request headers accepted (more: 431).
    pub max_headers: usize,
    /// Largest request head (request line and headers) accepted (larger: 431).
    #[serde(with = "de::size")]
    pub max_header_size: ByteSize,
    /// Longest request URI (path and query) accepted (longer: 414).
    #[serde(with = "de::size")]
    pub max_uri_length: ByteSize,
    /// Deepest nesting of arrays and objects in an understood request's JSON
    /// body (deeper: 400).
    pub max_json_depth: usize,
    /// Worker threads, each serving its own share of connections with its
    /// own upstream pools; 0 = one per CPU core.
    pub workers: usize,
    /// How often the config file is checked for changes, which are then
    /// loaded as on SIGHUP; 0 = only on SIGHUP.
    #[serde(with = "humantime_serde")]
    pub config_poll_interval: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 8080)),
            max_body_size: ByteSize::mib(32),
            request_timeout: Duration::from_secs(10 * 60),
            shutdown_grace: Duration::from_secs(30),
            max_concurrency: 4096,
            header_read_timeout: Duration::from_secs(30),
            body_read_timeout: Duration::from_secs(30),
            max_headers: 100,
            max_header_size: ByteSize::kib(64),
            max_uri_length: ByteSize::kib(8),
            max_json_depth: 64,
            workers: 0,
            config_poll_interval: Duration::from_secs(5),
        }
    }
}

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
            .finish()
    }
}

/// `[prune]`: trimming long conversations before they are sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PruneConfig {
    pub enabled: bool,
    pub max_messages: usize,
    pub max_context_tokens: usize,
    pub keep_file_content_turns: usize,
}

impl Default for PruneConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            max_messages: 5,
            max_context_tokens: 4000,
            keep_file_content_turns: 1,
        }
    }
}

/// How hard prompts are compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CompressLevel {
    Off,
    #[default]
    Safe,
    Aggressive,
}

/// `[compress]`: shortening prompts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CompressConfig {
    pub level: CompressLevel,
    pub max_prompt_tokens: usize,
    /// Share of a shortened text kept from its start; the rest comes from its end.
    pub head_ratio: f64,
}

impl Default for CompressConfig {
    fn default() -> Self {
        Self {
            level: CompressLevel::Safe,
            max_prompt_tokens: 12000,
            head_ratio: 0.6,
        }
    }
}

/// `[tokens]`: token counting.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TokensConfig {
    /// Encoding for models OpenAI does not make (`"o200k_base"` or `"cl100k_base"`).
    pub fallback_encoding: Encoding,
}

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

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// `[log]`: logging to stderr.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A `tracing_subscriber::EnvFilter` directive (`info`, `info,sluice=debug`, ...).
    pub level: String,
    pub format: LogFormat,
    /// One line per request (target `sluice::access`, level info): status,
    /// latency, model, client, upstream, attempts, cache, tokens.
    pub access: bool,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".to_owned(),
            format: LogFormat::Text,
            access: true,
        }
    }
}

/// `[usage]`: what the usage and savings metrics count and price.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UsageConfig {
    /// Ask upstreams for usage on streamed chat and completions requests
    /// (`stream_options.include_usage`); the extra chunk is removed for
    /// clients that did not ask for it.
    pub stream_usage: bool,
    /// Distinct models, and distinct clients, named in metric labels; later
    /// ones are counted under `other`.
    pub max_label_values: usize,
    /// Prices per million tokens by model (glob patterns; the longest
    /// matching pattern wins), turning tokens into estimated cost.
    pub prices: std::collections::BTreeMap<String, Price>,
}

impl Default for UsageConfig {
    fn default() -> Self {
        Self {
            stream_usage: true,
            max_label_values: 100,
            prices: std::collections::BTreeMap::new(),
        }
    }
}

/// One model's prices, per million tokens, in any one currency.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    /// Prompt (input) tokens.
    pub input: f64,
    /// Completion (output) tokens.
    #[serde(default)]
    pub output: f64,
    /// Prompt tokens the upstream served from its own prompt cache; the
    /// input price when not given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached_input: Option<f64>,
}

impl Config {
    /// Loads the configuration: `path` if given, else `config/sluice.toml` when it exists
    /// in the working directory, else the built-in defaults; then the `SLUICE_*`
    /// environment overlay; then [`Config::validate`]; then reads each upstream's
    /// `api_key_env` variable into [`UpstreamConfig::api_key`].
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        load::load(path, load::process_env()?)
    }

    /// [`Config::load`] with `env` in place of the process environment, both for the
    /// overlay and for `api_key_env` variables.
    pub fn load_with_env(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        load::load(path, env.into_iter().collect())
    }

    /// Applies the command line's `--listen` and `--upstream` (the latter replaces the
    /// first upstream's `base_url`), then validates again.
    pub fn apply_overrides(
        &mut self,
        listen: Option<&str>,
        upstream: Option<&str>,
    ) -> Result<(), ConfigError> {
        if let Some(listen) = listen {
            self.server.listen =
                de::parse_listen(listen).map_err(|message| ConfigError::Invalid {
                    origin: Some("--listen".to_owned()),
                    key: "server.listen".to_owned(),
                    message,
                })?;
        }
        if let Some(upstream) = upstream {
            let first = self
                .upstreams
                .first_mut()
                .ok_or_else(|| ConfigError::invalid("upstreams", "no upstream configured"))?;
            first.base_url = upstream.trim().to_owned();
        }
        self.validate().map_err(|err| {
            err.with_origin(|key| match key {
                "server.listen" if listen.is_some() => Some("--listen".to_owned()),
                "upstreams[0].base_url" if upstream.is_some() => Some("--upstream".to_owned()),
                _ => None,
            })
        })
    }

    /// Checks every value and the relations between keys; the first problem found is
    /// returned, naming its key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        validate::validate(self)
    }

    /// The effective configuration as TOML for `sluice check-config`: every key, with
    /// secrets and URL passwords masked, durations like `"30s"` and sizes like
    /// `"32 MiB"`. It parses back into the same configuration (masked parts aside).
    pub fn to_masked_toml(&self) -> String {
        let mut out = String::from(
            "# Effective sluice configuration (defaults and overrides applied, secrets masked).\n",
        );
        render_section(&mut out, "[server]", &self.server, &[]);
        for upstream in &self.upstreams {
            let unset = [("api_key_env", upstream.api_key_env.is_none())];
            render_section(&mut out, "[[upstreams]]", upstream, &unset);
        }
        render_section(&mut out, "[retry]", &self.retry, &[]);
        render_section(&mut out, "[cache]", &self.cache, &[]);
        render_section(&mut out, "[prune]", &self.prune, &[]);
        render_section(&mut out, "[compress]", &self.compress, &[]);
        render_section(&mut out, "[tokens]", &self.tokens, &[]);
        let rate_limit = &self.rate_limit;
        let unset = [
            (
                "requests_per_minute",
                rate_limit.requests_per_minute.is_none(),
            ),
            ("tokens_per_minute", rate_limit.tokens_per_minute.is_none()),
            ("redis_url", rate_limit.redis_url.is_none()),
        ];
        render_section(&mut out, "[rate_limit]", rate_limit, &unset);
        render_section(&mut out, "[sessions]", &self.sessions, &[]);
        let unset = [("client_keys_env", self.auth.client_keys_env.is_none())];
        render_section(&mut out, "[auth]", &self.auth, &unset);
        render_usage(&mut out, &self.usage);
        render_section(&mut out, "[log]", &self.log, &[]);
        out
    }
}

/// `[usage]`, with its price table as `[usage.prices]` of inline tables
/// (a plain rendering would put the prices under a `[prices.…]` header).
fn render_usage(out: &mut String, usage: &UsageConfig) {
    out.push_str(&format!(
        "\n[usage]\nstream_usage = {}\nmax_label_values = {}\n",
        usage.stream_usage, usage.max_label_values
    ));
    if usage.prices.is_empty() {
        out.push_str("# no prices: costs are not estimated\n");
        return;
    }
    out.push_str("\n[usage.prices]\n");
    for (model, price) in &usage.prices {
        let cached = price
            .cached_input
            .map_or_else(String::new, |c| format!(", cached_input = {c:?}"));
        out.push_str(&format!(
            "{} = {{ input = {:?}, output = {:?}{cached} }}\n",
            toml::Value::String(model.clone()),
            price.input,
            price.output
        ));
    }
}

/// Appends `header` and `section`'s keys, then a comment for each optional key that is
/// not set (TOML has no null, so those keys cannot be written).
fn render_section<T: Serialize>(
    out: &mut String,
    header: &str,
    section: &T,
    unset: &[(&str, bool)],
) {
    out.push('\n');
    out.push_str(header);
    out.push('\n');
    match toml::to_string(section) {
        Ok(body) => out.push_str(&body),
        Err(err) => out.push_str(&format!("# cannot render this section: {err}\n")),
    }
    for (key, is_unset) in unset {
        if *is_unset {
            out.push_str(&format!("# {key} is not set\n"));
        }
    }
}
