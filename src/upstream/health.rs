//! Passive health of each upstream, shared by every worker: a circuit breaker
//! fed by the outcomes of real requests, a latency average that steers
//! balancing, and a rest period after a 429 that said how long to wait.
//!
//! The breaker is sluice's one [`Circuit`](crate::breaker::Circuit): it
//! opens once at least `min_requests` were seen over the last `window` and
//! the failed share reaches `failure_ratio`, and the upstream is skipped for
//! `cooldown`. Then one real request is let through as the probe: success
//! closes the breaker (and the upstream's pools are warmed again), failure
//! opens it for another cooldown.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::watch;

use crate::breaker::{self, Admit, Circuit, Policy};
use crate::config::BreakerConfig;
use crate::observe::UPSTREAM_BREAKER_STATE;

/// What one attempt amounted to, for the breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The upstream answered (any status below 500, including client errors).
    Success,
    /// Connect error, timeout, reset, 5xx, or a stream that broke.
    Failure,
}

/// Whether an upstream may be sent a request now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Healthy: go ahead.
    Open,
    /// The breaker's cool-down is over: this request is the probe.
    Probe,
    /// Skipped until this much time has passed (breaker open, probe running,
    /// or resting after a 429 with `Retry-After`).
    Closed { for_at_least: Duration, why: Why },
}

/// Why an upstream is out of rotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Why {
    BreakerOpen,
    Probing,
    RateLimited,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

impl From<breaker::State> for BreakerState {
    fn from(state: breaker::State) -> BreakerState {
        match state {
            breaker::State::Closed => BreakerState::Closed,
            breaker::State::Open => BreakerState::Open,
            breaker::State::HalfOpen => BreakerState::HalfOpen,
        }
    }
}

impl BreakerState {
    /// The value of the `sluice_upstream_breaker_state` gauge.
    fn gauge(self) -> f64 {
        match self {
            BreakerState::Closed => 0.0,
            BreakerState::HalfOpen => 1.0,
            BreakerState::Open => 2.0,
        }
    }
}

/// Health of one upstream.
#[derive(Debug)]
pub struct Health {
    label: metrics::SharedString,
    config: BreakerConfig,
    state: Mutex<State>,
    /// Average time to an answer head, in microseconds (f64 bits); 0 = none yet.
    latency_us: AtomicU64,
    /// Bumped each time the upstream recovers, so every worker warms its pool again.
    recovered: watch::Sender<u64>,
}

#[derive(Debug)]
struct State {
    circuit: Circuit,
    /// Out of rotation until then (a 429 with `Retry-After`).
    resting_until: Option<Instant>,
}

/// Weight of a new latency sample in the moving average.
const LATENCY_ALPHA: f64 = 0.2;

impl Health {
    pub fn new(name: &str, config: &BreakerConfig) -> Health {
        let label = metrics::SharedString::from(std::sync::Arc::<str>::from(name));
        metrics::gauge!(UPSTREAM_BREAKER_STATE, "upstream" => label.clone())
            .set(BreakerState::Closed.gauge());
        Health {
            label,
            config: config.clone(),
            state: Mutex::new(State {
                circuit: Circuit::closed(policy(config), Instant::now()),
                resting_until: None,
            }),
            latency_us: AtomicU64::new(0),
            recovered: watch::channel(0).0,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every update leaves the state consistent, so a poisoned lock is usable.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether the upstream would be admitted now, without taking the probe
    /// slot: for choosing among candidates.
    pub fn available(&self, now: Instant) -> bool {
        self.out_until(&self.lock(), now).is_none()
    }

    /// Until when the upstream is out of rotation, if it is.
    fn out_until(&self, state: &State, now: Instant) -> Option<Instant> {
        let out = state.circuit.out_until(now).max(state.resting_until);
        out.filter(|until| *until > now)
    }

    /// Admits a request to this upstream, or says for how long it is out.
    pub fn admit(&self, now: Instant) -> Admission {
        let mut state = self.lock();
        if let Some(until) = state.resting_until {
            if until > now {
                return Admission::Closed {
                    for_at_least: until - now,
                    why: Why::RateLimited,
                };
            }
            state.resting_until = None;
        }
        let why = match state.circuit.state() {
            breaker::State::HalfOpen => Why::Probing,
            _ => Why::BreakerOpen,
        };
        let before = state.circuit.state();
        match state.circuit.admit(now) {
            Admit::Go => Admission::Open,
            Admit::Wait(for_at_least) => Admission::Closed { for_at_least, why },
            Admit::Probe => {
                self.changed(before, state.circuit.state());
                Admission::Probe
            }
        }
    }

    /// A request goes to this upstream although its breaker keeps it out
    /// (every alternative is out too): it is the probe, so its success
    /// closes the breaker at once.
    pub fn panic_probe(&self, now: Instant) {
        let mut state = self.lock();
        let before = state.circuit.state();
        state.circuit.probe(now);
        let after = state.circuit.state();
        drop(state);
        metrics::counter!(crate::observe::UPSTREAM_PANIC_TOTAL, "upstream" => self.label.clone())
            .increment(1);
        self.changed(before, after);
    }

    /// Takes in one attempt's outcome.
    pub fn record(&self, outcome: Outcome, now: Instant) {
        let mut state = self.lock();
        let before = state.circuit.state();
        let Some(after) = state.circuit.record(outcome == Outcome::Success, now) else {
            return;
        };
        drop(state);
        self.changed(before, after);
        if after == breaker::State::Closed {
            self.recovered.send_modify(|n| *n += 1);
        }
    }

    /// Reports a change of the breaker's state: the gauge and a log line.
    fn changed(&self, before: breaker::State, after: breaker::State) {
        if before == after {
            return;
        }
        let after = BreakerState::from(after);
        metrics::gauge!(UPSTREAM_BREAKER_STATE, "upstream" => self.label.clone())
            .set(after.gauge());
        match after {
            BreakerState::Open => {
                tracing::warn!(upstream = %self.label, cooldown = ?self.config.cooldown, "upstream breaker opened");
            }
            BreakerState::HalfOpen => {
                tracing::info!(upstream = %self.label, "upstream breaker half-open: probing");
            }
            BreakerState::Closed => {
                tracing::info!(upstream = %self.label, "upstream breaker closed: upstream is back");
            }
        }
    }

    /// Takes the upstream out of rotation until `until` (a 429 that said how
    /// long to wait, answered to sluice's own key).
    pub fn rest(&self, until: Instant) {
        let mut state = self.lock();
        if state.resting_until.is_none_or(|current| current < until) {
            state.resting_until = Some(until);
        }
    }

    /// Takes in the time one attempt took to its answer head. Peaks are taken
    /// at once, improvements slowly, so a slowing upstream loses traffic fast.
    pub fn observe_latency(&self, took: Duration) {
        let sample = took.as_secs_f64() * 1e6;
        let current = f64::from_bits(self.latency_us.load(Ordering::Relaxed));
        let next = if current == 0.0 || sample > current {
            sample
        } else {
            current + LATENCY_ALPHA * (sample - current)
        };
        self.latency_us.store(next.to_bits(), Ordering::Relaxed);
    }

    /// The latency average in microseconds; 0 before the first answer.
    pub fn latency_us(&self) -> f64 {
        f64::from_bits(self.latency_us.load(Ordering::Relaxed))
    }

    /// Tells a worker when this upstream recovered (to warm its pool again).
    pub fn recoveries(&self) -> watch::Receiver<u64> {
        self.recovered.subscribe()
    }

    /// What `/readyz` shows about this upstream.
    pub fn report(&self, now: Instant) -> Report {
        let state = self.lock();
        let (ok, failed) = state.circuit.recent(now);
        let out_until = self.out_until(&state, now);
        Report {
            name: self.label.to_string(),
            breaker: state.circuit.state().into(),
            available: out_until.is_none(),
            recent_ok: ok,
            recent_failed: failed,
            open_for_s: out_until.map(|until| {
                (until.saturating_duration_since(now).as_secs_f64() * 10.0).round() / 10.0
            }),
            latency_ms: (self.latency_us() / 10.0).round() / 100.0,
        }
    }
}

/// The `[breaker]` settings as a circuit policy: a fixed cooldown, no
/// consecutive-failure rule (the ratio over the window decides).
fn policy(config: &BreakerConfig) -> Policy {
    Policy {
        window: config.window,
        min_calls: config.min_requests,
        failure_ratio: config.failure_ratio,
        consecutive: None,
        cooldown_min: config.cooldown,
        cooldown_max: config.cooldown,
    }
}

/// One upstream in the `/readyz` body.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub name: String,
    pub breaker: BreakerState,
    /// Whether a request could be sent to it now.
    pub available: bool,
    pub recent_ok: u64,
    pub recent_failed: u64,
    /// Seconds until it is tried again, when it is out of rotation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub open_for_s: Option<f64>,
    /// Average time to an answer head.
    pub latency_ms: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn health(min_requests: u32, ratio: f64) -> Health {
        Health::new(
            "test",
            &BreakerConfig {
                failure_ratio: ratio,
                min_requests,
                window: Duration::from_secs(10),
                cooldown: Duration::from_secs(30),
            },
        )
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn opens_past_the_failure_ratio_with_enough_requests() {
        let h = health(4, 0.5);
        let t = Instant::now();
        h.record(Outcome::Failure, t);
        h.record(Outcome::Failure, t);
        h.record(Outcome::Success, t);
        // Three requests: below min_requests, stays closed.
        assert_eq!(h.admit(t), Admission::Open);
        h.record(Outcome::Success, t);
        h.record(Outcome::Failure, t);
        // 3 of 5 failed: open for the cooldown.
        assert!(matches!(
            h.admit(t + secs(1)),
            Admission::Closed {
                why: Why::BreakerOpen,
                ..
            }
        ));
        assert!(!h.available(t + secs(29)));
        assert_eq!(h.report(t).breaker, BreakerState::Open);
    }

    #[test]
    fn successes_keep_it_closed() {
        let h = health(4, 0.5);
        let t = Instant::now();
        for _ in 0..10 {
            h.record(Outcome::Success, t);
        }
        for _ in 0..9 {
            h.record(Outcome::Failure, t);
        }
        assert_eq!(h.admit(t), Admission::Open);
        h.record(Outcome::Failure, t);
        assert_ne!(h.admit(t), Admission::Open);
    }

    #[test]
    fn old_outcomes_leave_the_window() {
        let h = health(2, 0.5);
        let t = Instant::now();
        h.record(Outcome::Failure, t);
        h.record(Outcome::Success, t);
        h.record(Outcome::Success, t);
        // 11 s later the first three no longer count: one failure alone is
        // below min_requests.
        h.record(Outcome::Failure, t + secs(11));
        assert_eq!(h.admit(t + secs(11)), Admission::Open);
        h.record(Outcome::Failure, t + secs(12));
        assert_ne!(h.admit(t + secs(12)), Admission::Open);
    }

    #[test]
    fn half_open_probe_closes_or_reopens() {
        let h = health(1, 0.5);
        let t = Instant::now();
        let recovered = h.recoveries();
        h.record(Outcome::Failure, t);
        assert!(!h.available(t));
        // After the cooldown one probe goes through; others wait for it.
        let later = t + secs(30);
        assert!(h.available(later));
        assert_eq!(h.admit(later), Admission::Probe);
        assert!(matches!(
            h.admit(later),
            Admission::Closed {
                why: Why::Probing,
                ..
            }
        ));
        // The probe fails: open again for a whole cooldown.
        h.record(Outcome::Failure, later);
        assert!(!h.available(later + secs(29)));
        let again = later + secs(30);
        assert_eq!(h.admit(again), Admission::Probe);
        assert!(!recovered.has_changed().unwrap_or(true));
        h.record(Outcome::Success, again);
        assert_eq!(h.admit(again), Admission::Open);
        assert_eq!(h.report(again).breaker, BreakerState::Closed);
        assert!(recovered.has_changed().unwrap_or(false));
        // The window was cleared: one new failure opens it only with the
        // ratio met again (1 of 1 here).
        h.record(Outcome::Success, again);
        h.record(Outcome::Success, again);
        h.record(Outcome::Failure, again);
        assert_eq!(h.admit(again), Admission::Open);
    }

    #[test]
    fn a_lost_probe_frees_its_slot_after_a_cooldown() {
        let h = health(1, 0.5);
        let t = Instant::now();
        h.record(Outcome::Failure, t);
        assert_eq!(h.admit(t + secs(30)), Admission::Probe);
        assert!(!h.available(t + secs(59)));
        assert_eq!(h.admit(t + secs(60)), Admission::Probe);
    }

    #[test]
    fn rest_after_a_rate_limit() {
        let h = health(5, 0.5);
        let t = Instant::now();
        h.rest(t + secs(3));
        assert_eq!(
            h.admit(t + secs(1)),
            Admission::Closed {
                for_at_least: secs(2),
                why: Why::RateLimited
            }
        );
        let report = h.report(t + secs(1));
        assert!(!report.available);
        assert_eq!(report.open_for_s, Some(2.0));
        assert_eq!(h.admit(t + secs(3)), Admission::Open);
        assert_eq!(report.breaker, BreakerState::Closed);
    }

    #[test]
    fn latency_takes_peaks_at_once_and_recovers_slowly() {
        let h = health(5, 0.5);
        assert!(h.latency_us() == 0.0);
        h.observe_latency(Duration::from_millis(10));
        assert!((h.latency_us() - 10_000.0).abs() < 1.0);
        h.observe_latency(Duration::from_millis(100));
        assert!((h.latency_us() - 100_000.0).abs() < 1.0);
        h.observe_latency(Duration::from_millis(10));
        assert!((h.latency_us() - 82_000.0).abs() < 1.0);
    }
}
