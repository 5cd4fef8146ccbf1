//! The KVM backend (feature `kvm`).
//!
//! **Detection**: the hypervisor bit and "KVMKVMKVM\0\0\0" at any base of
//! the hypervisor range (Linux `kvm_cpuid_base`, which scans
//! 0x4000_0000..0x4001_0000 in steps of 0x100; cpuid.rst). The priority is
//! the base, so KVM stacked at 0x4000_0100 above QEMU's Hyper-V
//! enlightenments beats the Hyper-V backend at 0x4000_0000.
//!
//! **Gates**: every feature is used only under its own bit of
//! `KVM_CPUID_FEATURES` (base+1 EAX) and hint (EDX), as Linux's
//! `arch/x86/kernel/kvm.c` and `kvmclock.c` gate them; a feature hidden in
//! CPUID is never touched (KVM's own `kvm_pv_test` checks that a hidden PV
//! MSR raises #GP and a hidden hypercall returns `-KVM_ENOSYS`). See
//! [`Offer`] and `docs/backends/kvm.md`.
//!
//! **Setup** (each step falls back alone, with a logged reason):
//! 1. `cpu.io_delay`: a no-op under `KVM_FEATURE_NOP_IO_DELAY`.
//! 2. kvmclock: `MSR_KVM_SYSTEM_TIME_NEW` (or the old 0x12 under
//!    `KVM_FEATURE_CLOCKSOURCE` only) on the shared page; the pvclock must
//!    settle (even version, non-zero, multiplier non-zero). Then
//!    `time.monotonic_ns` and `time.tsc_frequency` (from the pvclock scale,
//!    or the timing leaf base+0x10 when the host publishes one: see
//!    `tsc_frequency`). The `PVCLOCK_TSC_STABLE_BIT` is trusted only under
//!    `KVM_FEATURE_CLOCKSOURCE_STABLE_BIT`; without it the clock is kept
//!    monotonic in software across CPUs (Linux `pvclock_clocksource_read`'s
//!    last-value guard); with it a plain compare with the last value still
//!    keeps a lying host from moving it back.
//! 3. steal time: `MSR_KVM_STEAL_TIME`; the host must have written the area
//!    (KVM does before the vCPU resumes from the WRMSR). Then
//!    `time.steal_ns`.
//! 4. PV EOI: `MSR_KVM_PV_EOI_EN`. Then `irq.eoi` tests and clears the
//!    flag and skips the APIC EOI write when it was set.
//! 5. PV IPI: a probe `KVM_HC_SEND_IPI` with an empty bitmap must succeed.
//!    Then `irq.send_ipi_mask`.
//!
//! 6. PV spinlocks (`KVM_HC_KICK_CPU`), `lock.vcpu_is_preempted` and
//!    7. PV TLB flush, with the gates Linux applies (more than one CPU);
//!    PV sched yield is decoded. Each AP's own areas: [`Backend::init_cpu`].
//!
//! An MSR write KVM refuses is caught through
//! [`Platform::write_msr_catching_gp`] when the kernel can (the example
//! kernel can), and every accepted write is read back: a mismatch is a
//! refusal too.

mod hypercall;
mod shared;

use crate::{Backend, Cpu, Detection, Environment, Fallbacks, Platform, SetupError, SharedPage};
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};
use pvops::patch::Patch;
use pvops::percpu::MAX_CPUS;
use pvops::slot;
use pvops::time::{TscFrequency, TscSource};
use pvops_abi::kvm::{self as abi, hc, msr as m, Features, Hints, HypercallInsn, StealTime};
use pvops_abi::pvclock::{VcpuTimeInfo, FLAG_TSC_STABLE};
use pvops_probe::{CpuidSource, HypervisorKind, Probe};
use shared::Area;

/// The KVM backend.
pub static KVM: Kvm = Kvm;

/// The KVM backend's type.
#[derive(Debug)]
pub struct Kvm;

/// Attempts of the pvclock/steal version loop at setup before "stuck odd".
const SETUP_TRIES: u32 = 100_000;
/// Attempts on the hot path (the areas were seen settling at setup).
const HOT_TRIES: u32 = 1 << 20;
/// TSC cycles to wait for the host's first steal-time record (about 40 ms
/// at 2.5 GHz).
const STEAL_WAIT_CYCLES: u64 = 100_000_000;
/// EOIs after which a PV EOI flag the host never set is given up on.
pub const PV_EOI_PATIENCE: u32 = 64;

/// Finds KVM's interface: the first "KVMKVMKVM" base, when CPUID.1:ECX.HV
/// is set.
pub fn find_base(probe: &Probe) -> Option<u32> {
    if !probe.under_hypervisor() {
        return None;
    }
    probe
        .interfaces
        .iter()
        .find(|i| i.kind == HypervisorKind::Kvm)
        .map(|i| i.base)
}

/// The KVM leaves, decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Leaves {
    /// The signature leaf.
    pub base: u32,
    /// `KVM_CPUID_FEATURES` EAX.
    pub features: Features,
    /// `KVM_CPUID_FEATURES` EDX.
    pub hints: Hints,
}

/// Reads `KVM_CPUID_FEATURES` of the interface at `base`.
pub fn read_leaves(cpuid: &dyn CpuidSource, base: u32) -> Leaves {
    let r = cpuid.cpuid(base + abi::LEAF_FEATURES, 0);
    Leaves {
        base,
        features: Features(r.eax),
        hints: Hints(r.edx),
    }
}

/// Which kvmclock MSR pair (kvmclock.c `kvmclock_init`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClockMsr {
    /// `MSR_KVM_SYSTEM_TIME_NEW` (`KVM_FEATURE_CLOCKSOURCE2`).
    New,
    /// `MSR_KVM_SYSTEM_TIME` 0x12 (`KVM_FEATURE_CLOCKSOURCE` only).
    Old,
}

impl ClockMsr {
    /// The system-time MSR.
    pub const fn system_time(self) -> u32 {
        match self {
            ClockMsr::New => m::SYSTEM_TIME_NEW,
            ClockMsr::Old => m::SYSTEM_TIME,
        }
    }
}

/// What KVM offers, feature by feature, from CPUID alone, with Linux's
/// gates (`kvm.c`; `cpus` is the number of CPUs the kernel will run).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Offer {
    /// kvmclock, and through which MSR.
    pub clock: Option<ClockMsr>,
    /// `PVCLOCK_TSC_STABLE_BIT` may be trusted (kvmclock.c: only under
    /// `KVM_FEATURE_CLOCKSOURCE_STABLE_BIT`, `pvclock_set_flags`).
    pub stable_bit: bool,
    /// `KVM_FEATURE_NOP_IO_DELAY` (kvm.c `paravirt_ops_setup`).
    pub nop_io_delay: bool,
    /// `KVM_FEATURE_STEAL_TIME` (kvm.c `kvm_guest_init`).
    pub steal_time: bool,
    /// `KVM_FEATURE_PV_EOI` (kvm.c `kvm_guest_init`).
    pub pv_eoi: bool,
    /// `KVM_FEATURE_PV_SEND_IPI` and more than one CPU (kvm.c
    /// `pv_ipi_supported`: with one CPU there is no one to send to, and no
    /// hypercall is made).
    pub pv_ipi: bool,
    /// `KVM_FEATURE_PV_SCHED_YIELD`, no `KVM_HINTS_REALTIME`, more than
    /// one CPU (kvm.c `pv_sched_yield_supported`).
    pub sched_yield: bool,
    /// `KVM_FEATURE_PV_UNHALT`, no `KVM_HINTS_REALTIME`, more than one CPU
    /// (kvm.c `kvm_spinlock_init`): PV spinlocks with `KVM_HC_KICK_CPU`.
    pub pv_spinlocks: bool,
    /// `KVM_FEATURE_PV_TLB_FLUSH` with `KVM_FEATURE_STEAL_TIME`, no
    /// `KVM_HINTS_REALTIME`, no MWAIT, more than one CPU (kvm.c
    /// `pv_tlb_flush_supported`).
    pub pv_tlb_flush: bool,
    /// More than one CPU: `lock.vcpu_is_preempted` from steal time.
    pub smp: bool,
}

impl Offer {
    /// Decides from the leaves, for a kernel of `cpus` CPUs on a CPU with
    /// (`mwait`) or without MWAIT.
    pub fn from_leaves(l: &Leaves, cpus: u32, mwait: bool) -> Offer {
        let f = l.features;
        let realtime = l.hints.contains(Hints::REALTIME);
        let smp = cpus > 1;
        let clock = if f.contains(Features::CLOCKSOURCE2) {
            Some(ClockMsr::New)
        } else if f.contains(Features::CLOCKSOURCE) {
            Some(ClockMsr::Old)
        } else {
            None
        };
        Offer {
            clock,
            stable_bit: clock.is_some() && f.contains(Features::CLOCKSOURCE_STABLE_BIT),
            nop_io_delay: f.contains(Features::NOP_IO_DELAY),
            steal_time: f.contains(Features::STEAL_TIME),
            pv_eoi: f.contains(Features::PV_EOI),
            pv_ipi: f.contains(Features::PV_SEND_IPI) && smp,
            sched_yield: f.contains(Features::PV_SCHED_YIELD) && !realtime && smp,
            pv_spinlocks: f.contains(Features::PV_UNHALT) && !realtime && smp,
            pv_tlb_flush: f.contains(Features::PV_TLB_FLUSH)
                && f.contains(Features::STEAL_TIME)
                && !realtime
                && !mwait
                && smp,
            smp,
        }
    }
}

/// Hardware access during setup, so that the setup logic can be
/// host-tested against a fake KVM.
pub(crate) trait Hw {
    /// Writes KVM MSR `index`; `Err(why)` when KVM refused it.
    fn write_msr(&mut self, index: u32, value: u64) -> Result<(), &'static str>;
    /// Makes hypercall `nr`.
    fn hypercall(&mut self, nr: u64, a: [u64; 4]) -> i64;
}

/// The real machine.
struct Real<'p> {
    platform: &'p mut dyn Platform,
}

impl Hw for Real<'_> {
    fn write_msr(&mut self, index: u32, value: u64) -> Result<(), &'static str> {
        debug_assert!(m::is_custom(index) || index == m::SYSTEM_TIME);
        // SAFETY: only KVM's own MSRs, offered in CPUID, are written here,
        // with the address of a page lent for good to be shared with the
        // hypervisor (or 0, which disables the area).
        match unsafe { self.platform.write_msr_catching_gp(index, value) } {
            Some(Ok(())) => {}
            Some(Err(_)) => return Err("WRMSR raised #GP"),
            // SAFETY: as above; without #GP recovery the CPUID bit is the
            // promise that the MSR exists (as Linux's wrmsrl relies on).
            None => unsafe { pvops::native::cpu::write_msr(index, value) },
        }
        // SAFETY: KVM's MSRs read back what was written (msr.rst); the
        // write above did not fault, so the MSR exists.
        let back = unsafe { pvops::native::cpu::read_msr(index) };
        if back == value {
            Ok(())
        } else {
            Err("the MSR did not keep the value written")
        }
    }

    fn hypercall(&mut self, nr: u64, a: [u64; 4]) -> i64 {
        hypercall::call(nr, a)
    }
}

/// What the backend set up, for the boot report (`@@ kvm`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Summary {
    /// CPUID base of the interface.
    pub base: u32,
    /// `KVM_CPUID_FEATURES` EAX.
    pub features: Features,
    /// `KVM_CPUID_FEATURES` EDX.
    pub hints: Hints,
    /// The hypercall instruction.
    pub hypercall: HypercallInsn,
    /// kvmclock owns the clock.
    pub clock: bool,
    /// The pvclock is stable (the feature bit and the page's flag).
    pub stable: bool,
    /// TSC frequency from the pvclock scale (kHz; 0 without kvmclock).
    pub pvclock_khz: u64,
    /// Steal time is used.
    pub steal: bool,
    /// PV EOI is used (and not given up).
    pub pv_eoi: bool,
    /// EOI writes skipped through PV EOI so far.
    pub eoi_skipped: u64,
    /// PV IPIs are used.
    pub pv_ipi: bool,
    /// `cpu.io_delay` is a no-op.
    pub io_delay: bool,
    /// PV spinlocks (`lock.wait` halts, `lock.kick` is `KVM_HC_KICK_CPU`).
    pub pv_spinlocks: bool,
    /// PV TLB flush owns `mmu.flush_remote`.
    pub pv_tlb_flush: bool,
    /// Remote flushes handed to KVM for preempted vCPUs so far.
    pub tlb_flagged: u64,
    /// The gates of the decoded-only features.
    pub offer: Offer,
}

/// The backend's runtime state: the published areas and what the table
/// entries keep between calls.
pub(crate) struct State {
    clock: Area<VcpuTimeInfo>,
    stable: AtomicBool,
    last_ns: AtomicU64,
    tsc_khz: AtomicU64,
    tsc_from_leaf: AtomicBool,
    pvclock_khz: AtomicU64,
    steal: Area<StealTime>,
    last_steal: AtomicU64,
    steal_frozen: AtomicBool,
    eoi_word: Area<u32>,
    eoi_seen: AtomicBool,
    eoi_without_flag: AtomicU32,
    eoi_skipped: AtomicU64,
    /// Remote flushes handed to KVM through `KVM_VCPU_FLUSH_TLB`.
    tlb_flagged: AtomicU64,
    base: AtomicU32,
    features: AtomicU32,
    hints: AtomicU32,
    vmmcall: AtomicBool,
    flags: AtomicU8,
    offer_bits: AtomicU8,
    /// The system-time MSR the boot CPU's kvmclock uses (0: none).
    clock_msr: AtomicU32,
    /// APs' own areas, by `pvops::percpu` index (slot 0 unused).
    aps: [ApAreas; MAX_CPUS],
}

/// One application processor's own areas (the boot CPU's are the
/// fields of [`State`] itself), registered in [`Backend::init_cpu`].
pub(crate) struct ApAreas {
    clock: Area<VcpuTimeInfo>,
    steal: Area<StealTime>,
    last_steal: AtomicU64,
    steal_frozen: AtomicBool,
    eoi_word: Area<u32>,
    eoi_seen: AtomicBool,
    eoi_without_flag: AtomicU32,
}

impl ApAreas {
    const fn new() -> ApAreas {
        ApAreas {
            clock: Area::new(),
            steal: Area::new(),
            last_steal: AtomicU64::new(0),
            steal_frozen: AtomicBool::new(false),
            eoi_word: Area::new(),
            eoi_seen: AtomicBool::new(false),
            eoi_without_flag: AtomicU32::new(0),
        }
    }
}

/// One CPU's view of its areas: the boot CPU's fields of [`State`], or an
/// AP's [`ApAreas`].
struct CpuAreas<'a> {
    clock: &'a Area<VcpuTimeInfo>,
    steal: &'a Area<StealTime>,
    last_steal: &'a AtomicU64,
    steal_frozen: &'a AtomicBool,
    eoi_word: &'a Area<u32>,
    eoi_seen: &'a AtomicBool,
    eoi_without_flag: &'a AtomicU32,
}

const F_IO_DELAY: u8 = 1 << 0;
const F_PV_IPI: u8 = 1 << 1;
const F_PV_SPINLOCKS: u8 = 1 << 2;
const F_PV_TLB_FLUSH: u8 = 1 << 3;
const O_SCHED_YIELD: u8 = 1 << 0;
const O_SPINLOCKS: u8 = 1 << 1;
const O_TLB_FLUSH: u8 = 1 << 2;

impl State {
    pub(crate) const fn new() -> State {
        State {
            clock: Area::new(),
            stable: AtomicBool::new(false),
            last_ns: AtomicU64::new(0),
            tsc_khz: AtomicU64::new(0),
            tsc_from_leaf: AtomicBool::new(false),
            pvclock_khz: AtomicU64::new(0),
            steal: Area::new(),
            last_steal: AtomicU64::new(0),
            steal_frozen: AtomicBool::new(false),
            eoi_word: Area::new(),
            eoi_seen: AtomicBool::new(false),
            eoi_without_flag: AtomicU32::new(0),
            eoi_skipped: AtomicU64::new(0),
            tlb_flagged: AtomicU64::new(0),
            base: AtomicU32::new(0),
            features: AtomicU32::new(0),
            hints: AtomicU32::new(0),
            vmmcall: AtomicBool::new(false),
            flags: AtomicU8::new(0),
            offer_bits: AtomicU8::new(0),
            clock_msr: AtomicU32::new(0),
            aps: [const { ApAreas::new() }; MAX_CPUS],
        }
    }

    /// The areas of the CPU with index `cpu`.
    fn cpu(&self, cpu: usize) -> CpuAreas<'_> {
        match self.aps.get(cpu).filter(|_| cpu != 0) {
            Some(a) => CpuAreas {
                clock: &a.clock,
                steal: &a.steal,
                last_steal: &a.last_steal,
                steal_frozen: &a.steal_frozen,
                eoi_word: &a.eoi_word,
                eoi_seen: &a.eoi_seen,
                eoi_without_flag: &a.eoi_without_flag,
            },
            None => CpuAreas {
                clock: &self.clock,
                steal: &self.steal,
                last_steal: &self.last_steal,
                steal_frozen: &self.steal_frozen,
                eoi_word: &self.eoi_word,
                eoi_seen: &self.eoi_seen,
                eoi_without_flag: &self.eoi_without_flag,
            },
        }
    }

    /// The running CPU's areas.
    fn here(&self) -> CpuAreas<'_> {
        self.cpu(pvops::percpu::current())
    }

    /// `time.monotonic_ns`: pvclock system time, never below an earlier
    /// reading. With a stable pvclock KVM guarantees it monotonic, so the
    /// check is a plain load and compare (no locked read-modify-write;
    /// Linux skips it altogether); a reading below the last one means the
    /// host lied about the stable bit, which is then dropped for good
    /// (logged; found by the lying matrix's `pvclock-backwards` and the fuzz
    /// run `fuzz_kvmclock_lying_host`, docs/fuzzing.md). Without it,
    /// `fetch_max` makes the clock hold across CPUs too.
    pub(crate) fn clock_ns(&self) -> u64 {
        self.clock_ns_with(HOT_TRIES, crate::tsc::ordered, core::hint::spin_loop)
    }

    /// [`State::clock_ns`] with the retry budget, TSC reader and wait
    /// supplied (host tests model the host rewriting the page from them).
    pub(crate) fn clock_ns_with(
        &self,
        tries: u32,
        tsc: impl FnMut() -> u64,
        spin: impl FnMut(),
    ) -> u64 {
        // This CPU's own kvmclock; an AP whose registration failed reads the
        // boot CPU's (see `init_cpu`).
        let mine = self.here().clock;
        let area = if mine.get().is_some() {
            mine
        } else {
            &self.clock
        };
        // The last value is loaded *before* the TSC is read: a value another
        // CPU (or an interrupt here) published after this read's TSC would
        // otherwise look like a step back on an honest host with several
        // CPUs, and drop the stable bit for nothing.
        let before = self.last_ns.load(Ordering::Acquire);
        match shared::read_clock_with(area, tries, tsc, spin) {
            Some((t, tsc)) => {
                let now = t.ns_at(tsc);
                if self.stable.load(Ordering::Relaxed) {
                    let prev = before;
                    if now >= prev {
                        self.last_ns.store(now, Ordering::Relaxed);
                        return now;
                    }
                    // A stable-marked pvclock that went backwards: the host
                    // lied about the stable bit. Kept monotonic in software
                    // from now on.
                    if self.stable.swap(false, Ordering::Relaxed) {
                        log::warn!(
                            "pvops: kvm: kvmclock marked stable went backwards ({} ns after {} ns); kept monotonic in software",
                            now,
                            prev
                        );
                    }
                    let prev = self.last_ns.fetch_max(now, Ordering::Relaxed);
                    now.max(prev)
                } else {
                    let prev = self.last_ns.fetch_max(now, Ordering::Relaxed);
                    now.max(prev)
                }
            }
            None => self.last_ns.load(Ordering::Relaxed),
        }
    }

    /// `time.steal_ns`: the steal-time area's `steal`, never going
    /// backwards. A host that moves it backwards (or whose version sticks
    /// odd) has it frozen at the last good value, once logged.
    pub(crate) fn steal_ns(&self) -> u64 {
        let c = self.here();
        if c.steal_frozen.load(Ordering::Relaxed) {
            return c.last_steal.load(Ordering::Relaxed);
        }
        let last = c.last_steal.load(Ordering::Relaxed);
        match shared::read_steal(c.steal, HOT_TRIES) {
            Ok((_, steal)) if steal >= last => {
                c.last_steal.store(steal, Ordering::Relaxed);
                steal
            }
            Ok((_, steal)) => {
                c.steal_frozen.store(true, Ordering::Relaxed);
                log::warn!(
                    "pvops: kvm: steal time went backwards ({} ns after {} ns); time.steal_ns frozen at {} ns",
                    steal,
                    last,
                    last
                );
                last
            }
            // An AP without its own area (its registration failed) has none.
            Err(shared::StealError::NotSet) => 0,
            Err(e) => {
                c.steal_frozen.store(true, Ordering::Relaxed);
                log::warn!(
                    "pvops: kvm: steal time unreadable ({:?}); time.steal_ns frozen at {} ns",
                    e,
                    last
                );
                last
            }
        }
    }

    /// `irq.eoi`: when the host set `KVM_PV_EOI_ENABLED`, clear it and skip
    /// the EOI write (the host does the EOI); else `native_eoi`. A host
    /// that never sets the flag in [`PV_EOI_PATIENCE`] interrupts is given
    /// up on (logged once; `disable` turns the MSR off): plain EOIs from
    /// then on.
    pub(crate) fn eoi(&self, native_eoi: impl FnOnce(), disable: impl FnOnce()) {
        let c = self.here();
        if let Some(word) = c.eoi_word.get() {
            if shared::take_pv_eoi(word) {
                c.eoi_seen.store(true, Ordering::Relaxed);
                self.eoi_skipped.fetch_add(1, Ordering::Relaxed);
                return;
            }
            if !c.eoi_seen.load(Ordering::Relaxed)
                && c.eoi_without_flag.fetch_add(1, Ordering::Relaxed) + 1 >= PV_EOI_PATIENCE
            {
                // SAFETY: unpublishing (null) is always sound.
                unsafe { c.eoi_word.set(core::ptr::null_mut()) };
                disable();
                log::warn!(
                    "pvops: kvm: the host never set the PV EOI flag in {} interrupts; PV EOI disabled, plain EOI writes",
                    PV_EOI_PATIENCE
                );
            }
        }
        native_eoi();
    }

    fn tsc_frequency(&self) -> TscFrequency {
        TscFrequency {
            khz: self.tsc_khz.load(Ordering::Relaxed),
            source: if self.tsc_from_leaf.load(Ordering::Relaxed) {
                TscSource::TimingLeaf
            } else {
                TscSource::Pvclock
            },
        }
    }

    fn summary(&self) -> Option<Summary> {
        let base = self.base.load(Ordering::Relaxed);
        if base == 0 {
            return None;
        }
        let flags = self.flags.load(Ordering::Relaxed);
        let o = self.offer_bits.load(Ordering::Relaxed);
        let features = Features(self.features.load(Ordering::Relaxed));
        let hints = Hints(self.hints.load(Ordering::Relaxed));
        Some(Summary {
            base,
            features,
            hints,
            hypercall: if self.vmmcall.load(Ordering::Relaxed) {
                HypercallInsn::Vmmcall
            } else {
                HypercallInsn::Vmcall
            },
            clock: self.clock.get().is_some(),
            stable: self.stable.load(Ordering::Relaxed),
            pvclock_khz: self.pvclock_khz.load(Ordering::Relaxed),
            steal: self.steal.get().is_some(),
            pv_eoi: self.eoi_word.get().is_some(),
            eoi_skipped: self.eoi_skipped.load(Ordering::Relaxed),
            pv_ipi: flags & F_PV_IPI != 0,
            io_delay: flags & F_IO_DELAY != 0,
            pv_spinlocks: flags & F_PV_SPINLOCKS != 0,
            pv_tlb_flush: flags & F_PV_TLB_FLUSH != 0,
            tlb_flagged: self.tlb_flagged.load(Ordering::Relaxed),
            offer: Offer {
                sched_yield: o & O_SCHED_YIELD != 0,
                pv_spinlocks: o & O_SPINLOCKS != 0,
                pv_tlb_flush: o & O_TLB_FLUSH != 0,
                ..Offer::from_leaves(
                    &Leaves {
                        base,
                        features,
                        hints,
                    },
                    1,
                    false,
                )
            },
        })
    }
}

static STATE: State = State::new();

/// What the installed KVM backend uses; `None` when it was not installed.
pub fn summary() -> Option<Summary> {
    STATE.summary()
}

/// The steal-time area's `preempted` byte (`KVM_VCPU_PREEMPTED`, for the
/// `lock.vcpu_is_preempted`); `None` without steal time.
pub fn preempted() -> Option<u8> {
    shared::read_preempted(&STATE.steal)
}

/// Hypercalls turned off by `kvm.hypercalls=off`.
static HYPERCALLS_OFF: AtomicBool = AtomicBool::new(false);

/// Makes the backend issue no hypercall at all (`kvm.hypercalls=off` on
/// the command line, before `init`): PV IPIs, PV spinlock kicks and PV
/// sched yield then stay native, each with the reason logged.
pub fn disable_hypercalls() {
    HYPERCALLS_OFF.store(true, Ordering::Relaxed);
}

/// `KVM_HC_SCHED_YIELD` to the vCPU with APIC ID `apic_id` (for the SMP
/// work; only when [`Offer::sched_yield`]). Returns KVM's result.
pub fn sched_yield(apic_id: u32) -> i64 {
    hypercall::call(hc::SCHED_YIELD, [u64::from(apic_id), 0, 0, 0])
}

/// `KVM_HC_KICK_CPU` for the halted vCPU with APIC ID `apic_id` (for the
/// PV spinlocks, `lock.kick`; only when [`Offer::pv_spinlocks`]).
pub fn kick_cpu(apic_id: u32) -> i64 {
    hypercall::call(hc::KICK_CPU, [0, u64::from(apic_id), 0, 0])
}

fn native_stays(entry: &str, why: &str) {
    log::info!("pvops: kvm: {} stays native: {}", entry, why);
}

/// Why a pvclock is not usable, from a consistent snapshot.
pub fn pvclock_problem(t: &VcpuTimeInfo) -> Option<&'static str> {
    if t.version == 0 {
        Some("kvmclock area never written by the host (version 0)")
    } else if t.tsc_to_system_mul == 0 {
        Some("kvmclock TSC scale is 0")
    } else if t.tsc_khz() == 0 {
        Some("kvmclock TSC scale gives 0 kHz")
    } else if !crate::tsc::plausible_khz(t.tsc_khz()) {
        Some("kvmclock TSC scale gives an implausible frequency (below 10 MHz or above 100 GHz)")
    } else {
        None
    }
}

/// The whole setup against `hw`, with `page` the shared page (if the
/// kernel had one) and `leaf_khz` the TSC frequency of the timing leaf.
pub(crate) fn setup(
    hw: &mut dyn Hw,
    leaves: &Leaves,
    offer: &Offer,
    page: Option<SharedPage>,
    leaf_khz: Option<u64>,
    patch: &mut Patch,
    state: &State,
) {
    let names = abi::Features::NAMES;
    let mut listed = 0;
    for (f, name) in names {
        if leaves.features.contains(f) {
            log::debug!("pvops: kvm: feature {}", name);
            listed += 1;
        }
    }
    log::info!(
        "pvops: kvm: base {:#x}, features {:#x} ({} named), hints {:#x}",
        leaves.base,
        leaves.features.0,
        listed,
        leaves.hints.0
    );
    state.base.store(leaves.base, Ordering::Relaxed);
    state.features.store(leaves.features.0, Ordering::Relaxed);
    state.hints.store(leaves.hints.0, Ordering::Relaxed);
    let mut offer_bits = 0;
    for (on, bit) in [
        (offer.sched_yield, O_SCHED_YIELD),
        (offer.pv_spinlocks, O_SPINLOCKS),
        (offer.pv_tlb_flush, O_TLB_FLUSH),
    ] {
        if on {
            offer_bits |= bit;
        }
    }
    state.offer_bits.store(offer_bits, Ordering::Relaxed);

    // 1. io_delay.
    if offer.nop_io_delay {
        patch.set(slot::CPU_IO_DELAY, io_delay);
        state.flags.fetch_or(F_IO_DELAY, Ordering::Relaxed);
    } else {
        native_stays("cpu.io_delay", "KVM_FEATURE_NOP_IO_DELAY not offered");
    }

    // 2. kvmclock.
    match (offer.clock, page) {
        (None, _) => native_stays(
            "time.monotonic_ns",
            "neither KVM_FEATURE_CLOCKSOURCE2 nor KVM_FEATURE_CLOCKSOURCE",
        ),
        (Some(_), None) => native_stays("time.monotonic_ns", "no page for the kvmclock area"),
        (Some(which), Some(p)) => match kvmclock(hw, which, &p, offer, state) {
            Ok(khz) => {
                patch.set(slot::TIME_MONOTONIC_NS, monotonic_ns);
                let (khz, from_leaf) = match leaf_khz {
                    Some(l) if l != 0 => {
                        if l.abs_diff(khz) > 1 {
                            log::warn!(
                                "pvops: kvm: timing leaf says {} kHz, kvmclock {} kHz; the leaf wins",
                                l,
                                khz
                            );
                        }
                        (l, true)
                    }
                    _ => (khz, false),
                };
                state.tsc_khz.store(khz, Ordering::Relaxed);
                state.tsc_from_leaf.store(from_leaf, Ordering::Relaxed);
                patch.set(slot::TIME_TSC_FREQUENCY, tsc_frequency);
            }
            Err(why) => {
                // Stop the host from writing an area nobody reads.
                let _ = hw.write_msr(which.system_time(), 0);
                native_stays("time.monotonic_ns and time.tsc_frequency", why);
            }
        },
    }

    // 3. Steal time.
    match (offer.steal_time, page) {
        (false, _) => native_stays("time.steal_ns", "KVM_FEATURE_STEAL_TIME not offered"),
        (true, None) => native_stays("time.steal_ns", "no page for the steal-time area"),
        (true, Some(p)) => match steal_time(hw, &p, state) {
            Ok(()) => patch.set(slot::TIME_STEAL_NS, steal_ns),
            Err(why) => {
                let _ = hw.write_msr(m::STEAL_TIME, 0);
                native_stays("time.steal_ns", why);
            }
        },
    }

    // 4. PV EOI.
    match (offer.pv_eoi, page) {
        (false, _) => native_stays("irq.eoi", "KVM_FEATURE_PV_EOI not offered"),
        (true, None) => native_stays("irq.eoi", "no page for the PV EOI word"),
        (true, Some(p)) => {
            let word = shared::at::<u32>(p.virt.as_ptr(), shared::PV_EOI_OFFSET);
            let gpa = p.phys + shared::PV_EOI_OFFSET as u64;
            match hw.write_msr(m::PV_EOI_EN, m::pv_eoi(gpa)) {
                Ok(()) => {
                    // SAFETY: 4-byte aligned, inside the lent page.
                    unsafe { state.eoi_word.set(word) };
                    patch.set(slot::IRQ_EOI, eoi);
                }
                Err(why) => native_stays("irq.eoi", why),
            }
        }
    }

    // 5. PV IPI.
    if offer.pv_ipi {
        // An empty bitmap: validated, nothing delivered, returns 0 CPUs.
        let rc = hw.hypercall(hc::SEND_IPI, [0, 0, 0, abi::ipi_icr_fixed(0xff)]);
        if rc >= 0 {
            patch.set(slot::IRQ_SEND_IPI_MASK, send_ipi_mask);
            state.flags.fetch_or(F_PV_IPI, Ordering::Relaxed);
        } else {
            log::warn!(
                "pvops: kvm: probe KVM_HC_SEND_IPI answered {}",
                abi::err::name(rc)
            );
            native_stays("irq.send_ipi_mask", "KVM_HC_SEND_IPI failed");
        }
    } else {
        native_stays(
            "irq.send_ipi_mask",
            "KVM_FEATURE_PV_SEND_IPI not offered, or one CPU (kvm.c pv_ipi_supported)",
        );
    }

    // 6. PV spinlocks (kvm.c `kvm_spinlock_init`): wait halts, kick is
    // KVM_HC_KICK_CPU; vcpu_is_preempted reads the steal-time flag.
    if offer.pv_spinlocks {
        patch.set(slot::LOCK_WAIT, lock_wait);
        patch.set(slot::LOCK_KICK, lock_kick);
        state.flags.fetch_or(F_PV_SPINLOCKS, Ordering::Relaxed);
    } else {
        native_stays(
            "lock.wait and lock.kick",
            "KVM_FEATURE_PV_UNHALT not offered, KVM_HINTS_REALTIME, or one CPU (kvm.c kvm_spinlock_init)",
        );
    }
    let steal_on = state.steal.get().is_some();
    if steal_on && offer.smp {
        patch.set(slot::LOCK_VCPU_IS_PREEMPTED, vcpu_is_preempted);
    }
    // 7. PV TLB flush (kvm.c `pv_tlb_flush_supported`, `kvm_flush_tlb_multi`):
    // needs the steal-time areas, whose `preempted` byte carries the flag.
    if offer.pv_tlb_flush && steal_on {
        patch.set(slot::MMU_FLUSH_REMOTE, flush_remote);
        state.flags.fetch_or(F_PV_TLB_FLUSH, Ordering::Relaxed);
    } else {
        native_stays(
            "mmu.flush_remote",
            "KVM_FEATURE_PV_TLB_FLUSH not offered (or no steal time, KVM_HINTS_REALTIME, MWAIT, one CPU)",
        );
    }

    // Decoded only.
    log::info!(
        "pvops: kvm: decoded: pv-unhalt {}, pv-tlb-flush {}, pv-sched-yield {}, poll-control {}, async-pf-int {} (PV spinlocks {}, PV TLB flush {}, PV sched yield {} with this kernel's CPUs)",
        leaves.features.contains(Features::PV_UNHALT),
        leaves.features.contains(Features::PV_TLB_FLUSH),
        leaves.features.contains(Features::PV_SCHED_YIELD),
        leaves.features.contains(Features::POLL_CONTROL),
        leaves.features.contains(Features::ASYNC_PF_INT),
        if offer.pv_spinlocks { "usable" } else { "not used" },
        if offer.pv_tlb_flush { "usable" } else { "not used" },
        if offer.sched_yield { "usable" } else { "not used" },
    );
    for entry in patch.replaced() {
        log::info!("pvops: kvm: owns {}", entry);
    }
}

fn kvmclock(
    hw: &mut dyn Hw,
    which: ClockMsr,
    page: &SharedPage,
    offer: &Offer,
    state: &State,
) -> Result<u64, &'static str> {
    let area = shared::at::<VcpuTimeInfo>(page.virt.as_ptr(), shared::CLOCK_OFFSET);
    let gpa = page.phys + shared::CLOCK_OFFSET as u64;
    hw.write_msr(which.system_time(), m::system_time(gpa))?;
    state
        .clock_msr
        .store(which.system_time(), Ordering::Relaxed);
    // SAFETY: 8-byte aligned, inside the page lent for good.
    unsafe { state.clock.set(area) };
    let unpublish = || {
        // SAFETY: unpublishing (null) is always sound.
        unsafe { state.clock.set(core::ptr::null_mut()) }
    };
    let Some((t, _)) = shared::read_clock(&state.clock, SETUP_TRIES) else {
        unpublish();
        return Err("kvmclock version stuck odd");
    };
    if let Some(why) = pvclock_problem(&t) {
        unpublish();
        return Err(why);
    }
    let khz = t.tsc_khz();
    let stable = offer.stable_bit && t.flags & FLAG_TSC_STABLE != 0;
    state.stable.store(stable, Ordering::Relaxed);
    state.pvclock_khz.store(khz, Ordering::Relaxed);
    log::info!(
        "pvops: kvm: kvmclock via MSR {:#x}: version {}, TSC {} kHz (mul {:#x}, shift {}), flags {:#x}, {}",
        which.system_time(),
        t.version,
        khz,
        t.tsc_to_system_mul,
        t.tsc_shift,
        t.flags,
        if stable {
            "stable"
        } else if offer.stable_bit {
            "not marked stable by the host: kept monotonic in software"
        } else {
            "no KVM_FEATURE_CLOCKSOURCE_STABLE_BIT: kept monotonic in software"
        }
    );
    Ok(khz)
}

fn steal_time(hw: &mut dyn Hw, page: &SharedPage, state: &State) -> Result<(), &'static str> {
    register_steal(hw, page, &state.steal, &state.last_steal)
}

/// Registers the steal-time area of `page` with `MSR_KVM_STEAL_TIME` on
/// the running CPU and waits (bounded) for the host's first record; on
/// success `area` is published and `last` holds the first value.
fn register_steal(
    hw: &mut dyn Hw,
    page: &SharedPage,
    area: &Area<StealTime>,
    last: &AtomicU64,
) -> Result<(), &'static str> {
    let p = shared::at::<StealTime>(page.virt.as_ptr(), shared::STEAL_OFFSET);
    let gpa = page.phys + shared::STEAL_OFFSET as u64;
    hw.write_msr(m::STEAL_TIME, m::steal_time(gpa))?;
    // SAFETY: 64-byte aligned, inside the page lent for good.
    unsafe { area.set(p) };
    let unpublish = || {
        // SAFETY: unpublishing (null) is always sound.
        unsafe { area.set(core::ptr::null_mut()) }
    };
    // KVM records steal time on the vCPU's next entry after the WRMSR;
    // under a nested KVM the first record was seen a few dozen reads
    // later. Wait for it a bounded number of TSC cycles.
    let t0 = crate::tsc::ordered();
    let mut first = shared::read_steal(area, SETUP_TRIES);
    while matches!(first, Ok((0, _))) && crate::tsc::ordered().wrapping_sub(t0) < STEAL_WAIT_CYCLES
    {
        core::hint::spin_loop();
        first = shared::read_steal(area, SETUP_TRIES);
    }
    match first {
        Ok((0, _)) => {
            unpublish();
            Err("steal-time area never written by the host (version 0)")
        }
        Ok((_, steal)) => {
            last.store(steal, Ordering::Relaxed);
            Ok(())
        }
        Err(_) => {
            unpublish();
            Err("steal-time version stuck odd")
        }
    }
}

/// Registers an AP's kvmclock area (of `page`) through `msr` and checks
/// that it settles as the boot CPU's did; publishes it in `area`.
fn register_clock(
    hw: &mut dyn Hw,
    msr: u32,
    page: &SharedPage,
    area: &Area<VcpuTimeInfo>,
) -> Result<(), &'static str> {
    let p = shared::at::<VcpuTimeInfo>(page.virt.as_ptr(), shared::CLOCK_OFFSET);
    let gpa = page.phys + shared::CLOCK_OFFSET as u64;
    hw.write_msr(msr, m::system_time(gpa))?;
    // SAFETY: 8-byte aligned, inside the page lent for good.
    unsafe { area.set(p) };
    let problem = match shared::read_clock(area, SETUP_TRIES) {
        None => Some("kvmclock version stuck odd"),
        Some((t, _)) => pvclock_problem(&t),
    };
    match problem {
        None => Ok(()),
        Some(why) => {
            // SAFETY: unpublishing (null) is always sound.
            unsafe { area.set(core::ptr::null_mut()) };
            Err(why)
        }
    }
}

/// [`Backend::init_cpu`] on `hw`: the AP's own kvmclock, steal-time area
/// and PV EOI word, for each one the boot CPU uses; what fails on this CPU
/// is recorded in `fallbacks` (its clock then reads the boot CPU's
/// kvmclock, kept monotonic; its steal time is 0; its EOIs are writes).
pub(crate) fn setup_cpu(
    hw: &mut dyn Hw,
    cpu: Cpu,
    page: Option<SharedPage>,
    fallbacks: &mut Fallbacks,
    state: &State,
) {
    let Some(ap) = state.aps.get(cpu.index).filter(|_| cpu.index != 0) else {
        return;
    };
    let clock_msr = state.clock_msr.load(Ordering::Relaxed);
    let wants = (
        state.clock.get().is_some() && clock_msr != 0,
        state.steal.get().is_some(),
        state.eoi_word.get().is_some(),
    );
    let Some(page) = page else {
        for (on, entry) in [
            (wants.0, "time.monotonic_ns"),
            (wants.1, "time.steal_ns"),
            (wants.2, "irq.eoi"),
        ] {
            if on {
                fallbacks.push(cpu.index, entry, "no page for this CPU's KVM areas");
            }
        }
        return;
    };
    if wants.0 {
        if let Err(why) = register_clock(hw, clock_msr, &page, &ap.clock) {
            let _ = hw.write_msr(clock_msr, 0);
            fallbacks.push(cpu.index, "time.monotonic_ns", why);
        }
    }
    if wants.1 {
        if let Err(why) = register_steal(hw, &page, &ap.steal, &ap.last_steal) {
            let _ = hw.write_msr(m::STEAL_TIME, 0);
            fallbacks.push(cpu.index, "time.steal_ns", why);
        }
    }
    if wants.2 {
        let word = shared::at::<u32>(page.virt.as_ptr(), shared::PV_EOI_OFFSET);
        let gpa = page.phys + shared::PV_EOI_OFFSET as u64;
        match hw.write_msr(m::PV_EOI_EN, m::pv_eoi(gpa)) {
            // SAFETY: 4-byte aligned, inside the lent page.
            Ok(()) => unsafe { ap.eoi_word.set(word) },
            Err(why) => fallbacks.push(cpu.index, "irq.eoi", why),
        }
    }
}

// ---------------------------------------------------------------------------
// Table entries
// ---------------------------------------------------------------------------

/// `cpu.io_delay`: KVM says PIO needs no delay.
extern "C" fn io_delay() {}

extern "C" fn monotonic_ns() -> u64 {
    STATE.clock_ns()
}

/// `time.tsc_frequency`: the timing leaf base+0x10 when the host publishes
/// one (a whole number of kHz stated by the hypervisor), else the pvclock
/// scale (`(10^6 << 32) / mul`, shifted: a rounded 32.32 fraction, exact
/// to about 1 kHz; Linux `kvm_get_tsc_khz`).
extern "C" fn tsc_frequency() -> TscFrequency {
    STATE.tsc_frequency()
}

extern "C" fn steal_ns() -> u64 {
    STATE.steal_ns()
}

extern "C" fn eoi() {
    STATE.eoi(
        || pvops::native::irq::eoi(),
        || {
            // SAFETY: the MSR was accepted at setup; 0 disables PV EOI.
            unsafe { pvops::native::cpu::write_msr(m::PV_EOI_EN, 0) }
        },
    );
}

/// `irq.send_ipi_mask`: one `KVM_HC_SEND_IPI` for the whole mask (64 IDs
/// fit its 128-bit window); native ICR writes if KVM refuses.
extern "C" fn send_ipi_mask(cpus: u64, vector: u8) {
    let Some((lo, hi, min)) = abi::send_ipi_args(cpus) else {
        return;
    };
    let rc = hypercall::call(hc::SEND_IPI, [lo, hi, min, abi::ipi_icr_fixed(vector)]);
    if rc < 0 {
        log::error!(
            "pvops: kvm: KVM_HC_SEND_IPI failed ({}); native IPIs",
            abi::err::name(rc)
        );
        pvops::native::irq::send_ipi_mask(cpus, vector);
    }
}

/// `lock.wait` (kvm.c `kvm_wait`): with interrupts off, re-check the word
/// and halt; KVM wakes a halted vCPU on `KVM_HC_KICK_CPU` even with
/// interrupts off (`pv_unhalted`), and a kick sent before the HLT makes it
/// return at once. With interrupts on, STI;HLT lets any interrupt end it.
extern "C" fn lock_wait(word: &core::sync::atomic::AtomicU32, expected: u32) {
    let flags = pvops::native::irq::save_flags();
    pvops::native::irq::disable();
    if word.load(Ordering::SeqCst) == expected {
        if flags & pvops::irq::FLAGS_IF != 0 {
            pvops::native::irq::safe_halt();
        } else {
            pvops::native::cpu::halt();
        }
    }
    pvops::native::irq::restore_flags(flags);
}

/// `lock.kick`: `KVM_HC_KICK_CPU` (hypercalls.rst: a0 flags 0, a1 the
/// target's APIC ID).
extern "C" fn lock_kick(cpu: u32) {
    if let Some(apic) = pvops::percpu::apic_id(cpu as usize) {
        let rc = kick_cpu(apic);
        if rc < 0 {
            log::warn!(
                "pvops: kvm: KVM_HC_KICK_CPU({}) answered {}",
                apic,
                abi::err::name(rc)
            );
        }
    }
}

/// `lock.vcpu_is_preempted`: the target CPU's steal-time `preempted` flag
/// (kvm.c `__kvm_vcpu_is_preempted`).
extern "C" fn vcpu_is_preempted(cpu: u32) -> bool {
    let c = STATE.cpu(cpu as usize);
    shared::read_preempted(c.steal).is_some_and(|p| p & abi::VCPU_PREEMPTED != 0)
}

/// `mmu.flush_remote` with KVM's PV TLB flush (kvm.c `kvm_flush_tlb_multi`):
/// a target whose vCPU is preempted gets `KVM_VCPU_FLUSH_TLB` set in its
/// steal-time area (KVM flushes its TLB before it runs again) instead of
/// an IPI that would have to wait for it; the others get the native path.
extern "C" fn flush_remote(cpus: u64, target: pvops::mmu::FlushTarget) {
    let me = pvops::percpu::apic_id(pvops::percpu::current());
    let mut rest = cpus;
    let mut flagged = 0u32;
    let mut bits = cpus;
    while bits != 0 {
        let apic = bits.trailing_zeros();
        bits &= bits - 1;
        if Some(apic) == me {
            continue;
        }
        let Some(idx) = pvops::percpu::index_of_apic(apic) else {
            continue;
        };
        if let Some(p) = STATE.cpu(idx).steal.get() {
            if shared::flag_flush_if_preempted(p) {
                rest &= !(1u64 << apic);
                flagged += 1;
            }
        }
    }
    if flagged != 0 {
        STATE
            .tlb_flagged
            .fetch_add(u64::from(flagged), Ordering::Relaxed);
    }
    pvops::native::mmu::flush_remote(rest, target);
}

impl Backend for Kvm {
    fn name(&self) -> &'static str {
        "kvm"
    }

    fn init_cpu(&self, cpu: Cpu, fallbacks: &mut Fallbacks, platform: &mut dyn Platform) {
        if STATE.base.load(Ordering::Relaxed) == 0 {
            return;
        }
        let needs_page = STATE.clock.get().is_some()
            || STATE.steal.get().is_some()
            || STATE.eoi_word.get().is_some();
        let page = if needs_page {
            platform.alloc_shared_page()
        } else {
            None
        };
        setup_cpu(&mut Real { platform }, cpu, page, fallbacks, &STATE);
    }

    fn description(&self) -> &'static str {
        "KVM: kvmclock clock and TSC frequency, PV EOI, steal time, PV IPIs by hypercall, no-op io_delay"
    }

    fn detect(&self, env: &Environment<'_>) -> Option<Detection> {
        find_base(env.probe).map(|base| Detection {
            priority: base,
            reason: "\"KVMKVMKVM\" CPUID signature",
            base: Some(base),
        })
    }

    fn install(
        &self,
        env: &Environment<'_>,
        patch: &mut Patch,
        platform: &mut dyn Platform,
    ) -> Result<(), SetupError> {
        let base = find_base(env.probe).ok_or(SetupError {
            step: "detect",
            detail: "no KVM signature",
        })?;
        let leaves = read_leaves(env.cpuid, base);
        let mwait = env.cpuid.cpuid(1, 0).ecx & (1 << 3) != 0;
        let cpus = platform.possible_cpus().clamp(1, MAX_CPUS) as u32;
        let mut offer = Offer::from_leaves(&leaves, cpus, mwait);
        if HYPERCALLS_OFF.load(Ordering::Relaxed)
            && (offer.pv_ipi || offer.pv_spinlocks || offer.sched_yield)
        {
            log::info!(
                "pvops: kvm: hypercalls off (kvm.hypercalls=off): PV IPIs, PV spinlock kicks and PV sched yield stay native"
            );
            offer.pv_ipi = false;
            offer.pv_spinlocks = false;
            offer.sched_yield = false;
        }
        let insn = HypercallInsn::for_vendor(&env.probe.vendor_string);
        hypercall::set_insn(insn);
        STATE
            .vmmcall
            .store(insn == HypercallInsn::Vmmcall, Ordering::Relaxed);
        log::info!(
            "pvops: kvm: hypercalls by {} (CPU vendor \"{}\")",
            insn.name(),
            core::str::from_utf8(&env.probe.vendor_string).unwrap_or("?")
        );
        let needs_page = offer.clock.is_some() || offer.steal_time || offer.pv_eoi;
        let page = if needs_page {
            platform.alloc_shared_page()
        } else {
            None
        };
        let leaf_khz = env
            .probe
            .timing_leaf()
            .map(|t| u64::from(t.tsc_khz))
            .filter(|_| {
                // The leaf must be KVM's own (inside its block).
                env.probe
                    .interfaces
                    .iter()
                    .any(|i| i.base == base && i.has_leaf(base + 0x10))
            });
        setup(
            &mut Real { platform },
            &leaves,
            &offer,
            page,
            leaf_khz,
            patch,
            &STATE,
        );
        Ok(())
    }
}

#[cfg(test)]
mod fuzz;
#[cfg(test)]
mod tests;
