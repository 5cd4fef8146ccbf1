//! The microvisor's hidden hypercall interface (pvops_abi::microvisor).
//!
//! VMMCALL raises #UD when no hypervisor intercepts it, so [`Microvisor`]
//! can only be obtained after the hidden CPUID leaf answered with the
//! signature.

use pvops_abi::microvisor::{CPUID_KEY, CPUID_LEAF, HYPERCALL_MAGIC, SIGNATURE};

/// Proof that the microvisor answered its CPUID leaf.
pub struct Microvisor(());

impl Microvisor {
    /// Looks for the microvisor through its hidden CPUID leaf (raw CPUID,
    /// not the pvops entry, which a backend may filter).
    pub fn detect() -> Option<Microvisor> {
        use pvops_probe::CpuidSource;
        let r = pvops_probe::NativeCpuid.cpuid(CPUID_LEAF, CPUID_KEY);
        let mut sig = [0u8; 12];
        sig[0..4].copy_from_slice(&r.ebx.to_le_bytes());
        sig[4..8].copy_from_slice(&r.ecx.to_le_bytes());
        sig[8..12].copy_from_slice(&r.edx.to_le_bytes());
        (&sig == SIGNATURE).then_some(Microvisor(()))
    }

    /// Makes hypercall `code` with RBX, RCX, RDX = `args`; returns RAX.
    pub fn call(&self, code: u32, args: [u64; 3]) -> i64 {
        let mut rax = HYPERCALL_MAGIC | u64::from(code);
        // SAFETY: `self` proves the microvisor answered its CPUID leaf, so
        // VMMCALL traps to it instead of raising #UD. The microvisor only
        // reads/writes guest memory at addresses passed as arguments, which
        // callers choose (see `counters_copy`). RBX is reserved by LLVM, so
        // it is swapped in and out around the call.
        unsafe {
            core::arch::asm!(
                "xchg {b}, rbx",
                "vmmcall",
                "xchg {b}, rbx",
                b = inout(reg) args[0] => _,
                inout("rax") rax,
                inout("rcx") args[1] => _,
                inout("rdx") args[2] => _,
                options(nostack)
            )
        };
        rax as i64
    }
}
