//! Installing a backend: the only way the table changes.
//!
//! A backend fills a [`Patch`] (a private copy of the table plus owners);
//! [`install`] writes it into the live table once and seals it. From then on
//! the table is read-only, which is what makes lock-free reads sound.
//! Installing also patches the kernel's call sites ([`crate::dispatch`]).

use crate::table::{Entry, Slot, Table, ENTRY_COUNT};
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicU8, Ordering};

/// Owner name of native entries.
pub const NATIVE: &str = "native";

pub(crate) struct Live {
    table: Table,
    owners: [&'static str; ENTRY_COUNT],
    backend: &'static str,
}

/// `repr(transparent)` (as `UnsafeCell`): the address of [`LIVE`] is the
/// address of its `Live`, which call sites address directly.
#[repr(transparent)]
pub(crate) struct LiveCell(UnsafeCell<Live>);

// SAFETY: the cell is written only inside `install`, whose contract requires
// that no other CPU runs and no interrupt handler can read the table during
// the write; every other access is a read.
unsafe impl Sync for LiveCell {}

/// The live table; call sites call through `LIVE + TABLE_OFFSET + slot`.
pub(crate) static LIVE: LiveCell = LiveCell(UnsafeCell::new(Live {
    table: Table::NATIVE,
    owners: [NATIVE; ENTRY_COUNT],
    backend: NATIVE,
}));

/// Offset of the table inside [`LIVE`].
pub(crate) const TABLE_OFFSET: usize = core::mem::offset_of!(Live, table);

const OPEN: u8 = 0;
const WRITING: u8 = 1;
const SEALED: u8 = 2;
static STATE: AtomicU8 = AtomicU8::new(OPEN);

/// Returns the live table for a read.
#[inline(always)]
pub(crate) fn table() -> &'static Table {
    // SAFETY: after `install` the table is never written again; before it,
    // `install`'s contract guarantees no reader runs concurrently with the
    // single write. So a shared reference never aliases a write.
    unsafe { &(*LIVE.0.get()).table }
}

pub(crate) fn owner(entry: Entry) -> &'static str {
    // SAFETY: as in `table`.
    let owners = unsafe { &(*LIVE.0.get()).owners };
    owners.get(entry.index()).copied().unwrap_or(NATIVE)
}

/// Whether a backend has been installed (the table is sealed).
pub fn is_sealed() -> bool {
    STATE.load(Ordering::Acquire) == SEALED
}

/// The backend whose patch [`install`] wrote (`None` before).
pub fn installed() -> Option<&'static str> {
    // SAFETY: as in `table`: read only once sealed, never written again.
    is_sealed().then(|| unsafe { (*LIVE.0.get()).backend })
}

/// A backend's changes, applied all at once by [`install`].
pub struct Patch {
    backend: &'static str,
    table: Table,
    owners: [&'static str; ENTRY_COUNT],
}

impl Patch {
    /// Starts a patch for `backend`, from the native table.
    pub fn new(backend: &'static str) -> Patch {
        Patch {
            backend,
            table: Table::NATIVE,
            owners: [NATIVE; ENTRY_COUNT],
        }
    }

    /// The backend this patch installs.
    pub fn backend(&self) -> &'static str {
        self.backend
    }

    /// Replaces one entry; the backend becomes its owner.
    pub fn set<F: Copy>(&mut self, slot: Slot<F>, f: F) {
        *(slot.field)(&mut self.table) = f;
        self.owners[slot.entry.index()] = self.backend;
    }

    /// Gives one entry back to its native implementation (for a backend whose
    /// setup step failed after it had claimed the entry).
    pub fn revert<F: Copy>(&mut self, slot: Slot<F>) {
        let mut native = Table::NATIVE;
        *(slot.field)(&mut self.table) = *(slot.field)(&mut native);
        self.owners[slot.entry.index()] = NATIVE;
    }

    /// The owner this patch would record for `entry`.
    pub fn owner(&self, entry: Entry) -> &'static str {
        self.owners[entry.index()]
    }

    /// The patched table, for a backend that wants to call entries it has
    /// just set before installation (e.g. to verify a clock).
    pub fn table(&self) -> &Table {
        &self.table
    }

    /// Entries this patch replaces.
    pub fn replaced(&self) -> impl Iterator<Item = Entry> + '_ {
        Entry::all().filter(|e| self.owners[e.index()] != NATIVE)
    }
}

/// Why [`install`] refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InstallError {
    /// A patch was already installed; the table is sealed.
    AlreadySealed,
    /// Interrupts were enabled on the calling CPU.
    InterruptsEnabled,
}

/// Writes `patch` into the live table, seals it, and patches the kernel's
/// call sites for it ([`crate::dispatch`]: inline native code or direct
/// calls where the kernel allowed it, else the table stays in force).
///
/// Returns an error, changing nothing (table and call sites), if a patch
/// was already installed or interrupts are enabled.
///
/// # Safety
///
/// Must be called before any other CPU runs code that may call pvops, and
/// with interrupts disabled on this one, so nothing reads the table while it
/// is written. No reference into the table may be held across the call.
pub unsafe fn install(patch: Patch) -> Result<(), InstallError> {
    if crate::native::irq::save_flags() & crate::irq::FLAGS_IF != 0 {
        return Err(InstallError::InterruptsEnabled);
    }
    if STATE
        .compare_exchange(OPEN, WRITING, Ordering::AcqRel, Ordering::Acquire)
        .is_err()
    {
        return Err(InstallError::AlreadySealed);
    }
    // SAFETY: the state machine makes this the only writer ever, and the
    // caller guarantees there is no concurrent reader (see `# Safety`).
    unsafe {
        let live = &mut *LIVE.0.get();
        live.table = patch.table;
        live.owners = patch.owners;
        live.backend = patch.backend;
    }
    STATE.store(SEALED, Ordering::Release);
    // SAFETY: sealed: the table is never written again.
    let live = unsafe { &*LIVE.0.get() };
    crate::dispatch::patch_sites(&live.table, &live.owners);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::slot;

    extern "C" fn fake_clock() -> u64 {
        42
    }

    #[test]
    fn patch_records_owner_and_replaces_entry() {
        let mut p = Patch::new("test");
        assert_eq!(p.replaced().count(), 0);
        p.set(slot::TIME_MONOTONIC_NS, fake_clock);
        assert_eq!(p.owner(slot::TIME_MONOTONIC_NS.entry()), "test");
        assert_eq!(p.owner(slot::IRQ_EOI.entry()), NATIVE);
        assert_eq!((p.table().time.monotonic_ns)(), 42);
        assert_eq!(
            p.replaced().collect::<Vec<_>>(),
            [slot::TIME_MONOTONIC_NS.entry()]
        );
    }

    #[test]
    fn revert_gives_entry_back_to_native() {
        let mut p = Patch::new("test");
        p.set(slot::TIME_STEAL_NS, fake_clock);
        p.revert(slot::TIME_STEAL_NS);
        assert_eq!(p.owner(slot::TIME_STEAL_NS.entry()), NATIVE);
        assert_eq!((p.table().time.steal_ns)(), 0);
    }

    #[test]
    fn install_refuses_with_interrupts_enabled() {
        // User-mode code on the host always runs with IF set, so this is the
        // "interrupts enabled" case; the live table must stay native.
        // SAFETY: the call is refused before anything is written.
        let r = unsafe { install(Patch::new("test")) };
        assert_eq!(r, Err(InstallError::InterruptsEnabled));
        assert!(!is_sealed());
        assert_eq!(owner(slot::TIME_MONOTONIC_NS.entry()), NATIVE);
    }
}
