//! The one retry policy: what is retried, how long to wait, when to move on
//! to the next upstream, and when to stop.
//!
//! It is a tower [`Policy`] driving [`tower::retry::Retry`] around one
//! [`Attempt`](super::attempt::Attempt). After each attempt it decides:
//!
//! - **Retryable** are connect errors, connections reset before an answer,
//!   timeouts before the first byte, and the statuses of `retry_on` (an
//!   upstream's `x-should-retry: false` overrides). Nothing else: a 400 stays a
//!   400. Only requests whose body sluice holds can be sent again; everything
//!   reaches this point before any byte of the answer went to the client.
//! - **Wait**: the upstream's `retry-after-ms` or `Retry-After` (seconds or
//!   HTTP date) when it sent one, else exponential backoff with full jitter:
//!   uniform between `base_delay` and `min(max_delay, base_delay * 2^(n+1))`.
//!   A wait that would pass the request's deadline is not taken: the
//!   upstream's own answer goes back at once.
//! - **Same upstream or the next**: up to `max_retries` retries on one
//!   upstream while it stays in rotation; then (or at once when its breaker
//!   opened or a 429 put it to rest) the next healthy upstream that serves the
//!   model, without waiting.
//! - **Budget**: every request deposits into a shared retry budget (tower's
//!   [`TpsBudget`]); every retry or fallback withdraws. When an upstream is
//!   down for everyone the budget runs dry and retries stop, so an outage is
//!   not multiplied by `max_retries`.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::{HeaderMap, Response, StatusCode};
use tokio::time::{Instant, Sleep};
use tower::retry::Policy;
use tower::retry::budget::{Budget, TpsBudget};

use super::attempt::{AttemptError, Try};
use super::route::{Pick, Upstreams};
use crate::body::Body;
use crate::config::RetryConfig;
use crate::observe::{
    UPSTREAM_FALLBACKS_TOTAL, UPSTREAM_RETRIES_DENIED_TOTAL, UPSTREAM_RETRIES_TOTAL,
};

/// How long deposits count in the retry budget.
const BUDGET_WINDOW: Duration = Duration::from_secs(10);
/// Retries per second allowed whatever the traffic, so a lone request on a
/// quiet instance can still retry.
const BUDGET_MIN_PER_SECOND: u32 = 1;

/// The `[retry]` settings, shared by every request of every worker.
#[derive(Debug)]
pub struct RetrySettings {
    max_retries: u32,
    base_delay: Duration,
    max_delay: Duration,
    /// `retry_on` as a lookup table over 100..=599.
    retry_on: [bool; 600],
    budget: TpsBudget,
}

impl RetrySettings {
    pub fn new(config: &RetryConfig) -> RetrySettings {
        let mut retry_on = [false; 600];
        for code in &config.retry_on {
            if let Some(slot) = retry_on.get_mut(usize::from(*code)) {
                *slot = true;
            }
        }
        // Validated to 0.0..=1.0; f32 is what tower takes.
        let share = config.budget.clamp(0.0, 1.0) as f32;
        RetrySettings {
            max_retries: config.max_retries,
            base_delay: config.base_delay,
            max_delay: config.max_delay.max(config.base_delay),
            retry_on,
            budget: TpsBudget::new(BUDGET_WINDOW, BUDGET_MIN_PER_SECOND, share),
        }
    }

    /// Whether an answer with `status` is retried.
    pub fn retries(&self, status: StatusCode) -> bool {
        self.retry_on
            .get(usize::from(status.as_u16()))
            .copied()
            .unwrap_or(false)
    }

    /// Counts a new request into the retry budget.
    pub fn deposit(&self) {
        self.budget.deposit();
    }

    /// The backoff before retry number `n` (0 = the first retry).
    pub fn backoff(&self, n: u32) -> Duration {
        let ceiling = self
            .base_delay
            .checked_mul(2u32.saturating_pow(n.saturating_add(1)))
            .unwrap_or(self.max_delay)
            .min(self.max_delay);
        let low = self.base_delay.as_nanos();
        let high = ceiling.as_nanos().max(low);
        let nanos = low + (high - low) * u128::from(fastrand::u32(..)) / u128::from(u32::MAX);
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }
}

/// Why an attempt is worth another try.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    Connect,
    /// The connection broke before the answer's first byte.
    Reset,
    /// No first byte in time.
    Timeout,
    Status(StatusCode),
}

impl Reason {
    pub fn label(self) -> &'static str {
        match self {
            Reason::Connect => "connect",
            Reason::Reset => "reset",
            Reason::Timeout => "timeout",
            Reason::Status(s) if s == StatusCode::TOO_MANY_REQUESTS => "status_429",
            Reason::Status(s) if s.is_server_error() => "status_5xx",
            Reason::Status(_) => "status_other",
        }
    }
}

/// The policy of one request: its own counters, the shared settings.
#[derive(Clone)]
pub struct RetryPolicy {
    settings: Arc<RetrySettings>,
    upstreams: Arc<Upstreams>,
    /// Attempts made so far, all upstreams together.
    attempts: u32,
    /// Retries made on the current upstream.
    here: u32,
    /// Upstreams given up on, by index.
    tried: Vec<usize>,
}

impl RetryPolicy {
    pub fn new(settings: Arc<RetrySettings>, upstreams: Arc<Upstreams>) -> RetryPolicy {
        RetryPolicy {
            settings,
            upstreams,
            attempts: 1,
            here: 0,
            tried: Vec::new(),
        }
    }

    /// What to do after an attempt: `Some((wait, switch_to))` to try again.
    fn decide(
        &mut self,
        req: &mut Try,
        result: &Result<Response<Body>, AttemptError>,
    ) -> Option<Duration> {
        let (reason, headers) = match result {
            Ok(answer) if self.settings.retries(answer.status()) => {
                (Reason::Status(answer.status()), Some(answer.headers()))
            }
            Ok(_) => return None,
            Err(error) => (error.retryable?, None),
        };
        if !req.replayable() || headers.is_some_and(says_no_retry) {
            return None;
        }
        let upstream = req.upstream.clone();
        let now = std::time::Instant::now();
        let hint = headers.and_then(|h| retry_after(h, SystemTime::now()));
        // A 429 to sluice's own key says the upstream is saturated for
        // everyone: out of rotation for that long. With the client's key
        // passed through, it is that client's limit alone.
        if let (Reason::Status(StatusCode::TOO_MANY_REQUESTS), Some(wait)) = (reason, hint)
            && upstream.authorization.is_some()
        {
            upstream.health.rest(now + wait);
        }
        let deadline = req.deadline;
        if self.here < self.settings.max_retries && upstream.health.available(now) {
            let wait = hint.unwrap_or_else(|| self.settings.backoff(self.here));
            if Instant::now() + wait >= deadline {
                denied("deadline");
                return None;
            }
            if !self.settings.budget.withdraw() {
                denied("budget");
                return None;
            }
            self.here += 1;
            metrics::counter!(UPSTREAM_RETRIES_TOTAL, "upstream" => upstream.label.clone(), "reason" => reason.label())
                .increment(1);
            return Some(wait);
        }
        self.tried.push(upstream.index);
        let Pick::Chosen(next) = self.upstreams.pick(req.model(), &self.tried, now) else {
            return None;
        };
        if !self.settings.budget.withdraw() {
            denied("budget");
            return None;
        }
        metrics::counter!(UPSTREAM_FALLBACKS_TOTAL, "upstream" => upstream.label.clone(), "reason" => reason.label())
            .increment(1);
        tracing::debug!(from = %upstream.name, to = %next.name, reason = reason.label(), "falling back to the next upstream");
        req.upstream = next;
        self.here = 0;
        Some(Duration::ZERO)
    }

    /// The last answer goes back with the number of attempts made.
    fn finish(&self, result: &mut Result<Response<Body>, AttemptError>) {
        match result {
            Ok(answer) => {
                crate::context::Outcome::of(answer).attempts = Some(self.attempts);
            }
            Err(error) => error.attempts = self.attempts,
        }
    }
}

fn denied(why: &'static str) {
    metrics::counter!(UPSTREAM_RETRIES_DENIED_TOTAL, "reason" => why).increment(1);
}

impl Policy<Try, Response<Body>, AttemptError> for RetryPolicy {
    type Future = Sleep;

    fn retry(
        &mut self,
        req: &mut Try,
        result: &mut Result<Response<Body>, AttemptError>,
    ) -> Option<Sleep> {
        match self.decide(req, result) {
            Some(wait) => {
                self.attempts += 1;
                Some(tokio::time::sleep(wait))
            }
            None => {
                self.finish(result);
                None
            }
        }
    }

    fn clone_request(&mut self, req: &Try) -> Option<Try> {
        // Always a clone, so `retry` sees every answer (and numbers it); a
        // body that can only be sent once is refused a retry there.
        Some(req.clone())
    }
}

/// `x-should-retry: false`, as OpenAI sends on answers that must not be retried.
fn says_no_retry(headers: &HeaderMap) -> bool {
    headers
        .get("x-should-retry")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"false"))
}

/// The wait an upstream asked for: `retry-after-ms` (OpenAI's, milliseconds),
/// else `Retry-After` as seconds or an HTTP date.
pub fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    if let Some(ms) = text("retry-after-ms").and_then(|v| v.parse::<f64>().ok())
        && ms.is_finite()
        && ms >= 0.0
    {
        return Some(Duration::from_secs_f64((ms / 1000.0).min(1e9)));
    }
    let value = text("retry-after")?;
    if let Ok(seconds) = value.parse::<f64>() {
        return (seconds.is_finite() && seconds >= 0.0)
            .then(|| Duration::from_secs_f64(seconds.min(1e9)));
    }
    let date = httpdate::parse_http_date(value).ok()?;
    Some(date.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn settings(base_ms: u64, max_ms: u64) -> RetrySettings {
        RetrySettings::new(&RetryConfig {
            base_delay: Duration::from_millis(base_ms),
            max_delay: Duration::from_millis(max_ms),
            ..RetryConfig::default()
        })
    }

    #[test]
    fn backoff_grows_with_full_jitter_within_bounds() {
        let s = settings(200, 1000);
        for n in 0..8u32 {
            let ceiling = Duration::from_millis((200u64 << (n + 1)).min(1000));
            let waits: Vec<Duration> = (0..2000).map(|_| s.backoff(n)).collect();
            assert!(waits.iter().all(|w| *w >= Duration::from_millis(200)));
            assert!(waits.iter().all(|w| *w <= ceiling), "n={n}");
            // Spread over the range, not stuck at one end.
            let low = waits
                .iter()
                .filter(|w| **w < (ceiling + Duration::from_millis(200)) / 2);
            let share = low.count() as f64 / waits.len() as f64;
            assert!((0.4..0.6).contains(&share), "n={n}: {share}");
        }
        // Equal bounds: exactly that.
        assert_eq!(settings(300, 300).backoff(5), Duration::from_millis(300));
        // Huge exponents saturate at max_delay.
        assert!(s.backoff(u32::MAX) <= Duration::from_millis(1000));
    }

    #[test]
    fn retry_on_table() {
        let s = settings(1, 1);
        for code in [429, 500, 502, 503, 504] {
            assert!(s.retries(StatusCode::from_u16(code).unwrap_or_default()));
        }
        for code in [200, 400, 401, 403, 404, 409, 422, 501] {
            assert!(!s.retries(StatusCode::from_u16(code).unwrap_or_default()));
        }
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            if let Ok(v) = HeaderValue::from_str(v) {
                h.insert(*k, v);
            }
        }
        h
    }

    #[test]
    fn retry_after_forms() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let wait = |pairs: &[(&'static str, &str)]| retry_after(&headers(pairs), now);
        assert_eq!(wait(&[("retry-after", "3")]), Some(Duration::from_secs(3)));
        assert_eq!(
            wait(&[("retry-after", "0.5")]),
            Some(Duration::from_millis(500))
        );
        assert_eq!(
            wait(&[("retry-after-ms", "250"), ("retry-after", "9")]),
            Some(Duration::from_millis(250))
        );
        let date = httpdate::fmt_http_date(now + Duration::from_secs(7));
        assert_eq!(
            wait(&[("retry-after", date.as_str())]),
            Some(Duration::from_secs(7))
        );
        let past = httpdate::fmt_http_date(now - Duration::from_secs(7));
        assert_eq!(
            wait(&[("retry-after", past.as_str())]),
            Some(Duration::ZERO)
        );
        assert_eq!(wait(&[("retry-after", "soon")]), None);
        assert_eq!(wait(&[("retry-after", "-1")]), None);
        assert_eq!(wait(&[]), None);
    }

    #[test]
    fn should_retry_header() {
        assert!(says_no_retry(&headers(&[("x-should-retry", "false")])));
        assert!(!says_no_retry(&headers(&[("x-should-retry", "true")])));
        assert!(!says_no_retry(&headers(&[])));
    }

    #[test]
    fn budget_allows_a_share_of_requests() {
        let s = RetrySettings::new(&RetryConfig {
            budget: 0.2,
            ..RetryConfig::default()
        });
        // The reserve: one retry a second over the window.
        let reserve = (0..100).take_while(|_| s.budget.withdraw()).count();
        assert_eq!(reserve, 10);
        for _ in 0..50 {
            s.deposit();
        }
        let earned = (0..100).take_while(|_| s.budget.withdraw()).count();
        assert_eq!(earned, 10);
    }
}
