//! The circuit breaker that keeps requests from waiting on a failing Redis.
//!
//! Closed: calls go to Redis and their outcomes are recorded. It opens after
//! [`BreakerConfig::failures`] consecutive failures, or when at least
//! [`BreakerConfig::failure_percent`] of the calls in a window of
//! [`BreakerConfig::window`] failed (once that window saw
//! [`BreakerConfig::window_min_calls`] calls). While open or half-open no call
//! is made; the tier's background probe half-opens it while it checks Redis
//! and closes it when Redis answers. State lives in atomics so the request
//! path never takes a lock.
//!
//! ```ignore
//! if breaker.allows() { /* call Redis */ breaker.record(outcome_ok) }
//! ```

use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// Where the breaker stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Redis is used.
    Closed,
    /// Redis is skipped; a probe will check it after a cool-down.
    Open,
    /// A probe is checking Redis; it is still skipped by requests.
    HalfOpen,
}

/// When the breaker opens and how long it stays open.
#[derive(Debug, Clone)]
pub struct BreakerConfig {
    /// Consecutive failures that open the breaker.
    pub failures: u32,
    /// Length of the window the failure ratio is computed over.
    pub window: Duration,
    /// Calls a window must have seen before its ratio can open the breaker.
    pub window_min_calls: u32,
    /// Failure percentage of a window that opens the breaker.
    pub failure_percent: u32,
    /// First cool-down before a probe.
    pub open_min: Duration,
    /// Longest cool-down; each failed probe doubles it up to this.
    pub open_max: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            failures: 3,
            window: Duration::from_secs(2),
            window_min_calls: 20,
            failure_percent: 50,
            open_min: Duration::from_secs(1),
            open_max: Duration::from_secs(30),
        }
    }
}

const CLOSED: u8 = 0;
const OPEN: u8 = 1;
const HALF_OPEN: u8 = 2;

/// Breaker state shared by callers, the writer task and the probe.
#[derive(Debug)]
pub struct Breaker {
    config: BreakerConfig,
    state: AtomicU8,
    consecutive: AtomicU32,
    epoch: Instant,
    window_start_ms: AtomicU64,
    window_calls: AtomicU32,
    window_failures: AtomicU32,
    /// Woken when the breaker opens, so the probe starts its cool-down.
    pub opened: Notify,
}

impl Breaker {
    /// A breaker that starts open: Redis is unused until the first probe succeeds.
    pub fn new(config: BreakerConfig) -> Self {
        metrics::gauge!("sluice_redis_breaker_open").set(1.0);
        Self {
            config,
            state: AtomicU8::new(OPEN),
            consecutive: AtomicU32::new(0),
            epoch: Instant::now(),
            window_start_ms: AtomicU64::new(0),
            window_calls: AtomicU32::new(0),
            window_failures: AtomicU32::new(0),
            opened: Notify::new(),
        }
    }

    pub fn config(&self) -> &BreakerConfig {
        &self.config
    }

    pub fn state(&self) -> BreakerState {
        match self.state.load(Ordering::Acquire) {
            CLOSED => BreakerState::Closed,
            HALF_OPEN => BreakerState::HalfOpen,
            _ => BreakerState::Open,
        }
    }

    /// Whether a call may go to Redis now.
    pub fn allows(&self) -> bool {
        self.state.load(Ordering::Acquire) == CLOSED
    }

    /// Records the outcome of a call made while closed; may open the breaker.
    pub fn record(&self, ok: bool) {
        let (calls, failures) = self.count_in_window(ok);
        if ok {
            // Skip the store when already zero so successes do not keep
            // bouncing the cache line between worker threads.
            if self.consecutive.load(Ordering::Relaxed) != 0 {
                self.consecutive.store(0, Ordering::Relaxed);
            }
            return;
        }
        let consecutive = self.consecutive.fetch_add(1, Ordering::Relaxed) + 1;
        let ratio_tripped = calls >= self.config.window_min_calls
            && u64::from(failures) * 100
                >= u64::from(calls) * u64::from(self.config.failure_percent);
        if consecutive >= self.config.failures || ratio_tripped {
            self.trip(consecutive, calls, failures);
        }
    }

    fn count_in_window(&self, ok: bool) -> (u32, u32) {
        let now_ms = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        let window_ms = u64::try_from(self.config.window.as_millis()).unwrap_or(u64::MAX);
        let start = self.window_start_ms.load(Ordering::Relaxed);
        if now_ms.saturating_sub(start) >= window_ms
            && self
                .window_start_ms
                .compare_exchange(start, now_ms, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            // Racing recorders may land in either window; the ratio is a
            // coarse signal and the consecutive count is the precise one.
            self.window_calls.store(0, Ordering::Relaxed);
            self.window_failures.store(0, Ordering::Relaxed);
        }
        let calls = self.window_calls.fetch_add(1, Ordering::Relaxed) + 1;
        let failures = if ok {
            self.window_failures.load(Ordering::Relaxed)
        } else {
            self.window_failures.fetch_add(1, Ordering::Relaxed) + 1
        };
        (calls, failures)
    }

    fn trip(&self, consecutive: u32, calls: u32, failures: u32) {
        if self
            .state
            .compare_exchange(CLOSED, OPEN, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            metrics::gauge!("sluice_redis_breaker_open").set(1.0);
            tracing::warn!(
                consecutive,
                window_calls = calls,
                window_failures = failures,
                "redis circuit breaker opened: skipping redis until it answers again"
            );
            self.opened.notify_one();
        }
    }

    /// The probe is checking Redis.
    pub fn half_open(&self) {
        self.state.store(HALF_OPEN, Ordering::Release);
    }

    /// The probe failed; stay open.
    pub fn reopen(&self) {
        self.state.store(OPEN, Ordering::Release);
        metrics::gauge!("sluice_redis_breaker_open").set(1.0);
    }

    /// The probe succeeded: use Redis again with fresh counters.
    pub fn close(&self) {
        self.consecutive.store(0, Ordering::Relaxed);
        self.window_calls.store(0, Ordering::Relaxed);
        self.window_failures.store(0, Ordering::Relaxed);
        self.state.store(CLOSED, Ordering::Release);
        metrics::gauge!("sluice_redis_breaker_open").set(0.0);
        tracing::info!("redis circuit breaker closed: redis answers");
    }
}
