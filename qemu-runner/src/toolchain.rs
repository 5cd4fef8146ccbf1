//! Making sure the toolchain that builds the kernels has their target and
//! the components `rust-toolchain.toml` names, whatever rustup's
//! auto-install setting (`RUSTUP_AUTO_INSTALL=0`, a distribution's Rust,
//! offline machines).
//!
//! The check asks the toolchain a kernel directory resolves to (the same
//! `cargo`/`rustc` the build uses, see [`crate::build::cargo_in`]) for its
//! sysroot and looks for the target's `libcore` there, so it works without
//! rustup too. A missing target is installed with
//! `rustup target add --toolchain <active> <target>` (a missing component
//! with `rustup component add`), announced in one line; without rustup the
//! error says exactly what to run.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use crate::build::{tool_in, workspace_root};

/// The kernels' target.
pub const KERNEL_TARGET: &str = "x86_64-unknown-none";

/// What the toolchain used in a directory lacks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Status {
    /// Everything is there.
    Complete,
    /// Something is missing.
    Missing {
        /// The rustup toolchain name, when rustup manages the toolchain.
        toolchain: Option<String>,
        /// Targets without a `libcore` in the sysroot.
        targets: Vec<String>,
        /// Components rustup does not list as installed.
        components: Vec<String>,
    },
}

impl Status {
    /// The commands that install what is missing.
    pub fn fix(&self) -> Vec<String> {
        let Status::Missing {
            toolchain,
            targets,
            components,
        } = self
        else {
            return Vec::new();
        };
        let tc = toolchain
            .as_deref()
            .map(|t| format!(" --toolchain {t}"))
            .unwrap_or_default();
        let mut cmds = Vec::new();
        if !targets.is_empty() {
            cmds.push(format!("rustup target add{tc} {}", targets.join(" ")));
        }
        if !components.is_empty() {
            cmds.push(format!("rustup component add{tc} {}", components.join(" ")));
        }
        cmds
    }
}

/// `targets` and `components` of a `rust-toolchain.toml` (only the
/// one-line array form this project uses, `key = ["a", "b"]`).
pub fn toolchain_file_lists(text: &str) -> (Vec<String>, Vec<String>) {
    let list = |key: &str| -> Vec<String> {
        text.lines()
            .map(str::trim)
            .filter_map(|l| l.strip_prefix(key))
            .filter_map(|l| l.trim_start().strip_prefix('='))
            .flat_map(|v| {
                v.trim()
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .split(',')
                    .map(|s| s.trim().trim_matches('"').to_string())
                    .filter(|s| !s.is_empty())
                    .collect::<Vec<_>>()
            })
            .collect()
    };
    (list("targets"), list("components"))
}

fn output(mut cmd: Command) -> Option<String> {
    let out = cmd
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The rustup toolchain `dir` resolves to, or `None` without rustup.
pub fn active_toolchain(dir: &Path) -> Option<String> {
    let mut cmd = tool_in(dir, "rustup");
    cmd.args(["show", "active-toolchain"]);
    output(cmd)?.split_whitespace().next().map(str::to_string)
}

/// The sysroot of the `rustc` used in `dir`.
pub fn sysroot(dir: &Path) -> Result<PathBuf, String> {
    let mut cmd = tool_in(dir, "rustc");
    cmd.args(["--print", "sysroot"]);
    output(cmd).map(PathBuf::from).ok_or_else(|| {
        format!(
            "cannot run `rustc --print sysroot` in {}: is Rust installed? \
             (https://rustup.rs: curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh)",
            dir.display()
        )
    })
}

/// Whether `sysroot` has `target`'s standard library (its `libcore`).
pub fn has_target(sysroot: &Path, target: &str) -> bool {
    std::fs::read_dir(sysroot.join("lib/rustlib").join(target).join("lib"))
        .map(|rd| {
            rd.filter_map(Result::ok)
                .any(|e| e.file_name().to_string_lossy().starts_with("libcore-"))
        })
        .unwrap_or(false)
}

/// What the toolchain of `dir` lacks of `targets` and `components`.
/// Components are checked through rustup only (a toolchain without rustup
/// is judged by its targets).
pub fn status(dir: &Path, targets: &[&str], components: &[&str]) -> Result<Status, String> {
    let root = sysroot(dir)?;
    let toolchain = active_toolchain(dir);
    let targets: Vec<String> = targets
        .iter()
        .filter(|t| !has_target(&root, t))
        .map(|t| t.to_string())
        .collect();
    let mut missing_components = Vec::new();
    if let Some(tc) = &toolchain {
        let mut cmd = tool_in(dir, "rustup");
        cmd.args(["component", "list", "--installed", "--toolchain", tc]);
        if let Some(list) = output(cmd) {
            let installed: Vec<&str> = list.lines().map(str::trim).collect();
            missing_components = components
                .iter()
                .filter(|c| {
                    !installed
                        .iter()
                        .any(|i| i == *c || i.strip_prefix(*c).is_some_and(|r| r.starts_with('-')))
                })
                .map(|c| c.to_string())
                .collect();
        }
    }
    Ok(if targets.is_empty() && missing_components.is_empty() {
        Status::Complete
    } else {
        Status::Missing {
            toolchain,
            targets,
            components: missing_components,
        }
    })
}

/// Checks `dir`'s toolchain for `targets` and `components` and installs
/// what is missing with rustup, saying so in one line per command. Without
/// rustup, or when the installation fails, the error says what to run.
pub fn ensure(dir: &Path, targets: &[&str], components: &[&str]) -> Result<(), String> {
    let status = match status(dir, targets, components) {
        Ok(s) => s,
        // No usable toolchain at all (rustup's auto-install off and the
        // toolchain file's toolchain absent): install the file's toolchain.
        Err(e) if active_toolchain(dir).is_some() || rustup_present(dir) => {
            eprintln!(
                "toolchain: {e}; running `rustup toolchain install --no-self-update` in {}",
                dir.display()
            );
            run(dir, "rustup toolchain install --no-self-update")?;
            status(dir, targets, components)?
        }
        Err(e) => return Err(e),
    };
    let Status::Missing { toolchain, .. } = &status else {
        return Ok(());
    };
    let fix = status.fix();
    if toolchain.is_none() {
        return Err(format!(
            "the Rust toolchain used in {} lacks {} and rustup is not installed. A \
             distribution's Rust has no standard library for the kernels' target: install \
             rustup (https://rustup.rs: curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs \
             | sh), then run `{}`",
            dir.display(),
            missing_list(&status),
            fix.join(" && "),
        ));
    }
    eprintln!(
        "toolchain: {} missing, running `{}`",
        missing_list(&status),
        fix.join(" && ")
    );
    for line in &fix {
        run(dir, line)?;
    }
    Ok(())
}

fn rustup_present(dir: &Path) -> bool {
    let mut cmd = tool_in(dir, "rustup");
    cmd.arg("--version");
    output(cmd).is_some()
}

/// Runs a `rustup ...` command line in `dir`.
fn run(dir: &Path, line: &str) -> Result<(), String> {
    let mut cmd = tool_in(dir, "rustup");
    cmd.args(line.split_whitespace().skip(1));
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run `{line}`: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    Err(format!(
        "`{line}` failed ({}); run it yourself (it needs network access to \
         static.rust-lang.org):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim_end()
    ))
}

fn missing_list(status: &Status) -> String {
    match status {
        Status::Complete => String::new(),
        Status::Missing {
            targets,
            components,
            ..
        } => targets
            .iter()
            .map(|t| format!("target {t}"))
            .chain(components.iter().map(|c| format!("component {c}")))
            .collect::<Vec<_>>()
            .join(", "),
    }
}

/// [`ensure`] for the kernels, once per process: [`KERNEL_TARGET`] plus the
/// targets and components of the workspace's `rust-toolchain.toml`.
pub fn ensure_for_kernels() -> Result<(), String> {
    static DONE: OnceLock<Result<(), String>> = OnceLock::new();
    DONE.get_or_init(|| {
        let root = workspace_root();
        let text = std::fs::read_to_string(root.join("rust-toolchain.toml")).unwrap_or_default();
        let (mut targets, components) = toolchain_file_lists(&text);
        if !targets.iter().any(|t| t == KERNEL_TARGET) {
            targets.push(KERNEL_TARGET.to_string());
        }
        let targets: Vec<&str> = targets.iter().map(String::as_str).collect();
        let components: Vec<&str> = components.iter().map(String::as_str).collect();
        ensure(&root, &targets, &components)
    })
    .clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toolchain_file_is_read() {
        let (t, c) = toolchain_file_lists(
            "[toolchain]\nchannel = \"stable\"\ncomponents = [\"rustfmt\", \"clippy\"]\ntargets = [\"x86_64-unknown-none\"]\n",
        );
        assert_eq!(t, ["x86_64-unknown-none"]);
        assert_eq!(c, ["rustfmt", "clippy"]);
        let real = std::fs::read_to_string(workspace_root().join("rust-toolchain.toml")).unwrap();
        assert!(toolchain_file_lists(&real)
            .0
            .contains(&KERNEL_TARGET.to_string()));
    }

    #[test]
    fn fix_names_the_toolchain() {
        let s = Status::Missing {
            toolchain: Some("stable-x86_64-unknown-linux-gnu".into()),
            targets: vec!["x86_64-unknown-none".into()],
            components: vec!["clippy".into()],
        };
        assert_eq!(
            s.fix(),
            [
                "rustup target add --toolchain stable-x86_64-unknown-linux-gnu x86_64-unknown-none",
                "rustup component add --toolchain stable-x86_64-unknown-linux-gnu clippy"
            ]
        );
        assert!(Status::Complete.fix().is_empty());
    }

    /// The detection, pointed at a target and a component that are not
    /// installed (they do not exist), reports both and the commands to run;
    /// the kernels' own target is reported present once `ensure` ran.
    #[test]
    fn a_target_that_is_not_installed_is_detected() {
        let root = workspace_root();
        ensure_for_kernels().expect("the kernels' target can be installed");
        let s = status(
            &root,
            &[KERNEL_TARGET, "pvops-not-a-target"],
            &["pvops-not-a-component"],
        )
        .unwrap();
        let Status::Missing {
            toolchain,
            targets,
            components,
        } = &s
        else {
            panic!("a missing target was not detected: {s:?}");
        };
        assert_eq!(targets, &["pvops-not-a-target"]);
        let fix = s.fix();
        assert!(fix[0].starts_with("rustup target add"), "{fix:?}");
        assert!(fix[0].ends_with(" pvops-not-a-target"), "{fix:?}");
        match toolchain {
            Some(tc) => {
                assert!(fix[0].contains(&format!("--toolchain {tc} ")), "{fix:?}");
                assert_eq!(components, &["pvops-not-a-component"]);
            }
            None => println!("note: no rustup; components were not checked"),
        }
        assert_eq!(
            status(&root, &[KERNEL_TARGET], &[]).unwrap(),
            Status::Complete
        );
    }
}
