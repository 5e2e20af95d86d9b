//! `[log]` and `[usage]`: logging, and what the usage metrics count and
//! price.

use serde::{Deserialize, Serialize};

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
