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
//! PV unhalt (`KVM_HC_KICK_CPU`), PV TLB flush and PV sched yield are
//! decoded and reported with the gates Linux applies (they need more than
//! one vCPU; the SMP work sets them up per CPU).
//!
//! An MSR write KVM refuses is caught through
//! [`Platform::write_msr_catching_gp`] when the kernel can (the example
//! kernel can), and every accepted write is read back: a mismatch is a
//! refusal too.

mod hypercall;
mod shared;

use crate::{Backend, Cpu, Detection, Environment, Fallbacks, Platform, SetupError, SharedPage};
use core::sync::atomic::{
    AtomicBool, AtomicPtr, AtomicU16, AtomicU32, AtomicU64, AtomicU8, Ordering,
};
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
    /// More than one CPU (kvm.c: `num_possible_cpus() > 1`).
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
    /// The boot CPU's APIC ID.
    fn boot_apic_id(&mut self) -> u32;
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

    fn boot_apic_id(&mut self) -> u32 {
        pvops::percpu::apic_id(0).unwrap_or_else(pvops::native::apic::id)
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
    /// CPUs set up (the boot CPU and every AP through `init_cpu`).
    pub cpus: u32,
    /// CPUs reading their own kvmclock area (the others read the boot
    /// CPU's: see [`Backend::init_cpu`]).
    pub clock_cpus: u32,
    /// CPUs with their own steal-time area.
    pub steal_cpus: u32,
    /// CPUs with their own PV EOI word (and not given up).
    pub eoi_cpus: u32,
    /// `mmu.flush_remote` is KVM's PV TLB flush.
    pub pv_tlb_flush: bool,
    /// Remote flushes through it so far.
    pub tlb_flushes: u64,
    /// Target CPUs flagged `KVM_VCPU_FLUSH_TLB` instead of interrupted.
    pub tlb_flagged: u64,
    /// `lock.wait` / `lock.kick` are KVM's halt and `KVM_HC_KICK_CPU`.
    pub pv_spinlocks: bool,
    /// `lock.vcpu_is_preempted` reads the steal-time `preempted` flag.
    pub vcpu_is_preempted: bool,
    /// Halts in `lock.wait` so far.
    pub lock_halts: u64,
    /// `KVM_HC_KICK_CPU` calls so far.
    pub lock_kicks: u64,
    /// What the CPUID leaves offer, with the gates for this kernel's CPUs
    /// (PV IPI, sched yield, spinlocks, TLB flush).
    pub offer: Offer,
}

/// One CPU's areas and what its table entries keep between calls. Padded
/// to a cache line so that CPUs do not share one.
#[repr(align(64))]
pub(crate) struct PerCpu {
    /// The pvclock this CPU reads: its own, or the boot CPU's when its own
    /// could not be registered ([`PerCpu::own_clock`] false).
    clock: Area<VcpuTimeInfo>,
    own_clock: AtomicBool,
    /// The last reading on this CPU (the stable-bit check).
    last_ns: AtomicU64,
    steal: Area<StealTime>,
    last_steal: AtomicU64,
    steal_frozen: AtomicBool,
    eoi_word: Area<u32>,
    eoi_seen: AtomicBool,
    eoi_without_flag: AtomicU32,
}

impl PerCpu {
    const fn new() -> PerCpu {
        PerCpu {
            clock: Area::new(),
            own_clock: AtomicBool::new(false),
            last_ns: AtomicU64::new(0),
            steal: Area::new(),
            last_steal: AtomicU64::new(0),
            steal_frozen: AtomicBool::new(false),
            eoi_word: Area::new(),
            eoi_seen: AtomicBool::new(false),
            eoi_without_flag: AtomicU32::new(0),
        }
    }
}

/// The backend's runtime state: every CPU's published areas and what the
/// table entries keep between calls.
pub(crate) struct State {
    cpus: [PerCpu; MAX_CPUS],
    /// The lent pages of the per-CPU areas, [`shared::CPUS_PER_PAGE`] CPUs
    /// each (physical address, 0 = none yet; and the mapping).
    page_phys: [AtomicU64; shared::PAGES],
    page_virt: [AtomicPtr<u8>; shared::PAGES],
    stable: AtomicBool,
    /// The last reading of any CPU (the software guard without the stable
    /// bit).
    last_ns: AtomicU64,
    tsc_khz: AtomicU64,
    tsc_from_leaf: AtomicBool,
    pvclock_khz: AtomicU64,
    eoi_skipped: AtomicU64,
    tlb_flagged: AtomicU64,
    tlb_flushes: AtomicU64,
    lock_halts: AtomicU64,
    lock_kicks: AtomicU64,
    base: AtomicU32,
    features: AtomicU32,
    hints: AtomicU32,
    vmmcall: AtomicBool,
    flags: AtomicU16,
    offer_bits: AtomicU8,
    /// CPUs set up ([`setup`] and [`setup_cpu`]).
    cpus_up: AtomicU32,
}

const F_IO_DELAY: u16 = 1 << 0;
const F_PV_IPI: u16 = 1 << 1;
/// kvmclock owns the clock (from the boot CPU's set-up on).
const F_CLOCK: u16 = 1 << 2;
/// ... through the old MSR 0x12.
const F_CLOCK_OLD: u16 = 1 << 3;
const F_STEAL: u16 = 1 << 4;
const F_EOI: u16 = 1 << 5;
const F_TLB_FLUSH: u16 = 1 << 6;
const F_SPINLOCKS: u16 = 1 << 7;
const F_PREEMPTED: u16 = 1 << 8;
const O_SCHED_YIELD: u8 = 1 << 0;
const O_SPINLOCKS: u8 = 1 << 1;
const O_TLB_FLUSH: u8 = 1 << 2;
const O_SMP: u8 = 1 << 3;

impl State {
    pub(crate) const fn new() -> State {
        State {
            cpus: [const { PerCpu::new() }; MAX_CPUS],
            page_phys: [const { AtomicU64::new(0) }; shared::PAGES],
            page_virt: [const { AtomicPtr::new(core::ptr::null_mut()) }; shared::PAGES],
            stable: AtomicBool::new(false),
            last_ns: AtomicU64::new(0),
            tsc_khz: AtomicU64::new(0),
            tsc_from_leaf: AtomicBool::new(false),
            pvclock_khz: AtomicU64::new(0),
            eoi_skipped: AtomicU64::new(0),
            tlb_flagged: AtomicU64::new(0),
            tlb_flushes: AtomicU64::new(0),
            lock_halts: AtomicU64::new(0),
            lock_kicks: AtomicU64::new(0),
            base: AtomicU32::new(0),
            features: AtomicU32::new(0),
            hints: AtomicU32::new(0),
            vmmcall: AtomicBool::new(false),
            flags: AtomicU16::new(0),
            offer_bits: AtomicU8::new(0),
            cpus_up: AtomicU32::new(0),
        }
    }

    fn has(&self, flag: u16) -> bool {
        self.flags.load(Ordering::Relaxed) & flag != 0
    }

    /// Whether the boot CPU owns an entry that needs per-CPU areas.
    fn wants_areas(&self) -> bool {
        self.has(F_CLOCK) || self.has(F_STEAL) || self.has(F_EOI)
    }

    fn cpu(&self, index: usize) -> &PerCpu {
        &self.cpus[index % MAX_CPUS]
    }

    /// The lent page of `cpu`'s group, if there is one yet.
    fn page_of(&self, cpu: usize) -> Option<SharedPage> {
        let g = (cpu % MAX_CPUS) / shared::CPUS_PER_PAGE;
        let phys = self.page_phys[g].load(Ordering::Acquire);
        let virt = core::ptr::NonNull::new(self.page_virt[g].load(Ordering::Acquire))?;
        (phys != 0).then_some(SharedPage { phys, virt })
    }

    fn set_page(&self, cpu: usize, p: SharedPage) {
        let g = (cpu % MAX_CPUS) / shared::CPUS_PER_PAGE;
        self.page_virt[g].store(p.virt.as_ptr(), Ordering::Release);
        self.page_phys[g].store(p.phys, Ordering::Release);
    }

    /// `time.monotonic_ns` on the running CPU.
    pub(crate) fn clock_ns(&self) -> u64 {
        self.clock_ns_on(
            pvops::percpu::current(),
            HOT_TRIES,
            crate::tsc::ordered,
            core::hint::spin_loop,
        )
    }

    /// [`State::clock_ns_on`] on CPU 0 (host tests model the host rewriting
    /// the page from the TSC reader and the wait).
    #[cfg(test)]
    pub(crate) fn clock_ns_with(
        &self,
        tries: u32,
        tsc: impl FnMut() -> u64,
        spin: impl FnMut(),
    ) -> u64 {
        self.clock_ns_on(0, tries, tsc, spin)
    }

    /// `time.monotonic_ns` on CPU `cpu`: its pvclock's system time, never
    /// below an earlier reading.
    ///
    /// With a stable pvclock KVM guarantees it monotonic across CPUs (one
    /// master clock, synchronised TSCs), so the check is per CPU: the last
    /// reading of this CPU, loaded *before* the TSC is read (so an
    /// interrupt on this CPU in between cannot look like a step back),
    /// compared with a plain load and store (no locked read-modify-write,
    /// no cache line shared between CPUs; Linux skips the check
    /// altogether). A reading below it means the host lied about the
    /// stable bit, which is then dropped for good (logged; found by the
    /// lying matrix's `pvclock-backwards` and the fuzz run
    /// `fuzz_kvmclock_lying_host`, docs/fuzzing.md): every CPU's last
    /// reading is folded into the shared last value. Without the stable
    /// bit, `fetch_max` on that shared value makes the clock hold across
    /// CPUs (Linux `pvclock_clocksource_read`'s last-value guard).
    pub(crate) fn clock_ns_on(
        &self,
        cpu: usize,
        tries: u32,
        tsc: impl FnMut() -> u64,
        spin: impl FnMut(),
    ) -> u64 {
        let c = self.cpu(cpu);
        let stable = self.stable.load(Ordering::Relaxed);
        let mine = c.last_ns.load(Ordering::Relaxed);
        let Some((t, tsc)) = shared::read_clock_with(&c.clock, tries, tsc, spin) else {
            return mine.max(self.last_ns.load(Ordering::Relaxed));
        };
        let now = t.ns_at(tsc);
        if stable {
            if now >= mine {
                c.last_ns.store(now, Ordering::Relaxed);
                return now;
            }
            // A stable-marked pvclock that went backwards: the host lied
            // about the stable bit. Kept monotonic in software from now on.
            if self.stable.swap(false, Ordering::Relaxed) {
                log::warn!(
                    "pvops: kvm: kvmclock marked stable went backwards ({} ns after {} ns on CPU {}); kept monotonic in software",
                    now,
                    mine,
                    cpu
                );
                for other in &self.cpus {
                    self.last_ns
                        .fetch_max(other.last_ns.load(Ordering::Relaxed), Ordering::Relaxed);
                }
            }
        }
        let now = now.max(mine);
        let prev = self.last_ns.fetch_max(now, Ordering::Relaxed);
        let v = now.max(prev);
        c.last_ns.store(v, Ordering::Relaxed);
        v
    }

    /// `time.steal_ns` on the running CPU.
    pub(crate) fn steal_ns(&self) -> u64 {
        self.steal_ns_on(pvops::percpu::current())
    }

    /// `time.steal_ns` on CPU `cpu`: its steal-time area's `steal`, never
    /// going backwards; 0 on a CPU whose area could not be registered. A
    /// host that moves it backwards (or whose version sticks odd) has it
    /// frozen at the last good value on that CPU, once logged.
    pub(crate) fn steal_ns_on(&self, cpu: usize) -> u64 {
        let c = self.cpu(cpu);
        if c.steal_frozen.load(Ordering::Relaxed) {
            return c.last_steal.load(Ordering::Relaxed);
        }
        let last = c.last_steal.load(Ordering::Relaxed);
        match shared::read_steal(&c.steal, HOT_TRIES) {
            Ok((_, steal)) if steal >= last => {
                c.last_steal.store(steal, Ordering::Relaxed);
                steal
            }
            Ok((_, steal)) => {
                c.steal_frozen.store(true, Ordering::Relaxed);
                log::warn!(
                    "pvops: kvm: steal time went backwards on CPU {} ({} ns after {} ns); time.steal_ns frozen at {} ns there",
                    cpu,
                    steal,
                    last,
                    last
                );
                last
            }
            Err(shared::StealError::NotSet) => 0,
            Err(e) => {
                c.steal_frozen.store(true, Ordering::Relaxed);
                log::warn!(
                    "pvops: kvm: steal time unreadable on CPU {} ({:?}); time.steal_ns frozen at {} ns there",
                    cpu,
                    e,
                    last
                );
                last
            }
        }
    }

    /// `irq.eoi` on the running CPU.
    pub(crate) fn eoi(&self, native_eoi: impl FnOnce(), disable: impl FnOnce()) {
        self.eoi_on(pvops::percpu::current(), native_eoi, disable)
    }

    /// `irq.eoi` on CPU `cpu`: when the host set `KVM_PV_EOI_ENABLED` in
    /// this CPU's word, clear it and skip the EOI write (the host does the
    /// EOI); else `native_eoi` (also on a CPU without a PV EOI word). A host
    /// that never sets the flag in [`PV_EOI_PATIENCE`] interrupts of a CPU
    /// is given up on there (logged once; `disable` turns that CPU's MSR
    /// off): plain EOIs from then on.
    pub(crate) fn eoi_on(&self, cpu: usize, native_eoi: impl FnOnce(), disable: impl FnOnce()) {
        let c = self.cpu(cpu);
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
                    "pvops: kvm: the host never set the PV EOI flag of CPU {} in {} interrupts; PV EOI disabled there, plain EOI writes",
                    cpu,
                    PV_EOI_PATIENCE
                );
            }
        }
        native_eoi();
    }

    /// Whether the vCPU of CPU `cpu` is preempted (its steal-time
    /// `preempted` byte has `KVM_VCPU_PREEMPTED`; false without its area).
    pub(crate) fn is_preempted(&self, cpu: usize) -> bool {
        cpu < MAX_CPUS
            && shared::read_preempted(&self.cpus[cpu].steal)
                .is_some_and(|p| p & abi::VCPU_PREEMPTED != 0)
    }

    /// The PV TLB flush's first half (Linux `kvm_flush_tlb_multi`): every
    /// CPU of `cpus` (a mask of APIC IDs) other than `me` whose vCPU is
    /// preempted gets `KVM_VCPU_FLUSH_TLB` (KVM flushes its TLB before it
    /// runs again) and leaves the mask; the rest is returned, for the
    /// native path (this CPU's flush and the kernel's IPIs).
    pub(crate) fn flag_preempted(
        &self,
        cpus: u64,
        me: Option<u32>,
        index_of: impl Fn(u32) -> Option<usize>,
    ) -> u64 {
        let mut rest = cpus;
        let mut m = cpus;
        while m != 0 {
            let apic = m.trailing_zeros();
            m &= m - 1;
            if Some(apic) == me {
                continue;
            }
            let Some(i) = index_of(apic).filter(|&i| i < MAX_CPUS) else {
                continue;
            };
            if shared::flag_flush_if_preempted(&self.cpus[i].steal) {
                rest &= !(1u64 << apic);
                self.tlb_flagged.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.tlb_flushes.fetch_add(1, Ordering::Relaxed);
        rest
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
        let up = (self.cpus_up.load(Ordering::Relaxed) as usize).min(MAX_CPUS);
        let count =
            |f: &dyn Fn(&PerCpu) -> bool| self.cpus[..up].iter().filter(|c| f(c)).count() as u32;
        Some(Summary {
            base,
            features,
            hints,
            hypercall: if self.vmmcall.load(Ordering::Relaxed) {
                HypercallInsn::Vmmcall
            } else {
                HypercallInsn::Vmcall
            },
            clock: self.cpus[0].clock.get().is_some(),
            stable: self.stable.load(Ordering::Relaxed),
            pvclock_khz: self.pvclock_khz.load(Ordering::Relaxed),
            steal: self.cpus[0].steal.get().is_some(),
            pv_eoi: self.cpus[0].eoi_word.get().is_some(),
            eoi_skipped: self.eoi_skipped.load(Ordering::Relaxed),
            pv_ipi: flags & F_PV_IPI != 0,
            io_delay: flags & F_IO_DELAY != 0,
            cpus: up as u32,
            clock_cpus: count(&|c| c.own_clock.load(Ordering::Relaxed)),
            steal_cpus: count(&|c| c.steal.get().is_some()),
            eoi_cpus: count(&|c| c.eoi_word.get().is_some()),
            pv_tlb_flush: flags & F_TLB_FLUSH != 0,
            tlb_flushes: self.tlb_flushes.load(Ordering::Relaxed),
            tlb_flagged: self.tlb_flagged.load(Ordering::Relaxed),
            pv_spinlocks: flags & F_SPINLOCKS != 0,
            vcpu_is_preempted: flags & F_PREEMPTED != 0,
            lock_halts: self.lock_halts.load(Ordering::Relaxed),
            lock_kicks: self.lock_kicks.load(Ordering::Relaxed),
            offer: Offer {
                sched_yield: o & O_SCHED_YIELD != 0,
                pv_spinlocks: o & O_SPINLOCKS != 0,
                pv_tlb_flush: o & O_TLB_FLUSH != 0,
                pv_ipi: o & O_SMP != 0 && features.contains(Features::PV_SEND_IPI),
                smp: o & O_SMP != 0,
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

/// The boot CPU's steal-time `preempted` byte (`KVM_VCPU_PREEMPTED`,
/// `KVM_VCPU_FLUSH_TLB`); `None` without steal time.
pub fn preempted() -> Option<u8> {
    shared::read_preempted(&STATE.cpus[0].steal)
}

/// Whether the vCPU of the CPU with index `cpu` ([`pvops::percpu`]) is
/// preempted, by its steal-time `preempted` flag (false without its area).
pub fn cpu_is_preempted(cpu: usize) -> bool {
    STATE.is_preempted(cpu)
}

/// `KVM_HC_SCHED_YIELD` to the vCPU with APIC ID `apic_id` (only when
/// [`Offer::sched_yield`]). Returns KVM's result.
pub fn sched_yield(apic_id: u32) -> i64 {
    hypercall::call(hc::SCHED_YIELD, [u64::from(apic_id), 0, 0, 0])
}

/// `KVM_HC_KICK_CPU` for the halted vCPU with APIC ID `apic_id` (only when
/// [`Offer::pv_spinlocks`]; `lock.kick` uses it).
pub fn kick_cpu(apic_id: u32) -> i64 {
    hypercall::call(hc::KICK_CPU, kick_args(apic_id))
}

/// `KVM_HC_KICK_CPU`'s arguments (hypercalls.rst: a0 flags, "reserved for
/// future use", 0; a1 the APIC ID of the vCPU to wake).
pub(crate) const fn kick_args(apic_id: u32) -> [u64; 4] {
    [0, apic_id as u64, 0, 0]
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

/// The whole setup of the boot CPU (CPU 0) against `hw`, with `page` the
/// shared page of the first group of CPUs (if the kernel had one) and
/// `leaf_khz` the TSC frequency of the timing leaf.
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
    state.cpus_up.store(1, Ordering::Relaxed);
    let mut offer_bits = 0;
    for (on, bit) in [
        (offer.sched_yield, O_SCHED_YIELD),
        (offer.pv_spinlocks, O_SPINLOCKS),
        (offer.pv_tlb_flush, O_TLB_FLUSH),
        (offer.smp, O_SMP),
    ] {
        if on {
            offer_bits |= bit;
        }
    }
    state.offer_bits.store(offer_bits, Ordering::Relaxed);
    if let Some(p) = page {
        state.set_page(0, p);
    }
    let boot = &state.cpus[0];

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
        (Some(which), Some(p)) => match kvmclock(hw, which, &p, 0, boot) {
            Ok(t) => {
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
                let old = if which == ClockMsr::Old {
                    F_CLOCK_OLD
                } else {
                    0
                };
                state.flags.fetch_or(F_CLOCK | old, Ordering::Relaxed);
            }
            Err(why) => native_stays("time.monotonic_ns and time.tsc_frequency", why),
        },
    }

    // 3. Steal time.
    match (offer.steal_time, page) {
        (false, _) => native_stays("time.steal_ns", "KVM_FEATURE_STEAL_TIME not offered"),
        (true, None) => native_stays("time.steal_ns", "no page for the steal-time area"),
        (true, Some(p)) => match steal_time(hw, &p, 0, boot) {
            Ok(()) => {
                patch.set(slot::TIME_STEAL_NS, steal_ns);
                state.flags.fetch_or(F_STEAL, Ordering::Relaxed);
            }
            Err(why) => native_stays("time.steal_ns", why),
        },
    }

    // 4. PV EOI.
    match (offer.pv_eoi, page) {
        (false, _) => native_stays("irq.eoi", "KVM_FEATURE_PV_EOI not offered"),
        (true, None) => native_stays("irq.eoi", "no page for the PV EOI word"),
        (true, Some(p)) => match pv_eoi(hw, &p, 0, boot) {
            Ok(()) => {
                patch.set(slot::IRQ_EOI, eoi);
                state.flags.fetch_or(F_EOI, Ordering::Relaxed);
            }
            Err(why) => native_stays("irq.eoi", why),
        },
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

    // 6. PV TLB flush: needs the steal-time areas (kvm.c
    //    pv_tlb_flush_supported); CPUs without their own area are simply
    //    interrupted.
    if !offer.pv_tlb_flush {
        native_stays(
            "mmu.flush_remote",
            "KVM_FEATURE_PV_TLB_FLUSH or KVM_FEATURE_STEAL_TIME not offered, the REALTIME hint, MWAIT, or one CPU (kvm.c pv_tlb_flush_supported)",
        );
    } else if !state.has(F_STEAL) {
        native_stays("mmu.flush_remote", "no steal-time area on the boot CPU");
    } else {
        patch.set(slot::MMU_FLUSH_REMOTE, flush_remote);
        state.flags.fetch_or(F_TLB_FLUSH, Ordering::Relaxed);
    }

    // 7. The lock group (kvm.c kvm_spinlock_init): wait / kick under
    //    PV_UNHALT, no REALTIME hint, several CPUs; vcpu_is_preempted from
    //    steal time (kvm.c kvm_guest_init), here also only with several
    //    CPUs (with one, no other CPU is ever asked about).
    if offer.pv_spinlocks {
        // A probe kick of this CPU itself: KVM answers 0 (and this CPU's
        // next halt returns at once, which every wait tolerates); a host
        // that answers an error would leave a waiter halted with IF=0
        // for good, so the lock group then stays native.
        let me = hw.boot_apic_id();
        let rc = hw.hypercall(hc::KICK_CPU, kick_args(me));
        if rc >= 0 {
            patch.set(slot::LOCK_WAIT, lock_wait);
            patch.set(slot::LOCK_KICK, lock_kick);
            state.flags.fetch_or(F_SPINLOCKS, Ordering::Relaxed);
        } else {
            log::warn!(
                "pvops: kvm: probe KVM_HC_KICK_CPU answered {}",
                abi::err::name(rc)
            );
            native_stays("lock.wait and lock.kick", "KVM_HC_KICK_CPU failed");
        }
    } else {
        native_stays(
            "lock.wait and lock.kick",
            "KVM_FEATURE_PV_UNHALT not offered, the REALTIME hint, or one CPU (kvm.c kvm_spinlock_init)",
        );
    }
    if state.has(F_STEAL) && offer.smp {
        patch.set(slot::LOCK_VCPU_IS_PREEMPTED, vcpu_is_preempted);
        state.flags.fetch_or(F_PREEMPTED, Ordering::Relaxed);
    } else {
        native_stays("lock.vcpu_is_preempted", "no steal-time area, or one CPU");
    }

    log::info!(
        "pvops: kvm: decoded: pv-unhalt {}, pv-tlb-flush {}, pv-sched-yield {}, poll-control {}, async-pf-int {} (PV spinlocks {}, PV TLB flush {}, PV sched yield {} with this kernel's CPUs)",
        leaves.features.contains(Features::PV_UNHALT),
        leaves.features.contains(Features::PV_TLB_FLUSH),
        leaves.features.contains(Features::PV_SCHED_YIELD),
        leaves.features.contains(Features::POLL_CONTROL),
        leaves.features.contains(Features::ASYNC_PF_INT),
        if state.has(F_SPINLOCKS) { "used" } else { "not used" },
        if state.has(F_TLB_FLUSH) { "used" } else { "not used" },
        if offer.sched_yield { "usable" } else { "not used" },
    );
    for entry in patch.replaced() {
        log::info!("pvops: kvm: owns {}", entry);
    }
}

/// Sets up application processor `cpu` (index 1..) on that CPU: its own
/// kvmclock, steal-time and PV EOI areas, for the features the boot CPU
/// owns, in its group's page (lent by `alloc` when it is the group's
/// first). Each failure is recorded in `fallbacks`:
/// - the clock: the CPU reads the boot CPU's pvclock with its own TSC,
///   exact with the stable bit (KVM's master clock: every vCPU's pvclock
///   data are the same and the TSCs synchronised; Linux's vDSO reads CPU
///   0's pvclock on every CPU only then), else kept monotonic across CPUs
///   by the software guard (accurate as far as this CPU's TSC matches the
///   boot CPU's);
/// - steal time: `time.steal_ns` is 0 on this CPU, and it is never seen
///   preempted (so it is always interrupted for a flush);
/// - PV EOI: plain EOI writes on this CPU.
pub(crate) fn setup_cpu(
    hw: &mut dyn Hw,
    cpu: usize,
    alloc: &mut dyn FnMut() -> Option<SharedPage>,
    fallbacks: &mut Fallbacks,
    state: &State,
) {
    if cpu == 0 || cpu >= MAX_CPUS {
        return;
    }
    state.cpus_up.fetch_max(cpu as u32 + 1, Ordering::Relaxed);
    if !state.wants_areas() {
        return;
    }
    let page = match state.page_of(cpu) {
        Some(p) => Some(p),
        None => {
            let p = alloc();
            if let Some(p) = p {
                state.set_page(cpu, p);
            }
            p
        }
    };
    let c = &state.cpus[cpu];
    if state.has(F_CLOCK) {
        let which = if state.has(F_CLOCK_OLD) {
            ClockMsr::Old
        } else {
            ClockMsr::New
        };
        let r = match page {
            None => Err("no page for this CPU's kvmclock area"),
            Some(p) => kvmclock(hw, which, &p, cpu, c).map(|_| ()),
        };
        if let Err(why) = r {
            // SAFETY: the boot CPU's published area (aligned, lent for good).
            unsafe {
                c.clock
                    .set(state.cpus[0].clock.get().unwrap_or(core::ptr::null_mut()))
            };
            fallbacks.push(cpu, "time.monotonic_ns", why);
            log::warn!(
                "pvops: kvm: CPU {} reads the boot CPU's kvmclock with its own TSC ({})",
                cpu,
                if state.stable.load(Ordering::Relaxed) {
                    "stable: exact"
                } else {
                    "not stable: kept monotonic in software, as accurate as the TSCs agree"
                }
            );
        }
    }
    if state.has(F_STEAL) {
        let r = match page {
            None => Err("no page for this CPU's steal-time area"),
            Some(p) => steal_time(hw, &p, cpu, c),
        };
        if let Err(why) = r {
            fallbacks.push(cpu, "time.steal_ns", why);
        }
    }
    if state.has(F_EOI) {
        let r = match page {
            None => Err("no page for this CPU's PV EOI word"),
            Some(p) => pv_eoi(hw, &p, cpu, c),
        };
        if let Err(why) = r {
            fallbacks.push(cpu, "irq.eoi", why);
        }
    }
}

/// Registers CPU `cpu`'s kvmclock area in `page` and checks the first
/// snapshot; on failure the area is switched off again.
fn kvmclock(
    hw: &mut dyn Hw,
    which: ClockMsr,
    page: &SharedPage,
    cpu: usize,
    c: &PerCpu,
) -> Result<VcpuTimeInfo, &'static str> {
    let off = shared::clock_offset(cpu % shared::CPUS_PER_PAGE);
    let area = shared::at::<VcpuTimeInfo>(page.virt.as_ptr(), off);
    let gpa = page.phys + off as u64;
    hw.write_msr(which.system_time(), m::system_time(gpa))?;
    // SAFETY: 32-byte aligned, inside the page lent for good.
    unsafe { c.clock.set(area) };
    let fail = |hw: &mut dyn Hw, why| {
        // SAFETY: unpublishing (null) is always sound.
        unsafe { c.clock.set(core::ptr::null_mut()) };
        // Stop the host from writing an area nobody reads.
        let _ = hw.write_msr(which.system_time(), 0);
        Err(why)
    };
    let Some((t, _)) = shared::read_clock(&c.clock, SETUP_TRIES) else {
        return fail(hw, "kvmclock version stuck odd");
    };
    if let Some(why) = pvclock_problem(&t) {
        return fail(hw, why);
    }
    c.own_clock.store(true, Ordering::Relaxed);
    Ok(t)
}

/// Registers CPU `cpu`'s steal-time area; on failure it is switched off.
fn steal_time(
    hw: &mut dyn Hw,
    page: &SharedPage,
    cpu: usize,
    c: &PerCpu,
) -> Result<(), &'static str> {
    let off = shared::steal_offset(cpu % shared::CPUS_PER_PAGE);
    let area = shared::at::<StealTime>(page.virt.as_ptr(), off);
    let gpa = page.phys + off as u64;
    hw.write_msr(m::STEAL_TIME, m::steal_time(gpa))?;
    // SAFETY: 64-byte aligned, inside the page lent for good.
    unsafe { c.steal.set(area) };
    let fail = |hw: &mut dyn Hw, why| {
        // SAFETY: unpublishing (null) is always sound.
        unsafe { c.steal.set(core::ptr::null_mut()) };
        let _ = hw.write_msr(m::STEAL_TIME, 0);
        Err(why)
    };
    // KVM records steal time on the vCPU's next entry after the WRMSR;
    // under a nested KVM the first record was seen a few dozen reads
    // later. Wait for it a bounded number of TSC cycles.
    let t0 = crate::tsc::ordered();
    let mut first = shared::read_steal(&c.steal, SETUP_TRIES);
    while matches!(first, Ok((0, _))) && crate::tsc::ordered().wrapping_sub(t0) < STEAL_WAIT_CYCLES
    {
        core::hint::spin_loop();
        first = shared::read_steal(&c.steal, SETUP_TRIES);
    }
    match first {
        Ok((0, _)) => fail(hw, "steal-time area never written by the host (version 0)"),
        Ok((_, steal)) => {
            c.last_steal.store(steal, Ordering::Relaxed);
            Ok(())
        }
        Err(_) => fail(hw, "steal-time version stuck odd"),
    }
}

/// Registers CPU `cpu`'s PV EOI word.
fn pv_eoi(hw: &mut dyn Hw, page: &SharedPage, cpu: usize, c: &PerCpu) -> Result<(), &'static str> {
    let off = shared::eoi_offset(cpu % shared::CPUS_PER_PAGE);
    let word = shared::at::<u32>(page.virt.as_ptr(), off);
    let gpa = page.phys + off as u64;
    hw.write_msr(m::PV_EOI_EN, m::pv_eoi(gpa))?;
    // SAFETY: 4-byte aligned, inside the lent page.
    unsafe { c.eoi_word.set(word) };
    Ok(())
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
            // SAFETY: the MSR was accepted at setup on this CPU; 0
            // disables its PV EOI.
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

/// `mmu.flush_remote`: KVM's PV TLB flush. Preempted targets are flagged
/// `KVM_VCPU_FLUSH_TLB` (KVM flushes them before they run again); the
/// rest, this CPU included, take the native path (a local flush and the
/// kernel's remote-flush hook, i.e. IPIs).
extern "C" fn flush_remote(cpus: u64, target: pvops::mmu::FlushTarget) {
    let me = pvops::percpu::apic_id(pvops::percpu::current());
    let rest = STATE.flag_preempted(cpus, me, pvops::percpu::index_of_apic);
    pvops::native::mmu::flush_remote(rest, target);
}

/// `lock.wait` (Linux `kvm_wait`): with interrupts disabled, re-check the
/// word; if it still holds `expected`, HLT. KVM wakes a vCPU halted with
/// IF=0 on `KVM_HC_KICK_CPU` (its `pv_unhalted`, KVM_FEATURE_PV_UNHALT);
/// with IF=1 on entry the halt is STI;HLT, so an interrupt (or a kick)
/// arriving after the check is not lost, and IF is 1 again on return.
extern "C" fn lock_wait(word: &AtomicU32, expected: u32) {
    const IF: u64 = 1 << 9;
    let enabled = pvops::native::irq::save_flags() & IF != 0;
    if enabled {
        pvops::native::irq::disable();
    }
    if word.load(Ordering::SeqCst) == expected {
        STATE.lock_halts.fetch_add(1, Ordering::Relaxed);
        if enabled {
            pvops::native::irq::safe_halt();
        } else {
            pvops::native::cpu::halt();
        }
    } else if enabled {
        pvops::native::irq::enable();
    }
}

/// `lock.kick`: `KVM_HC_KICK_CPU` (flags 0, the APIC ID of CPU `cpu`).
extern "C" fn lock_kick(cpu: u32) {
    let Some(apic) = pvops::percpu::apic_id(cpu as usize) else {
        return;
    };
    STATE.lock_kicks.fetch_add(1, Ordering::Relaxed);
    let rc = kick_cpu(apic);
    if rc < 0 {
        log::error!(
            "pvops: kvm: KVM_HC_KICK_CPU to APIC ID {} failed ({})",
            apic,
            abi::err::name(rc)
        );
    }
}

/// `lock.vcpu_is_preempted`: the steal-time `preempted` flag of CPU `cpu`.
extern "C" fn vcpu_is_preempted(cpu: u32) -> bool {
    STATE.is_preempted(cpu as usize)
}

impl Backend for Kvm {
    fn name(&self) -> &'static str {
        "kvm"
    }

    fn description(&self) -> &'static str {
        "KVM: per-CPU kvmclock clock and TSC frequency, PV EOI, steal time; PV IPIs, PV TLB flush and PV spinlocks by hypercall with several CPUs; no-op io_delay"
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
        let cpus = platform.possible_cpus().clamp(1, MAX_CPUS) as u32;
        let mwait = env.cpuid.cpuid(1, 0).ecx & (1 << 3) != 0;
        let offer = Offer::from_leaves(&leaves, cpus, mwait);
        let insn = HypercallInsn::for_vendor(&env.probe.vendor_string);
        hypercall::set_insn(insn);
        STATE
            .vmmcall
            .store(insn == HypercallInsn::Vmmcall, Ordering::Relaxed);
        log::info!(
            "pvops: kvm: hypercalls by {} (CPU vendor \"{}\"); {} possible CPU(s)",
            insn.name(),
            core::str::from_utf8(&env.probe.vendor_string).unwrap_or("?"),
            cpus
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

    fn init_cpu(&self, cpu: Cpu, fallbacks: &mut Fallbacks, platform: &mut dyn Platform) {
        // The page of a new group comes from the same platform the MSR
        // writes go through; the two uses do not overlap.
        let mut page: Option<Option<SharedPage>> = None;
        if STATE.wants_areas() && STATE.page_of(cpu.index).is_none() {
            page = Some(platform.alloc_shared_page());
        }
        let mut alloc = || page.take().flatten();
        setup_cpu(
            &mut Real { platform },
            cpu.index,
            &mut alloc,
            fallbacks,
            &STATE,
        );
    }
}

#[cfg(test)]
mod fuzz;
#[cfg(test)]
mod tests;
