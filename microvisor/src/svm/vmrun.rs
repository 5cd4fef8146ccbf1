//! The world switch: one VMRUN round trip.
//!
//! VMRUN saves and restores only RAX, RSP, RIP, RFLAGS, CR0/3/4, EFER and
//! the CS/SS/DS/ES/GDTR/IDTR state (APM vol. 2, 15.5.1 and 15.6), so the
//! other general-purpose registers are swapped here, and FS/GS/TR/LDTR/
//! KernelGsBase/STAR/LSTAR/CSTAR/SFMASK/SYSENTER_* are swapped with VMSAVE
//! and VMLOAD (APM vol. 2, 15.5.2) between the guest's VMCB and a host save
//! area.
//!
//! Interrupts: the host runs with IF=0 and GIF=1. Around VMRUN it does
//! `clgi; sti; vmrun; ...; stgi; cli`: the guest runs with host IF=1, so
//! with V_INTR_MASKING and the INTR intercept a physical interrupt (the
//! microvisor's LAPIC timer) forces `#VMEXIT(INTR)`, and the interrupt is
//! taken by the host IDT right after STGI (APM vol. 2, 15.17 and 15.21).

use core::arch::naked_asm;
use core::mem::{offset_of, size_of};
use static_assertions::const_assert_eq;

/// Guest general-purpose registers not held in the VMCB (RAX and RSP are).
#[derive(Clone, Copy, Debug, Default)]
#[repr(C)]
pub struct GuestRegs {
    /// RBX.
    pub rbx: u64,
    /// RCX.
    pub rcx: u64,
    /// RDX.
    pub rdx: u64,
    /// RSI.
    pub rsi: u64,
    /// RDI.
    pub rdi: u64,
    /// RBP.
    pub rbp: u64,
    /// R8.
    pub r8: u64,
    /// R9.
    pub r9: u64,
    /// R10.
    pub r10: u64,
    /// R11.
    pub r11: u64,
    /// R12.
    pub r12: u64,
    /// R13.
    pub r13: u64,
    /// R14.
    pub r14: u64,
    /// R15.
    pub r15: u64,
}

// The offsets the assembly in `vmrun` hard-codes.
const_assert_eq!(size_of::<GuestRegs>(), 0x70);
const_assert_eq!(offset_of!(GuestRegs, rbx), 0x00);
const_assert_eq!(offset_of!(GuestRegs, rcx), 0x08);
const_assert_eq!(offset_of!(GuestRegs, rdx), 0x10);
const_assert_eq!(offset_of!(GuestRegs, rsi), 0x18);
const_assert_eq!(offset_of!(GuestRegs, rdi), 0x20);
const_assert_eq!(offset_of!(GuestRegs, rbp), 0x28);
const_assert_eq!(offset_of!(GuestRegs, r8), 0x30);
const_assert_eq!(offset_of!(GuestRegs, r9), 0x38);
const_assert_eq!(offset_of!(GuestRegs, r10), 0x40);
const_assert_eq!(offset_of!(GuestRegs, r11), 0x48);
const_assert_eq!(offset_of!(GuestRegs, r12), 0x50);
const_assert_eq!(offset_of!(GuestRegs, r13), 0x58);
const_assert_eq!(offset_of!(GuestRegs, r14), 0x60);
const_assert_eq!(offset_of!(GuestRegs, r15), 0x68);

/// Runs the guest until the next #VMEXIT.
///
/// # Safety
/// `vmcb_pa` must be the physical address of a valid, 4 KiB-aligned VMCB
/// whose guest cannot reach host memory (nested paging), `host_save_pa` a
/// 4 KiB-aligned page for VMSAVE, and SVM must be enabled with
/// VM_HSAVE_PA set. Host IF must be 0 on entry and is 0 on return.
#[unsafe(naked)]
pub unsafe extern "sysv64" fn vmrun(vmcb_pa: u64, regs: *mut GuestRegs, host_save_pa: u64) {
    naked_asm!(
        // Callee-saved host registers.
        "push rbp",
        "push rbx",
        "push r12",
        "push r13",
        "push r14",
        "push r15",
        // [rsp+16] = regs, [rsp+8] = vmcb_pa, [rsp] = host_save_pa.
        "push rsi",
        "push rdi",
        "push rdx",
        // Host FS/GS/TR/LDTR/syscall MSRs out, guest's in.
        "mov rax, rdx",
        "vmsave rax",
        "mov rax, rdi",
        "vmload rax",
        // Guest GPRs (RSI last: it holds the pointer).
        "mov rbx, [rsi + 0x00]",
        "mov rcx, [rsi + 0x08]",
        "mov rdx, [rsi + 0x10]",
        "mov rdi, [rsi + 0x20]",
        "mov rbp, [rsi + 0x28]",
        "mov r8,  [rsi + 0x30]",
        "mov r9,  [rsi + 0x38]",
        "mov r10, [rsi + 0x40]",
        "mov r11, [rsi + 0x48]",
        "mov r12, [rsi + 0x50]",
        "mov r13, [rsi + 0x58]",
        "mov r14, [rsi + 0x60]",
        "mov r15, [rsi + 0x68]",
        "mov rsi, [rsi + 0x18]",
        "clgi",
        "sti",
        "vmrun rax",
        // #VMEXIT: RAX = vmcb_pa and RSP restored from the host save area;
        // every other GPR holds a guest value. GIF = 0.
        "push rsi",
        "mov rsi, [rsp + 24]",
        "mov [rsi + 0x00], rbx",
        "mov [rsi + 0x08], rcx",
        "mov [rsi + 0x10], rdx",
        "mov [rsi + 0x20], rdi",
        "mov [rsi + 0x28], rbp",
        "mov [rsi + 0x30], r8",
        "mov [rsi + 0x38], r9",
        "mov [rsi + 0x40], r10",
        "mov [rsi + 0x48], r11",
        "mov [rsi + 0x50], r12",
        "mov [rsi + 0x58], r13",
        "mov [rsi + 0x60], r14",
        "mov [rsi + 0x68], r15",
        "pop rbx",
        "mov [rsi + 0x18], rbx",
        // Guest FS/GS/... back into its VMCB, host's back into the CPU.
        "mov rax, [rsp + 8]",
        "vmsave rax",
        "mov rax, [rsp]",
        "vmload rax",
        // Host IF is 1 (restored from the VMRUN-time RFLAGS): a pending
        // host interrupt is taken here.
        "stgi",
        "cli",
        "add rsp, 24",
        "pop r15",
        "pop r14",
        "pop r13",
        "pop r12",
        "pop rbx",
        "pop rbp",
        "ret",
    );
}
