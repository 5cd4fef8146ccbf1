//! [`PagePool`]: zeroed 4 KiB pages inside the image, handed out once each.
//!
//! What a small kernel without a frame allocator lends pvops' backends
//! (`pvops_backends::Platform::alloc_shared_page`): the pages live in the
//! image's `.bss` (zeroed by the entry stub, never reused), and while the
//! kernel runs on the boot page tables ([`crate::image::boot_pml4`], an
//! identity map) a page's physical address is its virtual address.

use core::cell::UnsafeCell;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicUsize, Ordering};

/// Size of one page.
pub const PAGE_SIZE: usize = 4096;

#[derive(Clone, Copy)]
#[repr(C, align(4096))]
struct Page([u8; PAGE_SIZE]);

/// `N` zeroed, 4 KiB-aligned pages, each handed out at most once.
///
/// ```ignore
/// static PAGES: bootkit::pages::PagePool<8> = bootkit::pages::PagePool::new();
/// let (phys, virt) = PAGES.take().expect("a free page");
/// ```
pub struct PagePool<const N: usize> {
    pages: UnsafeCell<[Page; N]>,
    next: AtomicUsize,
}

// SAFETY: the pool itself never reads or writes its pages; `take` hands
// each index out at most once (an atomic counter), so every page has at
// most one owner, whichever CPU took it.
unsafe impl<const N: usize> Sync for PagePool<N> {}

impl<const N: usize> PagePool<N> {
    /// A pool of `N` pages (put it in a `static`: it is `N * 4 KiB` big).
    #[allow(clippy::new_without_default, reason = "const, for statics")]
    pub const fn new() -> Self {
        PagePool {
            pages: UnsafeCell::new([Page([0; PAGE_SIZE]); N]),
            next: AtomicUsize::new(0),
        }
    }

    /// The next unused page as (physical address, pointer), or `None` when
    /// all `N` are taken. The physical address equals the virtual one under
    /// the boot identity map (a kernel that moves its image elsewhere must
    /// translate it).
    pub fn take(&self) -> Option<(u64, NonNull<u8>)> {
        let i = self
            .next
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |i| {
                (i < N).then_some(i + 1)
            })
            .ok()?;
        let page = self.pages.get().cast::<Page>().wrapping_add(i).cast::<u8>();
        Some((page as u64, NonNull::new(page)?))
    }

    /// Pages handed out so far.
    pub fn used(&self) -> usize {
        self.next.load(Ordering::Acquire).min(N)
    }
}
