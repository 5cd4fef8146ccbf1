//! The report card (`qemu-runner report-card`): per table entry, its owner,
//! dispatch mechanism, TSC cycles and exits per call, on a hypervisor and
//! with `pvops=native` on the same one.
//!
//! The guest side is the example kernel's `card` switch
//! (`example-kernel/src/card.rs`), which prints `@@ card.base`, one
//! `@@ card` per entry and `@@ card.end` (fields: `pvops_abi::report`,
//! `docs/report-card.md`). Exits come from whichever counter the run has:
//!
//! - the microvisor: in the record (`exits=`), from its hidden counters;
//! - KVM: the runner reads KVM's own statistics over QMP at every `@@
//!   hold`; a record's `hold=K` says the loop ran between holds `K` and
//!   `K + 1` ([`BootResult::hold_exits`]);
//! - nested KVM: L1 KVM's trace, cut at the guest's writes to the mark
//!   port around every loop ([`BootResult::marked_exits`]).
//!
//! Each of those brackets holds some exits of its own (the hold's serial
//! record and polls, the marks): the empty loop (`card.base`) is measured
//! the same way and its exits are taken off every entry's.

use serde_json::{json, Value};

use crate::parse::{parse_u64, BootResult, Record};

/// One measured loop: `card.base`, or a `card` record that was measured.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Measure {
    /// Calls made.
    pub iterations: u64,
    /// TSC cycles for all of them.
    pub cycles: u64,
    /// Exits for all of them when the guest counted them (microvisor).
    pub exits: Option<u64>,
    /// The hold printed just before the loop (KVM's counters).
    pub hold: Option<u64>,
}

impl Measure {
    fn from_record(rec: &Record) -> Option<Measure> {
        let opt = |k: &str| match rec.get(k) {
            None | Some("-") => Some(None),
            Some(v) => parse_u64(v).map(Some),
        };
        Some(Measure {
            iterations: rec.get("iterations").and_then(parse_u64)?,
            cycles: rec.get("cycles").and_then(parse_u64)?,
            exits: opt("exits")?,
            hold: opt("hold")?,
        })
    }
}

/// A `card` record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CardRecord {
    /// Entry name (`cpu.cpuid`, ...).
    pub entry: String,
    /// Owning backend.
    pub owner: String,
    /// `inline`, `direct` or `indirect`.
    pub mechanism: String,
    /// What was measured, or why the entry was not (`skipped=`).
    pub measure: Result<Measure, String>,
}

impl CardRecord {
    /// Decodes a `card` record; `None` when a field is missing or bad.
    pub fn from_record(rec: &Record) -> Option<CardRecord> {
        let measure = match rec.get("skipped") {
            Some(why) => Err(why.to_string()),
            None => Ok(Measure::from_record(rec)?),
        };
        Some(CardRecord {
            entry: rec.get("entry")?.to_string(),
            owner: rec.get("owner")?.to_string(),
            mechanism: rec.get("mechanism")?.to_string(),
            measure,
        })
    }
}

/// Decodes a `card.base` record.
pub fn base_from_record(rec: &Record) -> Option<Measure> {
    Measure::from_record(rec)
}

/// One row of a card.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    /// Entry name.
    pub entry: String,
    /// Owning backend.
    pub owner: String,
    /// Dispatch mechanism.
    pub mechanism: String,
    /// TSC cycles per call, net of an empty loop iteration (`None`: not
    /// measured).
    pub cycles: Option<f64>,
    /// Exits per call, the empty loop's taken off (`None`: no counter).
    pub exits: Option<f64>,
    /// Why the entry was not measured.
    pub skipped: Option<String>,
}

/// One boot's card.
#[derive(Clone, Debug, PartialEq)]
pub struct Card {
    /// Scenario name.
    pub scenario: String,
    /// Who counted the exits (`microvisor`, `kvm`, `nested-kvm`), if anyone.
    pub counter: Option<String>,
    /// Calls per entry.
    pub iterations: u64,
    /// TSC cycles per iteration of the empty loop.
    pub base_cycles: f64,
    /// Rows in table order.
    pub rows: Vec<Row>,
}

impl Card {
    /// Assembles the card of `scenario` from its boot; the error says what
    /// is missing.
    pub fn from_boot(scenario: &str, r: &BootResult) -> Result<Card, String> {
        let base = r
            .card_base
            .as_ref()
            .ok_or_else(|| format!("{scenario}: no `@@ card.base` record (no card was run)"))?;
        if r.card_end.is_none() {
            return Err(format!(
                "{scenario}: no `@@ card.end` record: the card did not finish ({} entries seen)",
                r.card.len()
            ));
        }
        if r.card.is_empty() {
            return Err(format!("{scenario}: the card has no entries"));
        }
        // The measured loops in order: the base, then every measured entry.
        let mut index = 0usize;
        let mut counter = None;
        let mut exits_of = |m: &Measure| -> Option<u64> {
            let i = index;
            index += 1;
            if let Some(e) = m.exits {
                counter = Some("microvisor".to_string());
                return Some(e);
            }
            if let Some(k) = m.hold.and_then(|k| usize::try_from(k).ok()) {
                let before = r.hold_exits.get(k).copied().flatten();
                let after = r.hold_exits.get(k + 1).copied().flatten();
                if let (Some(b), Some(a)) = (before, after) {
                    counter = Some("kvm".to_string());
                    return Some(a.saturating_sub(b));
                }
            }
            if let (Some(e), Some((name, _))) = (r.marked_exits.get(i), &r.counted_exits) {
                counter = Some(name.clone());
                return Some(*e);
            }
            None
        };
        let base_exits = exits_of(base);
        let per = |v: u64, n: u64| v as f64 / n.max(1) as f64;
        let mut rows = Vec::new();
        for c in &r.card {
            let (cycles, exits, skipped) = match &c.measure {
                Err(why) => (None, None, Some(why.clone())),
                Ok(m) => {
                    let e = exits_of(m).map(|e| {
                        // The bracket's own exits, scaled to this loop's
                        // calls (they do not depend on them).
                        let own = base_exits.unwrap_or(0);
                        per(e.saturating_sub(own), m.iterations)
                    });
                    // Net of the empty loop (the loop itself and the two
                    // TSC reads, which exit on some hosts).
                    let base_cycles = per(base.cycles, base.iterations);
                    let cycles = (per(m.cycles, m.iterations) - base_cycles).max(0.0);
                    (Some(cycles), e, None)
                }
            };
            rows.push(Row {
                entry: c.entry.clone(),
                owner: c.owner.clone(),
                mechanism: c.mechanism.clone(),
                cycles,
                exits,
                skipped,
            });
        }
        Ok(Card {
            scenario: scenario.to_string(),
            counter,
            iterations: base.iterations,
            base_cycles: per(base.cycles, base.iterations),
            rows,
        })
    }

    /// The row of `entry`.
    pub fn row(&self, entry: &str) -> Option<&Row> {
        self.rows.iter().find(|r| r.entry == entry)
    }
}

fn num(v: Option<f64>, decimals: usize) -> String {
    v.map_or_else(|| "-".to_string(), |v| format!("{v:.decimals$}"))
}

/// The card of `backend` beside its native pair's, as a markdown table.
pub fn table(backend: &Card, native: Option<&Card>) -> String {
    let counter = |c: &Card| c.counter.clone().unwrap_or_else(|| "nobody".to_string());
    let mut s = format!(
        "### {}{}\n\n{} calls per entry; exits counted by {}{}; cycles per call net of an \
         empty loop iteration ({:.0} cycles{}).\n\n",
        backend.scenario,
        native.map_or(String::new(), |n| format!(" (native pair: {})", n.scenario)),
        backend.iterations,
        counter(backend),
        native.map_or(String::new(), |n| format!(" (native run: {})", counter(n))),
        backend.base_cycles,
        native.map_or(String::new(), |n| format!(
            ", native run {:.0}",
            n.base_cycles
        )),
    );
    s.push_str("| entry | owner | mechanism | cycles/call | exits/call | native mechanism | native cycles/call | native exits/call | cycles vs native |\n");
    s.push_str("|---|---|---|---:|---:|---|---:|---:|---:|\n");
    for r in &backend.rows {
        let n = native.and_then(|n| n.row(&r.entry));
        if let Some(why) = &r.skipped {
            s.push_str(&format!(
                "| {} | {} | {} | not measured: {} | | {} | | | |\n",
                r.entry,
                r.owner,
                r.mechanism,
                why,
                n.map_or("-", |n| n.mechanism.as_str()),
            ));
            continue;
        }
        let ratio = match (r.cycles, n.and_then(|n| n.cycles)) {
            (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
            _ => "-".to_string(),
        };
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            r.entry,
            r.owner,
            r.mechanism,
            num(r.cycles, 0),
            num(r.exits, 2),
            n.map_or("-", |n| n.mechanism.as_str()),
            num(n.and_then(|n| n.cycles), 0),
            num(n.and_then(|n| n.exits), 2),
            ratio,
        ));
    }
    s.push('\n');
    s
}

fn row_json(r: &Row) -> Value {
    json!({
        "owner": r.owner,
        "mechanism": r.mechanism,
        "cycles_per_call": r.cycles,
        "exits_per_call": r.exits,
        "skipped": r.skipped,
    })
}

/// The card of `backend` beside its native pair's, as JSON.
pub fn to_json(backend: &Card, native: Option<&Card>) -> Value {
    let entries: Vec<Value> = backend
        .rows
        .iter()
        .map(|r| {
            let mut v = row_json(r);
            v["entry"] = json!(r.entry);
            v["native"] = native
                .and_then(|n| n.row(&r.entry))
                .map_or(Value::Null, row_json);
            v
        })
        .collect();
    json!({
        "scenario": backend.scenario,
        "native_scenario": native.map(|n| n.scenario.clone()),
        "exit_counter": backend.counter,
        "native_exit_counter": native.and_then(|n| n.counter.clone()),
        "iterations": backend.iterations,
        "base_cycles_per_iteration": backend.base_cycles,
        "native_base_cycles_per_iteration": native.map(|n| n.base_cycles),
        "entries": entries,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SERIAL: &str = "\
@@ card.base iterations=100 cycles=500 exits=2 hold=-
@@ card entry=cpu.cpuid owner=native mechanism=indirect iterations=100 cycles=100000 exits=102 hold=-
@@ card entry=system.shutdown owner=native mechanism=indirect skipped=ends%20the%20machine
@@ card.end entries=2
";

    #[test]
    fn microvisor_card() {
        let r = BootResult::parse(SERIAL);
        assert!(r.malformed.is_empty(), "{:?}", r.malformed);
        let c = Card::from_boot("microvisor:xen", &r).unwrap();
        assert_eq!(c.counter.as_deref(), Some("microvisor"));
        assert_eq!(c.iterations, 100);
        assert_eq!(c.base_cycles, 5.0);
        let cpuid = c.row("cpu.cpuid").unwrap();
        // 1000 cycles a call, less the empty loop's 5.
        assert_eq!(cpuid.cycles, Some(995.0));
        // 102 exits less the empty loop's 2, over 100 calls.
        assert_eq!(cpuid.exits, Some(1.0));
        let s = c.row("system.shutdown").unwrap();
        assert_eq!(s.skipped.as_deref(), Some("ends the machine"));
        assert_eq!(s.cycles, None);
        let t = table(&c, Some(&c));
        assert!(
            t.contains(
                "| cpu.cpuid | native | indirect | 995 | 1.00 | indirect | 995 | 1.00 | 1.00 |"
            ),
            "{t}"
        );
        assert!(t.contains("not measured: ends the machine"), "{t}");
        let j = to_json(&c, None);
        assert_eq!(j["entries"][0]["entry"], "cpu.cpuid");
        assert_eq!(j["entries"][0]["exits_per_call"], 1.0);
        assert_eq!(j["entries"][1]["skipped"], "ends the machine");
    }

    #[test]
    fn kvm_card_from_holds() {
        let serial = "\
@@ hold max_polls=1
@@ card.base iterations=10 cycles=50 exits=- hold=0
@@ hold max_polls=1
@@ hold max_polls=1
@@ card entry=cpu.cpuid owner=kvm mechanism=indirect iterations=10 cycles=1000 exits=- hold=2
@@ hold max_polls=1
@@ card.end entries=1
";
        let mut r = BootResult::parse(serial);
        r.hold_exits = vec![Some(100), Some(130), Some(200), Some(260)];
        let c = Card::from_boot("kvm", &r).unwrap();
        assert_eq!(c.counter.as_deref(), Some("kvm"));
        // (260 - 200) - (130 - 100) = 30 exits over 10 calls.
        assert_eq!(c.row("cpu.cpuid").unwrap().exits, Some(3.0));
        // A hold whose counters were not read: no exits, not zero.
        r.hold_exits[3] = None;
        let c = Card::from_boot("kvm", &r).unwrap();
        assert_eq!(c.row("cpu.cpuid").unwrap().exits, None);
    }

    #[test]
    fn nested_card_from_marks() {
        let serial = "\
@@ card.base iterations=10 cycles=50 exits=- hold=-
@@ card entry=mmu.read_cr3 owner=native mechanism=indirect iterations=10 cycles=100 exits=- hold=-
@@ card entry=cpu.cpuid owner=kvm mechanism=indirect iterations=10 cycles=1000 exits=- hold=-
@@ card.end entries=2
";
        let mut r = BootResult::parse(serial);
        r.marked_exits = vec![1, 1, 11];
        r.counted_exits = Some(("nested-kvm".to_string(), Default::default()));
        let c = Card::from_boot("nested:kvm", &r).unwrap();
        assert_eq!(c.counter.as_deref(), Some("nested-kvm"));
        assert_eq!(c.row("mmu.read_cr3").unwrap().exits, Some(0.0));
        assert_eq!(c.row("cpu.cpuid").unwrap().exits, Some(1.0));
    }

    #[test]
    fn incomplete_cards_are_errors() {
        let r = BootResult::parse("@@ card.base iterations=1 cycles=1 exits=- hold=-\n");
        assert!(Card::from_boot("x", &r).unwrap_err().contains("card.end"));
        let r = BootResult::parse("@@ done passed=1 total=1 verdict=pass\n");
        assert!(Card::from_boot("x", &r).unwrap_err().contains("card.base"));
        // A bad number is a malformed record, not a silent zero.
        let r = BootResult::parse(
            "@@ card entry=a owner=native mechanism=indirect iterations=x cycles=1 exits=- hold=-\n",
        );
        assert_eq!(r.malformed.len(), 1);
    }
}
