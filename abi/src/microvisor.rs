//! The companion microvisor's own hypercall interface.
//!
//! It is deliberately hidden: a guest must first find the microvisor's CPUID
//! leaf and then make a hypercall with the "open" key, so a guest that does
//! not look for it (every real-hypervisor persona) sees only the persona's
//! ABI. The leaf lives at [`CPUID_LEAF`], outside the hypervisor range that
//! backends scan, and answers only when queried with [`CPUID_KEY`] in ECX.
//!
//! Calling convention (VMMCALL): RAX = [`HYPERCALL_MAGIC`] | code,
//! RBX, RCX, RDX = arguments; result in RAX (0 success, negative error).

use core::mem::offset_of;
use static_assertions::{assert_eq_size, const_assert_eq};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// CPUID leaf at which the microvisor identifies itself to guests that ask.
pub const CPUID_LEAF: u32 = 0x4fff_fff0;
/// ECX value that must accompany [`CPUID_LEAF`]; other subleaves read zero.
pub const CPUID_KEY: u32 = 0x7076_6f70; // "pvop"
/// EBX:ECX:EDX signature returned by [`CPUID_LEAF`] with [`CPUID_KEY`].
pub const SIGNATURE: &[u8; 12] = b"pvopsMicroV!";
/// High half of RAX marking a microvisor hypercall (not any persona's).
pub const HYPERCALL_MAGIC: u64 = 0x4d56_0000_0000_0000;

/// Microvisor hypercall codes (low 32 bits of RAX).
pub mod code {
    /// Resets every exit counter to zero. Returns 0.
    pub const COUNTERS_RESET: u32 = 1;
    /// Reads one counter: RBX = counter class, RCX = key. Returns the count.
    pub const COUNTER_READ: u32 = 2;
    /// Total exits since the last reset. Returns the count.
    pub const EXITS_TOTAL: u32 = 3;
    /// Copies an [`super::ExitSnapshot`] to guest memory: RBX = guest-physical
    /// address, RCX = buffer length in bytes. Returns the bytes written, or
    /// [`super::ERR_INVALID`] when the buffer is not entirely inside guest RAM
    /// or is too small.
    pub const COUNTERS_COPY: u32 = 4;
    /// Copies one vCPU's [`super::ExitSnapshot`] (the exits that vCPU took
    /// since the last [`COUNTERS_RESET`], which clears every vCPU's window
    /// as well as the total): RBX = vCPU index (0 = the boot CPU, the
    /// index is also its APIC ID), RCX = guest-physical address, RDX =
    /// buffer length in bytes. Returns the bytes written, or
    /// [`super::ERR_INVALID`] for an index at or past the number of vCPUs,
    /// or a buffer not entirely inside guest RAM or too small.
    ///
    /// [`COUNTERS_RESET`], [`COUNTER_READ`], [`EXITS_TOTAL`] and
    /// [`COUNTERS_COPY`] count over all vCPUs together. The code is far
    /// from the first four so that guests probing "the next codes" (5, 6)
    /// keep seeing [`super::ERR_UNKNOWN`].
    pub const VCPU_COUNTERS_COPY: u32 = 0x10;
    /// Time one vCPU was runnable but not running (its steal time: the
    /// microvisor ran another vCPU on the one physical CPU), in
    /// nanoseconds since the start of the run: RBX = vCPU index. Returns
    /// the time, or [`super::ERR_INVALID`] for an index at or past the
    /// number of vCPUs. Not reset by [`COUNTERS_RESET`].
    pub const VCPU_STOLEN_NS: u32 = 0x11;
    /// Number of vCPUs of the guest (the microvisor's `vcpus=`). Returns
    /// the count.
    pub const VCPUS: u32 = 0x12;
    /// The highest code, as the keyed CPUID leaf's EAX reports it.
    pub const HIGHEST: u32 = VCPUS;
}

/// Exit counts by class, as copied by [`code::COUNTERS_COPY`].
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct ExitSnapshot {
    /// Every exit.
    pub total: u64,
    /// CPUID exits.
    pub cpuid: u64,
    /// RDMSR/WRMSR exits.
    pub msr: u64,
    /// I/O port exits.
    pub io: u64,
    /// HLT exits.
    pub hlt: u64,
    /// VMMCALL exits (persona and microvisor hypercalls).
    pub vmmcall: u64,
    /// Physical-interrupt exits (the microvisor's own timer).
    pub intr: u64,
    /// Virtual-interrupt-window exits.
    pub vintr: u64,
    /// Nested page faults.
    pub npf: u64,
    /// Anything else.
    pub other: u64,
}
assert_eq_size!(ExitSnapshot, [u8; 80]);
const_assert_eq!(offset_of!(ExitSnapshot, cpuid), 8);
const_assert_eq!(offset_of!(ExitSnapshot, msr), 16);
const_assert_eq!(offset_of!(ExitSnapshot, io), 24);
const_assert_eq!(offset_of!(ExitSnapshot, hlt), 32);
const_assert_eq!(offset_of!(ExitSnapshot, vmmcall), 40);
const_assert_eq!(offset_of!(ExitSnapshot, intr), 48);
const_assert_eq!(offset_of!(ExitSnapshot, vintr), 56);
const_assert_eq!(offset_of!(ExitSnapshot, npf), 64);
const_assert_eq!(offset_of!(ExitSnapshot, other), 72);

/// Counter classes for [`code::COUNTER_READ`].
pub mod class {
    /// Key = SVM exit code (AMD APM vol. 2, appendix C).
    pub const EXIT_REASON: u64 = 0;
    /// Key = MSR index; counts reads and writes together.
    pub const MSR: u64 = 1;
    /// Key = I/O port.
    pub const PORT: u64 = 2;
    /// Key = persona hypercall code.
    pub const HYPERCALL: u64 = 3;
}

/// Error: unknown microvisor hypercall code.
pub const ERR_UNKNOWN: i64 = -1;
/// Error: bad argument (unknown class, bad pointer).
pub const ERR_INVALID: i64 = -2;
