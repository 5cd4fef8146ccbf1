//! Native CPU operations.

use crate::CpuidResult;
use x86::dtables::DescriptorTablePointer;

/// CPUID, unfiltered.
pub extern "C" fn cpuid(leaf: u32, subleaf: u32) -> CpuidResult {
    use pvops_probe::CpuidSource;
    pvops_probe::NativeCpuid.cpuid(leaf, subleaf)
}

/// RDMSR.
///
/// # Safety
///
/// See [`crate::cpu::read_msr`].
pub unsafe extern "C" fn read_msr(msr: u32) -> u64 {
    // SAFETY: the caller guarantees the MSR exists and may be read.
    unsafe { x86::msr::rdmsr(msr) }
}

/// WRMSR.
///
/// # Safety
///
/// See [`crate::cpu::write_msr`].
pub unsafe extern "C" fn write_msr(msr: u32, value: u64) {
    // SAFETY: the caller guarantees the MSR exists and accepts the value.
    unsafe { x86::msr::wrmsr(msr, value) }
}

/// MOV from CR0.
pub extern "C" fn read_cr0() -> u64 {
    // SAFETY: reading CR0 has no side effects; it faults only outside ring 0,
    // where a kernel using pvops does not run.
    unsafe { x86::controlregs::cr0().bits() as u64 }
}

/// MOV to CR0.
///
/// # Safety
///
/// See [`crate::cpu::write_cr0`].
pub unsafe extern "C" fn write_cr0(value: u64) {
    // SAFETY: the caller guarantees the value keeps the machine consistent.
    unsafe {
        x86::controlregs::cr0_write(x86::controlregs::Cr0::from_bits_truncate(value as usize))
    }
}

/// MOV from CR4.
pub extern "C" fn read_cr4() -> u64 {
    // SAFETY: reading CR4 has no side effects in ring 0.
    unsafe { x86::controlregs::cr4().bits() as u64 }
}

/// MOV to CR4.
///
/// # Safety
///
/// See [`crate::cpu::write_cr4`].
pub unsafe extern "C" fn write_cr4(value: u64) {
    // SAFETY: the caller guarantees the value is valid for this CPU.
    unsafe {
        x86::controlregs::cr4_write(x86::controlregs::Cr4::from_bits_truncate(value as usize))
    }
}

/// LIDT.
///
/// # Safety
///
/// See [`crate::cpu::load_idt`].
pub unsafe extern "C" fn load_idt(idt: &DescriptorTablePointer<u64>) {
    // SAFETY: the caller guarantees a valid, long-lived IDT.
    unsafe { x86::dtables::lidt(idt) }
}

/// LGDT.
///
/// # Safety
///
/// See [`crate::cpu::load_gdt`].
pub unsafe extern "C" fn load_gdt(gdt: &DescriptorTablePointer<u64>) {
    // SAFETY: the caller guarantees a valid, long-lived GDT.
    unsafe { x86::dtables::lgdt(gdt) }
}

/// WBINVD.
pub extern "C" fn wbinvd() {
    // SAFETY: WBINVD writes dirty lines back before invalidating, so no data
    // is lost; it only costs time.
    unsafe { core::arch::asm!("wbinvd", options(nostack, preserves_flags)) }
}

/// HLT.
pub extern "C" fn halt() {
    // SAFETY: HLT only waits; with interrupts disabled an NMI or SMI wakes it.
    unsafe { x86::halt() }
}

/// An OUT to the unused diagnostic port 0x80, the classic ~1 µs ISA delay.
pub extern "C" fn io_delay() {
    // SAFETY: port 0x80 is the POST diagnostic port; writing it has no effect
    // on any device a kernel uses.
    unsafe { x86::io::outb(0x80, 0) }
}

/// RDTSC.
pub extern "C" fn read_tsc() -> u64 {
    // SAFETY: RDTSC only reads the counter (CR4.TSD does not apply in ring 0).
    unsafe { x86::time::rdtsc() }
}
