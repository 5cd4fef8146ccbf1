//! KVM's paravirtual interface for x86 guests.
//!
//! Sources (Linux kernel documentation, `Documentation/virt/kvm/x86/`):
//! - `cpuid.rst`: the signature leaf `KVM_CPUID_SIGNATURE` and the feature
//!   leaf `KVM_CPUID_FEATURES` (base + 1: EAX feature bits, EDX hints), at
//!   0x4000_0000 or, when another interface is stacked below (QEMU's Hyper-V
//!   enlightenments), at 0x4000_0100;
//! - `msr.rst`: the custom MSRs 0x4b56_4d00.. ("KVM\0" in ASCII),
//!   `struct pvclock_vcpu_time_info` (in [`crate::pvclock`]), the steal-time
//!   area and the PV EOI word;
//! - `hypercalls.rst`: the hypercall ABI (number in RAX, up to four
//!   arguments in RBX, RCX, RDX, RSI, result in RAX; `VMCALL` on Intel,
//!   `VMMCALL` on AMD, either patched by KVM), the numbers and `KVM_ENOSYS`.
//!
//! Only plain data and pure decoding live here; the guest backend
//! (`backends/src/kvm`) and the microvisor's `kvm` persona share it.

use core::mem::offset_of;
use static_assertions::{assert_eq_size, const_assert_eq};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// "KVMKVMKVM\0\0\0": EBX, ECX, EDX of the signature leaf (cpuid.rst).
pub const SIGNATURE: &[u8; 12] = b"KVMKVMKVM\0\0\0";

/// Offset of `KVM_CPUID_FEATURES` from the signature leaf (cpuid.rst:
/// 0x4000_0001 relative to the base 0x4000_0000).
pub const LEAF_FEATURES: u32 = 1;

/// `KVM_CPUID_FEATURES` EAX (cpuid.rst, "flag" table).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Features(pub u32);

impl Features {
    /// Bit 0 `KVM_FEATURE_CLOCKSOURCE`: kvmclock at MSRs 0x11/0x12 (old).
    pub const CLOCKSOURCE: Features = Features(1 << 0);
    /// Bit 1 `KVM_FEATURE_NOP_IO_DELAY`: "not necessary to perform delays
    /// on PIO operations".
    pub const NOP_IO_DELAY: Features = Features(1 << 1);
    /// Bit 2 `KVM_FEATURE_MMU_OP`: deprecated.
    pub const MMU_OP: Features = Features(1 << 2);
    /// Bit 3 `KVM_FEATURE_CLOCKSOURCE2`: kvmclock at 0x4b56_4d00/01.
    pub const CLOCKSOURCE2: Features = Features(1 << 3);
    /// Bit 4 `KVM_FEATURE_ASYNC_PF`: async page faults (MSR 0x4b56_4d02).
    pub const ASYNC_PF: Features = Features(1 << 4);
    /// Bit 5 `KVM_FEATURE_STEAL_TIME`: steal time (MSR 0x4b56_4d03).
    pub const STEAL_TIME: Features = Features(1 << 5);
    /// Bit 6 `KVM_FEATURE_PV_EOI`: paravirtual end of interrupt (MSR
    /// 0x4b56_4d04).
    pub const PV_EOI: Features = Features(1 << 6);
    /// Bit 7 `KVM_FEATURE_PV_UNHALT`: a halted vCPU can be woken by
    /// `KVM_HC_KICK_CPU` (PV spinlocks).
    pub const PV_UNHALT: Features = Features(1 << 7);
    /// Bit 9 `KVM_FEATURE_PV_TLB_FLUSH`: TLB flushes of preempted vCPUs
    /// through the steal-time `preempted` byte.
    pub const PV_TLB_FLUSH: Features = Features(1 << 9);
    /// Bit 10 `KVM_FEATURE_ASYNC_PF_VMEXIT`: async PF delivered as #PF
    /// vmexits (nested).
    pub const ASYNC_PF_VMEXIT: Features = Features(1 << 10);
    /// Bit 11 `KVM_FEATURE_PV_SEND_IPI`: `KVM_HC_SEND_IPI`.
    pub const PV_SEND_IPI: Features = Features(1 << 11);
    /// Bit 12 `KVM_FEATURE_POLL_CONTROL`: host-side halt polling can be
    /// turned off (MSR 0x4b56_4d05).
    pub const POLL_CONTROL: Features = Features(1 << 12);
    /// Bit 13 `KVM_FEATURE_PV_SCHED_YIELD`: `KVM_HC_SCHED_YIELD`.
    pub const PV_SCHED_YIELD: Features = Features(1 << 13);
    /// Bit 14 `KVM_FEATURE_ASYNC_PF_INT`: async PF "page ready" as an
    /// interrupt (MSRs 0x4b56_4d06/07).
    pub const ASYNC_PF_INT: Features = Features(1 << 14);
    /// Bit 15 `KVM_FEATURE_MSI_EXT_DEST_ID`: 15-bit MSI destination IDs.
    pub const MSI_EXT_DEST_ID: Features = Features(1 << 15);
    /// Bit 16 `KVM_FEATURE_HC_MAP_GPA_RANGE`: `KVM_HC_MAP_GPA_RANGE`.
    pub const HC_MAP_GPA_RANGE: Features = Features(1 << 16);
    /// Bit 17 `KVM_FEATURE_MIGRATION_CONTROL`: MSR 0x4b56_4d08.
    pub const MIGRATION_CONTROL: Features = Features(1 << 17);
    /// Bit 24 `KVM_FEATURE_CLOCKSOURCE_STABLE_BIT`: "host will warn if no
    /// guest-side per-cpu warps are expected in kvmclock" — the
    /// `PVCLOCK_TSC_STABLE_BIT` of the pvclock flags may be trusted.
    pub const CLOCKSOURCE_STABLE_BIT: Features = Features(1 << 24);

    /// Every named bit with its cpuid.rst name, for reports.
    pub const NAMES: [(Features, &'static str); 18] = [
        (Features::CLOCKSOURCE, "clocksource"),
        (Features::NOP_IO_DELAY, "nop-io-delay"),
        (Features::MMU_OP, "mmu-op"),
        (Features::CLOCKSOURCE2, "clocksource2"),
        (Features::ASYNC_PF, "async-pf"),
        (Features::STEAL_TIME, "steal-time"),
        (Features::PV_EOI, "pv-eoi"),
        (Features::PV_UNHALT, "pv-unhalt"),
        (Features::PV_TLB_FLUSH, "pv-tlb-flush"),
        (Features::ASYNC_PF_VMEXIT, "async-pf-vmexit"),
        (Features::PV_SEND_IPI, "pv-send-ipi"),
        (Features::POLL_CONTROL, "poll-control"),
        (Features::PV_SCHED_YIELD, "pv-sched-yield"),
        (Features::ASYNC_PF_INT, "async-pf-int"),
        (Features::MSI_EXT_DEST_ID, "msi-ext-dest-id"),
        (Features::HC_MAP_GPA_RANGE, "hc-map-gpa-range"),
        (Features::MIGRATION_CONTROL, "migration-control"),
        (Features::CLOCKSOURCE_STABLE_BIT, "clocksource-stable-bit"),
    ];

    /// Whether every bit of `other` is set.
    pub const fn contains(self, other: Features) -> bool {
        self.0 & other.0 == other.0
    }

    /// The union of two sets.
    pub const fn union(self, other: Features) -> Features {
        Features(self.0 | other.0)
    }

    /// This set without the bits of `other`.
    pub const fn without(self, other: Features) -> Features {
        Features(self.0 & !other.0)
    }
}

/// `KVM_CPUID_FEATURES` EDX: hints (cpuid.rst, "hint" table).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Hints(pub u32);

impl Hints {
    /// Bit 0 `KVM_HINTS_REALTIME`: "guest checks this feature bit to
    /// determine that vCPUs are never preempted for an unlimited time
    /// allowing optimizations". Linux's kvm.c then uses neither PV TLB
    /// flush nor PV spinlocks, and prefers native halt to PV sched yield.
    pub const REALTIME: Hints = Hints(1 << 0);

    /// Whether every bit of `other` is set.
    pub const fn contains(self, other: Hints) -> bool {
        self.0 & other.0 == other.0
    }
}

/// The custom MSRs (msr.rst).
pub mod msr {
    /// `MSR_KVM_WALL_CLOCK` (old, under `KVM_FEATURE_CLOCKSOURCE`).
    pub const WALL_CLOCK: u32 = 0x11;
    /// `MSR_KVM_SYSTEM_TIME` (old, under `KVM_FEATURE_CLOCKSOURCE`).
    pub const SYSTEM_TIME: u32 = 0x12;
    /// `MSR_KVM_WALL_CLOCK_NEW`: write the GPA of a `pvclock_wall_clock`
    /// (12 bytes, 4-byte aligned); KVM fills it once per write.
    pub const WALL_CLOCK_NEW: u32 = 0x4b56_4d00;
    /// `MSR_KVM_SYSTEM_TIME_NEW`: GPA of a 4-byte aligned
    /// `pvclock_vcpu_time_info` | bit 0 enable.
    pub const SYSTEM_TIME_NEW: u32 = 0x4b56_4d01;
    /// `MSR_KVM_ASYNC_PF_EN`.
    pub const ASYNC_PF_EN: u32 = 0x4b56_4d02;
    /// `MSR_KVM_STEAL_TIME`: GPA of a 64-byte aligned `kvm_steal_time`
    /// | bit 0 enable; bits 5:1 reserved (must be 0).
    pub const STEAL_TIME: u32 = 0x4b56_4d03;
    /// `MSR_KVM_PV_EOI_EN`: GPA of a 4-byte aligned, zeroed 4-byte area
    /// | bit 0 enable; bit 1 reserved.
    pub const PV_EOI_EN: u32 = 0x4b56_4d04;
    /// `MSR_KVM_POLL_CONTROL`: bit 0 = 1 (the default) lets the host poll
    /// a halted vCPU; 0 disables host-side polling.
    pub const POLL_CONTROL: u32 = 0x4b56_4d05;
    /// `MSR_KVM_ASYNC_PF_INT`.
    pub const ASYNC_PF_INT: u32 = 0x4b56_4d06;
    /// `MSR_KVM_ASYNC_PF_ACK`.
    pub const ASYNC_PF_ACK: u32 = 0x4b56_4d07;
    /// `MSR_KVM_MIGRATION_CONTROL`.
    pub const MIGRATION_CONTROL: u32 = 0x4b56_4d08;

    /// Bit 0 of the page-registering MSRs: `KVM_MSR_ENABLED`.
    pub const ENABLED: u64 = 1 << 0;
    /// `MSR_KVM_STEAL_TIME` reserved bits 5:1 (msr.rst: "Bits 1-5 are
    /// reserved and must be zero").
    pub const STEAL_RESERVED: u64 = 0x3e;
    /// `MSR_KVM_PV_EOI_EN` reserved bit 1.
    pub const PV_EOI_RESERVED: u64 = 1 << 1;

    /// Whether `index` is one of KVM's custom MSRs 0x4b56_4d00..=0x4b56_4dff.
    pub const fn is_custom(index: u32) -> bool {
        index & 0xFFFF_FF00 == 0x4b56_4d00
    }

    /// The value registering a time area at `gpa` (4-byte aligned).
    pub const fn system_time(gpa: u64) -> u64 {
        (gpa & !3) | ENABLED
    }

    /// The value registering a steal-time area at `gpa` (64-byte aligned).
    pub const fn steal_time(gpa: u64) -> u64 {
        (gpa & !63) | ENABLED
    }

    /// The value registering the PV EOI word at `gpa` (4-byte aligned).
    pub const fn pv_eoi(gpa: u64) -> u64 {
        (gpa & !3) | ENABLED
    }
}

/// Bit 0 of the PV EOI word: `KVM_PV_EOI_BIT`. The host sets it when it
/// injects an interrupt whose EOI it can do itself; a guest that finds it
/// set (and clears it, test-and-clear) skips the APIC EOI write (msr.rst,
/// `MSR_KVM_PV_EOI_EN`: "...the guest must clear the bit ... otherwise, the
/// guest must signal EOI normally").
pub const PV_EOI_BIT: u32 = 0;
/// `KVM_PV_EOI_ENABLED` = 1 << [`PV_EOI_BIT`].
pub const PV_EOI_ENABLED: u32 = 1 << PV_EOI_BIT;

/// `struct pvclock_wall_clock` (msr.rst, `MSR_KVM_WALL_CLOCK_NEW`): the
/// wall-clock time at the guest's system time 0.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct WallClock {
    /// Odd while the host writes (the same protocol as the pvclock).
    pub version: u32,
    /// Seconds since the epoch at boot.
    pub sec: u32,
    /// Nanoseconds.
    pub nsec: u32,
}
assert_eq_size!(WallClock, [u8; 12]);

/// `KVM_VCPU_PREEMPTED`: bit 0 of [`StealTime::preempted`] (msr.rst: "the
/// vCPU that owns this struct is running or not").
pub const VCPU_PREEMPTED: u8 = 1 << 0;
/// `KVM_VCPU_FLUSH_TLB`: bit 1 of [`StealTime::preempted`], set by a guest
/// that wants the host to flush this vCPU's TLB before it runs again (PV
/// TLB flush).
pub const VCPU_FLUSH_TLB: u8 = 1 << 1;

/// `struct kvm_steal_time` (msr.rst, `MSR_KVM_STEAL_TIME`): 64 bytes,
/// 64-byte aligned. The host updates it like the pvclock: `version` odd
/// while it writes, even when consistent; `steal` is "the amount of time in
/// which this vCPU did not run, in nanoseconds", monotonic.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C, align(64))]
pub struct StealTime {
    /// Stolen nanoseconds.
    pub steal: u64,
    /// Update counter; odd while the host writes.
    pub version: u32,
    /// "At this point, always zero."
    pub flags: u32,
    /// [`VCPU_PREEMPTED`] and [`VCPU_FLUSH_TLB`].
    pub preempted: u8,
    /// Padding.
    pub u8_pad: [u8; 3],
    /// Padding ("pad\[11\]").
    pub pad: [u32; 11],
}
assert_eq_size!(StealTime, [u8; 64]);
const_assert_eq!(core::mem::align_of::<StealTime>(), 64);
const_assert_eq!(offset_of!(StealTime, steal), 0);
const_assert_eq!(offset_of!(StealTime, version), 8);
const_assert_eq!(offset_of!(StealTime, flags), 12);
const_assert_eq!(offset_of!(StealTime, preempted), 16);
const_assert_eq!(offset_of!(StealTime, pad), 20);

/// Hypercall numbers (hypercalls.rst; `include/uapi/linux/kvm_para.h`).
pub mod hc {
    /// `KVM_HC_VAPIC_POLL_IRQ`.
    pub const VAPIC_POLL_IRQ: u64 = 1;
    /// `KVM_HC_MMU_OP` (removed).
    pub const MMU_OP: u64 = 2;
    /// `KVM_HC_FEATURES` (PowerPC).
    pub const FEATURES: u64 = 3;
    /// `KVM_HC_PPC_MAP_MAGIC_PAGE` (PowerPC).
    pub const PPC_MAP_MAGIC_PAGE: u64 = 4;
    /// `KVM_HC_KICK_CPU`: a0 = flags (reserved, 0), a1 = APIC ID of the
    /// halted vCPU to wake (under `KVM_FEATURE_PV_UNHALT`).
    pub const KICK_CPU: u64 = 5;
    /// `KVM_HC_CLOCK_PAIRING`.
    pub const CLOCK_PAIRING: u64 = 9;
    /// `KVM_HC_SEND_IPI`: a0/a1 = low/high 64 bits of a bitmap of APIC IDs
    /// relative to a2, the lowest APIC ID in it; a3 = the ICR low word
    /// (vector, delivery mode). Returns the number of CPUs the IPI reached
    /// (under `KVM_FEATURE_PV_SEND_IPI`).
    pub const SEND_IPI: u64 = 10;
    /// `KVM_HC_SCHED_YIELD`: a0 = APIC ID of a preempted vCPU to yield to
    /// (under `KVM_FEATURE_PV_SCHED_YIELD`).
    pub const SCHED_YIELD: u64 = 11;
    /// `KVM_HC_MAP_GPA_RANGE`.
    pub const MAP_GPA_RANGE: u64 = 12;
}

/// Hypercall error returns, negated in RAX (`include/uapi/linux/kvm_para.h`).
pub mod err {
    /// `KVM_ENOSYS`: unknown or disabled hypercall (hypercalls.rst: a
    /// hypercall not enabled in CPUID "returns -KVM_ENOSYS").
    pub const ENOSYS: i64 = 1000;
    /// `KVM_EFAULT` (= EFAULT).
    pub const EFAULT: i64 = 14;
    /// `KVM_EINVAL` (= EINVAL).
    pub const EINVAL: i64 = 22;
    /// `KVM_E2BIG` (= E2BIG).
    pub const E2BIG: i64 = 7;
    /// `KVM_EPERM` (= EPERM).
    pub const EPERM: i64 = 1;
    /// `KVM_EOPNOTSUPP` (= EOPNOTSUPP).
    pub const EOPNOTSUPP: i64 = 95;

    /// A name for a (negative) hypercall result, for logs.
    pub fn name(rc: i64) -> &'static str {
        match -rc {
            ENOSYS => "-KVM_ENOSYS",
            EFAULT => "-KVM_EFAULT",
            EINVAL => "-KVM_EINVAL",
            E2BIG => "-KVM_E2BIG",
            EPERM => "-KVM_EPERM",
            EOPNOTSUPP => "-KVM_EOPNOTSUPP",
            _ if rc >= 0 => "success",
            _ => "unknown error",
        }
    }
}

/// Width of the `KVM_HC_SEND_IPI` bitmap: two 64-bit words (hypercalls.rst:
/// "a0: lower part of the bitmap ... a1: higher part").
pub const SEND_IPI_BITMAP_BITS: u32 = 128;

/// ICR low word of a fixed, physical-destination IPI of `vector` (Intel SDM
/// vol. 3A, 11.6.1: delivery mode 000 = fixed, bits 7:0 vector), as
/// `KVM_HC_SEND_IPI` a3 takes it.
pub const fn ipi_icr_fixed(vector: u8) -> u64 {
    vector as u64
}

/// `KVM_HC_SEND_IPI` arguments for APIC IDs `mask` (bits 0..64 = IDs
/// 0..64): a0 (low bitmap), a1 (high bitmap), a2 (lowest ID), relative to
/// the lowest set ID. A mask of 64 IDs always fits one 128-bit window, so
/// this is one call (`None` for an empty mask: no call).
pub const fn send_ipi_args(mask: u64) -> Option<(u64, u64, u64)> {
    if mask == 0 {
        return None;
    }
    let min = mask.trailing_zeros();
    Some((mask >> min, 0, min as u64))
}

/// Which instruction makes a KVM hypercall (hypercalls.rst: "KVM
/// hypercalls have a three-byte sequence of either the vmcall or the
/// vmmcall instruction. The hypervisor can replace it with instructions
/// that are guaranteed to be supported.").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HypercallInsn {
    /// `VMCALL` (0F 01 C1), Intel VMX.
    Vmcall,
    /// `VMMCALL` (0F 01 D9), AMD SVM.
    Vmmcall,
}

impl HypercallInsn {
    /// The native instruction for a CPU vendor string (CPUID leaf 0):
    /// `VMMCALL` for "AuthenticAMD" and "HygonGenuine", else `VMCALL`.
    pub fn for_vendor(vendor: &[u8; 12]) -> HypercallInsn {
        if vendor == b"AuthenticAMD" || vendor == b"HygonGenuine" {
            HypercallInsn::Vmmcall
        } else {
            HypercallInsn::Vmcall
        }
    }

    /// Its name for logs.
    pub const fn name(self) -> &'static str {
        match self {
            HypercallInsn::Vmcall => "vmcall",
            HypercallInsn::Vmmcall => "vmmcall",
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;

    #[test]
    fn numbers_match_the_documentation() {
        assert_eq!(msr::SYSTEM_TIME_NEW, 0x4b564d01);
        assert_eq!(msr::STEAL_TIME, 0x4b564d03);
        assert_eq!(msr::PV_EOI_EN, 0x4b564d04);
        assert_eq!(msr::POLL_CONTROL, 0x4b564d05);
        assert!(msr::is_custom(msr::WALL_CLOCK_NEW) && !msr::is_custom(0x4000_0070));
        assert_eq!(hc::KICK_CPU, 5);
        assert_eq!(hc::SEND_IPI, 10);
        assert_eq!(hc::SCHED_YIELD, 11);
        assert_eq!(err::ENOSYS, 1000);
        assert_eq!(err::name(-1000), "-KVM_ENOSYS");
        assert_eq!(err::name(1), "success");
        assert_eq!(Features::CLOCKSOURCE_STABLE_BIT.0, 0x0100_0000);
        assert_eq!(Features::PV_SEND_IPI.0, 0x800);
    }

    #[test]
    fn msr_values() {
        assert_eq!(msr::system_time(0x1000), 0x1001);
        assert_eq!(msr::steal_time(0x2040), 0x2041);
        assert_eq!(msr::steal_time(0x2040) & msr::STEAL_RESERVED, 0);
        assert_eq!(msr::pv_eoi(0x3004), 0x3005);
    }

    #[test]
    fn send_ipi_windows() {
        assert_eq!(send_ipi_args(0), None);
        assert_eq!(send_ipi_args(1), Some((1, 0, 0)));
        assert_eq!(send_ipi_args(0b1100), Some((0b11, 0, 2)));
        assert_eq!(send_ipi_args(1 << 63), Some((1, 0, 63)));
        assert_eq!(ipi_icr_fixed(0xf0), 0xf0);
    }

    #[test]
    fn vendors() {
        assert_eq!(
            HypercallInsn::for_vendor(b"AuthenticAMD"),
            HypercallInsn::Vmmcall
        );
        assert_eq!(
            HypercallInsn::for_vendor(b"GenuineIntel"),
            HypercallInsn::Vmcall
        );
    }

    #[test]
    fn steal_time_layout() {
        let s = StealTime {
            steal: 0x0102_0304_0506_0708,
            version: 3,
            preempted: VCPU_PREEMPTED,
            ..Default::default()
        };
        let b = s.as_bytes();
        assert_eq!(b.len(), 64);
        assert_eq!(&b[0..8], &0x0102_0304_0506_0708u64.to_le_bytes());
        assert_eq!(&b[8..12], &3u32.to_le_bytes());
        assert_eq!(b[16], 1);
    }
}
