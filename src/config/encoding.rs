//! The tokenizer encodings a config can name. Counting with them lives in
//! the tokens module.

use std::fmt;

use serde::{Deserialize, Serialize};

/// One of OpenAI's byte-pair encodings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum Encoding {
    #[default]
    #[serde(rename = "o200k_base")]
    O200kBase,
    #[serde(rename = "cl100k_base")]
    Cl100kBase,
}

impl Encoding {
    /// The encoding OpenAI uses for `model`; `fallback` for models it does
    /// not make. Fine-tuned names (`ft:gpt-4o-mini:org::id`) count as their
    /// base model; Azure's `gpt-35-turbo` as `gpt-3.5-turbo`.
    pub fn for_model(model: &str, fallback: Encoding) -> Encoding {
        let model = model.strip_prefix("ft:").unwrap_or(model);
        // Newest families first: "gpt-4o" and "gpt-4.1" also start with "gpt-4".
        const O200K: [&str; 10] = [
            "gpt-4o",
            "gpt-4.1",
            "gpt-4.5",
            "gpt-5",
            "chatgpt-4o",
            "gpt-oss",
            "o1",
            "o3",
            "o4",
            "codex-",
        ];
        const CL100K: [&str; 6] = [
            "gpt-4",
            "gpt-3.5",
            "gpt-35",
            "text-embedding-",
            "davinci-002",
            "babbage-002",
        ];
        if O200K.iter().any(|p| model.starts_with(p)) {
            Encoding::O200kBase
        } else if CL100K.iter().any(|p| model.starts_with(p)) {
            Encoding::Cl100kBase
        } else {
            fallback
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Encoding::O200kBase => "o200k_base",
            Encoding::Cl100kBase => "cl100k_base",
        }
    }
}

impl fmt::Display for Encoding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
