//! The dispatch benchmark (`bench` on the command line): for each
//! operation, cycles per call over [`ITERATIONS`] calls of the raw
//! instruction, of the patched call site (`pvops::irq::disable()`...) and
//! of the old indirect table call (`pvops::dispatch::indirect`), in one
//! run. One record per operation:
//!
//! `@@ dispatch-bench op=<entry> owner=<o> mechanism=<inline|direct|indirect>
//! iterations=N raw=<cycles, all iterations|-> patched=<..> indirect=<..>`
//!
//! Each figure is the lowest of [`ROUNDS`] rounds (the least disturbed).
//! The native `cpu.io_delay` (a port write, an exit under a hypervisor)
//! runs a tenth of the calls.
//! Interrupts are off except in the `irq.enable` workload.

use bootkit::println;
use core::hint::black_box;
use pvops::dispatch::indirect;

/// Calls per measurement.
pub const ITERATIONS: u32 = 100_000;
/// Rounds per measurement; the lowest counts.
const ROUNDS: usize = 3;

/// The TSC, read directly (not through pvops: this is the stopwatch).
#[inline(always)]
fn tsc() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: RDTSC only reads the counter; ring 0 (CR4.TSD does not apply).
    unsafe { core::arch::asm!("lfence", "rdtsc", out("eax") lo, out("edx") hi, options(nomem, nostack)) };
    (u64::from(hi) << 32) | u64::from(lo)
}

/// Lowest total cycles of `ROUNDS` runs of `f` (which loops ITERATIONS times).
fn best(f: impl Fn()) -> u64 {
    let mut best = u64::MAX;
    for _ in 0..ROUNDS {
        let t0 = tsc();
        f();
        best = best.min(tsc().wrapping_sub(t0));
    }
    best
}

macro_rules! looped {
    ($body:expr) => {
        looped!(ITERATIONS; $body)
    };
    ($n:expr; $body:expr) => {
        || {
            for _ in 0..$n {
                black_box($body);
            }
        }
    };
}

/// Raw instructions, the same sequences the inline sites hold.
mod raw {
    /// PUSHFQ; POP.
    #[inline(always)]
    pub fn save_flags() -> u64 {
        let f: u64;
        // SAFETY: reads RFLAGS through the stack.
        unsafe { core::arch::asm!("pushfq", "pop {}", out(reg) f, options(nomem)) };
        f
    }
    /// BT/JNC/STI/CLI, as the native `restore_flags`.
    #[inline(always)]
    pub fn restore_flags(flags: u64) {
        // SAFETY: sets IF from bit 9 of `flags`, as the native function.
        unsafe {
            core::arch::asm!("bt {0:e}, 9", "jnc 2f", "sti", "jmp 3f", "2: cli", "3:",
                in(reg) flags, options(nomem, nostack))
        };
    }
    /// CLI.
    #[inline(always)]
    pub fn disable() {
        // SAFETY: masking interrupts is always memory safe.
        unsafe { core::arch::asm!("cli", options(nomem, nostack)) };
    }
    /// STI.
    #[inline(always)]
    pub fn enable() {
        // SAFETY: the kernel's IDT handles every interrupt it enables.
        unsafe { core::arch::asm!("sti", options(nomem, nostack)) };
    }
    /// MOV from CR2.
    #[inline(always)]
    pub fn read_cr2() -> u64 {
        let v: u64;
        // SAFETY: reading CR2 has no side effect in ring 0.
        unsafe { core::arch::asm!("mov {}, cr2", out(reg) v, options(nomem, nostack)) };
        v
    }
    /// MOV from CR3.
    #[inline(always)]
    pub fn read_cr3() -> u64 {
        let v: u64;
        // SAFETY: reading CR3 has no side effect in ring 0.
        unsafe { core::arch::asm!("mov {}, cr3", out(reg) v, options(nomem, nostack)) };
        v
    }
    /// RDTSC (no fence, as the native `read_tsc`).
    #[inline(always)]
    pub fn read_tsc() -> u64 {
        let (lo, hi): (u32, u32);
        // SAFETY: RDTSC only reads the counter.
        unsafe { core::arch::asm!("rdtsc", out("eax") lo, out("edx") hi, options(nomem, nostack)) };
        (u64::from(hi) << 32) | u64::from(lo)
    }
    /// OUT 0x80, AL.
    #[inline(always)]
    pub fn io_delay() {
        // SAFETY: port 0x80 is the POST diagnostic port, no device uses it.
        unsafe { core::arch::asm!("out 0x80, al", in("al") 0u8, options(nomem, nostack)) };
    }
}

struct Figures {
    iterations: u32,
    raw: Option<u64>,
    patched: u64,
    indirect: u64,
}

fn emit(op: &str, f: Figures) {
    let entry = pvops::Entry::from_name(op);
    let owner = entry.map_or("?", pvops::owner);
    let mechanism = entry.map_or("?", |e| pvops::dispatch::mechanism(e).name());
    let per = |c: u64| c as f64 / f64::from(f.iterations);
    let raw = Count(f.raw);
    match f.raw {
        Some(r) => println!(
            "  {op:<20} {owner:<8} {mechanism:<8} raw {:>8.1}  patched {:>8.1}  indirect {:>8.1} cycles/call",
            per(r),
            per(f.patched),
            per(f.indirect)
        ),
        None => println!(
            "  {op:<20} {owner:<8} {mechanism:<8} raw        -  patched {:>8.1}  indirect {:>8.1} cycles/call",
            per(f.patched),
            per(f.indirect)
        ),
    }
    bootkit::record!(
        "dispatch-bench",
        op = op,
        owner = owner,
        mechanism = mechanism,
        iterations = f.iterations,
        raw = raw,
        patched = f.patched,
        indirect = f.indirect
    );
}

struct Count(Option<u64>);

impl core::fmt::Display for Count {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self.0 {
            Some(v) => write!(f, "{v}"),
            None => f.write_str("-"),
        }
    }
}

/// Runs every dispatch workload and prints its record.
pub fn run() {
    println!();
    println!("Dispatch benchmark ({ITERATIONS} calls each, lowest of {ROUNDS} rounds):");
    let flags = raw::save_flags();
    raw::disable();
    let off = flags & !pvops::irq::FLAGS_IF;

    emit("irq.save_flags", Figures {
        iterations: ITERATIONS,
        raw: Some(best(looped!(raw::save_flags()))),
        patched: best(looped!(pvops::irq::save_flags())),
        indirect: best(looped!(indirect::save_flags())),
    });
    emit("irq.restore_flags", Figures {
        iterations: ITERATIONS,
        raw: Some(best(looped!(raw::restore_flags(black_box(off))))),
        patched: best(looped!(pvops::irq::restore_flags(black_box(off)))),
        indirect: best(looped!(indirect::restore_flags(black_box(off)))),
    });
    emit("irq.disable", Figures {
        iterations: ITERATIONS,
        raw: Some(best(looped!(raw::disable()))),
        patched: best(looped!(pvops::irq::disable())),
        indirect: best(looped!(indirect::disable())),
    });
    // STI with interrupts then on: pending ones are taken (as in real use).
    let enable = Figures {
        iterations: ITERATIONS,
        raw: Some(best(looped!(raw::enable()))),
        patched: best(looped!(pvops::irq::enable())),
        indirect: best(looped!(indirect::enable())),
    };
    raw::disable();
    emit("irq.enable", enable);
    emit("mmu.read_cr2", Figures {
        iterations: ITERATIONS,
        raw: Some(best(looped!(raw::read_cr2()))),
        patched: best(looped!(pvops::mmu::read_cr2())),
        indirect: best(looped!(indirect::read_cr2())),
    });
    emit("mmu.read_cr3", Figures {
        iterations: ITERATIONS,
        raw: Some(best(looped!(raw::read_cr3()))),
        patched: best(looped!(pvops::mmu::read_cr3())),
        indirect: best(looped!(indirect::read_cr3())),
    });
    emit("cpu.read_tsc", Figures {
        iterations: ITERATIONS,
        raw: Some(best(looped!(raw::read_tsc()))),
        patched: best(looped!(pvops::cpu::read_tsc())),
        indirect: best(looped!(indirect::read_tsc())),
    });
    // Entries a backend may own: a direct call against the indirect one
    // (the raw instruction where the native function is one).
    // The native delay is a port write, an exit under any hypervisor:
    // 10,000 calls are enough there.
    let io_native = pvops::Entry::from_name("cpu.io_delay").map(pvops::owner) == Some("native");
    let n = if io_native { ITERATIONS / 10 } else { ITERATIONS };
    emit("cpu.io_delay", Figures {
        iterations: n,
        raw: io_native.then(|| best(looped!(n; raw::io_delay()))),
        patched: best(looped!(n; pvops::cpu::io_delay())),
        indirect: best(looped!(n; indirect::io_delay())),
    });
    emit("time.monotonic_ns", Figures {
        iterations: ITERATIONS,
        raw: None,
        patched: best(looped!(pvops::time::monotonic_ns())),
        indirect: best(looped!(indirect::monotonic_ns())),
    });
    emit("time.tsc_frequency", Figures {
        iterations: ITERATIONS,
        raw: None,
        patched: best(looped!(pvops::time::tsc_frequency().khz)),
        indirect: best(looped!(indirect::tsc_frequency().khz)),
    });
    emit("time.steal_ns", Figures {
        iterations: ITERATIONS,
        raw: None,
        patched: best(looped!(pvops::time::steal_ns())),
        indirect: best(looped!(indirect::steal_ns())),
    });
    emit("time.apic_timer_khz", Figures {
        iterations: ITERATIONS,
        raw: None,
        patched: best(looped!(pvops::time::apic_timer_khz())),
        indirect: best(looped!(indirect::apic_timer_khz())),
    });
    raw::restore_flags(flags);
}
