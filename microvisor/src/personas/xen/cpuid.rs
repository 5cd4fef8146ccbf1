//! The hypervisor CPUID leaves (Xen `arch-x86/cpuid.h`; with Viridian, a
//! minimal Hyper-V TLFS "Hv#1" interface below them).

use super::{Xen, DOMID};
use crate::personas::{signature, HV_LEAF_BASE};
use pvops_abi::hyperv::{cpuid as hv, Hints, Privileges};
use pvops_abi::xen as abi;

/// The highest Xen leaf offset: base+4, the HVM leaf ("Leaf 5").
const TOP: u32 = abi::LEAF_HVM;

/// EAX, EBX, ECX, EDX of hypervisor leaf `leaf`.
pub(super) fn leaf(x: &Xen, leaf: u32, subleaf: u32) -> [u32; 4] {
    let base = x.base();
    if x.viridian && leaf < base {
        return viridian(x, leaf);
    }
    match leaf.wrapping_sub(base) {
        0 => {
            let [b, c, d] = signature(abi::SIGNATURE);
            let top = if x.brk == Some(super::Break::SignatureOnly) {
                0
            } else {
                TOP
            };
            [base + top, b, c, d]
        }
        _ if x.brk == Some(super::Break::SignatureOnly) => [0; 4],
        abi::LEAF_VERSION => [x.version().to_eax(), 0, 0, 0],
        // One page; features1/2 (PV MMU bits) 0.
        abi::LEAF_HYPERCALL => [1, x.hypercall_msr(), 0, 0],
        abi::LEAF_TIME => time(x, subleaf),
        abi::LEAF_HVM => [
            abi::HVM_VCPU_ID_PRESENT
                | abi::HVM_DOMID_PRESENT
                | if x.knobs.callback_via_only {
                    0
                } else {
                    // Xen 4.17+ (`cpuid_hypervisor_leaves`), QEMU 8.2+.
                    abi::HVM_UPCALL_VECTOR
                },
            // EBX: the vCPU id of the vCPU asking (Xen
            // `cpuid_hypervisor_leaves`: `v->vcpu_id`).
            x.current as u32,
            u32::from(DOMID),
            0,
        ],
        _ => [0; 4],
    }
}

/// base+3 ("Leaf 4"): sub-leaf 0 TSC flags, mode, guest kHz, incarnation;
/// sub-leaf 1 the guest TSC offset (0: TSC_OFFSET is 0) and the pvclock
/// mul/shift; sub-leaf 2 the host TSC kHz.
fn time(x: &Xen, subleaf: u32) -> [u32; 4] {
    let khz = u32::try_from(x.tsc_khz).unwrap_or(0);
    match subleaf {
        // QEMU's Xen emulation on KVM, as measured in the nested real-peer
        // runs: the TSC kHz and the pvclock scale, not Xen's sub-leaf 0.
        0 if x.knobs.qemu => [
            khz,
            0,
            x.time.tsc_to_system_mul,
            x.time.tsc_shift as u8 as u32,
        ],
        // RDTSC is never intercepted: never emulated. The host TSC is not
        // claimed reliable (QEMU TCG derives it from the host clock).
        0 => [0, abi::TSC_MODE_NEVER_EMULATE, khz, 0],
        1 => [
            0,
            0,
            x.time.tsc_to_system_mul,
            x.time.tsc_shift as u8 as u32,
        ],
        2 => [khz, 0, 0, 0],
        _ => [0; 4],
    }
}

/// Viridian below Xen, as Xen's `cpuid_viridian_leaves`
/// (`xen/arch/x86/hvm/viridian/viridian.c`) answers with only the "base"
/// enlightenment group: the vendor leaf with max 0x4000_0005 and "Hv#1";
/// leaf 2 (version) zero until the guest wrote any OS ID; leaf 3 the
/// AccessIntrCtrlRegs, AccessHypercallMsrs, AccessVpIndex and
/// AccessFrequencyRegs privileges (no feature bits); leaf 4 zero until an
/// OS ID whose bits 47:40 (the Microsoft encoding's "OS") are at least 4,
/// then "relax timer interrupts" and "MSR-based APIC" (SVM has no APIC
/// register virtualisation here).
fn viridian(x: &Xen, leaf: u32) -> [u32; 4] {
    let id = x.guest_os_id;
    match leaf {
        HV_LEAF_BASE => {
            let [b, c, d] = signature(hv::VENDOR_SIGNATURE);
            [hv::IMPLEMENTATION_LIMITS, b, c, d]
        }
        hv::INTERFACE => [hv::HV1, 0, 0, 0],
        // Xen's viridian_build/major/minor: 0x1772, 6.0 (Windows 7 era).
        hv::VERSION if id != 0 => [0x1772, 6 << 16, 0, 0],
        hv::FEATURES => [VIRIDIAN_PRIVILEGES.0 as u32, 0, 0, 0],
        hv::ENLIGHTENMENT_INFO if id != 0 && (id >> 40) as u8 >= 4 => {
            // EBX: Xen's default spinlock retry count.
            [VIRIDIAN_HINTS.0, 2047, 0, 0]
        }
        _ => [0; 4],
    }
}

/// Leaf 3 of Xen's Viridian "base" group.
pub(super) const VIRIDIAN_PRIVILEGES: Privileges = Privileges::INTR_CTRL_REGS
    .union(Privileges::HYPERCALL_MSRS)
    .union(Privileges::VP_INDEX)
    .union(Privileges::FREQUENCY_REGS);
/// Leaf 4 once published.
pub(super) const VIRIDIAN_HINTS: Hints = Hints::RELAXED_TIMING.union(Hints::APIC_MSRS);
