//! Formatting and lints of everything `cargo clippy --workspace` does not
//! reach: the two kernels are their own workspaces (built for
//! `x86_64-unknown-none`), so they are checked here, along with
//! `cargo fmt` of the host workspace.

use std::path::Path;
use std::process::Command;

use qemu_runner::build::{cargo_in, workspace_root, KernelSpec};

fn run(mut cmd: Command, what: &str) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn kernel_dir(name: &str) -> std::path::PathBuf {
    let dir = workspace_root().join(name);
    assert!(
        dir.join("Cargo.toml").exists(),
        "{} has no Cargo.toml",
        dir.display()
    );
    dir
}

/// The public crates' rustdoc has no broken or private links (what docs.rs
/// would render), in a target directory of its own.
#[test]
fn workspace_docs_build_without_warnings() {
    let mut cmd = cargo_in(&workspace_root());
    cmd.args(["doc", "-q", "--workspace", "--no-deps", "--target-dir"])
        .arg(workspace_root().join("target/doc-lint"))
        .env("RUSTDOCFLAGS", "-D warnings");
    run(
        cmd,
        "RUSTDOCFLAGS=-D warnings cargo doc --workspace --no-deps",
    );
}

#[test]
fn workspace_is_formatted() {
    let mut cmd = cargo_in(&workspace_root());
    cmd.args(["fmt", "--all", "--check"]);
    run(cmd, "cargo fmt --all --check (workspace)");
}

/// `--all` also covers the kernels' local path dependencies (bootkit).
fn kernel_is_formatted(name: &str) {
    let mut cmd = cargo_in(&kernel_dir(name));
    cmd.args(["fmt", "--all", "--check"]);
    run(cmd, &format!("cargo fmt --all --check in {name}/"));
}

fn kernel_is_clippy_clean(name: &str) {
    let spec = match name {
        "microvisor/testguest" => KernelSpec::test_guest(),
        "microvisor" => KernelSpec::microvisor(),
        _ => KernelSpec {
            name: "example-kernel",
            features: Vec::new(),
            no_default_features: false,
        },
    };
    let mut cmd = cargo_in(&kernel_dir(name));
    // The runner's build directory: dependencies are shared with the build.
    cmd.args(["clippy", "--release", "--target-dir"])
        .arg(spec.target_dir())
        .args(["--", "-D", "warnings"]);
    run(
        cmd,
        &format!("cargo clippy --release -- -D warnings in {name}/"),
    );
}

#[test]
fn example_kernel_is_formatted() {
    kernel_is_formatted("example-kernel");
}

#[test]
fn microvisor_is_formatted() {
    kernel_is_formatted("microvisor");
}

#[test]
fn example_kernel_is_clippy_clean() {
    kernel_is_clippy_clean("example-kernel");
}

#[test]
fn microvisor_is_clippy_clean() {
    kernel_is_clippy_clean("microvisor");
}

#[test]
fn microvisor_test_guest_is_formatted() {
    kernel_is_formatted("microvisor/testguest");
}

#[test]
fn microvisor_test_guest_is_clippy_clean() {
    kernel_is_clippy_clean("microvisor/testguest");
}

#[test]
fn ci_script_is_valid_bash() {
    let script = workspace_root().join(".ci/run");
    assert!(Path::new(&script).exists());
    let mut cmd = Command::new("bash");
    cmd.arg("-n").arg(&script);
    run(cmd, "bash -n .ci/run");
}

/// The microvisor's host-testable logic (configuration parsing, personas,
/// the virtual APIC, counters...) has unit tests that run on the host
/// target; the kernel workspace is outside `cargo test` of the root, so
/// they are run (and linted) from here.
fn microvisor_host(subcommand: &[&str], what: &str) {
    let host = workspace_root().join("target/kernels/microvisor-host");
    let mut cmd = cargo_in(&kernel_dir("microvisor"));
    cmd.args(subcommand)
        .args([
            "--lib",
            "--target",
            "x86_64-unknown-linux-gnu",
            "--target-dir",
        ])
        .arg(host);
    if subcommand == ["clippy"] {
        cmd.args(["--tests", "--", "-D", "warnings"]);
    }
    run(cmd, what);
}

#[test]
fn microvisor_host_unit_tests_pass() {
    microvisor_host(&["test"], "cargo test --lib (host) in microvisor/");
}

#[test]
fn microvisor_host_tests_are_clippy_clean() {
    microvisor_host(
        &["clippy"],
        "cargo clippy --lib --tests (host) in microvisor/",
    );
}
