//! Nested real peers: the example kernel as an L2 guest of QEMU/KVM inside
//! an L1 Linux that runs under host QEMU TCG with emulated SVM and nested
//! paging (issue 10 item 3; facts in docs/nested.md).
//!
//! One scenario = one L1 boot: the runner writes the run's files (the
//! example kernel, L2's command line, a job script) into a 9p share, boots
//! L1 from the cached [`image`], and L1's init runs the job: trace KVM's
//! events, run L2's QEMU under a timeout, copy L2's serial output, the
//! trace, the module list and L1's kernel log back into the share. The
//! runner judges L2 from its `@@` records (never from an exit status) and
//! counts L1 KVM's exits from the trace ([`trace`]).
//!
//! Flake defences (reported as `rerun: ...` notes): an L2 exit whose RIP
//! lies in L1's kvm/kvm_amd text means TCG resumed L2 with L1's state (L1
//! is corrupted); L1 losing its own timer ("clocksource: Long readout
//! interval" in its log) makes L2's timers late; L1 stopping while L2 runs.
//! Each gives one rerun.

pub mod image;
pub mod trace;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::parse::BootResult;
use crate::run::RawRun;
use crate::scenario::nested::{L2End, NestedMode, NestedSpec};
use crate::scenario::Scenario;
use crate::{Resolved, RunOptions, ScenarioReport};

/// The counter name of L1 KVM's exit counts (`exit_counter` in the JSON).
pub const EXIT_COUNTER: &str = "nested-kvm";

/// The L1 console line of a job that reached L1's timer trouble.
const L1_TIMER_LOST: &str = "clocksource: Long readout interval";

/// Host QEMU's arguments for L1: TCG with `-cpu max` (SVM with nested
/// paging emulated), `cpus` vCPUs (one for one L2 vCPU; more with
/// single-threaded TCG: multi-threaded TCG with two resumed L2 with L1's
/// state in about 1 of 20 runs, `thread=single` 0 in 16,
/// `nested-real-peers.md`), 2 GiB, the image's disk read-only, the run's
/// share over virtio-9p, L1's console on stdio.
pub fn l1_args(image: &image::Image, share: &Path, cpus: u32) -> Vec<OsString> {
    let accel = if cpus > 1 { "tcg,thread=single" } else { "tcg" };
    let smp = cpus.max(1).to_string();
    let mut a: Vec<OsString> = [
        "-accel",
        accel,
        "-cpu",
        "max",
        "-smp",
        &smp,
        "-m",
        "2048",
        "-M",
        "pc",
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-no-reboot",
        "-monitor",
        "none",
        "-serial",
        "stdio",
        "-append",
        "console=ttyS0 panic=-1 quiet",
    ]
    .iter()
    .map(OsString::from)
    .collect();
    a.push("-kernel".into());
    a.push(image.kernel.clone().into());
    a.push("-initrd".into());
    a.push(image.initrd.clone().into());
    a.push("-drive".into());
    a.push(
        format!(
            "file={},if=virtio,format=raw,readonly=on",
            image.rootfs.display()
        )
        .into(),
    );
    a.push("-virtfs".into());
    a.push(
        format!(
            "local,path={},mount_tag=share,security_model=none,id=share",
            share.display()
        )
        .into(),
    );
    a
}

/// L2's QEMU arguments inside L1 (without `-append`, which the job adds
/// from `l2-cmdline`): the PVH example kernel on `-M pc`, COM1 to a file.
pub fn l2_args(spec: &NestedSpec) -> Vec<String> {
    let cpu = spec.cpu();
    let smp = spec.cpus.max(1).to_string();
    [
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-monitor",
        "none",
        "-no-reboot",
        "-M",
        "pc",
        "-m",
        "128",
        "-smp",
        &smp,
        "-accel",
        spec.mode.accel(),
        "-cpu",
        &cpu,
        "-kernel",
        "/share/kernel",
        "-device",
        "isa-debug-exit,iobase=0xf4,iosize=4",
        "-serial",
        "file:/tmp/l2-serial",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Single-quotes `s` for sh.
pub fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The job L1's init runs (`/share/job.sh`): enable KVM's tracepoints,
/// record the module list, run L2 under `timeout -s KILL`, then copy L2's
/// serial output and the trace into the share and write `l2-status` last.
pub fn job_script(spec: &NestedSpec) -> String {
    let args: Vec<String> = l2_args(spec).iter().map(|a| sh_quote(a)).collect();
    format!(
        r#"#!/bin/sh
# Written by qemu-runner (src/nested/mod.rs) for one nested run.
T=/sys/kernel/tracing
echo 65536 >$T/buffer_size_kb
for e in kvm_exit kvm_msr kvm_hypercall kvm_hv_hypercall kvm_xen_hypercall; do
    echo 1 >$T/events/kvm/$e/enable || echo "no tracepoint $e"
done
cat /proc/modules >/share/modules.txt
set -- {args}
if [ -s /share/l2-cmdline ]; then set -- "$@" -append "$(cat /share/l2-cmdline)"; fi
echo "@@l1 l2=start" >/dev/console
echo 1 >$T/tracing_on
timeout -s KILL {timeout} qemu-system-x86_64 "$@" 2>/share/l2-stderr.txt
st=$?
echo 0 >$T/tracing_on
echo "@@l1 l2=end status=$st" >/dev/console
cp /tmp/l2-serial /share/l2-serial.txt 2>/dev/null
cat $T/trace >/share/trace.txt
echo $st >/share/l2-status
"#,
        args = args.join(" "),
        timeout = spec.l2_timeout_secs,
    )
}

/// How L2 ended, as the runner saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Seen {
    /// The guest reported `@@ done`.
    Done,
    /// L1 KVM saw a shutdown exit (triple fault) at this RIP.
    TripleFault(u64),
    /// L2's QEMU refused to start; its error.
    Refused(String),
    /// L1 killed L2 after its timeout; the last serial line.
    NeverReported(String),
    /// L2's QEMU exited (status) without a `done` record.
    Exited(i32, String),
    /// L2 did not run to an end: an L1 or image problem.
    NotRun(String),
}

impl Seen {
    /// The verdict text.
    pub fn describe(&self, spec: &NestedSpec) -> String {
        match self {
            Seen::Done => "L2 reported done".to_string(),
            Seen::TripleFault(rip) => {
                format!("L2 triple-faulted (L1 KVM saw a shutdown exit at rip {rip:#x})")
            }
            Seen::Refused(e) => format!("L2's QEMU refused its configuration: {e}"),
            Seen::NeverReported(last) => format!(
                "L2 never reported: L1 killed it after {} s (last L2 line: {last:?})",
                spec.l2_timeout_secs
            ),
            Seen::Exited(st, last) => format!(
                "L2's QEMU exited with status {st} and no `done` record (last L2 line: {last:?})"
            ),
            Seen::NotRun(why) => why.clone(),
        }
    }

    /// Whether this is the end `spec` expects.
    pub fn matches(&self, want: L2End) -> bool {
        matches!(
            (self, want),
            (Seen::Done, L2End::Done)
                | (Seen::TripleFault(_), L2End::TripleFault)
                | (Seen::Refused(_), L2End::Refused)
                | (Seen::NeverReported(_), L2End::NeverReports)
        )
    }
}

/// One L1 boot's results.
#[derive(Clone, Debug)]
pub struct Attempt {
    /// Host QEMU's run (its serial is L1's console).
    pub l1: RawRun,
    /// L2's serial output.
    pub l2_serial: String,
    /// L2's QEMU stderr.
    pub l2_stderr: String,
    /// Seconds from L1's start to L2's start, and L2's run, as L1's console
    /// showed them (`@@l1 l2=start`, `@@l1 l2=end`).
    pub phases: Option<(f64, f64)>,
    /// L1 KVM's trace, when the job copied it.
    pub trace: Option<trace::Trace>,
    /// L1's kernel log.
    pub l1_dmesg: String,
    /// L2 QEMU's exit status as L1's job saw it.
    pub l2_status: Option<i32>,
    /// How L2 ended.
    pub seen: Seen,
    /// Why this attempt should be rerun (a flake of the nested setup).
    pub rerun: Option<String>,
    /// A note even without a rerun (e.g. L1's timer trouble in a passing run).
    pub note: Option<String>,
}

fn last_line(s: &str) -> String {
    s.lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("")
        .to_string()
}

/// Judges an attempt's raw material: L1's console, the share's files.
pub fn classify(
    l1: &RawRun,
    files: &dyn Fn(&str) -> Option<String>,
    timeout: Duration,
) -> (Seen, Option<trace::Trace>) {
    let console = &l1.serial;
    let marks: Vec<&str> = console
        .lines()
        .filter_map(|l| l.trim().strip_prefix("@@l1 "))
        .collect();
    let has = |m: &str| marks.iter().any(|x| x.starts_with(m));
    let last = last_line(console);
    if let Some(reason) = marks.iter().find_map(|m| m.strip_prefix("broken reason=")) {
        return (
            Seen::NotRun(format!("nested image broken: L1 says {reason}")),
            None,
        );
    }
    if !has("stage=init") {
        let why = if l1.timed_out {
            format!("no L1 init within {} s", timeout.as_secs())
        } else if !has("stage=initramfs") {
            format!(
                "L1 never reached its initramfs (host QEMU {}; {})",
                crate::verdict::status_name(l1.status),
                image::tail_of(&l1.stderr, 2)
            )
        } else {
            "L1 stopped before its init".to_string()
        };
        return (
            Seen::NotRun(format!(
                "nested image broken: {why} (last L1 line: {last:?})"
            )),
            None,
        );
    }
    if has("kvm=unavailable") {
        return (
            Seen::NotRun(
                "L1 has no KVM: kvm_amd nested=1 npt=1 did not load (does host QEMU's -cpu max offer SVM?)"
                    .to_string(),
            ),
            None,
        );
    }
    let Some(status) = files("l2-status").and_then(|s| s.trim().parse::<i32>().ok()) else {
        let why = if l1.timed_out && has("l2=start") {
            format!(
                "L1 stopped responding while L2 ran (host timeout {} s; last L1 line: {last:?})",
                timeout.as_secs()
            )
        } else if l1.timed_out {
            format!(
                "L1 did not finish its job within {} s (last L1 line: {last:?})",
                timeout.as_secs()
            )
        } else {
            format!(
                "L1's job brought back no L2 status (job log: {:?})",
                image::tail_of(&files("job.log").unwrap_or_default(), 3)
            )
        };
        return (Seen::NotRun(why), None);
    };
    let modules = trace::kvm_modules(&files("modules.txt").unwrap_or_default());
    let t = files("trace.txt").map(|text| trace::parse(&text, &modules));
    let serial = files("l2-serial.txt").unwrap_or_default();
    let result = BootResult::parse(&serial);
    let stderr = files("l2-stderr.txt").unwrap_or_default();
    let seen = if result.done.is_some() {
        Seen::Done
    } else if let Some(rip) = t.as_ref().and_then(|t| t.shutdown_rip) {
        Seen::TripleFault(rip)
    } else if status == 128 + 9 {
        Seen::NeverReported(last_line(&serial))
    } else if status != 0 && result.kernel.is_none() {
        Seen::Refused(image::tail_of(&stderr, 3))
    } else {
        Seen::Exited(status, last_line(&serial))
    };
    (seen, t)
}

static RUN_ID: AtomicU64 = AtomicU64::new(0);

/// A fresh share directory for one L1 boot.
fn new_share() -> Result<PathBuf, String> {
    let dir = std::env::temp_dir().join(format!(
        "pvops-nested-{}-{}",
        std::process::id(),
        RUN_ID.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    Ok(dir)
}

/// Boots L1 once with `spec`'s job and collects what came back.
fn attempt(
    scenario: &'static Scenario,
    spec: &NestedSpec,
    image: &image::Image,
    kernel: &Path,
    opts: &RunOptions,
    timeout: Duration,
) -> Result<Attempt, String> {
    let qemu = crate::qemu()?;
    let share = new_share()?;
    let write = |name: &str, data: &[u8]| {
        std::fs::write(share.join(name), data)
            .map_err(|e| format!("cannot write {name} into the share: {e}"))
    };
    let kernel_data =
        std::fs::read(kernel).map_err(|e| format!("cannot read {}: {e}", kernel.display()))?;
    write("kernel", &kernel_data)?;
    write(
        "l2-cmdline",
        scenario.append(&opts.extra_guest_cmdline).as_bytes(),
    )?;
    write("job.sh", job_script(spec).as_bytes())?;
    let name = scenario.name;
    let stream = opts.stream_serial;
    let (mut l2_start, mut l2_end) = (None, None);
    // L1 with two vCPUs (single-threaded TCG, one host thread) still runs
    // alone: its L2 spins on both, as the other SMP boots do.
    let turn = crate::run::cpu_turn(spec.cpus);
    let l1 = crate::run::run_qemu(
        &qemu.path,
        &l1_args(image, &share, spec.cpus),
        timeout,
        &mut |line| {
            if stream {
                eprintln!("[{name} L1] {line}");
            }
            if line.starts_with("@@l1 l2=start") {
                l2_start = Some(std::time::Instant::now());
            } else if line.starts_with("@@l1 l2=end") {
                l2_end = Some(std::time::Instant::now());
            }
        },
    )?;
    drop(turn);
    let files = |f: &str| {
        std::fs::read(share.join(f))
            .ok()
            .map(|b| String::from_utf8_lossy(&b).into_owned())
    };
    let (seen, trace) = classify(&l1, &files, timeout);
    let l2_serial = files("l2-serial.txt").unwrap_or_default();
    if stream {
        for line in l2_serial.lines() {
            eprintln!("[{name} L2] {line}");
        }
    }
    let l1_dmesg = files("l1-dmesg.txt").unwrap_or_default();
    let mut rerun = None;
    let mut note = None;
    if let Some((rip, module)) = trace.as_ref().and_then(|t| t.glitches.first()) {
        rerun = Some(format!(
            "TCG glitch: an L2 exit at rip {rip:#x} lies inside L1's {module} text (L2 was resumed with L1's state; L1 is corrupted)"
        ));
    } else if matches!(&seen, Seen::NotRun(w) if w.starts_with("L1 stopped responding")) {
        rerun = Some(seen.describe(spec));
    }
    if l1_dmesg.contains(L1_TIMER_LOST) {
        note = Some(format!(
            "L1 lost its timer during the run (\"{L1_TIMER_LOST}\" in L1's log)"
        ));
    }
    // run_qemu's duration starts when QEMU does (after waiting for a CPU
    // slot): count the boot phase back from the end.
    let phases = l2_start.zip(l2_end).map(|(s, e)| {
        let after_start = s.elapsed().as_secs_f64();
        (
            (l1.duration.as_secs_f64() - after_start).max(0.0),
            (e - s).as_secs_f64(),
        )
    });
    let a = Attempt {
        l1,
        l2_serial,
        l2_stderr: files("l2-stderr.txt").unwrap_or_default(),
        phases,
        trace,
        l1_dmesg,
        l2_status: files("l2-status").and_then(|s| s.trim().parse().ok()),
        seen,
        rerun,
        note,
    };
    let _ = std::fs::remove_dir_all(&share);
    Ok(a)
}

/// What an attempt means for the scenario: failures, notes, and the report.
fn judge(
    scenario: &'static Scenario,
    spec: &NestedSpec,
    a: &Attempt,
    resolved: &Resolved,
) -> (Vec<String>, Vec<String>, RawRun, BootResult) {
    let mut result = BootResult::parse(&a.l2_serial);
    if let Some(t) = &a.trace {
        result.counted_exits = Some((EXIT_COUNTER.to_string(), t.exits.clone()));
        result.marked_exits = t.marked.clone();
    }
    let expect = &scenario.expect;
    // The exit status is not the verdict (Xen's SCHEDOP_shutdown races the
    // debug-exit write): the raw run carries the expected status, and the
    // guest's records decide.
    let raw = RawRun {
        status: Some(expect.outcome.qemu_status()),
        signal: None,
        timed_out: false,
        serial: a.l2_serial.clone(),
        stderr: a.l2_stderr.clone(),
        duration: a.l1.duration,
    };
    let mut failures = Vec::new();
    let mut notes = Vec::new();
    if !a.seen.matches(spec.l2_end) {
        failures.push(a.seen.describe(spec));
        if spec.l2_end != L2End::Done && !matches!(a.seen, Seen::NotRun(_)) {
            failures.push(format!("expected L2 to end as {:?}", spec.l2_end));
        }
    } else if spec.l2_end != L2End::Done {
        notes.push(format!("as expected: {}", a.seen.describe(spec)));
    }
    if a.seen == Seen::Done && spec.l2_end == L2End::Done {
        // The status the guest's own verdict would write to isa-debug-exit.
        let verdict_code = match result.done.as_ref().map(|d| d.verdict.as_str()) {
            Some("pass") => pvops_abi::exit::ExitCode::Pass,
            _ => pvops_abi::exit::ExitCode::Fail,
        };
        let want = verdict_code.qemu_status();
        if let Some(st) = a.l2_status.filter(|&st| st != want) {
            let why = match spec.mode {
                NestedMode::Xen | NestedMode::XenHyperv => {
                    ": under Xen SCHEDOP_shutdown races the debug-exit write, issue 11 item 5"
                }
                _ => "",
            };
            notes.push(format!(
                "L2 QEMU's exit status {st} is not the {want} of the guest's `done` record \
                 (the record decides{why})"
            ));
        }
        let mut guest = crate::verdict::judge(scenario, &raw, &result, resolved);
        let known = |f: &str| {
            spec.known_failures
                .iter()
                .find(|k| f.starts_with(&format!("self-test {} failed", k.selftest)))
        };
        if !spec.known_failures.is_empty() {
            guest.retain(|f| {
                if let Some(k) = known(f) {
                    notes.push(format!("known failure: {f} ({})", k.reason));
                    false
                } else {
                    // The guest's verdict is `fail` because of the known failures.
                    !f.starts_with("guest verdict \"fail\"")
                }
            });
            for k in spec.known_failures {
                if result.selftests.get(k.selftest).is_some_and(|t| t.pass) {
                    notes.push(format!(
                        "known failure did not occur: self-test {} passed (expected to fail: {})",
                        k.selftest, k.reason
                    ));
                }
            }
            // Any other failed self-test still counts.
            let other_failed = result
                .selftests
                .iter()
                .any(|(n, t)| !t.pass && !spec.known_failures.iter().any(|k| k.selftest == n));
            if other_failed && !guest.iter().any(|f| f.starts_with("guest verdict")) {
                guest.push("guest verdict \"fail\" beyond the known failures".to_string());
            }
        }
        failures.extend(guest);
        match &a.trace {
            None => failures.push("no L1 KVM trace came back".to_string()),
            Some(t) => {
                if t.lost > 0 {
                    failures.push(format!(
                        "L1's trace buffer lost {} events: exit counts incomplete",
                        t.lost
                    ));
                }
                if t.exits.total == 0 {
                    failures.push("L1 KVM counted no exit".to_string());
                }
                for &(metric, count) in expect.counts {
                    let n = metric.of(&t.exits);
                    if !count.holds(n) {
                        failures.push(format!(
                            "{} (L1 KVM): {n}, expected {}",
                            metric.name(),
                            count.describe()
                        ));
                    }
                }
            }
        }
    }
    if !spec.flips.is_empty() {
        notes.push(format!(
            "expectation of today's backends; flips with {}",
            spec.flips
        ));
    }
    (failures, notes, raw, result)
}

/// Runs a nested scenario: the image (built if needed), one L1 boot, one
/// rerun on a flake of the nested setup, the verdict from L2's records.
pub fn run(
    scenario: &'static Scenario,
    spec: &'static NestedSpec,
    opts: &RunOptions,
    resolved: Resolved,
) -> ScenarioReport {
    let fail = |why: String| ScenarioReport::failed(scenario, why);
    let image = match image::ensure() {
        Ok(i) => i,
        Err(e) => return fail(e),
    };
    let images = match crate::build::images(scenario) {
        Ok(i) => i,
        Err(e) => return fail(e),
    };
    let timeout = opts
        .timeout
        .unwrap_or(Duration::from_secs(scenario.timeout_secs));
    let mut notes = Vec::new();
    let mut a = match attempt(scenario, spec, &image, &images.kernel, opts, timeout) {
        Ok(a) => a,
        Err(e) => return fail(e),
    };
    let mut verdict = judge(scenario, spec, &a, &resolved);
    let timer_rerun = a.note.is_some() && !verdict.0.is_empty();
    if let Some(why) = a
        .rerun
        .clone()
        .or_else(|| timer_rerun.then(|| a.note.clone()).flatten())
    {
        notes.push(format!("rerun: {why}"));
        a = match attempt(scenario, spec, &image, &images.kernel, opts, timeout) {
            Ok(a) => a,
            Err(e) => return fail(e),
        };
        verdict = judge(scenario, spec, &a, &resolved);
        if let Some(again) = &a.rerun {
            verdict
                .0
                .insert(0, format!("{again} (again, after one rerun)"));
        }
    } else if let Some(n) = &a.note {
        notes.push(format!("{n}; the run passed regardless"));
    }
    let (failures, more, raw, result) = verdict;
    notes.extend(more);
    let phases = a.phases.map_or_else(String::new, |(boot, l2)| {
        format!(
            "; L1 boot to L2 start {boot:.1} s, L2 {l2:.1} s, L1 total {:.1} s",
            a.l1.duration.as_secs_f64()
        )
    });
    notes.push(format!(
        "L1 image: {}{phases}",
        image
            .versions
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    ));
    ScenarioReport {
        scenario,
        skipped: None,
        raw: Some(raw),
        result,
        failures,
        resolved,
        notes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l1(console: &str) -> RawRun {
        RawRun {
            status: Some(0),
            serial: console.to_string(),
            ..RawRun::default()
        }
    }

    const UP: &str =
        "@@l1 stage=initramfs\n@@l1 stage=init kernel=6.12\n@@l1 kvm=ready\n@@l1 l2=start\n";

    fn classify_with(console: &str, files: &[(&str, &str)]) -> Seen {
        let get = |f: &str| {
            files
                .iter()
                .find(|(n, _)| *n == f)
                .map(|(_, v)| v.to_string())
        };
        classify(&l1(console), &get, Duration::from_secs(60)).0
    }

    #[test]
    fn l1_and_image_problems_have_their_own_verdicts() {
        let s = classify_with(
            "@@l1 stage=initramfs\n@@l1 broken reason=no-root-disk\n",
            &[],
        );
        assert_eq!(
            s,
            Seen::NotRun("nested image broken: L1 says no-root-disk".into())
        );
        let s = classify_with("Kernel panic\n", &[]);
        assert!(
            matches!(&s, Seen::NotRun(w) if w.starts_with("nested image broken: L1 never reached its initramfs")),
            "{s:?}"
        );
        let s = classify_with(
            "@@l1 stage=initramfs\n@@l1 stage=init\n@@l1 kvm=unavailable\n",
            &[],
        );
        assert!(
            matches!(&s, Seen::NotRun(w) if w.contains("no KVM")),
            "{s:?}"
        );
        let mut hung = l1(UP);
        hung.timed_out = true;
        let (s, _) = classify(&hung, &|_| None, Duration::from_secs(60));
        assert!(
            matches!(&s, Seen::NotRun(w) if w.starts_with("L1 stopped responding")),
            "{s:?}"
        );
    }

    #[test]
    fn l2_ends() {
        let done =
            "@@ boot kernel=example-kernel cmdline=\n@@ done passed=1 total=1 verdict=pass\n";
        assert_eq!(
            classify_with(UP, &[("l2-status", "1\n"), ("l2-serial.txt", done)]),
            Seen::Done
        );
        let s = classify_with(
            UP,
            &[
                ("l2-status", "1\n"),
                (
                    "l2-stderr.txt",
                    "qemu: can't apply global host.hv-no-such-flag=on\n",
                ),
            ],
        );
        assert!(
            matches!(&s, Seen::Refused(e) if e.contains("hv-no-such-flag")),
            "{s:?}"
        );
        let s = classify_with(
            UP,
            &[
                ("l2-status", "137\n"),
                ("l2-serial.txt", "@@ boot kernel=k cmdline=\nstuck\n"),
            ],
        );
        assert_eq!(s, Seen::NeverReported("stuck".into()));
        let trace = " q-1 [000] d..1. 1.0: kvm_exit: vcpu 0 reason shutdown rip 0x1234 info1 0x0 info2 0x0\n";
        let s = classify_with(
            UP,
            &[
                ("l2-status", "0\n"),
                ("l2-serial.txt", "@@ boot kernel=k cmdline=\n"),
                ("trace.txt", trace),
            ],
        );
        assert_eq!(s, Seen::TripleFault(0x1234));
        let s = classify_with(
            UP,
            &[
                ("l2-status", "0\n"),
                ("l2-serial.txt", "@@ boot kernel=k cmdline=\n"),
            ],
        );
        assert!(matches!(s, Seen::Exited(0, _)));
    }

    #[test]
    fn job_and_command_lines() {
        let spec = NestedSpec::new(NestedMode::XenHyperv, "hv-relaxed,hv-time");
        let a = l2_args(&spec).join(" ");
        assert!(
            a.contains(
                "-accel kvm,xen-version=0x4000a,kernel-irqchip=split -cpu host,hv-relaxed,hv-time"
            ),
            "{a}"
        );
        let job = job_script(&spec);
        assert!(job.contains("timeout -s KILL 150 qemu-system-x86_64"));
        assert!(job.contains("'-cpu' 'host,hv-relaxed,hv-time'"));
        assert_eq!(sh_quote("a'b"), r"'a'\''b'");
        let img = image::Image {
            dir: "/c".into(),
            kernel: "/c/vmlinuz".into(),
            initrd: "/c/initrd.img".into(),
            rootfs: "/c/rootfs.ext4".into(),
            versions: String::new(),
        };
        let l1: Vec<String> = l1_args(&img, Path::new("/s"), 1)
            .iter()
            .map(|s| s.to_string_lossy().into_owned())
            .collect();
        let l1 = l1.join(" ");
        assert!(l1.starts_with("-accel tcg -cpu max -smp 1 -m 2048"), "{l1}");
        assert!(l1.contains("file=/c/rootfs.ext4,if=virtio,format=raw,readonly=on"));
        assert!(l1.contains("local,path=/s,mount_tag=share"));
        // Two vCPUs: single-threaded TCG for L1, two for L2.
        let l1: Vec<String> = l1_args(&img, Path::new("/s"), 2)
            .iter()
            .map(|s| s.to_string_lossy().into_owned())
            .collect();
        assert!(
            l1.join(" ")
                .starts_with("-accel tcg,thread=single -cpu max -smp 2 -m 2048"),
            "{l1:?}"
        );
        let smp2 = NestedSpec {
            cpus: 2,
            ..NestedSpec::new(NestedMode::Xen, "")
        };
        assert!(l2_args(&smp2)
            .join(" ")
            .contains("-m 128 -smp 2 -accel kvm"));
    }
}
