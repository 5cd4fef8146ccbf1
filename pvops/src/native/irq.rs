//! Native interrupt operations.

use super::apic;
use crate::irq::FLAGS_IF;

/// PUSHFQ.
pub extern "C" fn save_flags() -> u64 {
    let flags: u64;
    // SAFETY: reads RFLAGS through the stack; no other effect.
    unsafe {
        core::arch::asm!("pushfq", "pop {}", out(reg) flags, options(nomem, preserves_flags))
    };
    flags
}

/// STI or CLI, from the saved IF bit.
pub extern "C" fn restore_flags(flags: u64) {
    if flags & FLAGS_IF != 0 {
        enable()
    } else {
        disable()
    }
}

/// CLI.
pub extern "C" fn disable() {
    // SAFETY: masking interrupts cannot break memory safety.
    unsafe { x86::irq::disable() }
}

/// STI.
pub extern "C" fn enable() {
    // SAFETY: the kernel has an IDT before it uses pvops; taking an interrupt
    // is then a normal, memory-safe event.
    unsafe { x86::irq::enable() }
}

/// STI immediately followed by HLT: STI's one-instruction shadow means an
/// interrupt that is already pending wakes the HLT instead of being taken
/// in between (Intel SDM vol. 2B, STI).
pub extern "C" fn safe_halt() {
    // SAFETY: as `enable` and `halt`.
    unsafe { core::arch::asm!("sti", "hlt", options(nomem, nostack)) }
}

/// Writes the local APIC EOI register.
pub extern "C" fn eoi() {
    apic::write(apic::Register::Eoi, 0);
}

/// Writes the interrupt command register: fixed delivery, physical
/// destination, edge, assert.
pub extern "C" fn send_ipi(dest: u32, vector: u8) {
    apic::send_ipi(dest, vector);
}

/// One ICR write per destination.
pub extern "C" fn send_ipi_mask(cpus: u64, vector: u8) {
    let mut rest = cpus;
    while rest != 0 {
        let id = rest.trailing_zeros();
        apic::send_ipi(id, vector);
        rest &= rest - 1;
    }
}
