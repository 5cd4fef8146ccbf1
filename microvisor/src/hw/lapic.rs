//! The host's own local APIC, used in xAPIC (MMIO) mode: QEMU 7.2's TCG has
//! no x2APIC. Its one-shot timer is the microvisor's clock interrupt: it
//! bounds how long the guest runs without an exit (watchdog, guest timer
//! deadlines) and wakes the microvisor from HLT.
//!
//! Register offsets: Intel SDM vol. 3A, table 11-1 (AMD APM vol. 2, 16.3).

use super::cpu::{rdmsr, MSR_APIC_BASE};
use core::ptr::{read_volatile, write_volatile};
use core::sync::atomic::{AtomicU64, Ordering};

/// IDT vector of the host LAPIC timer.
pub const TIMER_VECTOR: u8 = 0xF0;
/// IDT vector for spurious interrupts (low nibble must be 0xF): the one
/// bootkit's IDT dispatcher ignores.
pub use bootkit::idt::SPURIOUS_VECTOR;

const REG_EOI: usize = 0xB0;
const REG_SVR: usize = 0xF0;
const REG_LVT_TIMER: usize = 0x320;
const REG_LVT_LINT0: usize = 0x350;
const REG_LVT_LINT1: usize = 0x360;
const REG_LVT_ERROR: usize = 0x370;
const REG_INITIAL_COUNT: usize = 0x380;
const REG_CURRENT_COUNT: usize = 0x390;
const REG_DIVIDE: usize = 0x3E0;
const LVT_MASKED: u32 = 1 << 16;
/// Divide configuration value 0b1011: divide by 1.
const DIVIDE_BY_1: u32 = 0xB;

static BASE: AtomicU64 = AtomicU64::new(0xFEE0_0000);

fn reg(off: usize) -> *mut u32 {
    (BASE.load(Ordering::Relaxed) as usize + off) as *mut u32
}

fn read(off: usize) -> u32 {
    // SAFETY: the APIC page is identity-mapped (bootkit maps the low 4 GiB)
    // and `off` is one of the architectural register offsets above.
    unsafe { read_volatile(reg(off)) }
}

fn write(off: usize, v: u32) {
    // SAFETY: as for `read`; register writes have no memory effects.
    unsafe { write_volatile(reg(off), v) }
}

/// Software-enables the LAPIC, masks LINT0/LINT1/error and sets up the
/// timer in one-shot mode on [`TIMER_VECTOR`], stopped.
pub fn init() {
    // SAFETY: IA32_APIC_BASE exists on every CPU with an APIC (checked by
    // the caller through CPUID.1:EDX[9]).
    let base = unsafe { rdmsr(MSR_APIC_BASE) } & 0x000F_FFFF_FFFF_F000;
    BASE.store(base, Ordering::Relaxed);
    write(REG_SVR, 0x100 | SPURIOUS_VECTOR as u32);
    write(REG_LVT_LINT0, LVT_MASKED);
    write(REG_LVT_LINT1, LVT_MASKED);
    write(REG_LVT_ERROR, LVT_MASKED);
    write(REG_DIVIDE, DIVIDE_BY_1);
    write(REG_INITIAL_COUNT, 0);
    write(REG_LVT_TIMER, TIMER_VECTOR as u32);
}

/// Starts the one-shot timer with `count` ticks (0 stops it).
pub fn start(count: u32) {
    write(REG_INITIAL_COUNT, count);
}

/// Current count of the timer.
pub fn current() -> u32 {
    read(REG_CURRENT_COUNT)
}

/// Signals end of interrupt.
pub fn eoi() {
    write(REG_EOI, 0);
}
