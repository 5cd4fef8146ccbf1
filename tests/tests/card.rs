//! Issue 15 items 3 and 4: the probe's CPUID cost on real boots, and the
//! report card (`card` on the example kernel's command line, `qemu-runner
//! report-card`).

use pvops_tests::{assert_verdict_pass, boot_all, boot_with, context};
use qemu_runner::card::Card;
use qemu_runner::parse::BootResult;
use qemu_runner::{RunOptions, ScenarioReport};

/// Calls per entry in the boot tests: enough for a per-call figure, few
/// enough for TCG.
const ITERATIONS: u32 = 200;

fn card_opts() -> RunOptions {
    RunOptions {
        extra_guest_cmdline: format!("card={ITERATIONS}"),
        ..RunOptions::default()
    }
}

/// The card of a boot; panics with the boot's context when incomplete.
fn card_of(r: &ScenarioReport) -> Card {
    Card::from_boot(r.scenario.name, &r.result).unwrap_or_else(|e| panic!("{e}\n{}", context(r)))
}

/// Every table entry has exactly one row, in table order, with its owner
/// as the boot's `owner` records say; measured rows have cycles, skipped
/// rows a reason.
fn assert_every_entry(r: &ScenarioReport, c: &Card) {
    let names: Vec<&str> = pvops::Entry::all().map(|e| e.name()).collect();
    let rows: Vec<&str> = c.rows.iter().map(|r| r.entry.as_str()).collect();
    assert_eq!(rows, names, "{}", context(r));
    for row in &c.rows {
        assert_eq!(
            r.result.owners.get(&row.entry),
            Some(&row.owner),
            "{}: owner\n{}",
            row.entry,
            context(r)
        );
        // The mechanism is the one the boot's dispatch record states (the
        // card's loops call entries through their patched sites).
        let boot = r
            .result
            .dispatch_entries
            .iter()
            .find(|d| d.entry == row.entry)
            .unwrap_or_else(|| panic!("{}: no dispatch.entry record\n{}", row.entry, context(r)));
        assert_eq!(row.mechanism, boot.mechanism, "{}: mechanism", row.entry);
        assert!(
            ["inline", "direct"].contains(&row.mechanism.as_str()),
            "{}: mechanism {} (every site patched)",
            row.entry,
            row.mechanism
        );
        match &row.skipped {
            Some(why) => {
                assert!(!why.is_empty());
                assert_eq!(row.cycles, None);
            }
            None => assert!(row.cycles.is_some(), "{}: no cycles", row.entry),
        }
    }
    // What cannot run in a loop says so.
    for entry in [
        "system.shutdown",
        "system.report_crash",
        "cpu.halt",
        "irq.safe_halt",
    ] {
        assert!(
            c.row(entry).and_then(|r| r.skipped.as_ref()).is_some(),
            "{entry} must be skipped"
        );
    }
    assert_eq!(c.iterations, u64::from(ITERATIONS));
}

/// The probe's record is there and within its budget under a hypervisor.
fn assert_probe_cost(r: &ScenarioReport) -> u64 {
    let n = r
        .result
        .probe_cpuids
        .unwrap_or_else(|| panic!("no `@@ probe` record\n{}", context(r)));
    assert!(
        n <= u64::from(pvops_probe::HYPERVISOR_CPUID_BUDGET),
        "{n} CPUIDs\n{}",
        context(r)
    );
    n
}

#[test]
fn card_records_parse_into_a_card() {
    let serial = "\
@@ probe cpuids=12 hypervisor_bit=true
@@ owner entry=cpu.cpuid backend=native
@@ card.base iterations=10 cycles=40 exits=0 hold=-
@@ card entry=cpu.cpuid owner=native mechanism=indirect iterations=10 cycles=20000 exits=10 hold=-
@@ card entry=system.shutdown owner=native mechanism=indirect skipped=ends%20the%20machine
@@ card.end entries=2
";
    let r = BootResult::parse(serial);
    assert!(r.malformed.is_empty(), "{:?}", r.malformed);
    assert_eq!(r.probe_cpuids, Some(12));
    let c = Card::from_boot("t", &r).unwrap();
    // 2000 cycles a call, less the empty loop's 4.
    assert_eq!(c.row("cpu.cpuid").unwrap().cycles, Some(1996.0));
    assert_eq!(c.row("cpu.cpuid").unwrap().exits, Some(1.0));
    assert!(c.row("system.shutdown").unwrap().skipped.is_some());
    let md = qemu_runner::card::table(&c, None);
    assert!(md.starts_with("### t\n"), "{md}");
    let j = qemu_runner::card::to_json(&c, None);
    assert_eq!(j["entries"][0]["cycles_per_call"], 1996.0);
    // A missing field is malformed, never a card with a hole.
    let r = BootResult::parse("@@ card entry=cpu.cpuid owner=native iterations=1\n");
    assert_eq!(r.malformed.len(), 1);
    assert!(r.card.is_empty());
}

/// The microvisor's xen persona: a card with every entry, exits from the
/// microvisor's counters, and the probe's CPUIDs within the budget and
/// among the CPUID exits the microvisor counted.
#[test]
fn microvisor_card_covers_every_entry() {
    let r = boot_with("microvisor:xen", &card_opts()).expect("TCG-only scenario must run");
    assert_verdict_pass(&r);
    let c = card_of(&r);
    assert_every_entry(&r, &c);
    assert_eq!(c.counter.as_deref(), Some("microvisor"));
    for row in c.rows.iter().filter(|r| r.skipped.is_none()) {
        assert!(
            row.exits.is_some(),
            "{}: no exits\n{}",
            row.entry,
            context(&r)
        );
    }
    // CPUID always exits under SVM (the microvisor intercepts it); the
    // TSC read does not.
    let exits = |e: &str| c.row(e).and_then(|r| r.exits).unwrap();
    assert!(exits("cpu.cpuid") >= 0.99, "{}", exits("cpu.cpuid"));
    assert!(exits("cpu.read_tsc") < 0.5, "{}", exits("cpu.read_tsc"));
    let n = assert_probe_cost(&r);
    let mv = r.result.microvisor.as_ref().unwrap();
    assert!(mv.exits.reason("cpuid") >= n, "{}", context(&r));
}

/// Real KVM and its native pair: the same card, exits from KVM's own
/// counters read at the holds around each entry (when the host's KVM
/// exposes them). Natively `cpu.io_delay` is an OUT to port 0x80, an I/O
/// exit to QEMU on any KVM; the kvm backend makes it a no-op.
#[test]
fn kvm_card_covers_every_entry() {
    // One after the other: a card's loops beside the other boot's PIT
    // calibration disturb it on a loaded host.
    let Some(r) = boot_with("kvm", &card_opts()) else {
        return;
    };
    let Some(n) = boot_with("kvm/native", &card_opts()) else {
        return;
    };
    for r in [&r, &n] {
        assert_verdict_pass(r);
        assert_every_entry(r, &card_of(r));
        assert_probe_cost(r);
    }
    let (c, nc) = (card_of(&r), card_of(&n));
    match (c.counter.as_deref(), nc.counter.as_deref()) {
        (Some("kvm"), Some("kvm")) => {
            let exits = |c: &Card, e: &str| c.row(e).and_then(|r| r.exits).unwrap();
            let native = exits(&nc, "cpu.io_delay");
            assert!(
                native >= 0.9,
                "native io_delay exits/call {native}\n{}",
                context(&n)
            );
            if c.row("cpu.io_delay").unwrap().owner == "kvm" {
                // The no-op saves the port exit of every call; what is left
                // is the background of the window (host interrupts, more of
                // them on a loaded host: 0.15 per call was seen in a
                // clean-clone cargo test, 0.455 in another).
                // That background is measured by a row of the same card that
                // never exits (`time.tsc_frequency`, a cached value): what
                // io_delay costs beyond it must be far below one exit.
                let kvm = exits(&c, "cpu.io_delay");
                let background = exits(&c, "time.tsc_frequency");
                assert!(
                    kvm - background < 0.5 && kvm < native,
                    "kvm io_delay exits/call {kvm} (background {background}), native {native}\n{}",
                    context(&r)
                );
            }
            // Host-dependent (a software KVM may not count CPUID as an
            // exit): shown, not asserted.
            eprintln!(
                "kvm: cpuid {:?} exits/call, native {:?}",
                c.row("cpu.cpuid").and_then(|r| r.exits),
                nc.row("cpu.cpuid").and_then(|r| r.exits)
            );
        }
        other => eprintln!(
            "SKIP kvm exit counts: KVM's counters were not read ({other:?}): {:?}",
            r.result.kvm
        ),
    }
}

/// Every persona, stacked ones included: the probe stays within the budget
/// and its CPUIDs are among those the microvisor counted; the whole boot,
/// less the clock self-test's deliberate exits, now executes fewer CPUIDs
/// than the old scan alone did (256).
#[test]
fn probe_cost_on_every_persona() {
    let names = [
        "microvisor:vmware",
        "microvisor:hyperv",
        "microvisor:kvm",
        "microvisor:xen+viridian",
        "microvisor:kvm+hyperv",
    ];
    for (name, r) in names.iter().zip(boot_all(&names, &RunOptions::default())) {
        let r = r.unwrap_or_else(|| panic!("{name}: TCG-only scenario must run"));
        assert_verdict_pass(&r);
        let n = assert_probe_cost(&r);
        let cpuid = r.result.microvisor.as_ref().unwrap().exits.reason("cpuid");
        assert!(
            cpuid >= n,
            "{name}: {cpuid} CPUID exits < {n}\n{}",
            context(&r)
        );
        // `time.clock-monotonic` makes a CPUID exit between its reads on
        // purpose ("N reads across exits"); the rest of the boot stays
        // below what the old scan alone cost.
        let deliberate: u64 = r
            .result
            .selftests
            .get("time.clock-monotonic")
            .and_then(|t| t.detail.split_whitespace().next()?.parse().ok())
            .unwrap_or_else(|| panic!("{name}: no time.clock-monotonic count\n{}", context(&r)));
        let rest = cpuid.saturating_sub(deliberate);
        assert!(
            rest < 256,
            "{name}: {cpuid} CPUID exits, {deliberate} of them the clock test's\n{}",
            context(&r)
        );
        eprintln!(
            "{name}: probe {n} CPUIDs, {rest} CPUID exits in the rest of the boot (+{deliberate} of the clock test)"
        );
    }
}
