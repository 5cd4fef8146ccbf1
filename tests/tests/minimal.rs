//! `examples/minimal-kernel/`, the template of a kernel of one's own
//! (issue 9): it is small, it depends on the published crate names by
//! version, it is formatted and clippy-clean, and it boots under TCG, KVM
//! and two microvisor personas showing real behaviour (the timer fired
//! once, the clock advanced by at least the armed delay, every table entry
//! has an owner, the backend and why it was chosen).

use pvops_tests::{assert_verdict_pass, boot_all, context};
use qemu_runner::build::{cargo_in, workspace_root, KernelSpec};
use qemu_runner::{RunOptions, ScenarioReport};

fn template() -> std::path::PathBuf {
    workspace_root().join("examples/minimal-kernel")
}

fn detail_number(r: &ScenarioReport, test: &str, key: &str) -> u64 {
    let t = r
        .result
        .selftests
        .get(test)
        .unwrap_or_else(|| panic!("no self-test {test}\n{}", context(r)));
    assert!(
        t.pass,
        "self-test {test} failed: {}\n{}",
        t.detail,
        context(r)
    );
    t.detail
        .split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{test}: no {key}= in {:?}", t.detail))
}

/// The four boots: the runner's verdict, then what the template itself
/// measured, read back from its records.
#[test]
fn minimal_kernel_boots_under_tcg_kvm_and_the_microvisor() {
    let names = [
        ("minimal:tcg", Some("native"), "qemu-tcg"),
        ("minimal:kvm", None, "kvm"),
        ("minimal:microvisor:xen", Some("xen"), "xen"),
        ("minimal:microvisor:hyperv", Some("hyperv"), "hyperv"),
    ];
    let list: Vec<&str> = names.iter().map(|n| n.0).collect();
    let reports = boot_all(&list, &RunOptions::default());
    let mut ran = 0;
    for ((name, backend, hypervisor), r) in names.iter().zip(reports) {
        let Some(r) = r else {
            assert_eq!(*name, "minimal:kvm", "only the KVM boot may be skipped");
            continue; // `boot_all` printed SKIP with the reason
        };
        ran += 1;
        assert_verdict_pass(&r);
        let res = &r.result;
        assert_eq!(
            res.kernel.as_deref(),
            Some("minimal-kernel"),
            "{}",
            context(&r)
        );
        assert_eq!(
            res.hypervisor.as_deref(),
            Some(*hypervisor),
            "{}",
            context(&r)
        );
        let installed = res.backend.as_deref().unwrap_or_default();
        match backend {
            Some(b) => assert_eq!(installed, *b, "{}", context(&r)),
            // KVM: whichever backend this build carries for it, or native.
            None => assert!(
                pvops_backends::compiled_in()
                    .iter()
                    .any(|b| b.name() == installed),
                "backend {installed:?} is not one of the compiled-in backends\n{}",
                context(&r)
            ),
        }
        let reason = res.backend_reason.as_deref().unwrap_or_default();
        assert!(!reason.is_empty(), "no selection reason\n{}", context(&r));
        if *name == "minimal:tcg" {
            assert!(
                reason.contains("hypervisor 'qemu-tcg' seen at 0x40000000")
                    && reason.contains("no backend for it is compiled in"),
                "native's reason names the hypervisor it did not take: {reason:?}"
            );
        }
        // Every entry of the table printed with its owner.
        for entry in pvops::Entry::all() {
            assert!(
                res.owners.contains_key(entry.name()),
                "no owner for {}\n{}",
                entry.name(),
                context(&r)
            );
        }
        assert_eq!(detail_number(&r, "timer", "ticks"), 1, "one tick");
        let armed = detail_number(&r, "clock", "armed_ns");
        let elapsed = detail_number(&r, "clock", "elapsed_ns");
        assert!(
            elapsed >= armed,
            "the clock advanced {elapsed} ns < {armed} ns armed"
        );
        assert!(detail_number(&r, "pages", "shared_pages") <= 8);
        assert!(res.tsc_khz.unwrap_or(0) > 0, "{}", context(&r));
    }
    assert!(ran >= 3, "the TCG and microvisor boots always run");
}

/// The traps of the first hour, on a real boot: init without the local
/// APIC warns (naming the call to make), a second init is refused, a
/// backend that gets no shared page says which step lacked it.
#[test]
fn minimal_kernel_traps_are_reported() {
    let names = [
        "minimal:tcg:no-apic",
        "minimal:tcg:second-init",
        "minimal:microvisor:xen:no-pages",
    ];
    let reports = boot_all(&names, &RunOptions::default());
    for (name, r) in names.iter().zip(reports) {
        let r = r.unwrap_or_else(|| panic!("{name} needs only TCG"));
        if name.ends_with("no-pages") {
            assert_eq!(detail_number(&r, "pages", "shared_pages"), 0);
        }
        assert_verdict_pass(&r);
        let serial = &r.raw.as_ref().expect("ran").serial;
        let want = match *name {
            "minimal:tcg:no-apic" => {
                "[WARN ] pvops: the local APIC is not enabled: call pvops::apic::enable"
            }
            "minimal:tcg:second-init" => "[ERROR] pvops: init called again: refused",
            // A backend without its pages names the step and what happens.
            _ => {
                "backend 'xen' setup failed (hypercall page: the platform has no page to give); \
                  falling back to native"
            }
        };
        assert!(
            serial.contains(want),
            "{want:?} not logged\n{}",
            context(&r)
        );
    }
}

/// At most about 150 lines of Rust, as promised in docs/using-pvops.md.
#[test]
fn minimal_kernel_is_small() {
    let src = std::fs::read_to_string(template().join("src/main.rs")).unwrap();
    let lines = src.lines().count();
    assert!(
        lines <= 150,
        "examples/minimal-kernel/src/main.rs has {lines} lines"
    );
    let files = std::fs::read_dir(template().join("src")).unwrap().count();
    assert_eq!(files, 1, "one source file");
}

/// Depends on the crates' published names with a version requirement (the
/// `path` is only the local source) and is no member of the workspace.
#[test]
fn minimal_kernel_depends_on_published_crates_by_version() {
    let manifest = std::fs::read_to_string(template().join("Cargo.toml")).unwrap();
    assert!(manifest.contains("\n[workspace]\n"), "its own workspace");
    for name in ["pvops", "pvops-backends", "pvops-boot"] {
        let line = manifest
            .lines()
            .find(|l| l.starts_with(&format!("{name} = ")))
            .unwrap_or_else(|| panic!("no dependency {name}"));
        assert!(line.contains("version = \"0.1\""), "{line}");
        assert!(line.contains("path = \"../../"), "{line}");
        assert!(!line.contains("package ="), "by its published name: {line}");
    }
    let config = std::fs::read_to_string(template().join(".cargo/config.toml")).unwrap();
    assert!(config.contains("target = \"x86_64-unknown-none\""));
    assert!(config.contains("-Tpvops-boot.ld"), "linker script by name");
    assert!(
        !template().join("build.rs").exists(),
        "no build script needed"
    );
}

#[test]
fn minimal_kernel_is_formatted_and_clippy_clean() {
    let _turn = pvops_tests::cpu_heavy();
    let run = |mut cmd: std::process::Command, what: &str| {
        let out = cmd
            .output()
            .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
        assert!(
            out.status.success(),
            "{what} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let mut fmt = cargo_in(&template());
    fmt.args(["fmt", "--check"]);
    run(fmt, "cargo fmt --check in examples/minimal-kernel");
    qemu_runner::toolchain::ensure_for_kernels().unwrap();
    let mut clippy = cargo_in(&template());
    clippy
        .args(["clippy", "--release", "--target-dir"])
        .arg(KernelSpec::minimal_kernel().target_dir())
        .args(["--", "-D", "warnings"]);
    run(
        clippy,
        "cargo clippy --release -- -D warnings in examples/minimal-kernel",
    );
}
