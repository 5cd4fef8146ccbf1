//! Building the kernels (`example-kernel/`, `microvisor/` and its test
//! guest, `examples/minimal-kernel/`).
//!
//! Each is its own Cargo workspace built for `x86_64-unknown-none` (through
//! its `.cargo/config.toml`). Builds go to `<workspace>/target/kernels/<name>`,
//! one target directory per kernel shared by its feature sets (so the
//! dependencies are compiled once, not once per feature set); each build's
//! executable is then copied to `target/kernels/bin/<name>-<key>`, which is
//! what QEMU boots, so a later build with other features cannot replace a
//! kernel under a running scenario. Builds happen at most once per process
//! per feature set, however many test threads ask.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;

use crate::scenario::{Boot, Scenario};

/// The pvops workspace root (parent of this crate's manifest directory).
pub fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// A kernel to build: its directory (and binary name) and features.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct KernelSpec {
    /// Directory under the workspace root, also the binary name.
    pub name: &'static str,
    /// Cargo features.
    pub features: Vec<&'static str>,
    /// Whether `--no-default-features` is passed.
    pub no_default_features: bool,
}

impl KernelSpec {
    /// The example kernel as `scenario` wants it.
    pub fn example_kernel(scenario: &Scenario) -> KernelSpec {
        let mut features = scenario.kernel_features.to_vec();
        features.sort_unstable();
        features.dedup();
        KernelSpec {
            name: "example-kernel",
            features,
            no_default_features: scenario.no_default_features,
        }
    }

    /// The microvisor's test guest (`microvisor/testguest`).
    pub fn test_guest() -> KernelSpec {
        KernelSpec {
            name: "mv-testguest",
            features: Vec::new(),
            no_default_features: false,
        }
    }

    /// The template kernel `examples/minimal-kernel/`, built in its own
    /// directory as a kernel author would (its own Cargo.toml, lock file and
    /// `.cargo/config.toml`).
    pub fn minimal_kernel() -> KernelSpec {
        KernelSpec {
            name: "minimal-kernel",
            features: Vec::new(),
            no_default_features: false,
        }
    }

    /// The kernel's directory, relative to the workspace root.
    pub fn dir(&self) -> &'static str {
        match self.name {
            "mv-testguest" => "microvisor/testguest",
            "minimal-kernel" => "examples/minimal-kernel",
            name => name,
        }
    }

    /// The microvisor with its default features.
    pub fn microvisor() -> KernelSpec {
        KernelSpec {
            name: "microvisor",
            features: Vec::new(),
            no_default_features: false,
        }
    }

    /// Feature-set key, used in the target directory name.
    pub fn key(&self) -> String {
        let mut key = if self.no_default_features {
            "nodefault".to_string()
        } else {
            "default".to_string()
        };
        for f in &self.features {
            key.push('+');
            key.push_str(f);
        }
        key
    }

    /// `<workspace>/target/kernels/<name>`, shared by every feature set.
    pub fn target_dir(&self) -> PathBuf {
        workspace_root()
            .join("target")
            .join("kernels")
            .join(self.name)
    }

    /// `<workspace>/target/kernels/bin/<name>-<key>`: this feature set's
    /// copy of the executable.
    pub fn image_path(&self) -> PathBuf {
        workspace_root()
            .join("target")
            .join("kernels")
            .join("bin")
            .join(format!("{}-{}", self.name, self.key()))
    }

    /// The `cargo build` command for this kernel.
    pub fn command(&self) -> Command {
        let mut cmd = cargo_in(&workspace_root().join(self.dir()));
        cmd.args([
            "build",
            "--release",
            "--message-format=json-render-diagnostics",
        ])
        .arg("--target-dir")
        .arg(self.target_dir());
        if self.no_default_features {
            cmd.arg("--no-default-features");
        }
        if !self.features.is_empty() {
            cmd.arg("--features").arg(self.features.join(","));
        }
        cmd
    }
}

/// A `cargo` command in `dir` (a kernel's own workspace), cleared of the
/// settings of the cargo that runs us (tests, `cargo run`), so that the
/// kernel's own `.cargo/config.toml` and the toolchain file rule.
///
/// First (once per process) makes sure the toolchain has the kernels'
/// target and components ([`crate::toolchain::ensure_for_kernels`]), so
/// that every kernel build, lint or check of the tests finds them; when
/// that fails the reason and the command to run are printed, and the
/// command then fails as cargo does.
pub fn cargo_in(dir: &Path) -> Command {
    if let Err(e) = crate::toolchain::ensure_for_kernels() {
        eprintln!("toolchain: {e}");
    }
    tool_in(dir, "cargo")
}

/// [`cargo_in`] for another tool of the toolchain (`rustc`, `rustup`).
pub fn tool_in(dir: &Path, program: &str) -> Command {
    let mut cmd = Command::new(program);
    cmd.current_dir(dir);
    for var in [
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "CARGO_BUILD_TARGET_DIR",
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_BUILD_RUSTFLAGS",
        "RUSTUP_TOOLCHAIN",
        "RUSTC",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_MAKEFLAGS",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

static BUILDS: Mutex<Option<HashMap<KernelSpec, Result<PathBuf, String>>>> = Mutex::new(None);

/// Builds `spec` (once per process) and returns the binary's path.
pub fn build(spec: &KernelSpec) -> Result<PathBuf, String> {
    let mut guard = BUILDS.lock().unwrap_or_else(|e| e.into_inner());
    let cache = guard.get_or_insert_with(HashMap::new);
    if let Some(r) = cache.get(spec) {
        return r.clone();
    }
    let r = build_uncached(spec);
    cache.insert(spec.clone(), r.clone());
    r
}

fn build_uncached(spec: &KernelSpec) -> Result<PathBuf, String> {
    let dir = workspace_root().join(spec.dir());
    if !dir.join("Cargo.toml").exists() {
        return Err(format!(
            "cannot build {}: {} has no Cargo.toml",
            spec.name,
            dir.display()
        ));
    }
    crate::toolchain::ensure_for_kernels()?;
    // No boot of this process runs beside the build (see `build_turn`).
    let _turn = crate::run::build_turn();
    eprintln!("building {} ({}) ...", spec.name, spec.key());
    let out = spec
        .command()
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run cargo to build {}: {e}", spec.name))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!(
            "building {} failed ({}): cd {} && cargo build --release\n{}",
            spec.name,
            out.status,
            dir.display(),
            String::from_utf8_lossy(&out.stderr).trim_end()
        ));
    }
    let exe = executable_from_messages(&stdout, spec.name).ok_or_else(|| {
        format!(
            "built {} but cargo reported no executable named {}",
            spec.name, spec.name
        )
    })?;
    let image = spec.image_path();
    if let Some(dir) = image.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    // Copy to a temporary name, then rename: a QEMU still reading an
    // older copy keeps its file.
    let tmp = image.with_extension("tmp");
    std::fs::copy(&exe, &tmp)
        .and_then(|_| std::fs::rename(&tmp, &image))
        .map_err(|e| format!("cannot copy {} to {}: {e}", exe.display(), image.display()))?;
    Ok(image)
}

/// Finds the executable of target `name` in cargo's JSON messages.
pub fn executable_from_messages(stdout: &str, name: &str) -> Option<PathBuf> {
    stdout
        .lines()
        .rev()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["reason"] == "compiler-artifact" && v["target"]["name"] == name)
        .filter_map(|v| v["executable"].as_str().map(PathBuf::from))
        .next()
}

/// The images `scenario` boots, built if needed.
pub fn images(scenario: &Scenario) -> Result<crate::qemu::Images, String> {
    use crate::scenario::Guest;
    let example = match (scenario.boot, scenario.guest) {
        (Boot::Microvisor { .. }, Guest::MicrovisorTestGuest) => build(&KernelSpec::test_guest())?,
        (_, Guest::MinimalKernel) => build(&KernelSpec::minimal_kernel())?,
        _ => build(&KernelSpec::example_kernel(scenario))?,
    };
    Ok(match scenario.boot {
        Boot::Direct | Boot::Nested(_) => crate::qemu::Images {
            kernel: example,
            initrd: None,
        },
        Boot::Microvisor { .. } => crate::qemu::Images {
            kernel: build(&KernelSpec::microvisor())?,
            initrd: Some(example),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_and_dirs() {
        let root = workspace_root();
        assert!(root.join("Cargo.toml").exists());
        assert!(root.join("qemu-runner").is_dir());
        let spec = KernelSpec {
            name: "example-kernel",
            features: vec!["vmware", "xen"],
            no_default_features: true,
        };
        assert_eq!(spec.key(), "nodefault+vmware+xen");
        assert!(spec.target_dir().ends_with("target/kernels/example-kernel"));
        assert!(spec
            .image_path()
            .ends_with("target/kernels/bin/example-kernel-nodefault+vmware+xen"));
        assert_eq!(KernelSpec::microvisor().key(), "default");
    }

    #[test]
    fn command_line() {
        let spec = KernelSpec {
            name: "example-kernel",
            features: vec!["vmware"],
            no_default_features: false,
        };
        let cmd = spec.command();
        let args: Vec<String> = cmd
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(args[..2], ["build", "--release"]);
        assert!(args.windows(2).any(|w| w == ["--features", "vmware"]));
        assert!(!args.contains(&"--no-default-features".to_string()));
        assert_eq!(
            cmd.get_current_dir(),
            Some(workspace_root().join("example-kernel").as_path())
        );
    }

    #[test]
    fn artifact_messages() {
        let msgs = r#"{"reason":"compiler-artifact","target":{"name":"bootkit"},"executable":null}
{"reason":"compiler-artifact","target":{"name":"example-kernel"},"executable":"/t/x86_64-unknown-none/release/example-kernel"}
{"reason":"build-finished","success":true}"#;
        assert_eq!(
            executable_from_messages(msgs, "example-kernel"),
            Some(PathBuf::from(
                "/t/x86_64-unknown-none/release/example-kernel"
            ))
        );
        assert_eq!(executable_from_messages(msgs, "microvisor"), None);
    }
}
