//! One shared HTTP client per upstream, and the pre-warming of its pool.

use std::time::Duration;

use crate::config::UpstreamConfig;

/// How long an idle pooled connection is kept before it is closed.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// Bound on one pre-warming request, so a silent upstream cannot hold it.
const PREWARM_TIMEOUT: Duration = Duration::from_secs(30);
/// TCP keep-alive probes on pooled connections, so dead peers are noticed.
const TCP_KEEPALIVE: Duration = Duration::from_secs(30);

/// The client for one upstream: keep-alive pool of `pool_max_idle`
/// connections, TCP_NODELAY, `connect_timeout`, HTTP/2 when the upstream
/// offers it (ALPN), redirects passed back to the client rather than followed.
pub fn client(config: &UpstreamConfig) -> Result<reqwest::Client, reqwest::Error> {
    install_crypto_provider();
    reqwest::Client::builder()
        .pool_max_idle_per_host(config.pool_max_idle)
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .tcp_nodelay(true)
        .tcp_keepalive(TCP_KEEPALIVE)
        .connect_timeout(config.connect_timeout)
        .redirect(reqwest::redirect::Policy::none())
        .referer(false)
        .build()
}

/// rustls needs a process-wide crypto provider; the first caller installs it.
fn install_crypto_provider() {
    // Err means one is installed already, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Opens `prewarm` connections to `base_url` in the background, so the first
/// requests do not pay for TCP and TLS handshakes. Each attempt is bounded by
/// the connect timeout; failures are logged at debug and otherwise ignored:
/// an unreachable upstream never holds sluice back.
pub fn prewarm(upstream: &super::Upstream) {
    if upstream.prewarm == 0 {
        return;
    }
    for _ in 0..upstream.prewarm {
        let client = upstream.client.clone();
        let url = upstream.base_url.clone();
        let name = upstream.name.clone();
        tokio::spawn(async move {
            // A HEAD of the base URL opens (and returns to the pool) one
            // connection; concurrent ones open several.
            match client.head(&url).timeout(PREWARM_TIMEOUT).send().await {
                Ok(response) => {
                    tracing::debug!(upstream = %name, status = response.status().as_u16(), "prewarmed a connection");
                }
                Err(error) => {
                    tracing::debug!(upstream = %name, %error, "prewarm failed");
                }
            }
        });
    }
}
