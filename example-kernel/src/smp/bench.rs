//! The SMP bench (`smpbench`, `smpbench=cross`, or `bench` on the command
//! line; run after the self-tests when at least one AP is online): what a
//! cross-CPU operation costs, for N = 2, 4 and 8 CPUs (those the machine
//! has), each workload a counted stretch ([`crate::counted`]) so that the
//! runner can set its exits beside its cycles and compare them with the
//! `pvops=native` pair's.
//!
//! - `shootdown`: `mmu.flush_remote` of one page to the N-1 other CPUs,
//!   which run a busy loop with interrupts on (the case paravirtual TLB
//!   flush is for: a target whose vCPU is preempted is flagged instead of
//!   interrupted, and the initiator does not wait for it to run again).
//! - `ipi-fanout`: `irq.send_ipi_mask` to the N-1 other CPUs, idle
//!   (halted), waiting until every one took it.
//! - `lock-pv` / `lock-spin` (not with `smpbench=cross`; each twice, in
//!   the order spin, pv, pv, spin, which the runner adds up): the N CPUs
//!   take one lock [`LOCK_ROUNDS`] times each and hold it [`HOLD_CYCLES`]:
//!   `lock-pv` is [`pvops::lock::SpinLock`] (waiters sleep through
//!   `lock.wait` and are kicked), `lock-spin` a plain ticket lock whose
//!   waiters only spin. Under overcommit a waiter behind a preempted holder
//!   spins through the holder's time slice: `waited=` is the TSC cycles
//!   waiters spent between asking and getting (asleep included for
//!   `lock-pv`, where the vCPU gave its physical CPU up), `cycles=` the
//!   whole run's.
//! - `lock-pv-long` / `lock-spin-long` (same order and pairing): the same
//!   with [`LONG_ROUNDS`] acquisitions per CPU held [`LONG_HOLD_US`] each,
//!   longer than a time slice (the microvisor's default 1 ms), so the
//!   holder is preempted while it holds the lock: spinning waiters burn
//!   their slices behind it, sleeping ones give the CPU back to it.
//! - Steal time (under the microvisor): each CPU reads its own
//!   `time::steal_ns` and the microvisor's account of the time it kept
//!   that vCPU runnable but off the CPU (`VCPU_STOLEN_NS`), at the start
//!   and at the end of the bench; both differences are recorded.
//!
//! Records: `@@ smpbench name=<w> cpus=N ops=<operations> cycles=<C>
//! exits=<E|-> hold=<K|-> mark=<M> completed=<operations that finished>`
//! plus `waited=`, `waits=`, `kicks=` for the lock workloads and
//! `flagged=` (targets the KVM backend flagged instead of interrupting)
//! for `shootdown`; first `@@ smpbench name=base cpus=1 ops=1 ..`, the
//! empty stretch, whose exits are the bracket's own; `@@ smpbench.steal
//! cpu=<pvops index> vcpu=<APIC ID> guest_ns=<G> mv_ns=<M>` per CPU under
//! the microvisor; last `@@ smpbench.end records=<n>`.

use super::{apic_of, finished_of, index_of, online, post_to, MAX_CPUS};
use crate::counted::{self, Count, Stretch};
use crate::hypercall::Microvisor;
use crate::interrupts::{self, IPI_VECTOR};
use bootkit::{println, record};
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use pvops::mmu::FlushTarget;

/// Shootdowns and fan-outs per N.
pub const OPS: u32 = 100;
/// Acquisitions per CPU in a lock workload.
pub const LOCK_ROUNDS: u32 = 100;
/// TSC cycles a lock holder keeps the lock.
pub const HOLD_CYCLES: u64 = 2_000;
/// Acquisitions per CPU in a long-hold lock workload.
pub const LONG_ROUNDS: u32 = 4;
/// How long a long-hold lock workload's holder keeps the lock, in µs:
/// twice the microvisor's default slice.
pub const LONG_HOLD_US: u64 = 2_000;
/// The CPU counts measured (those the machine has).
const SIZES: [usize; 3] = [2, 4, 8];

/// Which workloads the command line asks for.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Set {
    /// Every workload (`smpbench`, `bench`).
    All,
    /// Shootdown and IPI fan-out only (`smpbench=cross`).
    Cross,
}

/// Whether and which workloads the command line asks for.
pub fn requested(cmdline: &str) -> Option<Set> {
    let mut set = None;
    for w in cmdline.split_ascii_whitespace() {
        match w {
            "smpbench" | "bench" | "bench=1" | "bench=on" => set = Some(Set::All),
            "smpbench=cross" if set.is_none() => set = Some(Set::Cross),
            _ => {}
        }
    }
    set
}

/// Runs the bench; `held`: `hold` is on the command line.
pub fn run(set: Set, held: bool) {
    let aps: usize = online().count();
    if aps == 0 {
        println!("SMP bench: not run (one CPU online)");
        return;
    }
    let mv = Microvisor::detect();
    if mv.is_some() {
        run_on_every_cpu(steal_at_start);
    }
    println!();
    println!(
        "SMP bench: {} CPUs online; exits counted by {}",
        aps + 1,
        match (&mv, held) {
            (Some(_), _) => "the microvisor",
            (None, true) => "the runner (KVM's counters at each hold)",
            (None, false) => "the runner's trace where it has one",
        }
    );
    let mut records = 0u32;
    let (base, ()) = counted::measure(mv.as_ref(), held, || ());
    emit("base", 1, 1, &base, 1, &[]);
    records += 1;
    for n in SIZES.into_iter().filter(|&n| n <= aps + 1) {
        let mut targets = [0usize; MAX_CPUS];
        for (t, slot) in targets.iter_mut().zip(online().take(n - 1)) {
            *t = slot;
        }
        let targets = &targets[..n - 1];
        shootdown(mv.as_ref(), held, targets);
        ipi_fanout(mv.as_ref(), held, targets);
        records += 2;
        if set == Set::All {
            // A-B-B-A: the host's scheduling drifts over a run (the
            // same workload repeated varies several times over under
            // overcommit), so each variant runs twice, around the other.
            for hold in [Hold::Short, Hold::Long] {
                for v in [Variant::Spin, Variant::Pv, Variant::Pv, Variant::Spin] {
                    lock(mv.as_ref(), held, targets, v, hold);
                }
                records += 4;
            }
        }
    }
    if let Some(mv) = &mv {
        run_on_every_cpu(steal_at_end);
        records += steal_records(mv);
    }
    record!("smpbench.end", records = records);
}

/// Runs `f(cpu index)` on every online AP and here, waiting for all.
fn run_on_every_cpu(f: fn(usize)) {
    let before = post_to(online(), f);
    f(pvops::percpu::current());
    finished_of(online(), &before, 5_000);
}

// ---- steal time -------------------------------------------------------------

/// Per pvops CPU index: its steal readings (`time::steal_ns`, the
/// microvisor's) at the start and at the end, and its APIC ID.
static STEAL_GUEST: [[AtomicU64; 2]; pvops::percpu::MAX_CPUS] =
    [const { [AtomicU64::new(0), AtomicU64::new(0)] }; pvops::percpu::MAX_CPUS];
static STEAL_MV: [[AtomicU64; 2]; pvops::percpu::MAX_CPUS] =
    [const { [AtomicU64::new(0), AtomicU64::new(0)] }; pvops::percpu::MAX_CPUS];
/// Set when a CPU took its readings at the start and at the end.
static STEAL_READ: [AtomicU32; pvops::percpu::MAX_CPUS] =
    [const { AtomicU32::new(0) }; pvops::percpu::MAX_CPUS];

/// This CPU's two readings, back to back (no exit between the guest's
/// read and the hypercall but the hypercall's own).
fn steal_reading(cpu: usize, at: usize) {
    let (Some(mv), Some(apic)) = (Microvisor::detect(), pvops::percpu::apic_id(cpu)) else {
        return;
    };
    let Some(slot) = STEAL_GUEST.get(cpu) else {
        return;
    };
    let guest = pvops::time::steal_ns();
    let stolen = mv.call(
        pvops_abi::microvisor::code::VCPU_STOLEN_NS,
        [u64::from(apic), 0, 0],
    );
    slot[at].store(guest, Ordering::SeqCst);
    STEAL_MV[cpu][at].store(stolen.max(0) as u64, Ordering::SeqCst);
    if stolen >= 0 {
        STEAL_READ[cpu].fetch_or(1 << at, Ordering::SeqCst);
    }
}

fn steal_at_start(cpu: usize) {
    steal_reading(cpu, 0);
}

fn steal_at_end(cpu: usize) {
    steal_reading(cpu, 1);
}

/// One `smpbench.steal` record per CPU that took both readings; returns
/// how many.
fn steal_records(_mv: &Microvisor) -> u32 {
    let mut n = 0;
    for cpu in 0..pvops::percpu::MAX_CPUS {
        if STEAL_READ[cpu].load(Ordering::SeqCst) != 3 {
            continue;
        }
        let d = |a: &[AtomicU64; 2]| {
            a[1].load(Ordering::SeqCst)
                .wrapping_sub(a[0].load(Ordering::SeqCst)) as i64
        };
        let (guest, stolen) = (d(&STEAL_GUEST[cpu]), d(&STEAL_MV[cpu]));
        let vcpu = pvops::percpu::apic_id(cpu).unwrap_or(u32::MAX);
        record!(
            "smpbench.steal",
            cpu = cpu,
            vcpu = vcpu,
            guest_ns = guest,
            mv_ns = stolen
        );
        println!("  steal      CPU {cpu}: guest saw {guest} ns, the microvisor took {stolen} ns");
        n += 1;
    }
    n
}

fn emit(name: &str, cpus: usize, ops: u32, s: &Stretch, completed: u32, extra: &[(&str, u64)]) {
    let exits = Count(s.exits);
    let hold = Count(s.hold.map(u64::from));
    let mut fields: [(&str, &dyn core::fmt::Display); 12] = [
        ("name", &name),
        ("cpus", &cpus),
        ("ops", &ops),
        ("cycles", &s.cycles),
        ("exits", &exits),
        ("hold", &hold),
        ("mark", &s.mark),
        ("completed", &completed),
        ("", &0),
        ("", &0),
        ("", &0),
        ("", &0),
    ];
    let n = 8 + extra.len().min(4);
    for (slot, (k, v)) in fields[8..n].iter_mut().zip(extra) {
        *slot = (*k, v);
    }
    bootkit::record::emit("smpbench", &fields[..n]);
    let per = s.cycles / u64::from(ops.max(1));
    match s.exits {
        Some(e) => println!("  {name:<11} N={cpus}: {ops:>4} x {per:>9} cycles, {e} exits in all"),
        None => println!("  {name:<11} N={cpus}: {ops:>4} x {per:>9} cycles"),
    }
}

/// The APIC-ID mask of `targets` (IDs below 64: the table's masks).
fn mask_of(targets: &[usize]) -> u64 {
    targets
        .iter()
        .map(|&s| apic_of(s))
        .filter(|&id| id < 64)
        .fold(0, |m, id| m | 1 << id)
}

// ---- shootdown ----------------------------------------------------------

static BUSY_STOP: AtomicBool = AtomicBool::new(false);
static BUSY_RUNNING: AtomicU32 = AtomicU32::new(0);

/// A target's busy loop: interrupts on, spinning until told to stop.
fn busy(_cpu: usize) {
    BUSY_RUNNING.fetch_add(1, Ordering::SeqCst);
    while !BUSY_STOP.load(Ordering::Acquire) {
        core::hint::spin_loop();
    }
}

fn flagged() -> u64 {
    #[cfg(feature = "kvm")]
    if let Some(k) = pvops_backends::kvm::summary() {
        return k.tlb_flagged;
    }
    0
}

fn shootdown(mv: Option<&Microvisor>, held: bool, targets: &[usize]) {
    let n = targets.len() + 1;
    BUSY_STOP.store(false, Ordering::SeqCst);
    BUSY_RUNNING.store(0, Ordering::SeqCst);
    let before = post_to(targets.iter().copied(), busy);
    let all_busy = crate::selftest::wait_until(5_000, || {
        BUSY_RUNNING.load(Ordering::SeqCst) as usize == targets.len()
    });
    let mask = mask_of(targets);
    let va = crate::paging::AddressSpace::test_va(super::TLB_SLOT);
    let timeouts = super::FLUSH_TIMEOUTS.load(Ordering::Relaxed);
    let flagged0 = flagged();
    let (s, ()) = counted::measure(mv, held, || {
        for _ in 0..OPS {
            pvops::mmu::flush_remote(mask, FlushTarget::Page(va));
        }
    });
    let timed_out = super::FLUSH_TIMEOUTS.load(Ordering::Relaxed) - timeouts;
    let flagged = flagged() - flagged0;
    BUSY_STOP.store(true, Ordering::SeqCst);
    finished_of(targets.iter().copied(), &before, 5_000);
    let completed = if all_busy {
        OPS.saturating_sub(timed_out)
    } else {
        0
    };
    emit("shootdown", n, OPS, &s, completed, &[("flagged", flagged)]);
}

// ---- IPI fan-out ----------------------------------------------------------

fn ipi_fanout(mv: Option<&Microvisor>, held: bool, targets: &[usize]) {
    let n = targets.len() + 1;
    let mask = mask_of(targets);
    let count = |s: usize| interrupts::ipi_count_of(index_of(s));
    let (s, completed) = counted::measure(mv, held, || {
        let mut completed = 0u32;
        for _ in 0..OPS {
            let mut before = [0u64; MAX_CPUS];
            for &t in targets {
                before[t] = count(t);
            }
            pvops::irq::send_ipi_mask(mask, IPI_VECTOR);
            let mut spins = 0u64;
            while !targets.iter().all(|&t| count(t) > before[t]) && spins < 1_000_000_000 {
                core::hint::spin_loop();
                spins += 1;
            }
            completed += u32::from(targets.iter().all(|&t| count(t) > before[t]));
        }
        completed
    });
    emit("ipi-fanout", n, OPS, &s, completed, &[]);
}

// ---- lock contention ------------------------------------------------------

/// How long a lock workload holds the lock.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Hold {
    /// [`LOCK_ROUNDS`] of [`HOLD_CYCLES`].
    Short,
    /// [`LONG_ROUNDS`] of [`LONG_HOLD_US`].
    Long,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Variant {
    /// `pvops::lock::SpinLock`.
    Pv,
    /// [`PlainTicket`].
    Spin,
}

/// The baseline: a FIFO ticket lock whose waiters only spin.
struct PlainTicket {
    next: AtomicU32,
    owner: AtomicU32,
}

impl PlainTicket {
    fn lock(&self) {
        let t = self.next.fetch_add(1, Ordering::Relaxed);
        while self.owner.load(Ordering::Acquire) != t {
            core::hint::spin_loop();
        }
    }

    fn unlock(&self) {
        self.owner.fetch_add(1, Ordering::Release);
    }
}

static PV_LOCK: pvops::lock::SpinLock<u64> = pvops::lock::SpinLock::new(0);
static PLAIN_LOCK: PlainTicket = PlainTicket {
    next: AtomicU32::new(0),
    owner: AtomicU32::new(0),
};
/// The count the plain lock protects.
static PLAIN_COUNT: AtomicU64 = AtomicU64::new(0);
static LOCK_VARIANT: AtomicU32 = AtomicU32::new(0);
static LOCK_GO: AtomicBool = AtomicBool::new(false);
static LOCK_READY: AtomicU32 = AtomicU32::new(0);
static WAITED: AtomicU64 = AtomicU64::new(0);
/// The running workload's acquisitions per CPU and hold in TSC cycles.
static ROUNDS: AtomicU32 = AtomicU32::new(LOCK_ROUNDS);
static HOLD: AtomicU64 = AtomicU64::new(HOLD_CYCLES);

fn hold_for(cycles: u64) {
    let t0 = pvops::cpu::read_tsc();
    while pvops::cpu::read_tsc().wrapping_sub(t0) < cycles {
        core::hint::spin_loop();
    }
}

fn lock_worker(_cpu: usize) {
    let pv = LOCK_VARIANT.load(Ordering::Acquire) == 1;
    let (rounds, hold) = (ROUNDS.load(Ordering::Acquire), HOLD.load(Ordering::Acquire));
    LOCK_READY.fetch_add(1, Ordering::SeqCst);
    while !LOCK_GO.load(Ordering::Acquire) {
        core::hint::spin_loop();
    }
    let mut waited = 0u64;
    for _ in 0..rounds {
        let t0 = pvops::cpu::read_tsc();
        if pv {
            let mut g = PV_LOCK.lock();
            waited += pvops::cpu::read_tsc().wrapping_sub(t0);
            hold_for(hold);
            *g += 1;
        } else {
            PLAIN_LOCK.lock();
            waited += pvops::cpu::read_tsc().wrapping_sub(t0);
            hold_for(hold);
            // Under the lock: a plain read-modify-write.
            let c = PLAIN_COUNT.load(Ordering::Relaxed);
            PLAIN_COUNT.store(c + 1, Ordering::Relaxed);
            PLAIN_LOCK.unlock();
        }
    }
    WAITED.fetch_add(waited, Ordering::SeqCst);
}

fn lock(mv: Option<&Microvisor>, held: bool, targets: &[usize], v: Variant, hold: Hold) {
    let n = targets.len() + 1;
    let rounds = match hold {
        Hold::Short => LOCK_ROUNDS,
        Hold::Long => LONG_ROUNDS,
    };
    let cycles = match hold {
        Hold::Short => HOLD_CYCLES,
        Hold::Long => LONG_HOLD_US * pvops::time::tsc_khz().max(1) / 1_000,
    };
    ROUNDS.store(rounds, Ordering::SeqCst);
    HOLD.store(cycles, Ordering::SeqCst);
    *PV_LOCK.lock() = 0;
    PLAIN_COUNT.store(0, Ordering::SeqCst);
    LOCK_VARIANT.store(u32::from(v == Variant::Pv), Ordering::SeqCst);
    LOCK_GO.store(false, Ordering::SeqCst);
    LOCK_READY.store(0, Ordering::SeqCst);
    WAITED.store(0, Ordering::SeqCst);
    let stats0 = PV_LOCK.stats();
    let before = post_to(targets.iter().copied(), lock_worker);
    crate::selftest::wait_until(5_000, || {
        LOCK_READY.load(Ordering::SeqCst) as usize == targets.len()
    });
    let (s, done) = counted::measure(mv, held, || {
        LOCK_GO.store(true, Ordering::SeqCst);
        lock_worker(0);
        finished_of(targets.iter().copied(), &before, 120_000)
    });
    let count = match v {
        Variant::Pv => *PV_LOCK.lock(),
        Variant::Spin => PLAIN_COUNT.load(Ordering::SeqCst),
    };
    let ops = rounds * n as u32;
    // Every acquisition counted once, by every CPU, under the lock.
    let completed = if done == targets.len() && count == u64::from(ops) {
        ops
    } else {
        count.min(u64::from(ops)) as u32
    };
    let st = PV_LOCK.stats();
    let name = match (v, hold) {
        (Variant::Pv, Hold::Short) => "lock-pv",
        (Variant::Spin, Hold::Short) => "lock-spin",
        (Variant::Pv, Hold::Long) => "lock-pv-long",
        (Variant::Spin, Hold::Long) => "lock-spin-long",
    };
    emit(
        name,
        n,
        ops,
        &s,
        completed,
        &[
            ("waited", WAITED.load(Ordering::SeqCst)),
            ("waits", st.waits - stats0.waits),
            ("kicks", st.kicks - stats0.kicks),
        ],
    );
}
