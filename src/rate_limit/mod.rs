//! Per-client rate limits: requests and tokens per minute.
//!
//! Each client identity ([`crate::context::Identity`]) may send
//! `requests_per_minute`
//! requests and use `tokens_per_minute` tokens a minute, with bursts up to a
//! whole minute's allowance (GCRA). A request's tokens are its prompt as
//! counted by sluice plus the completion it may ask for (`max_tokens` and
//! the like, times `n`), reserved before it is sent and settled with the
//! upstream's reported usage when the answer is done: cache hits and failed
//! requests give their tokens back, and a request without a completion
//! bound pays for what it used afterwards.
//!
//! Over a limit: 429 `rate_limit_error` with `Retry-After` and
//! `retry-after-ms`. Every answer carries OpenAI's `x-ratelimit-limit-*`,
//! `x-ratelimit-remaining-*` and `x-ratelimit-reset-*` headers.
//!
//! With a Redis URL the limits are shared by every replica (one script call
//! per request, bounded by the Redis timeout); while Redis is slow or down
//! this process's own limiter decides, so requests never fail or wait on
//! Redis (counted in `sluice_rate_limit_redis_fallbacks_total`).

pub mod local;
mod service;
pub mod shared;

pub use service::*;

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue};

use crate::context::Identity;
use crate::openai::ApiRequest;
use crate::tokens::Counter;

pub use local::Local;
pub use shared::Shared;

pub const RATE_LIMITED_TOTAL: &str = "sluice_rate_limited_total";
pub const REDIS_FALLBACKS_TOTAL: &str = "sluice_rate_limit_redis_fallbacks_total";

pub use crate::error::{Denied, Kind, RateLimitError, Verdict, Window};

/// The limits of one config: this process's limiter and, with Redis, the
/// shared one.
pub struct Limits {
    tokens_per_minute: Option<u64>,
    local: Local,
    shared: Option<Shared>,
    counter: Arc<Counter>,
}

/// Where a request's share was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Local,
    Shared,
}

impl Limits {
    async fn take(&self, client: &Identity, cost: u64) -> (Verdict, Backend) {
        if let Some(shared) = &self.shared {
            match shared.take(client, cost).await {
                Ok(verdict) => return (verdict, Backend::Shared),
                Err(error) => {
                    metrics::counter!(REDIS_FALLBACKS_TOTAL).increment(1);
                    tracing::debug!(%error, "shared rate limit unavailable, using this process's");
                }
            }
        }
        (self.local.take(client, cost), Backend::Local)
    }
}

/// The most completion tokens the request asks for (`max_tokens`,
/// `max_completion_tokens` or `max_output_tokens`, times `n`); 0 when
/// unbounded (settled with the usage afterwards).
fn completion_bound(api: &ApiRequest) -> u64 {
    let bound = ["max_completion_tokens", "max_tokens", "max_output_tokens"]
        .iter()
        .find_map(|key| api.get::<u64>(key).and_then(Result::ok))
        .unwrap_or(0);
    let n = api
        .get::<u64>("n")
        .and_then(Result::ok)
        .unwrap_or(1)
        .clamp(1, 128);
    bound.saturating_mul(n)
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::Requests => "requests",
            Kind::Tokens => "tokens",
            Kind::TooLarge { .. } => "too_large",
        }
    }
}

fn message(verdict: &Verdict, denied: Denied) -> String {
    let wait = reset_text(denied.retry_after);
    match denied.kind {
        Kind::Requests => format!(
            "Rate limit reached for requests per minute (limit {}). Please try again in {wait}.",
            verdict.requests.map_or(0, |w| w.limit)
        ),
        Kind::Tokens => format!(
            "Rate limit reached for tokens per minute (limit {}, remaining {}). Please try again in {wait}.",
            verdict.tokens.map_or(0, |w| w.limit),
            verdict.tokens.map_or(0, |w| w.remaining)
        ),
        Kind::TooLarge { requested } => format!(
            "Request too large for the tokens per minute limit: limit {}, requested {requested} \
             (prompt plus max_tokens). Shorten the prompt or lower max_tokens.",
            verdict.tokens.map_or(0, |w| w.limit)
        ),
    }
}

static LIMIT_REQUESTS: HeaderName = HeaderName::from_static("x-ratelimit-limit-requests");
static LIMIT_TOKENS: HeaderName = HeaderName::from_static("x-ratelimit-limit-tokens");
static REMAINING_REQUESTS: HeaderName = HeaderName::from_static("x-ratelimit-remaining-requests");
static REMAINING_TOKENS: HeaderName = HeaderName::from_static("x-ratelimit-remaining-tokens");
static RESET_REQUESTS: HeaderName = HeaderName::from_static("x-ratelimit-reset-requests");
static RESET_TOKENS: HeaderName = HeaderName::from_static("x-ratelimit-reset-tokens");
static RETRY_AFTER_MS: HeaderName = HeaderName::from_static("retry-after-ms");

/// OpenAI's rate limit headers for `verdict` (and `retry-after-ms` when
/// refused).
fn verdict_headers(verdict: &Verdict) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (window, names) in [
        (
            verdict.requests,
            [&LIMIT_REQUESTS, &REMAINING_REQUESTS, &RESET_REQUESTS],
        ),
        (
            verdict.tokens,
            [&LIMIT_TOKENS, &REMAINING_TOKENS, &RESET_TOKENS],
        ),
    ] {
        let Some(window) = window else { continue };
        let [limit, remaining, reset] = names;
        headers.insert(limit.clone(), HeaderValue::from(window.limit));
        headers.insert(remaining.clone(), HeaderValue::from(window.remaining));
        if let Ok(value) = HeaderValue::from_str(&reset_text(window.reset)) {
            headers.insert(reset.clone(), value);
        }
    }
    if let Some(denied) = verdict.denied
        && !matches!(denied.kind, Kind::TooLarge { .. })
    {
        let ms = denied.retry_after.as_millis().max(1);
        headers.insert(
            RETRY_AFTER_MS.clone(),
            HeaderValue::from(u64::try_from(ms).unwrap_or(u64::MAX)),
        );
    }
    headers
}

/// A duration as OpenAI writes resets: `20ms`, `1.5s`, `6m0s`.
fn reset_text(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let secs = d.as_secs();
    if secs < 60 {
        let text = format!("{:.3}", d.as_secs_f64());
        let text = text.trim_end_matches('0').trim_end_matches('.');
        return format!("{text}s");
    }
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    if h > 0 {
        format!("{h}h{m}m{s}s")
    } else {
        format!("{m}m{s}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resets_are_written_like_openai() {
        assert_eq!(reset_text(Duration::from_millis(20)), "20ms");
        assert_eq!(reset_text(Duration::from_millis(1500)), "1.5s");
        assert_eq!(reset_text(Duration::from_secs(1)), "1s");
        assert_eq!(reset_text(Duration::from_secs(360)), "6m0s");
        assert_eq!(reset_text(Duration::from_secs(3725)), "1h2m5s");
    }

    #[test]
    fn headers_name_each_limit_set() {
        let verdict = Verdict {
            requests: Some(Window {
                limit: 60,
                remaining: 59,
                reset: Duration::from_secs(1),
            }),
            tokens: None,
            denied: None,
        };
        let h = verdict_headers(&verdict);
        assert_eq!(h["x-ratelimit-limit-requests"], "60");
        assert_eq!(h["x-ratelimit-remaining-requests"], "59");
        assert_eq!(h["x-ratelimit-reset-requests"], "1s");
        assert!(!h.contains_key("x-ratelimit-limit-tokens"));
        assert!(!h.contains_key("retry-after-ms"));
    }

    #[test]
    fn completion_bound_reads_each_api_s_name_and_n() {
        let parse = |body: &'static str| {
            ApiRequest::parse(
                crate::openai::Endpoint::ChatCompletions,
                bytes::Bytes::from_static(body.as_bytes()),
            )
            .unwrap_or_else(|e| panic!("{e}"))
        };
        assert_eq!(completion_bound(&parse(r#"{"max_tokens":100}"#)), 100);
        assert_eq!(
            completion_bound(&parse(r#"{"max_completion_tokens":50,"n":3}"#)),
            150
        );
        assert_eq!(completion_bound(&parse(r#"{"max_output_tokens":7}"#)), 7);
        assert_eq!(completion_bound(&parse(r#"{"messages":[]}"#)), 0);
    }
}
