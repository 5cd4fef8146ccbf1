//! Calibration of the host TSC and LAPIC timer against PIT channel 2 (the
//! 8254 runs at 1 193 182 Hz; its gate and output are in port 0x61).

use super::{cpu::rdtsc, lapic, port};

/// PIT input clock in Hz.
pub const PIT_HZ: u64 = 1_193_182;

/// Result of one calibration.
#[derive(Clone, Copy, Debug, Default)]
pub struct Calibration {
    /// TSC ticks per millisecond.
    pub tsc_khz: u64,
    /// LAPIC timer ticks (divide by 1) per millisecond.
    pub lapic_khz: u64,
}

/// Calibrates three times over `ms` milliseconds and keeps the sample with
/// the median TSC rate: a sample during which QEMU's vCPU thread was
/// descheduled reads high, and the median discards it.
pub fn calibrate_median(ms: u64) -> Calibration {
    let mut s = [calibrate(ms), calibrate(ms), calibrate(ms)];
    s.sort_unstable_by_key(|c| c.tsc_khz);
    s[1]
}

/// Measures the TSC and LAPIC timer over `ms` milliseconds of PIT channel 2
/// in mode 0. The LAPIC timer must be initialised (and its interrupt masked
/// by RFLAGS.IF = 0).
pub fn calibrate(ms: u64) -> Calibration {
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
    while port::inb(0x61) & 0x20 == 0 {
        core::hint::spin_loop();
    }
    let t1 = rdtsc();
    let l1 = lapic::current();
    lapic::start(0);
    port::outb(0x61, p61);
    let ms = ms.max(1);
    Calibration {
        tsc_khz: (t1 - t0) / ms,
        lapic_khz: (l0.wrapping_sub(l1) as u64) / ms,
    }
}
