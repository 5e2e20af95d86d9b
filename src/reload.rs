//! Reloading the config while sluice runs: on SIGHUP, and when the config
//! file's content changes (checked every `[server] config_poll_interval`).
//!
//! The file is read again with the same environment and command-line
//! overrides it started with, validated, and handed to
//! [`Running::reload`]: requests that start afterwards use it, requests in
//! flight finish as they began, no connection is dropped. A config that
//! does not load or validate is rejected with an error line naming the key,
//! and the running one stays.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::{Config, ConfigError, DEFAULT_PATH};
use crate::server::Running;

/// Where the running config came from, to read it again.
#[derive(Debug, Clone, Default)]
pub struct ConfigSource {
    path: Option<PathBuf>,
    listen: Option<String>,
    upstream: Option<String>,
}

impl ConfigSource {
    /// `path` as given by `--config`, and the `--listen` / `--upstream`
    /// overrides.
    pub fn new(path: Option<PathBuf>, listen: Option<String>, upstream: Option<String>) -> Self {
        ConfigSource {
            path,
            listen,
            upstream,
        }
    }

    /// Loads and validates the config as at start.
    pub fn load(&self) -> Result<Config, ConfigError> {
        let mut config = Config::load(self.path.as_deref())?;
        config.apply_overrides(self.listen.as_deref(), self.upstream.as_deref())?;
        Ok(config)
    }

    /// The file the config is read from, if any.
    pub fn file(&self) -> Option<PathBuf> {
        match &self.path {
            Some(path) => Some(path.clone()),
            None => {
                let default = PathBuf::from(DEFAULT_PATH);
                default.is_file().then_some(default)
            }
        }
    }
}

/// A digest of `path`'s content (`None` when it cannot be read). Content,
/// not modification time: Kubernetes swaps a mounted ConfigMap through a
/// symlink, and an edit within the same second must count.
fn fingerprint(path: &Path) -> Option<blake3::Hash> {
    std::fs::read(path).ok().map(|bytes| blake3::hash(&bytes))
}

/// Serves until SIGTERM or SIGINT, reloading on SIGHUP and file changes.
pub async fn serve(running: &Running, source: &ConfigSource, poll: Duration) {
    let file = source.file();
    let mut seen = file.as_deref().and_then(fingerprint);
    let mut poll = poll;
    let mut hangups = hangups();
    let shutdown = crate::server::shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        let tick = async {
            match (&file, poll.is_zero()) {
                (Some(_), false) => tokio::time::sleep(poll).await,
                _ => std::future::pending().await,
            }
        };
        tokio::select! {
            () = &mut shutdown => return,
            Some(()) = hangups.recv() => {
                tracing::info!("SIGHUP received: reloading the config");
                seen = file.as_deref().and_then(fingerprint);
                if let Some(next) = reload(running, source) {
                    poll = next;
                }
            }
            () = tick => {
                let now = file.as_deref().and_then(fingerprint);
                if now.is_some() && now != seen {
                    seen = now;
                    tracing::info!("config file changed: reloading the config");
                    if let Some(next) = reload(running, source) {
                        poll = next;
                    }
                }
            }
        }
    }
}

/// Loads `source` and applies it; the new poll interval when it loaded.
pub fn reload(running: &Running, source: &ConfigSource) -> Option<Duration> {
    let config = match source.load() {
        Ok(config) => config,
        Err(error) => {
            tracing::error!(%error, "config reload rejected; the running config stays");
            return None;
        }
    };
    let poll = config.server.config_poll_interval;
    match running.reload(config) {
        Ok(done) if done.sections.is_empty() => {
            tracing::info!("config reloaded: nothing changed");
        }
        Ok(done) => {
            tracing::info!(sections = ?done.sections, "config reloaded");
            for key in done.need_restart {
                tracing::warn!(key, "changed in the config; takes effect after a restart");
            }
        }
        Err(error) => {
            tracing::error!(%error, "config reload rejected; the running config stays");
            return None;
        }
    }
    Some(poll)
}

/// SIGHUPs, as a channel (nothing ever arrives where there are none).
fn hangups() -> tokio::sync::mpsc::Receiver<()> {
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::hangup()) {
            Ok(mut hangup) => {
                #[expect(
                    clippy::disallowed_methods,
                    reason = "listens for SIGHUP; nothing is lost when it ends with the runtime"
                )]
                tokio::spawn(async move {
                    while hangup.recv().await.is_some() {
                        if tx.send(()).await.is_err() {
                            return;
                        }
                    }
                });
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGHUP; reload by file change only")
            }
        }
    }
    #[cfg(not(unix))]
    drop(tx);
    rx
}
