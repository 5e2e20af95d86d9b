//! Per-request behaviour chosen through `x-mock-*` request headers, which sluice forwards
//! like any other header. Timing controls override [`MockOptions`]; a fault replaces or
//! breaks the normal answer. A header the request does not carry falls back to the
//! server-wide default in [`MockOptions::controls`] (`--control` on the command line).
//!
//! ```text
//! x-mock-latency-ms: 250          wait 250 ms before the response head
//! x-mock-chunk-delay-ms: 20       wait 20 ms before each streamed content chunk
//! x-mock-chunks: 32               split streamed content into 32 chunks
//!
//! x-mock-status: 429              answer 429 with an OpenAI error body ...
//! x-mock-retry-after: 3           ... and `Retry-After: 3` (passed as-is: seconds or a date)
//! x-mock-retry-after-ms: 1500     ... and `retry-after-ms: 1500`
//! x-mock-fault: drop              read the request, then close the connection unanswered
//! x-mock-fault: hang              never send the response head
//! x-mock-fail-after-chunks: 2     stream the head and 2 events, then cut the connection
//! x-mock-stall-after-chunks: 2    stream the head and 2 events, then send nothing more
//!
//! x-mock-fail-times: 3            the fault hits only the first 3 requests of its key ...
//! x-mock-fault-key: job-7         ... the key (default: a hash of method, path and body)
//! x-mock-fail-rate: 0.2           the fault hits a random 20% of requests
//! ```
//!
//! At most one of `x-mock-status`, `x-mock-fault`, `x-mock-fail-after-chunks` and
//! `x-mock-stall-after-chunks` chooses the fault; a request carrying any of them ignores
//! all four defaults. With `x-mock-fail-times` or `x-mock-fail-rate` but no fault, the
//! fault is `x-mock-status: 503`. The chunk faults only touch streamed answers
//! (`"stream": true`); other answers are sent whole. A value that cannot be used is a
//! 400 naming the header; `x-mock-*` headers the mock does not know are ignored.

use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};

use super::MockOptions;

pub const LATENCY_MS: &str = "x-mock-latency-ms";
pub const CHUNK_DELAY_MS: &str = "x-mock-chunk-delay-ms";
pub const CHUNKS: &str = "x-mock-chunks";
pub const STATUS: &str = "x-mock-status";
pub const RETRY_AFTER: &str = "x-mock-retry-after";
pub const RETRY_AFTER_MS: &str = "x-mock-retry-after-ms";
pub const FAULT: &str = "x-mock-fault";
pub const FAIL_AFTER_CHUNKS: &str = "x-mock-fail-after-chunks";
pub const STALL_AFTER_CHUNKS: &str = "x-mock-stall-after-chunks";
pub const FAIL_TIMES: &str = "x-mock-fail-times";
pub const FAIL_RATE: &str = "x-mock-fail-rate";
pub const FAULT_KEY: &str = "x-mock-fault-key";

/// Every control header the mock understands.
pub const NAMES: [&str; 12] = [
    LATENCY_MS,
    CHUNK_DELAY_MS,
    CHUNKS,
    STATUS,
    RETRY_AFTER,
    RETRY_AFTER_MS,
    FAULT,
    FAIL_AFTER_CHUNKS,
    STALL_AFTER_CHUNKS,
    FAIL_TIMES,
    FAIL_RATE,
    FAULT_KEY,
];

/// The headers that each choose a fault; one request has at most one of them.
const FAULT_CHOICES: [&str; 4] = [STATUS, FAULT, FAIL_AFTER_CHUNKS, STALL_AFTER_CHUNKS];

/// Upper bound on `x-mock-chunks`: a stream's events are prepared up front.
pub const MAX_CHUNKS: usize = 100_000;

/// How one request is to be answered.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Controls {
    /// Wait before the response head.
    pub latency: Duration,
    /// Wait before each streamed content chunk.
    pub chunk_delay: Duration,
    /// Content chunks per stream, at least 1.
    pub chunks: usize,
    /// The failure to inject, on the requests [`Controls::when`] selects.
    pub fault: Option<Fault>,
    /// Which requests get the fault.
    pub when: When,
}

/// A failure the client asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Fault {
    /// An error status with OpenAI's error body, optionally with `Retry-After` and
    /// `retry-after-ms`.
    Status {
        status: StatusCode,
        retry_after: Option<HeaderValue>,
        retry_after_ms: Option<HeaderValue>,
    },
    /// Close the connection without an answer.
    Drop,
    /// Never answer.
    Hang,
    /// Send this many stream events, then fail the body.
    FailAfterChunks(usize),
    /// Send this many stream events, then nothing more.
    StallAfterChunks(usize),
}

/// Which requests a fault applies to; all of them by default.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct When {
    /// Only the first this many requests of the fault key.
    pub times: Option<u64>,
    /// Only this random share of requests, from 0.0 to 1.0.
    pub rate: Option<f64>,
    /// The fault key chosen by the client; `None` keys by method, path and body.
    pub key: Option<HeaderValue>,
}

impl When {
    /// Some requests may be answered normally.
    fn is_conditional(&self) -> bool {
        self.times.is_some() || self.rate.is_some()
    }
}

/// A control that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    /// A control header whose value cannot be used.
    #[error("invalid {header} header {value:?}: expected {expected}")]
    Invalid {
        header: &'static str,
        value: String,
        expected: &'static str,
    },
    /// Two headers that each choose a fault.
    #[error("invalid {header} header: {other} already chooses the fault; give only one")]
    Conflict {
        header: &'static str,
        other: &'static str,
    },
    /// A server-wide control whose name is not one of [`NAMES`].
    #[error("unknown control header {name:?}, expected one of {}", NAMES.join(", "))]
    Unknown { name: String },
    /// A `--control` argument that is not `NAME:VALUE`.
    #[error("{arg:?} is not NAME:VALUE (e.g. 'x-mock-status: 503')")]
    Syntax { arg: String },
}

impl ControlError {
    /// The control header at fault, when known.
    pub fn header(&self) -> Option<&str> {
        match self {
            Self::Invalid { header, .. } | Self::Conflict { header, .. } => Some(header),
            Self::Unknown { name } => Some(name),
            Self::Syntax { .. } => None,
        }
    }
}

/// Parses one server-wide control given as `NAME:VALUE` (as `--control` takes it): the
/// name must be one of [`NAMES`], the value is checked with [`check_defaults`].
pub fn parse_control(arg: &str) -> Result<(HeaderName, HeaderValue), ControlError> {
    let syntax = || ControlError::Syntax {
        arg: arg.to_owned(),
    };
    let (name, value) = arg.split_once(':').ok_or_else(syntax)?;
    let name = name.trim().to_ascii_lowercase();
    if name.is_empty() {
        return Err(syntax());
    }
    let known = NAMES
        .into_iter()
        .find(|known| *known == name)
        .ok_or(ControlError::Unknown { name })?;
    let value = value.trim();
    let value = HeaderValue::from_str(value).map_err(|_| ControlError::Invalid {
        header: known,
        value: value.to_owned(),
        expected: "a value allowed in an HTTP header",
    })?;
    let mut one = HeaderMap::new();
    one.insert(HeaderName::from_static(known), value.clone());
    check_defaults(&one)?;
    Ok((HeaderName::from_static(known), value))
}

/// Checks server-wide defaults ([`MockOptions::controls`]): known names, usable values,
/// at most one fault.
pub fn check_defaults(controls: &HeaderMap) -> Result<(), ControlError> {
    if let Some(name) = controls.keys().find(|n| !NAMES.contains(&n.as_str())) {
        return Err(ControlError::Unknown {
            name: name.as_str().to_owned(),
        });
    }
    Controls::resolve(
        &Source::new(&HeaderMap::new(), controls),
        &MockOptions::default(),
    )
    .map(|_| ())
}

impl Controls {
    /// The server-wide defaults of `opts`, overridden by any `x-mock-*` headers.
    pub(crate) fn from_headers(
        headers: &HeaderMap,
        opts: &MockOptions,
    ) -> Result<Self, ControlError> {
        Self::resolve(&Source::new(headers, &opts.controls), opts)
    }

    fn resolve(src: &Source<'_>, opts: &MockOptions) -> Result<Self, ControlError> {
        let mut controls = Self {
            latency: opts.latency,
            chunk_delay: opts.chunk_delay,
            chunks: opts.chunks.clamp(1, MAX_CHUNKS),
            fault: None,
            when: When::default(),
        };
        if let Some(ms) = src.number(LATENCY_MS, "milliseconds as an integer")? {
            controls.latency = Duration::from_millis(ms);
        }
        if let Some(ms) = src.number(CHUNK_DELAY_MS, "milliseconds as an integer")? {
            controls.chunk_delay = Duration::from_millis(ms);
        }
        const CHUNKS_EXPECTED: &str = "an integer from 1 to 100000";
        if let Some(n) = src.number(CHUNKS, CHUNKS_EXPECTED)? {
            controls.chunks = usize::try_from(n)
                .ok()
                .filter(|n| (1..=MAX_CHUNKS).contains(n))
                .ok_or_else(|| src.invalid(CHUNKS, CHUNKS_EXPECTED))?;
        }

        controls.when = When {
            times: src.number(FAIL_TIMES, "a count as an integer")?,
            rate: src.rate()?,
            key: src.get(FAULT_KEY).cloned(),
        };
        let retry_after = src.get(RETRY_AFTER).cloned();
        let retry_after_ms = src
            .number(RETRY_AFTER_MS, "milliseconds as an integer")?
            .map(HeaderValue::from);
        let status_fault = |status| Fault::Status {
            status,
            retry_after: retry_after.clone(),
            retry_after_ms: retry_after_ms.clone(),
        };

        let mut chosen: Option<(&'static str, Fault)> = None;
        let mut choose = |header, fault| {
            if let Some(other) = chosen.as_ref().map(|(other, _)| *other) {
                return Err(ControlError::Conflict { header, other });
            }
            chosen = Some((header, fault));
            Ok(())
        };
        if let Some(status) = src.status()? {
            choose(STATUS, status_fault(status))?;
        }
        if src.get(FAULT).is_some() {
            choose(FAULT, src.fault_kind()?)?;
        }
        const EVENTS_EXPECTED: &str = "a number of events as an integer";
        if let Some(k) = src.number(FAIL_AFTER_CHUNKS, EVENTS_EXPECTED)? {
            let k = usize::try_from(k).unwrap_or(usize::MAX);
            choose(FAIL_AFTER_CHUNKS, Fault::FailAfterChunks(k))?;
        }
        if let Some(k) = src.number(STALL_AFTER_CHUNKS, EVENTS_EXPECTED)? {
            let k = usize::try_from(k).unwrap_or(usize::MAX);
            choose(STALL_AFTER_CHUNKS, Fault::StallAfterChunks(k))?;
        }
        controls.fault = match chosen {
            Some((_, fault)) => Some(fault),
            None if controls.when.is_conditional() => {
                Some(status_fault(StatusCode::SERVICE_UNAVAILABLE))
            }
            None => None,
        };
        Ok(controls)
    }
}

/// Where a request's controls come from: its own headers, else the server's defaults.
struct Source<'a> {
    request: &'a HeaderMap,
    defaults: &'a HeaderMap,
    /// The request chooses its own fault, so no default fault applies.
    own_fault: bool,
}

impl<'a> Source<'a> {
    fn new(request: &'a HeaderMap, defaults: &'a HeaderMap) -> Self {
        let own_fault = FAULT_CHOICES.iter().any(|h| request.contains_key(*h));
        Self {
            request,
            defaults,
            own_fault,
        }
    }

    fn get(&self, name: &'static str) -> Option<&'a HeaderValue> {
        if let Some(value) = self.request.get(name) {
            return Some(value);
        }
        if self.own_fault && FAULT_CHOICES.contains(&name) {
            return None;
        }
        self.defaults.get(name)
    }

    fn text(
        &self,
        name: &'static str,
        expected: &'static str,
    ) -> Result<Option<&'a str>, ControlError> {
        let Some(value) = self.get(name) else {
            return Ok(None);
        };
        value
            .to_str()
            .map(|s| Some(s.trim()))
            .map_err(|_| self.invalid(name, expected))
    }

    fn number(
        &self,
        name: &'static str,
        expected: &'static str,
    ) -> Result<Option<u64>, ControlError> {
        let Some(text) = self.text(name, expected)? else {
            return Ok(None);
        };
        text.parse::<u64>()
            .map(Some)
            .map_err(|_| self.invalid(name, expected))
    }

    fn status(&self) -> Result<Option<StatusCode>, ControlError> {
        const EXPECTED: &str = "an HTTP status from 400 to 599";
        let Some(code) = self.number(STATUS, EXPECTED)? else {
            return Ok(None);
        };
        u16::try_from(code)
            .ok()
            .and_then(|c| StatusCode::from_u16(c).ok())
            .filter(|s| s.is_client_error() || s.is_server_error())
            .map(Some)
            .ok_or_else(|| self.invalid(STATUS, EXPECTED))
    }

    fn fault_kind(&self) -> Result<Fault, ControlError> {
        const EXPECTED: &str = "drop or hang";
        match self.text(FAULT, EXPECTED)? {
            Some(s) if s.eq_ignore_ascii_case("drop") => Ok(Fault::Drop),
            Some(s) if s.eq_ignore_ascii_case("hang") => Ok(Fault::Hang),
            _ => Err(self.invalid(FAULT, EXPECTED)),
        }
    }

    fn rate(&self) -> Result<Option<f64>, ControlError> {
        const EXPECTED: &str = "a number from 0.0 to 1.0";
        let Some(text) = self.text(FAIL_RATE, EXPECTED)? else {
            return Ok(None);
        };
        text.parse::<f64>()
            .ok()
            .filter(|r| (0.0..=1.0).contains(r))
            .map(Some)
            .ok_or_else(|| self.invalid(FAIL_RATE, EXPECTED))
    }

    fn invalid(&self, header: &'static str, expected: &'static str) -> ControlError {
        let value = self
            .get(header)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .unwrap_or_default();
        ControlError::Invalid {
            header,
            value,
            expected,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (k, v) in pairs {
            headers.insert(*k, HeaderValue::from_static(v));
        }
        headers
    }

    fn parse(pairs: &[(&'static str, &'static str)]) -> Result<Controls, ControlError> {
        Controls::from_headers(&map(pairs), &MockOptions::default())
    }

    fn fault(pairs: &[(&'static str, &'static str)]) -> Result<Option<Fault>, ControlError> {
        parse(pairs).map(|c| c.fault)
    }

    fn status(code: StatusCode) -> Fault {
        Fault::Status {
            status: code,
            retry_after: None,
            retry_after_ms: None,
        }
    }

    #[test]
    fn defaults_come_from_options() {
        let opts = MockOptions {
            latency: Duration::from_millis(5),
            chunk_delay: Duration::from_millis(7),
            chunks: 3,
            record: false,
            controls: HeaderMap::new(),
        };
        let c = Controls::from_headers(&HeaderMap::new(), &opts);
        assert_eq!(
            c,
            Ok(Controls {
                latency: Duration::from_millis(5),
                chunk_delay: Duration::from_millis(7),
                chunks: 3,
                fault: None,
                when: When::default(),
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
        assert_eq!(
            fault(&[
                (STATUS, "429"),
                (RETRY_AFTER, "3"),
                (RETRY_AFTER_MS, "1500")
            ]),
            Ok(Some(Fault::Status {
                status: StatusCode::TOO_MANY_REQUESTS,
                retry_after: Some(HeaderValue::from_static("3")),
                retry_after_ms: Some(HeaderValue::from_static("1500")),
            }))
        );
    }

    #[test]
    fn retry_after_passes_any_value_through() {
        let date = "Wed, 21 Oct 2015 07:28:00 GMT";
        assert_eq!(
            fault(&[(STATUS, "503"), (RETRY_AFTER, date)]),
            Ok(Some(Fault::Status {
                status: StatusCode::SERVICE_UNAVAILABLE,
                retry_after: Some(HeaderValue::from_static(date)),
                retry_after_ms: None,
            }))
        );
    }

    #[test]
    fn retry_after_alone_is_no_fault() {
        assert_eq!(fault(&[(RETRY_AFTER, "3")]), Ok(None));
        assert_eq!(fault(&[(RETRY_AFTER_MS, "3")]), Ok(None));
        assert_eq!(fault(&[(FAULT_KEY, "k")]), Ok(None));
    }

    #[test]
    fn connection_and_stream_faults() {
        assert_eq!(fault(&[(FAULT, "drop")]), Ok(Some(Fault::Drop)));
        assert_eq!(fault(&[(FAULT, " Hang ")]), Ok(Some(Fault::Hang)));
        assert_eq!(
            fault(&[(FAIL_AFTER_CHUNKS, "0")]),
            Ok(Some(Fault::FailAfterChunks(0)))
        );
        assert_eq!(
            fault(&[(STALL_AFTER_CHUNKS, "3")]),
            Ok(Some(Fault::StallAfterChunks(3)))
        );
    }

    #[test]
    fn fail_times_and_rate_select_requests() {
        let c = parse(&[
            (FAULT, "drop"),
            (FAIL_TIMES, "2"),
            (FAIL_RATE, "0.25"),
            (FAULT_KEY, "job-7"),
        ]);
        assert_eq!(
            c.map(|c| (c.fault, c.when)),
            Ok((
                Some(Fault::Drop),
                When {
                    times: Some(2),
                    rate: Some(0.25),
                    key: Some(HeaderValue::from_static("job-7")),
                }
            ))
        );
        for rate in ["0", "1", "1.0", "0.5"] {
            assert!(parse(&[(FAIL_RATE, rate)]).is_ok(), "{rate}");
        }
    }

    #[test]
    fn fail_times_or_rate_alone_means_503() {
        let unavailable = Ok(Some(status(StatusCode::SERVICE_UNAVAILABLE)));
        assert_eq!(fault(&[(FAIL_TIMES, "1")]), unavailable);
        assert_eq!(fault(&[(FAIL_RATE, "1")]), unavailable);
    }

    #[test]
    fn only_one_fault_per_request() {
        let err = fault(&[(STATUS, "500"), (FAULT, "drop")]).err();
        assert_eq!(
            err,
            Some(ControlError::Conflict {
                header: FAULT,
                other: STATUS,
            })
        );
        let err = fault(&[(FAIL_AFTER_CHUNKS, "1"), (STALL_AFTER_CHUNKS, "1")]).err();
        assert_eq!(
            err.as_ref().and_then(ControlError::header),
            Some(STALL_AFTER_CHUNKS)
        );
        assert!(err.is_some_and(|e| e.to_string().contains(FAIL_AFTER_CHUNKS)));
    }

    #[test]
    fn server_defaults_apply_unless_the_request_overrides() {
        let opts = MockOptions {
            controls: map(&[(STATUS, "503"), (FAIL_TIMES, "10"), (LATENCY_MS, "5")]),
            ..MockOptions::default()
        };
        let c = Controls::from_headers(&HeaderMap::new(), &opts).ok();
        assert_eq!(
            c.as_ref().and_then(|c| c.fault.clone()),
            Some(status(StatusCode::SERVICE_UNAVAILABLE))
        );
        assert_eq!(c.as_ref().and_then(|c| c.when.times), Some(10));
        assert_eq!(c.map(|c| c.latency), Some(Duration::from_millis(5)));

        // The request's own value wins, header by header ...
        let c = Controls::from_headers(&map(&[(STATUS, "429"), (FAIL_TIMES, "1")]), &opts);
        assert_eq!(
            c.map(|c| (c.fault, c.when.times)),
            Ok((Some(status(StatusCode::TOO_MANY_REQUESTS)), Some(1)))
        );
        // ... and a fault of its own replaces the default fault instead of conflicting.
        let c = Controls::from_headers(&map(&[(FAULT, "hang")]), &opts);
        assert_eq!(
            c.map(|c| (c.fault, c.when.times)),
            Ok((Some(Fault::Hang), Some(10)))
        );
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
            (RETRY_AFTER_MS, "1.5"),
            (FAULT, "explode"),
            (FAIL_AFTER_CHUNKS, "-1"),
            (STALL_AFTER_CHUNKS, "x"),
            (FAIL_TIMES, "many"),
            (FAIL_RATE, "1.5"),
            (FAIL_RATE, "-0.1"),
            (FAIL_RATE, "NaN"),
        ] {
            let err = parse(&[(name, value)]).err();
            let got = match &err {
                Some(ControlError::Invalid { header, value, .. }) => {
                    Some((*header, value.as_str()))
                }
                _ => None,
            };
            assert_eq!(got, Some((name, value)), "{name}: {value}");
            assert!(
                err.is_some_and(|e| e.to_string().contains(name)),
                "{name}: {value}"
            );
        }
    }

    #[test]
    fn parses_control_arguments() {
        assert_eq!(
            parse_control("X-Mock-Status: 503"),
            Ok((
                HeaderName::from_static(STATUS),
                HeaderValue::from_static("503")
            ))
        );
        assert_eq!(
            parse_control("x-mock-fail-rate:0.2").map(|(_, v)| v),
            Ok(HeaderValue::from_static("0.2"))
        );
        assert!(matches!(
            parse_control("x-mock-status 503"),
            Err(ControlError::Syntax { .. })
        ));
        assert!(matches!(
            parse_control(": 503"),
            Err(ControlError::Syntax { .. })
        ));
        assert!(matches!(
            parse_control("x-mock-statuz: 503"),
            Err(ControlError::Unknown { .. })
        ));
        assert_eq!(
            parse_control("x-mock-status: 200")
                .err()
                .as_ref()
                .and_then(ControlError::header),
            Some(STATUS)
        );
        assert!(matches!(
            parse_control("x-mock-fault-key: a\u{7f}b"),
            Err(ControlError::Invalid {
                header: FAULT_KEY,
                ..
            })
        ));
    }

    #[test]
    fn checks_server_defaults() {
        assert_eq!(check_defaults(&HeaderMap::new()), Ok(()));
        assert_eq!(
            check_defaults(&map(&[(FAULT, "drop"), (FAIL_TIMES, "3")])),
            Ok(())
        );
        assert!(matches!(
            check_defaults(&map(&[("x-other", "1")])),
            Err(ControlError::Unknown { .. })
        ));
        assert!(matches!(
            check_defaults(&map(&[(STATUS, "503"), (FAULT, "hang")])),
            Err(ControlError::Conflict { .. })
        ));
        assert!(matches!(
            check_defaults(&map(&[(FAIL_RATE, "2")])),
            Err(ControlError::Invalid {
                header: FAIL_RATE,
                ..
            })
        ));
    }
}
