//! Finding (or installing) QEMU and building its command line.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

use pvops_abi::exit::DEBUG_EXIT_PORT;

use crate::scenario::{Scenario, TSC_HZ_PLACEHOLDER};
use crate::Resolved;

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
pub(crate) fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().nth(1).map(|euid| euid == "0"))
            .unwrap_or(false)
    })
}

pub(crate) fn is_debian() -> bool {
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

/// The `-cpu` value of `scenario`, with the configured TSC frequency
/// substituted for [`TSC_HZ_PLACEHOLDER`].
pub fn cpu_arg(scenario: &Scenario, resolved: &Resolved) -> String {
    let cpu = scenario.cpu_model();
    match resolved.tsc_hz {
        Some(hz) => cpu.replace(TSC_HZ_PLACEHOLDER, &hz.to_string()),
        None => cpu.to_string(),
    }
}

/// Builds QEMU's arguments for `scenario` (serial on stdio).
/// `extra_guest` is appended to the guest command line.
pub fn args(
    scenario: &Scenario,
    images: &Images,
    extra_guest: &str,
    resolved: &Resolved,
) -> Vec<OsString> {
    let mut a: Vec<OsString> = Vec::new();
    let mut push = |s: &str| a.push(s.into());
    push("-accel");
    push(scenario.accel.name());
    push("-cpu");
    push(&cpu_arg(scenario, resolved));
    push("-smp");
    push(&scenario.cpus.to_string());
    for s in [
        "-m",
        "512M",
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

/// Dry probe: starts QEMU paused (`-S`) with `accel`, `cpu` and `extra`
/// arguments and no guest, and tells its monitor to quit. QEMU creates the
/// machine and its vCPUs (where KVM checks the CPU model and TSC frequency)
/// before it reads the monitor, so a refused configuration exits with an
/// error and an accepted one quits with status 0. The error is QEMU's.
pub fn accepts(qemu: &Path, accel: &str, cpu: &str, extra: &[&str]) -> Result<(), String> {
    use std::io::Write;
    use std::process::Stdio;
    use std::time::{Duration, Instant};
    let mut child = Command::new(qemu)
        .args(["-accel", accel, "-cpu", cpu])
        .args(["-m", "64M", "-smp", "1", "-display", "none", "-nodefaults"])
        .args(["-no-reboot", "-S", "-monitor", "stdio"])
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", qemu.display()))?;
    if let Some(mut stdin) = child.stdin.take() {
        // QEMU may already have exited (refused): a broken pipe is fine.
        let _ = stdin.write_all(b"quit\n");
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break Some(st),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
        }
    };
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        use std::io::Read;
        let _ = e.read_to_string(&mut stderr);
    }
    match status {
        Some(st) if st.success() => Ok(()),
        Some(st) => Err(format!(
            "QEMU refuses -accel {accel} -cpu {cpu} ({st}): {}",
            stderr
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect::<Vec<_>>()
                .join(" / ")
        )),
        None => Err(format!(
            "QEMU did not quit within 30 s when probing -cpu {cpu}"
        )),
    }
}

/// Candidate TSC frequencies (Hz) for a KVM guest, in order: 1.5 GHz
/// (differs from any likely host, so only a host with TSC scaling accepts
/// it), then the host's own TSC rate as the kernel measured it (its log:
/// `tsc: Refined TSC clocksource calibration` or `tsc: Detected`), then
/// `cpu MHz` of /proc/cpuinfo (the TSC rate on a VM host, where it does not
/// change). Without TSC scaling KVM accepts only a rate within 250 ppm of
/// the host's.
pub fn tsc_hz_candidates() -> Vec<u64> {
    let mut out = vec![1_500_000_000];
    let log = Command::new("dmesg")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    out.extend(tsc_hz_from_kernel_log(&log));
    if let Ok(info) = std::fs::read_to_string("/proc/cpuinfo") {
        out.extend(tsc_hz_from_cpuinfo(&info));
    }
    let mut seen = Vec::new();
    out.retain(|hz| {
        let new = !seen.contains(hz);
        seen.push(*hz);
        new
    });
    out
}

/// `X.YYY MHz` → Hz.
fn mhz_to_hz(s: &str) -> Option<u64> {
    let s = s.trim();
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    let mut frac = frac.chars().take(6).collect::<String>();
    while frac.len() < 6 {
        frac.push('0');
    }
    let hz = int.parse::<u64>().ok()? * 1_000_000 + frac.parse::<u64>().ok()?;
    (hz > 0).then_some(hz)
}

/// The TSC rate from a kernel log: the refined calibration if present
/// (last one wins), else the detected one.
pub fn tsc_hz_from_kernel_log(log: &str) -> Option<u64> {
    let find = |marker: &str| {
        log.lines()
            .filter_map(|l| l.split_once(marker).map(|(_, rest)| rest))
            .filter_map(|rest| {
                let mut words = rest.split_whitespace();
                let value = words.next()?;
                (words.next() == Some("MHz")).then(|| mhz_to_hz(value))?
            })
            .next_back()
    };
    find("tsc: Refined TSC clocksource calibration:").or_else(|| find("tsc: Detected"))
}

/// The TSC rate KVM itself uses for its guests here, in kHz, and where it
/// was read: KVM's `tsc_khz` is the host kernel's TSC calibration, which
/// its log states (`tsc: Refined TSC clocksource calibration` or `tsc:
/// Detected`, needs `dmesg` access); else `cpu MHz` of /proc/cpuinfo (the
/// TSC rate on a VM host, rounded to kHz by the kernel).
pub fn host_tsc_khz() -> Option<(u64, &'static str)> {
    let log = Command::new("dmesg")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    if let Some(hz) = tsc_hz_from_kernel_log(&log).into_iter().next() {
        return Some((hz / 1000, "host kernel log (tsc:)"));
    }
    let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    tsc_hz_from_cpuinfo(&info).map(|hz| (hz / 1000, "/proc/cpuinfo cpu MHz"))
}

/// `cpu MHz` of the first CPU in /proc/cpuinfo, in Hz.
pub fn tsc_hz_from_cpuinfo(info: &str) -> Option<u64> {
    info.lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim() == "cpu MHz")
        .and_then(|(_, v)| mhz_to_hz(v))
}

/// The first candidate TSC frequency ([`tsc_hz_candidates`]) that QEMU/KVM
/// accepts with `scenario`'s `-cpu` (dry probes, see [`accepts`]); found
/// once per process. The error lists what QEMU said.
pub fn kvm_tsc_hz(qemu: &Qemu, scenario: &Scenario) -> Result<u64, String> {
    use std::sync::Mutex;
    static FOUND: Mutex<Vec<(String, Result<u64, String>)>> = Mutex::new(Vec::new());
    let key = format!("{} {}", qemu.path.display(), scenario.cpu_model());
    let mut found = FOUND.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, r)) = found.iter().find(|(k, _)| *k == key) {
        return r.clone();
    }
    kvm_usable()?;
    let mut errors = Vec::new();
    let mut result = Err(String::new());
    for hz in tsc_hz_candidates() {
        let cpu = scenario
            .cpu_model()
            .replace(TSC_HZ_PLACEHOLDER, &hz.to_string());
        match accepts(&qemu.path, scenario.accel.name(), &cpu, scenario.qemu_args) {
            Ok(()) => {
                result = Ok(hz);
                break;
            }
            Err(e) => errors.push(format!("{hz} Hz: {e}")),
        }
    }
    if result.is_err() {
        result = Err(format!(
            "QEMU/KVM accepts no tsc-frequency ({})",
            errors.join("; ")
        ));
    }
    found.push((key, result.clone()));
    result
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
        let a = strs(&args(
            find("tcg").unwrap(),
            &images,
            "",
            &Resolved::default(),
        ));
        let joined = a.join(" ");
        assert!(joined.starts_with("-accel tcg -cpu max -smp 1 -m 512M"));
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
        let a = strs(&args(
            find("microvisor:fault-hang").unwrap(),
            &images,
            "",
            &Resolved::default(),
        ));
        let i = a.iter().position(|s| s == "-initrd").unwrap();
        assert_eq!(a[i + 1], "/k/example-kernel");
        let i = a.iter().position(|s| s == "-append").unwrap();
        assert_eq!(a[i + 1], "persona=none watchdog_ms=3000 -- fault=hang");
        let kvm = strs(&args(
            find("kvm").unwrap(),
            &images,
            "dump=cpuid",
            &Resolved::default(),
        ));
        assert_eq!(kvm[..3], ["-accel", "kvm", "-cpu"]);
        assert!(kvm[3].starts_with("host"));
        assert_eq!(kvm.last().unwrap(), "dump=cpuid");
    }

    #[test]
    fn configured_tsc_frequency_and_machine_args() {
        let images = Images {
            kernel: "/k/example-kernel".into(),
            initrd: None,
        };
        let s = find("kvm-vmware-freq").unwrap();
        let resolved = Resolved {
            tsc_hz: Some(2_445_404_000),
        };
        let a = strs(&args(s, &images, "", &resolved));
        assert_eq!(
            a[3],
            "host,-arch-capabilities,+invtsc,vmware-cpuid-freq=on,tsc-frequency=2445404000"
        );
        let v = strs(&args(find("vmport").unwrap(), &images, "", &resolved));
        assert!(v.join(" ").contains("-machine pc,vmport=on"), "{v:?}");
        assert_eq!(v[3], "max");
    }

    #[test]
    fn host_tsc_rate_sources() {
        let log = "[    0.000025] tsc: Detected 2445.404 MHz processor\n\
                   [    1.2] tsc: Refined TSC clocksource calibration: 2445.411 MHz\n";
        assert_eq!(tsc_hz_from_kernel_log(log), Some(2_445_411_000));
        assert_eq!(
            tsc_hz_from_kernel_log("[0.0] tsc: Detected 2100.000 MHz processor"),
            Some(2_100_000_000)
        );
        assert_eq!(tsc_hz_from_kernel_log("tsc: Detected 2100.000 GHz"), None);
        assert_eq!(tsc_hz_from_kernel_log("nothing"), None);
        let info = "processor\t: 0\ncpu MHz\t\t: 2445.404\nflags: x\n";
        assert_eq!(tsc_hz_from_cpuinfo(info), Some(2_445_404_000));
        assert_eq!(mhz_to_hz("3000"), Some(3_000_000_000));
        assert_eq!(mhz_to_hz("1.5"), Some(1_500_000));
        assert_eq!(mhz_to_hz("x"), None);
        let c = tsc_hz_candidates();
        assert_eq!(c[0], 1_500_000_000);
        assert!(c.iter().all(|&hz| hz > 0));
    }

    #[test]
    fn dry_probe_reports_refusal() {
        // A missing binary and a CPU model no QEMU knows.
        assert!(accepts(Path::new("/nonexistent/qemu"), "tcg", "max", &[]).is_err());
        if let Some(q) = locate() {
            let e = accepts(&q, "tcg", "no-such-cpu-model", &[]).unwrap_err();
            assert!(e.contains("no-such-cpu-model"), "{e}");
            accepts(&q, "tcg", "max", &["-machine", "pc,vmport=on"]).unwrap();
        }
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
