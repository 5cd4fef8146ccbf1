//! The results table and the JSON lines.

use serde_json::{json, Map, Value};

use crate::parse::{Bench, ExitCounter, Exits, KvmCounters};
use crate::scenario::Metric;
use crate::verdict::status_name;
use crate::{ScenarioReport, Status};

/// One JSON object for a scenario.
pub fn to_json(r: &ScenarioReport) -> Value {
    let res = &r.result;
    let selftests: Map<String, Value> = res
        .selftests
        .iter()
        .map(|(k, v)| {
            // true / false, or "unsupported" (neither).
            let verdict = if v.unsupported {
                Value::String("unsupported".to_string())
            } else {
                Value::Bool(v.pass)
            };
            (k.clone(), verdict)
        })
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
            "passed": d.passed, "total": d.total, "unsupported": d.unsupported, "verdict": d.verdict,
        })),
        "exit_status": r.exit_status(),
        "exit": r.raw.as_ref().map(|raw| if raw.timed_out { "timeout".to_string() } else { status_name(raw.status) }),
        "expected_exit": r.scenario.expect.outcome.name(),
        "duration_ms": r.raw.as_ref().map(|raw| raw.duration.as_millis() as u64),
        "exits": res.counted().map(|(c, e)| match c {
            ExitCounter::Kvm => kvm_exits_json(e),
            ExitCounter::Microvisor | ExitCounter::Outside => exits_json(e),
        }),
        "exit_counter": res.exit_counter(),
        "exit_counter_unavailable": match &res.kvm {
            Some(KvmCounters::Unavailable { reason, .. }) => Some(reason.as_str()),
            _ => None,
        },
        "notes": r.notes,
        "persona": mv.and_then(|m| m.persona.clone()),
        "fault": mv.and_then(|m| m.fault.as_ref()).map(|f| json!({"kind": f.kind, "detail": f.detail})),
        "end": mv.and_then(|m| m.end.as_ref()).map(|e| json!({"outcome": e.outcome, "code": e.code})),
        "native_pair": r.scenario.native_pair,
        "tsc_hz_configured": r.resolved.tsc_hz,
        "bench": bench_json(&res.bench),
        "smp_bench": crate::smp_bench::to_json(res),
        "smp_steal": res.smp_steal.iter().map(|s| serde_json::json!({"cpu": s.cpu, "vcpu": s.vcpu, "guest_ns": s.guest_ns, "mv_ns": s.mv_ns})).collect::<Vec<_>>(),
        "dispatch": crate::dispatch::json(res),
    })
}

/// The JSON objects of a whole run: [`to_json`] of each report, plus a
/// `compare` object ([`compare_json`]) on each scenario whose native pair
/// also ran.
pub fn to_json_all(reports: &[ScenarioReport]) -> Vec<Value> {
    reports
        .iter()
        .map(|r| {
            let mut j = to_json(r);
            if let Some(native) = pair_of(r, reports) {
                j["compare"] = compare_json(r, native);
            }
            j
        })
        .collect()
}

/// The report of `r`'s native pair, when it is among `reports`.
pub fn pair_of<'a>(
    r: &ScenarioReport,
    reports: &'a [ScenarioReport],
) -> Option<&'a ScenarioReport> {
    let name = r.scenario.native_pair?;
    reports.iter().find(|o| o.scenario.name == name)
}

/// Bench results by workload.
pub fn bench_json(bench: &[Bench]) -> Value {
    let m: Map<String, Value> = bench
        .iter()
        .map(|b| {
            (
                b.name.clone(),
                json!({
                    "iterations": b.iterations,
                    "cycles": b.cycles,
                    "exits": b.exits,
                    "cycles_per_iteration": b.cycles_per_iteration(),
                    "exits_per_iteration": b.exits_per_iteration(),
                    "classes": b.classes,
                    "completed": b.completed,
                }),
            )
        })
        .collect();
    Value::Object(m)
}

/// `a / b`, or `None` when `b` is 0.
pub fn ratio(a: f64, b: f64) -> Option<f64> {
    (b != 0.0).then(|| a / b)
}

/// The metrics shown for a pair counted by KVM (its statistics names).
pub const COMPARED_KVM: [(&str, Metric); 7] = [
    ("total", Metric::Total),
    ("io", Metric::Kvm("io_exits")),
    ("mmio", Metric::Kvm("mmio_exits")),
    ("halt", Metric::Kvm("halt_exits")),
    ("hypercalls", Metric::Kvm("hypercalls")),
    ("irq_window", Metric::Kvm("irq_window_exits")),
    ("irq", Metric::Kvm("irq_exits")),
];

/// The metrics shown for a pair of `counter`'s runs.
pub fn compared(counter: ExitCounter) -> &'static [(&'static str, Metric)] {
    match counter {
        ExitCounter::Microvisor | ExitCounter::Outside => &COMPARED,
        ExitCounter::Kvm => &COMPARED_KVM,
    }
}

/// The metrics shown for a pair counted by the microvisor.
pub const COMPARED: [(&str, Metric); 7] = [
    ("total", Metric::Total),
    ("console", Metric::Console),
    ("total_without_console", Metric::TotalNoConsole),
    ("pit", Metric::Pit),
    ("eoi", Metric::Eoi),
    ("io", Metric::Io),
    ("hypercalls", Metric::Hypercalls),
];

fn exit_summary(e: Option<(ExitCounter, &Exits)>) -> Value {
    match e {
        None => Value::Null,
        Some((c, e)) => Value::Object(
            compared(c)
                .iter()
                .map(|(k, m)| (k.to_string(), json!(m.of(e))))
                .collect(),
        ),
    }
}

/// KVM's counters as JSON: `total`, `io`, `mmio`, `halt`, `hypercalls`,
/// `irq_window`, `irq` and `insn_emulation` by their short names, and every
/// statistic under `stats` by KVM's name.
pub fn kvm_exits_json(e: &Exits) -> Value {
    let mut m: Map<String, Value> = COMPARED_KVM
        .iter()
        .map(|(k, metric)| (k.to_string(), json!(metric.of(e))))
        .collect();
    m.insert(
        "insn_emulation".to_string(),
        json!(Metric::Kvm("insn_emulation").of(e)),
    );
    m.insert("stats".to_string(), json!(e.reasons));
    Value::Object(m)
}

/// A backend run against its `pvops=native` pair: both runs' exit counts
/// (total, PIT, EOI, I/O, hypercalls), the backend/native ratio of each,
/// whether the scenario's `fewer_than_native` properties hold, and, when
/// both ran the benchmarks, per workload cycles and exits per iteration
/// with their ratios.
pub fn compare_json(backend: &ScenarioReport, native: &ScenarioReport) -> Value {
    let (bc, nc) = (backend.result.counted(), native.result.counted());
    let (b, n) = (bc.map(|(_, e)| e), nc.map(|(_, e)| e));
    let counter = bc.map_or(ExitCounter::Microvisor, |(c, _)| c);
    let ratios: Map<String, Value> = match (b, n) {
        (Some(b), Some(n)) => compared(counter)
            .iter()
            .map(|(k, m)| (k.to_string(), json!(ratio(m.of(b) as f64, m.of(n) as f64))))
            .collect(),
        _ => Map::new(),
    };
    let failures = crate::verdict::judge_pair(backend, native);
    let mut bench = Map::new();
    for wb in &backend.result.bench {
        if let Some(wn) = native.result.bench(&wb.name) {
            let (cb, cn) = (wb.cycles_per_iteration(), wn.cycles_per_iteration());
            let (eb, en) = (wb.exits_per_iteration(), wn.exits_per_iteration());
            bench.insert(
                wb.name.clone(),
                json!({
                    "cycles_per_iteration": {"backend": cb, "native": cn, "ratio": ratio(cb, cn)},
                    "exits_per_iteration": {
                        "backend": eb, "native": en,
                        "ratio": eb.zip(en).and_then(|(eb, en)| ratio(eb, en)),
                    },
                }),
            );
        }
    }
    json!({
        "native_scenario": native.scenario.name,
        "exit_counter": counter.name(),
        "backend": exit_summary(bc),
        "native": exit_summary(nc),
        "ratio": ratios,
        "fewer_than_native": backend.scenario.expect.fewer_than_native.iter().map(|m| m.name()).collect::<Vec<_>>(),
        "holds": failures.is_empty(),
        "failures": failures,
        "bench": bench,
    })
}

/// A ratio as `1.23x`, or `-`.
pub(crate) fn fmt_ratio(r: Option<f64>) -> String {
    r.map_or_else(|| "-".to_string(), |r| format!("{r:.2}x"))
}

/// The paired comparison under the table: per pair that ran, exits total
/// and PIT (and EOI, I/O) of the backend run vs the native run, with the
/// ratio of the totals. Empty when no pair ran.
pub fn compare_table(reports: &[ScenarioReport]) -> String {
    let mut out = String::new();
    for r in reports {
        let Some(native) = pair_of(r, reports) else {
            continue;
        };
        let (Some((counter, b)), Some(n)) = (r.result.counted(), native.result.exits()) else {
            continue;
        };
        if out.is_empty() {
            out.push_str(
                "\npaired comparison (backend run vs the same machine with pvops=native):\n",
            );
        }
        if counter == ExitCounter::Kvm {
            out.push_str(&kvm_pair_line(r, native, b, n));
            continue;
        }
        let (bq, nq) = (Metric::TotalNoConsole.of(b), Metric::TotalNoConsole.of(n));
        out.push_str(&format!(
            "  {:<24} exits {} vs {} ({}); without the console {} vs {} ({}); PIT {} vs {}; EOI {} vs {}; other I/O {} vs {}{}\n",
            r.scenario.name,
            b.total,
            n.total,
            fmt_ratio(ratio(b.total as f64, n.total as f64)),
            bq,
            nq,
            fmt_ratio(ratio(bq as f64, nq as f64)),
            b.pit(),
            n.pit(),
            b.eoi(),
            n.eoi(),
            Metric::IoNoConsole.of(b),
            Metric::IoNoConsole.of(n),
            if crate::verdict::judge_pair(r, native).is_empty() {
                ""
            } else {
                "  (expected property FAILS)"
            }
        ));
    }
    out
}

/// One line of the paired comparison for KVM's counters (which do not
/// tell the console's exits from others).
fn kvm_pair_line(r: &ScenarioReport, native: &ScenarioReport, b: &Exits, n: &Exits) -> String {
    let mut line = format!("  {:<24} KVM:", r.scenario.name);
    for (i, (k, m)) in COMPARED_KVM.iter().enumerate() {
        let (bv, nv) = (m.of(b), m.of(n));
        line.push_str(&format!(
            "{} {k} {bv} vs {nv}",
            if i == 0 { "" } else { ";" }
        ));
        if i == 0 {
            line.push_str(&format!(" ({})", fmt_ratio(ratio(bv as f64, nv as f64))));
        }
    }
    if !crate::verdict::judge_pair(r, native).is_empty() {
        line.push_str("  (expected property FAILS)");
    }
    line.push('\n');
    line
}

/// Bench figures per pair: for every workload, cycles and exits per
/// iteration of the backend run and of the native run, and the ratios
/// against native (same QEMU run of the runner, same machine).
pub fn bench_table(reports: &[ScenarioReport]) -> String {
    let mut out = String::new();
    for r in reports {
        let Some(native) = pair_of(r, reports) else {
            continue;
        };
        if r.result.bench.is_empty() || native.result.bench.is_empty() {
            continue;
        }
        out.push_str(&format!(
            "\n{} ({}) vs {} (native)\n",
            r.scenario.name,
            r.result.backend.as_deref().unwrap_or("?"),
            native.scenario.name
        ));
        out.push_str(&format!(
            "  {:<10} {:>12} {:>12} {:>8}   {:>10} {:>10} {:>8}\n",
            "workload", "cycles/it", "native", "ratio", "exits/it", "native", "ratio"
        ));
        for wb in &r.result.bench {
            let Some(wn) = native.result.bench(&wb.name) else {
                continue;
            };
            let (cb, cn) = (wb.cycles_per_iteration(), wn.cycles_per_iteration());
            let (eb, en) = (wb.exits_per_iteration(), wn.exits_per_iteration());
            let f = |e: Option<f64>| e.map_or_else(|| "-".to_string(), |e| format!("{e:.2}"));
            out.push_str(&format!(
                "  {:<10} {:>12.0} {:>12.0} {:>8}   {:>10} {:>10} {:>8}\n",
                wb.name,
                cb,
                cn,
                fmt_ratio(ratio(cb, cn)),
                f(eb),
                f(en),
                fmt_ratio(eb.zip(en).and_then(|(b, n)| ratio(b, n)))
            ));
        }
        out.push_str(&clock_vs_tsc(r, native));
        if r.scenario.accel == crate::scenario::Accel::Kvm {
            out.push_str(&tsc_vs_host(r));
        }
    }
    out
}

/// Cycles of a clock read against a raw TSC read, in each run of a pair.
fn clock_vs_tsc(r: &ScenarioReport, native: &ScenarioReport) -> String {
    let mut out = String::new();
    for run in [r, native] {
        let (Some(c), Some(t)) = (run.result.bench("clock"), run.result.bench("tsc-read")) else {
            continue;
        };
        let (c, t) = (c.cycles_per_iteration(), t.cycles_per_iteration());
        out.push_str(&format!(
            "  clock read vs raw TSC ({}): {c:.0} vs {t:.0} cycles ({})\n",
            run.result.backend.as_deref().unwrap_or("?"),
            fmt_ratio(ratio(c, t))
        ));
    }
    out
}

/// The guest's TSC frequency against the one KVM uses on this host.
fn tsc_vs_host(r: &ScenarioReport) -> String {
    let Some(guest) = r.result.tsc_khz else {
        return String::new();
    };
    let source = r.result.tsc_source.as_deref().unwrap_or("?");
    match crate::qemu::host_tsc_khz() {
        Some((host, from)) => format!(
            "  TSC: guest {guest} kHz ({source}) vs KVM's {host} kHz ({from}): {} ({:+.0} ppm)\n",
            fmt_ratio(ratio(guest as f64, host as f64)),
            (guest as f64 - host as f64) / host as f64 * 1e6
        ),
        None => format!("  TSC: guest {guest} kHz ({source}); host rate unknown\n"),
    }
}

/// Exit counters as JSON (MSR, port and hypercall-code keys in hex), with
/// the summary every counter shares: `total`, `io`, `mmio` (nested-paging
/// faults), `halt`, `irq_window`, `hypercalls` (persona hypercalls).
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
        "io": e.reason("io"),
        "mmio": e.reason("npf"),
        "halt": e.reason("hlt"),
        "irq_window": e.reason("irq_window"),
        "hypercalls": Metric::Hypercalls.of(e),
        "reasons": reasons,
        "msrs": msrs,
        "ports": ports,
        "hypercall_codes": hypercalls,
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
        let unsupported = res.selftests_unsupported().len();
        if unsupported == 0 {
            format!("{}/{}", res.selftests_passed(), res.selftests.len())
        } else {
            format!(
                "{}/{} ({unsupported} unsupported)",
                res.selftests_passed(),
                res.selftests.len()
            )
        }
    } else {
        dash()
    };
    let exits = match res.counted() {
        Some((ExitCounter::Microvisor, e)) => format!("{}/{}", e.total, e.pit()),
        Some((ExitCounter::Kvm, e)) => format!("{} (kvm)", e.total),
        Some((ExitCounter::Outside, e)) => {
            format!("{} ({})", e.total, res.exit_counter().unwrap_or("outside"))
        }
        None => match &res.kvm {
            Some(KvmCounters::Unavailable { .. }) => "kvm: n/a".to_string(),
            _ => dash(),
        },
    };
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
        for note in &r.notes {
            out.push_str(&format!("    note: {note}\n"));
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
        ScenarioReport::judged(
            scenario,
            raw,
            BootResult::parse(serial),
            Default::default(),
            false,
        )
    }

    const MV: &str = "\
@@ mv.start persona=none
@@ hypervisor name=none
@@ backend name=native reason=detected
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

    /// [`MV`] with an owner record for every entry (all native).
    fn mv() -> String {
        let owners: String = pvops::Entry::all()
            .map(|e| format!("@@ owner entry={} backend=native\n", e.name()))
            .collect();
        format!("{owners}{MV}")
    }

    #[test]
    fn json_fields() {
        let r = report("microvisor:none", 33, &mv());
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
        let good = report("microvisor:none", 33, &mv());
        let bad = report("tcg", 35, "@@ hypervisor name=qemu-tcg\n");
        let skip =
            ScenarioReport::skipped(find("kvm").unwrap(), "/dev/kvm not usable: nope".into());
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
        assert!(compare_table(&[]).is_empty());
        // The verdict column starts at the same offset on every row.
        let col = lines[0].find("verdict").unwrap();
        assert_eq!(lines[1].find("pass"), Some(col));
    }

    const XEN_RUN: &str = "\
@@ mv.start persona=xen
@@ bench name=io-delay iterations=1000 cycles=100000 exits=0 io=0 msr=0
@@ bench name=clock iterations=10000 cycles=500000 exits=0 io=0
@@ mv.msr msr=0x80b reads=0 writes=9
@@ mv.port port=0x3f8 count=500
@@ mv.exit reason=io count=500
@@ mv.hypercall code=0x18 count=12
@@ mv.total count=1000
";
    const NATIVE_RUN: &str = "\
@@ mv.start persona=xen
@@ bench name=io-delay iterations=1000 cycles=40000000 exits=1000 io=1000 msr=0
@@ bench name=clock iterations=10000 cycles=400000 exits=0 io=0
@@ mv.msr msr=0x80b reads=0 writes=9
@@ mv.port port=0x42 count=6
@@ mv.port port=0x61 count=994
@@ mv.exit reason=io count=2500
@@ mv.total count=4000
";

    #[test]
    fn paired_comparison() {
        let b = report("microvisor:xen", 33, XEN_RUN);
        let n = report("microvisor:xen/native", 33, NATIVE_RUN);
        let all = [b, n];
        let j = to_json_all(&all);
        assert!(j[1].get("compare").is_none());
        let c = &j[0]["compare"];
        assert_eq!(c["native_scenario"], "microvisor:xen/native");
        assert_eq!(c["backend"]["total"], 1000);
        assert_eq!(c["native"]["total"], 4000);
        assert_eq!(c["backend"]["pit"], 0);
        assert_eq!(c["native"]["pit"], 1000);
        assert_eq!(c["native"]["eoi"], 9);
        assert_eq!(c["backend"]["hypercalls"], 12);
        assert_eq!(c["ratio"]["total"], 0.25);
        assert_eq!(c["backend"]["console"], 500);
        assert_eq!(c["backend"]["total_without_console"], 500);
        assert_eq!(c["ratio"]["pit"], 0.0);
        assert_eq!(c["holds"], true, "{c}");
        let io = &c["bench"]["io-delay"];
        assert_eq!(io["cycles_per_iteration"]["backend"], 100.0);
        assert_eq!(io["cycles_per_iteration"]["ratio"], 0.0025);
        assert_eq!(io["exits_per_iteration"]["native"], 1.0);
        assert_eq!(io["exits_per_iteration"]["ratio"], 0.0);
        assert_eq!(
            c["bench"]["clock"]["exits_per_iteration"]["ratio"],
            Value::Null
        );
        assert_eq!(j[0]["bench"]["clock"]["cycles_per_iteration"], 50.0);

        let t = compare_table(&all);
        assert!(t.contains("microvisor:xen"), "{t}");
        assert!(
            t.contains(
                "exits 1000 vs 4000 (0.25x); without the console 500 vs 4000 (0.12x); \
                 PIT 0 vs 1000; EOI 9 vs 9; other I/O 0 vs 2500"
            ),
            "{t}"
        );
        assert!(!t.contains("FAILS"), "{t}");
        let bt = bench_table(&all);
        assert!(bt.contains("io-delay"), "{bt}");
        assert!(
            bt.lines().any(|l| l.trim_start().starts_with("io-delay")
                && l.contains("0.00x")
                && l.contains("1.00")),
            "{bt}"
        );

        // The property fails when the backend run is not cheaper.
        let worse = report(
            "microvisor:xen",
            33,
            &XEN_RUN.replace("count=1000", "count=5000"),
        );
        let pair = [worse, report("microvisor:xen/native", 33, NATIVE_RUN)];
        assert!(compare_table(&pair).contains("FAILS"));
        assert_eq!(to_json_all(&pair)[0]["compare"]["holds"], false);
    }
}
