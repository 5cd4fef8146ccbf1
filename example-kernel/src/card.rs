//! The report card (`card` or `card=<iterations>` on the command line): for
//! every table entry, its owner, its dispatch mechanism and what one call
//! costs here, in TSC cycles and, where a counter exists, in exits.
//!
//! Records (documented in `pvops_abi::report` and `docs/report-card.md`):
//!
//! - `@@ card.base iterations=N cycles=C exits=E|- hold=K|-`: the empty
//!   loop, measured like an entry (the harness's own cost; the runner
//!   subtracts its exits).
//! - `@@ card entry=<name> owner=<backend> mechanism=<inline|direct|indirect>
//!   iterations=N cycles=C exits=E|- hold=K|-`: `C` TSC cycles for all `N`
//!   calls; `E` exits for all of them, counted by the microvisor's hidden
//!   counters (reset before, copied after, the copy's own VMMCALL taken
//!   out), `-` elsewhere.
//! - `@@ card entry=<name> owner=<..> mechanism=<..> skipped=<reason>`: an
//!   entry that cannot be called in a loop harmlessly.
//! - `@@ card.end entries=<records>`.
//!
//! `hold=K` (only with `hold` on the command line, which the runner adds
//! when it reads KVM's own counters over QMP): the kernel printed `@@ hold`
//! number `K` (counting from 0 over the boot) just before the loop and
//! number `K + 1` just after it, so the runner's counter readings at those
//! two holds bracket the loop. The runner subtracts the same bracket around
//! the empty loop (`card.base`): what remains is the entry's.
//!
//! Every measured loop (the base too) lies between two writes to
//! [`crate::counted::MARK_PORT`]: in a nested run the runner cuts L1 KVM's trace of exits
//! at them.
//!
//! Interrupts are off while the card runs (restored after), so timer ticks
//! do not land in the counts.

use core::sync::atomic::{AtomicU32, Ordering};

use crate::counted::{self, Count, Stretch};
use crate::hypercall::Microvisor;
use crate::interrupts::IPI_VECTOR;
use bootkit::record::emit;
use pvops::Entry;

/// Iterations per entry unless `card=<n>` says otherwise.
pub const DEFAULT_ITERATIONS: u32 = 1_000;
/// Most iterations `card=<n>` may ask for.
pub const MAX_ITERATIONS: u32 = 1_000_000;

/// Whether and how the command line asks for the card: `card` (default
/// iterations) or `card=<n>` (1..=1,000,000; anything else: the default).
pub fn requested(cmdline: &str) -> Option<u32> {
    cmdline.split_ascii_whitespace().find_map(|w| match w {
        "card" => Some(DEFAULT_ITERATIONS),
        _ => w.strip_prefix("card=").map(|n| {
            n.parse::<u32>()
                .ok()
                .filter(|n| (1..=MAX_ITERATIONS).contains(n))
                .unwrap_or(DEFAULT_ITERATIONS)
        }),
    })
}

/// The dispatch mechanism in force for `entry` (inline, direct or
/// indirect: the loops below call the entries through pvops' public
/// functions, i.e. through their patched call sites).
fn mechanism(entry: Entry) -> &'static str {
    pvops::dispatch::mechanism(entry).name()
}

/// One entry's loop body, or why it is not measured.
enum Body {
    /// Calls the entry `n` times.
    Run(fn(u32)),
    /// Not callable in a loop here, with the reason.
    Skip(&'static str),
}

/// What the card does for `name`.
fn body(name: &str) -> Body {
    use Body::{Run, Skip};
    match name {
        "cpu.cpuid" => Run(cpuid),
        "cpu.read_msr" => Run(read_msr),
        "cpu.write_msr" => Run(write_msr),
        "cpu.read_cr0" => Run(|n| repeat(n, pvops::cpu::read_cr0)),
        "cpu.write_cr0" => Run(write_cr0),
        "cpu.read_cr4" => Run(|n| repeat(n, pvops::cpu::read_cr4)),
        "cpu.write_cr4" => Run(write_cr4),
        "cpu.load_idt" => Run(load_idt),
        "cpu.load_gdt" => Run(load_gdt),
        "cpu.wbinvd" => Run(|n| repeat(n, pvops::cpu::wbinvd)),
        "cpu.halt" => Skip("halts until an interrupt, with interrupts off forever (the bench's timer workload measures a wake-up)"),
        "cpu.io_delay" => Run(|n| repeat(n, pvops::cpu::io_delay)),
        "cpu.read_tsc" => Run(|n| repeat(n, pvops::cpu::read_tsc)),
        "mmu.read_cr2" => Run(|n| repeat(n, pvops::mmu::read_cr2)),
        "mmu.read_cr3" => Run(|n| repeat(n, pvops::mmu::read_cr3)),
        "mmu.write_cr3" => Run(write_cr3),
        "mmu.flush_page" => Run(flush_page),
        "mmu.flush_all" => Run(|n| repeat(n, pvops::mmu::flush_all)),
        "mmu.flush_all_global" => Run(|n| repeat(n, pvops::mmu::flush_all_global)),
        "mmu.lazy_enter" => Run(lazy_pair),
        "mmu.lazy_leave" => Skip("measured with mmu.lazy_enter: one call is an enter and a leave"),
        "mmu.lazy_flush" => Run(lazy_flush),
        "mmu.flush_remote" => Run(flush_remote),
        "irq.save_flags" => Run(|n| repeat(n, pvops::irq::save_flags)),
        "irq.restore_flags" => Run(restore_flags),
        "irq.disable" => Run(|n| repeat(n, pvops::irq::disable)),
        "irq.enable" => Run(enable),
        "irq.safe_halt" => Skip("halts until an interrupt (the bench's timer workload measures a wake-up)"),
        "irq.eoi" => Run(|n| repeat(n, pvops::irq::eoi)),
        "irq.send_ipi" => Run(send_ipi),
        "irq.send_ipi_mask" => Run(send_ipi_mask),
        "time.tsc_frequency" => Run(|n| repeat(n, || pvops::time::tsc_frequency().khz)),
        "time.apic_timer_khz" => Run(|n| repeat(n, pvops::time::apic_timer_khz)),
        "time.monotonic_ns" => Run(|n| repeat(n, pvops::time::monotonic_ns)),
        "time.timer_setup" => Skip("one-time set-up at boot: a second call re-routes the timer's events"),
        "time.timer_arm" => Run(timer_arm),
        "time.timer_cancel" => Run(|n| repeat(n, pvops::time::timer_cancel)),
        "time.steal_ns" => Run(|n| repeat(n, pvops::time::steal_ns)),
        "time.timer_ack" => Skip("belongs in the timer interrupt handler: outside it there is no event to acknowledge"),
        "system.shutdown" => Skip("ends the machine"),
        "system.report_crash" => Skip("files a crash report with the hypervisor on every call"),
        _ => Skip("the card does not know this entry"),
    }
}

/// Calls `f` `n` times, keeping its result alive.
fn repeat<R>(n: u32, f: impl Fn() -> R) {
    for _ in 0..n {
        core::hint::black_box(f());
    }
}

/// Runs the card: `@@ card.base`, one `@@ card` per entry, `@@ card.end`.
/// `held`: `hold` is on the command line (the runner reads KVM's counters
/// at each `@@ hold`).
pub fn run(iterations: u32, apic_id: u32, held: bool) {
    APIC_ID.store(apic_id, Ordering::Relaxed);
    let mv = Microvisor::detect();
    bootkit::println!();
    bootkit::println!(
        "Report card: {iterations} calls per entry; exits counted by {}",
        match (&mv, held) {
            (Some(_), _) => "the microvisor",
            (None, true) => "the runner (KVM's counters at each hold)",
            (None, false) => "nobody",
        }
    );
    let flags = pvops::irq::save_flags();
    pvops::irq::disable();
    let base = measure(mv.as_ref(), held, iterations, |n| repeat(n, || ()));
    emit(
        "card.base",
        &[
            ("iterations", &iterations),
            ("cycles", &base.cycles),
            ("exits", &Count(base.exits)),
            ("hold", &Count(base.hold.map(u64::from))),
        ],
    );
    let mut records = 0u32;
    for entry in Entry::all() {
        let name = entry.name();
        let owner = pvops::owner(entry);
        let mech = mechanism(entry);
        records += 1;
        match body(name) {
            Body::Skip(why) => {
                bootkit::println!("  {name:<24} {owner:<8} {mech:<8} not measured: {why}");
                emit(
                    "card",
                    &[
                        ("entry", &name),
                        ("owner", &owner),
                        ("mechanism", &mech),
                        ("skipped", &why),
                    ],
                );
            }
            Body::Run(f) => {
                let m = measure(mv.as_ref(), held, iterations, f);
                // Every entry leaves interrupts off for the next.
                pvops::irq::disable();
                bootkit::println!(
                    "  {name:<24} {owner:<8} {mech:<8} {:>8} cycles/call",
                    m.cycles / u64::from(iterations)
                );
                emit(
                    "card",
                    &[
                        ("entry", &name),
                        ("owner", &owner),
                        ("mechanism", &mech),
                        ("iterations", &iterations),
                        ("cycles", &m.cycles),
                        ("exits", &Count(m.exits)),
                        ("hold", &Count(m.hold.map(u64::from))),
                    ],
                );
            }
        }
    }
    pvops::time::timer_cancel();
    pvops::irq::restore_flags(flags);
    bootkit::record!("card.end", entries = records);
}

/// Times `f(n)` as a counted stretch ([`crate::counted`]).
fn measure(mv: Option<&Microvisor>, held: bool, n: u32, f: fn(u32)) -> Stretch {
    counted::measure(mv, held, || f(n)).0
}

/// This CPU's APIC ID, for the IPI entries.
static APIC_ID: AtomicU32 = AtomicU32::new(0);

/// IA32_SYSENTER_ESP (Intel SDM vol. 4, MSR 175H; AMD APM vol. 2): present
/// on every x86-64 CPU, unused in long mode, so reading and rewriting it
/// changes nothing (the self-tests use it too).
const MSR_SYSENTER_ESP: u32 = 0x175;

fn cpuid(n: u32) {
    repeat(n, || pvops::cpu::cpuid(0, 0).eax);
}

fn read_msr(n: u32) {
    // SAFETY: the MSR exists everywhere and reading it has no effect.
    repeat(n, || unsafe { pvops::cpu::read_msr(MSR_SYSENTER_ESP) });
}

fn write_msr(n: u32) {
    // SAFETY: as `read_msr`; the value written is the one it holds.
    let v = unsafe { pvops::cpu::read_msr(MSR_SYSENTER_ESP) };
    // SAFETY: rewriting the MSR's own value changes nothing.
    repeat(n, || unsafe { pvops::cpu::write_msr(MSR_SYSENTER_ESP, v) });
}

fn write_cr0(n: u32) {
    let v = pvops::cpu::read_cr0();
    // SAFETY: CR0 gets the value it holds.
    repeat(n, || unsafe { pvops::cpu::write_cr0(v) });
}

fn write_cr4(n: u32) {
    let v = pvops::cpu::read_cr4();
    // SAFETY: CR4 gets the value it holds (a rewrite flushes the TLB at
    // most).
    repeat(n, || unsafe { pvops::cpu::write_cr4(v) });
}

fn load_idt(n: u32) {
    let p = crate::arch::sidt();
    // SAFETY: the IDT loaded now, reloaded.
    repeat(n, || unsafe { pvops::cpu::load_idt(&p) });
}

fn load_gdt(n: u32) {
    let p = crate::arch::sgdt();
    // SAFETY: the GDT loaded now, reloaded (segment registers keep their
    // cached descriptors; the table is the same anyway).
    repeat(n, || unsafe { pvops::cpu::load_gdt(&p) });
}

fn write_cr3(n: u32) {
    let v = pvops::mmu::read_cr3();
    // SAFETY: the address space in force, reloaded (a TLB flush).
    repeat(n, || unsafe { pvops::mmu::write_cr3(v) });
}

/// A page of the kernel's own data, always mapped.
static PAGE: AtomicU32 = AtomicU32::new(0);

fn flush_page(n: u32) {
    let va = &raw const PAGE as u64;
    repeat(n, || pvops::mmu::flush_page(va));
}

fn lazy_pair(n: u32) {
    repeat(n, || {
        pvops::mmu::lazy_enter();
        pvops::mmu::lazy_leave();
    });
}

fn lazy_flush(n: u32) {
    pvops::mmu::lazy_enter();
    repeat(n, pvops::mmu::lazy_flush);
    pvops::mmu::lazy_leave();
}

fn flush_remote(n: u32) {
    // Only this CPU exists: its own bit, one page (the remote part of a
    // real shootdown is not measured).
    let me = APIC_ID.load(Ordering::Relaxed);
    let mask = 1u64.checked_shl(me).unwrap_or(0);
    let va = &raw const PAGE as u64;
    repeat(n, || {
        pvops::mmu::flush_remote(mask, pvops::mmu::FlushTarget::Page(va))
    });
}

fn restore_flags(n: u32) {
    let f = pvops::irq::save_flags();
    repeat(n, || pvops::irq::restore_flags(f));
}

fn enable(n: u32) {
    repeat(n, pvops::irq::enable);
    pvops::irq::disable();
}

fn send_ipi(n: u32) {
    // Interrupts are off: the IPI stays pending (one per vector) and its
    // handler runs once when they are enabled again.
    let me = APIC_ID.load(Ordering::Relaxed);
    repeat(n, || pvops::irq::send_ipi(me, IPI_VECTOR));
}

fn send_ipi_mask(n: u32) {
    let me = APIC_ID.load(Ordering::Relaxed);
    let mask = 1u64.checked_shl(me).unwrap_or(0);
    repeat(n, || pvops::irq::send_ipi_mask(mask, IPI_VECTOR));
}

fn timer_arm(n: u32) {
    // One second ahead, re-armed every call; cancelled after the loop.
    repeat(n, || pvops::time::timer_arm(1_000_000_000));
    pvops::time::timer_cancel();
}
