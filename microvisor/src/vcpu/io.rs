//! IN/OUT exits. The I/O permission map intercepts every port; each access
//! is counted per port.
//!
//! - COM1 (0x3F8..0x3FF), the PIT (0x40..0x43) and port 0x61 (PIT gate and
//!   speaker) are forwarded to QEMU's real devices, byte for byte; with
//!   `pit=off` the PIT's ports and 0x61 are empty instead (all ones, writes
//!   ignored), as on a machine without a PIT.
//! - 0x80 (POST / io_delay) is ignored.
//! - 0xF4 (isa-debug-exit) ends the run with the guest's value.
//! - The persona's ports.
//! - Anything else reads all ones and ignores writes, as an empty ISA bus.
//!
//! EXITINFO1 (APM vol. 2, 15.10.2, figure 15-2): bit 0 IN, bit 2 string,
//! bit 3 REP, bits 4..6 operand size, bits 16..31 port. EXITINFO2 is the RIP
//! of the next instruction, so no decoding is needed.

use super::{Flow, Vcpu};
use crate::hw::port;
use crate::outcome::{End, FaultKind};
use pvops_abi::exit::DEBUG_EXIT_PORT;

const COM1: core::ops::RangeInclusive<u16> = 0x3F8..=0x3FF;
const PIT: core::ops::RangeInclusive<u16> = 0x40..=0x43;
const PORT_61: u16 = 0x61;
const POST: u16 = 0x80;

/// Handles an IOIO exit.
pub fn handle(v: &mut Vcpu) -> Flow {
    let info = v.vmcb.control.exit_info1;
    let next_rip = v.vmcb.control.exit_info2;
    let p = (info >> 16) as u16;
    let is_in = info & 1 != 0;
    let size: u8 = if info & 0x10 != 0 {
        1
    } else if info & 0x20 != 0 {
        2
    } else {
        4
    };
    v.acct.port(p);
    if info & 0b1100 != 0 {
        return Flow::End(End::fault(
            FaultKind::Unsupported,
            format_args!(
                "string/REP I/O on port {p:#x} at rip={:#x} is not emulated",
                v.vmcb.state.rip
            ),
        ));
    }
    let mask = if size == 4 {
        u32::MAX
    } else {
        (1u32 << (size * 8)) - 1
    };
    let no_pit = !v.pit && is_pit(p);
    if is_in {
        let value = if no_pit {
            u32::MAX
        } else if forwarded(p) {
            port::read(p, size)
        } else {
            let (persona, mut cx) = v.persona_cx();
            persona.get().io_in(&mut cx, p, size).unwrap_or(u32::MAX)
        } & mask;
        let rax = &mut v.vmcb.state.rax;
        // A 32-bit IN zero-extends into RAX; 8/16-bit INs merge.
        *rax = if size == 4 {
            value as u64
        } else {
            (*rax & !(mask as u64)) | value as u64
        };
    } else {
        let value = v.vmcb.state.rax as u32 & mask;
        if no_pit {
            // Nothing decodes the port: the write is lost.
        } else if forwarded(p) {
            if p == *COM1.start() {
                v.serial_mid_line = value as u8 != b'\n';
            }
            port::write(p, size, value);
        } else if p == DEBUG_EXIT_PORT {
            return Flow::End(End::GuestExit { value, size });
        } else if p != POST {
            let (persona, mut cx) = v.persona_cx();
            // Unknown ports ignore writes (counted above).
            let _ = persona.get().io_out(&mut cx, p, size, value);
        }
    }
    v.vmcb.state.rip = next_rip;
    v.vmcb.control.int_state &= !1;
    Flow::Continue
}

fn forwarded(p: u16) -> bool {
    COM1.contains(&p) || is_pit(p)
}

/// The PIT's ports and port 0x61 (its channel 2 gate and output).
fn is_pit(p: u16) -> bool {
    PIT.contains(&p) || p == PORT_61
}
