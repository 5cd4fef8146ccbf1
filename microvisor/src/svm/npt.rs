//! Nested page tables: guest-physical 0..size mapped onto one contiguous
//! host range with 2 MiB pages. Everything else faults (#NPF), so the guest
//! can reach no host memory but its own RAM.
//!
//! Format: the host's long-mode 4-level tables (APM vol. 2, 15.25.5 "Nested
//! Table Walk": the nested walk uses the host's paging mode). QEMU walks
//! nested tables as user accesses, so every entry needs U=1 as well as P and
//! RW (see docs/microvisor.md).

use crate::once::phys;

const P: u64 = 1 << 0;
const RW: u64 = 1 << 1;
const US: u64 = 1 << 2;
const PS: u64 = 1 << 7;
const FLAGS: u64 = P | RW | US;
/// Size of one large page.
pub const PAGE_2M: u64 = 2 << 20;

#[derive(Clone, Copy)]
#[repr(C, align(4096))]
struct Table([u64; 512]);

/// The three table pages needed for up to 1 GiB of guest RAM.
#[repr(C, align(4096))]
pub struct Npt {
    pml4: Table,
    pdpt: Table,
    pd: Table,
}

impl Default for Npt {
    fn default() -> Self {
        Self::new()
    }
}

impl Npt {
    /// Empty tables.
    pub const fn new() -> Self {
        Npt {
            pml4: Table([0; 512]),
            pdpt: Table([0; 512]),
            pd: Table([0; 512]),
        }
    }

    /// Maps GPA `0..size` to HPA `hpa..hpa + size`; both `hpa` and `size`
    /// must be 2 MiB multiples and `size` at most 1 GiB. Returns N_CR3.
    pub fn map_ram(&mut self, hpa: u64, size: u64) -> Result<u64, &'static str> {
        if !hpa.is_multiple_of(PAGE_2M)
            || !size.is_multiple_of(PAGE_2M)
            || size == 0
            || size > (1 << 30)
        {
            return Err("guest RAM must be 2 MiB aligned and at most 1 GiB");
        }
        self.pml4 = Table([0; 512]);
        self.pdpt = Table([0; 512]);
        self.pd = Table([0; 512]);
        for i in 0..(size / PAGE_2M) as usize {
            self.pd.0[i] = (hpa + i as u64 * PAGE_2M) | FLAGS | PS;
        }
        self.pdpt.0[0] = phys(&self.pd) | FLAGS;
        self.pml4.0[0] = phys(&self.pdpt) | FLAGS;
        Ok(phys(&self.pml4))
    }
}
