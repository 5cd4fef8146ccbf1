//! Real peers: QEMU's microVM machine (no PIT, no PIC, no RTC), the
//! microvisor with `pit=off`, and KVM's own exit counters read over QMP.
//!
//! microVM and the microvisor run under TCG and always run; the KVM tests
//! print `SKIP <name>: <why>` when /dev/kvm is not usable.

use pvops_tests::{assert_verdict_pass, boot, boot_all, context, metric};
use qemu_runner::parse::{ExitCounter, KvmCounters};
use qemu_runner::scenario::{self, Metric, TIME_TESTS_NEEDING_A_FREQUENCY};
use qemu_runner::{report, verdict, RunOptions, ScenarioReport};

/// The guest found no TSC frequency source and said so: `tsc khz=0
/// source=none`, exactly the frequency-dependent time tests unsupported,
/// every other self-test passed, and the `done` record agrees.
fn assert_no_frequency_source(r: &ScenarioReport) {
    let ctx = || context(r);
    let res = &r.result;
    assert_eq!(res.tsc_source.as_deref(), Some("none"), "{}", ctx());
    assert_eq!(res.tsc_khz, Some(0), "{}", ctx());
    let mut unsupported = res.selftests_unsupported();
    unsupported.sort_unstable();
    let mut want = TIME_TESTS_NEEDING_A_FREQUENCY.to_vec();
    want.sort_unstable();
    assert_eq!(unsupported, want, "{}", ctx());
    let failed: Vec<_> = res
        .selftests
        .iter()
        .filter(|(_, t)| !t.pass && !t.unsupported)
        .collect();
    assert!(failed.is_empty(), "{failed:?}\n{}", ctx());
    let done = res.done.as_ref().expect("done record");
    assert_eq!(
        (done.unsupported, done.verdict.as_str()),
        (want.len() as u64, "pass"),
        "{}",
        ctx()
    );
    assert_eq!(done.passed + done.unsupported, done.total, "{}", ctx());
    let j = report::to_json(r);
    assert_eq!(j["selftests"]["time.clock-vs-tsc"], "unsupported");
    assert_eq!(j["tsc_source"], "none");
    assert!(
        report::row(r)[3].contains("4 unsupported"),
        "{:?}",
        report::row(r)
    );
}

/// microVM under TCG: nothing gives a TSC frequency (no PIT, no CPUID
/// 0x15, no hypervisor leaf), so none is invented.
#[test]
fn microvm_tcg_has_no_frequency_source() {
    let r = boot("microvm:tcg").expect("TCG scenario must run");
    assert_verdict_pass(&r);
    assert_eq!(r.result.hypervisor.as_deref(), Some("qemu-tcg"));
    assert_no_frequency_source(&r);
}

/// The microvisor's `pit=off`: persona none finds no frequency after one
/// look at port 0x61; Xen and Hyper-V still get exact frequencies from
/// their interfaces and never touch the PIT.
#[test]
fn microvisor_without_a_pit() {
    let names = [
        "microvisor:none:pit=off",
        "microvisor:xen:pit=off",
        "microvisor:hyperv:pit=off",
    ];
    let runs: Vec<ScenarioReport> = boot_all(&names, &RunOptions::default())
        .into_iter()
        .map(|r| r.expect("TCG scenario must run"))
        .collect();
    for r in &runs {
        assert_verdict_pass(r);
        assert_eq!(report::to_json(r)["exit_counter"], "microvisor");
    }
    let none = &runs[0];
    assert_no_frequency_source(none);
    // One read of port 0x61 (all ones) was enough to know.
    assert_eq!(metric(none, Metric::Pit), 1, "{}", context(none));
    for (r, source) in [(&runs[1], "pvclock"), (&runs[2], "hyperv-msr")] {
        assert_eq!(
            r.result.tsc_source.as_deref(),
            Some(source),
            "{}",
            context(r)
        );
        assert!(r.result.tsc_khz.unwrap_or(0) > 0, "{}", context(r));
        assert_eq!(metric(r, Metric::Pit), 0, "{}", context(r));
        assert!(
            r.result.selftests_unsupported().is_empty(),
            "{}",
            context(r)
        );
    }
}

/// Whether KVM can run here; prints `SKIP <test>: <why>` when not.
fn kvm_or_skip(test: &str) -> bool {
    match qemu_runner::qemu::kvm_usable() {
        Ok(()) => true,
        Err(why) => {
            eprintln!("SKIP {test}: {why}");
            false
        }
    }
}

/// KVM's counters of a run: read (the guest held until the runner had
/// them), counted by KVM, with the JSON's `exits` carrying the named
/// counters. `None` (after printing why) when this QEMU or host cannot
/// give them.
fn kvm_counters(r: &ScenarioReport) -> Option<()> {
    let ctx = || context(r);
    match &r.result.kvm {
        Some(KvmCounters::Read(_)) => {}
        Some(KvmCounters::Unavailable { reason, failure }) => {
            assert!(!failure, "{reason}\n{}", ctx());
            eprintln!("SKIP KVM counters of {}: {reason}", r.scenario.name);
            return None;
        }
        None => panic!("no KVM counters for a KVM run\n{}", ctx()),
    }
    assert!(r.result.held, "the guest never held\n{}", ctx());
    let (counter, e) = r.result.counted().expect("counters");
    assert_eq!(counter, ExitCounter::Kvm);
    assert!(e.total > 0, "{}", ctx());
    // The self-tests halt at least once (irq.safe-halt).
    assert!(metric(r, Metric::Kvm("halt_exits")) >= 1, "{}", ctx());
    let j = report::to_json(r);
    assert_eq!(j["exit_counter"], "kvm");
    for key in ["total", "io", "mmio", "halt", "hypercalls", "irq_window"] {
        assert!(
            j["exits"][key].is_u64(),
            "exits.{key} missing: {}",
            j["exits"]
        );
    }
    assert_eq!(j["exits"]["total"], e.total);
    Some(())
}

/// microVM and the PC machine under KVM, each with its `pvops=native`
/// pair: the guests pass (microVM without a frequency source until a KVM
/// backend reads kvmclock), KVM's own counters are read and compared.
#[test]
fn kvm_counters_and_microvm_under_kvm() {
    if !kvm_or_skip("kvm_counters_and_microvm_under_kvm") {
        return;
    }
    let names = ["kvm", "kvm/native", "microvm:kvm", "microvm:kvm/native"];
    let runs: Vec<ScenarioReport> = boot_all(&names, &RunOptions::default())
        .into_iter()
        .map(|r| r.expect("KVM is usable"))
        .collect();
    for r in &runs {
        assert_verdict_pass(r);
        assert_eq!(
            r.result.hypervisor.as_deref(),
            Some("kvm"),
            "{}",
            context(r)
        );
    }
    for r in &runs[2..] {
        if r.result.backend.as_deref() == Some("native") {
            assert_no_frequency_source(r);
        }
    }
    let counted = runs.iter().all(|r| kvm_counters(r).is_some());
    for pair in [&runs[..2], &runs[2..]] {
        let (b, n) = (&pair[0], &pair[1]);
        assert_eq!(b.scenario.native_pair, Some(n.scenario.name));
        let f = verdict::judge_pair(b, n);
        assert!(f.is_empty(), "{f:?}\n{}\n{}", context(b), context(n));
        if counted {
            let j = report::compare_json(b, n);
            assert_eq!(j["exit_counter"], "kvm");
            assert_eq!(j["backend"]["total"], metric(b, Metric::Total));
            assert_eq!(j["native"]["total"], metric(n, Metric::Total));
            assert!(report::compare_table(&runs).contains(b.scenario.name));
        }
    }
    // After the runs above: only this test makes QMP sockets.
    kvm_run_that_qemu_refuses_fails_clearly();
}

/// QEMU refusing a flag under KVM: a clear verdict with QEMU's own error,
/// no hang, nothing left behind (the QMP socket is removed).
fn kvm_run_that_qemu_refuses_fails_clearly() {
    let base = scenario::find("microvm:kvm").expect("scenario");
    let bad: &'static scenario::Scenario = Box::leak(Box::new(scenario::Scenario {
        name: "microvm:kvm:refused",
        qemu_args: &["-M", "microvm,no-such-option=on"],
        native_pair: None,
        ..*base
    }));
    let r = qemu_runner::run_scenario(bad, &RunOptions::default());
    assert!(!r.passed(), "{}", context(&r));
    let first = r.failures.first().cloned().unwrap_or_default();
    assert!(
        first.contains("no pvops exit code") && first.contains("no-such-option"),
        "{}",
        context(&r)
    );
    assert!(
        matches!(
            r.result.kvm,
            Some(KvmCounters::Unavailable { failure: false, .. })
        ),
        "{:?}",
        r.result.kvm
    );
    // Neither this run nor the four before it left a socket behind.
    let left = qmp_sockets();
    assert!(left.is_empty(), "QMP sockets left behind: {left:?}");
}

/// This process's QMP sockets in the temporary directory.
fn qmp_sockets() -> Vec<String> {
    let prefix = format!("pvops-qmp-{}-", std::process::id());
    std::fs::read_dir(std::env::temp_dir())
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(&prefix))
                .collect()
        })
        .unwrap_or_default()
}
