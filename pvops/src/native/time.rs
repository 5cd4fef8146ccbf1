//! Native time: the TSC as clock, the local APIC timer as one-shot timer.

use super::apic::{self, timer_mode, Register, MSR_TSC_DEADLINE};
use crate::time::{TscFrequency, TscSource};
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};

static TSC_KHZ: AtomicU64 = AtomicU64::new(0);
static TSC_SOURCE: AtomicU8 = AtomicU8::new(0);
/// ns per TSC tick as a 32.32 fixed-point multiplier.
static NS_MULT: AtomicU64 = AtomicU64::new(0);
static TSC_ORIGIN: AtomicU64 = AtomicU64::new(0);
static APIC_KHZ: AtomicU64 = AtomicU64::new(0);
static USE_DEADLINE: AtomicBool = AtomicBool::new(false);
static TIMER_VECTOR: AtomicU8 = AtomicU8::new(0);

/// Records the TSC frequency the native clock and timer use. The clock's
/// origin is the moment of the first call.
pub fn set_tsc_frequency(khz: u64, source: TscSource) {
    if khz == 0 {
        return;
    }
    TSC_KHZ.store(khz, Ordering::Relaxed);
    TSC_SOURCE.store(source_index(source), Ordering::Relaxed);
    NS_MULT.store((1_000_000u64 << 32) / khz, Ordering::Relaxed);
    let _ = TSC_ORIGIN.compare_exchange(
        0,
        super::cpu::read_tsc().max(1),
        Ordering::Relaxed,
        Ordering::Relaxed,
    );
}

/// Records that no TSC frequency source exists (see
/// [`TscSource::NoSource`]): the frequency stays 0, the clock stays at 0,
/// and a timer fires at once; [`tsc_frequency`] then says why. Does nothing
/// once a frequency is recorded.
pub fn set_no_tsc_frequency() {
    if TSC_KHZ.load(Ordering::Relaxed) == 0 {
        TSC_SOURCE.store(source_index(TscSource::NoSource), Ordering::Relaxed);
    }
}

fn source_index(source: TscSource) -> u8 {
    TscSource::ALL
        .iter()
        .position(|&s| s == source)
        .unwrap_or(0) as u8
}

/// Records the local APIC timer input frequency (for one-shot mode).
pub fn set_apic_timer_khz(khz: u64) {
    APIC_KHZ.store(khz, Ordering::Relaxed);
}

/// Chooses TSC-deadline mode for the native timer (only when CPUID reports it).
pub fn set_use_tsc_deadline(on: bool) {
    USE_DEADLINE.store(on, Ordering::Relaxed);
}

/// Whether the native timer uses TSC-deadline mode.
pub fn uses_tsc_deadline() -> bool {
    USE_DEADLINE.load(Ordering::Relaxed)
}

/// Converts TSC ticks to nanoseconds at the native frequency.
pub fn tsc_to_ns(ticks: u64) -> u64 {
    ((u128::from(ticks) * u128::from(NS_MULT.load(Ordering::Relaxed))) >> 32) as u64
}

/// Converts nanoseconds to TSC ticks at the native frequency.
pub fn ns_to_tsc(ns: u64) -> u64 {
    (u128::from(ns) * u128::from(TSC_KHZ.load(Ordering::Relaxed)) / 1_000_000) as u64
}

/// The recorded TSC frequency.
pub extern "C" fn tsc_frequency() -> TscFrequency {
    TscFrequency {
        khz: TSC_KHZ.load(Ordering::Relaxed),
        source: TscSource::ALL
            [usize::from(TSC_SOURCE.load(Ordering::Relaxed)) % TscSource::ALL.len()],
    }
}

/// The recorded APIC timer frequency.
pub extern "C" fn apic_timer_khz() -> u64 {
    APIC_KHZ.load(Ordering::Relaxed)
}

/// TSC ticks since the origin, scaled by the recorded frequency.
pub extern "C" fn monotonic_ns() -> u64 {
    tsc_to_ns(super::cpu::read_tsc().saturating_sub(TSC_ORIGIN.load(Ordering::Relaxed)))
}

/// Programs the LVT timer with `vector`, in TSC-deadline or one-shot mode.
pub extern "C" fn timer_setup(vector: u8) {
    TIMER_VECTOR.store(vector, Ordering::Relaxed);
    if uses_tsc_deadline() {
        apic::write(
            Register::LvtTimer,
            timer_mode::TSC_DEADLINE | u32::from(vector),
        );
    } else {
        apic::write(Register::TimerDivide, 0b1011); // divide by 1
        apic::write(Register::LvtTimer, timer_mode::ONE_SHOT | u32::from(vector));
    }
}

/// Arms the timer `delta_ns` from now (at least one tick).
pub extern "C" fn timer_arm(delta_ns: u64) {
    if uses_tsc_deadline() {
        let deadline = super::cpu::read_tsc() + ns_to_tsc(delta_ns).max(1);
        // SAFETY: IA32_TSC_DEADLINE exists when CPUID reports TSC-deadline
        // mode, the only case in which this path is selected.
        unsafe { x86::msr::wrmsr(MSR_TSC_DEADLINE, deadline) };
    } else {
        let count = (u128::from(delta_ns) * u128::from(apic_timer_khz()) / 1_000_000)
            .clamp(1, u128::from(u32::MAX));
        apic::write(Register::TimerInitialCount, count as u32);
    }
}

/// Disarms the timer.
pub extern "C" fn timer_cancel() {
    if uses_tsc_deadline() {
        // SAFETY: as in `timer_arm`; writing 0 disarms.
        unsafe { x86::msr::wrmsr(MSR_TSC_DEADLINE, 0) };
    } else {
        apic::write(Register::TimerInitialCount, 0);
    }
}

/// The local APIC timer needs no acknowledgement beyond the EOI.
pub extern "C" fn timer_ack() {}

/// Bare metal steals nothing.
pub extern "C" fn steal_ns() -> u64 {
    0
}

/// Measures the APIC timer input frequency against the TSC over about
/// `ms` milliseconds. Returns kHz; `None` when the TSC frequency is not
/// known (never a guess: without a PIT there is nothing else to measure
/// against) or there is no local APIC.
pub fn calibrate_apic_timer(ms: u32) -> Option<u64> {
    let khz = TSC_KHZ.load(Ordering::Relaxed);
    if khz == 0 || apic::mode().is_none() {
        return None;
    }
    apic::write(Register::TimerDivide, 0b1011);
    apic::write(
        Register::LvtTimer,
        timer_mode::MASKED | timer_mode::ONE_SHOT,
    );
    apic::write(Register::TimerInitialCount, u32::MAX);
    let start = super::cpu::read_tsc();
    let wait = khz * u64::from(ms.max(1));
    while super::cpu::read_tsc().wrapping_sub(start) < wait {
        core::hint::spin_loop();
    }
    let left = apic::read(Register::TimerCurrentCount);
    apic::write(Register::TimerInitialCount, 0);
    let counted = u64::from(u32::MAX - left);
    (counted > 0).then(|| counted / u64::from(ms.max(1)))
}
