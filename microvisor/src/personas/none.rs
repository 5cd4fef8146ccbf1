//! `none`: no hypervisor at all, as far as the guest can tell. The
//! hypervisor bit is clear, every hypervisor CPUID leaf reads zero (hiding
//! even QEMU TCG's own `TCGTCGTCGTCG`), and VMMCALL raises #UD as it does on
//! bare metal. The guest must choose its native backend.

use super::{GuestCx, Hypercall, HypercallAction, Persona};

/// The `none` persona.
#[derive(Debug)]
pub struct NoHypervisor;

impl Persona for NoHypervisor {
    fn name(&self) -> &'static str {
        "none"
    }

    fn hypervisor_bit(&self) -> bool {
        false
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
