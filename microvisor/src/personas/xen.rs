//! `xen` and `xen+viridian`: a Xen-style hypervisor (to be filled in from
//! `pvops_abi::xen` and `pvops_abi::pvclock`).

use super::{GuestCx, Hypercall, HypercallAction, Persona, SelectError};

/// The `xen` persona.
#[derive(Debug)]
pub struct Xen {
    viridian: bool,
}

impl Xen {
    /// A Xen persona, with a Viridian (Hyper-V) signature below it if asked.
    pub fn new(viridian: bool, break_step: Option<&str>) -> Result<Self, SelectError> {
        match break_step {
            None => Ok(Xen { viridian }),
            Some(_) => Err(SelectError::UnknownBreak),
        }
    }
}

impl Persona for Xen {
    fn name(&self) -> &'static str {
        if self.viridian {
            "xen+viridian"
        } else {
            "xen"
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
