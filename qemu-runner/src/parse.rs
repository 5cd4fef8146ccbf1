//! Parsing the `@@` serial records (see `pvops_abi::report`) into a
//! [`BootResult`].

use std::collections::BTreeMap;

use pvops_abi::report::{decode_into, PREFIX};

/// One record: its kind and decoded `key=value` fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// Record kind, such as `selftest` or `mv.exit`.
    pub kind: String,
    /// Decoded fields, in line order.
    pub fields: Vec<(String, String)>,
}

impl Record {
    /// The value of field `key`, if present.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// What one serial line is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Line {
    /// A structured record.
    Record(Record),
    /// A `@@cpuid` line: the rest is one line in `cpuid -r` format.
    Cpuid(String),
    /// A line starting with `@@` that does not parse (kept for reports).
    Malformed(String),
    /// Human text.
    Text,
}

/// Classifies and parses one serial line.
pub fn parse_line(line: &str) -> Line {
    let line = line.trim_matches(|c: char| c.is_whitespace() || c == '\0');
    let Some(rest) = line.strip_prefix(PREFIX) else {
        return Line::Text;
    };
    let rest = rest.trim_start();
    if let Some(cpuid) = rest.strip_prefix("cpuid") {
        if cpuid.starts_with(char::is_whitespace) {
            return Line::Cpuid(cpuid.trim().to_string());
        }
    }
    let mut words = rest.split_whitespace();
    let Some(kind) = words.next() else {
        return Line::Malformed(line.to_string());
    };
    if kind.contains('=') {
        return Line::Malformed(line.to_string());
    }
    let mut fields = Vec::new();
    for word in words {
        let Some((k, v)) = word.split_once('=') else {
            return Line::Malformed(line.to_string());
        };
        let mut buf = vec![0u8; v.len()];
        let Some(bytes) = decode_into(v, &mut buf) else {
            return Line::Malformed(line.to_string());
        };
        fields.push((k.to_string(), String::from_utf8_lossy(bytes).into_owned()));
    }
    Line::Record(Record {
        kind: kind.to_string(),
        fields,
    })
}

/// Parses a number written in decimal or with a `0x` prefix.
pub fn parse_u64(s: &str) -> Option<u64> {
    let s = s.trim();
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    }
}

/// A `cpu` record.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CpuInfo {
    /// Vendor string.
    pub vendor: String,
    /// Display family.
    pub family: u64,
    /// Display model.
    pub model: u64,
    /// Stepping.
    pub stepping: u64,
    /// Feature names.
    pub features: Vec<String>,
}

/// An `interface` record.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Interface {
    /// Base leaf.
    pub base: u64,
    /// Signature as printed.
    pub signature: String,
    /// Kind name (`kvm`, `qemu-tcg`, `unknown`, ...).
    pub kind: String,
    /// Highest leaf.
    pub max_leaf: u64,
}

/// A `selftest` record.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SelfTest {
    /// Whether it passed.
    pub pass: bool,
    /// `result=unsupported`: the machine lacks what the test needs (neither
    /// passed nor failed; `pass` is false).
    pub unsupported: bool,
    /// The detail text.
    pub detail: String,
}

/// The `done` record.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Done {
    /// Self-tests passed.
    pub passed: u64,
    /// Self-tests run.
    pub total: u64,
    /// Self-tests reported unsupported (0 when the field is absent).
    pub unsupported: u64,
    /// `pass` or `fail`.
    pub verdict: String,
}

/// MSR access counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MsrCount {
    /// RDMSR exits.
    pub reads: u64,
    /// WRMSR exits.
    pub writes: u64,
}

/// The microvisor's exit counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Exits {
    /// `mv.total count=` (or the sum of reasons when absent).
    pub total: u64,
    /// Exits by reason name.
    pub reasons: BTreeMap<String, u64>,
    /// Accesses by MSR index.
    pub msrs: BTreeMap<u32, MsrCount>,
    /// Exits by I/O port.
    pub ports: BTreeMap<u16, u64>,
    /// Persona hypercalls by code.
    pub hypercalls: BTreeMap<u64, u64>,
}

/// I/O ports of the legacy PIT: channels 0-2, the mode register, and
/// port 0x61 (channel 2 gate and output).
pub const PIT_PORTS: [u16; 5] = [0x40, 0x41, 0x42, 0x43, 0x61];

impl Exits {
    /// Exits at the PIT's ports.
    pub fn pit(&self) -> u64 {
        PIT_PORTS
            .iter()
            .map(|p| self.ports.get(p).copied().unwrap_or(0))
            .sum()
    }

    /// Exits counted for reason `name` (case-insensitive); a few common
    /// aliases are accepted (`cpuid` = SVM exit code 0x72, `ioio` = `io`).
    pub fn reason(&self, name: &str) -> u64 {
        // `*_exits`: KVM's statistics names (see [`Exits::from_kvm_stats`]).
        let aliases: &[&str] = match name {
            "cpuid" => &["cpuid", "0x72"],
            "io" | "ioio" => &["io", "ioio", "0x7b", "io_exits"],
            "msr" => &["msr", "0x7c"],
            "hlt" | "halt" => &["hlt", "0x78", "halt_exits"],
            "mmio" => &["mmio", "mmio_exits"],
            // KVM's tracepoint names (arch/x86/include/uapi/asm/svm.h
            // SVM_EXIT_REASONS): `hypercall`, `interrupt`, `vintr`.
            "vmmcall" => &["vmmcall", "hypercall", "0x81"],
            "intr" => &["intr", "interrupt", "0x60"],
            "irq_window" | "vintr" => &["irq_window", "irq_window_exits", "vintr", "0x64"],
            "npf" => &["npf", "0x400"],
            "shutdown" => &["shutdown", "0x7f"],
            _ => &[],
        };
        self.reasons
            .iter()
            .filter(|(k, _)| {
                k.eq_ignore_ascii_case(name) || aliases.iter().any(|a| k.eq_ignore_ascii_case(a))
            })
            .map(|(_, v)| *v)
            .sum()
    }

    /// Accesses (reads + writes) of `msr`.
    pub fn msr(&self, msr: u32) -> u64 {
        self.msrs.get(&msr).map_or(0, |c| c.reads + c.writes)
    }

    /// Exits at `port`.
    pub fn port(&self, port: u16) -> u64 {
        self.ports.get(&port).copied().unwrap_or(0)
    }

    /// Exits at the serial console (COM1, ports 0x3f8..=0x3ff).
    pub fn console(&self) -> u64 {
        self.ports.range(CONSOLE_PORTS).map(|(_, n)| *n).sum()
    }

    /// EOI exits: writes of the x2APIC EOI MSR plus writes of the Hyper-V
    /// EOI MSR.
    pub fn eoi(&self) -> u64 {
        EOI_MSRS
            .iter()
            .map(|m| self.msrs.get(m).map_or(0, |c| c.writes))
            .sum()
    }
}

impl Exits {
    /// KVM's per-vCPU statistics (`crate::qmp::read_vcpu_stats`) as exit
    /// counters: `total` is KVM's `exits`, and every statistic is kept
    /// under its KVM name in `reasons` (so `reason("io")` is `io_exits`,
    /// `reason("halt")` is `halt_exits`). KVM counts no ports, MSRs or
    /// hypercall codes, so those maps stay empty.
    pub fn from_kvm_stats(stats: &BTreeMap<String, u64>) -> Exits {
        Exits {
            total: stats.get("exits").copied().unwrap_or(0),
            reasons: stats.clone(),
            ..Exits::default()
        }
    }
}

/// Who counted a run's exits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitCounter {
    /// The microvisor's `mv.*` records.
    Microvisor,
    /// KVM's own per-vCPU statistics, over QMP.
    Kvm,
    /// A counter outside the guest's machine, named in
    /// [`BootResult::counted_exits`] (L1 KVM's tracepoints: `nested-kvm`).
    Outside,
}

impl ExitCounter {
    /// `microvisor` or `kvm` (the JSON's `exit_counter`).
    pub const fn name(self) -> &'static str {
        match self {
            ExitCounter::Microvisor => "microvisor",
            ExitCounter::Kvm => "kvm",
            ExitCounter::Outside => "outside",
        }
    }
}

/// KVM's counters of a run, or why there are none.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KvmCounters {
    /// Read while the guest held after its last record.
    Read(Exits),
    /// Not read; `failure` says whether that fails the scenario (a QMP
    /// error) or only is reported (an old QEMU, a guest that never held).
    Unavailable {
        /// Why.
        reason: String,
        /// Whether the scenario fails because of it.
        failure: bool,
    },
}

/// The serial console's ports (COM1).
pub const CONSOLE_PORTS: core::ops::RangeInclusive<u16> = 0x3f8..=0x3ff;

/// MSRs whose writes are EOIs: x2APIC EOI (0x80b) and HV_X64_MSR_EOI.
pub const EOI_MSRS: [u32; 2] = [0x80b, 0x4000_0070];

/// A `bench` record of the example kernel (`bench` on its command line):
/// one workload, its TSC cycles and, under the microvisor, the exits it
/// caused by class.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Bench {
    /// Workload name (`clock`, `timer`, `self-ipi`, `io-delay`, `tsc-freq`).
    pub name: String,
    /// Iterations run.
    pub iterations: u64,
    /// TSC cycles for all iterations.
    pub cycles: u64,
    /// Exits for all iterations; `None` without the microvisor (`exits=-`).
    pub exits: Option<u64>,
    /// Exits by class (`cpuid`, `msr`, `io`, `hlt`, `vmmcall`, `intr`, ...).
    pub classes: BTreeMap<String, u64>,
    /// Iterations that saw their event (timer tick, IPI), when reported.
    pub completed: Option<u64>,
}

impl Bench {
    /// Decodes a `bench` record; `None` when a required field is missing
    /// or not a number.
    pub fn from_record(rec: &Record) -> Option<Bench> {
        let name = rec.get("name")?.to_string();
        let iterations = rec.get("iterations").and_then(parse_u64)?;
        let cycles = rec.get("cycles").and_then(parse_u64)?;
        let exits = match rec.get("exits")? {
            "-" => None,
            v => Some(parse_u64(v)?),
        };
        let mut classes = BTreeMap::new();
        let mut completed = None;
        for (k, v) in &rec.fields {
            match k.as_str() {
                "name" | "iterations" | "cycles" | "exits" => {}
                "completed" => completed = Some(parse_u64(v)?),
                _ if v == "-" => {}
                _ => {
                    classes.insert(k.clone(), parse_u64(v)?);
                }
            }
        }
        Some(Bench {
            name,
            iterations,
            cycles,
            exits,
            classes,
            completed,
        })
    }

    /// TSC cycles per iteration.
    pub fn cycles_per_iteration(&self) -> f64 {
        self.cycles as f64 / self.iterations.max(1) as f64
    }

    /// Exits per iteration, under the microvisor.
    pub fn exits_per_iteration(&self) -> Option<f64> {
        self.exits.map(|e| e as f64 / self.iterations.max(1) as f64)
    }

    /// Exits of one class (0 when not reported).
    pub fn class(&self, name: &str) -> u64 {
        self.classes.get(name).copied().unwrap_or(0)
    }
}

/// An `mv.fault` record.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Fault {
    /// Fault kind (`triple-fault`, `bad-memory`, `watchdog`, ...).
    pub kind: String,
    /// Detail text.
    pub detail: String,
}

/// An `mv.integrity` record: the microvisor's end-of-run check of the
/// memory no guest may change (docs/hostile-guests.md).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Integrity {
    /// Protected memory regions checked (the VMCB intercepts besides).
    pub regions: u64,
    /// Whether every region and the intercepts were unchanged.
    pub unchanged: bool,
    /// Names of what changed (`none` when nothing did).
    pub changed: String,
}

/// An `mv.end` record.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct End {
    /// Outcome name.
    pub outcome: String,
    /// Exit code written to the debug-exit device.
    pub code: Option<u64>,
}

/// What the microvisor reported.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Microvisor {
    /// `mv.start persona=`.
    pub persona: Option<String>,
    /// Exit counters.
    pub exits: Exits,
    /// Whether an `mv.total` record was seen.
    pub total_seen: bool,
    /// The fault that ended the run, if any.
    pub fault: Option<Fault>,
    /// The crash message a guest handed to the hypervisor (`mv.crash
    /// message=`, Hyper-V's crash MSRs), if any.
    pub crash: Option<String>,
    /// The end-of-run integrity check.
    pub integrity: Option<Integrity>,
    /// The end record.
    pub end: Option<End>,
}

/// Everything a boot reported on the serial console.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BootResult {
    /// `boot kernel=`.
    pub kernel: Option<String>,
    /// `boot cmdline=`.
    pub cmdline: Option<String>,
    /// The `cpu` record.
    pub cpu: Option<CpuInfo>,
    /// `interface` records in order.
    pub interfaces: Vec<Interface>,
    /// `hypervisor name=`.
    pub hypervisor: Option<String>,
    /// `backend name=`.
    pub backend: Option<String>,
    /// `backend reason=`.
    pub backend_reason: Option<String>,
    /// Table entry → owning backend.
    pub owners: BTreeMap<String, String>,
    /// `tsc khz=`.
    pub tsc_khz: Option<u64>,
    /// `tsc source=`.
    pub tsc_source: Option<String>,
    /// Self-tests by name (a later record of the same name wins).
    pub selftests: BTreeMap<String, SelfTest>,
    /// Bench records, in order.
    pub bench: Vec<Bench>,
    /// `dispatch`: the call-site mechanism in force.
    pub dispatch: Option<crate::dispatch::Dispatch>,
    /// `dispatch.entry` records, in table order.
    pub dispatch_entries: Vec<crate::dispatch::DispatchEntry>,
    /// `dispatch-bench` records, in order.
    pub dispatch_bench: Vec<crate::dispatch::DispatchBench>,
    /// The `panic` message, if the guest panicked.
    pub panic: Option<String>,
    /// The `done` record.
    pub done: Option<Done>,
    /// Microvisor records, when any `mv.*` record was seen.
    pub microvisor: Option<Microvisor>,
    /// KVM's own counters (set by the runner from QMP, not from the
    /// serial console), for a direct boot under `-accel kvm`.
    pub kvm: Option<KvmCounters>,
    /// Whether the guest printed `@@ hold` (it waits for the runner).
    pub held: bool,
    /// Exits counted outside the guest by a real hypervisor when no
    /// microvisor counted them: (counter name, counts), e.g. `nested-kvm`
    /// for L1 KVM's tracepoints in a nested run.
    pub counted_exits: Option<(String, Exits)>,
    /// `probe cpuids=`: the CPUIDs the guest's probe executed.
    pub probe_cpuids: Option<u64>,
    /// `card` records (the report card), in order.
    pub card: Vec<crate::card::CardRecord>,
    /// The `card.base` record: the card's empty loop.
    pub card_base: Option<crate::card::Measure>,
    /// `card.end entries=`.
    pub card_end: Option<u64>,
    /// `smpbench` records (the SMP bench), in order.
    pub smp_bench: Vec<crate::smp_bench::SmpBench>,
    /// `smpbench.end records=`.
    pub smp_bench_end: Option<u64>,
    /// `smpbench.steal` records: per CPU, the steal time it saw over the
    /// bench beside the microvisor's account.
    pub smp_steal: Vec<crate::smp_bench::StealAgreement>,
    /// KVM's total exits at each `@@ hold`, in order (`None`: that reading
    /// failed); set by the runner, not from the serial console.
    pub hold_exits: Vec<Option<u64>>,
    /// Exits between each pair of the guest's writes to the report card's
    /// mark port, in order, from an outside counter that sees every exit
    /// (L1 KVM's trace); set by the runner.
    pub marked_exits: Vec<u64>,
    /// `@@cpuid` lines, in order.
    pub cpuid_lines: Vec<String>,
    /// The `smp` record: (CPUs in the MADT, CPUs online).
    pub smp: Option<(u64, u64)>,
    /// `ap` records: each application processor's APIC ID and status.
    pub aps: Vec<(u64, String)>,
    /// `@@` lines that did not parse, and records with bad values.
    pub malformed: Vec<String>,
}

impl BootResult {
    /// Parses a whole serial log.
    pub fn parse(serial: &str) -> BootResult {
        let mut r = BootResult::default();
        for line in serial.lines() {
            r.feed(line);
        }
        r
    }

    /// Number of self-tests that passed.
    pub fn selftests_passed(&self) -> usize {
        self.selftests.values().filter(|t| t.pass).count()
    }

    /// Names of the self-tests reported unsupported.
    pub fn selftests_unsupported(&self) -> Vec<&str> {
        self.selftests
            .iter()
            .filter(|(_, t)| t.unsupported)
            .map(|(n, _)| n.as_str())
            .collect()
    }

    /// The bench result of workload `name`.
    pub fn bench(&self, name: &str) -> Option<&Bench> {
        self.bench.iter().find(|b| b.name == name)
    }

    /// The run's exit counters: the microvisor's (any `mv.*` record), else
    /// KVM's when they were read, else an outside counter's
    /// ([`BootResult::counted_exits`], e.g. L1 KVM's in a nested run).
    pub fn exits(&self) -> Option<&Exits> {
        self.counted().map(|(_, e)| e)
    }

    /// Who counted [`BootResult::exits`]: `microvisor`, `kvm`, or the name
    /// of the outside counter (`nested-kvm`).
    pub fn exit_counter(&self) -> Option<&str> {
        match self.counted()? {
            (ExitCounter::Outside, _) => self.counted_exits.as_ref().map(|(n, _)| n.as_str()),
            (c, _) => Some(c.name()),
        }
    }

    /// Who counted the exits of [`BootResult::exits`], and the counters.
    pub fn counted(&self) -> Option<(ExitCounter, &Exits)> {
        match (&self.microvisor, &self.kvm, &self.counted_exits) {
            (Some(m), _, _) => Some((ExitCounter::Microvisor, &m.exits)),
            (None, Some(KvmCounters::Read(e)), _) => Some((ExitCounter::Kvm, e)),
            (None, _, Some((_, e))) => Some((ExitCounter::Outside, e)),
            _ => None,
        }
    }

    /// Adds one serial line.
    pub fn feed(&mut self, line: &str) {
        match parse_line(line) {
            Line::Text => {}
            Line::Cpuid(l) => self.cpuid_lines.push(l),
            Line::Malformed(l) => self.malformed.push(l),
            Line::Record(rec) => {
                if !self.apply(&rec) {
                    self.malformed.push(line.trim().to_string());
                }
            }
        }
    }

    /// Applies one record; false when a required field is missing or bad.
    fn apply(&mut self, rec: &Record) -> bool {
        let s = |k: &str| rec.get(k).map(str::to_string);
        let n = |k: &str| rec.get(k).and_then(parse_u64);
        match rec.kind.as_str() {
            "boot" => {
                self.kernel = s("kernel");
                self.cmdline = s("cmdline");
            }
            "cpu" => {
                self.cpu = Some(CpuInfo {
                    vendor: s("vendor").unwrap_or_default(),
                    family: n("family").unwrap_or(0),
                    model: n("model").unwrap_or(0),
                    stepping: n("stepping").unwrap_or(0),
                    features: rec
                        .get("features")
                        .unwrap_or("")
                        .split(',')
                        .filter(|f| !f.is_empty())
                        .map(str::to_string)
                        .collect(),
                })
            }
            "smp" => {
                let (Some(cpus), Some(online)) = (n("cpus"), n("online")) else {
                    return false;
                };
                self.smp = Some((cpus, online));
            }
            "ap" => {
                let (Some(apic), Some(status)) = (n("apic"), s("status")) else {
                    return false;
                };
                self.aps.push((apic, status));
            }
            "interface" => {
                let Some(base) = n("base") else { return false };
                self.interfaces.push(Interface {
                    base,
                    signature: s("signature").unwrap_or_default(),
                    kind: s("kind").unwrap_or_default(),
                    max_leaf: n("max_leaf").unwrap_or(base),
                });
            }
            "hypervisor" => {
                let Some(name) = s("name") else { return false };
                self.hypervisor = Some(name);
            }
            "backend" => {
                let Some(name) = s("name") else { return false };
                self.backend = Some(name);
                self.backend_reason = s("reason");
            }
            "owner" => {
                let (Some(entry), Some(backend)) = (s("entry"), s("backend")) else {
                    return false;
                };
                self.owners.insert(entry, backend);
            }
            "tsc" => {
                self.tsc_khz = n("khz");
                self.tsc_source = s("source");
                return self.tsc_khz.is_some();
            }
            "selftest" => {
                let (Some(name), Some(result)) = (s("name"), rec.get("result")) else {
                    return false;
                };
                let (pass, unsupported) = match result {
                    "pass" => (true, false),
                    "fail" => (false, false),
                    "unsupported" => (false, true),
                    _ => return false,
                };
                let detail = s("detail").unwrap_or_default();
                self.selftests.insert(
                    name,
                    SelfTest {
                        pass,
                        unsupported,
                        detail,
                    },
                );
            }
            "bench" => match Bench::from_record(rec) {
                Some(b) => self.bench.push(b),
                None => return false,
            },
            "dispatch" => match crate::dispatch::dispatch(rec) {
                Some(d) => self.dispatch = Some(d),
                None => return false,
            },
            "dispatch.entry" => match crate::dispatch::entry(rec) {
                Some(e) => self.dispatch_entries.push(e),
                None => return false,
            },
            "dispatch-bench" => match crate::dispatch::bench(rec) {
                Some(b) => self.dispatch_bench.push(b),
                None => return false,
            },
            "panic" => self.panic = Some(s("message").unwrap_or_default()),
            "hold" => self.held = true,
            "probe" => match n("cpuids") {
                Some(c) => self.probe_cpuids = Some(c),
                None => return false,
            },
            "card" => match crate::card::CardRecord::from_record(rec) {
                Some(c) => self.card.push(c),
                None => return false,
            },
            "card.base" => match crate::card::base_from_record(rec) {
                Some(b) => self.card_base = Some(b),
                None => return false,
            },
            "smpbench" => match crate::smp_bench::SmpBench::from_record(rec) {
                Some(b) => self.smp_bench.push(b),
                None => return false,
            },
            "smpbench.steal" => match crate::smp_bench::StealAgreement::from_record(rec) {
                Some(s) => self.smp_steal.push(s),
                None => return false,
            },
            "smpbench.end" => match n("records") {
                Some(e) => self.smp_bench_end = Some(e),
                None => return false,
            },
            "card.end" => match n("entries") {
                Some(e) => self.card_end = Some(e),
                None => return false,
            },
            "done" => {
                self.done = Some(Done {
                    passed: n("passed").unwrap_or(0),
                    total: n("total").unwrap_or(0),
                    unsupported: n("unsupported").unwrap_or(0),
                    verdict: s("verdict").unwrap_or_default(),
                })
            }
            kind if kind.starts_with("mv.") => return self.apply_mv(rec),
            // Unknown kinds are for later protocol versions: ignore.
            _ => {}
        }
        true
    }

    fn apply_mv(&mut self, rec: &Record) -> bool {
        let mv = self.microvisor.get_or_insert_with(Microvisor::default);
        let n = |k: &str| rec.get(k).and_then(parse_u64);
        match rec.kind.as_str() {
            "mv.start" => mv.persona = rec.get("persona").map(str::to_string),
            "mv.exit" => {
                let (Some(reason), Some(count)) = (rec.get("reason"), n("count")) else {
                    return false;
                };
                *mv.exits.reasons.entry(reason.to_string()).or_insert(0) += count;
                if !mv.total_seen {
                    mv.exits.total = mv.exits.reasons.values().sum();
                }
            }
            "mv.msr" => {
                let Some(msr) = n("msr").and_then(|m| u32::try_from(m).ok()) else {
                    return false;
                };
                let c = mv.exits.msrs.entry(msr).or_default();
                c.reads += n("reads").unwrap_or(0);
                c.writes += n("writes").unwrap_or(0);
            }
            "mv.port" => {
                let (Some(port), Some(count)) =
                    (n("port").and_then(|p| u16::try_from(p).ok()), n("count"))
                else {
                    return false;
                };
                *mv.exits.ports.entry(port).or_insert(0) += count;
            }
            "mv.hypercall" => {
                let (Some(code), Some(count)) = (n("code"), n("count")) else {
                    return false;
                };
                *mv.exits.hypercalls.entry(code).or_insert(0) += count;
            }
            "mv.total" => {
                let Some(count) = n("count") else {
                    return false;
                };
                mv.exits.total = count;
                mv.total_seen = true;
            }
            "mv.fault" => {
                mv.fault = Some(Fault {
                    kind: rec.get("kind").unwrap_or_default().to_string(),
                    detail: rec.get("detail").unwrap_or_default().to_string(),
                })
            }
            "mv.crash" => mv.crash = Some(rec.get("message").unwrap_or_default().to_string()),
            "mv.integrity" => {
                let Some(unchanged) = rec.get("unchanged").and_then(|v| v.parse::<bool>().ok())
                else {
                    return false;
                };
                mv.integrity = Some(Integrity {
                    regions: n("regions").unwrap_or(0),
                    unchanged,
                    changed: rec.get("changed").unwrap_or_default().to_string(),
                })
            }
            "mv.end" => {
                mv.end = Some(End {
                    outcome: rec.get("outcome").unwrap_or_default().to_string(),
                    code: n("code"),
                })
            }
            _ => {}
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A direct TCG boot as the example kernel prints it.
    pub(crate) const TCG_SAMPLE: &str = "\
SeaBIOS (version 1.16.2)\r
Booting from ROM..\r
example-kernel: hello\r
@@ boot kernel=example-kernel cmdline=\r
@@ cpu vendor=AuthenticAMD family=0x17 model=1 stepping=0 features=x2apic,tsc,apic,hypervisor\r
@@ interface base=0x40000000 signature=TCGTCGTCGTCG kind=qemu-tcg max_leaf=0x40000001\r
@@ hypervisor name=qemu-tcg\r
@@ backend name=native reason=detected:%20native%20hardware%20interfaces\r
@@ owner entry=cpu.cpuid backend=native\r
@@ owner entry=time.monotonic_ns backend=native\r
@@ tsc khz=2999876 source=pit-calibration\r
@@ selftest name=cpu.cpuid result=pass detail=ok\r
@@ selftest name=mmu.flush result=pass detail=\r
@@ selftest name=time.monotonic result=fail detail=went%20backwards\r
@@ done passed=2 total=3 verdict=fail\r
";

    #[test]
    fn direct_boot_sample() {
        let r = BootResult::parse(TCG_SAMPLE);
        assert_eq!(r.kernel.as_deref(), Some("example-kernel"));
        assert_eq!(r.cmdline.as_deref(), Some(""));
        let cpu = r.cpu.as_ref().unwrap();
        assert_eq!((cpu.family, cpu.model), (0x17, 1));
        assert_eq!(cpu.features.len(), 4);
        assert_eq!(r.interfaces.len(), 1);
        assert_eq!(r.interfaces[0].base, 0x4000_0000);
        assert_eq!(r.interfaces[0].kind, "qemu-tcg");
        assert_eq!(r.hypervisor.as_deref(), Some("qemu-tcg"));
        assert_eq!(r.backend.as_deref(), Some("native"));
        assert_eq!(
            r.backend_reason.as_deref(),
            Some("detected: native hardware interfaces")
        );
        assert_eq!(r.owners.len(), 2);
        assert_eq!(r.owners["time.monotonic_ns"], "native");
        assert_eq!(r.tsc_khz, Some(2_999_876));
        assert_eq!(r.tsc_source.as_deref(), Some("pit-calibration"));
        assert_eq!(r.selftests.len(), 3);
        assert_eq!(r.selftests_passed(), 2);
        assert_eq!(r.selftests["time.monotonic"].detail, "went backwards");
        assert!(!r.selftests["time.monotonic"].pass);
        let done = r.done.as_ref().unwrap();
        assert_eq!(
            (done.passed, done.total, done.verdict.as_str()),
            (2, 3, "fail")
        );
        assert!(r.microvisor.is_none());
        assert!(r.malformed.is_empty(), "{:?}", r.malformed);
    }

    #[test]
    fn microvisor_sample() {
        let serial = "\
@@ mv.start persona=none guest_ram_mib=64
@@ boot kernel=example-kernel cmdline=fault%3Dbad-msr
@@ selftest name=fault.bad-msr result=pass detail=%23GP
@@ mv.exit reason=cpuid count=40
@@ mv.exit reason=ioio count=100
@@ mv.msr msr=0x4fff0000 reads=1 writes=0
@@ mv.msr msr=0xc0000080 reads=2 writes=1
@@ mv.port port=0x40 count=60
@@ mv.port port=0x43 count=2
@@ mv.port port=0x61 count=8
@@ mv.port port=0x3f8 count=30
@@ mv.hypercall code=0x1 count=3
@@ mv.total count=150
@@ mv.end outcome=pass code=0x10
";
        let r = BootResult::parse(serial);
        assert_eq!(r.cmdline.as_deref(), Some("fault=bad-msr"));
        assert_eq!(r.selftests["fault.bad-msr"].detail, "#GP");
        let mv = r.microvisor.as_ref().unwrap();
        assert_eq!(mv.persona.as_deref(), Some("none"));
        assert_eq!(mv.exits.total, 150);
        assert_eq!(mv.exits.reason("cpuid"), 40);
        assert_eq!(mv.exits.reason("io"), 100);
        assert_eq!(mv.exits.msr(0x4fff_0000), 1);
        assert_eq!(mv.exits.msr(0xc000_0080), 3);
        assert_eq!(mv.exits.pit(), 70);
        assert_eq!(mv.exits.port(0x3f8), 30);
        assert_eq!(mv.exits.hypercalls[&1], 3);
        assert_eq!(mv.fault, None);
        let end = mv.end.as_ref().unwrap();
        assert_eq!((end.outcome.as_str(), end.code), ("pass", Some(0x10)));
        assert!(r.malformed.is_empty(), "{:?}", r.malformed);
    }

    #[test]
    fn total_defaults_to_sum_and_svm_codes_alias() {
        let r =
            BootResult::parse("@@ mv.exit reason=0x72 count=5\n@@ mv.exit reason=hlt count=2\n");
        let e = r.exits().unwrap();
        assert_eq!(e.total, 7);
        assert_eq!(e.reason("cpuid"), 5);
        assert_eq!(e.reason("HLT"), 2);
        assert_eq!(e.reason("npf"), 0);
    }

    #[test]
    fn faults_panics_and_malformed_lines() {
        let serial = "\
junk before @@ hypervisor name=ignored
@@ panic message=index%20out%20of%20bounds
@@ mv.fault kind=triple-fault detail=shutdown%20intercept
@@ mv.end outcome=guest-triple-fault code=0x20
@@ selftest name=x result=maybe
@@ selftest name=y
@@ tsc khz=lots source=pit
@@ owner entry=cpu.cpuid
@@ hypervisor name=%G1
@@
@@ =x
@@ future.kind a=1
";
        let r = BootResult::parse(serial);
        assert_eq!(r.hypervisor, None);
        assert_eq!(r.panic.as_deref(), Some("index out of bounds"));
        let mv = r.microvisor.as_ref().unwrap();
        let fault = mv.fault.as_ref().unwrap();
        assert_eq!(fault.kind, "triple-fault");
        assert_eq!(fault.detail, "shutdown intercept");
        assert_eq!(mv.end.as_ref().unwrap().code, Some(0x20));
        assert!(r.selftests.is_empty());
        assert!(r.owners.is_empty());
        assert_eq!(r.malformed.len(), 7, "{:#?}", r.malformed);
    }

    #[test]
    fn cpuid_lines() {
        let serial = "@@cpuid    0x00000000 0x00: eax=0x00000010 ebx=0x68747541 ecx=0x444d4163 edx=0x69746e65\n@@ cpuid 0x40000000 0x00: eax=0x40000001 ebx=0x54474354 ecx=0x43544743 edx=0x47435447\n";
        let r = BootResult::parse(serial);
        assert_eq!(r.cpuid_lines.len(), 2);
        assert!(r.cpuid_lines[0].starts_with("0x00000000 0x00: eax=0x00000010"));
        assert!(r.malformed.is_empty());
    }

    #[test]
    fn bench_records() {
        let serial = "\
@@ bench name=io-delay iterations=1000 cycles=5000000 exits=1000 cpuid=0 msr=0 io=1000 hlt=0 vmmcall=0 intr=0
@@ bench name=timer iterations=100 cycles=9000000 exits=301 cpuid=0 msr=200 io=0 hlt=100 vmmcall=0 intr=1 completed=100
@@ bench name=clock iterations=10000 cycles=300000 exits=- cpuid=- msr=- io=- hlt=- vmmcall=-
@@ bench name=bad iterations=x cycles=1 exits=-
@@ bench name=bad2 iterations=1 cycles=1
";
        let r = BootResult::parse(serial);
        assert_eq!(r.bench.len(), 3);
        let io = r.bench("io-delay").unwrap();
        assert_eq!(
            (io.iterations, io.cycles, io.exits),
            (1000, 5_000_000, Some(1000))
        );
        assert_eq!(io.class("io"), 1000);
        assert_eq!(io.cycles_per_iteration(), 5000.0);
        assert_eq!(io.exits_per_iteration(), Some(1.0));
        let t = r.bench("timer").unwrap();
        assert_eq!(
            (t.class("msr"), t.class("hlt"), t.completed),
            (200, 100, Some(100))
        );
        let c = r.bench("clock").unwrap();
        assert_eq!(c.exits, None);
        assert!(c.classes.is_empty());
        assert_eq!(c.exits_per_iteration(), None);
        assert_eq!(r.malformed.len(), 2, "{:?}", r.malformed);
    }

    #[test]
    fn eoi_exits() {
        let r = BootResult::parse(
            "@@ mv.msr msr=0x80b reads=3 writes=10\n@@ mv.msr msr=0x40000070 reads=0 writes=4\n@@ mv.msr msr=0x830 reads=0 writes=9\n@@ mv.total count=30\n",
        );
        assert_eq!(r.exits().unwrap().eoi(), 14);
    }

    #[test]
    fn numbers() {
        assert_eq!(parse_u64("0x10"), Some(16));
        assert_eq!(parse_u64("10"), Some(10));
        assert_eq!(parse_u64("0xZ"), None);
        assert_eq!(parse_u64(""), None);
    }
}
