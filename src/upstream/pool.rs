//! One shared HTTP client per upstream, and the pre-warming of its pool.
//!
//! The client is hyper's pooled client over a rustls connector: keep-alive
//! pool, TCP_NODELAY and keep-alive probes, a connect timeout, the system's
//! trusted roots, and HTTP/2 when a TLS upstream offers it (ALPN). It does
//! nothing sluice does not ask for: no redirects followed, no retries of its
//! own, no proxy lookup, no URL re-parsing per request.

use std::time::Duration;

use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::body::{self, Body};
use crate::config::UpstreamConfig;

/// The pooled client of one upstream.
pub type HttpClient = Client<HttpsConnector<HttpConnector>, Body>;

/// How long an idle pooled connection is kept before it is closed.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// TCP keep-alive probes on pooled connections, so dead peers are noticed.
const TCP_KEEPALIVE: Duration = Duration::from_secs(30);
/// Bound on one pre-warming request, so a silent upstream cannot hold it.
const PREWARM_TIMEOUT: Duration = Duration::from_secs(30);

/// Builds the client for one upstream.
pub fn client(config: &UpstreamConfig) -> Result<HttpClient, std::io::Error> {
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
    Ok(Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(config.pool_max_idle)
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .build(https))
}

/// rustls needs a process-wide crypto provider; the first caller installs it.
fn install_crypto_provider() {
    // Err means one is installed already, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Opens `prewarm` connections to `base_url` in the background, so the first
/// requests do not pay for TCP and TLS handshakes. Each attempt is bounded;
/// failures are logged at debug and otherwise ignored: an unreachable
/// upstream never holds sluice back.
pub fn prewarm(upstream: &super::Upstream) {
    for _ in 0..upstream.prewarm {
        let client = upstream.client.clone();
        let uri = upstream.base_uri.clone();
        let name = upstream.name.clone();
        #[expect(
            clippy::disallowed_methods,
            reason = "a warm-up connection; nothing is lost when it is cut at shutdown"
        )]
        tokio::spawn(async move {
            // A HEAD of the base URL opens (and returns to the pool) one
            // connection; concurrent ones open several.
            let request = http::Request::head(uri).body(body::empty());
            let Ok(request) = request else { return };
            match tokio::time::timeout(PREWARM_TIMEOUT, client.request(request)).await {
                Ok(Ok(response)) => {
                    tracing::debug!(upstream = %name, status = response.status().as_u16(), "prewarmed a connection");
                }
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
