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

mod budget;
mod cache;
mod clients;
mod de;
mod encoding;
mod error;
mod ledger;
mod load;
mod report;
mod secret;
mod server;
#[cfg(test)]
mod tests;
mod upstream;
mod validate;

use std::path::Path;

use serde::{Deserialize, Serialize};

pub use budget::*;
pub use cache::*;
pub use clients::*;
pub use encoding::Encoding;
pub use error::ConfigError;
pub use ledger::LedgerConfig;
pub(crate) use load::DEFAULT_PATH;
pub use report::*;
pub use secret::{Secret, mask_url};
pub use server::*;
pub use upstream::*;

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
    pub ledger: LedgerConfig,
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
            ledger: LedgerConfig::default(),
            log: LogConfig::default(),
        }
    }
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
        "\n[usage]\nstream_usage = \"{}\"\nmax_label_values = {}\n",
        usage.stream_usage.as_str(),
        usage.max_label_values
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
