//! The hostile-guest matrix: guests that attack the microvisor, each ending
//! in a report with its exit code, or in an error code to the guest that
//! the guest checks and reports (issue 16, docs/hostile-guests.md). Every
//! run also ends with the microvisor's `mv.integrity` check of the memory
//! no guest may change (tests/tests/hostile.rs asserts it on each).

use super::*;

/// A fault case under persona hyperv (its hypercall page and rep calls).
const HV_FAULT: Scenario = Scenario {
    boot: mv("hyperv", ""),
    expect: HYPERV,
    ..Scenario::BASE
};

/// A survivable case: the guest gets error codes, reports `fault.<case>`
/// passed and completes, under `base`'s expectations.
const fn answered(base: Expect, selftest: &'static [&'static str]) -> Expect {
    Expect {
        selftests: selftest,
        ..base
    }
}

/// This area's scenarios, in report order.
pub const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "microvisor:fault-triple",
        description: "guest triple-faults; the microvisor reports it",
        guest_cmdline: "fault=triple",
        expect: stopped(ExitCode::GuestTripleFault, "triple-fault"),
        ..FAULT
    },
    Scenario {
        name: "microvisor:fault-bad-memory",
        description: "guest touches memory outside its RAM; the microvisor stops it",
        guest_cmdline: "fault=bad-memory",
        expect: stopped(ExitCode::GuestBadMemory, "bad-memory"),
        ..FAULT
    },
    Scenario {
        name: "microvisor:fault-unknown-hypercall",
        description: "guest makes an unknown microvisor hypercall and gets an error back",
        guest_cmdline: "fault=unknown-hypercall",
        expect: Expect {
            selftests: &["fault.unknown-hypercall"],
            ..NATIVE_NONE
        },
        ..FAULT
    },
    Scenario {
        name: "microvisor:fault-bad-hypercall-pointer",
        description: "guest passes a pointer outside its RAM to a hypercall and gets an error back",
        guest_cmdline: "fault=bad-hypercall-pointer",
        expect: Expect {
            selftests: &["fault.bad-hypercall-pointer"],
            ..NATIVE_NONE
        },
        ..FAULT
    },
    Scenario {
        name: "microvisor:fault-bad-msr",
        description: "guest reads an unknown MSR and gets #GP",
        guest_cmdline: "fault=bad-msr",
        expect: Expect {
            selftests: &["fault.bad-msr"],
            msrs: &[0x4fff_0000],
            ..NATIVE_NONE
        },
        ..FAULT
    },
    Scenario {
        name: "microvisor:fault-bad-port",
        description: "guest accesses an unknown I/O port and reads all ones",
        guest_cmdline: "fault=bad-port",
        expect: Expect {
            selftests: &["fault.bad-port"],
            ports: &[0x1234],
            ..NATIVE_NONE
        },
        ..FAULT
    },
    Scenario {
        name: "microvisor:fault-hang",
        description: "guest stops making progress; the microvisor's watchdog ends the run",
        boot: mv("none", "watchdog_ms=3000"),
        guest_cmdline: "fault=hang",
        expect: stopped(ExitCode::GuestWatchdog, "watchdog"),
        ..FAULT
    },
    Scenario {
        name: "microvisor:fault-halt-if-off",
        description: "guest halts with interrupts off (cli; hlt): it can never wake, so the microvisor stops it at once",
        boot: mv("none", "watchdog_ms=3000"),
        guest_cmdline: "fault=halt-if-off",
        expect: stopped(ExitCode::GuestWatchdog, "watchdog"),
        ..FAULT
    },
    Scenario {
        name: "microvisor:fault-hypercall-into-microvisor",
        description: "guest aims COUNTERS_COPY at host memory: past its RAM, across its end, wrapping 2^64, MMIO, the microvisor image by wrap-around; every call gets ERR_INVALID",
        guest_cmdline: "fault=hypercall-into-microvisor",
        expect: answered(NATIVE_NONE, &["fault.hypercall-into-microvisor"]),
        ..FAULT
    },
    Scenario {
        name: "microvisor:fault-counter-garbage",
        description: "garbage in every hidden counter call (random codes, classes, lengths, pointers): error codes, nothing written, counters still count",
        guest_cmdline: "fault=counter-garbage",
        expect: answered(NATIVE_NONE, &["fault.counter-garbage"]),
        ..FAULT
    },
    Scenario {
        name: "microvisor:fault-ipi-storm",
        description: "self-IPI storms (20000 with IF=1, 20000 with IF=0): each delivered, then coalesced to one; no hang",
        guest_cmdline: "fault=ipi-storm",
        expect: answered(NATIVE_NONE, &["fault.ipi-storm"]),
        ..FAULT
    },
    Scenario {
        name: "microvisor:fault-timer-storm",
        description: "periodic LAPIC timer with count 1 (a 1 ns period): the guest still makes progress between interrupts; no livelock, no hang",
        guest_cmdline: "fault=timer-storm",
        expect: answered(NATIVE_NONE, &["fault.timer-storm"]),
        timeout_secs: 60,
        ..FAULT
    },
    Scenario {
        name: "microvisor:hyperv:fault-rep-hypercalls",
        description: "Hyper-V flush-list rep calls with huge and page-crossing rep counts, bad starts, inputs past RAM: TLFS status codes",
        guest_cmdline: "fault=hyperv-rep",
        expect: answered(HYPERV, &["fault.hyperv-rep"]),
        ..HV_FAULT
    },
    Scenario {
        name: "microvisor:hyperv:fault-alias-hypercall-page",
        description: "guest maps its hypercall page a second time writable, calls through the alias, rewrites and restores the page: only its own calls change",
        guest_cmdline: "fault=alias-hypercall-page",
        expect: answered(HYPERV, &["fault.alias-hypercall-page"]),
        ..HV_FAULT
    },
    Scenario {
        name: "microvisor:xen:fault-bad-pointers",
        description: "Xen hypercall pointers (guest-virtual) whose PTEs aim past RAM, at MMIO, nowhere; crossing pages, non-canonical, wrapping: -EFAULT, nothing written",
        boot: mv("xen", ""),
        guest_cmdline: "fault=xen-pointers",
        expect: answered(XEN, &["fault.xen-pointers"]),
        ..Scenario::BASE
    },
    Scenario {
        name: "microvisor:kvm:fault-shared-pages-past-ram",
        description: "KVM wall clock, kvmclock, steal time, PV EOI registered across or past the end of guest RAM: nothing written there or beyond",
        boot: mv("kvm", ""),
        guest_cmdline: "fault=kvm-shared-pages",
        expect: answered(kvm::KVM_PERSONA, &["fault.kvm-shared-pages"]),
        ..Scenario::BASE
    },
    Scenario {
        name: "microvisor:integrity-corrupt=npt",
        description: "debug switch: the microvisor changes an unused NPT entry after its baseline; the integrity check must catch it",
        boot: mv("none", "corrupt=npt"),
        expect: stopped(ExitCode::MicrovisorCorrupted, "integrity"),
        ..FAULT
    },
    Scenario {
        name: "microvisor:integrity-corrupt=guard-above",
        description: "debug switch: the microvisor changes a word just past guest RAM; the integrity check must catch it",
        boot: mv("none", "corrupt=guard-above"),
        expect: stopped(ExitCode::MicrovisorCorrupted, "integrity"),
        ..FAULT
    },
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_matrix_has_at_least_twelve_hostile_guests() {
        let cases = SCENARIOS
            .iter()
            .filter(|s| s.name.contains("fault-") && s.uses_microvisor())
            .count();
        assert!(cases >= 12, "{cases} hostile-guest cases");
        for s in SCENARIOS {
            assert!(
                s.uses_microvisor(),
                "{} does not boot the microvisor",
                s.name
            );
        }
    }
}
