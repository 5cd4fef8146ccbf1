//! CPUID: the host's answers, edited into the guest's view.
//!
//! - 1:ECX[21] x2APIC and [24] TSC-deadline set (the virtual APIC offers
//!   both), [3] MONITOR cleared (MWAIT is not virtualised), [31] hypervisor
//!   per persona; 1:EBX[31:24] initial APIC ID 0.
//! - 8000_0001:ECX[2] SVM cleared and leaf 8000_000A zeroed: no nested SVM.
//! - 0x4000_0000..0x4FFF_FFFF: the persona's (QEMU TCG's own
//!   "TCGTCGTCGTCG" leaves never show through).
//! - `pvops_abi::microvisor::CPUID_LEAF` with ECX = `CPUID_KEY`: the
//!   microvisor's signature, in every persona; asking opens the microvisor
//!   hypercalls.
//!
//! Bit positions: AMD CPUID specification #25481 and Intel SDM vol. 2A,
//! CPUID, tables 3-10/3-11.

use super::{Flow, Vcpu};
use crate::hw::cpu;
use crate::personas::{signature, HV_LEAF_BASE, HV_LEAF_LAST};
use pvops_abi::microvisor::{code, CPUID_KEY, CPUID_LEAF, SIGNATURE};

const ECX1_MONITOR: u32 = 1 << 3;
const ECX1_X2APIC: u32 = 1 << 21;
const ECX1_TSC_DEADLINE: u32 = 1 << 24;
const ECX1_HYPERVISOR: u32 = 1 << 31;
const ECX81_SVM: u32 = 1 << 2;
/// CPUID is 0F A2.
const CPUID_LEN: u64 = 2;

/// Handles a CPUID exit.
pub fn handle(v: &mut Vcpu) -> Flow {
    let leaf = v.vmcb.state.rax as u32;
    let subleaf = v.regs.rcx as u32;
    let [a, b, c, d] = guest_cpuid(v, leaf, subleaf);
    v.vmcb.state.rax = a as u64;
    v.regs.rbx = b as u64;
    v.regs.rcx = c as u64;
    v.regs.rdx = d as u64;
    v.advance(CPUID_LEN);
    Flow::Continue
}

fn guest_cpuid(v: &mut Vcpu, leaf: u32, subleaf: u32) -> [u32; 4] {
    if leaf == CPUID_LEAF && subleaf == CPUID_KEY {
        v.mv_open = true;
        let [b, c, d] = signature(SIGNATURE);
        return [code::HIGHEST, b, c, d];
    }
    if (HV_LEAF_BASE..=HV_LEAF_LAST).contains(&leaf) {
        return v.persona.get().cpuid(leaf, subleaf);
    }
    let r = cpu::cpuid(leaf, subleaf);
    let (mut a, mut b, mut c, mut d) = (r.eax, r.ebx, r.ecx, r.edx);
    match leaf {
        1 => {
            // Initial APIC ID in EBX[31:24] (the vCPU's index).
            b = (b & 0x00FF_FFFF) | (v.id as u32) << 24;
            c |= ECX1_X2APIC | ECX1_TSC_DEADLINE;
            c &= !(ECX1_MONITOR | ECX1_HYPERVISOR);
            if v.persona.get().hypervisor_bit() {
                c |= ECX1_HYPERVISOR;
            }
        }
        // x2APIC ID in EDX of the topology leaves (Intel SDM vol. 2A,
        // CPUID leaves 0BH and 1FH).
        0xB | 0x1F => d = v.id as u32,
        0x8000_0001 => c &= !ECX81_SVM,
        0x8000_000A => (a, b, c, d) = (0, 0, 0, 0),
        _ => {}
    }
    [a, b, c, d]
}
