//! The declarative table of boot scenarios.
//!
//! A scenario is one [`Scenario`] value in [`ALL`]: how to start QEMU, what
//! to boot, and what the run must show. The runner, the table, the JSON
//! output and the integration tests all read this table; adding a scenario
//! is adding one entry (start from [`Scenario::BASE`] and override fields).

use pvops_abi::exit::ExitCode;

mod fixes;
mod hostile;
mod kvm;
pub mod lying;
mod microvm;
mod minimal;
pub mod nested;
pub mod smp;

/// How QEMU executes the guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accel {
    /// Software emulation (`-accel tcg`), default CPU model `max`.
    Tcg,
    /// Hardware virtualisation (`-accel kvm`), default CPU model `host`.
    Kvm,
}

impl Accel {
    /// The `-accel` value.
    pub const fn name(self) -> &'static str {
        match self {
            Accel::Tcg => "tcg",
            Accel::Kvm => "kvm",
        }
    }

    /// The CPU model used when a scenario does not name one.
    pub const fn default_cpu(self) -> &'static str {
        match self {
            Accel::Tcg => "max",
            Accel::Kvm => "host",
        }
    }
}

/// What QEMU loads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Boot {
    /// The example kernel directly (`-kernel example-kernel`).
    Direct,
    /// The microvisor (`-kernel microvisor`) with the example kernel as its
    /// guest (`-initrd example-kernel`).
    Microvisor {
        /// The persona the microvisor shows the guest (`persona=<name>`).
        persona: &'static str,
        /// Extra microvisor command-line words, before ` -- `.
        args: &'static str,
    },
    /// The example kernel as an L2 guest of QEMU/KVM inside an L1 Linux
    /// that runs under host QEMU TCG (see [`nested::NestedSpec`]).
    Nested(&'static nested::NestedSpec),
}

/// Which guest kernel a microvisor scenario boots.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Guest {
    /// `example-kernel/`: pvops and its self-tests.
    ExampleKernel,
    /// `microvisor/testguest/`: a small guest that checks the microvisor's
    /// own interfaces (hidden hypercalls and their counts, error codes,
    /// virtual APIC timers) exactly.
    MicrovisorTestGuest,
    /// `examples/minimal-kernel/`: the kernel-of-one's-own template, built
    /// out of tree against the published crate names (issue 9).
    MinimalKernel,
}

/// Something the host must offer for a scenario to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Requirement {
    /// `/dev/kvm` opens read-write.
    Kvm,
    /// The host CPU has AMD SVM (for KVM-accelerated microvisor runs).
    HostSvm,
    /// QEMU/KVM accepts the scenario's `-cpu` with a `tsc-frequency=` the
    /// runner finds by dry probes (QEMU started paused and told to quit):
    /// the [`TSC_HZ_PLACEHOLDER`] in [`Scenario::cpu`] is replaced by the
    /// first accepted candidate (see [`crate::qemu::kvm_tsc_hz`]).
    KvmTscFrequency,
    /// The nested L1 Linux image is cached, or can be built here (root,
    /// the host tools, Debian's archive reachable): see
    /// [`crate::nested::image::available`].
    NestedImage,
}

/// Replaced, in [`Scenario::cpu`], by the TSC frequency in Hz that
/// [`Requirement::KvmTscFrequency`] found.
pub const TSC_HZ_PLACEHOLDER: &str = "{tsc_hz}";

/// A condition on one microvisor count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Count {
    /// Must be 0.
    Zero,
    /// Must be at least 1.
    NonZero,
    /// Must be at least this.
    AtLeast(u64),
    /// Must be at most this.
    AtMost(u64),
}

impl Count {
    /// Whether `n` meets the condition.
    pub const fn holds(self, n: u64) -> bool {
        match self {
            Count::Zero => n == 0,
            Count::NonZero => n > 0,
            Count::AtLeast(m) => n >= m,
            Count::AtMost(m) => n <= m,
        }
    }

    /// For messages: `0`, `> 0`, `>= m`, `<= m`.
    pub fn describe(self) -> String {
        match self {
            Count::Zero => "0".to_string(),
            Count::NonZero => "> 0".to_string(),
            Count::AtLeast(m) => format!(">= {m}"),
            Count::AtMost(m) => format!("<= {m}"),
        }
    }
}

/// A number derived from the microvisor's exit counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Metric {
    /// Every exit.
    Total,
    /// Exits at the PIT's ports ([`crate::parse::PIT_PORTS`]).
    Pit,
    /// EOI exits: writes to the x2APIC EOI MSR 0x80b plus writes to the
    /// Hyper-V EOI MSR 0x4000_0070.
    Eoi,
    /// I/O exits (any port).
    Io,
    /// Exits of the serial console (COM1, ports 0x3f8..=0x3ff).
    Console,
    /// Every exit except those of the serial console (COM1, ports
    /// 0x3f8..=0x3ff), whose count follows the length of the boot log.
    TotalNoConsole,
    /// I/O exits except the serial console's.
    IoNoConsole,
    /// Exits for a reason name (`cpuid`, `msr`, `hlt`, `vmmcall`, ...).
    Reason(&'static str),
    /// Reads plus writes of an MSR.
    Msr(u32),
    /// Reads of an MSR.
    MsrReads(u32),
    /// Writes of an MSR.
    MsrWrites(u32),
    /// Exits at one I/O port.
    Port(u16),
    /// Persona hypercalls with this code (`mv.hypercall code=`).
    Hypercall(u64),
    /// Persona hypercalls of any code (not the microvisor's own, whose
    /// codes carry [`pvops_abi::microvisor::HYPERCALL_MAGIC`]).
    Hypercalls,
    /// One of KVM's per-vCPU statistics by its KVM name (`halt_exits`,
    /// `hypercalls`, `irq_window_exits`, ...; QMP `query-stats-schemas`
    /// lists them); 0 for the microvisor's counters.
    Kvm(&'static str),
}

impl Metric {
    /// The metric's value in `e`.
    pub fn of(self, e: &crate::parse::Exits) -> u64 {
        match self {
            Metric::Total => e.total,
            Metric::Pit => e.pit(),
            Metric::Eoi => e.eoi(),
            Metric::Io => e.reason("io"),
            Metric::Console => e.console(),
            Metric::TotalNoConsole => e.total.saturating_sub(e.console()),
            Metric::IoNoConsole => e.reason("io").saturating_sub(e.console()),
            Metric::Reason(r) => e.reason(r),
            Metric::Msr(m) => e.msr(m),
            Metric::MsrReads(m) => e.msrs.get(&m).map_or(0, |c| c.reads),
            Metric::MsrWrites(m) => e.msrs.get(&m).map_or(0, |c| c.writes),
            Metric::Port(p) => e.port(p),
            Metric::Hypercall(c) => e.hypercalls.get(&c).copied().unwrap_or(0),
            Metric::Hypercalls => e
                .hypercalls
                .iter()
                .filter(|(&code, _)| {
                    code & 0xFFFF_0000_0000_0000 != pvops_abi::microvisor::HYPERCALL_MAGIC
                })
                .map(|(_, n)| n)
                .sum(),
            Metric::Kvm(name) => e.reasons.get(name).copied().unwrap_or(0),
        }
    }

    /// Human name, e.g. `PIT exits`, `writes of MSR 0x80b`.
    pub fn name(self) -> String {
        match self {
            Metric::Total => "exits".to_string(),
            Metric::Pit => "PIT exits".to_string(),
            Metric::Eoi => "EOI exits (MSR 0x80b + 0x40000070 writes)".to_string(),
            Metric::Io => "I/O exits".to_string(),
            Metric::Console => "console exits".to_string(),
            Metric::TotalNoConsole => "exits without the console's".to_string(),
            Metric::IoNoConsole => "I/O exits without the console's".to_string(),
            Metric::Reason(r) => format!("{r} exits"),
            Metric::Msr(m) => format!("accesses of MSR {m:#x}"),
            Metric::MsrReads(m) => format!("reads of MSR {m:#x}"),
            Metric::MsrWrites(m) => format!("writes of MSR {m:#x}"),
            Metric::Port(p) => format!("exits at port {p:#x}"),
            Metric::Hypercall(c) => format!("hypercalls with code {c:#x}"),
            Metric::Hypercalls => "persona hypercalls".to_string(),
            Metric::Kvm(name) => format!("KVM {name}"),
        }
    }
}

/// The example kernel's self-tests that need a TSC frequency and report
/// `unsupported` when no source exists (`tsc source=none`).
pub const TIME_TESTS_NEEDING_A_FREQUENCY: &[&str] = &[
    "time.tsc-frequency",
    "time.clock-vs-tsc",
    "time.clock-vs-timer",
    "time.timer-cancel",
];

/// Which backend owns which table entry after installation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Owners {
    /// Entries the installed backend ([`Expect::backend`]) must own.
    pub backend: &'static [&'static str],
    /// Entries it may own or leave native (they depend on an optional
    /// service of the hypervisor, e.g. a steal clock).
    pub optional: &'static [&'static str],
}

impl Owners {
    /// Every entry native.
    pub const NATIVE: Owners = Owners {
        backend: &[],
        optional: &[],
    };
}

/// The TSC frequency the guest must report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TscKhz {
    /// Any non-zero value.
    Any,
    /// Exactly this many kHz.
    Exact(u64),
    /// The frequency the runner gave QEMU (`tsc-frequency=`, found by a dry
    /// probe, see [`Requirement::KvmTscFrequency`]) divided by 1000.
    Configured,
}

/// What a run must show to pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Expect {
    /// The exit code QEMU must report (through `isa-debug-exit`).
    pub outcome: ExitCode,
    /// The guest's `hypervisor name=` record, when checked.
    pub hypervisor: Option<&'static str>,
    /// The guest's `backend name=` record, when checked.
    pub backend: Option<&'static str>,
    /// Whether the guest must reach its `done` record with every self-test
    /// passed (true for a normal [`ExitCode::Pass`] run).
    pub guest_completes: bool,
    /// Self-tests that must be reported and pass (on top of "all passed").
    pub selftests: &'static [&'static str],
    /// Self-tests that must be reported `unsupported` (the machine lacks
    /// what they need, e.g. [`TIME_TESTS_NEEDING_A_FREQUENCY`]); any other
    /// unsupported self-test fails the run.
    pub unsupported: &'static [&'static str],
    /// The microvisor's `mv.fault kind=` the run must end with.
    pub fault: Option<&'static str>,
    /// Text the guest's `panic message=` must contain (the guest must panic).
    pub panic: Option<&'static str>,
    /// Text the microvisor's `mv.crash message=` (the crash message the
    /// guest handed to its hypervisor) must contain.
    pub crash_report: Option<&'static str>,
    /// MSRs the microvisor must have counted at least one access to.
    pub msrs: &'static [u32],
    /// I/O ports the microvisor must have counted at least one exit for.
    pub ports: &'static [u16],
    /// Table owners: exactly [`Owners::backend`] (plus any of
    /// [`Owners::optional`]) owned by the expected backend, every other
    /// entry native. `None`: not checked, except that a `native` backend
    /// always means every entry native.
    pub owners: Option<Owners>,
    /// The guest's `tsc source=`, when checked.
    pub tsc_source: Option<&'static str>,
    /// The guest's `tsc khz=`.
    pub tsc_khz: TscKhz,
    /// Hypervisor interfaces the guest must report, as (base, kind), in
    /// order; empty = not checked.
    pub interfaces: &'static [(u32, &'static str)],
    /// Conditions on microvisor counts.
    pub counts: &'static [(Metric, Count)],
    /// For a scenario with a [`Scenario::native_pair`]: metrics that must be
    /// strictly smaller in this run than in the pair's native run.
    pub fewer_than_native: &'static [Metric],
    /// Texts the guest must have logged: each must appear in a log line
    /// (`[LEVEL] message`, the boot kit's logger) of the serial console.
    /// The lying-hypervisor matrix states each fallback's reason here.
    pub logged: &'static [&'static str],
    /// APIC IDs the guest must report as `@@ ap ... status=no-answer` (an
    /// AP that never answers INIT-SIPI-SIPI, e.g. `smp-ghost-apic=`); any
    /// other AP must come online.
    pub no_answer: &'static [u64],
}

impl Expect {
    /// A normal run: exit code Pass, guest completes, nothing else checked.
    pub const PASS: Expect = Expect {
        outcome: ExitCode::Pass,
        hypervisor: None,
        backend: None,
        guest_completes: true,
        selftests: &[],
        unsupported: &[],
        fault: None,
        panic: None,
        crash_report: None,
        msrs: &[],
        ports: &[],
        owners: None,
        tsc_source: None,
        tsc_khz: TscKhz::Any,
        interfaces: &[],
        counts: &[],
        fewer_than_native: &[],
        logged: &[],
        no_answer: &[],
    };
}

/// One boot scenario.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Scenario {
    /// Unique name, as given on the command line (`cargo run -- NAME`).
    pub name: &'static str,
    /// One line for humans.
    pub description: &'static str,
    /// QEMU accelerator.
    pub accel: Accel,
    /// `-cpu` model; `None` = the accelerator's default.
    pub cpu: Option<&'static str>,
    /// Extra QEMU arguments, appended after the standard ones.
    pub qemu_args: &'static [&'static str],
    /// What QEMU boots.
    pub boot: Boot,
    /// The guest kernel: booted directly, or as the microvisor's guest.
    /// (The microvisor's test guest only runs under the microvisor.)
    pub guest: Guest,
    /// The example kernel's command line.
    pub guest_cmdline: &'static str,
    /// Cargo features of the example kernel (empty = its defaults).
    pub kernel_features: &'static [&'static str],
    /// Whether the example kernel is built with `--no-default-features`.
    pub no_default_features: bool,
    /// What the host needs.
    pub requires: &'static [Requirement],
    /// What the run must show.
    pub expect: Expect,
    /// Whether a plain `cargo run` (no scenario named) boots it.
    pub in_default_set: bool,
    /// Per-scenario timeout in seconds.
    pub timeout_secs: u64,
    /// The scenario that boots the same machine with the guest forced to
    /// `pvops=native`, for the paired comparison (exits, benchmarks).
    pub native_pair: Option<&'static str>,
    /// vCPUs QEMU gives the guest (`-smp`); with more than one the guest
    /// must bring every one online and pass the `smp.*` self-tests.
    pub cpus: u32,
}

impl Scenario {
    /// Defaults for new entries: TCG, direct boot, expected to pass.
    pub const BASE: Scenario = Scenario {
        name: "",
        description: "",
        accel: Accel::Tcg,
        cpu: None,
        qemu_args: &[],
        boot: Boot::Direct,
        guest: Guest::ExampleKernel,
        guest_cmdline: "",
        kernel_features: &[],
        no_default_features: false,
        requires: &[],
        expect: Expect::PASS,
        in_default_set: true,
        timeout_secs: 120,
        native_pair: None,
        cpus: 1,
    };

    /// The `-cpu` model actually used.
    pub fn cpu_model(&self) -> &'static str {
        self.cpu.unwrap_or(self.accel.default_cpu())
    }

    /// Whether the microvisor is involved.
    pub fn uses_microvisor(&self) -> bool {
        matches!(self.boot, Boot::Microvisor { .. })
    }

    /// The `-append` string: the guest command line for a direct boot, or
    /// `persona=<p> [args] -- <guest cmdline>` for the microvisor.
    /// `extra_guest` is appended to the guest's part (e.g. `dump=cpuid`).
    pub fn append(&self, extra_guest: &str) -> String {
        let guest = join_words(&[self.guest_cmdline, extra_guest]);
        match self.boot {
            Boot::Direct | Boot::Nested(_) => guest,
            Boot::Microvisor { persona, args } => {
                let mv = join_words(&[&format!("persona={persona}"), args]);
                if guest.is_empty() {
                    format!("{mv} --")
                } else {
                    format!("{mv} -- {guest}")
                }
            }
        }
    }
}

fn join_words(parts: &[&str]) -> String {
    parts
        .iter()
        .map(|p| p.trim())
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// A microvisor persona with optional microvisor arguments.
const fn mv(persona: &'static str, args: &'static str) -> Boot {
    Boot::Microvisor { persona, args }
}

// ---- expected table owners, from backends/src/<backend>/mod.rs -----------

/// VMware: TSC and APIC bus frequency from 0x4000_0010, TSC clock, no-op
/// `io_delay`, HLT idle; steal time only if STEALCLOCK enables an area.
pub const VMWARE_OWNS: Owners = Owners {
    backend: &[
        "time.tsc_frequency",
        "time.monotonic_ns",
        "time.apic_timer_khz",
        "cpu.io_delay",
        "cpu.halt",
        "irq.safe_halt",
    ],
    optional: &["time.steal_ns"],
};

/// The checks `microvisor/testguest` reports.
const TESTGUEST_CHECKS: &[&str] = &[
    "closed-hypercall",
    "leaf-without-key",
    "leaf-with-key",
    "counters",
    "counters-copy",
    "hypercall-errors",
    "periodic-timer-hlt",
    "one-shot-timer",
];

/// What `microvisor/testguest` must show: every one of its checks passed.
const TESTGUEST: Expect = Expect {
    hypervisor: None,
    selftests: TESTGUEST_CHECKS,
    ..Expect::PASS
};

/// What the example kernel's `fault=panic` panics with.
const PANIC_MESSAGE: &str = "fault=panic: deliberate kernel panic";

/// What a Xen guest shows when shared_info cannot be used (not mapped, or
/// its pvclock never settles): only the hypercall-based entries and the TSC
/// frequency from base+3 (the persona's leaf follows Xen's layout), clock
/// and timer native (no PIT calibration, no singleshot timer).
const XEN_WITHOUT_SHARED_INFO: Expect = Expect {
    owners: Some(XEN_HYPERCALLS_AND_TIME_LEAF),
    tsc_source: Some("xen-cpuid-time-leaf"),
    counts: &[
        (Metric::Pit, Count::Zero),
        (Metric::Hypercall(XEN_SET_SINGLESHOT_TIMER), Count::Zero),
        // The exit device gets the verdict before SCHEDOP_shutdown, which
        // is then never reached (issue 11, item 5).
        (Metric::Hypercall(XEN_SCHED_SHUTDOWN), Count::Zero),
    ],
    fewer_than_native: &[],
    ..XEN
};

/// Xen after step 2 (hypercall page and a first hypercall) only: what stays
/// when shared_info or the pvclock fails.
pub const XEN_HYPERCALLS_ONLY: Owners = Owners {
    backend: &["cpu.io_delay", "system.shutdown", "cpu.halt"],
    optional: &[],
};

/// Xen after step 2 with the TSC frequency from a sound base+3: what stays
/// when shared_info or the pvclock fails on a Xen whose time leaf follows
/// Xen's layout.
pub const XEN_HYPERCALLS_AND_TIME_LEAF: Owners = Owners {
    backend: &[
        "cpu.io_delay",
        "system.shutdown",
        "cpu.halt",
        "time.tsc_frequency",
    ],
    optional: &[],
};

/// Xen after step 3 (pvclock) without the timer event channel.
pub const XEN_NO_TIMER: Owners = Owners {
    backend: &[
        "cpu.io_delay",
        "system.shutdown",
        "cpu.halt",
        "time.monotonic_ns",
        "time.tsc_frequency",
        "irq.safe_halt",
    ],
    optional: &["time.steal_ns"],
};

/// Xen with every step: pvclock, VIRQ_TIMER event channel; steal time
/// when the runstate area registers.
pub const XEN_OWNS: Owners = Owners {
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
        // Swallows the EOI after a callback-via upcall (review F3).
        "irq.eoi",
    ],
    optional: &["time.steal_ns"],
};

/// The Hyper-V backend on Xen's Viridian "base" group (persona
/// xen+viridian): only the EOI MSR.
pub const VIRIDIAN_OWNS: Owners = Owners {
    backend: &["irq.eoi"],
    optional: &[],
};

/// Hyper-V without working hypercalls: clock, frequencies, synthetic
/// timer, EOI assist and crash MSRs; remote flush and IPIs native.
pub const HYPERV_NO_HYPERCALLS: Owners = Owners {
    backend: &[
        "time.monotonic_ns",
        "time.tsc_frequency",
        "time.apic_timer_khz",
        "time.timer_setup",
        "time.timer_arm",
        "time.timer_cancel",
        "irq.eoi",
        "system.report_crash",
    ],
    optional: &[],
};

/// Hyper-V whose hypercalls all fail: the flush probe fails, so flushes stay
/// native; the IPI entries have no probe (review F6) and fall back to the
/// native IPI per call.
pub const HYPERV_HYPERCALLS_FAIL: Owners = Owners {
    backend: &[
        "time.monotonic_ns",
        "time.tsc_frequency",
        "time.apic_timer_khz",
        "time.timer_setup",
        "time.timer_arm",
        "time.timer_cancel",
        "irq.eoi",
        "system.report_crash",
        "irq.send_ipi",
        "irq.send_ipi_mask",
    ],
    optional: &[],
};

/// Hyper-V with every enlightenment the persona offers.
pub const HYPERV_OWNS: Owners = Owners {
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
    ],
    optional: &[],
};

/// KVM with one CPU: no-op io_delay, kvmclock clock and TSC frequency, PV
/// EOI, steal time (PV IPIs need more than one CPU, kvm.c
/// `pv_ipi_supported`), from backends/src/kvm/mod.rs.
pub const KVM_OWNS: Owners = Owners {
    backend: &[
        "cpu.io_delay",
        "time.monotonic_ns",
        "time.tsc_frequency",
        "time.steal_ns",
        "irq.eoi",
    ],
    optional: &[],
};

/// The Xen persona's counter code (`mv.hypercall code=`, `(nr << 8) |
/// sub-op`, microvisor/src/personas/xen/hypercalls.rs) of
/// `vcpu_op(VCPUOP_set_singleshot_timer)`: 24 << 8 | 8.
pub const XEN_SET_SINGLESHOT_TIMER: u64 = 0x1808;
/// ... of `sched_op(SCHEDOP_shutdown)`: 29 << 8 | 2.
pub const XEN_SCHED_SHUTDOWN: u64 = 0x1d02;

/// HV_X64_MSR_TIME_REF_COUNT (the clock without a TSC page).
pub const HV_TIME_REF_COUNT: u32 = 0x4000_0020;

const VMWARE: Expect = Expect {
    hypervisor: Some("vmware"),
    backend: Some("vmware"),
    owners: Some(VMWARE_OWNS),
    tsc_source: Some("cpuid-0x40000010"),
    interfaces: &[(0x4000_0000, "vmware")],
    counts: &[
        (Metric::Pit, Count::Zero),
        (Metric::Port(0x80), Count::Zero),
    ],
    fewer_than_native: &[
        Metric::Port(0x80),
        Metric::IoNoConsole,
        Metric::TotalNoConsole,
    ],
    ..Expect::PASS
};

const XEN: Expect = Expect {
    hypervisor: Some("xen"),
    backend: Some("xen"),
    owners: Some(XEN_OWNS),
    tsc_source: Some("pvclock"),
    interfaces: &[(0x4000_0000, "xen")],
    counts: &[
        (Metric::Pit, Count::Zero),
        (Metric::Hypercall(XEN_SET_SINGLESHOT_TIMER), Count::NonZero),
        // The exit device gets the verdict before SCHEDOP_shutdown, which
        // is then never reached (issue 11, item 5).
        (Metric::Hypercall(XEN_SCHED_SHUTDOWN), Count::Zero),
        (Metric::Port(0x80), Count::Zero),
    ],
    fewer_than_native: &[Metric::TotalNoConsole, Metric::Pit, Metric::IoNoConsole],
    ..Expect::PASS
};

const HYPERV: Expect = Expect {
    hypervisor: Some("hyperv"),
    backend: Some("hyperv"),
    owners: Some(HYPERV_OWNS),
    tsc_source: Some("hyperv-msr"),
    interfaces: &[(0x4000_0000, "hyperv")],
    counts: &[
        (Metric::Pit, Count::Zero),
        (Metric::Hypercalls, Count::NonZero),
        // The clock reads the TSC page, never the reference counter MSR.
        (Metric::MsrReads(HV_TIME_REF_COUNT), Count::Zero),
    ],
    fewer_than_native: &[Metric::Eoi, Metric::Pit, Metric::TotalNoConsole],
    ..Expect::PASS
};

/// A persona scenario's native pair: same persona, guest `pvops=native`.
pub(super) const fn native_pair(
    name: &'static str,
    description: &'static str,
    persona: &'static str,
    hypervisor: &'static str,
    interfaces: &'static [(u32, &'static str)],
    counts: &'static [(Metric, Count)],
) -> Scenario {
    Scenario {
        name,
        description,
        boot: mv(persona, ""),
        guest_cmdline: "pvops=native",
        expect: Expect {
            hypervisor: Some(hypervisor),
            backend: Some("native"),
            owners: Some(Owners::NATIVE),
            interfaces,
            counts,
            ..Expect::PASS
        },
        ..Scenario::BASE
    }
}

/// One cell of the feature matrix: the example kernel built with
/// `--no-default-features` plus `features`, under `persona`.
const fn matrix(
    name: &'static str,
    description: &'static str,
    features: &'static [&'static str],
    persona: &'static str,
    backend: &'static str,
    owners: Owners,
) -> Scenario {
    Scenario {
        name,
        description,
        boot: mv(persona, ""),
        kernel_features: features,
        no_default_features: true,
        expect: Expect {
            backend: Some(backend),
            owners: Some(owners),
            ..Expect::PASS
        },
        in_default_set: false,
        ..Scenario::BASE
    }
}

macro_rules! matrix {
    ($set:literal [$($feature:literal),*] @ $persona:literal => $backend:literal, $owners:expr) => {
        matrix(
            concat!("matrix:", $set, "@microvisor:", $persona),
            concat!(
                "feature matrix: kernel with ", $set, " under persona ", $persona,
                " boots with backend ", $backend
            ),
            &[$($feature),*],
            $persona,
            $backend,
            $owners,
        )
    };
}

/// Feature sets of the matrix, as (name, features).
pub const MATRIX_FEATURE_SETS: [(&str, &[&str]); 5] = [
    ("no-backends", &[]),
    ("vmware-only", &["vmware"]),
    ("xen-only", &["xen"]),
    ("hyperv-only", &["hyperv"]),
    ("kvm-only", &["kvm"]),
];

/// Personas of the matrix.
pub const MATRIX_PERSONAS: [&str; 6] = [
    "vmware",
    "xen",
    "xen+viridian",
    "hyperv",
    "kvm+hyperv",
    "kvm",
];

const NATIVE_NONE: Expect = Expect {
    hypervisor: Some("none"),
    backend: Some("native"),
    ..Expect::PASS
};

/// A guest the microvisor stopped with `outcome` after its `mv.fault
/// kind=<fault>`: the guest does not complete.
const fn stopped(outcome: ExitCode, fault: &'static str) -> Expect {
    Expect {
        outcome,
        hypervisor: None,
        backend: None,
        guest_completes: false,
        fault: Some(fault),
        ..Expect::PASS
    }
}

/// A microvisor fault case: persona `none`, guest `fault=<case>`.
const FAULT: Scenario = Scenario {
    boot: mv("none", ""),
    expect: NATIVE_NONE,
    ..Scenario::BASE
};

/// Every scenario, in report order: the core table below, then each area's
/// own table (one file per area under `scenario/`).
pub static ALL: std::sync::LazyLock<Vec<Scenario>> = std::sync::LazyLock::new(|| {
    [
        CORE,
        minimal::SCENARIOS,
        microvm::SCENARIOS,
        kvm::SCENARIOS,
        nested::SCENARIOS,
        fixes::SCENARIOS,
        lying::SCENARIOS,
        hostile::SCENARIOS,
        smp::SCENARIOS,
    ]
    .concat()
});

/// The scenarios of QEMU's PC machine (TCG, KVM) and the microvisor's
/// personas and breaks (the fault cases are in `hostile.rs`).
const CORE: &[Scenario] = &[
    Scenario {
        name: "tcg",
        description: "QEMU software emulation, example kernel booted directly",
        expect: Expect {
            hypervisor: Some("qemu-tcg"),
            backend: Some("native"),
            ..Expect::PASS
        },
        ..Scenario::BASE
    },
    Scenario {
        name: "kvm",
        description: "KVM (-cpu host), example kernel booted directly",
        accel: Accel::Kvm,
        // QEMU 7.2 aborts ("failed to set MSR 0x10a") when a nested KVM host
        // (e.g. an AMD EPYC cloud VM) reports IA32_ARCH_CAPABILITIES; the
        // guest does not need that MSR, so it is left out.
        cpu: Some("host,-arch-capabilities"),
        requires: &[Requirement::Kvm],
        expect: Expect {
            hypervisor: Some("kvm"),
            backend: Some("kvm"),
            owners: Some(KVM_OWNS),
            tsc_source: Some("pvclock"),
            interfaces: &[(0x4000_0000, "kvm")],
            ..Expect::PASS
        },
        native_pair: Some("kvm/native"),
        ..Scenario::BASE
    },
    Scenario {
        name: "vmport",
        description: "QEMU software emulation with QEMU's VMware backdoor on (vmport=on): still not VMware",
        qemu_args: &["-machine", "pc,vmport=on"],
        expect: Expect {
            hypervisor: Some("qemu-tcg"),
            backend: Some("native"),
            owners: Some(Owners::NATIVE),
            interfaces: &[(0x4000_0000, "qemu-tcg")],
            ..Expect::PASS
        },
        ..Scenario::BASE
    },
    Scenario {
        name: "kvm-vmware-freq",
        description: "KVM with vmware-cpuid-freq and an explicit tsc-frequency: leaf 0x40000010 under KVM's signature",
        accel: Accel::Kvm,
        // arch-capabilities: see `kvm`. invtsc is required for QEMU to
        // publish 0x40000010; tsc-frequency is found by a dry probe.
        cpu: Some("host,-arch-capabilities,+invtsc,vmware-cpuid-freq=on,tsc-frequency={tsc_hz}"),
        requires: &[Requirement::Kvm, Requirement::KvmTscFrequency],
        // The KVM backend owns the frequency; with the timing leaf inside
        // KVM's block it reports the leaf's whole kHz (the pvclock scale
        // is a rounded fraction; the guest's `@@ kvm pvclock_khz=` shows
        // both agree, checked in tests/tests/kvm.rs).
        expect: Expect {
            hypervisor: Some("kvm"),
            backend: Some("kvm"),
            owners: Some(KVM_OWNS),
            tsc_source: Some("cpuid-0x40000010"),
            tsc_khz: TscKhz::Configured,
            interfaces: &[(0x4000_0000, "kvm")],
            ..Expect::PASS
        },
        ..Scenario::BASE
    },
    Scenario {
        name: "microvisor:none",
        description: "microvisor under TCG, persona none (hypervisor bit clear)",
        boot: mv("none", ""),
        expect: NATIVE_NONE,
        ..Scenario::BASE
    },
    Scenario {
        name: "microvisor:bare",
        description: "microvisor under TCG, persona bare (hypervisor bit, no signature)",
        boot: mv("bare", ""),
        expect: Expect {
            hypervisor: Some("unknown"),
            backend: Some("native"),
            ..Expect::PASS
        },
        ..Scenario::BASE
    },
    // ---- VMware ----------------------------------------------------------
    Scenario {
        name: "microvisor:vmware",
        description: "microvisor persona vmware (VMwareVMware, leaf 0x40000010, backdoor port)",
        boot: mv("vmware", ""),
        expect: VMWARE,
        native_pair: Some("microvisor:vmware/native"),
        ..Scenario::BASE
    },
    native_pair(
        "microvisor:vmware/native",
        "persona vmware, guest forced to pvops=native (pair of microvisor:vmware)",
        "vmware",
        "vmware",
        &[(0x4000_0000, "vmware")],
        &[
            (Metric::Port(0x80), Count::NonZero),
            (Metric::Pit, Count::NonZero),
        ],
    ),
    // ---- Xen -------------------------------------------------------------
    Scenario {
        name: "microvisor:xen",
        description: "microvisor persona xen (XenVMMXenVMM at 0x40000000)",
        boot: mv("xen", ""),
        expect: XEN,
        native_pair: Some("microvisor:xen/native"),
        ..Scenario::BASE
    },
    native_pair(
        "microvisor:xen/native",
        "persona xen, guest forced to pvops=native (pair of microvisor:xen)",
        "xen",
        "xen",
        &[(0x4000_0000, "xen")],
        &[(Metric::Pit, Count::NonZero), (Metric::Hypercalls, Count::Zero)],
    ),
    Scenario {
        name: "microvisor:xen+viridian",
        description: "persona xen+viridian: minimal Hyper-V at 0x40000000, Xen at 0x40000100; Xen wins",
        boot: mv("xen+viridian", ""),
        expect: Expect {
            hypervisor: Some("hyperv"),
            interfaces: &[(0x4000_0000, "hyperv"), (0x4000_0100, "xen")],
            fewer_than_native: &[],
            ..XEN
        },
        ..Scenario::BASE
    },
    Scenario {
        name: "microvisor:xen:break=hypercall-page",
        description: "persona xen, hypercall page never filled: setup error, backend native",
        boot: mv("xen", "break=hypercall-page"),
        expect: Expect {
            hypervisor: Some("xen"),
            backend: Some("native"),
            owners: Some(Owners::NATIVE),
            tsc_source: Some("pit-calibration"),
            interfaces: &[(0x4000_0000, "xen")],
            counts: &[(Metric::Pit, Count::NonZero), (Metric::Hypercalls, Count::Zero)],
            logged: &["backend 'xen' setup failed (hypercall page: the hypervisor did not fill the page)"],
            ..Expect::PASS
        },
        ..Scenario::BASE
    },
    Scenario {
        name: "microvisor:xen:break=shared-info",
        description: "persona xen, XENMEM_add_to_physmap fails: hypercall-based entries only, clock and timer native",
        boot: mv("xen", "break=shared-info"),
        expect: Expect {
            logged: &["xen: shared_info: hypervisor answered -EINVAL; clock, timer and idle stay native"],
            ..XEN_WITHOUT_SHARED_INFO
        },
        ..Scenario::BASE
    },
    Scenario {
        name: "microvisor:xen:break=pvclock-odd",
        description: "persona xen, pvclock version stuck odd: clock and timer native",
        boot: mv("xen", "break=pvclock-odd"),
        expect: Expect {
            logged: &["xen: pvclock: version stuck odd; clock, timer and idle stay native"],
            ..XEN_WITHOUT_SHARED_INFO
        },
        ..Scenario::BASE
    },
    Scenario {
        name: "microvisor:xen:break=evtchn",
        description: "persona xen, EVTCHNOP_bind_virq fails: pvclock kept, timer native",
        boot: mv("xen", "break=evtchn"),
        expect: Expect {
            owners: Some(XEN_NO_TIMER),
            counts: &[
                (Metric::Pit, Count::Zero),
                (Metric::Hypercall(XEN_SET_SINGLESHOT_TIMER), Count::Zero),
                // The exit device gets the verdict before SCHEDOP_shutdown, which
        // is then never reached (issue 11, item 5).
        (Metric::Hypercall(XEN_SCHED_SHUTDOWN), Count::Zero),
            ],
            fewer_than_native: &[],
            logged: &["xen: event channel: EVTCHNOP_bind_virq(VIRQ_TIMER) failed; the one-shot timer stays native"],
            ..XEN
        },
        ..Scenario::BASE
    },
    // ---- Hyper-V ---------------------------------------------------------
    Scenario {
        name: "microvisor:hyperv",
        description: "microvisor persona hyperv (Microsoft Hv, Hv#1)",
        boot: mv("hyperv", ""),
        expect: HYPERV,
        native_pair: Some("microvisor:hyperv/native"),
        ..Scenario::BASE
    },
    native_pair(
        "microvisor:hyperv/native",
        "persona hyperv, guest forced to pvops=native (pair of microvisor:hyperv)",
        "hyperv",
        "hyperv",
        &[(0x4000_0000, "hyperv")],
        &[(Metric::Eoi, Count::NonZero), (Metric::Hypercalls, Count::Zero)],
    ),
    Scenario {
        name: "microvisor:kvm+hyperv",
        description: "persona kvm+hyperv: Hyper-V at 0x40000000, KVMKVMKVM at 0x40000100 with kvmclock, PV EOI, steal time: kvm wins",
        boot: mv("kvm+hyperv", ""),
        expect: Expect {
            hypervisor: Some("hyperv"),
            interfaces: &[(0x4000_0000, "hyperv"), (0x4000_0100, "kvm")],
            fewer_than_native: &[],
            ..kvm::KVM_PERSONA
        },
        ..Scenario::BASE
    },
    Scenario {
        name: "microvisor:hyperv:break=hypercall-page",
        description: "persona hyperv, hypercall page not overlaid: flush and IPI entries native",
        boot: mv("hyperv", "break=hypercall-page"),
        expect: Expect {
            owners: Some(HYPERV_NO_HYPERCALLS),
            counts: &[
                (Metric::Pit, Count::Zero),
                (Metric::Hypercalls, Count::Zero),
                (Metric::MsrReads(HV_TIME_REF_COUNT), Count::Zero),
            ],
            fewer_than_native: &[],
            logged: &["hyperv: mmu.flush_remote stays native: hypercall page not overlaid (still zero)"],
            ..HYPERV
        },
        ..Scenario::BASE
    },
    Scenario {
        name: "microvisor:hyperv:break=tsc-page",
        description: "persona hyperv, TSC page sequence 0: clock from the reference counter MSR",
        boot: mv("hyperv", "break=tsc-page"),
        expect: Expect {
            counts: &[
                (Metric::Pit, Count::Zero),
                (Metric::MsrReads(HV_TIME_REF_COUNT), Count::NonZero),
            ],
            fewer_than_native: &[],
            logged: &[
                "hyperv: TSC page sequence 0 at set-up; reads use the MSR until it is valid",
                // No valid page vouches for the frequency MSR: it is
                // cross-checked against the reference counter, and right.
                "hyperv: HV_X64_MSR_TSC_FREQUENCY (",
                "agrees with the reference counter (no valid TSC page)",
            ],
            ..HYPERV
        },
        ..Scenario::BASE
    },
    Scenario {
        name: "microvisor:hyperv:break=hypercall-error",
        description: "persona hyperv, hypercalls fail: flush native (its probe fails), IPIs owned and falling back per call",
        boot: mv("hyperv", "break=hypercall-error"),
        expect: Expect {
            owners: Some(HYPERV_HYPERCALLS_FAIL),
            counts: &[
                (Metric::Pit, Count::Zero),
                (Metric::Hypercalls, Count::NonZero),
                (Metric::MsrReads(HV_TIME_REF_COUNT), Count::Zero),
            ],
            fewer_than_native: &[],
            logged: &[
                "hyperv: mmu.flush_remote stays native: probe hypercall returned an error",
                "hyperv: synthetic cluster IPI hypercall failed (ACCESS_DENIED); using the native path",
            ],
            ..HYPERV
        },
        ..Scenario::BASE
    },
    // ---- feature matrix (not in the default set) -------------------------
    matrix!("no-backends" [] @ "vmware" => "native", Owners::NATIVE),
    matrix!("no-backends" [] @ "xen" => "native", Owners::NATIVE),
    matrix!("no-backends" [] @ "xen+viridian" => "native", Owners::NATIVE),
    matrix!("no-backends" [] @ "hyperv" => "native", Owners::NATIVE),
    matrix!("no-backends" [] @ "kvm+hyperv" => "native", Owners::NATIVE),
    matrix!("vmware-only" ["vmware"] @ "vmware" => "vmware", VMWARE_OWNS),
    matrix!("vmware-only" ["vmware"] @ "xen" => "native", Owners::NATIVE),
    matrix!("vmware-only" ["vmware"] @ "xen+viridian" => "native", Owners::NATIVE),
    matrix!("vmware-only" ["vmware"] @ "hyperv" => "native", Owners::NATIVE),
    matrix!("vmware-only" ["vmware"] @ "kvm+hyperv" => "native", Owners::NATIVE),
    matrix!("xen-only" ["xen"] @ "vmware" => "native", Owners::NATIVE),
    matrix!("xen-only" ["xen"] @ "xen" => "xen", XEN_OWNS),
    matrix!("xen-only" ["xen"] @ "xen+viridian" => "xen", XEN_OWNS),
    matrix!("xen-only" ["xen"] @ "hyperv" => "native", Owners::NATIVE),
    matrix!("xen-only" ["xen"] @ "kvm+hyperv" => "native", Owners::NATIVE),
    matrix!("hyperv-only" ["hyperv"] @ "vmware" => "native", Owners::NATIVE),
    matrix!("hyperv-only" ["hyperv"] @ "xen" => "native", Owners::NATIVE),
    // Xen's Viridian "base" group: the Hyper-V backend detects, and after
    // its guest OS ID (bits 47:40 >= 4) Xen publishes the MSR-based APIC
    // recommendation, so the EOI goes through HV_X64_MSR_EOI (review F8).
    matrix!("hyperv-only" ["hyperv"] @ "xen+viridian" => "hyperv", VIRIDIAN_OWNS),
    matrix!("hyperv-only" ["hyperv"] @ "hyperv" => "hyperv", HYPERV_OWNS),
    matrix!("hyperv-only" ["hyperv"] @ "kvm+hyperv" => "hyperv", HYPERV_OWNS),
    matrix!("no-backends" [] @ "kvm" => "native", Owners::NATIVE),
    matrix!("vmware-only" ["vmware"] @ "kvm" => "native", Owners::NATIVE),
    matrix!("xen-only" ["xen"] @ "kvm" => "native", Owners::NATIVE),
    matrix!("hyperv-only" ["hyperv"] @ "kvm" => "native", Owners::NATIVE),
    matrix!("kvm-only" ["kvm"] @ "vmware" => "native", Owners::NATIVE),
    matrix!("kvm-only" ["kvm"] @ "xen" => "native", Owners::NATIVE),
    matrix!("kvm-only" ["kvm"] @ "xen+viridian" => "native", Owners::NATIVE),
    matrix!("kvm-only" ["kvm"] @ "hyperv" => "native", Owners::NATIVE),
    matrix!("kvm-only" ["kvm"] @ "kvm+hyperv" => "kvm", KVM_OWNS),
    matrix!("kvm-only" ["kvm"] @ "kvm" => "kvm", KVM_OWNS),
    Scenario {
        name: "microvisor:hyperv:fault-panic",
        description: "guest panics under hyperv: the message reaches the hypervisor through the crash MSRs",
        boot: mv("hyperv", ""),
        guest_cmdline: "fault=panic",
        expect: Expect {
            outcome: ExitCode::Fail,
            hypervisor: Some("hyperv"),
            backend: Some("hyperv"),
            guest_completes: false,
            panic: Some(PANIC_MESSAGE),
            crash_report: Some(PANIC_MESSAGE),
            ..Expect::PASS
        },
        ..Scenario::BASE
    },
    Scenario {
        name: "microvisor:xen:fault-panic",
        description: "guest panics under xen: it stops through SCHEDOP_shutdown(crash)",
        boot: mv("xen", ""),
        guest_cmdline: "fault=panic",
        expect: Expect {
            outcome: ExitCode::Fail,
            hypervisor: Some("xen"),
            backend: Some("xen"),
            guest_completes: false,
            panic: Some(PANIC_MESSAGE),
            counts: &[(Metric::Hypercall(XEN_SCHED_SHUTDOWN), Count::NonZero)],
            ..Expect::PASS
        },
        ..Scenario::BASE
    },
    Scenario {
        name: "microvisor:testguest",
        description: "the microvisor's own test guest: hidden hypercalls with exact counts, error codes, vAPIC timers",
        boot: mv("none", ""),
        guest: Guest::MicrovisorTestGuest,
        expect: TESTGUEST,
        ..Scenario::BASE
    },
    Scenario {
        name: "microvisor:testguest@bare",
        description: "the test guest under bare: a microvisor-magic VMMCALL before the interface is open is the persona's (-1)",
        boot: mv("bare", ""),
        guest: Guest::MicrovisorTestGuest,
        expect: TESTGUEST,
        ..Scenario::BASE
    },
];

/// The scenario called `name`.
pub fn find(name: &str) -> Option<&'static Scenario> {
    ALL.iter().find(|s| s.name == name)
}

/// Resolves command-line names: exact names, or patterns ending in `*`
/// (`microvisor:*`). No names = the default set. Unknown names are
/// returned as the error, listing what exists.
pub fn select(names: &[String]) -> Result<Vec<&'static Scenario>, String> {
    if names.is_empty() {
        return Ok(ALL.iter().filter(|s| s.in_default_set).collect());
    }
    let mut out: Vec<&'static Scenario> = Vec::new();
    for name in names {
        let matched: Vec<&'static Scenario> = match name.strip_suffix('*') {
            Some(prefix) => ALL.iter().filter(|s| s.name.starts_with(prefix)).collect(),
            None => find(name).into_iter().collect(),
        };
        if matched.is_empty() {
            let known: Vec<&str> = ALL.iter().map(|s| s.name).collect();
            return Err(format!(
                "unknown scenario '{name}'; known: {}",
                known.join(", ")
            ));
        }
        for s in matched {
            if !out.iter().any(|o| o.name == s.name) {
                out.push(s);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_nonempty() {
        for (i, a) in ALL.iter().enumerate() {
            assert!(!a.name.is_empty() && !a.description.is_empty());
            assert!(
                ALL[i + 1..].iter().all(|b| b.name != a.name),
                "duplicate {}",
                a.name
            );
        }
    }

    #[test]
    fn append_strings() {
        assert_eq!(find("tcg").unwrap().append(""), "");
        assert_eq!(find("tcg").unwrap().append("dump=cpuid"), "dump=cpuid");
        assert_eq!(
            find("microvisor:bare").unwrap().append(""),
            "persona=bare --"
        );
        assert_eq!(
            find("microvisor:fault-hang").unwrap().append(""),
            "persona=none watchdog_ms=3000 -- fault=hang"
        );
        assert_eq!(
            find("microvisor:fault-bad-msr")
                .unwrap()
                .append("dump=cpuid"),
            "persona=none -- fault=bad-msr dump=cpuid"
        );
    }

    #[test]
    fn persona_hypercalls_exclude_the_microvisors_own() {
        let r = crate::parse::BootResult::parse(
            "@@ mv.hypercall code=0x4d56000000000001 count=2\n@@ mv.hypercall code=0x1808 count=5\n@@ mv.hypercall code=0x2 count=1\n",
        );
        let e = r.exits().unwrap();
        assert_eq!(Metric::Hypercalls.of(e), 6);
        assert_eq!(Metric::Hypercall(0x1808).of(e), 5);
        assert!(Count::AtLeast(6).holds(6) && !Count::AtLeast(7).holds(6));
        assert!(Count::AtMost(6).holds(6) && !Count::AtMost(5).holds(6));
        assert!(Count::Zero.holds(0) && !Count::NonZero.holds(0));
    }

    #[test]
    fn selection() {
        let default = select(&[]).unwrap();
        assert!(default.iter().any(|s| s.name == "microvisor:none"));
        let mv = select(&["microvisor:*".into(), "microvisor:bare".into()]).unwrap();
        assert!(mv.iter().all(|s| s.uses_microvisor()));
        assert_eq!(mv.iter().filter(|s| s.name == "microvisor:bare").count(), 1);
        let err = select(&["nope".into()]).unwrap_err();
        assert!(err.contains("nope") && err.contains("tcg"));
        assert!(select(&["kvm".into()]).unwrap()[0]
            .cpu_model()
            .starts_with("host"));
    }
}
