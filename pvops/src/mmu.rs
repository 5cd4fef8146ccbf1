//! MMU operations, dispatched through the table.

use crate::patch::table;

/// The kernel's cross-CPU flush, used by the native [`flush_remote`] (also
/// at `pvops::native::mmu`).
pub use crate::native::mmu::{set_remote_flush_hook, RemoteFlushHook};

/// Reads CR2, the linear address of the last page fault.
#[inline]
pub fn read_cr2() -> u64 {
    (table().mmu.read_cr2)()
}

/// Reads CR3.
#[inline]
pub fn read_cr3() -> u64 {
    (table().mmu.read_cr3)()
}

/// Writes CR3, switching to another address space.
///
/// # Safety
///
/// `value` must point to valid page tables that map the running code, its
/// stack and everything the kernel will touch.
#[inline]
pub unsafe fn write_cr3(value: u64) {
    // SAFETY: forwarded to the caller.
    unsafe { (table().mmu.write_cr3)(value) }
}

/// Flushes the TLB entry for the page containing `virt` on this CPU.
#[inline]
pub fn flush_page(virt: u64) {
    (table().mmu.flush_page)(virt)
}

/// Flushes every non-global TLB entry on this CPU.
#[inline]
pub fn flush_all() {
    (table().mmu.flush_all)()
}

/// Flushes every TLB entry on this CPU, global ones included.
#[inline]
pub fn flush_all_global() {
    (table().mmu.flush_all_global)()
}

/// Enters lazy MMU mode: page-table updates may be batched until
/// [`lazy_leave`] or [`lazy_flush`].
#[inline]
pub fn lazy_enter() {
    (table().mmu.lazy_enter)()
}

/// Leaves lazy MMU mode; every batched update is visible afterwards.
#[inline]
pub fn lazy_leave() {
    (table().mmu.lazy_leave)()
}

/// Makes batched updates visible, staying in lazy mode.
#[inline]
pub fn lazy_flush() {
    (table().mmu.lazy_flush)()
}

/// Runs `f` in lazy MMU mode, leaving it afterwards.
pub fn lazy<R>(f: impl FnOnce() -> R) -> R {
    lazy_enter();
    let r = f();
    lazy_leave();
    r
}

/// What [`flush_remote`] flushes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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
    (table().mmu.flush_remote)(cpus, target)
}
