//! Scenarios of the KVM backend: real KVM and the microvisor's `kvm` persona (issue 12).

#[allow(unused_imports)]
use super::*;

/// `MSR_KVM_SYSTEM_TIME_NEW`.
const SYSTEM_TIME_NEW: u32 = 0x4b56_4d01;
/// `MSR_KVM_PV_EOI_EN`.
const PV_EOI_EN: u32 = 0x4b56_4d04;

/// KVM without kvmclock (pvclock never valid): io_delay, steal time, PV EOI.
pub const KVM_NO_CLOCK: Owners = Owners {
    backend: &["cpu.io_delay", "time.steal_ns", "irq.eoi"],
    optional: &[],
};

/// KVM without steal time.
pub const KVM_NO_STEAL: Owners = Owners {
    backend: &[
        "cpu.io_delay",
        "time.monotonic_ns",
        "time.tsc_frequency",
        "irq.eoi",
    ],
    optional: &[],
};

/// KVM without PV EOI.
pub const KVM_NO_PV_EOI: Owners = Owners {
    backend: &[
        "cpu.io_delay",
        "time.monotonic_ns",
        "time.tsc_frequency",
        "time.steal_ns",
    ],
    optional: &[],
};

/// The `kvm` persona with everything working: kvmclock (no PIT), PV EOI
/// (fewer EOI exits than native), steal time. With one CPU the backend
/// makes no hypercall (kvm.c `pv_ipi_supported`).
pub const KVM_PERSONA: Expect = Expect {
    hypervisor: Some("kvm"),
    backend: Some("kvm"),
    owners: Some(KVM_OWNS),
    tsc_source: Some("pvclock"),
    interfaces: &[(0x4000_0000, "kvm")],
    counts: &[
        (Metric::Pit, Count::Zero),
        (Metric::MsrWrites(SYSTEM_TIME_NEW), Count::NonZero),
        (Metric::MsrWrites(PV_EOI_EN), Count::NonZero),
        (Metric::Hypercalls, Count::Zero),
    ],
    fewer_than_native: &[Metric::Eoi, Metric::Pit, Metric::TotalNoConsole],
    ..Expect::PASS
};

/// A persona scenario with everything as [`KVM_PERSONA`] except `expect`.
const fn broken(
    name: &'static str,
    description: &'static str,
    args: &'static str,
    expect: Expect,
) -> Scenario {
    Scenario {
        name,
        description,
        boot: Boot::Microvisor {
            persona: "kvm",
            args,
        },
        expect,
        ..Scenario::BASE
    }
}

/// This area's scenarios, in report order.
pub const SCENARIOS: &[Scenario] = &[
    // The real-KVM pair of `kvm` (the QMP exit-counter work defines the
    // same name; one definition survives the merge).
    Scenario {
        name: "kvm/native",
        description: "KVM (-cpu host), guest forced to pvops=native (pair of kvm)",
        accel: Accel::Kvm,
        // arch-capabilities: see `kvm`.
        cpu: Some("host,-arch-capabilities"),
        requires: &[Requirement::Kvm],
        guest_cmdline: "pvops=native",
        expect: Expect {
            hypervisor: Some("kvm"),
            backend: Some("native"),
            owners: Some(Owners::NATIVE),
            interfaces: &[(0x4000_0000, "kvm")],
            ..Expect::PASS
        },
        ..Scenario::BASE
    },
    Scenario {
        name: "microvisor:kvm",
        description: "microvisor persona kvm (KVMKVMKVM, kvmclock, PV EOI, steal time, hypercalls)",
        boot: Boot::Microvisor {
            persona: "kvm",
            args: "",
        },
        expect: KVM_PERSONA,
        native_pair: Some("microvisor:kvm/native"),
        ..Scenario::BASE
    },
    native_pair(
        "microvisor:kvm/native",
        "persona kvm, guest forced to pvops=native (pair of microvisor:kvm)",
        "kvm",
        "kvm",
        &[(0x4000_0000, "kvm")],
        &[(Metric::Pit, Count::NonZero), (Metric::Eoi, Count::NonZero)],
    ),
    broken(
        "microvisor:kvm:break=pvclock-odd",
        "persona kvm, kvmclock version stuck odd: clock and frequency native, the rest kept",
        "break=pvclock-odd",
        Expect {
            owners: Some(KVM_NO_CLOCK),
            tsc_source: Some("pit-calibration"),
            counts: &[(Metric::Pit, Count::NonZero)],
            fewer_than_native: &[],
            logged: &["kvm: time.monotonic_ns and time.tsc_frequency stays native: kvmclock version stuck odd"],
            ..KVM_PERSONA
        },
    ),
    broken(
        "microvisor:kvm:break=stable-bit",
        "persona kvm, pvclock without PVCLOCK_TSC_STABLE_BIT: kvmclock kept, monotonic in software (@@ kvm stable=false)",
        "break=stable-bit",
        Expect {
            fewer_than_native: &[],
            logged: &["not marked stable by the host: kept monotonic in software"],
            ..KVM_PERSONA
        },
    ),
    broken(
        "microvisor:kvm:break=steal-never",
        "persona kvm, steal-time area never written: time.steal_ns native",
        "break=steal-never",
        Expect {
            owners: Some(KVM_NO_STEAL),
            fewer_than_native: &[],
            logged: &["kvm: time.steal_ns stays native: steal-time area never written by the host (version 0)"],
            ..KVM_PERSONA
        },
    ),
    broken(
        "microvisor:kvm:break=pv-eoi-refused",
        "persona kvm, WRMSR MSR_KVM_PV_EOI_EN raises #GP: the guest catches it, irq.eoi native",
        "break=pv-eoi-refused",
        Expect {
            owners: Some(KVM_NO_PV_EOI),
            counts: &[
                (Metric::Pit, Count::Zero),
                (Metric::MsrWrites(PV_EOI_EN), Count::NonZero),
            ],
            fewer_than_native: &[],
            logged: &["kvm: irq.eoi stays native: WRMSR raised #GP"],
            ..KVM_PERSONA
        },
    ),
    broken(
        "microvisor:kvm:break=hypercall-enosys",
        "persona kvm, every hypercall -KVM_ENOSYS: a one-CPU guest makes none (PV IPIs need two CPUs), so nothing changes",
        "break=hypercall-enosys",
        Expect {
            fewer_than_native: &[],
            logged: &["kvm: irq.send_ipi_mask stays native: KVM_FEATURE_PV_SEND_IPI not offered, or one CPU"],
            ..KVM_PERSONA
        },
    ),
];
