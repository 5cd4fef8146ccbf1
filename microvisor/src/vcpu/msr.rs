//! RDMSR/WRMSR exits. The MSR permission map intercepts every MSR except
//! the few the guest owns outright (see `setup`), and MSRs outside the map's
//! ranges always exit. Each intercepted access is counted per MSR.
//!
//! Handled here: EFER (SVME kept set in the VMCB and hidden from the
//! guest), PAT, the APIC MSRs (to `vapic`), then the persona's. Anything
//! else raises #GP(0), as an unimplemented MSR does on hardware.

use super::{exits::GP, Flow, Vcpu};
use crate::guest::Gp;
use crate::hw::cpu::EFER_SVME;
use crate::vapic::{MSR_APIC_BASE, MSR_TSC_DEADLINE, X2APIC_FIRST, X2APIC_LAST};

const MSR_PAT: u32 = 0x277;
const MSR_EFER: u32 = 0xC000_0080;
/// EFER bits a guest may write: SCE, LME, LMA (ignored), NXE, LMSLE,
/// FFXSR, TCE (APM vol. 2, 3.1.7). SVME is not offered.
const EFER_WRITABLE: u64 = 1 | 1 << 8 | 1 << 10 | 1 << 11 | 1 << 13 | 1 << 14 | 1 << 15;
const EFER_LMA: u64 = 1 << 10;
const EFER_LME: u64 = 1 << 8;
const CR0_PG: u64 = 1 << 31;
/// RDMSR and WRMSR are 0F 32 / 0F 30.
const MSR_INSN_LEN: u64 = 2;

/// Handles an MSR exit (EXITINFO1 = 0 read, 1 write).
pub fn handle(v: &mut Vcpu) -> Flow {
    let msr = v.regs.rcx as u32;
    let write = v.vmcb.control.exit_info1 & 1 != 0;
    v.acct.msr(msr, write);
    let result = if write {
        let value = (v.regs.rdx << 32) | (v.vmcb.state.rax & 0xFFFF_FFFF);
        wrmsr(v, msr, value).map(|()| None)
    } else {
        rdmsr(v, msr).map(Some)
    };
    match result {
        Ok(read) => {
            if let Some(value) = read {
                v.vmcb.state.rax = value & 0xFFFF_FFFF;
                v.regs.rdx = value >> 32;
            }
            v.advance(MSR_INSN_LEN);
        }
        Err(Gp) => v.inject_exception(GP, Some(0)),
    }
    Flow::Continue
}

fn is_apic(msr: u32) -> bool {
    msr == MSR_APIC_BASE || msr == MSR_TSC_DEADLINE || (X2APIC_FIRST..=X2APIC_LAST).contains(&msr)
}

fn rdmsr(v: &mut Vcpu, msr: u32) -> Result<u64, Gp> {
    match msr {
        MSR_EFER => Ok(v.vmcb.state.efer & !EFER_SVME),
        MSR_PAT => Ok(v.vmcb.state.g_pat),
        m if is_apic(m) => {
            let now = v.clock.now();
            v.vapic.rdmsr(m, now)
        }
        m => {
            let (p, mut cx) = v.persona_cx();
            p.get().rdmsr(&mut cx, m).unwrap_or(Err(Gp))
        }
    }
}

fn wrmsr(v: &mut Vcpu, msr: u32, value: u64) -> Result<(), Gp> {
    match msr {
        MSR_EFER => {
            if value & !EFER_WRITABLE != 0 {
                return Err(Gp);
            }
            let s = &mut v.vmcb.state;
            // Toggling LME with paging on is #GP (APM vol. 2, 14.6.1); it
            // would otherwise make the next VMRUN fail its consistency checks.
            if (value ^ s.efer) & EFER_LME != 0 && s.cr0 & CR0_PG != 0 {
                return Err(Gp);
            }
            s.efer = (value & !EFER_LMA) | (s.efer & EFER_LMA) | EFER_SVME;
            Ok(())
        }
        MSR_PAT => {
            // Each byte must be a valid memory type: 0, 1, 4, 5, 6 or 7.
            if value
                .to_le_bytes()
                .iter()
                .any(|&t| t > 7 || t == 2 || t == 3)
            {
                return Err(Gp);
            }
            v.vmcb.state.g_pat = value;
            Ok(())
        }
        m if is_apic(m) => {
            let now = v.clock.now();
            v.vapic.wrmsr(m, value, now)?;
            if let Some(icr) = v.vapic.take_icr() {
                v.send_ipi(icr);
            }
            Ok(())
        }
        m => {
            let (p, mut cx) = v.persona_cx();
            p.get().wrmsr(&mut cx, m, value).unwrap_or(Err(Gp))
        }
    }
}
