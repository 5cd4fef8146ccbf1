//! Starting application processors: a real-mode trampoline and the
//! INIT-SIPI-SIPI sequence (Intel SDM vol. 3A, 9.4.4.1 "Typical BSP
//! Initialization Sequence" and 9.4.4.2; AMD APM vol. 2, 16.5).
//!
//! An AP woken by a Start-up IPI begins in real mode at `vector << 12`
//! (here [`TRAMPOLINE_PA`], vector 8). The trampoline, copied there once,
//! loads its own small GDT, enters protected mode, enables PAE, loads the
//! kernel's CR3 (which must lie below 4 GiB), sets EFER.LME (and the boot
//! CPU's other EFER bits), enables paging, far-jumps to 64-bit code, loads
//! the boot CPU's CR0 and CR4, switches to the stack the kernel gave and
//! calls the kernel's entry with one argument. The page at
//! [`TRAMPOLINE_PA`] must be free RAM (the first MiB is never handed out by
//! the example kernel's frame allocator) and identity mapped, executable.
//!
//! APs start one at a time ([`start_ap`] returns once the AP checked in, or
//! gives up): the trampoline has one parameter block.

use core::sync::atomic::{AtomicBool, Ordering};

/// Physical address of the trampoline (SIPI vector `TRAMPOLINE_PA >> 12`).
pub const TRAMPOLINE_PA: u64 = 0x8000;
/// Offset of the parameter block in the trampoline page.
const PARAMS: usize = 0xF00;

/// The parameter block at `TRAMPOLINE_PA + PARAMS`, laid out as the
/// assembly below reads it.
#[repr(C)]
struct Params {
    /// GDTR: limit (2 bytes), base (4 bytes), padding.
    gdtr: [u16; 4],
    _pad: u64,
    /// The trampoline's GDT: null, 32-bit code 0x08, data 0x10, 64-bit
    /// code 0x18.
    gdt: [u64; 4],
    _pad2: [u64; 2],
    cr3: u64,
    efer: u64,
    cr4: u64,
    cr0: u64,
    stack_top: u64,
    entry: u64,
    arg: u64,
}
const _: () = assert!(core::mem::offset_of!(Params, gdt) == 0x10);
const _: () = assert!(core::mem::offset_of!(Params, cr3) == 0x40);
const _: () = assert!(core::mem::offset_of!(Params, arg) == 0x70);
const _: () = assert!(PARAMS + core::mem::size_of::<Params>() <= 4096);

core::arch::global_asm!(
    ".pushsection .text.bootkit_ap_trampoline, \"ax\"",
    ".global bootkit_ap_trampoline_start",
    ".global bootkit_ap_trampoline_end",
    ".code16",
    "bootkit_ap_trampoline_start:",
    "cli",
    "cld",
    "xor ax, ax",
    "mov ds, ax",
    "mov es, ax",
    "mov ss, ax",
    "lgdt [{params}]",
    "mov eax, cr0",
    "or eax, 1",
    "mov cr0, eax",
    // ljmpl 0x08:pm32 (66 EA imm32 imm16)
    ".byte 0x66, 0xEA",
    ".long {base} + (2f - bootkit_ap_trampoline_start)",
    ".word 0x08",
    ".code32",
    "2:",
    "mov ax, 0x10",
    "mov ds, ax",
    "mov es, ax",
    "mov ss, ax",
    "mov eax, cr4",
    "or eax, 0x20", // CR4.PAE
    "mov cr4, eax",
    "mov eax, dword ptr [{params} + 0x40]",
    "mov cr3, eax",
    "mov ecx, 0xC0000080", // IA32_EFER
    "mov eax, dword ptr [{params} + 0x48]",
    "mov edx, dword ptr [{params} + 0x4C]",
    "wrmsr",
    "mov eax, cr0",
    "or eax, 0x80000001", // CR0.PG | CR0.PE
    "mov cr0, eax",
    // ljmp 0x18:lm64 (EA imm32 imm16)
    ".byte 0xEA",
    ".long {base} + (3f - bootkit_ap_trampoline_start)",
    ".word 0x18",
    ".code64",
    "3:",
    "mov ax, 0x10",
    "mov ds, ax",
    "mov es, ax",
    "mov ss, ax",
    "xor eax, eax",
    "mov fs, ax",
    "mov gs, ax",
    "mov rax, qword ptr [{params} + 0x50]",
    "mov cr4, rax",
    "mov rax, qword ptr [{params} + 0x58]",
    "mov cr0, rax",
    "mov rsp, qword ptr [{params} + 0x60]",
    "mov rdi, qword ptr [{params} + 0x70]",
    "mov rax, qword ptr [{params} + 0x68]",
    "call rax",
    "4:",
    "cli",
    "hlt",
    "jmp 4b",
    "bootkit_ap_trampoline_end:",
    ".popsection",
    base = const TRAMPOLINE_PA,
    params = const TRAMPOLINE_PA + PARAMS as u64,
);

unsafe extern "C" {
    static bootkit_ap_trampoline_start: u8;
    static bootkit_ap_trampoline_end: u8;
}

/// What the AP runs once in long mode: `entry(arg)` on `stack_top`.
#[derive(Clone, Copy, Debug)]
pub struct ApStart {
    /// The AP's local APIC ID.
    pub apic_id: u32,
    /// Top of the AP's stack (16-byte aligned), identity mapped.
    pub stack_top: u64,
    /// The kernel's AP entry (never returns; it must load its own GDT and
    /// IDT first thing).
    pub entry: extern "C" fn(u64) -> !,
    /// Its argument.
    pub arg: u64,
}

/// The IPIs of the start-up sequence, which the kernel sends through its
/// local APIC driver (e.g. `pvops::native::apic::send_init` /
/// `send_startup`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartupIpi {
    /// INIT, level assert, to this APIC ID.
    Init(u32),
    /// Start-up to this APIC ID, with this vector (start page).
    Startup(u32, u8),
}

/// Why an AP did not start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartError {
    /// The kernel's CR3 is above 4 GiB (the trampoline loads it in 32-bit
    /// mode).
    Cr3Above4GiB,
    /// The AP did not check in after INIT, two SIPIs and the wait.
    NoAnswer,
}

impl core::fmt::Display for StartError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            StartError::Cr3Above4GiB => f.write_str("CR3 above 4 GiB"),
            StartError::NoAnswer => f.write_str("no answer to INIT-SIPI-SIPI"),
        }
    }
}

static COPIED: AtomicBool = AtomicBool::new(false);

/// Starts one AP with INIT, SIPI and (if it has not checked in after
/// 200 us) a second SIPI, sent with `send`, then waits up to `wait_ms` for
/// `checked_in`. `delay_us` waits at least that many microseconds.
///
/// # Safety
///
/// Ring 0, on the boot CPU, one AP at a time; the trampoline page
/// ([`TRAMPOLINE_PA`]) is free RAM, identity mapped and executable, as is
/// the stack; `entry` is sound to run on the AP with that stack.
pub unsafe fn start_ap(
    ap: &ApStart,
    send: &dyn Fn(StartupIpi),
    delay_us: &dyn Fn(u64),
    checked_in: &dyn Fn() -> bool,
    wait_ms: u64,
) -> Result<(), StartError> {
    // SAFETY: reading control registers and EFER in ring 0 has no effect.
    let (cr0, cr3, cr4, efer) = unsafe {
        (
            x86::controlregs::cr0().bits() as u64,
            x86::controlregs::cr3(),
            x86::controlregs::cr4().bits() as u64,
            x86::msr::rdmsr(x86::msr::IA32_EFER),
        )
    };
    if cr3 >= 4 << 30 {
        return Err(StartError::Cr3Above4GiB);
    }
    let page = TRAMPOLINE_PA as usize as *mut u8;
    if !COPIED.swap(true, Ordering::SeqCst) {
        let start = core::ptr::addr_of!(bootkit_ap_trampoline_start);
        let end = core::ptr::addr_of!(bootkit_ap_trampoline_end);
        let len = end as usize - start as usize;
        assert!(len <= PARAMS, "AP trampoline too long ({len} bytes)");
        // SAFETY: the caller lends the page; the code is `len` bytes of
        // this image's text.
        unsafe { core::ptr::copy_nonoverlapping(start, page, len) };
    }
    let params = Params {
        gdtr: [
            31,
            (TRAMPOLINE_PA as u16).wrapping_add(PARAMS as u16 + 0x10),
            0,
            0,
        ],
        _pad: 0,
        gdt: [
            0,
            0x00cf_9a00_0000_ffff, // 32-bit code
            0x00cf_9200_0000_ffff, // data
            0x00af_9a00_0000_ffff, // 64-bit code
        ],
        _pad2: [0; 2],
        cr3,
        // EFER.LMA (bit 10) is set by the CPU when paging turns on.
        efer: efer & !(1 << 10),
        cr4,
        cr0,
        stack_top: ap.stack_top,
        entry: ap.entry as usize as u64,
        arg: ap.arg,
    };
    // SAFETY: the parameter block lies inside the lent page, past the code.
    unsafe { core::ptr::write_volatile(page.add(PARAMS).cast::<Params>(), params) };
    core::sync::atomic::fence(Ordering::SeqCst);
    let vector = (TRAMPOLINE_PA >> 12) as u8;
    send(StartupIpi::Init(ap.apic_id));
    delay_us(10_000);
    send(StartupIpi::Startup(ap.apic_id, vector));
    delay_us(200);
    if !checked_in() {
        send(StartupIpi::Startup(ap.apic_id, vector));
    }
    for _ in 0..wait_ms.max(1) * 10 {
        if checked_in() {
            return Ok(());
        }
        delay_us(100);
    }
    if checked_in() {
        Ok(())
    } else {
        Err(StartError::NoAnswer)
    }
}
