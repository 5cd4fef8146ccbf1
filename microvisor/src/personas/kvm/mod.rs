//! `kvm`: KVM's paravirtual interface as Linux's
//! `Documentation/virt/kvm/x86/{cpuid,msr,hypercalls}.rst` describe it,
//! from the ABI the guest backend shares (`pvops_abi::kvm`,
//! `pvops_abi::pvclock`). The same interface, at 0x4000_0100, is the KVM
//! half of the `kvm+hyperv` persona.
//!
//! - CPUID: "KVMKVMKVM\0\0\0" at the base (EAX = base+1) and
//!   `KVM_CPUID_FEATURES` with [`FEATURES`], no hints.
//! - MSRs: `MSR_KVM_SYSTEM_TIME(_NEW)` publish a live pvclock at the GPA
//!   (version protocol, `PVCLOCK_TSC_STABLE_BIT`); `MSR_KVM_WALL_CLOCK_NEW`
//!   writes a `pvclock_wall_clock` (epoch 0); `MSR_KVM_STEAL_TIME`
//!   (reserved bits 5:1 → #GP) writes `kvm_steal_time` at registration
//!   and refreshes its version; `MSR_KVM_PV_EOI_EN` (reserved bit 1 → #GP)
//!   enables PV EOI through the lazy-EOI state machine the Hyper-V persona
//!   uses (same protocol; see `hyperv::lazy_eoi`): the flag is set when an
//!   edge interrupt is injected with nothing else in service, and when the
//!   guest cleared it the microvisor does the EOI before the next entry.
//!   Every other KVM MSR (0x4b56_4d00..=0x4b56_4dff, 0x11, 0x12 when not
//!   offered) raises #GP, as KVM does for an MSR hidden in CPUID.
//! - Per vCPU (issue 14): the system-time, steal-time and PV EOI MSRs and
//!   what they point at are each vCPU's own, as in KVM (`kvm_vcpu_arch`);
//!   the pvclock epoch and scale are the guest's (one TSC for all). With
//!   several vCPUs the steal-time record carries the scheduler's stolen
//!   time and the `preempted` byte (`KVM_VCPU_PREEMPTED` set when a vCPU
//!   loses the CPU at the end of its slice, cleared when it runs again,
//!   KVM's `kvm_steal_time_set_preempted` / `record_steal_time`), and
//!   `KVM_FEATURE_PV_TLB_FLUSH` is offered: a `KVM_VCPU_FLUSH_TLB` found in
//!   that byte at the vCPU's next entry flushes its TLB.
//! - Hypercalls (VMMCALL; RAX = number, RBX/RCX/RDX/RSI = a0..a3):
//!   `KVM_HC_SEND_IPI` (a0:a1 a 128-bit bitmap of APIC IDs from a2, a3
//!   the ICR: a fixed vector goes to every vCPU named; returns how many),
//!   `KVM_HC_SCHED_YIELD` (a0 an APIC ID: ends the caller's slice),
//!   `KVM_HC_KICK_CPU` (a1 an APIC ID: wakes that vCPU from HLT even with
//!   interrupts off, or makes its next HLT return at once; returns 0);
//!   anything else `-KVM_ENOSYS`.
//!   Counted by number under `mv.hypercall`.
//!
//! `break=<step>`: `pvclock-odd` (the version stays odd), `stable-bit` (no
//! `PVCLOCK_TSC_STABLE_BIT` in the flags), `steal-never` (the steal-time
//! area is never written), `pv-eoi-refused` (WRMSR `MSR_KVM_PV_EOI_EN`
//! raises #GP), `hypercall-enosys` (every hypercall returns
//! `-KVM_ENOSYS`). The lying-hypervisor matrix (issue 16,
//! `docs/lying-hypervisors.md`) adds: `no-features` (the signature with
//! `KVM_CPUID_FEATURES` 0), `clock-gp` (kvmclock offered, both system-time
//! MSRs raise #GP), `hidden-steal` (`KVM_FEATURE_STEAL_TIME` cleared in
//! CPUID, the MSR still works: the guest must not write it),
//! `steal-backwards` (the steal-time area starts high and goes down before
//! every guest entry), `absurd-frequency` (the pvclock scale says the
//! TSC runs at 1 kHz) and `pvclock-backwards` (marked stable, the pvclock
//! is republished before every guest entry, one in [`BACKWARDS_EVERY`]
//! [`BACKWARDS_LAG_NS`] behind: the clock steps back, then forward again).

use super::hyperv::lazy_eoi::LazyEoi;
use super::{signature, GuestCx, Hypercall, HypercallAction, Persona, SelectError};
use crate::guest::Gp;
use pvops_abi::kvm::{self as abi, hc, msr as m, Features, StealTime, WallClock};
use pvops_abi::pvclock::{self, VcpuTimeInfo};
use zerocopy::IntoBytes;

/// Offset of `preempted` in `struct kvm_steal_time` (msr.rst).
const PREEMPTED_OFFSET: u64 = core::mem::offset_of!(StealTime, preempted) as u64;

/// The features offered: both kvmclock MSR pairs, no-op io_delay, steal
/// time, PV EOI, PV unhalt, PV IPIs, PV sched yield and the stable bit.
pub const FEATURES: Features = Features::CLOCKSOURCE
    .union(Features::NOP_IO_DELAY)
    .union(Features::CLOCKSOURCE2)
    .union(Features::STEAL_TIME)
    .union(Features::PV_EOI)
    .union(Features::PV_UNHALT)
    .union(Features::PV_SEND_IPI)
    .union(Features::PV_SCHED_YIELD)
    .union(Features::CLOCKSOURCE_STABLE_BIT);

/// Steal-time refresh period in ms of TSC (a new version; with one vCPU
/// the persona never deschedules it, so `steal` stays 0; with several it
/// is also refreshed whenever the scheduler's figure changed).
const STEAL_REFRESH_MS: u64 = 100;

/// Most vCPUs whose state the interface keeps.
const MAX_VCPUS: usize = crate::config::MAX_VCPUS;

/// ICR delivery mode field (Intel SDM vol. 3A, 11.6.1: bits 10:8; 000 =
/// fixed).
const ICR_DELIVERY_MODE: u64 = 7 << 8;

/// The `break=` steps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Break {
    /// `pvclock-odd`.
    PvclockOdd,
    /// `stable-bit`.
    StableBit,
    /// `steal-never`.
    StealNever,
    /// `pv-eoi-refused`.
    PvEoiRefused,
    /// `hypercall-enosys`.
    HypercallEnosys,
    /// `no-features`.
    NoFeatures,
    /// `clock-gp`.
    ClockGp,
    /// `hidden-steal`.
    HiddenSteal,
    /// `steal-backwards`.
    StealBackwards,
    /// `absurd-frequency`.
    AbsurdFrequency,
    /// `pvclock-backwards`.
    PvclockBackwards,
    /// `last-vcpu-refuses`: with several vCPUs, the last one's writes of
    /// `MSR_KVM_STEAL_TIME` and `MSR_KVM_PV_EOI_EN` raise #GP (a per-CPU
    /// set-up that fails on one CPU only); the other vCPUs are served.
    LastVcpuRefuses,
}

/// How far behind `break=pvclock-backwards` publishes (5 ms: more than a
/// loaded host takes between two guest clock reads around an exit).
pub const BACKWARDS_LAG_NS: u64 = 5_000_000;
/// One publication in this many is [`BACKWARDS_LAG_NS`] behind.
pub const BACKWARDS_EVERY: u64 = 64;

/// The TSC frequency `break=absurd-frequency` publishes in the pvclock
/// scale: 1 kHz.
pub const ABSURD_TSC_KHZ: u64 = 1;
/// Where `break=steal-backwards` starts the steal time (ns).
pub const BACKWARDS_START: u64 = 1 << 40;
/// What `break=steal-backwards` takes off the steal time per guest entry.
pub const BACKWARDS_STEP: u64 = 1000;

/// `break=` step names.
pub const BREAK_STEPS: &[&str] = &[
    "pvclock-odd",
    "stable-bit",
    "steal-never",
    "pv-eoi-refused",
    "hypercall-enosys",
    "no-features",
    "clock-gp",
    "hidden-steal",
    "steal-backwards",
    "absurd-frequency",
    "pvclock-backwards",
    "last-vcpu-refuses",
];

impl Break {
    fn parse(s: &str) -> Option<Break> {
        match s {
            "pvclock-odd" => Some(Break::PvclockOdd),
            "stable-bit" => Some(Break::StableBit),
            "steal-never" => Some(Break::StealNever),
            "pv-eoi-refused" => Some(Break::PvEoiRefused),
            "hypercall-enosys" => Some(Break::HypercallEnosys),
            "no-features" => Some(Break::NoFeatures),
            "clock-gp" => Some(Break::ClockGp),
            "hidden-steal" => Some(Break::HiddenSteal),
            "steal-backwards" => Some(Break::StealBackwards),
            "absurd-frequency" => Some(Break::AbsurdFrequency),
            "pvclock-backwards" => Some(Break::PvclockBackwards),
            "last-vcpu-refuses" => Some(Break::LastVcpuRefuses),
            _ => None,
        }
    }

    /// The step's name.
    pub fn name(self) -> &'static str {
        BREAK_STEPS[self as usize]
    }
}

/// Counters for the report.
#[derive(Clone, Copy, Debug, Default)]
pub struct Stats {
    /// pvclock publications.
    pub publishes: u64,
    /// Steal-time records written.
    pub steal_updates: u64,
    /// IPIs delivered by `KVM_HC_SEND_IPI`.
    pub ipis: u64,
    /// `KVM_HC_SCHED_YIELD` calls.
    pub yields: u64,
    /// `KVM_HC_KICK_CPU` calls.
    pub kicks: u64,
    /// Hypercalls answered `-KVM_ENOSYS`.
    pub enosys: u64,
    /// MSR writes refused with #GP.
    pub refused: u64,
    /// `KVM_HC_SEND_IPI` with a delivery mode other than fixed (ignored).
    pub ipis_unsupported: u64,
    /// Times a vCPU's `preempted` byte was set at a preemption.
    pub preempted_marks: u64,
    /// TLB flushes done for a `KVM_VCPU_FLUSH_TLB` (PV TLB flush).
    pub tlb_flushes: u64,
}

/// One vCPU's registrations (KVM keeps these in `kvm_vcpu_arch`).
#[derive(Clone, Copy, Debug)]
struct PerVcpu {
    /// Its pvclock (scale as the interface's; version of its last
    /// publication).
    time: VcpuTimeInfo,
    system_time_msr: u64,
    system_time_index: u32,
    steal_msr: u64,
    steal_version: u32,
    steal_at: u64,
    /// The steal time last written.
    steal_written: u64,
    /// What `break=steal-backwards` shows as steal time now.
    backwards: u64,
    pv_eoi_msr: u64,
    lazy: LazyEoi,
}

impl Default for PerVcpu {
    fn default() -> PerVcpu {
        PerVcpu {
            time: VcpuTimeInfo::default(),
            system_time_msr: 0,
            system_time_index: m::SYSTEM_TIME_NEW,
            steal_msr: 0,
            steal_version: 0,
            steal_at: 0,
            steal_written: 0,
            backwards: BACKWARDS_START,
            pv_eoi_msr: 0,
            lazy: LazyEoi::default(),
        }
    }
}

/// KVM's interface at `base`.
#[derive(Debug)]
pub struct KvmInterface {
    base: u32,
    broken: Option<Break>,
    tsc_khz: u64,
    /// The guest's vCPUs ([`Persona::set_vcpus`]; 1 until told).
    vcpus: usize,
    /// TSC at system time 0 (the first registration on any vCPU).
    epoch: Option<u64>,
    /// Each vCPU's registrations.
    per: [PerVcpu; MAX_VCPUS],
    /// The counters.
    pub stats: Stats,
}

impl KvmInterface {
    /// The interface at `base` with step `broken` broken.
    pub fn new(base: u32, broken: Option<Break>) -> KvmInterface {
        KvmInterface {
            base,
            broken,
            tsc_khz: 0,
            vcpus: 1,
            epoch: None,
            per: [PerVcpu::default(); MAX_VCPUS],
            stats: Stats::default(),
        }
    }

    /// Parses a `break=` step.
    pub fn parse_break(step: Option<&str>) -> Result<Option<Break>, SelectError> {
        match step {
            None => Ok(None),
            Some(s) => Break::parse(s).map(Some).ok_or(SelectError::UnknownBreak),
        }
    }

    /// The broken step.
    pub fn broken(&self) -> Option<Break> {
        self.broken
    }

    /// CPUID of the interface's leaves; `None` outside them.
    pub fn cpuid(&self, leaf: u32) -> Option<[u32; 4]> {
        match leaf.checked_sub(self.base)? {
            0 => {
                let [b, c, d] = signature(abi::SIGNATURE);
                Some([self.base + abi::LEAF_FEATURES, b, c, d])
            }
            1 => Some([self.features().0, 0, 0, 0]),
            _ => None,
        }
    }

    /// The features CPUID shows ([`FEATURES`], plus PV TLB flush with
    /// several vCPUs, less what a `break=` hides).
    pub fn features(&self) -> Features {
        let offered = if self.vcpus > 1 {
            FEATURES.union(Features::PV_TLB_FLUSH)
        } else {
            FEATURES
        };
        match self.broken {
            Some(Break::NoFeatures) => Features(0),
            Some(Break::HiddenSteal) => Features(offered.0 & !Features::STEAL_TIME.0),
            _ => offered,
        }
    }

    /// The guest has `n` vCPUs (more than one).
    pub fn set_vcpus(&mut self, n: usize) {
        self.vcpus = n.clamp(1, MAX_VCPUS);
    }

    /// The registrations of the vCPU a handler runs for.
    fn at(&mut self, cx: &GuestCx<'_>) -> &mut PerVcpu {
        &mut self.per[cx.vcpu.min(MAX_VCPUS - 1)]
    }

    /// Whether `index` is an MSR of this interface.
    pub fn owns_msr(index: u32) -> bool {
        m::is_custom(index) || index == m::WALL_CLOCK || index == m::SYSTEM_TIME
    }

    /// The TSC rate, once known.
    pub fn set_clock(&mut self, tsc_khz: u64) {
        self.tsc_khz = tsc_khz;
        let scale_khz = if self.broken == Some(Break::AbsurdFrequency) {
            ABSURD_TSC_KHZ
        } else {
            tsc_khz
        };
        if let Some((mul, shift)) = pvclock::time_scale(scale_khz) {
            for v in &mut self.per {
                v.time.tsc_to_system_mul = mul;
                v.time.tsc_shift = shift;
            }
        }
    }

    /// RDMSR on vCPU `vcpu`.
    pub fn rdmsr(&mut self, vcpu: usize, index: u32) -> Result<u64, Gp> {
        let v = &self.per[vcpu.min(MAX_VCPUS - 1)];
        match index {
            m::SYSTEM_TIME_NEW | m::SYSTEM_TIME => Ok(if index == v.system_time_index {
                v.system_time_msr
            } else {
                0
            }),
            m::STEAL_TIME => Ok(v.steal_msr),
            m::PV_EOI_EN => Ok(v.pv_eoi_msr),
            m::WALL_CLOCK_NEW | m::WALL_CLOCK => Ok(0),
            _ => Err(Gp),
        }
    }

    /// WRMSR.
    pub fn wrmsr(&mut self, cx: &mut GuestCx<'_>, index: u32, value: u64) -> Result<(), Gp> {
        let r = self.write(cx, index, value);
        if r.is_err() {
            self.stats.refused += 1;
        }
        r
    }

    /// Whether `break=last-vcpu-refuses` refuses this vCPU's per-CPU areas.
    fn refuses_areas(&self, cx: &GuestCx<'_>) -> bool {
        self.broken == Some(Break::LastVcpuRefuses) && self.vcpus > 1 && cx.vcpu == self.vcpus - 1
    }

    fn write(&mut self, cx: &mut GuestCx<'_>, index: u32, value: u64) -> Result<(), Gp> {
        match index {
            m::STEAL_TIME | m::PV_EOI_EN if self.refuses_areas(cx) => Err(Gp),
            m::SYSTEM_TIME_NEW | m::SYSTEM_TIME if self.broken == Some(Break::ClockGp) => Err(Gp),
            m::SYSTEM_TIME_NEW | m::SYSTEM_TIME => {
                let v = self.at(cx);
                v.system_time_index = index;
                v.system_time_msr = value;
                if value & m::ENABLED != 0 {
                    self.epoch.get_or_insert(cx.now);
                    self.publish(cx);
                }
                Ok(())
            }
            m::WALL_CLOCK_NEW | m::WALL_CLOCK => {
                let w = WallClock {
                    version: 2,
                    ..Default::default()
                };
                // KVM ignores a GPA outside memory; so does the persona.
                let _ = cx.mem.write(value, w.as_bytes());
                Ok(())
            }
            m::STEAL_TIME => {
                if value & m::STEAL_RESERVED != 0 {
                    return Err(Gp);
                }
                let v = self.at(cx);
                v.steal_msr = value;
                if value & m::ENABLED != 0 {
                    v.steal_version = 0;
                    self.update_steal(cx);
                }
                Ok(())
            }
            m::PV_EOI_EN => {
                if self.broken == Some(Break::PvEoiRefused) || value & m::PV_EOI_RESERVED != 0 {
                    return Err(Gp);
                }
                let gpa = value & !3;
                let page = (value & m::ENABLED != 0 && cx.mem.contains(gpa, 4)).then_some(gpa);
                let v = self.at(cx);
                v.pv_eoi_msr = value;
                v.lazy.set_page(cx, page);
                Ok(())
            }
            _ => Err(Gp),
        }
    }

    /// Writes the pvclock at the registered GPA (odd version, fields, even
    /// version; the version stays odd under `break=pvclock-odd`).
    fn publish(&mut self, cx: &mut GuestCx<'_>) {
        let broken = self.broken;
        let lag = broken == Some(Break::PvclockBackwards)
            && self.stats.publishes % BACKWARDS_EVERY == BACKWARDS_EVERY - 1;
        let epoch = self.epoch.unwrap_or(cx.now);
        let v = self.at(cx);
        if v.system_time_msr & m::ENABLED == 0 || v.time.tsc_to_system_mul == 0 {
            return;
        }
        let gpa = v.system_time_msr & !3 & !m::ENABLED;
        v.time.tsc_timestamp = cx.now;
        v.time.system_time = pvclock::scale_delta(
            cx.now.wrapping_sub(epoch),
            v.time.tsc_to_system_mul,
            v.time.tsc_shift,
        );
        if lag {
            v.time.system_time = v.time.system_time.saturating_sub(BACKWARDS_LAG_NS);
        }
        // Every vCPU reads the one host TSC (TSC_OFFSET 0) against the one
        // epoch: synchronised, unless broken on purpose.
        v.time.flags = if broken == Some(Break::StableBit) {
            0
        } else {
            pvclock::FLAG_TSC_STABLE
        };
        let odd = v.time.version | 1;
        let t = VcpuTimeInfo {
            version: odd,
            ..v.time
        };
        // A GPA whose structure does not fit guest RAM is ignored, as KVM
        // ignores a GPA it cannot map: no version-only write either.
        if cx.mem.write(gpa, t.as_bytes()).is_err() {
            return;
        }
        if broken == Some(Break::PvclockOdd) {
            v.time.version = odd;
        } else {
            v.time.version = odd.wrapping_add(1);
            let _ = cx.mem.write(gpa, &v.time.version.to_le_bytes());
        }
        self.stats.publishes += 1;
    }

    /// Writes a steal-time record (version protocol; `steal` 0: the one
    /// vCPU is never descheduled), unless `break=steal-never`.
    fn update_steal(&mut self, cx: &mut GuestCx<'_>) {
        let broken = self.broken;
        let v = self.at(cx);
        if v.steal_msr & m::ENABLED == 0 || broken == Some(Break::StealNever) {
            return;
        }
        let gpa = v.steal_msr & !63;
        let steal = if broken == Some(Break::StealBackwards) {
            v.backwards = v.backwards.saturating_sub(BACKWARDS_STEP);
            v.backwards
        } else {
            cx.steal_ns
        };
        // The guest owns `preempted` between updates (it sets
        // KVM_VCPU_FLUSH_TLB there): keep the byte as it is.
        let mut preempted = [0u8];
        let _ = cx.mem.read(gpa + PREEMPTED_OFFSET, &mut preempted);
        let st = StealTime {
            steal,
            version: v.steal_version.wrapping_add(2) & !1,
            preempted: preempted[0],
            ..Default::default()
        };
        if cx.mem.write(gpa, st.as_bytes()).is_ok() {
            v.steal_version = st.version;
            v.steal_at = cx.now;
            v.steal_written = steal;
            self.stats.steal_updates += 1;
        }
    }

    /// The vCPU of `cx` is about to run: clear its `preempted` byte, and
    /// flush its TLB if a PV TLB flush asked for it (KVM's
    /// `record_steal_time`: `xchg(&st->preempted, 0)`, then
    /// `kvm_vcpu_flush_tlb_guest` on `KVM_VCPU_FLUSH_TLB`). No guest code
    /// runs meanwhile (one physical CPU), so read-then-write is the xchg.
    fn clear_preempted(&mut self, cx: &mut GuestCx<'_>) {
        if self.vcpus <= 1 {
            return;
        }
        let v = self.at(cx);
        if v.steal_msr & m::ENABLED == 0 {
            return;
        }
        let at = (v.steal_msr & !63) + PREEMPTED_OFFSET;
        let mut b = [0u8];
        if cx.mem.read(at, &mut b).is_err() || b[0] == 0 {
            return;
        }
        let _ = cx.mem.write(at, &[0]);
        if b[0] & abi::VCPU_FLUSH_TLB != 0 {
            cx.requests.flush_tlb = true;
            self.stats.tlb_flushes += 1;
        }
    }

    /// vCPU `cx.vcpu` leaves the CPU: when preempted (not halted), its
    /// steal-time area says so (`KVM_VCPU_PREEMPTED`), so other vCPUs
    /// neither spin on it (`vcpu_is_preempted`) nor wait for it to flush.
    pub fn descheduled(&mut self, cx: &mut GuestCx<'_>, preempted: bool) {
        let never = self.broken == Some(Break::StealNever);
        let v = self.at(cx);
        if !preempted || v.steal_msr & m::ENABLED == 0 || never {
            return;
        }
        let at = (v.steal_msr & !63) + PREEMPTED_OFFSET;
        let mut b = [0u8];
        if cx.mem.read(at, &mut b).is_ok()
            && cx.mem.write(at, &[b[0] | abi::VCPU_PREEMPTED]).is_ok()
        {
            self.stats.preempted_marks += 1;
        }
    }

    /// Before each entry: settle PV EOI, refresh steal time.
    pub fn poll(&mut self, cx: &mut GuestCx<'_>) {
        self.at(cx).lazy.reconcile(cx);
        self.clear_preempted(cx);
        if self.broken == Some(Break::PvclockBackwards) {
            self.publish(cx);
        }
        let period = self.tsc_khz.saturating_mul(STEAL_REFRESH_MS);
        let backwards = self.broken == Some(Break::StealBackwards);
        let v = self.at(cx);
        if v.steal_msr & m::ENABLED != 0
            && period != 0
            && (backwards
                || cx.now.wrapping_sub(v.steal_at) >= period
                || cx.steal_ns != v.steal_written)
        {
            self.update_steal(cx);
        }
    }

    /// The guest takes `vector`.
    pub fn on_inject(&mut self, cx: &mut GuestCx<'_>, vector: u8) {
        self.at(cx).lazy.on_inject(cx, vector);
    }

    /// A KVM hypercall: number in RAX, a0..a3 in RBX, RCX, RDX, RSI.
    pub fn hypercall(&mut self, cx: &mut GuestCx<'_>) -> Hypercall {
        let nr = cx.state.rax;
        let (a0, a1, a2, a3) = (cx.regs.rbx, cx.regs.rcx, cx.regs.rdx, cx.regs.rsi);
        let enosys = -abi::err::ENOSYS;
        let rc: i64 = if self.broken == Some(Break::HypercallEnosys) {
            enosys
        } else {
            match nr {
                hc::SEND_IPI => self.send_ipi(cx, [a0, a1], a2, a3),
                hc::SCHED_YIELD => {
                    self.stats.yields += 1;
                    // KVM yields to the named vCPU if it can run; here
                    // the caller's slice ends and round robin goes on.
                    if a0 < cx.vcpus as u64 && a0 != cx.vcpu as u64 {
                        cx.requests.yield_now = true;
                    }
                    0
                }
                hc::KICK_CPU => {
                    self.stats.kicks += 1;
                    if a1 < cx.vcpus as u64 {
                        cx.requests.kicks |= 1 << a1;
                    }
                    0
                }
                _ => enosys,
            }
        };
        if rc == enosys {
            self.stats.enosys += 1;
        }
        cx.state.rax = rc as u64;
        Hypercall {
            code: nr,
            action: HypercallAction::Return,
        }
    }

    /// `KVM_HC_SEND_IPI`: bit `i` of the 128-bit `bitmap` names APIC ID
    /// `min + i` (KVM's `kvm_pv_send_ipi`); IDs past the last vCPU are
    /// skipped, as KVM skips IDs missing from its APIC map. Returns how
    /// many vCPUs it reached.
    fn send_ipi(&mut self, cx: &mut GuestCx<'_>, bitmap: [u64; 2], min: u64, icr: u64) -> i64 {
        let mut targets = 0u32;
        for (word, bits) in bitmap.iter().enumerate() {
            let mut b = *bits;
            while b != 0 {
                let i = u64::from(b.trailing_zeros());
                b &= b - 1;
                let id = min.saturating_add(word as u64 * 64 + i);
                if id < cx.vcpus as u64 {
                    targets |= 1 << id;
                }
            }
        }
        if icr & ICR_DELIVERY_MODE != 0 {
            self.stats.ipis_unsupported += 1;
            return 0;
        }
        cx.requests.ipi(targets, icr as u8);
        let n = targets.count_ones();
        self.stats.ipis += u64::from(n);
        i64::from(n)
    }

    /// The `mv.kvm` record.
    pub fn report(&self) {
        bootkit::record!(
            "mv.kvm",
            base = format_args!("{:#x}", self.base),
            break_step = self.broken.map_or("none", Break::name),
            clock_msr = format_args!("{:#x}", self.per[0].system_time_index),
            clock = self.per[0].system_time_msr & m::ENABLED != 0,
            stable = self.broken != Some(Break::StableBit),
            publishes = self.stats.publishes,
            steal = self.per[0].steal_msr & m::ENABLED != 0,
            steal_updates = self.stats.steal_updates,
            pv_eoi = self.per[0].lazy.page().is_some(),
            pv_eoi_offered = self.lazy_sum(|l| l.offered),
            pv_eoi_completed = self.lazy_sum(|l| l.completed),
            pv_eoi_withdrawn = self.lazy_sum(|l| l.withdrawn),
            ipis = self.stats.ipis,
            yields = self.stats.yields,
            kicks = self.stats.kicks,
            enosys = self.stats.enosys,
            refused = self.stats.refused,
        );
        if self.vcpus > 1 {
            bootkit::record!(
                "mv.kvm.smp",
                vcpus = self.vcpus,
                ipis_unsupported = self.stats.ipis_unsupported,
                preempted_marks = self.stats.preempted_marks,
                tlb_flushes = self.stats.tlb_flushes,
            );
            for (i, v) in self.per[..self.vcpus].iter().enumerate() {
                bootkit::record!(
                    "mv.kvm.vcpu",
                    index = i,
                    clock = v.system_time_msr & m::ENABLED != 0,
                    steal = v.steal_msr & m::ENABLED != 0,
                    steal_ns = v.steal_written,
                    pv_eoi = v.lazy.page().is_some(),
                    pv_eoi_completed = v.lazy.completed,
                );
            }
        }
    }

    /// A lazy-EOI counter summed over the vCPUs.
    fn lazy_sum(&self, f: impl Fn(&LazyEoi) -> u64) -> u64 {
        self.per[..self.vcpus].iter().map(|v| f(&v.lazy)).sum()
    }
}

/// The `kvm` persona: KVM's interface at 0x4000_0000.
#[derive(Debug)]
pub struct Kvm {
    /// The interface.
    pub iface: KvmInterface,
}

impl Kvm {
    /// The persona, with `break_step` broken.
    pub fn new(break_step: Option<&str>) -> Result<Kvm, SelectError> {
        let broken = KvmInterface::parse_break(break_step)?;
        Ok(Kvm {
            iface: KvmInterface::new(super::HV_LEAF_BASE, broken),
        })
    }
}

impl Persona for Kvm {
    fn name(&self) -> &'static str {
        "kvm"
    }

    fn hypervisor_bit(&self) -> bool {
        true
    }

    fn cpuid(&mut self, leaf: u32, _subleaf: u32) -> [u32; 4] {
        self.iface.cpuid(leaf).unwrap_or([0; 4])
    }

    fn rdmsr(&mut self, cx: &mut GuestCx<'_>, msr: u32) -> Option<Result<u64, Gp>> {
        KvmInterface::owns_msr(msr).then(|| self.iface.rdmsr(cx.vcpu, msr))
    }

    fn wrmsr(&mut self, cx: &mut GuestCx<'_>, msr: u32, value: u64) -> Option<Result<(), Gp>> {
        KvmInterface::owns_msr(msr).then(|| self.iface.wrmsr(cx, msr, value))
    }

    fn hypercall(&mut self, cx: &mut GuestCx<'_>) -> Hypercall {
        self.iface.hypercall(cx)
    }

    fn set_clock(&mut self, tsc_khz: u64, _apic_bus_khz: u64) {
        self.iface.set_clock(tsc_khz);
    }

    fn set_vcpus(&mut self, vcpus: usize) {
        self.iface.set_vcpus(vcpus);
    }

    fn kicks_halted(&self) -> bool {
        self.iface.features().contains(Features::PV_UNHALT)
    }

    fn descheduled(&mut self, cx: &mut GuestCx<'_>, preempted: bool) {
        self.iface.descheduled(cx, preempted);
    }

    fn poll(&mut self, cx: &mut GuestCx<'_>) {
        self.iface.poll(cx);
    }

    fn on_inject(&mut self, cx: &mut GuestCx<'_>, vector: u8) {
        self.iface.on_inject(cx, vector);
    }

    fn report(&self) {
        self.iface.report();
    }
}

#[cfg(test)]
mod tests;
