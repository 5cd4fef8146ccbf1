//! Boot kit for x86-64 Rust kernels started through PVH (QEMU `-kernel`,
//! Xen, the pvops microvisor), published as `pvops-boot`; pvops' own
//! bare-metal binaries use it too.
//!
//! - [`pvh_entry!`]: PVH ELF note + 32-bit stub into long mode (see [`pvh`]);
//!   `link.ld` next to this crate's manifest is the matching linker script.
//! - [`start_info::StartInfo`]: validated view of `hvm_start_info`.
//! - [`serial`], [`logger`], [`print!`], [`println!`]: COM1 console and a
//!   `log` logger.
//! - [`record!`]: machine-readable `@@` lines per `pvops_abi::report`.
//! - [`exit::exit`]: `isa-debug-exit`; [`panic::handle`]: panic reporting.
//! - [`gdt`], [`idt`]: descriptor tables, exception reporting and
//!   run-time interrupt handlers.
//! - [`pages::PagePool`]: zeroed pages in the image to lend pvops' backends.
//! - [`acpi::cpus`]: the CPUs of the ACPI MADT; [`smp::start_ap`]: an
//!   application processor started through a real-mode trampoline;
//!   [`gdt::init_cpu`]: its own GDT and TSS.
//!
//! See README.md for the build setup of a binary using it.
#![no_std]

pub mod acpi;
pub mod cpu;
pub mod exit;
pub mod gdt;
pub mod idt;
pub mod image;
pub mod logger;
pub mod pages;
pub mod panic;
pub mod pvh;
pub mod record;
pub mod serial;
pub mod smp;
pub mod start_info;
pub mod sync;

pub use pvops_abi;
pub use pvops_abi::exit::ExitCode;
