//! The SMP bench (the example kernel's `smpbench`, `smpbench=cross` or
//! `bench`, `example-kernel/src/smp/bench.rs`): TLB shootdown, IPI fan-out
//! and lock contention for N = 2, 4, 8 CPUs; cycles and exits per
//! operation, backend run against its `pvops=native` pair, and the
//! paravirtual lock against plain spinning in the same run.
//!
//! Exits come from the counter the run has, as for the report card
//! ([`crate::card`]): the record's `exits=` (microvisor), KVM's statistics
//! at the holds `hold=K` and `K + 1`, or L1 KVM's trace between the
//! stretch's marks (`mark=M`). The empty stretch (`name=base`) measured the
//! same way gives the bracket's own exits, which every workload's lose.

use serde_json::{json, Value};

use crate::parse::{parse_u64, BootResult, Record};
use crate::report::{fmt_ratio, pair_of, ratio};
use crate::ScenarioReport;

/// One `smpbench` record.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SmpBench {
    /// `base`, `shootdown`, `ipi-fanout`, `lock-pv`, `lock-spin`.
    pub name: String,
    /// CPUs taking part (N).
    pub cpus: u64,
    /// Operations (shootdowns, fan-outs, acquisitions of all CPUs).
    pub ops: u64,
    /// TSC cycles of the whole stretch on the boot CPU.
    pub cycles: u64,
    /// Exits counted by the microvisor (`exits=`).
    pub exits: Option<u64>,
    /// The hold just before the stretch (KVM's counters).
    pub hold: Option<u64>,
    /// The stretch's number among the marked ones (nested trace).
    pub mark: u64,
    /// Operations that finished.
    pub completed: u64,
    /// Lock workloads: the waiters' cycles between asking and getting.
    pub waited: Option<u64>,
    /// `lock.wait` calls (lock workloads).
    pub waits: Option<u64>,
    /// `lock.kick` calls (lock workloads).
    pub kicks: Option<u64>,
    /// Shootdown: targets flagged instead of interrupted (KVM PV flush).
    pub flagged: Option<u64>,
}

impl SmpBench {
    /// Decodes a `smpbench` record; `None` when a field is missing or bad.
    pub fn from_record(rec: &Record) -> Option<SmpBench> {
        let n = |k: &str| rec.get(k).and_then(parse_u64);
        let opt = |k: &str| match rec.get(k) {
            None | Some("-") => Some(None),
            Some(v) => parse_u64(v).map(Some),
        };
        Some(SmpBench {
            name: rec.get("name")?.to_string(),
            cpus: n("cpus")?,
            ops: n("ops")?,
            cycles: n("cycles")?,
            exits: opt("exits")?,
            hold: opt("hold")?,
            mark: n("mark")?,
            completed: n("completed")?,
            waited: opt("waited")?,
            waits: opt("waits")?,
            kicks: opt("kicks")?,
            flagged: opt("flagged")?,
        })
    }

    /// Cycles per operation.
    pub fn cycles_per_op(&self) -> f64 {
        self.cycles as f64 / self.ops.max(1) as f64
    }
}

/// One `smpbench.steal` record: over the bench, the steal time one CPU
/// read through pvops (`time.steal_ns`) and the time the microvisor kept
/// its vCPU runnable but off the physical CPU.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StealAgreement {
    /// The pvops CPU index.
    pub cpu: u64,
    /// The microvisor's vCPU index (the APIC ID).
    pub vcpu: u64,
    /// What the guest saw, ns (negative if its clock went back).
    pub guest_ns: i64,
    /// What the microvisor took, ns.
    pub mv_ns: i64,
}

impl StealAgreement {
    /// Decodes a `smpbench.steal` record.
    pub fn from_record(rec: &Record) -> Option<StealAgreement> {
        let n = |k: &str| rec.get(k).and_then(parse_u64);
        let i = |k: &str| rec.get(k).and_then(|v| v.parse::<i64>().ok());
        Some(StealAgreement {
            cpu: n("cpu")?,
            vcpu: n("vcpu")?,
            guest_ns: i("guest_ns")?,
            mv_ns: i("mv_ns")?,
        })
    }

    /// Guest minus microvisor, ns.
    pub fn difference_ns(&self) -> i64 {
        self.guest_ns.saturating_sub(self.mv_ns)
    }
}

/// The stretch's exits from whichever counter the run has, before the
/// base is taken off, and the counter's name.
fn raw_exits(r: &BootResult, b: &SmpBench) -> Option<(u64, &'static str)> {
    if let Some(e) = b.exits {
        return Some((e, "microvisor"));
    }
    if let Some(k) = b.hold.and_then(|k| usize::try_from(k).ok()) {
        let before = r.hold_exits.get(k).copied().flatten();
        let after = r.hold_exits.get(k + 1).copied().flatten();
        return before.zip(after).map(|(b, a)| (a.saturating_sub(b), "kvm"));
    }
    let m = usize::try_from(b.mark).ok()?;
    match (&r.counted_exits, r.marked_exits.get(m)) {
        (Some(_), Some(&e)) => Some((e, "nested-kvm")),
        _ => None,
    }
}

/// A workload's exits per operation, net of the bracket's own (the base
/// stretch's), and the counter that counted them.
pub fn exits_per_op(r: &BootResult, b: &SmpBench) -> Option<(f64, &'static str)> {
    let base = r
        .smp_bench
        .iter()
        .find(|x| x.name == "base")
        .and_then(|x| raw_exits(r, x))
        .map_or(0, |(e, _)| e);
    let (e, counter) = raw_exits(r, b)?;
    Some((e.saturating_sub(base) as f64 / b.ops.max(1) as f64, counter))
}

/// The records of one workload and N added up (the lock workloads run
/// twice): operations, cycles, exits net of the base (when every record
/// has them), and the lock counters.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Combined {
    /// Records added up.
    pub runs: u64,
    /// Operations of all of them.
    pub ops: u64,
    /// Operations that finished.
    pub completed: u64,
    /// TSC cycles of all of them.
    pub cycles: u64,
    /// Exits of all of them net of the base; `None` when one has none.
    pub exits: Option<f64>,
    /// The waiters' cycles (lock workloads), summed.
    pub waited: Option<u64>,
    /// `lock.wait` calls.
    pub waits: u64,
    /// `lock.kick` calls.
    pub kicks: u64,
    /// Targets flagged instead of interrupted.
    pub flagged: u64,
}

impl Combined {
    /// Cycles per operation.
    pub fn cycles_per_op(&self) -> f64 {
        self.cycles as f64 / self.ops.max(1) as f64
    }

    /// Exits per operation.
    pub fn exits_per_op(&self) -> Option<f64> {
        self.exits.map(|e| e / self.ops.max(1) as f64)
    }
}

/// Workload `name` with `cpus` CPUs in run `r`, its records added up;
/// `None` when it has none.
pub fn combined(r: &BootResult, name: &str, cpus: u64) -> Option<Combined> {
    let mut c = Combined {
        exits: Some(0.0),
        ..Combined::default()
    };
    for b in r
        .smp_bench
        .iter()
        .filter(|b| b.name == name && b.cpus == cpus)
    {
        c.runs += 1;
        c.ops += b.ops;
        c.completed += b.completed;
        c.cycles += b.cycles;
        c.exits = c
            .exits
            .zip(exits_per_op(r, b))
            .map(|(sum, (per, _))| sum + per * b.ops.max(1) as f64);
        c.waited = match (c.waited, b.waited) {
            (w, None) => w,
            (w, Some(x)) => Some(w.unwrap_or(0) + x),
        };
        c.waits += b.waits.unwrap_or(0);
        c.kicks += b.kicks.unwrap_or(0);
        c.flagged += b.flagged.unwrap_or(0);
    }
    (c.runs > 0).then_some(c)
}

/// The (workload, N) pairs of a run, in the order they first appear, the
/// base left out.
pub fn workloads(r: &BootResult) -> Vec<(String, u64)> {
    let mut w: Vec<(String, u64)> = Vec::new();
    for b in r.smp_bench.iter().filter(|b| b.name != "base") {
        if !w.iter().any(|(n, c)| *n == b.name && *c == b.cpus) {
            w.push((b.name.clone(), b.cpus));
        }
    }
    w
}

/// What is wrong with a run's SMP bench: an unfinished workload or a
/// missing end record when the guest was asked for it (`asked`).
pub fn failures(r: &BootResult, asked: bool) -> Vec<String> {
    let mut f = Vec::new();
    for b in r.smp_bench.iter().filter(|b| b.completed < b.ops) {
        f.push(format!(
            "SMP bench {} N={}: {}/{} operations finished",
            b.name, b.cpus, b.completed, b.ops
        ));
    }
    if asked && r.smp.is_some_and(|(_, online)| online > 1) && r.smp_bench_end.is_none() {
        f.push("SMP bench asked for but no `@@ smpbench.end` record".to_string());
    }
    f
}

fn fmt_opt(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "-".to_string(), |v| format!("{v:.digits$}"))
}

/// The SMP bench of every run that has one, beside its native pair's when
/// that ran, as text (empty when no run has one).
pub fn table(reports: &[ScenarioReport]) -> String {
    let mut out = String::new();
    for r in reports {
        if r.result.smp_bench.iter().all(|b| b.name == "base") {
            continue;
        }
        // A native pair is printed beside its backend run, not alone.
        if reports.iter().any(|o| {
            o.scenario.native_pair == Some(r.scenario.name) && !o.result.smp_bench.is_empty()
        }) {
            continue;
        }
        let native = pair_of(r, reports).filter(|n| !n.result.smp_bench.is_empty());
        out.push_str(&format!(
            "\nSMP bench: {} ({}){}\n",
            r.scenario.name,
            r.result.backend.as_deref().unwrap_or("?"),
            native.map_or(String::new(), |n| format!(
                " vs {} (native)",
                n.scenario.name
            ))
        ));
        out.push_str(&format!(
            "  {:<14} {:>2} {:>12} {:>12} {:>7}   {:>9} {:>9} {:>7}  {}\n",
            "workload", "N", "cycles/op", "native", "ratio", "exits/op", "native", "ratio", "notes"
        ));
        for (name, cpus) in workloads(&r.result) {
            let Some(b) = combined(&r.result, &name, cpus) else {
                continue;
            };
            let nb = native.and_then(|n| combined(&n.result, &name, cpus));
            let (cb, cn) = (b.cycles_per_op(), nb.as_ref().map(Combined::cycles_per_op));
            let eb = b.exits_per_op();
            let en = nb.as_ref().and_then(Combined::exits_per_op);
            out.push_str(&format!(
                "  {:<14} {:>2} {:>12.0} {:>12} {:>7}   {:>9} {:>9} {:>7}  {}\n",
                name,
                cpus,
                cb,
                fmt_opt(cn, 0),
                fmt_ratio(cn.and_then(|n| ratio(cb, n))),
                fmt_opt(eb, 2),
                fmt_opt(en, 2),
                fmt_ratio(eb.zip(en).and_then(|(b, n)| ratio(b, n))),
                notes(&r.result, &name, cpus, &b)
            ));
        }
        // A backend without a steal-time source reads 0: say so rather
        // than print a disagreement.
        let steal_owned = r
            .result
            .owners
            .get("time.steal_ns")
            .is_some_and(|o| o != "native");
        for st in r.result.smp_steal.iter().filter(|_| !steal_owned) {
            out.push_str(&format!(
                "  steal time CPU {} (vCPU {}): the microvisor took {:.3} ms; the guest has no steal-time source (time.steal_ns native)\n",
                st.cpu,
                st.vcpu,
                st.mv_ns as f64 / 1e6,
            ));
        }
        for st in r.result.smp_steal.iter().filter(|_| steal_owned) {
            out.push_str(&format!(
                "  steal time CPU {} (vCPU {}): guest saw {:.3} ms, the microvisor took {:.3} ms, difference {} us\n",
                st.cpu,
                st.vcpu,
                st.guest_ns as f64 / 1e6,
                st.mv_ns as f64 / 1e6,
                st.difference_ns() / 1000
            ));
        }
    }
    out
}

/// The lock workloads' waiter figures (and PV against spinning in the
/// same run), a shootdown's flagged targets, unfinished operations.
fn notes(r: &BootResult, name: &str, cpus: u64, b: &Combined) -> String {
    let mut n = Vec::new();
    if b.completed < b.ops {
        n.push(format!("{}/{} finished", b.completed, b.ops));
    }
    if b.runs > 1 {
        n.push(format!("{} runs", b.runs));
    }
    if b.flagged > 0 {
        n.push(format!("{} targets flagged, not interrupted", b.flagged));
    }
    if let Some(w) = b.waited {
        n.push(format!(
            "waited {:.0} cycles/acquisition, {} waits, {} kicks",
            w as f64 / b.ops.max(1) as f64,
            b.waits,
            b.kicks
        ));
    }
    if let Some(hold) = name.strip_prefix("lock-pv") {
        if let Some(spin) = combined(r, &format!("lock-spin{hold}"), cpus) {
            n.push(format!(
                "vs lock-spin{hold}: cycles {}, waited {}, exits {}",
                fmt_ratio(ratio(b.cycles_per_op(), spin.cycles_per_op())),
                fmt_ratio(b.waited.zip(spin.waited).and_then(|(p, s)| ratio(
                    p as f64 / b.ops.max(1) as f64,
                    s as f64 / spin.ops.max(1) as f64
                ))),
                fmt_ratio(
                    b.exits_per_op()
                        .zip(spin.exits_per_op())
                        .and_then(|(p, s)| ratio(p, s))
                )
            ));
        }
    }
    n.join("; ")
}

/// One run's SMP bench as JSON (per workload and N, its records added
/// up: cycles and exits per operation).
pub fn to_json(r: &BootResult) -> Value {
    let rows: Vec<Value> = workloads(r)
        .into_iter()
        .filter_map(|(name, cpus)| {
            let c = combined(r, &name, cpus)?;
            Some(json!({
                "name": name,
                "cpus": cpus,
                "runs": c.runs,
                "ops": c.ops,
                "completed": c.completed,
                "cycles_per_op": c.cycles_per_op(),
                "exits_per_op": c.exits_per_op(),
                "waited": c.waited,
                "waits": c.waits,
                "kicks": c.kicks,
                "flagged": c.flagged,
            }))
        })
        .collect();
    Value::Array(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steal_records_and_long_lock_notes() {
        let r = BootResult::parse(
            "@@ smpbench name=lock-spin-long cpus=2 ops=8 cycles=800 exits=40 hold=- mark=1 completed=8 waited=400 waits=0 kicks=0\n\
             @@ smpbench name=lock-pv-long cpus=2 ops=8 cycles=200 exits=10 hold=- mark=2 completed=8 waited=100 waits=5 kicks=4\n\
             @@ smpbench.steal cpu=1 vcpu=1 guest_ns=2000000 mv_ns=2000500\n",
        );
        assert_eq!(
            r.smp_steal,
            [StealAgreement {
                cpu: 1,
                vcpu: 1,
                guest_ns: 2_000_000,
                mv_ns: 2_000_500
            }]
        );
        assert_eq!(r.smp_steal[0].difference_ns(), -500);
        let pv = combined(&r, "lock-pv-long", 2).unwrap();
        let n = notes(&r, "lock-pv-long", 2, &pv);
        assert!(
            n.contains("vs lock-spin-long: cycles 0.25x, waited 0.25x, exits 0.25x"),
            "{n}"
        );
    }

    const KVM_RUN: &str = "\
@@ smp cpus=4 online=4 madt=ok disabled=0 left_out=0
@@ hold max_polls=1
@@ smpbench name=base cpus=1 ops=1 cycles=10 exits=- hold=0 mark=0 completed=1
@@ hold max_polls=1
@@ hold max_polls=1
@@ smpbench name=shootdown cpus=2 ops=100 cycles=100000 exits=- hold=2 mark=1 completed=100 flagged=7
@@ hold max_polls=1
@@ smpbench.end records=1
";

    #[test]
    fn kvm_exits_from_holds_less_the_base() {
        let mut r = BootResult::parse(KVM_RUN);
        assert_eq!(r.smp_bench.len(), 2);
        assert_eq!(r.smp_bench_end, Some(1));
        r.hold_exits = vec![Some(100), Some(105), Some(200), Some(505)];
        let s = &r.smp_bench[1];
        assert_eq!(s.flagged, Some(7));
        // 305 in the bracket, 5 of them the bracket's own: 3 per shootdown.
        assert_eq!(exits_per_op(&r, s), Some((3.0, "kvm")));
        assert_eq!(s.cycles_per_op(), 1000.0);
        assert!(failures(&r, true).is_empty());
        // A reading that failed: no figure, not zero.
        r.hold_exits[3] = None;
        assert_eq!(exits_per_op(&r, &r.smp_bench[1].clone()), None);
    }

    #[test]
    fn microvisor_and_nested_counters() {
        let mut r = BootResult::parse(
            "@@ smpbench name=base cpus=1 ops=1 cycles=1 exits=2 hold=- mark=0 completed=1\n\
             @@ smpbench name=ipi-fanout cpus=4 ops=10 cycles=50 exits=62 hold=- mark=1 completed=10\n",
        );
        assert_eq!(
            exits_per_op(&r, &r.smp_bench[1].clone()),
            Some((6.0, "microvisor"))
        );
        let mut n = BootResult::parse(
            "@@ smpbench name=base cpus=1 ops=1 cycles=1 exits=- hold=- mark=0 completed=1\n\
             @@ smpbench name=lock-pv cpus=2 ops=200 cycles=50 exits=- hold=- mark=1 completed=200 waited=4000 waits=3 kicks=3\n",
        );
        // No trace: no figure.
        assert_eq!(exits_per_op(&n, &n.smp_bench[1].clone()), None);
        n.counted_exits = Some(("nested-kvm".into(), Default::default()));
        n.marked_exits = vec![2, 402];
        assert_eq!(
            exits_per_op(&n, &n.smp_bench[1].clone()),
            Some((2.0, "nested-kvm"))
        );
        r.smp = Some((4, 4));
        assert_eq!(failures(&r, true).len(), 1, "no end record");
    }

    #[test]
    fn repeated_workloads_add_up() {
        let r = BootResult::parse(
            "@@ smpbench name=base cpus=1 ops=1 cycles=1 exits=1 hold=- mark=0 completed=1\n\
             @@ smpbench name=lock-spin cpus=2 ops=10 cycles=100 exits=11 hold=- mark=1 completed=10 waited=50 waits=0 kicks=0\n\
             @@ smpbench name=lock-pv cpus=2 ops=10 cycles=300 exits=21 hold=- mark=2 completed=10 waited=70 waits=2 kicks=1\n\
             @@ smpbench name=lock-pv cpus=2 ops=10 cycles=100 exits=1 hold=- mark=3 completed=10 waited=30 waits=1 kicks=1\n\
             @@ smpbench name=lock-spin cpus=2 ops=10 cycles=100 exits=31 hold=- mark=4 completed=9 waited=50 waits=0 kicks=0\n",
        );
        assert_eq!(
            workloads(&r),
            [("lock-spin".to_string(), 2), ("lock-pv".to_string(), 2)]
        );
        let pv = combined(&r, "lock-pv", 2).unwrap();
        assert_eq!(
            (pv.runs, pv.ops, pv.cycles, pv.waited, pv.waits, pv.kicks),
            (2, 20, 400, Some(100), 3, 2)
        );
        // 20 + 0 exits net of the base's 1 each.
        assert_eq!(pv.exits_per_op(), Some(1.0));
        let spin = combined(&r, "lock-spin", 2).unwrap();
        assert_eq!(spin.completed, 19);
        assert_eq!(spin.exits_per_op(), Some(2.0));
        let n = notes(&r, "lock-pv", 2, &pv);
        assert!(
            n.contains("vs lock-spin: cycles 2.00x, waited 1.00x, exits 0.50x"),
            "{n}"
        );
        assert!(combined(&r, "shootdown", 2).is_none());
    }

    #[test]
    fn unfinished_workloads_fail() {
        let r = BootResult::parse(
            "@@ smpbench name=ipi-fanout cpus=2 ops=10 cycles=50 exits=- hold=- mark=0 completed=9\n",
        );
        let f = failures(&r, false);
        assert_eq!(f, ["SMP bench ipi-fanout N=2: 9/10 operations finished"]);
    }

    #[test]
    fn bad_records_are_not_taken() {
        let r = BootResult::parse(
            "@@ smpbench name=x cpus=2 ops=ten cycles=1 exits=- hold=- mark=0 completed=1\n",
        );
        assert!(r.smp_bench.is_empty());
    }
}
