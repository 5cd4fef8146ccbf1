//! The Xen HVM guest ABI subset pvops uses, for x86-64.
//!
//! Every constant and layout here is taken from the Xen public headers
//! (`xen/include/public/`, cited per item) and checked at compile time
//! (sizes and offsets) and in host tests. The guest backend
//! (`pvops-backends`, feature `xen`) and the microvisor's `xen` persona both
//! use these definitions.
//!
//! Calling convention (xen.h, "x86_64: hypercall"; the hypercall page of
//! `arch-x86/cpuid.h` leaf 3): the guest registers a page by writing its
//! guest-physical address to the MSR given by CPUID base+2 EBX; the
//! hypervisor fills it with one [`HYPERCALL_STUB_SIZE`]-byte stub per
//! hypercall number (`mov $nr, %eax; vmcall|vmmcall; ret`, see
//! [`stub_is_filled`]). Arguments go in RDI, RSI, RDX, R10, R8; the result
//! (0 or a negative Xen errno, [`errno`]) comes back in RAX.

use core::mem::offset_of;
use static_assertions::{assert_eq_size, const_assert_eq};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

pub use crate::pvclock::VcpuTimeInfo;

// ---------------------------------------------------------------------------
// CPUID (arch-x86/cpuid.h)
// ---------------------------------------------------------------------------

/// "XenVMMXenVMM" in EBX, ECX, EDX of the base leaf
/// (`XEN_CPUID_SIGNATURE_EBX/ECX/EDX`, arch-x86/cpuid.h).
pub const SIGNATURE: &[u8; 12] = b"XenVMMXenVMM";
/// `XEN_CPUID_SIGNATURE_EBX` ("XenV").
pub const SIGNATURE_EBX: u32 = 0x566e_6558;
/// `XEN_CPUID_SIGNATURE_ECX` ("MMXe").
pub const SIGNATURE_ECX: u32 = 0x6558_4d4d;
/// `XEN_CPUID_SIGNATURE_EDX` ("nVMM").
pub const SIGNATURE_EDX: u32 = 0x4d4d_566e;
/// Leaves a Xen interface must have above its base to be used (Linux
/// `xen_cpuid_base()` asks `cpuid_base_hypervisor("XenVMMXenVMM", 2)`).
pub const MIN_LEAVES: u32 = 2;
/// Offset of the version leaf ("Leaf 2", arch-x86/cpuid.h).
pub const LEAF_VERSION: u32 = 1;
/// Offset of the hypercall-page leaf ("Leaf 3").
pub const LEAF_HYPERCALL: u32 = 2;
/// Offset of the time leaf ("Leaf 4", sub-leaves 0..=2).
pub const LEAF_TIME: u32 = 3;
/// Offset of the HVM features leaf ("Leaf 5").
pub const LEAF_HVM: u32 = 4;

/// Xen version from base+1 EAX: major in bits 31:16, minor in 15:0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version {
    /// Major version.
    pub major: u16,
    /// Minor version.
    pub minor: u16,
}

impl Version {
    /// Decodes base+1 EAX.
    pub const fn from_eax(eax: u32) -> Version {
        Version {
            major: (eax >> 16) as u16,
            minor: eax as u16,
        }
    }

    /// Encodes as base+1 EAX.
    pub const fn to_eax(self) -> u32 {
        ((self.major as u32) << 16) | self.minor as u32
    }
}

/// Base+2: the hypercall page interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HypercallLeaf {
    /// EAX: number of hypercall pages ("always guaranteed to specify one").
    pub pages: u32,
    /// EBX: the MSR to write a page's guest-physical address to (low 12
    /// bits = page index).
    pub msr: u32,
    /// ECX: features 1 (bit 0 `XEN_CPUID_FEAT1_MMU_PT_UPDATE_PRESERVE_AD`).
    pub features1: u32,
    /// EDX: features 2.
    pub features2: u32,
}

impl HypercallLeaf {
    /// Decodes base+2.
    pub const fn from_regs(eax: u32, ebx: u32, ecx: u32, edx: u32) -> HypercallLeaf {
        HypercallLeaf {
            pages: eax,
            msr: ebx,
            features1: ecx,
            features2: edx,
        }
    }

    /// Whether the leaf describes a usable page: at least one page and an
    /// MSR in Xen's range (Xen uses 0x4000_0000 + 0x200 * n; 0 is never
    /// valid).
    pub const fn usable(&self) -> bool {
        self.pages >= 1 && self.msr != 0
    }
}

/// `XEN_CPUID_TSC_EMULATED` (base+3 sub-leaf 0 EAX bit 0).
pub const TSC_EMULATED: u32 = 1 << 0;
/// `XEN_CPUID_HOST_TSC_RELIABLE` (bit 1).
pub const HOST_TSC_RELIABLE: u32 = 1 << 1;
/// `XEN_CPUID_RDTSCP_INSTR_AVAIL` (bit 2).
pub const RDTSCP_INSTR_AVAIL: u32 = 1 << 2;
/// `XEN_CPUID_TSC_MODE_DEFAULT`: emulate if necessary.
pub const TSC_MODE_DEFAULT: u32 = 0;
/// `XEN_CPUID_TSC_MODE_ALWAYS_EMULATE`.
pub const TSC_MODE_ALWAYS_EMULATE: u32 = 1;
/// `XEN_CPUID_TSC_MODE_NEVER_EMULATE`.
pub const TSC_MODE_NEVER_EMULATE: u32 = 2;
/// `XEN_CPUID_TSC_MODE_PVRDTSCP`.
pub const TSC_MODE_PVRDTSCP: u32 = 3;

/// Base+3 sub-leaf 0: TSC information.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimeLeaf {
    /// EAX: [`TSC_EMULATED`], [`HOST_TSC_RELIABLE`], [`RDTSCP_INSTR_AVAIL`].
    pub flags: u32,
    /// EBX: `TSC_MODE_*`.
    pub tsc_mode: u32,
    /// ECX: guest TSC frequency in kHz (0 when not reported).
    pub guest_tsc_khz: u32,
    /// EDX: guest TSC incarnation (migration count).
    pub incarnation: u32,
}

impl TimeLeaf {
    /// Decodes base+3 sub-leaf 0.
    pub const fn from_regs(eax: u32, ebx: u32, ecx: u32, edx: u32) -> TimeLeaf {
        TimeLeaf {
            flags: eax,
            tsc_mode: ebx,
            guest_tsc_khz: ecx,
            incarnation: edx,
        }
    }

    /// Whether sub-leaf 0 follows Xen's layout: only the three defined
    /// flag bits and a known TSC mode. QEMU's Xen emulation on KVM does not
    /// fill it so: there sub-leaf 0 was seen holding the TSC kHz in EAX and
    /// the pvclock multiplier and shift in ECX/EDX (KVM updates sub-leaves
    /// 1 and 2 of a leaf entry QEMU does not mark as indexed), so ECX is no
    /// kHz value and the leaf must not be trusted.
    pub const fn follows_xen_layout(&self) -> bool {
        self.flags & !(TSC_EMULATED | HOST_TSC_RELIABLE | RDTSCP_INSTR_AVAIL) == 0
            && self.tsc_mode <= TSC_MODE_PVRDTSCP
    }

    /// The guest TSC kHz, when the leaf follows Xen's layout, reports one
    /// and the TSC is not emulated (an emulated TSC runs at the rate Xen
    /// chose, which ECX then names too, but a guest reading it through
    /// RDTSC exits every time: still the right rate).
    pub const fn sound_tsc_khz(&self) -> Option<u32> {
        if self.follows_xen_layout() && self.guest_tsc_khz != 0 {
            Some(self.guest_tsc_khz)
        } else {
            None
        }
    }
}

/// Base+4 ("Leaf 5"): HVM-specific features.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HvmLeaf {
    /// EAX: `XEN_HVM_CPUID_*`.
    pub flags: u32,
    /// EBX: the vCPU id, when [`HVM_VCPU_ID_PRESENT`].
    pub vcpu_id: u32,
    /// ECX: the domain id, when [`HVM_DOMID_PRESENT`].
    pub domid: u32,
}

impl HvmLeaf {
    /// Decodes base+4.
    pub const fn from_regs(eax: u32, ebx: u32, ecx: u32) -> HvmLeaf {
        HvmLeaf {
            flags: eax,
            vcpu_id: ebx,
            domid: ecx,
        }
    }

    /// Whether `HVMOP_set_evtchn_upcall_vector` is offered (bit 6).
    pub const fn upcall_vector(&self) -> bool {
        self.flags & HVM_UPCALL_VECTOR != 0
    }

    /// This vCPU's id for per-vCPU operations: EBX when present, else 0
    /// (the boot vCPU).
    pub const fn vcpu(&self) -> u32 {
        if self.flags & HVM_VCPU_ID_PRESENT != 0 {
            self.vcpu_id
        } else {
            0
        }
    }
}

/// `XEN_HVM_CPUID_APIC_ACCESS_VIRT` (base+4 EAX bit 0).
pub const HVM_APIC_ACCESS_VIRT: u32 = 1 << 0;
/// `XEN_HVM_CPUID_X2APIC_VIRT` (bit 1).
pub const HVM_X2APIC_VIRT: u32 = 1 << 1;
/// `XEN_HVM_CPUID_VCPU_ID_PRESENT` (bit 3): EBX holds the vCPU id.
pub const HVM_VCPU_ID_PRESENT: u32 = 1 << 3;
/// `XEN_HVM_CPUID_DOMID_PRESENT` (bit 4): ECX holds the domain id.
pub const HVM_DOMID_PRESENT: u32 = 1 << 4;
/// `XEN_HVM_CPUID_UPCALL_VECTOR` (bit 6): per-vCPU upcall vectors work.
pub const HVM_UPCALL_VECTOR: u32 = 1 << 6;

// ---------------------------------------------------------------------------
// Hypercalls (xen.h) and the hypercall page
// ---------------------------------------------------------------------------

/// Bytes per stub in the hypercall page: stub `nr` is at `page + nr * 32`.
pub const HYPERCALL_STUB_SIZE: usize = 32;
/// Stubs in one 4 KiB hypercall page.
pub const HYPERCALL_STUBS: usize = 4096 / HYPERCALL_STUB_SIZE;
/// First byte of a filled stub: `mov imm32, %eax` (Xen
/// `vmx_init_hypercall_page` / `svm_init_hypercall_page`).
pub const STUB_MOV_EAX: u8 = 0xb8;

/// The hypercall-page MSR Xen names in base+2 EBX: 0x4000_0000, or
/// 0x4000_0200 when Viridian is enabled (its MSRs own 0x4000_00xx). Xen
/// `cpuid_hypervisor_leaves()`, leaf 3; only page index 0 exists
/// ("always guaranteed to specify one" page).
pub const HYPERCALL_MSR: u32 = 0x4000_0000;
/// [`HYPERCALL_MSR`] for a domain with Viridian enabled.
pub const HYPERCALL_MSR_VIRIDIAN: u32 = 0x4000_0200;
/// Where Xen puts its leaves when Viridian occupies 0x4000_0000 (Xen
/// `cpuid_hypervisor_leaves()`: base 0x4000_0100 for Viridian domains).
pub const VIRIDIAN_XEN_BASE: u32 = 0x4000_0100;
/// `VMMCALL` (AMD APM vol. 3): what Xen's `svm_init_hypercall_page` puts
/// after the `mov`.
pub const VMMCALL: [u8; 3] = [0x0f, 0x01, 0xd9];
/// `VMCALL` (Intel SDM vol. 2): `vmx_init_hypercall_page`.
pub const VMCALL: [u8; 3] = [0x0f, 0x01, 0xc1];
/// `ret`.
pub const STUB_RET: u8 = 0xc3;
/// `int3`: the filler after each stub's `ret` (Xen fills the page with it).
pub const STUB_INT3: u8 = 0xcc;

/// The stub a hypervisor writes for hypercall `nr` (hypervisor side of
/// [`stub_is_filled`]): `mov $nr, %eax; <call>; ret`, the rest `int3`.
pub fn hypercall_stub(nr: u32, call: [u8; 3]) -> [u8; HYPERCALL_STUB_SIZE] {
    let mut s = [STUB_INT3; HYPERCALL_STUB_SIZE];
    s[0] = STUB_MOV_EAX;
    s[1..5].copy_from_slice(&nr.to_le_bytes());
    s[5..8].copy_from_slice(&call);
    s[8] = STUB_RET;
    s
}

/// Whether `stub` (the bytes at `page + nr * 32`) is a stub the hypervisor
/// filled for hypercall `nr`: `mov $nr, %eax` followed by anything (Xen
/// writes `vmcall` or `vmmcall` and `ret` after it).
pub fn stub_is_filled(stub: &[u8], nr: u32) -> bool {
    stub.len() >= 5 && stub[0] == STUB_MOV_EAX && stub[1..5] == nr.to_le_bytes()
}

/// Hypercall numbers (`__HYPERVISOR_*`, xen.h).
pub mod hypercall {
    /// `__HYPERVISOR_memory_op`.
    pub const MEMORY_OP: u32 = 12;
    /// `__HYPERVISOR_set_timer_op` (absolute ns; 0 cancels).
    pub const SET_TIMER_OP: u32 = 15;
    /// `__HYPERVISOR_xen_version`.
    pub const XEN_VERSION: u32 = 17;
    /// `__HYPERVISOR_console_io`.
    pub const CONSOLE_IO: u32 = 18;
    /// `__HYPERVISOR_vcpu_op`.
    pub const VCPU_OP: u32 = 24;
    /// `__HYPERVISOR_sched_op`.
    pub const SCHED_OP: u32 = 29;
    /// `__HYPERVISOR_event_channel_op`.
    pub const EVENT_CHANNEL_OP: u32 = 32;
    /// `__HYPERVISOR_hvm_op`.
    pub const HVM_OP: u32 = 34;
}

/// `XENMEM_*` command bits of `memory_op`'s first argument: the command is
/// the low `MEMOP_EXTENT_SHIFT` (6) bits, `MEMOP_CMD_MASK` (memory.h).
pub const MEMOP_CMD_MASK: u64 = (1 << 6) - 1;

/// `XENVER_version` (version.h): returns major << 16 | minor.
pub const XENVER_VERSION: u32 = 0;
/// `XENVER_get_features` (version.h): one 32-bit submap of features.h.
pub const XENVER_GET_FEATURES: u32 = 6;
/// `XENFEAT_hvm_callback_vector` (features.h): the callback-via vector
/// type of `HVM_PARAM_CALLBACK_IRQ` is supported (params.h asks guests to
/// check it).
pub const XENFEAT_HVM_CALLBACK_VECTOR: u32 = 8;
/// `XENFEAT_hvm_safe_pvclock` (features.h): the pvclock of an HVM guest is
/// safe to use (Linux requires it before using it).
pub const XENFEAT_HVM_SAFE_PVCLOCK: u32 = 9;

/// `struct xen_feature_info` (version.h).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct FeatureInfo {
    /// In: which 32-bit submap.
    pub submap_idx: u32,
    /// Out: the submap.
    pub submap: u32,
}
assert_eq_size!(FeatureInfo, [u8; 8]);

/// Xen error numbers (errno.h, `XEN_ERRNO(...)`); hypercalls return them
/// negated.
pub mod errno {
    /// Operation not permitted.
    pub const EPERM: i64 = 1;
    /// No such file or directory.
    pub const ENOENT: i64 = 2;
    /// No such process.
    pub const ESRCH: i64 = 3;
    /// Try again.
    pub const EAGAIN: i64 = 11;
    /// Out of memory.
    pub const ENOMEM: i64 = 12;
    /// Permission denied.
    pub const EACCES: i64 = 13;
    /// Bad address.
    pub const EFAULT: i64 = 14;
    /// Device or resource busy.
    pub const EBUSY: i64 = 16;
    /// File exists (e.g. a VIRQ already bound).
    pub const EEXIST: i64 = 17;
    /// Invalid argument.
    pub const EINVAL: i64 = 22;
    /// No space left.
    pub const ENOSPC: i64 = 28;
    /// Function not implemented.
    pub const ENOSYS: i64 = 38;
    /// Timer expired (set_singleshot_timer with FUTURE, deadline passed).
    pub const ETIME: i64 = 62;
    /// Operation not supported.
    pub const EOPNOTSUPP: i64 = 95;

    /// A short name for a negative return value, for logs.
    pub fn name(rc: i64) -> &'static str {
        match -rc {
            0 => "ok",
            EPERM => "EPERM",
            ENOENT => "ENOENT",
            ESRCH => "ESRCH",
            EAGAIN => "EAGAIN",
            ENOMEM => "ENOMEM",
            EACCES => "EACCES",
            EFAULT => "EFAULT",
            EBUSY => "EBUSY",
            EEXIST => "EEXIST",
            EINVAL => "EINVAL",
            ENOSPC => "ENOSPC",
            ENOSYS => "ENOSYS",
            ETIME => "ETIME",
            EOPNOTSUPP => "EOPNOTSUPP",
            _ => "error",
        }
    }
}

// ---------------------------------------------------------------------------
// memory_op (memory.h)
// ---------------------------------------------------------------------------

/// `XENMEM_add_to_physmap`.
pub const XENMEM_ADD_TO_PHYSMAP: u32 = 7;
/// `XENMAPSPACE_shared_info`.
pub const XENMAPSPACE_SHARED_INFO: u32 = 0;
/// `DOMID_SELF` (xen.h).
pub const DOMID_SELF: u16 = 0x7ff0;

/// `struct xen_add_to_physmap` (memory.h).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct AddToPhysmap {
    /// Domain ([`DOMID_SELF`]).
    pub domid: u16,
    /// Pages for `XENMAPSPACE_gmfn_range` (0 otherwise).
    pub size: u16,
    /// `XENMAPSPACE_*`.
    pub space: u32,
    /// Index into the space (0 for shared_info).
    pub idx: u64,
    /// Guest page frame number where the page should appear.
    pub gpfn: u64,
}
assert_eq_size!(AddToPhysmap, [u8; 24]);
const_assert_eq!(offset_of!(AddToPhysmap, space), 4);
const_assert_eq!(offset_of!(AddToPhysmap, idx), 8);
const_assert_eq!(offset_of!(AddToPhysmap, gpfn), 16);

// ---------------------------------------------------------------------------
// hvm_op (hvm/hvm_op.h, hvm/params.h)
// ---------------------------------------------------------------------------

/// `HVMOP_set_param`.
pub const HVMOP_SET_PARAM: u32 = 0;
/// `HVMOP_get_param`.
pub const HVMOP_GET_PARAM: u32 = 1;
/// `HVMOP_set_evtchn_upcall_vector` (hvm_op.h, x86): a per-vCPU upcall
/// vector, delivered through the vLAPIC (Xen `hvm_assert_evtchn_irq` ->
/// `vlapic_set_irq`), so an EOI is due. Offered when base+4 EAX has
/// [`HVM_UPCALL_VECTOR`]; vectors below 0x10 are -EINVAL, an unknown vCPU
/// -ENOENT (`hvmop_set_evtchn_upcall_vector`).
pub const HVMOP_SET_EVTCHN_UPCALL_VECTOR: u32 = 23;

/// `struct xen_hvm_evtchn_upcall_vector` (hvm_op.h): 8 bytes with the
/// C tail padding.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct HvmEvtchnUpcallVector {
    /// The vCPU.
    pub vcpu: u32,
    /// The vector (0x10..=0xff).
    pub vector: u8,
    /// Tail padding.
    pub pad: [u8; 3],
}
assert_eq_size!(HvmEvtchnUpcallVector, [u8; 8]);
const_assert_eq!(offset_of!(HvmEvtchnUpcallVector, vector), 4);

/// `HVM_PARAM_CALLBACK_IRQ`: how event-channel upcalls reach vCPU 0. With
/// the vector type Xen injects the vector as an external interrupt while
/// `evtchn_upcall_pending` is set (`hvm_vcpu_has_pending_irq` ->
/// `hvm_intack_vector`), bypassing the vLAPIC: no ISR bit, no EOI due,
/// injected again at every entry until the guest clears the flag.
pub const HVM_PARAM_CALLBACK_IRQ: u32 = 0;
/// `HVM_PARAM_CALLBACK_TYPE_VECTOR` (x86): deliver as interrupt vector
/// `value[7:0]`.
pub const HVM_PARAM_CALLBACK_TYPE_VECTOR: u64 = 2;
/// Bit position of the type in the callback parameter (`val[63:56]`).
pub const HVM_PARAM_CALLBACK_TYPE_SHIFT: u32 = 56;

/// The `HVM_PARAM_CALLBACK_IRQ` value for delivery through `vector`.
pub const fn callback_via_vector(vector: u8) -> u64 {
    (HVM_PARAM_CALLBACK_TYPE_VECTOR << HVM_PARAM_CALLBACK_TYPE_SHIFT) | vector as u64
}

/// `struct xen_hvm_param` (hvm_op.h).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct HvmParam {
    /// Domain ([`DOMID_SELF`]).
    pub domid: u16,
    /// Padding.
    pub pad: u16,
    /// `HVM_PARAM_*`.
    pub index: u32,
    /// Value (in for set, out for get).
    pub value: u64,
}
assert_eq_size!(HvmParam, [u8; 16]);
const_assert_eq!(offset_of!(HvmParam, index), 4);
const_assert_eq!(offset_of!(HvmParam, value), 8);

// ---------------------------------------------------------------------------
// event_channel_op (event_channel.h, xen.h)
// ---------------------------------------------------------------------------

/// `EVTCHNOP_bind_virq`.
pub const EVTCHNOP_BIND_VIRQ: u32 = 1;
/// `EVTCHNOP_close`.
pub const EVTCHNOP_CLOSE: u32 = 3;
/// `EVTCHNOP_send`.
pub const EVTCHNOP_SEND: u32 = 4;
/// `EVTCHNOP_unmask`.
pub const EVTCHNOP_UNMASK: u32 = 9;
/// `EVTCHNOP_bind_ipi`.
pub const EVTCHNOP_BIND_IPI: u32 = 7;
/// `EVTCHNOP_bind_vcpu` (event_channel.h): the vCPU a port notifies.
pub const EVTCHNOP_BIND_VCPU: u32 = 8;
/// `VIRQ_TIMER` (xen.h): per-vCPU timebase update and/or requested timeout.
pub const VIRQ_TIMER: u32 = 0;
/// `NR_VIRQS` (xen.h): VIRQ numbers are below this.
pub const NR_VIRQS: u32 = 24;
/// Ports of the 2-level event channel ABI on x86-64 (64 × 64 bits).
pub const EVTCHN_2L_NR_CHANNELS: u32 = 64 * 64;

/// `struct evtchn_bind_virq`.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct EvtchnBindVirq {
    /// In: `VIRQ_*`.
    pub virq: u32,
    /// In: the vCPU to bind to.
    pub vcpu: u32,
    /// Out: the allocated port.
    pub port: u32,
}
assert_eq_size!(EvtchnBindVirq, [u8; 12]);
const_assert_eq!(offset_of!(EvtchnBindVirq, vcpu), 4);
const_assert_eq!(offset_of!(EvtchnBindVirq, port), 8);

/// `struct evtchn_bind_ipi`.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct EvtchnBindIpi {
    /// In: the vCPU to notify.
    pub vcpu: u32,
    /// Out: the allocated port.
    pub port: u32,
}
assert_eq_size!(EvtchnBindIpi, [u8; 8]);
const_assert_eq!(offset_of!(EvtchnBindIpi, port), 4);

/// `struct evtchn_bind_vcpu` (event_channel.h).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct EvtchnBindVcpu {
    /// In: the port.
    pub port: u32,
    /// In: the vCPU to notify from now on.
    pub vcpu: u32,
}
assert_eq_size!(EvtchnBindVcpu, [u8; 8]);
const_assert_eq!(offset_of!(EvtchnBindVcpu, vcpu), 4);

/// `struct evtchn_send` and `struct evtchn_unmask` (a single port) and
/// `struct evtchn_close`.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct EvtchnPort {
    /// The port.
    pub port: u32,
}
assert_eq_size!(EvtchnPort, [u8; 4]);

/// Word index and bit of `port` in `evtchn_pending`/`evtchn_mask`, and the
/// selector bit in `evtchn_pending_sel` (2-level ABI: one selector bit per
/// 64-bit word).
pub const fn port_word_bit(port: u32) -> (usize, u32) {
    ((port / 64) as usize, port % 64)
}

/// `evtchn_mask` words of the 2-level ABI (`sizeof(xen_ulong_t) * 8` on
/// x86-64): shared_info is zero-filled at domain creation, so every port
/// starts unmasked; the guest masks them all first (xen.h "MASK ... is only
/// updated by the guest"; Linux `xen_evtchn_mask_all`, Xen's own guest
/// `map_shared_info` "Mask all upcalls").
pub const EVTCHN_2L_WORDS: usize = 64;

/// What acknowledging one port finds in its words (pure: the backend
/// applies it to shared memory).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortScan {
    /// The port's pending bit was set.
    pub pending: bool,
    /// The port is masked (pending but must not be handled).
    pub masked: bool,
}

/// The state of `port` in its `evtchn_pending` and `evtchn_mask` words.
///
/// The selector taken from `vcpu_info` is never written back: Xen's
/// `evtchn_2l_set_pending` (xen/common/event_2l.c) raises an upcall only
/// on a 0->1 transition of the port's selector bit, so a selector bit put
/// back without `evtchn_upcall_pending` silences every later event of that
/// word (review finding F1). A guest that masks every port it has not
/// bound (see [`EVTCHN_2L_WORDS`]) has nothing else to remember.
pub const fn scan_port(pending_word: u64, mask_word: u64, port: u32) -> PortScan {
    let (_, bit) = port_word_bit(port);
    let port_bit = 1u64 << bit;
    PortScan {
        pending: pending_word & port_bit != 0,
        masked: mask_word & port_bit != 0,
    }
}

// ---------------------------------------------------------------------------
// vcpu_op (vcpu.h)
// ---------------------------------------------------------------------------

/// `VCPUOP_get_runstate_info` (vcpu.h; arg: a [`VcpuRunstateInfo`] to
/// fill).
pub const VCPUOP_GET_RUNSTATE_INFO: u32 = 4;
/// `VCPUOP_register_runstate_memory_area` (arg: guest *virtual* address on
/// x86, vcpu.h note 1).
pub const VCPUOP_REGISTER_RUNSTATE_MEMORY_AREA: u32 = 5;
/// `VCPUOP_set_singleshot_timer`.
pub const VCPUOP_SET_SINGLESHOT_TIMER: u32 = 8;
/// `VCPUOP_register_vcpu_info` (vcpu.h): place this vCPU's `vcpu_info` at
/// `offset` in guest frame `mfn` (a GFN for HVM) instead of shared_info's
/// slot; needed for vCPU ids of [`XEN_LEGACY_MAX_VCPUS`] and more, which
/// have no slot. Arg: [`VcpuRegisterVcpuInfo`]. Once registered it cannot
/// be moved back.
pub const VCPUOP_REGISTER_VCPU_INFO: u32 = 10;

/// `struct vcpu_register_vcpu_info` (vcpu.h).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct VcpuRegisterVcpuInfo {
    /// Frame holding the `vcpu_info`.
    pub mfn: u64,
    /// Byte offset in the frame (the structure must not cross the page).
    pub offset: u32,
    /// Reserved, 0.
    pub rsvd: u32,
}
assert_eq_size!(VcpuRegisterVcpuInfo, [u8; 16]);

/// The vCPU id of an HVM vCPU from its APIC ID when CPUID base+4 has no
/// vCPU id ([`HVM_VCPU_ID_PRESENT`] clear): Xen's vLAPIC gives vCPU n the
/// APIC ID 2n (`xen/arch/x86/hvm/vlapic.c`, `vlapic_reset`: `APIC_ID =
/// v->vcpu_id * 2`; the MADT hvmloader builds says the same). QEMU/KVM's
/// Xen emulation sets the leaf, so its own numbering is used there.
pub const fn hvm_vcpu_from_apic_id(apic_id: u32) -> u32 {
    apic_id / 2
}
/// `VCPUOP_stop_singleshot_timer` (arg NULL).
pub const VCPUOP_STOP_SINGLESHOT_TIMER: u32 = 9;
/// `VCPUOP_stop_periodic_timer` (arg NULL).
pub const VCPUOP_STOP_PERIODIC_TIMER: u32 = 7;
/// `VCPU_SSHOTTMR_future`: vcpu.h says it asks for -ETIME when the deadline
/// has passed but "can be ignored by the hypervisor"; current Xen ignores
/// `flags` altogether (`xen/common/domain.c`, VCPUOP_set_singleshot_timer).
/// pvops passes 0, as Linux does (review finding F11).
pub const VCPU_SSHOTTMR_FUTURE: u32 = 1 << 0;

/// `struct vcpu_set_singleshot_timer`.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct VcpuSetSingleshotTimer {
    /// Absolute system time (pvclock ns) of the timeout.
    pub timeout_abs_ns: u64,
    /// `VCPU_SSHOTTMR_*`.
    pub flags: u32,
    /// Padding (the C struct is 16 bytes with tail padding).
    pub pad: u32,
}
assert_eq_size!(VcpuSetSingleshotTimer, [u8; 16]);
const_assert_eq!(offset_of!(VcpuSetSingleshotTimer, flags), 8);

/// `struct vcpu_register_runstate_memory_area` (the `addr` union, as `p`).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct VcpuRegisterRunstateMemoryArea {
    /// Address of a [`VcpuRunstateInfo`] (guest virtual on x86).
    pub addr: u64,
}
assert_eq_size!(VcpuRegisterRunstateMemoryArea, [u8; 8]);

/// `RUNSTATE_running`.
pub const RUNSTATE_RUNNING: usize = 0;
/// `RUNSTATE_runnable`: runnable but not scheduled (stolen).
pub const RUNSTATE_RUNNABLE: usize = 1;
/// `RUNSTATE_blocked`.
pub const RUNSTATE_BLOCKED: usize = 2;
/// `RUNSTATE_offline`: not runnable, not blocked (paused; also stolen).
pub const RUNSTATE_OFFLINE: usize = 3;
/// `XEN_RUNSTATE_UPDATE`: set in `state_entry_time` during an update (only
/// with `VMASST_TYPE_runstate_update_flag`).
pub const XEN_RUNSTATE_UPDATE: u64 = 1 << 63;

/// `struct vcpu_runstate_info`.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct VcpuRunstateInfo {
    /// `RUNSTATE_*` (C `int`).
    pub state: i32,
    /// Padding.
    pub pad: u32,
    /// System time the current state was entered (ns).
    pub state_entry_time: u64,
    /// Time spent in each `RUNSTATE_*` (ns).
    pub time: [u64; 4],
}
assert_eq_size!(VcpuRunstateInfo, [u8; 48]);
const_assert_eq!(offset_of!(VcpuRunstateInfo, state_entry_time), 8);
const_assert_eq!(offset_of!(VcpuRunstateInfo, time), 16);

impl VcpuRunstateInfo {
    /// Stolen time: runnable plus offline (Linux `xen_steal_clock`).
    pub fn steal_ns(&self) -> u64 {
        self.time[RUNSTATE_RUNNABLE].wrapping_add(self.time[RUNSTATE_OFFLINE])
    }
}

// ---------------------------------------------------------------------------
// sched_op (sched.h)
// ---------------------------------------------------------------------------

/// `SCHEDOP_yield`.
pub const SCHEDOP_YIELD: u32 = 0;
/// `SCHEDOP_block`: block until an event is pending (Xen checks for pending
/// events after marking the vCPU blocked, so a pending event prevents the
/// block).
pub const SCHEDOP_BLOCK: u32 = 1;
/// `SCHEDOP_shutdown` (arg: [`SchedShutdown`]).
pub const SCHEDOP_SHUTDOWN: u32 = 2;
/// `SHUTDOWN_poweroff`.
pub const SHUTDOWN_POWEROFF: u32 = 0;
/// `SHUTDOWN_reboot`.
pub const SHUTDOWN_REBOOT: u32 = 1;
/// `SHUTDOWN_suspend`.
pub const SHUTDOWN_SUSPEND: u32 = 2;
/// `SHUTDOWN_crash`.
pub const SHUTDOWN_CRASH: u32 = 3;
/// `SHUTDOWN_watchdog`.
pub const SHUTDOWN_WATCHDOG: u32 = 4;

/// `struct sched_shutdown`.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct SchedShutdown {
    /// `SHUTDOWN_*`.
    pub reason: u32,
}
assert_eq_size!(SchedShutdown, [u8; 4]);

/// `SCHEDOP_poll` (sched.h): block until one of the given event channels
/// is pending (masked ones included: "poll a set of event-channel ports"),
/// or until `timeout` (absolute system time; 0 = none). Arg: [`SchedPoll`].
pub const SCHEDOP_POLL: u32 = 3;

/// `struct sched_poll` (sched.h) on x86_64: `XEN_GUEST_HANDLE(evtchn_port_t)
/// ports` (a guest-linear address), `unsigned int nr_ports`, then
/// `uint64_t timeout` (8-byte aligned).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct SchedPoll {
    /// Address of an array of `nr_ports` 32-bit ports.
    pub ports: u64,
    /// Ports in the array.
    pub nr_ports: u32,
    /// Padding to the 8-byte aligned timeout.
    pub pad: u32,
    /// Absolute system time to give up at, 0 for none.
    pub timeout: u64,
}
assert_eq_size!(SchedPoll, [u8; 24]);

// ---------------------------------------------------------------------------
// shared_info and vcpu_info (xen.h, arch-x86/xen.h, arch-x86/xen-x86_64.h)
// ---------------------------------------------------------------------------

/// `XEN_LEGACY_MAX_VCPUS` (arch-x86/xen.h): `vcpu_info` slots in shared_info.
pub const XEN_LEGACY_MAX_VCPUS: usize = 32;

/// `struct arch_vcpu_info` (arch-x86/xen-x86_64.h).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct ArchVcpuInfo {
    /// CR2 (PV guests).
    pub cr2: u64,
    /// Padding ("sizeof(vcpu_info_t) == 64").
    pub pad: u64,
}
assert_eq_size!(ArchVcpuInfo, [u8; 16]);
const_assert_eq!(offset_of!(ArchVcpuInfo, pad), 8);

/// `struct vcpu_info` (xen.h), 64 bytes on x86.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct VcpuInfo {
    /// Set by Xen when an event is pending for this vCPU; cleared by the
    /// guest before it scans.
    pub evtchn_upcall_pending: u8,
    /// `evtchn_upcall_mask` (PV only; HVM delivery follows RFLAGS.IF).
    pub evtchn_upcall_mask: u8,
    /// Padding up to the 8-byte `xen_ulong_t`.
    pub pad0: [u8; 6],
    /// One bit per 64-bit word of `evtchn_pending` with news.
    pub evtchn_pending_sel: u64,
    /// Architecture part.
    pub arch: ArchVcpuInfo,
    /// This vCPU's pvclock.
    pub time: VcpuTimeInfo,
}
assert_eq_size!(VcpuInfo, [u8; 64]);
const_assert_eq!(offset_of!(VcpuInfo, evtchn_upcall_mask), 1);
const_assert_eq!(offset_of!(VcpuInfo, evtchn_pending_sel), 8);
const_assert_eq!(offset_of!(VcpuInfo, arch), 16);
const_assert_eq!(offset_of!(VcpuInfo, time), 32);

/// `struct arch_shared_info` (arch-x86/xen.h, x86-64).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct ArchSharedInfo {
    /// Valid p2m entries (PV).
    pub max_pfn: u64,
    /// p2m frame list list (PV).
    pub pfn_to_mfn_frame_list_list: u64,
    /// NMI reason.
    pub nmi_reason: u64,
    /// p2m address space root (PV).
    pub p2m_cr3: u64,
    /// Linear p2m address (PV).
    pub p2m_vaddr: u64,
    /// p2m generation (PV).
    pub p2m_generation: u64,
}
assert_eq_size!(ArchSharedInfo, [u8; 48]);
const_assert_eq!(offset_of!(ArchSharedInfo, pfn_to_mfn_frame_list_list), 8);
const_assert_eq!(offset_of!(ArchSharedInfo, nmi_reason), 16);
const_assert_eq!(offset_of!(ArchSharedInfo, p2m_cr3), 24);
const_assert_eq!(offset_of!(ArchSharedInfo, p2m_vaddr), 32);
const_assert_eq!(offset_of!(ArchSharedInfo, p2m_generation), 40);

/// `struct shared_info` (xen.h) for x86-64.
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct SharedInfo {
    /// Per-vCPU info for vCPUs 0..32.
    pub vcpu_info: [VcpuInfo; XEN_LEGACY_MAX_VCPUS],
    /// Pending bit per event channel port.
    pub evtchn_pending: [u64; 64],
    /// Mask bit per event channel port.
    pub evtchn_mask: [u64; 64],
    /// Wall clock version (seqlock as [`VcpuTimeInfo::version`]).
    pub wc_version: u32,
    /// Wall clock seconds at system time 0 (low 32 bits).
    pub wc_sec: u32,
    /// Wall clock nanoseconds.
    pub wc_nsec: u32,
    /// Wall clock seconds, high 32 bits (x86-64).
    pub wc_sec_hi: u32,
    /// Architecture part.
    pub arch: ArchSharedInfo,
}
const_assert_eq!(offset_of!(SharedInfo, evtchn_pending), 2048);
const_assert_eq!(offset_of!(SharedInfo, evtchn_mask), 2560);
const_assert_eq!(offset_of!(SharedInfo, wc_version), 3072);
const_assert_eq!(offset_of!(SharedInfo, wc_sec), 3076);
const_assert_eq!(offset_of!(SharedInfo, wc_nsec), 3080);
const_assert_eq!(offset_of!(SharedInfo, wc_sec_hi), 3084);
const_assert_eq!(offset_of!(SharedInfo, arch), 3088);
assert_eq_size!(SharedInfo, [u8; 3136]);
static_assertions::const_assert!(core::mem::size_of::<SharedInfo>() <= 4096);

/// Byte offset of `vcpu_info[vcpu]` in shared_info.
pub const fn vcpu_info_offset(vcpu: usize) -> usize {
    offset_of!(SharedInfo, vcpu_info) + vcpu * core::mem::size_of::<VcpuInfo>()
}
/// Byte offset of `evtchn_pending[word]` in shared_info.
pub const fn evtchn_pending_offset(word: usize) -> usize {
    offset_of!(SharedInfo, evtchn_pending) + word * 8
}
/// Byte offset of `evtchn_mask[word]` in shared_info.
pub const fn evtchn_mask_offset(word: usize) -> usize {
    offset_of!(SharedInfo, evtchn_mask) + word * 8
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;

    #[test]
    fn signature_words_spell_the_signature() {
        let mut s = [0u8; 12];
        s[0..4].copy_from_slice(&SIGNATURE_EBX.to_le_bytes());
        s[4..8].copy_from_slice(&SIGNATURE_ECX.to_le_bytes());
        s[8..12].copy_from_slice(&SIGNATURE_EDX.to_le_bytes());
        assert_eq!(&s, SIGNATURE);
    }

    #[test]
    fn leaves_decode() {
        let v = Version::from_eax(0x0004_0013);
        assert_eq!((v.major, v.minor), (4, 19));
        assert_eq!(v.to_eax(), 0x0004_0013);
        let h = HypercallLeaf::from_regs(1, 0x4000_0000, 1, 0);
        assert_eq!((h.pages, h.msr), (1, 0x4000_0000));
        assert!(h.usable());
        assert!(!HypercallLeaf::from_regs(0, 0x4000_0000, 0, 0).usable());
        assert!(!HypercallLeaf::from_regs(1, 0, 0, 0).usable());
        let t = TimeLeaf::from_regs(HOST_TSC_RELIABLE, TSC_MODE_NEVER_EMULATE, 2_400_000, 0);
        assert_eq!(t.guest_tsc_khz, 2_400_000);
        assert_eq!(t.tsc_mode, 2);
        assert_eq!(t.flags & TSC_EMULATED, 0);
    }

    #[test]
    fn hypercall_stub_check() {
        // What Xen's vmx_init_hypercall_page writes for xen_version (17).
        let mut stub = [0u8; HYPERCALL_STUB_SIZE];
        stub[..9].copy_from_slice(&[0xb8, 17, 0, 0, 0, 0x0f, 0x01, 0xc1, 0xc3]);
        assert!(stub_is_filled(&stub, hypercall::XEN_VERSION));
        assert!(!stub_is_filled(&stub, hypercall::SCHED_OP));
        assert!(!stub_is_filled(&[0u8; 32], 0));
        assert!(!stub_is_filled(&[0xccu8; 32], 17));
        assert_eq!(HYPERCALL_STUBS, 128);
    }

    #[test]
    fn hypervisor_side_stub_passes_the_guest_check() {
        for nr in [0u32, 12, 17, 24, 29, 32, 34, 127] {
            let s = hypercall_stub(nr, VMMCALL);
            assert!(stub_is_filled(&s, nr));
            assert_eq!(&s[5..9], &[0x0f, 0x01, 0xd9, 0xc3]);
            assert!(s[9..].iter().all(|&b| b == STUB_INT3));
        }
        assert!(!stub_is_filled(&hypercall_stub(17, VMCALL), 18));
        assert_eq!(HYPERCALL_MSR_VIRIDIAN, HYPERCALL_MSR + 0x200);
    }

    #[test]
    fn numbers_match_the_headers() {
        assert_eq!(hypercall::MEMORY_OP, 12);
        assert_eq!(hypercall::XEN_VERSION, 17);
        assert_eq!(hypercall::VCPU_OP, 24);
        assert_eq!(hypercall::SCHED_OP, 29);
        assert_eq!(hypercall::EVENT_CHANNEL_OP, 32);
        assert_eq!(hypercall::HVM_OP, 34);
        assert_eq!(callback_via_vector(0xf3), 0x0200_0000_0000_00f3);
        assert_eq!(errno::EINVAL, 22);
        assert_eq!(errno::EFAULT, 14);
        assert_eq!(errno::ENOSYS, 38);
        assert_eq!(errno::name(-errno::ENOSYS), "ENOSYS");
        assert_eq!(errno::name(-1000), "error");
    }

    #[test]
    fn struct_bytes_match_the_headers() {
        let a = AddToPhysmap {
            domid: DOMID_SELF,
            size: 0,
            space: XENMAPSPACE_SHARED_INFO,
            idx: 0,
            gpfn: 0x1234,
        };
        let b = a.as_bytes();
        assert_eq!(&b[0..2], &[0xf0, 0x7f]);
        assert_eq!(&b[16..24], &0x1234u64.to_le_bytes());
        let p = HvmParam {
            domid: DOMID_SELF,
            pad: 0,
            index: HVM_PARAM_CALLBACK_IRQ,
            value: callback_via_vector(0x30),
        };
        assert_eq!(p.as_bytes()[15], 2);
        assert_eq!(p.as_bytes()[8], 0x30);
        let v = EvtchnBindVirq {
            virq: VIRQ_TIMER,
            vcpu: 0,
            port: 5,
        };
        assert_eq!(&v.as_bytes()[8..12], &[5, 0, 0, 0]);
    }

    #[test]
    fn shared_info_offsets() {
        assert_eq!(vcpu_info_offset(0), 0);
        assert_eq!(vcpu_info_offset(1), 64);
        assert_eq!(vcpu_info_offset(0) + offset_of!(VcpuInfo, time), 32);
        assert_eq!(evtchn_pending_offset(1), 2056);
        assert_eq!(evtchn_mask_offset(0), 2560);
        let mut page = [0u8; 4096];
        page[evtchn_pending_offset(0)] = 0b100;
        page[32] = 2; // vcpu_info[0].time.version
        let (si, _) = SharedInfo::read_from_prefix(&page).unwrap();
        assert_eq!(si.evtchn_pending[0], 0b100);
        assert_eq!(si.vcpu_info[0].time.version, 2);
    }

    #[test]
    fn time_leaf_layout_check() {
        let xen = TimeLeaf::from_regs(HOST_TSC_RELIABLE, TSC_MODE_NEVER_EMULATE, 2_400_000, 1);
        assert_eq!(xen.sound_tsc_khz(), Some(2_400_000));
        // QEMU/KVM: kHz in EAX, pvclock mul/shift in ECX/EDX.
        let qemu = TimeLeaf::from_regs(2_400_000, 0, 0xd555_5555, 0xffff_ffff);
        assert!(!qemu.follows_xen_layout());
        assert_eq!(qemu.sound_tsc_khz(), None);
        assert_eq!(TimeLeaf::from_regs(0, 0, 0, 0).sound_tsc_khz(), None);
        let h = HvmLeaf::from_regs(HVM_UPCALL_VECTOR | HVM_VCPU_ID_PRESENT, 3, 1);
        assert!(h.upcall_vector());
        assert_eq!(h.vcpu(), 3);
        assert_eq!(HvmLeaf::from_regs(0, 3, 0).vcpu(), 0);
    }

    #[test]
    fn port_demultiplexing() {
        assert_eq!(port_word_bit(0), (0, 0));
        assert_eq!(port_word_bit(65), (1, 1));
        let s = scan_port(1 << 3, 0, 3);
        assert_eq!(
            s,
            PortScan {
                pending: true,
                masked: false,
            }
        );
        // Other ports of the word change nothing for this one.
        assert_eq!(scan_port((1 << 3) | (1 << 7), 0, 3), s);
        // The port itself masked.
        let s = scan_port(1 << 3, 1 << 3, 3);
        assert!(s.pending && s.masked);
        // A port in word 1: bit 1 of its word.
        assert!(scan_port(1 << 1, 0, 65).pending);
        // Nothing pending for the port.
        assert!(!scan_port(0, 0, 3).pending);
    }

    #[test]
    fn steal_is_runnable_plus_offline() {
        let r = VcpuRunstateInfo {
            state: RUNSTATE_RUNNING as i32,
            pad: 0,
            state_entry_time: 10,
            time: [1_000, 20, 3_000, 5],
        };
        assert_eq!(r.steal_ns(), 25);
        assert_eq!(&r.as_bytes()[16..24], &1_000u64.to_le_bytes());
        assert_eq!(&r.as_bytes()[24..32], &20u64.to_le_bytes());
    }
}
