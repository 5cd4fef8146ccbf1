//! The partition reference time: the reference TSC page with the sequence
//! protocol, falling back to HV_X64_MSR_TIME_REF_COUNT (TLFS, Timers:
//! Partition Reference TSC Mechanism). Both count 100 ns units.

use super::msr;
use core::ptr::{self, NonNull};
use core::sync::atomic::{compiler_fence, AtomicPtr, AtomicU64, Ordering};
use pvops_abi::hyperv::{
    self as abi, reference_time as formula, TSC_PAGE_OFFSET_OFFSET, TSC_PAGE_SCALE_OFFSET,
    TSC_PAGE_SEQUENCE_OFFSET, TSC_SEQUENCE_INVALID,
};

/// The reference TSC page, null when only the MSR is used.
static TSC_PAGE: AtomicPtr<u8> = AtomicPtr::new(ptr::null_mut());

/// Read access to a reference TSC page the hypervisor writes.
#[derive(Clone, Copy)]
pub(crate) struct TscPage(NonNull<u8>);

impl TscPage {
    /// Wraps the mapping of a reference TSC page.
    ///
    /// `page` must map 4 KiB that stay mapped for the kernel's life (a
    /// `SharedPage`, or a test buffer that outlives the value).
    pub(crate) fn new(page: NonNull<u8>) -> TscPage {
        TscPage(page)
    }

    fn read_u32(self, offset: usize) -> u32 {
        // SAFETY: `offset` is one of the ABI's field offsets, inside the
        // page and naturally aligned (the page is 4 KiB aligned); volatile
        // because the hypervisor writes the page behind the program's back.
        unsafe { ptr::read_volatile(self.0.as_ptr().add(offset).cast::<u32>()) }
    }

    fn read_u64(self, offset: usize) -> u64 {
        // SAFETY: as in `read_u32`, for the 8-byte fields at 8 and 16.
        unsafe { ptr::read_volatile(self.0.as_ptr().add(offset).cast::<u64>()) }
    }

    /// The current sequence number.
    pub(crate) fn sequence(self) -> u32 {
        self.read_u32(TSC_PAGE_SEQUENCE_OFFSET)
    }

    /// Reference time from the page with `tsc` as the TSC reader, following
    /// the TLFS's recommended loop: `None` when the sequence is
    /// [`TSC_SEQUENCE_INVALID`] (the caller then reads the MSR); retried
    /// when the sequence changed during the read, [`READ_TRIES`] times at
    /// most (the TLFS loop is unbounded: a hypervisor that kept changing
    /// the sequence would hang the reader; it gets the MSR instead).
    pub(crate) fn read(self, tsc: impl FnMut() -> u64) -> Option<u64> {
        self.read_tries(READ_TRIES, tsc)
    }

    /// [`TscPage::read`] with `tries` attempts.
    pub(crate) fn read_tries(self, tries: u32, mut tsc: impl FnMut() -> u64) -> Option<u64> {
        for _ in 0..tries {
            let start = self.sequence();
            if start == TSC_SEQUENCE_INVALID {
                return None;
            }
            compiler_fence(Ordering::SeqCst);
            let now = tsc();
            let scale = self.read_u64(TSC_PAGE_SCALE_OFFSET);
            let offset = self.read_u64(TSC_PAGE_OFFSET_OFFSET) as i64;
            compiler_fence(Ordering::SeqCst);
            if self.sequence() == start {
                return Some(formula(now, scale, offset));
            }
        }
        None
    }
}

/// Attempts of [`TscPage::read`] before the MSR is read instead.
pub(crate) const READ_TRIES: u32 = 1 << 16;

/// Publishes a validated reference TSC page.
pub(crate) fn set_tsc_page(page: NonNull<u8>) {
    TSC_PAGE.store(page.as_ptr(), Ordering::Release);
}

/// The published page's scale, when a page is in use and its sequence is
/// valid now.
pub(crate) fn tsc_page_scale() -> Option<u64> {
    let page = TscPage::new(NonNull::new(TSC_PAGE.load(Ordering::Acquire))?);
    let start = page.sequence();
    if start == TSC_SEQUENCE_INVALID {
        return None;
    }
    let scale = page.read_u64(TSC_PAGE_SCALE_OFFSET);
    (page.sequence() == start).then_some(scale)
}

/// Whether the TSC page is in use.
pub(crate) fn uses_tsc_page() -> bool {
    !TSC_PAGE.load(Ordering::Acquire).is_null()
}

/// The partition reference time in 100 ns units: the TSC page when it is
/// valid, else the reference counter MSR; never below an earlier reading.
pub(crate) fn reference_time() -> u64 {
    let page = NonNull::new(TSC_PAGE.load(Ordering::Acquire)).map(TscPage::new);
    // An ordered TSC read inside the sequence window (Linux
    // `hv_read_tsc_page_tsc` uses `rdtsc_ordered()`; review F5).
    next_reference(&LAST_REFERENCE, page, crate::tsc::ordered, || {
        msr::read(abi::msr::TIME_REF_COUNT)
    })
}

/// The last reference time returned.
static LAST_REFERENCE: AtomicU64 = AtomicU64::new(0);

/// The reference time from `page` (read with `tsc`), else from `counter`
/// (the MSR), never below `last`, which it advances. The page and the MSR
/// are two views of one clock, but a reader that falls back to the MSR
/// while the hypervisor rewrites the page (sequence 0 during an update, a
/// sequence that keeps changing) must not see time step back, nor when a
/// hypervisor publishes a smaller offset.
pub(crate) fn next_reference(
    last: &AtomicU64,
    page: Option<TscPage>,
    tsc: impl FnMut() -> u64,
    counter: impl FnOnce() -> u64,
) -> u64 {
    let now = page.and_then(|p| p.read(tsc)).unwrap_or_else(counter);
    now.max(last.fetch_max(now, Ordering::Relaxed))
}

/// `time.monotonic_ns`: reference time in nanoseconds since the partition
/// was created.
pub(crate) extern "C" fn monotonic_ns() -> u64 {
    abi::reference_to_ns(reference_time())
}

#[cfg(test)]
mod tests {
    use super::*;
    use pvops_abi::hyperv::ReferenceTscPage as Page;

    fn page() -> Box<Page> {
        Box::new(Page {
            tsc_sequence: 1,
            reserved1: 0,
            tsc_scale: 1 << 63,
            tsc_offset: 10,
            reserved2: [0; 509],
        })
    }

    #[test]
    fn reads_the_formula() {
        let mut p = page();
        let view = TscPage::new(NonNull::from(&mut *p).cast());
        assert_eq!(view.read(|| 1000), Some(510));
    }

    #[test]
    fn sequence_zero_means_use_the_msr() {
        let mut p = page();
        p.tsc_sequence = TSC_SEQUENCE_INVALID;
        let view = TscPage::new(NonNull::from(&mut *p).cast());
        assert_eq!(view.read(|| 1000), None);
    }

    #[test]
    fn a_changed_sequence_is_retried() {
        let mut p = page();
        let base: *mut Page = &mut *p;
        let view = TscPage::new(NonNull::new(base.cast()).unwrap());
        let mut calls = 0;
        // The "hypervisor" updates the scale and the sequence while the
        // first TSC read is in flight; the second pass sees the new values.
        let t = view.read(|| {
            calls += 1;
            if calls == 1 {
                // SAFETY: `base` points at the live test page; no reference
                // to it is held across this write.
                unsafe {
                    (*base).tsc_scale = 1 << 62;
                    (*base).tsc_sequence = 2;
                }
            }
            1000
        });
        assert_eq!(calls, 2);
        assert_eq!(t, Some(260));
    }
}
