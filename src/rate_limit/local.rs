//! Limits kept in this process: governor's keyed GCRA for requests, and a
//! GCRA ledger for tokens that can also give tokens back (governor cannot:
//! a tokens-per-minute reservation is settled with the upstream's usage
//! afterwards, up or down).

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DashMapStateStore;
use governor::{Quota, RateLimiter};

use super::{Denied, Kind, Verdict, Window};
use crate::context::Identity;

/// The limits' window: a client may use a whole minute's allowance at once.
pub const PERIOD: Duration = Duration::from_secs(60);

/// How often stale per-client state is dropped.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

type Requests =
    RateLimiter<Identity, DashMapStateStore<Identity>, DefaultClock, StateInformationMiddleware>;

/// Per-client limits of this process.
pub struct Local {
    requests: Option<(Requests, u32)>,
    tokens: Option<Ledger>,
    clock: DefaultClock,
    start: Instant,
    /// Milliseconds after `start` of the last sweep.
    swept: AtomicU64,
}

impl std::fmt::Debug for Local {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Local")
            .field("requests", &self.requests.as_ref().map(|(_, limit)| limit))
            .field("tokens", &self.tokens.as_ref().map(|l| l.limit))
            .finish_non_exhaustive()
    }
}

impl Local {
    pub fn new(requests_per_minute: Option<u32>, tokens_per_minute: Option<u64>) -> Local {
        let requests = requests_per_minute.and_then(NonZeroU32::new).map(|limit| {
            let limiter = RateLimiter::dashmap(Quota::per_minute(limit))
                .with_middleware::<StateInformationMiddleware>();
            (limiter, limit.get())
        });
        Local {
            requests,
            tokens: tokens_per_minute.filter(|l| *l > 0).map(Ledger::new),
            clock: DefaultClock::default(),
            start: Instant::now(),
            swept: AtomicU64::new(0),
        }
    }

    /// Takes one request from `client`'s allowance, then `cost` tokens. A
    /// request refused for its tokens still counts as a request (as at
    /// OpenAI); one refused as a request takes no tokens.
    pub fn take(&self, client: &Identity, cost: u64) -> Verdict {
        self.sweep();
        let mut verdict = Verdict::default();
        if let Some((limiter, limit)) = &self.requests {
            let limit = u64::from(*limit);
            let interval = PERIOD.as_nanos() as u64 / limit.max(1);
            match limiter.check_key(client) {
                Ok(state) => {
                    let remaining = u64::from(state.remaining_burst_capacity()).min(limit);
                    verdict.requests = Some(Window {
                        limit,
                        remaining,
                        reset: Duration::from_nanos((limit - remaining) * interval),
                    });
                }
                Err(not_until) => {
                    let wait = not_until.wait_time_from(self.clock.now());
                    verdict.requests = Some(Window {
                        limit,
                        remaining: 0,
                        reset: wait + Duration::from_nanos((limit - 1) * interval),
                    });
                    verdict.denied = Some(Denied {
                        kind: Kind::Requests,
                        retry_after: wait,
                    });
                }
            }
        }
        if let Some(ledger) = &self.tokens {
            let now = Instant::now();
            if verdict.denied.is_some() {
                verdict.tokens = Some(ledger.peek(client, now));
            } else {
                match ledger.take(client, cost, now) {
                    Ok(window) => verdict.tokens = Some(window),
                    Err((window, denied)) => {
                        verdict.tokens = Some(window);
                        verdict.denied = Some(denied);
                    }
                }
            }
        }
        verdict
    }

    /// Gives `delta` tokens back (negative) or takes more (positive) after
    /// the fact.
    pub fn settle(&self, client: &Identity, delta: i128) {
        if let Some(ledger) = &self.tokens {
            ledger.settle(client, delta, Instant::now());
        }
    }

    /// Clients with state kept (for the sweep's tests).
    #[cfg(test)]
    pub fn clients(&self) -> usize {
        self.requests.as_ref().map_or(0, |(l, _)| l.len())
            + self.tokens.as_ref().map_or(0, Ledger::len)
    }

    /// Drops the state of clients whose allowance is full again, at most
    /// once a minute.
    fn sweep(&self) {
        let now = self.start.elapsed().as_millis() as u64;
        let last = self.swept.load(Ordering::Relaxed);
        if now.saturating_sub(last) < SWEEP_EVERY.as_millis() as u64
            || self
                .swept
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        if let Some((limiter, _)) = &self.requests {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
        if let Some(ledger) = &self.tokens {
            ledger.retain_recent(Instant::now());
        }
    }
}

/// GCRA over tokens: each client's theoretical arrival time (`tat`); a
/// client is within its limit while `tat` is at most a period ahead of now.
pub struct Ledger {
    limit: u64,
    /// Nanoseconds of allowance one token stands for.
    per_token: f64,
    tats: Mutex<HashMap<Identity, Instant>>,
}

impl Ledger {
    pub fn new(limit: u64) -> Ledger {
        Ledger {
            limit,
            per_token: PERIOD.as_nanos() as f64 / limit as f64,
            tats: Mutex::new(HashMap::new()),
        }
    }

    fn span(&self, tokens: u64) -> Duration {
        Duration::from_nanos((tokens as f64 * self.per_token).min(u64::MAX as f64) as u64)
    }

    /// The window as seen with `tat` at `now`.
    fn window(&self, tat: Instant, now: Instant) -> Window {
        let used = tat.saturating_duration_since(now);
        let left = PERIOD.saturating_sub(used);
        Window {
            limit: self.limit,
            remaining: ((left.as_nanos() as f64 / self.per_token) as u64).min(self.limit),
            reset: used,
        }
    }

    /// `client`'s window now, taking nothing.
    pub fn peek(&self, client: &Identity, now: Instant) -> Window {
        let tats = self.tats.lock().unwrap_or_else(PoisonError::into_inner);
        let tat = tats.get(client).copied().unwrap_or(now).max(now);
        self.window(tat, now)
    }

    pub fn take(
        &self,
        client: &Identity,
        cost: u64,
        now: Instant,
    ) -> Result<Window, (Window, Denied)> {
        let mut tats = self.tats.lock().unwrap_or_else(PoisonError::into_inner);
        let tat = tats.get(client).copied().unwrap_or(now).max(now);
        let next = tat + self.span(cost);
        if cost > self.limit {
            let denied = Denied {
                kind: Kind::TooLarge { requested: cost },
                retry_after: Duration::ZERO,
            };
            return Err((self.window(tat, now), denied));
        }
        let ahead = next.saturating_duration_since(now);
        // Nothing asked (a path without a prompt): a client in debt still passes.
        if cost > 0 && ahead > PERIOD {
            let denied = Denied {
                kind: Kind::Tokens,
                retry_after: ahead - PERIOD,
            };
            return Err((self.window(tat, now), denied));
        }
        tats.insert(client.clone(), next);
        Ok(self.window(next, now))
    }

    pub fn settle(&self, client: &Identity, delta: i128, now: Instant) {
        if delta == 0 {
            return;
        }
        let mut tats = self.tats.lock().unwrap_or_else(PoisonError::into_inner);
        let tat = tats.get(client).copied().unwrap_or(now).max(now);
        let span = self.span(delta.unsigned_abs().min(u64::MAX as u128) as u64);
        let next = if delta > 0 {
            tat + span
        } else {
            tat.checked_sub(span).unwrap_or(now).max(now)
        };
        if next > now {
            tats.insert(client.clone(), next);
        } else {
            tats.remove(client);
        }
    }

    fn retain_recent(&self, now: Instant) {
        let mut tats = self.tats.lock().unwrap_or_else(PoisonError::into_inner);
        tats.retain(|_, tat| *tat > now);
        tats.shrink_to_fit();
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.tats
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(name: &str) -> Identity {
        Identity::named(name)
    }

    #[test]
    fn requests_per_minute_burst_then_wait() {
        let local = Local::new(Some(3), None);
        let a = client("a");
        let mut remaining = Vec::new();
        for _ in 0..3 {
            let v = local.take(&a, 0);
            assert!(v.denied.is_none());
            remaining.push(v.requests.map(|w| w.remaining));
        }
        assert_eq!(remaining, [Some(2), Some(1), Some(0)]);
        let v = local.take(&a, 0);
        let denied = v.denied.unwrap_or_else(|| panic!("fourth request allowed"));
        assert_eq!(denied.kind, Kind::Requests);
        // One request every 20 s comes back.
        assert!(denied.retry_after > Duration::from_secs(19));
        assert!(denied.retry_after <= Duration::from_secs(20));
        assert!(
            local.take_one(&client("b")).denied.is_none(),
            "other clients are apart"
        );
    }

    impl Local {
        fn take_one(&self, client: &Identity) -> Verdict {
            self.take(client, 0)
        }
    }

    #[test]
    fn tokens_are_reserved_and_settled() {
        let ledger = Ledger::new(1000);
        let a = client("a");
        let t0 = Instant::now();
        let w = ledger
            .take(&a, 600, t0)
            .unwrap_or_else(|_| panic!("denied"));
        assert_eq!(w.remaining, 400);
        assert!(ledger.take(&a, 500, t0).is_err(), "600 + 500 > 1000");
        // The upstream reported 200 tokens used: 400 come back.
        ledger.settle(&a, -400, t0);
        let w = ledger
            .take(&a, 500, t0)
            .unwrap_or_else(|_| panic!("denied"));
        assert_eq!(w.remaining, 300);
        // Debt: 700 more than reserved.
        ledger.settle(&a, 700, t0);
        let Err((_, denied)) = ledger.take(&a, 1, t0) else {
            panic!("allowed while in debt");
        };
        assert_eq!(denied.kind, Kind::Tokens);
        // 1,400 tokens of the 1,000/min allowance used: 24 s until one is back.
        assert!(denied.retry_after >= Duration::from_millis(24_000));
        assert!(denied.retry_after <= Duration::from_millis(24_100));
        // A minute later the whole allowance is back.
        let later = t0 + Duration::from_secs(85);
        let w = ledger
            .take(&a, 1000, later)
            .unwrap_or_else(|_| panic!("denied"));
        assert_eq!(w.remaining, 0);
        assert_eq!(w.reset, PERIOD);
    }

    #[test]
    fn a_request_without_tokens_passes_a_client_in_debt() {
        let ledger = Ledger::new(100);
        let a = client("a");
        let now = Instant::now();
        ledger.settle(&a, 500, now);
        assert!(ledger.take(&a, 1, now).is_err());
        let w = ledger
            .take(&a, 0, now)
            .unwrap_or_else(|_| panic!("refused"));
        assert_eq!(w.remaining, 0);
    }

    #[test]
    fn a_request_above_the_limit_is_too_large() {
        let ledger = Ledger::new(100);
        let Err((_, denied)) = ledger.take(&client("a"), 101, Instant::now()) else {
            panic!("allowed");
        };
        assert_eq!(denied.kind, Kind::TooLarge { requested: 101 });
    }

    #[test]
    fn refunds_never_go_below_a_full_allowance_and_state_is_dropped() {
        let ledger = Ledger::new(100);
        let a = client("a");
        let now = Instant::now();
        ledger.settle(&a, -1_000, now);
        assert_eq!(ledger.len(), 0);
        assert!(ledger.take(&a, 100, now).is_ok());
        assert!(ledger.take(&a, 1, now).is_err(), "not more than the limit");
        ledger.retain_recent(now + PERIOD + Duration::from_millis(1));
        assert_eq!(ledger.len(), 0);
    }

    #[test]
    fn a_request_refused_for_tokens_still_counts_as_a_request() {
        let local = Local::new(Some(2), Some(1000));
        let a = client("a");
        assert!(local.take(&a, 900).denied.is_none());
        let v = local.take(&a, 200);
        assert_eq!(v.denied.map(|d| d.kind), Some(Kind::Tokens));
        assert_eq!(v.requests.map(|w| w.remaining), Some(0));
        let v = local.take(&a, 1);
        assert_eq!(v.denied.map(|d| d.kind), Some(Kind::Requests));
        assert_eq!(v.tokens.map(|w| w.remaining), Some(100), "nothing taken");
        assert_eq!(
            local.take_one(&client("b")).tokens.map(|w| w.remaining),
            Some(1000)
        );
    }
}
