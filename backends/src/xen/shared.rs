//! Accessors for the memory Xen writes: shared_info (vCPU 0's `vcpu_info`,
//! its pvclock, the event-channel words) and the runstate area.
//!
//! Xen updates these concurrently with the guest, so every read is volatile
//! or atomic; the pvclock and runstate reads follow their seqlock protocols
//! with fences. The unsafe code of the backend outside the hypercall leaf
//! is here.

use core::sync::atomic::{fence, AtomicPtr, AtomicU64, AtomicU8, Ordering};
use pvops_abi::pvclock::VcpuTimeInfo;
use pvops_abi::xen::{self as abi, VcpuInfo, VcpuRunstateInfo};

static SHARED_INFO: AtomicPtr<u8> = AtomicPtr::new(core::ptr::null_mut());
static RUNSTATE: AtomicPtr<VcpuRunstateInfo> = AtomicPtr::new(core::ptr::null_mut());

/// Records where shared_info is mapped.
///
/// # Safety
///
/// `page` must be the 4 KiB mapping of the guest frame Xen placed
/// shared_info at, valid for the rest of the kernel's life and used for
/// nothing else.
pub(super) unsafe fn set_shared_info(page: *mut u8) {
    SHARED_INFO.store(page, Ordering::Release);
}

/// Records where the runstate area is.
///
/// # Safety
///
/// `area` must be a registered, 8-byte aligned runstate area valid for the
/// rest of the kernel's life.
pub(super) unsafe fn set_runstate(area: *mut VcpuRunstateInfo) {
    RUNSTATE.store(area, Ordering::Release);
}

fn shared() -> Option<*mut u8> {
    let p = SHARED_INFO.load(Ordering::Acquire);
    (!p.is_null()).then_some(p)
}

fn vcpu0() -> Option<*mut VcpuInfo> {
    // vcpu_info[0] is at offset 0; the page is 4 KiB aligned.
    shared().map(|p| p.wrapping_add(abi::vcpu_info_offset(0)).cast::<VcpuInfo>())
}

/// Why a pvclock read failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum ClockError {
    /// shared_info is not mapped.
    NotMapped,
    /// The version stayed odd for the whole retry budget.
    StuckOdd,
}

/// A consistent copy of vCPU 0's pvclock and the TSC read with it, by the
/// version-retry protocol (xen.h `vcpu_time_info` comment; Linux
/// `pvclock_clocksource_read`): retry while the version is odd or changed.
/// Gives up after `tries` attempts.
pub(super) fn read_time(tries: u32) -> Result<(VcpuTimeInfo, u64), ClockError> {
    let vi = vcpu0().ok_or(ClockError::NotMapped)?;
    // `time` is at offset 32 of vcpu_info (checked in pvops-abi).
    let t = vi
        .cast::<u8>()
        .wrapping_add(core::mem::offset_of!(VcpuInfo, time))
        .cast::<VcpuTimeInfo>();
    // SAFETY: `t` points into the live shared_info page (see
    // `set_shared_info`), 8-byte aligned.
    unsafe { crate::pvclock::read(t, tries) }.ok_or(ClockError::StuckOdd)
}

/// Whether vCPU 0 has an event upcall pending.
pub(super) fn upcall_pending() -> bool {
    match vcpu0() {
        // SAFETY: the byte is inside the live shared_info page; atomics on
        // shared memory Xen also writes are how Linux treats it.
        Some(vi) => unsafe {
            AtomicU8::from_ptr(core::ptr::addr_of_mut!((*vi).evtchn_upcall_pending))
                .load(Ordering::Acquire)
                != 0
        },
        None => false,
    }
}

/// Masks every event channel of the 2-level ABI and forgets any upcall
/// raised before: right after shared_info is mapped nothing is bound, so
/// no event can be live (Linux `xen_init_IRQ` -> `xen_evtchn_mask_all`;
/// Xen's own guest `map_shared_info`, "Mask all upcalls"). Events on masked
/// ports stay recorded in `evtchn_pending`; unmasking a port that is
/// pending notifies it again (Xen `evtchn_2l_unmask`). Review finding F1:
/// the toolstack's xenstore and console ports share word 0 with the timer.
pub(super) fn mask_all() {
    if let (Some(page), Some(vi)) = (shared(), vcpu0()) {
        // SAFETY: shared() and vcpu0() point into the live shared_info page
        // (`set_shared_info`'s contract).
        unsafe { mask_all_in(page, vi) }
    }
}

/// [`mask_all`] on the shared_info page at `page` (its vCPU 0 `vcpu_info`
/// at `vi`).
///
/// # Safety
///
/// `page` must point to 4 KiB laid out as `shared_info`, 8-byte aligned and
/// valid for atomic access; `vi` to its `vcpu_info[0]`.
pub(super) unsafe fn mask_all_in(page: *mut u8, vi: *mut VcpuInfo) {
    for word in 0..abi::EVTCHN_2L_WORDS {
        // SAFETY: the mask words lie inside the page at the ABI offsets
        // (checked in pvops-abi), naturally aligned.
        unsafe {
            AtomicU64::from_ptr(page.add(abi::evtchn_mask_offset(word)).cast::<u64>())
                .store(!0, Ordering::SeqCst);
        }
    }
    // SAFETY: as above, inside `vcpu_info[0]`.
    unsafe {
        AtomicU64::from_ptr(core::ptr::addr_of_mut!((*vi).evtchn_pending_sel))
            .store(0, Ordering::SeqCst);
        AtomicU8::from_ptr(core::ptr::addr_of_mut!((*vi).evtchn_upcall_pending))
            .store(0, Ordering::SeqCst);
    }
}

/// Acknowledges an upcall on vCPU 0 and consumes `port`'s pending bit.
/// Returns whether the port was pending (and unmasked). See
/// [`ack_port_in`].
pub(super) fn ack_port(port: u32) -> bool {
    match (shared(), vcpu0()) {
        // SAFETY: as in `mask_all`.
        (Some(page), Some(vi)) => unsafe { ack_port_in(page, vi, port) },
        _ => false,
    }
}

/// Acknowledges an upcall in the page at `page` and consumes `port`:
/// clears `evtchn_upcall_pending`, takes the selector with an exchange and
/// clears the port's pending bit if it is pending and unmasked — the order
/// of Linux `__xen_evtchn_do_upcall` and Xen's `xen_evtchn_upcall`. The
/// taken selector is never written back: with every other port masked
/// ([`mask_all`]) it names nothing else, and a selector bit set without
/// `evtchn_upcall_pending` would keep Xen from ever raising an upcall for
/// that word again (`evtchn_2l_set_pending` notifies only on the selector
/// bit's 0->1 transition; review finding F1).
///
/// # Safety
///
/// As [`mask_all_in`].
pub(super) unsafe fn ack_port_in(page: *mut u8, vi: *mut VcpuInfo, port: u32) -> bool {
    let (word, bit) = abi::port_word_bit(port);
    if word >= abi::EVTCHN_2L_WORDS {
        return false;
    }
    // SAFETY: every pointer below lies inside the page at the offsets fixed
    // by the ABI (checked in pvops-abi), naturally aligned; Xen updates these
    // words with locked instructions, so atomics are the right access (Linux:
    // xchg on pending_sel, lock and on pending).
    unsafe {
        AtomicU8::from_ptr(core::ptr::addr_of_mut!((*vi).evtchn_upcall_pending))
            .store(0, Ordering::SeqCst);
        let sel = AtomicU64::from_ptr(core::ptr::addr_of_mut!((*vi).evtchn_pending_sel));
        sel.swap(0, Ordering::SeqCst);
        let pending = AtomicU64::from_ptr(page.add(abi::evtchn_pending_offset(word)).cast::<u64>());
        let mask = AtomicU64::from_ptr(page.add(abi::evtchn_mask_offset(word)).cast::<u64>());
        let scan = abi::scan_port(
            pending.load(Ordering::SeqCst),
            mask.load(Ordering::SeqCst),
            port,
        );
        let hit = scan.pending && !scan.masked;
        if hit {
            pending.fetch_and(!(1u64 << bit), Ordering::SeqCst);
        }
        hit
    }
}

/// Stolen time from the runstate area (runnable + offline), read
/// consistently: `state_entry_time` before and after the copy must match
/// and not carry `XEN_RUNSTATE_UPDATE` (Linux
/// `xen_get_runstate_snapshot_cpu_delta`). `None` when not registered, or
/// when no consistent copy was had in `tries` attempts.
pub(super) fn steal_ns(tries: u32) -> Option<u64> {
    let r = RUNSTATE.load(Ordering::Acquire);
    if r.is_null() {
        return None;
    }
    // SAFETY: `set_runstate`'s contract: a live, aligned area Xen writes.
    unsafe { steal_ns_at(r, tries, || {}) }
}

/// [`steal_ns`] on the runstate area at `r`, with `mid` run between the
/// copy and the second read of `state_entry_time` (host tests model Xen
/// rewriting the area there; the kernel passes nothing).
///
/// # Safety
///
/// `r` must point to a readable, 8-byte aligned `VcpuRunstateInfo` that
/// stays mapped while this runs.
pub(super) unsafe fn steal_ns_at(
    r: *const VcpuRunstateInfo,
    tries: u32,
    mut mid: impl FnMut(),
) -> Option<u64> {
    for _ in 0..tries {
        // SAFETY: the caller's contract: a live, aligned area Xen writes.
        let before = unsafe { core::ptr::addr_of!((*r).state_entry_time).read_volatile() };
        fence(Ordering::Acquire);
        // SAFETY: as above.
        let snap = unsafe { r.read_volatile() };
        mid();
        fence(Ordering::Acquire);
        // SAFETY: as above.
        let after = unsafe { core::ptr::addr_of!((*r).state_entry_time).read_volatile() };
        if before == after && before & abi::XEN_RUNSTATE_UPDATE == 0 {
            return Some(snap.steal_ns());
        }
        core::hint::spin_loop();
    }
    None
}
