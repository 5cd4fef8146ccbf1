//! A safe view of the PVH `hvm_start_info` the loader passes in EBX.
//!
//! All raw memory access is in [`StartInfo::from_paddr`]; everything after
//! that works on validated copies and bounded slices.

use crate::image::Range;
use pvops_abi::pvh::{self, MemMapEntry, ModListEntry};

/// Longest command line read (bytes before the NUL).
pub const MAX_CMDLINE: usize = 4096;
/// Most modules / memory-map entries accepted (more is treated as corrupt).
pub const MAX_ENTRIES: u32 = 256;

/// Why `hvm_start_info` was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// The pointer was null.
    Null,
    /// The magic value was wrong (the value found is included).
    BadMagic(u32),
    /// A count was absurd.
    TooManyEntries,
}

impl core::fmt::Display for Error {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Error::Null => f.write_str("start_info pointer is null"),
            Error::BadMagic(m) => write!(f, "bad start_info magic {m:#x}"),
            Error::TooManyEntries => f.write_str("start_info has too many entries"),
        }
    }
}

/// Validated boot information.
#[derive(Clone, Copy, Debug)]
pub struct StartInfo {
    paddr: u64,
    raw: pvh::StartInfo,
    cmdline: &'static str,
    modules: &'static [ModListEntry],
    memmap: &'static [MemMapEntry],
}

impl StartInfo {
    /// Reads and validates the structure at `paddr`.
    ///
    /// # Safety
    ///
    /// `paddr` must be the address the PVH loader passed, identity mapped,
    /// and the structure, command line, module list and memory map must stay
    /// untouched for the rest of the kernel's life (the kernel must not
    /// allocate their frames: see [`StartInfo::reserved`]).
    pub unsafe fn from_paddr(paddr: u64) -> Result<StartInfo, Error> {
        if paddr == 0 {
            return Err(Error::Null);
        }
        // SAFETY: the caller guarantees `paddr` points at an identity-mapped
        // hvm_start_info; `read_unaligned` needs no alignment and the type is
        // plain data valid for any bit pattern.
        let raw = unsafe { core::ptr::read_unaligned(paddr as *const pvh::StartInfo) };
        if raw.magic != pvh::START_MAGIC {
            return Err(Error::BadMagic(raw.magic));
        }
        if raw.nr_modules > MAX_ENTRIES || raw.memmap_entries > MAX_ENTRIES {
            return Err(Error::TooManyEntries);
        }
        let cmdline = if raw.cmdline_paddr == 0 {
            ""
        } else {
            let start = raw.cmdline_paddr as *const u8;
            // SAFETY: the loader wrote a NUL-terminated string at
            // cmdline_paddr (caller's contract); the scan stops at the NUL or
            // after MAX_CMDLINE bytes, so it never reads past a sane string.
            let len = (0..MAX_CMDLINE)
                .find(|&i| unsafe { start.add(i).read() } == 0)
                .unwrap_or(MAX_CMDLINE);
            // SAFETY: `len` bytes from `start` were just read successfully and
            // stay unchanged (caller's contract).
            let bytes = unsafe { core::slice::from_raw_parts(start, len) };
            match core::str::from_utf8(bytes) {
                Ok(s) => s,
                // Keep the valid prefix rather than dropping everything.
                Err(e) => core::str::from_utf8(&bytes[..e.valid_up_to()]).unwrap_or(""),
            }
        };
        let modules = if raw.modlist_paddr == 0 || raw.nr_modules == 0 {
            &[][..]
        } else {
            // SAFETY: the loader placed `nr_modules` entries (bounded above)
            // at modlist_paddr; the PVH ABI aligns them to 8 bytes.
            unsafe {
                core::slice::from_raw_parts(
                    raw.modlist_paddr as *const ModListEntry,
                    raw.nr_modules as usize,
                )
            }
        };
        let memmap = if raw.version < 1 || raw.memmap_paddr == 0 {
            &[][..]
        } else {
            // SAFETY: as for the module list, for `memmap_entries` entries.
            unsafe {
                core::slice::from_raw_parts(
                    raw.memmap_paddr as *const MemMapEntry,
                    raw.memmap_entries as usize,
                )
            }
        };
        Ok(StartInfo {
            paddr,
            raw,
            cmdline,
            modules,
            memmap,
        })
    }

    /// The raw structure (a copy).
    pub fn raw(&self) -> &pvh::StartInfo {
        &self.raw
    }

    /// Physical address of the structure.
    pub fn paddr(&self) -> u64 {
        self.paddr
    }

    /// The kernel command line (`-append`), possibly empty.
    pub fn cmdline(&self) -> &'static str {
        self.cmdline
    }

    /// The value of `key=value` on the command line (last occurrence wins).
    pub fn cmdline_value(&self, key: &str) -> Option<&'static str> {
        cmdline_value(self.cmdline, key)
    }

    /// Modules (`-initrd`).
    pub fn modules(&self) -> &'static [ModListEntry] {
        self.modules
    }

    /// The contents of module `index` as bytes.
    pub fn module_bytes(&self, index: usize) -> Option<&'static [u8]> {
        let m = self.modules.get(index)?;
        if m.paddr == 0 {
            return None;
        }
        // SAFETY: the loader placed the module at paddr..paddr+size, identity
        // mapped and untouched (contract of `from_paddr`).
        Some(unsafe { core::slice::from_raw_parts(m.paddr as *const u8, m.size as usize) })
    }

    /// The memory map (empty for version-0 structures).
    pub fn memory_map(&self) -> impl Iterator<Item = &'static MemMapEntry> + Clone {
        self.memmap.iter()
    }

    /// Usable RAM ranges.
    pub fn ram(&self) -> impl Iterator<Item = Range> + Clone {
        self.memory_map()
            .filter(|e| e.kind == pvh::MEMMAP_TYPE_RAM)
            .map(|e| Range {
                start: e.addr,
                end: e.addr.saturating_add(e.size),
            })
    }

    /// Memory the kernel must not allocate: the structure itself, the
    /// command line, the module list and the modules, the memory map.
    /// (Page granular; empty ranges for absent items.)
    pub fn reserved(&self) -> [Range; 5] {
        let page = |start: u64, len: u64| {
            if start == 0 {
                return Range { start: 0, end: 0 };
            }
            Range {
                start: start & !0xfff,
                end: (start.saturating_add(len.max(1)) + 0xfff) & !0xfff,
            }
        };
        let modules_end = self
            .modules
            .iter()
            .map(|m| m.paddr.saturating_add(m.size))
            .max()
            .unwrap_or(0);
        let modules_start = self.modules.iter().map(|m| m.paddr).min().unwrap_or(0);
        [
            page(self.paddr, core::mem::size_of::<pvh::StartInfo>() as u64),
            page(self.raw.cmdline_paddr, self.cmdline.len() as u64 + 1),
            page(
                self.raw.modlist_paddr,
                core::mem::size_of_val(self.modules) as u64,
            ),
            page(modules_start, modules_end.saturating_sub(modules_start)),
            page(
                self.raw.memmap_paddr,
                core::mem::size_of_val(self.memmap) as u64,
            ),
        ]
    }
}

/// The value of `key=value` in a whitespace-separated command line (last
/// occurrence wins, as with Linux early parameters).
pub fn cmdline_value<'a>(cmdline: &'a str, key: &str) -> Option<&'a str> {
    cmdline
        .split_ascii_whitespace()
        .rev()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
}
