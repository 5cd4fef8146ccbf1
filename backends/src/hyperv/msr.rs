//! Synthetic MSR access.
//!
//! Every synthetic MSR the backend touches is gated by a privilege or
//! feature bit that [`super::Offer`] checked first; a missing one would only
//! raise #GP. None of these MSRs can break memory safety except the three
//! page-enabling ones (HYPERCALL, REFERENCE_TSC, VP_ASSIST_PAGE), which make
//! the hypervisor overlay a guest page: those go through [`enable_page`],
//! which only accepts a [`SharedPage`] the kernel lent for exactly that.

use crate::SharedPage;
use pvops_abi::hyperv::{hypercall_msr, msr, page_msr};

/// Reads synthetic MSR `index`.
pub(crate) fn read(index: u32) -> u64 {
    debug_assert!(msr::is_synthetic(index));
    // SAFETY: reading a synthetic MSR has no side effect on guest memory
    // (GUEST_IDLE, whose read idles the VP, is never read here); callers
    // check the MSR's privilege bit, so the read does not fault.
    unsafe { pvops::native::cpu::read_msr(index) }
}

/// Writes synthetic MSR `index`; never one of the page-enabling MSRs.
pub(crate) fn write(index: u32, value: u64) {
    debug_assert!(msr::is_synthetic(index));
    debug_assert!(![msr::HYPERCALL, msr::REFERENCE_TSC, msr::VP_ASSIST_PAGE].contains(&index));
    // SAFETY: the MSRs written through here (GUEST_OS_ID, EOI, STIMER0_*,
    // CRASH_*) change interrupt, timer or reporting state, never the guest's
    // memory; callers check the privilege bit first.
    unsafe { pvops::native::cpu::write_msr(index, value) }
}

/// The value that points page-enabling MSR `index` (HYPERCALL,
/// REFERENCE_TSC or VP_ASSIST_PAGE), currently `current`, at `phys` and
/// enables it, preserving the reserved bits (TLFS: "guests should preserve
/// the value of the reserved bits").
pub(crate) fn enable_value(index: u32, current: u64, phys: u64) -> u64 {
    if index == msr::HYPERCALL {
        hypercall_msr::enable(current, phys)
    } else {
        page_msr::enable(current, phys)
    }
}

/// Points page-enabling MSR `index` at `page` and enables it
/// ([`enable_value`]). Returns the value read back afterwards.
pub(crate) fn enable_page(index: u32, page: &SharedPage) -> u64 {
    let value = enable_value(index, read(index), page.phys);
    // SAFETY: `page` was lent by the kernel for the rest of its life to be
    // shared with the hypervisor (`Platform::alloc_shared_page`), so nothing
    // else uses the memory the hypervisor now overlays or writes.
    unsafe { pvops::native::cpu::write_msr(index, value) };
    read(index)
}
