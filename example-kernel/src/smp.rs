//! Application processors: started from the MADT one at a time, each set
//! up through pvops (`pvops_backends::init_cpu`), then parked in a mailbox
//! loop that runs work the boot CPU posts; the native remote TLB flush
//! (an IPI whose handler flushes and acknowledges); and the per-CPU
//! self-tests (`smp.*`).
//!
//! Records: `@@ smp cpus=<MADT> online=<started + boot CPU> madt=<ok|why>
//! [disabled=<MADT CPUs neither enabled nor online capable>
//! left_out=<past the limit or listed twice>]`
//! and, per AP, `@@ ap slot=<s> apic=<id> status=<online|no-answer|...>
//! index=<pvops index> backend=<b> fallbacks=<n>`.
//!
//! Bad input on purpose: `smp-ghost-apic=<id>` on the command line also
//! sends INIT-SIPI-SIPI to an APIC ID that is not in the MADT, before the
//! real APs (so that the online APs' slots are not consecutive): nothing
//! answers, the record says `status=no-answer` with that
//! APIC ID, and the boot goes on with the CPUs that came up.

use crate::interrupts::{self, FLUSH_VECTOR, IPI_VECTOR, TIMER_VECTOR, WAKE_VECTOR};
use crate::paging::{self, AddressSpace, FrameAllocator};
use crate::selftest::{self, check, fail, unsupported, wait_until, Outcome, Tally};
use crate::text;
use bootkit::{println, record};
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use pvops::mmu::FlushTarget;

pub mod bench;

/// CPUs the example kernel runs at most (bootkit's per-CPU GDTs).
pub const MAX_CPUS: usize = bootkit::gdt::MAX_CPUS;
const STACK_SIZE: usize = 64 * 1024;

#[repr(C, align(16))]
struct Stacks([[u8; STACK_SIZE]; MAX_CPUS]);
struct StackCell(UnsafeCell<Stacks>);
// SAFETY: each stack is handed to exactly one AP (its slot), once.
unsafe impl Sync for StackCell {}
static STACKS: StackCell = StackCell(UnsafeCell::new(Stacks([[0; STACK_SIZE]; MAX_CPUS])));

/// One CPU slot (slot 0 is the boot CPU).
struct Slot {
    apic_id: AtomicU32,
    arrived: AtomicBool,
    ready: AtomicBool,
    index: AtomicUsize,
    fallbacks: AtomicUsize,
    work: AtomicUsize,
    done: AtomicU64,
}

static SLOTS: [Slot; MAX_CPUS] = [const {
    Slot {
        apic_id: AtomicU32::new(u32::MAX),
        arrived: AtomicBool::new(false),
        ready: AtomicBool::new(false),
        index: AtomicUsize::new(usize::MAX),
        fallbacks: AtomicUsize::new(0),
        work: AtomicUsize::new(0),
        done: AtomicU64::new(0),
    }
}; MAX_CPUS];

/// How many APs came up (the first entries of [`ONLINE_SLOTS`]).
static ONLINE: AtomicUsize = AtomicUsize::new(0);
/// The slots of the APs that came up, in order: an AP that did not answer
/// keeps its slot (its stack and GDT, should it start late) but is not
/// listed, so the online ones need not be consecutive.
static ONLINE_SLOTS: [AtomicUsize; MAX_CPUS] = [const { AtomicUsize::new(0) }; MAX_CPUS];
/// The frame allocator, lent to the AP being set up (the boot CPU waits
/// meanwhile and does not touch it).
static FRAMES: AtomicPtr<FrameAllocator> = AtomicPtr::new(core::ptr::null_mut());
/// The kernel's address space (lives as long as `kmain`, i.e. for good).
static ASPACE: AtomicPtr<AddressSpace> = AtomicPtr::new(core::ptr::null_mut());

/// The MADT's CPUs (or why there is no MADT), read before pvops' `init` so
/// that `Platform::possible_cpus` is known.
pub struct Topology {
    cpus: Result<bootkit::acpi::Cpus, pvops_abi::acpi::AcpiError>,
}

impl Topology {
    /// Reads the MADT.
    pub fn read(rsdp_paddr: u64) -> Topology {
        Topology {
            cpus: bootkit::acpi::cpus(rsdp_paddr),
        }
    }

    /// CPUs the kernel will start (the boot CPU included; 1 without a MADT).
    pub fn possible(&self) -> usize {
        match &self.cpus {
            Ok(c) if !c.is_empty() => c.len().min(MAX_CPUS),
            _ => 1,
        }
    }
}

/// Each CPU's index, where its GS base points when the kernel gives pvops
/// its CPU number ([`use_gs_index_if_needed`]).
static CPU_NUMBERS: [usize; MAX_CPUS] = {
    let mut a = [0; MAX_CPUS];
    let mut i = 0;
    while i < MAX_CPUS {
        a[i] = i;
        i += 1;
    }
    a
};
static GS_INDEX: AtomicBool = AtomicBool::new(false);
/// IA32_GS_BASE (Intel SDM vol. 4, table 2-2).
const MSR_GS_BASE: u32 = 0xC000_0101;

/// Where the CPU offers neither RDPID nor RDTSCP (this host's KVM hides
/// both), pvops would find the current CPU by its APIC ID, an exit per
/// lookup: the kernel then gives pvops its own CPU number instead
/// (`pvops::percpu::set_index_hook`), read from GS as Linux keeps its
/// per-CPU data. Call on the boot CPU after its GDT, before pvops' init.
pub fn use_gs_index_if_needed() {
    let (rdpid, rdtscp) = pvops::percpu::tsc_aux_readers();
    if rdpid || rdtscp {
        return;
    }
    set_gs_base(0);
    GS_INDEX.store(true, Ordering::Release);
    pvops::percpu::set_index_hook(gs_index);
}

fn set_gs_base(slot: usize) {
    let at = &CPU_NUMBERS[slot] as *const usize as u64;
    // SAFETY: IA32_GS_BASE exists in long mode; the kernel uses GS for
    // nothing else, and the address is a static that lives for good.
    unsafe { pvops::cpu::write_msr(MSR_GS_BASE, at) };
}

/// This CPU's number, from its GS base.
fn gs_index() -> usize {
    let n: usize;
    // SAFETY: only installed after GS was pointed at this CPU's entry of
    // `CPU_NUMBERS` (`set_gs_base`), on every CPU before it registers.
    unsafe {
        core::arch::asm!("mov {}, gs:[0]", out(reg) n, options(nostack, readonly, preserves_flags))
    };
    n
}

/// APs online (the boot CPU not counted).
pub fn aps() -> usize {
    ONLINE.load(Ordering::Acquire)
}

/// The slots of the online APs, in the order they came up.
fn online() -> impl Iterator<Item = usize> + Clone {
    ONLINE_SLOTS[..aps()]
        .iter()
        .map(|s| s.load(Ordering::Acquire))
}

/// The mask of every online CPU's APIC ID below 64, the boot CPU's
/// included when `with_self`.
fn apic_mask(with_self: bool) -> u64 {
    with_self
        .then_some(0)
        .into_iter()
        .chain(online())
        .map(|s| SLOTS[s].apic_id.load(Ordering::Acquire))
        .filter(|&id| id < 64)
        .fold(0, |m, id| m | 1 << id)
}

fn delay_us(us: u64) {
    let khz = match pvops::time::tsc_frequency().khz {
        0 => 3_000_000, // an upper bound: the wait is at least `us`
        k => k,
    };
    let cycles = us.saturating_mul(khz) / 1000;
    let t0 = pvops::cpu::read_tsc();
    while pvops::cpu::read_tsc().wrapping_sub(t0) < cycles {
        core::hint::spin_loop();
    }
}

/// Starts every AP of the MADT, one at a time, after pvops' `init` on the
/// boot CPU, after `ghost` (an APIC ID outside the MADT that must not
/// answer, from `smp-ghost-apic=`); records what happened. Registers the
/// native remote flush.
pub fn bring_up(
    topo: &Topology,
    frames: &mut FrameAllocator,
    aspace: &AddressSpace,
    ghost: Option<u32>,
) {
    pvops::native::mmu::set_remote_flush_hook(remote_flush);
    ASPACE.store(
        aspace as *const AddressSpace as *mut AddressSpace,
        Ordering::Release,
    );
    let bsp = pvops::native::apic::id();
    SLOTS[0].apic_id.store(bsp, Ordering::Release);
    SLOTS[0].index.store(0, Ordering::Release);
    let cpus = match &topo.cpus {
        Ok(c) => c,
        Err(e) => {
            println!("SMP: one CPU ({e})");
            record!("smp", cpus = 1, online = 1, madt = text!("{e}").as_str());
            return;
        }
    };
    let mut slot = 0;
    if let Some(apic) = ghost {
        if apic == bsp || cpus.apic_ids().contains(&apic) {
            println!("SMP: smp-ghost-apic={apic} is a real CPU: not started again");
        } else if slot + 1 < MAX_CPUS {
            println!("SMP: starting APIC ID {apic}, which is not in the MADT (smp-ghost-apic=)");
            slot += 1;
            start_one(slot, apic, frames);
        }
    }
    for &apic in cpus.apic_ids() {
        if apic == bsp {
            continue;
        }
        if slot + 1 >= MAX_CPUS {
            record!("ap", slot = "-", apic = apic, status = "over-limit");
            continue;
        }
        // An AP that does not come up keeps its slot (its stack and GDT,
        // should it start late) and is left out of the online list.
        slot += 1;
        start_one(slot, apic, frames);
    }
    let online = aps() + 1;
    println!(
        "SMP: {} CPU(s) in the MADT, {} online ({} left out, {} disabled)",
        cpus.len(),
        online,
        cpus.left_out,
        cpus.disabled
    );
    record!(
        "smp",
        cpus = cpus.len(),
        online = online,
        madt = "ok",
        disabled = cpus.disabled,
        left_out = cpus.left_out
    );
}

fn start_one(slot: usize, apic: u32, frames: &mut FrameAllocator) {
    let s = &SLOTS[slot];
    s.apic_id.store(apic, Ordering::Release);
    let stack_top = STACKS.0.get().cast::<u8>() as u64 + ((slot + 1) * STACK_SIZE) as u64;
    FRAMES.store(frames as *mut FrameAllocator, Ordering::Release);
    let ap = bootkit::smp::ApStart {
        apic_id: apic,
        stack_top,
        entry: ap_entry,
        arg: slot as u64,
    };
    let send = |ipi| match ipi {
        bootkit::smp::StartupIpi::Init(id) => pvops::native::apic::send_init(id),
        bootkit::smp::StartupIpi::Startup(id, v) => pvops::native::apic::send_startup(id, v),
    };
    // SAFETY: boot CPU, one AP at a time; the trampoline page (0x8000) is
    // in the first MiB, which the frame allocator never hands out, and
    // identity mapped; the stack is this slot's alone.
    let started = unsafe {
        bootkit::smp::start_ap(
            &ap,
            &send,
            &delay_us,
            &|| s.arrived.load(Ordering::Acquire),
            1000,
        )
    };
    let status = match started {
        Err(e) => {
            println!("  AP with APIC ID {apic}: {e}");
            "no-answer"
        }
        Ok(()) => {
            // It arrived: wait for its pvops set-up.
            if wait_flag(&s.ready, 2000) {
                // Only the boot CPU writes these.
                ONLINE_SLOTS[aps()].store(slot, Ordering::Release);
                ONLINE.fetch_add(1, Ordering::AcqRel);
                "online"
            } else {
                "stuck-in-setup"
            }
        }
    };
    FRAMES.store(core::ptr::null_mut(), Ordering::Release);
    let index = s.index.load(Ordering::Acquire);
    let fallbacks = s.fallbacks.load(Ordering::Acquire);
    let installed = pvops::patch::installed().unwrap_or("native");
    if status == "online" {
        println!(
            "  AP slot {slot}: APIC ID {apic}, pvops CPU {index}, backend {installed}, {fallbacks} per-CPU fallback(s)"
        );
    }
    record!(
        "ap",
        slot = slot,
        apic = apic,
        status = status,
        index = if index == usize::MAX {
            text!("-")
        } else {
            text!("{index}")
        }
        .as_str(),
        backend = installed,
        fallbacks = fallbacks
    );
}

fn wait_flag(flag: &AtomicBool, ms: u64) -> bool {
    for _ in 0..ms * 10 {
        if flag.load(Ordering::Acquire) {
            return true;
        }
        delay_us(100);
    }
    flag.load(Ordering::Acquire)
}

extern "C" fn ap_entry(slot: u64) -> ! {
    let slot = slot as usize;
    let s = &SLOTS[slot];
    // SAFETY: this AP's own GDT slot; the IDT is the boot CPU's, whose
    // gates `init` rewrites with identical values (benign).
    unsafe {
        bootkit::gdt::init_cpu(slot, pvops::cpu::load_gdt);
        bootkit::idt::init(pvops::cpu::load_idt);
    }
    if GS_INDEX.load(Ordering::Acquire) {
        // After the GDT: loading GS there reset its base.
        set_gs_base(slot);
    }
    s.arrived.store(true, Ordering::Release);
    if interrupts::enable_apic().is_err() {
        park();
    }
    // SAFETY: the boot CPU lent the allocator for this AP's set-up and
    // waits (touching nothing) until `ready`.
    let frames = unsafe { &mut *FRAMES.load(Ordering::Acquire) };
    // SAFETY: an AP, interrupts off, after the boot CPU's init, alone.
    let report = unsafe { pvops_backends::init_cpu(frames) };
    pvops::time::timer_setup(TIMER_VECTOR);
    s.index
        .store(report.index.unwrap_or(usize::MAX), Ordering::Release);
    s.fallbacks.store(report.fallbacks.len(), Ordering::Release);
    s.ready.store(true, Ordering::Release);
    mailbox(slot)
}

fn park() -> ! {
    loop {
        pvops::irq::disable();
        pvops::cpu::halt();
    }
}

/// Runs posted work; halts (woken by [`WAKE_VECTOR`]) when there is none.
fn mailbox(slot: usize) -> ! {
    let s = &SLOTS[slot];
    loop {
        pvops::irq::disable();
        let w = s.work.swap(0, Ordering::AcqRel);
        if w == 0 {
            // STI;HLT: a wake-up IPI sent after the check is not lost.
            pvops::irq::safe_halt();
            continue;
        }
        pvops::irq::enable();
        // SAFETY: only `post` stores here, always a `fn(usize)`.
        let f = unsafe { core::mem::transmute::<usize, fn(usize)>(w) };
        f(pvops::percpu::current());
        s.done.fetch_add(1, Ordering::AcqRel);
    }
}

/// Posts `f(cpu index)` to every online AP's mailbox and wakes it;
/// returns each slot's count of finished work before it.
fn post(f: fn(usize)) -> [u64; MAX_CPUS] {
    post_to(online(), f)
}

/// Posts `f(cpu index)` to the mailboxes of `slots` (online APs) and
/// wakes them; returns each slot's count of finished work before it.
fn post_to(slots: impl Iterator<Item = usize>, f: fn(usize)) -> [u64; MAX_CPUS] {
    let mut before = [0u64; MAX_CPUS];
    for slot in slots {
        before[slot] = SLOTS[slot].done.load(Ordering::Acquire);
        SLOTS[slot].work.store(f as usize, Ordering::Release);
        pvops::irq::send_ipi(apic_of(slot), WAKE_VECTOR);
    }
    before
}

/// Waits (bounded) until every AP finished the work [`post`]ed after
/// `before`; returns how many did.
fn finished(before: &[u64; MAX_CPUS], timeout_ms: u64) -> usize {
    finished_of(online(), before, timeout_ms)
}

/// [`finished`] for the APs of `slots`.
fn finished_of(
    slots: impl Iterator<Item = usize> + Clone,
    before: &[u64; MAX_CPUS],
    timeout_ms: u64,
) -> usize {
    let done = |s: usize| SLOTS[s].done.load(Ordering::Acquire) > before[s];
    wait_until(timeout_ms, || slots.clone().all(done));
    slots.filter(|&s| done(s)).count()
}

/// The APIC ID of the CPU in `slot`.
fn apic_of(slot: usize) -> u32 {
    SLOTS[slot].apic_id.load(Ordering::Acquire)
}

/// The pvops CPU index of the CPU in `slot`.
fn index_of(slot: usize) -> usize {
    SLOTS[slot].index.load(Ordering::Acquire)
}

/// Runs `f(cpu index)` on every online AP and, when `here`, on this (the
/// boot) CPU at the same time; returns how many APs finished in time.
fn run_on_aps(f: fn(usize), here: bool, timeout_ms: u64) -> usize {
    let before = post(f);
    if here {
        f(pvops::percpu::current());
    }
    finished(&before, timeout_ms)
}

// ---- native remote flush -------------------------------------------------

static FLUSH_GATE: pvops::lock::SpinLock<()> = pvops::lock::SpinLock::new(());
static FLUSH_TARGET: AtomicU64 = AtomicU64::new(0);
static FLUSH_ACKS: AtomicU32 = AtomicU32::new(0);
/// Remote flushes whose targets did not all answer in time.
static FLUSH_TIMEOUTS: AtomicU32 = AtomicU32::new(0);
const FLUSH_ALL: u64 = u64::MAX;

/// The kernel's cross-CPU flush (`pvops::mmu::set_remote_flush_hook`): an
/// IPI to every CPU of `others`, whose handler flushes and acknowledges.
fn remote_flush(others: u64, target: FlushTarget) {
    let _gate = FLUSH_GATE.lock();
    FLUSH_TARGET.store(
        match target {
            FlushTarget::Page(va) => va,
            FlushTarget::All => FLUSH_ALL,
        },
        Ordering::SeqCst,
    );
    FLUSH_ACKS.store(0, Ordering::SeqCst);
    let want = others.count_ones();
    pvops::irq::send_ipi_mask(others, FLUSH_VECTOR);
    let mut spins = 0u64;
    while FLUSH_ACKS.load(Ordering::SeqCst) < want {
        spins += 1;
        if spins > 2_000_000_000 {
            FLUSH_TIMEOUTS.fetch_add(1, Ordering::Relaxed);
            log::error!(
                "remote flush: {} of {} CPUs acknowledged",
                FLUSH_ACKS.load(Ordering::SeqCst),
                want
            );
            return;
        }
        core::hint::spin_loop();
    }
}

/// The [`FLUSH_VECTOR`] handler's work.
pub fn on_flush_ipi() {
    match FLUSH_TARGET.load(Ordering::SeqCst) {
        FLUSH_ALL => pvops::mmu::flush_all(),
        va => pvops::mmu::flush_page(va),
    }
    FLUSH_ACKS.fetch_add(1, Ordering::SeqCst);
}

// ---- per-CPU self-tests ---------------------------------------------------

/// The backend owning table entry `name` ("?" for an unknown name).
fn owner_of(name: &str) -> &'static str {
    pvops::Entry::from_name(name).map_or("?", pvops::owner)
}

/// Per-CPU results of the last test run on the APs.
static RESULT: [AtomicU64; pvops::percpu::MAX_CPUS] =
    [const { AtomicU64::new(0) }; pvops::percpu::MAX_CPUS];

fn set_result(cpu: usize, v: u64) {
    RESULT[cpu % pvops::percpu::MAX_CPUS].store(v, Ordering::Release);
}

fn results() -> impl Iterator<Item = (usize, u64)> {
    online().map(|slot| {
        let cpu = SLOTS[slot].index.load(Ordering::Acquire) % pvops::percpu::MAX_CPUS;
        (cpu, RESULT[cpu].load(Ordering::Acquire))
    })
}

/// A per-CPU self-test.
type SmpTest = fn(&mut FrameAllocator) -> Outcome;

/// Runs the `smp.*` self-tests; with one CPU they are not run (nor
/// counted), and a line says so.
pub fn run_tests(frames: &mut FrameAllocator, tally: &mut Tally) {
    if aps() == 0 {
        println!("SMP self-tests: not run (one CPU online)");
        return;
    }
    let tests: [(&str, SmpTest); 6] = [
        ("smp.timer-eoi", timer_eoi),
        ("smp.ipi-all", ipi_all),
        ("smp.clock-warp", clock_warp),
        ("smp.tlb-shootdown", tlb_shootdown),
        ("smp.spinlock", spinlock),
        // Last: a kick that does not arrive leaves its AP halted for good
        // under KVM (interrupts off), which no later test could use.
        ("smp.lock-kick", lock_kick),
    ];
    for (name, t) in tests {
        tally.report(name, &t(frames));
    }
}

const TIMER_ROUNDS: u64 = 3;

fn timer_on_this_cpu(cpu: usize) {
    let mut arrived = 0;
    for _ in 0..TIMER_ROUNDS {
        let before = interrupts::timer_count();
        pvops::irq::disable();
        pvops::time::timer_arm(1_000_000);
        if !wait_until(3_000, || interrupts::timer_count() > before) {
            break;
        }
        arrived += 1;
    }
    pvops::time::timer_cancel();
    set_result(cpu, arrived);
}

fn timer_eoi(_: &mut FrameAllocator) -> Outcome {
    let f = pvops::time::tsc_frequency();
    if f.khz == 0 {
        return unsupported(text!("no TSC frequency source: timers cannot be armed"));
    }
    let done = run_on_aps(timer_on_this_cpu, false, 20_000);
    let mut ok = 0;
    let mut worst = u64::MAX;
    for (_, r) in results() {
        worst = worst.min(r);
        ok += usize::from(r == TIMER_ROUNDS);
    }
    check(
        done == aps() && ok == aps(),
        text!(
            "{ok}/{} APs took {TIMER_ROUNDS}/{TIMER_ROUNDS} one-shot 1 ms timers through pvops (EOI through the table; worst {worst})",
            aps()
        ),
    )
}

fn ipi_all(_: &mut FrameAllocator) -> Outcome {
    let n = aps();
    let counts = |out: &mut [u64; MAX_CPUS]| {
        for slot in online() {
            let cpu = SLOTS[slot].index.load(Ordering::Acquire);
            out[slot] = interrupts::ipi_count_of(cpu);
        }
    };
    let mut before = [0u64; MAX_CPUS];
    counts(&mut before);
    pvops::irq::send_ipi_mask(apic_mask(false), IPI_VECTOR);
    let reached = |want: u64| {
        online().all(|s| {
            interrupts::ipi_count_of(SLOTS[s].index.load(Ordering::Acquire)) >= before[s] + want
        })
    };
    let mask_ok = wait_until(3_000, || reached(1));
    for s in online().map(|s| &SLOTS[s]) {
        pvops::irq::send_ipi(s.apic_id.load(Ordering::Acquire), IPI_VECTOR);
    }
    let each_ok = wait_until(3_000, || reached(2));
    let mut after = [0u64; MAX_CPUS];
    counts(&mut after);
    let got: u64 = online().map(|s| after[s] - before[s]).sum();
    check(
        mask_ok && each_ok,
        text!(
            "send_ipi_mask to {n} APs (mask {:#x}, owner {}) and send_ipi to each: {got}/{} IPIs taken",
            apic_mask(false),
            owner_of("irq.send_ipi_mask"),
            2 * n
        ),
    )
}

static WARP_LAST: AtomicU64 = AtomicU64::new(0);
static WARP_MAX: AtomicU64 = AtomicU64::new(0);
static WARP_READS: AtomicU64 = AtomicU64::new(0);
static WARP_GO: AtomicBool = AtomicBool::new(false);
const WARP_READS_PER_CPU: u64 = 5_000;

/// kvm-unit-tests' kvmclock_test warp check: each reading is compared
/// with the last one any CPU published, taken after it (the load of the
/// last value precedes the reading), so a smaller reading is a real
/// backward step.
fn warp_on_this_cpu(_cpu: usize) {
    while !WARP_GO.load(Ordering::Acquire) {
        core::hint::spin_loop();
    }
    for _ in 0..WARP_READS_PER_CPU {
        loop {
            let last = WARP_LAST.load(Ordering::SeqCst);
            let now = pvops::time::monotonic_ns();
            if now < last {
                WARP_MAX.fetch_max(last - now, Ordering::SeqCst);
                break;
            }
            if WARP_LAST
                .compare_exchange(last, now, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
            {
                break;
            }
        }
        WARP_READS.fetch_add(1, Ordering::Relaxed);
    }
}

fn clock_warp(_: &mut FrameAllocator) -> Outcome {
    if let Some(o) = selftest::needs_tsc_frequency() {
        return o;
    }
    WARP_LAST.store(0, Ordering::SeqCst);
    WARP_MAX.store(0, Ordering::SeqCst);
    WARP_READS.store(0, Ordering::SeqCst);
    WARP_GO.store(false, Ordering::SeqCst);
    // The APs wait for the go, so that all CPUs read at the same time.
    let n = aps();
    let before = post(warp_on_this_cpu);
    WARP_GO.store(true, Ordering::SeqCst);
    warp_on_this_cpu(0);
    finished(&before, 30_000);
    let reads = WARP_READS.load(Ordering::SeqCst);
    let warp = WARP_MAX.load(Ordering::SeqCst);
    let want = (n as u64 + 1) * WARP_READS_PER_CPU;
    check(
        warp == 0 && reads == want,
        text!(
            "{reads}/{want} readings of time.monotonic_ns ({}) on {} CPUs at once: largest backward step {warp} ns",
            owner_of("time.monotonic_ns"),
            n + 1
        ),
    )
}

const TLB_SLOT: usize = 7;
static TLB_SEEN: [AtomicU64; pvops::percpu::MAX_CPUS] =
    [const { AtomicU64::new(0) }; pvops::percpu::MAX_CPUS];

fn read_tlb_slot(cpu: usize) {
    let a = ASPACE.load(Ordering::Acquire);
    // SAFETY: `bring_up` stored the kernel's address space, which lives
    // for good (kmain never returns).
    let v = unsafe { &*a }.read_test(TLB_SLOT, 0);
    TLB_SEEN[cpu % pvops::percpu::MAX_CPUS].store(v, Ordering::Release);
}

fn tlb_shootdown(frames: &mut FrameAllocator) -> Outcome {
    let (Some(a), Some(b)) = (frames.alloc(), frames.alloc()) else {
        return fail(text!("no frames for the test"));
    };
    const A: u64 = 0xA1A1_A1A1_A1A1_A1A1;
    const B: u64 = 0xB2B2_B2B2_B2B2_B2B2;
    paging::fill_frame(a, A);
    paging::fill_frame(b, B);
    let aspace_ptr = ASPACE.load(Ordering::Acquire);
    // SAFETY: as in `read_tlb_slot`.
    let aspace = unsafe { &*aspace_ptr };
    let va = AddressSpace::test_va(TLB_SLOT);
    aspace.map_test(TLB_SLOT, a, false);
    pvops::mmu::flush_page(va);
    // Every CPU reads A, caching the translation.
    let n = aps();
    let read_a = run_on_aps(read_tlb_slot, true, 5_000);
    let saw_a = results_of(&TLB_SEEN).filter(|&v| v == A).count();
    // Remap to B here, and shoot the stale entries down everywhere.
    aspace.map_test(TLB_SLOT, b, false);
    let mask = apic_mask(true);
    let timeouts = FLUSH_TIMEOUTS.load(Ordering::Relaxed);
    pvops::mmu::flush_remote(mask, FlushTarget::Page(va));
    let read_b = run_on_aps(read_tlb_slot, true, 5_000);
    let saw_b = results_of(&TLB_SEEN).filter(|&v| v == B).count();
    let here = aspace.read_test(TLB_SLOT, 0);
    aspace.unmap_test(TLB_SLOT);
    pvops::mmu::flush_remote(mask, FlushTarget::Page(va));
    let timed_out = FLUSH_TIMEOUTS.load(Ordering::Relaxed) - timeouts;
    check(
        read_a == n && saw_a == n && read_b == n && saw_b == n && here == B && timed_out == 0,
        text!(
            "flush_remote ({}) of a remapped page on {} CPUs: {saw_a}/{n} APs read the old frame, then {saw_b}/{n} the new one (boot CPU: {}), {timed_out} flush timeout(s)",
            owner_of("mmu.flush_remote"),
            n + 1,
            if here == B { "new" } else { "old" }
        ),
    )
}

fn results_of(a: &'static [AtomicU64; pvops::percpu::MAX_CPUS]) -> impl Iterator<Item = u64> {
    online().map(move |slot| {
        let cpu = SLOTS[slot].index.load(Ordering::Acquire) % pvops::percpu::MAX_CPUS;
        a[cpu].load(Ordering::Acquire)
    })
}

/// The shared counter of the lock test: the count, the last ticket seen
/// and how often a holder's ticket did not follow the previous one.
struct LockData {
    count: u64,
    last_ticket: Option<u32>,
    out_of_order: u64,
}

static LOCK: pvops::lock::SpinLock<LockData> = pvops::lock::SpinLock::new(LockData {
    count: 0,
    last_ticket: None,
    out_of_order: 0,
});
static LOCK_GO: AtomicBool = AtomicBool::new(false);
const LOCK_ROUNDS: u64 = 500;

fn lock_on_this_cpu(cpu: usize) {
    while !LOCK_GO.load(Ordering::Acquire) {
        core::hint::spin_loop();
    }
    let mut max_wait = 0u64;
    for _ in 0..LOCK_ROUNDS {
        let t0 = pvops::cpu::read_tsc();
        let mut g = LOCK.lock();
        max_wait = max_wait.max(pvops::cpu::read_tsc().wrapping_sub(t0));
        let t = g.ticket();
        if let Some(last) = g.last_ticket {
            if t != last.wrapping_add(1) {
                g.out_of_order += 1;
            }
        }
        g.last_ticket = Some(t);
        // A read-modify-write that a second holder would break.
        let c = g.count;
        core::hint::spin_loop();
        g.count = c + 1;
    }
    set_result(cpu, max_wait);
}

fn spinlock(_: &mut FrameAllocator) -> Outcome {
    let n = aps();
    {
        let mut g = LOCK.lock();
        g.count = 0;
        g.out_of_order = 0;
    }
    let stats0 = LOCK.stats();
    LOCK_GO.store(false, Ordering::SeqCst);
    let before = post(lock_on_this_cpu);
    LOCK_GO.store(true, Ordering::SeqCst);
    lock_on_this_cpu(0);
    let finished = finished(&before, 60_000) == n;
    let (count, ooo) = {
        let g = LOCK.lock();
        (g.count, g.out_of_order)
    };
    let s = LOCK.stats();
    let want = (n as u64 + 1) * LOCK_ROUNDS;
    let worst = results().map(|(_, w)| w).max().unwrap_or(0);
    check(
        finished && count == want && ooo == 0,
        text!(
            "{count}/{want} increments under pvops::lock::SpinLock on {} CPUs, {ooo} grant(s) out of ticket order; {} contended, {} waits, {} kicks (lock.wait: {}); longest AP wait {worst} TSC cycles",
            n + 1,
            s.contended - stats0.contended,
            s.waits - stats0.waits,
            s.kicks - stats0.kicks,
            owner_of("lock.wait"),
        ),
    )
}

// ---- lock wait / kick ------------------------------------------------------

/// The word the kicked AP waits on (0: keep waiting).
static KICK_WORD: AtomicU32 = AtomicU32::new(0);
/// The AP is about to wait (interrupts already off).
static KICK_READY: AtomicBool = AtomicBool::new(false);
/// TSC when the AP saw the word change; 0 until then.
static KICK_SEEN_TSC: AtomicU64 = AtomicU64::new(0);
/// `lock.wait` calls the AP made.
static KICK_WAITS: AtomicU64 = AtomicU64::new(0);
/// How long the boot CPU lets the AP sleep before it kicks (ms).
const KICK_AFTER_MS: u64 = 5;
/// How long the AP waits at most where `lock.wait` returns by itself.
const KICK_AP_LIMIT_MS: u64 = 5_000;

/// The AP's half: with interrupts off, so that under KVM only the kick can
/// end its HLT (`KVM_HC_KICK_CPU` wakes a halted vCPU whatever its IF),
/// `lock.wait` until the word changes.
fn kick_waiter(_cpu: usize) {
    let flags = pvops::irq::save_flags();
    pvops::irq::disable();
    let khz = pvops::time::tsc_frequency().khz.max(1);
    let limit = pvops::cpu::read_tsc() + KICK_AP_LIMIT_MS * khz;
    let mut waits = 0u64;
    KICK_READY.store(true, Ordering::SeqCst);
    while KICK_WORD.load(Ordering::SeqCst) == 0 && pvops::cpu::read_tsc() < limit {
        pvops::lock::wait(&KICK_WORD, 0);
        waits += 1;
    }
    let seen = KICK_WORD.load(Ordering::SeqCst) != 0;
    KICK_SEEN_TSC.store(
        if seen { pvops::cpu::read_tsc() } else { 0 },
        Ordering::SeqCst,
    );
    KICK_WAITS.store(waits, Ordering::SeqCst);
    pvops::irq::restore_flags(flags);
}

/// One AP waits in `lock.wait` with interrupts off; the boot CPU lets it
/// sleep [`KICK_AFTER_MS`] ms, changes the word and kicks it with
/// `lock.kick`. Passes when the AP saw the change; says how long after the
/// kick and in how many waits (1-2 where the wait really sleeps: KVM's
/// HLT; about one per millisecond with Xen's guarded poll; many PAUSEs
/// natively).
fn lock_kick(_: &mut FrameAllocator) -> Outcome {
    let Some(slot) = online().next() else {
        return unsupported(text!("no AP online"));
    };
    let khz = pvops::time::tsc_frequency().khz;
    if khz == 0 {
        return unsupported(text!("no TSC frequency: no delays to time"));
    }
    let target = index_of(slot);
    KICK_WORD.store(0, Ordering::SeqCst);
    KICK_READY.store(false, Ordering::SeqCst);
    KICK_SEEN_TSC.store(0, Ordering::SeqCst);
    let before = post_to(core::iter::once(slot), kick_waiter);
    let ready = wait_until(3_000, || KICK_READY.load(Ordering::SeqCst));
    let end = pvops::cpu::read_tsc() + KICK_AFTER_MS * khz;
    while pvops::cpu::read_tsc() < end {
        core::hint::spin_loop();
    }
    let kicked_at = pvops::cpu::read_tsc();
    KICK_WORD.store(1, Ordering::SeqCst);
    pvops::lock::kick(target);
    let done = finished_of(core::iter::once(slot), &before, 2 * KICK_AP_LIMIT_MS) == 1;
    let seen = KICK_SEEN_TSC.load(Ordering::SeqCst);
    let waits = KICK_WAITS.load(Ordering::SeqCst);
    let after_us = seen.saturating_sub(kicked_at) * 1_000 / khz;
    check(
        ready && done && seen != 0,
        text!(
            "CPU {target} in lock.wait ({}) with interrupts off for {KICK_AFTER_MS} ms, then lock.kick ({}): ready {ready}, finished {done}, saw the change {} us after the kick in {waits} wait(s)",
            owner_of("lock.wait"),
            owner_of("lock.kick"),
            if seen != 0 { after_us } else { 0 },
        ),
    )
}
