//! Finding (or installing) QEMU and building its command line.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

use pvops_abi::exit::DEBUG_EXIT_PORT;

use crate::scenario::Scenario;

/// Environment variable naming the QEMU binary (or a wrapper script).
pub const QEMU_ENV: &str = "PVOPS_QEMU";
/// The QEMU binary looked for on `PATH`.
pub const QEMU_BINARY: &str = "qemu-system-x86_64";
/// The Debian package that provides it.
pub const DEBIAN_PACKAGE: &str = "qemu-system-x86";

/// apt-get, by absolute path.
const APT_GET: &str = "/usr/bin/apt-get";

/// A usable QEMU.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Qemu {
    /// The binary (or wrapper) to run.
    pub path: PathBuf,
    /// First line of `--version`.
    pub version: String,
}

/// Where to look for QEMU: `PVOPS_QEMU` if set, else `PATH`.
pub fn locate() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(QEMU_ENV).filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    find_in_path(QEMU_BINARY, &std::env::var_os("PATH").unwrap_or_default())
}

/// Finds an executable `name` in a `PATH`-style list.
pub fn find_in_path(name: &str, path: &std::ffi::OsStr) -> Option<PathBuf> {
    std::env::split_paths(path)
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// What to do when QEMU is missing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InstallPlan {
    /// Root on Debian: install the package with apt-get.
    AptGet,
    /// Anything else: tell the user how.
    Explain,
}

/// Decides how to get QEMU, from whether we are root and on Debian.
pub fn install_plan(is_root: bool, is_debian: bool) -> InstallPlan {
    if is_root && is_debian {
        InstallPlan::AptGet
    } else {
        InstallPlan::Explain
    }
}

/// How a user installs QEMU by hand.
pub fn install_hint() -> String {
    format!(
        "{QEMU_BINARY} not found. Install it (Debian/Ubuntu: `sudo apt-get install {DEBIAN_PACKAGE}`; \
         Fedora: `sudo dnf install qemu-system-x86`; Arch: `sudo pacman -S qemu-system-x86`), \
         or point {QEMU_ENV} at a QEMU binary."
    )
}

/// Whether the effective user is root (from /proc, so no PATH is needed).
fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().nth(1).map(|euid| euid == "0"))
            .unwrap_or(false)
    })
}

fn is_debian() -> bool {
    Path::new("/etc/debian_version").exists() && Path::new(APT_GET).exists()
}

/// Finds QEMU, installing it with apt-get when it is missing and we are root
/// on Debian (saying so on stderr). Errors carry install instructions.
pub fn ensure() -> Result<Qemu, String> {
    let path = match locate() {
        Some(p) => p,
        None => match install_plan(is_root(), is_debian()) {
            InstallPlan::Explain => return Err(install_hint()),
            InstallPlan::AptGet => {
                eprintln!(
                    "{QEMU_BINARY} not found: installing {DEBIAN_PACKAGE} with apt-get (running as root on Debian)"
                );
                apt_install()?;
                locate().ok_or_else(|| {
                    format!("{DEBIAN_PACKAGE} was installed but {QEMU_BINARY} is still not on PATH")
                })?
            }
        },
    };
    let version = version(&path)?;
    Ok(Qemu { path, version })
}

fn apt_install() -> Result<(), String> {
    let run = |args: &[&str]| -> Result<(), String> {
        let status = Command::new(APT_GET)
            .args(["-o", "DPkg::Lock::Timeout=300"])
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .map_err(|e| format!("cannot run apt-get: {e}"))?;
        if status.success() {
            Ok(())
        } else {
            Err(format!("apt-get {} failed ({status})", args.join(" ")))
        }
    };
    run(&["update", "-q"])?;
    run(&["install", "-y", "-q", DEBIAN_PACKAGE])
}

/// First line of `qemu --version`, e.g. `QEMU emulator version 7.2.22 (...)`.
pub fn version(path: &Path) -> Result<String, String> {
    let out = Command::new(path)
        .arg("--version")
        .output()
        .map_err(|e| format!("cannot run {}: {e}", path.display()))?;
    if !out.status.success() {
        return Err(format!(
            "{} --version failed ({}): {}",
            path.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .unwrap_or("")
        .trim()
        .to_string())
}

/// The files a scenario boots.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Images {
    /// `-kernel`.
    pub kernel: PathBuf,
    /// `-initrd`, for the microvisor's guest.
    pub initrd: Option<PathBuf>,
}

/// Builds QEMU's arguments for `scenario` (serial on stdio).
/// `extra_guest` is appended to the guest command line.
pub fn args(scenario: &Scenario, images: &Images, extra_guest: &str) -> Vec<OsString> {
    let mut a: Vec<OsString> = Vec::new();
    let mut push = |s: &str| a.push(s.into());
    push("-accel");
    push(scenario.accel.name());
    push("-cpu");
    push(scenario.cpu_model());
    for s in [
        "-m",
        "512M",
        "-smp",
        "1",
        "-display",
        "none",
        "-vga",
        "none",
        "-nic",
        "none",
        "-no-reboot",
        "-monitor",
        "none",
        "-serial",
        "stdio",
        "-device",
    ] {
        push(s);
    }
    push(&format!(
        "isa-debug-exit,iobase={DEBUG_EXIT_PORT:#x},iosize=4"
    ));
    for s in scenario.qemu_args {
        push(s);
    }
    a.push("-kernel".into());
    a.push(images.kernel.clone().into());
    if let Some(initrd) = &images.initrd {
        a.push("-initrd".into());
        a.push(initrd.clone().into());
    }
    let append = scenario.append(extra_guest);
    if !append.is_empty() {
        a.push("-append".into());
        a.push(append.into());
    }
    a
}

/// Whether `/dev/kvm` opens read-write; the error says why not.
pub fn kvm_usable() -> Result<(), String> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .map(|_| ())
        .map_err(|e| format!("/dev/kvm not usable: {e}"))
}

/// Whether the host CPU advertises AMD SVM (`svm` in /proc/cpuinfo).
pub fn host_svm() -> Result<(), String> {
    let info = std::fs::read_to_string("/proc/cpuinfo")
        .map_err(|e| format!("cannot read /proc/cpuinfo: {e}"))?;
    let has = info
        .lines()
        .filter(|l| l.starts_with("flags"))
        .any(|l| l.split_whitespace().any(|f| f == "svm"));
    if has {
        Ok(())
    } else {
        Err("host CPU has no AMD SVM".to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::find;

    fn strs(a: &[OsString]) -> Vec<String> {
        a.iter().map(|s| s.to_string_lossy().into_owned()).collect()
    }

    #[test]
    fn tcg_direct_command_line() {
        let images = Images {
            kernel: "/k/example-kernel".into(),
            initrd: None,
        };
        let a = strs(&args(find("tcg").unwrap(), &images, ""));
        let joined = a.join(" ");
        assert!(joined.starts_with("-accel tcg -cpu max -m 512M -smp 1"));
        assert!(joined.contains("-no-reboot"));
        assert!(joined.contains("-device isa-debug-exit,iobase=0xf4,iosize=4"));
        assert!(joined.ends_with("-kernel /k/example-kernel"), "{joined}");
        assert!(!a.contains(&"-initrd".to_string()));
        assert!(!a.contains(&"-append".to_string()));
    }

    #[test]
    fn microvisor_command_line() {
        let images = Images {
            kernel: "/k/microvisor".into(),
            initrd: Some("/k/example-kernel".into()),
        };
        let a = strs(&args(find("microvisor:fault-hang").unwrap(), &images, ""));
        let i = a.iter().position(|s| s == "-initrd").unwrap();
        assert_eq!(a[i + 1], "/k/example-kernel");
        let i = a.iter().position(|s| s == "-append").unwrap();
        assert_eq!(a[i + 1], "persona=none watchdog_ms=3000 -- fault=hang");
        let kvm = strs(&args(find("kvm").unwrap(), &images, "dump=cpuid"));
        assert_eq!(kvm[..3], ["-accel", "kvm", "-cpu"]);
        assert!(kvm[3].starts_with("host"));
        assert_eq!(kvm.last().unwrap(), "dump=cpuid");
    }

    #[test]
    fn plans_and_path_search() {
        assert_eq!(install_plan(true, true), InstallPlan::AptGet);
        assert_eq!(install_plan(false, true), InstallPlan::Explain);
        assert_eq!(install_plan(true, false), InstallPlan::Explain);
        assert!(install_hint().contains("apt-get install qemu-system-x86"));
        assert_eq!(
            find_in_path("sh", "/nonexistent:/bin".as_ref()),
            Some("/bin/sh".into())
        );
        assert_eq!(
            find_in_path("no-such-binary-pvops", "/bin:/usr/bin".as_ref()),
            None
        );
    }
}
