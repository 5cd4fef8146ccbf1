//! Guest RAM: one contiguous host range, seen by the guest at GPA 0.
//!
//! All microvisor access to guest memory goes through [`GuestRam`], which
//! checks every guest-physical range against the RAM size first.

/// A guest RAM region.
#[derive(Clone, Copy, Debug)]
pub struct GuestRam {
    hpa: u64,
    size: u64,
}

/// A guest-physical range outside guest RAM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutOfRange;

impl GuestRam {
    /// Claims `size` bytes of host RAM at `hpa` for the guest.
    ///
    /// # Safety
    /// The range must be host RAM that nothing else uses (not the
    /// microvisor's image, stack, tables, nor the boot module), identity
    /// mapped, for the rest of the run.
    pub unsafe fn new(hpa: u64, size: u64) -> Self {
        GuestRam { hpa, size }
    }

    /// Host-physical base.
    pub fn hpa(&self) -> u64 {
        self.hpa
    }

    /// Size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Whether `gpa..gpa+len` lies entirely inside guest RAM.
    pub fn contains(&self, gpa: u64, len: u64) -> bool {
        gpa.checked_add(len).is_some_and(|end| end <= self.size)
    }

    fn host_ptr(&self, gpa: u64, len: u64) -> Result<*mut u8, OutOfRange> {
        if !self.contains(gpa, len) {
            return Err(OutOfRange);
        }
        Ok((self.hpa + gpa) as *mut u8)
    }

    /// Copies `data` to guest-physical `gpa`.
    pub fn write(&self, gpa: u64, data: &[u8]) -> Result<(), OutOfRange> {
        let dst = self.host_ptr(gpa, data.len() as u64)?;
        // SAFETY: `dst..dst+len` is inside the guest RAM region, which the
        // microvisor owns exclusively (`new`'s contract) and which cannot
        // overlap `data` (a microvisor or boot-module buffer). The guest is
        // not running while the microvisor handles an exit.
        unsafe { core::ptr::copy_nonoverlapping(data.as_ptr(), dst, data.len()) };
        Ok(())
    }

    /// Copies guest-physical `gpa..gpa+out.len()` into `out`.
    #[allow(dead_code)] // For personas that read guest structures (next issues).
    pub fn read(&self, gpa: u64, out: &mut [u8]) -> Result<(), OutOfRange> {
        let src = self.host_ptr(gpa, out.len() as u64)?;
        // SAFETY: as for `write`, with the roles swapped.
        unsafe { core::ptr::copy_nonoverlapping(src, out.as_mut_ptr(), out.len()) };
        Ok(())
    }

    /// Zeroes guest-physical `gpa..gpa+len`.
    pub fn zero(&self, gpa: u64, len: u64) -> Result<(), OutOfRange> {
        let dst = self.host_ptr(gpa, len)?;
        // SAFETY: the range is inside guest RAM (checked above).
        unsafe { core::ptr::write_bytes(dst, 0, len as usize) };
        Ok(())
    }
}
