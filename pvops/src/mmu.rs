//! MMU operations, dispatched through patchable call sites
//! ([`crate::dispatch`]).

use crate::dispatch::site::site;

/// The kernel's cross-CPU flush, used by the native [`flush_remote`] (also
/// at `pvops::native::mmu`).
pub use crate::native::mmu::{set_remote_flush_hook, RemoteFlushHook};

/// Reads CR2, the linear address of the last page fault.
#[inline]
pub fn read_cr2() -> u64 {
    let v: u64;
    // SAFETY: the site calls the table's `mmu.read_cr2` function (`extern "C"`, type
    // checked by the table) with its arguments and result in the System V
    // registers and every caller-saved register declared clobbered
    // (dispatch/site.rs).
    unsafe { site!(MMU_READ_CR2; out("rax") v,) };
    v
}

/// Reads CR3.
#[inline]
pub fn read_cr3() -> u64 {
    let v: u64;
    // SAFETY: the site calls the table's `mmu.read_cr3` function (`extern "C"`, type
    // checked by the table) with its arguments and result in the System V
    // registers and every caller-saved register declared clobbered
    // (dispatch/site.rs).
    unsafe { site!(MMU_READ_CR3; out("rax") v,) };
    v
}

/// Writes CR3, switching to another address space.
///
/// # Safety
///
/// `value` must point to valid page tables that map the running code, its
/// stack and everything the kernel will touch.
#[inline]
pub unsafe fn write_cr3(value: u64) {
    // SAFETY: the site calls the table's `mmu.write_cr3` function (`extern "C"`, type
    // checked by the table) with its arguments and result in the System V
    // registers and every caller-saved register declared clobbered
    // (dispatch/site.rs).
    // The operation's own contract is forwarded to the caller.
    unsafe { site!(MMU_WRITE_CR3; in("rdi") value,) }
}

/// Flushes the TLB entry for the page containing `virt` on this CPU.
#[inline]
pub fn flush_page(virt: u64) {
    // SAFETY: the site calls the table's `mmu.flush_page` function (`extern "C"`, type
    // checked by the table) with its arguments and result in the System V
    // registers and every caller-saved register declared clobbered
    // (dispatch/site.rs).
    unsafe { site!(MMU_FLUSH_PAGE; in("rdi") virt,) }
}

/// Flushes every non-global TLB entry on this CPU.
#[inline]
pub fn flush_all() {
    // SAFETY: the site calls the table's `mmu.flush_all` function (`extern "C"`, type
    // checked by the table) with its arguments and result in the System V
    // registers and every caller-saved register declared clobbered
    // (dispatch/site.rs).
    unsafe { site!(MMU_FLUSH_ALL;) }
}

/// Flushes every TLB entry on this CPU, global ones included.
#[inline]
pub fn flush_all_global() {
    // SAFETY: the site calls the table's `mmu.flush_all_global` function (`extern "C"`, type
    // checked by the table) with its arguments and result in the System V
    // registers and every caller-saved register declared clobbered
    // (dispatch/site.rs).
    unsafe { site!(MMU_FLUSH_ALL_GLOBAL;) }
}

/// Enters lazy MMU mode: page-table updates may be batched until
/// [`lazy_leave`] or [`lazy_flush`].
#[inline]
pub fn lazy_enter() {
    // SAFETY: the site calls the table's `mmu.lazy_enter` function (`extern "C"`, type
    // checked by the table) with its arguments and result in the System V
    // registers and every caller-saved register declared clobbered
    // (dispatch/site.rs).
    unsafe { site!(MMU_LAZY_ENTER;) }
}

/// Leaves lazy MMU mode; every batched update is visible afterwards.
#[inline]
pub fn lazy_leave() {
    // SAFETY: the site calls the table's `mmu.lazy_leave` function (`extern "C"`, type
    // checked by the table) with its arguments and result in the System V
    // registers and every caller-saved register declared clobbered
    // (dispatch/site.rs).
    unsafe { site!(MMU_LAZY_LEAVE;) }
}

/// Makes batched updates visible, staying in lazy mode.
#[inline]
pub fn lazy_flush() {
    // SAFETY: the site calls the table's `mmu.lazy_flush` function (`extern "C"`, type
    // checked by the table) with its arguments and result in the System V
    // registers and every caller-saved register declared clobbered
    // (dispatch/site.rs).
    unsafe { site!(MMU_LAZY_FLUSH;) }
}

/// Runs `f` in lazy MMU mode, leaving it afterwards.
pub fn lazy<R>(f: impl FnOnce() -> R) -> R {
    lazy_enter();
    let r = f();
    lazy_leave();
    r
}

/// What [`flush_remote`] flushes (`repr(u64)`: tag then address, 16 bytes,
/// passed in two registers to the `extern "C"` table function).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u64)]
pub enum FlushTarget {
    /// The page containing this virtual address.
    Page(u64),
    /// Every non-global entry.
    All,
}

/// Flushes `target` on every CPU whose APIC ID (0..64) is set in `cpus`,
/// this one included if its bit is set.
#[inline]
pub fn flush_remote(cpus: u64, target: FlushTarget) {
    // `repr(u64)`: the tag (declaration order) then the address, a 16-byte
    // aggregate passed in RSI:RDX after `cpus` (psABI 3.2.3).
    let (tag, va) = match target {
        FlushTarget::Page(va) => (0u64, va),
        FlushTarget::All => (1, 0),
    };
    // SAFETY: the site calls the table's `mmu.flush_remote` function (`extern "C"`, type
    // checked by the table) with its arguments and result in the System V
    // registers and every caller-saved register declared clobbered
    // (dispatch/site.rs).
    unsafe { site!(MMU_FLUSH_REMOTE; in("rdi") cpus, in("rsi") tag, in("rdx") va,) }
}
