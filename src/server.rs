//! The listener: accepts connections, serves HTTP/1.1 and HTTP/2 (h2c) on
//! them, and shuts down gracefully.
//!
//! On shutdown it stops accepting, turns `/readyz` to 503, lets in-flight
//! requests and streams finish within `shutdown_grace`, then returns.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::lifecycle::{Lifecycle, Phase};
use crate::upstream::{Upstreams, pool, route::BuildError};

/// Why sluice could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Upstreams(#[from] BuildError),
}

/// A running sluice: its address and the means to stop it.
#[derive(Debug)]
pub struct Running {
    addr: SocketAddr,
    lifecycle: Arc<Lifecycle>,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Running {
    /// The address it listens on (useful with port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The base URL an SDK takes: `http://ADDR/v1`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    pub fn lifecycle(&self) -> &Lifecycle {
        &self.lifecycle
    }

    /// Starts the graceful shutdown; [`Running::wait`] returns when it is done.
    pub fn shutdown(&self) {
        let _ = self.shutdown.send(true);
    }

    /// Waits until the server has stopped.
    pub async fn wait(self) {
        if let Err(error) = self.task.await {
            tracing::error!(%error, "server task failed");
        }
    }
}

/// Binds the listener, builds the pipeline and starts serving.
pub async fn start(config: Config) -> Result<Running, StartError> {
    let upstreams = Arc::new(Upstreams::from_config(&config)?);
    let addr = config.server.listen;
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { addr, source })?;
    let addr = listener.local_addr().unwrap_or(addr);
    let lifecycle = Arc::new(Lifecycle::default());
    // Install the recorder before the first request is counted.
    let _ = crate::observe::prometheus();
    let stack = crate::stack::build(
        crate::stack::Settings::from(&config),
        lifecycle.clone(),
        upstreams.clone(),
    );
    for upstream in upstreams.iter() {
        pool::prewarm(upstream);
    }
    let (shutdown, shutdown_rx) = watch::channel(false);
    let settings = Settings {
        header_read_timeout: config.server.header_read_timeout,
        shutdown_grace: config.server.shutdown_grace,
    };
    let task = tokio::spawn(serve(
        listener,
        stack,
        settings,
        shutdown_rx,
        lifecycle.clone(),
    ));
    lifecycle.set(Phase::Ready);
    tracing::info!(%addr, upstreams = upstreams.iter().count(), "sluice listening");
    Ok(Running {
        addr,
        lifecycle,
        shutdown,
        task,
    })
}

struct Settings {
    header_read_timeout: Duration,
    shutdown_grace: Duration,
}

async fn serve<S>(
    listener: TcpListener,
    stack: S,
    settings: Settings,
    mut shutdown: watch::Receiver<bool>,
    lifecycle: Arc<Lifecycle>,
) where
    S: tower::Service<
            http::Request<crate::body::Body>,
            Response = http::Response<crate::body::Body>,
            Error = std::convert::Infallible,
        > + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(settings.header_read_timeout)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(Duration::from_secs(20)))
        .max_concurrent_streams(Some(1024));
    let graceful = GracefulShutdown::new();

    loop {
        tokio::select! {
            biased;
            _ = shutdown.changed() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    let _ = stream.set_nodelay(true);
                    let hyper_service = hyper::service::service_fn({
                        let stack = stack.clone();
                        move |req: http::Request<hyper::body::Incoming>| {
                            let req = req.map(crate::body::boxed);
                            tower::ServiceExt::oneshot(stack.clone(), req)
                        }
                    });
                    let conn = builder.serve_connection(TokioIo::new(stream), hyper_service);
                    let conn = graceful.watch(conn.into_owned());
                    tokio::spawn(async move {
                        if let Err(error) = conn.await {
                            tracing::debug!(%error, "connection ended with an error");
                        }
                    });
                }
                Err(error) => {
                    // Out of file descriptors and the like: back off a little
                    // rather than spin; the listener stays open.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }

    drop(listener);
    lifecycle.set(Phase::Draining);
    tracing::info!(
        connections = graceful.count(),
        grace = %humantime::format_duration(settings.shutdown_grace),
        "draining: no longer accepting, finishing in-flight requests"
    );
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("drained; stopped"),
        () = tokio::time::sleep(settings.shutdown_grace) => {
            tracing::warn!("shutdown grace elapsed with requests still in flight; stopping anyway");
        }
    }
}

/// Waits for SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("SIGINT received"),
        () = terminate => tracing::info!("SIGTERM received"),
    }
}
