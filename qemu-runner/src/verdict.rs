//! Comparing what a run did against what its scenario expects.

use pvops_abi::exit::ExitCode;

use crate::parse::BootResult;
use crate::run::RawRun;
use crate::scenario::{Owners, Scenario, TscKhz};
use crate::Resolved;

/// Whether a log line of `serial` (`[LEVEL] message`, as the boot kit's
/// logger writes them) contains `text`.
pub fn logged(serial: &str, text: &str) -> bool {
    serial
        .lines()
        .any(|l| l.trim_start().starts_with('[') && l.contains(text))
}

/// The `tsc source=` of a guest that found no TSC frequency source.
pub const NO_TSC_SOURCE: &str = "none";

/// Everything wrong with a run; empty = the scenario passed.
/// `resolved` holds what the runner decided at run time (the configured
/// TSC frequency).
pub fn judge(
    scenario: &Scenario,
    raw: &RawRun,
    r: &BootResult,
    resolved: &Resolved,
) -> Vec<String> {
    let mut f = Vec::new();
    let expect = &scenario.expect;

    if raw.timed_out {
        f.push(format!(
            "timeout: no exit after {:.0} s (last serial line: {:?})",
            raw.duration.as_secs_f64(),
            raw.serial
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("")
        ));
    } else {
        match raw.status {
            None => f.push(format!(
                "QEMU was killed by signal {}: {}",
                raw.signal.map_or("?".to_string(), |s| s.to_string()),
                last_stderr_line(raw)
            )),
            // A guest that powered off through its hypervisor (QEMU's Xen
            // emulation exits with status 0 at SCHEDOP_shutdown) after a
            // complete, passing `done`: the serial verdict is the verdict,
            // the status is no evidence either way.
            Some(0) if completed_pass(expect, r) => {}
            Some(0) => f.push(
                "QEMU exited with status 0: the machine reset (a triple fault under -no-reboot) \
                 or QEMU quit without an exit code"
                    .to_string(),
            ),
            Some(s) => match ExitCode::from_qemu_status(s) {
                Some(c) if c == expect.outcome => {}
                Some(c) => f.push(format!(
                    "exit code {} (status {s}), expected {} (status {})",
                    c.name(),
                    expect.outcome.name(),
                    expect.outcome.qemu_status()
                )),
                None => f.push(format!(
                    "QEMU exited with status {s}, which is no pvops exit code (QEMU error?): {}",
                    last_stderr_line(raw)
                )),
            },
        }
    }

    let check = |f: &mut Vec<String>, what: &str, want: Option<&str>, got: Option<&String>| {
        if let Some(want) = want {
            if got.map(String::as_str) != Some(want) {
                f.push(format!("{what} {got:?}, expected {want:?}"));
            }
        }
    };
    check(
        &mut f,
        "hypervisor",
        expect.hypervisor,
        r.hypervisor.as_ref(),
    );
    // Issue 15: under a hypervisor (every CPUID an exit) the probe stays
    // within its budget.
    let hypervisor_bit = r
        .cpu
        .as_ref()
        .is_some_and(|c| c.features.iter().any(|n| n == "hypervisor"));
    if let Some(n) = r.probe_cpuids.filter(|_| hypervisor_bit) {
        let budget = u64::from(pvops_probe::HYPERVISOR_CPUID_BUDGET);
        if n > budget {
            f.push(format!(
                "the probe executed {n} CPUIDs under a hypervisor (budget {budget})"
            ));
        }
    }
    check(&mut f, "backend", expect.backend, r.backend.as_ref());
    if r.done.is_some() {
        f.extend(smp_failures(scenario.cpus, expect.no_answer, r));
        let asked = scenario
            .guest_cmdline
            .split_ascii_whitespace()
            .any(|w| w.starts_with("smpbench"));
        f.extend(crate::smp_bench::failures(r, asked));
    }
    check(
        &mut f,
        "TSC source",
        expect.tsc_source,
        r.tsc_source.as_ref(),
    );
    let want_khz = match expect.tsc_khz {
        TscKhz::Any => None,
        TscKhz::Exact(k) => Some(k),
        TscKhz::Configured => match resolved.tsc_hz {
            Some(hz) => Some(hz / 1000),
            None => {
                f.push("no TSC frequency was configured for this scenario".to_string());
                None
            }
        },
    };
    if let Some(k) = want_khz {
        if r.tsc_khz != Some(k) {
            f.push(format!("TSC {:?} kHz, expected {k} kHz", r.tsc_khz));
        }
    }
    if !expect.interfaces.is_empty() {
        let got: Vec<(u64, &str)> = r
            .interfaces
            .iter()
            .map(|i| (i.base, i.kind.as_str()))
            .collect();
        let want: Vec<(u64, &str)> = expect
            .interfaces
            .iter()
            .map(|&(b, k)| (u64::from(b), k))
            .collect();
        if got != want {
            f.push(format!("interfaces {got:x?}, expected {want:x?}"));
        }
    }
    for want in expect.logged {
        if !logged(&raw.serial, want) {
            f.push(format!("no log line contains {want:?}"));
        }
    }
    let owners = match (expect.owners, expect.backend) {
        (Some(o), _) => Some(o),
        (None, Some("native")) => Some(Owners::NATIVE),
        _ => None,
    };
    if let (Some(o), true) = (owners, expect.guest_completes) {
        f.extend(owner_failures(&o, expect.backend.unwrap_or("native"), r));
    }

    if let Some(want) = expect.panic {
        match &r.panic {
            None => f.push(format!(
                "guest did not panic, expected a panic containing {want:?}"
            )),
            Some(got) if !got.contains(want) => f.push(format!(
                "guest panic {got:?}, expected it to contain {want:?}"
            )),
            Some(_) => {}
        }
    }
    if expect.guest_completes {
        if let Some(p) = &r.panic {
            f.push(format!("guest panicked: {p}"));
        }
        match &r.done {
            None => f.push("guest never reported `done`".to_string()),
            Some(d) => {
                if d.verdict != "pass" {
                    f.push(format!(
                        "guest verdict {:?} ({}/{} self-tests)",
                        d.verdict, d.passed, d.total
                    ));
                }
                if d.total != r.selftests.len() as u64 || d.passed != r.selftests_passed() as u64 {
                    f.push(format!(
                        "`done` says {}/{} self-tests but {}/{} were reported",
                        d.passed,
                        d.total,
                        r.selftests_passed(),
                        r.selftests.len()
                    ));
                }
            }
        }
        if r.selftests.is_empty() {
            f.push("no self-test reported".to_string());
        }
        for (name, t) in r.selftests.iter().filter(|(_, t)| !t.pass) {
            if t.unsupported {
                if !expect.unsupported.contains(&name.as_str()) {
                    f.push(format!(
                        "self-test {name} unsupported, which the scenario does not expect: {}",
                        t.detail
                    ));
                }
            } else {
                f.push(format!("self-test {name} failed: {}", t.detail));
            }
        }
        for name in expect.unsupported {
            match r.selftests.get(*name) {
                Some(t) if t.unsupported => {}
                Some(t) => f.push(format!(
                    "self-test {name} {}, expected unsupported",
                    if t.pass { "passed" } else { "failed" }
                )),
                None => f.push(format!(
                    "self-test {name} not reported (expected unsupported)"
                )),
            }
        }
        // Only the kernels on pvops report a TSC frequency; `none` (no
        // source at all) only where the scenario says so.
        let no_source_expected = expect.tsc_source == Some(NO_TSC_SOURCE)
            && r.tsc_source.as_deref() == Some(NO_TSC_SOURCE);
        let on_pvops = matches!(
            scenario.guest,
            crate::scenario::Guest::ExampleKernel | crate::scenario::Guest::MinimalKernel
        );
        if on_pvops && r.tsc_khz.unwrap_or(0) == 0 && !no_source_expected {
            f.push(format!(
                "no TSC frequency reported (source {:?})",
                r.tsc_source.as_deref().unwrap_or("-")
            ));
        }
    }
    for name in expect.selftests {
        match r.selftests.get(*name) {
            None => f.push(format!("self-test {name} not reported")),
            Some(t) if !t.pass && !expect.guest_completes => {
                f.push(format!("self-test {name} failed: {}", t.detail))
            }
            Some(_) => {}
        }
    }

    if scenario.uses_microvisor() {
        match &r.microvisor {
            None => f.push("no microvisor record (`mv.*`) on the console".to_string()),
            Some(mv) => {
                match &mv.end {
                    None => f.push("microvisor never reported `mv.end`".to_string()),
                    Some(end) => {
                        if let Some(code) = end.code {
                            if code != expect.outcome as u64 {
                                f.push(format!(
                                    "mv.end code={code:#x}, expected {:#x}",
                                    expect.outcome as u32
                                ));
                            }
                        }
                    }
                }
                match (&mv.fault, expect.fault) {
                    (None, Some(want)) => f.push(format!("no mv.fault, expected kind={want}")),
                    (Some(got), Some(want)) if got.kind != want => f.push(format!(
                        "mv.fault kind={} ({}), expected kind={want}",
                        got.kind, got.detail
                    )),
                    (Some(got), None) => f.push(format!(
                        "unexpected mv.fault kind={} ({})",
                        got.kind, got.detail
                    )),
                    _ => {}
                }
                // Memory no guest may change changed: only the scenario of
                // the `corrupt=` debug switch expects it.
                if let Some(i) = mv.integrity.as_ref().filter(|i| !i.unchanged) {
                    if expect.fault != Some("integrity") {
                        f.push(format!(
                            "mv.integrity unchanged=false: {} changed",
                            i.changed
                        ));
                    }
                }
                if let Some(want) = expect.crash_report {
                    match &mv.crash {
                        None => f.push(format!(
                            "no mv.crash record, expected one containing {want:?}"
                        )),
                        Some(got) if !got.contains(want) => f.push(format!(
                            "mv.crash message={got:?}, expected it to contain {want:?}"
                        )),
                        Some(_) => {}
                    }
                }
                if mv.exits.total == 0 {
                    f.push("microvisor counted no exit".to_string());
                }
                for &msr in expect.msrs {
                    if mv.exits.msr(msr) == 0 {
                        f.push(format!("no exit counted for MSR {msr:#x}"));
                    }
                }
                for &port in expect.ports {
                    if mv.exits.port(port) == 0 {
                        f.push(format!("no exit counted for port {port:#x}"));
                    }
                }
                for &(metric, count) in expect.counts {
                    let n = metric.of(&mv.exits);
                    if !count.holds(n) {
                        f.push(format!(
                            "{}: {n}, expected {}",
                            metric.name(),
                            count.describe()
                        ));
                    }
                }
            }
        }
    }

    if let Some(k) = &r.kvm {
        f.extend(kvm_counter_failures(k, expect));
    }

    for line in &r.malformed {
        f.push(format!("malformed record: {line}"));
    }
    f
}

/// What is wrong with KVM's counters of a run: a QMP failure, no exit
/// counted, or an unmet [`crate::scenario::Expect::counts`] condition.
/// Counters that this QEMU or host cannot give are no failure.
fn kvm_counter_failures(
    k: &crate::parse::KvmCounters,
    expect: &crate::scenario::Expect,
) -> Vec<String> {
    use crate::parse::KvmCounters;
    let mut f = Vec::new();
    match k {
        KvmCounters::Unavailable {
            reason,
            failure: true,
        } => f.push(format!("KVM exit counters: {reason}")),
        KvmCounters::Unavailable { .. } => {}
        KvmCounters::Read(e) => {
            if e.total == 0 {
                f.push("KVM counted no exit".to_string());
            }
            for &(metric, count) in expect.counts {
                let n = metric.of(e);
                if !count.holds(n) {
                    f.push(format!(
                        "{} (KVM's counters): {n}, expected {}",
                        metric.name(),
                        count.describe()
                    ));
                }
            }
        }
    }
    f
}

/// The per-CPU self-tests a guest with several CPUs must pass.
pub const SMP_TESTS: &[&str] = &[
    "smp.timer-eoi",
    "smp.ipi-all",
    "smp.clock-warp",
    "smp.tlb-shootdown",
    "smp.spinlock",
];

/// With `cpus` > 1: every CPU online (`@@ smp online=`), no AP without an
/// answer but those of `no_answer` (each reported `no-answer`), and every
/// [`SMP_TESTS`] test reported and passed. With one CPU: the guest did not
/// see more.
pub fn smp_failures(cpus: u32, no_answer: &[u64], r: &BootResult) -> Vec<String> {
    let mut f = Vec::new();
    for apic in no_answer {
        if !r.aps.iter().any(|(a, s)| a == apic && s == "no-answer") {
            f.push(format!("AP with APIC ID {apic} not reported as no-answer"));
        }
    }
    let online = r.smp.map(|(_, online)| online);
    if cpus <= 1 {
        if online.is_some_and(|o| o > 1) {
            f.push(format!("{} CPUs online with -smp 1", online.unwrap_or(0)));
        }
        return f;
    }
    match r.smp {
        None => f.push("no `smp` record (the guest did not bring up its APs)".to_string()),
        Some((madt, online)) if online != u64::from(cpus) || madt != u64::from(cpus) => f.push(
            format!("{online} of {cpus} CPUs online ({madt} in the MADT)"),
        ),
        Some(_) => {}
    }
    let expected = |a: &u64, s: &str| s == "no-answer" && no_answer.contains(a);
    for (apic, status) in r
        .aps
        .iter()
        .filter(|(a, s)| s != "online" && !expected(a, s))
    {
        f.push(format!("AP with APIC ID {apic}: {status}"));
    }
    // A failed one is reported with the other self-tests.
    for t in SMP_TESTS.iter().filter(|t| !r.selftests.contains_key(**t)) {
        f.push(format!("self-test {t} not reported"));
    }
    f
}

/// Where the owners of the table differ from `o`: `o.backend` must be
/// owned by `backend`, `o.optional` by `backend` or native, every other
/// entry (of [`pvops::Entry::all`]) by native.
pub fn owner_failures(o: &Owners, backend: &str, r: &BootResult) -> Vec<String> {
    let mut f = Vec::new();
    if r.owners.is_empty() {
        f.push("no owner records".to_string());
        return f;
    }
    for entry in pvops::Entry::all() {
        let name = entry.name();
        let got = r.owners.get(name).map(String::as_str);
        let ok = if o.backend.contains(&name) {
            got == Some(backend)
        } else if o.optional.contains(&name) {
            got == Some(backend) || got == Some("native")
        } else {
            got == Some("native")
        };
        if !ok {
            let want = if o.backend.contains(&name) {
                backend
            } else if o.optional.contains(&name) {
                "either"
            } else {
                "native"
            };
            f.push(format!("owner of {name}: {got:?}, expected {want}"));
        }
    }
    for name in o.backend.iter().chain(o.optional) {
        if pvops::Entry::from_name(name).is_none() {
            f.push(format!("expected owner for unknown entry {name}"));
        }
    }
    f
}

/// Failures of a pair: the backend run must have strictly fewer of each
/// metric in its scenario's [`crate::scenario::Expect::fewer_than_native`]
/// than the native run. Empty when both ran and it holds, or when there is
/// no metric to compare (a real-hypervisor pair such as `kvm` / `kvm/native`
/// has no microvisor counters; it is there for the benchmarks).
pub fn judge_pair(backend: &crate::ScenarioReport, native: &crate::ScenarioReport) -> Vec<String> {
    let metrics = backend.scenario.expect.fewer_than_native;
    // KVM's counters that this QEMU or host cannot give: nothing to
    // compare, and no failure (each run reports why).
    let unavailable = |r: &crate::ScenarioReport| {
        matches!(
            r.result.kvm,
            Some(crate::parse::KvmCounters::Unavailable { failure: false, .. })
        )
    };
    if metrics.is_empty() || unavailable(backend) || unavailable(native) {
        return Vec::new();
    }
    let (Some(b), Some(n)) = (backend.result.exits(), native.result.exits()) else {
        return vec![format!(
            "pair {} / {}: exit counters missing",
            backend.scenario.name, native.scenario.name
        )];
    };
    metrics
        .iter()
        .filter_map(|m| {
            let (bv, nv) = (m.of(b), m.of(n));
            (bv >= nv).then(|| {
                format!(
                    "{}: {bv} with {}, not fewer than {nv} with {}",
                    m.name(),
                    backend.scenario.name,
                    native.scenario.name
                )
            })
        })
        .collect()
}

/// The workloads the example kernel runs with `bench` on its command line.
pub const BENCH_WORKLOADS: [&str; 6] = [
    "clock", "tsc-read", "timer", "self-ipi", "io-delay", "tsc-freq",
];

/// What is wrong with a bench run's records: every workload must be
/// reported once with iterations, and the timer and self-IPI workloads
/// must have seen every event they waited for.
pub fn bench_failures(r: &BootResult) -> Vec<String> {
    let mut f = Vec::new();
    for name in BENCH_WORKLOADS {
        match r.bench.iter().filter(|b| b.name == name).count() {
            0 => f.push(format!("bench workload {name} not reported")),
            1 => {}
            n => f.push(format!("bench workload {name} reported {n} times")),
        }
    }
    for b in &r.bench {
        if b.iterations == 0 {
            f.push(format!("bench workload {} ran no iteration", b.name));
        }
        if let Some(c) = b.completed {
            if c != b.iterations {
                f.push(format!(
                    "bench workload {}: {c} of {} iterations saw their event",
                    b.name, b.iterations
                ));
            }
        }
    }
    f
}

/// QEMU's first error line (the first line mentioning "error", else the
/// last non-empty line of its stderr).
fn last_stderr_line(raw: &RawRun) -> &str {
    let lines = || raw.stderr.lines().map(str::trim).filter(|l| !l.is_empty());
    lines()
        .find(|l| l.contains("error"))
        .or_else(|| lines().next_back())
        .unwrap_or("(no stderr)")
}

/// Whether the run's serial output alone shows the expected passing
/// verdict: a `done` record with every self-test passed, matching the
/// reported self-tests, and no panic.
fn completed_pass(expect: &crate::scenario::Expect, r: &BootResult) -> bool {
    expect.outcome == ExitCode::Pass
        && expect.guest_completes
        && r.panic.is_none()
        && !r.selftests.is_empty()
        && r.done.as_ref().is_some_and(|d| {
            d.verdict == "pass"
                && d.passed == d.total
                && d.total == r.selftests.len() as u64
                && d.passed == r.selftests_passed() as u64
        })
}

/// The exit code a QEMU status maps to, by name (for reports).
pub fn status_name(status: Option<i32>) -> String {
    match status {
        None => "killed".to_string(),
        Some(0) => "reset".to_string(),
        Some(s) => ExitCode::from_qemu_status(s)
            .map_or_else(|| format!("status-{s}"), |c| c.name().to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::find;
    use std::time::Duration;

    const GOOD_TCG_HEAD: &str = "\
@@ hypervisor name=qemu-tcg
@@ backend name=native reason=x
@@ tsc khz=3000000 source=pit-calibration
@@ selftest name=cpu.cpuid result=pass detail=
@@ selftest name=time.tsc result=pass detail=
@@ done passed=2 total=2 verdict=pass
";

    /// One owner record per table entry, all `owner`.
    fn owner_lines(owner: &str) -> String {
        pvops::Entry::all()
            .map(|e| format!("@@ owner entry={} backend={owner}\n", e.name()))
            .collect()
    }

    /// A good native TCG boot.
    fn good_tcg() -> String {
        format!("{GOOD_TCG_HEAD}{}", owner_lines("native"))
    }

    fn raw(status: Option<i32>, serial: &str) -> RawRun {
        RawRun {
            status,
            signal: None,
            timed_out: false,
            serial: serial.to_string(),
            stderr: String::new(),
            duration: Duration::from_secs(1),
        }
    }

    /// An AP that never answered fails a scenario unless the scenario
    /// expects exactly that APIC ID not to answer; an expected one missing
    /// fails too.
    #[test]
    fn smp_no_answer_is_a_failure_unless_expected() {
        let tests: String = SMP_TESTS
            .iter()
            .map(|t| format!("@@ selftest name={t} result=pass detail=\n"))
            .collect();
        let serial = format!(
            "@@ ap slot=1 apic=1 status=online index=1 backend=native fallbacks=0\n\
             @@ ap slot=2 apic=7 status=no-answer index=- backend=native fallbacks=0\n\
             @@ smp cpus=2 online=2 madt=ok\n{tests}"
        );
        let r = BootResult::parse(&serial);
        assert_eq!(smp_failures(2, &[7], &r), Vec::<String>::new());
        let f = smp_failures(2, &[], &r);
        assert_eq!(f, vec!["AP with APIC ID 7: no-answer".to_string()]);
        let f = smp_failures(2, &[7, 9], &r);
        assert_eq!(
            f,
            vec!["AP with APIC ID 9 not reported as no-answer".to_string()]
        );
        let ok = BootResult::parse(&serial.replace("status=no-answer", "status=online"));
        assert_eq!(smp_failures(2, &[], &ok), Vec::<String>::new());
    }

    fn judge_text(name: &str, status: Option<i32>, serial: &str) -> Vec<String> {
        let r = raw(status, serial);
        judge(
            find(name).unwrap(),
            &r,
            &BootResult::parse(serial),
            &Resolved::default(),
        )
    }

    /// A microVM TCG boot: no frequency source, the four time tests
    /// unsupported.
    fn no_frequency(unsupported: &[&str]) -> String {
        let mut s = "@@ hypervisor name=qemu-tcg\n@@ backend name=native reason=x\n\
                     @@ tsc khz=0 source=none\n@@ selftest name=cpu.cpuid result=pass detail=\n"
            .to_string();
        for t in unsupported {
            s.push_str(&format!(
                "@@ selftest name={t} result=unsupported detail=no%20source\n"
            ));
        }
        s.push_str(&format!(
            "@@ done passed=1 total={} unsupported={} verdict=pass\n",
            1 + unsupported.len(),
            unsupported.len()
        ));
        s + &owner_lines("native")
    }

    #[test]
    fn unsupported_self_tests_are_their_own_verdict() {
        use crate::scenario::TIME_TESTS_NEEDING_A_FREQUENCY as T;
        assert_eq!(
            judge_text("microvm:tcg", Some(33), &no_frequency(T)),
            Vec::<String>::new()
        );
        // One expected-unsupported test missing from the run.
        let f = judge_text("microvm:tcg", Some(33), &no_frequency(&T[1..]));
        assert!(
            f.iter()
                .any(|m| m.contains("time.tsc-frequency not reported")),
            "{f:?}"
        );
        // Unsupported where the scenario expects a frequency: fails, and so
        // does the missing frequency.
        let f = judge_text("tcg", Some(33), &no_frequency(T));
        assert!(
            f.iter()
                .any(|m| m.contains("unsupported, which the scenario does not expect")),
            "{f:?}"
        );
        assert!(
            f.iter().any(|m| m.contains("no TSC frequency reported")),
            "{f:?}"
        );
        let r = BootResult::parse(&no_frequency(T));
        assert_eq!(r.selftests_unsupported().len(), 4);
        assert_eq!(r.selftests_passed(), 1);
        assert_eq!(r.done.as_ref().unwrap().unsupported, 4);
    }

    #[test]
    fn kvm_counters_are_judged() {
        use crate::parse::{Exits, KvmCounters};
        // A native run under KVM (the serial below is a native boot's).
        let s = find("kvm/native").unwrap();
        let serial = good_tcg().replace("qemu-tcg", "kvm")
            + "@@ interface base=0x40000000 signature=KVMKVMKVM kind=kvm\n";
        let judge_with = |k: KvmCounters| {
            let mut r = BootResult::parse(&serial);
            r.kvm = Some(k);
            judge(s, &raw(Some(33), &serial), &r, &Resolved::default())
        };
        let stats = [("exits".to_string(), 900), ("io_exits".to_string(), 10)].into();
        assert_eq!(
            judge_with(KvmCounters::Read(Exits::from_kvm_stats(&stats))),
            Vec::<String>::new()
        );
        let f = judge_with(KvmCounters::Read(Exits::default()));
        assert_eq!(f, ["KVM counted no exit"]);
        let old = KvmCounters::Unavailable {
            reason: "no query-stats".into(),
            failure: false,
        };
        assert_eq!(judge_with(old), Vec::<String>::new());
        let f = judge_with(KvmCounters::Unavailable {
            reason: "QMP socket gone".into(),
            failure: true,
        });
        assert_eq!(f, ["KVM exit counters: QMP socket gone"]);
        let e = Exits::from_kvm_stats(&stats);
        assert_eq!((e.total, e.reason("io")), (900, 10));
        assert_eq!(crate::scenario::Metric::Kvm("io_exits").of(&e), 10);
    }

    #[test]
    fn good_run_passes() {
        assert_eq!(
            judge_text("tcg", Some(33), &good_tcg()),
            Vec::<String>::new()
        );
    }

    /// Issue 11, item 5: a guest that powered off through its hypervisor
    /// (status 0) after a complete, passing `done` passes; status 0 without
    /// that verdict stays a failure.
    #[test]
    fn status_zero_after_a_passing_done_is_the_serial_verdict() {
        assert_eq!(
            judge_text("tcg", Some(0), &good_tcg()),
            Vec::<String>::new()
        );
        let no_done = good_tcg().replace("@@ done passed=2 total=2 verdict=pass\n", "");
        let f = judge_text("tcg", Some(0), &no_done);
        assert!(f.iter().any(|m| m.contains("status 0")), "{f:?}");
        let failed = good_tcg().replace("verdict=pass", "verdict=fail");
        let f = judge_text("tcg", Some(0), &failed);
        assert!(f.iter().any(|m| m.contains("status 0")), "{f:?}");
    }

    #[test]
    fn logged_texts_are_found_in_log_lines_only() {
        let serial = "[INFO ] pvops: kvm: time.steal_ns stays native: x\r\n@@ backend reason=stays%20native\n";
        assert!(logged(serial, "time.steal_ns stays native"));
        assert!(!logged(serial, "reason=stays"));
        assert!(!logged(serial, "irq.eoi"));
    }

    #[test]
    fn bad_runs_fail_with_reasons() {
        let f = judge_text("tcg", Some(35), &good_tcg());
        assert!(f[0].contains("exit code fail"), "{f:?}");
        let f = judge_text("tcg", Some(1), &good_tcg());
        assert!(f[0].contains("no pvops exit code"), "{f:?}");
        let mut crashed = raw(None, &good_tcg());
        crashed.signal = Some(6);
        crashed.stderr = "qemu: error: failed to set MSR 0x10a\nqemu: Assertion failed.\n".into();
        let f = judge(
            find("tcg").unwrap(),
            &crashed,
            &BootResult::parse(&good_tcg()),
            &Resolved::default(),
        );
        assert_eq!(
            f,
            ["QEMU was killed by signal 6: qemu: error: failed to set MSR 0x10a"]
        );
        let f = judge_text("kvm", Some(33), &good_tcg());
        assert_eq!(f[0], "hypervisor Some(\"qemu-tcg\"), expected \"kvm\"");
        let failing = good_tcg().replace(
            "time.tsc result=pass detail=",
            "time.tsc result=fail detail=slow",
        );
        let f = judge_text("tcg", Some(33), &failing);
        assert!(
            f.iter().any(|m| m == "self-test time.tsc failed: slow"),
            "{f:?}"
        );
        assert!(f.iter().any(|m| m.contains("`done` says 2/2")), "{f:?}");
        let f = judge_text("tcg", Some(33), "@@ hypervisor name=qemu-tcg\n");
        assert!(f.iter().any(|m| m.contains("never reported `done`")));
        assert!(f.iter().any(|m| m.contains("no self-test")));
        assert!(f.iter().any(|m| m.contains("backend None")));
        let mut t = raw(None, "booting\n");
        t.timed_out = true;
        let f = judge(
            find("tcg").unwrap(),
            &t,
            &BootResult::default(),
            &Resolved::default(),
        );
        assert!(
            f[0].starts_with("timeout") && f[0].contains("booting"),
            "{f:?}"
        );
    }

    #[test]
    fn crash_report_expectations() {
        let serial = "@@ hypervisor name=hyperv\n@@ backend name=hyperv reason=x\n\
                      @@ panic message=fault%3Dpanic:%20deliberate%20kernel%20panic%20at%20x.rs:1\n\
                      @@ mv.start persona=hyperv\n@@ mv.exit reason=msr count=7\n@@ mv.total count=7\n\
                      @@ mv.crash p0=0x1 message=fault%3Dpanic:%20deliberate%20kernel%20panic\n\
                      @@ mv.end outcome=guest-exit code=0x11\n";
        assert_eq!(
            judge_text("microvisor:hyperv:fault-panic", Some(35), serial),
            Vec::<String>::new()
        );
        let no_crash: String = serial
            .lines()
            .filter(|l| !l.contains("mv.crash"))
            .map(|l| format!("{l}\n"))
            .collect();
        let f = judge_text("microvisor:hyperv:fault-panic", Some(35), &no_crash);
        assert!(f.iter().any(|m| m.contains("no mv.crash")), "{f:?}");
        let no_panic: String = serial
            .lines()
            .filter(|l| !l.contains("@@ panic"))
            .map(|l| format!("{l}\n"))
            .collect();
        let f = judge_text("microvisor:hyperv:fault-panic", Some(35), &no_panic);
        assert!(f.iter().any(|m| m.contains("did not panic")), "{f:?}");
    }

    #[test]
    fn microvisor_expectations() {
        let serial = format!(
            "@@ mv.start persona=none\n{}@@ selftest name=fault.bad-port result=pass detail=\n\
             @@ mv.port port=0x1234 count=1\n@@ mv.total count=10\n@@ mv.end outcome=pass code=0x10\n",
            good_tcg()
                .replace("qemu-tcg", "none")
                .replace("passed=2 total=2", "passed=3 total=3")
        );
        assert_eq!(
            judge_text("microvisor:fault-bad-port", Some(33), &serial),
            Vec::<String>::new()
        );
        let no_port = serial.replace("port=0x1234", "port=0x1235");
        assert_eq!(
            judge_text("microvisor:fault-bad-port", Some(33), &no_port),
            ["no exit counted for port 0x1234"]
        );
        let f = judge_text("microvisor:none", Some(33), &good_tcg());
        assert!(
            f.iter().any(|m| m.contains("no microvisor record")),
            "{f:?}"
        );

        let triple = "@@ mv.start persona=none\n@@ mv.exit reason=shutdown count=1\n\
                      @@ mv.fault kind=triple-fault detail=x\n@@ mv.end outcome=guest-triple-fault code=0x20\n";
        assert_eq!(
            judge_text("microvisor:fault-triple", Some(65), triple),
            Vec::<String>::new()
        );
        // A changed integrity check fails any scenario not expecting it.
        let changed = triple.replace(
            "@@ mv.end",
            "@@ mv.integrity regions=7 unchanged=false changed=npt\n@@ mv.end",
        );
        let f = judge_text("microvisor:fault-triple", Some(65), &changed);
        assert!(
            f.iter()
                .any(|m| m.contains("mv.integrity unchanged=false: npt")),
            "{f:?}"
        );
        let fine = triple.replace(
            "@@ mv.end",
            "@@ mv.integrity regions=7 unchanged=true changed=none\n@@ mv.end",
        );
        assert_eq!(
            judge_text("microvisor:fault-triple", Some(65), &fine),
            Vec::<String>::new()
        );
        let f = judge_text(
            "microvisor:fault-triple",
            Some(33),
            &triple.replace("triple-fault ", "watchdog "),
        );
        assert!(
            f.iter().any(|m| m.contains("expected guest-triple-fault")),
            "{f:?}"
        );
        assert!(
            f.iter().any(|m| m.contains("expected kind=triple-fault")),
            "{f:?}"
        );
        let f = judge_text(
            "microvisor:fault-triple",
            Some(65),
            &triple.replace("code=0x20", "code=0x22"),
        );
        assert_eq!(f, ["mv.end code=0x22, expected 0x20"]);
    }

    #[test]
    fn status_names() {
        assert_eq!(status_name(Some(33)), "pass");
        assert_eq!(status_name(Some(69)), "guest-watchdog");
        assert_eq!(status_name(Some(0)), "reset");
        assert_eq!(status_name(Some(2)), "status-2");
        assert_eq!(status_name(None), "killed");
    }
}
