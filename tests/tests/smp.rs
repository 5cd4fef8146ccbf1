//! Several CPUs (issue 13): the example kernel starts every AP of the MADT
//! by INIT-SIPI-SIPI, sets each up through `pvops_backends::init_cpu`, and
//! passes the `smp.*` self-tests on all of them; an AP that never answers
//! is reported with its APIC ID and the boot goes on. KVM scenarios print
//! `SKIP <name>: <why>` without a usable `/dev/kvm`.

use std::collections::BTreeSet;

use pvops_tests::{assert_guest, assert_verdict_pass, boot, context, field, record};
use qemu_runner::parse::{parse_line, Line, Record};
use qemu_runner::scenario::smp::GHOST_APIC;
use qemu_runner::verdict::SMP_TESTS;
use qemu_runner::ScenarioReport;

/// Every `@@ <kind>` record of a run, in order.
fn records(r: &ScenarioReport, kind: &str) -> Vec<Record> {
    let serial = r.raw.as_ref().map_or("", |raw| raw.serial.as_str());
    serial
        .lines()
        .filter_map(|l| match parse_line(l) {
            Line::Record(rec) if rec.kind == kind => Some(rec),
            _ => None,
        })
        .collect()
}

/// `@@ smp` says `cpus` CPUs in the MADT, all online; one `@@ ap` record
/// per AP, each online with its own pvops index (1..cpus) and APIC ID
/// under `backend`; and no AP record but those and the `no_answer` ones.
fn assert_all_online(r: &ScenarioReport, cpus: usize, backend: &str, no_answer: &[u64]) {
    let smp = record(r, "smp");
    assert_eq!(field(&smp, "madt"), "ok", "{}", context(r));
    assert_eq!(field(&smp, "cpus"), cpus.to_string(), "{}", context(r));
    assert_eq!(field(&smp, "online"), cpus.to_string(), "{}", context(r));
    let aps = records(r, "ap");
    let (online, other): (Vec<_>, Vec<_>) =
        aps.iter().partition(|a| field(a, "status") == "online");
    assert_eq!(online.len(), cpus - 1, "{aps:?}\n{}", context(r));
    let indices: BTreeSet<usize> = online
        .iter()
        .map(|a| field(a, "index").parse().unwrap())
        .collect();
    assert_eq!(
        indices,
        (1..cpus).collect::<BTreeSet<_>>(),
        "{aps:?}\n{}",
        context(r)
    );
    let apics: BTreeSet<&str> = online.iter().map(|a| field(a, "apic")).collect();
    assert_eq!(apics.len(), cpus - 1, "APIC IDs not distinct: {aps:?}");
    for a in &online {
        assert_eq!(field(a, "backend"), backend, "{a:?}");
    }
    let silent: Vec<u64> = other
        .iter()
        .map(|a| {
            assert_eq!(field(a, "status"), "no-answer", "{a:?}\n{}", context(r));
            assert_eq!(field(a, "index"), "-", "{a:?}");
            field(a, "apic").parse().unwrap()
        })
        .collect();
    assert_eq!(silent, no_answer, "{aps:?}\n{}", context(r));
}

/// Every `smp.*` self-test passed, and the warp test saw no backward step
/// over real readings from every CPU.
fn assert_smp_tests_pass(r: &ScenarioReport, cpus: usize) {
    for t in SMP_TESTS {
        let s = r
            .result
            .selftests
            .get(*t)
            .unwrap_or_else(|| panic!("{t} not reported\n{}", context(r)));
        assert!(s.pass, "{t}: {}\n{}", s.detail, context(r));
    }
    let warp = &r.result.selftests["smp.clock-warp"].detail;
    assert!(
        warp.contains("largest backward step 0 ns"),
        "{warp}\n{}",
        context(r)
    );
    assert!(
        warp.contains(&format!("on {cpus} CPUs")),
        "{warp}\n{}",
        context(r)
    );
    let tlb = &r.result.selftests["smp.tlb-shootdown"].detail;
    let aps = cpus - 1;
    assert!(
        tlb.contains(&format!(
            "{aps}/{aps} APs read the old frame, then {aps}/{aps} the new one"
        )),
        "{tlb}\n{}",
        context(r)
    );
    let lock = &r.result.selftests["smp.spinlock"].detail;
    assert!(
        lock.contains("0 grant(s) out of ticket order"),
        "{lock}\n{}",
        context(r)
    );
}

/// TCG with 4 vCPUs: every AP online through pvops, every per-CPU test
/// passes.
#[test]
fn tcg_smp4_brings_every_cpu_online() {
    let Some(r) = boot("tcg:smp4") else { return };
    assert_verdict_pass(&r);
    assert_guest(&r, "qemu-tcg", "native", "native");
    assert_all_online(&r, 4, "native", &[]);
    assert_eq!(field(&record(&r, "smp"), "disabled"), "0");
    assert_smp_tests_pass(&r, 4);
}

/// An APIC ID that is not in the MADT, started before the real AP: it is
/// reported `no-answer` with its APIC ID, the real AP still comes up (in
/// the next slot) and the per-CPU tests run on it.
#[test]
fn an_ap_that_never_answers_is_reported_and_the_boot_goes_on() {
    let Some(r) = boot("tcg:smp2:no-answer") else {
        return;
    };
    assert_verdict_pass(&r);
    assert_all_online(&r, 2, "native", &[GHOST_APIC]);
    let ghost = records(&r, "ap")
        .into_iter()
        .find(|a| field(a, "status") == "no-answer")
        .unwrap();
    assert_eq!(field(&ghost, "slot"), "1", "{ghost:?}");
    assert_smp_tests_pass(&r, 2);
}

/// 2 vCPUs present of 4 possible: QEMU's MADT lists the absent two as
/// disabled (neither enabled nor online capable); the guest counts them as
/// such, starts only the present AP and passes the per-CPU tests.
#[test]
fn absent_cpus_of_the_madt_are_not_started() {
    let Some(r) = boot("tcg:smp2:hotplug") else {
        return;
    };
    assert!(
        r.scenario.qemu_args.join(" ").contains("maxcpus=4"),
        "{:?}",
        r.scenario.qemu_args
    );
    assert_verdict_pass(&r);
    assert_all_online(&r, 2, "native", &[]);
    let smp = record(&r, "smp");
    assert_eq!(field(&smp, "disabled"), "2", "{}", context(&r));
    assert_eq!(field(&smp, "left_out"), "0", "{}", context(&r));
    assert_smp_tests_pass(&r, 2);
}

/// The SMP bench's cross-CPU workloads (`smpbench=cross` in the KVM
/// pair): shootdown and IPI fan-out for N = 2 and 4, every operation
/// finished, and each with exits per operation from KVM's own counters
/// (holds around each stretch): at least one exit per target (the IPI or
/// the target's EOI), since this host's KVM virtualises neither.
fn assert_cross_cpu_bench(r: &ScenarioReport) {
    use qemu_runner::smp_bench::exits_per_op;
    let res = &r.result;
    assert!(res.smp_bench_end.is_some(), "{}", context(r));
    for (name, n) in [
        ("shootdown", 2),
        ("ipi-fanout", 2),
        ("shootdown", 4),
        ("ipi-fanout", 4),
    ] {
        let b = res
            .smp_bench
            .iter()
            .find(|b| b.name == name && b.cpus == n)
            .unwrap_or_else(|| panic!("no smpbench {name} N={n}\n{}", context(r)));
        assert_eq!(b.completed, b.ops, "{b:?}\n{}", context(r));
        let (e, counter) = exits_per_op(res, b)
            .unwrap_or_else(|| panic!("{name} N={n}: no exits\n{}", context(r)));
        assert_eq!(counter, "kvm", "{b:?}");
        assert!(
            e >= (n - 1) as f64,
            "{name} N={n}: {e} exits/op\n{}",
            context(r)
        );
    }
    // Not asked: the lock workloads need `smpbench` or `bench`.
    assert!(!res.smp_bench.iter().any(|b| b.name.starts_with("lock")));
}

/// KVM with 4 vCPUs and the kvm backend: each AP has its own kvmclock,
/// steal-time area and PV EOI word (no per-CPU fallback), the clock stays
/// kvmclock's, and the remote flush and lock entries are the backend's
/// where KVM offers them.
#[test]
fn kvm_smp4_sets_up_every_cpu_through_the_kvm_backend() {
    let Some(r) = boot("kvm:smp4") else {
        return;
    };
    assert_verdict_pass(&r);
    assert_all_online(&r, 4, "kvm", &[]);
    assert_smp_tests_pass(&r, 4);
    for a in records(&r, "ap") {
        assert_eq!(field(&a, "fallbacks"), "0", "{a:?}\n{}", context(&r));
    }
    let k = record(&r, "kvm");
    assert_eq!(field(&k, "clock"), "true", "{}", context(&r));
    assert_eq!(field(&k, "steal"), "true", "{}", context(&r));
    let warp = &r.result.selftests["smp.clock-warp"].detail;
    assert!(warp.contains("time.monotonic_ns (kvm)"), "{warp}");
    assert_cross_cpu_bench(&r);
}

/// KVM with 4 vCPUs on this 2-core host (overcommitted), guest native:
/// every AP online, every per-CPU test passes.
#[test]
fn kvm_smp4_native_brings_every_cpu_online() {
    let Some(r) = boot("kvm:smp4/native") else {
        return;
    };
    assert_verdict_pass(&r);
    assert_all_online(&r, 4, "native", &[]);
    assert_smp_tests_pass(&r, 4);
    assert_cross_cpu_bench(&r);
}

/// One CPU (`-smp 1`): the MADT lists only the boot CPU, no AP is started
/// and no `smp.*` test runs (so the tally is as before).
#[test]
fn one_cpu_starts_no_ap_and_runs_no_smp_test() {
    let Some(r) = boot("tcg") else { return };
    assert_verdict_pass(&r);
    let smp = record(&r, "smp");
    assert_eq!(field(&smp, "cpus"), "1", "{}", context(&r));
    assert_eq!(field(&smp, "online"), "1", "{}", context(&r));
    assert!(records(&r, "ap").is_empty(), "{}", context(&r));
    assert!(
        !r.result.selftests.keys().any(|k| k.starts_with("smp.")),
        "{}",
        context(&r)
    );
}
