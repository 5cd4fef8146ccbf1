//! The `lock` group on Hyper-V (TLFS, Feature and Interface Discovery:
//! Implementation Recommendations, CPUID 0x4000_0004 EBX; Hypercall
//! Reference: HvCallNotifyLongSpinWait, call code 0x0008, fast, input the
//! spin count).
//!
//! A waiter spins the hint's number of times checking its word, then tells
//! the hypervisor it has spun that long, which may run another VP (Linux
//! does the same on KVM's Hyper-V emulation: `kvm_vcpu_on_spin`). Waiters
//! never sleep, so `lock.kick` stays the native no-op, and Hyper-V gives a
//! guest no preempted flag, so `lock.vcpu_is_preempted` stays native
//! (false). A hint of 0xFFFF_FFFF means "never notify": the group then
//! stays native.

use super::hypercall;
use core::sync::atomic::{AtomicU32, Ordering};
use pvops_abi::hyperv::{call, Control};

static SPIN_RETRIES: AtomicU32 = AtomicU32::new(0);

/// Sets the spin count from CPUID 0x4000_0004 EBX.
pub(crate) fn set_spin_retries(n: u32) {
    SPIN_RETRIES.store(n, Ordering::Relaxed);
}

/// Spins up to `retries` times while `word` holds `expected`; returns
/// whether it still does (then the caller notifies the hypervisor).
pub(crate) fn spin(word: &AtomicU32, expected: u32, retries: u32) -> bool {
    for _ in 0..retries {
        if word.load(Ordering::Acquire) != expected {
            return false;
        }
        core::hint::spin_loop();
    }
    word.load(Ordering::Acquire) == expected
}

/// The control word and input of the notification for `retries` spins.
pub(crate) fn notify_input(retries: u32) -> (Control, u64) {
    (
        Control::new(call::NOTIFY_LONG_SPIN_WAIT).fast(),
        u64::from(retries),
    )
}

/// `lock.wait`: spin the recommended count, then HvCallNotifyLongSpinWait.
pub(crate) extern "C" fn wait(word: &AtomicU32, expected: u32) {
    let retries = SPIN_RETRIES.load(Ordering::Relaxed);
    if spin(word, expected, retries) {
        let (control, input) = notify_input(retries);
        // The control is already fast; `call_fast` sets the bit again.
        let _ = hypercall::call_fast(control, input, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_spin_then_notify() {
        let w = AtomicU32::new(5);
        assert!(spin(&w, 5, 100), "unchanged: notify");
        assert!(!spin(&w, 4, 100), "changed: return at once");
        let (c, input) = notify_input(0x1FFF);
        assert_eq!(c.code(), 0x0008);
        assert!(c.is_fast());
        assert_eq!(input, 0x1FFF);
    }
}
