//! The few raw instructions bootkit itself needs. Every `unsafe` block of
//! the crate that is not about boot memory lives here or in `idt`/`gdt`.

/// Returns RFLAGS.
#[inline]
pub fn rflags() -> u64 {
    let flags: u64;
    // SAFETY: reads RFLAGS through the stack; no other effect.
    unsafe {
        core::arch::asm!("pushfq", "pop {}", out(reg) flags, options(nomem, preserves_flags))
    };
    flags
}

/// RFLAGS.IF.
pub const FLAGS_IF: u64 = 1 << 9;

/// Disables interrupts, returning whether they were enabled.
#[inline]
pub fn irq_save() -> bool {
    let was = rflags() & FLAGS_IF != 0;
    // SAFETY: masking interrupts cannot break memory safety.
    unsafe { core::arch::asm!("cli", options(nomem, nostack)) };
    was
}

/// Re-enables interrupts if `was_enabled`.
#[inline]
pub fn irq_restore(was_enabled: bool) {
    if was_enabled {
        // SAFETY: restores a state the caller had before `irq_save`; the
        // kernel had an IDT then.
        unsafe { core::arch::asm!("sti", options(nomem, nostack)) };
    }
}

/// Reads CR2 (the last page-fault address).
#[inline]
pub fn cr2() -> u64 {
    let v: u64;
    // SAFETY: reading CR2 has no side effect in ring 0.
    unsafe {
        core::arch::asm!("mov {}, cr2", out(reg) v, options(nomem, nostack, preserves_flags))
    };
    v
}

/// Writes a byte to an I/O port.
///
/// # Safety
///
/// The write must not break memory safety (e.g. by reprogramming a DMA
/// engine).
#[inline]
pub unsafe fn outb(port: u16, value: u8) {
    // SAFETY: forwarded to the caller.
    unsafe {
        core::arch::asm!("out dx, al", in("dx") port, in("al") value, options(nomem, nostack, preserves_flags))
    };
}

/// Reads a byte from an I/O port.
///
/// # Safety
///
/// The read must have no side effect the caller is not prepared for.
#[inline]
pub unsafe fn inb(port: u16) -> u8 {
    let v: u8;
    // SAFETY: forwarded to the caller.
    unsafe {
        core::arch::asm!("in al, dx", in("dx") port, out("al") v, options(nomem, nostack, preserves_flags))
    };
    v
}

/// Halts forever with interrupts off.
pub fn halt_forever() -> ! {
    loop {
        // SAFETY: CLI; HLT only stops this CPU (an NMI resumes the loop).
        unsafe { core::arch::asm!("cli", "hlt", options(nomem, nostack)) };
    }
}
