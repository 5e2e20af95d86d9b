//! What happened to a request, carried up the stack in the response's
//! extensions and written as `x-sluice-*` headers by the edge.

use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue, Response};

pub static X_SLUICE_CACHE: HeaderName = HeaderName::from_static("x-sluice-cache");
pub static X_SLUICE_CACHE_TIER: HeaderName = HeaderName::from_static("x-sluice-cache-tier");
pub static X_SLUICE_UPSTREAM: HeaderName = HeaderName::from_static("x-sluice-upstream");
pub static X_SLUICE_ATTEMPTS: HeaderName = HeaderName::from_static("x-sluice-attempts");
pub static X_SLUICE_PROMPT_TOKENS_ORIGINAL: HeaderName =
    HeaderName::from_static("x-sluice-prompt-tokens-original");
pub static X_SLUICE_PROMPT_TOKENS_SENT: HeaderName =
    HeaderName::from_static("x-sluice-prompt-tokens-sent");

/// How the cache answered a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheOutcome {
    /// Served from a stored answer.
    Hit,
    /// Looked up, not found, sent upstream (and recorded when storable).
    Miss,
    /// Shared with an identical request in flight.
    Coalesced,
    /// Not looked up (not cacheable, or the request asked not to).
    Bypass,
}

impl CacheOutcome {
    /// The `x-sluice-cache` value and metrics label.
    pub fn as_str(self) -> &'static str {
        match self {
            CacheOutcome::Hit => "hit",
            CacheOutcome::Miss => "miss",
            CacheOutcome::Coalesced => "coalesced",
            CacheOutcome::Bypass => "bypass",
        }
    }
}

/// Prompt tokens before and after pruning and compression.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PromptTokens {
    pub original: u64,
    pub sent: u64,
}

impl PromptTokens {
    /// Sets `x-sluice-prompt-tokens-original` and `-sent`.
    pub fn set_headers(self, headers: &mut HeaderMap) {
        headers.insert(
            X_SLUICE_PROMPT_TOKENS_ORIGINAL.clone(),
            HeaderValue::from(self.original),
        );
        headers.insert(
            X_SLUICE_PROMPT_TOKENS_SENT.clone(),
            HeaderValue::from(self.sent),
        );
    }

    /// The counts an answer carries in its headers, if it does (what a
    /// client of sluice reads).
    pub fn from_headers(headers: &HeaderMap) -> Option<PromptTokens> {
        let read = |name: &HeaderName| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())
        };
        Some(PromptTokens {
            original: read(&X_SLUICE_PROMPT_TOKENS_ORIGINAL)?,
            sent: read(&X_SLUICE_PROMPT_TOKENS_SENT)?,
        })
    }
}

/// What sluice did with a request, filled in by the layers on the answer's
/// way up. Absent fields: that layer did not act (or is off).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    pub cache: Option<CacheOutcome>,
    /// The tier a hit came from (`memory`, `redis`).
    pub cache_tier: Option<&'static str>,
    /// The upstream that answered, as `x-sluice-upstream` shows it.
    pub upstream: Option<HeaderValue>,
    /// Upstream attempts made (0 for answers sluice made itself).
    pub attempts: Option<u32>,
    pub prompt_tokens: Option<PromptTokens>,
    /// How long the request waited for its session's turn.
    pub session_wait: Option<Duration>,
}

impl Outcome {
    /// The outcome in `response`'s extensions, put there if it was not.
    pub fn of<B>(response: &mut Response<B>) -> &mut Outcome {
        response.extensions_mut().get_or_insert_default::<Outcome>()
    }

    /// The outcome `response` carries, if a layer left one.
    pub fn get<B>(response: &Response<B>) -> Option<&Outcome> {
        response.extensions().get::<Outcome>()
    }

    /// The `x-sluice-*` answer headers: the one place they are written.
    pub fn write_headers(&self, headers: &mut HeaderMap) {
        if let Some(cache) = self.cache {
            headers.insert(
                X_SLUICE_CACHE.clone(),
                HeaderValue::from_static(cache.as_str()),
            );
        }
        if let Some(tier) = self.cache_tier {
            headers.insert(X_SLUICE_CACHE_TIER.clone(), HeaderValue::from_static(tier));
        }
        if let Some(upstream) = &self.upstream {
            headers.insert(X_SLUICE_UPSTREAM.clone(), upstream.clone());
        }
        if let Some(attempts) = self.attempts {
            headers.insert(X_SLUICE_ATTEMPTS.clone(), HeaderValue::from(attempts));
        }
        if let Some(prompt) = self.prompt_tokens {
            prompt.set_headers(headers);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip() {
        let mut headers = HeaderMap::new();
        let counts = PromptTokens {
            original: 52_000,
            sent: 3_990,
        };
        counts.set_headers(&mut headers);
        assert_eq!(headers[&X_SLUICE_PROMPT_TOKENS_ORIGINAL], "52000");
        assert_eq!(PromptTokens::from_headers(&headers), Some(counts));
        assert_eq!(PromptTokens::from_headers(&HeaderMap::new()), None);
    }

    #[test]
    fn every_field_is_written_and_absent_ones_are_not() {
        let mut headers = HeaderMap::new();
        Outcome::default().write_headers(&mut headers);
        assert!(headers.is_empty());
        Outcome {
            cache: Some(CacheOutcome::Coalesced),
            cache_tier: Some("redis"),
            upstream: Some(HeaderValue::from_static("primary")),
            attempts: Some(2),
            prompt_tokens: Some(PromptTokens {
                original: 10,
                sent: 7,
            }),
            session_wait: None,
        }
        .write_headers(&mut headers);
        assert_eq!(headers[&X_SLUICE_CACHE], "coalesced");
        assert_eq!(headers[&X_SLUICE_CACHE_TIER], "redis");
        assert_eq!(headers[&X_SLUICE_UPSTREAM], "primary");
        assert_eq!(headers[&X_SLUICE_ATTEMPTS], "2");
        assert_eq!(headers[&X_SLUICE_PROMPT_TOKENS_SENT], "7");
    }
}
