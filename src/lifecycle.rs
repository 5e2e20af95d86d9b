//! Where the process is in its life: starting, ready, draining.
//!
//! `/readyz` answers from it and the load shedder refuses new work while
//! draining. It reflects sluice itself, never the upstreams' health.

use std::sync::atomic::{AtomicU8, Ordering};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Starting,
    Ready,
    Draining,
}

#[derive(Debug)]
pub struct Lifecycle(AtomicU8);

impl Default for Lifecycle {
    fn default() -> Self {
        Lifecycle(AtomicU8::new(Phase::Starting as u8))
    }
}

impl Lifecycle {
    pub fn phase(&self) -> Phase {
        match self.0.load(Ordering::Acquire) {
            0 => Phase::Starting,
            1 => Phase::Ready,
            _ => Phase::Draining,
        }
    }

    pub fn set(&self, phase: Phase) {
        self.0.store(phase as u8, Ordering::Release);
    }

    /// Moves to draining; `true` for the one caller that made the change
    /// (every worker calls it when it stops accepting).
    pub fn begin_draining(&self) -> bool {
        self.0.swap(Phase::Draining as u8, Ordering::AcqRel) != Phase::Draining as u8
    }

    pub fn is_draining(&self) -> bool {
        self.phase() == Phase::Draining
    }
}
