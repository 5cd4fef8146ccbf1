//! The kernel's text as pvops sees it: the `pvops_sites` records, reading
//! a site's bytes and writing new ones. All unsafe code of the patcher.

use super::SiteRecord;

// Every object with a site has a `pvops_sites` section; this record (entry
// `ANCHOR`, skipped) makes sure the section exists in every link, so the
// `__start_`/`__stop_` symbols below always resolve (the linker defines
// them for a section whose name is a C identifier, or the linker script
// does, as bootkit's `pvops-boot.ld`).
core::arch::global_asm!(
    ".pushsection pvops_sites, \"aR\"",
    ".balign 4",
    ".long 0",
    ".byte {anchor}, 0",
    ".short 0",
    ".popsection",
    anchor = const super::ANCHOR,
);

extern "C" {
    static __start_pvops_sites: SiteRecord;
    static __stop_pvops_sites: SiteRecord;
}

/// Every record of the link, the anchor included.
pub(super) fn records() -> &'static [SiteRecord] {
    let start = &raw const __start_pvops_sites;
    let end = &raw const __stop_pvops_sites;
    let n = (end as usize).saturating_sub(start as usize) / core::mem::size_of::<SiteRecord>();
    // SAFETY: the linker places every `pvops_sites` input section, each a
    // sequence of 4-aligned 8-byte records (`site!` and the anchor above),
    // between the two symbols; the section is never written.
    unsafe { core::slice::from_raw_parts(start, n) }
}

/// The address a record describes.
pub(super) fn site_address(rec: &SiteRecord) -> usize {
    (rec as *const SiteRecord as usize).wrapping_add_signed(rec.offset as isize)
}

/// Copies the `out.len()` bytes at `addr` (inside the kernel's text).
///
/// # Safety
///
/// `addr..addr + out.len()` must be mapped and readable.
pub(super) unsafe fn read(addr: usize, out: &mut [u8]) {
    for (i, b) in out.iter_mut().enumerate() {
        // SAFETY: the caller guarantees the range is readable.
        *b = unsafe { core::ptr::read_volatile((addr + i) as *const u8) };
    }
}

/// Writes `bytes` at `addr`.
///
/// # Safety
///
/// The range must be writable code of this kernel that no CPU executes
/// during the write (interrupts off, no other CPU running), and whose old
/// and new contents are each whole instructions.
pub(super) unsafe fn write(addr: usize, bytes: &[u8]) {
    for (i, b) in bytes.iter().enumerate() {
        // SAFETY: as the caller guarantees.
        unsafe { core::ptr::write_volatile((addr + i) as *mut u8, *b) };
    }
}

/// Makes the CPU fetch the new instructions: CPUID is serializing (Intel
/// SDM Vol. 2A, CPUID; Vol. 3A, "Handling Self- and Cross-Modifying Code":
/// store the code as data, then execute a serializing instruction before
/// executing it).
pub(super) fn serialize() {
    core::sync::atomic::compiler_fence(core::sync::atomic::Ordering::SeqCst);
    core::hint::black_box(crate::native::cpu::cpuid(0, 0));
}
