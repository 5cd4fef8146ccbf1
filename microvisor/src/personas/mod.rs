//! Personas: which hypervisor the guest believes it runs on.
//!
//! A persona is one module implementing [`Persona`]: its CPUID leaves in the
//! hypervisor range, its synthetic MSRs, its hypercalls, its I/O ports and
//! any shared pages it provides. Everything else (the architectural CPU,
//! the x2APIC, the legacy devices, the microvisor's own hidden interface) is
//! common and lives in `vcpu`. ABI structures a persona shares with the
//! guest-side backend (clock pages, hypercall layouts) come from the
//! `pvops-abi` crate, never from a private copy.
//!
//! Adding a persona: write `personas/<name>.rs`, then add one variant to
//! [`Active`] and one line to [`select`] and [`NAMES`].

pub mod bare;
pub mod none;

use crate::guest::{mem::GuestRam, Gp};
use crate::svm::{vmcb::StateSave, vmrun::GuestRegs};

/// The first hypervisor CPUID leaf; the range ends at 0x4FFF_FFFF.
pub const HV_LEAF_BASE: u32 = 0x4000_0000;
/// The last hypervisor CPUID leaf.
pub const HV_LEAF_LAST: u32 = 0x4FFF_FFFF;

/// What a persona handler may see and change of the guest.
#[allow(dead_code)] // `none` and `bare` need only RAX; the next personas use the rest.
pub struct GuestCx<'a> {
    /// Guest state in the VMCB (RAX, RSP, RIP, control registers, ...).
    pub state: &'a mut StateSave,
    /// The other general-purpose registers.
    pub regs: &'a mut GuestRegs,
    /// Guest RAM (bounds-checked access).
    pub mem: &'a GuestRam,
    /// Host TSC now (the guest's TSC: TSC_OFFSET is 0).
    pub now: u64,
    /// TSC frequency in kHz.
    pub tsc_khz: u64,
}

/// How a hypercall ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HypercallAction {
    /// Results are in the registers; the guest continues after VMMCALL.
    Return,
    /// VMMCALL is undefined here: inject #UD (RIP stays on the VMMCALL).
    Undefined,
}

/// A handled hypercall: its code (for the counters) and outcome.
#[derive(Clone, Copy, Debug)]
pub struct Hypercall {
    /// The code counted under `mv.hypercall`.
    pub code: u64,
    /// What happens next.
    pub action: HypercallAction,
}

/// A page (or run of pages) of guest-physical space a persona provides.
#[derive(Clone, Copy, Debug)]
pub struct SharedPage {
    /// What it is (for the report).
    pub name: &'static str,
    /// Guest-physical address.
    pub gpa: u64,
    /// Number of 4 KiB pages.
    pub pages: u64,
}

/// One hypervisor personality.
pub trait Persona {
    /// Name used on the command line and in reports.
    fn name(&self) -> &'static str;

    /// CPUID.1:ECX[31], the "hypervisor present" bit.
    fn hypervisor_bit(&self) -> bool;

    /// CPUID leaves [`HV_LEAF_BASE`]..=[`HV_LEAF_LAST`] as EAX, EBX, ECX, EDX.
    fn cpuid(&mut self, leaf: u32, subleaf: u32) -> [u32; 4];

    /// RDMSR of an MSR the common code does not handle; `None` = unknown.
    fn rdmsr(&mut self, _cx: &mut GuestCx<'_>, _msr: u32) -> Option<Result<u64, Gp>> {
        None
    }

    /// WRMSR of an MSR the common code does not handle; `None` = unknown.
    fn wrmsr(&mut self, _cx: &mut GuestCx<'_>, _msr: u32, _value: u64) -> Option<Result<(), Gp>> {
        None
    }

    /// A VMMCALL that is not a microvisor hypercall.
    fn hypercall(&mut self, cx: &mut GuestCx<'_>) -> Hypercall;

    /// IN from a port the common code does not handle; `None` = unknown.
    fn io_in(&mut self, _cx: &mut GuestCx<'_>, _port: u16, _size: u8) -> Option<u32> {
        None
    }

    /// OUT to a port the common code does not handle; false = unknown.
    fn io_out(&mut self, _cx: &mut GuestCx<'_>, _port: u16, _size: u8, _value: u32) -> bool {
        false
    }

    /// Guest-physical pages this persona provides (none so far).
    fn shared_pages(&self) -> &[SharedPage] {
        &[]
    }
}

/// The selected persona.
pub enum Active {
    /// [`none::NoHypervisor`].
    None(none::NoHypervisor),
    /// [`bare::Bare`].
    Bare(bare::Bare),
}

/// Persona names accepted on the command line.
pub const NAMES: &[&str] = &["none", "bare"];

/// The persona called `name`.
pub fn select(name: &str) -> Option<Active> {
    match name {
        "none" => Some(Active::None(none::NoHypervisor)),
        "bare" => Some(Active::Bare(bare::Bare)),
        _ => None,
    }
}

impl Active {
    /// The persona as a trait object.
    pub fn get(&mut self) -> &mut dyn Persona {
        match self {
            Active::None(p) => p,
            Active::Bare(p) => p,
        }
    }
}

/// Packs a 12-byte signature into EBX, ECX, EDX.
pub fn signature(sig: &[u8; 12]) -> [u32; 3] {
    let w = |i: usize| u32::from_le_bytes([sig[i], sig[i + 1], sig[i + 2], sig[i + 3]]);
    [w(0), w(4), w(8)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry() {
        for name in NAMES {
            assert_eq!(select(name).unwrap().get().name(), *name);
        }
        assert!(select("kvm").is_none());
    }

    #[test]
    fn none_hides_everything_and_bare_is_unknown() {
        let mut none = select("none").unwrap();
        assert!(!none.get().hypervisor_bit());
        assert_eq!(none.get().cpuid(HV_LEAF_BASE, 0), [0; 4]);
        let mut bare = select("bare").unwrap();
        assert!(bare.get().hypervisor_bit());
        let [max, b, c, d] = bare.get().cpuid(HV_LEAF_BASE, 0);
        assert_eq!(max, HV_LEAF_BASE + 1);
        let mut sig = [0u8; 12];
        for (i, w) in [b, c, d].iter().enumerate() {
            sig[i * 4..i * 4 + 4].copy_from_slice(&w.to_le_bytes());
        }
        assert_eq!(&sig, bare::SIGNATURE);
        assert_eq!(bare.get().cpuid(HV_LEAF_BASE + 1, 0), [0; 4]);
    }
}
