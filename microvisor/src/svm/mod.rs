//! AMD SVM: capability checks, enabling, and the pieces a guest needs
//! (VMCB, nested page tables, permission maps, world switch).

pub mod npt;
pub mod perm;
pub mod vmcb;
pub mod vmrun;

use crate::hw::cpu::{cpuid, rdmsr, wrmsr, EFER_SVME, MSR_EFER, MSR_VM_CR, MSR_VM_HSAVE_PA};
use crate::once::{phys, TakeOnce};

/// SVM features found on the host.
#[derive(Clone, Copy, Debug)]
pub struct Features {
    /// Number of ASIDs.
    pub asids: u32,
    /// Nested paging.
    pub npt: bool,
    /// NRIP save (never under QEMU TCG; the microvisor does not rely on it).
    pub nrips: bool,
}

#[repr(C, align(4096))]
struct Page([u8; 4096]);

/// Host save area written by VMRUN (VM_HSAVE_PA).
static HSAVE: TakeOnce<Page> = TakeOnce::new(Page([0; 4096]));

/// Checks CPUID for SVM with nested paging and VM_CR for SVMDIS.
///
/// CPUID 8000_0001:ECX[2] SVM, 8000_000A:EDX[0] NP, EDX[3] NRIPS, EBX ASIDs
/// (APM vol. 2, 15.4 and CPUID specification #25481).
pub fn detect() -> Result<Features, &'static str> {
    if cpuid(0x8000_0000, 0).eax < 0x8000_000A {
        return Err("CPUID has no leaf 0x8000000A");
    }
    if cpuid(0x8000_0001, 0).ecx & (1 << 2) == 0 {
        return Err("CPU has no SVM (run QEMU with -accel tcg -cpu max)");
    }
    let a = cpuid(0x8000_000A, 0);
    let f = Features {
        asids: a.ebx,
        npt: a.edx & 1 != 0,
        nrips: a.edx & (1 << 3) != 0,
    };
    if !f.npt {
        return Err("SVM without nested paging");
    }
    // SAFETY: VM_CR exists on every CPU reporting SVM.
    if unsafe { rdmsr(MSR_VM_CR) } & (1 << 4) != 0 {
        return Err("SVM disabled by firmware (VM_CR.SVMDIS)");
    }
    Ok(f)
}

/// Sets EFER.SVME and VM_HSAVE_PA (APM vol. 2, 15.4 and 15.30.4).
pub fn enable() -> Result<(), &'static str> {
    let hsave = HSAVE.take().ok_or("SVM already enabled")?;
    // SAFETY: SVM was detected; setting SVME only enables the SVM
    // instructions. HSAVE is a 4 KiB-aligned page owned by VMRUN from now on.
    unsafe {
        wrmsr(MSR_EFER, rdmsr(MSR_EFER) | EFER_SVME);
        wrmsr(MSR_VM_HSAVE_PA, phys(hsave));
    }
    Ok(())
}
