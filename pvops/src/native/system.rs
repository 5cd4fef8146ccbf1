//! Native system operations: the kernel knows how its machine powers off
//! (ACPI, a test device...), so it registers a hook.

use crate::system::ShutdownReason;
use core::sync::atomic::{AtomicPtr, Ordering};

/// A kernel's power-off routine.
pub type ShutdownHook = fn(ShutdownReason);

static HOOK: AtomicPtr<()> = AtomicPtr::new(core::ptr::null_mut());

/// Registers how this machine powers off natively.
pub fn set_shutdown_hook(hook: ShutdownHook) {
    HOOK.store(hook as *mut (), Ordering::Release);
}

/// Calls the kernel's hook, if any; returns when there is none or it returned.
pub extern "C" fn shutdown(reason: ShutdownReason) {
    let hook = HOOK.load(Ordering::Acquire);
    if !hook.is_null() {
        // SAFETY: only `set_shutdown_hook` stores here, always a `ShutdownHook`.
        let hook: ShutdownHook = unsafe { core::mem::transmute::<*mut (), ShutdownHook>(hook) };
        hook(reason);
    }
}

/// Bare metal has nobody to tell.
pub extern "C" fn report_crash(_message: &&str) {}
