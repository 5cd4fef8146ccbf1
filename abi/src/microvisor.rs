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
}

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
