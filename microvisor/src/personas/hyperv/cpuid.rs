//! The Hyper-V CPUID leaves (TLFS, Feature and Interface Discovery), and
//! for `kvm+hyperv` a KVM signature block at 0x4000_0100 as QEMU/KVM puts
//! it when Hyper-V enlightenments are on (Linux
//! `Documentation/virt/kvm/x86/cpuid.rst`: KVM_CPUID_SIGNATURE and
//! KVM_CPUID_FEATURES, relative to the base).

use super::super::signature;
use pvops_abi::hyperv::{cpuid, hardware_features, Features, Hints, Privileges};

/// The highest Hyper-V leaf: through "Implementation Hardware Features".
/// Kept below 0x4000_0010 so no cross-hypervisor timing leaf is implied.
pub const MAX_LEAF: u32 = cpuid::HARDWARE_FEATURES;

/// KVM's block when stacked above Hyper-V.
pub const KVM_BASE: u32 = 0x4000_0100;
/// "KVMKVMKVM\0\0\0" (KVM_SIGNATURE).
pub const KVM_SIGNATURE: &[u8; 12] = b"KVMKVMKVM\0\0\0";

/// Build number reported in 0x4000_0002 EAX (the persona's own; the TLFS
/// leaves it to the implementation).
pub const BUILD: u32 = 1;
/// Version reported in 0x4000_0002 EBX: major 1, minor 0.
pub const VERSION: (u16, u16) = (1, 0);

/// The partition privileges offered: every MSR group the persona
/// implements, nothing else (no VP run time, SynIC, reset, idle, stats).
pub const PRIVILEGES: Privileges = Privileges::PARTITION_REFERENCE_COUNTER
    .union(Privileges::SYNTHETIC_TIMER_REGS)
    .union(Privileges::INTR_CTRL_REGS)
    .union(Privileges::HYPERCALL_MSRS)
    .union(Privileges::VP_INDEX)
    .union(Privileges::PARTITION_REFERENCE_TSC)
    .union(Privileges::FREQUENCY_REGS);

/// Features (EDX): frequency MSRs, crash MSRs, the hypercall MSR lock,
/// direct synthetic timers.
pub const FEATURES: Features = Features::FREQUENCY_MSRS
    .union(Features::GUEST_CRASH_MSRS)
    .union(Features::HYPERCALL_MSR_LOCK)
    .union(Features::DIRECT_SYNTHETIC_TIMERS);

/// Recommendations: remote flush by hypercall, APIC MSRs (and with them the
/// VP assist page's EOI assist), cluster IPIs by hypercall.
pub const HINTS: Hints = Hints::HYPERCALL_REMOTE_FLUSH
    .union(Hints::APIC_MSRS)
    .union(Hints::SYNTHETIC_CLUSTER_IPI);

/// 0x4000_0004 EBX: never notify long spin waits.
pub const SPIN_RETRIES_NEVER: u32 = 0xFFFF_FFFF;

/// The leaf's EAX, EBX, ECX, EDX.
/// What 0x4000_0004 adds with more than one VP, as Hyper-V recommends to
/// an SMP partition (TLFS, Feature and Interface Discovery: Implementation
/// Recommendations, EAX bit 2 remote TLB flush and bit 10 cluster IPI are
/// already in [`HINTS`]; bit 11 "UseExProcessorMasks").
pub const SMP_HINTS: Hints = Hints::EX_PROCESSOR_MASKS;

/// 0x4000_0004 EBX with more than one VP: spin 4095 times before
/// HvCallNotifyLongSpinWait (the TLFS leaves the count to the hypervisor;
/// 0xFFF is this persona's choice, KVM's and QEMU's `hv-spinlocks=0xfff`
/// examples use the same order). With one VP nobody else could run, so
/// [`SPIN_RETRIES_NEVER`] stays.
pub const SMP_SPIN_RETRIES: u32 = 0x0FFF;

/// The leaf for a partition of `vcpus` VPs.
pub fn leaf(kvm: bool, knobs: super::Knobs, vcpus: usize, leaf: u32) -> [u32; 4] {
    let (privileges, features) = if knobs.no_frequencies {
        (
            PRIVILEGES.0 & !Privileges::FREQUENCY_REGS.0,
            FEATURES.0 & !Features::FREQUENCY_MSRS.0,
        )
    } else {
        (PRIVILEGES.0, FEATURES.0)
    };
    match leaf {
        cpuid::VENDOR_AND_MAX_FUNCTIONS => {
            let [b, c, d] = signature(cpuid::VENDOR_SIGNATURE);
            [MAX_LEAF, b, c, d]
        }
        cpuid::INTERFACE => [cpuid::HV1, 0, 0, 0],
        cpuid::VERSION => [
            BUILD,
            u32::from(VERSION.0) << 16 | u32::from(VERSION.1),
            0,
            0,
        ],
        cpuid::FEATURES => [privileges as u32, (privileges >> 32) as u32, 0, features],
        cpuid::ENLIGHTENMENT_INFO if vcpus > 1 => {
            [HINTS.union(SMP_HINTS).0, SMP_SPIN_RETRIES, 0, 0]
        }
        cpuid::ENLIGHTENMENT_INFO => [HINTS.0, SPIN_RETRIES_NEVER, 0, 0],
        // EAX maximum VPs, EBX maximum logical processors (one per vCPU),
        // no interrupt remapping.
        cpuid::IMPLEMENTATION_LIMITS => [vcpus as u32, vcpus as u32, 0, 0],
        // MSR permission map and nested paging (the microvisor's SVM setup).
        cpuid::HARDWARE_FEATURES => [
            hardware_features::MSR_BITMAPS_IN_USE | hardware_features::SLAT_IN_USE,
            0,
            0,
            0,
        ],
        KVM_BASE if kvm => {
            let [b, c, d] = signature(KVM_SIGNATURE);
            [KVM_BASE + 1, b, c, d]
        }
        // KVM_CPUID_FEATURES comes from the `kvm` persona's interface
        // (`HyperV::cpuid`); here: none.
        _ => [0; 4],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pvops_abi::hyperv::Leaves;

    #[test]
    fn leaves_decode_as_a_conforming_hyperv() {
        let l = Leaves::decode(|n| leaf(false, Default::default(), 1, n));
        assert!(l.is_conforming());
        assert_eq!(l.max_leaf, 0x4000_0006);
        let p = l.privileges;
        assert_eq!(p.0 & 0xFFFF_FFFF, 0b1010_0111_1010);
        assert!(p.contains(Privileges::HYPERCALL_MSRS.union(Privileges::VP_INDEX)));
        assert!(!p.contains(Privileges::VP_RUNTIME));
        assert!(!p.contains(Privileges::SYNIC_REGS));
        assert_eq!(l.features.0, 1 << 8 | 1 << 10 | 1 << 18 | 1 << 19);
        assert_eq!(l.hints.0, 1 << 2 | 1 << 3 | 1 << 10);
        assert_eq!(l.max_vps, 1);
        assert_eq!(leaf(false, Default::default(), 1, KVM_BASE), [0; 4]);
        let knobs = crate::personas::hyperv::Knobs {
            no_frequencies: true,
            ..Default::default()
        };
        let l = Leaves::decode(|n| leaf(false, knobs, 1, n));
        assert!(!l.privileges.contains(Privileges::FREQUENCY_REGS));
        assert!(!l.features.contains(Features::FREQUENCY_MSRS));
    }

    #[test]
    fn smp_recommendations_only_with_several_vps() {
        let l = Leaves::decode(|n| leaf(false, Default::default(), 4, n));
        assert!(l.is_conforming());
        // Bits 2 (remote flush), 3 (APIC MSRs), 10 (cluster IPI), 11 (Ex).
        assert_eq!(l.hints.0, 1 << 2 | 1 << 3 | 1 << 10 | 1 << 11);
        assert_eq!(l.max_vps, 4);
        assert_eq!(l.spin_retries, 0xFFF);
        let one = Leaves::decode(|n| leaf(false, Default::default(), 1, n));
        assert_eq!(one.spin_retries, SPIN_RETRIES_NEVER);
        assert_eq!(one.hints.0 & 1 << 11, 0);
    }

    #[test]
    fn kvm_block_sits_at_0x40000100() {
        let [max, b, c, d] = leaf(true, Default::default(), 1, KVM_BASE);
        assert_eq!(max, KVM_BASE + 1);
        assert_eq!([b, c, d], signature(KVM_SIGNATURE));
        assert_eq!(leaf(true, Default::default(), 1, KVM_BASE + 1), [0; 4]);
        assert_eq!(leaf(true, Default::default(), 1, 0x4000_0000)[0], MAX_LEAF);
    }
}
