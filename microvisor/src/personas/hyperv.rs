//! `hyperv` and `kvm+hyperv`: a Hyper-V-style hypervisor (to be filled in
//! from `pvops_abi::hyperv`).

use super::{GuestCx, Hypercall, HypercallAction, Persona, SelectError};

/// The `hyperv` persona.
#[derive(Debug)]
pub struct HyperV {
    kvm: bool,
}

impl HyperV {
    /// A Hyper-V persona, with a KVM signature above it if asked.
    pub fn new(kvm: bool, break_step: Option<&str>) -> Result<Self, SelectError> {
        match break_step {
            None => Ok(HyperV { kvm }),
            Some(_) => Err(SelectError::UnknownBreak),
        }
    }
}

impl Persona for HyperV {
    fn name(&self) -> &'static str {
        if self.kvm {
            "kvm+hyperv"
        } else {
            "hyperv"
        }
    }

    fn hypervisor_bit(&self) -> bool {
        true
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
