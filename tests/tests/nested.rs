//! Nested real peers (issue 10 item 3): the example kernel as an L2 guest of
//! KVM, KVM's Hyper-V emulation and QEMU/KVM's Xen emulation, inside an L1
//! Linux under host QEMU TCG (docs/nested.md).
//!
//! They run where the L1 image is cached or can be built (root, the host
//! tools, Debian's archive reachable); otherwise each prints
//! `SKIP <name>: <why>`. The first run builds the image (a few minutes);
//! each scenario is one L1 boot (about 30-60 s under TCG on a shared host).
//! The verdict is the guest's `@@ done` record in L2's serial output; the
//! exits are L1 KVM's (`exit_counter: "nested-kvm"`).

use pvops_tests::{assert_verdict_pass, boot_all, context, metric};
use qemu_runner::scenario::{self, Metric};
use qemu_runner::{report, verdict, RunOptions, ScenarioReport};

/// Every nested scenario, by the test that boots it.
const PAIRS: [&str; 4] = [
    "nested:kvm",
    "nested:hyperv",
    "nested:xen",
    "nested:xen+hyperv",
];
const PARTIAL: [&str; 4] = [
    "nested:hyperv:no-stimer",
    "nested:hyperv:no-frequencies",
    "nested:hyperv:no-flush-ipi",
    "nested:hyperv:minimal",
];
const BAD_INPUT: [&str; 3] = [
    "nested:bad-flag",
    "nested:fault-triple",
    "nested:fault-hang",
];
/// Two vCPUs (`nested_smp2_xen`).
const SMP2: [&str; 1] = ["nested:xen:smp2"];
/// Booted by hand only (`cargo run -- nested:hyperv:smp2`), not in the
/// default set: a known defect of the peer, see the scenario's comment.
/// `nested:kvm:smp2`: defined, not yet booted.
const BY_HAND: [&str; 2] = ["nested:hyperv:smp2", "nested:kvm:smp2"];

/// Boots `names`; `None` when the host cannot run them (SKIP printed).
fn boot(names: &[&str]) -> Option<Vec<ScenarioReport>> {
    let v: Vec<Option<ScenarioReport>> = boot_all(names, &RunOptions::default());
    if v.iter().any(Option::is_none) {
        return None;
    }
    Some(v.into_iter().flatten().collect())
}

/// A completed nested run: passed, with L1 KVM's counts in the report.
fn assert_nested_pass(r: &ScenarioReport) {
    assert_verdict_pass(r);
    assert_eq!(
        r.result.exit_counter(),
        Some("nested-kvm"),
        "{}",
        context(r)
    );
    let j = report::to_json(r);
    assert_eq!(j["exit_counter"], "nested-kvm");
    for key in [
        "total",
        "io",
        "mmio",
        "halt",
        "hypercalls",
        "irq_window",
        "reasons",
    ] {
        assert!(
            !j["exits"][key].is_null(),
            "exits.{key} missing: {}",
            j["exits"]
        );
    }
    assert!(metric(r, Metric::Reason("cpuid")) > 0, "{}", context(r));
    assert!(metric(r, Metric::Console) > 0, "{}", context(r));
}

fn pair(name: &str) {
    let native = scenario::find(name)
        .and_then(|s| s.native_pair)
        .expect("nested pair");
    let Some(v) = boot(&[name, native]) else {
        return;
    };
    let (b, n) = (&v[0], &v[1]);
    assert_nested_pass(b);
    assert_nested_pass(n);
    let f = verdict::judge_pair(b, n);
    assert!(f.is_empty(), "{f:#?}\n{}\n{}", context(b), context(n));
    let j = report::compare_json(b, n);
    assert_eq!(j["holds"], true, "{j}");
    eprintln!(
        "{name}: exits without the console {} (backend {}) vs {} (native)",
        metric(b, Metric::TotalNoConsole),
        b.result.backend.as_deref().unwrap_or("?"),
        metric(n, Metric::TotalNoConsole)
    );
}

#[test]
fn nested_kvm_and_native_pair() {
    pair("nested:kvm");
}

#[test]
fn nested_hyperv_and_native_pair() {
    pair("nested:hyperv");
}

#[test]
fn nested_xen_and_native_pair() {
    pair("nested:xen");
}

#[test]
fn nested_xen_hyperv_and_native_pair() {
    pair("nested:xen+hyperv");
}

#[test]
fn nested_hyperv_partial_enlightenments() {
    let Some(v) = boot(&PARTIAL) else {
        return;
    };
    for r in &v {
        assert_nested_pass(r);
    }
    // Without the frequency MSRs the kvm backend (KVM's leaves above
    // Hyper-V's) still has kvmclock: an exact frequency and
    // time.clock-vs-tsc passes, no PIT calibration.
    let nofreq = &v[1];
    assert_eq!(
        nofreq.result.backend.as_deref(),
        Some("kvm"),
        "{}",
        context(nofreq)
    );
    assert_eq!(
        nofreq.result.tsc_source.as_deref(),
        Some("pvclock"),
        "{}",
        context(nofreq)
    );
    assert!(
        nofreq
            .result
            .selftests
            .get("time.clock-vs-tsc")
            .is_some_and(|t| t.pass),
        "{}",
        context(nofreq)
    );
}

#[test]
fn nested_bad_input_has_its_own_verdicts() {
    let Some(v) = boot(&BAD_INPUT) else {
        return;
    };
    let wants = [
        "L2's QEMU refused its configuration",
        "L2 triple-faulted",
        "L2 never reported",
    ];
    for (r, want) in v.iter().zip(wants) {
        assert_verdict_pass(r);
        assert!(
            r.notes.iter().any(|n| n.contains(want)),
            "{want:?} not in {:?}\n{}",
            r.notes,
            context(r)
        );
    }
}

#[test]
fn every_nested_scenario_has_a_test() {
    let covered: Vec<String> = PAIRS
        .iter()
        .flat_map(|p| [p.to_string(), format!("{p}/native")])
        .chain(
            PARTIAL
                .iter()
                .chain(&BAD_INPUT)
                .chain(&SMP2)
                .chain(&BY_HAND)
                .map(|s| s.to_string()),
        )
        .collect();
    for s in scenario::ALL
        .iter()
        .filter(|s| s.name.starts_with("nested:"))
    {
        assert!(
            covered.iter().any(|c| c == s.name),
            "{} has no test",
            s.name
        );
        assert!(
            s.requires.contains(&scenario::Requirement::NestedImage),
            "{}",
            s.name
        );
    }
    assert_eq!(
        covered.len(),
        scenario::ALL
            .iter()
            .filter(|s| s.name.starts_with("nested:"))
            .count()
    );
}

/// Issue 13: two vCPUs in L2 (and in L1, single-threaded TCG) under
/// QEMU/KVM's Xen emulation: every CPU online, each set up through the
/// backend's `init_cpu`, and the `smp.*` self-tests pass on each.
/// (`nested:hyperv:smp2` is booted by hand, `cargo run -- nested:hyperv:smp2`:
/// L1's KVM sometimes reports a wrong Hyper-V TSC frequency there, see its
/// scenario.)
#[test]
fn nested_smp2_xen() {
    let Some(v) = boot(&SMP2) else {
        return;
    };
    for (r, backend) in v.iter().zip(["xen"]) {
        assert_nested_pass(r);
        assert_eq!(r.result.backend.as_deref(), Some(backend), "{}", context(r));
        assert_eq!(
            r.result.smp.map(|(_, online)| online),
            Some(2),
            "{}",
            context(r)
        );
        for t in verdict::SMP_TESTS {
            assert!(
                r.result.selftests.get(*t).is_some_and(|s| s.pass),
                "{t} did not pass: {}",
                context(r)
            );
        }
    }
}
