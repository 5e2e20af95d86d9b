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

/// `[usage] stream_usage`: how sluice learns what a streamed chat or
/// completions answer used when its client did not ask for usage
/// (`stream_options.include_usage`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StreamUsage {
    /// The request and the stream pass unchanged; sluice counts the
    /// completion from the streamed text with its own tokenizer, labelled
    /// `usage_source="counted"`.
    #[default]
    Count,
    /// sluice adds `stream_options.include_usage` to the request and leaves
    /// the usage chunk out of what the client receives: the upstream's own
    /// figures, at the price of a rewritten request and stream.
    Ask,
}

impl StreamUsage {
    pub fn as_str(self) -> &'static str {
        match self {
            StreamUsage::Count => "count",
            StreamUsage::Ask => "ask",
        }
    }
}

/// `"count"` or `"ask"`; `true` and `false`, from configs written before
/// the choice had names, mean `"ask"` and `"count"`.
impl<'de> Deserialize<'de> for StreamUsage {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Written {
            Flag(bool),
            Name(String),
        }
        match Written::deserialize(deserializer)? {
            Written::Flag(true) => Ok(StreamUsage::Ask),
            Written::Flag(false) => Ok(StreamUsage::Count),
            Written::Name(name) => match name.as_str() {
                "count" => Ok(StreamUsage::Count),
                "ask" => Ok(StreamUsage::Ask),
                other => Err(serde::de::Error::invalid_value(
                    serde::de::Unexpected::Str(other),
                    &"\"count\" or \"ask\"",
                )),
            },
        }
    }
}

/// `[usage]`: what the usage and savings metrics count and price.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UsageConfig {
    /// Where the usage of a streamed chat or completions answer comes from
    /// when the client did not ask for it (see [`StreamUsage`]).
    pub stream_usage: StreamUsage,
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
            stream_usage: StreamUsage::Count,
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
