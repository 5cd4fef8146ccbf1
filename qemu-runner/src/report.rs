//! The results table and the JSON lines.

use serde_json::{json, Map, Value};

use crate::parse::Exits;
use crate::verdict::status_name;
use crate::{ScenarioReport, Status};

/// One JSON object for a scenario.
pub fn to_json(r: &ScenarioReport) -> Value {
    let res = &r.result;
    let selftests: Map<String, Value> = res
        .selftests
        .iter()
        .map(|(k, v)| (k.clone(), Value::Bool(v.pass)))
        .collect();
    let owners: Map<String, Value> = res
        .owners
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    let mv = res.microvisor.as_ref();
    json!({
        "scenario": r.scenario.name,
        "verdict": r.status().name(),
        "passed": r.passed(),
        "skipped": r.skipped,
        "failures": r.failures,
        "hypervisor": res.hypervisor,
        "backend": res.backend,
        "backend_reason": res.backend_reason,
        "selftests": selftests,
        "owners": owners,
        "tsc_khz": res.tsc_khz,
        "tsc_source": res.tsc_source,
        "interfaces": res.interfaces.iter().map(|i| json!({
            "base": i.base, "signature": i.signature, "kind": i.kind, "max_leaf": i.max_leaf,
        })).collect::<Vec<_>>(),
        "panic": res.panic,
        "done": res.done.as_ref().map(|d| json!({
            "passed": d.passed, "total": d.total, "verdict": d.verdict,
        })),
        "exit_status": r.exit_status(),
        "exit": r.raw.as_ref().map(|raw| if raw.timed_out { "timeout".to_string() } else { status_name(raw.status) }),
        "expected_exit": r.scenario.expect.outcome.name(),
        "duration_ms": r.raw.as_ref().map(|raw| raw.duration.as_millis() as u64),
        "exits": mv.map(|m| exits_json(&m.exits)),
        "persona": mv.and_then(|m| m.persona.clone()),
        "fault": mv.and_then(|m| m.fault.as_ref()).map(|f| json!({"kind": f.kind, "detail": f.detail})),
        "end": mv.and_then(|m| m.end.as_ref()).map(|e| json!({"outcome": e.outcome, "code": e.code})),
    })
}

/// The microvisor's counters as JSON (MSR, port and hypercall keys in hex).
pub fn exits_json(e: &Exits) -> Value {
    let reasons: Map<String, Value> = e
        .reasons
        .iter()
        .map(|(k, v)| (k.clone(), json!(v)))
        .collect();
    let msrs: Map<String, Value> = e
        .msrs
        .iter()
        .map(|(k, v)| {
            (
                format!("{k:#x}"),
                json!({"reads": v.reads, "writes": v.writes}),
            )
        })
        .collect();
    let ports: Map<String, Value> = e
        .ports
        .iter()
        .map(|(k, v)| (format!("{k:#x}"), json!(v)))
        .collect();
    let hypercalls: Map<String, Value> = e
        .hypercalls
        .iter()
        .map(|(k, v)| (format!("{k:#x}"), json!(v)))
        .collect();
    json!({
        "total": e.total,
        "pit": e.pit(),
        "reasons": reasons,
        "msrs": msrs,
        "ports": ports,
        "hypercalls": hypercalls,
    })
}

const HEADERS: [&str; 6] = [
    "scenario",
    "hypervisor",
    "backend",
    "self-tests",
    "exits (total/PIT)",
    "verdict",
];

/// One table row.
pub fn row(r: &ScenarioReport) -> [String; 6] {
    let res = &r.result;
    let dash = || "-".to_string();
    let selftests = if r.raw.is_some() && !res.selftests.is_empty() {
        format!("{}/{}", res.selftests_passed(), res.selftests.len())
    } else {
        dash()
    };
    let exits = res
        .exits()
        .map_or_else(dash, |e| format!("{}/{}", e.total, e.pit()));
    let verdict = match r.status() {
        Status::Pass => match r.exit_status() {
            Some(s) if r.scenario.expect.outcome.qemu_status() == s && s != 33 => {
                format!("pass ({})", status_name(Some(s)))
            }
            _ => "pass".to_string(),
        },
        Status::Skip => format!("skip: {}", r.skipped.as_deref().unwrap_or("")),
        Status::Fail => format!("FAIL: {}", r.failures.first().map_or("", String::as_str)),
    };
    [
        r.scenario.name.to_string(),
        res.hypervisor.clone().unwrap_or_else(dash),
        res.backend.clone().unwrap_or_else(dash),
        selftests,
        exits,
        verdict,
    ]
}

/// The table, with a header, aligned columns, and every further failure
/// of a failed scenario on its own indented line.
pub fn table(reports: &[ScenarioReport]) -> String {
    let rows: Vec<[String; 6]> = reports.iter().map(row).collect();
    let mut widths = HEADERS.map(str::len);
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r.iter()).take(5) {
            *w = (*w).max(c.len());
        }
    }
    let mut out = String::new();
    let fmt = |cells: &[String], out: &mut String| {
        let mut line = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i < 5 {
                line.push_str(&format!("{c:<w$}  ", w = widths[i]));
            } else {
                line.push_str(c);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    };
    fmt(&HEADERS.map(String::from), &mut out);
    for (r, cells) in reports.iter().zip(&rows) {
        fmt(cells, &mut out);
        for more in r.failures.iter().skip(1) {
            out.push_str(&format!("    - {more}\n"));
        }
    }
    let count = |s: Status| reports.iter().filter(|r| r.status() == s).count();
    out.push_str(&format!(
        "{} passed, {} failed, {} skipped\n",
        count(Status::Pass),
        count(Status::Fail),
        count(Status::Skip)
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::BootResult;
    use crate::run::RawRun;
    use crate::scenario::find;
    use std::time::Duration;

    fn report(name: &str, status: i32, serial: &str) -> ScenarioReport {
        let scenario = find(name).unwrap();
        let raw = RawRun {
            status: Some(status),
            serial: serial.to_string(),
            duration: Duration::from_millis(1500),
            ..RawRun::default()
        };
        let result = BootResult::parse(serial);
        let failures = crate::verdict::judge(scenario, &raw, &result);
        ScenarioReport {
            scenario,
            skipped: None,
            raw: Some(raw),
            result,
            failures,
        }
    }

    const MV: &str = "\
@@ mv.start persona=none
@@ hypervisor name=none
@@ backend name=native reason=detected
@@ owner entry=cpu.cpuid backend=native
@@ tsc khz=2000000 source=pit-calibration
@@ selftest name=cpu.cpuid result=pass detail=
@@ done passed=1 total=1 verdict=pass
@@ mv.exit reason=cpuid count=7
@@ mv.port port=0x42 count=20
@@ mv.port port=0x61 count=5
@@ mv.msr msr=0x1b reads=1 writes=0
@@ mv.total count=40
@@ mv.end outcome=pass code=0x10
";

    #[test]
    fn json_fields() {
        let r = report("microvisor:none", 33, MV);
        assert!(r.passed(), "{:?}", r.failures);
        let j = to_json(&r);
        assert_eq!(j["scenario"], "microvisor:none");
        assert_eq!(j["passed"], true);
        assert_eq!(j["hypervisor"], "none");
        assert_eq!(j["backend"], "native");
        assert_eq!(j["selftests"]["cpu.cpuid"], true);
        assert_eq!(j["owners"]["cpu.cpuid"], "native");
        assert_eq!(j["tsc_khz"], 2_000_000);
        assert_eq!(j["tsc_source"], "pit-calibration");
        assert_eq!(j["exits"]["total"], 40);
        assert_eq!(j["exits"]["pit"], 25);
        assert_eq!(j["exits"]["ports"]["0x42"], 20);
        assert_eq!(j["exits"]["msrs"]["0x1b"]["reads"], 1);
        assert_eq!(j["exits"]["reasons"]["cpuid"], 7);
        assert_eq!(j["exit"], "pass");
        assert_eq!(j["duration_ms"], 1500);
        // One line.
        assert!(!j.to_string().contains('\n'));
    }

    #[test]
    fn table_rows() {
        let good = report("microvisor:none", 33, MV);
        let bad = report("tcg", 35, "@@ hypervisor name=qemu-tcg\n");
        let skip = ScenarioReport {
            scenario: find("kvm").unwrap(),
            skipped: Some("/dev/kvm not usable: nope".into()),
            raw: None,
            result: BootResult::default(),
            failures: vec![],
        };
        let t = table(&[good, bad, skip]);
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].starts_with("scenario"), "{t}");
        assert!(lines[1].starts_with("microvisor:none"), "{t}");
        assert!(
            lines[1].contains("1/1") && lines[1].contains("40/25"),
            "{t}"
        );
        assert!(lines[1].ends_with("pass"), "{t}");
        assert!(lines[2].contains("FAIL: exit code fail"), "{t}");
        assert!(lines.iter().any(|l| l.starts_with("    - ")), "{t}");
        assert!(t.contains("skip: /dev/kvm not usable: nope"), "{t}");
        assert!(t.ends_with("1 passed, 1 failed, 1 skipped\n"), "{t}");
        // The verdict column starts at the same offset on every row.
        let col = lines[0].find("verdict").unwrap();
        assert_eq!(lines[1].find("pass"), Some(col));
    }
}
