//! Host time: the TSC, calibrated against the PIT at start-up, and the
//! conversion to the host LAPIC timer's ticks.

use crate::hw::{cpu::rdtsc, pit::Calibration};

/// Calibrated host clocks.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    /// TSC ticks per millisecond.
    pub tsc_khz: u64,
    /// Host LAPIC timer ticks (divide by 1) per millisecond.
    pub lapic_khz: u64,
}

impl Clock {
    /// From a PIT calibration (with sane fallbacks if it failed).
    pub fn new(cal: Calibration) -> Self {
        Clock {
            tsc_khz: if cal.tsc_khz == 0 {
                1_000_000
            } else {
                cal.tsc_khz
            },
            lapic_khz: if cal.lapic_khz == 0 {
                1_000_000
            } else {
                cal.lapic_khz
            },
        }
    }

    /// Current host TSC.
    pub fn now(&self) -> u64 {
        rdtsc()
    }

    /// TSC ticks in `ms` milliseconds.
    pub fn ms(&self, ms: u64) -> u64 {
        ms.saturating_mul(self.tsc_khz)
    }

    /// Milliseconds in `ticks` TSC ticks.
    pub fn millis(&self, ticks: u64) -> u64 {
        ticks / self.tsc_khz
    }

    /// Host LAPIC timer count for a delay of `ticks` TSC ticks (at least 1,
    /// at most `u32::MAX`).
    pub fn lapic_count(&self, ticks: u64) -> u32 {
        let c = ticks as u128 * self.lapic_khz as u128 / self.tsc_khz as u128;
        c.clamp(1, u32::MAX as u128) as u32
    }
}
