//! System operations, dispatched through the table.

use crate::patch::table;

/// Why the kernel is stopping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShutdownReason {
    /// Orderly power-off; the run succeeded.
    PowerOff,
    /// The kernel crashed or a check failed.
    Crash,
}

/// Asks the platform (a hypervisor's shutdown call, or the kernel's hook
/// natively) to power off. Returns only if nothing stopped the machine.
#[inline]
pub fn shutdown(reason: ShutdownReason) {
    (table().system.shutdown)(reason)
}

/// Hands a crash message to the hypervisor, where it has a channel for one.
#[inline]
pub fn report_crash(message: &str) {
    (table().system.report_crash)(message)
}
