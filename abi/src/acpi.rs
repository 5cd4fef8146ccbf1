//! The ACPI tables a kernel reads to find its CPUs: the RSDP, the system
//! description table header (RSDT/XSDT) and the MADT's processor entries.
//!
//! Layouts from the ACPI Specification 6.5: 5.2.5.3 (RSDP), 5.2.6 (system
//! description table header), 5.2.7/5.2.8 (RSDT, XSDT), 5.2.12 (MADT),
//! 5.2.12.2 (Processor Local APIC, type 0) and 5.2.12.12 (Processor Local
//! x2APIC, type 9). Every field is little-endian and unaligned.

use core::mem::offset_of;
use static_assertions::{assert_eq_size, const_assert_eq};
use zerocopy::little_endian::{U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// The RSDP's signature, "RSD PTR " (5.2.5.3).
pub const RSDP_SIGNATURE: [u8; 8] = *b"RSD PTR ";
/// The MADT's signature, "APIC" (5.2.12).
pub const MADT_SIGNATURE: [u8; 4] = *b"APIC";
/// The XSDT's signature.
pub const XSDT_SIGNATURE: [u8; 4] = *b"XSDT";
/// The RSDT's signature.
pub const RSDT_SIGNATURE: [u8; 4] = *b"RSDT";

/// Root System Description Pointer, revision 2 (36 bytes; the first 20 are
/// the ACPI 1.0 structure, covered by `checksum`; all 36 by
/// `extended_checksum`).
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout, Unaligned)]
#[repr(C)]
pub struct Rsdp {
    /// "RSD PTR ".
    pub signature: [u8; 8],
    /// Makes the first 20 bytes sum to 0.
    pub checksum: u8,
    /// OEM identifier.
    pub oem_id: [u8; 6],
    /// 0 for ACPI 1.0 (no XSDT), 2 from ACPI 2.0.
    pub revision: u8,
    /// Physical address of the RSDT.
    pub rsdt_address: U32,
    /// Length of the whole structure (revision 2).
    pub length: U32,
    /// Physical address of the XSDT (revision 2).
    pub xsdt_address: U64,
    /// Makes all `length` bytes sum to 0.
    pub extended_checksum: u8,
    /// Reserved.
    pub reserved: [u8; 3],
}
assert_eq_size!(Rsdp, [u8; 36]);
const_assert_eq!(offset_of!(Rsdp, rsdt_address), 16);
const_assert_eq!(offset_of!(Rsdp, xsdt_address), 24);

/// Size of the ACPI 1.0 part of the RSDP.
pub const RSDP_V1_LEN: usize = 20;

/// System description table header (36 bytes), at the start of the RSDT,
/// XSDT, MADT and every other table.
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout, Unaligned)]
#[repr(C)]
pub struct SdtHeader {
    /// Table signature, e.g. "APIC".
    pub signature: [u8; 4],
    /// Length of the table, header included.
    pub length: U32,
    /// Table revision.
    pub revision: u8,
    /// Makes the whole table sum to 0.
    pub checksum: u8,
    /// OEM identifier.
    pub oem_id: [u8; 6],
    /// OEM table identifier.
    pub oem_table_id: [u8; 8],
    /// OEM revision.
    pub oem_revision: U32,
    /// Creator (the tool that built the table).
    pub creator_id: U32,
    /// Creator revision.
    pub creator_revision: U32,
}
assert_eq_size!(SdtHeader, [u8; 36]);
const_assert_eq!(offset_of!(SdtHeader, length), 4);
const_assert_eq!(offset_of!(SdtHeader, checksum), 9);

/// The MADT's fields after the header (5.2.12, table 5.43).
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout, Unaligned)]
#[repr(C)]
pub struct MadtFixed {
    /// Physical address of the local APIC (xAPIC MMIO).
    pub local_apic_address: U32,
    /// Bit 0: PCAT_COMPAT (the system also has dual 8259s).
    pub flags: U32,
}
assert_eq_size!(MadtFixed, [u8; 8]);

/// Offset of the first interrupt controller structure in the MADT.
pub const MADT_ENTRIES_OFFSET: usize = 44;

/// MADT entry type 0: Processor Local APIC.
pub const MADT_LOCAL_APIC: u8 = 0;
/// MADT entry type 9: Processor Local x2APIC.
pub const MADT_LOCAL_X2APIC: u8 = 9;

/// Local APIC flags bit 0: the processor is usable now (5.2.12.2, table 5.46).
pub const LAPIC_ENABLED: u32 = 1 << 0;
/// Local APIC flags bit 1: the processor can be brought online later
/// (ACPI 6.3 and later; meaningful only when Enabled is clear).
pub const LAPIC_ONLINE_CAPABLE: u32 = 1 << 1;

/// Processor Local APIC structure (type 0, length 8; 5.2.12.2).
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout, Unaligned)]
#[repr(C)]
pub struct MadtLocalApic {
    /// 0.
    pub entry_type: u8,
    /// 8.
    pub length: u8,
    /// The processor's ACPI UID (Processor object).
    pub acpi_processor_uid: u8,
    /// The processor's local APIC ID.
    pub apic_id: u8,
    /// [`LAPIC_ENABLED`], [`LAPIC_ONLINE_CAPABLE`].
    pub flags: U32,
}
assert_eq_size!(MadtLocalApic, [u8; 8]);

/// Processor Local x2APIC structure (type 9, length 16; 5.2.12.12).
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout, Unaligned)]
#[repr(C)]
pub struct MadtLocalX2Apic {
    /// 9.
    pub entry_type: u8,
    /// 16.
    pub length: u8,
    /// Reserved.
    pub reserved: [u8; 2],
    /// The processor's 32-bit x2APIC ID.
    pub x2apic_id: U32,
    /// As the local APIC's flags.
    pub flags: U32,
    /// The processor's ACPI UID (Device object).
    pub acpi_processor_uid: U32,
}
assert_eq_size!(MadtLocalX2Apic, [u8; 16]);
const_assert_eq!(offset_of!(MadtLocalX2Apic, x2apic_id), 4);

/// Whether `bytes` sum to 0 modulo 256 (every ACPI checksum).
pub fn checksum_ok(bytes: &[u8]) -> bool {
    bytes.iter().fold(0u8, |a, &b| a.wrapping_add(b)) == 0
}

/// The checksum byte for `bytes`: the value that, stored in a byte of
/// `bytes` that currently reads 0, makes all of them sum to 0 modulo 256
/// (the rule of every ACPI checksum, ACPI 6.5 5.2.5.3 and 5.2.6).
pub fn checksum_byte(bytes: &[u8]) -> u8 {
    0u8.wrapping_sub(bytes.iter().fold(0u8, |a, &b| a.wrapping_add(b)))
}

/// Sets `bytes[at]` so that `bytes` sums to 0 modulo 256 (whatever
/// `bytes[at]` held before). Does nothing when `at` is out of range.
pub fn set_checksum(bytes: &mut [u8], at: usize) {
    if at < bytes.len() {
        bytes[at] = 0;
        bytes[at] = checksum_byte(bytes);
    }
}

/// Why the ACPI tables could not be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AcpiError {
    /// No RSDP where the loader said or in the BIOS areas.
    NoRsdp,
    /// A table is shorter than its header, or than its `length` says.
    Truncated(&'static str),
    /// A table's checksum does not sum to 0.
    BadChecksum(&'static str),
    /// A table has another signature than the pointer to it promised.
    BadSignature(&'static str),
    /// Neither the XSDT nor the RSDT lists a MADT.
    NoMadt,
    /// A table lies where the kernel cannot read it (above 4 GiB or
    /// longer than 64 KiB).
    Unreachable(&'static str),
    /// A MADT entry's length is 0 or runs past the table.
    BadEntry(usize),
}

impl core::fmt::Display for AcpiError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            AcpiError::NoRsdp => {
                f.write_str("no ACPI RSDP (start_info rsdp_paddr 0, none in the BIOS areas)")
            }
            AcpiError::Truncated(t) => write!(f, "ACPI {t} truncated"),
            AcpiError::BadChecksum(t) => write!(f, "ACPI {t} checksum wrong"),
            AcpiError::BadSignature(t) => write!(f, "ACPI {t} signature wrong"),
            AcpiError::NoMadt => f.write_str("no MADT in the ACPI tables"),
            AcpiError::Unreachable(t) => write!(f, "ACPI {t} out of reach"),
            AcpiError::BadEntry(o) => write!(f, "MADT entry at offset {o} malformed"),
        }
    }
}

/// Checks an RSDP (signature, ACPI 1.0 checksum, and the extended checksum
/// from revision 2) and returns the (XSDT, RSDT) addresses (XSDT 0 before
/// revision 2).
pub fn parse_rsdp(bytes: &[u8]) -> Result<(u64, u32), AcpiError> {
    let v1 = bytes
        .get(..RSDP_V1_LEN)
        .ok_or(AcpiError::Truncated("RSDP"))?;
    if v1[..8] != RSDP_SIGNATURE {
        return Err(AcpiError::BadSignature("RSDP"));
    }
    if !checksum_ok(v1) {
        return Err(AcpiError::BadChecksum("RSDP"));
    }
    let rsdt = u32::from_le_bytes([v1[16], v1[17], v1[18], v1[19]]);
    if v1[15] < 2 {
        return Ok((0, rsdt));
    }
    let (r, _) = Rsdp::read_from_prefix(bytes).map_err(|_| AcpiError::Truncated("RSDP"))?;
    let len = r.length.get() as usize;
    let all = bytes
        .get(..len.max(36))
        .ok_or(AcpiError::Truncated("RSDP"))?;
    if !checksum_ok(all) {
        return Err(AcpiError::BadChecksum("RSDP (extended)"));
    }
    Ok((r.xsdt_address.get(), rsdt))
}

/// The header of the table at the start of `bytes`, after checking its
/// signature, length and checksum over the whole table (which `bytes`
/// must hold).
pub fn check_table<'a>(
    bytes: &'a [u8],
    signature: [u8; 4],
    what: &'static str,
) -> Result<&'a [u8], AcpiError> {
    let (h, _) = SdtHeader::read_from_prefix(bytes).map_err(|_| AcpiError::Truncated(what))?;
    if h.signature != signature {
        return Err(AcpiError::BadSignature(what));
    }
    let len = h.length.get() as usize;
    if len < core::mem::size_of::<SdtHeader>() {
        return Err(AcpiError::Truncated(what));
    }
    let table = bytes.get(..len).ok_or(AcpiError::Truncated(what))?;
    if !checksum_ok(table) {
        return Err(AcpiError::BadChecksum(what));
    }
    Ok(table)
}

/// The table addresses an XSDT (8-byte entries) or RSDT (4-byte entries)
/// lists, from a checked table.
pub fn sdt_entries(table: &[u8], entry_size: usize) -> impl Iterator<Item = u64> + '_ {
    table[core::mem::size_of::<SdtHeader>()..]
        .chunks_exact(entry_size)
        .map(|c| {
            let mut b = [0u8; 8];
            b[..c.len()].copy_from_slice(c);
            u64::from_le_bytes(b)
        })
}

/// One processor of the MADT.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MadtCpu {
    /// Its local APIC ID (x2APIC ID for type 9).
    pub apic_id: u32,
    /// Usable now ([`LAPIC_ENABLED`]).
    pub enabled: bool,
    /// May be brought online ([`LAPIC_ONLINE_CAPABLE`]).
    pub online_capable: bool,
}

/// The processors of a checked MADT, in table order (type 0 and type 9
/// entries; other types are skipped). Errors on an entry whose length is
/// 0, too short for its type, or past the table.
pub fn madt_cpus(madt: &[u8]) -> impl Iterator<Item = Result<MadtCpu, AcpiError>> + '_ {
    let mut off = MADT_ENTRIES_OFFSET;
    core::iter::from_fn(move || loop {
        if off >= madt.len() {
            return None;
        }
        let (ty, len) = match (madt.get(off), madt.get(off + 1)) {
            (Some(&t), Some(&l)) => (t, usize::from(l)),
            _ => {
                let at = off;
                off = madt.len();
                return Some(Err(AcpiError::BadEntry(at)));
            }
        };
        let at = off;
        let Some(entry) = madt.get(off..off + len).filter(|_| len >= 2) else {
            off = madt.len();
            return Some(Err(AcpiError::BadEntry(at)));
        };
        off += len;
        let flags_cpu = |apic_id: u32, flags: u32| MadtCpu {
            apic_id,
            enabled: flags & LAPIC_ENABLED != 0,
            online_capable: flags & LAPIC_ONLINE_CAPABLE != 0,
        };
        match ty {
            MADT_LOCAL_APIC => {
                return Some(
                    MadtLocalApic::read_from_bytes(entry)
                        .map(|e| flags_cpu(u32::from(e.apic_id), e.flags.get()))
                        .map_err(|_| AcpiError::BadEntry(at)),
                )
            }
            MADT_LOCAL_X2APIC => {
                return Some(
                    MadtLocalX2Apic::read_from_bytes(entry)
                        .map(|e| flags_cpu(e.x2apic_id.get(), e.flags.get()))
                        .map_err(|_| AcpiError::BadEntry(at)),
                )
            }
            _ => continue,
        }
    })
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::{vec, vec::Vec};

    fn fix_checksum(t: &mut [u8], at: usize) {
        set_checksum(t, at);
    }

    #[test]
    fn checksum_helpers() {
        let mut t = [1u8, 2, 0, 250, 9];
        assert!(!checksum_ok(&t));
        set_checksum(&mut t, 2);
        assert!(checksum_ok(&t));
        assert_eq!(t[2], 0u8.wrapping_sub(6)); // 1 + 2 + 250 + 9 = 262 = 6 mod 256
                                               // Whatever the byte held before, the result is the same.
        let before = t[2];
        t[2] = 0x77;
        set_checksum(&mut t, 2);
        assert_eq!(t[2], before);
        assert_eq!(checksum_byte(&[]), 0);
        assert_eq!(checksum_byte(&[0x80, 0x80]), 0);
        assert_eq!(checksum_byte(&[1]), 0xFF);
        set_checksum(&mut t, 99); // out of range: no panic
        assert!(checksum_ok(&t));
    }

    fn madt(entries: &[&[u8]]) -> Vec<u8> {
        let mut t = vec![0u8; MADT_ENTRIES_OFFSET];
        t[..4].copy_from_slice(&MADT_SIGNATURE);
        for e in entries {
            t.extend_from_slice(e);
        }
        let len = t.len() as u32;
        t[4..8].copy_from_slice(&len.to_le_bytes());
        fix_checksum(&mut t, 9);
        t
    }

    #[test]
    fn madt_lists_local_apic_and_x2apic_entries() {
        let t = madt(&[
            &[0, 8, 0, 0, 1, 0, 0, 0],
            &[1, 12, 0, 0, 0, 0, 0xC0, 0xFE, 0, 0, 0, 0], // an I/O APIC: skipped
            &[0, 8, 1, 2, 0, 0, 0, 0],                    // disabled
            &[0, 8, 2, 4, 2, 0, 0, 0],                    // online capable
            &[9, 16, 0, 0, 0x00, 0x01, 0, 0, 1, 0, 0, 0, 7, 0, 0, 0],
        ]);
        let t = check_table(&t, MADT_SIGNATURE, "MADT").unwrap();
        let cpus: Vec<_> = madt_cpus(t).map(Result::unwrap).collect();
        assert_eq!(cpus.len(), 4);
        assert_eq!((cpus[0].apic_id, cpus[0].enabled), (0, true));
        assert_eq!((cpus[1].apic_id, cpus[1].enabled), (2, false));
        assert!(cpus[2].online_capable && !cpus[2].enabled);
        assert_eq!((cpus[3].apic_id, cpus[3].enabled), (256, true));
    }

    #[test]
    fn malformed_tables_are_errors_not_panics() {
        let mut t = madt(&[&[0, 8, 0, 0, 1, 0, 0, 0]]);
        t[20] ^= 1;
        assert_eq!(
            check_table(&t, MADT_SIGNATURE, "MADT"),
            Err(AcpiError::BadChecksum("MADT"))
        );
        assert_eq!(
            check_table(&t[..30], MADT_SIGNATURE, "MADT"),
            Err(AcpiError::Truncated("MADT"))
        );
        assert_eq!(
            check_table(&t, *b"FACP", "MADT"),
            Err(AcpiError::BadSignature("MADT"))
        );
        // A zero-length entry ends the walk with an error.
        let t = madt(&[&[0, 0, 0, 0, 1, 0, 0, 0]]);
        let r: Vec<_> = madt_cpus(&t).collect();
        assert_eq!(r, [Err(AcpiError::BadEntry(MADT_ENTRIES_OFFSET))]);
        // An entry running past the end.
        let mut t = madt(&[&[0, 8, 0, 0, 1, 0, 0, 0]]);
        t.truncate(t.len() - 2);
        assert_eq!(
            madt_cpus(&t).next(),
            Some(Err(AcpiError::BadEntry(MADT_ENTRIES_OFFSET)))
        );
        for n in 0..64 {
            let b = vec![n as u8; n];
            let _ = parse_rsdp(&b);
            let _ = check_table(&b, MADT_SIGNATURE, "MADT");
            let _ = madt_cpus(&b).count();
        }
    }

    #[test]
    fn rsdp_versions() {
        let mut r = [0u8; 36];
        r[..8].copy_from_slice(&RSDP_SIGNATURE);
        r[16..20].copy_from_slice(&0x1234_5678u32.to_le_bytes());
        fix_checksum(&mut r[..20], 8);
        assert_eq!(parse_rsdp(&r[..20]), Ok((0, 0x1234_5678)));
        r[15] = 2;
        r[20..24].copy_from_slice(&36u32.to_le_bytes());
        r[24..32].copy_from_slice(&0xABCD_0000u64.to_le_bytes());
        fix_checksum(&mut r[..20], 8);
        fix_checksum(&mut r, 32);
        assert_eq!(parse_rsdp(&r), Ok((0xABCD_0000, 0x1234_5678)));
        r[30] ^= 1;
        assert_eq!(
            parse_rsdp(&r),
            Err(AcpiError::BadChecksum("RSDP (extended)"))
        );
    }
}
