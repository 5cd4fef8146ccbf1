//! The one-shot timer on synthetic timer 0 in direct mode (TLFS, Timers:
//! Direct Synthetic Timers, Synthetic Timer Configuration Register).
//!
//! `timer_setup` programs STIMER0_CONFIG as one-shot, direct mode,
//! auto-enable, with the vector (disabling the timer first, since the TLFS
//! warns that reconfiguring an enabled timer is undefined). `timer_arm`
//! writes the absolute expiry in reference time to STIMER0_COUNT, which
//! auto-enable turns into "enabled"; `timer_cancel` writes 0, which stops
//! the timer whatever auto-enable says. A one-shot timer disables itself
//! when it fires. The interrupt is a fixed APIC interrupt: the handler's
//! EOI is all the acknowledgement it needs.
//!
//! The synthetic timer MSRs are per VP, so each CPU programs its own; a
//! CPU whose set-up found them unusable uses the local APIC timer
//! ([`super::percpu::stimer_native`]).

use super::{clock, msr};
use pvops_abi::hyperv::{msr as m, ns_to_reference, StimerConfig};

/// `time.timer_setup`.
pub(crate) extern "C" fn timer_setup(vector: u8) {
    if super::percpu::stimer_native() {
        return pvops::native::time::timer_setup(vector);
    }
    msr::write(m::STIMER0_CONFIG, 0);
    msr::write(m::STIMER0_CONFIG, StimerConfig::direct_one_shot(vector).0);
}

/// The STIMER0_COUNT value for a timer `delta_ns` after reference time
/// `now`; never 0, which would mean "stop".
pub(crate) fn expiry(now: u64, delta_ns: u64) -> u64 {
    now.wrapping_add(ns_to_reference(delta_ns)).max(1)
}

/// `time.timer_arm`.
pub(crate) extern "C" fn timer_arm(delta_ns: u64) {
    if super::percpu::stimer_native() {
        return pvops::native::time::timer_arm(delta_ns);
    }
    msr::write(m::STIMER0_COUNT, expiry(clock::reference_time(), delta_ns));
}

/// `time.timer_cancel`.
pub(crate) extern "C" fn timer_cancel() {
    if super::percpu::stimer_native() {
        return pvops::native::time::timer_cancel();
    }
    msr::write(m::STIMER0_COUNT, 0);
}

#[cfg(test)]
mod tests {
    #[test]
    fn expiry_rounds_up_and_is_never_zero() {
        assert_eq!(super::expiry(1000, 1), 1001);
        assert_eq!(super::expiry(1000, 1_000_000), 11_000);
        assert_eq!(super::expiry(u64::MAX, 100), 1);
    }
}
