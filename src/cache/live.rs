//! A streamed answer shared live: the leader of a flight publishes each
//! chunk as it relays it; a follower that joins late gets the chunks so far,
//! then the rest as they come, and the same ending (clean, or an error if
//! the leader's upstream failed). A publisher dropped before the end ends the
//! followers' streams with an error: nobody waits on a leader that is gone.

use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use tokio::sync::watch;

use crate::body::{self, Body, BoxError};
use crate::tokens::PromptTokens;

#[derive(Debug, Default)]
struct State {
    chunks: Vec<Bytes>,
    /// `Some(None)`: ended cleanly; `Some(Some(reason))`: failed.
    end: Option<Option<String>>,
}

/// One live stream, shared by its publisher and any followers.
#[derive(Debug)]
pub struct LiveStream {
    state: Mutex<State>,
    /// Bumped on every change, to wake followers.
    changed: watch::Sender<u64>,
    /// The leader's prompt tokens, for the followers' token headers.
    prompt: std::sync::OnceLock<PromptTokens>,
    /// Where the leader's usage lands, for the followers' savings.
    usage: std::sync::OnceLock<crate::report::usage::UsageSlot>,
}

impl LiveStream {
    pub fn new() -> Arc<LiveStream> {
        Arc::new(LiveStream {
            state: Mutex::default(),
            changed: watch::Sender::new(0),
            prompt: std::sync::OnceLock::new(),
            usage: std::sync::OnceLock::new(),
        })
    }

    /// Sets the prompt tokens followers report (the leader's, once).
    pub fn set_prompt(&self, prompt: PromptTokens) {
        let _ = self.prompt.set(prompt);
    }

    pub fn prompt(&self) -> Option<PromptTokens> {
        self.prompt.get().copied()
    }

    /// Sets where the leader's usage lands (once).
    pub fn set_usage(&self, slot: crate::report::usage::UsageSlot) {
        let _ = self.usage.set(slot);
    }

    pub fn usage(&self) -> Option<crate::report::usage::UsageSlot> {
        self.usage.get().cloned()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        match self.state.lock() {
            Ok(state) => state,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    fn update(&self, change: impl FnOnce(&mut State)) {
        {
            let mut state = self.lock();
            if state.end.is_some() {
                return;
            }
            change(&mut state);
        }
        self.changed.send_modify(|n| *n += 1);
    }

    /// Waits until the leader has sent its first chunk (`true`: its answer
    /// is a stream worth following) or ended without one (`false`: the
    /// follower should try on its own).
    pub async fn started(&self) -> bool {
        let mut changed = self.changed.subscribe();
        loop {
            {
                let state = self.lock();
                if !state.chunks.is_empty() {
                    return true;
                }
                if state.end.is_some() {
                    return false;
                }
            }
            if changed.changed().await.is_err() {
                return false;
            }
        }
    }

    /// A follower's body: every chunk from the first, then live.
    pub fn follow(self: &Arc<Self>) -> Body {
        let stream = futures_util::stream::unfold(
            (self.clone(), 0usize, self.changed.subscribe()),
            |(live, next, mut changed)| async move {
                if next == usize::MAX {
                    return None;
                }
                loop {
                    let step = {
                        let state = live.lock();
                        match (state.chunks.get(next), &state.end) {
                            (Some(chunk), _) => Some(Ok(chunk.clone())),
                            (None, Some(None)) => return None,
                            (None, Some(Some(reason))) => {
                                Some(Err::<Bytes, BoxError>(reason.clone().into()))
                            }
                            (None, None) => None,
                        }
                    };
                    match step {
                        Some(Ok(chunk)) => {
                            let frame = http_body::Frame::data(chunk);
                            return Some((Ok(frame), (live, next + 1, changed)));
                        }
                        // Report the failure once, then end.
                        Some(Err(error)) => return Some((Err(error), (live, usize::MAX, changed))),
                        None => {
                            if changed.changed().await.is_err() {
                                return None;
                            }
                        }
                    }
                }
            },
        );
        body::boxed(http_body_util::StreamBody::new(stream))
    }
}

/// The leader's side: publishes chunks, then the ending.
#[derive(Debug)]
pub struct Publisher(pub Arc<LiveStream>);

impl Publisher {
    pub fn chunk(&self, chunk: &Bytes) {
        self.0.update(|state| state.chunks.push(chunk.clone()));
    }

    pub fn finish(&self, failure: Option<String>) {
        self.0.update(|state| state.end = Some(failure));
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.finish(Some(
            "the shared upstream answer stopped before its end".into(),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use std::time::Duration;

    // Paused clock: the spawned task runs as far as it can before the sleep
    // ends, so "not finished yet" is a fact, not a race.
    #[tokio::test(start_paused = true)]
    async fn late_follower_gets_everything_then_live() {
        let live = LiveStream::new();
        let publisher = Publisher(live.clone());
        publisher.chunk(&Bytes::from_static(b"one "));
        #[expect(clippy::disallowed_methods, reason = "a test task, awaited below")]
        let follower = tokio::spawn(live.follow().collect());
        tokio::time::sleep(Duration::from_millis(20)).await;
        publisher.chunk(&Bytes::from_static(b"two"));
        publisher.finish(None);
        let body = tokio::time::timeout(Duration::from_secs(5), follower)
            .await
            .unwrap_or_else(|_| panic!("follower hung"))
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|e| panic!("{e}"))
            .to_bytes();
        assert_eq!(body, "one two");
        // A follower joining after the end still gets the whole stream.
        let late = live
            .follow()
            .collect()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(late.to_bytes(), "one two");
    }

    #[tokio::test]
    async fn a_vanished_leader_ends_followers_with_an_error() {
        let live = LiveStream::new();
        let publisher = Publisher(live.clone());
        publisher.chunk(&Bytes::from_static(b"partial"));
        #[expect(clippy::disallowed_methods, reason = "a test task, awaited below")]
        let follower = tokio::spawn(live.follow().collect());
        drop(publisher);
        let result = tokio::time::timeout(Duration::from_secs(5), follower)
            .await
            .unwrap_or_else(|_| panic!("follower hung"))
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(result.is_err());
    }
}
