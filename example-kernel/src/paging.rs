//! Physical frames and the kernel's own page tables.
//!
//! The kernel replaces bootkit's boot tables with tables built here from
//! frames of the start_info memory map:
//!
//! - 0..4 GiB identity mapped with 2 MiB pages (3..4 GiB uncached, for the
//!   xAPIC page and other MMIO);
//! - one 2 MiB page at [`BAD_MEMORY_PA`] (far beyond RAM; `fault=bad-memory`);
//! - a 4 KiB-page test window at [`TEST_VA`] whose slots the MMU self-tests
//!   remap between frames they own.
//!
//! All raw memory access of the kernel is in this module.

use bootkit::image::Range;
use bootkit::start_info::StartInfo;

/// Page size.
pub const PAGE: u64 = 4096;
/// Physical address the `fault=bad-memory` switch reads (12 GiB).
pub const BAD_MEMORY_PA: u64 = 0x3_0000_0000;
/// Start of the test window (PML4 slot 1, 512 GiB), far from the identity map.
pub const TEST_VA: u64 = 0x80_0000_0000;
/// Slots in the test window (one page table).
pub const TEST_SLOTS: usize = 512;

const P: u64 = 1 << 0;
const RW: u64 = 1 << 1;
const PWT: u64 = 1 << 3;
const PCD: u64 = 1 << 4;
const PS: u64 = 1 << 7;
const G: u64 = 1 << 8;
const IDENTITY_LIMIT: u64 = 4 << 30;
const UNCACHED_FROM: u64 = 3 << 30;

const MAX_RANGES: usize = 32;
const MAX_RESERVED: usize = 8;

/// Hands out zeroed 4 KiB frames of RAM below 4 GiB (identity mapped),
/// never the image, the first MiB, or anything start_info describes.
pub struct FrameAllocator {
    ram: [Range; MAX_RANGES],
    ram_len: usize,
    reserved: [Range; MAX_RESERVED],
    reserved_len: usize,
    next: u64,
    range: usize,
    allocated: u64,
    possible_cpus: usize,
}

impl FrameAllocator {
    /// Sets what [`pvops_backends::Platform::possible_cpus`] reports (the
    /// CPUs the kernel will start, from the MADT).
    pub fn set_possible_cpus(&mut self, cpus: usize) {
        self.possible_cpus = cpus.max(1);
    }

    /// Collects usable RAM from the memory map.
    pub fn new(si: &StartInfo) -> FrameAllocator {
        let mut a = FrameAllocator {
            ram: [Range { start: 0, end: 0 }; MAX_RANGES],
            ram_len: 0,
            reserved: [Range { start: 0, end: 0 }; MAX_RESERVED],
            reserved_len: 0,
            next: 0,
            range: 0,
            allocated: 0,
            possible_cpus: 1,
        };
        for r in si.ram() {
            let start = ((r.start.max(1 << 20)) + PAGE - 1) & !(PAGE - 1);
            let end = r.end.min(IDENTITY_LIMIT) & !(PAGE - 1);
            if start < end && a.ram_len < MAX_RANGES {
                a.ram[a.ram_len] = Range { start, end };
                a.ram_len += 1;
            }
        }
        a.reserve(bootkit::image::image());
        for r in si.reserved() {
            a.reserve(r);
        }
        a.next = a.ram.first().map_or(0, |r| r.start);
        a
    }

    fn reserve(&mut self, r: Range) {
        if !r.is_empty() && self.reserved_len < MAX_RESERVED {
            self.reserved[self.reserved_len] = r;
            self.reserved_len += 1;
        }
    }

    /// Total usable bytes and bytes handed out so far.
    pub fn stats(&self) -> (u64, u64) {
        let total = self.ram[..self.ram_len].iter().map(Range::len).sum();
        (total, self.allocated * PAGE)
    }

    /// A zeroed frame, or `None` when RAM is exhausted.
    pub fn alloc(&mut self) -> Option<u64> {
        while self.range < self.ram_len {
            let r = self.ram[self.range];
            if self.next < r.start {
                self.next = r.start;
            }
            if self.next + PAGE > r.end {
                self.range += 1;
                continue;
            }
            let frame = Range {
                start: self.next,
                end: self.next + PAGE,
            };
            self.next += PAGE;
            if let Some(res) = self.reserved[..self.reserved_len]
                .iter()
                .find(|res| res.overlaps(&frame))
            {
                self.next = (res.end + PAGE - 1) & !(PAGE - 1);
                continue;
            }
            // SAFETY: the frame is RAM below 4 GiB (identity mapped by both
            // the boot and the kernel tables), outside the image and every
            // start_info structure, and handed out exactly once.
            unsafe { core::ptr::write_bytes(frame.start as *mut u8, 0, PAGE as usize) };
            self.allocated += 1;
            return Some(frame.start);
        }
        None
    }
}

impl pvops_backends::Platform for FrameAllocator {
    fn possible_cpus(&self) -> usize {
        self.possible_cpus
    }

    fn alloc_shared_page(&mut self) -> Option<pvops_backends::SharedPage> {
        let phys = self.alloc()?;
        Some(pvops_backends::SharedPage {
            phys,
            // Identity mapped, writable, cacheable, executable.
            virt: core::ptr::NonNull::new(phys as *mut u8)?,
        })
    }

    unsafe fn write_msr_catching_gp(
        &mut self,
        index: u32,
        value: u64,
    ) -> Option<Result<(), pvops_backends::MsrFault>> {
        // SAFETY: forwarded to the caller (`Platform` contract).
        let ok = unsafe { crate::faults::wrmsr_catching_gp(index, value) };
        Some(if ok {
            Ok(())
        } else {
            Err(pvops_backends::MsrFault)
        })
    }

    unsafe fn read_msr_catching_gp(
        &mut self,
        index: u32,
    ) -> Option<Result<u64, pvops_backends::MsrFault>> {
        // SAFETY: forwarded to the caller (`Platform` contract).
        Some(unsafe { crate::faults::rdmsr_catching_gp(index) }.ok_or(pvops_backends::MsrFault))
    }
}

/// A page-table page, accessed by physical (= virtual) address.
#[derive(Clone, Copy)]
struct Table(u64);

impl Table {
    fn set(self, index: usize, value: u64) {
        assert!(index < 512);
        // SAFETY: `self.0` is a page-table frame this module allocated
        // (identity mapped); `index` is within the 512 entries. Volatile so
        // the write is not reordered after the TLB flush that follows.
        unsafe { core::ptr::write_volatile((self.0 as *mut u64).add(index), value) }
    }

    fn get(self, index: usize) -> u64 {
        assert!(index < 512);
        // SAFETY: as in `set`.
        unsafe { core::ptr::read_volatile((self.0 as *const u64).add(index)) }
    }
}

/// The kernel's address space.
pub struct AddressSpace {
    pml4: u64,
    test_pt: Table,
}

/// Why the page tables could not be built.
#[derive(Debug)]
pub struct OutOfFrames;

impl AddressSpace {
    /// Builds the tables (not yet active).
    pub fn build(frames: &mut FrameAllocator) -> Result<AddressSpace, OutOfFrames> {
        let mut alloc = || frames.alloc().map(Table).ok_or(OutOfFrames);
        let pml4 = alloc()?;
        let pdpt = alloc()?;
        for gib in 0..4u64 {
            let pd = alloc()?;
            for i in 0..512u64 {
                let pa = (gib << 30) + (i << 21);
                let cache = if pa >= UNCACHED_FROM { PCD | PWT } else { 0 };
                pd.set(i as usize, pa | P | RW | PS | cache);
            }
            pdpt.set(gib as usize, pd.0 | P | RW);
        }
        // The far-away page for fault=bad-memory.
        let pd_bad = alloc()?;
        pd_bad.set(0, BAD_MEMORY_PA | P | RW | PS | PCD | PWT);
        pdpt.set((BAD_MEMORY_PA >> 30) as usize, pd_bad.0 | P | RW);
        pml4.set(0, pdpt.0 | P | RW);
        // The test window.
        let t_pdpt = alloc()?;
        let t_pd = alloc()?;
        let t_pt = alloc()?;
        t_pd.set(0, t_pt.0 | P | RW);
        t_pdpt.set(0, t_pd.0 | P | RW);
        pml4.set(((TEST_VA >> 39) & 511) as usize, t_pdpt.0 | P | RW);
        Ok(AddressSpace {
            pml4: pml4.0,
            test_pt: t_pt,
        })
    }

    /// Physical address of the PML4 (the CR3 value).
    pub fn cr3(&self) -> u64 {
        self.pml4
    }

    /// Switches to these tables through the pvops table.
    pub fn activate(&self) {
        // SAFETY: the tables identity-map 0..4 GiB like the boot tables,
        // so the running code, its stack, the image and MMIO stay mapped.
        unsafe { pvops::mmu::write_cr3(self.pml4) };
    }

    /// Virtual address of test-window slot `slot`.
    pub fn test_va(slot: usize) -> u64 {
        TEST_VA + (slot as u64) * PAGE
    }

    /// Points test slot `slot` at `frame` (a frame the caller allocated for
    /// the tests), optionally global. No TLB flush: the caller decides.
    pub fn map_test(&self, slot: usize, frame: u64, global: bool) {
        let g = if global { G } else { 0 };
        self.test_pt.set(slot, (frame & !(PAGE - 1)) | P | RW | g);
    }

    /// Removes the mapping of test slot `slot` (no flush).
    pub fn unmap_test(&self, slot: usize) {
        self.test_pt.set(slot, 0);
    }

    /// The raw PTE of a test slot.
    pub fn test_pte(&self, slot: usize) -> u64 {
        self.test_pt.get(slot)
    }

    /// Reads word `index` of test slot `slot`.
    pub fn read_test(&self, slot: usize, index: usize) -> u64 {
        assert!(slot < TEST_SLOTS && index < 512);
        assert!(self.test_pte(slot) & P != 0, "test slot not mapped");
        // SAFETY: the slot is mapped (checked) to a frame owned by the tests;
        // nothing else references test-window memory.
        unsafe { core::ptr::read_volatile((Self::test_va(slot) as *const u64).add(index)) }
    }

    /// Writes word `index` of test slot `slot`.
    pub fn write_test(&self, slot: usize, index: usize, value: u64) {
        assert!(slot < TEST_SLOTS && index < 512);
        assert!(self.test_pte(slot) & P != 0, "test slot not mapped");
        // SAFETY: as in `read_test`.
        unsafe { core::ptr::write_volatile((Self::test_va(slot) as *mut u64).add(index), value) }
    }
}

/// Fills a whole frame with `pattern` through its identity mapping.
pub fn fill_frame(frame: u64, pattern: u64) {
    for i in 0..(PAGE as usize / 8) {
        // SAFETY: callers pass frames from `FrameAllocator` (identity-mapped
        // RAM owned by them).
        unsafe { core::ptr::write_volatile((frame as *mut u64).add(i), pattern) };
    }
}

/// Reads word `index` of a frame through its identity mapping.
pub fn read_frame(frame: u64, index: usize) -> u64 {
    assert!(index < 512);
    // SAFETY: as in `fill_frame`.
    unsafe { core::ptr::read_volatile((frame as *const u64).add(index)) }
}
