//! Where the running image lives, from the linker script's symbols.

/// A range of physical (identity-mapped) addresses, `start..end`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Range {
    /// First byte.
    pub start: u64,
    /// One past the last byte.
    pub end: u64,
}

impl Range {
    /// Whether `addr` lies inside.
    pub fn contains(&self, addr: u64) -> bool {
        addr >= self.start && addr < self.end
    }

    /// Whether the two ranges share a byte.
    pub fn overlaps(&self, other: &Range) -> bool {
        self.start < other.end && other.start < self.end
    }

    /// Length in bytes.
    pub fn len(&self) -> u64 {
        self.end.saturating_sub(self.start)
    }

    /// Whether the range is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

extern "C" {
    static __bootkit_image_start: u8;
    static __bootkit_image_end: u8;
    static __bootkit_data_start: u8;
    static __bootkit_text_start: u8;
    static __bootkit_text_end: u8;
    static bootkit_stack_bottom: u8;
    static bootkit_stack_top: u8;
    static bootkit_boot_pml4: u8;
}

/// The whole image (text, data, bss incl. boot page tables and stack),
/// page aligned. A kernel must not hand these frames out.
pub fn image() -> Range {
    Range {
        start: core::ptr::addr_of!(__bootkit_image_start) as u64,
        end: core::ptr::addr_of!(__bootkit_image_end) as u64,
    }
}

/// Text and read-only data (incl. the PVH note): nothing writes there
/// after the loader, so a checksum of it must never change.
pub fn read_only() -> Range {
    Range {
        start: core::ptr::addr_of!(__bootkit_image_start) as u64,
        end: core::ptr::addr_of!(__bootkit_data_start) as u64,
    }
}

/// The boot page tables built by the PVH stub (`pvh.rs`: PML4, PDPT and
/// four page directories, contiguous), the identity map of the first 4 GiB.
pub fn boot_page_tables() -> Range {
    let start = boot_pml4();
    Range {
        start,
        end: start + 6 * 4096,
    }
}

/// The image's code (`.text`), e.g. for a kernel that lets pvops patch its
/// call sites (`pvops::dispatch::allow_patching`).
pub fn text() -> Range {
    Range {
        start: core::ptr::addr_of!(__bootkit_text_start) as u64,
        end: core::ptr::addr_of!(__bootkit_text_end) as u64,
    }
}

/// The boot stack set up by the PVH stub.
pub fn boot_stack() -> Range {
    Range {
        start: core::ptr::addr_of!(bootkit_stack_bottom) as u64,
        end: core::ptr::addr_of!(bootkit_stack_top) as u64,
    }
}

/// Physical address of the boot PML4 (identity map of the first 4 GiB).
pub fn boot_pml4() -> u64 {
    core::ptr::addr_of!(bootkit_boot_pml4) as u64
}
