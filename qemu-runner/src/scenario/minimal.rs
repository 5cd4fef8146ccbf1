//! Scenarios of `examples/minimal-kernel/`, built out of tree (issue 9).
//!
//! The template kernel reports like the example kernel (`boot`,
//! `hypervisor`, `backend`, `owner`, `tsc`, three self-tests `timer`,
//! `clock`, `pages`, `done`), so the usual expectations apply: the backend,
//! the owner of every table entry, the TSC source and, under the
//! microvisor, its exit counts.

use super::*;

/// The template kernel's three checks: the timer fired exactly once, the
/// clock advanced by at least the armed delay, at most 8 shared pages.
pub const MINIMAL_CHECKS: &[&str] = &["timer", "clock", "pages"];

/// This area's scenarios, in report order.
pub const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "minimal:tcg",
        description: "examples/minimal-kernel (built out of tree) under QEMU software emulation",
        guest: Guest::MinimalKernel,
        expect: Expect {
            hypervisor: Some("qemu-tcg"),
            backend: Some("native"),
            owners: Some(Owners::NATIVE),
            selftests: MINIMAL_CHECKS,
            ..Expect::PASS
        },
        ..Scenario::BASE
    },
    Scenario {
        name: "minimal:kvm",
        description: "examples/minimal-kernel under KVM (-cpu host)",
        guest: Guest::MinimalKernel,
        accel: Accel::Kvm,
        // As the `kvm` scenario: QEMU 7.2 on a nested AMD host cannot set
        // IA32_ARCH_CAPABILITIES.
        cpu: Some("host,-arch-capabilities"),
        requires: &[Requirement::Kvm],
        expect: Expect {
            hypervisor: Some("kvm"),
            selftests: MINIMAL_CHECKS,
            ..Expect::PASS
        },
        ..Scenario::BASE
    },
    Scenario {
        name: "minimal:microvisor:xen",
        description: "examples/minimal-kernel as the guest of the microvisor's xen persona",
        guest: Guest::MinimalKernel,
        boot: mv("xen", ""),
        expect: Expect {
            selftests: MINIMAL_CHECKS,
            fewer_than_native: &[],
            ..XEN
        },
        ..Scenario::BASE
    },
    Scenario {
        name: "minimal:microvisor:hyperv",
        description: "examples/minimal-kernel as the guest of the microvisor's hyperv persona",
        guest: Guest::MinimalKernel,
        boot: mv("hyperv", ""),
        expect: Expect {
            selftests: MINIMAL_CHECKS,
            fewer_than_native: &[],
            ..HYPERV
        },
        ..Scenario::BASE
    },
    Scenario {
        name: "minimal:tcg:no-apic",
        description: "examples/minimal-kernel with check=no-apic: init without the local APIC warns, naming the missing step",
        guest: Guest::MinimalKernel,
        guest_cmdline: "check=no-apic",
        expect: Expect {
            selftests: &["no-apic"],
            ..Expect::PASS
        },
        ..Scenario::BASE
    },
    Scenario {
        name: "minimal:tcg:second-init",
        description: "examples/minimal-kernel with check=second-init: a second init is refused and changes nothing",
        guest: Guest::MinimalKernel,
        guest_cmdline: "check=second-init",
        expect: Expect {
            selftests: &["second-init"],
            ..Expect::PASS
        },
        ..Scenario::BASE
    },
    Scenario {
        name: "minimal:microvisor:xen:no-pages",
        description: "examples/minimal-kernel under the xen persona lending no shared page: the Xen backend names the step and falls back to native",
        guest: Guest::MinimalKernel,
        boot: mv("xen", ""),
        guest_cmdline: "check=no-pages",
        expect: Expect {
            hypervisor: Some("xen"),
            backend: Some("native"),
            owners: Some(Owners::NATIVE),
            selftests: MINIMAL_CHECKS,
            ..Expect::PASS
        },
        ..Scenario::BASE
    },
];
