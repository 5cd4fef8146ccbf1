//! The guest's ACPI tables when it has more than one vCPU: an RSDP
//! (revision 2), an XSDT listing one table, and a MADT with one Processor
//! Local APIC entry per vCPU (APIC IDs 0..N-1, all enabled). Layouts and
//! checksums from `pvops_abi::acpi` (ACPI 6.5, 5.2.5.3, 5.2.6, 5.2.8,
//! 5.2.12, 5.2.12.2). The PVH `start_info.rsdp_paddr` points at the RSDP.
//! Pure: builds the bytes, the loader writes them.

use crate::config::MAX_VCPUS;
use pvops_abi::acpi::{
    set_checksum, MadtFixed, MadtLocalApic, Rsdp, SdtHeader, LAPIC_ENABLED, MADT_ENTRIES_OFFSET,
    MADT_LOCAL_APIC, MADT_SIGNATURE, RSDP_SIGNATURE, RSDP_V1_LEN, XSDT_SIGNATURE,
};
use zerocopy::little_endian::{U32, U64};
use zerocopy::IntoBytes;

/// Offset of the XSDT from the RSDP.
const XSDT_OFFSET: usize = 0x40;
/// Offset of the MADT from the RSDP.
const MADT_OFFSET: usize = 0x80;
const HDR: usize = core::mem::size_of::<SdtHeader>();
const XSDT_LEN: usize = HDR + 8;
const ENTRY_LEN: usize = core::mem::size_of::<MadtLocalApic>();
/// Bytes of the tables, at most (8 vCPUs).
pub const LEN: usize = MADT_OFFSET + MADT_ENTRIES_OFFSET + MAX_VCPUS * ENTRY_LEN;
/// The local APIC's MMIO base the MADT states (the architectural default,
/// Intel SDM vol. 3A 11.4.1; the guest uses x2APIC MSRs).
const LOCAL_APIC_ADDRESS: u32 = 0xFEE0_0000;
// The loader puts them at ACPI_GPA, before the end of the reserved boot
// information (0x4000).
const _: () = assert!(super::loader::ACPI_GPA as usize + LEN <= 0x4000);
const OEM_ID: [u8; 6] = *b"PVOPS ";
const OEM_TABLE_ID: [u8; 8] = *b"MICROV  ";

fn header(signature: [u8; 4], len: usize, revision: u8) -> SdtHeader {
    SdtHeader {
        signature,
        length: U32::new(len as u32),
        revision,
        checksum: 0,
        oem_id: OEM_ID,
        oem_table_id: OEM_TABLE_ID,
        oem_revision: U32::new(1),
        creator_id: U32::new(u32::from_le_bytes(*b"PVMV")),
        creator_revision: U32::new(1),
    }
}

/// The tables for `vcpus` vCPUs (clamped to 1..=[`MAX_VCPUS`]) placed at
/// guest-physical `base`: the bytes (the first [`LEN`] or fewer used) and
/// how many are used. The RSDP is at `base`.
pub fn build(base: u64, vcpus: usize) -> ([u8; LEN], usize) {
    let n = vcpus.clamp(1, MAX_VCPUS);
    let mut t = [0u8; LEN];
    let madt_len = MADT_ENTRIES_OFFSET + n * ENTRY_LEN;

    let rsdp = Rsdp {
        signature: RSDP_SIGNATURE,
        checksum: 0,
        oem_id: OEM_ID,
        revision: 2,
        // No RSDT: a revision-2 RSDP's readers take the XSDT.
        rsdt_address: U32::new(0),
        length: U32::new(core::mem::size_of::<Rsdp>() as u32),
        xsdt_address: U64::new(base + XSDT_OFFSET as u64),
        extended_checksum: 0,
        reserved: [0; 3],
    };
    let rlen = core::mem::size_of::<Rsdp>();
    t[..rlen].copy_from_slice(rsdp.as_bytes());
    set_checksum(&mut t[..RSDP_V1_LEN], 8);
    set_checksum(&mut t[..rlen], 32);

    let x = &mut t[XSDT_OFFSET..XSDT_OFFSET + XSDT_LEN];
    x[..HDR].copy_from_slice(header(XSDT_SIGNATURE, XSDT_LEN, 1).as_bytes());
    x[HDR..].copy_from_slice(&(base + MADT_OFFSET as u64).to_le_bytes());
    set_checksum(x, 9);

    let m = &mut t[MADT_OFFSET..MADT_OFFSET + madt_len];
    // Revision 1: the original layout, all these entries need.
    m[..HDR].copy_from_slice(header(MADT_SIGNATURE, madt_len, 1).as_bytes());
    let fixed = MadtFixed {
        local_apic_address: U32::new(LOCAL_APIC_ADDRESS),
        // No PCAT_COMPAT: the guest's PIC ports read all ones.
        flags: U32::new(0),
    };
    m[HDR..MADT_ENTRIES_OFFSET].copy_from_slice(fixed.as_bytes());
    for i in 0..n {
        let e = MadtLocalApic {
            entry_type: MADT_LOCAL_APIC,
            length: ENTRY_LEN as u8,
            acpi_processor_uid: i as u8,
            apic_id: i as u8,
            flags: U32::new(LAPIC_ENABLED),
        };
        let at = MADT_ENTRIES_OFFSET + i * ENTRY_LEN;
        m[at..at + ENTRY_LEN].copy_from_slice(e.as_bytes());
    }
    set_checksum(m, 9);
    (t, MADT_OFFSET + madt_len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use pvops_abi::acpi::{check_table, madt_cpus, parse_rsdp, sdt_entries};

    /// Reads the tables back the way a guest kernel does.
    fn cpus_of(base: u64, bytes: &[u8]) -> Vec<u32> {
        let (xsdt, rsdt) = parse_rsdp(bytes).unwrap();
        assert_eq!(rsdt, 0);
        let xo = (xsdt - base) as usize;
        let x = check_table(&bytes[xo..], XSDT_SIGNATURE, "XSDT").unwrap();
        let tables: Vec<u64> = sdt_entries(x, 8).collect();
        assert_eq!(tables.len(), 1);
        let mo = (tables[0] - base) as usize;
        let m = check_table(&bytes[mo..], MADT_SIGNATURE, "MADT").unwrap();
        madt_cpus(m)
            .map(|c| {
                let c = c.unwrap();
                assert!(c.enabled);
                c.apic_id
            })
            .collect()
    }

    #[test]
    fn tables_list_every_vcpu() {
        for n in 1..=MAX_VCPUS {
            let (t, len) = build(0x3400, n);
            assert_eq!(len, MADT_OFFSET + MADT_ENTRIES_OFFSET + 8 * n);
            let ids = cpus_of(0x3400, &t[..len]);
            assert_eq!(ids, (0..n as u32).collect::<Vec<_>>());
        }
        // Out-of-range counts are clamped, never a panic.
        assert_eq!(cpus_of(0x3400, &build(0x3400, 0).0).len(), 1);
        assert_eq!(cpus_of(0x3400, &build(0x3400, 99).0).len(), MAX_VCPUS);
    }
}
