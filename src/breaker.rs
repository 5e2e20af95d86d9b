//! The circuit breaker, one for everything sluice calls: the upstreams
//! (`src/upstream/health.rs`) and Redis (`src/cache/redis/breaker.rs`) each
//! wrap a [`Circuit`] and add only how they probe and what they report.
//!
//! The usual three states (as in Hystrix or Envoy's outlier detection):
//! **closed** counts successes and failures over the last
//! [`Policy::window`] in one-second buckets, and a run of consecutive
//! failures. It **opens** once at least [`Policy::min_calls`] calls were
//! seen and the failed share reaches [`Policy::failure_ratio`], or after
//! [`Policy::consecutive`] failures in a row; calls are then kept away for a
//! cool-down. After it the circuit goes **half-open**: one probe is let
//! through. A successful probe closes it with fresh counts; a failed one
//! opens it again for a cool-down twice as long, up to
//! [`Policy::cooldown_max`]. A probe that never reports (its client left)
//! frees the slot after a cool-down, so the circuit cannot stay stuck.
//!
//! Plain data with no clock of its own: every call takes `now`, so the
//! behaviour is tested without waiting.
//!
//! ```
//! use std::time::{Duration, Instant};
//! use sluice::breaker::{Admit, Circuit, Policy, State};
//! let policy = Policy {
//!     window: Duration::from_secs(10),
//!     min_calls: 2,
//!     failure_ratio: 0.5,
//!     consecutive: None,
//!     cooldown_min: Duration::from_secs(30),
//!     cooldown_max: Duration::from_secs(30),
//! };
//! let now = Instant::now();
//! let mut circuit = Circuit::closed(policy, now);
//! circuit.record(false, now);
//! circuit.record(false, now);
//! assert_eq!(circuit.state(), State::Open);
//! assert!(matches!(circuit.admit(now), Admit::Wait(_)));
//! assert_eq!(circuit.admit(now + Duration::from_secs(30)), Admit::Probe);
//! circuit.record(true, now + Duration::from_secs(31));
//! assert_eq!(circuit.state(), State::Closed);
//! ```

use std::time::{Duration, Instant};

/// Where a circuit stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Calls go through; their outcomes are counted.
    Closed,
    /// Calls are kept away until the cool-down is over.
    Open,
    /// One probe is out; other calls are still kept away.
    HalfOpen,
}

/// When a circuit opens and how long it stays open.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// How far back outcomes count (in whole seconds, at least one).
    pub window: Duration,
    /// Calls the window must hold before its failed share can open the circuit.
    pub min_calls: u32,
    /// Failed share of the window's calls that opens the circuit (0 to 1).
    pub failure_ratio: f64,
    /// Failures in a row that open the circuit, whatever the window holds.
    pub consecutive: Option<u32>,
    /// The first cool-down.
    pub cooldown_min: Duration,
    /// The longest cool-down: each failed probe doubles it up to this.
    pub cooldown_max: Duration,
}

/// What a caller may do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Closed: go ahead.
    Go,
    /// The cool-down is over: this call is the probe.
    Probe,
    /// Kept away for at least this long.
    Wait(Duration),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Closed,
    Open { until: Instant },
    HalfOpen { since: Instant },
}

#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    /// Seconds since the circuit's epoch this bucket counts for.
    second: u64,
    ok: u32,
    failed: u32,
}

/// One circuit breaker's state.
#[derive(Debug, Clone)]
pub struct Circuit {
    policy: Policy,
    epoch: Instant,
    phase: Phase,
    buckets: Vec<Bucket>,
    consecutive: u32,
    /// The cool-down the next opening takes.
    cooldown: Duration,
}

impl Circuit {
    /// A closed circuit.
    pub fn closed(policy: Policy, now: Instant) -> Circuit {
        let seconds = usize::try_from(policy.window.as_secs().max(1)).unwrap_or(1);
        Circuit {
            cooldown: policy.cooldown_min,
            policy,
            epoch: now,
            phase: Phase::Closed,
            buckets: vec![Bucket::default(); seconds],
            consecutive: 0,
        }
    }

    /// A circuit that starts open, ready for its first probe: nothing is
    /// called until a probe succeeds.
    pub fn open(policy: Policy, now: Instant) -> Circuit {
        let mut circuit = Circuit::closed(policy, now);
        circuit.phase = Phase::Open { until: now };
        circuit
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    pub fn state(&self) -> State {
        match self.phase {
            Phase::Closed => State::Closed,
            Phase::Open { .. } => State::Open,
            Phase::HalfOpen { .. } => State::HalfOpen,
        }
    }

    /// Until when calls are kept away, if they are: the end of the
    /// cool-down, or of the probe's grace when one is out.
    pub fn out_until(&self, now: Instant) -> Option<Instant> {
        let until = match self.phase {
            Phase::Closed => return None,
            Phase::Open { until } => until,
            Phase::HalfOpen { since } => since + self.cooldown,
        };
        (until > now).then_some(until)
    }

    /// Lets a call through, makes it the probe, or says how long to wait.
    pub fn admit(&mut self, now: Instant) -> Admit {
        if self.phase == Phase::Closed {
            return Admit::Go;
        }
        match self.out_until(now) {
            Some(until) => Admit::Wait(until - now),
            None => {
                self.probe(now);
                Admit::Probe
            }
        }
    }

    /// A probe goes out now (for callers that probe on their own schedule).
    pub fn probe(&mut self, now: Instant) {
        self.phase = Phase::HalfOpen { since: now };
    }

    /// Takes in one call's outcome; returns the new state when it changed.
    pub fn record(&mut self, ok: bool, now: Instant) -> Option<State> {
        match self.phase {
            Phase::HalfOpen { .. } if ok => {
                self.reset();
                self.phase = Phase::Closed;
                Some(State::Closed)
            }
            Phase::HalfOpen { .. } => {
                self.trip(now);
                Some(State::Open)
            }
            // Late outcomes of calls made before it opened.
            Phase::Open { .. } => None,
            Phase::Closed => {
                self.count(ok, now);
                if !ok && self.tripped(now) {
                    self.trip(now);
                    return Some(State::Open);
                }
                None
            }
        }
    }

    /// Successes and failures within the window ending at `now`.
    pub fn recent(&self, now: Instant) -> (u64, u64) {
        let second = self.second(now);
        let len = self.buckets.len() as u64;
        self.buckets
            .iter()
            .filter(|b| b.second + len > second && b.second <= second)
            .fold((0, 0), |(ok, failed), b| {
                (ok + u64::from(b.ok), failed + u64::from(b.failed))
            })
    }

    fn count(&mut self, ok: bool, now: Instant) {
        let second = self.second(now);
        let len = self.buckets.len() as u64;
        let index = usize::try_from(second % len).unwrap_or(0);
        let bucket = &mut self.buckets[index];
        if bucket.second != second {
            *bucket = Bucket {
                second,
                ..Bucket::default()
            };
        }
        if ok {
            bucket.ok += 1;
            self.consecutive = 0;
        } else {
            bucket.failed += 1;
            self.consecutive += 1;
        }
    }

    fn tripped(&self, now: Instant) -> bool {
        if self
            .policy
            .consecutive
            .is_some_and(|n| self.consecutive >= n)
        {
            return true;
        }
        let (ok, failed) = self.recent(now);
        let total = ok + failed;
        total >= u64::from(self.policy.min_calls)
            && failed as f64 >= self.policy.failure_ratio * total as f64
    }

    /// Opens for the current cool-down; the next one is twice as long.
    fn trip(&mut self, now: Instant) {
        self.phase = Phase::Open {
            until: now + self.cooldown,
        };
        self.cooldown = self
            .cooldown
            .saturating_mul(2)
            .min(self.policy.cooldown_max)
            .max(self.policy.cooldown_min);
    }

    fn reset(&mut self) {
        self.buckets.fill(Bucket::default());
        self.consecutive = 0;
        self.cooldown = self.policy.cooldown_min;
    }

    fn second(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.epoch).as_secs()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(min_calls: u32, ratio: f64, consecutive: Option<u32>) -> Policy {
        Policy {
            window: Duration::from_secs(10),
            min_calls,
            failure_ratio: ratio,
            consecutive,
            cooldown_min: Duration::from_secs(1),
            cooldown_max: Duration::from_secs(4),
        }
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn a_run_of_failures_opens_it_and_a_success_breaks_the_run() {
        let t = Instant::now();
        let mut c = Circuit::closed(policy(1000, 0.5, Some(3)), t);
        c.record(false, t);
        c.record(false, t);
        c.record(true, t);
        c.record(false, t);
        c.record(false, t);
        assert_eq!(c.state(), State::Closed);
        assert_eq!(c.record(false, t), Some(State::Open));
    }

    #[test]
    fn failed_probes_double_the_cooldown_up_to_the_cap() {
        let t = Instant::now();
        let mut c = Circuit::closed(policy(1, 1.0, None), t);
        c.record(false, t);
        assert_eq!(c.admit(t), Admit::Wait(secs(1)));
        let mut now = t + secs(1);
        for expected in [2, 4, 4] {
            assert_eq!(c.admit(now), Admit::Probe);
            assert_eq!(c.record(false, now), Some(State::Open));
            assert_eq!(c.admit(now), Admit::Wait(secs(expected)));
            now += secs(expected);
        }
        assert_eq!(c.admit(now), Admit::Probe);
        assert_eq!(c.record(true, now), Some(State::Closed));
        // Closed again, the next opening starts from the shortest cool-down.
        c.record(false, now);
        assert_eq!(c.admit(now), Admit::Wait(secs(1)));
    }

    #[test]
    fn starts_open_when_asked_and_a_probe_closes_it() {
        let t = Instant::now();
        let mut c = Circuit::open(policy(1, 1.0, None), t);
        assert_eq!(c.state(), State::Open);
        c.probe(t);
        assert_eq!(c.state(), State::HalfOpen);
        assert!(c.out_until(t).is_some());
        assert_eq!(c.record(true, t), Some(State::Closed));
        assert_eq!(c.admit(t), Admit::Go);
    }

    #[test]
    fn outcomes_older_than_the_window_do_not_count() {
        let t = Instant::now();
        let mut c = Circuit::closed(policy(4, 0.5, None), t);
        c.record(false, t);
        c.record(false, t);
        c.record(false, t);
        assert_eq!(c.recent(t), (0, 3));
        assert_eq!(c.recent(t + secs(10)), (0, 0));
        assert_eq!(c.record(false, t + secs(10)), None);
    }
}
