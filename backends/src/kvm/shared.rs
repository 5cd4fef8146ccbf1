//! The pages pvops shares with KVM and the runtime reads of them: each
//! CPU's kvmclock area, steal-time area and PV EOI word, each at a fixed
//! offset of a lent 4 KiB page that 32 CPUs share.
//!
//! KVM writes these areas while the vCPU is not running (or, for the
//! pvclock and steal time, with the version protocol), so every read is
//! volatile or atomic. The backend's unsafe code outside the hypercall
//! leaf is here.

use core::sync::atomic::{AtomicPtr, AtomicU32, AtomicU8, Ordering};
use pvops_abi::kvm::{StealTime, PV_EOI_ENABLED, VCPU_FLUSH_TLB, VCPU_PREEMPTED};
use pvops_abi::pvclock::VcpuTimeInfo;

/// CPUs whose areas share one lent 4 KiB page: each CPU has a 64-byte
/// steal-time area, a 32-byte pvclock area and a 4-byte PV EOI word
/// (msr.rst's sizes and alignments), 100 bytes, so 32 CPUs fill 3200 bytes
/// of a page and [`pvops::percpu::MAX_CPUS`] CPUs need two pages. The boot
/// CPU lends the first page at install; the first AP of the second group
/// of 32 asks for the second in its `init_cpu`.
pub(crate) const CPUS_PER_PAGE: usize = 32;
/// Pages the per-CPU areas of [`pvops::percpu::MAX_CPUS`] CPUs take.
pub(crate) const PAGES: usize = pvops::percpu::MAX_CPUS.div_ceil(CPUS_PER_PAGE);

/// Offset of the `kvm_steal_time` of slot `slot` (`cpu % CPUS_PER_PAGE`)
/// in its page (msr.rst: 64-byte aligned; 64 bytes).
pub(crate) const fn steal_offset(slot: usize) -> usize {
    64 * slot
}
/// Offset of the kvmclock `pvclock_vcpu_time_info` of slot `slot` (msr.rst:
/// 4-byte aligned; 32 bytes; here 32-byte aligned, so never across a cache
/// line).
pub(crate) const fn clock_offset(slot: usize) -> usize {
    64 * CPUS_PER_PAGE + 32 * slot
}
/// Offset of the PV EOI word of slot `slot` (msr.rst: 4-byte aligned, 4
/// bytes, zeroed).
pub(crate) const fn eoi_offset(slot: usize) -> usize {
    96 * CPUS_PER_PAGE + 4 * slot
}
const _: () = assert!(eoi_offset(CPUS_PER_PAGE) <= 4096);

/// The boot CPU's kvmclock area offset (slot 0).
#[cfg(test)]
pub(crate) const CLOCK_OFFSET: usize = clock_offset(0);
/// The boot CPU's steal-time area offset (slot 0).
#[cfg(test)]
pub(crate) const STEAL_OFFSET: usize = steal_offset(0);
/// The boot CPU's PV EOI word offset (slot 0).
#[cfg(test)]
pub(crate) const PV_EOI_OFFSET: usize = eoi_offset(0);

/// One area of the shared page, published once its MSR is accepted.
pub(crate) struct Area<T>(AtomicPtr<T>);

impl<T> Area<T> {
    /// Not published.
    pub(crate) const fn new() -> Self {
        Area(AtomicPtr::new(core::ptr::null_mut()))
    }

    /// Publishes the area at `p`.
    ///
    /// # Safety
    ///
    /// `p` must be aligned for `T` and point into a page lent for good to
    /// be shared with the hypervisor (`Platform::alloc_shared_page`).
    pub(crate) unsafe fn set(&self, p: *mut T) {
        self.0.store(p, Ordering::Release);
    }

    /// The area, if published.
    pub(crate) fn get(&self) -> Option<*mut T> {
        let p = self.0.load(Ordering::Acquire);
        (!p.is_null()).then_some(p)
    }
}

/// The area of type `T` at `offset` into the page at `base`.
pub(crate) fn at<T>(base: *mut u8, offset: usize) -> *mut T {
    base.wrapping_add(offset).cast::<T>()
}

/// Reads the pvclock at `area` (see [`crate::pvclock::read`]).
pub(crate) fn read_clock(area: &Area<VcpuTimeInfo>, tries: u32) -> Option<(VcpuTimeInfo, u64)> {
    let t = area.get()?;
    // SAFETY: a published area is aligned and lives for good (`Area::set`).
    unsafe { crate::pvclock::read(t, tries) }
}

/// [`read_clock`] with the TSC reader and the wait supplied (see
/// [`crate::pvclock::read_with`]).
pub(crate) fn read_clock_with(
    area: &Area<VcpuTimeInfo>,
    tries: u32,
    tsc: impl FnMut() -> u64,
    spin: impl FnMut(),
) -> Option<(VcpuTimeInfo, u64)> {
    let t = area.get()?;
    // SAFETY: a published area is aligned and lives for good (`Area::set`).
    unsafe { crate::pvclock::read_with(t, tries, tsc, spin) }
}

/// Why a steal-time read failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StealError {
    /// Not published.
    NotSet,
    /// The version stayed odd (or kept changing).
    StuckOdd,
}

/// A consistent (version, steal) pair of the steal-time area, by the
/// version protocol (msr.rst, `MSR_KVM_STEAL_TIME`; Linux
/// `kvm_steal_clock`).
pub(crate) fn read_steal(area: &Area<StealTime>, tries: u32) -> Result<(u32, u64), StealError> {
    let st = area.get().ok_or(StealError::NotSet)?;
    for _ in 0..tries {
        // SAFETY: a published area is 64-byte aligned and lives for good;
        // KVM writes it concurrently, hence volatile reads.
        let v1 = unsafe { core::ptr::addr_of!((*st).version).read_volatile() };
        if v1 & 1 != 0 {
            core::hint::spin_loop();
            continue;
        }
        core::sync::atomic::fence(Ordering::Acquire);
        // SAFETY: as above.
        let steal = unsafe { core::ptr::addr_of!((*st).steal).read_volatile() };
        core::sync::atomic::fence(Ordering::Acquire);
        // SAFETY: as above.
        let v2 = unsafe { core::ptr::addr_of!((*st).version).read_volatile() };
        if v1 == v2 {
            return Ok((v1, steal));
        }
    }
    Err(StealError::StuckOdd)
}

/// The `preempted` byte of the steal-time area (`KVM_VCPU_PREEMPTED`,
/// `KVM_VCPU_FLUSH_TLB`; `lock.vcpu_is_preempted`); `None` when not
/// published.
pub(crate) fn read_preempted(area: &Area<StealTime>) -> Option<u8> {
    let st = area.get()?;
    // SAFETY: as in `flag_flush_if_preempted`.
    let p = unsafe { AtomicU8::from_ptr(core::ptr::addr_of_mut!((*st).preempted)) };
    Some(p.load(Ordering::Acquire))
}

/// PV TLB flush (msr.rst, `MSR_KVM_STEAL_TIME`, `preempted`; Linux
/// `kvm_flush_tlb_multi`): when the vCPU owning `area` is preempted, sets
/// `KVM_VCPU_FLUSH_TLB` next to `KVM_VCPU_PREEMPTED` with a
/// compare-and-exchange (KVM clears the byte with an exchange when it runs
/// the vCPU again, and flushes its TLB if the flag was set) and says so; a
/// running vCPU, or one that resumed meanwhile, is left alone (`false`:
/// interrupt it).
pub(crate) fn flag_flush_if_preempted(area: &Area<StealTime>) -> bool {
    let Some(st) = area.get() else {
        return false;
    };
    // SAFETY: a published area is 64-byte aligned and lives for good; the
    // byte is only ever accessed atomically by this guest (KVM's own
    // accesses are atomic too: it exchanges the byte).
    let p = unsafe { AtomicU8::from_ptr(core::ptr::addr_of_mut!((*st).preempted)) };
    let state = p.load(Ordering::Acquire);
    state & VCPU_PREEMPTED != 0
        && p.compare_exchange(
            state,
            state | VCPU_FLUSH_TLB,
            Ordering::AcqRel,
            Ordering::Relaxed,
        )
        .is_ok()
}

/// Atomically clears the PV EOI word at `word` and says whether
/// `KVM_PV_EOI_ENABLED` was set (msr.rst, `MSR_KVM_PV_EOI_EN`: the guest
/// that finds the bit set clears it and skips the EOI; Linux
/// `kvm_guest_apic_eoi_write` uses `__test_and_clear_bit`).
pub(crate) fn take_pv_eoi(word: *mut u32) -> bool {
    // SAFETY: `word` is a published, 4-byte aligned PV EOI word (or a test
    // buffer); KVM writes it while this vCPU does not run, and an exchange
    // is one instruction, so no update is lost.
    let w = unsafe { AtomicU32::from_ptr(word) };
    w.swap(0, Ordering::AcqRel) & PV_EOI_ENABLED != 0
}
