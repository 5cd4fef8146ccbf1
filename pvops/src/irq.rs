//! Interrupt operations, dispatched through the table.

use crate::patch::table;

/// The interrupt-enable flag in RFLAGS.
pub const FLAGS_IF: u64 = 1 << 9;

/// Returns the current RFLAGS; test [`FLAGS_IF`] for the interrupt flag.
#[inline]
pub fn save_flags() -> u64 {
    (table().irq.save_flags)()
}

/// Restores the interrupt flag from a value returned by [`save_flags`].
#[inline]
pub fn restore_flags(flags: u64) {
    (table().irq.restore_flags)(flags)
}

/// Disables interrupts on this CPU.
#[inline]
pub fn disable() {
    (table().irq.disable)()
}

/// Enables interrupts on this CPU.
#[inline]
pub fn enable() {
    (table().irq.enable)()
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
    (table().irq.safe_halt)()
}

/// Signals end of interrupt for the interrupt being handled.
#[inline]
pub fn eoi() {
    (table().irq.eoi)()
}

/// Sends fixed interrupt `vector` to the CPU whose APIC ID is `dest`.
#[inline]
pub fn send_ipi(dest: u32, vector: u8) {
    (table().irq.send_ipi)(dest, vector)
}

/// Sends fixed interrupt `vector` to every CPU whose APIC ID (0..64) is set
/// in `cpus`.
#[inline]
pub fn send_ipi_mask(cpus: u64, vector: u8) {
    (table().irq.send_ipi_mask)(cpus, vector)
}

/// Runs `f` with interrupts disabled, restoring the previous state after.
pub fn without_interrupts<R>(f: impl FnOnce() -> R) -> R {
    let flags = save_flags();
    disable();
    let r = f();
    restore_flags(flags);
    r
}
