//! The ordered TSC read the clock paths share, and the plausibility check
//! for TSC frequencies hypervisors state.

/// `lfence; rdtsc`: the TSC read cannot run ahead of the loads before it
/// (Linux `rdtsc_ordered()`), as the pvclock and the reference TSC page
/// sequence protocols need (review finding F5).
#[cfg(any(feature = "xen", feature = "hyperv", feature = "kvm"))]
pub(crate) fn ordered() -> u64 {
    // SAFETY: LFENCE and RDTSC have no memory effects; the kernel runs at
    // CPL 0 so RDTSC cannot fault on CR4.TSD.
    unsafe {
        core::arch::x86_64::_mm_lfence();
        core::arch::x86_64::_rdtsc()
    }
}

/// The lowest TSC frequency a hypervisor's statement is believed at: 10 MHz.
/// No x86-64 CPU has a slower TSC; a value below is a lie or junk (a
/// hypervisor that fills a leaf it does not maintain), and a clock scaled
/// by it would run thousands of times too fast.
pub const MIN_PLAUSIBLE_KHZ: u64 = 10_000;
/// The highest TSC frequency believed: 100 GHz (today's CPUs stay below
/// 6 GHz; a value above would stall the clock).
pub const MAX_PLAUSIBLE_KHZ: u64 = 100_000_000;

/// Whether a TSC frequency a hypervisor stated (timing leaf, frequency MSR,
/// pvclock scale, GETHZ) is plausible enough to scale the clock by: within
/// [`MIN_PLAUSIBLE_KHZ`]..=[`MAX_PLAUSIBLE_KHZ`]. Backends ignore an
/// implausible value with a logged reason, as they ignore a zero one.
pub fn plausible_khz(khz: u64) -> bool {
    (MIN_PLAUSIBLE_KHZ..=MAX_PLAUSIBLE_KHZ).contains(&khz)
}

#[cfg(test)]
mod tests {
    #[test]
    fn plausible_range() {
        use super::plausible_khz;
        assert!(!plausible_khz(0) && !plausible_khz(1) && !plausible_khz(9_999));
        assert!(plausible_khz(10_000) && plausible_khz(2_500_000));
        assert!(plausible_khz(100_000_000) && !plausible_khz(u64::from(u32::MAX)));
    }
}
