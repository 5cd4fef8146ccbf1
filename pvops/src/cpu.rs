//! CPU operations, dispatched through the table.

use crate::patch::table;
use crate::CpuidResult;
pub use x86::dtables::DescriptorTablePointer;

/// Executes CPUID with EAX = `leaf`, ECX = `subleaf`.
#[inline]
pub fn cpuid(leaf: u32, subleaf: u32) -> CpuidResult {
    (table().cpu.cpuid)(leaf, subleaf)
}

/// Reads model-specific register `msr`.
///
/// # Safety
///
/// `msr` must exist on this CPU (else #GP) and reading it must have no side
/// effect the caller is not prepared for.
#[inline]
pub unsafe fn read_msr(msr: u32) -> u64 {
    // SAFETY: forwarded to the caller.
    unsafe { (table().cpu.read_msr)(msr) }
}

/// Writes `value` to model-specific register `msr`.
///
/// # Safety
///
/// `msr` must exist and accept `value`; the write must not break memory
/// safety (e.g. by moving a page the kernel uses).
#[inline]
pub unsafe fn write_msr(msr: u32, value: u64) {
    // SAFETY: forwarded to the caller.
    unsafe { (table().cpu.write_msr)(msr, value) }
}

/// Reads CR0.
#[inline]
pub fn read_cr0() -> u64 {
    (table().cpu.read_cr0)()
}

/// Writes CR0.
///
/// # Safety
///
/// The new value must keep protection, paging and caching consistent with
/// what the kernel relies on.
#[inline]
pub unsafe fn write_cr0(value: u64) {
    // SAFETY: forwarded to the caller.
    unsafe { (table().cpu.write_cr0)(value) }
}

/// Reads CR4.
#[inline]
pub fn read_cr4() -> u64 {
    (table().cpu.read_cr4)()
}

/// Writes CR4.
///
/// # Safety
///
/// The new value must be valid for this CPU and keep paging consistent.
#[inline]
pub unsafe fn write_cr4(value: u64) {
    // SAFETY: forwarded to the caller.
    unsafe { (table().cpu.write_cr4)(value) }
}

/// A [`DescriptorTablePointer`] (what [`load_gdt`] and [`load_idt`] take)
/// to `table`: base = its address, limit = its size - 1. Works for any
/// table laid out as the CPU reads it: an array of descriptors of your own,
/// or the rust-osdev `x86_64` crate's `InterruptDescriptorTable` (load it
/// with `load_idt(&table_pointer(&IDT)?)` instead of `IDT.load()`, which
/// executes LIDT behind pvops' back). `None` for an empty table or one
/// larger than 64 KiB (no limit describes it).
///
/// ```
/// static IDT: [u128; 256] = [0; 256];
/// let p = pvops::cpu::table_pointer(&IDT).unwrap();
/// assert_eq!({ p.limit }, 4095);
/// ```
pub fn table_pointer<T>(table: &'static T) -> Option<DescriptorTablePointer<u64>> {
    raw_table_pointer(table as *const T as u64, core::mem::size_of::<T>())
}

/// [`table_pointer`] for a slice of entries, e.g. the `x86_64` crate's
/// `GlobalDescriptorTable::entries()` (load it with
/// `load_gdt(&slice_pointer(GDT.entries())?)` instead of `GDT.load()`).
pub fn slice_pointer<T>(entries: &'static [T]) -> Option<DescriptorTablePointer<u64>> {
    raw_table_pointer(entries.as_ptr() as u64, core::mem::size_of_val(entries))
}

/// A pointer from a table's base address and size in bytes, e.g. from the
/// `x86_64` crate's `DescriptorTablePointer` (`base.as_u64()`, `limit + 1`).
/// `None` when `size` is 0 or above 64 KiB. Building the pointer is safe;
/// loading it is the `unsafe` step.
pub fn raw_table_pointer(base: u64, size: usize) -> Option<DescriptorTablePointer<u64>> {
    let limit = u16::try_from(size.checked_sub(1)?).ok()?;
    Some(DescriptorTablePointer {
        limit,
        base: base as *const u64,
    })
}

/// Loads IDTR.
///
/// # Safety
///
/// `idt` must describe a valid IDT that lives as long as it is loaded.
#[inline]
pub unsafe fn load_idt(idt: &DescriptorTablePointer<u64>) {
    // SAFETY: forwarded to the caller.
    unsafe { (table().cpu.load_idt)(idt) }
}

/// Loads GDTR.
///
/// # Safety
///
/// `gdt` must describe a valid GDT that lives as long as it is loaded and
/// contains the selectors currently in use.
#[inline]
pub unsafe fn load_gdt(gdt: &DescriptorTablePointer<u64>) {
    // SAFETY: forwarded to the caller.
    unsafe { (table().cpu.load_gdt)(gdt) }
}

/// Writes back and invalidates all caches.
#[inline]
pub fn wbinvd() {
    (table().cpu.wbinvd)()
}

/// Halts until the next interrupt, leaving the interrupt flag as it is.
/// With interrupts disabled this halts until an NMI; see
/// [`crate::irq::safe_halt`] for idling.
#[inline]
pub fn halt() {
    (table().cpu.halt)()
}

/// A short delay for slow legacy devices (a no-op under most hypervisors).
#[inline]
pub fn io_delay() {
    (table().cpu.io_delay)()
}

/// Reads the time-stamp counter.
#[inline]
pub fn read_tsc() -> u64 {
    (table().cpu.read_tsc)()
}
