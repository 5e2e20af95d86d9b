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
/// The upstream's `timeout` bounds the whole exchange, answer body included.
pub async fn forward(
    upstream: &Upstream,
    req: Request<Body>,
    body_limit: u64,
) -> Result<Response<Body>, Error> {
    let (mut parts, body) = req.into_parts();
    parts.uri = upstream_uri(upstream, &parts.uri)?;
    // The pooled client speaks HTTP/2 on its own when the upstream offers it.
    parts.version = http::Version::HTTP_11;
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
            body::full(api.to_bytes())
        }
        None => body,
    };

    let started = Instant::now();
    let mut deadline = Box::pin(tokio::time::sleep(upstream.timeout));
    let sent = tokio::select! {
        biased;
        sent = upstream.client.request(Request::from_parts(parts, body)) => sent,
        () = deadline.as_mut() => {
            count_error(upstream, "timeout");
            return Err(UpstreamError::Timeout { upstream: upstream.name.clone() }.into());
        }
    };
    let answer = match sent {
        Ok(answer) => answer,
        Err(error) => return Err(classify(upstream, &error, body_limit)),
    };
    metrics::histogram!(UPSTREAM_DURATION, "upstream" => upstream.label.clone())
        .record(started.elapsed().as_secs_f64());
    metrics::counter!(UPSTREAM_REQUESTS_TOTAL, "upstream" => upstream.label.clone(), "status" => status_label(answer.status()))
        .increment(1);

    let (mut parts, body) = answer.into_parts();
    strip_response_headers(&mut parts.headers);
    parts
        .headers
        .insert(X_SLUICE_UPSTREAM.clone(), upstream.name_header.clone());
    parts
        .headers
        .insert(X_SLUICE_ATTEMPTS.clone(), HeaderValue::from_static("1"));
    let body = Deadline {
        inner: body,
        deadline,
    };
    Ok(Response::from_parts(parts, body::boxed(body)))
}

/// `{base_url}{path after /v1}{?query}`.
fn upstream_uri(upstream: &Upstream, uri: &http::Uri) -> Result<http::Uri, Error> {
    let path = uri.path();
    let rest = path.strip_prefix("/v1").unwrap_or(path);
    let query = uri.query();
    let mut joined = String::with_capacity(
        upstream.base_path.len() + rest.len() + query.map_or(0, |q| q.len() + 1),
    );
    joined.push_str(&upstream.base_path);
    joined.push_str(rest);
    if joined.is_empty() {
        joined.push('/');
    }
    if let Some(query) = query {
        joined.push('?');
        joined.push_str(query);
    }
    http::Uri::builder()
        .scheme(upstream.scheme.clone())
        .authority(upstream.authority.clone())
        .path_and_query(joined)
        .build()
        .map_err(|e| {
            UpstreamError::Failed {
                upstream: upstream.name.clone(),
                reason: format!("cannot build the upstream URL: {e}"),
            }
            .into()
        })
}

pin_project_lite::pin_project! {
    /// The upstream's answer body, failing once the upstream's deadline has
    /// passed (a stream that stalls past `timeout` ends instead of hanging).
    struct Deadline<B> {
        #[pin]
        inner: B,
        deadline: std::pin::Pin<Box<tokio::time::Sleep>>,
    }
}

impl<B> http_body::Body for Deadline<B>
where
    B: http_body::Body<Data = bytes::Bytes>,
    B::Error: Into<body::BoxError>,
{
    type Data = bytes::Bytes;
    type Error = body::BoxError;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, body::BoxError>>> {
        use std::future::Future;
        use std::task::Poll;
        let this = self.project();
        match this.inner.poll_frame(cx) {
            Poll::Ready(frame) => Poll::Ready(frame.map(|f| f.map_err(Into::into))),
            Poll::Pending => match this.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    Poll::Ready(Some(Err("upstream timeout passed mid-answer".into())))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
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
fn classify(
    upstream: &Upstream,
    error: &hyper_util::client::legacy::Error,
    body_limit: u64,
) -> Error {
    let name = || upstream.name.clone();
    let (kind, error) = if is_length_limit_error(error) {
        (
            "request_body",
            UpstreamError::RequestBodyTooLarge { limit: body_limit },
        )
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
    count_error(upstream, kind);
    error.into()
}

fn count_error(upstream: &Upstream, kind: &'static str) {
    metrics::counter!(UPSTREAM_ERRORS_TOTAL, "upstream" => upstream.label.clone(), "kind" => kind)
        .increment(1);
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

    fn url(base: &str, uri: &str) -> String {
        let mut config = crate::config::Config::default();
        config.upstreams[0].base_url = base.to_owned();
        let upstreams =
            super::super::Upstreams::from_config(&config).unwrap_or_else(|e| panic!("{e}"));
        let upstream = upstreams.for_model(None).unwrap_or_else(|e| panic!("{e}"));
        let uri: http::Uri = uri.parse().unwrap_or_default();
        upstream_uri(upstream, &uri)
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
