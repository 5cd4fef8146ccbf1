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
/// Two vCPUs (`nested_smp2`), with the backend each must run.
const SMP2: [(&str, &str); 5] = [
    ("nested:xen:smp2", "xen"),
    ("nested:xen+hyperv:smp2", "xen"),
    ("nested:kvm:smp2", "kvm"),
    ("nested:kvm:smp2/native", "native"),
    ("nested:hyperv:smp2", "hyperv"),
];

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
                .chain(SMP2.iter().map(|(s, _)| s))
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
/// QEMU/KVM's Xen emulation (with and without Hyper-V enlightenments beside
/// it), plain KVM (kvm_amd: PV IPIs, PV TLB flush and
/// PV spinlocks by hypercall) and KVM's Hyper-V emulation: every CPU
/// online, each set up through the backend's `init_cpu`, the `smp.*`
/// self-tests pass on each, and the cross-CPU operations went through the
/// backend where the peer offers them.
#[test]
fn nested_smp2() {
    let names: Vec<&str> = SMP2.iter().map(|(s, _)| *s).collect();
    let Some(v) = boot(&names) else {
        return;
    };
    for (r, (_, backend)) in v.iter().zip(SMP2) {
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
        let detail = |t: &str| {
            r.result
                .selftests
                .get(t)
                .map(|s| s.detail.clone())
                .unwrap_or_default()
        };
        if r.scenario.name.starts_with("nested:kvm:smp2") {
            assert_cross_cpu_bench(r);
        }
        // The contended lock waited through `backend`'s `lock.wait`, and
        // the lock-kick test's AP (in `lock.wait` with interrupts off) was
        // woken by `backend`'s `lock.kick`; gives that test's detail.
        let lock_paths_are_the_backends = || {
            assert!(
                detail("smp.spinlock").contains(&format!("lock.wait: {backend}")),
                "{}",
                context(r)
            );
            let kick = detail("smp.lock-kick");
            assert!(
                kick.contains(&format!("lock.wait ({backend})"))
                    && kick.contains(&format!("lock.kick ({backend})"))
                    && kick.contains("finished true"),
                "{kick}\n{}",
                context(r)
            );
            kick
        };
        match backend {
            "kvm" => {
                assert!(
                    detail("smp.ipi-all").contains("owner kvm"),
                    "PV IPI not used: {}",
                    context(r)
                );
                assert!(
                    detail("smp.tlb-shootdown").contains("flush_remote (kvm)"),
                    "PV TLB flush not used: {}",
                    context(r)
                );
                // The AP halted with interrupts off: only KVM_HC_KICK_CPU
                // can have ended that HLT, in one or two waits (a kick
                // racing the first HLT makes it return at once).
                let kick = lock_paths_are_the_backends();
                let waits: u64 = kick
                    .rsplit(" in ")
                    .next()
                    .and_then(|t| t.split(' ').next())
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(u64::MAX);
                assert!((1..=2).contains(&waits), "{kick}\n{}", context(r));
            }
            "hyperv" => {
                // The MSR, or (when L1's KVM misreports it with the TSC page
                // invalid) the frequency measured against the reference
                // counter: the time self-tests above judged it.
                let source = r.result.tsc_source.as_deref();
                assert!(
                    matches!(source, Some("hyperv-msr" | "hyperv-reference-counter")),
                    "tsc source {source:?}: {}",
                    context(r)
                );
                assert!(
                    detail("smp.ipi-all").contains("owner hyperv"),
                    "{}",
                    context(r)
                );
                assert!(
                    detail("smp.tlb-shootdown").contains("flush_remote (hyperv)"),
                    "{}",
                    context(r)
                );
            }
            "xen" => {
                // Xen's own lock paths: the AP blocked in SCHEDOP_poll with
                // interrupts off and the kick's EVTCHNOP_send ended it.
                lock_paths_are_the_backends();
            }
            _ => {}
        }
    }
}

/// The pair's `smpbench=cross`: every shootdown and IPI fan-out to the
/// other CPU finished, and L1's KVM counted at least one exit per
/// operation (the IPI's or the hypercall's).
fn assert_cross_cpu_bench(r: &ScenarioReport) {
    use qemu_runner::smp_bench::exits_per_op;
    let res = &r.result;
    assert!(res.smp_bench_end.is_some(), "{}", context(r));
    for name in ["shootdown", "ipi-fanout"] {
        let b = res
            .smp_bench
            .iter()
            .find(|b| b.name == name && b.cpus == 2)
            .unwrap_or_else(|| panic!("no smpbench {name} N=2\n{}", context(r)));
        assert_eq!(b.completed, b.ops, "{b:?}\n{}", context(r));
        let (e, counter) =
            exits_per_op(res, b).unwrap_or_else(|| panic!("{name}: no exits\n{}", context(r)));
        assert_eq!(counter, "nested-kvm", "{b:?}");
        assert!(e >= 1.0, "{name}: {e} exits/op\n{}", context(r));
    }
}
