//! Scenarios with several CPUs (issue 13): the example kernel starts every
//! AP of the MADT, sets each up through `pvops_backends::init_cpu` and runs
//! the `smp.*` self-tests (timer and EOI per CPU, IPIs to every CPU, a
//! cross-CPU clock warp check, a checked TLB shootdown, a contended
//! paravirtual spinlock). Under KVM, 4 vCPUs on this 2-core host are a real
//! overcommit.

#[allow(unused_imports)]
use super::*;
use pvops_abi::exit::ExitCode;

/// vCPUs of the SMP scenarios.
pub const SMP_CPUS: u32 = 4;

/// The APIC ID `tcg:smp2:no-answer` starts that is not in its MADT
/// (`smp-ghost-apic=`).
pub const GHOST_APIC: u64 = 7;

/// The kvm backend with more than one CPU: what it owns with one (each
/// CPU with its own kvmclock, steal-time area and PV EOI word), and, as
/// KVM offers them, PV IPIs (kvm.c `pv_ipi_supported`), PV spinlocks
/// (`kvm_spinlock_init`), the steal-time preempted flag and PV TLB flush
/// (`pv_tlb_flush_supported`). On a host whose KVM is `kvm_pvm` the
/// runner turns hypercalls off ([`crate::PVM_SWITCH`]), so PV IPIs and
/// the lock's wait/kick stay native there.
pub const KVM_SMP_OWNS: Owners = Owners {
    backend: &[
        "cpu.io_delay",
        "time.monotonic_ns",
        "time.tsc_frequency",
        "time.steal_ns",
        "irq.eoi",
    ],
    optional: &[
        "irq.send_ipi_mask",
        "lock.wait",
        "lock.kick",
        "lock.vcpu_is_preempted",
        "mmu.flush_remote",
    ],
};

/// The hyperv backend with several VPs under the microvisor's `hyperv`
/// persona: what it owns with one (`HYPERV_OWNS`: flush and IPIs by
/// hypercall, the persona recommends both), and `lock.wait`, since with
/// more than one VP the persona recommends notifying long spin waits
/// (CPUID 0x4000_0004 EBX 0xFFF), as `nested:hyperv:smp2` gets it from
/// KVM's `hv-spinlocks`.
pub const MV_HYPERV_SMP_OWNS: Owners = Owners {
    backend: &[
        "time.monotonic_ns",
        "time.tsc_frequency",
        "time.apic_timer_khz",
        "time.timer_setup",
        "time.timer_arm",
        "time.timer_cancel",
        "irq.eoi",
        "system.report_crash",
        "mmu.flush_remote",
        "irq.send_ipi",
        "irq.send_ipi_mask",
        "lock.wait",
    ],
    optional: &[],
};

/// The xen backend with several vCPUs under the microvisor's `xen`
/// persona: what it owns with one (`XEN_OWNS`), steal time (each vCPU's
/// runstate area shows the time the scheduler kept it runnable) and the
/// lock group (an IPI event channel per vCPU, `SCHEDOP_poll` that blocks
/// until a send, the target's runstate for `vcpu_is_preempted`).
/// Cross-CPU IPIs and flushes stay native: Xen HVM offers no hypercall
/// for them.
pub const MV_XEN_SMP_OWNS: Owners = Owners {
    backend: &[
        "cpu.io_delay",
        "system.shutdown",
        "cpu.halt",
        "time.monotonic_ns",
        "time.tsc_frequency",
        "irq.safe_halt",
        "time.timer_setup",
        "time.timer_arm",
        "time.timer_cancel",
        "time.timer_ack",
        "irq.eoi",
        "time.steal_ns",
        "lock.wait",
        "lock.kick",
        "lock.vcpu_is_preempted",
    ],
    optional: &[],
};

/// The KVM machine of `kvm:smp4` and its native pair: `-cpu host` (see
/// `kvm`), 4 vCPUs.
const KVM_SMP4: Scenario = Scenario {
    accel: Accel::Kvm,
    cpu: Some("host,-arch-capabilities"),
    requires: &[Requirement::Kvm],
    cpus: SMP_CPUS,
    timeout_secs: 240,
    ..Scenario::BASE
};

/// The microvisor's multi-vCPU machine (issue 14): `vcpus=4` guest vCPUs
/// time-sliced on the one CPU the host QEMU gives it (`-smp 1` after the
/// runner's `-smp 4`: the last one wins). `cpus` is what the guest must
/// bring online.
const MV_SMP4: Scenario = Scenario {
    cpus: SMP_CPUS,
    qemu_args: &["-smp", "1"],
    timeout_secs: 300,
    ..Scenario::BASE
};

/// This area's scenarios, in report order.
pub const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "tcg:smp4",
        description: "QEMU software emulation with 4 vCPUs: every AP started and tested through pvops",
        cpus: SMP_CPUS,
        timeout_secs: 240,
        expect: Expect {
            hypervisor: Some("qemu-tcg"),
            backend: Some("native"),
            owners: Some(Owners::NATIVE),
            selftests: crate::verdict::SMP_TESTS,
            ..Expect::PASS
        },
        ..Scenario::BASE
    },
    Scenario {
        name: "tcg:smp2:no-answer",
        description: "bad input: 2 vCPUs, and the guest also starts APIC ID 7 (not in the MADT), which never answers; reported, and the boot goes on",
        cpus: 2,
        timeout_secs: 240,
        guest_cmdline: "smp-ghost-apic=7",
        expect: Expect {
            hypervisor: Some("qemu-tcg"),
            backend: Some("native"),
            owners: Some(Owners::NATIVE),
            selftests: crate::verdict::SMP_TESTS,
            no_answer: &[GHOST_APIC],
            ..Expect::PASS
        },
        ..Scenario::BASE
    },
    Scenario {
        name: "tcg:smp2:hotplug",
        description: "2 vCPUs present of 4 possible (-smp 2,maxcpus=4): the MADT lists the 2 absent ones disabled; the guest starts only the present one",
        cpus: 2,
        qemu_args: &["-smp", "2,maxcpus=4"],
        timeout_secs: 240,
        expect: Expect {
            hypervisor: Some("qemu-tcg"),
            backend: Some("native"),
            owners: Some(Owners::NATIVE),
            selftests: crate::verdict::SMP_TESTS,
            ..Expect::PASS
        },
        ..Scenario::BASE
    },
    Scenario {
        name: "kvm:smp4",
        description: "KVM with 4 vCPUs on this host (overcommitted): per-CPU kvmclock, steal time and PV EOI, PV IPIs, PV spinlocks where offered",
        expect: Expect {
            hypervisor: Some("kvm"),
            backend: Some("kvm"),
            owners: Some(KVM_SMP_OWNS),
            tsc_source: Some("pvclock"),
            interfaces: &[(0x4000_0000, "kvm")],
            selftests: crate::verdict::SMP_TESTS,
            ..Expect::PASS
        },
        native_pair: Some("kvm:smp4/native"),
        guest_cmdline: "smpbench=cross",
        ..KVM_SMP4
    },
    Scenario {
        name: "kvm:smp4/native",
        description: "KVM with 4 vCPUs, guest forced to pvops=native (pair of kvm:smp4)",
        guest_cmdline: "pvops=native smpbench=cross",
        expect: Expect {
            hypervisor: Some("kvm"),
            backend: Some("native"),
            owners: Some(Owners::NATIVE),
            interfaces: &[(0x4000_0000, "kvm")],
            selftests: crate::verdict::SMP_TESTS,
            ..Expect::PASS
        },
        ..KVM_SMP4
    },
    Scenario {
        name: "microvisor:none:smp4",
        description: "microvisor persona none with 4 vCPUs overcommitted on one CPU (round robin, 1 ms slices): every AP started by INIT-SIPI-SIPI and tested, native",
        boot: mv("none", "vcpus=4"),
        expect: Expect {
            hypervisor: Some("none"),
            backend: Some("native"),
            owners: Some(Owners::NATIVE),
            selftests: crate::verdict::SMP_TESTS,
            ..Expect::PASS
        },
        ..MV_SMP4
    },
    Scenario {
        name: "microvisor:bare:smp4",
        description: "microvisor persona bare (hypervisor bit, no signature) with 4 vCPUs on one CPU: an unknown hypervisor, every AP started and tested, native",
        boot: mv("bare", "vcpus=4"),
        expect: Expect {
            hypervisor: Some("unknown"),
            backend: Some("native"),
            owners: Some(Owners::NATIVE),
            selftests: crate::verdict::SMP_TESTS,
            ..Expect::PASS
        },
        ..MV_SMP4
    },
    Scenario {
        name: "microvisor:none:smp8",
        description: "microvisor persona none with 8 vCPUs (its most) on one CPU: every AP started and tested, native, and the SMP bench's N = 8 figures",
        boot: mv("none", "vcpus=8"),
        cpus: 8,
        guest_cmdline: "smpbench=cross",
        // The slowest of these (8 vCPUs, the bench at N = 8), booted once
        // so far: by hand until it has a record.
        in_default_set: false,
        expect: Expect {
            hypervisor: Some("none"),
            backend: Some("native"),
            owners: Some(Owners::NATIVE),
            selftests: crate::verdict::SMP_TESTS,
            ..Expect::PASS
        },
        ..MV_SMP4
    },
    Scenario {
        name: "microvisor:vmware:smp4",
        description: "microvisor persona vmware with 4 vCPUs on one CPU: each vCPU's steal clock shows the time the scheduler kept it off the CPU; TSC and APIC frequencies from leaf 0x40000010; IPIs and flushes native (VMware offers no PV forms)",
        boot: mv("vmware", "vcpus=4"),
        expect: Expect {
            selftests: crate::verdict::SMP_TESTS,
            ..VMWARE
        },
        native_pair: Some("microvisor:vmware:smp4/native"),
        ..MV_SMP4
    },
    Scenario {
        name: "microvisor:vmware:smp4/native",
        description: "microvisor persona vmware with 4 vCPUs, guest forced to pvops=native (native run of microvisor:vmware:smp4)",
        boot: mv("vmware", "vcpus=4"),
        guest_cmdline: "pvops=native",
        expect: Expect {
            hypervisor: Some("vmware"),
            backend: Some("native"),
            owners: Some(Owners::NATIVE),
            interfaces: &[(0x4000_0000, "vmware")],
            selftests: crate::verdict::SMP_TESTS,
            counts: &[(Metric::Pit, Count::NonZero)],
            ..Expect::PASS
        },
        ..MV_SMP4
    },
    Scenario {
        name: "microvisor:kvm:smp4",
        description: "microvisor persona kvm with 4 vCPUs on one CPU: per-vCPU kvmclock, steal time and PV EOI; PV IPIs, PV TLB flush and PV spinlocks where the persona offers them",
        boot: mv("kvm", "vcpus=4"),
        expect: Expect {
            hypervisor: Some("kvm"),
            backend: Some("kvm"),
            owners: Some(KVM_SMP_OWNS),
            tsc_source: Some("pvclock"),
            interfaces: &[(0x4000_0000, "kvm")],
            selftests: crate::verdict::SMP_TESTS,
            // Every vCPU's kvmclock (no PIT), PV EOI, PV IPIs and kicks.
            counts: &[(Metric::Pit, Count::Zero), (Metric::Hypercalls, Count::NonZero)],
            fewer_than_native: &[Metric::Eoi, Metric::Pit, Metric::TotalNoConsole],
            ..Expect::PASS
        },
        native_pair: Some("microvisor:kvm:smp4/native"),
        guest_cmdline: "smpbench=cross",
        ..MV_SMP4
    },
    Scenario {
        name: "microvisor:kvm:smp4/native",
        description: "microvisor persona kvm with 4 vCPUs, guest forced to pvops=native (native run of microvisor:kvm:smp4)",
        boot: mv("kvm", "vcpus=4"),
        guest_cmdline: "pvops=native smpbench=cross",
        expect: Expect {
            hypervisor: Some("kvm"),
            backend: Some("native"),
            owners: Some(Owners::NATIVE),
            interfaces: &[(0x4000_0000, "kvm")],
            selftests: crate::verdict::SMP_TESTS,
            ..Expect::PASS
        },
        ..MV_SMP4
    },
    Scenario {
        name: "microvisor:kvm:smp8",
        description: "microvisor persona kvm with 8 vCPUs (its most) on one CPU: everything of microvisor:kvm:smp4, and the SMP bench's N = 8 figures",
        boot: mv("kvm", "vcpus=8"),
        cpus: 8,
        expect: Expect {
            hypervisor: Some("kvm"),
            backend: Some("kvm"),
            owners: Some(KVM_SMP_OWNS),
            tsc_source: Some("pvclock"),
            interfaces: &[(0x4000_0000, "kvm")],
            selftests: crate::verdict::SMP_TESTS,
            counts: &[(Metric::Pit, Count::Zero), (Metric::Hypercalls, Count::NonZero)],
            fewer_than_native: &[Metric::Eoi, Metric::Pit, Metric::TotalNoConsole],
            ..Expect::PASS
        },
        native_pair: Some("microvisor:kvm:smp8/native"),
        guest_cmdline: "smpbench=cross",
        ..MV_SMP4
    },
    Scenario {
        name: "microvisor:kvm:smp8/native",
        description: "microvisor persona kvm with 8 vCPUs, guest forced to pvops=native (native run of microvisor:kvm:smp8)",
        boot: mv("kvm", "vcpus=8"),
        cpus: 8,
        guest_cmdline: "pvops=native smpbench=cross",
        expect: Expect {
            hypervisor: Some("kvm"),
            backend: Some("native"),
            owners: Some(Owners::NATIVE),
            interfaces: &[(0x4000_0000, "kvm")],
            selftests: crate::verdict::SMP_TESTS,
            ..Expect::PASS
        },
        ..MV_SMP4
    },
    Scenario {
        name: "microvisor:hyperv:smp4",
        description: "microvisor persona hyperv with 4 vCPUs on one CPU: VP index, VP assist page (lazy EOI) and synthetic timers per VP; remote TLB flush and cluster IPIs by hypercall, long spin waits notified",
        boot: mv("hyperv", "vcpus=4"),
        expect: Expect {
            hypervisor: Some("hyperv"),
            backend: Some("hyperv"),
            owners: Some(MV_HYPERV_SMP_OWNS),
            tsc_source: Some("hyperv-msr"),
            interfaces: &[(0x4000_0000, "hyperv")],
            selftests: crate::verdict::SMP_TESTS,
            // Every VP's synthetic timer (no PIT), flush and IPI hypercalls.
            counts: &[(Metric::Pit, Count::Zero), (Metric::Hypercalls, Count::NonZero)],
            fewer_than_native: &[Metric::Pit, Metric::TotalNoConsole],
            ..Expect::PASS
        },
        native_pair: Some("microvisor:hyperv:smp4/native"),
        guest_cmdline: "smpbench=cross",
        ..MV_SMP4
    },
    Scenario {
        name: "microvisor:hyperv:smp4/native",
        description: "microvisor persona hyperv with 4 vCPUs, guest forced to pvops=native (native run of microvisor:hyperv:smp4)",
        boot: mv("hyperv", "vcpus=4"),
        guest_cmdline: "pvops=native smpbench=cross",
        expect: Expect {
            hypervisor: Some("hyperv"),
            backend: Some("native"),
            owners: Some(Owners::NATIVE),
            interfaces: &[(0x4000_0000, "hyperv")],
            selftests: crate::verdict::SMP_TESTS,
            ..Expect::PASS
        },
        ..MV_SMP4
    },
    Scenario {
        name: "microvisor:xen:smp4",
        description: "microvisor persona xen with 4 vCPUs on one CPU: vcpu_info, upcall vector, VIRQ_TIMER port and singleshot timer per vCPU (another vCPU's timer refused), runstate per vCPU with the scheduler's steal, PV lock by SCHEDOP_poll and IPI event channels",
        boot: mv("xen", "vcpus=4"),
        expect: Expect {
            owners: Some(MV_XEN_SMP_OWNS),
            selftests: crate::verdict::SMP_TESTS,
            fewer_than_native: &[Metric::Pit, Metric::TotalNoConsole],
            ..XEN
        },
        native_pair: Some("microvisor:xen:smp4/native"),
        guest_cmdline: "smpbench=cross",
        ..MV_SMP4
    },
    Scenario {
        name: "microvisor:xen:smp4/native",
        description: "microvisor persona xen with 4 vCPUs, guest forced to pvops=native (native run of microvisor:xen:smp4)",
        boot: mv("xen", "vcpus=4"),
        guest_cmdline: "pvops=native smpbench=cross",
        expect: Expect {
            hypervisor: Some("xen"),
            backend: Some("native"),
            owners: Some(Owners::NATIVE),
            interfaces: &[(0x4000_0000, "xen")],
            selftests: crate::verdict::SMP_TESTS,
            counts: &[(Metric::Pit, Count::NonZero), (Metric::Hypercalls, Count::Zero)],
            ..Expect::PASS
        },
        ..MV_SMP4
    },
    Scenario {
        name: "microvisor:xen+viridian:smp4",
        description: "microvisor persona xen+viridian with 4 vCPUs: minimal Hyper-V at 0x40000000 (VP index per vCPU), Xen per vCPU at 0x40000100; the xen backend wins, as with one vCPU",
        boot: mv("xen+viridian", "vcpus=4"),
        expect: Expect {
            hypervisor: Some("hyperv"),
            interfaces: &[(0x4000_0000, "hyperv"), (0x4000_0100, "xen")],
            owners: Some(MV_XEN_SMP_OWNS),
            selftests: crate::verdict::SMP_TESTS,
            fewer_than_native: &[],
            ..XEN
        },
        ..MV_SMP4
    },
    Scenario {
        name: "microvisor:xen+viridian:smp4/hyperv",
        description: "microvisor persona xen+viridian with 4 vCPUs, guest forced to pvops=hyperv: the other backend that runs there, on Viridian's base group (each VP's own index, the EOI MSR) with everything else native",
        boot: mv("xen+viridian", "vcpus=4"),
        guest_cmdline: "pvops=hyperv",
        expect: Expect {
            hypervisor: Some("hyperv"),
            backend: Some("hyperv"),
            owners: Some(VIRIDIAN_OWNS),
            interfaces: &[(0x4000_0000, "hyperv"), (0x4000_0100, "xen")],
            selftests: crate::verdict::SMP_TESTS,
            ..Expect::PASS
        },
        ..MV_SMP4
    },
    Scenario {
        name: "microvisor:xen:callback-via:smp4",
        description: "microvisor persona xen with 4 vCPUs and no per-vCPU upcall vector (Xen before 4.17), toolstack ports noisy: every vCPU's upcalls come by the callback-via vector, each vCPU's own",
        boot: mv("xen", "vcpus=4 break=callback-via+noisy-ports"),
        expect: Expect {
            owners: Some(MV_XEN_SMP_OWNS),
            selftests: crate::verdict::SMP_TESTS,
            counts: &[
                (Metric::Pit, Count::Zero),
                (Metric::Hypercall(XEN_SET_SINGLESHOT_TIMER), Count::NonZero),
                // HVMOP_set_evtchn_upcall_vector (34 << 8 | 23): not
                // advertised, never called.
                (Metric::Hypercall(0x2217), Count::Zero),
            ],
            fewer_than_native: &[],
            logged: &["upcalls by callback via vector (HVM_PARAM_CALLBACK_IRQ)"],
            ..XEN
        },
        ..MV_SMP4
    },
    Scenario {
        name: "microvisor:kvm+hyperv:smp4",
        description: "microvisor persona kvm+hyperv with 4 vCPUs: Hyper-V per VP at 0x40000000, KVM at 0x40000100; the kvm backend wins, as with one vCPU",
        boot: mv("kvm+hyperv", "vcpus=4"),
        expect: Expect {
            hypervisor: Some("hyperv"),
            backend: Some("kvm"),
            owners: Some(KVM_SMP_OWNS),
            tsc_source: Some("pvclock"),
            interfaces: &[(0x4000_0000, "hyperv"), (0x4000_0100, "kvm")],
            selftests: crate::verdict::SMP_TESTS,
            counts: &[(Metric::Pit, Count::Zero)],
            ..Expect::PASS
        },
        ..MV_SMP4
    },
    Scenario {
        name: "microvisor:kvm+hyperv:smp4/hyperv",
        description: "microvisor persona kvm+hyperv with 4 vCPUs, guest forced to pvops=hyperv: the other backend that runs there, with every VP's index, assist page and synthetic timer, flushes and IPIs by hypercall with processor sets",
        boot: mv("kvm+hyperv", "vcpus=4"),
        guest_cmdline: "pvops=hyperv",
        expect: Expect {
            hypervisor: Some("hyperv"),
            backend: Some("hyperv"),
            owners: Some(MV_HYPERV_SMP_OWNS),
            tsc_source: Some("hyperv-msr"),
            interfaces: &[(0x4000_0000, "hyperv"), (0x4000_0100, "kvm")],
            selftests: crate::verdict::SMP_TESTS,
            counts: &[(Metric::Pit, Count::Zero), (Metric::Hypercalls, Count::NonZero)],
            ..Expect::PASS
        },
        ..MV_SMP4
    },
    Scenario {
        name: "microvisor:kvm:smp4:break=last-vcpu-refuses",
        description: "bad input: 4 vCPUs under the kvm persona, whose last vCPU's steal-time and PV EOI MSRs raise #GP: that CPU's steal time and EOI run native (logged, its `@@ ap` says fallbacks=2), the others keep theirs, and a remote flush names it by IPI",
        boot: mv("kvm", "vcpus=4 break=last-vcpu-refuses"),
        expect: Expect {
            hypervisor: Some("kvm"),
            backend: Some("kvm"),
            owners: Some(KVM_SMP_OWNS),
            tsc_source: Some("pvclock"),
            interfaces: &[(0x4000_0000, "kvm")],
            selftests: crate::verdict::SMP_TESTS,
            logged: &[
                "cpu 3: time.steal_ns runs native on this CPU",
                "cpu 3: irq.eoi runs native on this CPU",
            ],
            ..Expect::PASS
        },
        ..MV_SMP4
    },
    Scenario {
        name: "microvisor:hyperv:smp4:break=sets-refused",
        description: "bad input: 4 VPs under the hyperv persona, which rejects every flush or IPI hypercall whose processor set names VP 3 (INVALID_PARAMETER): each such call falls back to IPIs (logged once), the others stay hypercalls, and every shootdown and IPI still arrives",
        boot: mv("hyperv", "vcpus=4 break=sets-refused"),
        guest_cmdline: "smpbench=cross",
        expect: Expect {
            hypervisor: Some("hyperv"),
            backend: Some("hyperv"),
            owners: Some(MV_HYPERV_SMP_OWNS),
            tsc_source: Some("hyperv-msr"),
            interfaces: &[(0x4000_0000, "hyperv")],
            selftests: crate::verdict::SMP_TESTS,
            counts: &[(Metric::Hypercalls, Count::NonZero)],
            logged: &[
                "TLB flush hypercall failed",
                "synthetic cluster IPI hypercall failed",
            ],
            ..Expect::PASS
        },
        ..MV_SMP4
    },
    Scenario {
        name: "microvisor:none:smp2:no-answer",
        description: "bad input: microvisor with 2 vCPUs, and the guest also starts APIC ID 7, which does not exist: the SIPI is logged (mv.ipi result=absent), the guest reports no-answer and goes on",
        boot: mv("none", "vcpus=2"),
        cpus: 2,
        guest_cmdline: "smp-ghost-apic=7",
        expect: Expect {
            hypervisor: Some("none"),
            backend: Some("native"),
            owners: Some(Owners::NATIVE),
            selftests: crate::verdict::SMP_TESTS,
            no_answer: &[GHOST_APIC],
            ..Expect::PASS
        },
        ..MV_SMP4
    },
    Scenario {
        name: "microvisor:none:smp4:fault-hang",
        description: "hostile guest: 4 vCPUs online, then the boot vCPU spins with interrupts off (fault=hang) while the APs idle: the watchdog names vCPU 0",
        boot: mv("none", "vcpus=4 watchdog_ms=3000"),
        guest_cmdline: "fault=hang",
        expect: stopped(ExitCode::GuestWatchdog, "watchdog"),
        ..MV_SMP4
    },
    Scenario {
        name: "microvisor:smp2:fault-ap-triple",
        description: "hostile guest: with 2 vCPUs the AP triple-faults in real mode right after its SIPI; the microvisor ends the run with a report naming vCPU 1",
        boot: mv("none", "vcpus=2"),
        guest: Guest::MicrovisorTestGuest,
        guest_cmdline: "smpfault=ap-triple",
        expect: stopped(ExitCode::GuestTripleFault, "triple-fault"),
        cpus: 1,
        ..MV_SMP4
    },
    Scenario {
        name: "microvisor:smp2:fault-ap-spin",
        description: "hostile guest: with 2 vCPUs the AP spins with interrupts off (cli; jmp $) while the boot vCPU idles on its timer: slices keep both running, and the watchdog names vCPU 1",
        boot: mv("none", "vcpus=2 watchdog_ms=3000"),
        guest: Guest::MicrovisorTestGuest,
        guest_cmdline: "smpfault=ap-spin",
        expect: stopped(ExitCode::GuestWatchdog, "watchdog"),
        cpus: 1,
        ..MV_SMP4
    },
    Scenario {
        name: "microvisor:smp2:sipi-absent",
        description: "bad input: with 2 vCPUs the guest sends INIT and SIPI to APIC ID 7, which does not exist (logged, not fatal), then starts vCPU 1, which runs",
        boot: mv("none", "vcpus=2"),
        guest: Guest::MicrovisorTestGuest,
        guest_cmdline: "smpfault=sipi-absent",
        expect: Expect {
            hypervisor: None,
            selftests: &["sipi-absent", "vcpu-counters"],
            ..Expect::PASS
        },
        cpus: 1,
        ..MV_SMP4
    },
];
