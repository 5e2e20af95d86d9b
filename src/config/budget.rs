//! `[prune]`, `[compress]` and `[tokens]`: the token budget of a prompt.

use serde::{Deserialize, Serialize};

use super::*;

/// `[prune]`: trimming long conversations before they are sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PruneConfig {
    pub enabled: bool,
    pub max_messages: usize,
    pub max_context_tokens: usize,
    pub keep_file_content_turns: usize,
    /// Cut so that the next turns' prompts begin with this one's (the
    /// provider's prompt cache keeps serving it); `false`: the tightest cut.
    pub prefix_stable: bool,
    /// With `prefix_stable`: the share of the budget a cut (or a batch of
    /// older turns rewritten) frees, so the turns after it only append.
    pub cut_depth: f64,
}

impl Default for PruneConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            max_messages: 5,
            max_context_tokens: 4000,
            keep_file_content_turns: 1,
            prefix_stable: false,
            cut_depth: 0.5,
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
