//! CPU operations, dispatched through patchable call sites
//! ([`crate::dispatch`]).

use crate::dispatch::site::site;
use crate::CpuidResult;
pub use x86::dtables::DescriptorTablePointer;

/// Executes CPUID with EAX = `leaf`, ECX = `subleaf`.
#[inline]
pub fn cpuid(leaf: u32, subleaf: u32) -> CpuidResult {
    let (lo, hi): (u64, u64);
    // SAFETY: the site calls the table's `cpu.cpuid` function (`extern "C"`, type
    // checked by the table) with its arguments and result in the System V
    // registers and every caller-saved register declared clobbered
    // (dispatch/site.rs).
    unsafe {
        site!(CPU_CPUID; in("rdi") u64::from(leaf), in("rsi") u64::from(subleaf),
            out("rax") lo, out("rdx") hi,)
    };
    // A 16-byte `repr(C)` result comes back in RAX:RDX (psABI 3.2.3).
    CpuidResult {
        eax: lo as u32,
        ebx: (lo >> 32) as u32,
        ecx: hi as u32,
        edx: (hi >> 32) as u32,
    }
}

/// Reads model-specific register `msr`.
///
/// # Safety
///
/// `msr` must exist on this CPU (else #GP) and reading it must have no side
/// effect the caller is not prepared for.
#[inline]
pub unsafe fn read_msr(msr: u32) -> u64 {
    let v: u64;
    // SAFETY: the site calls the table's `cpu.read_msr` function (`extern "C"`, type
    // checked by the table) with its arguments and result in the System V
    // registers and every caller-saved register declared clobbered
    // (dispatch/site.rs).
    // The MSR's own contract is forwarded to the caller.
    unsafe { site!(CPU_READ_MSR; in("rdi") u64::from(msr), out("rax") v,) };
    v
}

/// Writes `value` to model-specific register `msr`.
///
/// # Safety
///
/// `msr` must exist and accept `value`; the write must not break memory
/// safety (e.g. by moving a page the kernel uses).
#[inline]
pub unsafe fn write_msr(msr: u32, value: u64) {
    // SAFETY: the site calls the table's `cpu.write_msr` function (`extern "C"`, type
    // checked by the table) with its arguments and result in the System V
    // registers and every caller-saved register declared clobbered
    // (dispatch/site.rs).
    // The MSR's own contract is forwarded to the caller.
    unsafe { site!(CPU_WRITE_MSR; in("rdi") u64::from(msr), in("rsi") value,) }
}

/// Reads CR0.
#[inline]
pub fn read_cr0() -> u64 {
    let v: u64;
    // SAFETY: the site calls the table's `cpu.read_cr0` function (`extern "C"`, type
    // checked by the table) with its arguments and result in the System V
    // registers and every caller-saved register declared clobbered
    // (dispatch/site.rs).
    unsafe { site!(CPU_READ_CR0; out("rax") v,) };
    v
}

/// Writes CR0.
///
/// # Safety
///
/// The new value must keep protection, paging and caching consistent with
/// what the kernel relies on.
#[inline]
pub unsafe fn write_cr0(value: u64) {
    // SAFETY: the site calls the table's `cpu.write_cr0` function (`extern "C"`, type
    // checked by the table) with its arguments and result in the System V
    // registers and every caller-saved register declared clobbered
    // (dispatch/site.rs).
    // The operation's own contract is forwarded to the caller.
    unsafe { site!(CPU_WRITE_CR0; in("rdi") value,) }
}

/// Reads CR4.
#[inline]
pub fn read_cr4() -> u64 {
    let v: u64;
    // SAFETY: the site calls the table's `cpu.read_cr4` function (`extern "C"`, type
    // checked by the table) with its arguments and result in the System V
    // registers and every caller-saved register declared clobbered
    // (dispatch/site.rs).
    unsafe { site!(CPU_READ_CR4; out("rax") v,) };
    v
}

/// Writes CR4.
///
/// # Safety
///
/// The new value must be valid for this CPU and keep paging consistent.
#[inline]
pub unsafe fn write_cr4(value: u64) {
    // SAFETY: the site calls the table's `cpu.write_cr4` function (`extern "C"`, type
    // checked by the table) with its arguments and result in the System V
    // registers and every caller-saved register declared clobbered
    // (dispatch/site.rs).
    // The operation's own contract is forwarded to the caller.
    unsafe { site!(CPU_WRITE_CR4; in("rdi") value,) }
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
    // SAFETY: the site calls the table's `cpu.load_idt` function (`extern "C"`, type
    // checked by the table) with its arguments and result in the System V
    // registers and every caller-saved register declared clobbered
    // (dispatch/site.rs).
    // The operation's own contract is forwarded to the caller.
    unsafe { site!(CPU_LOAD_IDT; in("rdi") idt as *const DescriptorTablePointer<u64>,) }
}

/// Loads GDTR.
///
/// # Safety
///
/// `gdt` must describe a valid GDT that lives as long as it is loaded and
/// contains the selectors currently in use.
#[inline]
pub unsafe fn load_gdt(gdt: &DescriptorTablePointer<u64>) {
    // SAFETY: the site calls the table's `cpu.load_gdt` function (`extern "C"`, type
    // checked by the table) with its arguments and result in the System V
    // registers and every caller-saved register declared clobbered
    // (dispatch/site.rs).
    // The operation's own contract is forwarded to the caller.
    unsafe { site!(CPU_LOAD_GDT; in("rdi") gdt as *const DescriptorTablePointer<u64>,) }
}

/// Writes back and invalidates all caches.
#[inline]
pub fn wbinvd() {
    // SAFETY: the site calls the table's `cpu.wbinvd` function (`extern "C"`, type
    // checked by the table) with its arguments and result in the System V
    // registers and every caller-saved register declared clobbered
    // (dispatch/site.rs).
    unsafe { site!(CPU_WBINVD;) }
}

/// Halts until the next interrupt, leaving the interrupt flag as it is.
/// With interrupts disabled this halts until an NMI; see
/// [`crate::irq::safe_halt`] for idling.
#[inline]
pub fn halt() {
    // SAFETY: the site calls the table's `cpu.halt` function (`extern "C"`, type
    // checked by the table) with its arguments and result in the System V
    // registers and every caller-saved register declared clobbered
    // (dispatch/site.rs).
    unsafe { site!(CPU_HALT;) }
}

/// A short delay for slow legacy devices (a no-op under most hypervisors).
#[inline]
pub fn io_delay() {
    // SAFETY: the site calls the table's `cpu.io_delay` function (`extern "C"`, type
    // checked by the table) with its arguments and result in the System V
    // registers and every caller-saved register declared clobbered
    // (dispatch/site.rs).
    unsafe { site!(CPU_IO_DELAY;) }
}

/// Reads the time-stamp counter.
#[inline]
pub fn read_tsc() -> u64 {
    let v: u64;
    // SAFETY: the site calls the table's `cpu.read_tsc` function (`extern "C"`, type
    // checked by the table) with its arguments and result in the System V
    // registers and every caller-saved register declared clobbered
    // (dispatch/site.rs).
    unsafe { site!(CPU_READ_TSC; out("rax") v,) };
    v
}
