//! The example kernel's `bench` switch, booted through the runner: the
//! structure of the results (never timings).

use pvops_tests::{assert_verdict_pass, boot_pair, boot_with, context};
use qemu_runner::parse::Bench;
use qemu_runner::verdict::BENCH_WORKLOADS;
use qemu_runner::{report, RunOptions, ScenarioReport};

fn bench_opts() -> RunOptions {
    RunOptions {
        extra_guest_cmdline: "bench".to_string(),
        ..RunOptions::default()
    }
}

fn workload<'a>(r: &'a ScenarioReport, name: &str) -> &'a Bench {
    r.result
        .bench(name)
        .unwrap_or_else(|| panic!("no bench {name}\n{}", context(r)))
}

/// Exits other than the microvisor's own timer interrupts.
fn guest_exits(b: &Bench) -> u64 {
    b.exits.expect("under the microvisor") - b.class("intr")
}

/// Xen vs native under the xen persona: which workloads cost exits is a
/// property of the backend, not of the machine's speed.
#[test]
fn xen_bench_pair_structure() {
    let (x, n) = boot_pair("microvisor:xen", &bench_opts());
    assert_verdict_pass(&x);
    assert_verdict_pass(&n);
    for r in [&x, &n] {
        for name in BENCH_WORKLOADS {
            let b = workload(r, name);
            assert!(b.iterations > 0 && b.cycles > 0, "{name}\n{}", context(r));
            assert!(b.exits.is_some(), "{name}: no counters\n{}", context(r));
        }
    }

    // io_delay: natively one OUT to port 0x80, one I/O exit, per call;
    // Xen makes it a no-op.
    let (xi, ni) = (workload(&x, "io-delay"), workload(&n, "io-delay"));
    assert_eq!(ni.class("io"), ni.iterations, "{}", context(&n));
    assert_eq!(guest_exits(xi), 0, "{xi:?}\n{}", context(&x));

    // The clock and the TSC frequency never exit: pvclock and the TSC are
    // read in the guest, the frequency is cached.
    for name in ["clock", "tsc-freq"] {
        assert_eq!(
            guest_exits(workload(&x, name)),
            0,
            "{name}\n{}",
            context(&x)
        );
        assert_eq!(
            guest_exits(workload(&n, name)),
            0,
            "{name}\n{}",
            context(&n)
        );
    }

    // The timer: Xen arms with a hypercall (VMMCALL) per tick, native
    // with a TSC-deadline MSR write per tick.
    let (xt, nt) = (workload(&x, "timer"), workload(&n, "timer"));
    assert!(
        xt.class("vmmcall") >= xt.iterations,
        "{xt:?}\n{}",
        context(&x)
    );
    assert_eq!(nt.class("vmmcall"), 0, "{nt:?}\n{}", context(&n));
    assert!(nt.class("msr") >= nt.iterations, "{nt:?}\n{}", context(&n));

    // Self-IPIs are native in both: an ICR write and an EOI write each.
    for r in [&x, &n] {
        let b = workload(r, "self-ipi");
        assert!(b.class("msr") >= 2 * b.iterations, "{b:?}\n{}", context(r));
    }

    let all = [x, n];
    let c = report::compare_json(&all[0], &all[1]);
    for name in BENCH_WORKLOADS {
        assert!(
            c["bench"][name]["cycles_per_iteration"]["ratio"].is_number(),
            "{name}: {c}"
        );
    }
    assert_eq!(c["bench"]["io-delay"]["exits_per_iteration"]["ratio"], 0.0);
    let table = report::bench_table(&all);
    for name in BENCH_WORKLOADS {
        assert!(table.contains(name), "{table}");
    }
}

/// Without the microvisor there are no exit counters (`exits=-`), but the
/// workloads still run and complete.
#[test]
fn tcg_bench_has_no_counters() {
    let r = boot_with("tcg", &bench_opts()).expect("tcg must run");
    assert_verdict_pass(&r);
    assert_eq!(
        r.result.bench.len(),
        BENCH_WORKLOADS.len(),
        "{}",
        context(&r)
    );
    for b in &r.result.bench {
        assert_eq!(b.exits, None, "{b:?}");
        assert!(b.classes.is_empty(), "{b:?}");
        assert!(b.cycles > 0, "{b:?}");
    }
    assert_eq!(workload(&r, "timer").completed, Some(100));
    assert_eq!(workload(&r, "self-ipi").completed, Some(100));
}
