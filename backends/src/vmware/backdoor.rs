//! The one unsafe leaf: executing a backdoor call.
//!
//! Everything else (what to load, how to read the answer) is plain data in
//! [`pvops_abi::vmware`], decoded and tested on the host.

use pvops_abi::vmware::{Channel, Registers, Request, Response};

/// Executes `request` over `channel` and returns the registers afterwards.
///
/// Register convention (open-vm-tools `backdoor_def.h`, Linux
/// `asm/vmware.h`): EAX = magic, EBX, ECX = command, EDX = port (I/O form) or
/// flags (hypercall forms), ESI, EDI in; the same six registers out.
///
/// # Safety
///
/// - The caller runs at CPL 0 (or with I/O permission for the port), as
///   pvops always does; otherwise `in` raises #GP.
/// - For [`Channel::Vmcall`] and [`Channel::Vmmcall`], the hypervisor has
///   announced that instruction (0x4000_0010.ECX); otherwise it raises #UD.
/// - The request must not make the hypervisor write guest memory the caller
///   does not own: STEALCLOCK's address must be a live, 64-byte aligned area
///   reserved for the hypervisor for as long as it stays registered.
pub(crate) unsafe fn call(channel: Channel, request: &Request) -> Response {
    let r = request.registers(channel);
    #[cfg(target_arch = "x86_64")]
    {
        let (mut eax, mut ecx, mut edx, mut esi, mut edi) = (r.eax, r.ecx, r.edx, r.esi, r.edi);
        // RBX cannot be named as an asm operand (LLVM reserves it), so it is
        // exchanged with a scratch register around the instruction.
        let mut rbx = u64::from(r.ebx);
        // The three channels differ only in the instruction. Every register
        // the hypervisor may change is an output; flags and memory are not
        // assumed preserved.
        macro_rules! backdoor {
            ($insn:literal) => {
                core::arch::asm!(
                    "xchg {b}, rbx",
                    $insn,
                    "xchg {b}, rbx",
                    b = inout(reg) rbx,
                    inout("eax") eax,
                    inout("ecx") ecx,
                    inout("edx") edx,
                    inout("esi") esi,
                    inout("edi") edi,
                    options(nostack),
                )
            };
        }
        match channel {
            // SAFETY: the caller guarantees CPL 0, where IN is always
            // permitted. On VMware (and QEMU's vmport) the access traps to
            // the hypervisor, which updates the six registers and nothing
            // else this code can observe; with no backdoor behind the port
            // the read returns all-ones in EAX and leaves the rest unchanged.
            Channel::IoPort => unsafe { backdoor!("in eax, dx") },
            // SAFETY: the caller guarantees the hypervisor announced VMCALL,
            // so it exits to the hypervisor, which answers in the same six
            // registers (Linux `vmware_hypercall_slow`).
            Channel::Vmcall => unsafe { backdoor!("vmcall") },
            // SAFETY: as for VMCALL, with VMMCALL announced.
            Channel::Vmmcall => unsafe { backdoor!("vmmcall") },
        }
        Registers {
            eax,
            ebx: rbx as u32,
            ecx,
            edx,
            esi,
            edi,
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        // No backdoor off x86-64: answer like an absent port.
        Registers { eax: u32::MAX, ..r }
    }
}
