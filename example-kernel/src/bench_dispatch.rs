//! The dispatch benchmark (`bench` on the command line): for each
//! operation, cycles per call over [`ITERATIONS`] calls of the raw
//! instruction, of the patched call site (`pvops::irq::disable()`...) and
//! of the old indirect table call (`pvops::dispatch::indirect`), in one
//! run. One record per operation:
//!
//! `@@ dispatch-bench op=<entry> owner=<o> mechanism=<inline|direct|indirect>
//! iterations=N raw=<cycles, all iterations|-> patched=<..> indirect=<..>`
//!
//! Each figure is one run of the calls (under a hypervisor that traps
//! these instructions a call costs thousands of cycles, and three figures
//! of 100,000 calls per operation already take seconds). The native `cpu.io_delay` (a port write, an exit under a hypervisor)
//! runs a tenth of the calls.
//! Interrupts are off except in the `irq.enable` workload.

use bootkit::println;
use core::hint::black_box;
use pvops::dispatch::indirect;

/// Calls per measurement.
pub const ITERATIONS: u32 = 100_000;

/// The TSC, read directly (not through pvops: this is the stopwatch).
#[inline(always)]
fn tsc() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: RDTSC only reads the counter; ring 0 (CR4.TSD does not apply).
    unsafe {
        core::arch::asm!("lfence", "rdtsc", out("eax") lo, out("edx") hi, options(nomem, nostack))
    };
    (u64::from(hi) << 32) | u64::from(lo)
}

/// Chunks each figure is measured in: the three variants take turns
/// chunk by chunk, so a slow phase of the host (another guest, a busy
/// core) falls on all three alike.
const CHUNKS: u32 = 10;

/// Total cycles of `n` calls of each variant (`raw` where there is one),
/// measured in [`CHUNKS`] alternating chunks.
fn measure(
    n: u32,
    raw: Option<&dyn Fn(u32)>,
    patched: &dyn Fn(u32),
    indirect: &dyn Fn(u32),
) -> Figures {
    let time = |f: &dyn Fn(u32), k: u32| {
        let t0 = tsc();
        f(k);
        tsc().wrapping_sub(t0)
    };
    let (mut r, mut p, mut i) = (0, 0, 0);
    let chunk = n / CHUNKS;
    for _ in 0..CHUNKS {
        if let Some(f) = raw {
            r += time(f, chunk);
        }
        p += time(patched, chunk);
        i += time(indirect, chunk);
    }
    Figures {
        iterations: chunk * CHUNKS,
        raw: raw.map(|_| r),
        patched: p,
        indirect: i,
    }
}

macro_rules! looped {
    ($body:expr) => {
        &|n: u32| {
            for _ in 0..n {
                black_box($body);
            }
        }
    };
}

/// One operation with a raw instruction: raw, patched, indirect.
macro_rules! three {
    ($op:literal, $raw:expr, $patched:expr, $indirect:expr) => {
        emit(
            $op,
            measure(
                ITERATIONS,
                Some(looped!($raw)),
                looped!($patched),
                looped!($indirect),
            ),
        )
    };
}

/// One backend-ownable operation: patched, indirect.
macro_rules! two {
    ($op:literal, $patched:expr, $indirect:expr) => {
        emit(
            $op,
            measure(ITERATIONS, None, looped!($patched), looped!($indirect)),
        )
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
    /// CLI and the 5-byte NOP that pads a patched `irq.disable` site:
    /// the site's own bytes, to tell the padding's cost from the site's.
    #[inline(always)]
    pub fn disable_padded() {
        // SAFETY: as `disable`; the NOP does nothing.
        unsafe {
            core::arch::asm!(
                "cli",
                ".byte 0x0f, 0x1f, 0x44, 0x00, 0x00",
                options(nomem, nostack)
            )
        };
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
    let raw = crate::counted::Count(f.raw);
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

/// Runs every dispatch workload and prints its record.
pub fn run() {
    println!();
    println!("Dispatch benchmark ({ITERATIONS} calls each):");
    let flags = raw::save_flags();
    raw::disable();
    let off = flags & !pvops::irq::FLAGS_IF;

    three!(
        "irq.save_flags",
        raw::save_flags(),
        pvops::irq::save_flags(),
        indirect::save_flags()
    );
    three!(
        "irq.restore_flags",
        raw::restore_flags(black_box(off)),
        pvops::irq::restore_flags(black_box(off)),
        indirect::restore_flags(black_box(off))
    );
    three!(
        "irq.disable",
        raw::disable(),
        pvops::irq::disable(),
        indirect::disable()
    );
    // The padding NOP: raw CLI, CLI + NOP (a patched site's bytes), site.
    let pad = measure(
        ITERATIONS,
        Some(looped!(raw::disable())),
        looped!(raw::disable_padded()),
        looped!(pvops::irq::disable()),
    );
    let per = |c: u64| c as f64 / f64::from(pad.iterations);
    println!(
        "  (irq.disable padding: raw cli {:.1}, cli + 5-byte nop {:.1}, patched site {:.1} cycles/call)",
        per(pad.raw.unwrap_or(0)),
        per(pad.patched),
        per(pad.indirect)
    );
    // STI with interrupts then on: pending ones are taken (as in real use).
    let enable = measure(
        ITERATIONS,
        Some(looped!(raw::enable())),
        looped!(pvops::irq::enable()),
        looped!(indirect::enable()),
    );
    raw::disable();
    emit("irq.enable", enable);
    three!(
        "mmu.read_cr2",
        raw::read_cr2(),
        pvops::mmu::read_cr2(),
        indirect::read_cr2()
    );
    three!(
        "mmu.read_cr3",
        raw::read_cr3(),
        pvops::mmu::read_cr3(),
        indirect::read_cr3()
    );
    three!(
        "cpu.read_tsc",
        raw::read_tsc(),
        pvops::cpu::read_tsc(),
        indirect::read_tsc()
    );
    // Entries a backend may own: a direct call against the indirect one
    // (the raw instruction where the native function is one).
    // The native delay is a port write, an exit under any hypervisor:
    // 10,000 calls are enough there.
    let io_native = pvops::Entry::from_name("cpu.io_delay").map(pvops::owner) == Some("native");
    let n = if io_native {
        ITERATIONS / 10
    } else {
        ITERATIONS
    };
    emit(
        "cpu.io_delay",
        measure(
            n,
            io_native.then_some(looped!(raw::io_delay()) as &dyn Fn(u32)),
            looped!(pvops::cpu::io_delay()),
            looped!(indirect::io_delay()),
        ),
    );
    two!(
        "time.monotonic_ns",
        pvops::time::monotonic_ns(),
        indirect::monotonic_ns()
    );
    two!(
        "time.tsc_frequency",
        pvops::time::tsc_frequency().khz,
        indirect::tsc_frequency().khz
    );
    two!(
        "time.steal_ns",
        pvops::time::steal_ns(),
        indirect::steal_ns()
    );
    two!(
        "time.apic_timer_khz",
        pvops::time::apic_timer_khz(),
        indirect::apic_timer_khz()
    );
    raw::restore_flags(flags);
}
