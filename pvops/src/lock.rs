//! Paravirtual spinlocks: the `lock` operations and a ticket lock built on
//! them.
//!
//! Under a hypervisor a spinlock's holder can lose its physical CPU while
//! it holds the lock, and every waiter then spins for the holder's whole
//! time slice. A paravirtual lock waits differently: after a short spin
//! (or at once when the holder's vCPU is known to be preempted) the
//! waiter asks the hypervisor to sleep until the lock word changes
//! ([`wait`]), and the releaser wakes the next waiter ([`kick`]). Natively
//! `wait` is one PAUSE and `kick` nothing, so [`SpinLock`] is a plain
//! ticket lock there.
//!
//! [`SpinLock`] is FIFO-fair (tickets). It does not touch the interrupt
//! flag: take it with interrupts disabled where a handler may take it too.
//! A waiter records the lock and ticket it waits for in a per-CPU slot
//! ([`crate::percpu`]) before it sleeps, so the releaser kicks exactly the
//! CPU whose turn it is; a wait nested in an interrupt handler saves and
//! restores the slot.

use crate::dispatch::site::site;
use crate::percpu::{self, MAX_CPUS};
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};

/// Waits while `word` still holds `expected`, perhaps sleeping until
/// another CPU [`kick`]s this one; may return at any time (spuriously),
/// so the caller re-checks `word` in a loop. Natively one PAUSE.
#[inline]
pub fn wait(word: &AtomicU32, expected: u32) {
    // SAFETY: the site calls the table's `lock.wait` function (`extern "C"`,
    // type checked by the table) with its arguments in the System V
    // registers and every caller-saved register declared clobbered
    // (dispatch/site.rs); the reference outlives the call.
    unsafe { site!(LOCK_WAIT; in("rdi") word as *const AtomicU32, in("rsi") u64::from(expected),) }
}

/// Wakes the CPU with index `cpu` ([`crate::percpu`]) from a [`wait`]; a
/// kick that arrives before the wait makes that wait return at once where
/// the hypervisor supports it (KVM's `KVM_HC_KICK_CPU`, Xen's event
/// channel pending bit). Natively nothing.
#[inline]
pub fn kick(cpu: usize) {
    // SAFETY: as in `wait`.
    unsafe { site!(LOCK_KICK; in("rdi") cpu as u64,) }
}

/// Whether the vCPU of the CPU with index `cpu` is preempted (not running
/// on a physical CPU) right now, as far as the hypervisor says (KVM's
/// steal-time `preempted` flag); false natively and where unknown.
#[inline]
pub fn vcpu_is_preempted(cpu: usize) -> bool {
    let v: u64;
    // SAFETY: as in `wait`; the function returns a `bool` in AL.
    unsafe { site!(LOCK_VCPU_IS_PREEMPTED; in("rdi") cpu as u64, out("rax") v,) };
    v as u8 != 0
}

/// Spins of a waiter before it asks to sleep (the holder usually runs and
/// releases soon; Linux's pv qspinlock spins `SPIN_THRESHOLD` = 2^15
/// times, this lock fewer because its waiters are FIFO and re-check
/// `vcpu_is_preempted` first).
pub const SPIN_THRESHOLD: u32 = 1 << 12;

/// The lock each CPU sleeps on (its address; 0 = none).
static WAITING: [AtomicUsize; MAX_CPUS] = [const { AtomicUsize::new(0) }; MAX_CPUS];
/// The ticket each sleeping CPU waits for.
static WANT: [AtomicU32; MAX_CPUS] = [const { AtomicU32::new(0) }; MAX_CPUS];

/// Counters of one [`SpinLock`], for tests and benchmarks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LockStats {
    /// Acquisitions that found the lock taken.
    pub contended: u64,
    /// Calls of [`wait`] by this lock's waiters.
    pub waits: u64,
    /// Calls of [`kick`] by its releasers.
    pub kicks: u64,
}

/// A FIFO ticket spinlock whose waiters sleep through the hypervisor
/// ([`wait`] / [`kick`]) instead of spinning through a preempted holder's
/// time slice.
pub struct SpinLock<T> {
    next: AtomicU32,
    owner: AtomicU32,
    /// Index + 1 of the CPU holding the lock (0 = none).
    holder: AtomicU32,
    sleepers: AtomicU32,
    contended: AtomicU64,
    waits: AtomicU64,
    kicks: AtomicU64,
    data: UnsafeCell<T>,
}

// SAFETY: the ticket protocol gives at most one guard at a time, so `T`
// is only ever reached from one CPU at a time; `T: Send` lets it move
// between them.
unsafe impl<T: Send> Sync for SpinLock<T> {}
// SAFETY: as above.
unsafe impl<T: Send> Send for SpinLock<T> {}

/// Proof of holding a [`SpinLock`]; releases it when dropped.
pub struct SpinLockGuard<'a, T> {
    lock: &'a SpinLock<T>,
    ticket: u32,
}

impl<T> SpinLockGuard<'_, T> {
    /// The ticket this holder drew: holders follow each other in ticket
    /// order (FIFO), wrapping at `u32::MAX`.
    pub fn ticket(&self) -> u32 {
        self.ticket
    }
}

impl<T> SpinLock<T> {
    /// An unlocked lock around `value`.
    pub const fn new(value: T) -> Self {
        SpinLock {
            next: AtomicU32::new(0),
            owner: AtomicU32::new(0),
            holder: AtomicU32::new(0),
            sleepers: AtomicU32::new(0),
            contended: AtomicU64::new(0),
            waits: AtomicU64::new(0),
            kicks: AtomicU64::new(0),
            data: UnsafeCell::new(value),
        }
    }

    /// Takes the lock, waiting (in FIFO order) while another CPU holds it.
    pub fn lock(&self) -> SpinLockGuard<'_, T> {
        let ticket = self.next.fetch_add(1, Ordering::Relaxed);
        if self.owner.load(Ordering::Acquire) != ticket {
            self.contended.fetch_add(1, Ordering::Relaxed);
            self.wait_for(ticket);
        }
        self.holder
            .store(percpu::current() as u32 + 1, Ordering::Relaxed);
        SpinLockGuard { lock: self, ticket }
    }

    /// Takes the lock if it is free.
    pub fn try_lock(&self) -> Option<SpinLockGuard<'_, T>> {
        let owner = self.owner.load(Ordering::Acquire);
        self.next
            .compare_exchange(
                owner,
                owner.wrapping_add(1),
                Ordering::Acquire,
                Ordering::Relaxed,
            )
            .ok()?;
        self.holder
            .store(percpu::current() as u32 + 1, Ordering::Relaxed);
        Some(SpinLockGuard {
            lock: self,
            ticket: owner,
        })
    }

    /// Whether some CPU holds the lock.
    pub fn is_locked(&self) -> bool {
        self.next.load(Ordering::Relaxed) != self.owner.load(Ordering::Relaxed)
    }

    /// This lock's counters.
    pub fn stats(&self) -> LockStats {
        LockStats {
            contended: self.contended.load(Ordering::Relaxed),
            waits: self.waits.load(Ordering::Relaxed),
            kicks: self.kicks.load(Ordering::Relaxed),
        }
    }

    /// The value, through exclusive access (no locking needed).
    pub fn get_mut(&mut self) -> &mut T {
        self.data.get_mut()
    }

    fn holder_preempted(&self) -> bool {
        match self.holder.load(Ordering::Relaxed) {
            0 => false,
            h => vcpu_is_preempted(h as usize - 1),
        }
    }

    /// The slow path: spin while the holder runs, then sleep in [`wait`]
    /// until the releaser before us kicks this CPU.
    #[cold]
    fn wait_for(&self, ticket: u32) {
        let mut spins = 0u32;
        while spins < SPIN_THRESHOLD {
            if self.owner.load(Ordering::Acquire) == ticket {
                return;
            }
            if spins.is_multiple_of(64) && self.holder_preempted() {
                break;
            }
            core::hint::spin_loop();
            spins += 1;
        }
        let me = percpu::current();
        let addr = self as *const Self as usize;
        // A wait nested in an interrupt handler (on another lock) keeps the
        // interrupted wait's slot and restores it after.
        let saved = (
            WAITING[me].load(Ordering::Relaxed),
            WANT[me].load(Ordering::Relaxed),
        );
        WANT[me].store(ticket, Ordering::SeqCst);
        WAITING[me].store(addr, Ordering::SeqCst);
        // Dekker with `unlock`: it bumps `owner` then reads `sleepers`;
        // we bump `sleepers` then read `owner` (all SeqCst), so either it
        // sees us and kicks, or we see our turn and do not sleep.
        self.sleepers.fetch_add(1, Ordering::SeqCst);
        loop {
            let owner = self.owner.load(Ordering::SeqCst);
            if owner == ticket {
                break;
            }
            self.waits.fetch_add(1, Ordering::Relaxed);
            wait(&self.owner, owner);
        }
        self.sleepers.fetch_sub(1, Ordering::SeqCst);
        WANT[me].store(saved.1, Ordering::SeqCst);
        WAITING[me].store(saved.0, Ordering::SeqCst);
    }

    fn unlock(&self) {
        self.holder.store(0, Ordering::Relaxed);
        let served = self.owner.fetch_add(1, Ordering::SeqCst).wrapping_add(1);
        if self.sleepers.load(Ordering::SeqCst) == 0 {
            return;
        }
        let addr = self as *const Self as usize;
        for cpu in 0..MAX_CPUS {
            if WAITING[cpu].load(Ordering::SeqCst) == addr
                && WANT[cpu].load(Ordering::SeqCst) == served
            {
                self.kicks.fetch_add(1, Ordering::Relaxed);
                kick(cpu);
                return;
            }
        }
    }
}

impl<T: Default> Default for SpinLock<T> {
    fn default() -> Self {
        SpinLock::new(T::default())
    }
}

impl<T> core::ops::Deref for SpinLockGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the guard is the lock's only holder.
        unsafe { &*self.lock.data.get() }
    }
}

impl<T> core::ops::DerefMut for SpinLockGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the guard is the lock's only holder.
        unsafe { &mut *self.lock.data.get() }
    }
}

impl<T> Drop for SpinLockGuard<'_, T> {
    fn drop(&mut self) {
        self.lock.unlock();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn uncontended_lock_and_try_lock() {
        let l = SpinLock::new(5u32);
        {
            let mut g = l.lock();
            *g += 1;
            assert!(l.is_locked());
            assert!(l.try_lock().is_none());
        }
        assert!(!l.is_locked());
        assert_eq!(*l.try_lock().unwrap(), 6);
        assert_eq!(l.stats(), LockStats::default());
    }

    /// Host threads stand in for CPUs (all register as index 0, which the
    /// slots tolerate: the releaser kicks the native no-op). The count is
    /// exact and every thread got its share.
    #[test]
    fn contended_increments_are_exact() {
        const THREADS: usize = 4;
        const N: u64 = 20_000;
        let l = Arc::new(SpinLock::new(0u64));
        let hs: Vec<_> = (0..THREADS)
            .map(|_| {
                let l = Arc::clone(&l);
                std::thread::spawn(move || {
                    for _ in 0..N {
                        *l.lock() += 1;
                    }
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
        assert_eq!(*l.lock(), THREADS as u64 * N);
        assert!(!l.is_locked());
    }

    #[test]
    fn tickets_wrap_around() {
        let l = SpinLock::new(());
        l.next.store(u32::MAX, Ordering::Relaxed);
        l.owner.store(u32::MAX, Ordering::Relaxed);
        drop(l.lock());
        drop(l.lock());
        assert_eq!(l.owner.load(Ordering::Relaxed), 1);
        assert!(!l.is_locked());
    }
}
