//! Calibration of the host TSC and LAPIC timer against PIT channel 2 (the
//! 8254 runs at 1 193 182 Hz; its gate and output are in port 0x61).
//!
//! Ports and mode: Intel 8254 data sheet (command word at 0x43, channel 2
//! data at 0x42, mode 0 = interrupt on terminal count) and the PC/AT port
//! 0x61 layout (bit 0 gate 2, bit 1 speaker enable, bit 5 OUT2).
//!
//! pvops' `native::pit` runs the same sampling for the TSC alone; this copy
//! also reads the LAPIC timer inside the same window, and the microvisor
//! does not depend on pvops.

use super::{cpu::rdtsc, lapic, port};

/// PIT input clock in Hz (the PC's 14.318 18 MHz crystal / 12).
pub const PIT_HZ: u64 = 1_193_182;

/// Result of one calibration.
#[derive(Clone, Copy, Debug, Default)]
pub struct Calibration {
    /// TSC ticks per millisecond.
    pub tsc_khz: u64,
    /// LAPIC timer ticks (divide by 1) per millisecond.
    pub lapic_khz: u64,
}

/// Most samples taken, and undisturbed samples that are enough.
const MAX_SAMPLES: usize = 9;
const GOOD_ENOUGH: usize = 3;

/// Calibrates in samples of `ms` milliseconds and keeps the median of the
/// undisturbed ones (three are enough, at most nine are taken): a sample
/// during which QEMU's vCPU thread was descheduled shows a long gap between
/// two polls of the PIT output and reads high, so it is set aside. On a host
/// so busy that no sample is clean, the median of them all.
pub fn calibrate_median(ms: u64) -> Calibration {
    let mut good = [Calibration::default(); MAX_SAMPLES];
    let mut all = [Calibration::default(); MAX_SAMPLES];
    let (mut n_good, mut n_all) = (0, 0);
    while n_all < MAX_SAMPLES && n_good < GOOD_ENOUGH {
        let (c, clean) = calibrate(ms);
        all[n_all] = c;
        n_all += 1;
        if clean {
            good[n_good] = c;
            n_good += 1;
        }
    }
    let pick = if n_good > 0 {
        &mut good[..n_good]
    } else {
        &mut all[..n_all]
    };
    pick.sort_unstable_by_key(|c| c.tsc_khz);
    pick[(pick.len() - 1) / 2]
}

/// Measures the TSC and LAPIC timer over `ms` milliseconds of PIT channel 2
/// in mode 0, and whether the measurement was clean (no poll gap above
/// 1/32 of the window). The LAPIC timer must be initialised (and its
/// interrupt masked by RFLAGS.IF = 0).
pub fn calibrate(ms: u64) -> (Calibration, bool) {
    let count = (PIT_HZ * ms / 1000) as u16;
    // Gate low, speaker off.
    let p61 = port::inb(0x61);
    port::outb(0x61, p61 & !0x03);
    // Channel 2, lobyte/hibyte, mode 0, binary.
    port::outb(0x43, 0xB0);
    port::outb(0x42, count as u8);
    port::outb(0x42, (count >> 8) as u8);
    lapic::start(u32::MAX);
    let l0 = lapic::current();
    let t0 = rdtsc();
    // Gate high starts the count-down; OUT2 (bit 5) rises at terminal count.
    port::outb(0x61, (p61 & !0x02) | 0x01);
    let (mut last, mut max_gap, mut polls) = (t0, 0u64, 0u64);
    // Bounded: far more polls than any window needs, so a missing PIT
    // cannot hang the boot (the rate then reads as garbage and the guest's
    // clock tests say so).
    while port::inb(0x61) & 0x20 == 0 && polls < 100_000_000 {
        polls += 1;
        let now = rdtsc();
        max_gap = max_gap.max(now.wrapping_sub(last));
        last = now;
    }
    let t1 = rdtsc();
    let l1 = lapic::current();
    lapic::start(0);
    port::outb(0x61, p61);
    let ms = ms.max(1);
    let cycles = t1.wrapping_sub(t0);
    max_gap = max_gap.max(t1.wrapping_sub(last));
    let c = Calibration {
        tsc_khz: cycles / ms,
        lapic_khz: (l0.wrapping_sub(l1) as u64) / ms,
    };
    (c, cycles > 0 && max_gap <= cycles / 32)
}
