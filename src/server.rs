//! The listener side: worker threads that accept connections, serve HTTP/1.1
//! and HTTP/2 (h2c) on them, and shut down gracefully.
//!
//! sluice runs one single-threaded runtime per worker (by default one per CPU
//! core), each with its own listening socket on the same address
//! (`SO_REUSEPORT`, so the kernel spreads connections) and its own upstream
//! connection pools. A request is handled start to finish on the thread that
//! accepted its connection: no cross-thread wake-ups, no work stealing, the
//! way nginx workers run. What must be global is shared: the concurrency
//! limit, the lifecycle phase, metrics.
//!
//! On shutdown every worker stops accepting, `/readyz` turns 503, in-flight
//! requests and streams get `shutdown_grace` to finish, then the workers exit.
//!
//! [`Running::reload`] swaps in a new config's pipeline: each worker builds
//! it and serves every request that starts afterwards with it, on new and
//! kept-alive connections alike; requests in flight finish on the pipeline
//! they started with. State the change leaves alone is kept (see
//! [`Shared::reload`]).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

use crate::config::Config;
use crate::lifecycle::{Lifecycle, Phase};
use crate::shared::{self, Settings, Shared};
use crate::stack;
use crate::upstream::{Upstreams, pool, route::BuildError};

/// Pending connections the kernel queues per listening socket. Bursts of
/// thousands of new clients (load tests, a fleet restarting) must not
/// overflow it; the kernel caps it at `net.core.somaxconn`.
const LISTEN_BACKLOG: i32 = 4096;

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
    #[error("cannot start a worker thread: {0}")]
    Worker(std::io::Error),
}

/// A running sluice: its address and the means to stop it. Dropping it
/// starts the graceful shutdown.
#[derive(Debug)]
pub struct Running {
    addr: SocketAddr,
    lifecycle: Arc<Lifecycle>,
    shutdown: watch::Sender<bool>,
    /// Closed when every worker has exited.
    done: mpsc::Receiver<()>,
    /// The pipeline every worker serves new requests with.
    generation: watch::Sender<Arc<Generation>>,
    /// The config running now and the parts built from it.
    current: Mutex<Current>,
    workers: usize,
    shutdown_grace: Duration,
}

#[derive(Debug)]
struct Current {
    config: Config,
    shared: Shared,
}

/// One config's pipeline parts, handed to every worker.
#[derive(Debug)]
struct Generation {
    settings: Settings,
    shared: Shared,
    /// Each worker's upstream clients, by worker; `None`: keep the ones it
    /// has (the upstreams did not change).
    upstreams: Option<Vec<Arc<Upstreams>>>,
}

/// What a reload changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reloaded {
    /// Config sections that differ.
    pub sections: Vec<&'static str>,
    /// Keys that changed but take effect only after a restart.
    pub need_restart: Vec<&'static str>,
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

    /// Waits until every worker has stopped.
    pub async fn wait(mut self) {
        while self.done.recv().await.is_some() {}
        let started = std::time::Instant::now();
        let (cache, ledger) = {
            let current = self.current.lock().unwrap_or_else(|e| e.into_inner());
            let cache = match &current.shared.cache {
                crate::cache::CacheLayer::Enabled(cache) => Some(cache.clone()),
                crate::cache::CacheLayer::Disabled => None,
            };
            (cache, current.shared.ledger.clone())
        };
        if let Some(cache) = cache {
            cache.flush(self.shutdown_grace).await;
        }
        // Last: the cache's read-on answers make records too.
        if let Some(ledger) = ledger {
            ledger
                .flush(self.shutdown_grace.saturating_sub(started.elapsed()))
                .await;
        }
    }

    /// Serves requests that start from now on with `config` (already
    /// loaded and validated), keeping what its changes leave alone. Fails,
    /// leaving the running config in place, when its upstream clients
    /// cannot be built. Keys in [`Reloaded::need_restart`] keep their old
    /// effect until sluice restarts.
    pub fn reload(&self, config: Config) -> Result<Reloaded, BuildError> {
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        let was = &current.config;
        let sections = shared::changed_sections(was, &config);
        if sections.is_empty() {
            return Ok(Reloaded::default());
        }
        let need_restart = shared::need_restart(was, &config);
        let settings = Settings::from(&config);
        let shared = Shared::reload(&current.shared, was, &config, &settings);
        let upstreams = if shared::same_upstreams(was, &config) {
            None
        } else {
            Some(worker_upstreams(&config, self.workers, &shared)?)
        };
        self.generation.send_replace(Arc::new(Generation {
            settings,
            shared: shared.clone(),
            upstreams,
        }));
        *current = Current { config, shared };
        Ok(Reloaded {
            sections,
            need_restart,
        })
    }
}

/// Every worker's upstream clients, sharing `shared`'s health. Built before
/// any worker gets them, so a bad upstream fails the start (or the reload),
/// not a thread.
fn worker_upstreams(
    config: &Config,
    workers: usize,
    shared: &Shared,
) -> Result<Vec<Arc<Upstreams>>, BuildError> {
    let worker_config = per_worker(config, workers);
    (0..workers)
        .map(|_| Upstreams::with_health(&worker_config, &shared.health).map(Arc::new))
        .collect()
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Binds the listeners, builds one pipeline per worker and starts serving.
pub async fn start(config: Config) -> Result<Running, StartError> {
    // Install the recorder before any metric handle is taken.
    let _ = crate::observe::prometheus();
    let workers = worker_count(config.server.workers);
    let lifecycle = Arc::new(Lifecycle::default());
    let settings = Settings::from(&config);
    let shared = Shared::new(&config, &settings, lifecycle.clone());
    // The token encoder loads in tens of milliseconds and takes megabytes:
    // when a feature counts on the request path it loads now, off that
    // path, so the first requests do not wait for it; otherwise on first
    // use (a stream that may need counting starts the load when it starts).
    if crate::tokens::service::needs_counts(&config) {
        config.tokens.fallback_encoding.preload();
    }
    // One health per upstream for all workers.
    let upstreams = worker_upstreams(&config, workers, &shared)?;
    let listeners = bind(config.server.listen, workers)?;
    let addr = listeners
        .first()
        .and_then(|l| l.local_addr().ok())
        .unwrap_or(config.server.listen);
    let open_connections = Arc::new(AtomicUsize::new(0));
    let conn = ConnSettings {
        max_connections: config.server.max_connections,
        header_read_timeout: config.server.header_read_timeout,
        shutdown_grace: config.server.shutdown_grace,
        max_headers: config.server.max_headers,
        max_header_size: usize::try_from(config.server.max_header_size.as_u64())
            .unwrap_or(usize::MAX),
    };
    let (shutdown, shutdown_rx) = watch::channel(false);
    let (done_tx, done) = mpsc::channel::<()>(1);
    let (generation, generations) = watch::channel(Arc::new(Generation {
        settings,
        shared: shared.clone(),
        upstreams: Some(upstreams),
    }));
    for (index, listener) in listeners.into_iter().enumerate() {
        let worker = Worker {
            index,
            listener,
            generations: generations.clone(),
            conn,
            open: open_connections.clone(),
            shutdown: shutdown_rx.clone(),
        };
        let done_tx = done_tx.clone();
        std::thread::Builder::new()
            .name(format!("sluice-worker-{index}"))
            .spawn(move || {
                worker.run();
                // Dropping the sender tells `Running::wait` this one is done.
                drop(done_tx);
            })
            .map_err(StartError::Worker)?;
    }
    lifecycle.set(Phase::Ready);
    tracing::info!(%addr, workers, upstreams = config.upstreams.len(), "sluice listening");
    Ok(Running {
        addr,
        lifecycle,
        shutdown,
        done,
        generation,
        shutdown_grace: config.server.shutdown_grace,
        current: Mutex::new(Current { config, shared }),
        workers,
    })
}

fn worker_count(configured: usize) -> usize {
    if configured > 0 {
        return configured;
    }
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// The config one worker builds its upstream clients from: the pool sizes
/// and pre-warmed connections of `[[upstreams]]` are for the whole process,
/// so each worker gets its share (rounded up).
fn per_worker(config: &Config, workers: usize) -> Config {
    let mut config = config.clone();
    for upstream in &mut config.upstreams {
        upstream.pool_max_idle = upstream.pool_max_idle.div_ceil(workers);
        upstream.prewarm = upstream.prewarm.div_ceil(workers);
    }
    config
}

/// `workers` listening sockets on one address. With port 0 the first socket
/// picks the port and the others join it.
fn bind(addr: SocketAddr, workers: usize) -> Result<Vec<std::net::TcpListener>, StartError> {
    ensure_free(addr).map_err(|source| StartError::Bind { addr, source })?;
    let mut listeners = Vec::with_capacity(workers);
    let mut bound = addr;
    for _ in 0..workers {
        let listener = join(bound).map_err(|source| StartError::Bind { addr, source })?;
        if let Ok(local) = listener.local_addr() {
            bound = local;
        }
        listeners.push(listener);
    }
    Ok(listeners)
}

/// Fails with "address in use" when something already listens on `addr`,
/// even another sluice: with `SO_REUSEPORT` a second process could
/// otherwise join the port silently and take half the connections.
fn ensure_free(addr: SocketAddr) -> std::io::Result<()> {
    if addr.port() == 0 {
        return Ok(());
    }
    use socket2::{Domain, Protocol, Socket, Type};
    let probe = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    probe.set_reuse_address(true)?;
    probe.bind(&addr.into())
}

/// A non-blocking listening socket on `addr` with a deep backlog; fails when
/// the address is taken.
pub fn listen(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    ensure_free(addr)?;
    join(addr)
}

/// A non-blocking listening socket on `addr` with a deep backlog that other
/// workers may join (`SO_REUSEPORT`).
fn join(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    #[cfg(unix)]
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    Ok(socket.into())
}

#[derive(Debug, Clone, Copy)]
struct ConnSettings {
    max_connections: usize,
    header_read_timeout: Duration,
    shutdown_grace: Duration,
    max_headers: usize,
    max_header_size: usize,
}

/// hyper's own limit on HTTP/1 request headers, kept in a buffer on the
/// stack; any other value costs a heap allocation per request.
const HYPER_DEFAULT_MAX_HEADERS: usize = 100;

/// One worker: its listener, its upstream pools, its share of the stack.
struct Worker {
    index: usize,
    listener: std::net::TcpListener,
    /// The pipeline to serve with, replaced on reload.
    generations: watch::Receiver<Arc<Generation>>,
    conn: ConnSettings,
    /// Client connections open, all workers together.
    open: Arc<AtomicUsize>,
    shutdown: watch::Receiver<bool>,
}

impl Worker {
    fn run(self) {
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime,
            Err(error) => {
                tracing::error!(%error, "cannot start a worker's runtime");
                return;
            }
        };
        runtime.block_on(self.serve());
    }

    async fn serve(self) {
        let listener = match TcpListener::from_std(self.listener) {
            Ok(listener) => listener,
            Err(error) => {
                tracing::error!(%error, "cannot register the listener");
                return;
            }
        };
        let index = self.index;
        let mut generations = self.generations;
        let first = generations.borrow_and_update().clone();
        let mine = first.upstreams.as_ref().and_then(|list| list.get(index));
        let Some(mut upstreams) = mine.cloned() else {
            tracing::error!("no upstream clients for this worker");
            return;
        };
        warm(&upstreams);
        let lifecycle = first.shared.lifecycle.clone();
        let (current, stack) = watch::channel(stack::build(
            first.settings,
            first.shared.clone(),
            upstreams.clone(),
        ));
        drop(first);
        // Each new generation is built here and serves every request that
        // starts after it, on old connections too.
        let rebuild = async move {
            while generations.changed().await.is_ok() {
                let generation = generations.borrow_and_update().clone();
                if let Some(list) = &generation.upstreams
                    && let Some(fresh) = list.get(index)
                {
                    upstreams = fresh.clone();
                    warm(&upstreams);
                }
                current.send_replace(stack::build(
                    generation.settings,
                    generation.shared.clone(),
                    upstreams.clone(),
                ));
            }
            std::future::pending::<()>().await;
        };
        tokio::select! {
            () = accept_loop(listener, stack, self.conn, self.open, self.shutdown, &lifecycle) => {}
            () = rebuild => {}
        }
    }
}

/// Opens an upstream set's pre-warmed connections, and again after each
/// outage.
fn warm(upstreams: &Upstreams) {
    for upstream in upstreams.iter() {
        pool::prewarm(upstream);
        pool::rewarm_on_recovery(upstream);
    }
}

async fn accept_loop<S>(
    listener: TcpListener,
    stack: watch::Receiver<S>,
    settings: ConnSettings,
    open: Arc<AtomicUsize>,
    mut shutdown: watch::Receiver<bool>,
    lifecycle: &Lifecycle,
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
    // The header read timeout also runs while a kept-alive connection waits
    // for its next request, so idle connections are closed after it. A head
    // that does not fit the read buffer, or has too many headers, gets 431.
    let mut http1 = builder.http1();
    http1
        .timer(TokioTimer::new())
        .header_read_timeout(settings.header_read_timeout)
        // hyper panics below its 8 KiB minimum (validation refuses those).
        .max_buf_size(settings.max_header_size.max(8 * 1024))
        .keep_alive(true);
    if settings.max_headers != HYPER_DEFAULT_MAX_HEADERS {
        http1.max_headers(settings.max_headers);
    }
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(Duration::from_secs(20)))
        .max_concurrent_streams(Some(1024))
        // HTTP/2 has no header count; its header list size (names, values
        // and 32 bytes per header) bounds both.
        .max_header_list_size(u32::try_from(settings.max_header_size).unwrap_or(u32::MAX));
    let connections = tokio_util::task::TaskTracker::new();
    // Each connection's own view of the shutdown signal.
    let stopping = shutdown.clone();

    loop {
        tokio::select! {
            biased;
            _ = shutdown.wait_for(|stop| *stop) => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    let Some(slot) = Slot::take(&open, settings.max_connections) else {
                        // Closed at once: one client cannot hold every socket.
                        metrics::counter!(crate::observe::CONNECTIONS_REFUSED_TOTAL).increment(1);
                        tracing::debug!("max_connections reached: connection closed");
                        drop(stream);
                        continue;
                    };
                    let _ = stream.set_nodelay(true);
                    let watch = Arc::new(ConnWatch::new());
                    let hyper_service = hyper::service::service_fn({
                        let stack = stack.clone();
                        let watch = watch.clone();
                        move |req: http::Request<hyper::body::Incoming>| {
                            let req = req.map(crate::body::boxed);
                            let service = stack.borrow().clone();
                            watch.request_started();
                            if req.version() == http::Version::HTTP_2 {
                                // Tracked to its last byte, so a connection
                                // with no stream open can be told apart.
                                let active = Active::new(watch.clone());
                                futures_util::future::Either::Right(async move {
                                    let response = tower::ServiceExt::oneshot(service, req).await;
                                    response.map(|r| r.map(|b| crate::body::guarded(b, active)))
                                })
                            } else {
                                futures_util::future::Either::Left(tower::ServiceExt::oneshot(service, req))
                            }
                        }
                    });
                    let conn = builder
                        .serve_connection(TokioIo::new(stream), hyper_service)
                        .into_owned();
                    let stop = stopping.clone();
                    let idle = settings.header_read_timeout;
                    #[expect(clippy::disallowed_methods, reason = "the connection is tracked by `connections`, which shutdown waits on")]
                    tokio::spawn(connections.track_future(async move {
                        serve(conn, watch, idle, stop).await;
                        drop(slot);
                    }));
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
    connections.close();
    if lifecycle.begin_draining() {
        tracing::info!(
            grace = %humantime::format_duration(settings.shutdown_grace),
            "draining: no longer accepting, finishing in-flight requests"
        );
    }
    tracing::debug!(connections = connections.len(), "worker draining");
    tokio::select! {
        () = connections.wait() => tracing::debug!("worker drained"),
        () = tokio::time::sleep(settings.shutdown_grace) => {
            tracing::warn!("shutdown grace elapsed with requests still in flight; stopping anyway");
        }
    }
}

/// Serves one connection to its end. Closes it when its first request has
/// not come within `idle` (nothing sent, or half a protocol preface: the
/// protocol sniffing runs before hyper's own timeouts), and an HTTP/2
/// connection with no stream open for `idle`; on shutdown, ends it
/// gracefully (HTTP/1.1 after the request in flight, HTTP/2 with GOAWAY).
async fn serve<C>(conn: C, watch: Arc<ConnWatch>, idle: Duration, mut stop: watch::Receiver<bool>)
where
    C: hyper_util::server::graceful::GracefulConnection,
    C::Error: std::fmt::Display,
{
    let mut conn = std::pin::pin!(conn);
    let started = tokio::time::Instant::from_std(watch.started);
    let mut check = std::pin::pin!(tokio::time::sleep(idle));
    let mut watching = true;
    let mut ending = false;
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(error) = result {
                    tracing::debug!(%error, "connection ended with an error");
                }
                return;
            }
            _ = stop.wait_for(|stop| *stop), if !ending => {
                conn.as_mut().graceful_shutdown();
                ending = true;
            }
            () = check.as_mut(), if watching && !ending => {
                let now = tokio::time::Instant::now();
                match watch.idle_since(started) {
                    // No request yet: a client that never speaks HTTP.
                    Idle::NeverUsed => {
                        tracing::debug!("connection closed: no request within header_read_timeout");
                        return;
                    }
                    // HTTP/1.1: hyper's header read timeout covers it.
                    Idle::Http1 => watching = false,
                    Idle::Busy => check.as_mut().reset(now + idle),
                    Idle::Since(since) if now.duration_since(since) >= idle => {
                        tracing::debug!("HTTP/2 connection closed: no stream open for header_read_timeout");
                        conn.as_mut().graceful_shutdown();
                        ending = true;
                    }
                    Idle::Since(since) => check.as_mut().reset(since + idle),
                }
            }
        }
    }
}

/// One client connection's place under `max_connections`.
struct Slot(Arc<AtomicUsize>);

impl Slot {
    fn take(open: &Arc<AtomicUsize>, max: usize) -> Option<Slot> {
        let mut current = open.load(Ordering::Relaxed);
        loop {
            if current >= max {
                return None;
            }
            match open.compare_exchange_weak(
                current,
                current + 1,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Some(Slot(open.clone())),
                Err(now) => current = now,
            }
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What a connection's watchdog knows of its requests.
#[derive(Debug)]
struct ConnWatch {
    /// When the connection was accepted.
    started: std::time::Instant,
    /// A request has started on it; one of them was HTTP/2.
    used: AtomicBool,
    http2: AtomicBool,
    /// HTTP/2 streams whose answer has not ended.
    active: AtomicUsize,
    /// When the last HTTP/2 stream ended, in milliseconds after the
    /// connection's start.
    last_end_ms: AtomicU64,
}

enum Idle {
    NeverUsed,
    Http1,
    Busy,
    Since(tokio::time::Instant),
}

impl ConnWatch {
    fn new() -> ConnWatch {
        ConnWatch {
            started: std::time::Instant::now(),
            used: AtomicBool::new(false),
            http2: AtomicBool::new(false),
            active: AtomicUsize::new(0),
            last_end_ms: AtomicU64::new(0),
        }
    }

    fn request_started(&self) {
        self.used.store(true, Ordering::Relaxed);
    }

    fn idle_since(&self, started: tokio::time::Instant) -> Idle {
        if !self.used.load(Ordering::Relaxed) {
            return Idle::NeverUsed;
        }
        if !self.http2.load(Ordering::Relaxed) {
            return Idle::Http1;
        }
        if self.active.load(Ordering::Acquire) > 0 {
            return Idle::Busy;
        }
        Idle::Since(started + Duration::from_millis(self.last_end_ms.load(Ordering::Acquire)))
    }
}

/// An HTTP/2 stream in flight, until its answer's body ends or is dropped.
struct Active(Arc<ConnWatch>);

impl Active {
    fn new(watch: Arc<ConnWatch>) -> Active {
        watch.http2.store(true, Ordering::Relaxed);
        watch.active.fetch_add(1, Ordering::AcqRel);
        Active(watch)
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        let watch = &self.0;
        let ms = u64::try_from(watch.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        watch.last_end_ms.fetch_max(ms, Ordering::AcqRel);
        watch.active.fetch_sub(1, Ordering::AcqRel);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workers_share_pools_and_prewarm() {
        let mut config = Config::default();
        config.upstreams[0].pool_max_idle = 64;
        config.upstreams[0].prewarm = 3;
        let split = per_worker(&config, 2);
        assert_eq!(split.upstreams[0].pool_max_idle, 32);
        assert_eq!(split.upstreams[0].prewarm, 2);
        let zero = {
            config.upstreams[0].prewarm = 0;
            per_worker(&config, 4)
        };
        assert_eq!(zero.upstreams[0].prewarm, 0);
    }

    #[test]
    fn a_taken_port_is_an_error_not_a_shared_one() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
        let addr = taken.local_addr().unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(bind(addr, 2), Err(StartError::Bind { .. })));
        let ours = bind("127.0.0.1:0".parse().unwrap_or_else(|_| unreachable!()), 2)
            .unwrap_or_else(|e| panic!("{e}"));
        let addr = ours[0].local_addr().unwrap_or_else(|e| panic!("{e}"));
        assert!(
            bind(addr, 2).is_err(),
            "a second sluice joined a running one's port"
        );
        assert!(listen(addr).is_err());
    }

    #[test]
    fn port_zero_workers_share_one_port() {
        let listeners = bind("127.0.0.1:0".parse().unwrap_or_else(|_| unreachable!()), 3)
            .unwrap_or_else(|e| panic!("{e}"));
        let ports: Vec<u16> = listeners
            .iter()
            .filter_map(|l| l.local_addr().ok())
            .map(|a| a.port())
            .collect();
        assert_eq!(ports.len(), 3);
        assert!(ports.iter().all(|p| *p == ports[0] && *p != 0));
    }
}
