//! Scenarios of QEMU's microVM machine and the microvisor without a PIT (issue 10).
//!
//! QEMU's `-M microvm` with `pit=off,pic=off,rtc=off` is the machine model of
//! Firecracker and Cloud Hypervisor: no PIT, no 8259, no RTC, no PCI. Where
//! nothing gives the TSC frequency (plain TCG; KVM without a backend that
//! reads kvmclock) the guest must say "no TSC frequency source" (`tsc
//! source=none`) and report the time self-tests that need one as
//! `unsupported`, never calibrate against the absent PIT.

#[allow(unused_imports)]
use super::*;

/// The microVM machine without PIT, PIC and RTC, with the ISA serial port
/// (COM1) the example kernel's console and `isa-debug-exit` need. QEMU 7.2
/// accepts every one of these options (`-M microvm,help`).
pub const MICROVM: &[&str] = &["-M", "microvm,pit=off,pic=off,rtc=off,isa-serial=on"];

/// What a guest without any TSC frequency source shows: `tsc source=none`
/// and the frequency-dependent time self-tests `unsupported`, all others
/// passed.
pub const NO_FREQUENCY: Expect = Expect {
    owners: Some(Owners::NATIVE),
    tsc_source: Some(crate::verdict::NO_TSC_SOURCE),
    unsupported: TIME_TESTS_NEEDING_A_FREQUENCY,
    ..Expect::PASS
};

/// `microvm:kvm` and its native pair: KVM under microVM, native backend.
/// When the KVM backend (issue 12) lands, the backend scenario expects
/// `backend: Some("kvm")`, `tsc_source: Some("pvclock")` and no
/// unsupported self-test (kvmclock gives the frequency); the pair keeps
/// this expectation.
const MICROVM_KVM: Expect = Expect {
    hypervisor: Some("kvm"),
    backend: Some("native"),
    interfaces: &[(0x4000_0000, "kvm")],
    ..NO_FREQUENCY
};

/// This area's scenarios, in report order.
pub const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "microvm:tcg",
        description: "QEMU microVM (no PIT, PIC, RTC) under TCG: no TSC frequency source, time tests unsupported",
        qemu_args: MICROVM,
        expect: Expect {
            hypervisor: Some("qemu-tcg"),
            backend: Some("native"),
            ..NO_FREQUENCY
        },
        ..Scenario::BASE
    },
    Scenario {
        name: "microvm:kvm",
        description: "QEMU microVM (no PIT, PIC, RTC) under KVM; KVM's exit counters over QMP",
        accel: Accel::Kvm,
        // arch-capabilities: see `kvm`.
        cpu: Some("host,-arch-capabilities"),
        qemu_args: MICROVM,
        requires: &[Requirement::Kvm],
        // The KVM backend's kvmclock gives an exact frequency: no PIT needed.
        expect: Expect {
            hypervisor: Some("kvm"),
            backend: Some("kvm"),
            owners: Some(KVM_OWNS),
            tsc_source: Some("pvclock"),
            interfaces: &[(0x4000_0000, "kvm")],
            ..Expect::PASS
        },
        native_pair: Some("microvm:kvm/native"),
        ..Scenario::BASE
    },
    Scenario {
        name: "microvm:kvm/native",
        description: "QEMU microVM under KVM, guest forced to pvops=native (pair of microvm:kvm)",
        accel: Accel::Kvm,
        cpu: Some("host,-arch-capabilities"),
        qemu_args: MICROVM,
        guest_cmdline: "pvops=native",
        requires: &[Requirement::Kvm],
        expect: MICROVM_KVM,
        ..Scenario::BASE
    },
    Scenario {
        name: "microvisor:none:pit=off",
        description: "microvisor persona none without a PIT (ports read all ones): no TSC frequency source",
        boot: mv("none", "pit=off"),
        expect: Expect {
            hypervisor: Some("none"),
            backend: Some("native"),
            // The guest looked at port 0x61 (and found nothing).
            counts: &[(Metric::Pit, Count::NonZero)],
            ..NO_FREQUENCY
        },
        ..Scenario::BASE
    },
    Scenario {
        name: "microvisor:xen:pit=off",
        description: "persona xen without a PIT: the exact frequency from the pvclock, no PIT access",
        boot: mv("xen", "pit=off"),
        expect: Expect {
            fewer_than_native: &[],
            ..XEN
        },
        ..Scenario::BASE
    },
    Scenario {
        name: "microvisor:hyperv:pit=off",
        description: "persona hyperv without a PIT: the exact frequency from the frequency MSR, no PIT access",
        boot: mv("hyperv", "pit=off"),
        expect: Expect {
            fewer_than_native: &[],
            ..HYPERV
        },
        ..Scenario::BASE
    },
];
