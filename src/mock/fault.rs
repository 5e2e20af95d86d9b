//! Which requests get their fault (`x-mock-fail-times`, `x-mock-fail-rate`), and the
//! error that makes hyper drop a connection unanswered (`x-mock-fault: drop`).
//!
//! `x-mock-fail-times: N` counts requests per fault key: the client's
//! `x-mock-fault-key`, or else a blake3 hash of method, path and body, so a retried
//! request fails N times and then succeeds.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use http::request::Parts;

use super::controls::When;

/// Fault keys remembered before the counts start over, so a long run with ever-new
/// keys stays bounded.
const MAX_KEYS: usize = 100_000;

/// What a service returns to make hyper close the connection without an answer:
/// nothing is written on HTTP/1.1, the stream is reset on HTTP/2.
#[derive(Debug, thiserror::Error)]
#[error("mock upstream: connection dropped as asked by x-mock-fault")]
pub(crate) struct Dropped;

/// Requests seen per fault key.
#[derive(Debug, Default)]
pub(crate) struct FaultCounts {
    seen: Mutex<HashMap<FaultKey, u64>>,
}

impl FaultCounts {
    /// Counts one more request of `key`; true while it is among the first `times`.
    fn count(&self, key: FaultKey, times: u64) -> bool {
        let mut seen = self.lock();
        if seen.len() >= MAX_KEYS && !seen.contains_key(&key) {
            seen.clear();
        }
        let count = seen.entry(key).or_insert(0);
        let earlier = *count;
        *count = earlier.saturating_add(1);
        earlier < times
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<FaultKey, u64>> {
        // A panic while counting cannot leave the map inconsistent.
        self.seen.lock().unwrap_or_else(PoisonError::into_inner)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().len()
    }
}

/// A request's fault key, as a blake3 hash.
pub(crate) type FaultKey = [u8; 32];

/// Builds a request's fault key; the body is fed in as it arrives when it is part of it.
pub(crate) struct KeyHasher {
    hasher: blake3::Hasher,
    wants_body: bool,
}

impl KeyHasher {
    /// The client's `x-mock-fault-key` when given, else method and path so far.
    pub(crate) fn new(when: &When, parts: &Parts) -> Self {
        let mut hasher = blake3::Hasher::new();
        match &when.key {
            Some(key) => {
                hasher.update(b"sluice-mock-fault-key/1\0key\0");
                hasher.update(key.as_bytes());
            }
            None => {
                hasher.update(b"sluice-mock-fault-key/1\0request\0");
                hasher.update(parts.method.as_str().as_bytes());
                hasher.update(b"\0");
                hasher.update(parts.uri.path().as_bytes());
                hasher.update(b"\0");
            }
        }
        Self {
            hasher,
            wants_body: when.key.is_none(),
        }
    }

    /// Adds the next piece of the request body.
    pub(crate) fn update(&mut self, body: &[u8]) {
        if self.wants_body {
            self.hasher.update(body);
        }
    }

    pub(crate) fn finish(&self) -> FaultKey {
        *self.hasher.finalize().as_bytes()
    }
}

/// Whether a request gets its fault: among the first `when.times` requests of its key
/// (counted whether or not it is drawn), and drawn at `when.rate`.
pub(crate) fn applies(when: &When, key: Option<FaultKey>, counts: &FaultCounts) -> bool {
    let counted = match (when.times, key) {
        (Some(times), Some(key)) => counts.count(key, times),
        (Some(times), None) => times > 0,
        (None, _) => true,
    };
    // fastrand::f64 is in [0, 1): a rate of 0 never hits and a rate of 1 always does.
    counted && when.rate.is_none_or(|rate| fastrand::f64() < rate)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_the_first_times_per_key() {
        let counts = FaultCounts::default();
        let when = When {
            times: Some(2),
            ..When::default()
        };
        let (a, b) = ([1; 32], [2; 32]);
        let hits: Vec<bool> = [a, a, b, a, b, b]
            .into_iter()
            .map(|key| applies(&when, Some(key), &counts))
            .collect();
        assert_eq!(hits, [true, true, true, false, true, false]);
        let never = When {
            times: Some(0),
            ..When::default()
        };
        assert!(!applies(&never, Some([3; 32]), &counts));
    }

    #[test]
    fn rate_ends_are_deterministic() {
        let counts = FaultCounts::default();
        let rate = |rate| When {
            rate: Some(rate),
            ..When::default()
        };
        assert!((0..1000).all(|_| applies(&rate(1.0), None, &counts)));
        assert!((0..1000).all(|_| !applies(&rate(0.0), None, &counts)));
        assert!(applies(&When::default(), None, &counts));
    }

    #[test]
    fn keys_stay_bounded() {
        let counts = FaultCounts::default();
        let when = When {
            times: Some(1),
            ..When::default()
        };
        for i in 0..=MAX_KEYS {
            let mut key = [0; 32];
            key[..8].copy_from_slice(&(i as u64).to_le_bytes());
            applies(&when, Some(key), &counts);
        }
        assert_eq!(counts.len(), 1);
    }

    #[test]
    fn keys_cover_method_path_and_body_or_the_client_key() {
        let parts = |method: &str, uri: &str| {
            let (parts, ()) = http::Request::builder()
                .method(method)
                .uri(uri)
                .body(())
                .unwrap_or_else(|e| panic!("{e}"))
                .into_parts();
            parts
        };
        let key = |when: &When, parts: &Parts, body: &[u8]| {
            let mut hasher = KeyHasher::new(when, parts);
            hasher.update(body);
            hasher.finish()
        };
        let by_request = When::default();
        let post = parts("POST", "/v1/chat/completions?x=1");
        let base = key(&by_request, &post, b"{}");
        assert_eq!(
            base,
            key(&by_request, &parts("POST", "/v1/chat/completions"), b"{}")
        );
        assert_ne!(base, key(&by_request, &post, b"{ }"));
        assert_ne!(
            base,
            key(&by_request, &parts("PUT", "/v1/chat/completions"), b"{}")
        );
        assert_ne!(
            base,
            key(&by_request, &parts("POST", "/v1/completions"), b"{}")
        );

        let by_name = When {
            key: Some(http::HeaderValue::from_static("a")),
            ..When::default()
        };
        assert_eq!(
            key(&by_name, &post, b"1"),
            key(&by_name, &parts("GET", "/x"), b"2")
        );
        assert_ne!(key(&by_name, &post, b""), base);
    }
}
