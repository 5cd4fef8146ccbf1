//! Per-VP state of the Hyper-V backend, indexed by the pvops CPU index
//! ([`pvops::percpu::current`], no exit) or by APIC ID.
//!
//! - The VP index of every CPU, read from `HV_X64_MSR_VP_INDEX` on that CPU
//!   (TLFS, Virtual Processor Properties: "Virtual Processor Index"; the
//!   TLFS does not tie it to the APIC ID, review finding F4), kept by CPU
//!   index for reports and by APIC ID (0..64, the table's masks) for the
//!   processor sets of the flush and IPI hypercalls.
//! - The VP assist page of every VP (TLFS, Virtual Processor Assist Page:
//!   one per VP), which lazy EOI reads on the running CPU only.
//! - Whether synthetic timer 0 is usable on the CPU (its MSRs are per VP).

use core::ptr;
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, Ordering};
use pvops::percpu::MAX_CPUS;

/// "Not known" in the VP-index tables.
pub(crate) const NO_VP: u32 = u32::MAX;

static VP_BY_CPU: [AtomicU32; MAX_CPUS] = [const { AtomicU32::new(NO_VP) }; MAX_CPUS];
static VP_BY_APIC: [AtomicU32; 64] = [const { AtomicU32::new(NO_VP) }; 64];
static ASSIST: [AtomicPtr<u8>; MAX_CPUS] = [const { AtomicPtr::new(ptr::null_mut()) }; MAX_CPUS];
static STIMER_NATIVE: [AtomicBool; MAX_CPUS] = [const { AtomicBool::new(false) }; MAX_CPUS];

/// Records CPU `cpu` (APIC ID `apic`) as VP `vp`.
pub(crate) fn set_vp(cpu: usize, apic: u32, vp: u32) {
    if let Some(s) = VP_BY_CPU.get(cpu) {
        s.store(vp, Ordering::Release);
    }
    if let Some(s) = VP_BY_APIC.get(apic as usize) {
        s.store(vp, Ordering::Release);
    }
}

/// The VP index of CPU `cpu`, once its set-up read it.
pub fn vp_index(cpu: usize) -> Option<u32> {
    let vp = VP_BY_CPU.get(cpu)?.load(Ordering::Acquire);
    (vp != NO_VP).then_some(vp)
}

/// The VP index of the CPU with APIC ID `apic` (below 64), if known.
pub(crate) fn vp_of_apic(apic: u32) -> Option<u32> {
    let vp = VP_BY_APIC.get(apic as usize)?.load(Ordering::Acquire);
    (vp != NO_VP).then_some(vp)
}

/// Publishes CPU `cpu`'s enabled VP assist page.
pub(crate) fn set_assist_page(cpu: usize, virt: *mut u8) {
    if let Some(s) = ASSIST.get(cpu) {
        s.store(virt, Ordering::Release);
    }
}

/// The running CPU's VP assist page, null when it has none.
pub(crate) fn assist_page() -> *mut u8 {
    ASSIST[pvops::percpu::current() % MAX_CPUS].load(Ordering::Acquire)
}

/// Whether CPU `cpu` has an assist page.
pub fn has_assist_page(cpu: usize) -> bool {
    ASSIST
        .get(cpu)
        .is_some_and(|s| !s.load(Ordering::Acquire).is_null())
}

/// Marks synthetic timer 0 unusable (or usable again) on CPU `cpu`.
pub(crate) fn set_stimer_native(cpu: usize, native: bool) {
    if let Some(s) = STIMER_NATIVE.get(cpu) {
        s.store(native, Ordering::Release);
    }
}

/// Whether the running CPU uses the native timer.
pub(crate) fn stimer_native() -> bool {
    STIMER_NATIVE[pvops::percpu::current() % MAX_CPUS].load(Ordering::Acquire)
}
