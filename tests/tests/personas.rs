//! The microvisor's hypervisor personas (vmware, xen, xen+viridian,
//! hyperv, kvm+hyperv), their break switches, and each backend run against
//! the same persona with the guest forced to `pvops=native`.
//!
//! Expectations come from the backends' own documentation of what they
//! own and when (`backends/src/<backend>/mod.rs`, `docs/backends/*.md`);
//! the scenario table declares them (`qemu_runner::scenario`) and the
//! assertions here restate the key ones explicitly.

use pvops_tests::{
    assert_count, assert_exits, assert_persona_guest, assert_verdict_pass, boot, boot_pair,
    context, interfaces, metric,
};
use qemu_runner::scenario::{
    self, Count, Metric, Owners, HV_TIME_REF_COUNT, HYPERV_HYPERCALLS_FAIL, HYPERV_NO_HYPERCALLS,
    HYPERV_OWNS, VMWARE_OWNS, XEN_HYPERCALLS_AND_TIME_LEAF, XEN_NO_TIMER, XEN_OWNS,
    XEN_SET_SINGLESHOT_TIMER,
};
use qemu_runner::{report, verdict, RunOptions, ScenarioReport};
use std::collections::BTreeSet;

/// IA32_TSC_DEADLINE: written by the native one-shot timer.
const TSC_DEADLINE: u32 = 0x6e0;
/// The port of the native `cpu.io_delay`.
const IO_DELAY_PORT: u16 = 0x80;
/// The personas whose `microvisor:<persona>:smp4` has a `pvops=native`
/// pair (issue 14).
const SMP4_PAIRED: [&str; 4] = ["vmware", "kvm", "hyperv", "xen"];

fn owner<'a>(r: &'a ScenarioReport, entry: &str) -> Option<&'a str> {
    r.result.owners.get(entry).map(String::as_str)
}

/// Both runs of a pair passed, the pair's declared properties hold, and
/// the JSON comparison carries both runs' exit counts.
fn assert_pair(b: &ScenarioReport, n: &ScenarioReport) {
    assert_verdict_pass(b);
    assert_verdict_pass(n);
    let f = verdict::judge_pair(b, n);
    assert!(f.is_empty(), "{f:#?}\n{}\n{}", context(b), context(n));
    let j = report::compare_json(b, n);
    assert_eq!(j["native_scenario"], n.scenario.name);
    assert_eq!(j["backend"]["total"], metric(b, Metric::Total));
    assert_eq!(j["native"]["total"], metric(n, Metric::Total));
    assert_eq!(j["backend"]["pit"], metric(b, Metric::Pit));
    assert_eq!(j["native"]["pit"], metric(n, Metric::Pit));
    assert_eq!(j["holds"], true);
}

// ---- VMware ---------------------------------------------------------------

#[test]
fn vmware_and_native_pair() {
    let (b, n) = boot_pair("microvisor:vmware", &RunOptions::default());
    assert_persona_guest(&b, "vmware", "vmware", &VMWARE_OWNS, "cpuid-0x40000010");
    assert_exits(&b);
    for entry in ["time.tsc_frequency", "time.monotonic_ns", "cpu.io_delay"] {
        assert_eq!(owner(&b, entry), Some("vmware"), "{entry}\n{}", context(&b));
    }
    assert_count(&b, Metric::Pit, Count::Zero);
    assert_count(&b, Metric::Port(IO_DELAY_PORT), Count::Zero);

    // pvops=native is the bare-hardware baseline: it ignores the timing
    // leaf and calibrates against the PIT; io_delay is an OUT to port 0x80.
    assert_persona_guest(&n, "vmware", "native", &Owners::NATIVE, "pit-calibration");
    assert_count(&n, Metric::Pit, Count::NonZero);
    assert_count(&n, Metric::Port(IO_DELAY_PORT), Count::NonZero);
    assert_pair(&b, &n);
    assert!(
        metric(&b, Metric::IoNoConsole) < metric(&n, Metric::IoNoConsole),
        "{}\n{}",
        context(&b),
        context(&n)
    );
}

// ---- Xen ------------------------------------------------------------------

#[test]
fn xen_and_native_pair() {
    let (b, n) = boot_pair("microvisor:xen", &RunOptions::default());
    assert_persona_guest(&b, "xen", "xen", &XEN_OWNS, "pvclock");
    assert_exits(&b);
    assert_count(&b, Metric::Pit, Count::Zero);
    // Ticks come through the event channel: the microvisor counted
    // VCPUOP_set_singleshot_timer, and the native TSC-deadline timer was
    // never armed.
    assert_count(
        &b,
        Metric::Hypercall(XEN_SET_SINGLESHOT_TIMER),
        Count::NonZero,
    );
    assert_count(&b, Metric::MsrWrites(TSC_DEADLINE), Count::Zero);
    assert_count(&b, Metric::Port(IO_DELAY_PORT), Count::Zero);

    assert_persona_guest(&n, "xen", "native", &Owners::NATIVE, "pit-calibration");
    assert_count(&n, Metric::Pit, Count::NonZero);
    assert_count(&n, Metric::MsrWrites(TSC_DEADLINE), Count::NonZero);
    assert_count(&n, Metric::Hypercalls, Count::Zero);
    assert_pair(&b, &n);
}

#[test]
fn xen_viridian_picks_xen() {
    let r = boot("microvisor:xen+viridian").expect("TCG scenario must run");
    assert_verdict_pass(&r);
    assert_persona_guest(&r, "hyperv", "xen", &XEN_OWNS, "pvclock");
    assert_eq!(
        interfaces(&r),
        [(0x4000_0000, "hyperv"), (0x4000_0100, "xen")],
        "{}",
        context(&r)
    );
    assert_count(
        &r,
        Metric::Hypercall(XEN_SET_SINGLESHOT_TIMER),
        Count::NonZero,
    );
}

#[test]
fn xen_break_hypercall_page_falls_back_to_native() {
    let r = boot("microvisor:xen:break=hypercall-page").expect("TCG scenario must run");
    assert_verdict_pass(&r);
    assert_persona_guest(&r, "xen", "native", &Owners::NATIVE, "pit-calibration");
    assert!(
        r.result
            .backend_reason
            .as_deref()
            .is_some_and(|w| w.contains("hypercall page")),
        "the fallback names the failed step\n{}",
        context(&r)
    );
    assert_count(&r, Metric::Hypercalls, Count::Zero);
    assert_count(&r, Metric::Pit, Count::NonZero);
}

/// shared_info or the pvclock unusable: Xen keeps only what needs just
/// hypercalls and the TSC frequency of base+3 (never a PIT calibration when
/// Xen gives one); the clock is the native TSC and the timer the native one.
fn xen_without_pvclock(name: &str) {
    let r = boot(name).expect("TCG scenario must run");
    assert_verdict_pass(&r);
    assert_persona_guest(
        &r,
        "xen",
        "xen",
        &XEN_HYPERCALLS_AND_TIME_LEAF,
        "xen-cpuid-time-leaf",
    );
    assert_count(&r, Metric::Pit, Count::Zero);
    assert_count(&r, Metric::Hypercall(XEN_SET_SINGLESHOT_TIMER), Count::Zero);
    assert_count(&r, Metric::MsrWrites(TSC_DEADLINE), Count::NonZero);
    assert_count(&r, Metric::Hypercalls, Count::NonZero);
}

#[test]
fn xen_break_shared_info_keeps_hypercall_entries() {
    xen_without_pvclock("microvisor:xen:break=shared-info");
}

#[test]
fn xen_break_pvclock_odd_keeps_hypercall_entries() {
    xen_without_pvclock("microvisor:xen:break=pvclock-odd");
}

#[test]
fn xen_break_evtchn_keeps_pvclock_native_timer() {
    let r = boot("microvisor:xen:break=evtchn").expect("TCG scenario must run");
    assert_verdict_pass(&r);
    assert_persona_guest(&r, "xen", "xen", &XEN_NO_TIMER, "pvclock");
    assert_count(&r, Metric::Pit, Count::Zero);
    assert_count(&r, Metric::Hypercall(XEN_SET_SINGLESHOT_TIMER), Count::Zero);
    assert_count(&r, Metric::MsrWrites(TSC_DEADLINE), Count::NonZero);
}

// ---- Hyper-V --------------------------------------------------------------

#[test]
fn hyperv_and_native_pair() {
    let (b, n) = boot_pair("microvisor:hyperv", &RunOptions::default());
    assert_persona_guest(&b, "hyperv", "hyperv", &HYPERV_OWNS, "hyperv-msr");
    assert_exits(&b);
    assert_count(&b, Metric::Pit, Count::Zero);
    assert_count(&b, Metric::Hypercalls, Count::NonZero);
    // The clock comes from the reference TSC page: no counter MSR reads.
    assert_count(&b, Metric::MsrReads(HV_TIME_REF_COUNT), Count::Zero);

    assert_persona_guest(&n, "hyperv", "native", &Owners::NATIVE, "pit-calibration");
    assert_count(&n, Metric::Eoi, Count::NonZero);
    assert_pair(&b, &n);
    assert!(
        metric(&b, Metric::Eoi) < metric(&n, Metric::Eoi),
        "lazy EOI saves EOI exits\n{}\n{}",
        context(&b),
        context(&n)
    );
}

#[test]
fn hyperv_break_hypercall_page() {
    let r = boot("microvisor:hyperv:break=hypercall-page").expect("TCG scenario must run");
    assert_verdict_pass(&r);
    assert_persona_guest(&r, "hyperv", "hyperv", &HYPERV_NO_HYPERCALLS, "hyperv-msr");
    assert_count(&r, Metric::Hypercalls, Count::Zero);
}

#[test]
fn hyperv_break_hypercall_error() {
    let r = boot("microvisor:hyperv:break=hypercall-error").expect("TCG scenario must run");
    assert_verdict_pass(&r);
    assert_persona_guest(
        &r,
        "hyperv",
        "hyperv",
        &HYPERV_HYPERCALLS_FAIL,
        "hyperv-msr",
    );
    // The flush probe and the IPI self-test's calls were made, and refused.
    assert_count(&r, Metric::Hypercalls, Count::NonZero);
}

#[test]
fn hyperv_break_tsc_page_reads_reference_counter() {
    let r = boot("microvisor:hyperv:break=tsc-page").expect("TCG scenario must run");
    assert_verdict_pass(&r);
    assert_persona_guest(&r, "hyperv", "hyperv", &HYPERV_OWNS, "hyperv-msr");
    assert_count(&r, Metric::MsrReads(HV_TIME_REF_COUNT), Count::NonZero);
}

/// Every persona scenario whose guest runs to the end declares its owners,
/// its TSC source and (for the unbroken backends) zero PIT exits; a pair's
/// native side forces native.
#[test]
fn persona_scenarios_are_declared_completely() {
    for s in scenario::ALL
        .iter()
        .filter(|s| s.uses_microvisor() && !s.name.starts_with("microvisor:fault"))
        .filter(|s| s.expect.guest_completes && s.guest == scenario::Guest::ExampleKernel)
        .filter(|s| !matches!(s.name, "microvisor:none" | "microvisor:bare"))
        .filter(|s| !s.name.starts_with("matrix:"))
    {
        let e = &s.expect;
        assert!(e.owners.is_some(), "{}: owners", s.name);
        assert!(e.backend.is_some() && e.hypervisor.is_some(), "{}", s.name);
        if let Some(pair) = s.native_pair {
            let p = scenario::find(pair).unwrap();
            // The native side runs what its pair runs (an SMP pair's
            // bench too), forced to native.
            let forced = format!("pvops=native {}", s.guest_cmdline);
            assert_eq!(p.guest_cmdline, forced.trim_end(), "{pair}");
            assert_eq!(p.boot, s.boot, "{pair} boots the same persona");
            assert!(!e.fewer_than_native.is_empty(), "{}", s.name);
            assert!(
                e.counts
                    .iter()
                    .any(|&(m, c)| m == Metric::Pit && c == Count::Zero),
                "{}: zero PIT exits",
                s.name
            );
        }
    }
    // Each persona with a backend has its pair with one vCPU and with
    // four (real KVM's and the nested peers' pairs are not microvisor
    // scenarios).
    let paired: BTreeSet<&str> = scenario::ALL
        .iter()
        .filter(|s| s.uses_microvisor() && s.native_pair.is_some())
        .map(|s| s.name)
        .collect();
    let one = ["vmware", "xen", "hyperv", "kvm"].map(|p| format!("microvisor:{p}"));
    let mut smp4 = SMP4_PAIRED.map(|p| format!("microvisor:{p}:smp4")).to_vec();
    smp4.push("microvisor:kvm:smp8".to_string());
    let expected: BTreeSet<&str> = one.iter().chain(&smp4).map(String::as_str).collect();
    assert_eq!(paired, expected);
}
