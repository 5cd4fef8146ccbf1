//! The progress watchdog: the run ends with `GuestWatchdog` when the guest
//! has made no progress for the configured time. Progress is any exit other
//! than the microvisor's own timer interrupt, or a virtual interrupt
//! delivered to the guest. The microvisor's host LAPIC timer is always armed
//! no later than the watchdog deadline, so a guest spinning with interrupts
//! disabled (and no exits) is still caught.

/// Watchdog state, in host TSC ticks.
#[derive(Clone, Copy, Debug)]
pub struct Watchdog {
    limit: u64,
    last_progress: u64,
}

impl Watchdog {
    /// A watchdog of `limit` ticks, starting now.
    pub fn new(limit: u64, now: u64) -> Self {
        Watchdog {
            limit,
            last_progress: now,
        }
    }

    /// Records progress at `now`.
    pub fn progress(&mut self, now: u64) {
        self.last_progress = self.last_progress.max(now);
    }

    /// When the watchdog fires unless there is progress.
    pub fn deadline(&self) -> u64 {
        self.last_progress.saturating_add(self.limit)
    }

    /// Whether it has fired.
    pub fn expired(&self, now: u64) -> bool {
        now >= self.deadline()
    }

    /// Ticks since the last progress.
    pub fn idle(&self, now: u64) -> u64 {
        now.saturating_sub(self.last_progress)
    }
}
