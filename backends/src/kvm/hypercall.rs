//! The KVM hypercall instruction (hypercalls.rst): number in RAX,
//! arguments in RBX, RCX, RDX, RSI, result in RAX; `VMCALL` on Intel and
//! `VMMCALL` on AMD. KVM patches either into the native one ("The
//! hypervisor can replace it with instructions that are guaranteed to be
//! supported"), but the patch is an exit and a write into guest text, so
//! the backend issues the CPU's own instruction, chosen from the probed
//! vendor.

use core::sync::atomic::{AtomicBool, Ordering};
use pvops_abi::kvm::HypercallInsn;

/// Whether `VMMCALL` (AMD) is used; else `VMCALL`.
static VMMCALL: AtomicBool = AtomicBool::new(false);

/// Chooses the instruction for all later hypercalls.
pub(crate) fn set_insn(insn: HypercallInsn) {
    VMMCALL.store(insn == HypercallInsn::Vmmcall, Ordering::Relaxed);
}

/// One KVM hypercall with `$insn`: number in RAX, arguments in RBX, RCX,
/// RDX, RSI (hypercalls.rst). RBX is reserved by LLVM, so it is swapped in
/// and out around the instruction.
macro_rules! kvm_hypercall {
    ($insn:literal, $rax:ident, $a:ident) => {
        core::arch::asm!(
            "xchg {a0}, rbx",
            $insn,
            "xchg {a0}, rbx",
            a0 = inout(reg) $a[0] => _,
            inout("rax") $rax,
            in("rcx") $a[1],
            in("rdx") $a[2],
            in("rsi") $a[3],
            options(nostack)
        )
    };
}

/// Makes hypercall `nr` with arguments `a`; returns RAX (negative KVM
/// errors, see `pvops_abi::kvm::err`).
pub(crate) fn call(nr: u64, a: [u64; 4]) -> i64 {
    let mut rax = nr;
    if VMMCALL.load(Ordering::Relaxed) {
        // SAFETY: the backend makes hypercalls only when KVM's signature
        // and the hypercall's feature bit are in CPUID; a KVM hypercall
        // reads only its registers (the ones used here take no guest
        // pointers) and returns in RAX.
        unsafe { kvm_hypercall!("vmmcall", rax, a) };
    } else {
        // SAFETY: as above, with VMCALL on a non-AMD CPU.
        unsafe { kvm_hypercall!("vmcall", rax, a) };
    }
    rax as i64
}
