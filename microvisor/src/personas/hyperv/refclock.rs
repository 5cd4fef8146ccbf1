//! The partition reference time (TLFS, Timers: Partition Reference Counter
//! MSR; Partition Reference Time Enlightenment) and the pages the persona
//! overlays on guest RAM (hypercall page, reference TSC page).
//!
//! One formula serves everything: reference time = `((tsc * scale) >> 64) +
//! offset` ([`pvops_abi::hyperv::reference_time`]), with `scale = 10^7 *
//! 2^64 / tsc_hz` and `offset` chosen so the counter reads 0 at the first
//! guest entry ("the partition's creation"). HV_X64_MSR_TIME_REF_COUNT
//! evaluates it with the host TSC (which is the guest's: TSC_OFFSET is 0)
//! and the reference TSC page publishes the same scale and offset, so the
//! page and the MSR agree to the 100 ns unit.

use crate::guest::mem::{GuestRam, OutOfRange};
use pvops_abi::hyperv::{
    reference_time, TSC_PAGE_OFFSET_OFFSET, TSC_PAGE_SCALE_OFFSET, TSC_PAGE_SEQUENCE_OFFSET,
    TSC_SEQUENCE_INVALID,
};

/// Reference-time units per second (100 ns units).
pub const UNITS_PER_SECOND: u128 = 10_000_000;

/// The reference clock.
#[derive(Clone, Copy, Debug)]
pub struct RefClock {
    tsc_hz: u64,
    scale: u64,
    offset: i64,
    started: bool,
}

impl RefClock {
    /// A clock for a TSC of `tsc_khz` (raised to just above 10 MHz so the
    /// 64.64 scale fits in 64 bits).
    pub fn new(tsc_khz: u64) -> Self {
        let tsc_hz = tsc_khz.max(10_001).saturating_mul(1000);
        RefClock {
            tsc_hz,
            scale: ((UNITS_PER_SECOND << 64) / tsc_hz as u128) as u64,
            offset: 0,
            started: false,
        }
    }

    /// TSC frequency in Hz (HV_X64_MSR_TSC_FREQUENCY).
    pub fn tsc_hz(&self) -> u64 {
        self.tsc_hz
    }

    /// Starts the counter at 0 at host TSC `now` (once; later calls do
    /// nothing).
    pub fn start(&mut self, now: u64) {
        if !self.started {
            self.started = true;
            self.offset = 0i64.wrapping_sub(reference_time(now, self.scale, 0) as i64);
        }
    }

    /// Reference time at host TSC `tsc`.
    pub fn at(&self, tsc: u64) -> u64 {
        reference_time(tsc, self.scale, self.offset)
    }

    /// The first host TSC at which the reference time is at least `units`
    /// (saturating at `u64::MAX` for times beyond the TSC's range).
    pub fn tsc_for(&self, units: u64) -> u64 {
        let raw = units as i128 - self.offset as i128;
        if raw <= 0 {
            return 0;
        }
        if raw >= 1 << 64 {
            return u64::MAX;
        }
        // Smallest t with (t * scale) >> 64 >= raw: t = ceil(raw * 2^64 / scale).
        let num = (raw as u128) << 64;
        let t = num.div_ceil(self.scale.max(1) as u128);
        u64::try_from(t).unwrap_or(u64::MAX)
    }

    /// The first 24 bytes of `HV_REFERENCE_TSC_PAGE` for this clock with
    /// `sequence` ([`TSC_SEQUENCE_INVALID`] writes a page that tells the
    /// guest to use the MSR).
    pub fn page_header(&self, sequence: u32) -> [u8; 24] {
        let mut b = [0u8; 24];
        b[TSC_PAGE_SEQUENCE_OFFSET..TSC_PAGE_SEQUENCE_OFFSET + 4]
            .copy_from_slice(&sequence.to_le_bytes());
        if sequence != TSC_SEQUENCE_INVALID {
            b[TSC_PAGE_SCALE_OFFSET..TSC_PAGE_SCALE_OFFSET + 8]
                .copy_from_slice(&self.scale.to_le_bytes());
            b[TSC_PAGE_OFFSET_OFFSET..TSC_PAGE_OFFSET_OFFSET + 8]
                .copy_from_slice(&self.offset.to_le_bytes());
        }
        b
    }
}

/// The largest overlay the persona writes (the TSC page header).
const OVERLAY_MAX: usize = 24;

/// Bytes the persona wrote over guest RAM to stand for an overlay page,
/// with what they replaced: removing the overlay (MSR disabled or moved)
/// gives the guest its own bytes back, as removing a real overlay page does.
#[derive(Clone, Copy, Debug)]
pub struct Overlay {
    gpa: u64,
    len: usize,
    saved: [u8; OVERLAY_MAX],
}

impl Overlay {
    /// Writes `bytes` (at most 24) at `gpa`, remembering the old contents.
    pub fn install(mem: &GuestRam, gpa: u64, bytes: &[u8]) -> Result<Overlay, OutOfRange> {
        let len = bytes.len().min(OVERLAY_MAX);
        let mut saved = [0u8; OVERLAY_MAX];
        mem.read(gpa, &mut saved[..len])?;
        mem.write(gpa, &bytes[..len])?;
        Ok(Overlay { gpa, len, saved })
    }

    /// Where the overlay sits.
    pub fn gpa(&self) -> u64 {
        self.gpa
    }

    /// Restores the guest's own bytes.
    pub fn remove(self, mem: &GuestRam) {
        let _ = mem.write(self.gpa, &self.saved[..self.len]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_100ns_units_from_the_start() {
        let mut c = RefClock::new(2_500_000);
        assert_eq!(c.tsc_hz(), 2_500_000_000);
        c.start(1_000_000_000);
        assert_eq!(c.at(1_000_000_000), 0);
        // One second of a 2.5 GHz TSC is 10^7 units (allow the floor).
        let one_s = c.at(3_500_000_000);
        assert!((9_999_999..=10_000_000).contains(&one_s), "{one_s}");
        // A second start does not move the origin.
        c.start(5_000_000_000);
        assert_eq!(c.at(1_000_000_000), 0);
    }

    #[test]
    fn tsc_for_is_the_exact_inverse() {
        let mut c = RefClock::new(2_459_954);
        c.start(123_456_789_012);
        for units in [0u64, 1, 7, 10_000, 12_345_678, 1 << 40] {
            let t = c.tsc_for(units);
            assert!(c.at(t) >= units, "{units}");
            if t > 0 {
                assert!(c.at(t - 1) < units || units == 0, "{units}");
            }
        }
        assert_eq!(c.tsc_for(u64::MAX), u64::MAX);
    }

    #[test]
    fn page_header_matches_the_formula() {
        let mut c = RefClock::new(3_000_000);
        c.start(42);
        let h = c.page_header(5);
        let seq = u32::from_le_bytes(h[0..4].try_into().unwrap());
        let scale = u64::from_le_bytes(h[8..16].try_into().unwrap());
        let off = i64::from_le_bytes(h[16..24].try_into().unwrap());
        assert_eq!(seq, 5);
        assert_eq!(
            reference_time(9_000_000_042, scale, off),
            c.at(9_000_000_042)
        );
        assert_eq!(c.page_header(TSC_SEQUENCE_INVALID), [0; 24]);
    }
}
