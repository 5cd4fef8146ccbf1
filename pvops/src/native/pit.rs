//! TSC calibration against the legacy 8254 PIT, for machines that give no
//! better source (no CPUID 0x15, no hypervisor leaf).
//!
//! Channel 2 is gated through port 0x61 and counts down in mode 0; its
//! OUT pin is readable at port 0x61 bit 5 once the count reaches zero
//! (Intel 8254 data sheet; the PC/AT port 0x61 layout).
//!
//! Many machines have no PIT at all: QEMU's microVM with `pit=off`
//! (Firecracker's and Cloud Hypervisor's model), Xen PVH domains, Hyper-V
//! generation 2 VMs. There nothing decodes the ports and reads return all
//! ones (an empty bus), so OUT2 looks "high" at once and any measurement is
//! garbage. The PIT is taken as absent when port 0x61 reads 0xFF, or when
//! OUT2 is already high right after loading a mode-0 count, in each of
//! three samples (in mode 0 the output stays low from the load
//! until the count reaches zero, 8254 data sheet; one such sample alone may
//! be a vCPU descheduled for the whole window, and is set aside as
//! disturbed). Calibration then fails with [`PitError::Absent`] and the
//! caller reports that it has no frequency rather than a wrong one. (The
//! data sheet also drives OUT low on the mode-0 control word itself, but
//! QEMU's 8254 model leaves OUT as the previous count left it until the new
//! count is loaded, so that earlier point cannot be checked.)
//!
//! A virtual CPU can be descheduled at any moment, which ruins a single
//! measurement. So the TSC is read right before the write that starts the
//! count, each sample is rejected if the gap between two polls of the OUT
//! pin was large compared with the whole measurement, and the median of the
//! accepted samples is returned. Every gap counts, not only those at the
//! two ends: measured under KVM on a loaded 2-core host, a sample with one
//! 16 ms stall in the middle of its 10 ms window and clean ends read
//! 59.3 M instead of 23.1 M TSC cycles: the emulated PIT does not count
//! while the vCPU is descheduled. On a busy host more samples are taken, up
//! to [`MAX_SAMPLES`], over longer (slow polls stay below the limit) and
//! then shorter windows (they fit between preemptions). When none is
//! undisturbed, the lowest sample whose longest gap stayed within 1/8 of its
//! window is used (a stall only ever lengthens a sample, so that is an
//! upper bound at most 12.5 % high, logged); when there is none either,
//! there is no value to trust, and calibration fails
//! ([`PitError::AllDisturbed`]).
//!
//! The port and TSC accesses go through [`PitHardware`], so the logic is
//! tested on the host against a modelled PIT.

use x86::io::{inb, outb};

/// The PIT input clock in Hz (1.193182 MHz, from the PC's 14.31818 MHz / 12).
pub const PIT_HZ: u64 = 1_193_182;

const CH2_DATA: u16 = 0x42;
const COMMAND: u16 = 0x43;
const GATE: u16 = 0x61;
/// Port 0x61 bit 5: OUT2, the output of channel 2.
const OUT2: u8 = 0x20;
/// Channel 2, lobyte/hibyte, mode 0 (interrupt on terminal count), binary.
const CH2_MODE0: u8 = 0b1011_0000;
/// Most samples taken (9 x 10 + 8 x 30 + 8 x 5 ms at most, when every one
/// is disturbed).
pub const MAX_SAMPLES: usize = 25;
/// Undisturbed samples that are enough.
const GOOD_ENOUGH: usize = 3;
/// Polls of OUT2 before a sample gives up: far more than 50 ms needs even
/// under slow emulation, so a PIT that never counts cannot hang the boot.
const MAX_POLLS: u64 = 50_000_000;

/// The port and TSC accesses calibration needs.
pub trait PitHardware {
    /// Reads an I/O port byte.
    fn inb(&mut self, port: u16) -> u8;
    /// Writes an I/O port byte.
    fn outb(&mut self, port: u16, value: u8);
    /// Reads the TSC.
    fn read_tsc(&mut self) -> u64;
}

/// The machine's own ports and TSC.
struct Hardware;

impl PitHardware for Hardware {
    fn inb(&mut self, port: u16) -> u8 {
        // SAFETY: only ports 0x42, 0x43 and 0x61 are passed (PIT channel 2
        // and its gate); reading them has no effect on memory.
        unsafe { inb(port) }
    }

    fn outb(&mut self, port: u16, value: u8) {
        // SAFETY: as for `inb`; channel 2 drives only the speaker, which
        // stays disconnected (bit 1 of port 0x61 is cleared), so this
        // disturbs nothing else.
        unsafe { outb(port, value) }
    }

    fn read_tsc(&mut self) -> u64 {
        super::cpu::read_tsc()
    }
}

/// Why the PIT gave no TSC frequency.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PitError {
    /// There is no PIT (what gave it away).
    Absent(&'static str),
    /// The count never reached zero within the poll bound.
    NeverCounted,
    /// Every sample was disturbed (the vCPU stopped during each), so none
    /// can be trusted.
    AllDisturbed,
}

impl core::fmt::Display for PitError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            PitError::Absent(why) => write!(f, "no PIT ({why})"),
            PitError::NeverCounted => f.write_str("the PIT channel 2 count never reached zero"),
            PitError::AllDisturbed => write!(
                f,
                "all {MAX_SAMPLES} PIT calibration samples were disturbed"
            ),
        }
    }
}

/// Measures the TSC against PIT channel 2 in samples of `ms` milliseconds
/// and returns its frequency in kHz: the median of the undisturbed samples
/// (three are enough; at most [`MAX_SAMPLES`] are taken), else of those
/// with clean ends when three agree. An error when there is no PIT, when
/// it never counted down, or when no value can be trusted.
pub fn calibrate_tsc(ms: u32) -> Result<u64, PitError> {
    calibrate_tsc_with(&mut Hardware, ms, MAX_POLLS)
}

/// [`calibrate_tsc`] on `hw`, giving up a sample after `max_polls` polls.
pub fn calibrate_tsc_with(
    hw: &mut impl PitHardware,
    ms: u32,
    max_polls: u64,
) -> Result<u64, PitError> {
    let ms = ms.clamp(1, 50);
    if hw.inb(GATE) == 0xFF {
        return Err(PitError::Absent("port 0x61 reads 0xff"));
    }
    let mut good = [0u64; MAX_SAMPLES];
    let (mut n_good, mut n_high) = (0, 0);
    // The shortest sample with a bounded stall (see `Sample::Rough`).
    let mut rough: Option<u64> = None;
    for i in 0..MAX_SAMPLES {
        match sample(hw, window(ms, i), max_polls)? {
            Sample::Good(khz) => {
                good[n_good] = khz;
                n_good += 1;
            }
            Sample::Rough(khz) => rough = Some(rough.map_or(khz, |r| r.min(khz))),
            Sample::Disturbed => {}
            Sample::HighAtOnce => n_high += 1,
        }
        if n_good == GOOD_ENOUGH {
            break;
        }
        if n_good == 0 && n_high == GOOD_ENOUGH {
            return Err(PitError::Absent(
                "OUT2 high right after loading a mode-0 count",
            ));
        }
    }
    if let Some(khz) = median(&mut good[..n_good]) {
        return Ok(khz);
    }
    let khz = rough.ok_or(PitError::AllDisturbed)?;
    log::warn!(
        "pvops: no undisturbed PIT sample; using the lowest sample with a stall of at most 1/8 of its window: {khz} kHz (at most 12.5 % high)"
    );
    Ok(khz)
}

/// The window of sample `i` (from 0): the caller's `ms` for the first nine,
/// then three times it (at most 50 ms), then half of it (at least 1 ms).
/// Where every poll is slow (an emulated CPU under a nested hypervisor:
/// poll gaps of 2 % of a 10 ms window were measured under the microvisor) a
/// longer window keeps the gaps below the limit; on a loaded host a shorter
/// one more often fits between two preemptions of the vCPU.
fn window(ms: u32, i: usize) -> u32 {
    match i {
        0..=8 => ms,
        9..=16 => (ms * 3).min(50),
        _ => (ms / 2).max(1),
    }
}

/// The median of `values` (the lower middle one for an even count).
pub fn median(values: &mut [u64]) -> Option<u64> {
    if values.is_empty() {
        return None;
    }
    values.sort_unstable();
    Some(values[(values.len() - 1) / 2])
}

/// One measurement.
enum Sample {
    /// Undisturbed: the TSC rate in kHz.
    Good(u64),
    /// A poll gap above 1/32 but at most 1/8 of the window. A stall can
    /// only lengthen a sample (a late start, an end seen late, or a PIT
    /// that does not count meanwhile), never shorten it, so the lowest such
    /// rate is an upper bound at most 1/8 high; used only when no sample is
    /// undisturbed.
    Rough(u64),
    /// A poll gap too long to trust the result.
    Disturbed,
    /// OUT2 was high at the first poll after the count was loaded.
    HighAtOnce,
}

fn sample(hw: &mut impl PitHardware, ms: u32, max_polls: u64) -> Result<Sample, PitError> {
    // < 65536 for ms <= 54.
    let ticks = PIT_HZ * u64::from(ms) / 1000;
    let gate = hw.inb(GATE);
    hw.outb(GATE, (gate & !0x02) | 0x01); // gate on, speaker off
    hw.outb(COMMAND, CH2_MODE0);
    hw.outb(CH2_DATA, (ticks & 0xff) as u8);
    let start = hw.read_tsc();
    hw.outb(CH2_DATA, (ticks >> 8) as u8); // the count starts now
    if hw.inb(GATE) & OUT2 != 0 {
        // Mode 0 keeps OUT low from the load to terminal count.
        hw.outb(GATE, gate);
        return Ok(Sample::HighAtOnce);
    }
    let mut last = start;
    let mut max_gap = 0;
    let mut polls: u64 = 0;
    while hw.inb(GATE) & OUT2 == 0 {
        polls += 1;
        if polls > max_polls {
            hw.outb(GATE, gate);
            return Err(PitError::NeverCounted);
        }
        let now = hw.read_tsc();
        max_gap = max_gap.max(now.wrapping_sub(last));
        last = now;
    }
    let end = hw.read_tsc();
    max_gap = max_gap.max(end.wrapping_sub(last));
    hw.outb(GATE, gate);
    let cycles = end.wrapping_sub(start);
    let khz = cycles / u64::from(ms);
    // A poll gap above 1/32 of the window means the vCPU stopped for a
    // while: the count may have started or its end been seen late.
    log::debug!("pvops: PIT sample over {ms} ms: {cycles} TSC cycles, longest poll gap {max_gap}");
    if cycles == 0 || max_gap > cycles / 8 {
        return Ok(Sample::Disturbed);
    }
    if max_gap > cycles / 32 {
        return Ok(Sample::Rough(khz));
    }
    Ok(Sample::Good(khz))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A modelled PIT channel 2 and port 0x61 beside a TSC of `tsc_khz`
    /// that advances `cost` ticks per access.
    struct Model {
        present: bool,
        /// Port 0x61 decoded but OUT2 stuck high (a half-emulated gate).
        out2_stuck: bool,
        /// OUT2 never rises.
        frozen: bool,
        tsc: u64,
        tsc_khz: u64,
        cost: u64,
        /// Extra TSC ticks added on the 100th poll of every sample (a
        /// descheduled vCPU), 0 for none.
        stall: u64,
        /// Extra TSC ticks added on the poll that sees OUT2 high (the end
        /// seen late), 0 for none.
        end_stall: u64,
        polls_this_sample: u64,
        gate: u8,
        lsb: Option<u8>,
        /// TSC at which OUT2 rises.
        out_at: Option<u64>,
    }

    impl Model {
        fn new(tsc_khz: u64) -> Model {
            Model {
                present: true,
                out2_stuck: false,
                frozen: false,
                tsc: 1_000_000,
                tsc_khz,
                cost: 50,
                stall: 0,
                end_stall: 0,
                polls_this_sample: 0,
                gate: 0x10,
                lsb: None,
                out_at: None,
            }
        }
    }

    impl PitHardware for Model {
        fn inb(&mut self, port: u16) -> u8 {
            self.tsc += self.cost;
            if !self.present {
                return 0xFF;
            }
            assert_eq!(port, GATE);
            self.polls_this_sample += 1;
            if self.polls_this_sample == 100 {
                self.tsc += self.stall;
            }
            let out =
                self.out2_stuck || (!self.frozen && self.out_at.is_some_and(|t| self.tsc >= t));
            if out && self.polls_this_sample > 1 {
                self.tsc += self.end_stall;
            }
            (self.gate & 0x0f) | if out { OUT2 } else { 0 }
        }

        fn outb(&mut self, port: u16, value: u8) {
            self.tsc += self.cost;
            if !self.present {
                return;
            }
            match port {
                GATE => self.gate = value,
                COMMAND => {
                    // Like QEMU's model: OUT stays as the last count left
                    // it until a new count is loaded.
                    assert_eq!(value, CH2_MODE0);
                    self.lsb = None;
                    self.polls_this_sample = 0;
                }
                CH2_DATA => match self.lsb.take() {
                    None => self.lsb = Some(value),
                    Some(lo) => {
                        let count = u64::from(lo) | (u64::from(value) << 8);
                        let tsc_ticks = count * self.tsc_khz * 1000 / PIT_HZ;
                        self.out_at = Some(self.tsc + tsc_ticks);
                    }
                },
                _ => panic!("unexpected port {port:#x}"),
            }
        }

        fn read_tsc(&mut self) -> u64 {
            self.tsc += self.cost;
            self.tsc
        }
    }

    #[test]
    fn median_ignores_outliers() {
        assert_eq!(
            median(&mut [2_400_000, 35_000, 2_401_000, 7_000_000, 2_399_000]),
            Some(2_400_000)
        );
        assert_eq!(median(&mut [5, 1]), Some(1));
        assert_eq!(median(&mut []), None);
    }

    #[test]
    fn a_working_pit_gives_the_tsc_rate() {
        let mut m = Model::new(2_400_000);
        let khz = calibrate_tsc_with(&mut m, 10, 10_000_000).unwrap();
        assert!(khz.abs_diff(2_400_000) < 2_400, "{khz}");
    }

    #[test]
    fn no_pit_gives_no_frequency() {
        // What QEMU's microVM (pit=off) and the microvisor's pit=off show:
        // every port reads all ones. The earlier code returned the median
        // of these "disturbed" samples as a frequency.
        let mut m = Model::new(2_400_000);
        m.present = false;
        assert_eq!(
            calibrate_tsc_with(&mut m, 10, 10_000_000),
            Err(PitError::Absent("port 0x61 reads 0xff"))
        );
    }

    #[test]
    fn out2_high_after_the_control_word_means_no_pit() {
        let mut m = Model::new(2_400_000);
        m.out2_stuck = true;
        assert!(matches!(
            calibrate_tsc_with(&mut m, 10, 10_000_000),
            Err(PitError::Absent(_))
        ));
    }

    #[test]
    fn every_sample_disturbed_gives_no_frequency() {
        let mut m = Model::new(2_400_000);
        // Every sample's end seen a whole short window late.
        m.end_stall = 24_000_000;
        assert_eq!(
            calibrate_tsc_with(&mut m, 10, 10_000_000),
            Err(PitError::AllDisturbed)
        );
    }

    #[test]
    fn one_disturbed_sample_is_set_aside() {
        struct OnceStalled(Model, u32);
        impl PitHardware for OnceStalled {
            fn inb(&mut self, port: u16) -> u8 {
                if self.0.polls_this_sample == 99 && self.1 == 0 {
                    self.1 += 1;
                    self.0.tsc += 24_000_000;
                }
                self.0.inb(port)
            }
            fn outb(&mut self, port: u16, value: u8) {
                self.0.outb(port, value)
            }
            fn read_tsc(&mut self) -> u64 {
                self.0.read_tsc()
            }
        }
        let mut m = OnceStalled(Model::new(3_000_000), 0);
        let khz = calibrate_tsc_with(&mut m, 10, 10_000_000).unwrap();
        assert!(khz.abs_diff(3_000_000) < 3_000, "{khz}");
    }

    #[test]
    fn a_stall_inside_every_window_gives_no_frequency() {
        let mut m = Model::new(2_400_000);
        // A 5 ms stall at poll 100 of every sample, well before the end.
        m.stall = 12_000_000;
        assert_eq!(
            calibrate_tsc_with(&mut m, 10, 10_000_000),
            Err(PitError::AllDisturbed)
        );
    }

    #[test]
    fn a_bounded_stall_in_every_window_gives_an_upper_bound() {
        let mut m = Model::new(2_400_000);
        // A 1 ms stall inside every window (1/10 of 10 ms, 1/30 of 30 ms,
        // 1/5 of 5 ms): the 30 ms windows are undisturbed.
        m.stall = 2_400_000;
        let khz = calibrate_tsc_with(&mut m, 10, 10_000_000).unwrap();
        assert!(khz.abs_diff(2_400_000) < 2_400, "{khz}");
        // A 2 ms stall: 1/15 of 30 ms; no sample is undisturbed, the lowest
        // rough one is the rate (the model's PIT counts during a stall).
        let mut m = Model::new(2_400_000);
        m.stall = 4_800_000;
        let khz = calibrate_tsc_with(&mut m, 10, 10_000_000).unwrap();
        assert!((2_397_600..=2_400_000 * 9 / 8).contains(&khz), "{khz}");
    }

    #[test]
    fn a_pit_that_never_counts_is_an_error() {
        let mut m = Model::new(2_400_000);
        m.frozen = true;
        assert_eq!(
            calibrate_tsc_with(&mut m, 10, 1_000),
            Err(PitError::NeverCounted)
        );
    }
}
