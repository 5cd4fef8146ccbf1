//! KVM's own per-vCPU exit counters, read from QEMU over QMP.
//!
//! QEMU >= 7.1 exposes KVM's binary statistics (Linux >= 5.14) through the
//! QMP command `query-stats` (QEMU's `qapi/stats.json`): with `{"target":
//! "vcpu"}` it returns, per vCPU, a list of `{"name", "value"}` pairs from
//! provider `kvm`, where a value is a number, a boolean or a histogram
//! (an array). The runner starts QEMU with `-qmp unix:PATH,server=on,wait=off`
//! ([`qemu_args`]); when the guest holds after its last record (`@@ hold`,
//! the example kernel's `hold`), [`read_vcpu_stats`] connects, negotiates
//! (`qmp_capabilities`), asks and sums the numeric counters over the vCPUs.
//! Every socket operation has a timeout, so a QEMU that never answers
//! costs seconds, never the run.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// How long connecting and every exchange may take together.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// The counters, or why there are none.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StatsError {
    /// This QEMU or host cannot give them (QEMU without `query-stats`, a
    /// host kernel without KVM binary statistics): not the guest's fault.
    Unavailable(String),
    /// Something went wrong that should not have (no socket, a protocol
    /// error, a missing `exits` counter).
    Failed(String),
}

impl std::fmt::Display for StatsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StatsError::Unavailable(s) | StatsError::Failed(s) => f.write_str(s),
        }
    }
}

/// A socket path for one QEMU run, unique within this host (process id and
/// a counter) in the temporary directory.
pub fn socket_path() -> PathBuf {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!("pvops-qmp-{}-{n}.sock", std::process::id()))
}

/// QEMU's arguments for a QMP server on `path` that does not wait for a
/// client (`wait=off`), so the guest starts at once.
pub fn qemu_args(path: &Path) -> [String; 2] {
    [
        "-qmp".to_string(),
        format!("unix:{},server=on,wait=off", path.display()),
    ]
}

/// One QMP connection; every read and write ends by `deadline`.
struct Client {
    writer: UnixStream,
    reader: BufReader<UnixStream>,
    deadline: Instant,
}

impl Client {
    /// Connects (retrying until `timeout` while the socket does not exist
    /// yet or refuses) and negotiates capabilities.
    fn connect(path: &Path, timeout: Duration) -> Result<Client, StatsError> {
        let deadline = Instant::now() + timeout;
        let stream = loop {
            match UnixStream::connect(path) {
                Ok(s) => break s,
                Err(e) if Instant::now() >= deadline => {
                    return Err(StatsError::Failed(format!(
                        "QMP socket {} did not accept a connection within {} s: {e}",
                        path.display(),
                        timeout.as_secs()
                    )))
                }
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        };
        let io = |e: std::io::Error| StatsError::Failed(format!("QMP socket: {e}"));
        let writer = stream.try_clone().map_err(io)?;
        let mut c = Client {
            writer,
            reader: BufReader::new(stream),
            deadline,
        };
        let greeting = c.read_message()?;
        if greeting.get("QMP").is_none() {
            return Err(StatsError::Failed(format!(
                "no QMP greeting, got {greeting}"
            )));
        }
        c.execute("qmp_capabilities", None)?;
        Ok(c)
    }

    /// Sets the socket's timeouts to what is left until the deadline.
    fn arm(&self) -> Result<(), StatsError> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(StatsError::Failed("QMP did not answer in time".to_string()));
        }
        let io = |e: std::io::Error| StatsError::Failed(format!("QMP socket: {e}"));
        self.writer.set_read_timeout(Some(left)).map_err(io)?;
        self.writer.set_write_timeout(Some(left)).map_err(io)
    }

    fn read_message(&mut self) -> Result<Value, StatsError> {
        self.arm()?;
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) => Err(StatsError::Failed("QMP connection closed".to_string())),
            Ok(_) => serde_json::from_str(&line)
                .map_err(|e| StatsError::Failed(format!("bad QMP message {line:?}: {e}"))),
            Err(e) => Err(StatsError::Failed(format!("reading QMP: {e}"))),
        }
    }

    /// Runs `command`; its `return` value, or the error QEMU gave
    /// (`CommandNotFound` as [`StatsError::Unavailable`]). Events are skipped.
    fn execute(&mut self, command: &str, arguments: Option<Value>) -> Result<Value, StatsError> {
        let mut msg = json!({ "execute": command });
        if let Some(a) = arguments {
            msg["arguments"] = a;
        }
        let mut text = msg.to_string();
        text.push('\n');
        self.arm()?;
        self.writer
            .write_all(text.as_bytes())
            .map_err(|e| StatsError::Failed(format!("writing QMP: {e}")))?;
        loop {
            let reply = self.read_message()?;
            if let Some(r) = reply.get("return") {
                return Ok(r.clone());
            }
            if let Some(e) = reply.get("error") {
                let class = e.get("class").and_then(Value::as_str).unwrap_or("?");
                let desc = e.get("desc").and_then(Value::as_str).unwrap_or("");
                let what = format!("QMP {command}: {class}: {desc}");
                return Err(if class == "CommandNotFound" {
                    StatsError::Unavailable(format!("{what} (query-stats needs QEMU 7.1 or newer)"))
                } else {
                    StatsError::Failed(what)
                });
            }
            // An asynchronous event: not our answer.
        }
    }
}

/// KVM's per-vCPU counters of the QEMU listening on `path`, summed over the
/// vCPUs, by KVM's names (`exits`, `io_exits`, `halt_exits`, ...).
pub fn read_vcpu_stats(
    path: &Path,
    timeout: Duration,
) -> Result<BTreeMap<String, u64>, StatsError> {
    let mut c = Client::connect(path, timeout)?;
    let reply = c.execute("query-stats", Some(json!({ "target": "vcpu" })))?;
    parse_vcpu_stats(&reply)
}

/// Sums the numeric `kvm` counters of a `query-stats` reply over its vCPUs
/// (booleans and histograms are left out). Errors when no vCPU has KVM
/// statistics (unavailable: the host kernel has none) or when `exits` is
/// missing (failed).
pub fn parse_vcpu_stats(reply: &Value) -> Result<BTreeMap<String, u64>, StatsError> {
    let Some(entries) = reply.as_array() else {
        return Err(StatsError::Failed(format!(
            "query-stats returned no list: {reply}"
        )));
    };
    let mut sum = BTreeMap::new();
    let mut vcpus = 0;
    for e in entries
        .iter()
        .filter(|e| e.get("provider").and_then(Value::as_str) == Some("kvm"))
    {
        vcpus += 1;
        for s in e
            .get("stats")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let (Some(name), Some(value)) = (
                s.get("name").and_then(Value::as_str),
                s.get("value").and_then(Value::as_u64),
            ) else {
                continue;
            };
            *sum.entry(name.to_string()).or_insert(0) += value;
        }
    }
    if vcpus == 0 {
        return Err(StatsError::Unavailable(
            "query-stats returned no KVM vCPU statistics (host kernel without KVM binary statistics, Linux < 5.14?)"
                .to_string(),
        ));
    }
    if !sum.contains_key("exits") {
        return Err(StatsError::Failed(format!(
            "KVM's vCPU statistics have no `exits` counter (got {})",
            sum.keys().cloned().collect::<Vec<_>>().join(", ")
        )));
    }
    Ok(sum)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_numbers_over_vcpus() {
        let reply = json!([
            {"provider": "kvm", "qom-path": "/machine/unattached/device[0]", "stats": [
                {"name": "exits", "value": 100}, {"name": "io_exits", "value": 40},
                {"name": "blocking", "value": false}, {"name": "halt_wait_hist", "value": [0, 1]}
            ]},
            {"provider": "kvm", "stats": [{"name": "exits", "value": 5}]},
            {"provider": "other", "stats": [{"name": "exits", "value": 1000}]}
        ]);
        let s = parse_vcpu_stats(&reply).unwrap();
        assert_eq!(s["exits"], 105);
        assert_eq!(s["io_exits"], 40);
        assert!(!s.contains_key("blocking") && !s.contains_key("halt_wait_hist"));
    }

    #[test]
    fn missing_statistics_are_reported() {
        assert!(matches!(
            parse_vcpu_stats(&json!([])),
            Err(StatsError::Unavailable(_))
        ));
        let e = parse_vcpu_stats(
            &json!([{"provider": "kvm", "stats": [{"name": "io_exits", "value": 1}]}]),
        )
        .unwrap_err();
        assert!(
            matches!(&e, StatsError::Failed(m) if m.contains("io_exits")),
            "{e}"
        );
        assert!(matches!(
            parse_vcpu_stats(&json!({"x": 1})),
            Err(StatsError::Failed(_))
        ));
    }

    #[test]
    fn no_socket_fails_within_the_timeout() {
        let t0 = Instant::now();
        let e = read_vcpu_stats(
            Path::new("/nonexistent/pvops.sock"),
            Duration::from_millis(300),
        )
        .unwrap_err();
        assert!(
            matches!(&e, StatsError::Failed(m) if m.contains("did not accept")),
            "{e}"
        );
        assert!(t0.elapsed() < Duration::from_secs(5));
    }

    /// A fake QMP server on a socket: greeting, then canned replies.
    fn serve(replies: Vec<&'static str>) -> PathBuf {
        let path = socket_path();
        let _ = std::fs::remove_file(&path);
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        std::thread::spawn(move || {
            let (s, _) = listener.accept().unwrap();
            let mut w = s.try_clone().unwrap();
            let mut r = BufReader::new(s);
            writeln!(w, r#"{{"QMP": {{"version": {{}}, "capabilities": []}}}}"#).unwrap();
            for reply in replies {
                let mut line = String::new();
                if r.read_line(&mut line).unwrap_or(0) == 0 {
                    return;
                }
                writeln!(w, "{reply}").unwrap();
            }
        });
        path
    }

    #[test]
    fn a_silent_qemu_fails_by_the_deadline() {
        let path = socket_path();
        let _ = std::fs::remove_file(&path);
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        std::thread::spawn(move || {
            // Accept, then never say anything.
            let c = listener.accept();
            std::thread::sleep(Duration::from_secs(5));
            drop(c);
        });
        let t0 = Instant::now();
        let e = read_vcpu_stats(&path, Duration::from_millis(500)).unwrap_err();
        let _ = std::fs::remove_file(&path);
        assert!(matches!(e, StatsError::Failed(_)), "{e}");
        assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
    }

    #[test]
    fn old_qemu_without_query_stats_is_unavailable() {
        let path = serve(vec![
            r#"{"return": {}}"#,
            r#"{"error": {"class": "CommandNotFound", "desc": "The command query-stats has not been found"}}"#,
        ]);
        let e = read_vcpu_stats(&path, TIMEOUT).unwrap_err();
        let _ = std::fs::remove_file(&path);
        assert!(
            matches!(&e, StatsError::Unavailable(m) if m.contains("7.1")),
            "{e}"
        );
    }

    #[test]
    fn events_are_skipped() {
        let path = serve(vec![
            r#"{"return": {}}"#,
            r#"{"event": "RESUME", "timestamp": {"seconds": 1, "microseconds": 0}}
{"return": [{"provider": "kvm", "stats": [{"name": "exits", "value": 7}]}]}"#,
        ]);
        let s = read_vcpu_stats(&path, TIMEOUT).unwrap();
        let _ = std::fs::remove_file(&path);
        assert_eq!(s["exits"], 7);
    }
}
