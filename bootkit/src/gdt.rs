//! A runtime GDT with a TSS, so faults such as a double fault run on a
//! known-good stack (IST1).
//!
//! Layout: null, 64-bit code ([`CODE`]), data ([`DATA`]), 64-bit TSS
//! ([`TSS`], two slots).

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, Ordering};
pub use x86::dtables::DescriptorTablePointer;

/// Kernel code selector.
pub const CODE: u16 = 0x08;
/// Kernel data selector.
pub const DATA: u16 = 0x10;
/// TSS selector.
pub const TSS: u16 = 0x18;
/// IST index (1-based, as in the IDT gate) of the double-fault stack.
pub const IST_DOUBLE_FAULT: u8 = 1;

/// How a GDT or IDT pointer is loaded: plain LGDT/LIDT, or a paravirt-ops
/// table entry such as `pvops::cpu::load_gdt`.
pub type Loader = unsafe fn(&DescriptorTablePointer<u64>);

const IST_STACK_SIZE: usize = 16 * 1024;

#[repr(C, packed(4))]
struct TaskState {
    reserved0: u32,
    rsp: [u64; 3],
    reserved1: u64,
    ist: [u64; 7],
    reserved2: u64,
    reserved3: u16,
    iomap_base: u16,
}

#[repr(C, align(16))]
struct Tables {
    gdt: [u64; 5],
    tss: TaskState,
    ist_stack: [u8; IST_STACK_SIZE],
}

/// CPUs with a GDT and TSS of their own (index 0 is the boot CPU's; APs
/// take theirs with [`init_cpu`]).
pub const MAX_CPUS: usize = 16;

struct TablesCell(UnsafeCell<[Tables; MAX_CPUS]>);

// SAFETY: each CPU's tables are written once in `init_cpu` (guarded by
// its INITIALISED flag) before that CPU uses them; afterwards only that
// CPU reads them.
unsafe impl Sync for TablesCell {}

const EMPTY: Tables = Tables {
    gdt: [0; 5],
    tss: TaskState {
        reserved0: 0,
        rsp: [0; 3],
        reserved1: 0,
        ist: [0; 7],
        reserved2: 0,
        reserved3: 0,
        // Set in `init_cpu`, so the whole static (with its IST stacks) is
        // zero-initialised and lands in .bss, not in the image file.
        iomap_base: 0,
    },
    ist_stack: [0; IST_STACK_SIZE],
};

static TABLES: TablesCell = TablesCell(UnsafeCell::new([EMPTY; MAX_CPUS]));

static INITIALISED: [AtomicBool; MAX_CPUS] = [const { AtomicBool::new(false) }; MAX_CPUS];

fn tables(cpu: usize) -> *mut Tables {
    TABLES.0.get().cast::<Tables>().wrapping_add(cpu)
}

/// The boot CPU's GDT pointer (valid after [`init`]), e.g. to compare with
/// SGDT.
pub fn pointer() -> DescriptorTablePointer<u64> {
    pointer_of(0)
}

/// The GDT pointer of CPU slot `cpu` (valid after its [`init_cpu`]).
pub fn pointer_of(cpu: usize) -> DescriptorTablePointer<u64> {
    let t = tables(cpu.min(MAX_CPUS - 1));
    // SAFETY: only the address of the field is taken, no reference.
    let base = unsafe { core::ptr::addr_of!((*t).gdt) } as *const u64;
    DescriptorTablePointer {
        limit: (5 * 8 - 1) as u16,
        base,
    }
}

/// Builds the boot CPU's GDT and TSS, loads the GDT with `load`, reloads
/// CS, the data segments and TR. Only the first call does anything.
///
/// # Safety
///
/// Must run in ring 0 in long mode; `load` must load GDTR with the given
/// pointer (LGDT or an equivalent).
pub unsafe fn init(load: Loader) {
    // SAFETY: forwarded; slot 0 is the boot CPU's.
    let _ = unsafe { init_cpu(0, load) };
}

/// [`init`] for the CPU using slot `cpu` (below [`MAX_CPUS`]): each CPU
/// needs its own TSS (a TSS is marked busy when loaded, and the
/// double-fault stack must be its own). Returns false, doing nothing, for
/// a slot out of range or already taken.
///
/// # Safety
///
/// As [`init`], on the CPU that will use slot `cpu`.
pub unsafe fn init_cpu(cpu: usize, load: Loader) -> bool {
    if cpu >= MAX_CPUS || INITIALISED[cpu].swap(true, Ordering::SeqCst) {
        return false;
    }
    let t = tables(cpu);
    // SAFETY: first and only writer of this slot (INITIALISED), before the
    // CPU uses the tables; raw pointers avoid references to the packed TSS.
    unsafe {
        let ist_top = (core::ptr::addr_of!((*t).ist_stack) as u64 + IST_STACK_SIZE as u64) & !0xf;
        let tss = core::ptr::addr_of_mut!((*t).tss);
        // No I/O permission bitmap: its offset points past the TSS limit.
        core::ptr::addr_of_mut!((*tss).iomap_base)
            .write_unaligned(core::mem::size_of::<TaskState>() as u16);
        core::ptr::addr_of_mut!((*tss).ist)
            .cast::<u64>()
            .add(usize::from(IST_DOUBLE_FAULT - 1))
            .write_unaligned(ist_top);
        let tss_base = tss as u64;
        let tss_limit = (core::mem::size_of::<TaskState>() - 1) as u64;
        let gdt = &mut (*t).gdt;
        gdt[0] = 0;
        gdt[1] = 0x00af_9b00_0000_ffff; // 64-bit code, DPL 0, accessed
        gdt[2] = 0x00cf_9300_0000_ffff; // data, DPL 0, accessed
                                        // 64-bit available TSS (type 9), present (AMD APM vol. 2, 4.8.3).
        gdt[3] = (tss_limit & 0xffff)
            | ((tss_base & 0xff_ffff) << 16)
            | (0x89 << 40)
            | (((tss_limit >> 16) & 0xf) << 48)
            | (((tss_base >> 24) & 0xff) << 56);
        gdt[4] = tss_base >> 32;
    }
    let ptr = pointer_of(cpu);
    // SAFETY: the table is complete and static; the caller's `load` loads
    // it. The far return then reloads CS with a selector of this table, the
    // data segments and TR follow; all refer to valid descriptors.
    unsafe {
        load(&ptr);
        core::arch::asm!(
            "push {code}",
            "lea {tmp}, [rip + 2f]",
            "push {tmp}",
            "retfq",
            "2:",
            "mov ds, {data:e}",
            "mov es, {data:e}",
            "mov ss, {data:e}",
            "mov fs, {data:e}",
            "mov gs, {data:e}",
            "ltr {tss:x}",
            code = in(reg) u64::from(CODE),
            data = in(reg) u32::from(DATA),
            tss = in(reg) TSS,
            tmp = out(reg) _,
        );
    }
    true
}

/// Plain LGDT, for binaries that do not use paravirt-ops.
///
/// # Safety
///
/// `ptr` must describe a valid GDT that outlives its use.
pub unsafe fn lgdt(ptr: &DescriptorTablePointer<u64>) {
    // SAFETY: forwarded to the caller.
    unsafe { x86::dtables::lgdt(ptr) }
}
