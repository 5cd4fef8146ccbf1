//! Today's dispatch, kept for comparison: each function loads the entry
//! from the table and calls it indirectly, as every operation did before
//! call sites were patched. Only benchmarks should use these; kernels call
//! [`crate::cpu`], [`crate::irq`], ... whose sites are patched.

use crate::patch::table;

/// `irq.save_flags` through the table.
#[inline]
pub fn save_flags() -> u64 {
    (table().irq.save_flags)()
}

/// `irq.restore_flags` through the table.
#[inline]
pub fn restore_flags(flags: u64) {
    (table().irq.restore_flags)(flags)
}

/// `irq.disable` through the table.
#[inline]
pub fn disable() {
    (table().irq.disable)()
}

/// `irq.enable` through the table.
#[inline]
pub fn enable() {
    (table().irq.enable)()
}

/// `mmu.read_cr2` through the table.
#[inline]
pub fn read_cr2() -> u64 {
    (table().mmu.read_cr2)()
}

/// `mmu.read_cr3` through the table.
#[inline]
pub fn read_cr3() -> u64 {
    (table().mmu.read_cr3)()
}

/// `cpu.read_tsc` through the table.
#[inline]
pub fn read_tsc() -> u64 {
    (table().cpu.read_tsc)()
}

/// `cpu.io_delay` through the table.
#[inline]
pub fn io_delay() {
    (table().cpu.io_delay)()
}

/// `mmu.flush_page` through the table.
#[inline]
pub fn flush_page(virt: u64) {
    (table().mmu.flush_page)(virt)
}

/// `time.monotonic_ns` through the table.
#[inline]
pub fn monotonic_ns() -> u64 {
    (table().time.monotonic_ns)()
}

/// `time.tsc_frequency` through the table.
#[inline]
pub fn tsc_frequency() -> crate::time::TscFrequency {
    (table().time.tsc_frequency)()
}

/// `time.steal_ns` through the table.
#[inline]
pub fn steal_ns() -> u64 {
    (table().time.steal_ns)()
}

/// `time.apic_timer_khz` through the table.
#[inline]
pub fn apic_timer_khz() -> u64 {
    (table().time.apic_timer_khz)()
}

/// `irq.eoi` through the table.
#[inline]
pub fn eoi() {
    (table().irq.eoi)()
}

/// `cpu.cpuid` through the table.
#[inline]
pub fn cpuid(leaf: u32, subleaf: u32) -> crate::CpuidResult {
    (table().cpu.cpuid)(leaf, subleaf)
}
