//! pvclock: the per-vCPU time structure shared by Xen and KVM.
//!
//! Xen calls it `struct vcpu_time_info` (`xen/include/public/xen.h`) and
//! places one in every `vcpu_info` of `shared_info`; KVM calls it
//! `struct pvclock_vcpu_time_info` (Linux `asm/pvclock-abi.h`) and writes it
//! where the guest asks through its kvmclock MSR. The layout is the same:
//! 32 bytes, little-endian.
//!
//! The hypervisor updates it like a seqlock: it increments `version` (making
//! it odd), writes the fields, then increments `version` again. A reader
//! takes the version, waits while it is odd, copies the fields, reads the
//! TSC, and retries if the version changed. That loop needs volatile reads
//! and fences and lives with the guest backend; the arithmetic after it is
//! here, as pure functions:
//!
//! ```text
//! ns  = system_time + ((tsc - tsc_timestamp) << tsc_shift) * mul >> 32
//!       (a negative tsc_shift shifts right; the product is 96 bits wide)
//! kHz = ((10^6 << 32) / mul) >> tsc_shift   (left shift if tsc_shift < 0)
//! ```
//!
//! (xen.h, comment in `struct vcpu_time_info`: "Current system time" and
//! "CPU frequency (Hz)"; Linux `pvclock_scale_delta` and `pvclock_tsc_khz`.)

use core::mem::offset_of;
use static_assertions::{assert_eq_size, const_assert_eq};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// `XEN_PVCLOCK_TSC_STABLE_BIT` (xen.h) / `PVCLOCK_TSC_STABLE_BIT`
/// (pvclock-abi.h): the TSC is synchronised across vCPUs, so readings from
/// different vCPUs are mutually monotonic.
pub const FLAG_TSC_STABLE: u8 = 1 << 0;
/// `XEN_PVCLOCK_GUEST_STOPPED` (xen.h) / `PVCLOCK_GUEST_STOPPED`: the guest
/// was paused by the host (watchdogs should not fire).
pub const FLAG_GUEST_STOPPED: u8 = 1 << 1;

/// `struct vcpu_time_info` (xen.h, interface version > 0x040600, which adds
/// `flags`) = `struct pvclock_vcpu_time_info` (pvclock-abi.h).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct VcpuTimeInfo {
    /// Update counter; odd while the hypervisor is writing.
    pub version: u32,
    /// Padding.
    pub pad0: u32,
    /// TSC at the last update of the values below.
    pub tsc_timestamp: u64,
    /// System time in ns at `tsc_timestamp`: the hypervisor's clock (for Xen
    /// its host system time, `NOW()`, which the singleshot timer compares
    /// with; for kvmclock the time since the guest booted).
    pub system_time: u64,
    /// TSC→ns multiplier, a 32.32 fixed-point fraction after the shift.
    pub tsc_to_system_mul: u32,
    /// Power-of-two pre-shift of the TSC delta (negative: right shift).
    pub tsc_shift: i8,
    /// [`FLAG_TSC_STABLE`], [`FLAG_GUEST_STOPPED`].
    pub flags: u8,
    /// Padding.
    pub pad1: [u8; 2],
}
assert_eq_size!(VcpuTimeInfo, [u8; 32]);
const_assert_eq!(offset_of!(VcpuTimeInfo, version), 0);
const_assert_eq!(offset_of!(VcpuTimeInfo, tsc_timestamp), 8);
const_assert_eq!(offset_of!(VcpuTimeInfo, system_time), 16);
const_assert_eq!(offset_of!(VcpuTimeInfo, tsc_to_system_mul), 24);
const_assert_eq!(offset_of!(VcpuTimeInfo, tsc_shift), 28);
const_assert_eq!(offset_of!(VcpuTimeInfo, flags), 29);

impl VcpuTimeInfo {
    /// Whether the hypervisor is in the middle of an update (odd version).
    pub const fn update_in_progress(&self) -> bool {
        self.version & 1 != 0
    }

    /// System time in ns at TSC value `tsc`, from a consistent snapshot.
    pub fn ns_at(&self, tsc: u64) -> u64 {
        self.system_time.wrapping_add(scale_delta(
            tsc.wrapping_sub(self.tsc_timestamp),
            self.tsc_to_system_mul,
            self.tsc_shift,
        ))
    }

    /// TSC frequency in kHz described by this snapshot (0 when `mul` is 0).
    pub fn tsc_khz(&self) -> u64 {
        tsc_khz(self.tsc_to_system_mul, self.tsc_shift)
    }
}

/// Scales a TSC delta to nanoseconds: `(delta << shift) * mul >> 32`, with a
/// right shift for negative `shift` and a 128-bit product (so no overflow
/// for any 64-bit delta; the result is truncated to 64 bits, as Linux's
/// `pvclock_scale_delta` does).
pub fn scale_delta(delta: u64, mul: u32, shift: i8) -> u64 {
    let shifted = if shift < 0 {
        delta
            .checked_shr(u32::from(shift.unsigned_abs()))
            .unwrap_or(0)
    } else {
        delta.checked_shl(u32::from(shift as u8)).unwrap_or(0)
    };
    ((u128::from(shifted) * u128::from(mul)) >> 32) as u64
}

/// TSC frequency in kHz from a multiplier and shift: `(10^6 << 32) / mul`,
/// then shifted the opposite way to `shift` (Linux `pvclock_tsc_khz`).
/// Returns 0 when `mul` is 0 (no clock).
pub fn tsc_khz(mul: u32, shift: i8) -> u64 {
    if mul == 0 {
        return 0;
    }
    let khz = (1_000_000u128 << 32) / u128::from(mul);
    let khz = if shift < 0 {
        khz.checked_shl(u32::from(shift.unsigned_abs()))
            .unwrap_or(0)
    } else {
        khz.checked_shr(u32::from(shift as u8)).unwrap_or(0)
    };
    u64::try_from(khz).unwrap_or(u64::MAX)
}

/// The smallest TSC delta that [`scale_delta`] turns into at least `ns`
/// nanoseconds (the inverse of `scale_delta`, rounded up): a hypervisor
/// converts a pvclock deadline to TSC ticks with it, so that a guest reading
/// the clock when the deadline fires never sees a time before it. `None`
/// when `mul` is 0 or the delta does not fit 64 bits.
pub fn delta_for_ns(ns: u64, mul: u32, shift: i8) -> Option<u64> {
    if mul == 0 {
        return None;
    }
    // The shifted delta s must satisfy s * mul >= ns << 32.
    let mul = u128::from(mul);
    let s = (u128::from(ns) << 32).div_ceil(mul);
    let k = u32::from(shift.unsigned_abs());
    let d = if shift >= 0 {
        // delta << k >= s  <=>  delta >= ceil(s / 2^k)
        if k >= 64 {
            return (ns == 0).then_some(0);
        }
        s.div_ceil(1u128 << k)
    } else {
        // delta >> k >= s  <=>  delta >= s << k
        s.checked_shl(k)?
    };
    u64::try_from(d).ok()
}

/// The multiplier and shift a hypervisor would publish for a TSC of
/// `tsc_khz` (the inverse of [`tsc_khz`], for tests and hypervisor personas):
/// the shift is chosen so that `mul` has its top bit set, as Xen's
/// `set_time_scale` and Linux's `kvm_get_time_scale` do.
/// Returns `None` for 0 kHz.
pub fn time_scale(tsc_khz: u64) -> Option<(u32, i8)> {
    if tsc_khz == 0 {
        return None;
    }
    // ns per tick as a fraction: 10^6 / khz. Normalise the ratio
    // 10^6 / khz into [0.5, 1) by doubling/halving, counting the shift.
    let mut num: u128 = 1_000_000;
    let mut den: u128 = u128::from(tsc_khz);
    let mut shift: i32 = 0;
    while num >= den {
        den <<= 1;
        shift += 1;
    }
    while num * 2 < den {
        num <<= 1;
        shift -= 1;
    }
    let shift = i8::try_from(shift).ok()?;
    let mul = u32::try_from((num << 32) / den).ok()?;
    Some((mul, shift))
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;

    #[test]
    fn scale_delta_by_hand() {
        // mul = 2^31 is 0.5: 1000 ticks << 1 = 2000, * 0.5 = 1000 ns.
        assert_eq!(scale_delta(1000, 1 << 31, 1), 1000);
        // Negative shift: 1000 >> 2 = 250, * 0.5 = 125.
        assert_eq!(scale_delta(1000, 1 << 31, -2), 125);
        // mul = 0xFFFF_FFFF, shift 0: just under 1 ns per tick.
        assert_eq!(scale_delta(1 << 32, u32::MAX, 0), u64::from(u32::MAX));
        // The product needs more than 64 bits: (2^40 << 4) * (2^32 - 1) >> 32.
        let d = 1u64 << 40;
        assert_eq!(
            scale_delta(d, u32::MAX, 4),
            ((u128::from(d << 4) * u128::from(u32::MAX)) >> 32) as u64
        );
        assert_eq!(scale_delta(d, u32::MAX, 4), (1u64 << 44) - (1 << 12));
        // Huge shifts do not panic.
        assert_eq!(scale_delta(5, 1 << 31, -100), 0);
    }

    #[test]
    fn khz_by_hand() {
        // A 2 GHz TSC: 0.5 ns per tick = mul 2^31, shift 0.
        assert_eq!(tsc_khz(1 << 31, 0), 2_000_000);
        // 3 GHz: 1/3 ns per tick = 0.6667 * 2^-1 → mul 0xAAAA_AAAA, shift -1.
        assert_eq!(tsc_khz(0xAAAA_AAAA, -1), 3_000_000);
        // 500 MHz: 2 ns per tick = 0.5 * 2^2 → mul 2^31, shift 2.
        assert_eq!(tsc_khz(1 << 31, 2), 500_000);
        assert_eq!(tsc_khz(0, 0), 0);
    }

    #[test]
    fn time_scale_round_trips() {
        assert_eq!(time_scale(2_000_000), Some((1 << 31, 0)));
        assert_eq!(time_scale(3_000_000), Some((0xAAAA_AAAA, -1)));
        assert_eq!(time_scale(500_000), Some((1 << 31, 2)));
        for khz in [1_000u64, 1_234_567, 2_400_000, 3_700_000, 10_000_000] {
            let (mul, shift) = time_scale(khz).unwrap();
            assert!(mul >= 1 << 31, "{khz}: mul {mul:#x} not normalised");
            let back = tsc_khz(mul, shift);
            assert!(back.abs_diff(khz) <= 1, "{khz} -> {back}");
            // One second of ticks is one second, to within a tick.
            let ns = scale_delta(khz * 1000, mul, shift);
            assert!(ns.abs_diff(1_000_000_000) <= 2, "{khz}: {ns}");
        }
        assert_eq!(time_scale(0), None);
    }

    #[test]
    fn delta_for_ns_is_the_rounded_up_inverse() {
        for khz in [
            1_000u64, 500_000, 1_234_567, 2_459_983, 3_000_000, 10_000_000,
        ] {
            let (mul, shift) = time_scale(khz).unwrap();
            for ns in [0u64, 1, 7, 999, 1_000_000, 20_000_000, 123_456_789_012] {
                let d = delta_for_ns(ns, mul, shift).unwrap();
                assert!(scale_delta(d, mul, shift) >= ns, "{khz} kHz, {ns} ns");
                if d > 0 {
                    assert!(scale_delta(d - 1, mul, shift) < ns, "{khz} kHz, {ns} ns");
                }
            }
        }
        assert_eq!(delta_for_ns(5, 0, 0), None);
    }

    #[test]
    fn snapshot_arithmetic() {
        let t = VcpuTimeInfo {
            version: 2,
            tsc_timestamp: 1_000_000,
            system_time: 5_000,
            tsc_to_system_mul: 1 << 31,
            tsc_shift: 0,
            ..Default::default()
        };
        assert!(!t.update_in_progress());
        assert_eq!(t.ns_at(1_000_000), 5_000);
        assert_eq!(t.ns_at(1_002_000), 6_000);
        assert_eq!(t.tsc_khz(), 2_000_000);
        assert!(VcpuTimeInfo { version: 3, ..t }.update_in_progress());
    }

    #[test]
    fn layout_matches_the_header() {
        let t = VcpuTimeInfo {
            version: 0x0403_0201,
            tsc_timestamp: 0x1111_2222_3333_4444,
            tsc_shift: -1,
            flags: FLAG_TSC_STABLE,
            ..Default::default()
        };
        let b = t.as_bytes();
        assert_eq!(&b[0..4], &[1, 2, 3, 4]);
        assert_eq!(&b[8..16], &0x1111_2222_3333_4444u64.to_le_bytes());
        assert_eq!(b[28], 0xFF);
        assert_eq!(b[29], 1);
    }
}
