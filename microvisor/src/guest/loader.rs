//! Loads the guest kernel (a PVH ELF, the `-initrd` module) into guest RAM
//! and writes the boot information the PVH convention hands it.
//!
//! ELF parsing is done by the `elf` crate; this module only copies segments
//! (with bounds checks against guest RAM) and finds the PVH entry note
//! (`XEN_ELFNOTE_PHYS32_ENTRY`, type 18, name "Xen": Xen
//! `include/public/elfnote.h`).
//!
//! Guest-physical layout of the boot information (all in one reserved run
//! of pages, [`BOOT_INFO_GPA`]..[`BOOT_INFO_END`]):
//!
//! | GPA | content |
//! |---|---|
//! | 0x1000 | `hvm_start_info` (version 1) |
//! | 0x1040 | E820-style memory map |
//! | 0x1200 | guest command line (NUL-terminated, up to 3.5 KiB) |
//! | 0x2000 | GDT for the entry state (null, null, code32 0x10, data 0x18, TSS 0x20) |
//! | 0x3000 | 104-byte dummy TSS |
//! | 0x3400 | ACPI RSDP, XSDT, MADT (only with more than one vCPU, [`super::acpi`]) |

use super::mem::GuestRam;
use elf::{abi, endian::AnyEndian, note::Note, ElfBytes};
use pvops_abi::pvh::{
    MemMapEntry, StartInfo, ELFNOTE_PHYS32_ENTRY, MEMMAP_TYPE_RAM, MEMMAP_TYPE_RESERVED,
    START_MAGIC,
};
use zerocopy::IntoBytes;

/// First reserved byte of the boot information.
pub const BOOT_INFO_GPA: u64 = 0x1000;
/// One past the last reserved byte.
pub const BOOT_INFO_END: u64 = 0x4000;
/// `hvm_start_info` (EBX at entry).
pub const START_INFO_GPA: u64 = 0x1000;
const MEMMAP_GPA: u64 = 0x1040;
const CMDLINE_GPA: u64 = 0x1200;
const CMDLINE_MAX: usize = (GDT_GPA - CMDLINE_GPA) as usize - 1;
/// The entry GDT.
pub const GDT_GPA: u64 = 0x2000;
/// Size of the entry GDT in bytes.
pub const GDT_LEN: u64 = 5 * 8;
/// The dummy TSS the entry TR points at.
pub const TSS_GPA: u64 = 0x3000;
/// Selectors in the entry GDT.
pub const SEL_CODE32: u16 = 0x10;
/// Data selector.
pub const SEL_DATA: u16 = 0x18;
/// TSS selector.
pub const SEL_TSS: u16 = 0x20;
/// The ACPI tables (RSDP first), with more than one vCPU.
pub const ACPI_GPA: u64 = 0x3400;
/// Legacy VGA/BIOS hole reported as reserved.
const LOW_HOLE: (u64, u64) = (0x9_F000, 0x10_0000);

/// Where the guest starts.
#[derive(Clone, Copy, Debug)]
pub struct Loaded {
    /// PVH 32-bit entry point (guest-physical).
    pub entry: u32,
    /// Lowest and highest loaded guest-physical addresses.
    pub span: (u64, u64),
}

/// Why the image could not be loaded (reported as a microvisor error).
#[derive(Clone, Copy, Debug)]
pub enum LoadError {
    /// The `elf` crate rejected it.
    Parse(&'static str),
    /// Not a 64-bit x86 ELF.
    NotX86_64,
    /// No PVH entry note.
    NoPvhNote,
    /// A segment does not fit guest RAM or overlaps the boot information.
    SegmentOutOfRange(u64, u64),
    /// The command line is too long.
    CmdlineTooLong,
}

impl core::fmt::Display for LoadError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            LoadError::Parse(e) => write!(f, "guest ELF: {e}"),
            LoadError::NotX86_64 => f.write_str("guest ELF is not x86-64"),
            LoadError::NoPvhNote => f.write_str("guest ELF has no PVH (Xen PHYS32_ENTRY) note"),
            LoadError::SegmentOutOfRange(a, n) => {
                write!(
                    f,
                    "guest segment {a:#x}+{n:#x} outside guest RAM or over boot info"
                )
            }
            LoadError::CmdlineTooLong => f.write_str("guest command line too long"),
        }
    }
}

/// Copies the PT_LOAD segments of `image` to their physical addresses in
/// guest RAM (zero-filling `.bss`) and finds the PVH entry point.
pub fn load_elf(mem: &GuestRam, image: &[u8]) -> Result<Loaded, LoadError> {
    let file =
        ElfBytes::<AnyEndian>::minimal_parse(image).map_err(|_| LoadError::Parse("parse"))?;
    if file.ehdr.e_machine != abi::EM_X86_64 {
        return Err(LoadError::NotX86_64);
    }
    let segments = file
        .segments()
        .ok_or(LoadError::Parse("no program headers"))?;
    let mut entry = None;
    let mut span = (u64::MAX, 0u64);
    for ph in segments.iter() {
        match ph.p_type {
            abi::PT_LOAD if ph.p_memsz > 0 => {
                let (pa, mem_len) = (ph.p_paddr, ph.p_memsz);
                let out = SegmentOutOfRange(pa, mem_len);
                let end = pa.checked_add(mem_len).ok_or(out.err())?;
                if !mem.contains(pa, mem_len) || (pa < BOOT_INFO_END && end > BOOT_INFO_GPA) {
                    return Err(out.err());
                }
                let data = file
                    .segment_data(&ph)
                    .map_err(|_| LoadError::Parse("segment data"))?;
                let data = &data[..data.len().min(mem_len as usize)];
                mem.write(pa, data).map_err(|_| out.err())?;
                mem.zero(pa + data.len() as u64, mem_len - data.len() as u64)
                    .map_err(|_| out.err())?;
                span = (span.0.min(pa), span.1.max(end));
            }
            abi::PT_NOTE => {
                let notes = file
                    .segment_data_as_notes(&ph)
                    .map_err(|_| LoadError::Parse("notes"))?;
                for note in notes {
                    if let Note::Unknown(n) = note {
                        if n.n_type == ELFNOTE_PHYS32_ENTRY as u64
                            && n.name_str().is_ok_and(|name| name == "Xen")
                            && n.desc.len() >= 4
                        {
                            let d = n.desc;
                            entry = Some(u32::from_le_bytes([d[0], d[1], d[2], d[3]]));
                        }
                    }
                }
            }
            _ => {}
        }
    }
    Ok(Loaded {
        entry: entry.ok_or(LoadError::NoPvhNote)?,
        span,
    })
}

struct SegmentOutOfRange(u64, u64);

impl SegmentOutOfRange {
    fn err(&self) -> LoadError {
        LoadError::SegmentOutOfRange(self.0, self.1)
    }
}

/// Writes `hvm_start_info`, the memory map, the command line, the entry GDT
/// and TSS into guest RAM. Returns the number of memory-map entries.
///
/// With `vcpus` > 1 it also writes the ACPI tables describing them at
/// [`ACPI_GPA`] and points `rsdp_paddr` there; with one vCPU there are no
/// ACPI tables (the guest finds no MADT and runs on one CPU).
pub fn write_boot_info(mem: &GuestRam, cmdline: &str, vcpus: usize) -> Result<u32, LoadError> {
    if cmdline.len() > CMDLINE_MAX {
        return Err(LoadError::CmdlineTooLong);
    }
    let oob = |_| LoadError::SegmentOutOfRange(BOOT_INFO_GPA, BOOT_INFO_END - BOOT_INFO_GPA);
    mem.zero(BOOT_INFO_GPA, BOOT_INFO_END - BOOT_INFO_GPA)
        .map_err(oob)?;
    let e = |addr: u64, end: u64, kind: u32| MemMapEntry {
        addr,
        size: end - addr,
        kind,
        reserved: 0,
    };
    let map = [
        e(0, BOOT_INFO_GPA, MEMMAP_TYPE_RAM),
        e(BOOT_INFO_GPA, BOOT_INFO_END, MEMMAP_TYPE_RESERVED),
        e(BOOT_INFO_END, LOW_HOLE.0, MEMMAP_TYPE_RAM),
        e(LOW_HOLE.0, LOW_HOLE.1, MEMMAP_TYPE_RESERVED),
        e(LOW_HOLE.1, mem.size(), MEMMAP_TYPE_RAM),
    ];
    mem.write(MEMMAP_GPA, map.as_bytes()).map_err(oob)?;
    mem.write(CMDLINE_GPA, cmdline.as_bytes()).map_err(oob)?;
    let info = StartInfo {
        magic: START_MAGIC,
        version: 1,
        flags: 0,
        nr_modules: 0,
        modlist_paddr: 0,
        cmdline_paddr: CMDLINE_GPA,
        rsdp_paddr: if vcpus > 1 { ACPI_GPA } else { 0 },
        memmap_paddr: MEMMAP_GPA,
        memmap_entries: map.len() as u32,
        reserved: 0,
    };
    mem.write(START_INFO_GPA, info.as_bytes()).map_err(oob)?;
    if vcpus > 1 {
        let (tables, len) = super::acpi::build(ACPI_GPA, vcpus);
        mem.write(ACPI_GPA, &tables[..len]).map_err(oob)?;
    }
    // Flat 32-bit code and data (accessed bits preset), busy 32-bit TSS at
    // TSS_GPA with limit 0x67 (Intel SDM vol. 3A, 3.4.5 and 8.2.2).
    let tss_desc: u64 = 0x67 | (TSS_GPA & 0xFF_FFFF) << 16 | 0x8B << 40;
    let gdt: [u64; 5] = [0, 0, 0x00CF_9B00_0000_FFFF, 0x00CF_9300_0000_FFFF, tss_desc];
    mem.write(GDT_GPA, gdt.as_bytes()).map_err(oob)?;
    Ok(map.len() as u32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use zerocopy::FromBytes;

    #[test]
    fn boot_info_layout() {
        let mut backing = vec![0xAAu8; 2 << 20];
        // SAFETY: the test owns `backing` for the whole test.
        let mem = unsafe { GuestRam::new(backing.as_mut_ptr() as u64, backing.len() as u64) };
        assert_eq!(write_boot_info(&mem, "fault=triple", 1).unwrap(), 5);
        let info = StartInfo::read_from_bytes(&backing[0x1000..0x1038]).unwrap();
        assert_eq!(info.magic, START_MAGIC);
        assert_eq!(info.cmdline_paddr, CMDLINE_GPA);
        assert_eq!(&backing[0x1200..0x120D], b"fault=triple\0");
        let map = <[MemMapEntry; 5]>::read_from_bytes(&backing[0x1040..0x1040 + 5 * 24]).unwrap();
        assert_eq!((map[0].addr, map[0].kind), (0, MEMMAP_TYPE_RAM));
        assert_eq!(
            (map[1].addr, map[1].kind),
            (BOOT_INFO_GPA, MEMMAP_TYPE_RESERVED)
        );
        assert_eq!(map[4].addr + map[4].size, 2 << 20);
        let gdt = <[u64; 5]>::read_from_bytes(&backing[0x2000..0x2028]).unwrap();
        assert_eq!(gdt[2], 0x00CF_9B00_0000_FFFF);
        assert_eq!(gdt[4], 0x0000_8B00_3000_0067);
        assert_eq!(info.rsdp_paddr, 0, "one vCPU: no ACPI tables");
        assert!(backing[0x3400..0x4000].iter().all(|&b| b == 0));
    }

    #[test]
    fn boot_info_with_several_vcpus_has_a_madt() {
        let mut backing = vec![0u8; 2 << 20];
        // SAFETY: the test owns `backing` for the whole test.
        let mem = unsafe { GuestRam::new(backing.as_mut_ptr() as u64, backing.len() as u64) };
        write_boot_info(&mem, "", 4).unwrap();
        let info = StartInfo::read_from_bytes(&backing[0x1000..0x1038]).unwrap();
        assert_eq!(info.rsdp_paddr, ACPI_GPA);
        let (xsdt, _) = pvops_abi::acpi::parse_rsdp(&backing[0x3400..0x4000]).unwrap();
        let madt_at = {
            let x = &backing[xsdt as usize..0x4000];
            let x =
                pvops_abi::acpi::check_table(x, pvops_abi::acpi::XSDT_SIGNATURE, "XSDT").unwrap();
            pvops_abi::acpi::sdt_entries(x, 8).next().unwrap() as usize
        };
        let m = pvops_abi::acpi::check_table(
            &backing[madt_at..0x4000],
            pvops_abi::acpi::MADT_SIGNATURE,
            "MADT",
        )
        .unwrap();
        assert_eq!(pvops_abi::acpi::madt_cpus(m).count(), 4);
        // Inside the reserved boot information range.
        assert!(madt_at + m.len() <= BOOT_INFO_END as usize);
    }

    #[test]
    fn rejects_non_elf_and_long_command_lines() {
        let mut backing = vec![0u8; 2 << 20];
        // SAFETY: as above.
        let mem = unsafe { GuestRam::new(backing.as_mut_ptr() as u64, backing.len() as u64) };
        assert!(matches!(
            load_elf(&mem, b"not an elf"),
            Err(LoadError::Parse(_))
        ));
        let long = "x".repeat(4000);
        assert!(matches!(
            write_boot_info(&mem, &long, 1),
            Err(LoadError::CmdlineTooLong)
        ));
        assert!(!mem.contains(0x1F_FFFF, 2));
        assert!(mem.contains(0x1F_FFFF, 1));
        assert!(!mem.contains(u64::MAX, 2));
    }
}
