//! A 256-entry IDT whose gates all lead to one Rust dispatcher, with
//! per-vector handlers installable at run time.
//!
//! Every vector has a 16-byte assembly stub that pushes a dummy error code
//! (for vectors without one) and the vector number, then a common path saves
//! all general registers into an [`InterruptFrame`], calls the dispatcher
//! and returns with IRETQ, so a handler may change registers or RIP (e.g.
//! to skip a faulting instruction).
//!
//! Vectors without a handler: exceptions (0..32) and unexpected interrupts
//! panic with a full description (the binary's panic handler then reports
//! it and exits); [`SPURIOUS_VECTOR`] is ignored.

use crate::gdt::{self, DescriptorTablePointer, Loader};
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicPtr, AtomicU64, Ordering};

/// Vector used for the local APIC's spurious interrupts; ignored.
pub const SPURIOUS_VECTOR: u8 = 0xff;

/// Registers saved on interrupt entry, in stack order.
#[derive(Debug)]
#[repr(C)]
#[allow(missing_docs)]
pub struct InterruptFrame {
    pub rax: u64,
    pub rbx: u64,
    pub rcx: u64,
    pub rdx: u64,
    pub rsi: u64,
    pub rdi: u64,
    pub rbp: u64,
    pub r8: u64,
    pub r9: u64,
    pub r10: u64,
    pub r11: u64,
    pub r12: u64,
    pub r13: u64,
    pub r14: u64,
    pub r15: u64,
    /// The vector number.
    pub vector: u64,
    /// The CPU's error code, or 0 for vectors without one.
    pub error_code: u64,
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

// The layout `bootkit_isr_common` builds: its 15 pushes (RAX last, so
// lowest), the stub's vector and error code, then the CPU's 64-bit interrupt
// frame (Intel SDM vol. 3A, 6.14.1; AMD APM vol. 2, 8.9.3).
const _: () = {
    use core::mem::{offset_of, size_of};
    assert!(size_of::<InterruptFrame>() == 22 * 8);
    assert!(offset_of!(InterruptFrame, rax) == 0x00);
    assert!(offset_of!(InterruptFrame, r15) == 0x70);
    assert!(offset_of!(InterruptFrame, vector) == 0x78);
    assert!(offset_of!(InterruptFrame, error_code) == 0x80);
    assert!(offset_of!(InterruptFrame, rip) == 0x88);
    assert!(offset_of!(InterruptFrame, ss) == 0xa8);
};

/// A handler for one vector. It runs with interrupts disabled.
pub type Handler = fn(&mut InterruptFrame);

/// Short mnemonic of an exception vector.
pub fn exception_name(vector: u64) -> &'static str {
    const NAMES: [&str; 32] = [
        "#DE", "#DB", "NMI", "#BP", "#OF", "#BR", "#UD", "#NM", "#DF", "CSO", "#TS", "#NP", "#SS",
        "#GP", "#PF", "?15", "#MF", "#AC", "#MC", "#XM", "#VE", "#CP", "?22", "?23", "?24", "?25",
        "?26", "?27", "#HV", "#VC", "#SX", "?31",
    ];
    NAMES.get(vector as usize).copied().unwrap_or("IRQ")
}

impl core::fmt::Display for InterruptFrame {
    /// `#GP (vector 13) error=0x0 rip=0x... cs=0x8 rflags=0x... rsp=0x... cr2=0x...`
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "{} (vector {}) error={:#x} rip={:#x} cs={:#x} rflags={:#x} rsp={:#x} cr2={:#x}",
            exception_name(self.vector),
            self.vector,
            self.error_code,
            self.rip,
            self.cs,
            self.rflags,
            self.rsp,
            crate::cpu::cr2()
        )
    }
}

#[derive(Clone, Copy)]
#[repr(C)]
struct Gate {
    offset_low: u16,
    selector: u16,
    ist: u8,
    type_attr: u8,
    offset_mid: u16,
    offset_high: u32,
    reserved: u32,
}

// A 64-bit IDT gate is 16 bytes (Intel SDM vol. 3A, 6.14.1, figure 6-8).
const _: () = assert!(core::mem::size_of::<Gate>() == 16);

const EMPTY_GATE: Gate = Gate {
    offset_low: 0,
    selector: 0,
    ist: 0,
    type_attr: 0,
    offset_mid: 0,
    offset_high: 0,
    reserved: 0,
};

#[repr(C, align(16))]
struct Idt([Gate; 256]);

struct IdtCell(UnsafeCell<Idt>);

// SAFETY: written only by `init` before LIDT; the CPU reads it afterwards.
unsafe impl Sync for IdtCell {}

static IDT: IdtCell = IdtCell(UnsafeCell::new(Idt([EMPTY_GATE; 256])));

#[allow(clippy::declare_interior_mutable_const)]
const NO_HANDLER: AtomicPtr<()> = AtomicPtr::new(core::ptr::null_mut());
static HANDLERS: [AtomicPtr<()>; 256] = [NO_HANDLER; 256];
static COUNTS: [AtomicU64; 256] = [const { AtomicU64::new(0) }; 256];

extern "C" {
    static bootkit_isr_stubs: u8;
}

// One 16-byte stub per vector, then the common save/dispatch/restore path.
// Vectors 8, 10-14, 17, 21, 29 and 30 push an error code themselves
// (Intel SDM vol. 3A, table 6-1; AMD APM vol. 2, 8.2).
core::arch::global_asm!(
    ".pushsection .text.bootkit.isr, \"ax\", @progbits",
    ".balign 16",
    ".globl bootkit_isr_stubs",
    "bootkit_isr_stubs:",
    ".set bootkit_vec, 0",
    ".rept 256",
    ".balign 16",
    ".if (bootkit_vec == 8) || (bootkit_vec >= 10 && bootkit_vec <= 14) || (bootkit_vec == 17) || (bootkit_vec == 21) || (bootkit_vec == 29) || (bootkit_vec == 30)",
    "pushq $bootkit_vec",
    ".else",
    "pushq $0",
    "pushq $bootkit_vec",
    ".endif",
    "jmp bootkit_isr_common",
    ".set bootkit_vec, bootkit_vec + 1",
    ".endr",
    "bootkit_isr_common:",
    "pushq %r15",
    "pushq %r14",
    "pushq %r13",
    "pushq %r12",
    "pushq %r11",
    "pushq %r10",
    "pushq %r9",
    "pushq %r8",
    "pushq %rbp",
    "pushq %rdi",
    "pushq %rsi",
    "pushq %rdx",
    "pushq %rcx",
    "pushq %rbx",
    "pushq %rax",
    // The CPU aligned RSP to 16 before pushing its 5-word frame; with the
    // 2 + 15 words pushed here RSP is 16-aligned again for the call.
    "movq %rsp, %rdi",
    "cld",
    "call bootkit_isr_dispatch",
    "popq %rax",
    "popq %rbx",
    "popq %rcx",
    "popq %rdx",
    "popq %rsi",
    "popq %rdi",
    "popq %rbp",
    "popq %r8",
    "popq %r9",
    "popq %r10",
    "popq %r11",
    "popq %r12",
    "popq %r13",
    "popq %r14",
    "popq %r15",
    "addq $16, %rsp",
    "iretq",
    ".popsection",
    options(att_syntax)
);

#[unsafe(no_mangle)]
extern "C" fn bootkit_isr_dispatch(frame: &mut InterruptFrame) {
    let vector = (frame.vector & 0xff) as usize;
    COUNTS[vector].fetch_add(1, Ordering::Relaxed);
    let ptr = HANDLERS[vector].load(Ordering::Acquire);
    if !ptr.is_null() {
        // SAFETY: HANDLERS only ever holds null or a `Handler` cast to a
        // pointer by `set_handler`.
        let handler: Handler = unsafe { core::mem::transmute::<*mut (), Handler>(ptr) };
        handler(frame);
    } else if vector == usize::from(SPURIOUS_VECTOR) {
        // Spurious APIC interrupts need no EOI and carry no work.
    } else if vector < 32 {
        panic!("unexpected exception {frame}");
    } else {
        panic!(
            "unexpected interrupt vector {vector} at rip={:#x}",
            frame.rip
        );
    }
}

/// Installs `handler` for `vector` (or removes it with `None`), returning
/// the previous handler.
pub fn set_handler(vector: u8, handler: Option<Handler>) -> Option<Handler> {
    let new = handler.map_or(core::ptr::null_mut(), |h| h as *mut ());
    let old = HANDLERS[usize::from(vector)].swap(new, Ordering::AcqRel);
    // SAFETY: as in the dispatcher: null or a `Handler`.
    (!old.is_null()).then(|| unsafe { core::mem::transmute::<*mut (), Handler>(old) })
}

/// How many times `vector` was taken since boot.
pub fn count(vector: u8) -> u64 {
    COUNTS[usize::from(vector)].load(Ordering::Relaxed)
}

/// The IDT pointer (valid after [`init`]), e.g. to compare with SIDT.
pub fn pointer() -> DescriptorTablePointer<u64> {
    DescriptorTablePointer {
        limit: (core::mem::size_of::<Idt>() - 1) as u16,
        base: IDT.0.get().cast::<u64>().cast_const(),
    }
}

/// Fills every gate (interrupt gates, DPL 0, kernel code selector; the
/// double fault on its IST stack) and loads the IDT with `load`.
///
/// # Safety
///
/// [`gdt::init`] must have run (the gates use its code selector and IST);
/// `load` must load IDTR with the given pointer.
pub unsafe fn init(load: Loader) {
    let stubs = core::ptr::addr_of!(bootkit_isr_stubs) as u64;
    // SAFETY: the IDT is written here before it is loaded; if `init` runs
    // again the gates are rewritten with identical values, which is benign
    // even while loaded.
    let idt = unsafe { &mut *IDT.0.get() };
    for (vector, gate) in idt.0.iter_mut().enumerate() {
        let addr = stubs + 16 * vector as u64;
        *gate = Gate {
            offset_low: addr as u16,
            selector: gdt::CODE,
            ist: if vector == 8 {
                gdt::IST_DOUBLE_FAULT
            } else {
                0
            },
            type_attr: 0x8e, // present, DPL 0, 64-bit interrupt gate
            offset_mid: (addr >> 16) as u16,
            offset_high: (addr >> 32) as u32,
            reserved: 0,
        };
    }
    let ptr = pointer();
    // SAFETY: the IDT is complete and static; `load` loads it (caller).
    unsafe { load(&ptr) };
}

/// Plain LIDT, for binaries that do not use paravirt-ops.
///
/// # Safety
///
/// `ptr` must describe a valid IDT that outlives its use.
pub unsafe fn lidt(ptr: &DescriptorTablePointer<u64>) {
    // SAFETY: forwarded to the caller.
    unsafe { x86::dtables::lidt(ptr) }
}
