//! Forwarding one request to an upstream and relaying its answer.
//!
//! The method, path (after `/v1`), query, headers and body go upstream as the
//! client sent them, less hop-by-hop headers, `Host` and sluice's own
//! `x-sluice-*` headers; with an upstream key configured, `Authorization` is
//! replaced by it. The upstream's status, headers and body come back as they
//! are, the body relayed frame by frame as it arrives, with
//! `x-sluice-upstream` and `x-sluice-attempts` added. Dropping the answer (a
//! client that went away) drops the upstream request.

use std::time::Instant;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response};

use super::{Upstream, UpstreamError};
use crate::body::{self, Body};
use crate::edge::body_limit::is_length_limit_error;
use crate::error::Error;
use crate::observe::{
    UPSTREAM_DURATION, UPSTREAM_ERRORS_TOTAL, UPSTREAM_REQUESTS_TOTAL, status_label,
};
use crate::openai::ApiRequest;

pub static X_SLUICE_UPSTREAM: HeaderName = HeaderName::from_static("x-sluice-upstream");
pub static X_SLUICE_ATTEMPTS: HeaderName = HeaderName::from_static("x-sluice-attempts");
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

/// Sends `req` to `upstream` and returns its answer, body still streaming.
pub async fn forward(
    upstream: &Upstream,
    req: Request<Body>,
    body_limit: u64,
) -> Result<Response<Body>, Error> {
    let (mut parts, body) = req.into_parts();
    let url = upstream_url(&upstream.base_url, &parts.uri);
    let api = parts.extensions.remove::<ApiRequest>();
    strip_request_headers(&mut parts.headers);
    if let Some(authorization) = &upstream.authorization {
        parts
            .headers
            .insert(header::AUTHORIZATION, authorization.clone());
    }
    let body = match &api {
        Some(api) => {
            // The body may have been rewritten: its length is the new one.
            parts.headers.remove(header::CONTENT_LENGTH);
            reqwest::Body::from(api.to_bytes())
        }
        None => reqwest::Body::wrap(body),
    };

    let started = Instant::now();
    let sent = upstream
        .client
        .request(parts.method, url)
        .headers(parts.headers)
        .timeout(upstream.timeout)
        .body(body)
        .send()
        .await;
    let answer = match sent {
        Ok(answer) => answer,
        Err(error) => return Err(classify(upstream, &error, body_limit)),
    };
    metrics::histogram!(UPSTREAM_DURATION, "upstream" => upstream.name.clone())
        .record(started.elapsed().as_secs_f64());
    metrics::counter!(UPSTREAM_REQUESTS_TOTAL, "upstream" => upstream.name.clone(), "status" => status_label(answer.status()))
        .increment(1);

    let answer: Response<reqwest::Body> = answer.into();
    let (mut parts, body) = answer.into_parts();
    strip_response_headers(&mut parts.headers);
    parts
        .headers
        .insert(X_SLUICE_UPSTREAM.clone(), upstream.name_header.clone());
    parts
        .headers
        .insert(X_SLUICE_ATTEMPTS.clone(), HeaderValue::from_static("1"));
    Ok(Response::from_parts(parts, body::boxed(body)))
}

/// `{base_url}{path after /v1}{?query}`.
fn upstream_url(base_url: &str, uri: &http::Uri) -> String {
    let path_and_query = uri.path_and_query().map_or("/", |pq| pq.as_str());
    let rest = path_and_query.strip_prefix("/v1").unwrap_or(path_and_query);
    let mut url = String::with_capacity(base_url.len() + rest.len());
    url.push_str(base_url);
    url.push_str(rest);
    url
}

/// Removes what must not travel upstream: hop-by-hop headers (and those the
/// `Connection` header names), `Host` (the upstream's is set from its URL),
/// `Expect`, and sluice's own `x-sluice-*` request headers.
fn strip_request_headers(headers: &mut HeaderMap) {
    strip_hop_by_hop(headers);
    headers.remove(header::HOST);
    headers.remove(header::EXPECT);
    let sluice: Vec<HeaderName> = headers
        .keys()
        .filter(|name| name.as_str().starts_with("x-sluice-"))
        .cloned()
        .collect();
    for name in sluice {
        headers.remove(name);
    }
}

fn strip_response_headers(headers: &mut HeaderMap) {
    strip_hop_by_hop(headers);
    if let Some(id) = headers.remove(&crate::edge::request_id::X_REQUEST_ID) {
        headers.insert(X_UPSTREAM_REQUEST_ID.clone(), id);
    }
}

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
}

/// Turns a failed send into sluice's error, and counts it.
fn classify(upstream: &Upstream, error: &reqwest::Error, body_limit: u64) -> Error {
    let name = || upstream.name.clone();
    let (kind, error) = if is_length_limit_error(error) {
        (
            "request_body",
            UpstreamError::RequestBodyTooLarge { limit: body_limit },
        )
    } else if error.is_timeout() {
        ("timeout", UpstreamError::Timeout { upstream: name() })
    } else if error.is_connect() {
        (
            "connect",
            UpstreamError::Connect {
                upstream: name(),
                reason: root_cause(error),
            },
        )
    } else {
        (
            "other",
            UpstreamError::Failed {
                upstream: name(),
                reason: root_cause(error),
            },
        )
    };
    metrics::counter!(UPSTREAM_ERRORS_TOTAL, "upstream" => upstream.name.clone(), "kind" => kind)
        .increment(1);
    error.into()
}

fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut current = error;
    while let Some(next) = current.source() {
        current = next;
    }
    current.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_keeps_path_after_v1_and_query() {
        let uri: http::Uri = "/v1/chat/completions?x=1&y=2".parse().unwrap_or_default();
        assert_eq!(
            upstream_url("https://api.openai.com/v1", &uri),
            "https://api.openai.com/v1/chat/completions?x=1&y=2"
        );
        let uri: http::Uri = "/v1/models".parse().unwrap_or_default();
        assert_eq!(
            upstream_url("http://127.0.0.1:9000/openai/deployments/x", &uri),
            "http://127.0.0.1:9000/openai/deployments/x/models"
        );
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
