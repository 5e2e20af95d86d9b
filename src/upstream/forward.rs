//! The rules of forwarding: which headers travel, where a request goes, and
//! what a failed send means.
//!
//! The method, path (after `/v1`), query, headers and body go upstream as the
//! client sent them, less hop-by-hop headers, `Host` and sluice's own
//! `x-sluice-*` headers; with an upstream key configured, `Authorization` is
//! replaced by it. The upstream's status, headers and body come back as they
//! are, with `x-sluice-upstream` and `x-sluice-attempts` added and the
//! upstream's `x-request-id` renamed `x-upstream-request-id`.

use http::header::{self, HeaderMap, HeaderName};

use super::retry::Reason;
use super::{Upstream, UpstreamError};
use crate::body::BoxError;
use crate::edge::body_limit::is_length_limit_error;
use crate::observe::UPSTREAM_ERRORS_TOTAL;

pub use crate::context::{X_SLUICE_ATTEMPTS, X_SLUICE_UPSTREAM};
/// The upstream's own request id, kept under this name because
/// `x-request-id` on the answer is the client's (or sluice's) id.
pub static X_UPSTREAM_REQUEST_ID: HeaderName = HeaderName::from_static("x-upstream-request-id");

/// Headers that belong to one connection, never forwarded (RFC 9110 §7.6.1).
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// `{base_url}{path after /v1}{?query}`; a path that leaves `/v1/` is
/// refused here too (ingress refuses it first), so it can never be sent.
pub(super) fn upstream_uri(
    upstream: &Upstream,
    uri: &http::Uri,
) -> Result<http::Uri, UpstreamError> {
    let joined = crate::openai::path::join(&upstream.base_path, uri)
        .map_err(|outside| UpstreamError::PathOutside { path: outside.path })?;
    http::Uri::builder()
        .scheme(upstream.scheme.clone())
        .authority(upstream.authority.clone())
        .path_and_query(joined)
        .build()
        .map_err(|e| UpstreamError::Failed {
            upstream: upstream.name.clone(),
            reason: format!("cannot build the upstream URL: {e}"),
        })
}

/// Removes what must not travel upstream: hop-by-hop headers (and those the
/// `Connection` header names), `Host` (the upstream's is set from its URL),
/// `Expect`, and sluice's own `x-sluice-*` request headers.
pub(super) fn strip_request_headers(headers: &mut HeaderMap) {
    strip(headers, |name| {
        name == header::HOST || name == header::EXPECT || name.as_str().starts_with("x-sluice-")
    });
}

pub(super) fn strip_response_headers(headers: &mut HeaderMap) {
    strip(headers, |_| false);
    if let Some(id) = headers.remove(&crate::edge::request_id::X_REQUEST_ID) {
        headers.insert(X_UPSTREAM_REQUEST_ID.clone(), id);
    }
}

/// Removes the hop-by-hop headers (those `Connection` names too) and those
/// `also` picks. One pass over the names present, and a removal only for
/// those found: most requests carry none, and a lookup per known name
/// would cost a hash each.
fn strip(headers: &mut HeaderMap, also: impl Fn(&HeaderName) -> bool) {
    let mut doomed: Vec<HeaderName> = Vec::new();
    for name in headers.keys() {
        if HOP_BY_HOP.contains(name) || also(name) {
            doomed.push(name.clone());
        }
    }
    if doomed.contains(&header::CONNECTION) {
        doomed.extend(
            headers
                .get_all(header::CONNECTION)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok()),
        );
    }
    for name in doomed {
        headers.remove(name);
    }
}

/// Turns a failed send into sluice's error, says whether another try could
/// help, and counts it. Everything but an oversized client body failed before
/// the upstream answered: a connection refused, or one that broke first.
pub(super) fn classify(
    upstream: &Upstream,
    error: &hyper_util::client::legacy::Error,
    body_limit: u64,
) -> (UpstreamError, Option<Reason>) {
    let name = || upstream.name.clone();
    let (kind, error, reason) = if is_length_limit_error(error) {
        (
            "request_body",
            UpstreamError::RequestBodyTooLarge { limit: body_limit },
            None,
        )
    } else if let Some(timed_out) = find::<crate::ingress::BodyTimedOut>(error) {
        (
            "request_body",
            UpstreamError::RequestBodyTimeout {
                after: timed_out.after,
            },
            None,
        )
    } else if find::<ClientBodyError>(error).is_some() {
        // The client's streamed body broke (cut short, bad chunking): its
        // fault, not the upstream's; neither retried nor held against the
        // upstream's health.
        (
            "request_body",
            UpstreamError::RequestBody {
                reason: root_cause(error),
            },
            None,
        )
    } else if error.is_connect() {
        (
            "connect",
            UpstreamError::Connect {
                upstream: name(),
                reason: root_cause(error),
            },
            Some(Reason::Connect),
        )
    } else {
        (
            "other",
            UpstreamError::Failed {
                upstream: name(),
                reason: root_cause(error),
            },
            Some(Reason::Reset),
        )
    };
    count_error(upstream, kind);
    (error, reason)
}

/// An error reading the client's body while it streams to the upstream,
/// told apart from the upstream's own failures by this wrapper.
#[derive(Debug)]
pub(super) struct ClientBodyError(pub(super) BoxError);

impl std::fmt::Display for ClientBodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "reading the client's request body: {}", self.0)
    }
}

impl std::error::Error for ClientBodyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(self.0.as_ref())
    }
}

/// `error`, or the first of its causes, that is a `T`.
fn find<'a, T: std::error::Error + 'static>(
    error: &'a (dyn std::error::Error + 'static),
) -> Option<&'a T> {
    let mut current = Some(error);
    while let Some(e) = current {
        if let Some(found) = e.downcast_ref::<T>() {
            return Some(found);
        }
        current = e.source();
    }
    None
}

pub(super) fn count_error(upstream: &Upstream, kind: &'static str) {
    metrics::counter!(UPSTREAM_ERRORS_TOTAL, "upstream" => upstream.label.clone(), "kind" => kind)
        .increment(1);
}

pub(super) fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut current = error;
    while let Some(next) = current.source() {
        current = next;
    }
    current.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn url(base: &str, uri: &str) -> String {
        let mut config = crate::config::Config::default();
        config.upstreams[0].base_url = base.to_owned();
        let upstreams =
            super::super::Upstreams::from_config(&config).unwrap_or_else(|e| panic!("{e}"));
        let upstream = upstreams
            .first(None, std::time::Instant::now())
            .unwrap_or_else(|e| panic!("{e}"));
        let uri: http::Uri = uri.parse().unwrap_or_default();
        upstream_uri(&upstream, &uri)
            .unwrap_or_else(|e| panic!("{e}"))
            .to_string()
    }

    #[test]
    fn url_keeps_path_after_v1_and_query() {
        assert_eq!(
            url(
                "https://api.openai.com/v1",
                "/v1/chat/completions?x=1&y=%20z"
            ),
            "https://api.openai.com/v1/chat/completions?x=1&y=%20z"
        );
        assert_eq!(
            url("http://127.0.0.1:9000/openai/deployments/x/", "/v1/models"),
            "http://127.0.0.1:9000/openai/deployments/x/models"
        );
        assert_eq!(
            url("http://h:1/v1", "/v1/files/file-1%2Fx"),
            "http://h:1/v1/files/file-1%2Fx"
        );
        assert_eq!(url("http://h:1", "/v1/models"), "http://h:1/models");
    }

    #[test]
    fn request_header_rules() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("authorization", "Bearer sk-client"),
            ("connection", "keep-alive, x-private"),
            ("x-private", "1"),
            ("keep-alive", "timeout=5"),
            ("transfer-encoding", "chunked"),
            ("host", "127.0.0.1:8080"),
            ("x-sluice-cache-ttl", "60"),
            ("x-sluice-prune", "on"),
            ("x-session-id", "s1"),
            ("openai-organization", "org-1"),
            ("content-type", "application/json"),
        ] {
            h.append(k, HeaderValue::from_static(v));
        }
        strip_request_headers(&mut h);
        let mut kept: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        kept.sort_unstable();
        assert_eq!(
            kept,
            [
                "authorization",
                "content-type",
                "openai-organization",
                "x-session-id"
            ]
        );
        assert_eq!(h["authorization"], "Bearer sk-client");
    }

    #[test]
    fn response_keeps_upstream_request_id_under_its_own_name() {
        let mut h = HeaderMap::new();
        h.insert("x-request-id", HeaderValue::from_static("req_up"));
        h.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        h.insert(
            "x-ratelimit-remaining-requests",
            HeaderValue::from_static("99"),
        );
        strip_response_headers(&mut h);
        assert!(h.get("x-request-id").is_none());
        assert!(h.get("transfer-encoding").is_none());
        assert_eq!(h["x-upstream-request-id"], "req_up");
        assert_eq!(h["x-ratelimit-remaining-requests"], "99");
    }
}
