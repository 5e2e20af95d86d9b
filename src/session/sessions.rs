//! The map of sessions: one fair semaphore per (client, session id), and the
//! sweep that forgets idle ones.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use super::SessionError;
use crate::context::Identity;
use crate::observe::{SESSION_WAIT, SESSIONS_ACTIVE};

/// Every session with a request running or waiting, and those idle for less
/// than `idle_timeout`.
pub struct Sessions {
    max_concurrent: usize,
    idle_timeout: Duration,
    /// Never held across an await.
    map: Mutex<Map>,
    wait_seconds: metrics::Histogram,
    active: metrics::Gauge,
}

struct Map {
    /// SipHash with a random key (std's default): session ids come from
    /// clients, so a predictable hash would let one flood a bucket.
    entries: HashMap<Key, Arc<Entry>>,
    last_sweep: Instant,
}

#[derive(PartialEq, Eq, Hash)]
struct Key {
    client: Identity,
    id: Box<str>,
}

/// One session. Its `Arc` is cloned into every request of the session
/// running or waiting, so a strong count of 1 (the map's) means idle.
struct Entry {
    /// `max_concurrent` permits; Tokio's semaphore is fair (first come,
    /// first served).
    turns: Arc<Semaphore>,
    /// When the last request let go of it.
    idle_since: Mutex<Instant>,
}

impl Entry {
    fn idle_since(&self) -> MutexGuard<'_, Instant> {
        self.idle_since
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// A request's place in its session, waiting or running: keeps the session
/// in the map.
pub struct Ticket {
    entry: Arc<Entry>,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        *self.entry.idle_since() = Instant::now();
    }
}

/// A request's turn to run: held until its answer's body has ended or been
/// dropped.
pub struct Turn {
    // Fields drop in order: the next request is let in, then the session's
    // idle clock starts.
    _permit: OwnedSemaphorePermit,
    _ticket: Ticket,
}

impl Ticket {
    /// The turn, if the session has room now (never ahead of a waiting
    /// request: the semaphore hands released permits to waiters first).
    pub fn try_turn(self) -> Result<Turn, Ticket> {
        match self.entry.turns.clone().try_acquire_owned() {
            Ok(permit) => Ok(Turn {
                _permit: permit,
                _ticket: self,
            }),
            Err(_) => Err(self),
        }
    }
}

impl std::fmt::Debug for Ticket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Ticket")
    }
}

impl std::fmt::Debug for Turn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Turn")
    }
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions")
            .field("max_concurrent", &self.max_concurrent)
            .field("idle_timeout", &self.idle_timeout)
            .field("len", &self.len())
            .finish()
    }
}

impl Sessions {
    /// An empty map; `max_concurrent` is at least 1.
    pub fn new(max_concurrent: usize, idle_timeout: Duration) -> Arc<Sessions> {
        Arc::new(Sessions {
            max_concurrent: max_concurrent.clamp(1, Semaphore::MAX_PERMITS),
            idle_timeout,
            map: Mutex::new(Map {
                entries: HashMap::new(),
                last_sweep: Instant::now(),
            }),
            wait_seconds: metrics::histogram!(SESSION_WAIT),
            active: metrics::gauge!(SESSIONS_ACTIVE),
        })
    }

    fn map(&self) -> MutexGuard<'_, Map> {
        // Every change to the map is a single insert or retain: a panic
        // elsewhere cannot leave it half-changed.
        self.map.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sessions in the map.
    pub fn len(&self) -> usize {
        self.map().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A place in `client`'s session `id`, creating the session if needed.
    /// Creating one also sweeps the map when the last sweep is older than
    /// half the idle timeout, so the map stays bounded without the
    /// background task too.
    pub fn join(&self, client: Identity, id: Box<str>) -> Ticket {
        let mut map = self.map();
        let key = Key { client, id };
        let entry = match map.entries.get(&key) {
            Some(entry) => entry.clone(),
            None => {
                let entry = Arc::new(Entry {
                    turns: Arc::new(Semaphore::new(self.max_concurrent)),
                    idle_since: Mutex::new(Instant::now()),
                });
                map.entries.insert(key, entry.clone());
                if map.last_sweep.elapsed() >= self.idle_timeout / 2 {
                    self.sweep_locked(&mut map);
                }
                self.active.set(map.entries.len() as f64);
                entry
            }
        };
        Ticket { entry }
    }

    /// Waits for `ticket`'s turn, giving up at `until` (no bound without).
    pub async fn wait(&self, ticket: Ticket, until: Option<Instant>) -> Result<Turn, SessionError> {
        let started = Instant::now();
        let acquire = ticket.entry.turns.clone().acquire_owned();
        let permit = match until {
            Some(until) => tokio::time::timeout_at(until, acquire).await.ok(),
            None => Some(acquire.await),
        };
        let waited = started.elapsed();
        self.record_wait(waited);
        match permit {
            // The semaphore is never closed: `Err` cannot happen.
            Some(Ok(permit)) => {
                tracing::debug!(waited_ms = waited.as_millis() as u64, "session turn");
                Ok(Turn {
                    _permit: permit,
                    _ticket: ticket,
                })
            }
            Some(Err(_)) | None => {
                tracing::debug!(waited_ms = waited.as_millis() as u64, "session busy");
                Err(SessionError::Busy { waited })
            }
        }
    }

    pub(super) fn record_wait(&self, waited: Duration) {
        self.wait_seconds.record(waited.as_secs_f64());
    }

    /// Forgets sessions idle (nothing running or waiting) for at least
    /// `idle_timeout`; returns how many. A session in use is never
    /// forgotten: a new request would then get a fresh session and run
    /// beside the ones already running.
    pub fn sweep(&self) -> usize {
        let mut map = self.map();
        let removed = self.sweep_locked(&mut map);
        self.active.set(map.entries.len() as f64);
        removed
    }

    fn sweep_locked(&self, map: &mut Map) -> usize {
        let now = Instant::now();
        let before = map.entries.len();
        // A request takes its clone of the entry under this lock, so a
        // count of 1 here cannot go up before the entry is gone.
        map.entries.retain(|_, entry| {
            Arc::strong_count(entry) > 1
                || now.saturating_duration_since(*entry.idle_since()) < self.idle_timeout
        });
        map.last_sweep = now;
        let removed = before - map.entries.len();
        if removed > 0 {
            tracing::debug!(removed, left = map.entries.len(), "idle sessions forgotten");
        }
        removed
    }

    /// Sweeps every half idle timeout on the current Tokio runtime, if
    /// there is one, until the map is dropped. Nothing waits for this task
    /// at shutdown: it holds no state of its own.
    pub fn sweep_in_background(self: &Arc<Self>) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let sessions: Weak<Sessions> = Arc::downgrade(self);
        let period = (self.idle_timeout / 2).max(Duration::from_millis(1));
        runtime.spawn(async move {
            let mut tick = tokio::time::interval_at(Instant::now() + period, period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(sessions) = sessions.upgrade() else {
                    return;
                };
                sessions.sweep();
            }
        });
    }
}
