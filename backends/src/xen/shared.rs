//! Accessors for the memory Xen writes: shared_info (the event-channel
//! words), each vCPU's `vcpu_info` (its pvclock, upcall flag and selector:
//! shared_info's slot for vCPU ids below 32, else the area registered with
//! `VCPUOP_register_vcpu_info`) and each vCPU's runstate area. The running
//! CPU's are found by [`pvops::percpu::current`] (no exit).
//!
//! Xen updates these concurrently with the guest, so every read is volatile
//! or atomic; the pvclock and runstate reads follow their seqlock protocols
//! with fences. The unsafe code of the backend outside the hypercall leaf
//! is here.

use core::sync::atomic::{fence, AtomicI32, AtomicPtr, AtomicU64, AtomicU8, Ordering};
use pvops::percpu::MAX_CPUS;
use pvops_abi::pvclock::VcpuTimeInfo;
use pvops_abi::xen::{self as abi, VcpuInfo, VcpuRunstateInfo};

static SHARED_INFO: AtomicPtr<u8> = AtomicPtr::new(core::ptr::null_mut());
static RUNSTATE: [AtomicPtr<VcpuRunstateInfo>; MAX_CPUS] =
    [const { AtomicPtr::new(core::ptr::null_mut()) }; MAX_CPUS];
static VCPU_INFO: [AtomicPtr<VcpuInfo>; MAX_CPUS] =
    [const { AtomicPtr::new(core::ptr::null_mut()) }; MAX_CPUS];

/// Records CPU `cpu`'s `vcpu_info`.
///
/// # Safety
///
/// `vi` must point to that vCPU's live `vcpu_info` (in shared_info or a
/// registered area), valid for the rest of the kernel's life.
pub(super) unsafe fn set_vcpu_info(cpu: usize, vi: *mut VcpuInfo) {
    if let Some(s) = VCPU_INFO.get(cpu) {
        s.store(vi, Ordering::Release);
    }
}

/// shared_info's `vcpu_info` slot of vCPU `vcpu` (below 32), once mapped.
pub(super) fn legacy_slot(vcpu: u32) -> Option<*mut VcpuInfo> {
    let v = vcpu as usize;
    (v < abi::XEN_LEGACY_MAX_VCPUS)
        .then(|| shared().map(|p| p.wrapping_add(abi::vcpu_info_offset(v)).cast::<VcpuInfo>()))
        .flatten()
}

/// Whether CPU `cpu` has a `vcpu_info`.
#[cfg(test)]
pub(super) fn has_vcpu_info(cpu: usize) -> bool {
    VCPU_INFO
        .get(cpu)
        .is_some_and(|s| !s.load(Ordering::Acquire).is_null())
}

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
pub(super) unsafe fn set_runstate(cpu: usize, area: *mut VcpuRunstateInfo) {
    if let Some(s) = RUNSTATE.get(cpu) {
        s.store(area, Ordering::Release);
    }
}

/// CPU `cpu`'s current `RUNSTATE_*`, if it registered an area.
pub(super) fn runstate_state(cpu: usize) -> Option<i32> {
    let r = RUNSTATE.get(cpu)?.load(Ordering::Acquire);
    if r.is_null() {
        return None;
    }
    // SAFETY: `set_runstate`'s contract: a live, aligned area Xen writes;
    // `state` is a naturally aligned 32-bit field Xen stores whole.
    Some(
        unsafe { AtomicI32::from_ptr(core::ptr::addr_of_mut!((*r).state)) }.load(Ordering::Acquire),
    )
}

fn shared() -> Option<*mut u8> {
    let p = SHARED_INFO.load(Ordering::Acquire);
    (!p.is_null()).then_some(p)
}

/// The running CPU's `vcpu_info`; a CPU without one (its set-up failed)
/// reads the boot CPU's pvclock (system time is one timeline) but has no
/// upcalls of its own.
fn vcpu_here() -> Option<*mut VcpuInfo> {
    let p = VCPU_INFO[pvops::percpu::current() % MAX_CPUS].load(Ordering::Acquire);
    (!p.is_null()).then_some(p)
}

fn vcpu_clock() -> Option<*mut VcpuInfo> {
    vcpu_here().or_else(|| {
        let p = VCPU_INFO[0].load(Ordering::Acquire);
        (!p.is_null()).then_some(p)
    })
}

/// Why a pvclock read failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum ClockError {
    /// shared_info is not mapped.
    NotMapped,
    /// The version stayed odd for the whole retry budget.
    StuckOdd,
}

/// A consistent copy of the running vCPU's pvclock and the TSC read with it, by the
/// version-retry protocol (xen.h `vcpu_time_info` comment; Linux
/// `pvclock_clocksource_read`): retry while the version is odd or changed.
/// Gives up after `tries` attempts.
pub(super) fn read_time(tries: u32) -> Result<(VcpuTimeInfo, u64), ClockError> {
    let vi = vcpu_clock().ok_or(ClockError::NotMapped)?;
    // `time` is at offset 32 of vcpu_info (checked in pvops-abi).
    let t = vi
        .cast::<u8>()
        .wrapping_add(core::mem::offset_of!(VcpuInfo, time))
        .cast::<VcpuTimeInfo>();
    // SAFETY: `t` points into the live shared_info page (see
    // `set_shared_info`), 8-byte aligned.
    unsafe { crate::pvclock::read(t, tries) }.ok_or(ClockError::StuckOdd)
}

/// Whether the running vCPU has an event upcall pending.
pub(super) fn upcall_pending() -> bool {
    match vcpu_here() {
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
    if let (Some(page), Some(vi)) = (shared(), vcpu_here()) {
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

/// Acknowledges an upcall on the running vCPU and consumes `port`'s
/// pending bit.
/// Returns whether the port was pending (and unmasked). See
/// [`ack_port_in`].
pub(super) fn ack_port(port: u32) -> bool {
    match (shared(), vcpu_here()) {
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
    let r = RUNSTATE[pvops::percpu::current() % MAX_CPUS].load(Ordering::Acquire);
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

/// Sets `port`'s mask bit (an IPI port for the lock group stays masked:
/// it only wakes `SCHEDOP_poll`, never raises an upcall).
pub(super) fn mask_port(port: u32) {
    port_word(port, |_, mask, bit| {
        mask.fetch_or(1 << bit, Ordering::SeqCst);
    });
}

/// Clears `port`'s pending bit.
pub(super) fn clear_pending(port: u32) {
    port_word(port, |pending, _, bit| {
        pending.fetch_and(!(1 << bit), Ordering::SeqCst);
    });
}

fn port_word(port: u32, f: impl FnOnce(&AtomicU64, &AtomicU64, u32)) {
    let (word, bit) = abi::port_word_bit(port);
    let Some(page) = shared() else { return };
    if word >= abi::EVTCHN_2L_WORDS {
        return;
    }
    // SAFETY: the pending and mask words lie inside the live shared_info
    // page at the ABI offsets (checked in pvops-abi), naturally aligned;
    // Xen updates them with locked instructions.
    let (pending, mask) = unsafe {
        (
            AtomicU64::from_ptr(page.add(abi::evtchn_pending_offset(word)).cast::<u64>()),
            AtomicU64::from_ptr(page.add(abi::evtchn_mask_offset(word)).cast::<u64>()),
        )
    };
    f(pending, mask, bit);
}
