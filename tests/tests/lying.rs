//! The lying-hypervisor matrix (issue 16, `docs/lying-hypervisors.md`):
//! every case of `qemu_runner::scenario::lying` boots under its lying
//! persona and must end in a passing boot with the entries the backend
//! could not trust native and the reason logged. Cases that hide a working
//! feature also show, from the persona's counters, that the guest never
//! touched it; cases whose hypercall fails on the second call show the
//! first one succeeded.

use pvops_tests::{
    assert_count, assert_owners, assert_verdict_pass, boot_all, context, field, metric, record,
};
use qemu_runner::scenario::{self, lying, Count, Metric, Owners};
use qemu_runner::{RunOptions, ScenarioReport};

/// The backends whose personas lie, with the persona's name.
const BACKENDS: [&str; 4] = ["vmware", "xen", "hyperv", "kvm"];

/// MSR_KVM_STEAL_TIME (KVM msr.rst).
const KVM_STEAL_TIME: u32 = 0x4b56_4d03;
/// HV_X64_MSR_STIMER0_CONFIG and _COUNT (TLFS).
const HV_STIMER0: [u32; 2] = [0x4000_00b0, 0x4000_00b1];
/// The Xen persona's counter code of `VCPUOP_set_singleshot_timer`.
const XEN_SET_SINGLESHOT_TIMER: u64 = 0x1808;

fn number(r: &ScenarioReport, kind: &str, key: &str) -> u64 {
    let rec = record(r, kind);
    qemu_runner::parse::parse_u64(field(&rec, key))
        .unwrap_or_else(|| panic!("{kind}.{key} is no number\n{}", context(r)))
}

/// What every case must show: the runner's verdict (exit code, owners,
/// counters, logged reasons), the owners once more by name, and each
/// stated reason in a log line.
fn assert_case(r: &ScenarioReport) {
    let s = r.scenario;
    assert_verdict_pass(r);
    let e = &s.expect;
    assert!(!e.logged.is_empty(), "{}: no logged reason stated", s.name);
    let serial = r.raw.as_ref().map_or("", |raw| raw.serial.as_str());
    for want in e.logged {
        assert!(
            qemu_runner::verdict::logged(serial, want),
            "no log line contains {want:?}\n{}",
            context(r)
        );
    }
    let owners = e
        .owners
        .unwrap_or_else(|| panic!("{}: owners not stated", s.name));
    let backend = e.backend.expect("backend stated");
    assert_owners(r, backend, &owners);
    if backend == "native" {
        assert_eq!(owners, Owners::NATIVE, "{}", s.name);
    }
    let done = r.result.done.as_ref().expect("checked by the verdict");
    assert_eq!(done.verdict, "pass", "{}", context(r));
}

/// The checks particular to one case, beyond its expectations.
fn assert_particulars(r: &ScenarioReport) {
    let owner = |entry: &str| r.result.owners.get(entry).map(String::as_str);
    match r.scenario.name {
        // Hidden VMMCALL: every backdoor call went over the port.
        "microvisor:vmware:break=vmmcall" => {
            assert_eq!(number(r, "mv.vmware", "vmmcall_calls"), 0, "{}", context(r));
            assert!(number(r, "mv.vmware", "port_calls") > 0, "{}", context(r));
            assert_count(r, Metric::Reason("vmmcall"), Count::Zero);
        }
        // The availability probe answered, the enable call did not.
        "microvisor:vmware:break=stealclock-refused" => {
            assert!(number(r, "mv.vmware", "unsupported") >= 1, "{}", context(r));
            assert_eq!(field(&record(r, "mv.vmware"), "steal_area"), "0x0");
            assert_eq!(owner("time.steal_ns"), Some("native"));
        }
        "microvisor:vmware:break=steal-backwards" | "microvisor:kvm:break=steal-backwards" => {
            assert_ne!(owner("time.steal_ns"), Some("native"), "{}", context(r));
            assert!(r.result.selftests["time.steal"].pass, "{}", context(r));
        }
        // Hidden steal time: the MSR was never read or written.
        "microvisor:kvm:break=hidden-steal" => {
            assert_eq!(metric(r, Metric::Msr(KVM_STEAL_TIME)), 0, "{}", context(r));
            assert_eq!(field(&record(r, "mv.kvm"), "steal"), "false");
        }
        // Hidden synthetic timers: never touched, none fired.
        "microvisor:hyperv:break=hidden-stimer" => {
            for msr in HV_STIMER0 {
                assert_eq!(metric(r, Metric::Msr(msr)), 0, "{msr:#x}\n{}", context(r));
            }
            assert_eq!(number(r, "mv.hyperv", "stimer_fires"), 0, "{}", context(r));
            assert_eq!(owner("time.timer_arm"), Some("native"));
        }
        // The first hypercall (the flush probe) succeeded, later ones failed.
        "microvisor:hyperv:break=hypercall-second-fails" => {
            assert_eq!(owner("mmu.flush_remote"), Some("hyperv"), "{}", context(r));
            assert!(
                number(r, "mv.hyperv", "hypercall_errors") >= 1,
                "{}",
                context(r)
            );
        }
        // One timer accepted, then the native timer took over.
        "microvisor:xen:break=timer-second-fails" => {
            assert_count(
                r,
                Metric::Hypercall(XEN_SET_SINGLESHOT_TIMER),
                Count::AtLeast(2),
            );
            for t in ["irq.timer-eoi", "time.clock-vs-timer", "time.timer-cancel"] {
                assert!(r.result.selftests[t].pass, "{t}\n{}", context(r));
            }
        }
        // KVM's miscalibrated MSR: the frequency reported is the measured
        // one, within the clock-vs-TSC self-test's 0.5 % of the persona's.
        "microvisor:hyperv:break=miscalibrated-frequency" => {
            let want = number(r, "mv.hyperv", "tsc_khz");
            let got = r.result.tsc_khz.unwrap_or(0);
            assert!(
                got.abs_diff(want) * 200 <= want,
                "{got} vs {want} kHz\n{}",
                context(r)
            );
        }
        // An absurd frequency is never the one reported.
        name if name.ends_with(":break=absurd-frequency") => {
            let khz = r.result.tsc_khz.unwrap_or(0);
            assert!(khz >= 10_000, "{khz} kHz\n{}", context(r));
        }
        _ => {}
    }
}

/// Every case of the matrix, booted (two at a time, by the runner, which
/// reboots a case whose PIT calibration host load disturbed); every failure
/// is reported, not only the first.
#[test]
fn every_lying_hypervisor_case_ends_in_a_passing_boot() {
    let names: Vec<&str> = lying::SCENARIOS.iter().map(|s| s.name).collect();
    let opts = RunOptions::default();
    let mut failed = Vec::new();
    for r in boot_all(&names, &opts) {
        let r = r.expect("TCG scenario must run");
        let checked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            assert_case(&r);
            assert_particulars(&r);
        }));
        if checked.is_err() {
            failed.push(r.scenario.name);
        }
    }
    assert!(failed.is_empty(), "failed cases (see above): {failed:?}");
}

/// The matrix has at least 8 cases per backend (this file's and those that
/// predate it: every `microvisor:<persona>:` scenario stating a logged
/// reason), and every case of this area states its owners and a reason.
#[test]
fn matrix_has_eight_cases_per_backend() {
    for backend in BACKENDS {
        let prefix = format!("microvisor:{backend}:");
        let cases: Vec<&str> = scenario::ALL
            .iter()
            .filter(|s| s.name.starts_with(&prefix) && !s.expect.logged.is_empty())
            .map(|s| s.name)
            .collect();
        assert!(
            cases.len() >= 8,
            "{backend}: {} cases {cases:?}",
            cases.len()
        );
    }
    for s in lying::SCENARIOS {
        assert!(
            s.in_default_set,
            "{} must be in cargo run's default set",
            s.name
        );
        assert!(
            s.expect.owners.is_some() && !s.expect.logged.is_empty(),
            "{}",
            s.name
        );
        assert!(
            pvops_tests::DEDICATED.contains(&s.name),
            "{} is booted here: list it in DEDICATED",
            s.name
        );
    }
}
