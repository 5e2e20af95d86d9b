//! sluice: a fast reverse proxy in front of OpenAI-compatible LLM APIs.
//!
//! Clients point their SDK's base URL at sluice and change nothing else. The
//! request pipeline is assembled in [`stack`]; [`server`] runs it.
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let config = sluice::config::Config::load(None)?;
//! let running = sluice::server::start(config).await?;
//! println!("proxying on {}", running.base_url());
//! sluice::server::shutdown_signal().await;
//! running.shutdown();
//! running.wait().await;
//! # Ok(()) }
//! ```

pub mod admin;
pub mod auth;
pub mod body;
pub mod breaker;
pub mod cache;
pub mod compress;
pub mod config;
pub mod context;
pub mod demo;
pub mod edge;
pub mod error;
pub mod ingress;
pub mod ledger;
pub mod lifecycle;
pub mod mock;
pub mod observe;
pub mod openai;
pub mod prune;
pub mod rate_limit;
pub mod reload;
pub mod report;
pub mod server;
pub mod session;
pub mod shared;
pub mod stack;
pub mod tokens;
pub mod upstream;

pub use config::Config;
pub use error::Error;
pub use server::{Running, StartError, start};

/// Runs sluice until SIGTERM or SIGINT, then shuts down gracefully.
pub async fn run(config: Config) -> Result<(), StartError> {
    let running = server::start(config).await?;
    server::shutdown_signal().await;
    running.shutdown();
    running.wait().await;
    Ok(())
}

/// [`run`], reloading the config from `source` on SIGHUP and when its file
/// changes (see [`reload`]).
pub async fn run_with_reload(
    config: Config,
    source: reload::ConfigSource,
) -> Result<(), StartError> {
    let poll = config.server.config_poll_interval;
    let running = server::start(config).await?;
    reload::serve(&running, &source, poll).await;
    running.shutdown();
    running.wait().await;
    Ok(())
}
