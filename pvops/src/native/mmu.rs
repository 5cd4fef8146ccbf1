//! Native MMU operations.

use super::cpu;
use crate::mmu::FlushTarget;
use core::sync::atomic::{AtomicPtr, Ordering};

/// CR4.PGE (Intel SDM vol. 3A, 2.5).
const CR4_PGE: u64 = 1 << 7;

/// MOV from CR2.
pub extern "C" fn read_cr2() -> u64 {
    // SAFETY: reading CR2 has no side effects in ring 0.
    unsafe { x86::controlregs::cr2() as u64 }
}

/// MOV from CR3.
pub extern "C" fn read_cr3() -> u64 {
    // SAFETY: reading CR3 has no side effects in ring 0.
    unsafe { x86::controlregs::cr3() }
}

/// MOV to CR3.
///
/// # Safety
///
/// See [`crate::mmu::write_cr3`].
pub unsafe extern "C" fn write_cr3(value: u64) {
    // SAFETY: the caller guarantees the tables map everything in use.
    unsafe { x86::controlregs::cr3_write(value) }
}

/// INVLPG.
pub extern "C" fn flush_page(virt: u64) {
    // SAFETY: invalidating a TLB entry only forces a page walk later; it
    // cannot make memory reachable that the page tables do not map.
    unsafe { x86::tlb::flush(virt as usize) }
}

/// Reloads CR3, dropping every non-global entry.
pub extern "C" fn flush_all() {
    // SAFETY: writing back the current CR3 changes no mapping.
    unsafe { x86::tlb::flush_all() }
}

/// Toggles CR4.PGE (or reloads CR3 when global pages are off), dropping
/// every entry.
pub extern "C" fn flush_all_global() {
    let cr4 = cpu::read_cr4();
    if cr4 & CR4_PGE != 0 {
        // SAFETY: clearing and restoring PGE changes no mapping; it is the
        // architectural way to flush global entries (Intel SDM vol. 3A, 4.10.4.1).
        unsafe {
            cpu::write_cr4(cr4 & !CR4_PGE);
            cpu::write_cr4(cr4);
        }
    } else {
        flush_all();
    }
}

/// Lazy mode is a batching hint; native page-table writes take effect at
/// once, so there is nothing to batch.
pub extern "C" fn lazy_enter() {}

/// See [`lazy_enter`].
pub extern "C" fn lazy_leave() {}

/// See [`lazy_enter`].
pub extern "C" fn lazy_flush() {}

/// How a kernel asks its other CPUs to flush (typically an IPI whose handler
/// flushes), set with [`set_remote_flush_hook`].
pub type RemoteFlushHook = fn(u64, FlushTarget);

static REMOTE_FLUSH: AtomicPtr<()> = AtomicPtr::new(core::ptr::null_mut());

/// Registers the kernel's cross-CPU flush (called with the mask of *other*
/// CPUs). Without one, only this CPU is flushed: correct while it is the only
/// one running.
pub fn set_remote_flush_hook(hook: RemoteFlushHook) {
    REMOTE_FLUSH.store(hook as *mut (), Ordering::Release);
}

/// Flushes locally if this CPU is in `cpus`, and asks the kernel's hook to
/// flush the others. This CPU's APIC ID comes from [`crate::percpu`] once
/// it is registered (no exit), else from the local APIC.
pub extern "C" fn flush_remote(cpus: u64, target: FlushTarget) {
    let me = crate::percpu::apic_id(crate::percpu::current()).unwrap_or_else(super::apic::id);
    let self_bit = if me < 64 { 1u64 << me } else { 0 };
    if cpus & self_bit != 0 {
        match target {
            FlushTarget::Page(va) => flush_page(va),
            FlushTarget::All => flush_all(),
        }
    }
    let others = cpus & !self_bit;
    let hook = REMOTE_FLUSH.load(Ordering::Acquire);
    if others != 0 && !hook.is_null() {
        // SAFETY: the pointer was stored from a `RemoteFlushHook` in
        // `set_remote_flush_hook` and is never anything else.
        let hook: RemoteFlushHook =
            unsafe { core::mem::transmute::<*mut (), RemoteFlushHook>(hook) };
        hook(others, target);
    }
}
