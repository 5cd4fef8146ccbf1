//! Native lock operations: on bare metal a CPU is never preempted by a
//! hypervisor, so a waiter just spins and nobody needs waking.

use core::sync::atomic::AtomicU32;

/// One PAUSE (a spin-wait hint, Intel SDM vol. 2B), then back to the
/// caller, which checks its word again.
pub extern "C" fn wait(_word: &AtomicU32, _expected: u32) {
    core::hint::spin_loop();
}

/// A spinning waiter needs no wake-up.
pub extern "C" fn kick(_cpu: u32) {}

/// A physical CPU is never preempted by a hypervisor.
pub extern "C" fn vcpu_is_preempted(_cpu: u32) -> bool {
    false
}
