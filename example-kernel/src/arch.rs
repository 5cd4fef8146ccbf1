//! The raw instructions the kernel needs beyond what pvops offers: the
//! unsafe leaf of the kernel. Everything here is a thin, documented wrapper.

use x86::dtables::DescriptorTablePointer;

/// SGDT: what the CPU's GDTR holds.
pub fn sgdt() -> DescriptorTablePointer<u64> {
    let mut p = DescriptorTablePointer::<u64>::default();
    // SAFETY: SGDT stores 10 bytes into `p`, which is exactly that size
    // (u16 limit + u64 base, packed); it has no other effect.
    unsafe { core::arch::asm!("sgdt [{}]", in(reg) &mut p, options(nostack, preserves_flags)) };
    p
}

/// SIDT: what the CPU's IDTR holds.
pub fn sidt() -> DescriptorTablePointer<u64> {
    let mut p = DescriptorTablePointer::<u64>::default();
    // SAFETY: as `sgdt`, for IDTR.
    unsafe { core::arch::asm!("sidt [{}]", in(reg) &mut p, options(nostack, preserves_flags)) };
    p
}

/// Reads a byte from an I/O port that has no device behind it (or whose
/// read has no side effect).
pub fn inb_unused(port: u16) -> u8 {
    // SAFETY: callers pass ports with no device or side-effect-free reads
    // (the bad-port probe); an IN cannot break memory safety by itself.
    unsafe { bootkit::cpu::inb(port) }
}

/// RDMSR that may raise #GP: the caller installed a vector-13 handler that
/// advances RIP by 2 (the instruction's length). A skipped RDMSR yields 0.
///
/// # Safety
///
/// As [`pvops::cpu::read_msr`] for a read that succeeds.
pub unsafe fn rdmsr_may_fault(msr: u32) -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: forwarded to the caller; a fault is stepped over. EAX/EDX are
    // preset to 0 so a skipped RDMSR yields 0.
    unsafe {
        core::arch::asm!(
            "xor eax, eax",
            "xor edx, edx",
            "rdmsr",
            in("ecx") msr,
            out("eax") lo,
            out("edx") hi,
            options(nostack)
        )
    };
    (u64::from(hi) << 32) | u64::from(lo)
}

/// RDMSR of an MSR that may not exist: a #GP is expected and must be
/// handled by a vector-13 handler that skips the 2-byte instruction.
pub fn rdmsr_expect_fault(msr: u32) -> u64 {
    // SAFETY: the caller installed a #GP handler that advances RIP by 2; if
    // the MSR exists, reading it has no side effect for the MSRs used here
    // (an unassigned index).
    unsafe { rdmsr_may_fault(msr) }
}

/// WRMSR that may raise #GP: the caller installed a vector-13 handler that
/// advances RIP by 2 (the instruction's length).
///
/// # Safety
///
/// As [`pvops::cpu::write_msr`] when the write succeeds.
pub unsafe fn wrmsr_may_fault(msr: u32, value: u64) {
    // SAFETY: forwarded to the caller; a fault is stepped over.
    unsafe {
        core::arch::asm!(
            "wrmsr",
            in("ecx") msr,
            in("eax") value as u32,
            in("edx") (value >> 32) as u32,
            options(nostack)
        )
    };
}

/// Reads a u64 at a physical address through the identity/extra mapping.
///
/// # Safety
///
/// `paddr` must be mapped by the active page tables.
pub unsafe fn read_phys(paddr: u64) -> u64 {
    // SAFETY: forwarded to the caller; a volatile read of mapped memory.
    unsafe { core::ptr::read_volatile(paddr as *const u64) }
}

/// Executes UD2 (raises #UD).
///
/// UD2 rather than INT3: KVM on AMD hosts without NRIP save must emulate
/// INT3 to re-inject it, and that emulation fails on this project's nested
/// KVM host ("KVM internal error, suberror 1"); #UD needs no emulation.
pub fn ud2() {
    // SAFETY: raises #UD through the IDT; with a valid IDT that is a normal
    // exception, with an empty one it is the deliberate triple fault.
    unsafe { core::arch::asm!("ud2", options(nomem, nostack)) };
}

/// Disables interrupts and spins forever (the `fault=hang` test).
pub fn hang() -> ! {
    // SAFETY: CLI only masks interrupts.
    unsafe { core::arch::asm!("cli", options(nomem, nostack)) };
    #[allow(clippy::empty_loop)]
    loop {
        core::hint::spin_loop();
    }
}
