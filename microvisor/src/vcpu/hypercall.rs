//! VMMCALL exits: the microvisor's own hidden hypercalls
//! (`pvops_abi::microvisor`) once the guest has opened them through the
//! keyed CPUID leaf, the persona's otherwise.

use super::{exits::UD, Flow, Vcpu};
use crate::personas::HypercallAction;
use pvops_abi::microvisor::{code, ExitSnapshot, ERR_INVALID, ERR_UNKNOWN, HYPERCALL_MAGIC};
use zerocopy::IntoBytes;

/// VMMCALL is 0F 01 D9.
const VMMCALL_LEN: u64 = 3;
const MAGIC_MASK: u64 = 0xFFFF_FFFF_0000_0000;

/// Handles a VMMCALL exit.
pub fn handle(v: &mut Vcpu) -> Flow {
    let rax = v.vmcb.state.rax;
    if v.mv_open && rax & MAGIC_MASK == HYPERCALL_MAGIC {
        v.acct.hypercall(rax);
        let result = microvisor_call(v, rax as u32);
        v.vmcb.state.rax = result as u64;
        v.advance(VMMCALL_LEN);
        return Flow::Continue;
    }
    let (persona, mut cx) = v.persona_cx();
    let call = persona.get().hypercall(&mut cx);
    v.acct.hypercall(call.code);
    match call.action {
        HypercallAction::Return => v.advance(VMMCALL_LEN),
        HypercallAction::Undefined => v.inject_exception(UD, None),
        HypercallAction::Exit(value) => {
            return Flow::End(crate::outcome::End::GuestExit { value, size: 4 })
        }
    }
    Flow::Continue
}

fn microvisor_call(v: &mut Vcpu, c: u32) -> i64 {
    let (arg1, arg2, arg3) = (v.regs.rbx, v.regs.rcx, v.regs.rdx);
    match c {
        code::COUNTERS_RESET => {
            v.acct.reset_window();
            0
        }
        code::COUNTER_READ => v
            .acct
            .window
            .read(arg1, arg2)
            .map_or(ERR_INVALID, |n| n as i64),
        code::EXITS_TOTAL => v.acct.window.total as i64,
        code::COUNTERS_COPY => {
            let snap = v.acct.window.snapshot();
            copy_snapshot(v, &snap, arg1, arg2)
        }
        code::VCPU_COUNTERS_COPY => {
            if arg1 >= v.vcpus() as u64 {
                return ERR_INVALID;
            }
            let snap = v.acct.vcpus[arg1 as usize].window.snapshot();
            copy_snapshot(v, &snap, arg2, arg3)
        }
        code::VCPU_STOLEN_NS => {
            if arg1 >= v.vcpus() as u64 {
                return ERR_INVALID;
            }
            v.stolen_ns(arg1 as usize).min(i64::MAX as u64) as i64
        }
        code::VCPUS => v.vcpus() as i64,
        _ => ERR_UNKNOWN,
    }
}

/// Writes `snap` to guest-physical `gpa` if the `len`-byte buffer there
/// holds it and lies inside guest RAM.
fn copy_snapshot(v: &Vcpu, snap: &ExitSnapshot, gpa: u64, len: u64) -> i64 {
    let size = core::mem::size_of::<ExitSnapshot>() as u64;
    if len < size || !v.mem.contains(gpa, len) {
        return ERR_INVALID;
    }
    match v.mem.write(gpa, snap.as_bytes()) {
        Ok(()) => size as i64,
        Err(_) => ERR_INVALID,
    }
}
