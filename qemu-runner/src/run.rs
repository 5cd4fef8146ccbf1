//! Running QEMU with a timeout, capturing (and optionally streaming) the
//! serial console, with at most one QEMU per CPU at a time.

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::sync::{Condvar, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

/// What one QEMU process did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RawRun {
    /// Exit status; `None` when killed (timeout) or ended by a signal.
    pub status: Option<i32>,
    /// The signal that ended QEMU, when one did (and it was not our kill).
    pub signal: Option<i32>,
    /// Whether the timeout expired and QEMU was killed.
    pub timed_out: bool,
    /// Everything the guest wrote to the serial port.
    pub serial: String,
    /// QEMU's own stderr.
    pub stderr: String,
    /// Wall time.
    pub duration: Duration,
}

/// A counting semaphore limiting concurrent QEMU instances.
pub struct Semaphore {
    free: Mutex<Option<usize>>,
    cv: Condvar,
}

/// Holds one permit until dropped.
pub struct Permit<'a>(&'a Semaphore);

impl Semaphore {
    /// A semaphore whose capacity is the number of CPUs, fixed on first use.
    pub const fn per_cpu() -> Semaphore {
        Semaphore {
            free: Mutex::new(None),
            cv: Condvar::new(),
        }
    }

    /// Waits for a permit.
    pub fn acquire(&self) -> Permit<'_> {
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            let n = free
                .get_or_insert_with(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
            if *n > 0 {
                *n -= 1;
                return Permit(self);
            }
            free = self.cv.wait(free).unwrap_or_else(|e| e.into_inner());
        }
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        let mut free = self.0.free.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = free.as_mut() {
            *n += 1;
        }
        self.0.cv.notify_one();
    }
}

static QEMU_SLOTS: Semaphore = Semaphore::per_cpu();

/// QEMU runs hold this shared, kernel builds alone: a cargo build beside
/// TCG boots on a 2-core machine starved the guests' PIT calibration (every
/// sample disturbed, so no TSC frequency; seen in CI when the feature
/// matrix booted its first kernels while building the next ones).
static BUILDS_OR_BOOTS: RwLock<()> = RwLock::new(());

/// Guests with several vCPUs keep them all busy (the SMP self-tests spin
/// on every CPU): beside them, a one-vCPU guest on this 2-core machine saw
/// every PIT calibration sample disturbed. They boot alone; the others
/// share this lock (always taken before [`BUILDS_OR_BOOTS`]).
static SMP_OR_OTHERS: RwLock<()> = RwLock::new(());

/// A boot's claim on the machine: shared, or alone for a guest with
/// several vCPUs.
pub enum CpuTurn {
    /// Beside other one-vCPU boots.
    Shared(RwLockReadGuard<'static, ()>),
    /// Alone.
    Alone(RwLockWriteGuard<'static, ()>),
}

/// The turn of a guest with `vcpus` vCPUs: alone when more than one.
pub fn cpu_turn(vcpus: u32) -> CpuTurn {
    if vcpus > 1 {
        CpuTurn::Alone(SMP_OR_OTHERS.write().unwrap_or_else(|e| e.into_inner()))
    } else {
        CpuTurn::Shared(SMP_OR_OTHERS.read().unwrap_or_else(|e| e.into_inner()))
    }
}

/// Held while QEMU runs; shared with other QEMU runs.
pub fn boot_turn() -> RwLockReadGuard<'static, ()> {
    BUILDS_OR_BOOTS.read().unwrap_or_else(|e| e.into_inner())
}

/// Held while a cargo build runs: waits until no QEMU of this process runs,
/// and no QEMU starts until it is dropped.
pub fn build_turn() -> RwLockWriteGuard<'static, ()> {
    BUILDS_OR_BOOTS.write().unwrap_or_else(|e| e.into_inner())
}

/// Runs `program args…` with a timeout, calling `on_line` for every serial
/// line as it arrives. Waits for a free CPU slot first.
pub fn run_qemu(
    program: &Path,
    args: &[OsString],
    timeout: Duration,
    on_line: &mut dyn FnMut(&str),
) -> Result<RawRun, String> {
    let _turn = boot_turn();
    let _permit = QEMU_SLOTS.acquire();
    run_with_timeout(program, args, timeout, on_line)
}

/// [`run_qemu`] for a guest that holds after its last record: whenever it
/// prints `@@ hold` (the example kernel's `hold`, and its report card's
/// holds around each measured entry), `on_hold` runs (it reads the
/// hypervisor's counters; it must bound its own time), then one byte (a
/// newline) is written to QEMU's stdin, the guest's COM1 with `-serial
/// stdio`, which releases the guest.
pub fn run_qemu_held(
    program: &Path,
    args: &[OsString],
    timeout: Duration,
    on_line: &mut dyn FnMut(&str),
    on_hold: &mut dyn FnMut(),
) -> Result<RawRun, String> {
    let _turn = boot_turn();
    let _permit = QEMU_SLOTS.acquire();
    run_inner(program, args, timeout, on_line, Some(on_hold))
}

/// Whether `line` is the guest's `@@ hold` record.
pub fn is_hold(line: &str) -> bool {
    let mut w = line.split_whitespace();
    w.next() == Some(pvops_abi::report::PREFIX) && w.next() == Some("hold")
}

/// [`run_qemu`] without the concurrency limit (for any program).
pub fn run_with_timeout(
    program: &Path,
    args: &[OsString],
    timeout: Duration,
    on_line: &mut dyn FnMut(&str),
) -> Result<RawRun, String> {
    run_inner(program, args, timeout, on_line, None)
}

fn run_inner(
    program: &Path,
    args: &[OsString],
    timeout: Duration,
    on_line: &mut dyn FnMut(&str),
    mut on_hold: Option<&mut dyn FnMut()>,
) -> Result<RawRun, String> {
    // Every hold runs the handler (the last one's reading is the run's
    // total).
    use std::io::Write;
    let start = Instant::now();
    let mut child = Command::new(program)
        .args(args)
        .stdin(if on_hold.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", program.display()))?;
    let stdout = child.stdout.take().ok_or("no stdout pipe")?;
    let mut stdin = child.stdin.take();
    let mut stderr = child.stderr.take().ok_or("no stderr pipe")?;

    let (tx, rx) = mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        let mut r = BufReader::new(stdout);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match r.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    if tx.send(String::from_utf8_lossy(&buf).into_owned()).is_err() {
                        break;
                    }
                }
            }
        }
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = stderr.read_to_end(&mut s);
        String::from_utf8_lossy(&s).into_owned()
    });

    let mut serial = String::new();
    let mut take = |line: String, serial: &mut String| {
        let text = line.trim_end_matches(['\n', '\r']);
        on_line(text);
        serial.push_str(&line);
        if is_hold(text) {
            if let Some(hold) = on_hold.as_mut() {
                hold();
                if let Some(s) = stdin.as_mut() {
                    // QEMU gone already: nothing to release.
                    let _ = s.write_all(b"\n").and_then(|()| s.flush());
                }
            }
        }
    };
    let deadline = start + timeout;
    let mut timed_out = false;
    let mut stdout_closed = false;
    let status = loop {
        if stdout_closed {
            // QEMU closed stdout and is exiting; don't spin meanwhile.
            std::thread::sleep(Duration::from_millis(10));
        } else {
            match rx.recv_timeout(Duration::from_millis(20)) {
                Ok(line) => take(line, &mut serial),
                Err(mpsc::RecvTimeoutError::Disconnected) => stdout_closed = true,
                Err(mpsc::RecvTimeoutError::Timeout) => {}
            }
        }
        if let Some(st) = child
            .try_wait()
            .map_err(|e| format!("waiting for QEMU: {e}"))?
        {
            break st;
        }
        if Instant::now() >= deadline {
            timed_out = true;
            let _ = child.kill();
            break child.wait().map_err(|e| format!("waiting for QEMU: {e}"))?;
        }
    };
    // Drain what the reader still has.
    for line in rx.iter() {
        take(line, &mut serial);
    }
    let _ = reader.join();
    let stderr = err_reader.join().unwrap_or_default();
    use std::os::unix::process::ExitStatusExt;
    Ok(RawRun {
        status: if timed_out { None } else { status.code() },
        signal: if timed_out { None } else { status.signal() },
        timed_out,
        serial,
        stderr,
        duration: start.elapsed(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captures_lines_and_status() {
        let mut seen = Vec::new();
        let r = run_with_timeout(
            Path::new("/bin/sh"),
            &[
                "-c".into(),
                "printf 'a\\r\\nb\\nc'; echo oops >&2; exit 33".into(),
            ],
            Duration::from_secs(60),
            &mut |l| seen.push(l.to_string()),
        )
        .unwrap();
        assert_eq!(seen, ["a", "b", "c"]);
        assert_eq!(r.serial, "a\r\nb\nc");
        assert_eq!(r.status, Some(33));
        assert!(!r.timed_out);
        assert_eq!(r.stderr, "oops\n");
    }

    #[test]
    fn hold_runs_the_handler_then_releases() {
        let mut held = 0;
        let r = run_inner(
            Path::new("/bin/sh"),
            &[
                "-c".into(),
                "echo '@@ hold max_polls=1'; read x; echo '@@ hold'; read y; echo released; exit 5"
                    .into(),
            ],
            Duration::from_secs(60),
            &mut |_| {},
            Some(&mut || held += 1),
        )
        .unwrap();
        // Each hold ran the handler and was released.
        assert_eq!(held, 2);
        assert!(!r.timed_out);
        assert_eq!(r.serial, "@@ hold max_polls=1\n@@ hold\nreleased\n");
        assert_eq!(r.status, Some(5));
        assert!(is_hold("@@ hold") && !is_hold("@@ holder") && !is_hold("hold"));
    }

    #[test]
    fn timeout_kills() {
        let r = run_with_timeout(
            Path::new("/bin/sh"),
            &["-c".into(), "echo started; exec sleep 600".into()],
            Duration::from_millis(300),
            &mut |_| {},
        )
        .unwrap();
        assert!(r.timed_out);
        assert_eq!(r.status, None);
        assert_eq!(r.serial, "started\n");
    }

    #[test]
    fn missing_program() {
        let e = run_with_timeout(
            Path::new("/nonexistent/qemu"),
            &[],
            Duration::from_secs(1),
            &mut |_| {},
        )
        .unwrap_err();
        assert!(e.contains("/nonexistent/qemu"));
    }

    #[test]
    fn semaphore_limits() {
        let s = Semaphore {
            free: Mutex::new(Some(1)),
            cv: Condvar::new(),
        };
        let p = s.acquire();
        assert_eq!(*s.free.lock().unwrap(), Some(0));
        drop(p);
        assert_eq!(*s.free.lock().unwrap(), Some(1));
    }
}
