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
//! - Hypercalls (VMMCALL; RAX = number, RBX/RCX/RDX/RSI = a0..a3):
//!   `KVM_HC_SEND_IPI` (raises the vector on vCPU 0 when APIC ID 0 is in
//!   the bitmap; returns the count), `KVM_HC_SCHED_YIELD` and
//!   `KVM_HC_KICK_CPU` (counted, return 0); anything else `-KVM_ENOSYS`.
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

/// Steal-time refresh period in ms of TSC (a new version; the persona
/// never deschedules its one vCPU, so `steal` stays 0).
const STEAL_REFRESH_MS: u64 = 100;

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
}

/// KVM's interface at `base`.
#[derive(Debug)]
pub struct KvmInterface {
    base: u32,
    broken: Option<Break>,
    tsc_khz: u64,
    /// The published pvclock (scale and timebase; version of the last
    /// publication).
    time: VcpuTimeInfo,
    /// TSC at system time 0 (the first registration).
    epoch: Option<u64>,
    system_time_msr: u64,
    system_time_index: u32,
    steal_msr: u64,
    steal_version: u32,
    steal_at: u64,
    /// What `break=steal-backwards` shows as steal time now.
    backwards: u64,
    pv_eoi_msr: u64,
    lazy: LazyEoi,
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
            time: VcpuTimeInfo::default(),
            epoch: None,
            system_time_msr: 0,
            system_time_index: m::SYSTEM_TIME_NEW,
            steal_msr: 0,
            steal_version: 0,
            steal_at: 0,
            backwards: BACKWARDS_START,
            pv_eoi_msr: 0,
            lazy: LazyEoi::default(),
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

    /// The features CPUID shows ([`FEATURES`], less what a `break=` hides).
    pub fn features(&self) -> Features {
        match self.broken {
            Some(Break::NoFeatures) => Features(0),
            Some(Break::HiddenSteal) => Features(FEATURES.0 & !Features::STEAL_TIME.0),
            _ => FEATURES,
        }
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
            self.time.tsc_to_system_mul = mul;
            self.time.tsc_shift = shift;
        }
    }

    /// RDMSR.
    pub fn rdmsr(&mut self, index: u32) -> Result<u64, Gp> {
        match index {
            m::SYSTEM_TIME_NEW | m::SYSTEM_TIME => Ok(if index == self.system_time_index {
                self.system_time_msr
            } else {
                0
            }),
            m::STEAL_TIME => Ok(self.steal_msr),
            m::PV_EOI_EN => Ok(self.pv_eoi_msr),
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

    fn write(&mut self, cx: &mut GuestCx<'_>, index: u32, value: u64) -> Result<(), Gp> {
        match index {
            m::SYSTEM_TIME_NEW | m::SYSTEM_TIME if self.broken == Some(Break::ClockGp) => Err(Gp),
            m::SYSTEM_TIME_NEW | m::SYSTEM_TIME => {
                self.system_time_index = index;
                self.system_time_msr = value;
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
                self.steal_msr = value;
                if value & m::ENABLED != 0 {
                    self.steal_version = 0;
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
                self.pv_eoi_msr = value;
                self.lazy.set_page(cx, page);
                Ok(())
            }
            _ => Err(Gp),
        }
    }

    /// Writes the pvclock at the registered GPA (odd version, fields, even
    /// version; the version stays odd under `break=pvclock-odd`).
    fn publish(&mut self, cx: &mut GuestCx<'_>) {
        if self.system_time_msr & m::ENABLED == 0 || self.time.tsc_to_system_mul == 0 {
            return;
        }
        let gpa = self.system_time_msr & !3 & !m::ENABLED;
        let epoch = self.epoch.unwrap_or(cx.now);
        self.time.tsc_timestamp = cx.now;
        self.time.system_time = pvclock::scale_delta(
            cx.now.wrapping_sub(epoch),
            self.time.tsc_to_system_mul,
            self.time.tsc_shift,
        );
        if self.broken == Some(Break::PvclockBackwards)
            && self.stats.publishes % BACKWARDS_EVERY == BACKWARDS_EVERY - 1
        {
            self.time.system_time = self.time.system_time.saturating_sub(BACKWARDS_LAG_NS);
        }
        // One vCPU: trivially synchronised, unless broken on purpose.
        self.time.flags = if self.broken == Some(Break::StableBit) {
            0
        } else {
            pvclock::FLAG_TSC_STABLE
        };
        let odd = self.time.version | 1;
        let t = VcpuTimeInfo {
            version: odd,
            ..self.time
        };
        // A GPA whose structure does not fit guest RAM is ignored, as KVM
        // ignores a GPA it cannot map: no version-only write either.
        if cx.mem.write(gpa, t.as_bytes()).is_err() {
            return;
        }
        self.stats.publishes += 1;
        if self.broken == Some(Break::PvclockOdd) {
            self.time.version = odd;
            return;
        }
        self.time.version = odd.wrapping_add(1);
        let _ = cx.mem.write(gpa, &self.time.version.to_le_bytes());
    }

    /// Writes a steal-time record (version protocol; `steal` 0: the one
    /// vCPU is never descheduled), unless `break=steal-never`.
    fn update_steal(&mut self, cx: &mut GuestCx<'_>) {
        if self.steal_msr & m::ENABLED == 0 || self.broken == Some(Break::StealNever) {
            return;
        }
        let gpa = self.steal_msr & !63;
        let steal = if self.broken == Some(Break::StealBackwards) {
            self.backwards = self.backwards.saturating_sub(BACKWARDS_STEP);
            self.backwards
        } else {
            0
        };
        let st = StealTime {
            steal,
            version: self.steal_version.wrapping_add(2) & !1,
            ..Default::default()
        };
        if cx.mem.write(gpa, st.as_bytes()).is_ok() {
            self.steal_version = st.version;
            self.steal_at = cx.now;
            self.stats.steal_updates += 1;
        }
    }

    /// Before each entry: settle PV EOI, refresh steal time.
    pub fn poll(&mut self, cx: &mut GuestCx<'_>) {
        self.lazy.reconcile(cx);
        if self.broken == Some(Break::PvclockBackwards) {
            self.publish(cx);
        }
        let period = self.tsc_khz.saturating_mul(STEAL_REFRESH_MS);
        let backwards = self.broken == Some(Break::StealBackwards);
        if self.steal_msr & m::ENABLED != 0
            && period != 0
            && (backwards || cx.now.wrapping_sub(self.steal_at) >= period)
        {
            self.update_steal(cx);
        }
    }

    /// The guest takes `vector`.
    pub fn on_inject(&mut self, cx: &mut GuestCx<'_>, vector: u8) {
        self.lazy.on_inject(cx, vector);
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
                hc::SEND_IPI => {
                    // APIC ID 0 (the one vCPU) is bit `0 - a2` of the
                    // 128-bit bitmap a0:a1 when a2 <= 0; i.e. bit 0 with
                    // a2 = 0.
                    let vector = (a3 & 0xff) as u8;
                    if a2 == 0 && a0 & 1 != 0 {
                        cx.apic.raise(vector);
                        self.stats.ipis += 1;
                        1
                    } else {
                        let _ = a1;
                        0
                    }
                }
                hc::SCHED_YIELD => {
                    self.stats.yields += 1;
                    0
                }
                hc::KICK_CPU => {
                    self.stats.kicks += 1;
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

    /// The `mv.kvm` record.
    pub fn report(&self) {
        bootkit::record!(
            "mv.kvm",
            base = format_args!("{:#x}", self.base),
            break_step = self.broken.map_or("none", Break::name),
            clock_msr = format_args!("{:#x}", self.system_time_index),
            clock = self.system_time_msr & m::ENABLED != 0,
            stable = self.broken != Some(Break::StableBit),
            publishes = self.stats.publishes,
            steal = self.steal_msr & m::ENABLED != 0,
            steal_updates = self.stats.steal_updates,
            pv_eoi = self.lazy.page().is_some(),
            pv_eoi_offered = self.lazy.offered,
            pv_eoi_completed = self.lazy.completed,
            pv_eoi_withdrawn = self.lazy.withdrawn,
            ipis = self.stats.ipis,
            yields = self.stats.yields,
            kicks = self.stats.kicks,
            enosys = self.stats.enosys,
            refused = self.stats.refused,
        );
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

    fn rdmsr(&mut self, _cx: &mut GuestCx<'_>, msr: u32) -> Option<Result<u64, Gp>> {
        KvmInterface::owns_msr(msr).then(|| self.iface.rdmsr(msr))
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
