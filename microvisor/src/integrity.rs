//! The microvisor's integrity check: checksums of the memory no guest may
//! ever change, taken before the first VMRUN and again at the end of the
//! run (`@@ mv.integrity`, docs/hostile-guests.md).
//!
//! Protected regions: the microvisor's text and read-only data, the host
//! identity-map page tables, the nested page tables, the I/O and MSR
//! permission maps, and free host RAM right above and below guest RAM
//! (guard ranges: an off-by-one copy past either end of guest RAM lands
//! there). Mutable microvisor state (stack, VMCB, counters, persona state)
//! changes legitimately and is not checksummed; the VMCB's intercept
//! settings are compared field by field instead ([`crate::vcpu::Vcpu`]).
//!
//! Page tables are checksummed with each entry's Accessed and Dirty bits
//! masked: the processor sets them on its own walks (host tables) and
//! nested walks (NPT) (AMD APM vol. 2, 5.4.1 and 15.25.5; Intel SDM vol.
//! 3A, 4.8), so they change without anyone writing an entry.
//!
//! The checksum is FNV-1a over little-endian 64-bit words: each step
//! `h = (h ^ w) * P` is a bijection of `h` for a fixed word, so changing any
//! single word always changes the result; several changed words collide
//! with probability about 2^-64.

/// Most regions tracked.
pub const MAX_REGIONS: usize = 8;

/// FNV-1a 64-bit offset basis and prime (FNV reference, Fowler/Noll/Vo).
const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// How a region's words are read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Every bit counts.
    Bytes,
    /// Page-table entries: the Accessed (bit 5) and Dirty (bit 6) bits are
    /// ignored.
    PageTable,
}

/// Accessed and Dirty bits of a page-table entry.
const ACCESSED_DIRTY: u64 = (1 << 5) | (1 << 6);

/// One protected range of identity-mapped host memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Region {
    /// Name in the report.
    pub name: &'static str,
    /// How its words are read.
    pub kind: Kind,
    /// First byte (host-physical = host-virtual).
    pub start: u64,
    /// Length in bytes (a multiple of 8).
    pub len: u64,
    /// Checksum taken when the region was added.
    pub baseline: u64,
}

/// Checksum of `len` bytes at `start`, read as 64-bit words (a tail shorter
/// than a word is ignored; regions are page-granular).
///
/// # Safety
/// `start..start+len` must be readable memory for the duration of the call.
/// Reads are volatile and go through raw pointers, so memory others hold
/// mutable references to (page tables, permission maps) may be read.
pub unsafe fn checksum(start: u64, len: u64, kind: Kind) -> u64 {
    let mask = match kind {
        Kind::Bytes => !0,
        Kind::PageTable => !ACCESSED_DIRTY,
    };
    let mut h = FNV_OFFSET;
    let words = len / 8;
    for i in 0..words {
        let p = (start + i * 8) as *const u64;
        // SAFETY: inside the range the caller vouches for; an unaligned
        // start is read unaligned.
        let w = unsafe { p.read_unaligned() } & mask;
        h = (h ^ w).wrapping_mul(FNV_PRIME);
    }
    h
}

/// The protected regions and their baselines.
#[derive(Clone, Copy, Debug)]
pub struct Protected {
    regions: [Region; MAX_REGIONS],
    len: usize,
}

impl Default for Protected {
    fn default() -> Self {
        Self::new()
    }
}

/// The result of a check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Check {
    /// Regions checked.
    pub regions: usize,
    /// Bit `i` set: region `i` changed.
    pub changed: u32,
}

impl Check {
    /// Whether nothing changed.
    pub fn unchanged(&self) -> bool {
        self.changed == 0
    }
}

impl Protected {
    /// No regions.
    pub const fn new() -> Self {
        Protected {
            regions: [Region {
                name: "",
                kind: Kind::Bytes,
                start: 0,
                len: 0,
                baseline: 0,
            }; MAX_REGIONS],
            len: 0,
        }
    }

    /// Adds a region and takes its baseline; false when the table is full
    /// or the region is empty.
    ///
    /// # Safety
    /// `start..start+len` must stay readable memory for the rest of the run.
    pub unsafe fn add(&mut self, name: &'static str, kind: Kind, start: u64, len: u64) -> bool {
        if self.len == MAX_REGIONS || len < 8 {
            return false;
        }
        // SAFETY: forwarded from the caller.
        let baseline = unsafe { checksum(start, len, kind) };
        self.regions[self.len] = Region {
            name,
            kind,
            start,
            len,
            baseline,
        };
        self.len += 1;
        true
    }

    /// The regions, in the order added.
    pub fn regions(&self) -> &[Region] {
        &self.regions[..self.len]
    }

    /// The region called `name`.
    pub fn find(&self, name: &str) -> Option<Region> {
        self.regions().iter().copied().find(|r| r.name == name)
    }

    /// Checksums every region again and compares with its baseline.
    pub fn check(&self) -> Check {
        let mut changed = 0;
        for (i, r) in self.regions().iter().enumerate() {
            // SAFETY: `add`'s contract: the range stays readable.
            if unsafe { checksum(r.start, r.len, r.kind) } != r.baseline {
                changed |= 1 << i;
            }
        }
        Check {
            regions: self.len,
            changed,
        }
    }

    /// Names of the regions `check` found changed, for the report.
    pub fn changed_names(&self, c: Check) -> impl Iterator<Item = &'static str> + '_ {
        self.regions()
            .iter()
            .enumerate()
            .filter(move |(i, _)| c.changed & (1 << i) != 0)
            .map(|(_, r)| r.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_changed_word_is_caught() {
        let mut buf = vec![0x5a5a_5a5a_5a5a_5a5au64; 512];
        let start = buf.as_mut_ptr() as u64;
        let mut p = Protected::new();
        // SAFETY: the test's own buffer, alive until the end of the test.
        assert!(unsafe { p.add("buf", Kind::Bytes, start, 4096) });
        // SAFETY: as above.
        assert!(unsafe { p.add("half", Kind::Bytes, start + 2048, 2048) });
        assert!(p.check().unchanged());
        for i in [0usize, 1, 255, 256, 511] {
            let old = buf[i];
            buf[i] ^= 1 << (i % 64);
            let c = p.check();
            assert!(!c.unchanged(), "word {i} changed unnoticed");
            let names: Vec<_> = p.changed_names(c).collect();
            if i < 256 {
                assert_eq!(names, ["buf"]);
            } else {
                assert_eq!(names, ["buf", "half"]);
            }
            buf[i] = old;
            assert!(p.check().unchanged());
        }
        // Swapping two words is caught too (order matters).
        buf.swap(3, 4);
        buf[3] = 1;
        assert!(!p.check().unchanged());
    }

    #[test]
    fn page_tables_ignore_accessed_and_dirty_only() {
        let mut pt = vec![0x0020_0000u64 | 0x87; 512];
        let start = pt.as_mut_ptr() as u64;
        let mut p = Protected::new();
        // SAFETY: the test's own buffer, alive until the end of the test.
        assert!(unsafe { p.add("pt", Kind::PageTable, start, 4096) });
        pt[7] |= ACCESSED_DIRTY;
        assert!(p.check().unchanged(), "A/D bits are the CPU's");
        pt[7] |= 1 << 63;
        assert!(!p.check().unchanged(), "NX is an edit");
        pt[7] &= !(1 << 63);
        pt[9] ^= 0x0020_0000;
        assert!(!p.check().unchanged(), "a frame change is an edit");
    }

    #[test]
    fn table_limits() {
        let buf = [0u64; 8];
        let mut p = Protected::new();
        let start = buf.as_ptr() as u64;
        // SAFETY: the test's own buffer.
        assert!(!unsafe { p.add("empty", Kind::Bytes, start, 0) });
        for _ in 0..MAX_REGIONS {
            // SAFETY: as above.
            assert!(unsafe { p.add("b", Kind::Bytes, start, 64) });
        }
        // SAFETY: as above.
        assert!(!unsafe { p.add("one-too-many", Kind::Bytes, start, 64) });
        assert_eq!(p.check().regions, MAX_REGIONS);
        assert!(p.find("b").is_some() && p.find("x").is_none());
    }
}
