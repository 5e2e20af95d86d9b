//! Sessions: the requests of one session run one at a time.
//!
//! A request carrying the session header (`[sessions] header`, default
//! `x-session-id`) runs only while fewer than `max_concurrent` requests of
//! its session are running; the others wait for their turn in arrival order.
//! A request runs until its answer's body has ended or been dropped, streams
//! included, so an agent's next step never reaches the upstream before the
//! previous answer is complete. Requests without the header, and requests of
//! other sessions, are never held back. A session belongs to a client: it is
//! keyed by the client's [`Identity`] and the session id, so two clients
//! that happen to use the same id never wait on each other.
//!
//! ```text
//! POST /v1/chat/completions  x-session-id: job-7   runs
//! POST /v1/chat/completions  x-session-id: job-7   waits for the first answer's last byte
//! POST /v1/chat/completions  x-session-id: job-8   runs
//! POST /v1/chat/completions                        runs
//! ```
//!
//! The header is addressed to sluice and removed before forwarding; a value
//! that is not 1 to 256 visible ASCII characters is a 400. A request still
//! waiting when its deadline comes gets 503 `session_busy`. Sessions idle for
//! `idle_timeout` are forgotten, so the map of sessions stays bounded.
//!
//! The layer sits below the cache: a cached answer never waits for its
//! session.

mod sessions;

mod service;

pub use service::*;

use std::time::Duration;

use http::{HeaderMap, HeaderName};

use crate::body::Body;
use crate::config::SessionsConfig;
use crate::context::Identity;
use crate::edge::timeout::Deadline;
use crate::error::Error;
pub use sessions::{Sessions, Ticket, Turn};

pub use crate::error::session::MAX_ID_LEN;

pub use crate::error::SessionError;

/// When a request waiting for its session gives up, given the request's
/// deadline.
///
/// The edge Timeout layer answers 504 at the deadline itself. When both
/// timers fire in the same tick, which answer the client gets depends on
/// which future is polled first: today the Timeout polls the request before
/// its own timer, so the 503 would win, but a layer in between that moves
/// the request to another task (or over a channel) would turn that into a
/// race. Giving up a little earlier — 1% of the time left, at most 50 ms —
/// leaves room for the 503 to travel up, and costs a waiting request
/// nothing it could have used: its answer head could not have arrived in
/// that sliver anyway.
fn give_up_at(deadline: tokio::time::Instant) -> tokio::time::Instant {
    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
    deadline - (left / 100).min(Duration::from_millis(50))
}

/// The request's session id: `None` without the header; an error when a
/// value is empty, longer than [`MAX_ID_LEN`], not visible ASCII (spaces
/// inside allowed), or when the header is repeated.
fn session_id(header: &HeaderName, headers: &HeaderMap) -> Result<Option<Box<str>>, SessionError> {
    let mut values = headers.get_all(header).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    let bytes = value.as_bytes();
    let visible = |b: &u8| (b' '..=b'~').contains(b);
    if values.next().is_some()
        || bytes.is_empty()
        || bytes.len() > MAX_ID_LEN
        || !bytes.iter().all(visible)
    {
        return Err(SessionError::InvalidHeader {
            header: header.clone(),
        });
    }
    // All visible ASCII, so valid UTF-8.
    Ok(Some(String::from_utf8_lossy(bytes).into()))
}

#[cfg(test)]
mod tests;
