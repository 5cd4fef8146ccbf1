//! The example kernel's dispatch records (`@@ dispatch`,
//! `@@ dispatch.entry`, `@@ dispatch-bench`) and the dispatch benchmark
//! table: cycles per call of the raw instruction, the patched call site and
//! the indirect table call, with their ratios, from one run.

use crate::parse::{parse_u64, Record};
use crate::ScenarioReport;
use serde_json::{json, Value};

/// `@@ dispatch`: the mechanism in force for the whole kernel.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Dispatch {
    /// `patched` or `table`.
    pub mechanism: String,
    /// Call sites in the kernel.
    pub sites: u64,
    /// Sites patched to the native sequence.
    pub inline: u64,
    /// Sites patched to a direct call.
    pub direct: u64,
    /// Sites refused (still indirect) when patched.
    pub refused: u64,
    /// Why the table is in force (`mechanism=table`).
    pub reason: Option<String>,
}

/// `@@ dispatch.entry`: one table entry's mechanism and sites.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DispatchEntry {
    /// Dotted entry name.
    pub entry: String,
    /// Owning backend.
    pub owner: String,
    /// `inline`, `direct` or `indirect`.
    pub mechanism: String,
    /// Sites of this entry.
    pub sites: u64,
    /// Of which inline, direct, indirect.
    pub inline: u64,
    /// Direct sites.
    pub direct: u64,
    /// Indirect (refused or unpatched) sites.
    pub indirect: u64,
}

/// `@@ dispatch-bench`: one operation's three figures.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DispatchBench {
    /// Dotted entry name.
    pub op: String,
    /// Owning backend.
    pub owner: String,
    /// Mechanism of the patched site.
    pub mechanism: String,
    /// Calls per figure.
    pub iterations: u64,
    /// Total cycles of the raw instruction (none for backend functions).
    pub raw: Option<u64>,
    /// Total cycles through the patched call site.
    pub patched: u64,
    /// Total cycles through the indirect table call.
    pub indirect: u64,
}

impl DispatchBench {
    fn per(&self, c: u64) -> f64 {
        c as f64 / self.iterations.max(1) as f64
    }

    /// Patched / raw, where there is a raw figure.
    pub fn patched_vs_raw(&self) -> Option<f64> {
        self.raw
            .filter(|&r| r > 0)
            .map(|r| self.patched as f64 / r as f64)
    }

    /// Patched / indirect.
    pub fn patched_vs_indirect(&self) -> Option<f64> {
        (self.indirect > 0).then(|| self.patched as f64 / self.indirect as f64)
    }

    /// Whether the target applies and holds: patched / raw <= 1.05
    /// for the interrupt flag operations, CR2/CR3 and TSC reads (when
    /// inline), patched < indirect for backend-owned entries.
    pub fn target(&self) -> Option<bool> {
        const RAW: [&str; 7] = [
            "irq.save_flags",
            "irq.restore_flags",
            "irq.disable",
            "irq.enable",
            "mmu.read_cr2",
            "mmu.read_cr3",
            "cpu.read_tsc",
        ];
        if RAW.contains(&self.op.as_str()) && self.mechanism == "inline" {
            return self.patched_vs_raw().map(|r| r <= 1.05);
        }
        (self.owner != "native").then_some(self.patched < self.indirect)
    }
}

fn n(rec: &Record, k: &str) -> Option<u64> {
    rec.get(k).and_then(parse_u64)
}

fn s(rec: &Record, k: &str) -> Option<String> {
    rec.get(k).map(str::to_string)
}

/// Decodes a `dispatch` record.
pub fn dispatch(rec: &Record) -> Option<Dispatch> {
    Some(Dispatch {
        mechanism: s(rec, "mechanism")?,
        sites: n(rec, "sites")?,
        inline: n(rec, "inline").unwrap_or(0),
        direct: n(rec, "direct").unwrap_or(0),
        refused: n(rec, "refused").unwrap_or(0),
        reason: s(rec, "reason"),
    })
}

/// Decodes a `dispatch.entry` record.
pub fn entry(rec: &Record) -> Option<DispatchEntry> {
    Some(DispatchEntry {
        entry: s(rec, "entry")?,
        owner: s(rec, "owner")?,
        mechanism: s(rec, "mechanism")?,
        sites: n(rec, "sites")?,
        inline: n(rec, "inline")?,
        direct: n(rec, "direct")?,
        indirect: n(rec, "indirect")?,
    })
}

/// Decodes a `dispatch-bench` record.
pub fn bench(rec: &Record) -> Option<DispatchBench> {
    Some(DispatchBench {
        op: s(rec, "op")?,
        owner: s(rec, "owner")?,
        mechanism: s(rec, "mechanism")?,
        iterations: n(rec, "iterations")?,
        raw: match rec.get("raw")? {
            "-" => None,
            v => Some(parse_u64(v)?),
        },
        patched: n(rec, "patched")?,
        indirect: n(rec, "indirect")?,
    })
}

fn ratio(r: Option<f64>) -> String {
    r.map_or_else(|| "-".to_string(), |r| format!("{r:.3}x"))
}

/// The dispatch benchmark table of every run that has one.
pub fn bench_table(reports: &[ScenarioReport]) -> String {
    let mut out = String::new();
    for r in reports {
        let b = &r.result.dispatch_bench;
        if b.is_empty() {
            continue;
        }
        let mech = r
            .result
            .dispatch
            .as_ref()
            .map_or("?".to_string(), |d| d.mechanism.clone());
        out.push_str(&format!(
            "\ndispatch, {} ({}, {mech}): cycles per call\n",
            r.scenario.name,
            r.result.backend.as_deref().unwrap_or("?")
        ));
        out.push_str(&format!(
            "  {:<20} {:<8} {:<8} {:>9} {:>9} {:>9} {:>9} {:>9}  {}\n",
            "operation",
            "owner",
            "site",
            "raw",
            "patched",
            "indirect",
            "pat/raw",
            "pat/ind",
            "target"
        ));
        for d in b {
            let target = match d.target() {
                Some(true) => "met",
                Some(false) => "MISSED",
                None => "-",
            };
            out.push_str(&format!(
                "  {:<20} {:<8} {:<8} {:>9} {:>9.1} {:>9.1} {:>9} {:>9}  {target}\n",
                d.op,
                d.owner,
                d.mechanism,
                d.raw
                    .map_or("-".to_string(), |c| format!("{:.1}", d.per(c))),
                d.per(d.patched),
                d.per(d.indirect),
                ratio(d.patched_vs_raw()),
                ratio(d.patched_vs_indirect()),
            ));
        }
    }
    out
}

/// JSON of the dispatch records of one run.
pub fn json(r: &crate::parse::BootResult) -> Value {
    json!({
        "mechanism": r.dispatch.as_ref().map(|d| json!({
            "mechanism": d.mechanism, "sites": d.sites, "inline": d.inline,
            "direct": d.direct, "refused": d.refused, "reason": d.reason,
        })),
        "entries": r.dispatch_entries.iter().map(|e| json!({
            "entry": e.entry, "owner": e.owner, "mechanism": e.mechanism,
            "sites": e.sites, "inline": e.inline, "direct": e.direct, "indirect": e.indirect,
        })).collect::<Vec<_>>(),
        "bench": r.dispatch_bench.iter().map(|d| json!({
            "op": d.op, "owner": d.owner, "mechanism": d.mechanism,
            "iterations": d.iterations,
            "raw_cycles_per_call": d.raw.map(|c| d.per(c)),
            "patched_cycles_per_call": d.per(d.patched),
            "indirect_cycles_per_call": d.per(d.indirect),
            "patched_vs_raw": d.patched_vs_raw(),
            "patched_vs_indirect": d.patched_vs_indirect(),
            "target_met": d.target(),
        })).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use crate::parse::BootResult;

    const LOG: &str = "\
@@ dispatch mechanism=patched sites=244 inline=33 direct=211 refused=0
@@ dispatch.entry entry=irq.disable owner=native mechanism=inline sites=12 inline=12 direct=0 indirect=0
@@ dispatch-bench op=irq.disable owner=native mechanism=inline iterations=100000 raw=1000000 patched=1020000 indirect=2000000
@@ dispatch-bench op=time.monotonic_ns owner=kvm mechanism=direct iterations=100000 raw=- patched=3000000 indirect=3100000
@@ dispatch-bench op=mmu.read_cr2 owner=native mechanism=inline iterations=100000 raw=100 patched=200 indirect=300
@@ dispatch-bench op=bad owner=native mechanism=inline iterations=x raw=- patched=1 indirect=1
";

    #[test]
    fn records_decode_and_targets_are_judged() {
        let r = BootResult::parse(LOG);
        let d = r.dispatch.as_ref().unwrap();
        assert_eq!(
            (d.mechanism.as_str(), d.sites, d.inline),
            ("patched", 244, 33)
        );
        assert_eq!(r.dispatch_entries.len(), 1);
        assert_eq!(r.dispatch_entries[0].sites, 12);
        assert_eq!(r.dispatch_bench.len(), 3);
        assert_eq!(r.malformed.len(), 1);
        let b = &r.dispatch_bench;
        assert_eq!(b[0].target(), Some(true));
        assert!((b[0].patched_vs_raw().unwrap() - 1.02).abs() < 1e-9);
        assert_eq!(b[1].raw, None);
        assert_eq!(b[1].target(), Some(true));
        assert_eq!(b[2].target(), Some(false));
        let j = super::json(&r);
        assert_eq!(j["bench"][0]["patched_cycles_per_call"], 10.2);
    }
}
