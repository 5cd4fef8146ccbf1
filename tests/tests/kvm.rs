//! The KVM backend: under real KVM where `/dev/kvm` is usable (else each
//! test prints `SKIP <name>: <why>` and returns), and under the
//! microvisor's `kvm` persona always.

use pvops_tests::{
    assert_count, assert_persona_guest, assert_verdict_pass, boot, boot_pair, context, field,
    metric, record,
};
use qemu_runner::scenario::{Count, Metric, KVM_OWNS};

/// Real KVM: kvm selected, clock, EOI and steal time owned, the TSC
/// frequency from kvmclock.
#[test]
fn real_kvm_selects_kvm() {
    let Some(r) = boot("kvm") else { return };
    assert_verdict_pass(&r);
    assert_persona_guest(&r, "kvm", "kvm", &KVM_OWNS, "pvclock");
    let k = record(&r, "kvm");
    assert_eq!(field(&k, "clock"), "true", "{}", context(&r));
    assert_eq!(field(&k, "steal"), "true", "{}", context(&r));
    assert_eq!(field(&k, "pv_eoi"), "true", "{}", context(&r));
    // The reported frequency is the pvclock's.
    assert_eq!(
        field(&k, "pvclock_khz").parse::<u64>().ok(),
        r.result.tsc_khz,
        "{}",
        context(&r)
    );
}

/// Real KVM with the timing leaf and an explicit frequency: the leaf wins
/// (a whole kHz stated by the hypervisor) and kvmclock's scale agrees with
/// the configured frequency to within 1 kHz.
#[test]
fn real_kvm_frequency_matches_the_configured_one() {
    let Some(r) = boot("kvm-vmware-freq") else {
        return;
    };
    assert_verdict_pass(&r);
    assert_persona_guest(&r, "kvm", "kvm", &KVM_OWNS, "cpuid-0x40000010");
    let hz = r.resolved.tsc_hz.expect("configured frequency");
    assert_eq!(r.result.tsc_khz, Some(hz / 1000), "{}", context(&r));
    let pv: u64 = field(&record(&r, "kvm"), "pvclock_khz").parse().unwrap();
    assert!(
        pv.abs_diff(hz / 1000) <= 1,
        "pvclock {pv} kHz vs {hz} Hz\n{}",
        context(&r)
    );
}

/// The persona: every feature, PV EOI saves every EOI exit the native run
/// makes, no PIT, no hypercall with one CPU.
#[test]
fn persona_kvm_against_native() {
    let (k, n) = boot_pair("microvisor:kvm", &Default::default());
    assert_verdict_pass(&k);
    assert_verdict_pass(&n);
    assert_persona_guest(&k, "kvm", "kvm", &KVM_OWNS, "pvclock");
    assert_count(&k, Metric::Pit, Count::Zero);
    assert_count(&k, Metric::Hypercalls, Count::Zero);
    assert_count(&n, Metric::Eoi, Count::NonZero);
    assert!(
        metric(&k, Metric::Eoi) < metric(&n, Metric::Eoi),
        "{}",
        context(&k)
    );
    let mv = record(&k, "mv.kvm");
    assert_eq!(field(&mv, "pv_eoi"), "true");
    assert!(
        field(&mv, "pv_eoi_completed").parse::<u64>().unwrap() > 0,
        "{mv:?}"
    );
    let g = record(&k, "kvm.end");
    assert!(
        field(&g, "eoi_skipped").parse::<u64>().unwrap() > 0,
        "{g:?}"
    );
    assert_eq!(field(&record(&k, "kvm"), "stable"), "true");
}

#[test]
fn persona_break_stable_bit_keeps_kvmclock_monotonic_in_software() {
    let r = boot("microvisor:kvm:break=stable-bit").expect("TCG scenario must run");
    assert_verdict_pass(&r);
    assert_persona_guest(&r, "kvm", "kvm", &KVM_OWNS, "pvclock");
    assert_eq!(
        field(&record(&r, "kvm"), "stable"),
        "false",
        "{}",
        context(&r)
    );
}

#[test]
fn persona_break_pv_eoi_refused_is_caught() {
    let r = boot("microvisor:kvm:break=pv-eoi-refused").expect("TCG scenario must run");
    assert_verdict_pass(&r);
    let k = record(&r, "kvm");
    assert_eq!(field(&k, "pv_eoi"), "false", "{}", context(&r));
    let mv = record(&r, "mv.kvm");
    assert_eq!(field(&mv, "refused"), "1", "{mv:?}");
}

#[test]
fn persona_break_steal_never_and_pvclock_odd_fall_back() {
    let r = boot("microvisor:kvm:break=steal-never").expect("TCG scenario must run");
    assert_verdict_pass(&r);
    assert_eq!(
        field(&record(&r, "kvm"), "steal"),
        "false",
        "{}",
        context(&r)
    );
    let r = boot("microvisor:kvm:break=pvclock-odd").expect("TCG scenario must run");
    assert_verdict_pass(&r);
    assert_eq!(
        field(&record(&r, "kvm"), "clock"),
        "false",
        "{}",
        context(&r)
    );
    assert_eq!(r.result.tsc_source.as_deref(), Some("pit-calibration"));
}

/// kvm+hyperv: KVM's interface at 0x40000100 outranks Hyper-V's.
#[test]
fn persona_kvm_hyperv_selects_kvm() {
    let r = boot("microvisor:kvm+hyperv").expect("TCG scenario must run");
    assert_verdict_pass(&r);
    assert_persona_guest(&r, "hyperv", "kvm", &KVM_OWNS, "pvclock");
    assert_eq!(field(&record(&r, "kvm"), "base"), "0x40000100");
}
