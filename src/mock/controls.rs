//! Per-request behaviour chosen through `x-mock-*` request headers, which sluice forwards
//! like any other header. Timing controls override [`MockOptions`]; a fault replaces
//! the normal answer.
//!
//! ```text
//! x-mock-latency-ms: 250        wait 250 ms before the response head
//! x-mock-chunk-delay-ms: 20     wait 20 ms before each streamed content chunk
//! x-mock-chunks: 32             split streamed content into 32 chunks
//! x-mock-status: 429            answer 429 with an OpenAI error body ...
//! x-mock-retry-after: 3         ... and `Retry-After: 3`
//! ```

use std::time::Duration;

use http::{HeaderMap, HeaderValue, StatusCode};

use super::MockOptions;

pub const LATENCY_MS: &str = "x-mock-latency-ms";
pub const CHUNK_DELAY_MS: &str = "x-mock-chunk-delay-ms";
pub const CHUNKS: &str = "x-mock-chunks";
pub const STATUS: &str = "x-mock-status";
pub const RETRY_AFTER: &str = "x-mock-retry-after";

/// Upper bound on `x-mock-chunks`: a stream's events are prepared up front.
pub const MAX_CHUNKS: usize = 100_000;

/// How one request is to be answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Controls {
    /// Wait before the response head.
    pub latency: Duration,
    /// Wait before each streamed content chunk.
    pub chunk_delay: Duration,
    /// Content chunks per stream, at least 1.
    pub chunks: usize,
    /// Answer with this failure instead of the normal response.
    pub fault: Option<Fault>,
}

/// A failure the client asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Fault {
    /// An error status with OpenAI's error body, optionally with `Retry-After`.
    Status {
        status: StatusCode,
        retry_after: Option<HeaderValue>,
    },
}

/// A control header whose value could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ControlError {
    pub header: &'static str,
    pub value: String,
    pub expected: &'static str,
}

impl std::fmt::Display for ControlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "invalid {} header {:?}: expected {}",
            self.header, self.value, self.expected
        )
    }
}

impl Controls {
    /// The server-wide defaults of `opts`, overridden by any `x-mock-*` headers.
    pub(crate) fn from_headers(
        headers: &HeaderMap,
        opts: &MockOptions,
    ) -> Result<Self, ControlError> {
        let mut controls = Self {
            latency: opts.latency,
            chunk_delay: opts.chunk_delay,
            chunks: opts.chunks.clamp(1, MAX_CHUNKS),
            fault: None,
        };
        if let Some(ms) = number(headers, LATENCY_MS, "milliseconds as an integer")? {
            controls.latency = Duration::from_millis(ms);
        }
        if let Some(ms) = number(headers, CHUNK_DELAY_MS, "milliseconds as an integer")? {
            controls.chunk_delay = Duration::from_millis(ms);
        }
        const CHUNKS_EXPECTED: &str = "an integer from 1 to 100000";
        if let Some(n) = number(headers, CHUNKS, CHUNKS_EXPECTED)? {
            controls.chunks = usize::try_from(n)
                .ok()
                .filter(|n| (1..=MAX_CHUNKS).contains(n))
                .ok_or_else(|| invalid(headers, CHUNKS, CHUNKS_EXPECTED))?;
        }
        const STATUS_EXPECTED: &str = "an HTTP status from 400 to 599";
        if let Some(code) = number(headers, STATUS, STATUS_EXPECTED)? {
            let status = u16::try_from(code)
                .ok()
                .and_then(|c| StatusCode::from_u16(c).ok())
                .filter(|s| s.is_client_error() || s.is_server_error())
                .ok_or_else(|| invalid(headers, STATUS, STATUS_EXPECTED))?;
            let retry_after =
                number(headers, RETRY_AFTER, "seconds as an integer")?.map(HeaderValue::from);
            controls.fault = Some(Fault::Status {
                status,
                retry_after,
            });
        }
        Ok(controls)
    }
}

fn number(
    headers: &HeaderMap,
    name: &'static str,
    expected: &'static str,
) -> Result<Option<u64>, ControlError> {
    let Some(value) = headers.get(name) else {
        return Ok(None);
    };
    value
        .to_str()
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .map(Some)
        .ok_or_else(|| invalid(headers, name, expected))
}

fn invalid(headers: &HeaderMap, header: &'static str, expected: &'static str) -> ControlError {
    let value = headers
        .get(header)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .unwrap_or_default();
    ControlError {
        header,
        value,
        expected,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(pairs: &[(&'static str, &'static str)]) -> Result<Controls, ControlError> {
        let mut headers = HeaderMap::new();
        for (k, v) in pairs {
            headers.insert(*k, HeaderValue::from_static(v));
        }
        Controls::from_headers(&headers, &MockOptions::default())
    }

    #[test]
    fn defaults_come_from_options() {
        let opts = MockOptions {
            latency: Duration::from_millis(5),
            chunk_delay: Duration::from_millis(7),
            chunks: 3,
            record: false,
        };
        let c = Controls::from_headers(&HeaderMap::new(), &opts);
        assert_eq!(
            c,
            Ok(Controls {
                latency: Duration::from_millis(5),
                chunk_delay: Duration::from_millis(7),
                chunks: 3,
                fault: None,
            })
        );
    }

    #[test]
    fn headers_override_timing() {
        let c = parse(&[
            (LATENCY_MS, "250"),
            (CHUNK_DELAY_MS, " 20 "),
            (CHUNKS, "32"),
        ]);
        let c = c.ok();
        assert_eq!(
            c.as_ref().map(|c| c.latency),
            Some(Duration::from_millis(250))
        );
        assert_eq!(
            c.as_ref().map(|c| c.chunk_delay),
            Some(Duration::from_millis(20))
        );
        assert_eq!(c.as_ref().map(|c| c.chunks), Some(32));
    }

    #[test]
    fn status_fault_with_retry_after() {
        let c = parse(&[(STATUS, "429"), (RETRY_AFTER, "3")]);
        assert_eq!(
            c.map(|c| c.fault),
            Ok(Some(Fault::Status {
                status: StatusCode::TOO_MANY_REQUESTS,
                retry_after: Some(HeaderValue::from_static("3")),
            }))
        );
    }

    #[test]
    fn retry_after_alone_is_no_fault() {
        assert_eq!(parse(&[(RETRY_AFTER, "3")]).map(|c| c.fault), Ok(None));
    }

    #[test]
    fn bad_values_name_the_header() {
        for (name, value) in [
            (LATENCY_MS, "soon"),
            (CHUNKS, "0"),
            (CHUNKS, "100001"),
            (STATUS, "200"),
            (STATUS, "600"),
            (STATUS, "abc"),
        ] {
            let err = parse(&[(name, value)]).err();
            assert_eq!(
                err.as_ref().map(|e| e.header),
                Some(name),
                "{name}: {value}"
            );
            assert_eq!(err.map(|e| e.value), Some(value.to_owned()));
        }
    }
}
