//! A spin lock that also masks interrupts while held, so an interrupt
//! handler that prints cannot deadlock against the code it interrupted.

use crate::cpu;
use core::ops::{Deref, DerefMut};

/// A spin lock that disables interrupts while held (single CPU is the
/// common case; the spin part covers a second CPU).
pub struct IrqMutex<T> {
    inner: spin::Mutex<T>,
}

/// Guard of an [`IrqMutex`]; restores the interrupt flag on drop.
pub struct IrqGuard<'a, T> {
    guard: Option<spin::MutexGuard<'a, T>>,
    irq_was_enabled: bool,
}

impl<T> IrqMutex<T> {
    /// A new, unlocked mutex.
    pub const fn new(value: T) -> Self {
        IrqMutex {
            inner: spin::Mutex::new(value),
        }
    }

    /// Locks, masking interrupts until the guard is dropped.
    pub fn lock(&self) -> IrqGuard<'_, T> {
        let irq_was_enabled = cpu::irq_save();
        IrqGuard {
            guard: Some(self.inner.lock()),
            irq_was_enabled,
        }
    }

    /// Locks for a path that will never return to the lock holder (panic,
    /// fatal exception): if the lock is taken, it is broken, since the
    /// holder was interrupted on this CPU and will never run again.
    pub fn lock_for_panic(&self) -> IrqGuard<'_, T> {
        let irq_was_enabled = cpu::irq_save();
        if self.inner.is_locked() {
            // SAFETY: only used on the way to `exit`: the interrupted holder
            // never resumes, so no two guards are ever used concurrently.
            unsafe { self.inner.force_unlock() };
        }
        IrqGuard {
            guard: Some(self.inner.lock()),
            irq_was_enabled,
        }
    }
}

impl<T> Deref for IrqGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        self.guard.as_ref().expect("guard present until drop")
    }
}

impl<T> DerefMut for IrqGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        self.guard.as_mut().expect("guard present until drop")
    }
}

impl<T> Drop for IrqGuard<'_, T> {
    fn drop(&mut self) {
        drop(self.guard.take());
        cpu::irq_restore(self.irq_was_enabled);
    }
}
