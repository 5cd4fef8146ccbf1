//! Paravirt-ops for x86-64 kernels written in Rust.
//!
//! A kernel calls CPU, MMU, interrupt, timer and lock operations through the
//! functions of this crate ([`cpu`], [`mmu`], [`irq`], [`time`], [`system`],
//! [`lock`], with a paravirtual [`lock::SpinLock`] on top). Each one
//! goes through one entry of a single operations [`Table`]. At boot every
//! entry points at its native implementation ([`native`]); a hypervisor
//! backend (crate `pvops-backends`) may replace entries once, early, through
//! [`patch::install`]. After that the table is read-only, and every call
//! site of the kernel is patched once ([`dispatch`]): into the native
//! instruction itself where the entry stayed native and has one (`cli`,
//! `rdtsc`, ...), or into a direct call to the owner's function. A kernel
//! that cannot write its text keeps the table: one load and one indirect
//! call, with no lock or atomic.
//!
//! Set-up every kernel does whatever the backend, before
//! `pvops_backends::init`: [`apic::preferred_mode`] and [`apic::enable`] (the
//! local APIC, which also masks the legacy 8259 PICs), and the native hooks
//! [`system::set_shutdown_hook`] and [`mmu::set_remote_flush_hook`].
//!
//! pvops reports what it chose, and every fallback, through the `log`
//! crate: install a logger first, or fallbacks are invisible.
//!
//! On a machine with several CPUs, each CPU has a small index
//! ([`percpu::current`], found without a VM exit) under which backends
//! keep its state; every application processor registers through
//! `pvops_backends::init_cpu` (see `docs/smp.md`).
//!
//! Which backend owns each entry is recorded and can be queried with
//! [`owner`], for boot reports.
//!
//! Kernels never touch the table directly, so the dispatch mechanism
//! (patched call sites, or the table) can change without breaking them;
//! [`dispatch::mechanism`] says which one an entry has.
#![cfg_attr(not(test), no_std)]

pub mod cpu;
pub mod dispatch;
pub mod irq;
pub mod lock;
pub mod mmu;
pub mod native;
pub mod patch;
pub mod percpu;
pub mod system;
mod table;
pub mod time;

/// Local APIC set-up every kernel does before `pvops_backends::init`,
/// whatever the backend: [`apic::preferred_mode`], [`apic::enable`] (also at
/// `pvops::native::apic`).
pub use native::apic;
pub use pvops_probe::CpuidResult;
pub use table::{slot, Entry, Slot, Table, ENTRY_COUNT};

/// The backend that owns `entry` ("native" until a backend replaces it).
pub fn owner(entry: Entry) -> &'static str {
    patch::owner(entry)
}

/// Every entry with its owner, in table order.
pub fn owners() -> impl Iterator<Item = (Entry, &'static str)> {
    Entry::all().map(|e| (e, owner(e)))
}
