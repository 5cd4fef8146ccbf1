//! The PVH boot ABI: how QEMU (and Xen) hand a 32-bit entry point the boot
//! information.
//!
//! Source: Xen public headers, `xen/include/public/arch-x86/hvm/start_info.h`
//! and `xen/include/public/elfnote.h`; Xen's `docs/misc/pvh.pandoc`.

use static_assertions::{assert_eq_size, const_assert_eq};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// ELF note name that carries the PVH entry point (`"Xen"`).
pub const ELFNOTE_NAME: &[u8; 4] = b"Xen\0";
/// `XEN_ELFNOTE_PHYS32_ENTRY`: 32-bit physical entry point (elfnote.h).
pub const ELFNOTE_PHYS32_ENTRY: u32 = 18;
/// `XEN_HVM_START_MAGIC_VALUE` found in [`StartInfo::magic`].
pub const START_MAGIC: u32 = 0x336e_c578;

/// `struct hvm_start_info` (version 1, with the memory map fields).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct StartInfo {
    /// Must be [`START_MAGIC`].
    pub magic: u32,
    /// Version of this structure; 1 adds the memory map.
    pub version: u32,
    /// `SIF_*` flags.
    pub flags: u32,
    /// Number of entries in the module list.
    pub nr_modules: u32,
    /// Physical address of an array of [`ModListEntry`].
    pub modlist_paddr: u64,
    /// Physical address of the NUL-terminated command line.
    pub cmdline_paddr: u64,
    /// Physical address of the ACPI RSDP, or 0.
    pub rsdp_paddr: u64,
    /// Physical address of an array of [`MemMapEntry`] (version >= 1).
    pub memmap_paddr: u64,
    /// Number of entries in the memory map (version >= 1).
    pub memmap_entries: u32,
    /// Must be zero.
    pub reserved: u32,
}
assert_eq_size!(StartInfo, [u8; 56]);
const_assert_eq!(core::mem::offset_of!(StartInfo, modlist_paddr), 16);
const_assert_eq!(core::mem::offset_of!(StartInfo, cmdline_paddr), 24);
const_assert_eq!(core::mem::offset_of!(StartInfo, memmap_paddr), 40);
const_assert_eq!(core::mem::offset_of!(StartInfo, memmap_entries), 48);

/// `struct hvm_modlist_entry`.
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct ModListEntry {
    /// Physical address of the module.
    pub paddr: u64,
    /// Size of the module in bytes.
    pub size: u64,
    /// Physical address of the module's command line, or 0.
    pub cmdline_paddr: u64,
    /// Must be zero.
    pub reserved: u64,
}
assert_eq_size!(ModListEntry, [u8; 32]);

/// `struct hvm_memmap_table_entry`.
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct MemMapEntry {
    /// Start of the range.
    pub addr: u64,
    /// Length of the range in bytes.
    pub size: u64,
    /// One of the `MEMMAP_TYPE_*` values (E820 numbering).
    pub kind: u32,
    /// Must be zero.
    pub reserved: u32,
}
assert_eq_size!(MemMapEntry, [u8; 24]);
const_assert_eq!(core::mem::offset_of!(MemMapEntry, kind), 16);

/// Usable RAM (`XEN_HVM_MEMMAP_TYPE_RAM`, E820 type 1).
pub const MEMMAP_TYPE_RAM: u32 = 1;
/// Reserved (`XEN_HVM_MEMMAP_TYPE_RESERVED`, E820 type 2).
pub const MEMMAP_TYPE_RESERVED: u32 = 2;
