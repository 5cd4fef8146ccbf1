//! The Hyper-V guest interface ("Hv#1"), as typed definitions.
//!
//! Everything here comes from the Microsoft Hypervisor Top Level Functional
//! Specification (TLFS, the `learn.microsoft.com` edition that replaced the
//! v6.0b PDF). Section names are cited as "TLFS, chapter: section".
//! Numbers the TLFS only names (status codes, flush flags) are cross-checked
//! against Linux `include/hyperv/hvgdk_mini.h`.
//!
//! Both halves of pvops use this module: the guest backend
//! (`pvops-backends`, feature `hyperv`) and the microvisor's `hyperv`
//! persona. Nothing here has behaviour beyond encoding and decoding, and the
//! arithmetic helpers ([`reference_time`], [`GuestOsId`]) are host-tested.
//!
//! The style follows OpenVMM's `hvdef`: one newtype per register or word,
//! constants for its bits, and zerocopy layouts with static size and offset
//! assertions for structures in guest memory.

use static_assertions::{const_assert, const_assert_eq};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// Size of every page shared with the hypervisor (hypercall, reference TSC,
/// VP assist, hypercall input pages).
pub const PAGE_SIZE: usize = 4096;

/// CPUID leaves (TLFS, Feature and Interface Discovery).
pub mod cpuid {
    /// "Hypervisor CPUID Leaf Range": EAX = highest leaf, EBX:ECX:EDX = vendor.
    pub const VENDOR_AND_MAX_FUNCTIONS: u32 = 0x4000_0000;
    /// "Hypervisor Vendor-Neutral Interface Identification": EAX = "Hv#1".
    pub const INTERFACE: u32 = 0x4000_0001;
    /// "Hypervisor System Identity": EAX build, EBX major<<16 | minor.
    pub const VERSION: u32 = 0x4000_0002;
    /// "Hypervisor Feature Identification": EAX:EBX privileges, EDX features.
    pub const FEATURES: u32 = 0x4000_0003;
    /// "Implementation Recommendations": EAX hints, EBX spin-retry count.
    pub const ENLIGHTENMENT_INFO: u32 = 0x4000_0004;
    /// "Hypervisor Implementation Limits": EAX max virtual processors.
    pub const IMPLEMENTATION_LIMITS: u32 = 0x4000_0005;
    /// "Implementation Hardware Features".
    pub const HARDWARE_FEATURES: u32 = 0x4000_0006;

    /// The highest leaf must be at least this on a conforming hypervisor
    /// ("On Microsoft hypervisors, this will be at least 0x40000005"; step 2
    /// of "Establishing the Hypercall Interface").
    pub const MIN_MAX_LEAF: u32 = IMPLEMENTATION_LIMITS;
    /// The vendor signature in EBX:ECX:EDX of leaf 0x4000_0000. The TLFS
    /// says to use it for reporting only; compatibility goes by [`HV1`].
    pub const VENDOR_SIGNATURE: &[u8; 12] = b"Microsoft Hv";
    /// "Hv#1" in EAX of leaf 0x4000_0001, little-endian ASCII.
    pub const HV1: u32 = 0x3123_7648;
    /// The hypervisor-present bit, CPUID.1:ECX bit 31 ("Hypervisor Discovery").
    pub const HYPERVISOR_PRESENT_ECX1: u32 = 1 << 31;
}

/// Implementation hardware features: EAX of CPUID 0x4000_0006 (TLFS,
/// Feature and Interface Discovery: Implementation Hardware Features;
/// `HV_HYPERVISOR_HARDWARE_FEATURES`).
pub mod hardware_features {
    /// Bit 0: APIC overlay assist in use.
    pub const APIC_OVERLAY_ASSIST_IN_USE: u32 = 1 << 0;
    /// Bit 1: MSR bitmaps in use.
    pub const MSR_BITMAPS_IN_USE: u32 = 1 << 1;
    /// Bit 2: architectural performance counters in use.
    pub const ARCHITECTURAL_PERFORMANCE_COUNTERS_IN_USE: u32 = 1 << 2;
    /// Bit 3: second-level address translation (nested paging) in use.
    pub const SLAT_IN_USE: u32 = 1 << 3;
}

/// Partition privileges: `HV_PARTITION_PRIVILEGE_MASK`, EAX (bits 31:0) and
/// EBX (bits 63:32) of CPUID 0x4000_0003 (TLFS, Data Types:
/// HV_PARTITION_PRIVILEGE_MASK).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Privileges(pub u64);

impl Privileges {
    /// AccessVpRunTimeReg: HV_X64_MSR_VP_RUNTIME.
    pub const VP_RUNTIME: Privileges = Privileges(1 << 0);
    /// AccessPartitionReferenceCounter: HV_X64_MSR_TIME_REF_COUNT.
    pub const PARTITION_REFERENCE_COUNTER: Privileges = Privileges(1 << 1);
    /// AccessSynicRegs: SCONTROL..EOM, SINT0..15.
    pub const SYNIC_REGS: Privileges = Privileges(1 << 2);
    /// AccessSyntheticTimerRegs: STIMER0_CONFIG..STIMER3_COUNT.
    pub const SYNTHETIC_TIMER_REGS: Privileges = Privileges(1 << 3);
    /// AccessIntrCtrlRegs: HV_X64_MSR_EOI, ICR and TPR (and, as KVM and
    /// Linux treat it, HV_X64_MSR_VP_ASSIST_PAGE).
    pub const INTR_CTRL_REGS: Privileges = Privileges(1 << 4);
    /// AccessHypercallMsrs: HV_X64_MSR_GUEST_OS_ID and HV_X64_MSR_HYPERCALL.
    pub const HYPERCALL_MSRS: Privileges = Privileges(1 << 5);
    /// AccessVpIndex: HV_X64_MSR_VP_INDEX.
    pub const VP_INDEX: Privileges = Privileges(1 << 6);
    /// AccessResetReg: HV_X64_MSR_RESET.
    pub const RESET_REG: Privileges = Privileges(1 << 7);
    /// AccessStatsReg.
    pub const STATS_REG: Privileges = Privileges(1 << 8);
    /// AccessPartitionReferenceTsc: HV_X64_MSR_REFERENCE_TSC.
    pub const PARTITION_REFERENCE_TSC: Privileges = Privileges(1 << 9);
    /// AccessGuestIdleReg: HV_X64_MSR_GUEST_IDLE.
    pub const GUEST_IDLE_REG: Privileges = Privileges(1 << 10);
    /// AccessFrequencyRegs: HV_X64_MSR_TSC_FREQUENCY and APIC_FREQUENCY.
    pub const FREQUENCY_REGS: Privileges = Privileges(1 << 11);
    /// AccessDebugRegs.
    pub const DEBUG_REGS: Privileges = Privileges(1 << 12);
    /// AccessReenlightenmentControls.
    pub const REENLIGHTENMENT_CONTROLS: Privileges = Privileges(1 << 13);
    /// AccessTscInvariantControls (bit 15): HV_X64_MSR_TSC_INVARIANT_CONTROL
    /// (Linux `HV_ACCESS_TSC_INVARIANT` in `hvgdk_mini.h`).
    pub const TSC_INVARIANT_CONTROLS: Privileges = Privileges(1 << 15);
    /// AccessPartitionId (bit 33): HvCallGetPartitionId.
    pub const ACCESS_PARTITION_ID: Privileges = Privileges(1 << 33);
    /// PostMessages (bit 36): HvCallPostMessage.
    pub const POST_MESSAGES: Privileges = Privileges(1 << 36);
    /// SignalEvents (bit 37): HvCallSignalEvent.
    pub const SIGNAL_EVENTS: Privileges = Privileges(1 << 37);
    /// CpuManagement (bit 44): set in the root partition only.
    pub const CPU_MANAGEMENT: Privileges = Privileges(1 << 44);

    /// From EAX (low half) and EBX (high half) of CPUID 0x4000_0003.
    pub const fn from_cpuid(eax: u32, ebx: u32) -> Privileges {
        Privileges((ebx as u64) << 32 | eax as u64)
    }

    /// Whether every bit of `other` is set.
    pub const fn contains(self, other: Privileges) -> bool {
        self.0 & other.0 == other.0
    }

    /// The union of two sets.
    pub const fn union(self, other: Privileges) -> Privileges {
        Privileges(self.0 | other.0)
    }
}

/// Feature flags: EDX of CPUID 0x4000_0003 (TLFS, Feature and Interface
/// Discovery: Hypervisor Feature Identification).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Features(pub u32);

impl Features {
    /// Bit 1: guest debugging support.
    pub const GUEST_DEBUGGING: Features = Features(1 << 1);
    /// Bit 2: performance monitor support.
    pub const PERFORMANCE_MONITOR: Features = Features(1 << 2);
    /// Bit 4: hypercall input through XMM registers.
    pub const XMM_HYPERCALL_INPUT: Features = Features(1 << 4);
    /// Bit 5: virtual guest idle state.
    pub const GUEST_IDLE: Features = Features(1 << 5);
    /// Bit 8: "Support for determining timer frequencies is available"
    /// (the TSC and APIC frequency MSRs).
    pub const FREQUENCY_MSRS: Features = Features(1 << 8);
    /// Bit 10: guest crash MSRs (GuestCrashMsrsAvailable; TLFS, Partition
    /// Properties: Partition Crash Enlightenment).
    pub const GUEST_CRASH_MSRS: Features = Features(1 << 10);
    /// Bit 15: hypercall output through XMM registers.
    pub const XMM_HYPERCALL_OUTPUT: Features = Features(1 << 15);
    /// Bit 18: HypercallMsrLockAvailable.
    pub const HYPERCALL_MSR_LOCK: Features = Features(1 << 18);
    /// Bit 19: "Use direct synthetic timers" (STIMER direct mode).
    pub const DIRECT_SYNTHETIC_TIMERS: Features = Features(1 << 19);

    /// Whether every bit of `other` is set.
    pub const fn contains(self, other: Features) -> bool {
        self.0 & other.0 == other.0
    }

    /// The union of two sets.
    pub const fn union(self, other: Features) -> Features {
        Features(self.0 | other.0)
    }
}

/// Implementation recommendations: EAX of CPUID 0x4000_0004 (TLFS, Feature
/// and Interface Discovery: Implementation Recommendations).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Hints(pub u32);

impl Hints {
    /// Bit 0: hypercall for address space switches.
    pub const HYPERCALL_ADDRESS_SPACE_SWITCH: Hints = Hints(1 << 0);
    /// Bit 1: hypercall for local TLB flushes.
    pub const HYPERCALL_LOCAL_FLUSH: Hints = Hints(1 << 1);
    /// Bit 2: hypercall for remote TLB flushes rather than IPIs.
    pub const HYPERCALL_REMOTE_FLUSH: Hints = Hints(1 << 2);
    /// Bit 3: MSRs for the APIC EOI, ICR and TPR registers.
    pub const APIC_MSRS: Hints = Hints(1 << 3);
    /// Bit 4: the reset MSR for system reset.
    pub const RESET_MSR: Hints = Hints(1 << 4);
    /// Bit 5: relaxed timing (disable interrupt-delivery watchdogs).
    pub const RELAXED_TIMING: Hints = Hints(1 << 5);
    /// Bit 9: deprecate SynIC SINT AutoEOI. This concerns SINT auto-EOI,
    /// not the VP assist page's EOI assist ("lazy EOI").
    pub const DEPRECATE_AUTO_EOI: Hints = Hints(1 << 9);
    /// Bit 10: HvCallSendSyntheticClusterIpi for IPIs.
    pub const SYNTHETIC_CLUSTER_IPI: Hints = Hints(1 << 10);
    /// Bit 11: the Ex (sparse VP set) forms of flush and IPI hypercalls.
    pub const EX_PROCESSOR_MASKS: Hints = Hints(1 << 11);
    /// Bit 12: this hypervisor runs nested inside a Hyper-V partition.
    pub const NESTED: Hints = Hints(1 << 12);
    /// Bit 14: enlightened VMCS recommended (nested).
    pub const ENLIGHTENED_VMCS: Hints = Hints(1 << 14);
    /// Bit 17: UseDirectLocalFlushEntire (toggle CR4.PGE, no hypercall).
    pub const DIRECT_LOCAL_FLUSH_ENTIRE: Hints = Hints(1 << 17);

    /// Whether every bit of `other` is set.
    pub const fn contains(self, other: Hints) -> bool {
        self.0 & other.0 == other.0
    }

    /// The union of two sets.
    pub const fn union(self, other: Hints) -> Hints {
        Hints(self.0 | other.0)
    }
}

/// The Hyper-V leaves a guest decodes, from raw `[eax, ebx, ecx, edx]`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Leaves {
    /// EAX of 0x4000_0000.
    pub max_leaf: u32,
    /// EAX of 0x4000_0001 ([`cpuid::HV1`] on a conforming hypervisor).
    pub interface: u32,
    /// 0x4000_0002 EAX: build number.
    pub build: u32,
    /// 0x4000_0002 EBX bits 31:16.
    pub major: u16,
    /// 0x4000_0002 EBX bits 15:0.
    pub minor: u16,
    /// 0x4000_0003 EAX:EBX.
    pub privileges: Privileges,
    /// 0x4000_0003 EDX.
    pub features: Features,
    /// 0x4000_0004 EAX.
    pub hints: Hints,
    /// 0x4000_0004 EBX: spinlock retries before notifying (0xFFFF_FFFF never).
    pub spin_retries: u32,
    /// 0x4000_0005 EAX: maximum virtual processors (0 = not reported).
    pub max_vps: u32,
}

impl Leaves {
    /// Decodes the leaves; `leaf(n)` returns `[eax, ebx, ecx, edx]` of CPUID
    /// leaf `n`. Leaves above `max_leaf` are not read and decode as zero.
    pub fn decode(mut leaf: impl FnMut(u32) -> [u32; 4]) -> Leaves {
        let l0 = leaf(cpuid::VENDOR_AND_MAX_FUNCTIONS);
        let max_leaf = l0[0];
        let mut get = |n: u32| if n <= max_leaf { leaf(n) } else { [0; 4] };
        let interface = get(cpuid::INTERFACE)[0];
        let version = get(cpuid::VERSION);
        let features = get(cpuid::FEATURES);
        let hints = get(cpuid::ENLIGHTENMENT_INFO);
        let limits = get(cpuid::IMPLEMENTATION_LIMITS);
        Leaves {
            max_leaf,
            interface,
            build: version[0],
            major: (version[1] >> 16) as u16,
            minor: version[1] as u16,
            privileges: Privileges::from_cpuid(features[0], features[1]),
            features: Features(features[3]),
            hints: Hints(hints[0]),
            spin_retries: hints[1],
            max_vps: limits[0],
        }
    }

    /// What "Establishing the Hypercall Interface" step 2 checks: "Hv#1"
    /// and a highest leaf of at least 0x4000_0005 (and not past the
    /// hypervisor range, as Linux also requires).
    pub fn is_conforming(&self) -> bool {
        self.interface == cpuid::HV1
            && self.max_leaf >= cpuid::MIN_MAX_LEAF
            && self.max_leaf <= 0x4000_FFFF
    }
}

/// Synthetic MSRs (x64).
pub mod msr {
    /// HV_X64_MSR_GUEST_OS_ID (TLFS, Hypercall Interface: Reporting the
    /// Guest OS Identity). Partition-wide; must be non-zero before the
    /// hypercall page can be enabled.
    pub const GUEST_OS_ID: u32 = 0x4000_0000;
    /// HV_X64_MSR_HYPERCALL (TLFS, Hypercall Interface: Establishing the
    /// Hypercall Interface). See [`super::hypercall_msr`].
    pub const HYPERCALL: u32 = 0x4000_0001;
    /// HV_X64_MSR_VP_INDEX (TLFS, Virtual Processor Properties: Virtual
    /// Processor Indices). Read-only.
    pub const VP_INDEX: u32 = 0x4000_0002;
    /// HV_X64_MSR_RESET.
    pub const RESET: u32 = 0x4000_0003;
    /// HV_X64_MSR_VP_RUNTIME: 100 ns units (TLFS, Virtual Processor
    /// Properties: Virtual Processor Run Time Register).
    pub const VP_RUNTIME: u32 = 0x4000_0010;
    /// HV_X64_MSR_TIME_REF_COUNT: partition reference counter, 100 ns units
    /// (TLFS, Timers: Partition Reference Counter MSR). Read-only.
    pub const TIME_REF_COUNT: u32 = 0x4000_0020;
    /// HV_X64_MSR_REFERENCE_TSC: reference TSC page GPA | enable (TLFS,
    /// Timers: Reference Time Stamp Counter (TSC) Page MSR).
    pub const REFERENCE_TSC: u32 = 0x4000_0021;
    /// HV_X64_MSR_TSC_FREQUENCY: TSC frequency in Hz (Linux
    /// `hvgdk_mini.h`; gated by [`super::Privileges::FREQUENCY_REGS`] and
    /// [`super::Features::FREQUENCY_MSRS`]).
    pub const TSC_FREQUENCY: u32 = 0x4000_0022;
    /// HV_X64_MSR_APIC_FREQUENCY: local APIC timer frequency in Hz.
    pub const APIC_FREQUENCY: u32 = 0x4000_0023;
    /// HV_X64_MSR_EOI (TLFS, Virtual Interrupt Control: Local APIC MSR
    /// Accesses). Write-only, bits 31:0 = EOI value.
    pub const EOI: u32 = 0x4000_0070;
    /// HV_X64_MSR_ICR: ICR high in 63:32, low in 31:0.
    pub const ICR: u32 = 0x4000_0071;
    /// HV_X64_MSR_TPR: TPR in 7:0.
    pub const TPR: u32 = 0x4000_0072;
    /// HV_X64_MSR_VP_ASSIST_PAGE: VP assist page PFN | enable (TLFS,
    /// Virtual Processor Properties: Virtual Processor Assist Page).
    pub const VP_ASSIST_PAGE: u32 = 0x4000_0073;
    /// HV_X64_MSR_STIMER0_CONFIG (TLFS, Timers: Synthetic Timer MSRs).
    /// STIMERn_CONFIG is `STIMER0_CONFIG + 2n`.
    pub const STIMER0_CONFIG: u32 = 0x4000_00B0;
    /// HV_X64_MSR_STIMER0_COUNT: absolute expiry in reference time (100 ns)
    /// for one-shot timers. STIMERn_COUNT is `STIMER0_COUNT + 2n`.
    pub const STIMER0_COUNT: u32 = 0x4000_00B1;
    /// HV_X64_MSR_GUEST_IDLE: a read idles the VP until an interrupt.
    pub const GUEST_IDLE: u32 = 0x4000_00F0;
    /// HV_X64_MSR_CRASH_P0 (TLFS, Partition Properties: Guest Crash
    /// Enlightenment Interface). P1..P4 follow.
    pub const CRASH_P0: u32 = 0x4000_0100;
    /// HV_X64_MSR_CRASH_P1.
    pub const CRASH_P1: u32 = 0x4000_0101;
    /// HV_X64_MSR_CRASH_P2.
    pub const CRASH_P2: u32 = 0x4000_0102;
    /// HV_X64_MSR_CRASH_P3: with CRASH_MESSAGE, the message's GPA.
    pub const CRASH_P3: u32 = 0x4000_0103;
    /// HV_X64_MSR_CRASH_P4: with CRASH_MESSAGE, the message length in bytes.
    pub const CRASH_P4: u32 = 0x4000_0104;
    /// HV_X64_MSR_CRASH_CTL: see [`super::crash_ctl`].
    pub const CRASH_CTL: u32 = 0x4000_0105;
    /// HV_X64_MSR_TSC_INVARIANT_CONTROL: bit 0 set exposes the architectural
    /// invariant-TSC flag (CPUID.80000007H:EDX\[8\]), which Hyper-V and KVM
    /// otherwise hide (Linux `ms_hyperv_init_platform`,
    /// `HV_INVARIANT_TSC_EXPOSED`).
    pub const TSC_INVARIANT_CONTROL: u32 = 0x4000_0118;

    /// Number of synthetic timers per VP (STIMER0..STIMER3; TLFS, Timers:
    /// Synthetic Timers).
    pub const STIMER_COUNT: u32 = 4;

    /// STIMERn_CONFIG for `n` in `0..STIMER_COUNT`.
    pub const fn stimer_config(n: u32) -> u32 {
        STIMER0_CONFIG + 2 * n
    }

    /// STIMERn_COUNT for `n` in `0..STIMER_COUNT`.
    pub const fn stimer_count(n: u32) -> u32 {
        STIMER0_COUNT + 2 * n
    }

    /// Whether `msr` lies in the synthetic MSR range 0x4000_0000..=0x4000_01FF
    /// a persona intercepts.
    pub const fn is_synthetic(msr: u32) -> bool {
        msr >= 0x4000_0000 && msr <= 0x4000_01FF
    }
}

/// Layout shared by the page-enabling MSRs (HYPERCALL, REFERENCE_TSC,
/// VP_ASSIST_PAGE): bit 0 enable, bits 11:1 reserved-preserve ("RsvdP"),
/// bits 63:12 the page's GPA page number.
pub mod page_msr {
    /// Bit 0: enable.
    pub const ENABLE: u64 = 1 << 0;
    /// Bits 63:12: the page's guest-physical address.
    pub const ADDRESS_MASK: u64 = !0xFFF;
    /// Bits 11:1: reserved, preserved on writes.
    pub const RESERVED_MASK: u64 = 0xFFE;

    /// The value to write to enable a page at `gpa`, preserving the reserved
    /// bits of `current` (the MSR's present value) as the TLFS requires.
    pub const fn enable(current: u64, gpa: u64) -> u64 {
        (current & RESERVED_MASK) | (gpa & ADDRESS_MASK) | ENABLE
    }

    /// The GPA a value points at.
    pub const fn address(value: u64) -> u64 {
        value & ADDRESS_MASK
    }

    /// Whether the enable bit is set.
    pub const fn is_enabled(value: u64) -> bool {
        value & ENABLE != 0
    }
}

/// HV_X64_MSR_HYPERCALL specifics beyond [`page_msr`] (TLFS, Hypercall
/// Interface: Establishing the Hypercall Interface).
pub mod hypercall_msr {
    /// Bit 1: Locked. Once set the MSR (and the page's location) is
    /// immutable until reset.
    pub const LOCKED: u64 = 1 << 1;
    /// Reserved-preserve bits of this MSR: 11:2 (bit 1 is Locked).
    pub const RESERVED_MASK: u64 = 0xFFC;

    /// The value that enables the hypercall page at `gpa`, preserving the
    /// reserved bits of `current` and leaving Locked clear.
    pub const fn enable(current: u64, gpa: u64) -> u64 {
        (current & RESERVED_MASK) | (gpa & super::page_msr::ADDRESS_MASK) | super::page_msr::ENABLE
    }
}

/// Synthetic timer configuration register (TLFS, Timers: Synthetic Timer
/// Configuration Register).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct StimerConfig(pub u64);

impl StimerConfig {
    /// Bit 0: enabled.
    pub const ENABLE: u64 = 1 << 0;
    /// Bit 1: periodic (else one-shot).
    pub const PERIODIC: u64 = 1 << 1;
    /// Bit 2: lazy.
    pub const LAZY: u64 = 1 << 2;
    /// Bit 3: auto-enable: writing a non-zero count enables the timer.
    pub const AUTO_ENABLE: u64 = 1 << 3;
    /// Bits 11:4: APIC vector asserted in direct mode.
    pub const VECTOR_SHIFT: u32 = 4;
    /// Bit 12: direct mode: assert `vector` instead of sending a SynIC message.
    pub const DIRECT_MODE: u64 = 1 << 12;
    /// Bits 19:16: SINTx for message mode.
    pub const SINT_SHIFT: u32 = 16;
    /// Bits that must be zero: 15:13 and 63:20.
    pub const RESERVED_MASK: u64 = 0xE000 | !0xF_FFFF;

    /// A one-shot, direct-mode, auto-enabled timer asserting `vector`: what
    /// pvops programs into STIMER0_CONFIG. Not yet enabled; writing a
    /// non-zero count to STIMER0_COUNT arms it.
    pub const fn direct_one_shot(vector: u8) -> StimerConfig {
        StimerConfig(Self::DIRECT_MODE | Self::AUTO_ENABLE | (vector as u64) << Self::VECTOR_SHIFT)
    }

    /// The APIC vector field.
    pub const fn vector(self) -> u8 {
        (self.0 >> Self::VECTOR_SHIFT) as u8
    }

    /// The SINT field.
    pub const fn sint(self) -> u8 {
        ((self.0 >> Self::SINT_SHIFT) & 0xF) as u8
    }

    /// Whether `flag` (one of the bit constants) is set.
    pub const fn has(self, flag: u64) -> bool {
        self.0 & flag == flag
    }
}

/// HV_X64_MSR_CRASH_CTL bits (TLFS, Data Types: HV_CRASH_CTL_REG_CONTENTS).
/// Reading the MSR reports the supported actions; writing invokes them.
pub mod crash_ctl {
    /// Bit 62: CrashMessage: P3 = message GPA, P4 = length (with CRASH_NOTIFY).
    pub const CRASH_MESSAGE: u64 = 1 << 62;
    /// Bit 63: CrashNotify: P0..P4 are written; log them.
    pub const CRASH_NOTIFY: u64 = 1 << 63;
    /// The longest message the hypervisor accepts, in bytes.
    pub const MAX_MESSAGE_LEN: usize = 4096;
}

/// Hypercall call codes (TLFS, Hypercall Reference, "Call Code").
pub mod call {
    /// HvCallFlushVirtualAddressSpace (simple): input [`super::FlushVirtualAddressSpace`].
    pub const FLUSH_VIRTUAL_ADDRESS_SPACE: u16 = 0x0002;
    /// HvCallFlushVirtualAddressList (rep): header [`super::FlushVirtualAddressSpace`],
    /// then one [`super::gva_range`] per rep.
    pub const FLUSH_VIRTUAL_ADDRESS_LIST: u16 = 0x0003;
    /// HvCallNotifyLongSpinWait (simple, fast).
    pub const NOTIFY_LONG_SPIN_WAIT: u16 = 0x0008;
    /// HvCallSendSyntheticClusterIpi (simple): input [`super::SendSyntheticClusterIpi`].
    pub const SEND_SYNTHETIC_CLUSTER_IPI: u16 = 0x000B;
    /// HvCallFlushVirtualAddressSpaceEx (sparse VP set).
    pub const FLUSH_VIRTUAL_ADDRESS_SPACE_EX: u16 = 0x0013;
    /// HvCallFlushVirtualAddressListEx (sparse VP set).
    pub const FLUSH_VIRTUAL_ADDRESS_LIST_EX: u16 = 0x0014;
    /// HvCallSendSyntheticClusterIpiEx (sparse VP set).
    pub const SEND_SYNTHETIC_CLUSTER_IPI_EX: u16 = 0x0015;
}

/// The hypercall input value passed in RCX (TLFS, Hypercall Interface:
/// Hypercall Inputs).
///
/// | bits  | field |
/// |-------|-------|
/// | 15:0  | call code |
/// | 16    | fast (register-based inputs) |
/// | 26:17 | variable header size, in 8-byte units |
/// | 31:27 | RsvdZ |
/// | 43:32 | rep count |
/// | 47:44 | RsvdZ |
/// | 59:48 | rep start index |
/// | 63:60 | RsvdZ |
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Control(pub u64);

impl Control {
    /// Bit 16: fast.
    pub const FAST: u64 = 1 << 16;
    const VAR_HEADER_SHIFT: u32 = 17;
    const REP_COUNT_SHIFT: u32 = 32;
    const REP_START_SHIFT: u32 = 48;
    /// Largest variable header size, rep count and rep start.
    pub const VAR_HEADER_MAX: u16 = 0x3FF;
    /// Largest rep count or rep start index (12 bits).
    pub const REP_MAX: u16 = 0xFFF;
    /// The RsvdZ bits: 31:27, 47:44 and 63:60.
    pub const RESERVED_MASK: u64 = 0xF800_0000 | 0xF000_0000_0000 | 0xF000_0000_0000_0000;

    /// A memory-based, non-rep call of `code`.
    pub const fn new(code: u16) -> Control {
        Control(code as u64)
    }

    /// With the fast (register-based) flag set.
    pub const fn fast(self) -> Control {
        Control(self.0 | Self::FAST)
    }

    /// With a rep count (12 bits; larger values are truncated).
    pub const fn with_rep_count(self, count: u16) -> Control {
        let clear = self.0 & !((Self::REP_MAX as u64) << Self::REP_COUNT_SHIFT);
        Control(clear | ((count & Self::REP_MAX) as u64) << Self::REP_COUNT_SHIFT)
    }

    /// With a rep start index (12 bits).
    pub const fn with_rep_start(self, start: u16) -> Control {
        let clear = self.0 & !((Self::REP_MAX as u64) << Self::REP_START_SHIFT);
        Control(clear | ((start & Self::REP_MAX) as u64) << Self::REP_START_SHIFT)
    }

    /// With a variable header size in 8-byte units (10 bits).
    pub const fn with_var_header_size(self, qwords: u16) -> Control {
        let clear = self.0 & !((Self::VAR_HEADER_MAX as u64) << Self::VAR_HEADER_SHIFT);
        Control(clear | ((qwords & Self::VAR_HEADER_MAX) as u64) << Self::VAR_HEADER_SHIFT)
    }

    /// The call code.
    pub const fn code(self) -> u16 {
        self.0 as u16
    }

    /// Whether the fast flag is set.
    pub const fn is_fast(self) -> bool {
        self.0 & Self::FAST != 0
    }

    /// Variable header size in 8-byte units.
    pub const fn var_header_size(self) -> u16 {
        ((self.0 >> Self::VAR_HEADER_SHIFT) as u16) & Self::VAR_HEADER_MAX
    }

    /// Rep count.
    pub const fn rep_count(self) -> u16 {
        ((self.0 >> Self::REP_COUNT_SHIFT) as u16) & Self::REP_MAX
    }

    /// Rep start index.
    pub const fn rep_start(self) -> u16 {
        ((self.0 >> Self::REP_START_SHIFT) as u16) & Self::REP_MAX
    }

    /// Whether any RsvdZ bit is set (the hypervisor then answers
    /// [`Status::INVALID_HYPERCALL_INPUT`]).
    pub const fn has_reserved_bits(self) -> bool {
        self.0 & Self::RESERVED_MASK != 0
    }
}

/// The hypercall result value returned in RAX (TLFS, Hypercall Interface:
/// Hypercall Outputs): status in 15:0, reps completed in 43:32.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct HypercallResult(pub u64);

impl HypercallResult {
    /// A result with `status` and `reps` completed, as a persona builds it.
    pub const fn new(status: Status, reps: u16) -> HypercallResult {
        HypercallResult(status.0 as u64 | ((reps & Control::REP_MAX) as u64) << 32)
    }

    /// The status field.
    pub const fn status(self) -> Status {
        Status(self.0 as u16)
    }

    /// Reps completed (total, not relative to the rep start index).
    pub const fn reps_completed(self) -> u16 {
        ((self.0 >> 32) as u16) & Control::REP_MAX
    }

    /// Whether the status is [`Status::SUCCESS`].
    pub const fn is_success(self) -> bool {
        self.status().0 == Status::SUCCESS.0
    }
}

/// `HV_STATUS` (TLFS, Data Types: HV_STATUS; values from Linux
/// `hvgdk_mini.h`, which tracks the Windows `hvgdk.h`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Status(pub u16);

impl Status {
    /// The call succeeded.
    pub const SUCCESS: Status = Status(0x0000);
    /// The hypercall code is not recognized.
    pub const INVALID_HYPERCALL_CODE: Status = Status(0x0002);
    /// Bad rep count or start index, or a RsvdZ bit set in the input value.
    pub const INVALID_HYPERCALL_INPUT: Status = Status(0x0003);
    /// A GPA is not 8-byte aligned, a list spans pages, or is out of bounds.
    pub const INVALID_ALIGNMENT: Status = Status(0x0004);
    /// An invalid parameter was specified.
    pub const INVALID_PARAMETER: Status = Status(0x0005);
    /// Access denied (missing privilege).
    pub const ACCESS_DENIED: Status = Status(0x0006);
    /// The partition is in an invalid state.
    pub const INVALID_PARTITION_STATE: Status = Status(0x0007);
    /// The operation is denied.
    pub const OPERATION_DENIED: Status = Status(0x0008);
    /// Unknown property.
    pub const UNKNOWN_PROPERTY: Status = Status(0x0009);
    /// Property value out of range.
    pub const PROPERTY_VALUE_OUT_OF_RANGE: Status = Status(0x000A);
    /// Insufficient memory.
    pub const INSUFFICIENT_MEMORY: Status = Status(0x000B);
    /// Invalid partition ID.
    pub const INVALID_PARTITION_ID: Status = Status(0x000D);
    /// Invalid VP index.
    pub const INVALID_VP_INDEX: Status = Status(0x000E);

    /// A stable upper-case name for logs ("UNKNOWN" for others).
    pub const fn name(self) -> &'static str {
        match self.0 {
            0x0000 => "SUCCESS",
            0x0002 => "INVALID_HYPERCALL_CODE",
            0x0003 => "INVALID_HYPERCALL_INPUT",
            0x0004 => "INVALID_ALIGNMENT",
            0x0005 => "INVALID_PARAMETER",
            0x0006 => "ACCESS_DENIED",
            0x0007 => "INVALID_PARTITION_STATE",
            0x0008 => "OPERATION_DENIED",
            0x0009 => "UNKNOWN_PROPERTY",
            0x000A => "PROPERTY_VALUE_OUT_OF_RANGE",
            0x000B => "INSUFFICIENT_MEMORY",
            0x000D => "INVALID_PARTITION_ID",
            0x000E => "INVALID_VP_INDEX",
            _ => "UNKNOWN",
        }
    }
}

/// `HV_FLUSH_FLAGS` (TLFS, HvCallFlushVirtualAddressSpace; bit values from
/// Linux `hvgdk_mini.h`).
pub mod flush_flags {
    /// Bit 0: all VPs of the partition; the processor mask is ignored.
    pub const ALL_PROCESSORS: u64 = 1 << 0;
    /// Bit 1: all address spaces; the address-space field is ignored.
    pub const ALL_VIRTUAL_ADDRESS_SPACES: u64 = 1 << 1;
    /// Bit 2: only non-global mappings need flushing (invalid for the list
    /// form).
    pub const NON_GLOBAL_MAPPINGS_ONLY: u64 = 1 << 2;
}

/// Input of HvCallFlushVirtualAddressSpace, and the fixed header of
/// HvCallFlushVirtualAddressList (TLFS, Hypercall Reference).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct FlushVirtualAddressSpace {
    /// Address space ID: a CR3 value (ignored with ALL_VIRTUAL_ADDRESS_SPACES).
    pub address_space: u64,
    /// [`flush_flags`].
    pub flags: u64,
    /// Bit n = VP index n (ignored with ALL_PROCESSORS).
    pub processor_mask: u64,
}
const_assert_eq!(core::mem::size_of::<FlushVirtualAddressSpace>(), 24);
const_assert_eq!(core::mem::offset_of!(FlushVirtualAddressSpace, flags), 8);
const_assert_eq!(
    core::mem::offset_of!(FlushVirtualAddressSpace, processor_mask),
    16
);

impl FlushVirtualAddressSpace {
    /// The input bytes, for callers that do not use zerocopy.
    pub fn to_bytes(&self) -> [u8; 24] {
        let mut b = [0u8; 24];
        b.copy_from_slice(self.as_bytes());
        b
    }
}

/// One HvCallFlushVirtualAddressList rep element: the page-aligned `gva`
/// with the number of *additional* pages (0..=4095) in its low 12 bits, so
/// one element covers 1 to 4096 pages.
pub const fn gva_range(gva: u64, additional_pages: u16) -> u64 {
    (gva & !0xFFF) | (additional_pages as u64 & 0xFFF)
}

/// Input of HvCallSendSyntheticClusterIpi (TLFS, Hypercall Reference). It is
/// 16 bytes, so it also fits the fast convention: RDX = bytes 0..8, R8 =
/// bytes 8..16 (see [`SendSyntheticClusterIpi::fast_registers`]).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct SendSyntheticClusterIpi {
    /// Vector, 0x10..=0xFF.
    pub vector: u32,
    /// `HV_INPUT_VTL`; 0 = the caller's own VTL.
    pub target_vtl: u8,
    /// Padding.
    pub reserved: [u8; 3],
    /// Bit n = VP index n.
    pub processor_mask: u64,
}
const_assert_eq!(core::mem::size_of::<SendSyntheticClusterIpi>(), 16);
const_assert_eq!(
    core::mem::offset_of!(SendSyntheticClusterIpi, target_vtl),
    4
);
const_assert_eq!(
    core::mem::offset_of!(SendSyntheticClusterIpi, processor_mask),
    8
);

impl SendSyntheticClusterIpi {
    /// Lowest vector the call accepts.
    pub const MIN_VECTOR: u8 = 0x10;

    /// RDX and R8 for the fast form.
    pub fn fast_registers(&self) -> (u64, u64) {
        let b = self.as_bytes();
        let q = |i: usize| {
            u64::from_le_bytes([
                b[i],
                b[i + 1],
                b[i + 2],
                b[i + 3],
                b[i + 4],
                b[i + 5],
                b[i + 6],
                b[i + 7],
            ])
        };
        (q(0), q(8))
    }

    /// Rebuilds the input from the fast-form registers (for a persona).
    pub fn from_fast_registers(rdx: u64, r8: u64) -> SendSyntheticClusterIpi {
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&rdx.to_le_bytes());
        bytes[8..].copy_from_slice(&r8.to_le_bytes());
        SendSyntheticClusterIpi::read_from_bytes(&bytes).unwrap_or_default()
    }
}

/// `HV_GENERIC_SET_FORMAT` (TLFS, Data Types: HV_VP_SET; values from
/// Linux `hvgdk_mini.h`): how an `HV_VP_SET` names its processors.
pub mod generic_set {
    /// HV_GENERIC_SET_SPARSE_4K: a bank mask and one 64-bit bank per set
    /// bit of it; bank n holds VP indexes 64n..64n+63.
    pub const SPARSE_4K: u64 = 0;
    /// HV_GENERIC_SET_ALL: every VP of the partition (no banks follow).
    pub const ALL: u64 = 1;
}

/// An `HV_VP_SET` in the sparse 4K format (TLFS, Data Types: HV_VP_SET;
/// Virtual Processor Sets in the "Ex" hypercalls): `format`,
/// `valid_bank_mask`, then the banks whose bit is set in the mask, in
/// increasing order. At most 64 banks (VP indexes below 4096).
///
/// The Ex hypercalls take it in their fixed header (format and bank mask)
/// followed by the banks as the variable header, whose size in 8-byte units
/// goes in the control word ([`Control::with_var_header_size`]); this is
/// how HvCallFlushVirtualAddressSpaceEx/ListEx (0x0013/0x0014) and
/// HvCallSendSyntheticClusterIpiEx (0x0015) are described in the TLFS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SparseVpSet {
    /// Bit n: bank n is present.
    pub valid_bank_mask: u64,
    /// Bank n's 64 VP bits (only the valid banks are sent).
    pub banks: [u64; 64],
}

impl Default for SparseVpSet {
    fn default() -> Self {
        SparseVpSet::new()
    }
}

impl SparseVpSet {
    /// Highest VP index a sparse 4K set can name, plus one.
    pub const MAX_VP: u32 = 64 * 64;

    /// The empty set.
    pub const fn new() -> SparseVpSet {
        SparseVpSet {
            valid_bank_mask: 0,
            banks: [0; 64],
        }
    }

    /// Adds VP index `vp`; false (set unchanged) when it is
    /// [`Self::MAX_VP`] or more.
    pub fn insert(&mut self, vp: u32) -> bool {
        if vp >= Self::MAX_VP {
            return false;
        }
        let bank = (vp / 64) as usize;
        self.banks[bank] |= 1 << (vp % 64);
        self.valid_bank_mask |= 1 << bank;
        true
    }

    /// Whether VP index `vp` is in the set.
    pub fn contains(&self, vp: u32) -> bool {
        vp < Self::MAX_VP && self.banks[(vp / 64) as usize] & (1 << (vp % 64)) != 0
    }

    /// Banks sent (the variable header size of an Ex call, in qwords).
    pub fn bank_count(&self) -> u16 {
        self.valid_bank_mask.count_ones() as u16
    }

    /// The set as a plain 64-bit processor mask, when every VP index is
    /// below 64 (the non-Ex hypercalls' form).
    pub fn as_simple_mask(&self) -> Option<u64> {
        (self.valid_bank_mask & !1 == 0).then_some(self.banks[0])
    }

    /// Writes `format`, `valid_bank_mask` and the valid banks to `out`;
    /// returns the qwords written (2 + [`Self::bank_count`]), or `None` if
    /// `out` is too short.
    pub fn write_words(&self, out: &mut [u64]) -> Option<usize> {
        let n = 2 + usize::from(self.bank_count());
        if out.len() < n {
            return None;
        }
        out[0] = generic_set::SPARSE_4K;
        out[1] = self.valid_bank_mask;
        let mut i = 2;
        for bank in 0..64 {
            if self.valid_bank_mask & (1 << bank) != 0 {
                out[i] = self.banks[bank];
                i += 1;
            }
        }
        Some(n)
    }

    /// Reads a set written by [`Self::write_words`] (for a persona);
    /// `None` for another format or too few words.
    pub fn read_words(words: &[u64]) -> Option<SparseVpSet> {
        let (&format, rest) = words.split_first()?;
        let (&mask, banks) = rest.split_first()?;
        if format != generic_set::SPARSE_4K || banks.len() < mask.count_ones() as usize {
            return None;
        }
        let mut s = SparseVpSet {
            valid_bank_mask: mask,
            banks: [0; 64],
        };
        let mut i = 0;
        for bank in 0..64 {
            if mask & (1 << bank) != 0 {
                s.banks[bank] = banks[i];
                i += 1;
            }
        }
        Some(s)
    }
}

/// The spin-retry hint of CPUID 0x4000_0004 EBX that means "never notify
/// the hypervisor of a long spin wait" (TLFS, Feature and Interface
/// Discovery: Implementation Recommendations, EBX "the recommended number
/// of attempts to retry a spinlock failure before notifying the hypervisor
/// ... 0xFFFFFFFF indicates never notify").
pub const SPIN_RETRIES_NEVER: u32 = 0xFFFF_FFFF;

/// `HV_VP_INDEX` special values (TLFS, Virtual Processor Properties).
pub mod vp_index {
    /// HV_ANY_VP.
    pub const ANY_VP: u32 = u32::MAX;
    /// HV_VP_INDEX_SELF.
    pub const SELF: u32 = u32::MAX - 1;
}

/// The partition reference TSC page, `HV_REFERENCE_TSC_PAGE` (TLFS, Timers:
/// Partition Reference Time Stamp Counter Page). The hypervisor overlays it
/// on the GPA given to HV_X64_MSR_REFERENCE_TSC and writes it; the guest
/// only reads, with [`reference_time`] under the sequence protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct ReferenceTscPage {
    /// Sequence number; [`TSC_SEQUENCE_INVALID`] means "use the MSR".
    pub tsc_sequence: u32,
    /// Reserved.
    pub reserved1: u32,
    /// 64.64 fixed-point multiplier.
    pub tsc_scale: u64,
    /// Offset in 100 ns units.
    pub tsc_offset: i64,
    /// Reserved up to the end of the page.
    pub reserved2: [u64; 509],
}
const_assert_eq!(core::mem::size_of::<ReferenceTscPage>(), PAGE_SIZE);
const_assert_eq!(core::mem::offset_of!(ReferenceTscPage, tsc_sequence), 0);
const_assert_eq!(core::mem::offset_of!(ReferenceTscPage, tsc_scale), 8);
const_assert_eq!(core::mem::offset_of!(ReferenceTscPage, tsc_offset), 16);

/// Byte offset of `tsc_sequence` in the reference TSC page.
pub const TSC_PAGE_SEQUENCE_OFFSET: usize = core::mem::offset_of!(ReferenceTscPage, tsc_sequence);
/// Byte offset of `tsc_scale`.
pub const TSC_PAGE_SCALE_OFFSET: usize = core::mem::offset_of!(ReferenceTscPage, tsc_scale);
/// Byte offset of `tsc_offset`.
pub const TSC_PAGE_OFFSET_OFFSET: usize = core::mem::offset_of!(ReferenceTscPage, tsc_offset);

/// The sequence value that marks the page unusable: read
/// HV_X64_MSR_TIME_REF_COUNT instead (TLFS, Timers: Partition Reference TSC
/// Mechanism; older TLFS PDFs wrongly said 0xFFFFFFFF, Linux c35b82ef0294).
pub const TSC_SEQUENCE_INVALID: u32 = 0;

/// Reference time in 100 ns units from a TSC value and the page's scale and
/// offset: `((tsc * scale) >> 64) + offset`, with a full 64x64->128 bit
/// product (TLFS, Timers: Partition Reference TSC Mechanism). Wraps like
/// the hypervisor's own arithmetic.
pub const fn reference_time(tsc: u64, scale: u64, offset: i64) -> u64 {
    let high = ((tsc as u128 * scale as u128) >> 64) as u64;
    high.wrapping_add(offset as u64)
}

/// Nanoseconds in one reference-time unit.
pub const NS_PER_REFERENCE_UNIT: u64 = 100;

/// Reference time (100 ns units) to nanoseconds, saturating.
pub const fn reference_to_ns(units: u64) -> u64 {
    units.saturating_mul(NS_PER_REFERENCE_UNIT)
}

/// Nanoseconds to reference-time units, rounded up (a timer never fires
/// early), at least 1.
pub const fn ns_to_reference(ns: u64) -> u64 {
    let units = ns.div_ceil(NS_PER_REFERENCE_UNIT);
    if units == 0 {
        1
    } else {
        units
    }
}

/// The VP assist page, `HV_VP_ASSIST_PAGE` (TLFS, Virtual Processor
/// Properties: Virtual Processor Assist Page; Data Types:
/// HV_VP_ASSIST_PAGE). Only the EOI-assist word is defined here; the rest
/// (nested and VSM fields) stays reserved for pvops.
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct VpAssistPage {
    /// EOI assist (TLFS, Virtual Interrupt Control: EOI Assist); see
    /// [`APIC_ASSIST_NO_EOI_REQUIRED`].
    pub apic_assist: u32,
    /// Everything else.
    pub reserved: [u8; PAGE_SIZE - 4],
}
const_assert_eq!(core::mem::size_of::<VpAssistPage>(), PAGE_SIZE);
const_assert_eq!(core::mem::offset_of!(VpAssistPage, apic_assist), 0);

/// What a hypervisor on AMD SVM overlays at the start of the hypercall page
/// (TLFS, Hypercall Interface: Establishing the Hypercall Interface: the
/// page holds the calling sequence, which ends like RET): `VMMCALL; RET`.
pub const HYPERCALL_PAGE_SVM: [u8; 4] = [0x0F, 0x01, 0xD9, 0xC3];

/// `HV_INPUT_VTL` (TLFS, Data Types): bits 3:0 target VTL, bit 4 "use the
/// target VTL", bits 7:5 RsvdZ. Zero means the caller's own VTL.
pub mod input_vtl {
    /// Bits 3:0: the target VTL.
    pub const TARGET_VTL_MASK: u8 = 0x0F;
    /// Bit 4: use the target VTL rather than the caller's.
    pub const USE_TARGET_VTL: u8 = 1 << 4;
    /// Bits 7:5: reserved, must be zero.
    pub const RESERVED_MASK: u8 = 0xE0;
}

/// Byte offset of the EOI assist word in the VP assist page.
pub const VP_ASSIST_APIC_ASSIST_OFFSET: usize = core::mem::offset_of!(VpAssistPage, apic_assist);
/// EOI assist bit 0, "No EOI Required": set by the hypervisor when it
/// injects an edge-triggered interrupt with no lower-priority one pending.
/// The guest atomically clears the word; if the bit was set it skips the
/// EOI, else it writes HV_X64_MSR_EOI.
pub const APIC_ASSIST_NO_EOI_REQUIRED: u32 = 1 << 0;

/// HV_X64_MSR_GUEST_OS_ID in the open-source encoding (TLFS, Hypercall
/// Interface: Reporting the Guest OS Identity, "Guest OS Identity MSR for
/// Open Source Operating Systems").
///
/// | bits  | field |
/// |-------|-------|
/// | 15:0  | build number (additional information) |
/// | 47:16 | upstream version |
/// | 55:48 | OS ID (additional vendor information) |
/// | 62:56 | OS type (allocated by Microsoft) |
/// | 63    | open source = 1 |
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct GuestOsId(pub u64);

impl GuestOsId {
    /// Bit 63: open source.
    pub const OPEN_SOURCE: u64 = 1 << 63;
    /// OS type Linux.
    pub const OS_TYPE_LINUX: u8 = 0x1;
    /// OS type FreeBSD.
    pub const OS_TYPE_FREEBSD: u8 = 0x2;
    /// OS type Xen.
    pub const OS_TYPE_XEN: u8 = 0x3;
    /// OS type Illumos.
    pub const OS_TYPE_ILLUMOS: u8 = 0x4;
    /// pvops has no allocated OS type; it reports 0 ("not one of the
    /// allocated types"), which keeps the value non-zero through bit 63.
    pub const OS_TYPE_PVOPS: u8 = 0x0;

    /// Encodes an open-source identity. `os_type` keeps its low 7 bits.
    pub const fn open_source(os_type: u8, os_id: u8, version: u32, build: u16) -> GuestOsId {
        GuestOsId(
            Self::OPEN_SOURCE
                | ((os_type & 0x7F) as u64) << 56
                | (os_id as u64) << 48
                | (version as u64) << 16
                | build as u64,
        )
    }

    /// Whether bit 63 (open source) is set.
    pub const fn is_open_source(self) -> bool {
        self.0 & Self::OPEN_SOURCE != 0
    }

    /// OS type (bits 62:56) of an open-source identity.
    pub const fn os_type(self) -> u8 {
        ((self.0 >> 56) & 0x7F) as u8
    }

    /// OS ID (bits 55:48) of an open-source identity.
    pub const fn os_id(self) -> u8 {
        (self.0 >> 48) as u8
    }

    /// Version (bits 47:16) of an open-source identity.
    pub const fn version(self) -> u32 {
        (self.0 >> 16) as u32
    }

    /// Build number (bits 15:0).
    pub const fn build(self) -> u16 {
        self.0 as u16
    }
}

const_assert!(GuestOsId::open_source(0, 0, 0, 0).0 != 0);

#[cfg(test)]
mod tests {
    use super::*;
    use zerocopy::FromZeros;

    #[test]
    fn cpuid_constants_match_the_tlfs() {
        // "Micr" "osof" "t Hv" in EBX, ECX, EDX.
        let sig = cpuid::VENDOR_SIGNATURE;
        assert_eq!(
            u32::from_le_bytes([sig[0], sig[1], sig[2], sig[3]]),
            0x7263_694D
        );
        assert_eq!(
            u32::from_le_bytes([sig[4], sig[5], sig[6], sig[7]]),
            0x666F_736F
        );
        assert_eq!(
            u32::from_le_bytes([sig[8], sig[9], sig[10], sig[11]]),
            0x7648_2074
        );
        assert_eq!(cpuid::HV1.to_le_bytes(), *b"Hv#1");
        assert_eq!(cpuid::MIN_MAX_LEAF, 0x4000_0005);
    }

    #[test]
    fn privilege_bits_follow_the_mask_layout() {
        // EAX 0x2E7F: bits 0-6, 9, 10, 11, 13.
        let p = Privileges::from_cpuid(0x0000_2E7F, 0x0000_00B0);
        for bit in [
            Privileges::VP_RUNTIME,
            Privileges::PARTITION_REFERENCE_COUNTER,
            Privileges::SYNIC_REGS,
            Privileges::SYNTHETIC_TIMER_REGS,
            Privileges::INTR_CTRL_REGS,
            Privileges::HYPERCALL_MSRS,
            Privileges::VP_INDEX,
            Privileges::PARTITION_REFERENCE_TSC,
            Privileges::GUEST_IDLE_REG,
            Privileges::FREQUENCY_REGS,
            Privileges::REENLIGHTENMENT_CONTROLS,
        ] {
            assert!(p.contains(bit), "{bit:?}");
        }
        assert!(!p.contains(Privileges::RESET_REG));
        // EBX 0xB0: bits 36, 37, 39 of the 64-bit mask.
        assert!(p.contains(Privileges::POST_MESSAGES));
        assert!(p.contains(Privileges::SIGNAL_EVENTS));
        assert!(!p.contains(Privileges::CPU_MANAGEMENT));
        assert_eq!(Privileges::HYPERCALL_MSRS.0, 0x20);
        assert_eq!(Privileges::VP_INDEX.0, 0x40);
        assert_eq!(Privileges::PARTITION_REFERENCE_TSC.0, 0x200);
        assert_eq!(Privileges::FREQUENCY_REGS.0, 0x800);
    }

    #[test]
    fn feature_and_hint_bits() {
        let f = Features(0x0008_0500);
        assert!(f.contains(Features::FREQUENCY_MSRS));
        assert!(f.contains(Features::GUEST_CRASH_MSRS));
        assert!(f.contains(Features::DIRECT_SYNTHETIC_TIMERS));
        assert!(!f.contains(Features::XMM_HYPERCALL_INPUT));
        let h = Hints(0x0000_0E2C);
        assert!(h.contains(Hints::HYPERCALL_REMOTE_FLUSH));
        assert!(h.contains(Hints::APIC_MSRS));
        assert!(h.contains(Hints::RELAXED_TIMING));
        assert!(h.contains(Hints::DEPRECATE_AUTO_EOI));
        assert!(h.contains(Hints::SYNTHETIC_CLUSTER_IPI));
        assert!(h.contains(Hints::EX_PROCESSOR_MASKS));
        assert!(!h.contains(Hints::NESTED));
    }

    #[test]
    fn leaves_decode_and_conformance() {
        let table = |n: u32| match n {
            0x4000_0000 => [0x4000_000A, 0x7263_694D, 0x666F_736F, 0x7648_2074],
            0x4000_0001 => [cpuid::HV1, 0, 0, 0],
            0x4000_0002 => [0x4F7C, 0x000A_0000, 0, 0],
            0x4000_0003 => [0x2E7F, 0xB0, 0, 0x0008_0100],
            0x4000_0004 => [0x0E2C, 0xFFF, 0, 0],
            0x4000_0005 => [0x800, 0x200, 0, 0],
            _ => [0; 4],
        };
        let l = Leaves::decode(table);
        assert!(l.is_conforming());
        assert_eq!((l.build, l.major, l.minor), (0x4F7C, 10, 0));
        assert_eq!(l.max_vps, 0x800);
        assert_eq!(l.spin_retries, 0xFFF);
        assert!(l.features.contains(Features::DIRECT_SYNTHETIC_TIMERS));

        // Max leaf below 0x4000_0005: leaves above it read as zero and the
        // interface does not conform.
        let short = Leaves::decode(|n| match n {
            0x4000_0000 => [0x4000_0001, 0, 0, 0],
            0x4000_0001 => [cpuid::HV1, 0, 0, 0],
            _ => [0xFFFF_FFFF; 4],
        });
        assert!(!short.is_conforming());
        assert_eq!(short.privileges, Privileges(0));
        let not_hv1 = Leaves::decode(|n| match n {
            0x4000_0000 => [0x4000_0006, 0, 0, 0],
            0x4000_0001 => [0x3023_7648, 0, 0, 0],
            _ => [0; 4],
        });
        assert!(!not_hv1.is_conforming());
    }

    #[test]
    fn msr_numbers_match_the_tlfs() {
        assert_eq!(msr::GUEST_OS_ID, 0x4000_0000);
        assert_eq!(msr::HYPERCALL, 0x4000_0001);
        assert_eq!(msr::VP_INDEX, 0x4000_0002);
        assert_eq!(msr::TIME_REF_COUNT, 0x4000_0020);
        assert_eq!(msr::REFERENCE_TSC, 0x4000_0021);
        assert_eq!(msr::TSC_FREQUENCY, 0x4000_0022);
        assert_eq!(msr::APIC_FREQUENCY, 0x4000_0023);
        assert_eq!(
            (msr::EOI, msr::ICR, msr::TPR),
            (0x4000_0070, 0x4000_0071, 0x4000_0072)
        );
        assert_eq!(msr::VP_ASSIST_PAGE, 0x4000_0073);
        assert_eq!(
            (msr::STIMER0_CONFIG, msr::STIMER0_COUNT),
            (0x4000_00B0, 0x4000_00B1)
        );
        assert_eq!(msr::CRASH_P0, 0x4000_0100);
        assert_eq!(msr::CRASH_P4, 0x4000_0104);
        assert_eq!(msr::CRASH_CTL, 0x4000_0105);
        assert!(msr::is_synthetic(msr::CRASH_CTL));
        assert!(!msr::is_synthetic(0x1B));
    }

    #[test]
    fn persona_side_constants() {
        assert_eq!(msr::stimer_config(0), msr::STIMER0_CONFIG);
        assert_eq!(msr::stimer_count(3), 0x4000_00B7);
        assert_eq!(HYPERCALL_PAGE_SVM, [0x0F, 0x01, 0xD9, 0xC3]);
        assert_eq!(hardware_features::MSR_BITMAPS_IN_USE, 2);
        assert_eq!(hardware_features::SLAT_IN_USE, 8);
        assert_eq!(input_vtl::USE_TARGET_VTL, 0x10);
    }

    #[test]
    fn page_msrs_preserve_reserved_bits() {
        let v = page_msr::enable(0xFFE, 0x1234_5000);
        assert_eq!(v, 0x1234_5FFF);
        assert!(page_msr::is_enabled(v));
        assert_eq!(page_msr::address(v), 0x1234_5000);
        // The hypercall MSR never sets Locked on our behalf.
        let h = hypercall_msr::enable(hypercall_msr::LOCKED | 0x8, 0x7000);
        assert_eq!(h, 0x7009);
        assert_eq!(h & hypercall_msr::LOCKED, 0);
    }

    #[test]
    fn control_word_encoding() {
        let c = Control::new(call::FLUSH_VIRTUAL_ADDRESS_LIST)
            .with_rep_count(5)
            .with_rep_start(2);
        assert_eq!(c.0, 0x0002_0005_0000_0003);
        assert_eq!((c.code(), c.rep_count(), c.rep_start()), (3, 5, 2));
        assert!(!c.is_fast());
        let f = Control::new(call::SEND_SYNTHETIC_CLUSTER_IPI).fast();
        assert_eq!(f.0, 0x1_000B);
        assert!(f.is_fast());
        let v = Control::new(call::FLUSH_VIRTUAL_ADDRESS_SPACE_EX).with_var_header_size(3);
        assert_eq!(v.0, 0x13 | 3 << 17);
        assert_eq!(v.var_header_size(), 3);
        // Field limits: 12-bit reps, 10-bit variable header.
        let max = Control::new(0xFFFF)
            .fast()
            .with_rep_count(0xFFFF)
            .with_rep_start(0xFFFF)
            .with_var_header_size(0xFFFF);
        assert_eq!(max.0, 0x0FFF_0FFF_07FF_FFFF);
        assert!(!max.has_reserved_bits());
        assert!(Control(1 << 27).has_reserved_bits());
        assert!(Control(1 << 44).has_reserved_bits());
        assert!(Control(1 << 63).has_reserved_bits());
    }

    #[test]
    fn result_and_status_decoding() {
        let r = HypercallResult(0x0000_0003_0000_0000);
        assert!(r.is_success());
        assert_eq!(r.reps_completed(), 3);
        let e = HypercallResult(0xFFFF_0000_0000_0004 | 0xABCD_0000);
        assert_eq!(e.status(), Status::INVALID_ALIGNMENT);
        assert!(!e.is_success());
        assert_eq!(e.status().name(), "INVALID_ALIGNMENT");
        assert_eq!(
            HypercallResult::new(Status::ACCESS_DENIED, 7).0,
            0x7_0000_0006
        );
        assert_eq!(
            [
                Status::SUCCESS.0,
                Status::INVALID_HYPERCALL_CODE.0,
                Status::INVALID_HYPERCALL_INPUT.0,
                Status::INVALID_ALIGNMENT.0,
                Status::INVALID_PARAMETER.0,
                Status::ACCESS_DENIED.0
            ],
            [0, 2, 3, 4, 5, 6]
        );
        assert_eq!(Status(0x77).name(), "UNKNOWN");
    }

    #[test]
    fn call_codes() {
        assert_eq!(call::FLUSH_VIRTUAL_ADDRESS_SPACE, 0x0002);
        assert_eq!(call::FLUSH_VIRTUAL_ADDRESS_LIST, 0x0003);
        assert_eq!(call::SEND_SYNTHETIC_CLUSTER_IPI, 0x000B);
        assert_eq!(flush_flags::NON_GLOBAL_MAPPINGS_ONLY, 4);
    }

    #[test]
    fn input_layouts() {
        let f = FlushVirtualAddressSpace {
            address_space: 0x1000,
            flags: flush_flags::ALL_VIRTUAL_ADDRESS_SPACES,
            processor_mask: 0x51,
        };
        let b = f.as_bytes();
        assert_eq!(b.len(), 24);
        assert_eq!(b[8], 2);
        assert_eq!(b[16], 0x51);
        assert_eq!(gva_range(0xFFFF_8000_1234_5678, 0), 0xFFFF_8000_1234_5000);
        assert_eq!(gva_range(0x5000, 4095), 0x5FFF);

        let ipi = SendSyntheticClusterIpi {
            vector: 0xF0,
            target_vtl: 0,
            reserved: [0; 3],
            processor_mask: 0b101,
        };
        assert_eq!(ipi.fast_registers(), (0xF0, 0b101));
        assert_eq!(
            SendSyntheticClusterIpi::from_fast_registers(0xF0, 0b101),
            ipi
        );
    }

    #[test]
    fn reference_time_math() {
        // Scale 2^63 halves the TSC; the offset is added after the shift.
        assert_eq!(reference_time(1000, 1 << 63, 5), 505);
        // A full 128-bit product: (2^64 - 1) * (2^64 - 1) >> 64 = 2^64 - 2.
        assert_eq!(reference_time(u64::MAX, u64::MAX, 0), u64::MAX - 1);
        // A 2.5 GHz TSC gives 10 MHz reference units: scale = 2^64 / 250.
        let scale = ((1u128 << 64) / 250) as u64;
        assert_eq!(reference_time(2_500_000_000, scale, 0), 9_999_999);
        // Negative offsets (migration to a faster host) wrap like i64 adds.
        assert_eq!(reference_time(1000, 1 << 63, -100), 400);
        assert_eq!(reference_to_ns(12), 1200);
        assert_eq!(reference_to_ns(u64::MAX), u64::MAX);
        assert_eq!(ns_to_reference(0), 1);
        assert_eq!(ns_to_reference(100), 1);
        assert_eq!(ns_to_reference(101), 2);
        assert_eq!(ns_to_reference(1_000_000), 10_000);
        assert_eq!(TSC_SEQUENCE_INVALID, 0);
    }

    #[test]
    fn page_layouts() {
        let mut page = ReferenceTscPage::new_zeroed();
        page.tsc_sequence = 7;
        page.tsc_scale = 0x1122_3344_5566_7788;
        page.tsc_offset = -2;
        let b = page.as_bytes();
        assert_eq!(&b[0..4], &7u32.to_le_bytes());
        assert_eq!(
            &b[TSC_PAGE_SCALE_OFFSET..16],
            &0x1122_3344_5566_7788u64.to_le_bytes()
        );
        assert_eq!(&b[TSC_PAGE_OFFSET_OFFSET..24], &(-2i64).to_le_bytes());
        let mut vp = VpAssistPage::new_zeroed();
        vp.apic_assist = APIC_ASSIST_NO_EOI_REQUIRED;
        assert_eq!(vp.as_bytes()[VP_ASSIST_APIC_ASSIST_OFFSET], 1);
    }

    #[test]
    fn stimer_config_encoding() {
        let c = StimerConfig::direct_one_shot(0xEC);
        assert_eq!(c.0, 0x1000 | 0x8 | 0xEC0);
        assert_eq!(c.vector(), 0xEC);
        assert!(c.has(StimerConfig::DIRECT_MODE));
        assert!(c.has(StimerConfig::AUTO_ENABLE));
        assert!(!c.has(StimerConfig::ENABLE));
        assert!(!c.has(StimerConfig::PERIODIC));
        assert_eq!(c.0 & StimerConfig::RESERVED_MASK, 0);
        assert_eq!(StimerConfig(3 << 16).sint(), 3);
    }

    #[test]
    fn crash_ctl_bits() {
        assert_eq!(crash_ctl::CRASH_NOTIFY, 0x8000_0000_0000_0000);
        assert_eq!(crash_ctl::CRASH_MESSAGE, 0x4000_0000_0000_0000);
    }

    #[test]
    fn guest_os_id_open_source_encoding() {
        // Linux's own value for 6.8.0 ("Linux", version 0x060800, build 0):
        // bit 63 | type 1 << 56 | version << 16.
        let linux = GuestOsId::open_source(GuestOsId::OS_TYPE_LINUX, 0, 0x06_0800, 0);
        assert_eq!(linux.0, 0x8100_0006_0800_0000);
        let id = GuestOsId::open_source(0x7F, 0xAB, 0x0001_0203, 0x0405);
        assert_eq!(id.0, 0xFFAB_0001_0203_0405);
        assert!(id.is_open_source());
        assert_eq!(
            (id.os_type(), id.os_id(), id.version(), id.build()),
            (0x7F, 0xAB, 0x0001_0203, 0x0405)
        );
        // The OS type is 7 bits; bit 63 stays the open-source flag.
        assert_eq!(GuestOsId::open_source(0xFF, 0, 0, 0).os_type(), 0x7F);
        assert_ne!(
            GuestOsId::open_source(GuestOsId::OS_TYPE_PVOPS, 0, 0, 0).0,
            0
        );
    }

    #[test]
    fn sparse_vp_sets() {
        let mut s = SparseVpSet::new();
        assert!(s.insert(1) && s.insert(3) && s.insert(64 + 2) && s.insert(200));
        assert!(!s.insert(4096));
        assert_eq!(s.valid_bank_mask, 0b1011);
        assert_eq!(s.bank_count(), 3);
        assert_eq!(s.as_simple_mask(), None);
        let mut w = [0u64; 8];
        assert_eq!(s.write_words(&mut w), Some(5));
        assert_eq!(
            &w[..5],
            &[generic_set::SPARSE_4K, 0b1011, 0b1010, 0b100, 1 << 8]
        );
        assert_eq!(SparseVpSet::read_words(&w[..5]), Some(s));
        assert!(s.contains(200) && !s.contains(199));
        let mut low = SparseVpSet::new();
        low.insert(5);
        assert_eq!(low.as_simple_mask(), Some(1 << 5));
        assert_eq!(SparseVpSet::new().as_simple_mask(), Some(0));
        assert_eq!(s.write_words(&mut w[..4]), None);
    }
}
