//! Reading a pvclock (`struct pvclock_vcpu_time_info`, shared by Xen and
//! KVM, layout in `pvops_abi::pvclock`) by its version protocol.
//!
//! The hypervisor makes `version` odd, writes the fields, then makes it
//! even again (xen.h `vcpu_time_info` comment; KVM msr.rst,
//! `MSR_KVM_SYSTEM_TIME_NEW`: "guests should ... check the version field
//! ... if odd, an update is in progress"). A reader retries while the
//! version is odd or changed across its copy (Linux
//! `pvclock_clocksource_read`).

use core::sync::atomic::{fence, Ordering};
use pvops_abi::pvclock::VcpuTimeInfo;

/// A consistent copy of the pvclock at `t` and the TSC read inside the
/// same version window, or `None` when the version stayed odd (or kept
/// changing) for `tries` attempts.
///
/// # Safety
///
/// `t` must point to a readable, 8-byte aligned `VcpuTimeInfo` that stays
/// mapped while this runs (the hypervisor may write it concurrently).
pub(crate) unsafe fn read(t: *const VcpuTimeInfo, tries: u32) -> Option<(VcpuTimeInfo, u64)> {
    // SAFETY: forwarded to the caller.
    unsafe { read_with(t, tries, crate::tsc::ordered, core::hint::spin_loop) }
}

/// [`read`] with the TSC reader and the wait between attempts supplied:
/// the kernel passes an ordered RDTSC and a spin hint, host tests a model
/// hypervisor that rewrites the page (torn updates) from either hook.
///
/// # Safety
///
/// As [`read`].
pub(crate) unsafe fn read_with(
    t: *const VcpuTimeInfo,
    tries: u32,
    mut tsc: impl FnMut() -> u64,
    mut spin: impl FnMut(),
) -> Option<(VcpuTimeInfo, u64)> {
    for _ in 0..tries {
        // SAFETY: `t` is valid and aligned (the caller's contract); the
        // hypervisor writes it concurrently, so every read is volatile.
        let v1 = unsafe { core::ptr::addr_of!((*t).version).read_volatile() };
        if v1 & 1 != 0 {
            spin();
            continue;
        }
        fence(Ordering::Acquire);
        // SAFETY: as above.
        let snap = unsafe { t.read_volatile() };
        // RDTSC is not ordered by the fences; LFENCE before it keeps it from
        // running ahead of the field reads (Linux uses rdtsc_ordered()).
        let now = tsc();
        fence(Ordering::Acquire);
        // SAFETY: as above.
        let v2 = unsafe { core::ptr::addr_of!((*t).version).read_volatile() };
        if v1 == v2 {
            return Some((
                VcpuTimeInfo {
                    version: v1,
                    ..snap
                },
                now,
            ));
        }
    }
    None
}
