//! [`Config::validate`]: the checks serde's types cannot express, each error naming
//! its key.

use std::collections::HashMap;
use std::time::Duration;

use super::{Config, ConfigError, UpstreamConfig, mask_url};

type Checked = Result<(), ConfigError>;

pub(super) fn validate(config: &Config) -> Checked {
    server(config)?;
    upstreams(&config.upstreams)?;
    retry(config)?;
    breaker(config)?;
    cache(config)?;
    ledger(config)?;
    prune_and_compress(config)?;
    rate_limit(config)?;
    sessions(config)?;
    if let Some(name) = &config.auth.client_keys_env {
        env_var_name("auth.client_keys_env", name)?;
    }
    open_key(config)?;
    usage(config)?;
    log_level(&config.log.level)
}

fn usage(config: &Config) -> Checked {
    at_least_one(
        "usage.max_label_values",
        config.usage.max_label_values as u64,
    )?;
    for (model, price) in &config.usage.prices {
        let key = format!("usage.prices.{model:?}");
        if let Err(err) = glob::Pattern::new(model) {
            return fail(key, format!("{model:?} is not a valid pattern: {err}"));
        }
        let prices = [
            ("input", Some(price.input)),
            ("output", Some(price.output)),
            ("cached_input", price.cached_input),
        ];
        for (name, value) in prices {
            if let Some(value) = value
                && !(value.is_finite() && value >= 0.0)
            {
                return fail(
                    format!("{key}.{name}"),
                    format!("must be a price per million tokens, 0 or more (got {value})"),
                );
            }
        }
    }
    Ok(())
}

fn fail(key: impl Into<String>, message: impl Into<String>) -> Checked {
    Err(ConfigError::invalid(key, message))
}

fn positive_duration(key: impl Into<String>, value: Duration) -> Checked {
    if value.is_zero() {
        return fail(key, "must be longer than 0s");
    }
    Ok(())
}

fn at_least_one(key: impl Into<String>, value: u64) -> Checked {
    if value == 0 {
        return fail(key, "must be at least 1");
    }
    Ok(())
}

fn server(config: &Config) -> Checked {
    let server = &config.server;
    if server.max_body_size.as_u64() == 0 {
        return fail("server.max_body_size", "must be larger than 0 bytes");
    }
    positive_duration("server.request_timeout", server.request_timeout)?;
    positive_duration("server.header_read_timeout", server.header_read_timeout)?;
    at_least_one("server.max_connections", server.max_connections as u64)?;
    positive_duration("server.body_read_timeout", server.body_read_timeout)?;
    at_least_one("server.max_concurrency", server.max_concurrency as u64)?;
    request_limits(server)
}

/// Smallest `max_header_size`: hyper's HTTP/1 read buffer cannot be smaller.
const MIN_HEADER_SIZE: u64 = 8 * 1024;
/// Largest `max_header_size`: HTTP/2 announces it in a 32-bit setting.
const MAX_HEADER_SIZE: u64 = 16 * 1024 * 1024;
/// serde_json refuses JSON nested deeper than this whatever the setting.
const MAX_JSON_DEPTH: usize = 128;

fn request_limits(server: &super::ServerConfig) -> Checked {
    at_least_one("server.max_headers", server.max_headers as u64)?;
    let header_size = server.max_header_size.as_u64();
    if !(MIN_HEADER_SIZE..=MAX_HEADER_SIZE).contains(&header_size) {
        return fail(
            "server.max_header_size",
            format!("must be between 8KiB and 16MiB, got {header_size} bytes"),
        );
    }
    let uri = server.max_uri_length.as_u64();
    at_least_one("server.max_uri_length", uri)?;
    if uri > header_size {
        return fail(
            "server.max_uri_length",
            format!(
                "{uri} bytes cannot arrive within server.max_header_size ({header_size} bytes)"
            ),
        );
    }
    if !(1..=MAX_JSON_DEPTH).contains(&server.max_json_depth) {
        return fail(
            "server.max_json_depth",
            format!(
                "must be between 1 and {MAX_JSON_DEPTH}, got {}",
                server.max_json_depth
            ),
        );
    }
    Ok(())
}

fn upstreams(upstreams: &[UpstreamConfig]) -> Checked {
    if upstreams.is_empty() {
        return fail("upstreams", "at least one upstream is required");
    }
    let mut names: HashMap<&str, usize> = HashMap::new();
    for (i, upstream) in upstreams.iter().enumerate() {
        let key = |field: &str| format!("upstreams[{i}].{field}");
        if upstream.name.trim().is_empty() {
            return fail(key("name"), "must not be empty");
        }
        if let Some(first) = names.insert(&upstream.name, i) {
            return fail(
                key("name"),
                format!(
                    "duplicate upstream name {:?} (also upstreams[{first}].name)",
                    upstream.name
                ),
            );
        }
        base_url(&key("base_url"), &upstream.base_url)?;
        if let Some(name) = &upstream.api_key_env {
            env_var_name(key("api_key_env"), name)?;
        }
        if upstream.models.is_empty() {
            return fail(
                key("models"),
                "must list at least one pattern (\"*\" = any model)",
            );
        }
        for (j, pattern) in upstream.models.iter().enumerate() {
            if pattern.is_empty() {
                return fail(format!("upstreams[{i}].models[{j}]"), "must not be empty");
            }
            if let Err(err) = glob::Pattern::new(pattern) {
                return fail(
                    format!("upstreams[{i}].models[{j}]"),
                    format!("invalid glob pattern {pattern:?}: {err}"),
                );
            }
        }
        at_least_one(key("weight"), u64::from(upstream.weight))?;
        positive_duration(key("timeout"), upstream.timeout)?;
        positive_duration(key("connect_timeout"), upstream.connect_timeout)?;
        positive_duration(key("first_byte_timeout"), upstream.first_byte_timeout)?;
        positive_duration(key("idle_timeout"), upstream.idle_timeout)?;
        if upstream.prewarm > upstream.pool_max_idle {
            return fail(
                key("prewarm"),
                format!(
                    "{} connections cannot stay open with pool_max_idle = {}",
                    upstream.prewarm, upstream.pool_max_idle
                ),
            );
        }
    }
    Ok(())
}

/// An `http://` or `https://` URL with a host and no query or fragment.
fn base_url(key: &str, url: &str) -> Checked {
    let shown = mask_url(url);
    let uri: http::Uri = match url.parse() {
        Ok(uri) => uri,
        Err(err) => return fail(key, format!("invalid URL {shown:?}: {err}")),
    };
    if !matches!(uri.scheme_str(), Some("http" | "https")) {
        return fail(
            key,
            format!("must be an http:// or https:// URL, got {shown:?}"),
        );
    }
    if uri.host().is_none_or(str::is_empty) {
        return fail(key, format!("URL {shown:?} has no host"));
    }
    if !port_is_numeric(uri.authority().map_or("", |a| a.as_str())) {
        return fail(key, format!("URL {shown:?} has an invalid port"));
    }
    if url.contains('?') || url.contains('#') {
        return fail(
            key,
            format!("URL {shown:?} must not have a query or fragment"),
        );
    }
    Ok(())
}

/// Whether the port of `authority` (`user:pw@host:port`, `[::1]:port`), if it has one,
/// is a number. `http::Uri` leaves that to whoever connects.
fn port_is_numeric(authority: &str) -> bool {
    let host_port = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host_port)| host_port);
    let port = match host_port.rfind(']') {
        Some(end) => host_port[end + 1..].strip_prefix(':'),
        None => host_port.split_once(':').map(|(_, port)| port),
    };
    port.is_none_or(|port| port.parse::<u16>().is_ok())
}

/// A portable environment variable name: letters, digits and `_`, not starting with a digit.
fn env_var_name(key: impl Into<String>, name: &str) -> Checked {
    let valid = name.chars().next().is_some_and(|c| !c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid {
        return fail(
            key,
            format!("{name:?} is not an environment variable name (letters, digits and _)"),
        );
    }
    Ok(())
}

fn retry(config: &Config) -> Checked {
    let retry = &config.retry;
    if retry.base_delay > retry.max_delay {
        return fail(
            "retry.base_delay",
            format!(
                "{} is longer than retry.max_delay ({})",
                humantime::format_duration(retry.base_delay),
                humantime::format_duration(retry.max_delay)
            ),
        );
    }
    for (i, code) in retry.retry_on.iter().enumerate() {
        if !(100..=599).contains(code) {
            return fail(
                format!("retry.retry_on[{i}]"),
                format!("{code} is not an HTTP status code (100-599)"),
            );
        }
        // Other answers say the request itself is wrong: sending it again cannot help.
        if !(*code >= 500 || RETRYABLE_4XX.contains(code)) {
            return fail(
                format!("retry.retry_on[{i}]"),
                format!("{code} is not worth retrying: only 408, 409, 425, 429 and 5xx are"),
            );
        }
    }
    if !(0.0..=1.0).contains(&retry.budget) {
        return fail(
            "retry.budget",
            format!("must be between 0.0 and 1.0, got {}", retry.budget),
        );
    }
    Ok(())
}

/// Client errors that say "try again later" rather than "this request is wrong".
const RETRYABLE_4XX: [u16; 4] = [408, 409, 425, 429];

fn breaker(config: &Config) -> Checked {
    let breaker = &config.breaker;
    if !(breaker.failure_ratio > 0.0 && breaker.failure_ratio <= 1.0) {
        return fail(
            "breaker.failure_ratio",
            format!(
                "must be above 0.0 and at most 1.0, got {}",
                breaker.failure_ratio
            ),
        );
    }
    at_least_one("breaker.min_requests", u64::from(breaker.min_requests))?;
    if breaker.window < Duration::from_secs(1) || breaker.window > Duration::from_secs(600) {
        return fail(
            "breaker.window",
            format!(
                "must be between 1s and 10m, got {}",
                humantime::format_duration(breaker.window)
            ),
        );
    }
    positive_duration("breaker.cooldown", breaker.cooldown)
}

fn ledger(config: &Config) -> Checked {
    let ledger = &config.ledger;
    let url = ledger.url.trim();
    if !url.is_empty()
        && !["sqlite:", "postgres://", "postgresql://"]
            .iter()
            .any(|scheme| url.starts_with(scheme))
    {
        return fail(
            "ledger.url",
            format!(
                "must start with sqlite: or postgres://, got {}",
                mask_url(url)
            ),
        );
    }
    at_least_one("ledger.queue_size", ledger.queue_size as u64)?;
    at_least_one("ledger.batch_size", ledger.batch_size as u64)?;
    if ledger.batch_size > 1000 {
        return fail("ledger.batch_size", "must be at most 1000");
    }
    positive_duration("ledger.flush_interval", ledger.flush_interval)
}

fn cache(config: &Config) -> Checked {
    let cache = &config.cache;
    positive_duration("cache.ttl", cache.ttl)?;
    // A year, as `cache::store::MAX_TTL` (config does not import the cache).
    if cache.ttl > Duration::from_secs(365 * 24 * 60 * 60) {
        return fail(
            "cache.ttl",
            format!(
                "must be at most 365days, got {}",
                humantime::format_duration(cache.ttl)
            ),
        );
    }
    positive_duration("cache.redis_timeout", cache.redis_timeout)?;
    redis_url("cache.redis_url", &cache.redis_url)
}

/// A Redis URL sluice can use, or empty (no Redis).
fn redis_url(key: &str, url: &str) -> Checked {
    const SCHEMES: [&str; 4] = ["redis://", "redis+cluster://", "redis+unix://", "unix://"];
    if url.starts_with("rediss://") {
        return fail(
            key,
            format!(
                "{:?}: TLS to Redis (rediss://) is not supported yet; use redis:// on a private network or a TLS tunnel",
                mask_url(url)
            ),
        );
    }
    if !url.is_empty() && !SCHEMES.iter().any(|scheme| url.starts_with(scheme)) {
        return fail(
            key,
            format!(
                "{:?} must be empty (no Redis) or start with redis://, redis+cluster://, redis+unix:// or unix://",
                mask_url(url)
            ),
        );
    }
    Ok(())
}

fn prune_and_compress(config: &Config) -> Checked {
    at_least_one("prune.max_messages", config.prune.max_messages as u64)?;
    at_least_one(
        "prune.max_context_tokens",
        config.prune.max_context_tokens as u64,
    )?;
    at_least_one(
        "compress.max_prompt_tokens",
        config.compress.max_prompt_tokens as u64,
    )?;
    let depth = config.prune.cut_depth;
    if !(depth > 0.0 && depth < 1.0) {
        return fail(
            "prune.cut_depth",
            format!("must be between 0 and 1 (exclusive), got {depth}"),
        );
    }
    let ratio = config.compress.head_ratio;
    if !(ratio > 0.0 && ratio < 1.0) {
        return fail(
            "compress.head_ratio",
            format!("must be between 0 and 1 (exclusive), got {ratio}"),
        );
    }
    Ok(())
}

fn rate_limit(config: &Config) -> Checked {
    let limits = &config.rate_limit;
    let none = "must be at least 1 (leave it out for no limit)";
    if limits.requests_per_minute == Some(0) {
        return fail("rate_limit.requests_per_minute", none);
    }
    if limits.tokens_per_minute == Some(0) {
        return fail("rate_limit.tokens_per_minute", none);
    }
    if let Some(url) = &limits.redis_url {
        redis_url("rate_limit.redis_url", url)?;
    }
    Ok(())
}

/// An upstream's own key on an address others can reach, with no client keys:
/// anyone on the network could spend it.
fn open_key(config: &Config) -> Checked {
    if config.auth.client_keys_env.is_some() || config.server.listen.ip().is_loopback() {
        return Ok(());
    }
    match config
        .upstreams
        .iter()
        .position(|u| u.api_key_env.is_some())
    {
        Some(i) => fail(
            format!("upstreams[{i}].api_key_env"),
            format!(
                "this upstream's key would be usable by anyone who can reach {}: set \
                 auth.client_keys_env so clients must present a key, or listen on a \
                 loopback address",
                config.server.listen
            ),
        ),
        None => Ok(()),
    }
}

fn sessions(config: &Config) -> Checked {
    let sessions = &config.sessions;
    if http::HeaderName::from_bytes(sessions.header.as_bytes()).is_err() {
        return fail(
            "sessions.header",
            format!("{:?} is not a valid HTTP header name", sessions.header),
        );
    }
    at_least_one("sessions.max_concurrent", sessions.max_concurrent as u64)?;
    positive_duration("sessions.idle_timeout", sessions.idle_timeout)
}

/// A `tracing_subscriber::EnvFilter` directive such as `info` or `info,sluice=debug`.
fn log_level(level: &str) -> Checked {
    if level.trim().is_empty() {
        return fail("log.level", "must not be empty (e.g. \"info\")");
    }
    if let Err(err) = tracing_subscriber::EnvFilter::try_new(level) {
        return fail("log.level", format!("invalid filter {level:?}: {err}"));
    }
    Ok(())
}
