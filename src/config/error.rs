//! [`ConfigError`]: why a configuration could not be loaded, as one line naming where
//! the bad value came from, the key and the problem.

use std::path::PathBuf;

/// Why a configuration could not be loaded. `Display` is one line naming the source
/// (file, environment variable or command-line flag) when known, the key path and the
/// problem, e.g. `config/sluice.toml: server.bogus: unknown key`.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("{}: cannot read file: {}", path.display(), io_reason(source))]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The config file is not valid TOML, or an environment variable is unreadable.
    #[error("{origin}: {message}")]
    Parse { origin: String, message: String },
    /// A key has a wrong type or value, is unknown, or is missing.
    #[error("{}{key}: {message}", origin_prefix(origin.as_deref()))]
    Invalid {
        /// Where the value came from: a file path, an environment variable name or a
        /// command-line flag; `None` when it cannot be told (e.g. from [`Config::validate`](super::Config::validate)).
        origin: Option<String>,
        /// Key path, e.g. `server.listen` or `upstreams[1].models`.
        key: String,
        message: String,
    },
}

impl ConfigError {
    /// The key path the error is about, if it is about one key.
    pub fn key(&self) -> Option<&str> {
        match self {
            Self::Invalid { key, .. } => Some(key),
            Self::Read { .. } | Self::Parse { .. } => None,
        }
    }

    pub(super) fn invalid(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid {
            origin: None,
            key: key.into(),
            message: message.into(),
        }
    }

    /// Sets the origin of a [`ConfigError::Invalid`] that has none, using `origin_of`.
    pub(super) fn with_origin(self, origin_of: impl FnOnce(&str) -> Option<String>) -> Self {
        match self {
            Self::Invalid {
                origin: None,
                key,
                message,
            } => Self::Invalid {
                origin: origin_of(&key),
                key,
                message,
            },
            other => other,
        }
    }
}

fn origin_prefix(origin: Option<&str>) -> String {
    origin.map(|o| format!("{o}: ")).unwrap_or_default()
}

/// The OS's description of an I/O error without the trailing ` (os error N)`.
fn io_reason(err: &std::io::Error) -> String {
    let text = err.to_string();
    match text.find(" (os error ") {
        Some(at) => text[..at].to_owned(),
        None => text,
    }
}
