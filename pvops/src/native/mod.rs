//! Native implementations of every table entry: what the hardware does
//! without a hypervisor's help.
//!
//! The native time and interrupt entries need a little platform knowledge
//! that only the kernel has: how its local APIC is accessed ([`apic`]) and,
//! where no better source exists, the TSC frequency ([`time::set_tsc_frequency`],
//! measured with [`pit::calibrate_tsc`]).

pub mod apic;
pub mod cpu;
pub mod irq;
pub mod lock;
pub mod mmu;
pub mod pit;
pub mod system;
pub mod time;
