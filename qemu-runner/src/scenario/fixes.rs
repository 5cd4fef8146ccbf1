//! Scenarios of the real-hypervisor fixes: personas that behave as the real hypervisors do (issue 11).

#[allow(unused_imports)]
use super::*;

/// Hyper-V without frequency MSRs: everything of [`HYPERV_OWNS`] but the
/// APIC timer frequency (the TSC frequency is derived from the hypervisor's
/// references).
pub const HYPERV_NO_FREQUENCIES: Owners = Owners {
    backend: &[
        "time.monotonic_ns",
        "time.tsc_frequency",
        "time.timer_setup",
        "time.timer_arm",
        "time.timer_cancel",
        "irq.eoi",
        "system.report_crash",
        "mmu.flush_remote",
        "irq.send_ipi",
        "irq.send_ipi_mask",
    ],
    optional: &[],
};

/// This area's scenarios, in report order.
pub const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "microvisor:xen:noisy-ports",
        description: "persona xen with the toolstack's xenstore and console ports (1, 2: word 0, as the timer's) raising events during the boot: the timer keeps interrupting (review F1)",
        boot: mv("xen", "break=noisy-ports"),
        expect: Expect {
            fewer_than_native: &[],
            ..XEN
        },
        ..Scenario::BASE
    },
    Scenario {
        name: "microvisor:xen:callback-via",
        description: "persona xen without base+4's upcall-vector bit (Xen before 4.17): HVM_PARAM_CALLBACK_IRQ, injected without the vLAPIC, re-asserted while the upcall flag is set, no EOI (review F3)",
        boot: mv("xen", "break=callback-via+noisy-ports"),
        expect: Expect {
            counts: &[
                (Metric::Pit, Count::Zero),
                (Metric::Hypercall(XEN_SET_SINGLESHOT_TIMER), Count::NonZero),
                (Metric::Hypercall(XEN_SCHED_SHUTDOWN), Count::Zero),
                (Metric::Port(0x80), Count::Zero),
                // HVMOP_set_evtchn_upcall_vector works but is not
                // advertised: never called (34 << 8 | 23).
                (Metric::Hypercall(0x2217), Count::Zero),
            ],
            fewer_than_native: &[],
            logged: &["upcalls by callback via vector (HVM_PARAM_CALLBACK_IRQ)"],
            ..XEN
        },
        ..Scenario::BASE
    },
    Scenario {
        name: "microvisor:xen:qemu",
        description: "persona xen as QEMU's Xen emulation: 4.10, HVMOP_get_param -ENOSYS, base+3 sub-leaf 0 not in Xen's layout; the timer is still Xen's",
        boot: mv("xen", "break=qemu+noisy-ports"),
        expect: Expect {
            fewer_than_native: &[],
            logged: &["xen: base+3 does not follow Xen's layout"],
            ..XEN
        },
        ..Scenario::BASE
    },
    Scenario {
        name: "microvisor:hyperv:no-frequencies",
        description: "persona hyperv without frequency MSRs (QEMU without hv-frequencies): the TSC frequency comes from the reference TSC page scale, never from the PIT",
        boot: mv("hyperv", "break=no-frequencies"),
        expect: Expect {
            owners: Some(HYPERV_NO_FREQUENCIES),
            tsc_source: Some("hyperv-tsc-page"),
            selftests: &["time.clock-vs-tsc"],
            fewer_than_native: &[],
            logged: &["hyperv: no frequency MSRs"],
            ..HYPERV
        },
        ..Scenario::BASE
    },
    Scenario {
        name: "microvisor:hyperv:tsc-page-late",
        description: "persona hyperv whose TSC page reads sequence 0 when enabled and is valid later (KVM): the page is kept, every clock read after it uses the page (review F7)",
        boot: mv("hyperv", "break=tsc-page-late"),
        expect: Expect {
            counts: &[
                (Metric::Pit, Count::Zero),
                (Metric::Hypercalls, Count::NonZero),
                // The frequency MSR's cross-check at set-up (the page is
                // not valid yet) and nothing after: every clock read uses
                // the page once it is valid.
                (
                    Metric::MsrReads(HV_TIME_REF_COUNT),
                    Count::AtMost(2 * pvops_backends::hyperv::CROSS_CHECK_TRIES as u64),
                ),
            ],
            fewer_than_native: &[],
            logged: &[
                "hyperv: TSC page sequence 0 at set-up; reads use the MSR until it is valid",
                "agrees with the reference counter (no valid TSC page)",
            ],
            ..HYPERV
        },
        ..Scenario::BASE
    },
    Scenario {
        name: "microvisor:hyperv:no-frequencies+tsc-page-late",
        description: "persona hyperv without frequency MSRs and with the TSC page invalid at set-up: the TSC frequency is measured against the reference counter",
        boot: mv("hyperv", "break=no-frequencies+tsc-page-late"),
        expect: Expect {
            owners: Some(HYPERV_NO_FREQUENCIES),
            tsc_source: Some("hyperv-reference-counter"),
            selftests: &["time.clock-vs-tsc"],
            counts: &[
                (Metric::Pit, Count::Zero),
                (Metric::Hypercalls, Count::NonZero),
            ],
            fewer_than_native: &[],
            logged: &["hyperv: TSC", "kHz from hyperv-reference-counter"],
            ..HYPERV
        },
        ..Scenario::BASE
    },
];
