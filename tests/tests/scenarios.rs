//! Boots every scenario through the runner's library (one test each, so a
//! failure names its scenario) and asserts on the parsed results.

use pvops_abi::exit::ExitCode;
use pvops_tests::{
    assert_exits, assert_fault, assert_guest, assert_owners, assert_verdict_pass, boot, context,
    DEDICATED, DEDICATED_PREFIXES,
};
// The microvisor's fault cases have their own test: tests/tests/hostile.rs.
use qemu_runner::scenario;

#[test]
fn tcg() {
    let r = boot("tcg").expect("tcg has no requirement and must run");
    assert_verdict_pass(&r);
    assert_guest(&r, "qemu-tcg", "native", "native");
    assert!(
        r.result
            .interfaces
            .iter()
            .any(|i| i.kind == "qemu-tcg" && i.base == 0x4000_0000),
        "TCG signature not found at 0x40000000\n{}",
        context(&r)
    );
    assert!(r.result.microvisor.is_none(), "{}", context(&r));
}

#[test]
fn kvm() {
    let Some(r) = boot("kvm") else {
        // boot() printed "SKIP kvm: /dev/kvm not usable: ..."
        return;
    };
    assert_verdict_pass(&r);
    // The KVM backend (tests/tests/kvm.rs checks what it owns).
    assert_eq!(r.result.backend.as_deref(), Some("kvm"), "{}", context(&r));
    assert!(
        r.result.interfaces.iter().any(|i| i.kind == "kvm"),
        "{}",
        context(&r)
    );
}

#[test]
fn microvisor_none() {
    let r = boot("microvisor:none").expect("TCG-only scenario must run");
    assert_verdict_pass(&r);
    assert_guest(&r, "none", "native", "native");
    assert!(r.result.interfaces.is_empty(), "{}", context(&r));
    assert_exits(&r);
    assert_fault(&r, ExitCode::Pass, None);
}

#[test]
fn microvisor_bare() {
    let r = boot("microvisor:bare").expect("TCG-only scenario must run");
    assert_verdict_pass(&r);
    assert_guest(&r, "unknown", "native", "native");
    assert_exits(&r);
    assert_fault(&r, ExitCode::Pass, None);
}

/// Scenarios added to the table without a dedicated test still boot here
/// and must meet the expectations declared with them.
#[test]
fn every_other_scenario_meets_its_expectations() {
    let mut failed = Vec::new();
    for s in scenario::ALL.iter().filter(|s| {
        !DEDICATED.contains(&s.name) && !DEDICATED_PREFIXES.iter().any(|p| s.name.starts_with(p))
    }) {
        if let Some(r) = boot(s.name) {
            if !r.passed() {
                failed.push(context(&r));
            }
        }
    }
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}

#[test]
fn dedicated_names_exist() {
    for name in DEDICATED {
        assert!(scenario::find(name).is_some(), "{name} is not a scenario");
    }
    for prefix in DEDICATED_PREFIXES {
        assert!(
            scenario::ALL.iter().any(|s| s.name.starts_with(prefix)),
            "no scenario starts with {prefix}"
        );
    }
}

/// QEMU's own VMware backdoor (vmport=on) answers the backdoor port, but
/// the machine has no VMware signature: pvops stays native and reports QEMU.
#[test]
fn vmport() {
    let r = boot("vmport").expect("TCG scenario must run");
    assert_verdict_pass(&r);
    assert_guest(&r, "qemu-tcg", "native", "native");
    let kinds: Vec<&str> = r
        .result
        .interfaces
        .iter()
        .map(|i| i.kind.as_str())
        .collect();
    assert_eq!(kinds, ["qemu-tcg"], "{}", context(&r));
    assert!(
        r.scenario.qemu_args.join(" ").contains("vmport=on"),
        "the scenario must turn the backdoor on explicitly"
    );
}

/// KVM with `vmware-cpuid-freq=on` and an explicit TSC frequency publishes
/// leaf 0x40000010 under its own signature: the KVM backend takes the TSC
/// frequency from it, exactly the configured one.
#[test]
fn kvm_vmware_freq() {
    let Some(r) = boot("kvm-vmware-freq") else {
        return;
    };
    assert_verdict_pass(&r);
    assert_owners(&r, "kvm", &scenario::KVM_OWNS);
    let hz = r
        .resolved
        .tsc_hz
        .unwrap_or_else(|| panic!("no configured frequency\n{}", context(&r)));
    assert_eq!(r.result.tsc_khz, Some(hz / 1000), "{}", context(&r));
    assert_eq!(
        r.result.tsc_source.as_deref(),
        Some("cpuid-0x40000010"),
        "{}",
        context(&r)
    );
    let kvm = r
        .result
        .interfaces
        .iter()
        .find(|i| i.kind == "kvm")
        .unwrap_or_else(|| panic!("{}", context(&r)));
    assert!(kvm.max_leaf >= 0x4000_0010, "{}", context(&r));
}

/// `record-cpuid` then `probe-dump`: decoding the guest's own CPUID on the
/// host gives the hypervisor and backend the guest reported.
fn recorded_dump_matches_guest(name: &str, hypervisor: &str) {
    let s = scenario::find(name).unwrap();
    let text = qemu_runner::record_cpuid(s).unwrap_or_else(|e| panic!("{name}: {e}"));
    let info = qemu_runner::probe_dump::decode(&text).unwrap();
    assert_eq!(info.hypervisor, hypervisor, "{text}");
    assert_eq!(info.backend, "native", "{text}");
    let r = boot(name).unwrap();
    assert_eq!(
        r.result.hypervisor.as_deref(),
        Some(info.hypervisor),
        "{}",
        context(&r)
    );
    assert_eq!(
        r.result.backend.as_deref(),
        Some(info.backend),
        "{}",
        context(&r)
    );
    let kinds: Vec<&str> = info.interfaces.iter().map(|i| i.kind).collect();
    let guest_kinds: Vec<&str> = r
        .result
        .interfaces
        .iter()
        .map(|i| i.kind.as_str())
        .collect();
    assert_eq!(kinds, guest_kinds, "{}", context(&r));
}

#[test]
fn recorded_tcg_dump_decodes_like_the_guest() {
    recorded_dump_matches_guest("tcg", "qemu-tcg");
}

#[test]
fn recorded_microvisor_bare_dump_decodes_like_the_guest() {
    recorded_dump_matches_guest("microvisor:bare", "unknown");
}
