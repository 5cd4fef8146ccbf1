//! Self-tests: every pvops group driven through the table, with the effect
//! checked. Each prints `@@ selftest name=<group.test>
//! result=pass|fail|unsupported detail=...`: `unsupported` when the machine
//! lacks what the test needs (the time tests without any TSC frequency
//! source), which is neither a pass nor a failure.

use crate::interrupts::{self, IPI_VECTOR, TIMER_VECTOR};
use crate::paging::{self, AddressSpace, FrameAllocator};
use crate::text::Text;
use crate::{arch, text};
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use pvops::irq::FLAGS_IF;

/// Detail text of one result.
pub type Detail = Text<256>;
/// A test's verdict with its detail.
pub struct Outcome {
    /// Whether the test passed.
    pub pass: bool,
    /// The machine lacks what the test needs: not run (`pass` is false).
    pub unsupported: bool,
    /// What was seen.
    pub detail: Detail,
}

/// A self-test.
type Test = fn(&mut Context<'_>) -> Outcome;

/// What the tests need from the kernel.
pub struct Context<'a> {
    /// The kernel's page tables (test window).
    pub aspace: &'a AddressSpace,
    /// Frames for the tests.
    pub frames: &'a mut FrameAllocator,
    /// The CPUID vendor string the probe saw.
    pub vendor: [u8; 12],
    /// This CPU's APIC ID.
    pub apic_id: u32,
    /// Whether timer interrupts were seen to arrive (gates halting tests).
    pub timer_works: bool,
}

/// Pass/fail tally.
#[derive(Default)]
pub struct Tally {
    /// Tests that passed.
    pub passed: u32,
    /// Tests reported unsupported (neither passed nor failed).
    pub unsupported: u32,
    /// Tests reported.
    pub total: u32,
}

impl Tally {
    /// Prints one result and counts it; returns whether it passed.
    pub fn report(&mut self, name: &str, outcome: &Outcome) -> bool {
        self.total += 1;
        let (pass, detail) = (outcome.pass, &outcome.detail);
        let (result, tag) = if pass {
            self.passed += 1;
            ("pass", " ok ")
        } else if outcome.unsupported {
            self.unsupported += 1;
            ("unsupported", "n/a ")
        } else {
            ("fail", "FAIL")
        };
        bootkit::println!("  [{}] {:<28} {}", tag, name, detail);
        bootkit::record!("selftest", name = name, result = result, detail = detail);
        pass
    }
}

fn ok(detail: Detail) -> Outcome {
    Outcome {
        pass: true,
        unsupported: false,
        detail,
    }
}

/// A failure with `detail`.
pub fn fail(detail: Detail) -> Outcome {
    Outcome {
        pass: false,
        unsupported: false,
        detail,
    }
}

/// The machine lacks what the test needs: not run, with `detail` saying why.
pub fn unsupported(detail: Detail) -> Outcome {
    Outcome {
        pass: false,
        unsupported: true,
        detail,
    }
}

/// `Some(unsupported)` when no TSC frequency source exists
/// ([`pvops::time::TscSource::NoSource`]): the clock stays at 0 and timers
/// cannot be armed for a duration, so the time tests cannot run.
pub fn needs_tsc_frequency() -> Option<Outcome> {
    let f = pvops::time::tsc_frequency();
    (f.khz == 0 && f.source == pvops::time::TscSource::NoSource).then(|| {
        unsupported(text!(
            "no TSC frequency source (no backend, CPUID leaf or PIT gives one)"
        ))
    })
}

/// Pass when `cond` holds, with `d` either way.
pub fn check(cond: bool, detail: Detail) -> Outcome {
    Outcome {
        pass: cond,
        unsupported: false,
        detail,
    }
}

/// Waits with interrupts enabled until `cond` holds or `timeout_ms` passed
/// on the clock; a spin bound ends the wait even if the clock is broken.
/// Restores the interrupt flag afterwards.
pub fn wait_until(timeout_ms: u64, mut cond: impl FnMut() -> bool) -> bool {
    let flags = pvops::irq::save_flags();
    pvops::irq::enable();
    let start = pvops::time::monotonic_ns();
    let limit_ns = timeout_ms * 1_000_000;
    let max_spins = timeout_ms.saturating_mul(200_000);
    let mut spins = 0u64;
    let result = loop {
        if cond() {
            break true;
        }
        if pvops::time::monotonic_ns().saturating_sub(start) > limit_ns || spins > max_spins {
            break cond();
        }
        spins += 1;
        core::hint::spin_loop();
    };
    pvops::irq::restore_flags(flags);
    result
}

/// Runs every test, in group order.
pub fn run_all(ctx: &mut Context<'_>, tally: &mut Tally) {
    bootkit::println!("Self-tests:");
    let tests: &[(&str, Test)] = &[
        ("cpu.cpuid", cpu_cpuid),
        ("cpu.msr-roundtrip", cpu_msr_roundtrip),
        ("cpu.cr-roundtrip", cpu_cr_roundtrip),
        ("cpu.descriptor-tables", cpu_descriptor_tables),
        ("cpu.tsc-monotonic", cpu_tsc_monotonic),
        ("cpu.io-delay", cpu_io_delay),
        ("cpu.wbinvd", cpu_wbinvd),
        ("mmu.remap", mmu_remap),
        ("mmu.flush-all", mmu_flush_all),
        ("mmu.flush-all-global", mmu_flush_all_global),
        ("mmu.flush-remote-self", mmu_flush_remote_self),
        ("mmu.lazy", mmu_lazy),
        ("mmu.cr3-roundtrip", mmu_cr3_roundtrip),
        ("irq.flags", irq_flags),
        ("time.tsc-frequency", time_tsc_frequency),
        ("irq.timer-eoi", irq_timer_eoi),
        ("irq.self-ipi", irq_self_ipi),
        ("irq.ipi-mask-self", irq_ipi_mask_self),
        ("irq.safe-halt", irq_safe_halt),
        ("time.clock-monotonic", time_clock_monotonic),
        ("time.clock-vs-tsc", time_clock_vs_tsc),
        ("time.clock-vs-timer", time_clock_vs_timer),
        ("time.timer-cancel", time_timer_cancel),
        ("time.steal", time_steal),
    ];
    for (name, test) in tests {
        let outcome = test(ctx);
        let pass = tally.report(name, &outcome);
        if *name == "irq.timer-eoi" {
            ctx.timer_works = pass;
        }
    }
}

// ---- cpu ------------------------------------------------------------------

fn cpu_cpuid(ctx: &mut Context<'_>) -> Outcome {
    let r = pvops::cpu::cpuid(0, 0);
    let mut v = [0u8; 12];
    v[0..4].copy_from_slice(&r.ebx.to_le_bytes());
    v[4..8].copy_from_slice(&r.edx.to_le_bytes());
    v[8..12].copy_from_slice(&r.ecx.to_le_bytes());
    let s = core::str::from_utf8(&v).unwrap_or("?");
    check(
        v == ctx.vendor,
        text!(
            "vendor {s} max_leaf={:#x} (probe agrees: {})",
            r.eax,
            v == ctx.vendor
        ),
    )
}

/// IA32_SYSENTER_ESP (Intel SDM Vol. 4, table 2-2): present on every
/// x86-64 CPU, unused by this kernel.
const MSR_SYSENTER_ESP: u32 = 0x175;

fn cpu_msr_roundtrip(_ctx: &mut Context<'_>) -> Outcome {
    // A 32-bit value: AMD keeps only the low half of SYSENTER_ESP.
    const PATTERN: u64 = 0x5eed_b000;
    // SAFETY: SYSENTER_ESP exists on every x86-64 CPU and only matters to
    // SYSENTER, which this kernel never executes; it is restored below.
    let (old, got, restored) = unsafe {
        let old = pvops::cpu::read_msr(MSR_SYSENTER_ESP);
        pvops::cpu::write_msr(MSR_SYSENTER_ESP, PATTERN);
        let got = pvops::cpu::read_msr(MSR_SYSENTER_ESP);
        pvops::cpu::write_msr(MSR_SYSENTER_ESP, old);
        (old, got, pvops::cpu::read_msr(MSR_SYSENTER_ESP))
    };
    check(
        got == PATTERN && restored == old,
        text!("msr 0x175 wrote {PATTERN:#x} read {got:#x}, restored {old:#x} read {restored:#x}"),
    )
}

const CR4_TSD: u64 = 1 << 2;

fn cpu_cr_roundtrip(_ctx: &mut Context<'_>) -> Outcome {
    let cr4 = pvops::cpu::read_cr4();
    // SAFETY: CR4.TSD only restricts RDTSC outside ring 0 (this kernel runs
    // only in ring 0); it is put back at once.
    let (set, cleared) = unsafe {
        pvops::cpu::write_cr4(cr4 | CR4_TSD);
        let set = pvops::cpu::read_cr4();
        pvops::cpu::write_cr4(cr4 & !CR4_TSD);
        let cleared = pvops::cpu::read_cr4();
        pvops::cpu::write_cr4(cr4);
        (set, cleared)
    };
    let cr4_back = pvops::cpu::read_cr4();
    let cr0 = pvops::cpu::read_cr0();
    // SAFETY: writing CR0 back unchanged keeps paging and caching as they are.
    unsafe { pvops::cpu::write_cr0(cr0) };
    let cr0_back = pvops::cpu::read_cr0();
    check(
        set & CR4_TSD != 0 && cleared & CR4_TSD == 0 && cr4_back == cr4 && cr0_back == cr0,
        text!("cr4 {cr4:#x} +tsd {set:#x} -tsd {cleared:#x} back {cr4_back:#x}; cr0 {cr0:#x} back {cr0_back:#x}"),
    )
}

fn cpu_descriptor_tables(_ctx: &mut Context<'_>) -> Outcome {
    let (g, i) = (arch::sgdt(), arch::sidt());
    let (eg, ei) = (bootkit::gdt::pointer(), bootkit::idt::pointer());
    // Copies: the pointer structs are packed.
    let (gb, gl, ib, il) = (g.base as u64, g.limit, i.base as u64, i.limit);
    let (egb, egl, eib, eil) = (eg.base as u64, eg.limit, ei.base as u64, ei.limit);
    check(
        gb == egb && gl == egl && ib == eib && il == eil,
        text!("sgdt {gb:#x}/{gl:#x} (loaded {egb:#x}/{egl:#x}), sidt {ib:#x}/{il:#x} (loaded {eib:#x}/{eil:#x})"),
    )
}

fn cpu_tsc_monotonic(_ctx: &mut Context<'_>) -> Outcome {
    let first = pvops::cpu::read_tsc();
    let mut prev = first;
    for _ in 0..10_000 {
        let t = pvops::cpu::read_tsc();
        if t < prev {
            return fail(text!("went backwards: {prev} -> {t}"));
        }
        prev = t;
    }
    check(
        prev > first,
        text!("10000 reads, advanced {} ticks", prev - first),
    )
}

fn cpu_io_delay(_ctx: &mut Context<'_>) -> Outcome {
    let t0 = pvops::cpu::read_tsc();
    for _ in 0..100 {
        pvops::cpu::io_delay();
    }
    let per = (pvops::cpu::read_tsc() - t0) / 100;
    ok(text!("100 delays, {per} TSC ticks each"))
}

fn cpu_wbinvd(_ctx: &mut Context<'_>) -> Outcome {
    // A write before WBINVD must still be there after it (written back,
    // not discarded).
    static CELL: AtomicU64 = AtomicU64::new(0);
    CELL.store(0x0bad_cafe, Ordering::SeqCst);
    let t0 = pvops::cpu::read_tsc();
    pvops::cpu::wbinvd();
    let dt = pvops::cpu::read_tsc() - t0;
    let v = CELL.load(Ordering::SeqCst);
    check(
        v == 0x0bad_cafe,
        text!("returned after {dt} ticks, data kept: {}", v == 0x0bad_cafe),
    )
}

// ---- mmu ------------------------------------------------------------------

const PATTERN_A: u64 = 0xaaaa_0000_0000_0001;
const PATTERN_B: u64 = 0xbbbb_0000_0000_0002;

/// Two frames filled with A and B patterns.
fn two_frames(ctx: &mut Context<'_>) -> Option<(u64, u64)> {
    let a = ctx.frames.alloc()?;
    let b = ctx.frames.alloc()?;
    paging::fill_frame(a, PATTERN_A);
    paging::fill_frame(b, PATTERN_B);
    Some((a, b))
}

/// Map slot→A, write through it, read it (filling the TLB), repoint the PTE
/// to B, then `flush`, then read again: must see B. Reports whether the
/// stale A translation was still visible before the flush (informational:
/// whether a TLB keeps it is up to the CPU or emulator).
fn remap_with(
    ctx: &mut Context<'_>,
    slot: usize,
    global: bool,
    flush: impl FnOnce(u64),
) -> Outcome {
    let Some((a, b)) = two_frames(ctx) else {
        return fail(text!("out of frames"));
    };
    let va = AddressSpace::test_va(slot);
    ctx.aspace.map_test(slot, a, global);
    pvops::mmu::flush_page(va);
    ctx.aspace.write_test(slot, 1, 0x1234_5678);
    let through_a = ctx.aspace.read_test(slot, 0);
    let wrote_a = paging::read_frame(a, 1);
    ctx.aspace.map_test(slot, b, global);
    let before = ctx.aspace.read_test(slot, 0);
    flush(va);
    let after = ctx.aspace.read_test(slot, 0);
    let after1 = ctx.aspace.read_test(slot, 1);
    ctx.aspace.unmap_test(slot);
    pvops::mmu::flush_all_global();
    let stale = if before == PATTERN_A {
        "stale A seen before flush"
    } else {
        "no stale entry seen"
    };
    check(
        through_a == PATTERN_A && wrote_a == 0x1234_5678 && after == PATTERN_B && after1 == PATTERN_B,
        text!(
            "va {va:#x}: A={a:#x} read {through_a:#x}, write landed in A: {}; remapped to B={b:#x}: {stale}; after flush read {after:#x}",
            wrote_a == 0x1234_5678
        ),
    )
}

fn mmu_remap(ctx: &mut Context<'_>) -> Outcome {
    remap_with(ctx, 0, false, pvops::mmu::flush_page)
}

fn mmu_flush_all(ctx: &mut Context<'_>) -> Outcome {
    remap_with(ctx, 1, false, |_| pvops::mmu::flush_all())
}

const CR4_PGE: u64 = 1 << 7;

fn mmu_flush_all_global(ctx: &mut Context<'_>) -> Outcome {
    // Global pages need CR4.PGE; turn it on for this test (through the
    // table) so the flush really has global entries to drop.
    let cr4 = pvops::cpu::read_cr4();
    // SAFETY: enabling global pages changes only TLB retention; every
    // mapping stays the same.
    unsafe { pvops::cpu::write_cr4(cr4 | CR4_PGE) };
    let r = remap_with(ctx, 2, true, |_| pvops::mmu::flush_all_global());
    let pge = pvops::cpu::read_cr4() & CR4_PGE != 0;
    if !r.pass {
        return r;
    }
    check(pge, text!("{} (CR4.PGE on: {pge})", r.detail))
}

fn mmu_flush_remote_self(ctx: &mut Context<'_>) -> Outcome {
    let me = ctx.apic_id;
    if me >= 64 {
        return ok(text!("apic id {me} outside the 64-bit mask; skipped"));
    }
    remap_with(ctx, 3, false, |va| {
        pvops::mmu::flush_remote(1 << me, pvops::mmu::FlushTarget::Page(va))
    })
}

fn mmu_lazy(ctx: &mut Context<'_>) -> Outcome {
    let Some((a, b)) = two_frames(ctx) else {
        return fail(text!("out of frames"));
    };
    let va = AddressSpace::test_va(4);
    let seen = pvops::mmu::lazy(|| {
        ctx.aspace.map_test(4, a, false);
        pvops::mmu::flush_page(va);
        pvops::mmu::lazy_flush();
        let first = ctx.aspace.read_test(4, 0);
        ctx.aspace.map_test(4, b, false);
        pvops::mmu::flush_page(va);
        first
    });
    let after = ctx.aspace.read_test(4, 0);
    ctx.aspace.unmap_test(4);
    pvops::mmu::flush_page(va);
    check(
        seen == PATTERN_A && after == PATTERN_B,
        text!("in lazy mode read {seen:#x} via A, after leave read {after:#x} via B"),
    )
}

fn mmu_cr3_roundtrip(ctx: &mut Context<'_>) -> Outcome {
    let ours = pvops::mmu::read_cr3();
    let boot = bootkit::image::boot_pml4();
    // SAFETY: bootkit's boot tables identity-map 0..4 GiB like ours, so the
    // code, stack and data stay mapped while they are active; nothing
    // touches the test window or the bad-memory page meanwhile.
    unsafe { pvops::mmu::write_cr3(boot) };
    let seen_boot = pvops::mmu::read_cr3();
    // SAFETY: back to the kernel's own complete tables.
    unsafe { pvops::mmu::write_cr3(ours) };
    let back = pvops::mmu::read_cr3();
    check(
        seen_boot & !0xfff == boot && back == ours && ours & !0xfff == ctx.aspace.cr3(),
        text!("cr3 {ours:#x} -> boot {seen_boot:#x} -> {back:#x}"),
    )
}

// ---- irq ------------------------------------------------------------------

fn irq_flags(_ctx: &mut Context<'_>) -> Outcome {
    let initial = pvops::irq::save_flags();
    pvops::irq::disable();
    let off = pvops::irq::save_flags() & FLAGS_IF == 0 && !pvops::irq::enabled();
    pvops::irq::enable();
    let on = pvops::irq::enabled();
    let saved_on = pvops::irq::save_flags();
    pvops::irq::disable();
    pvops::irq::restore_flags(saved_on);
    let restored_on = pvops::irq::enabled();
    pvops::irq::disable();
    let saved_off = pvops::irq::save_flags();
    pvops::irq::enable();
    pvops::irq::restore_flags(saved_off);
    let restored_off = !pvops::irq::enabled();
    let nested = pvops::irq::without_interrupts(|| !pvops::irq::enabled());
    pvops::irq::restore_flags(initial);
    check(
        off && on && restored_on && restored_off && nested,
        text!("disable {off}, enable {on}, restore(on) {restored_on}, restore(off) {restored_off}, without_interrupts {nested}"),
    )
}

const TIMER_ROUNDS: u64 = 5;

fn irq_timer_eoi(_ctx: &mut Context<'_>) -> Outcome {
    // Each round needs the previous EOI: without it the in-service bit of
    // the vector would block the next timer interrupt. Each round's
    // interrupts and the microseconds from arming to the first say where
    // an extra one came from (a stale event arrives at once).
    let start = interrupts::timer_count();
    let mut arrived = 0;
    let mut rounds = [(0u64, 0u64); TIMER_ROUNDS as usize];
    for round in rounds.iter_mut() {
        let before = interrupts::timer_count();
        pvops::irq::disable();
        let armed = pvops::time::monotonic_ns();
        pvops::time::timer_arm(1_000_000);
        if !wait_until(5_000, || interrupts::timer_count() > before) {
            break;
        }
        let took_us = pvops::time::monotonic_ns().saturating_sub(armed) / 1_000;
        *round = (interrupts::timer_count() - before, took_us);
        arrived += 1;
    }
    pvops::time::timer_cancel();
    let taken = interrupts::timer_count() - start;
    let mut per_round = Text::<96>::new();
    for (i, (n, us)) in rounds.iter().enumerate() {
        let sep = if i == 0 { "" } else { "," };
        let _ = core::fmt::Write::write_fmt(&mut per_round, format_args!("{sep}{n}@{us}us"));
    }
    check(
        arrived == TIMER_ROUNDS && taken == TIMER_ROUNDS,
        text!(
            "{arrived}/{TIMER_ROUNDS} one-shot 1 ms timers arrived (vector {TIMER_VECTOR:#x}, {taken} interrupts, handler EOIs through the table; per round {})",
            per_round.as_str()
        ),
    )
}

fn irq_self_ipi(ctx: &mut Context<'_>) -> Outcome {
    let before = interrupts::ipi_count();
    pvops::irq::disable();
    pvops::irq::send_ipi(ctx.apic_id, IPI_VECTOR);
    let got = wait_until(5_000, || interrupts::ipi_count() > before);
    check(
        got,
        text!(
            "IPI vector {IPI_VECTOR:#x} to own APIC ID {} delivered: {got}",
            ctx.apic_id
        ),
    )
}

fn irq_ipi_mask_self(ctx: &mut Context<'_>) -> Outcome {
    if ctx.apic_id >= 64 {
        return ok(text!(
            "apic id {} outside the 64-bit mask; skipped",
            ctx.apic_id
        ));
    }
    let before = interrupts::ipi_count();
    pvops::irq::disable();
    pvops::irq::send_ipi_mask(1 << ctx.apic_id, IPI_VECTOR);
    let got = wait_until(5_000, || interrupts::ipi_count() > before);
    check(
        got,
        text!("IPI to mask {:#x} delivered: {got}", 1u64 << ctx.apic_id),
    )
}

fn irq_safe_halt(ctx: &mut Context<'_>) -> Outcome {
    if !ctx.timer_works {
        // Halting with no working wake-up source would hang the kernel.
        return fail(text!("not run: timer interrupts do not arrive"));
    }
    let before = interrupts::timer_count();
    pvops::irq::disable();
    pvops::time::timer_arm(2_000_000);
    let t0 = pvops::time::monotonic_ns();
    // Interrupts are off here; safe_halt enables them and halts atomically,
    // so even a timer that already fired wakes it.
    let mut halts = 0;
    while interrupts::timer_count() == before && halts < 10 {
        pvops::irq::safe_halt();
        pvops::irq::disable();
        halts += 1;
    }
    let dt = pvops::time::monotonic_ns().saturating_sub(t0);
    let woke = interrupts::timer_count() > before;
    check(
        woke,
        text!("woken by the timer after {halts} halt(s), {} us", dt / 1000),
    )
}

// ---- time -----------------------------------------------------------------

fn time_tsc_frequency(_ctx: &mut Context<'_>) -> Outcome {
    if let Some(o) = needs_tsc_frequency() {
        return o;
    }
    let f = pvops::time::tsc_frequency();
    let apic = pvops::time::apic_timer_khz();
    check(
        f.khz != 0,
        text!(
            "{} kHz from {}; apic timer {} kHz; tsc-deadline {}",
            f.khz,
            f.source.name(),
            apic,
            pvops::native::time::uses_tsc_deadline()
        ),
    )
}

/// The clock must agree with the TSC at the frequency the table reports: a
/// paravirtual clock (pvclock, the Hyper-V TSC page or reference counter)
/// is computed from the hypervisor's own scale factors, so this checks that
/// they and the published frequency describe the same TSC.
fn time_clock_vs_tsc(_ctx: &mut Context<'_>) -> Outcome {
    if let Some(o) = needs_tsc_frequency() {
        return o;
    }
    let khz = pvops::time::tsc_khz();
    if khz == 0 {
        return fail(text!("no TSC frequency"));
    }
    // Each end is bracketed by two TSC reads; the attempt with the tightest
    // brackets wins, so a vCPU descheduled mid-read does not count.
    let sample = || {
        let a = pvops::cpu::read_tsc();
        let ns = pvops::time::monotonic_ns();
        let b = pvops::cpu::read_tsc();
        (a / 2 + b / 2, ns, b - a)
    };
    let window = khz * 10; // 10 ms of TSC ticks
    let mut best: Option<(u64, u64, u64)> = None; // (tsc delta, ns delta, slack)
    for _ in 0..3 {
        let (t0, c0, s0) = sample();
        while pvops::cpu::read_tsc().wrapping_sub(t0) < window {
            core::hint::spin_loop();
        }
        let (t1, c1, s1) = sample();
        let slack = s0 + s1;
        if best.is_none_or(|b| slack < b.2) {
            best = Some((t1 - t0, c1.saturating_sub(c0), slack));
        }
    }
    let Some((ticks, clock_ns, slack)) = best else {
        return fail(text!("no sample"));
    };
    let tsc_ns = (u128::from(ticks) * 1_000_000 / u128::from(khz)) as u64;
    let slack_ns = (u128::from(slack) * 1_000_000 / u128::from(khz)) as u64;
    // 0.5% plus the read brackets and one 100 ns reference-time unit.
    let allowed = tsc_ns / 200 + slack_ns + 100;
    let diff = clock_ns.abs_diff(tsc_ns);
    check(
        diff <= allowed,
        text!(
            "over {ticks} TSC ticks ({tsc_ns} ns at {khz} kHz) the clock advanced {clock_ns} ns: off by {diff} ns (allowed {allowed})"
        ),
    )
}

/// Reads of `time.clock-monotonic`.
const MONOTONIC_READS: u32 = 2_000;

/// The clock never goes backwards, also across exits to the hypervisor
/// (a CPUID between the reads), where a hypervisor may rewrite its clock
/// page.
fn time_clock_monotonic(_ctx: &mut Context<'_>) -> Outcome {
    let first = pvops::time::monotonic_ns();
    let mut prev = first;
    for i in 0..MONOTONIC_READS {
        let _ = pvops::cpu::cpuid(0, 0);
        let now = pvops::time::monotonic_ns();
        if now < prev {
            return fail(text!("went backwards at read {i}: {prev} ns -> {now} ns"));
        }
        prev = now;
    }
    check(
        true,
        text!(
            "{MONOTONIC_READS} reads across exits, advanced {} ns",
            prev - first
        ),
    )
}

const CLOCK_DELAY_NS: u64 = 20_000_000;
const CLOCK_EARLY_NS: u64 = 2_000_000;
const CLOCK_LATE_NS: u64 = 2_000_000_000;

fn time_clock_vs_timer(ctx: &mut Context<'_>) -> Outcome {
    if let Some(o) = needs_tsc_frequency() {
        return o;
    }
    if !ctx.timer_works {
        return fail(text!("not run: timer interrupts do not arrive"));
    }
    let before = interrupts::timer_count();
    pvops::irq::disable();
    let start = pvops::time::monotonic_ns();
    pvops::time::timer_arm(CLOCK_DELAY_NS);
    let fired = wait_until(5_000, || interrupts::timer_count() > before);
    if !fired {
        return fail(text!("20 ms timer did not fire within 5 s"));
    }
    let elapsed = interrupts::timer_last_ns().saturating_sub(start);
    check(
        elapsed + CLOCK_EARLY_NS >= CLOCK_DELAY_NS && elapsed < CLOCK_LATE_NS,
        text!(
            "armed 20 ms, clock advanced {}.{:03} ms at the interrupt (allowed {} ms .. {} ms)",
            elapsed / 1_000_000,
            (elapsed / 1000) % 1000,
            (CLOCK_DELAY_NS - CLOCK_EARLY_NS) / 1_000_000,
            CLOCK_LATE_NS / 1_000_000
        ),
    )
}

const CANCEL_DELAY_NS: u64 = 30_000_000;

fn time_timer_cancel(ctx: &mut Context<'_>) -> Outcome {
    if let Some(o) = needs_tsc_frequency() {
        return o;
    }
    if !ctx.timer_works {
        return fail(text!("not run: timer interrupts do not arrive"));
    }
    static NEVER: AtomicBool = AtomicBool::new(false);
    // A cancel can only stop a timer that has not fired yet. Under a loaded
    // host the vCPU may be descheduled between arm and cancel; such an
    // attempt proves nothing and is retried.
    for attempt in 1..=3 {
        let before = interrupts::timer_count();
        pvops::irq::disable();
        let t0 = pvops::time::monotonic_ns();
        pvops::time::timer_arm(CANCEL_DELAY_NS);
        pvops::time::timer_cancel();
        let gap = pvops::time::monotonic_ns().saturating_sub(t0);
        wait_until(100, || NEVER.load(Ordering::Relaxed));
        let fired = interrupts::timer_count() - before;
        if gap < CANCEL_DELAY_NS / 2 {
            return check(
                fired == 0,
                text!(
                    "armed 30 ms, cancelled after {} us, waited 100 ms: {fired} interrupt(s) (attempt {attempt})",
                    gap / 1000
                ),
            );
        }
    }
    fail(text!(
        "could not cancel within 15 ms of arming in 3 attempts (host too slow)"
    ))
}

fn time_steal(_ctx: &mut Context<'_>) -> Outcome {
    let a = pvops::time::steal_ns();
    // A CPUID between the reads exits to the hypervisor, which may update
    // the steal area meanwhile (a lying one may move it backwards).
    let _ = pvops::cpu::cpuid(0, 0);
    let b = pvops::time::steal_ns();
    let owner = pvops::Entry::from_name("time.steal_ns").map_or("?", pvops::owner);
    if owner == pvops::patch::NATIVE {
        check(
            a == 0 && b == 0,
            text!("native: {a} ns, {b} ns (must be 0)"),
        )
    } else {
        check(
            b >= a,
            text!("{owner}: {a} ns then {b} ns (must not decrease)"),
        )
    }
}
