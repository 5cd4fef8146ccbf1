//! Exit dispatch: one arm per SVM exit code (APM vol. 2, appendix C).

use super::{cpuid, hypercall, io, msr, Flow, Vcpu};
use crate::outcome::{End, FaultKind};
use crate::svm::vmcb::{exit, int_ctl};

/// #UD.
pub const UD: u8 = 6;
/// #GP.
pub const GP: u8 = 13;

/// Handles exit `code`.
pub fn handle(v: &mut Vcpu, code: u64) -> Flow {
    match code {
        exit::CPUID => cpuid::handle(v),
        exit::MSR => msr::handle(v),
        exit::IOIO => io::handle(v),
        exit::HLT => v.halt(),
        exit::VMMCALL => hypercall::handle(v),
        // The host's timer interrupt was taken at STGI; timers and the
        // watchdog are looked at before the next entry.
        exit::INTR | exit::NMI => Flow::Continue,
        exit::VINTR => {
            // The guest can take interrupts now: drop the request, the
            // pending vector is injected before the next entry.
            v.vmcb.control.int_ctl &= !int_ctl::V_IRQ;
            Flow::Continue
        }
        exit::SHUTDOWN => {
            let s = &v.vmcb.state;
            Flow::End(End::fault(
                FaultKind::TripleFault,
                format_args!(
                    "guest triple fault (shutdown) rip={:#x} cr0={:#x} cr3={:#x} cr4={:#x} efer={:#x}",
                    s.rip,
                    s.cr0,
                    s.cr3,
                    s.cr4,
                    s.efer & !crate::hw::cpu::EFER_SVME
                ),
            ))
        }
        exit::NPF => {
            let c = &v.vmcb.control;
            let info = c.exit_info1;
            let access = if info & (1 << 4) != 0 {
                "fetch"
            } else if info & (1 << 1) != 0 {
                "write"
            } else {
                "read"
            };
            Flow::End(End::fault(
                FaultKind::BadMemory,
                format_args!(
                    "guest {} of gpa={:#x} outside its RAM (0..{:#x}) rip={:#x} info1={:#x}",
                    access,
                    c.exit_info2,
                    v.mem.size(),
                    v.vmcb.state.rip,
                    info
                ),
            ))
        }
        // SVM is hidden from the guest: its instructions are undefined.
        exit::VMRUN
        | exit::VMLOAD
        | exit::VMSAVE
        | exit::STGI
        | exit::CLGI
        | exit::SKINIT
        | exit::INVLPGA => {
            v.inject_exception(UD, None);
            Flow::Continue
        }
        _ => Flow::End(End::fault(
            FaultKind::Unsupported,
            format_args!(
                "unexpected exit {} (code {:#x}) rip={:#x} info1={:#x} info2={:#x}",
                reason_name(code),
                code,
                v.vmcb.state.rip,
                v.vmcb.control.exit_info1,
                v.vmcb.control.exit_info2
            ),
        )),
    }
}

/// Name of an exit reason in `mv.exit` records.
pub fn reason_name(code: u64) -> ReasonName {
    let fixed = match code {
        exit::CPUID => "cpuid",
        exit::MSR => "msr",
        exit::IOIO => "io",
        exit::HLT => "hlt",
        exit::VMMCALL => "vmmcall",
        exit::INTR => "intr",
        exit::NMI => "nmi",
        exit::VINTR => "vintr",
        exit::NPF => "npf",
        exit::SHUTDOWN => "shutdown",
        exit::VMRUN => "vmrun",
        exit::VMLOAD => "vmload",
        exit::VMSAVE => "vmsave",
        exit::STGI => "stgi",
        exit::CLGI => "clgi",
        exit::SKINIT => "skinit",
        exit::INVLPGA => "invlpga",
        c if (exit::EXCP_BASE..exit::EXCP_BASE + 32).contains(&c) => {
            return ReasonName::Exception(c - exit::EXCP_BASE)
        }
        c => return ReasonName::Other(c),
    };
    ReasonName::Fixed(fixed)
}

/// A printable exit-reason name.
#[derive(Clone, Copy, Debug)]
pub enum ReasonName {
    /// A known name.
    Fixed(&'static str),
    /// `exception-<n>`.
    Exception(u64),
    /// `other-<hex>`.
    Other(u64),
}

impl core::fmt::Display for ReasonName {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ReasonName::Fixed(s) => f.write_str(s),
            ReasonName::Exception(n) => write!(f, "exception-{n}"),
            ReasonName::Other(c) => write!(f, "other-{c:x}"),
        }
    }
}
