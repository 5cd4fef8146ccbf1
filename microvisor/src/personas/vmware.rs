//! `vmware`: a VMware-style hypervisor (to be filled in: the signature,
//! the timing leaf 0x4000_0010 and the backdoor port, from `pvops_abi::vmware`).

use super::{GuestCx, Hypercall, HypercallAction, Persona, SelectError};

/// The `vmware` persona.
#[derive(Debug)]
pub struct Vmware {
    tsc_khz: u64,
}

impl Vmware {
    /// A VMware persona; no `break=` steps yet.
    pub fn new(break_step: Option<&str>) -> Result<Self, SelectError> {
        match break_step {
            None => Ok(Vmware { tsc_khz: 0 }),
            Some(_) => Err(SelectError::UnknownBreak),
        }
    }
}

impl Persona for Vmware {
    fn name(&self) -> &'static str {
        "vmware"
    }

    fn hypervisor_bit(&self) -> bool {
        true
    }

    fn set_clock(&mut self, tsc_khz: u64, _apic_bus_khz: u64) {
        self.tsc_khz = tsc_khz;
    }

    fn cpuid(&mut self, _leaf: u32, _subleaf: u32) -> [u32; 4] {
        [0; 4]
    }

    fn hypercall(&mut self, cx: &mut GuestCx<'_>) -> Hypercall {
        Hypercall {
            code: cx.state.rax,
            action: HypercallAction::Undefined,
        }
    }
}
