//! Helpers for the integration tests in `tests/tests/`: boot a scenario
//! through the runner's library and assert on what the guest and the
//! microvisor reported.
//!
//! Every assertion message carries the runner's failures and the tail of
//! the serial console, so a failing test says what the guest did.
#![forbid(unsafe_code)]

use pvops::time::TscSource;
use qemu_runner::parse::{parse_line, BootResult, Exits, Line, Record};
use qemu_runner::scenario::{Count, Metric, Owners};
use qemu_runner::{scenario, RunOptions, ScenarioReport, Status};

/// Scenarios with a dedicated test in one of this crate's test files
/// (`scenarios.rs`, `personas.rs`, `fixes.rs`, `lying.rs`, `hostile.rs`, ...); every other declared scenario, except
/// the families of [`DEDICATED_PREFIXES`], is booted by
/// `every_other_scenario_meets_its_expectations`.
pub const DEDICATED: &[&str] = &[
    "tcg",
    "kvm",
    "vmport",
    "kvm-vmware-freq",
    "kvm/native",
    "microvisor:none",
    "microvisor:bare",
    // hostile.rs (with the prefixes below)
    "microvisor:hyperv:fault-rep-hypercalls",
    "microvisor:hyperv:fault-alias-hypercall-page",
    "microvisor:xen:fault-bad-pointers",
    "microvisor:kvm:fault-shared-pages-past-ram",
    "microvisor:vmware",
    "microvisor:vmware/native",
    "microvisor:xen",
    "microvisor:xen/native",
    "microvisor:xen+viridian",
    "microvisor:xen:break=hypercall-page",
    "microvisor:xen:break=shared-info",
    "microvisor:xen:break=pvclock-odd",
    "microvisor:xen:break=evtchn",
    "microvisor:hyperv",
    "microvisor:hyperv/native",
    "microvisor:kvm+hyperv",
    "microvisor:kvm",
    "microvisor:kvm/native",
    // smp.rs
    "microvisor:none:smp4",
    "microvisor:bare:smp4",
    "microvisor:vmware:smp4",
    "microvisor:vmware:smp4/native",
    "microvisor:kvm:smp4",
    "microvisor:kvm:smp4/native",
    "microvisor:kvm:smp8",
    "microvisor:hyperv:smp4",
    "microvisor:hyperv:smp4/native",
    "microvisor:kvm+hyperv:smp4",
    "microvisor:xen:smp4",
    "microvisor:xen:smp4/native",
    "microvisor:xen+viridian:smp4",
    "microvisor:xen:callback-via:smp4",
    "microvisor:kvm+hyperv:smp4/hyperv",
    "microvisor:xen+viridian:smp4/hyperv",
    "microvisor:kvm:smp4:break=last-vcpu-refuses",
    "microvisor:hyperv:smp4:break=sets-refused",
    "microvisor:kvm:smp8/native",
    "microvisor:smp2:fault-ap-triple",
    "microvisor:smp2:fault-ap-spin",
    "microvisor:smp2:sipi-absent",
    "microvisor:none:smp4:fault-hang",
    "microvisor:none:smp2:no-answer",
    "microvisor:kvm:break=stable-bit",
    "microvisor:kvm:break=pv-eoi-refused",
    "microvisor:kvm:break=steal-never",
    "microvisor:kvm:break=pvclock-odd",
    "microvisor:hyperv:break=hypercall-page",
    "microvisor:hyperv:break=tsc-page",
    "microvisor:hyperv:break=hypercall-error",
    // tests/tests/fixes.rs
    "microvisor:xen:noisy-ports",
    "microvisor:xen:callback-via",
    "microvisor:xen:qemu",
    "microvisor:hyperv:no-frequencies",
    "microvisor:hyperv:tsc-page-late",
    "microvisor:hyperv:no-frequencies+tsc-page-late",
    // lying.rs (the lying-hypervisor matrix, qemu_runner::scenario::lying)
    "microvisor:vmware:break=timing-leaf",
    "microvisor:vmware:break=no-frequency",
    "microvisor:vmware:break=signature-only",
    "microvisor:vmware:break=absurd-frequency",
    "microvisor:vmware:break=vmmcall",
    "microvisor:vmware:break=stealclock",
    "microvisor:vmware:break=stealclock-refused",
    "microvisor:vmware:break=steal-backwards",
    "microvisor:kvm:break=no-features",
    "microvisor:kvm:break=clock-gp",
    "microvisor:kvm:break=absurd-frequency",
    "microvisor:kvm:break=hidden-steal",
    "microvisor:kvm:break=steal-backwards",
    "microvisor:kvm:break=pvclock-backwards",
    "microvisor:hyperv:break=no-privileges",
    "microvisor:hyperv:break=absurd-frequency",
    "microvisor:hyperv:break=hidden-stimer",
    "microvisor:hyperv:break=hypercall-second-fails",
    "microvisor:hyperv:break=msrs-gp",
    "microvisor:hyperv:break=miscalibrated-frequency",
    "microvisor:xen:break=signature-only",
    "microvisor:xen:break=absurd-frequency",
    "microvisor:xen:break=timer-second-fails",
    "microvisor:xen:break=pvclock-backwards",
    // realpeers.rs
    "microvm:tcg",
    "microvm:kvm",
    "microvm:kvm/native",
    "kvm/native",
    "microvisor:none:pit=off",
    "microvisor:xen:pit=off",
    "microvisor:hyperv:pit=off",
    // smp.rs
    "tcg:smp4",
    "tcg:smp2:no-answer",
    "tcg:smp2:hotplug",
    "kvm:smp4",
    "kvm:smp4/native",
];

/// Scenario families with their own test: the feature matrix
/// (`matrix.rs`), the template kernel (`minimal.rs`), the nested real
/// peers (`nested.rs`) and the hostile-guest matrix (`hostile.rs`).
pub const DEDICATED_PREFIXES: &[&str] = &[
    "matrix:",
    "minimal:",
    "nested:",
    "microvisor:fault-",
    "microvisor:integrity-",
];

/// Self-test groups every completed boot must cover (the table's groups).
pub const SELFTEST_GROUPS: [&str; 4] = ["cpu", "mmu", "irq", "time"];

/// Every `tsc source=` name the guest may report (not `unknown`).
pub fn known_tsc_sources() -> impl Iterator<Item = &'static str> {
    TscSource::ALL
        .into_iter()
        .filter(|&s| s != TscSource::Unknown)
        .map(TscSource::name)
}

/// Boots scenario `name`. Returns `None` (after printing `SKIP <name>: <why>`
/// on stderr) when the host cannot run it; panics when `name` is unknown.
pub fn boot(name: &str) -> Option<ScenarioReport> {
    boot_with(name, &RunOptions::default())
}

/// Held by a test while it runs cargo builds of its own, so no boot of the
/// same test binary runs beside them (the runner already keeps its own
/// kernel builds and boots apart, [`qemu_runner::run::build_turn`]): builds
/// beside TCG boots starved the guests' PIT calibration on a 2-core machine
/// (every sample disturbed, so no TSC frequency). Not reentrant: do not
/// boot while holding it.
pub fn cpu_heavy() -> std::sync::RwLockWriteGuard<'static, ()> {
    qemu_runner::run::build_turn()
}

/// Boots scenario `name` with `opts` (e.g. extra guest command-line
/// words); `None` after printing `SKIP <name>: <why>` when the host cannot
/// run it.
pub fn boot_with(name: &str, opts: &RunOptions) -> Option<ScenarioReport> {
    let s = scenario::find(name).unwrap_or_else(|| panic!("no scenario named {name}"));
    let r = qemu_runner::run_scenario(s, opts);
    if r.status() == Status::Skip {
        eprintln!(
            "SKIP {name}: {}",
            r.skipped.as_deref().unwrap_or("requirement not met")
        );
        return None;
    }
    Some(r)
}

/// Boots every scenario of `names` concurrently (the runner still allows
/// only one QEMU per CPU) with `opts`; results in the order of `names`,
/// `None` for skipped ones.
pub fn boot_all(names: &[&str], opts: &RunOptions) -> Vec<Option<ScenarioReport>> {
    std::thread::scope(|scope| {
        let handles: Vec<_> = names
            .iter()
            .map(|n| scope.spawn(move || boot_with(n, opts)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("boot thread panicked"))
            .collect()
    })
}

/// Boots a backend scenario and its `pvops=native` pair (concurrently).
/// Panics when the scenario has no pair or either is skipped (persona
/// scenarios need only TCG).
pub fn boot_pair(name: &str, opts: &RunOptions) -> (ScenarioReport, ScenarioReport) {
    let s = scenario::find(name).unwrap_or_else(|| panic!("no scenario named {name}"));
    let pair = s
        .native_pair
        .unwrap_or_else(|| panic!("{name} has no native pair"));
    let mut v = boot_all(&[name, pair], opts).into_iter();
    let b = v.next().flatten().expect("TCG-only scenario must run");
    let n = v.next().flatten().expect("TCG-only scenario must run");
    (b, n)
}

/// The microvisor's counters of a run (panics with context when missing).
pub fn exits(r: &ScenarioReport) -> &Exits {
    r.result
        .exits()
        .unwrap_or_else(|| panic!("no microvisor counters\n{}", context(r)))
}

/// A metric of a run's counters.
pub fn metric(r: &ScenarioReport, m: Metric) -> u64 {
    m.of(exits(r))
}

/// A metric of a run's counters meets `c`.
pub fn assert_count(r: &ScenarioReport, m: Metric, c: Count) {
    let n = metric(r, m);
    assert!(
        c.holds(n),
        "{} = {n}, want {}\n{}",
        m.name(),
        c.describe(),
        context(r)
    );
}

/// The last `@@ <kind>` record of the run's serial log (panics with context
/// when there is none).
pub fn record(r: &ScenarioReport, kind: &str) -> Record {
    let serial = r.raw.as_ref().map_or("", |raw| raw.serial.as_str());
    serial
        .lines()
        .rev()
        .find_map(|l| match parse_line(l) {
            Line::Record(rec) if rec.kind == kind => Some(rec),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no `@@ {kind}` record\n{}", context(r)))
}

/// Field `key` of `rec` (panics when absent).
pub fn field<'a>(rec: &'a Record, key: &str) -> &'a str {
    rec.get(key)
        .unwrap_or_else(|| panic!("`@@ {}` has no {key}: {rec:?}", rec.kind))
}

/// The hypervisor interfaces the guest reported, as (base, kind).
pub fn interfaces(r: &ScenarioReport) -> Vec<(u64, &str)> {
    r.result
        .interfaces
        .iter()
        .map(|i| (i.base, i.kind.as_str()))
        .collect()
}

/// Owners as declared: `o.backend` owned by `backend`, `o.optional` by
/// either, everything else native.
pub fn assert_owners(r: &ScenarioReport, backend: &str, o: &Owners) {
    let f = qemu_runner::verdict::owner_failures(o, backend, &r.result);
    assert!(f.is_empty(), "{f:#?}\n{}", context(r));
}

/// A completed guest under a persona: hypervisor, backend, every self-test
/// group present and passing, owners as declared, the TSC source.
pub fn assert_persona_guest(
    r: &ScenarioReport,
    hypervisor: &str,
    backend: &str,
    owners: &Owners,
    tsc_source: &str,
) {
    assert_completed(r, hypervisor, backend);
    assert_owners(r, backend, owners);
    let res = &r.result;
    assert_eq!(
        res.tsc_source.as_deref(),
        Some(tsc_source),
        "{}",
        context(r)
    );
    assert!(res.tsc_khz.unwrap_or(0) > 0, "{}", context(r));
}

/// The guest reported `hypervisor` and `backend`, did not panic, and
/// reached `done` with every self-test group present and every self-test
/// passed.
fn assert_completed(r: &ScenarioReport, hypervisor: &str, backend: &str) {
    let res = &r.result;
    let ctx = || context(r);
    assert_eq!(res.hypervisor.as_deref(), Some(hypervisor), "{}", ctx());
    assert_eq!(res.backend.as_deref(), Some(backend), "{}", ctx());
    assert!(res.panic.is_none(), "guest panicked\n{}", ctx());
    for group in SELFTEST_GROUPS {
        assert!(
            res.selftests
                .keys()
                .any(|n| n.split('.').next() == Some(group)),
            "no self-test of group {group}: {:?}\n{}",
            res.selftests.keys().collect::<Vec<_>>(),
            ctx()
        );
    }
    let failed: Vec<_> = res.selftests.iter().filter(|(_, t)| !t.pass).collect();
    assert!(failed.is_empty(), "failed self-tests {failed:?}\n{}", ctx());
    let done = res
        .done
        .as_ref()
        .unwrap_or_else(|| panic!("no done\n{}", ctx()));
    assert_eq!(done.verdict, "pass", "{}", ctx());
}

/// Context for assertion messages: failures, QEMU status and stderr, and the
/// last lines of the serial console.
pub fn context(r: &ScenarioReport) -> String {
    let mut s = format!(
        "scenario {}: status {:?}\nfailures:\n",
        r.scenario.name,
        r.exit_status()
    );
    for f in &r.failures {
        s.push_str(&format!("  - {f}\n"));
    }
    if let Some(raw) = &r.raw {
        let lines: Vec<&str> = raw.serial.lines().collect();
        let from = lines.len().saturating_sub(60);
        s.push_str(&format!("serial (last {} lines):\n", lines.len() - from));
        for l in &lines[from..] {
            s.push_str(&format!("  | {l}\n"));
        }
        if !raw.stderr.trim().is_empty() {
            s.push_str(&format!("QEMU stderr:\n{}\n", raw.stderr.trim_end()));
        }
    }
    s
}

/// The runner's own verdict: every expectation of the scenario met.
pub fn assert_verdict_pass(r: &ScenarioReport) {
    assert!(r.passed(), "{}", context(r));
}

/// A guest that completed: its hypervisor and backend, a non-empty list of
/// self-tests covering every group and all passing, every table entry owned
/// by `owner`, and a TSC frequency from a known source.
pub fn assert_guest(r: &ScenarioReport, hypervisor: &str, backend: &str, owner: &str) {
    let res: &BootResult = &r.result;
    let ctx = || context(r);
    assert!(
        !res.selftests.is_empty(),
        "no self-test reported\n{}",
        ctx()
    );
    assert_completed(r, hypervisor, backend);
    let done = res.done.as_ref().expect("checked by assert_completed");
    assert_eq!(done.total as usize, res.selftests.len(), "{}", ctx());
    for entry in pvops::Entry::all() {
        assert_eq!(
            res.owners.get(entry.name()).map(String::as_str),
            Some(owner),
            "owner of {}\n{}",
            entry.name(),
            ctx()
        );
    }
    assert!(res.tsc_khz.unwrap_or(0) > 0, "no TSC frequency\n{}", ctx());
    let source = res.tsc_source.as_deref().unwrap_or("");
    assert!(
        known_tsc_sources().any(|s| s == source),
        "unknown TSC source {source:?}\n{}",
        ctx()
    );
}

/// Microvisor counters of a run whose guest booted: exits were counted,
/// including CPUID exits, and PIT exits when the guest calibrated its TSC
/// against the PIT.
pub fn assert_exits(r: &ScenarioReport) {
    let ctx = || context(r);
    let exits = exits(r);
    assert!(exits.total > 0, "no exit counted\n{}", ctx());
    assert!(
        exits.reason("cpuid") > 0,
        "no CPUID exit counted: {:?}\n{}",
        exits.reasons,
        ctx()
    );
    if r.result.tsc_source.as_deref() == Some(TscSource::PitCalibration.name()) {
        assert!(
            exits.pit() > 0,
            "TSC calibrated against the PIT but no PIT port exit: {:?}\n{}",
            exits.ports,
            ctx()
        );
    }
    let sum: u64 = exits.reasons.values().sum();
    assert!(
        sum <= exits.total,
        "exits by reason ({sum}) exceed the total ({})\n{}",
        exits.total,
        ctx()
    );
}

/// The QEMU status, the `mv.fault` kind and the `mv.end` code of a fault case.
pub fn assert_fault(r: &ScenarioReport, code: pvops_abi::exit::ExitCode, kind: Option<&str>) {
    let ctx = || context(r);
    assert_eq!(r.exit_status(), Some(code.qemu_status()), "{}", ctx());
    let mv = r
        .result
        .microvisor
        .as_ref()
        .unwrap_or_else(|| panic!("no microvisor record\n{}", ctx()));
    assert_eq!(
        mv.fault.as_ref().map(|f| f.kind.as_str()),
        kind,
        "{}",
        ctx()
    );
    let end = mv
        .end
        .as_ref()
        .unwrap_or_else(|| panic!("no mv.end\n{}", ctx()));
    assert_eq!(end.code, Some(code as u64), "{}", ctx());
}
