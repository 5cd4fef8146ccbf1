//! Statically allocated, page-aligned structures handed out exactly once.
//!
//! The microvisor has no heap: its VMCB, permission maps and nested page
//! tables live in `.bss`. Each is wrapped in [`TakeOnce`], which yields a
//! unique `&'static mut` the first time and `None` afterwards.

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, Ordering};

/// A static value that can be borrowed mutably exactly once.
pub struct TakeOnce<T> {
    taken: AtomicBool,
    cell: UnsafeCell<T>,
}

// SAFETY: the only access to `cell` is through `take`, which hands out at
// most one reference for the program's lifetime (guarded by the atomic).
unsafe impl<T: Send> Sync for TakeOnce<T> {}

impl<T> TakeOnce<T> {
    /// Wraps `value`.
    pub const fn new(value: T) -> Self {
        TakeOnce {
            taken: AtomicBool::new(false),
            cell: UnsafeCell::new(value),
        }
    }

    /// The unique mutable reference, or `None` if it was already taken.
    // The atomic flag, not the borrow checker, makes the `&mut` unique.
    #[allow(clippy::mut_from_ref)]
    pub fn take(&'static self) -> Option<&'static mut T> {
        if self.taken.swap(true, Ordering::AcqRel) {
            return None;
        }
        // SAFETY: the swap above returned false exactly once, so no other
        // reference to the cell's contents exists or will ever exist.
        Some(unsafe { &mut *self.cell.get() })
    }
}

/// Host-physical address of a microvisor object (the microvisor runs on an
/// identity map, so virtual and physical addresses are equal).
pub fn phys<T: ?Sized>(r: &T) -> u64 {
    r as *const T as *const u8 as u64
}
