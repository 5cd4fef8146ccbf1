//! Interrupt vectors, handlers and local APIC bring-up.

use bootkit::idt::{self, InterruptFrame};
use core::sync::atomic::{AtomicU64, Ordering};
use pvops::native::apic::{self, Mode, Register};

/// One-shot timer vector.
pub const TIMER_VECTOR: u8 = 0x40;
/// Self-IPI test vector.
pub const IPI_VECTOR: u8 = 0x41;
/// Spurious-interrupt vector of the local APIC.
pub const SPURIOUS_VECTOR: u8 = idt::SPURIOUS_VECTOR;

static TIMER_COUNT: AtomicU64 = AtomicU64::new(0);
static TIMER_LAST_NS: AtomicU64 = AtomicU64::new(0);
static IPI_COUNT: AtomicU64 = AtomicU64::new(0);

/// Timer interrupts taken so far.
pub fn timer_count() -> u64 {
    TIMER_COUNT.load(Ordering::SeqCst)
}

/// The clock (`pvops::time::monotonic_ns`) read in the last timer handler.
pub fn timer_last_ns() -> u64 {
    TIMER_LAST_NS.load(Ordering::SeqCst)
}

/// Self-IPIs taken so far.
pub fn ipi_count() -> u64 {
    IPI_COUNT.load(Ordering::SeqCst)
}

fn timer_handler(_frame: &mut InterruptFrame) {
    pvops::time::timer_ack();
    TIMER_LAST_NS.store(pvops::time::monotonic_ns(), Ordering::SeqCst);
    TIMER_COUNT.fetch_add(1, Ordering::SeqCst);
    pvops::irq::eoi();
}

fn ipi_handler(_frame: &mut InterruptFrame) {
    IPI_COUNT.fetch_add(1, Ordering::SeqCst);
    pvops::irq::eoi();
}

/// Spurious IRQ 7/15 of the (masked) legacy PICs: no EOI is due.
fn pic_spurious(_frame: &mut InterruptFrame) {}

/// Installs the kernel's handlers.
pub fn install_handlers() {
    idt::set_handler(TIMER_VECTOR, Some(timer_handler));
    idt::set_handler(IPI_VECTOR, Some(ipi_handler));
    idt::set_handler(0x27, Some(pic_spurious));
    idt::set_handler(0x2f, Some(pic_spurious));
}

/// Enables the local APIC: x2APIC when CPUID reports it, else xAPIC at the
/// (identity-mapped, uncached) base from IA32_APIC_BASE. Masks LINT0 (the
/// legacy PIC's ExtINT line). Returns the mode, or why it could not.
pub fn enable_apic() -> Result<Mode, &'static str> {
    let leaf1 = pvops::cpu::cpuid(1, 0);
    if leaf1.edx & (1 << 9) == 0 {
        return Err("CPUID reports no local APIC");
    }
    let mode = if leaf1.ecx & (1 << 21) != 0 {
        Mode::X2Apic
    } else {
        // IA32_APIC_BASE bits 12 and up (to MAXPHYADDR, at most 51) hold the
        // xAPIC's physical base (Intel SDM Vol. 3A, "Local APIC Status and
        // Location").
        // SAFETY: IA32_APIC_BASE exists on every CPU with an APIC (checked).
        let base = unsafe { pvops::cpu::read_msr(apic::MSR_APIC_BASE) } & 0x000f_ffff_ffff_f000;
        if base >= 4 << 30 {
            return Err("xAPIC base above the 4 GiB identity map");
        }
        Mode::XApic {
            base: base as usize,
        }
    };
    // SAFETY: x2APIC only when CPUID reports it; the xAPIC base is inside
    // the permanent identity map (uncached from 3 GiB, where it sits).
    unsafe { apic::enable(mode, SPURIOUS_VECTOR) };
    apic::write(Register::LvtLint0, 1 << 16);
    apic::write(Register::Tpr, 0);
    Ok(mode)
}
