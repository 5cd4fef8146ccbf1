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
/// mapped or a table lies outside guest RAM.
pub fn translate(mem: &GuestRam, cr0: u64, cr3: u64, gva: u64) -> Option<u64> {
    if cr0 & CR0_PG == 0 {
        return Some(gva);
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
