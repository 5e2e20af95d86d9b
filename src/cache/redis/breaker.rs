//! The circuit breaker that keeps requests from waiting on a failing Redis:
//! sluice's one [`Circuit`], probed by the tier's background task rather
//! than by requests.
//!
//! Closed: calls go to Redis and their outcomes are recorded. It opens after
//! [`BreakerConfig::failures`] consecutive failures, or when at least
//! [`BreakerConfig::failure_percent`] of the calls in a window of
//! [`BreakerConfig::window`] failed (once that window saw
//! [`BreakerConfig::window_min_calls`] calls). While open or half-open no call
//! is made; the background probe half-opens it while it checks Redis and
//! closes it when Redis answers. Whether calls may go out is read from an
//! atomic, so a lookup with the breaker open takes no lock.
//!
//! ```text
//! if breaker.allows() { /* call Redis */ breaker.record(outcome_ok) }
//! ```

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::breaker::{self, Circuit, Policy};

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
    circuit: Mutex<Circuit>,
    /// The circuit's state, for [`Breaker::allows`] without the lock.
    state: AtomicU8,
    /// Woken when the breaker opens, so the probe starts its cool-down.
    pub opened: Notify,
}

impl BreakerConfig {
    fn policy(&self) -> Policy {
        Policy {
            window: self.window,
            min_calls: self.window_min_calls,
            failure_ratio: f64::from(self.failure_percent) / 100.0,
            consecutive: Some(self.failures),
            cooldown_min: self.open_min,
            cooldown_max: self.open_max,
        }
    }
}

impl Breaker {
    /// A breaker that starts open: Redis is unused until the first probe succeeds.
    pub fn new(config: BreakerConfig) -> Self {
        metrics::gauge!("sluice_redis_breaker_open").set(1.0);
        Self {
            circuit: Mutex::new(Circuit::open(config.policy(), Instant::now())),
            config,
            state: AtomicU8::new(OPEN),
            opened: Notify::new(),
        }
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

    fn lock(&self) -> MutexGuard<'_, Circuit> {
        // Every update leaves the circuit consistent, so a poisoned lock is usable.
        self.circuit.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn publish(&self, state: breaker::State) {
        let value = match state {
            breaker::State::Closed => CLOSED,
            breaker::State::Open => OPEN,
            breaker::State::HalfOpen => HALF_OPEN,
        };
        self.state.store(value, Ordering::Release);
        metrics::gauge!("sluice_redis_breaker_open").set(if value == CLOSED { 0.0 } else { 1.0 });
    }

    /// Records the outcome of a call made while closed; may open the breaker.
    pub fn record(&self, ok: bool) {
        if !self.allows() {
            // A late outcome, or the probe's (which reports through
            // `close` / `reopen`).
            return;
        }
        let now = Instant::now();
        let mut circuit = self.lock();
        if circuit.record(ok, now) == Some(breaker::State::Open) {
            let (ok, failed) = circuit.recent(now);
            drop(circuit);
            self.publish(breaker::State::Open);
            tracing::warn!(
                window_ok = ok,
                window_failures = failed,
                "redis circuit breaker opened: skipping redis until it answers again"
            );
            self.opened.notify_one();
        }
    }

    /// The probe is checking Redis.
    pub fn half_open(&self) {
        self.lock().probe(Instant::now());
        self.publish(breaker::State::HalfOpen);
    }

    /// The probe failed; stay open.
    pub fn reopen(&self) {
        let mut circuit = self.lock();
        if circuit.state() != breaker::State::HalfOpen {
            circuit.probe(Instant::now());
        }
        circuit.record(false, Instant::now());
        drop(circuit);
        self.publish(breaker::State::Open);
    }

    /// The probe succeeded: use Redis again with fresh counters.
    pub fn close(&self) {
        let mut circuit = self.lock();
        if circuit.state() != breaker::State::HalfOpen {
            circuit.probe(Instant::now());
        }
        circuit.record(true, Instant::now());
        drop(circuit);
        self.publish(breaker::State::Closed);
        tracing::info!("redis circuit breaker closed: redis answers");
    }

    /// How long the probe waits before its next try: the circuit's
    /// cool-down, doubling while Redis stays down.
    pub fn retry_in(&self) -> Duration {
        let now = Instant::now();
        self.lock()
            .out_until(now)
            .map_or(self.config.open_min, |until| until - now)
    }
}
