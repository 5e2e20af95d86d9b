//! What every worker's pipeline shares, and what a reload keeps.
//!
//! [`Shared::new`] builds each layer's state from the config once per
//! process; [`Shared::reload`] builds it for a new config, keeping the
//! state of every part whose settings did not change. The pipeline itself
//! is assembled in `src/stack.rs`.

use std::sync::Arc;

use crate::auth::AuthLayer;
use crate::cache::CacheLayer;
use crate::compress::CompressLayer;
use crate::config::Config;
use crate::edge::load_shed::LoadShedLayer;
use crate::ledger::Ledger;
use crate::lifecycle::Lifecycle;
use crate::prune::PruneLayer;
use crate::rate_limit::RateLimitLayer;
use crate::report::Reporter;
use crate::session::SessionLayer;
use crate::tokens::{Counter, TokensLayer};
use crate::upstream::health::Health;
use crate::upstream::retry::RetrySettings;

/// What the pipeline takes from the config, by value.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    pub body_limit: u64,
    /// What ingress lets a client send (URI, JSON depth, body pace).
    pub ingress: crate::ingress::Limits,
    pub max_concurrency: usize,
    pub request_timeout: std::time::Duration,
}

impl From<&Config> for Settings {
    fn from(config: &Config) -> Self {
        Settings {
            body_limit: config.server.max_body_size.as_u64(),
            ingress: crate::ingress::Limits::from(&config.server),
            max_concurrency: config.server.max_concurrency,
            request_timeout: config.server.request_timeout,
        }
    }
}

/// What every worker's pipeline shares: the process's phase and the one
/// concurrency limit for all workers.
#[derive(Debug, Clone)]
pub struct Shared {
    pub lifecycle: Arc<Lifecycle>,
    pub load_shed: LoadShedLayer,
    pub cache: CacheLayer,
    pub session: SessionLayer,
    pub prune: PruneLayer,
    pub compress: CompressLayer,
    pub tokens: TokensLayer,
    pub auth: AuthLayer,
    pub rate_limit: RateLimitLayer,
    /// Each upstream's health, by configuration index, for every worker.
    pub health: Arc<Vec<Arc<Health>>>,
    /// The retry policy's settings and its one retry budget.
    pub retry: Arc<RetrySettings>,
    /// Usage and savings counters, prices, the access log.
    pub reporter: Arc<Reporter>,
    /// The usage ledger's writer (`[ledger]`), kept across reloads that
    /// leave `[ledger]` alone.
    pub ledger: Option<Arc<Ledger>>,
    /// The token count cache of the prune, compress and tokens layers.
    pub counter: Arc<Counter>,
}

impl Shared {
    pub fn new(config: &Config, settings: &Settings, lifecycle: Arc<Lifecycle>) -> Self {
        // One token count cache for every layer and worker.
        let counter = Arc::new(Counter::new(config.tokens.fallback_encoding));
        let ledger = start_ledger(config);
        Shared {
            load_shed: LoadShedLayer::new(settings.max_concurrency, lifecycle.clone()),
            lifecycle,
            cache: CacheLayer::new(&config.cache, rewrite_settings(config)),
            session: SessionLayer::new(&config.sessions),
            prune: PruneLayer::new(&config.prune, counter.clone()),
            compress: CompressLayer::new(&config.compress, counter.clone()),
            auth: AuthLayer::new(&config.auth.client_keys),
            rate_limit: RateLimitLayer::new(&config.rate_limit, &config.cache, counter.clone()),
            tokens: TokensLayer::new(config, counter.clone()),
            health: Arc::new(crate::upstream::route::health_of(config)),
            retry: Arc::new(RetrySettings::new(&config.retry)),
            reporter: Reporter::new(config, ledger.clone()),
            ledger,
            counter,
        }
    }

    /// The shared parts for a reloaded config `new`, keeping from `old`
    /// (built from `was`) the state a change elsewhere leaves alone: the
    /// cache and its in-flight requests, rate limit and session state,
    /// upstream health, the retry budget, the load limit, counted tokens.
    pub fn reload(old: &Shared, was: &Config, new: &Config, settings: &Settings) -> Shared {
        let counter = if was.tokens == new.tokens {
            old.counter.clone()
        } else {
            Arc::new(Counter::new(new.tokens.fallback_encoding))
        };
        let keep_cache = was.cache == new.cache && rewrite_settings(was) == rewrite_settings(new);
        let ledger = if was.ledger == new.ledger {
            old.ledger.clone()
        } else {
            start_ledger(new)
        };
        Shared {
            load_shed: if was.server.max_concurrency == new.server.max_concurrency {
                old.load_shed.clone()
            } else {
                LoadShedLayer::new(settings.max_concurrency, old.lifecycle.clone())
            },
            lifecycle: old.lifecycle.clone(),
            cache: if keep_cache {
                old.cache.clone()
            } else {
                CacheLayer::new(&new.cache, rewrite_settings(new))
            },
            session: if was.sessions == new.sessions {
                old.session.clone()
            } else {
                SessionLayer::new(&new.sessions)
            },
            prune: PruneLayer::new(&new.prune, counter.clone()),
            compress: CompressLayer::new(&new.compress, counter.clone()),
            auth: AuthLayer::new(&new.auth.client_keys),
            rate_limit: if was.rate_limit == new.rate_limit && was.cache == new.cache {
                old.rate_limit.clone()
            } else {
                RateLimitLayer::new(&new.rate_limit, &new.cache, counter.clone())
            },
            tokens: TokensLayer::new(new, counter.clone()),
            health: if same_upstreams(was, new) {
                old.health.clone()
            } else {
                Arc::new(crate::upstream::route::health_of(new))
            },
            retry: if was.retry == new.retry {
                old.retry.clone()
            } else {
                Arc::new(RetrySettings::new(&new.retry))
            },
            reporter: Reporter::new(new, ledger.clone()),
            ledger,
            counter,
        }
    }
}

/// The ledger's writer when `[ledger] url` is set. One that cannot start
/// is logged and left out: usage records are never worth a failed start.
fn start_ledger(config: &Config) -> Option<Arc<Ledger>> {
    if config.ledger.url.trim().is_empty() {
        return None;
    }
    Ledger::start(&config.ledger)
        .map_err(|error| tracing::error!(%error, "the usage ledger is not started"))
        .ok()
}

/// Whether the upstreams (and their breakers) are configured alike, so
/// their clients, pools and health can stay.
pub fn same_upstreams(was: &Config, new: &Config) -> bool {
    was.upstreams == new.upstreams && was.breaker == new.breaker
}

/// The settings of the request-rewriting layers below the cache, as part of
/// every cache key: a change of them never serves an answer made under
/// other ones. Destructured whole: a new field of these sections does not
/// compile until it is placed here (or left out on purpose, by name).
pub(crate) fn rewrite_settings(config: &Config) -> String {
    let crate::config::PruneConfig {
        enabled,
        max_messages,
        max_context_tokens,
        keep_file_content_turns,
        prefix_stable,
        cut_depth,
    } = &config.prune;
    let crate::config::CompressConfig {
        level,
        max_prompt_tokens,
        head_ratio,
    } = &config.compress;
    let crate::config::TokensConfig { fallback_encoding } = &config.tokens;
    format!(
        "prune={:?};compress={:?};tokens={};",
        (
            enabled,
            max_messages,
            max_context_tokens,
            keep_file_content_turns,
            prefix_stable,
            cut_depth
        ),
        (level, max_prompt_tokens, head_ratio),
        fallback_encoding
    )
}

/// The sections of `new` that differ from `was`. Destructured whole: a new
/// section does not compile until it is listed.
pub fn changed_sections(was: &Config, new: &Config) -> Vec<&'static str> {
    let Config {
        server,
        upstreams,
        retry,
        breaker,
        cache,
        prune,
        compress,
        tokens,
        rate_limit,
        sessions,
        auth,
        usage,
        ledger,
        log,
    } = was;
    let checks = [
        ("server", *server != new.server),
        ("upstreams", *upstreams != new.upstreams),
        ("retry", *retry != new.retry),
        ("breaker", *breaker != new.breaker),
        ("cache", *cache != new.cache),
        ("prune", *prune != new.prune),
        ("compress", *compress != new.compress),
        ("tokens", *tokens != new.tokens),
        ("rate_limit", *rate_limit != new.rate_limit),
        ("sessions", *sessions != new.sessions),
        ("auth", *auth != new.auth),
        ("usage", *usage != new.usage),
        ("ledger", *ledger != new.ledger),
        ("log", *log != new.log),
    ];
    checks
        .into_iter()
        .filter_map(|(name, changed)| changed.then_some(name))
        .collect()
}

/// The keys that changed from `was` to `new` but take effect only after a
/// restart (the listener, the worker threads, the connection limits, the
/// logger). Every key of `[server]` and `[log]` is named here: a new one
/// does not compile until it is placed on one side or the other.
pub fn need_restart(was: &Config, new: &Config) -> Vec<&'static str> {
    let crate::config::ServerConfig {
        listen,
        workers,
        header_read_timeout,
        max_headers,
        max_header_size,
        max_connections,
        // Read per request, by the pipeline a reload rebuilds, or by the
        // config watcher after each reload.
        max_body_size: _,
        request_timeout: _,
        shutdown_grace: _,
        max_concurrency: _,
        body_read_timeout: _,
        max_uri_length: _,
        max_json_depth: _,
        config_poll_interval: _,
    } = &was.server;
    let crate::config::LogConfig {
        level,
        format,
        // Read per request.
        access: _,
    } = &was.log;
    let (b, l) = (&new.server, &new.log);
    [
        ("server.listen", *listen != b.listen),
        ("server.workers", *workers != b.workers),
        (
            "server.header_read_timeout",
            *header_read_timeout != b.header_read_timeout,
        ),
        ("server.max_headers", *max_headers != b.max_headers),
        (
            "server.max_connections",
            *max_connections != b.max_connections,
        ),
        (
            "server.max_header_size",
            *max_header_size != b.max_header_size,
        ),
        ("log.level", *level != l.level),
        ("log.format", *format != l.format),
    ]
    .into_iter()
    .filter_map(|(key, changed)| changed.then_some(key))
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_keys_and_changed_sections() {
        let was = Config::default();
        let mut new = was.clone();
        assert!(changed_sections(&was, &new).is_empty());
        assert!(need_restart(&was, &new).is_empty());
        new.server.max_concurrency += 1;
        new.log.access = !new.log.access;
        assert_eq!(changed_sections(&was, &new), ["server", "log"]);
        assert!(need_restart(&was, &new).is_empty(), "both apply at once");
        new.server.workers = 3;
        new.log.level = "debug".into();
        assert_eq!(need_restart(&was, &new), ["server.workers", "log.level"]);
    }
}
