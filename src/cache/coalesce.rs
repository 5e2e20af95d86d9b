//! Coalescing: identical cacheable requests that arrive while one is in
//! flight wait for it instead of calling the upstream again.
//!
//! The first request for a key becomes the leader and goes upstream; later
//! ones become followers of its flight. The flight ends when the leader's
//! answer has been stored or abandoned (an error status, a failed or
//! cancelled upstream call, a client that went away): followers then look in
//! the cache again and, finding nothing, try themselves. Nobody waits on a
//! leader that is gone.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use super::key::CacheKey;
use super::live::LiveStream;

/// A streamed answer a flight shares live, and whether it carries the final
/// usage chunk (`include_usage`), which followers must match to share it.
pub type Live = (Arc<LiveStream>, bool);

#[derive(Debug, Clone)]
struct Flight {
    done: watch::Receiver<()>,
    live: Option<Live>,
}

/// The flights in progress, by key. Shared by every worker.
#[derive(Debug, Default)]
pub struct InFlight {
    flights: Mutex<HashMap<CacheKey, Flight>>,
}

/// What a request is to the flight for its key.
#[derive(Debug)]
pub enum Role {
    /// Goes upstream; the flight lasts as long as this guard.
    Leader(FlightGuard),
    /// Waits for the leader's flight to end, or follows its live stream.
    Follower {
        done: watch::Receiver<()>,
        live: Option<Live>,
    },
}

impl InFlight {
    /// Joins the flight for `key`, starting it if there is none; a leader
    /// answering with a stream offers it as `live`.
    pub fn join(self: &Arc<Self>, key: CacheKey, live: Option<Live>) -> Role {
        let mut flights = match self.flights.lock() {
            Ok(flights) => flights,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some(flight) = flights.get(&key) {
            return Role::Follower {
                done: flight.done.clone(),
                live: flight.live.clone(),
            };
        }
        let (done, flight) = watch::channel(());
        flights.insert(key, Flight { done: flight, live });
        Role::Leader(FlightGuard {
            in_flight: self.clone(),
            key,
            _done: done,
        })
    }

    /// Flights in progress.
    pub fn len(&self) -> usize {
        self.flights.lock().map_or(0, |f| f.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Held by the leader; dropping it ends the flight and wakes the followers.
#[derive(Debug)]
pub struct FlightGuard {
    in_flight: Arc<InFlight>,
    key: CacheKey,
    /// Never sent on: its drop is the signal.
    _done: watch::Sender<()>,
}

impl Drop for FlightGuard {
    fn drop(&mut self) {
        let mut flights = match self.in_flight.flights.lock() {
            Ok(flights) => flights,
            Err(poisoned) => poisoned.into_inner(),
        };
        flights.remove(&self.key);
    }
}

/// Waits until the flight a follower joined has ended.
pub async fn landed(mut flight: watch::Receiver<()>) {
    // `changed` fails once the leader's sender is dropped, which is the end.
    while flight.changed().await.is_ok() {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    // Paused clock: the spawned task runs as far as it can before the sleep
    // ends, so "not finished yet" is a fact, not a race.
    #[tokio::test(start_paused = true)]
    async fn followers_wake_when_the_leader_is_done() {
        let in_flight = Arc::new(InFlight::default());
        let key = CacheKey([1; 32]);
        let Role::Leader(guard) = in_flight.join(key, None) else {
            panic!("first is not the leader")
        };
        let Role::Follower { done: flight, .. } = in_flight.join(key, None) else {
            panic!("second is not a follower")
        };
        #[expect(clippy::disallowed_methods, reason = "a test task, awaited below")]
        let waiter = tokio::spawn(landed(flight));
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished());
        drop(guard);
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .unwrap_or_else(|_| panic!("follower stranded"))
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(in_flight.is_empty());
        assert!(matches!(in_flight.join(key, None), Role::Leader(_)));
    }

    #[tokio::test]
    async fn different_keys_fly_separately() {
        let in_flight = Arc::new(InFlight::default());
        let a = in_flight.join(CacheKey([1; 32]), None);
        let b = in_flight.join(CacheKey([2; 32]), None);
        assert!(matches!((a, b), (Role::Leader(_), Role::Leader(_))));
    }
}
