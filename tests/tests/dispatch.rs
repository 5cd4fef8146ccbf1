//! Patched call sites (issue 15, item 1): the example kernel reports the
//! dispatch mechanism in force (`@@ dispatch`) and each entry's mechanism
//! and sites (`@@ dispatch.entry`); with `dispatch=table` it keeps the
//! table, as a kernel with read-only text would.

use pvops_tests::{assert_verdict_pass, boot, boot_with, context};
use qemu_runner::dispatch::DispatchEntry;
use qemu_runner::{RunOptions, ScenarioReport};

/// Entries whose native function has an inline sequence.
const INLINE: &[&str] = &[
    "irq.save_flags",
    "irq.restore_flags",
    "irq.disable",
    "irq.enable",
    "irq.safe_halt",
    "cpu.halt",
    "cpu.read_cr0",
    "cpu.read_cr4",
    "mmu.read_cr2",
    "mmu.read_cr3",
    "cpu.read_tsc",
    "cpu.wbinvd",
    "mmu.flush_page",
    "cpu.io_delay",
];

fn entry<'a>(r: &'a ScenarioReport, name: &str) -> &'a DispatchEntry {
    r.result
        .dispatch_entries
        .iter()
        .find(|e| e.entry == name)
        .unwrap_or_else(|| panic!("no dispatch.entry for {name}\n{}", context(r)))
}

/// Every site patched, none refused; each entry inline when native with a
/// sequence, a direct call otherwise; counts per entry add up.
fn assert_patched(r: &ScenarioReport) {
    assert_verdict_pass(r);
    let d = r
        .result
        .dispatch
        .as_ref()
        .unwrap_or_else(|| panic!("no @@ dispatch\n{}", context(r)));
    assert_eq!(d.mechanism, "patched", "{}", context(r));
    assert_eq!(d.refused, 0, "{}", context(r));
    assert!(d.sites > 20, "only {} sites\n{}", d.sites, context(r));
    assert_eq!(d.inline + d.direct, d.sites, "{}", context(r));
    assert_eq!(
        r.result.dispatch_entries.len(),
        r.result.owners.len(),
        "{}",
        context(r)
    );
    let (mut inline, mut direct) = (0, 0);
    for e in &r.result.dispatch_entries {
        assert_eq!(e.indirect, 0, "{e:?}");
        assert_eq!(e.inline + e.direct, e.sites, "{e:?}");
        assert_eq!(Some(&e.owner), r.result.owners.get(&e.entry), "{e:?}");
        let want = if e.owner == "native" && INLINE.contains(&e.entry.as_str()) {
            "inline"
        } else {
            "direct"
        };
        assert_eq!(e.mechanism, want, "{e:?}\n{}", context(r));
        inline += e.inline;
        direct += e.direct;
    }
    assert_eq!((inline, direct), (d.inline, d.direct), "{}", context(r));
    // Operations every boot calls have sites.
    for name in [
        "irq.disable",
        "irq.save_flags",
        "cpu.read_tsc",
        "time.monotonic_ns",
        "irq.eoi",
    ] {
        assert!(
            entry(r, name).sites > 0,
            "{name} has no site\n{}",
            context(r)
        );
    }
}

#[test]
fn tcg_patches_every_site_native_entries_inline() {
    let r = boot("tcg").expect("tcg has no requirement and must run");
    assert_patched(&r);
    assert_eq!(entry(&r, "irq.disable").mechanism, "inline");
    assert_eq!(entry(&r, "time.monotonic_ns").mechanism, "direct");
}

#[test]
fn backend_entries_are_direct_calls_under_the_kvm_persona() {
    let r = boot("microvisor:kvm").expect("TCG-only scenario must run");
    assert_patched(&r);
    let clock = entry(&r, "time.monotonic_ns");
    assert_eq!(
        (clock.owner.as_str(), clock.mechanism.as_str()),
        ("kvm", "direct"),
        "{clock:?}"
    );
    assert!(clock.direct > 0, "{clock:?}");
    let io = entry(&r, "cpu.io_delay");
    assert_eq!(
        (io.owner.as_str(), io.mechanism.as_str()),
        ("kvm", "direct"),
        "{io:?}"
    );
    assert_eq!(entry(&r, "irq.disable").mechanism, "inline");
}

#[test]
fn real_kvm_patches_every_site() {
    // boot() prints "SKIP kvm: ..." where /dev/kvm is unusable.
    if let Some(r) = boot("kvm") {
        assert_patched(&r);
        assert_eq!(entry(&r, "time.monotonic_ns").owner, "kvm");
    }
}

#[test]
fn without_writable_text_the_table_stays_and_the_kernel_still_passes() {
    let opts = RunOptions {
        extra_guest_cmdline: "dispatch=table".to_string(),
        ..RunOptions::default()
    };
    let r = boot_with("tcg", &opts).expect("tcg has no requirement and must run");
    assert_verdict_pass(&r);
    let d = r
        .result
        .dispatch
        .as_ref()
        .unwrap_or_else(|| panic!("no @@ dispatch\n{}", context(&r)));
    assert_eq!(d.mechanism, "table", "{}", context(&r));
    assert!(
        d.reason.as_deref().unwrap_or("").contains("allow_patching"),
        "{d:?}"
    );
    assert!(d.sites > 20, "{d:?}");
    for e in &r.result.dispatch_entries {
        assert_eq!(e.mechanism, "indirect", "{e:?}");
        assert_eq!((e.inline, e.direct), (0, 0), "{e:?}");
    }
}
