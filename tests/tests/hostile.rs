//! The hostile-guest matrix (issue 16 item 3, docs/hostile-guests.md):
//! boots every scenario of `qemu-runner/src/scenario/hostile.rs` and asserts
//! how each ends (exit code and `mv.fault`, or the guest's own check of the
//! error codes it got), and that the microvisor's end-of-run integrity
//! check found its protected memory unchanged. The two `corrupt=` debug
//! scenarios prove that check can fail.

use pvops_abi::exit::ExitCode;
use pvops_tests::{assert_fault, assert_verdict_pass, boot_all, context};
use qemu_runner::{scenario, RunOptions, ScenarioReport};

/// One case of the matrix and how it must end.
struct Case {
    name: &'static str,
    /// Exit code and `mv.fault kind=` (None: the guest completes).
    outcome: ExitCode,
    fault: Option<&'static str>,
    /// The guest's self-test that checked the microvisor's answers.
    selftest: Option<&'static str>,
    /// Text the `mv.fault` detail must contain.
    detail: Option<&'static str>,
}

const fn stopped(name: &'static str, outcome: ExitCode, fault: &'static str) -> Case {
    Case {
        name,
        outcome,
        fault: Some(fault),
        selftest: None,
        detail: None,
    }
}

const fn answered(name: &'static str, selftest: &'static str) -> Case {
    Case {
        name,
        outcome: ExitCode::Pass,
        fault: None,
        selftest: Some(selftest),
        detail: None,
    }
}

/// The hostile guests (the matrix proper).
const CASES: &[Case] = &[
    Case {
        detail: Some("triple fault"),
        ..stopped(
            "microvisor:fault-triple",
            ExitCode::GuestTripleFault,
            "triple-fault",
        )
    },
    Case {
        detail: Some("outside its RAM"),
        ..stopped(
            "microvisor:fault-bad-memory",
            ExitCode::GuestBadMemory,
            "bad-memory",
        )
    },
    answered(
        "microvisor:fault-unknown-hypercall",
        "fault.unknown-hypercall",
    ),
    answered(
        "microvisor:fault-bad-hypercall-pointer",
        "fault.bad-hypercall-pointer",
    ),
    answered("microvisor:fault-bad-msr", "fault.bad-msr"),
    answered("microvisor:fault-bad-port", "fault.bad-port"),
    // A spin with IF=0 (`cli; jmp .`): the watchdog (see `spin_with_if_off`).
    Case {
        detail: Some("no guest progress"),
        ..stopped("microvisor:fault-hang", ExitCode::GuestWatchdog, "watchdog")
    },
    Case {
        detail: Some("halted with interrupts disabled"),
        ..stopped(
            "microvisor:fault-halt-if-off",
            ExitCode::GuestWatchdog,
            "watchdog",
        )
    },
    answered(
        "microvisor:fault-hypercall-into-microvisor",
        "fault.hypercall-into-microvisor",
    ),
    answered("microvisor:fault-counter-garbage", "fault.counter-garbage"),
    answered("microvisor:fault-ipi-storm", "fault.ipi-storm"),
    answered("microvisor:fault-timer-storm", "fault.timer-storm"),
    answered("microvisor:xen:fault-bad-pointers", "fault.xen-pointers"),
    answered(
        "microvisor:kvm:fault-shared-pages-past-ram",
        "fault.kvm-shared-pages",
    ),
    answered("microvisor:hyperv:fault-rep-hypercalls", "fault.hyperv-rep"),
    answered(
        "microvisor:hyperv:fault-alias-hypercall-page",
        "fault.alias-hypercall-page",
    ),
];

/// The debug switch: the microvisor corrupts the region itself.
const CORRUPT: &[(&str, &str)] = &[
    ("microvisor:integrity-corrupt=npt", "npt"),
    ("microvisor:integrity-corrupt=guard-above", "guard-above"),
];

fn integrity(r: &ScenarioReport) -> &qemu_runner::parse::Integrity {
    r.result
        .microvisor
        .as_ref()
        .and_then(|m| m.integrity.as_ref())
        .unwrap_or_else(|| panic!("no mv.integrity record\n{}", context(r)))
}

fn check_case(c: &Case, r: &ScenarioReport) {
    assert_verdict_pass(r);
    assert_fault(r, c.outcome, c.fault);
    let i = integrity(r);
    assert!(
        i.unchanged && i.changed == "none",
        "microvisor memory changed: {i:?}\n{}",
        context(r)
    );
    // text+rodata, host page tables, NPT, IOPM, MSRPM, at least one guard.
    assert!(i.regions >= 6, "too few regions: {i:?}\n{}", context(r));
    if let Some(t) = c.selftest {
        let st = r
            .result
            .selftests
            .get(t)
            .unwrap_or_else(|| panic!("self-test {t} missing\n{}", context(r)));
        assert!(st.pass, "{t} failed: {}\n{}", st.detail, context(r));
        assert!(r.result.done.is_some(), "{}", context(r));
    } else {
        assert!(
            r.result.done.is_none(),
            "the guest cannot finish\n{}",
            context(r)
        );
    }
    if let Some(want) = c.detail {
        let got = fault_detail(r);
        assert!(
            got.contains(want),
            "fault detail {got:?} lacks {want:?}\n{}",
            context(r)
        );
    }
}

/// The microvisor's fault report detail (panics with context without one).
fn fault_detail(r: &ScenarioReport) -> &str {
    r.result
        .microvisor
        .as_ref()
        .and_then(|m| m.fault.as_ref())
        .map(|f| f.detail.as_str())
        .unwrap_or_else(|| panic!("no microvisor fault report\n{}", context(r)))
}

/// Boots `names` concurrently (the runner reboots a run whose PIT
/// calibration host load disturbed).
fn boot_matrix(names: &[&str]) -> Vec<ScenarioReport> {
    boot_all(names, &RunOptions::default())
        .into_iter()
        .map(|r| r.expect("TCG-only scenario must run"))
        .collect()
}

#[test]
fn hostile_guests_end_as_declared_and_leave_the_microvisor_unchanged() {
    for c in CASES {
        assert!(
            scenario::find(c.name).is_some(),
            "{} is not a scenario",
            c.name
        );
    }
    assert!(CASES.len() >= 12, "the matrix has {} cases", CASES.len());
    let names: Vec<&str> = CASES.iter().map(|c| c.name).collect();
    let reports = boot_matrix(&names);
    for (c, r) in CASES.iter().zip(&reports) {
        check_case(c, r);
        if c.name == "microvisor:fault-hang" {
            spin_with_if_off(r);
        }
    }
}

/// `fault=hang` spins with interrupts off: the watchdog's detail shows
/// RFLAGS.IF (bit 9) clear.
fn spin_with_if_off(r: &ScenarioReport) {
    let detail = fault_detail(r);
    let rflags = detail
        .split("rflags=0x")
        .nth(1)
        .and_then(|s| {
            u64::from_str_radix(s.split(|c: char| !c.is_ascii_hexdigit()).next()?, 16).ok()
        })
        .unwrap_or_else(|| panic!("no rflags in {detail:?}\n{}", context(r)));
    assert_eq!(rflags & (1 << 9), 0, "IF set in {detail:?}\n{}", context(r));
}

#[test]
fn integrity_check_catches_a_corrupted_region() {
    let names: Vec<&str> = CORRUPT.iter().map(|c| c.0).collect();
    let reports = boot_matrix(&names);
    for ((_, region), r) in CORRUPT.iter().zip(&reports) {
        assert_verdict_pass(r);
        assert_fault(r, ExitCode::MicrovisorCorrupted, Some("integrity"));
        let i = integrity(r);
        assert!(!i.unchanged, "{i:?}\n{}", context(r));
        assert_eq!(i.changed, *region, "{}", context(r));
    }
}
