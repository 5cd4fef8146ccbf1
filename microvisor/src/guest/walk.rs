//! Guest-virtual to guest-physical translation through the guest's own page
//! tables, for hypercall arguments that are guest-virtual (Xen's ABI).
//!
//! Four-level long-mode paging only (AMD APM vol. 2, 5.3; Intel SDM vol. 3A,
//! 4.5), with 1 GiB and 2 MiB pages; with paging off, addresses are
//! physical. Every table read is bounds-checked against guest RAM, so a
//! malicious guest gets `None`, never a microvisor fault.

use super::mem::GuestRam;

const PRESENT: u64 = 1;
const LARGE: u64 = 1 << 7;
const ADDR_MASK: u64 = 0x000F_FFFF_FFFF_F000;
const CR0_PG: u64 = 1 << 31;

/// Translates `gva` under the guest's CR0 and CR3, or `None` if it is not
/// mapped, not canonical, or a table lies outside guest RAM.
pub fn translate(mem: &GuestRam, cr0: u64, cr3: u64, gva: u64) -> Option<u64> {
    if cr0 & CR0_PG == 0 {
        return Some(gva);
    }
    // Bits 63:48 must copy bit 47 (AMD APM vol. 2, 5.3.1 "Canonical
    // Address Form"; Intel SDM vol. 1, 3.3.7.1): the guest's own accesses
    // to any other address fault, so must a hypercall's. (The walk below
    // looks only at bits 47:0, so without this a non-canonical pointer
    // would alias a canonical one.)
    if ((gva as i64) << 16 >> 16) as u64 != gva {
        return None;
    }
    let mut table = cr3 & ADDR_MASK;
    for level in (0..4).rev() {
        let shift = 12 + 9 * level;
        let index = (gva >> shift) & 0x1FF;
        let mut raw = [0u8; 8];
        mem.read(table + index * 8, &mut raw).ok()?;
        let entry = u64::from_le_bytes(raw);
        if entry & PRESENT == 0 {
            return None;
        }
        if level == 0 || (entry & LARGE != 0 && level <= 2) {
            let page_mask = (1u64 << shift) - 1;
            return Some((entry & ADDR_MASK & !page_mask) | (gva & page_mask));
        }
        table = entry & ADDR_MASK;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_canonical_addresses_do_not_alias_canonical_ones() {
        let mut ram = vec![0u64; 4 * 4096 / 8];
        // SAFETY: the test's own buffer stands in for guest RAM (on the
        // host the "host-physical" address is the buffer's address).
        let mem = unsafe { GuestRam::new(ram.as_mut_ptr() as u64, 4 * 4096) };
        let entry = |gpa: u64, v: u64| mem.write(gpa, &v.to_le_bytes()).unwrap();
        // PML4 at 0x1000 -> PDPT at 0x2000 -> PD at 0x3000; PD[0]: a 2 MiB
        // page at GPA 0x20_0000.
        entry(0x1000, 0x2000 | PRESENT);
        entry(0x2000, 0x3000 | PRESENT);
        entry(0x3000, 0x20_0000 | PRESENT | LARGE);
        let t = |gva| translate(&mem, CR0_PG, 0x1000, gva);
        assert_eq!(t(0x1234), Some(0x20_1234));
        assert_eq!(t(0x8000_0000_0000_1234), None);
        assert_eq!(t(0x0001_0000_0000_1234), None);
        assert_eq!(t(0xFFFF_0000_0000_1234), None);
        // Canonical but unmapped (PML4 entry 256).
        assert_eq!(t(0xFFFF_8000_0000_1234), None);
        assert_eq!(
            translate(&mem, 0, 0x1000, 0x8000_0000_0000_1234),
            Some(0x8000_0000_0000_1234)
        );
    }
}
