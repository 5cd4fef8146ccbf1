//! `bare`: a hypervisor that admits to existing but is no one the guest
//! knows. The hypervisor bit is set and leaf 0x4000_0000 carries an unknown
//! signature with max leaf 0x4000_0001 (whose EAX, the interface
//! signature, is 0). No hypercalls: every VMMCALL returns -1 in RAX. A
//! guest must fall back to its native backend, knowing it is virtualised.

use super::{signature, GuestCx, Hypercall, HypercallAction, Persona, HV_LEAF_BASE};

/// Vendor signature: deliberately nothing a guest recognises.
pub const SIGNATURE: &[u8; 12] = b"pvopsBareHV!";

/// The `bare` persona.
#[derive(Debug)]
pub struct Bare;

impl Persona for Bare {
    fn name(&self) -> &'static str {
        "bare"
    }

    fn hypervisor_bit(&self) -> bool {
        true
    }

    fn cpuid(&mut self, leaf: u32, _subleaf: u32) -> [u32; 4] {
        match leaf {
            HV_LEAF_BASE => {
                let [b, c, d] = signature(SIGNATURE);
                [HV_LEAF_BASE + 1, b, c, d]
            }
            _ => [0; 4],
        }
    }

    fn hypercall(&mut self, cx: &mut GuestCx<'_>) -> Hypercall {
        let code = cx.state.rax;
        cx.state.rax = u64::MAX;
        Hypercall {
            code,
            action: HypercallAction::Return,
        }
    }
}
