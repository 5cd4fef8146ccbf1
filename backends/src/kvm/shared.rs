//! The page pvops shares with KVM and the runtime reads of it: the
//! kvmclock area, the steal-time area and the PV EOI word, each at a
//! fixed offset of one lent 4 KiB page.
//!
//! KVM writes these areas while the vCPU is not running (or, for the
//! pvclock and steal time, with the version protocol), so every read is
//! volatile or atomic. The backend's unsafe code outside the hypercall
//! leaf is here.

use core::sync::atomic::{AtomicPtr, AtomicU32, Ordering};
use pvops_abi::kvm::{StealTime, PV_EOI_ENABLED};
use pvops_abi::pvclock::VcpuTimeInfo;

/// Offset of the kvmclock `pvclock_vcpu_time_info` (msr.rst: 4-byte
/// aligned; 32 bytes).
pub(crate) const CLOCK_OFFSET: usize = 0;
/// Offset of `kvm_steal_time` (msr.rst: 64-byte aligned; 64 bytes).
pub(crate) const STEAL_OFFSET: usize = 64;
/// Offset of the PV EOI word (msr.rst: 4-byte aligned, 4 bytes, zeroed).
pub(crate) const PV_EOI_OFFSET: usize = 128;

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

/// The `preempted` byte of the steal-time area (`KVM_VCPU_PREEMPTED`), kept
/// for the SMP work (`vcpu_is_preempted`); `None` when not published.
pub(crate) fn read_preempted(area: &Area<StealTime>) -> Option<u8> {
    let st = area.get()?;
    // SAFETY: as in `read_steal`.
    Some(unsafe { core::ptr::addr_of!((*st).preempted).read_volatile() })
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

/// Sets `KVM_VCPU_FLUSH_TLB` in the steal-time area at `st` if its vCPU is
/// preempted, atomically (a compare-exchange of the `preempted` byte, as
/// Linux's `kvm_flush_tlb_multi`), and says whether it did: KVM then
/// flushes that vCPU's TLB before it next runs (msr.rst, `MSR_KVM_STEAL_TIME`).
pub(crate) fn flag_flush_if_preempted(st: *mut StealTime) -> bool {
    // SAFETY: a published, 64-byte aligned steal-time area (or a test
    // buffer) that lives for good; KVM writes the byte concurrently, hence
    // an atomic view.
    let b =
        unsafe { core::sync::atomic::AtomicU8::from_ptr(core::ptr::addr_of_mut!((*st).preempted)) };
    let now = b.load(Ordering::Acquire);
    now & pvops_abi::kvm::VCPU_PREEMPTED != 0
        && b.compare_exchange(
            now,
            now | pvops_abi::kvm::VCPU_FLUSH_TLB,
            Ordering::AcqRel,
            Ordering::Acquire,
        )
        .is_ok()
}
