//! Interrupt operations, dispatched through patchable call sites
//! ([`crate::dispatch`]).

use crate::dispatch::site::site;

/// The interrupt-enable flag in RFLAGS.
pub const FLAGS_IF: u64 = 1 << 9;

/// Returns the current RFLAGS; test [`FLAGS_IF`] for the interrupt flag.
#[inline]
pub fn save_flags() -> u64 {
    let v: u64;
    // SAFETY: the site calls the table's `irq.save_flags` function (`extern "C"`, type
    // checked by the table) with its arguments and result in the System V
    // registers and every caller-saved register declared clobbered
    // (dispatch/site.rs).
    unsafe { site!(IRQ_SAVE_FLAGS; out("rax") v,) };
    v
}

/// Restores the interrupt flag from a value returned by [`save_flags`].
#[inline]
pub fn restore_flags(flags: u64) {
    // SAFETY: the site calls the table's `irq.restore_flags` function (`extern "C"`, type
    // checked by the table) with its arguments and result in the System V
    // registers and every caller-saved register declared clobbered
    // (dispatch/site.rs).
    unsafe { site!(IRQ_RESTORE_FLAGS; in("rdi") flags,) }
}

/// Disables interrupts on this CPU.
#[inline]
pub fn disable() {
    // SAFETY: the site calls the table's `irq.disable` function (`extern "C"`, type
    // checked by the table) with its arguments and result in the System V
    // registers and every caller-saved register declared clobbered
    // (dispatch/site.rs).
    unsafe { site!(IRQ_DISABLE;) }
}

/// Enables interrupts on this CPU.
#[inline]
pub fn enable() {
    // SAFETY: the site calls the table's `irq.enable` function (`extern "C"`, type
    // checked by the table) with its arguments and result in the System V
    // registers and every caller-saved register declared clobbered
    // (dispatch/site.rs).
    unsafe { site!(IRQ_ENABLE;) }
}

/// Whether interrupts are enabled on this CPU.
#[inline]
pub fn enabled() -> bool {
    save_flags() & FLAGS_IF != 0
}

/// Enables interrupts and waits for one, with no window in which a wake-up
/// can be lost. Returns with interrupts enabled.
#[inline]
pub fn safe_halt() {
    // SAFETY: the site calls the table's `irq.safe_halt` function (`extern "C"`, type
    // checked by the table) with its arguments and result in the System V
    // registers and every caller-saved register declared clobbered
    // (dispatch/site.rs).
    unsafe { site!(IRQ_SAFE_HALT;) }
}

/// Signals end of interrupt for the interrupt being handled.
#[inline]
pub fn eoi() {
    // SAFETY: the site calls the table's `irq.eoi` function (`extern "C"`, type
    // checked by the table) with its arguments and result in the System V
    // registers and every caller-saved register declared clobbered
    // (dispatch/site.rs).
    unsafe { site!(IRQ_EOI;) }
}

/// Sends fixed interrupt `vector` to the CPU whose APIC ID is `dest`.
#[inline]
pub fn send_ipi(dest: u32, vector: u8) {
    // SAFETY: the site calls the table's `irq.send_ipi` function (`extern "C"`, type
    // checked by the table) with its arguments and result in the System V
    // registers and every caller-saved register declared clobbered
    // (dispatch/site.rs).
    unsafe { site!(IRQ_SEND_IPI; in("rdi") u64::from(dest), in("rsi") u64::from(vector),) }
}

/// Sends fixed interrupt `vector` to every CPU whose APIC ID (0..64) is set
/// in `cpus`.
#[inline]
pub fn send_ipi_mask(cpus: u64, vector: u8) {
    // SAFETY: the site calls the table's `irq.send_ipi_mask` function (`extern "C"`, type
    // checked by the table) with its arguments and result in the System V
    // registers and every caller-saved register declared clobbered
    // (dispatch/site.rs).
    unsafe { site!(IRQ_SEND_IPI_MASK; in("rdi") cpus, in("rsi") u64::from(vector),) }
}

/// Runs `f` with interrupts disabled, restoring the previous state after.
pub fn without_interrupts<R>(f: impl FnOnce() -> R) -> R {
    let flags = save_flags();
    disable();
    let r = f();
    restore_flags(flags);
    r
}
