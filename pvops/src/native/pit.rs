//! TSC calibration against the legacy 8254 PIT, for machines that give no
//! better source (no CPUID 0x15, no hypervisor leaf).
//!
//! Channel 2 is gated through port 0x61 and counts down in mode 0; its
//! OUT pin is readable at port 0x61 bit 5 once the count reaches zero
//! (Intel 8254 data sheet; the PC/AT port 0x61 layout).
//!
//! A virtual CPU can be descheduled at any moment, which ruins a single
//! measurement. So the TSC is read right before the write that starts the
//! count, each sample is rejected if the gap between two polls of the OUT
//! pin was large compared with the whole measurement, and the median of the
//! accepted samples is returned.

use x86::io::{inb, outb};

/// The PIT input clock in Hz (1.193182 MHz, from the PC's 14.31818 MHz / 12).
pub const PIT_HZ: u64 = 1_193_182;

const CH2_DATA: u16 = 0x42;
const COMMAND: u16 = 0x43;
const GATE: u16 = 0x61;
/// Most samples taken.
const MAX_SAMPLES: usize = 9;
/// Undisturbed samples that are enough.
const GOOD_ENOUGH: usize = 3;

/// Measures the TSC against PIT channel 2 in samples of `ms` milliseconds
/// and returns its frequency in kHz: the median of the undisturbed samples
/// (three are enough; at most nine are taken), or, on a host so busy that
/// every sample was disturbed, the median of them all (logged). `None` when
/// the PIT never counted down, so the caller can report it rather than
/// trust a bogus value.
pub fn calibrate_tsc(ms: u32) -> Option<u64> {
    let ms = ms.clamp(1, 50);
    let mut good = [0u64; MAX_SAMPLES];
    let mut all = [0u64; MAX_SAMPLES];
    let (mut n_good, mut n_all) = (0, 0);
    while n_all < MAX_SAMPLES && n_good < GOOD_ENOUGH {
        let (khz, disturbed) = match sample(ms) {
            Sample::Good(khz) => (khz, false),
            Sample::Disturbed(khz) => (khz, true),
            Sample::NoPit => return None,
        };
        all[n_all] = khz;
        n_all += 1;
        if !disturbed {
            good[n_good] = khz;
            n_good += 1;
        }
    }
    if n_good == 0 {
        log::warn!("pvops: every PIT calibration sample was disturbed; using their median");
        return median(&mut all[..n_all]);
    }
    median(&mut good[..n_good])
}

/// The median of `values` (the lower middle one for an even count).
pub fn median(values: &mut [u64]) -> Option<u64> {
    if values.is_empty() {
        return None;
    }
    values.sort_unstable();
    Some(values[(values.len() - 1) / 2])
}

enum Sample {
    Good(u64),
    Disturbed(u64),
    NoPit,
}

fn sample(ms: u32) -> Sample {
    // < 65536 for ms <= 54.
    let ticks = PIT_HZ * u64::from(ms) / 1000;
    // SAFETY: ports 0x42, 0x43 and 0x61 are the PC's PIT channel 2 and its
    // gate; channel 2 drives only the speaker, which stays disconnected (bit 1
    // of port 0x61 is cleared), so this disturbs nothing else.
    unsafe {
        let gate = inb(GATE);
        outb(GATE, (gate & !0x02) | 0x01); // gate on, speaker off
        outb(COMMAND, 0b1011_0000); // channel 2, lobyte/hibyte, mode 0, binary
        outb(CH2_DATA, (ticks & 0xff) as u8);
        let start = super::cpu::read_tsc();
        outb(CH2_DATA, (ticks >> 8) as u8); // the count starts now
        let mut last = start;
        let mut max_gap = 0;
        // Bound the wait: far more polls than 50 ms needs even under slow
        // emulation, so a missing PIT cannot hang the boot.
        let mut polls: u64 = 0;
        while inb(GATE) & 0x20 == 0 {
            polls += 1;
            if polls > 50_000_000 {
                outb(GATE, gate);
                return Sample::NoPit;
            }
            let now = super::cpu::read_tsc();
            max_gap = max_gap.max(now.wrapping_sub(last));
            last = now;
        }
        let end = super::cpu::read_tsc();
        max_gap = max_gap.max(end.wrapping_sub(last));
        outb(GATE, gate);
        let cycles = end.wrapping_sub(start);
        // A poll gap above 1/32 of the window means the vCPU stopped for a
        // while: the end of the count may have been seen late.
        let khz = cycles / u64::from(ms);
        if cycles == 0 || max_gap > cycles / 32 {
            return Sample::Disturbed(khz);
        }
        Sample::Good(khz)
    }
}

#[cfg(test)]
mod tests {
    use super::median;

    #[test]
    fn median_ignores_outliers() {
        assert_eq!(
            median(&mut [2_400_000, 35_000, 2_401_000, 7_000_000, 2_399_000]),
            Some(2_400_000)
        );
        assert_eq!(median(&mut [5, 1]), Some(1));
        assert_eq!(median(&mut []), None);
    }
}
