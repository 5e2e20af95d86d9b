//! `sluice healthcheck`: asks a running sluice whether it is up, for
//! container `HEALTHCHECK`s in images that have no curl:
//!
//! ```dockerfile
//! HEALTHCHECK CMD ["/usr/local/bin/sluice", "healthcheck"]
//! ```
//!
//! A GET of the URL (plain HTTP) must answer 2xx within [`TIMEOUT`],
//! connecting included. Anything else is a failure with a one-line reason.

use std::time::Duration;

use bytes::Bytes;
use http::Uri;
use http_body_util::Empty;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// The whole check, connecting included, must be done within this.
pub const TIMEOUT: Duration = Duration::from_secs(2);

/// GETs `url`: `Ok` on a 2xx answer, otherwise why not.
pub async fn check(url: &str) -> Result<(), String> {
    let uri: Uri = url
        .parse()
        .map_err(|e| format!("invalid URL {url:?}: {e}"))?;
    if uri.scheme_str() != Some("http") || uri.host().is_none() {
        return Err(format!(
            "invalid URL {url:?}: expected http://HOST[:PORT]/PATH"
        ));
    }
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(0)
        .build(connector);
    let request = http::Request::get(uri)
        .header(http::header::USER_AGENT, "sluice-healthcheck")
        .body(Empty::new())
        .map_err(|e| format!("{url}: {e}"))?;
    match tokio::time::timeout(TIMEOUT, client.request(request)).await {
        Err(_) => Err(format!("{url}: no answer within {}s", TIMEOUT.as_secs())),
        Ok(Err(error)) => Err(format!("{url}: {}", reason(&error))),
        Ok(Ok(response)) if response.status().is_success() => Ok(()),
        Ok(Ok(response)) => Err(format!("{url}: answered {}", response.status())),
    }
}

/// What went wrong with the connection, in a few words.
fn reason(error: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = error;
    while let Some(next) = cause.source() {
        cause = next;
    }
    match cause
        .downcast_ref::<std::io::Error>()
        .map(std::io::Error::kind)
    {
        Some(std::io::ErrorKind::ConnectionRefused) => "connection refused".to_owned(),
        Some(std::io::ErrorKind::TimedOut) => "connection timed out".to_owned(),
        _ => cause.to_string(),
    }
}
