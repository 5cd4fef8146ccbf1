//! The ordered TSC read the clock paths share.

/// `lfence; rdtsc`: the TSC read cannot run ahead of the loads before it
/// (Linux `rdtsc_ordered()`), as the pvclock and the reference TSC page
/// sequence protocols need (review finding F5).
pub(crate) fn ordered() -> u64 {
    // SAFETY: LFENCE and RDTSC have no memory effects; the kernel runs at
    // CPL 0 so RDTSC cannot fault on CR4.TSD.
    unsafe {
        core::arch::x86_64::_mm_lfence();
        core::arch::x86_64::_rdtsc()
    }
}
