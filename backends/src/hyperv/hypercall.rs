//! Calling the hypercall page (TLFS, Hypercall Interface).
//!
//! After the hypercall page is enabled and verified, a hypercall is a near
//! CALL to its first byte with RCX = control, RDX = input GPA (or first
//! input for the fast form), R8 = output GPA (or second input); the result
//! comes back in RAX. The page ends in the equivalent of RET, so the call
//! needs a valid stack. [`raw`] is the one unsafe leaf.

use core::ptr;
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, Ordering};
use pvops_abi::hyperv::{Control, HypercallResult, Status};

/// The verified hypercall page, null until setup publishes it.
static PAGE: AtomicPtr<u8> = AtomicPtr::new(ptr::null_mut());
/// The input page for memory-based calls: virtual and guest-physical.
static INPUT: AtomicPtr<u8> = AtomicPtr::new(ptr::null_mut());
static INPUT_GPA: AtomicU64 = AtomicU64::new(0);
/// Serialises users of the single input page (with interrupts off).
static INPUT_LOCK: AtomicBool = AtomicBool::new(false);

/// Publishes the verified hypercall page.
pub(crate) fn set_page(virt: *mut u8) {
    PAGE.store(virt, Ordering::Release);
}

/// Publishes the page used for memory-based hypercall input.
pub(crate) fn set_input_page(virt: *mut u8, gpa: u64) {
    INPUT_GPA.store(gpa, Ordering::Relaxed);
    INPUT.store(virt, Ordering::Release);
}

/// The result returned when no hypercall (or input) page is installed: the
/// status a hypervisor gives for a call it does not know.
pub(crate) const NOT_READY: HypercallResult =
    HypercallResult::new(Status::INVALID_HYPERCALL_CODE, 0);

/// CALLs the hypercall page.
///
/// # Safety
///
/// `page` must be the hypercall page the hypervisor overlaid (verified not
/// to be zero), and for a memory-based call `rdx`/`r8` must be the GPAs of
/// memory the hypervisor may read/write for this call (8-byte aligned, not
/// crossing a page).
unsafe fn raw(page: *const u8, rcx: u64, rdx: u64, r8: u64) -> u64 {
    let rax: u64;
    // SAFETY: the caller guarantees `page` holds the hypervisor's hypercall
    // code, which issues VMCALL/VMMCALL and returns like RET. The TLFS lets
    // a rep call update RCX, and Linux also treats R8-R11 as clobbered, so
    // every caller-saved register is declared clobbered (clobber_abi). The
    // block is not `nostack`: the CALL pushes a return address.
    unsafe {
        core::arch::asm!(
            "call {page}",
            page = in(reg) page,
            inout("rcx") rcx => _,
            inout("rdx") rdx => _,
            inout("r8") r8 => _,
            out("rax") rax,
            clobber_abi("C"),
        );
    }
    rax
}

/// A memory-based call with input at `input_gpa` and output at
/// `output_gpa` (0 when the call has none).
pub(crate) fn call(control: Control, input_gpa: u64, output_gpa: u64) -> HypercallResult {
    let page = PAGE.load(Ordering::Acquire);
    if page.is_null() {
        return NOT_READY;
    }
    // SAFETY: `page` was published by setup only after the overlay was
    // verified; the GPAs come from `with_input`, the backend's own page.
    HypercallResult(unsafe { raw(page, control.0, input_gpa, output_gpa) })
}

/// A fast (register-based) call with up to two input qwords.
pub(crate) fn call_fast(control: Control, rdx: u64, r8: u64) -> HypercallResult {
    let page = PAGE.load(Ordering::Acquire);
    if page.is_null() {
        return NOT_READY;
    }
    // SAFETY: as in `call`; with the fast flag RDX and R8 are values, not
    // addresses, so the hypervisor touches no guest memory.
    HypercallResult(unsafe { raw(page, control.fast().0, rdx, r8) })
}

/// Runs `f` with exclusive use of the input page (interrupts disabled
/// meanwhile), passing its virtual address and GPA. Returns `None` when no
/// input page was set up.
pub(crate) fn with_input<R>(f: impl FnOnce(*mut u8, u64) -> R) -> Option<R> {
    let virt = INPUT.load(Ordering::Acquire);
    if virt.is_null() {
        return None;
    }
    let flags = pvops::native::irq::save_flags();
    pvops::native::irq::disable();
    while INPUT_LOCK
        .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
        .is_err()
    {
        core::hint::spin_loop();
    }
    let r = f(virt, INPUT_GPA.load(Ordering::Relaxed));
    INPUT_LOCK.store(false, Ordering::Release);
    pvops::native::irq::restore_flags(flags);
    Some(r)
}

/// Copies `bytes` to the start of the input page at `virt`.
///
/// `virt` must come from [`with_input`]; at most one page is written.
pub(crate) fn write_input(virt: *mut u8, bytes: &[u8]) {
    let len = bytes.len().min(pvops_abi::hyperv::PAGE_SIZE);
    // SAFETY: `virt` is the input page (4 KiB, owned by the backend for the
    // kernel's life, exclusively held through `with_input`), and at most
    // one page is copied.
    unsafe { ptr::copy_nonoverlapping(bytes.as_ptr(), virt, len) };
}

/// Whether the hypercall page at `virt` holds anything (the hypervisor
/// overlaid it): a zeroed page still shows zeros if it did not.
pub(crate) fn page_is_overlaid(virt: *const u8) -> bool {
    (0..pvops_abi::hyperv::PAGE_SIZE).any(|i| {
        // SAFETY: `virt` maps a whole 4 KiB shared page (the platform's
        // contract) and `i` stays inside it; a volatile read because the
        // hypervisor, not the program, changed the contents.
        unsafe { ptr::read_volatile(virt.add(i)) != 0 }
    })
}
