//! PVH entry: the `Xen` ELF note and the 32-bit stub that reaches Rust in
//! long mode.
//!
//! The PVH boot protocol (Xen `docs/misc/pvh.pandoc`) enters the image at the
//! 32-bit physical address given by the `XEN_ELFNOTE_PHYS32_ENTRY` note (type
//! 18, Xen `xen/include/public/elfnote.h`) in flat 32-bit protected mode with
//! paging off and EBX = physical address of `hvm_start_info`. The stub:
//!
//! 1. zeroes `.bss` (a loader other than QEMU may not),
//! 2. builds identity page tables for the first 4 GiB with 2 MiB pages
//!    (0xC000_0000..4 GiB uncached, PCD|PWT, so the xAPIC page at
//!    0xFEE0_0000 and other MMIO are usable at once),
//! 3. enables PAE, EFER.LME (and EFER.NXE when CPUID reports NX), paging
//!    and CR0.WP,
//! 4. loads a 64-bit GDT (code 0x08, data 0x10) and far-jumps to 64-bit code,
//! 5. zero-extends EBX into RDI and calls the kernel's entry function.
//!
//! The assembly is emitted by [`pvh_entry!`](crate::pvh_entry) in the binary
//! crate itself, so it is always linked.

/// Boot stack size used when [`pvh_entry!`](crate::pvh_entry) is not given one.
pub const DEFAULT_STACK_SIZE: usize = 128 * 1024;

/// Selector of the boot GDT's 64-bit code segment (also used by
/// [`crate::gdt`]).
pub const BOOT_CODE_SELECTOR: u16 = 0x08;
/// Selector of the boot GDT's data segment.
pub const BOOT_DATA_SELECTOR: u16 = 0x10;

/// Emits the PVH ELF note, the 32-bit entry stub, the boot page tables and
/// the boot stack, and calls `$main(start_info_paddr)` in long mode.
///
/// `$main` must be a `fn(u64) -> !`. Use once per binary, at crate root:
///
/// ```ignore
/// bootkit::pvh_entry!(crate::kmain);
/// // or with a larger boot stack:
/// bootkit::pvh_entry!(crate::kmain, stack_size = 256 * 1024);
/// fn kmain(start_info_paddr: u64) -> ! { ... }
/// ```
#[macro_export]
macro_rules! pvh_entry {
    ($main:path) => {
        $crate::pvh_entry!($main, stack_size = $crate::pvh::DEFAULT_STACK_SIZE);
    };
    ($main:path, stack_size = $stack:expr) => {
        /// Called by the PVH stub in long mode with the `hvm_start_info`
        /// physical address.
        #[unsafe(no_mangle)]
        extern "C" fn __bootkit_entry64(start_info_paddr: u64) -> ! {
            let main: fn(u64) -> ! = $main;
            main(start_info_paddr)
        }

        ::core::arch::global_asm!(
            // XEN_ELFNOTE_PHYS32_ENTRY (18): namesz, descsz, type, "Xen\0",
            // then the 32-bit physical entry address (elfnote.h).
            ".pushsection .note.Xen, \"a\", @note",
            ".balign 4",
            ".long 4",
            ".long 4",
            ".long 18",
            ".asciz \"Xen\"",
            ".balign 4",
            ".long bootkit_pvh_start32",
            ".balign 4",
            ".popsection",

            // Boot GDT: null, 64-bit code (0x08), data (0x10); accessed bits
            // preset so the CPU never writes the table.
            ".pushsection .rodata.bootkit.gdt, \"a\", @progbits",
            ".balign 16",
            "bootkit_boot_gdt:",
            ".quad 0",
            ".quad 0x00af9b000000ffff",
            ".quad 0x00cf93000000ffff",
            "bootkit_boot_gdt_end:",
            ".balign 8",
            "bootkit_boot_gdt_ptr:",
            ".word bootkit_boot_gdt_end - bootkit_boot_gdt - 1",
            ".long bootkit_boot_gdt",
            ".popsection",

            // Page tables and stack, in .bss (zeroed by the stub itself).
            ".pushsection .bss.bootkit.boot, \"aw\", @nobits",
            ".balign 4096",
            ".globl bootkit_boot_pml4",
            "bootkit_boot_pml4: .space 4096",
            "bootkit_boot_pdpt: .space 4096",
            "bootkit_boot_pd: .space 4096 * 4",
            ".globl bootkit_stack_bottom",
            "bootkit_stack_bottom: .space {stack}",
            ".globl bootkit_stack_top",
            "bootkit_stack_top:",
            ".popsection",

            ".pushsection .text.bootkit.entry32, \"ax\", @progbits",
            ".code32",
            ".globl bootkit_pvh_start32",
            "bootkit_pvh_start32:",
            "cli",
            "cld",
            // Keep the start_info address (EBX) in ESI: stosb and CPUID
            // clobber EAX, EBX, ECX, EDX, EDI.
            "movl %ebx, %esi",
            // Zero .bss: the page tables below rely on it.
            "movl $__bootkit_bss_start, %edi",
            "movl $__bootkit_bss_end, %ecx",
            "subl %edi, %ecx",
            "xorl %eax, %eax",
            "rep stosb",
            "movl $bootkit_stack_top, %esp",
            // 2048 PD entries of 2 MiB: P|RW|PS (0x83); from 3 GiB on also
            // PWT|PCD (0x18), uncached for MMIO such as the local APIC.
            "movl $bootkit_boot_pd, %edi",
            "xorl %ecx, %ecx",
            "1:",
            "movl %ecx, %eax",
            "shll $21, %eax",
            "orl $0x83, %eax",
            "cmpl $1536, %ecx",
            "jb 2f",
            "orl $0x18, %eax",
            "2:",
            "movl %eax, (%edi,%ecx,8)",
            "movl $0, 4(%edi,%ecx,8)",
            "incl %ecx",
            "cmpl $2048, %ecx",
            "jb 1b",
            // Four PDPT entries (P|RW) for the four PDs, PML4[0] -> PDPT.
            "movl $bootkit_boot_pdpt, %edi",
            "movl $bootkit_boot_pd + 3, %eax",
            "movl %eax, 0(%edi)",
            "addl $0x1000, %eax",
            "movl %eax, 8(%edi)",
            "addl $0x1000, %eax",
            "movl %eax, 16(%edi)",
            "addl $0x1000, %eax",
            "movl %eax, 24(%edi)",
            "movl $bootkit_boot_pdpt + 3, %eax",
            "movl %eax, bootkit_boot_pml4",
            // CR4.PAE, then CR3.
            "movl %cr4, %eax",
            "orl $0x20, %eax",
            "movl %eax, %cr4",
            "movl $bootkit_boot_pml4, %eax",
            "movl %eax, %cr3",
            // EFER.NXE only if CPUID 0x8000_0001 EDX[20] says NX exists
            // (setting it otherwise raises #GP).
            "xorl %edi, %edi",
            "movl $0x80000000, %eax",
            "cpuid",
            "cmpl $0x80000001, %eax",
            "jb 3f",
            "movl $0x80000001, %eax",
            "cpuid",
            "btl $20, %edx",
            "jnc 3f",
            "movl $0x800, %edi",
            "3:",
            "movl $0xC0000080, %ecx",
            "rdmsr",
            "orl $0x100, %eax",
            "orl %edi, %eax",
            "wrmsr",
            // CR0.PG | CR0.WP | CR0.PE: long mode becomes active.
            "movl %cr0, %eax",
            "orl $0x80010001, %eax",
            "movl %eax, %cr0",
            "lgdt bootkit_boot_gdt_ptr",
            "ljmpl $0x08, $bootkit_pvh_start64",
            ".code64",
            "bootkit_pvh_start64:",
            "movw $0x10, %ax",
            "movw %ax, %ds",
            "movw %ax, %es",
            "movw %ax, %ss",
            "movw %ax, %fs",
            "movw %ax, %gs",
            "movq $bootkit_stack_top, %rsp",
            "xorl %ebp, %ebp",
            // Zero-extend the 32-bit start_info address into the first
            // argument register (a 32-bit move clears bits 63:32).
            "movl %esi, %edi",
            "call __bootkit_entry64",
            "4:",
            "cli",
            "hlt",
            "jmp 4b",
            ".popsection",
            stack = const $stack,
            options(att_syntax)
        );
    };
}
