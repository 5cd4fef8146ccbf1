//! The L1 Linux image of the nested scenarios: built once, cached outside
//! the clone under a hash of its recipe.
//!
//! Two stages, each in its own cache directory named by the hash of its
//! inputs, each built into a temporary directory and renamed into place
//! (so a killed build leaves no half image behind), under a lock file (so
//! parallel test threads and processes build once):
//! 1. `rootfs-<hash>/`: `debootstrap --variant=minbase bookworm` plus
//!    `linux-image-amd64` and `qemu-system-x86` from bookworm-backports
//!    (`assets/build-rootfs.sh`);
//! 2. `image-<hash>/`: the kernel, a busybox initramfs (virtio_blk + ext4,
//!    `assets/initramfs-init`), the read-only ext4 image with the L1 init
//!    (`assets/l1-init`), and a manifest of file sizes and package versions
//!    (`assets/build-image.sh`).
//!
//! The cache is `$PVOPS_NESTED_CACHE`, else `$XDG_CACHE_HOME/pvops/nested`,
//! else `~/.cache/pvops/nested`. `PVOPS_NESTED_REBUILD=1` rebuilds.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::qemu::{is_debian, is_root};

/// Environment variable naming the cache directory.
pub const CACHE_ENV: &str = "PVOPS_NESTED_CACHE";
/// Environment variable that forces a rebuild when set to `1`.
pub const REBUILD_ENV: &str = "PVOPS_NESTED_REBUILD";
/// Environment variable naming the Debian mirror.
pub const MIRROR_ENV: &str = "PVOPS_NESTED_MIRROR";
/// The default Debian mirror.
pub const DEFAULT_MIRROR: &str = "http://deb.debian.org/debian";
/// The Debian release of L1.
pub const SUITE: &str = "bookworm";
/// Where L1's kernel and QEMU come from.
pub const BACKPORTS: &str = "bookworm-backports";
/// The packages installed from [`BACKPORTS`], pinned by name (their
/// versions are recorded in the manifest): the 6.12 kernel has
/// CONFIG_KVM_HYPERV and CONFIG_KVM_XEN, QEMU 10.0 emulates Xen (>= 8.0).
pub const PACKAGES: &[&str] = &["linux-image-amd64", "qemu-system-x86"];
/// Host tools the build needs: (program, Debian package).
pub const HOST_TOOLS: &[(&str, &str)] = &[
    ("debootstrap", "debootstrap"),
    ("cpio", "cpio"),
    ("xz", "xz-utils"),
    ("mkfs.ext4", "e2fsprogs"),
    ("gzip", "gzip"),
    ("chroot", "coreutils"),
];
/// The static busybox of Debian's busybox-static, for the initramfs.
pub const BUSYBOX: &str = "/bin/busybox";
/// The Debian package of [`BUSYBOX`].
pub const BUSYBOX_PACKAGE: &str = "busybox-static";

const BUILD_ROOTFS: &str = include_str!("assets/build-rootfs.sh");
const BUILD_IMAGE: &str = include_str!("assets/build-image.sh");
/// The initramfs's init.
pub const INITRAMFS_INIT: &str = include_str!("assets/initramfs-init");
/// L1's init, in the ext4 image.
pub const L1_INIT: &str = include_str!("assets/l1-init");

/// Longest a build stage may take before it is killed (a first debootstrap
/// takes one to three minutes; a slow mirror more).
const BUILD_TIMEOUT: Duration = Duration::from_secs(1800);

/// The files of a built image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Image {
    /// The image directory.
    pub dir: PathBuf,
    /// L1's kernel.
    pub kernel: PathBuf,
    /// The initramfs.
    pub initrd: PathBuf,
    /// The ext4 root file system (attached read-only).
    pub rootfs: PathBuf,
    /// `dpkg-query -W` of [`PACKAGES`]: `name<TAB>version` lines.
    pub versions: String,
}

/// The files an image directory holds, besides the manifest.
const FILES: [&str; 4] = ["vmlinuz", "initrd.img", "rootfs.ext4", "versions"];
const MANIFEST: &str = "manifest";

/// 64-bit FNV-1a (a cache key, not a security hash).
pub fn fnv1a(data: &[u8], mut h: u64) -> u64 {
    for &b in data {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// A 128-bit hex key of `parts` (two FNV-1a passes with different bases),
/// each part length-prefixed so that part boundaries count.
pub fn input_hash(parts: &[&str]) -> String {
    let mut a = 0xcbf2_9ce4_8422_2325_u64;
    let mut b = 0x6c62_272e_07bb_0142_u64;
    for p in parts {
        let len = (p.len() as u64).to_le_bytes();
        a = fnv1a(p.as_bytes(), fnv1a(&len, a));
        b = fnv1a(p.as_bytes(), fnv1a(&len, b));
    }
    format!("{a:016x}{b:016x}")
}

/// The Debian mirror to use.
pub fn mirror() -> String {
    std::env::var(MIRROR_ENV)
        .ok()
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| DEFAULT_MIRROR.to_string())
}

/// Stage 1's key: the root file system's recipe.
pub fn rootfs_key(mirror: &str) -> String {
    let mut parts = vec!["rootfs-v1", BUILD_ROOTFS, mirror, SUITE, BACKPORTS];
    parts.extend_from_slice(PACKAGES);
    input_hash(&parts)
}

/// Stage 2's key: stage 1's key plus the image recipe and both inits.
pub fn image_key(rootfs_key: &str) -> String {
    input_hash(&["image-v1", rootfs_key, BUILD_IMAGE, INITRAMFS_INIT, L1_INIT])
}

/// The cache directory ([`CACHE_ENV`], `$XDG_CACHE_HOME/pvops/nested`,
/// `~/.cache/pvops/nested`).
pub fn cache_dir() -> Result<PathBuf, String> {
    let env = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
    if let Some(d) = env(CACHE_ENV) {
        return Ok(PathBuf::from(d));
    }
    if let Some(d) = env("XDG_CACHE_HOME") {
        return Ok(PathBuf::from(d).join("pvops").join("nested"));
    }
    env("HOME")
        .map(|h| PathBuf::from(h).join(".cache").join("pvops").join("nested"))
        .ok_or_else(|| format!("no cache directory: set {CACHE_ENV}, XDG_CACHE_HOME or HOME"))
}

/// Where the image of the current recipe lives (built or not).
pub fn image_dir() -> Result<PathBuf, String> {
    Ok(cache_dir()?.join(format!("image-{}", image_key(&rootfs_key(&mirror())))))
}

/// Checks a built image directory against its manifest (every file
/// present with the size recorded at build time). The error starts with
/// `nested image broken:`.
pub fn check(dir: &Path) -> Result<Image, String> {
    let broken = |why: String| format!("nested image broken: {}: {why}", dir.display());
    let manifest =
        fs::read_to_string(dir.join(MANIFEST)).map_err(|e| broken(format!("no manifest ({e})")))?;
    for name in FILES {
        let want: u64 = manifest
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
            .ok_or_else(|| broken(format!("the manifest has no size for {name}")))?;
        let got = fs::metadata(dir.join(name))
            .map_err(|e| broken(format!("{name}: {e}")))?
            .len();
        if got != want || got == 0 {
            return Err(broken(format!(
                "{name} is {got} bytes, the manifest says {want}"
            )));
        }
    }
    Ok(Image {
        dir: dir.to_path_buf(),
        kernel: dir.join("vmlinuz"),
        initrd: dir.join("initrd.img"),
        rootfs: dir.join("rootfs.ext4"),
        versions: fs::read_to_string(dir.join("versions")).unwrap_or_default(),
    })
}

/// Whether `path` is a statically linked ELF (no PT_INTERP program header;
/// ELF-64 layout: e_phoff at 0x20, e_phentsize at 0x36, e_phnum at 0x38).
pub fn is_static_elf(data: &[u8]) -> bool {
    let u16_at = |o: usize| data.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let u64_at = |o: usize| {
        data.get(o..o + 8)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
    };
    if data.len() < 0x40 || &data[..4] != b"\x7fELF" || data[4] != 2 {
        return false;
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38))
    else {
        return false;
    };
    const PT_INTERP: u32 = 3;
    (0..usize::from(phnum)).all(|i| {
        let o = phoff as usize + i * usize::from(phentsize);
        data.get(o..o + 4)
            .is_some_and(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) != PT_INTERP)
    })
}

fn path_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> =
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()).collect();
    for d in ["/usr/sbin", "/sbin", "/usr/bin", "/bin"] {
        dirs.push(PathBuf::from(d));
    }
    dirs
}

/// The Debian packages of the host tools that are missing.
pub fn missing_packages() -> Vec<&'static str> {
    let dirs = path_dirs();
    let mut out: Vec<&'static str> = HOST_TOOLS
        .iter()
        .filter(|(tool, _)| !dirs.iter().any(|d| d.join(tool).is_file()))
        .map(|&(_, pkg)| pkg)
        .collect();
    if !fs::read(BUSYBOX).is_ok_and(|b| is_static_elf(&b)) {
        out.push(BUSYBOX_PACKAGE);
    }
    out
}

/// The command that installs `packages`.
pub fn install_hint(packages: &[&str]) -> String {
    format!("apt-get install {}", packages.join(" "))
}

/// Installs missing host tools with apt-get when root on Debian; else the
/// error says what to run.
fn ensure_host_tools() -> Result<(), String> {
    let missing = missing_packages();
    if missing.is_empty() {
        return Ok(());
    }
    if !(is_root() && is_debian()) {
        return Err(format!(
            "the nested image needs host tools: run `{}` as root",
            install_hint(&missing)
        ));
    }
    eprintln!(
        "nested image: installing {} with apt-get",
        missing.join(" ")
    );
    for args in [
        vec!["update", "-q"],
        [
            vec!["install", "-y", "-q", "--no-install-recommends"],
            missing.clone(),
        ]
        .concat(),
    ] {
        let st = Command::new("/usr/bin/apt-get")
            .args(["-o", "DPkg::Lock::Timeout=300"])
            .args(&args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .map_err(|e| format!("cannot run apt-get: {e}"))?;
        if !st.success() {
            return Err(format!("apt-get {} failed ({st})", args.join(" ")));
        }
    }
    match missing_packages() {
        m if m.is_empty() => Ok(()),
        m => Err(format!("still missing after apt-get: {}", m.join(" "))),
    }
}

/// Whether the mirror's host answers on its port within 5 s.
fn mirror_reachable(mirror: &str) -> Result<(), String> {
    use std::net::ToSocketAddrs;
    let rest = mirror
        .strip_prefix("http://")
        .or_else(|| mirror.strip_prefix("https://"))
        .ok_or_else(|| format!("mirror {mirror} is not an http(s) URL"))?;
    let host = rest.split('/').next().unwrap_or(rest);
    let port = if mirror.starts_with("https") { 443 } else { 80 };
    let hostport = if host.contains(':') {
        host.to_string()
    } else {
        format!("{host}:{port}")
    };
    let addrs: Vec<_> = hostport
        .to_socket_addrs()
        .map_err(|e| format!("Debian's archive unreachable: cannot resolve {host}: {e}"))?
        .collect();
    for a in &addrs {
        if std::net::TcpStream::connect_timeout(a, Duration::from_secs(5)).is_ok() {
            return Ok(());
        }
    }
    Err(format!(
        "Debian's archive unreachable: no connection to {hostport}"
    ))
}

/// Whether the nested scenarios can run here: the image of the current
/// recipe is cached and intact, or it can be built (root, the host tools
/// present or installable, Debian's archive reachable). The error is the
/// reason for a SKIP.
pub fn available() -> Result<(), String> {
    let dir = image_dir()?;
    if std::env::var(REBUILD_ENV).as_deref() != Ok("1") && dir.exists() {
        // Present: a broken one is reported by the run, not skipped.
        return Ok(());
    }
    if !is_root() {
        return Err(format!(
            "the nested L1 image is not built ({}) and building it needs root (debootstrap, chroot)",
            dir.display()
        ));
    }
    let missing = missing_packages();
    if !missing.is_empty() && !is_debian() {
        return Err(format!(
            "the nested image needs host tools: `{}`",
            install_hint(&missing)
        ));
    }
    mirror_reachable(&mirror())
}

/// The image of the current recipe, built if missing (once per process,
/// under a lock file across processes). Errors from a build say which
/// stage failed with the tail of its log; a present but broken image gives
/// `nested image broken: ...`.
pub fn ensure() -> Result<Image, String> {
    static IMAGE: OnceLock<Result<Image, String>> = OnceLock::new();
    IMAGE.get_or_init(build_or_load).clone()
}

fn build_or_load() -> Result<Image, String> {
    let cache = cache_dir()?;
    let mirror = mirror();
    let rkey = rootfs_key(&mirror);
    let dir = cache.join(format!("image-{}", image_key(&rkey)));
    let rebuild = std::env::var(REBUILD_ENV).as_deref() == Ok("1");
    if dir.exists() && !rebuild {
        return check(&dir);
    }
    fs::create_dir_all(&cache).map_err(|e| format!("cannot create {}: {e}", cache.display()))?;
    let lock = fs::File::create(cache.join(".lock"))
        .map_err(|e| format!("cannot create the cache lock: {e}"))?;
    lock.lock()
        .map_err(|e| format!("cannot lock {}: {e}", cache.display()))?;
    // Another process may have built it while we waited.
    if dir.exists() && !rebuild {
        return check(&dir);
    }
    clean_temporaries(&cache);
    ensure_host_tools()?;
    let rootfs = cache.join(format!("rootfs-{rkey}"));
    if rebuild || !rootfs.join("rootfs").join("sbin").exists() || !rootfs.join("versions").exists()
    {
        let tmp = cache.join(format!(".tmp-rootfs-{}", std::process::id()));
        let started = Instant::now();
        eprintln!(
            "nested image: building the L1 root file system (debootstrap {SUITE} + {} from {BACKPORTS}) into {}",
            PACKAGES.join(" "),
            rootfs.display()
        );
        let mut args = vec![
            tmp.display().to_string(),
            mirror.clone(),
            SUITE.to_string(),
            BACKPORTS.to_string(),
        ];
        args.extend(PACKAGES.iter().map(|p| p.to_string()));
        run_script("build-rootfs.sh", BUILD_ROOTFS, &args, &tmp)?;
        replace_dir(&tmp, &rootfs)?;
        eprintln!(
            "nested image: root file system built in {:.0} s",
            started.elapsed().as_secs_f64()
        );
    }
    let started = Instant::now();
    let tmp = cache.join(format!(".tmp-image-{}", std::process::id()));
    let assets = cache.join(format!(".tmp-assets-{}", std::process::id()));
    fs::create_dir_all(&assets).map_err(|e| format!("cannot create {}: {e}", assets.display()))?;
    let iinit = assets.join("initramfs-init");
    let linit = assets.join("l1-init");
    fs::write(&iinit, INITRAMFS_INIT).map_err(|e| e.to_string())?;
    fs::write(&linit, L1_INIT).map_err(|e| e.to_string())?;
    let args = [
        rootfs.join("rootfs").display().to_string(),
        tmp.display().to_string(),
        BUSYBOX.to_string(),
        iinit.display().to_string(),
        linit.display().to_string(),
    ];
    let built = run_script("build-image.sh", BUILD_IMAGE, &args, &tmp);
    let _ = fs::remove_dir_all(&assets);
    built?;
    fs::copy(rootfs.join("versions"), tmp.join("versions"))
        .map_err(|e| format!("cannot copy the package versions: {e}"))?;
    let mut manifest = String::new();
    for name in FILES {
        let len = fs::metadata(tmp.join(name))
            .map_err(|e| format!("the image build left no {name}: {e}"))?
            .len();
        manifest.push_str(&format!("{name} {len}\n"));
    }
    fs::write(tmp.join(MANIFEST), manifest).map_err(|e| e.to_string())?;
    replace_dir(&tmp, &dir)?;
    eprintln!(
        "nested image: L1 image built in {:.0} s: {}",
        started.elapsed().as_secs_f64(),
        dir.display()
    );
    check(&dir)
}

/// Removes temporaries of killed builds (called under the lock).
fn clean_temporaries(cache: &Path) {
    if let Ok(entries) = fs::read_dir(cache) {
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with(".tmp-") {
                let _ = fs::remove_dir_all(e.path());
            }
        }
    }
}

/// Renames `tmp` to `dst`, replacing an old `dst`.
fn replace_dir(tmp: &Path, dst: &Path) -> Result<(), String> {
    if dst.exists() {
        let old = dst
            .parent()
            .unwrap_or(Path::new("."))
            .join(format!(".tmp-old-{}", std::process::id()));
        fs::rename(dst, &old).map_err(|e| format!("cannot move {} aside: {e}", dst.display()))?;
        let _ = fs::remove_dir_all(&old);
    }
    fs::rename(tmp, dst)
        .map_err(|e| format!("cannot rename {} to {}: {e}", tmp.display(), dst.display()))
}

/// Runs a build script with bash in its own process group, its output in
/// `<work>.log`; kills the whole group after [`BUILD_TIMEOUT`]. The error
/// carries the log's tail.
fn run_script(name: &str, text: &str, args: &[String], work: &Path) -> Result<(), String> {
    use std::os::unix::process::CommandExt;
    let _ = fs::remove_dir_all(work);
    let log_path = work.with_extension("log");
    let log = fs::File::create(&log_path)
        .map_err(|e| format!("cannot create {}: {e}", log_path.display()))?;
    let err = log.try_clone().map_err(|e| e.to_string())?;
    let mut child = Command::new("bash")
        .arg("-c")
        .arg(text)
        .arg(name)
        .args(args)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(err)
        .process_group(0)
        .spawn()
        .map_err(|e| format!("cannot run bash for {name}: {e}"))?;
    let deadline = Instant::now() + BUILD_TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break Some(st),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(200)),
            _ => {
                kill_group(child.id());
                let _ = child.wait();
                break None;
            }
        }
    };
    let tail = tail_of(&fs::read_to_string(&log_path).unwrap_or_default(), 8);
    match status {
        Some(st) if st.success() => {
            let _ = fs::remove_file(&log_path);
            Ok(())
        }
        Some(st) => Err(format!("nested image: {name} failed ({st}): {tail}")),
        None => Err(format!(
            "nested image: {name} did not finish within {} s (killed): {tail}",
            BUILD_TIMEOUT.as_secs()
        )),
    }
}

/// Kills process group `pgid` (SIGKILL), through kill(1) so that this
/// crate stays free of unsafe code.
pub fn kill_group(pgid: u32) {
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{pgid}")])
        .stderr(Stdio::null())
        .status();
}

/// The last `n` non-empty lines of `s`, joined with ` / `.
pub fn tail_of(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join(" / ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_depend_on_every_input() {
        let a = rootfs_key(DEFAULT_MIRROR);
        assert_eq!(a.len(), 32);
        assert_eq!(a, rootfs_key(DEFAULT_MIRROR));
        assert_ne!(a, rootfs_key("http://example.org/debian"));
        assert_ne!(image_key(&a), image_key("other"));
        assert_ne!(input_hash(&["ab", "c"]), input_hash(&["a", "bc"]));
    }

    #[test]
    fn static_elf_detection() {
        let mut elf = vec![0u8; 0x40 + 56];
        elf[..4].copy_from_slice(b"\x7fELF");
        elf[4] = 2;
        elf[0x20..0x28].copy_from_slice(&0x40u64.to_le_bytes());
        elf[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
        elf[0x38..0x3a].copy_from_slice(&1u16.to_le_bytes());
        elf[0x40..0x44].copy_from_slice(&1u32.to_le_bytes()); // PT_LOAD
        assert!(is_static_elf(&elf));
        elf[0x40..0x44].copy_from_slice(&3u32.to_le_bytes()); // PT_INTERP
        assert!(!is_static_elf(&elf));
        assert!(!is_static_elf(b"#!/bin/sh\n"));
    }

    #[test]
    fn broken_images_are_named() {
        let dir = std::env::temp_dir().join(format!("pvops-nested-check-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let e = check(&dir).unwrap_err();
        assert!(
            e.starts_with("nested image broken:") && e.contains("no manifest"),
            "{e}"
        );
        for f in FILES {
            fs::write(dir.join(f), "1234").unwrap();
        }
        let manifest: String = FILES.iter().map(|f| format!("{f} 4\n")).collect();
        fs::write(dir.join(MANIFEST), &manifest).unwrap();
        assert!(check(&dir).is_ok());
        fs::write(dir.join("rootfs.ext4"), "12").unwrap();
        let e = check(&dir).unwrap_err();
        assert!(
            e.contains("rootfs.ext4 is 2 bytes, the manifest says 4"),
            "{e}"
        );
        fs::remove_file(dir.join("vmlinuz")).unwrap();
        assert!(check(&dir).unwrap_err().contains("vmlinuz"));
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn tails() {
        assert_eq!(tail_of("a\n\nb\nc\n", 2), "b / c");
        assert_eq!(tail_of("", 3), "");
    }
}
