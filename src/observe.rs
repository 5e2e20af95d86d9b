//! Logs and metrics: the subscriber, the Prometheus recorder, metric names.
//!
//! Metric names are defined here once, with their help texts, so `/metrics`
//! documents itself and a typo cannot create a second series.

use std::sync::OnceLock;
use std::time::Duration;

use metrics::SharedString;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::config::{LogConfig, LogFormat};

pub const REQUESTS_TOTAL: &str = "sluice_requests_total";
pub const REQUEST_DURATION: &str = "sluice_request_duration_seconds";
pub const REQUESTS_IN_FLIGHT: &str = "sluice_requests_in_flight";
pub const UPSTREAM_REQUESTS_TOTAL: &str = "sluice_upstream_requests_total";
pub const UPSTREAM_DURATION: &str = "sluice_upstream_duration_seconds";
pub const UPSTREAM_ERRORS_TOTAL: &str = "sluice_upstream_errors_total";
pub const UPSTREAM_ATTEMPTS_TOTAL: &str = "sluice_upstream_attempts_total";
pub const UPSTREAM_RETRIES_TOTAL: &str = "sluice_upstream_retries_total";
pub const UPSTREAM_FALLBACKS_TOTAL: &str = "sluice_upstream_fallbacks_total";
pub const UPSTREAM_RETRIES_DENIED_TOTAL: &str = "sluice_upstream_retries_denied_total";
pub const UPSTREAM_BREAKER_STATE: &str = "sluice_upstream_breaker_state";
pub const UPSTREAM_FIRST_BYTE_DURATION: &str = "sluice_upstream_first_byte_duration_seconds";
pub const CACHE_REQUESTS_TOTAL: &str = "sluice_cache_requests_total";
pub const CACHE_LOOKUPS_TOTAL: &str = "sluice_cache_lookups_total";
pub const UPSTREAM_PANIC_TOTAL: &str = "sluice_upstream_panic_total";
pub const CONNECTIONS_REFUSED_TOTAL: &str = "sluice_connections_refused_total";
pub const CACHE_READ_ON_TOTAL: &str = "sluice_cache_read_on_total";
pub const CACHE_INVALID_ENTRIES_TOTAL: &str = "sluice_cache_invalid_entries_total";
pub const CACHE_ENTRIES: &str = "sluice_cache_entries";
pub const CACHE_STORED_BYTES: &str = "sluice_cache_stored_bytes";
pub const CACHE_EVICTIONS_TOTAL: &str = "sluice_cache_evictions_total";
pub const CACHE_TOKENS_SAVED_TOTAL: &str = "sluice_cache_tokens_saved_total";
pub const PRUNE_REQUESTS_TOTAL: &str = "sluice_prune_requests_total";
pub const PRUNE_TOKENS_REMOVED_TOTAL: &str = "sluice_prune_tokens_removed_total";
pub const COMPRESS_REQUESTS_TOTAL: &str = "sluice_compress_requests_total";
pub const COMPRESS_TOKENS_SAVED_TOTAL: &str = "sluice_compress_tokens_saved_total";
pub const PROMPT_TOKENS_TOTAL: &str = "sluice_prompt_tokens_total";
pub const SESSION_WAIT: &str = "sluice_session_wait_seconds";
pub const SESSIONS_ACTIVE: &str = "sluice_sessions_active";

/// Latency buckets in seconds, from sub-millisecond proxy overhead to long
/// generations.
const DURATION_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 120.0, 300.0,
];

static PROMETHEUS: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// The process-wide Prometheus handle, installing the recorder on first use.
///
/// `None` when another recorder was installed first (an embedding program's);
/// sluice then keeps running and `/metrics` says so.
pub fn prometheus() -> Option<&'static PrometheusHandle> {
    PROMETHEUS.get_or_init(install).as_ref()
}

fn install() -> Option<PrometheusHandle> {
    let builder = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Suffix("_duration_seconds".into()),
            DURATION_BUCKETS,
        )
        .ok()?
        .set_buckets_for_metric(Matcher::Full(SESSION_WAIT.into()), DURATION_BUCKETS)
        .ok()?;
    let handle = builder.install_recorder().ok()?;
    describe();
    // Histograms need periodic upkeep to drain their buffers.
    let upkeep = handle.clone();
    std::thread::Builder::new()
        .name("sluice-metrics-upkeep".into())
        .spawn(move || {
            loop {
                #[expect(
                    clippy::disallowed_methods,
                    reason = "a dedicated std thread, not a runtime worker"
                )]
                std::thread::sleep(Duration::from_secs(5));
                upkeep.run_upkeep();
            }
        })
        .ok()?;
    Some(handle)
}

fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    crate::report::describe();
    crate::ledger::describe();
    describe_counter!(
        REQUESTS_TOTAL,
        "Requests answered, by endpoint and HTTP status."
    );
    describe_histogram!(
        REQUEST_DURATION,
        Unit::Seconds,
        "Time from request to the end of the answer (streams included), by endpoint."
    );
    describe_gauge!(
        REQUESTS_IN_FLIGHT,
        "Requests being handled now, streams until their last byte."
    );
    describe_counter!(
        UPSTREAM_REQUESTS_TOTAL,
        "Requests sent upstream, by upstream and the status it answered."
    );
    describe_histogram!(
        UPSTREAM_DURATION,
        Unit::Seconds,
        "Time from sending a request upstream to its answer head, by upstream."
    );
    describe_counter!(
        CACHE_REQUESTS_TOTAL,
        "Understood requests by cache outcome (hit, miss, bypass)."
    );
    describe_counter!(
        CACHE_LOOKUPS_TOTAL,
        "Cache lookups by tier and result (hit, miss)."
    );
    describe_counter!(
        UPSTREAM_PANIC_TOTAL,
        "Requests sent to an upstream whose breaker was open because every upstream serving them was (panic mode)."
    );
    describe_counter!(
        CONNECTIONS_REFUSED_TOTAL,
        "Client connections closed as soon as accepted because max_connections were open."
    );
    describe_counter!(
        CACHE_READ_ON_TOTAL,
        "Answers whose client left before their end: read on for the cache (read_on), or cancelled upstream (cancelled)."
    );
    describe_counter!(
        CACHE_INVALID_ENTRIES_TOTAL,
        "Stored values that were no usable entry (unreadable, or fields out of range), taken as misses."
    );
    describe_gauge!(CACHE_ENTRIES, "Answers held in the memory tier.");
    describe_gauge!(
        CACHE_STORED_BYTES,
        Unit::Bytes,
        "Bytes charged to the memory tier (bodies plus per-entry overhead)."
    );
    describe_counter!(
        CACHE_EVICTIONS_TOTAL,
        "Answers evicted from the memory tier to make room."
    );
    describe_counter!(
        CACHE_TOKENS_SAVED_TOTAL,
        "Tokens (the stored answer's usage.total_tokens) not spent upstream thanks to hits."
    );
    describe_counter!(
        PRUNE_REQUESTS_TOTAL,
        "Requests pruning looked at, by result (pruned, within_budget)."
    );
    describe_counter!(
        PRUNE_TOKENS_REMOVED_TOTAL,
        "Prompt tokens removed by pruning."
    );
    describe_counter!(
        COMPRESS_REQUESTS_TOTAL,
        "Requests compression looked at, by level and result (compressed, unchanged)."
    );
    describe_counter!(
        COMPRESS_TOKENS_SAVED_TOTAL,
        "Prompt tokens removed by compression."
    );
    describe_counter!(
        PROMPT_TOKENS_TOTAL,
        "Prompt tokens of forwarded requests, by stage (original: as sent by clients; sent: as forwarded)."
    );
    describe_counter!(
        UPSTREAM_ERRORS_TOTAL,
        "Upstream requests that got no answer or broke mid-answer, by upstream and kind (connect, timeout, other, stream_broken, stream_stalled)."
    );
    describe_counter!(
        UPSTREAM_ATTEMPTS_TOTAL,
        "Attempts at upstreams, by upstream and outcome (success, status: a non-retried error status, status_429, status_5xx, connect, reset, timeout, error)."
    );
    describe_counter!(
        UPSTREAM_RETRIES_TOTAL,
        "Retries on the same upstream, by upstream and reason (status_429, status_5xx, connect, reset, timeout)."
    );
    describe_counter!(
        UPSTREAM_FALLBACKS_TOTAL,
        "Requests moved on to another upstream, by the upstream that failed and why."
    );
    describe_counter!(
        UPSTREAM_RETRIES_DENIED_TOTAL,
        "Retries not made, by reason (budget: the retry budget ran dry; deadline: the wait would pass the request's deadline)."
    );
    describe_gauge!(
        UPSTREAM_BREAKER_STATE,
        "Circuit breaker per upstream: 0 closed, 1 half-open, 2 open."
    );
    describe_histogram!(
        UPSTREAM_FIRST_BYTE_DURATION,
        Unit::Seconds,
        "Time from sending a request upstream to the first byte of its answer body, by upstream."
    );
    describe_histogram!(
        SESSION_WAIT,
        Unit::Seconds,
        "Time requests carrying a session id waited for an earlier request of their session to finish (0 when it had room)."
    );
    describe_gauge!(
        SESSIONS_ACTIVE,
        "Sessions remembered: in use, or idle for less than [sessions] idle_timeout."
    );
}

/// A bounded label for an HTTP status, without allocating for common ones.
pub fn status_label(status: http::StatusCode) -> SharedString {
    let s: &'static str = match status.as_u16() {
        200 => "200",
        201 => "201",
        204 => "204",
        400 => "400",
        401 => "401",
        403 => "403",
        404 => "404",
        413 => "413",
        422 => "422",
        429 => "429",
        500 => "500",
        502 => "502",
        503 => "503",
        504 => "504",
        other => return SharedString::from(other.to_string()),
    };
    SharedString::const_str(s)
}

/// Installs the log subscriber: stderr, `RUST_LOG` over `[log] level`,
/// text or JSON lines.
pub fn init_logging(config: &LogConfig) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    // A second initialisation (tests starting several servers) is harmless.
    let _ = match config.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}
