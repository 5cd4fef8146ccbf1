//! Interrupt vectors, handlers and local APIC bring-up.

use bootkit::idt::{self, InterruptFrame};
use core::sync::atomic::{AtomicU64, Ordering};
use pvops::native::apic::{self, Mode};

/// One-shot timer vector.
pub const TIMER_VECTOR: u8 = 0x40;
/// Self-IPI test vector (also the cross-CPU IPI test's).
pub const IPI_VECTOR: u8 = 0x41;
/// Wakes an application processor to look at its mailbox (`smp`).
pub const WAKE_VECTOR: u8 = 0x42;
/// Asks a CPU to flush its TLB (the native remote flush, `smp`).
pub const FLUSH_VECTOR: u8 = 0x43;
/// Spurious-interrupt vector of the local APIC.
pub const SPURIOUS_VECTOR: u8 = idt::SPURIOUS_VECTOR;

/// CPUs with their own interrupt counters (pvops' CPU index).
const CPUS: usize = pvops::percpu::MAX_CPUS;

static TIMER_COUNT: [AtomicU64; CPUS] = [const { AtomicU64::new(0) }; CPUS];
static TIMER_LAST_NS: AtomicU64 = AtomicU64::new(0);
static IPI_COUNT: [AtomicU64; CPUS] = [const { AtomicU64::new(0) }; CPUS];

/// Timer interrupts this CPU took so far.
pub fn timer_count() -> u64 {
    timer_count_of(pvops::percpu::current())
}

/// Timer interrupts CPU `cpu` took so far.
pub fn timer_count_of(cpu: usize) -> u64 {
    TIMER_COUNT[cpu % CPUS].load(Ordering::SeqCst)
}

/// The clock (`pvops::time::monotonic_ns`) read in the last timer handler.
pub fn timer_last_ns() -> u64 {
    TIMER_LAST_NS.load(Ordering::SeqCst)
}

/// IPIs (vector [`IPI_VECTOR`]) this CPU took so far.
pub fn ipi_count() -> u64 {
    ipi_count_of(pvops::percpu::current())
}

/// IPIs CPU `cpu` took so far.
pub fn ipi_count_of(cpu: usize) -> u64 {
    IPI_COUNT[cpu % CPUS].load(Ordering::SeqCst)
}

fn timer_handler(_frame: &mut InterruptFrame) {
    pvops::time::timer_ack();
    TIMER_LAST_NS.store(pvops::time::monotonic_ns(), Ordering::SeqCst);
    TIMER_COUNT[pvops::percpu::current()].fetch_add(1, Ordering::SeqCst);
    pvops::irq::eoi();
}

fn ipi_handler(_frame: &mut InterruptFrame) {
    IPI_COUNT[pvops::percpu::current()].fetch_add(1, Ordering::SeqCst);
    pvops::irq::eoi();
}

fn wake_handler(_frame: &mut InterruptFrame) {
    pvops::irq::eoi();
}

fn flush_handler(_frame: &mut InterruptFrame) {
    crate::smp::on_flush_ipi();
    pvops::irq::eoi();
}

/// Spurious IRQ 7/15 of the (masked) legacy PICs: no EOI is due.
fn pic_spurious(_frame: &mut InterruptFrame) {}

/// Installs the kernel's handlers.
pub fn install_handlers() {
    idt::set_handler(TIMER_VECTOR, Some(timer_handler));
    idt::set_handler(IPI_VECTOR, Some(ipi_handler));
    idt::set_handler(WAKE_VECTOR, Some(wake_handler));
    idt::set_handler(FLUSH_VECTOR, Some(flush_handler));
    idt::set_handler(0x27, Some(pic_spurious));
    idt::set_handler(0x2f, Some(pic_spurious));
}

/// Enables the local APIC in the mode CPUID prefers (x2APIC, else xAPIC at
/// its identity-mapped, uncached base; `pvops::apic::enable` also masks the
/// legacy PICs and LINT0). Returns the mode, or why it could not.
pub fn enable_apic() -> Result<Mode, &'static str> {
    let mode = pvops::apic::preferred_mode()?;
    if let Mode::XApic { base } = mode {
        if base as u64 >= 4 << 30 {
            return Err("xAPIC base above the 4 GiB identity map");
        }
    }
    // SAFETY: x2APIC only when CPUID reports it (preferred_mode); the xAPIC
    // base is inside the permanent identity map (uncached from 3 GiB, where
    // it sits).
    unsafe { apic::enable(mode, SPURIOUS_VECTOR) };
    Ok(mode)
}
