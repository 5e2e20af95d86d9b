//! One shared HTTP client per upstream, and the pre-warming of its pool.
//!
//! The client is hyper's pooled client over a rustls connector: keep-alive
//! pool, TCP_NODELAY and keep-alive probes, a connect timeout, the system's
//! trusted roots, and HTTP/2 when a TLS upstream offers it (ALPN). It does
//! nothing sluice does not ask for: no redirects followed, no retries of its
//! own, no proxy lookup, no URL re-parsing per request.
//!
//! Pre-warming opens connections (TCP, and TLS for https) ahead of the first
//! requests and keeps them in the [`WarmConnector`], which hands them to the
//! pool when it next needs a connection. The upstream sees connections
//! opened, never a request no client made.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder, MaybeHttpsStream};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tower::Service;

use crate::body::{Body, BoxError};
use crate::config::UpstreamConfig;

/// The pooled client of one upstream.
pub type HttpClient = Client<WarmConnector, Body>;

/// One connection to an upstream, plain or TLS.
pub type Stream = MaybeHttpsStream<TokioIo<TcpStream>>;

/// How long an idle pooled connection is kept before it is closed; a
/// pre-warmed connection not taken by then is closed too.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// TCP keep-alive probes on pooled connections, so dead peers are noticed.
const TCP_KEEPALIVE: Duration = Duration::from_secs(30);
/// Bound on opening one pre-warmed connection, so a silent upstream cannot
/// hold it.
const PREWARM_TIMEOUT: Duration = Duration::from_secs(30);

/// Builds the client for one upstream, and the connector it shares with
/// [`prewarm`].
pub fn client(config: &UpstreamConfig) -> Result<(HttpClient, WarmConnector), std::io::Error> {
    install_crypto_provider();
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    http.set_keepalive(Some(TCP_KEEPALIVE));
    http.set_connect_timeout(Some(config.connect_timeout));
    http.enforce_http(false);
    let https = HttpsConnectorBuilder::new()
        .try_with_platform_verifier()
        .map_err(|e| std::io::Error::other(e.to_string()))?
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(http);
    let connector = WarmConnector {
        inner: https,
        warm: Arc::default(),
    };
    let client = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(config.pool_max_idle)
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .build(connector.clone());
    Ok((client, connector))
}

/// The upstream's connector, holding the connections opened ahead of time:
/// a new connection the pool asks for is a warm one when one is open, and a
/// fresh connect otherwise. Clones share the warm connections.
#[derive(Clone)]
pub struct WarmConnector {
    inner: HttpsConnector<HttpConnector>,
    warm: Arc<Mutex<Vec<Warm>>>,
}

/// One connection opened ahead of time.
struct Warm {
    scheme: Option<http::uri::Scheme>,
    authority: Option<http::uri::Authority>,
    opened: Instant,
    stream: Stream,
}

impl std::fmt::Debug for WarmConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WarmConnector")
            .field("waiting", &self.waiting())
            .finish_non_exhaustive()
    }
}

impl WarmConnector {
    /// Opens one connection to `uri` and keeps it until the pool asks.
    async fn open(mut self, uri: http::Uri) -> Result<(), BoxError> {
        let stream = self.inner.call(uri.clone()).await?;
        let warm = Warm {
            scheme: uri.scheme().cloned(),
            authority: uri.authority().cloned(),
            opened: Instant::now(),
            stream,
        };
        self.held().push(warm);
        Ok(())
    }

    /// Closes the warm connections not taken yet.
    fn clear(&self) {
        self.held().clear();
    }

    /// How many warm connections wait to be taken.
    fn waiting(&self) -> usize {
        self.held().len()
    }

    /// A warm connection to `uri`'s host that is still open, if any.
    fn take(&self, uri: &http::Uri) -> Option<Stream> {
        let mut held = self.held();
        while let Some(index) = held.iter().position(|w| {
            w.scheme.as_ref() == uri.scheme() && w.authority.as_ref() == uri.authority()
        }) {
            let warm = held.swap_remove(index);
            if warm.opened.elapsed() < POOL_IDLE_TIMEOUT && still_open(&warm.stream) {
                return Some(warm.stream);
            }
        }
        None
    }

    fn held(&self) -> std::sync::MutexGuard<'_, Vec<Warm>> {
        // The list stays whole whatever a holder did: no poisoning to mind.
        self.warm
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Whether the peer has not closed a connection that carried no request:
/// a peek that would block (nothing to read) or that sees bytes (TLS
/// session tickets) means open; end of stream or an error means closed.
fn still_open(stream: &Stream) -> bool {
    let tcp = match stream {
        MaybeHttpsStream::Http(io) => io.inner(),
        MaybeHttpsStream::Https(io) => io.inner().get_ref().0.inner().inner(),
    };
    let mut byte = [std::mem::MaybeUninit::<u8>::uninit()];
    match socket2::SockRef::from(tcp).peek(&mut byte) {
        Ok(read) => read > 0,
        Err(error) => error.kind() == std::io::ErrorKind::WouldBlock,
    }
}

impl Service<http::Uri> for WarmConnector {
    type Response = Stream;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Stream, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        match self.take(&uri) {
            Some(stream) => Box::pin(std::future::ready(Ok(stream))),
            None => Box::pin(self.inner.call(uri)),
        }
    }
}

/// rustls needs a process-wide crypto provider; the first caller installs it.
fn install_crypto_provider() {
    // Err means one is installed already, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Opens `prewarm` connections to `base_url` in the background (closing
/// any warm ones left from before), so the first requests do not pay for
/// TCP and TLS handshakes. Each connect is bounded; failures are logged at
/// debug and otherwise ignored: an unreachable upstream never holds sluice
/// back.
pub fn prewarm(upstream: &super::Upstream) {
    upstream.connector.clear();
    for _ in 0..upstream.prewarm {
        let open = upstream.connector.clone().open(upstream.base_uri.clone());
        let name = upstream.name.clone();
        #[expect(
            clippy::disallowed_methods,
            reason = "a warm-up connection; nothing is lost when it is cut at shutdown"
        )]
        tokio::spawn(async move {
            match tokio::time::timeout(PREWARM_TIMEOUT, open).await {
                Ok(Ok(())) => tracing::debug!(upstream = %name, "prewarmed a connection"),
                Ok(Err(error)) => tracing::debug!(upstream = %name, %error, "prewarm failed"),
                Err(_) => tracing::debug!(upstream = %name, "prewarm timed out"),
            }
        });
    }
}

/// Warms `upstream`'s pool again each time its breaker closes after an
/// outage (the connections it had are gone by then). Runs on the worker's
/// runtime while the upstream is in use (a reload may replace it).
pub fn rewarm_on_recovery(upstream: &std::sync::Arc<super::Upstream>) {
    if upstream.prewarm == 0 {
        return;
    }
    let mut recoveries = upstream.health.recoveries();
    let upstream = std::sync::Arc::downgrade(upstream);
    #[expect(
        clippy::disallowed_methods,
        reason = "re-warms pools after an outage; nothing is lost when it is cut at shutdown"
    )]
    tokio::spawn(async move {
        while recoveries.changed().await.is_ok() {
            let Some(upstream) = upstream.upgrade() else {
                return;
            };
            tracing::debug!(upstream = %upstream.name, "upstream recovered: warming its pool again");
            prewarm(&upstream);
        }
    });
}
