//! CPU instructions on the host: CPUID, MSRs, TSC, interrupt flag, HLT.

use core::arch::asm;
use core::arch::x86_64::{__cpuid_count, _rdtsc, CpuidResult};

/// EFER (AMD APM vol. 2, 3.1.7).
pub const MSR_EFER: u32 = 0xC000_0080;
/// EFER.SVME (bit 12).
pub const EFER_SVME: u64 = 1 << 12;
/// VM_CR (APM vol. 2, 15.30.1); bit 4 is SVMDIS.
pub const MSR_VM_CR: u32 = 0xC001_0114;
/// VM_HSAVE_PA (APM vol. 2, 15.30.4).
pub const MSR_VM_HSAVE_PA: u32 = 0xC001_0117;
/// TSC_AUX (AMD APM vol. 2, 13.2.4 "RDTSCP"; APM vol. 3 RDTSCP/RDPID).
pub const MSR_TSC_AUX: u32 = 0xC000_0103;

/// Whether this CPU has TSC_AUX: RDTSCP (CPUID 8000_0001h:EDX[27]) or
/// RDPID (CPUID 7:ECX[22]) (AMD APM vol. 3, appendix E; Intel SDM vol. 2A,
/// CPUID).
pub fn has_tsc_aux() -> bool {
    let ext = cpuid(0x8000_0000, 0).eax;
    let rdtscp = ext >= 0x8000_0001 && cpuid(0x8000_0001, 0).edx & (1 << 27) != 0;
    let rdpid = cpuid(0, 0).eax >= 7 && cpuid(7, 0).ecx & (1 << 22) != 0;
    rdtscp || rdpid
}

/// IA32_APIC_BASE.
pub const MSR_APIC_BASE: u32 = 0x1B;

/// Executes CPUID on the host.
pub fn cpuid(leaf: u32, subleaf: u32) -> CpuidResult {
    __cpuid_count(leaf, subleaf)
}

/// Reads the host TSC.
pub fn rdtsc() -> u64 {
    // SAFETY: RDTSC is unprivileged and side-effect free.
    unsafe { _rdtsc() }
}

/// Reads a host MSR.
///
/// # Safety
/// `msr` must exist on this CPU (otherwise #GP, which the microvisor treats
/// as a fatal host fault).
pub unsafe fn rdmsr(msr: u32) -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: the caller guarantees the MSR exists; RDMSR touches no memory.
    unsafe {
        asm!("rdmsr", in("ecx") msr, out("eax") lo, out("edx") hi, options(nomem, nostack, preserves_flags))
    };
    (hi as u64) << 32 | lo as u64
}

/// Writes a host MSR.
///
/// # Safety
/// `msr` must exist and `value` must be valid for it; the write must not
/// break the microvisor's own execution environment.
pub unsafe fn wrmsr(msr: u32, value: u64) {
    // SAFETY: the caller guarantees the write is valid and harmless.
    unsafe {
        asm!("wrmsr", in("ecx") msr, in("eax") value as u32, in("edx") (value >> 32) as u32, options(nostack, preserves_flags))
    };
}

/// Waits for an interrupt with interrupts enabled only during the wait:
/// `sti; hlt; cli` (STI's one-instruction shadow makes the pair atomic, so a
/// wake-up already pending is not lost).
pub fn wait_for_interrupt() {
    // SAFETY: the host IDT handles every vector the microvisor enables (its
    // LAPIC timer and the spurious vector); GIF is set outside VMRUN.
    unsafe { asm!("sti", "hlt", "cli", options(nomem, nostack)) };
}
