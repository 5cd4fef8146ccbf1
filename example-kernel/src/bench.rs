//! Micro-benchmarks of pvops entries (`bench` on the command line), run
//! after the self-tests.
//!
//! Each workload calls one entry (or one interrupt round trip) through the
//! table a fixed number of times and prints
//! `@@ bench name=<w> iterations=N cycles=<TSC cycles, all iterations>
//! exits=<total|-> cpuid=.. msr=.. io=.. hlt=.. vmmcall=.. intr=..`
//! (plus `completed=` for workloads that wait for an interrupt). Under the
//! companion microvisor the exit counts come from its hidden interface:
//! COUNTERS_RESET just before the workload, COUNTERS_COPY just after (its
//! own VMMCALL exit is taken out). Elsewhere they are `-`.

use crate::counted::Count;
use crate::hypercall::Microvisor;
use crate::interrupts::{self, IPI_VECTOR};
use bootkit::println;
use pvops_abi::microvisor::{code, ExitSnapshot};

/// Whether the command line asks for the benchmarks (`bench` or `bench=1`).
pub fn requested(cmdline: &str) -> bool {
    cmdline
        .split_ascii_whitespace()
        .any(|w| matches!(w, "bench" | "bench=1" | "bench=on"))
}

/// A workload: name, iterations, body (returns iterations that saw their
/// event, for those that wait for one).
struct Workload {
    name: &'static str,
    iterations: u32,
    run: fn(u32, u32) -> Option<u32>,
}

const WORKLOADS: [Workload; 6] = [
    Workload {
        name: "clock",
        iterations: 10_000,
        run: clock,
    },
    Workload {
        name: "tsc-read",
        iterations: 10_000,
        run: tsc_read,
    },
    Workload {
        name: "timer",
        iterations: 100,
        run: timer,
    },
    Workload {
        name: "self-ipi",
        iterations: 100,
        run: self_ipi,
    },
    Workload {
        name: "io-delay",
        iterations: 1_000,
        run: io_delay,
    },
    Workload {
        name: "tsc-freq",
        iterations: 1_000,
        run: tsc_freq,
    },
];

/// Runs every workload and prints its record. `timer_works` (from the
/// self-tests) gates the workloads that halt until an interrupt.
pub fn run(apic_id: u32, timer_works: bool) {
    let mv = Microvisor::detect();
    println!();
    println!(
        "Benchmarks ({}):",
        if mv.is_some() {
            "exits counted by the microvisor"
        } else {
            "no exit counters"
        }
    );
    for w in &WORKLOADS {
        if w.name == "timer" && !timer_works {
            println!("  {:<10} not run: timer interrupts do not arrive", w.name);
            continue;
        }
        let (cycles, completed, snap) = measure(mv.as_ref(), || (w.run)(w.iterations, apic_id));
        print(w, cycles, completed, snap);
    }
    crate::bench_dispatch::run();
}

/// Runs `f` between a counter reset and a counter copy (when the
/// microvisor is there), timing it with the TSC.
fn measure(
    mv: Option<&Microvisor>,
    f: impl FnOnce() -> Option<u32>,
) -> (u64, Option<u32>, Option<ExitSnapshot>) {
    if let Some(mv) = mv {
        mv.call(code::COUNTERS_RESET, [0; 3]);
    }
    let t0 = pvops::cpu::read_tsc();
    let completed = f();
    let cycles = pvops::cpu::read_tsc().wrapping_sub(t0);
    let snap = mv.and_then(|mv| {
        let mut snap = ExitSnapshot::default();
        // Identity mapped: the stack variable's address is its GPA.
        let gpa = &raw mut snap as u64;
        let len = core::mem::size_of::<ExitSnapshot>() as u64;
        if mv.call(code::COUNTERS_COPY, [gpa, len, 0]) < 0 {
            return None;
        }
        // SAFETY: `snap` is a live, aligned local the microvisor just
        // filled (its address was exposed to the asm block, which may write
        // memory); read volatile so the read is not folded into the default.
        let mut s = unsafe { core::ptr::read_volatile(&raw const snap) };
        // The COUNTERS_COPY VMMCALL itself is counted before it is handled.
        s.total = s.total.saturating_sub(1);
        s.vmmcall = s.vmmcall.saturating_sub(1);
        Some(s)
    });
    (cycles, completed, snap)
}

fn print(w: &Workload, cycles: u64, completed: Option<u32>, snap: Option<ExitSnapshot>) {
    let per_it = cycles / u64::from(w.iterations.max(1));
    match snap {
        Some(s) => println!(
            "  {:<10} {:>6} x: {:>8} cycles/it, {} exits ({} cpuid, {} msr, {} io, {} hlt, {} vmmcall, {} intr)",
            w.name, w.iterations, per_it, s.total, s.cpuid, s.msr, s.io, s.hlt, s.vmmcall, s.intr
        ),
        None => println!("  {:<10} {:>6} x: {:>8} cycles/it", w.name, w.iterations, per_it),
    }
    let f = |get: fn(&ExitSnapshot) -> u64| Count(snap.as_ref().map(get));
    let done = completed.unwrap_or(0);
    let fields: [(&str, &dyn core::fmt::Display); 11] = [
        ("name", &w.name),
        ("iterations", &w.iterations),
        ("cycles", &cycles),
        ("exits", &f(|s| s.total)),
        ("cpuid", &f(|s| s.cpuid)),
        ("msr", &f(|s| s.msr)),
        ("io", &f(|s| s.io)),
        ("hlt", &f(|s| s.hlt)),
        ("vmmcall", &f(|s| s.vmmcall)),
        ("intr", &f(|s| s.intr)),
        ("completed", &done),
    ];
    // `completed=` (the last field) only for workloads that wait for an
    // event.
    let n = fields.len() - usize::from(completed.is_none());
    bootkit::record::emit("bench", &fields[..n]);
}

/// `clock`: `time.monotonic_ns`.
fn clock(n: u32, _apic_id: u32) -> Option<u32> {
    let mut last = 0;
    for _ in 0..n {
        last = core::hint::black_box(pvops::time::monotonic_ns()).max(last);
    }
    core::hint::black_box(last);
    None
}

/// `tsc-read`: `cpu.read_tsc`, the raw TSC a clock read is measured
/// against (a pvclock read is this plus the scaling and the version loop).
fn tsc_read(n: u32, _apic_id: u32) -> Option<u32> {
    let mut x = 0;
    for _ in 0..n {
        x ^= core::hint::black_box(pvops::cpu::read_tsc());
    }
    core::hint::black_box(x);
    None
}

/// `timer`: arm 50 µs, then `irq.safe_halt` until the tick (the handler
/// acks and EOIs through the table). Returns the ticks that arrived.
fn timer(n: u32, _apic_id: u32) -> Option<u32> {
    let flags = pvops::irq::save_flags();
    let mut arrived = 0;
    for _ in 0..n {
        let before = interrupts::timer_count();
        pvops::irq::disable();
        pvops::time::timer_arm(50_000);
        // Bounded: a lost tick must not hang the kernel (each halt ends at
        // some interrupt, and the microvisor's own timer keeps coming).
        let mut halts = 0;
        while interrupts::timer_count() == before && halts < 10_000 {
            pvops::irq::safe_halt();
            pvops::irq::disable();
            halts += 1;
        }
        if interrupts::timer_count() != before {
            arrived += 1;
        }
    }
    pvops::time::timer_cancel();
    pvops::irq::restore_flags(flags);
    Some(arrived)
}

/// `self-ipi`: `irq.send_ipi` to this CPU, wait for the handler (which
/// EOIs through the table). Returns the IPIs that arrived.
fn self_ipi(n: u32, apic_id: u32) -> Option<u32> {
    let flags = pvops::irq::save_flags();
    pvops::irq::enable();
    let mut arrived = 0;
    for _ in 0..n {
        let before = interrupts::ipi_count();
        pvops::irq::send_ipi(apic_id, IPI_VECTOR);
        let mut spins = 0u32;
        while interrupts::ipi_count() == before && spins < 10_000_000 {
            core::hint::spin_loop();
            spins += 1;
        }
        if interrupts::ipi_count() != before {
            arrived += 1;
        }
    }
    pvops::irq::restore_flags(flags);
    Some(arrived)
}

/// `io-delay`: `cpu.io_delay`.
fn io_delay(n: u32, _apic_id: u32) -> Option<u32> {
    for _ in 0..n {
        pvops::cpu::io_delay();
    }
    None
}

/// `tsc-freq`: `time.tsc_frequency`.
fn tsc_freq(n: u32, _apic_id: u32) -> Option<u32> {
    let mut khz = 0;
    for _ in 0..n {
        khz ^= core::hint::black_box(pvops::time::tsc_frequency()).khz;
    }
    core::hint::black_box(khz);
    None
}
