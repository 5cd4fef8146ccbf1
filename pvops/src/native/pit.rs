//! TSC calibration against the legacy 8254 PIT, for machines that give no
//! better source (no CPUID 0x15, no hypervisor leaf).
//!
//! Channel 2 is gated through port 0x61 and counts down in mode 0; its
//! OUT pin is readable at port 0x61 bit 5 when the count reaches zero.
//! (8254 data sheet; the PC/AT port 0x61 layout.)

use x86::io::{inb, outb};

/// The PIT input clock in Hz (1.193182 MHz, from the PC's 14.31818 MHz / 12).
pub const PIT_HZ: u64 = 1_193_182;

const CH2_DATA: u16 = 0x42;
const COMMAND: u16 = 0x43;
const GATE: u16 = 0x61;

/// Measures the TSC over `ms` milliseconds of PIT channel 2 and returns
/// its frequency in kHz, or `None` if the PIT never counted down (absent or
/// broken), so the caller can report it rather than trust a bogus value.
pub fn calibrate_tsc(ms: u32) -> Option<u64> {
    let ms = ms.clamp(1, 50);
    let ticks = PIT_HZ * u64::from(ms) / 1000; // < 65536 for ms <= 54
                                               // SAFETY: ports 0x42, 0x43 and 0x61 are the PC's PIT channel 2 and its
                                               // gate; channel 2 drives only the speaker, which stays disconnected (bit 1
                                               // of port 0x61 is cleared), so this disturbs nothing else.
    unsafe {
        let gate = inb(GATE);
        outb(GATE, (gate & !0x02) | 0x01); // gate on, speaker off
        outb(COMMAND, 0b1011_0000); // channel 2, lobyte/hibyte, mode 0, binary
        outb(CH2_DATA, (ticks & 0xff) as u8);
        outb(CH2_DATA, (ticks >> 8) as u8);
        let start = super::cpu::read_tsc();
        let mut end = start;
        // Bound the wait: at most ~200M loop iterations, far beyond 50 ms
        // even on slow emulation, so a missing PIT cannot hang the boot.
        let mut spins: u64 = 0;
        while inb(GATE) & 0x20 == 0 {
            spins += 1;
            if spins > 200_000_000 {
                outb(GATE, gate);
                return None;
            }
            end = super::cpu::read_tsc();
        }
        outb(GATE, gate);
        let cycles = end.wrapping_sub(start);
        (cycles > 0).then(|| cycles / u64::from(ms))
    }
}
