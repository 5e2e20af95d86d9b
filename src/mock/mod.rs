//! A fast, deterministic fake of the OpenAI API: the upstream behind
//! `sluice mock-upstream`, sluice's end-to-end tests and its load tests, and a way to
//! try sluice without an API key.
//!
//! It answers `POST /v1/chat/completions`, `/v1/completions`, `/v1/embeddings` and
//! `/v1/responses` (plain and streamed) in OpenAI's exact shapes, and
//! `GET /v1/models[/{id}]`. Answers depend only on the request, so the same request
//! gets the same bytes. Every other path under `/v1/` echoes what it received (method,
//! path, query, headers, body length and hash); paths outside `/v1/` get a 404. Request
//! headers `x-mock-*` change timing or inject faults per request (see [`controls`]): an
//! error status, a dropped connection, a hang, a stream cut or stalled after some
//! events; for the first N requests of a key or a random share of them.
//! [`MockOptions::controls`] gives server-wide defaults for those headers, so one mock
//! can, say, answer a random fifth of its requests with a 503.
//!
//! Requests are read leniently: only a body that is not a JSON object, or a field of
//! the wrong type or out of range (`n`, `dimensions`, `encoding_format`, empty embedding
//! input), is a 400. A missing `model` answers as `gpt-4o-mini`; missing `messages`,
//! `prompt` or `input` count as empty. Streamed events are released one by one with
//! their delays; with no delay, several may leave in one TCP write.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use sluice::mock::{MockOptions, MockUpstream};
//! let mock = MockUpstream::start(MockOptions { record: true, ..MockOptions::default() }).await?;
//! // Point a client or sluice's upstream at mock.base_url(), e.g. http://127.0.0.1:PORT/v1
//! assert_eq!(mock.request_count(), 0);
//!
//! // A mock whose answers fail the first 2 times for each distinct request.
//! let mut controls = http::HeaderMap::new();
//! controls.insert("x-mock-fail-times", http::HeaderValue::from_static("2"));
//! let flaky = MockUpstream::start(MockOptions { controls, ..MockOptions::default() }).await?;
//! # drop(flaky);
//! # Ok(()) }
//! ```

mod body;
mod chat;
mod completions;
pub mod controls;
mod echo;
mod embeddings;
mod fault;
mod models;
mod reply;
mod responses;
mod router;
mod synth;

#[cfg(test)]
mod tests;

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::pin::pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

/// How long [`serve`] lets in-flight requests finish after `shutdown` resolves.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Pause after an accept error that is not about one connection (e.g. out of file
/// descriptors), so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Server-wide behaviour; each request may override it with `x-mock-*` headers.
#[derive(Debug, Clone)]
pub struct MockOptions {
    /// Wait before the response head.
    pub latency: Duration,
    /// Wait before each streamed content chunk.
    pub chunk_delay: Duration,
    /// Content chunks per stream.
    pub chunks: usize,
    /// Keep every received request for [`MockUpstream::requests`].
    pub record: bool,
    /// `x-mock-*` control headers applied to every request that does not carry that
    /// header itself (see [`controls`]; check them with [`controls::check_defaults`]).
    /// A request choosing its own fault ignores the fault given here.
    pub controls: http::HeaderMap,
}

impl Default for MockOptions {
    fn default() -> Self {
        Self {
            latency: Duration::ZERO,
            chunk_delay: Duration::ZERO,
            chunks: 8,
            record: false,
            controls: http::HeaderMap::new(),
        }
    }
}

/// A request as the mock received it.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    pub method: http::Method,
    pub path_and_query: String,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

/// State shared by all connections of one server.
struct State {
    opts: MockOptions,
    requests: AtomicUsize,
    connections: AtomicUsize,
    /// Recorded requests with their arrival number; touched only when `opts.record`.
    recorded: Mutex<Vec<(usize, RecordedRequest)>>,
    /// Requests seen per fault key, for `x-mock-fail-times`.
    faults: fault::FaultCounts,
}

impl State {
    /// Fails when `opts.controls` holds a control that cannot be used.
    fn new(opts: MockOptions) -> std::io::Result<Self> {
        controls::check_defaults(&opts.controls)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        Ok(Self {
            opts,
            requests: AtomicUsize::new(0),
            connections: AtomicUsize::new(0),
            recorded: Mutex::new(Vec::new()),
            faults: fault::FaultCounts::default(),
        })
    }

    fn recorded_lock(&self) -> MutexGuard<'_, Vec<(usize, RecordedRequest)>> {
        // A panic while pushing cannot leave the list inconsistent.
        self.recorded.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Serves the mock API on `listener` until `shutdown` resolves, then lets in-flight
/// requests finish for a few seconds. HTTP/1.1 with keep-alive and h2c on the same
/// port, `TCP_NODELAY` on every connection. Fails at once (`InvalidInput`) when
/// `opts.controls` holds a control that cannot be used.
pub async fn serve(
    listener: TcpListener,
    opts: MockOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    run(listener, Arc::new(State::new(opts)?), shutdown).await
}

async fn run(
    listener: TcpListener,
    state: Arc<State>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(1024);
    let graceful = GracefulShutdown::new();
    let mut connections = JoinSet::new();
    let mut shutdown = pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        tracing::warn!(error = %e, "mock upstream: accept failed");
                        if !is_connection_error(&e) {
                            tokio::time::sleep(ACCEPT_BACKOFF).await;
                        }
                        continue;
                    }
                };
                state.connections.fetch_add(1, Ordering::Relaxed);
                if let Err(e) = stream.set_nodelay(true) {
                    tracing::debug!(error = %e, %peer, "mock upstream: TCP_NODELAY not set");
                }
                let watcher = graceful.watcher();
                let builder = builder.clone();
                let state = Arc::clone(&state);
                connections.spawn(async move {
                    let service = service_fn(move |req| router::handle(Arc::clone(&state), req));
                    let conn = builder.serve_connection(TokioIo::new(stream), service);
                    if let Err(e) = watcher.watch(conn).await {
                        tracing::debug!(error = %e, %peer, "mock upstream: connection ended with an error");
                    }
                });
            }
        }
    }
    drop(listener);
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::debug!("mock upstream: grace period over, closing remaining connections");
    }
    connections.shutdown().await;
    Ok(())
}

fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    matches!(
        e.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    )
}

/// The mock running inside the current Tokio runtime on `127.0.0.1` and a free port;
/// dropping it stops the server and closes its connections.
pub struct MockUpstream {
    addr: SocketAddr,
    state: Arc<State>,
    server: JoinHandle<std::io::Result<()>>,
}

impl MockUpstream {
    /// Binds `127.0.0.1:0` and starts serving; fails (`InvalidInput`) when
    /// `opts.controls` holds a control that cannot be used.
    pub async fn start(opts: MockOptions) -> std::io::Result<MockUpstream> {
        let state = Arc::new(State::new(opts)?);
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        #[expect(
            clippy::disallowed_methods,
            reason = "the handle is kept in MockUpstream, which aborts it when dropped"
        )]
        let server = tokio::spawn(run(
            listener,
            Arc::clone(&state),
            std::future::pending::<()>(),
        ));
        Ok(MockUpstream {
            addr,
            state,
            server,
        })
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The base URL as SDKs take it: `http://127.0.0.1:PORT/v1`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Requests received so far, in arrival order; empty unless `record` was set.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        let mut recorded = self.state.recorded_lock().clone();
        recorded.sort_by_key(|(seq, _)| *seq);
        recorded.into_iter().map(|(_, r)| r).collect()
    }

    /// Requests received so far on any path, counted when their head arrives.
    pub fn request_count(&self) -> usize {
        self.state.requests.load(Ordering::Relaxed)
    }

    /// TCP connections accepted so far.
    pub fn connection_count(&self) -> usize {
        self.state.connections.load(Ordering::Relaxed)
    }
}

impl fmt::Debug for MockUpstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MockUpstream")
            .field("addr", &self.addr)
            .field("opts", &self.state.opts)
            .field("requests", &self.request_count())
            .field("connections", &self.connection_count())
            .finish()
    }
}

impl Drop for MockUpstream {
    fn drop(&mut self) {
        self.server.abort();
    }
}
