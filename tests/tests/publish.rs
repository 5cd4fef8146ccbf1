//! The crates a kernel author depends on by version (issue 9): their
//! metadata is complete, the crates not for users say `publish = false`,
//! and `cargo publish --workspace --dry-run` packages and verifies every
//! publishable crate in dependency order. Nothing is uploaded.

use qemu_runner::build::{cargo_in, workspace_root};
use serde_json::Value;

/// The publishable crates, each after the crates it depends on.
const PUBLISHED: &[&str] = &[
    "pvops-abi",
    "pvops-probe",
    "pvops",
    "pvops-boot",
    "pvops-backends",
];

fn metadata() -> Value {
    let mut cmd = cargo_in(&workspace_root());
    cmd.args([
        "metadata",
        "--no-deps",
        "--format-version",
        "1",
        "--offline",
    ]);
    let out = cmd.output().expect("cargo metadata runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("cargo metadata prints JSON")
}

fn package<'a>(meta: &'a Value, name: &str) -> &'a Value {
    meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("no workspace package {name}"))
}

#[test]
fn publishable_crates_have_complete_metadata() {
    let root = workspace_root();
    for f in ["LICENSE-MIT", "LICENSE-APACHE"] {
        assert!(root.join(f).is_file(), "{f} at the repository root");
    }
    let meta = metadata();
    for name in PUBLISHED {
        let p = package(&meta, name);
        for key in ["description", "license", "readme", "rust_version"] {
            assert!(
                p[key].as_str().is_some_and(|v| !v.is_empty()),
                "{name}: {key}"
            );
        }
        for key in ["keywords", "categories"] {
            let n = p[key].as_array().map_or(0, Vec::len);
            assert!(
                (1..=5).contains(&n),
                "{name}: {n} {key} (crates.io allows 1..=5)"
            );
        }
        assert!(p["publish"].is_null(), "{name} is publishable");
        let dir = std::path::Path::new(p["manifest_path"].as_str().unwrap())
            .parent()
            .unwrap();
        assert!(dir.join("README.md").is_file(), "{name}: README.md");
        assert!(
            !p["metadata"]["docs"]["rs"].is_null(),
            "{name}: docs.rs metadata"
        );
        // Workspace dependencies carry a version requirement, so that the
        // published manifest names a version, not a path.
        for dep in p["dependencies"].as_array().unwrap() {
            if dep["path"].is_string() && dep["kind"].is_null() {
                assert_ne!(dep["req"], "*", "{name} -> {}: no version", dep["name"]);
            }
        }
    }
    // docs.rs documents every backend.
    let backends = package(&meta, "pvops-backends");
    let documented = backends["metadata"]["docs"]["rs"]["features"]
        .as_array()
        .unwrap();
    for feature in backends["features"].as_object().unwrap().keys() {
        if feature != "default" {
            assert!(
                documented.iter().any(|f| f == feature.as_str()),
                "pvops-backends feature {feature} not in [package.metadata.docs.rs] features"
            );
        }
    }
    for name in ["qemu-runner", "pvops-tests"] {
        assert_eq!(
            package(&meta, name)["publish"],
            serde_json::json!([]),
            "{name}"
        );
    }
    for kernel in [
        "example-kernel",
        "microvisor",
        "microvisor/testguest",
        "examples/minimal-kernel",
    ] {
        let manifest = std::fs::read_to_string(root.join(kernel).join("Cargo.toml")).unwrap();
        assert!(
            manifest.contains("\npublish = false\n"),
            "{kernel}: publish = false"
        );
    }
}

/// Network failures of the crates.io index (the dry run resolves the
/// crates' external dependencies there) make the test skip, not fail.
fn network_failure(stderr: &str) -> Option<&str> {
    [
        "Could not resolve host",
        "failed to query replaced source registry",
        "download of config.json failed",
        "failed to download",
        "network failure",
        "spurious network error",
        "Couldn't connect",
        "failed to get successful HTTP response",
    ]
    .into_iter()
    .find(|p| stderr.contains(p))
}

#[test]
fn cargo_publish_dry_run_passes_for_every_publishable_crate() {
    let mut cmd = cargo_in(&workspace_root());
    cmd.args([
        "publish",
        "--workspace",
        "--dry-run",
        "--allow-dirty",
        "--target-dir",
    ])
    .arg(workspace_root().join("target/publish-check"));
    let out = cmd.output().expect("cargo publish runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        if let Some(why) = network_failure(&stderr) {
            println!("SKIP cargo publish --dry-run: crates.io index unreachable ({why})");
            return;
        }
        panic!("cargo publish --workspace --dry-run failed:\n{stderr}");
    }
    let uploads: Vec<&str> = stderr
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Uploading "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    let mut want = PUBLISHED.to_vec();
    want.sort_unstable();
    let mut got = uploads.clone();
    got.sort_unstable();
    assert_eq!(got, want, "exactly the publishable crates\n{stderr}");
    let at = |n: &str| uploads.iter().position(|u| *u == n).unwrap();
    for (before, after) in [
        ("pvops-abi", "pvops-boot"),
        ("pvops-abi", "pvops-backends"),
        ("pvops-probe", "pvops"),
        ("pvops", "pvops-backends"),
    ] {
        assert!(
            at(before) < at(after),
            "{before} before {after}: {uploads:?}"
        );
    }
    assert!(
        stderr.contains("aborting upload due to dry run"),
        "{stderr}"
    );
}
