//! The lying-hypervisor matrix: each backend's persona lying in a `break=` way, each ending in a passing boot with the entries it could not trust native (issue 16).
//!
//! Every case names, in [`Expect::logged`], the reason the guest logs for
//! what it left native or ignored; `docs/lying-hypervisors.md` states the
//! matrix as a table (with the cases that predate it, in `mod.rs`,
//! `kvm.rs` and `fixes.rs`).

#[allow(unused_imports)]
use super::*;

/// `microvisor:<persona>:break=<case>`: persona `<persona>` with
/// `break=<case>`, expecting `expect`.
macro_rules! lying {
    ($persona:literal : $case:literal, $description:literal, $expect:expr) => {
        Scenario {
            name: concat!("microvisor:", $persona, ":break=", $case),
            description: concat!("lying ", $persona, ": ", $description),
            boot: mv($persona, concat!("break=", $case)),
            expect: $expect,
            ..Scenario::BASE
        }
    };
}

/// The VMware backend without steal time: [`VMWARE_OWNS`] with
/// `time.steal_ns` native.
pub const VMWARE_NO_STEAL: Owners = Owners {
    backend: VMWARE_OWNS.backend,
    optional: &[],
};

/// The VMware backend with steal time: [`VMWARE_OWNS`] with
/// `time.steal_ns` required.
pub const VMWARE_WITH_STEAL: Owners = Owners {
    backend: &[
        "time.tsc_frequency",
        "time.monotonic_ns",
        "time.apic_timer_khz",
        "cpu.io_delay",
        "cpu.halt",
        "irq.safe_halt",
        "time.steal_ns",
    ],
    optional: &[],
};

/// VMware whose TSC frequency came from the backdoor (GETHZ): the backend
/// owns what it owns with the leaf; no PIT calibration.
const VMWARE_GETHZ: Expect = Expect {
    tsc_source: Some("vmware-backdoor"),
    fewer_than_native: &[],
    ..VMWARE
};

/// A VMware machine the backend could not take (no TSC frequency it can
/// trust): native after the failed setup, the PIT calibrates.
const VMWARE_FELL_BACK: Expect = Expect {
    hypervisor: Some("vmware"),
    backend: Some("native"),
    owners: Some(Owners::NATIVE),
    tsc_source: Some("pit-calibration"),
    interfaces: &[(0x4000_0000, "vmware")],
    counts: &[(Metric::Pit, Count::NonZero)],
    logged: &["backend 'vmware' setup failed (tsc frequency"],
    ..Expect::PASS
};

/// The VMware backdoor port.
const VMWARE_PORT: u16 = 0x5658;

/// Hyper-V without the synthetic timer: [`HYPERV_OWNS`] less
/// `time.timer_setup/arm/cancel` (the local APIC timer).
pub const HYPERV_NO_STIMER: Owners = Owners {
    backend: &[
        "time.monotonic_ns",
        "time.tsc_frequency",
        "time.apic_timer_khz",
        "irq.eoi",
        "system.report_crash",
        "mmu.flush_remote",
        "irq.send_ipi",
        "irq.send_ipi_mask",
    ],
    optional: &[],
};

/// Hyper-V whose frequency and crash MSRs #GP: [`HYPERV_OWNS`] less
/// `time.apic_timer_khz` and `system.report_crash`.
pub const HYPERV_MSRS_GP: Owners = Owners {
    backend: &[
        "time.monotonic_ns",
        "time.tsc_frequency",
        "time.timer_setup",
        "time.timer_arm",
        "time.timer_cancel",
        "irq.eoi",
        "mmu.flush_remote",
        "irq.send_ipi",
        "irq.send_ipi_mask",
    ],
    optional: &[],
};

/// HV_X64_MSR_STIMER0_CONFIG (TLFS, Synthetic Timer MSRs).
const HV_STIMER0_CONFIG: u32 = 0x4000_00b0;
/// HV_X64_MSR_STIMER0_COUNT.
const HV_STIMER0_COUNT: u32 = 0x4000_00b1;

/// `MSR_KVM_SYSTEM_TIME_NEW` (KVM msr.rst).
const KVM_SYSTEM_TIME_NEW: u32 = 0x4b56_4d01;
/// `MSR_KVM_STEAL_TIME`.
const KVM_STEAL_TIME: u32 = 0x4b56_4d03;
/// `MSR_KVM_PV_EOI_EN`.
const KVM_PV_EOI_EN: u32 = 0x4b56_4d04;

/// KVM whose kvmclock the guest tried (the system-time MSR written) and
/// refused: clock and frequency native, the PIT calibrates.
const KVM_CLOCK_REFUSED: Expect = Expect {
    owners: Some(kvm::KVM_NO_CLOCK),
    tsc_source: Some("pit-calibration"),
    counts: &[
        (Metric::Pit, Count::NonZero),
        (Metric::MsrWrites(KVM_SYSTEM_TIME_NEW), Count::NonZero),
    ],
    fewer_than_native: &[],
    ..kvm::KVM_PERSONA
};

/// This area's scenarios, in report order.
pub const SCENARIOS: &[Scenario] = &[
    // ---- VMware ----------------------------------------------------------
    lying!(
        "vmware":"timing-leaf",
        "timing leaf 0x40000010 without frequencies: TSC and APIC frequencies from backdoor GETHZ",
        Expect {
            logged: &["vmware: TSC", "kHz from vmware-backdoor"],
            ..VMWARE_GETHZ
        }
    ),
    lying!(
        "vmware":"no-frequency",
        "neither the timing leaf nor GETHZ gives a frequency: setup fails, native, PIT calibration",
        VMWARE_FELL_BACK
    ),
    lying!(
        "vmware":"signature-only",
        "signature with max leaf 0x40000000 and a backdoor answering -1 to everything: native",
        VMWARE_FELL_BACK
    ),
    lying!(
        "vmware":"absurd-frequency",
        "timing leaf says the TSC runs at 1 kHz: ignored, the frequency comes from GETHZ",
        Expect {
            logged: &["timing leaf 0x40000010 says the TSC runs at 1 kHz: implausible, ignored"],
            ..VMWARE_GETHZ
        }
    ),
    lying!(
        "vmware":"vmmcall",
        "VMMCALL works but 0x40000010 does not announce it: the backdoor goes over the port, never VMMCALL",
        Expect {
            counts: &[
                (Metric::Pit, Count::Zero),
                (Metric::Reason("vmmcall"), Count::Zero),
                (Metric::Port(VMWARE_PORT), Count::NonZero),
            ],
            fewer_than_native: &[],
            logged: &["backdoor over io-port"],
            ..VMWARE
        }
    ),
    lying!(
        "vmware":"stealclock",
        "STEALCLOCK answers -1: time.steal_ns native",
        Expect {
            owners: Some(VMWARE_NO_STEAL),
            fewer_than_native: &[],
            logged: &["vmware: steal time stays native: STEALCLOCK not available"],
            ..VMWARE
        }
    ),
    lying!(
        "vmware":"stealclock-refused",
        "STEALCLOCK's availability probe succeeds, the second call (enable) answers -1: time.steal_ns native",
        Expect {
            owners: Some(VMWARE_NO_STEAL),
            fewer_than_native: &[],
            logged: &["vmware: steal time stays native: STEALCLOCK did not enable the area"],
            ..VMWARE
        }
    ),
    lying!(
        "vmware":"steal-backwards",
        "the steal clock goes down before every guest entry: time.steal_ns frozen at its last good value",
        Expect {
            owners: Some(VMWARE_WITH_STEAL),
            selftests: &["time.steal"],
            fewer_than_native: &[],
            logged: &["vmware: steal clock went backwards"],
            ..VMWARE
        }
    ),
    // ---- KVM -------------------------------------------------------------
    lying!(
        "kvm":"no-features",
        "the signature with KVM_CPUID_FEATURES 0: the backend installs but owns nothing, no KVM MSR written",
        Expect {
            owners: Some(Owners::NATIVE),
            tsc_source: Some("pit-calibration"),
            counts: &[
                (Metric::Pit, Count::NonZero),
                (Metric::MsrWrites(KVM_SYSTEM_TIME_NEW), Count::Zero),
                (Metric::MsrWrites(KVM_STEAL_TIME), Count::Zero),
                (Metric::MsrWrites(KVM_PV_EOI_EN), Count::Zero),
            ],
            fewer_than_native: &[],
            logged: &[
                "kvm: cpu.io_delay stays native: KVM_FEATURE_NOP_IO_DELAY not offered",
                "kvm: time.monotonic_ns stays native: neither KVM_FEATURE_CLOCKSOURCE2 nor KVM_FEATURE_CLOCKSOURCE",
            ],
            ..kvm::KVM_PERSONA
        }
    ),
    lying!(
        "kvm":"clock-gp",
        "kvmclock offered, its MSRs raise #GP: the guest catches it, clock and frequency native",
        Expect {
            logged: &["kvm: time.monotonic_ns and time.tsc_frequency stays native: WRMSR raised #GP"],
            ..KVM_CLOCK_REFUSED
        }
    ),
    lying!(
        "kvm":"absurd-frequency",
        "the kvmclock scale says the TSC runs at 1 kHz: clock and frequency native",
        Expect {
            logged: &["kvmclock TSC scale gives an implausible frequency"],
            ..KVM_CLOCK_REFUSED
        }
    ),
    lying!(
        "kvm":"hidden-steal",
        "KVM_FEATURE_STEAL_TIME hidden in CPUID, its MSR working: never written, time.steal_ns native",
        Expect {
            owners: Some(kvm::KVM_NO_STEAL),
            counts: &[
                (Metric::Pit, Count::Zero),
                (Metric::Msr(KVM_STEAL_TIME), Count::Zero),
            ],
            fewer_than_native: &[],
            logged: &["kvm: time.steal_ns stays native: KVM_FEATURE_STEAL_TIME not offered"],
            ..kvm::KVM_PERSONA
        }
    ),
    lying!(
        "kvm":"steal-backwards",
        "the steal time goes down before every guest entry: time.steal_ns frozen at its last good value",
        Expect {
            selftests: &["time.steal"],
            fewer_than_native: &[],
            logged: &["kvm: steal time went backwards"],
            ..kvm::KVM_PERSONA
        }
    ),
    lying!(
        "kvm":"pvclock-backwards",
        "the kvmclock, marked stable, steps back 5 ms once in 64 guest entries: the stable bit is dropped, the clock kept monotonic",
        Expect {
            selftests: &["time.clock-monotonic"],
            fewer_than_native: &[],
            logged: &["kvm: kvmclock marked stable went backwards"],
            ..kvm::KVM_PERSONA
        }
    ),
    // ---- Hyper-V ---------------------------------------------------------
    lying!(
        "hyperv":"no-privileges",
        "\"Microsoft Hv\" and \"Hv#1\" with no privilege, feature or recommendation: not taken, native",
        Expect {
            hypervisor: Some("hyperv"),
            backend: Some("native"),
            owners: Some(Owners::NATIVE),
            tsc_source: Some("pit-calibration"),
            interfaces: &[(0x4000_0000, "hyperv")],
            counts: &[(Metric::Pit, Count::NonZero), (Metric::Hypercalls, Count::Zero)],
            logged: &["backend 'hyperv' not taken: no hypercall or VP index MSR privilege"],
            ..Expect::PASS
        }
    ),
    lying!(
        "hyperv":"absurd-frequency",
        "HV_X64_MSR_TSC_FREQUENCY says 1 kHz: ignored, the TSC frequency comes from the reference TSC page",
        Expect {
            tsc_source: Some("hyperv-tsc-page"),
            fewer_than_native: &[],
            logged: &["HV_X64_MSR_TSC_FREQUENCY says 1 kHz: implausible, ignored"],
            ..HYPERV
        }
    ),
    lying!(
        "hyperv":"hidden-stimer",
        "AccessSyntheticTimerRegs hidden, the timer MSRs working: never touched, the local APIC timer is used",
        Expect {
            owners: Some(HYPERV_NO_STIMER),
            counts: &[
                (Metric::Pit, Count::Zero),
                (Metric::Msr(HV_STIMER0_CONFIG), Count::Zero),
                (Metric::Msr(HV_STIMER0_COUNT), Count::Zero),
                (Metric::MsrReads(HV_TIME_REF_COUNT), Count::Zero),
            ],
            fewer_than_native: &[],
            logged: &["hyperv: time.timer_* stays native: no direct-mode synthetic timer"],
            ..HYPERV
        }
    ),
    lying!(
        "hyperv":"hypercall-second-fails",
        "the first hypercall (the flush probe) succeeds, every later one fails: flushes and IPIs fall back to native per call",
        Expect {
            counts: &[
                (Metric::Pit, Count::Zero),
                (Metric::Hypercalls, Count::AtLeast(2)),
                (Metric::MsrReads(HV_TIME_REF_COUNT), Count::Zero),
            ],
            fewer_than_native: &[],
            logged: &[
                "hyperv: TLB flush hypercall failed",
                "hyperv: synthetic cluster IPI hypercall failed",
            ],
            ..HYPERV
        }
    ),
    lying!(
        "hyperv":"msrs-gp",
        "the frequency MSRs and HV_X64_MSR_CRASH_CTL offered in CPUID raise #GP: caught, those entries native, the TSC frequency from the TSC page",
        Expect {
            owners: Some(HYPERV_MSRS_GP),
            tsc_source: Some("hyperv-tsc-page"),
            fewer_than_native: &[],
            logged: &[
                "hyperv: HV_X64_MSR_TSC_FREQUENCY promised in CPUID raises #GP: no frequency MSRs",
                "hyperv: HV_X64_MSR_CRASH_CTL promised in CPUID raises #GP: system.report_crash stays native",
            ],
            ..HYPERV
        }
    ),
    lying!(
        "hyperv":"miscalibrated-frequency",
        "HV_X64_MSR_TSC_FREQUENCY about 3.5 times too low, the TSC page never valid, the reference counter right (L1 KVM on nested:hyperv:smp2): the MSR is cross-checked against the reference counter and the measured frequency used",
        Expect {
            tsc_source: Some("hyperv-reference-counter"),
            selftests: TIME_TESTS_NEEDING_A_FREQUENCY,
            counts: &[
                (Metric::Pit, Count::Zero),
                (Metric::Hypercalls, Count::NonZero),
                (Metric::MsrReads(HV_TIME_REF_COUNT), Count::NonZero),
            ],
            fewer_than_native: &[],
            logged: &[
                "hyperv: HV_X64_MSR_TSC_FREQUENCY disagrees with the reference counter (no valid TSC page)",
                "the measured frequency is used",
            ],
            ..HYPERV
        }
    ),
    // ---- Xen -------------------------------------------------------------
    lying!(
        "xen":"signature-only",
        "\"XenVMMXenVMM\" with max leaf base+0 (no version, hypercall or time leaf): native",
        Expect {
            hypervisor: Some("xen"),
            backend: Some("native"),
            owners: Some(Owners::NATIVE),
            tsc_source: Some("pit-calibration"),
            counts: &[(Metric::Pit, Count::NonZero), (Metric::Hypercalls, Count::Zero)],
            logged: &["hypervisor 'xen' seen at 0x40000000, but its backend found no usable interface"],
            ..Expect::PASS
        }
    ),
    lying!(
        "xen":"absurd-frequency",
        "the pvclock scale says the TSC runs at 1 kHz: clock and timer native, the TSC frequency from base+3",
        Expect {
            logged: &["says the TSC runs at 1 kHz: implausible"],
            ..XEN_WITHOUT_SHARED_INFO
        }
    ),
    lying!(
        "xen":"timer-second-fails",
        "the first VCPUOP_set_singleshot_timer is accepted, later ones fail: the native timer takes over",
        Expect {
            counts: &[
                (Metric::Pit, Count::Zero),
                (Metric::Hypercall(XEN_SET_SINGLESHOT_TIMER), Count::AtLeast(2)),
                (Metric::Hypercall(XEN_SCHED_SHUTDOWN), Count::Zero),
            ],
            fewer_than_native: &[],
            logged: &["xen: VCPUOP_set_singleshot_timer failed (EINVAL); the native timer takes over"],
            ..XEN
        }
    ),
    lying!(
        "xen":"pvclock-backwards",
        "the pvclock steps back 5 ms once in 64 guest entries: the clock is kept monotonic",
        Expect {
            selftests: &["time.clock-monotonic"],
            fewer_than_native: &[],
            logged: &["xen: the pvclock went backwards"],
            ..XEN
        }
    ),
];
