//! Boots the pvops kernels in QEMU scenarios and checks what they report.
//!
//! The pieces, in the order a run uses them:
//! - [`scenario`]: the declarative table of scenarios and expectations;
//! - [`build`]: builds the example kernel and the microvisor (once per process);
//! - [`qemu`](mod@qemu): finds (or installs) QEMU and builds its command line;
//! - [`run`]: runs QEMU with a timeout, at most one instance per CPU;
//! - [`qmp`]: reads KVM's own exit counters from QEMU (`query-stats`);
//! - [`parse`]: turns the `@@` serial records into a [`parse::BootResult`];
//! - [`verdict`]: compares the result with the scenario's expectations;
//! - [`report`]: the table and the JSON lines;
//! - [`dispatch`]: the call-site dispatch records and benchmark table;
//! - [`probe_dump`]: decodes a `cpuid -r` dump like the guest's probe would.
//!
//! [`run_scenario`] does all of it for one scenario; the integration tests in
//! `tests/` call it once per scenario.
#![forbid(unsafe_code)]

pub mod build;
pub mod card;
pub mod dispatch;
pub mod nested;
pub mod parse;
pub mod probe_dump;
pub mod qemu;
pub mod qmp;
pub mod report;
pub mod run;
pub mod scenario;
pub mod smp_bench;
pub mod toolchain;
pub mod verdict;

use std::sync::OnceLock;
use std::time::Duration;

use parse::BootResult;
use parse::KvmCounters;
use run::RawRun;
use scenario::{Accel, Requirement, Scenario};

/// How to run a scenario.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// Print every serial line (to stderr, prefixed with the scenario name)
    /// as it arrives.
    pub stream_serial: bool,
    /// Overrides the scenario's timeout.
    pub timeout: Option<Duration>,
    /// Words appended to the guest's command line (e.g. `dump=cpuid`).
    pub extra_guest_cmdline: String,
}

/// What the runner decided at run time for a scenario.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Resolved {
    /// The TSC frequency given to QEMU (`tsc-frequency=`), in Hz, for a
    /// scenario with [`Requirement::KvmTscFrequency`].
    pub tsc_hz: Option<u64>,
}

/// How a scenario ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// Booted and met every expectation.
    Pass,
    /// Booted (or tried to) and something was wrong.
    Fail,
    /// Not run: the host lacks a requirement.
    Skip,
}

impl Status {
    /// Lower-case name.
    pub const fn name(self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::Fail => "fail",
            Status::Skip => "skip",
        }
    }
}

/// Everything known about one scenario's run.
#[derive(Clone, Debug)]
pub struct ScenarioReport {
    /// The scenario.
    pub scenario: &'static Scenario,
    /// Why it was skipped, if it was.
    pub skipped: Option<String>,
    /// The QEMU process, when it ran.
    pub raw: Option<RawRun>,
    /// The parsed serial records (empty when it did not run).
    pub result: BootResult,
    /// What went wrong (build errors, QEMU errors, unmet expectations).
    pub failures: Vec<String>,
    /// Run-time decisions (configured TSC frequency).
    pub resolved: Resolved,
    /// What the reader should know besides pass/fail: reruns of a flaky
    /// setup (`rerun: ...`), known failures, expectations that another
    /// issue will flip.
    pub notes: Vec<String>,
}

impl ScenarioReport {
    /// Pass, fail or skip.
    pub fn status(&self) -> Status {
        if self.skipped.is_some() {
            Status::Skip
        } else if self.failures.is_empty() && self.raw.is_some() {
            Status::Pass
        } else {
            Status::Fail
        }
    }

    /// Whether the scenario passed.
    pub fn passed(&self) -> bool {
        self.status() == Status::Pass
    }

    /// The QEMU exit status, when QEMU ran and exited.
    pub fn exit_status(&self) -> Option<i32> {
        self.raw.as_ref().and_then(|r| r.status)
    }

    /// A report for a run QEMU completed, judged against the scenario's
    /// expectations (and, with `bench`, the benchmark records' structure).
    fn judged(
        scenario: &'static Scenario,
        raw: RawRun,
        result: BootResult,
        resolved: Resolved,
        bench: bool,
    ) -> ScenarioReport {
        let mut failures = verdict::judge(scenario, &raw, &result, &resolved);
        if bench {
            failures.extend(verdict::bench_failures(&result));
        }
        ScenarioReport {
            scenario,
            skipped: None,
            raw: Some(raw),
            result,
            failures,
            resolved,
            notes: Vec::new(),
        }
    }

    pub(crate) fn failed(scenario: &'static Scenario, why: String) -> ScenarioReport {
        ScenarioReport {
            scenario,
            skipped: None,
            raw: None,
            result: BootResult::default(),
            failures: vec![why],
            resolved: Resolved::default(),
            notes: Vec::new(),
        }
    }

    /// A report for a scenario that was not run, with the reason.
    pub fn skipped(scenario: &'static Scenario, why: String) -> ScenarioReport {
        ScenarioReport {
            scenario,
            skipped: Some(why),
            raw: None,
            result: BootResult::default(),
            failures: Vec::new(),
            resolved: Resolved::default(),
            notes: Vec::new(),
        }
    }
}

/// QEMU, found (or installed) once per process.
pub fn qemu() -> Result<&'static qemu::Qemu, String> {
    static QEMU: OnceLock<Result<qemu::Qemu, String>> = OnceLock::new();
    QEMU.get_or_init(qemu::ensure)
        .as_ref()
        .map_err(Clone::clone)
}

/// Why `scenario` cannot run on this host, if it cannot.
pub fn unmet_requirement(scenario: &Scenario) -> Option<String> {
    resolve(scenario).err()
}

/// Checks `scenario`'s requirements and makes its run-time decisions;
/// the error says why it cannot run here.
pub fn resolve(scenario: &Scenario) -> Result<Resolved, String> {
    let mut resolved = Resolved::default();
    for r in scenario.requires {
        match r {
            Requirement::Kvm => qemu::kvm_usable()?,
            Requirement::HostSvm => qemu::host_svm()?,
            Requirement::NestedImage => nested::image::available()?,
            Requirement::KvmTscFrequency => {
                let q = qemu()?;
                resolved.tsc_hz = Some(qemu::kvm_tsc_hz(q, scenario)?);
            }
        }
    }
    Ok(resolved)
}

/// Builds what `scenario` needs, boots it and judges the result. Never
/// panics on a guest or host problem: those become failures in the report.
///
/// A run that failed only because the guest found every PIT calibration
/// sample disturbed (its vCPU was descheduled during each: a host loaded
/// beyond its cores) is booted again, at most [`PIT_RERUNS`] times, with a
/// `rerun:` note: the guest was right to report no frequency, but the
/// scenario is about something else.
pub fn run_scenario(scenario: &'static Scenario, opts: &RunOptions) -> ScenarioReport {
    let mut notes = Vec::new();
    let mut report = run_scenario_once(scenario, opts);
    while notes.len() < PIT_RERUNS && pit_disturbed_only(&report) {
        notes.push(format!(
            "rerun: every PIT calibration sample was disturbed (host load), attempt {}",
            notes.len() + 2
        ));
        report = run_scenario_once(scenario, opts);
    }
    notes.append(&mut report.notes);
    report.notes = notes;
    report
}

/// Reruns of a run whose PIT calibration was disturbed.
pub const PIT_RERUNS: usize = 4;

/// Whether `report` failed only for want of a TSC frequency, and the guest
/// said it was because every PIT sample was disturbed.
pub fn pit_disturbed_only(report: &ScenarioReport) -> bool {
    let serial = report.raw.as_ref().map_or("", |r| r.serial.as_str());
    !report.failures.is_empty()
        && report
            .failures
            .iter()
            .all(|f| f.contains("no TSC frequency"))
        && serial.contains("PIT calibration samples were disturbed")
}

fn run_scenario_once(scenario: &'static Scenario, opts: &RunOptions) -> ScenarioReport {
    let resolved = match resolve(scenario) {
        Ok(r) => r,
        Err(why) => return ScenarioReport::skipped(scenario, why),
    };
    if let scenario::Boot::Nested(spec) = scenario.boot {
        return nested::run(scenario, spec, opts, resolved);
    }
    let qemu = match qemu() {
        Ok(q) => q,
        Err(e) => return ScenarioReport::failed(scenario, e),
    };
    let images = match build::images(scenario) {
        Ok(i) => i,
        Err(e) => return ScenarioReport::failed(scenario, e),
    };
    let counters = reads_kvm_counters(scenario);
    let qmp_socket = counters.then(qmp::socket_path);
    let mut guest_extra = opts.extra_guest_cmdline.clone();
    if counters {
        guest_extra = format!("{guest_extra} hold").trim().to_string();
    }
    if scenario.accel == Accel::Kvm && !scenario.uses_microvisor() && host_kvm_is_pvm() {
        guest_extra = format!("{guest_extra} {PVM_SWITCH}").trim().to_string();
    }
    let mut args = qemu::args(scenario, &images, &guest_extra, &resolved);
    if let Some(path) = &qmp_socket {
        args.extend(qmp::qemu_args(path).map(Into::into));
    }
    let timeout = opts
        .timeout
        .unwrap_or(Duration::from_secs(scenario.timeout_secs));
    let mut result = BootResult::default();
    let name = scenario.name;
    let stream = opts.stream_serial;
    let mut on_line = |line: &str| {
        if stream {
            eprintln!("[{name}] {line}");
        }
        result.feed(line);
    };
    let mut stats: Option<Result<_, qmp::StatsError>> = None;
    // KVM's total exits at every hold (the report card's brackets); the
    // last reading is the run's.
    let mut hold_exits: Vec<Option<u64>> = Vec::new();
    let turn = run::cpu_turn(scenario.cpus);
    let raw = match &qmp_socket {
        None => run::run_qemu(&qemu.path, &args, timeout, &mut on_line),
        Some(path) => {
            let r = run::run_qemu_held(&qemu.path, &args, timeout, &mut on_line, &mut || {
                let s = qmp::read_vcpu_stats(path, qmp::TIMEOUT);
                hold_exits.push(s.as_ref().ok().and_then(|s| s.get("exits").copied()));
                stats = Some(s);
            });
            let _ = std::fs::remove_file(path);
            r
        }
    };
    drop(turn);
    if counters {
        result.kvm = Some(kvm_counters(stats, result.held));
        result.hold_exits = hold_exits;
    }
    match raw {
        Err(e) => ScenarioReport::failed(scenario, e),
        Ok(raw) => {
            let bench = opts
                .extra_guest_cmdline
                .split_whitespace()
                .any(|w| w == "bench");
            ScenarioReport::judged(scenario, raw, result, resolved, bench)
        }
    }
}

/// What the runner adds to the command line of a guest booted directly on
/// this host's KVM when that is `kvm_pvm` ([`host_kvm_is_pvm`]).
pub const PVM_SWITCH: &str = "kvm.hypercalls=off";

/// Whether the host's `/dev/kvm` is `kvm_pvm` (a software KVM: the module
/// is loaded). A KVM hypercall (`KVM_HC_SEND_IPI`) from the example
/// kernel never returned there (the vCPU hung for good), so guests booted
/// on it get [`PVM_SWITCH`]: the kvm backend then makes no hypercall and
/// keeps PV IPIs and PV spinlock kicks native. The nested KVM peers
/// (hardware-style `kvm_amd` in L1) get no switch.
pub fn host_kvm_is_pvm() -> bool {
    std::path::Path::new("/sys/module/kvm_pvm").exists()
}

/// Whether the runner reads KVM's own counters for `scenario`: every direct
/// boot under `-accel kvm` (under the microvisor, its own counters are
/// used).
pub fn reads_kvm_counters(scenario: &Scenario) -> bool {
    scenario.accel == Accel::Kvm && !scenario.uses_microvisor()
}

/// What a KVM run's counters were: read, or why not.
fn kvm_counters(
    stats: Option<Result<std::collections::BTreeMap<String, u64>, qmp::StatsError>>,
    held: bool,
) -> KvmCounters {
    match stats {
        Some(Ok(s)) => KvmCounters::Read(parse::Exits::from_kvm_stats(&s)),
        Some(Err(qmp::StatsError::Unavailable(reason))) => KvmCounters::Unavailable {
            reason,
            failure: false,
        },
        Some(Err(qmp::StatsError::Failed(reason))) => KvmCounters::Unavailable {
            reason,
            failure: true,
        },
        // The guest stopped (panic, fault, timeout) before its last record:
        // what that means is judged from its records, not from here.
        None => KvmCounters::Unavailable {
            reason: if held {
                "the guest held but the counters were not read".to_string()
            } else {
                "the guest never reached `@@ hold`, so QEMU ended before the counters could be read"
                    .to_string()
            },
            failure: held,
        },
    }
}

/// Boots `scenario` with `dump=cpuid` and returns the guest's CPUID dump in
/// `cpuid -r` format (one `CPU 0:` block).
pub fn record_cpuid(scenario: &'static Scenario) -> Result<String, String> {
    let opts = RunOptions {
        extra_guest_cmdline: "dump=cpuid".to_string(),
        ..RunOptions::default()
    };
    let report = run_scenario(scenario, &opts);
    if let Some(why) = &report.skipped {
        return Err(format!("{} skipped: {why}", scenario.name));
    }
    if report.raw.is_none() {
        return Err(report.failures.join("; "));
    }
    let lines = &report.result.cpuid_lines;
    if !lines.iter().any(|l| l.starts_with("0x")) {
        return Err(format!(
            "{} printed no @@cpuid line with dump=cpuid (status {})",
            scenario.name,
            verdict::status_name(report.exit_status())
        ));
    }
    dump_text(scenario.name, lines)
}

/// Assembles `@@cpuid` lines into a `cpuid -r` file: a comment naming the
/// scenario, a `CPU 0:` header unless the guest printed one, and the leaf
/// lines indented as the tool does. Errors when the result does not parse.
pub fn dump_text(scenario: &str, lines: &[String]) -> Result<String, String> {
    let mut text =
        format!("# CPUID of the guest in scenario {scenario} (qemu-runner record-cpuid)\n");
    if !lines.iter().any(|l| l.starts_with("CPU")) {
        text.push_str("CPU 0:\n");
    }
    for l in lines {
        if !l.starts_with("CPU") {
            text.push_str("   ");
        }
        text.push_str(l);
        text.push('\n');
    }
    pvops_probe::dump::Dump::parse(&text)
        .map_err(|e| format!("the recorded dump does not parse: {e}"))?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dump_text_headers() {
        let leaf = "0x00000000 0x00: eax=0x0000000d ebx=0x68747541 ecx=0x444d4163 edx=0x69746e65";
        for lines in [
            vec![leaf.to_string()],
            vec!["CPU 0:".to_string(), leaf.to_string()],
        ] {
            let text = dump_text("tcg", &lines).unwrap();
            assert_eq!(text.matches("CPU 0:").count(), 1, "{text}");
            let d = pvops_probe::dump::Dump::parse(&text).unwrap();
            assert_eq!(d.len(), 1);
            assert_eq!(pvops_probe::CpuidSource::cpuid(&d, 0, 0).eax, 0xd);
        }
        assert!(dump_text("tcg", &["CPU 0:".to_string()]).is_err());
    }
}
