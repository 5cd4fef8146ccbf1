//! The feature matrix: backends are additive Cargo features, any subset
//! builds, and a kernel built without a hypervisor's backend still boots
//! under that hypervisor (it picks another backend, or native).

use pvops_tests::{assert_verdict_pass, boot_all, context};
use qemu_runner::build::{cargo_in, workspace_root};
use qemu_runner::scenario::{self, MATRIX_FEATURE_SETS, MATRIX_PERSONAS};
use qemu_runner::RunOptions;

/// Every (feature set × persona) cell is a scenario, and its expected
/// backend is the persona's own backend exactly when the kernel carries
/// it, best first. kvm+hyperv is KVM's persona (KVM at 0x40000100
/// outranks Hyper-V at 0x40000000), but a kernel without the KVM backend
/// still takes its Hyper-V interface with the Hyper-V backend; the Viridian
/// interface of xen+viridian (Xen's "base" group) is taken by the Hyper-V
/// backend only when the kernel has no Xen backend.
#[test]
fn matrix_table_is_complete() {
    for (set, features) in MATRIX_FEATURE_SETS {
        for persona in MATRIX_PERSONAS {
            let name = format!("matrix:{set}@microvisor:{persona}");
            let s = scenario::find(&name).unwrap_or_else(|| panic!("{name} missing"));
            assert!(s.no_default_features, "{name}");
            assert_eq!(s.kernel_features, features, "{name}");
            // Backends that take the persona, best first.
            let takers: &[&str] = match persona {
                "vmware" => &["vmware"],
                "xen" => &["xen"],
                "xen+viridian" => &["xen", "hyperv"],
                "hyperv" => &["hyperv"],
                "kvm+hyperv" => &["kvm", "hyperv"],
                "kvm" => &["kvm"],
                other => panic!("unexpected persona {other}"),
            };
            let want = takers
                .iter()
                .copied()
                .find(|b| features.contains(b))
                .unwrap_or("native");
            assert_eq!(s.expect.backend, Some(want), "{name}");
        }
    }
    let cells = scenario::ALL
        .iter()
        .filter(|s| s.name.starts_with("matrix:"))
        .count();
    assert_eq!(cells, MATRIX_FEATURE_SETS.len() * MATRIX_PERSONAS.len());
}

/// Boots every cell (the kernels are built once per feature set) and
/// checks each against its declared backend and owners.
#[test]
fn matrix_kernels_boot_under_every_persona() {
    let names: Vec<&str> = scenario::ALL
        .iter()
        .filter(|s| s.name.starts_with("matrix:"))
        .map(|s| s.name)
        .collect();
    let reports = boot_all(&names, &RunOptions::default());
    let mut failed = Vec::new();
    for (name, r) in names.iter().zip(reports) {
        let r = r.unwrap_or_else(|| panic!("{name} needs only TCG and must run"));
        if !r.passed() {
            failed.push(context(&r));
        }
    }
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}

/// A kernel without any hypervisor backend: every persona gives native.
#[test]
fn no_backend_kernel_is_native_everywhere() {
    let names: Vec<String> = MATRIX_PERSONAS
        .iter()
        .map(|p| format!("matrix:no-backends@microvisor:{p}"))
        .collect();
    for name in &names {
        let s = scenario::find(name).unwrap();
        assert_eq!(s.expect.backend, Some("native"), "{name}");
    }
    // Booted by `matrix_kernels_boot_under_every_persona`; here one cell is
    // checked in detail.
    let r = pvops_tests::boot("matrix:no-backends@microvisor:xen").unwrap();
    assert_verdict_pass(&r);
    pvops_tests::assert_guest(&r, "xen", "native", "native");
    assert!(
        r.result
            .backend_reason
            .as_deref()
            .is_some_and(|w| !w.contains("fell back")),
        "native by selection, not by a failed setup\n{}",
        context(&r)
    );
}

/// `pvops-backends` builds with every subset of the optional backends, for
/// the host and for `x86_64-unknown-none` (sequentially, in a target
/// directory of its own; cheap after the first build).
#[test]
fn backends_build_with_every_feature_subset() {
    let _turn = pvops_tests::cpu_heavy();
    const OPTIONAL: [&str; 4] = ["vmware", "xen", "hyperv", "kvm"];
    let target_dir = workspace_root().join("target").join("feature-matrix");
    for target in [None, Some("x86_64-unknown-none")] {
        for mask in 0..(1u32 << OPTIONAL.len()) {
            let mut features = vec!["native"];
            features.extend(
                OPTIONAL
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| mask & (1 << i) != 0)
                    .map(|(_, f)| *f),
            );
            let features = features.join(",");
            let mut cmd = cargo_in(&workspace_root());
            cmd.args([
                "build",
                "-q",
                "-p",
                "pvops-backends",
                "--no-default-features",
            ])
            .args(["--features", &features])
            .arg("--target-dir")
            .arg(&target_dir);
            if let Some(t) = target {
                cmd.args(["--target", t]);
            }
            let out = cmd.output().expect("cannot run cargo");
            assert!(
                out.status.success(),
                "cargo build -p pvops-backends --no-default-features --features {features} \
                 (target {}) failed:\n{}",
                target.unwrap_or("host"),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}
