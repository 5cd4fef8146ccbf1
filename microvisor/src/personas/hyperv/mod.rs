//! `hyperv` and `kvm+hyperv`: the Microsoft hypervisor interface "Hv#1"
//! as the TLFS specifies it, from the ABI the guest backend shares
//! (`pvops_abi::hyperv`). `kvm+hyperv` adds KVM's interface at
//! 0x4000_0100 (the `kvm` persona's [`KvmInterface`]: kvmclock, steal time,
//! PV EOI, hypercalls), as QEMU/KVM stacks it above its Hyper-V
//! enlightenments; `break=` steps are the Hyper-V ones.
//!
//! - CPUID 0x4000_0000..=0x4000_0006 ([`cpuid`]).
//! - Synthetic MSRs ([`msrs`]): guest OS ID, hypercall page (overlay
//!   `VMMCALL; RET`), VP index, reference counter and reference TSC page
//!   ([`refclock`]), TSC/APIC frequencies, EOI/ICR/TPR, VP assist page
//!   with EOI assist ([`lazy_eoi`]), synthetic timers in direct mode
//!   ([`stimer`]), crash MSRs ([`crash`], reported at the end of the run).
//! - Hypercalls ([`hypercalls`]): HvCallFlushVirtualAddressSpace/List and
//!   HvCallSendSyntheticClusterIpi, with TLFS status codes; counted by call
//!   code under `mv.hypercall`. A VMMCALL while the hypercall page is
//!   disabled, from CPL > 0 or outside protected mode raises #UD (TLFS,
//!   Hypercall Interface).
//!
//! `break=<word>[+<word>...]`: at most one step broken, for the guest's
//! fallback paths: `hypercall-page` (the MSR enables, but no overlay is
//! written), `tsc-page` (the page keeps sequence 0), `hypercall-error`
//! (every hypercall returns HV_STATUS_ACCESS_DENIED); and behaviours of
//! real hosts ([`KNOBS`]): `no-frequencies` (no AccessFrequencyRegs
//! privilege nor frequency-MSR feature, the MSRs #GP: QEMU without
//! `hv-frequencies`), `tsc-page-late` (the reference TSC page reads
//! sequence 0 when enabled and becomes valid later (1 s, or at the first synthetic timer configuration), as KVM's
//! `kvm_hv_setup_tsc_page` leaves it 0 until its master clock is usable).
//!
//! The lying-hypervisor matrix (issue 16, `docs/lying-hypervisors.md`) adds
//! the steps `no-privileges` (leaves 0x4000_0003 and 0x4000_0004 read 0:
//! the signature without features), `absurd-frequency`
//! (HV_X64_MSR_TSC_FREQUENCY reads 1 kHz), `hidden-stimer` (the
//! AccessSyntheticTimerRegs privilege cleared, the timer MSRs still work:
//! the guest must not touch them) and `hypercall-second-fails` (the first
//! hypercall succeeds, every later one returns HV_STATUS_ACCESS_DENIED) and
//! `msrs-gp` (privileges and features as usual, but the frequency MSRs
//! and HV_X64_MSR_CRASH_CTL raise #GP) and `miscalibrated-frequency`
//! (what L1 KVM did on `nested:hyperv:smp2`: HV_X64_MSR_TSC_FREQUENCY
//! about 3.5 times too low, the TSC page left at sequence 0, the reference
//! counter right).

mod cpuid;
mod crash;
mod hypercalls;
pub(crate) mod lazy_eoi;
mod msrs;
mod refclock;
mod stimer;
#[cfg(test)]
mod tests;

use super::kvm::KvmInterface;
use super::{GuestCx, Hypercall, HypercallAction, Persona, SelectError};
use crate::guest::Gp;
use pvops_abi::hyperv::{msr as m, page_msr, Control, HypercallResult, Status};

/// The `break=` steps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Break {
    /// `hypercall-page`: HV_X64_MSR_HYPERCALL enables, but no overlay.
    HypercallPage,
    /// `tsc-page`: the reference TSC page keeps sequence 0.
    TscPage,
    /// `hypercall-error`: every hypercall returns ACCESS_DENIED.
    HypercallError,
    /// `no-privileges`: leaves 0x4000_0003 and 0x4000_0004 read 0.
    NoPrivileges,
    /// `absurd-frequency`: HV_X64_MSR_TSC_FREQUENCY reads
    /// [`ABSURD_TSC_HZ`].
    AbsurdFrequency,
    /// `hidden-stimer`: no AccessSyntheticTimerRegs in CPUID; the MSRs work.
    HiddenStimer,
    /// `hypercall-second-fails`: hypercalls after the first return
    /// ACCESS_DENIED.
    HypercallSecondFails,
    /// `msrs-gp`: the frequency MSRs and CRASH_CTL raise #GP although
    /// CPUID offers them.
    MsrsGp,
    /// `miscalibrated-frequency`: what KVM did on `nested:hyperv:smp2`
    /// when its host (L1 Linux) had miscalibrated its TSC and left the TSC
    /// clocksource: HV_X64_MSR_TSC_FREQUENCY reads the true frequency times
    /// [`MISCALIBRATED_NUM`]` / `[`MISCALIBRATED_DEN`] (about 3.5 times
    /// too low), the reference TSC page keeps sequence 0 (KVM validates it
    /// only on a TSC-based master clock), the reference counter is right.
    MiscalibratedFrequency,
    /// `sets-refused`: with several VPs, a flush or IPI hypercall whose
    /// processor set names the last VP returns INVALID_PARAMETER (a
    /// hypervisor that rejects a processor set); sets without it succeed.
    SetsRefused,
}

/// `break=miscalibrated-frequency`'s ratio: the MSR reads the true TSC
/// frequency times `MISCALIBRATED_NUM / MISCALIBRATED_DEN`, the figures L1
/// KVM gave (749 226 kHz for a TSC of 2 596 139 kHz).
pub const MISCALIBRATED_NUM: u64 = 749_226;
/// See [`MISCALIBRATED_NUM`].
pub const MISCALIBRATED_DEN: u64 = 2_596_139;

/// What `break=absurd-frequency` makes HV_X64_MSR_TSC_FREQUENCY read: 1 kHz.
pub const ABSURD_TSC_HZ: u64 = 1000;

/// `break=` step names.
pub const BREAK_STEPS: &[&str] = &[
    "hypercall-page",
    "tsc-page",
    "hypercall-error",
    "no-privileges",
    "absurd-frequency",
    "hidden-stimer",
    "hypercall-second-fails",
    "msrs-gp",
    "miscalibrated-frequency",
    "sets-refused",
];
/// Behaviour words `break=` also takes.
pub const KNOBS: &[&str] = &["no-frequencies", "tsc-page-late"];

/// Behaviours of real hosts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Knobs {
    /// No frequency MSRs.
    pub no_frequencies: bool,
    /// TSC page sequence 0 at set-up, valid later.
    pub tsc_page_late: bool,
}

impl Break {
    fn parse(s: &str) -> Option<Break> {
        match s {
            "hypercall-page" => Some(Break::HypercallPage),
            "tsc-page" => Some(Break::TscPage),
            "hypercall-error" => Some(Break::HypercallError),
            "no-privileges" => Some(Break::NoPrivileges),
            "absurd-frequency" => Some(Break::AbsurdFrequency),
            "hidden-stimer" => Some(Break::HiddenStimer),
            "hypercall-second-fails" => Some(Break::HypercallSecondFails),
            "msrs-gp" => Some(Break::MsrsGp),
            "miscalibrated-frequency" => Some(Break::MiscalibratedFrequency),
            "sets-refused" => Some(Break::SetsRefused),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        BREAK_STEPS[self as usize]
    }
}

/// Most VPs: the microvisor's vCPUs.
pub(crate) const MAX_VPS: usize = crate::config::MAX_VCPUS;

/// What the TLFS keeps per virtual processor: the VP assist page (with its
/// EOI assist), the synthetic timers, and here a TLB flush another VP asked
/// for while this one was not running.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Vp {
    vp_assist_msr: u64,
    stimers: [stimer::Stimer; m::STIMER_COUNT as usize],
    lazy: lazy_eoi::LazyEoi,
    /// Flush this VP's TLB before it next runs.
    flush_pending: bool,
}

/// The `hyperv` persona.
#[derive(Debug)]
pub struct HyperV {
    kvm: bool,
    kvm_iface: Option<KvmInterface>,
    broken: Option<Break>,
    knobs: Knobs,
    /// Host TSC from which a `tsc-page-late` page becomes valid.
    tsc_valid_at: Option<u64>,
    clock: refclock::RefClock,
    apic_hz: u64,
    guest_os_id: u64,
    hypercall_msr: u64,
    hypercall_overlay: Option<refclock::Overlay>,
    tsc_page_msr: u64,
    tsc_overlay: Option<refclock::Overlay>,
    tsc_sequence: u32,
    /// VPs in the partition (1 unless `set_vcpus`).
    vcpus: usize,
    /// Per-VP state, indexed by VP index (= vCPU index = APIC ID).
    vps: [Vp; MAX_VPS],
    crash: crash::Crash,
    calls: hypercalls::Stats,
    /// Hypercalls made through the page so far.
    hypercalls: u64,
}

impl HyperV {
    /// A Hyper-V persona, with a KVM signature above it if asked.
    pub fn new(kvm: bool, break_step: Option<&str>) -> Result<Self, SelectError> {
        let mut broken = None;
        let mut knobs = Knobs::default();
        for word in break_step.into_iter().flat_map(|s| s.split('+')) {
            match word {
                "no-frequencies" => knobs.no_frequencies = true,
                "tsc-page-late" => knobs.tsc_page_late = true,
                _ => match Break::parse(word) {
                    Some(b) if broken.is_none() => broken = Some(b),
                    _ => return Err(SelectError::UnknownBreak),
                },
            }
        }
        Ok(HyperV {
            kvm,
            kvm_iface: kvm.then(|| KvmInterface::new(cpuid::KVM_BASE, None)),
            broken,
            knobs,
            tsc_valid_at: None,
            clock: refclock::RefClock::new(1_000_000),
            apic_hz: 0,
            guest_os_id: 0,
            hypercall_msr: 0,
            hypercall_overlay: None,
            tsc_page_msr: 0,
            tsc_overlay: None,
            tsc_sequence: 0,
            vcpus: 1,
            vps: [Vp::default(); MAX_VPS],
            crash: crash::Crash::default(),
            calls: hypercalls::Stats::default(),
            hypercalls: 0,
        })
    }

    /// The broken step, if any.
    pub fn broken(&self) -> Option<Break> {
        self.broken
    }

    /// The VPs no processor set may name: the last one under
    /// `break=sets-refused` with several VPs, else none.
    fn refused_vps(&self) -> u64 {
        match self.broken {
            Some(Break::SetsRefused) if self.vcpus > 1 => 1 << (self.vcpus - 1),
            _ => 0,
        }
    }

    /// The state of the VP a handler runs for.
    pub(crate) fn vp(&mut self, cx: &GuestCx<'_>) -> &mut Vp {
        &mut self.vps[cx.vcpu.min(MAX_VPS - 1)]
    }

    /// Carries out a call's effects: the calling VP's flush now (before it
    /// re-enters), the others' on their next entry; IPIs to the calling VP
    /// into its APIC, to the others through the vCPU code (which wakes a
    /// halted target); a long spin wait ends the slice when another VP
    /// could run (a real hypervisor deschedules the spinner).
    fn apply(&mut self, cx: &mut GuestCx<'_>, e: hypercalls::Effects) {
        let me = cx.vcpu.min(MAX_VPS - 1);
        for n in 0..self.vcpus {
            if e.flush & (1 << n) != 0 {
                if n == me {
                    cx.requests.flush_tlb = true;
                } else {
                    self.vps[n].flush_pending = true;
                }
            }
        }
        if let Some((targets, vector)) = e.ipi {
            if targets & (1 << me) != 0 {
                cx.apic.raise(vector);
            }
            cx.requests.ipi((targets & !(1 << me)) as u32, vector);
        }
        if e.spin_wait && self.vcpus > 1 {
            cx.requests.yield_now = true;
        }
    }
}

/// CS.L in the VMCB's packed segment attributes (descriptor bit 53).
const ATTRIB_L: u16 = 1 << 9;
/// EFER.LMA.
const EFER_LMA: u64 = 1 << 10;
/// CR0.PE.
const CR0_PE: u64 = 1 << 0;

impl Persona for HyperV {
    fn name(&self) -> &'static str {
        if self.kvm {
            "kvm+hyperv"
        } else {
            "hyperv"
        }
    }

    fn hypervisor_bit(&self) -> bool {
        true
    }

    fn cpuid(&mut self, leaf: u32, _subleaf: u32) -> [u32; 4] {
        if let Some(r) = self.kvm_iface.as_ref().and_then(|k| k.cpuid(leaf)) {
            return r;
        }
        let mut r = cpuid::leaf(self.kvm, self.knobs, self.vcpus, leaf);
        let hide = match (self.broken, leaf) {
            (
                Some(Break::NoPrivileges),
                pvops_abi::hyperv::cpuid::FEATURES | pvops_abi::hyperv::cpuid::ENLIGHTENMENT_INFO,
            ) => {
                r = [0; 4];
                0
            }
            (Some(Break::HiddenStimer), pvops_abi::hyperv::cpuid::FEATURES) => {
                pvops_abi::hyperv::Privileges::SYNTHETIC_TIMER_REGS.0
            }
            _ => 0,
        };
        r[0] &= !(hide as u32);
        r[1] &= !((hide >> 32) as u32);
        r
    }

    fn rdmsr(&mut self, cx: &mut GuestCx<'_>, msr: u32) -> Option<Result<u64, Gp>> {
        if let Some(k) = self.kvm_iface.as_mut() {
            if KvmInterface::owns_msr(msr) {
                return Some(k.rdmsr(cx.vcpu, msr));
            }
        }
        m::is_synthetic(msr).then(|| self.read(cx, msr))
    }

    fn wrmsr(&mut self, cx: &mut GuestCx<'_>, msr: u32, value: u64) -> Option<Result<(), Gp>> {
        if let Some(k) = self.kvm_iface.as_mut() {
            if KvmInterface::owns_msr(msr) {
                return Some(k.wrmsr(cx, msr, value));
            }
        }
        m::is_synthetic(msr).then(|| self.write(cx, msr, value))
    }

    fn hypercall(&mut self, cx: &mut GuestCx<'_>) -> Hypercall {
        // With the hypercall page disabled, a VMMCALL is KVM's (QEMU/KVM
        // takes Hyper-V hypercalls only through the page's overlay).
        if let Some(k) = self.kvm_iface.as_mut() {
            if !page_msr::is_enabled(self.hypercall_msr) {
                return k.hypercall(cx);
            }
        }
        let long = cx.state.efer & EFER_LMA != 0 && cx.state.cs.attrib & ATTRIB_L != 0;
        let lo32 = |r: u64| r & 0xFFFF_FFFF;
        let (control, input, output) = if long {
            (cx.regs.rcx, cx.regs.rdx, cx.regs.r8)
        } else {
            (
                lo32(cx.regs.rdx) << 32 | lo32(cx.state.rax),
                lo32(cx.regs.rbx) << 32 | lo32(cx.regs.rcx),
                lo32(cx.regs.rdi) << 32 | lo32(cx.regs.rsi),
            )
        };
        let control = Control(control);
        let code = u64::from(control.code());
        // CPL from SS.DPL (what QEMU keeps the VMCB's CPL in step with).
        let cpl = (cx.state.ss.attrib >> 5) & 3;
        if !page_msr::is_enabled(self.hypercall_msr) || cpl != 0 || cx.state.cr0 & CR0_PE == 0 {
            return Hypercall {
                code,
                action: HypercallAction::Undefined,
            };
        }
        self.hypercalls += 1;
        let fails = match self.broken {
            Some(Break::HypercallError) => true,
            Some(Break::HypercallSecondFails) => self.hypercalls > 1,
            _ => false,
        };
        let result = if fails {
            self.calls.errors += 1;
            HypercallResult::new(Status::ACCESS_DENIED, 0)
        } else {
            let (r, effects) = hypercalls::run(
                hypercalls::Input {
                    control,
                    input,
                    output,
                },
                cx.mem,
                hypercalls::Partition {
                    vps: self.vcpus,
                    refused: self.refused_vps(),
                },
                &mut self.calls,
            );
            self.apply(cx, effects);
            r
        };
        if long {
            cx.state.rax = result.0;
        } else {
            cx.state.rax = lo32(result.0);
            cx.regs.rdx = result.0 >> 32;
        }
        Hypercall {
            code,
            action: HypercallAction::Return,
        }
    }

    fn set_clock(&mut self, tsc_khz: u64, apic_bus_khz: u64) {
        if let Some(k) = self.kvm_iface.as_mut() {
            k.set_clock(tsc_khz);
        }
        self.clock = refclock::RefClock::new(tsc_khz);
        self.apic_hz = apic_bus_khz.saturating_mul(1000);
    }

    fn set_vcpus(&mut self, vcpus: usize) {
        self.vcpus = vcpus.clamp(1, MAX_VPS);
        if let Some(k) = self.kvm_iface.as_mut() {
            k.set_vcpus(vcpus);
        }
    }

    fn kicks_halted(&self) -> bool {
        self.kvm_iface
            .as_ref()
            .is_some_and(|k| k.features().contains(pvops_abi::kvm::Features::PV_UNHALT))
    }

    fn descheduled(&mut self, cx: &mut GuestCx<'_>, preempted: bool) {
        if let Some(k) = self.kvm_iface.as_mut() {
            k.descheduled(cx, preempted);
        }
    }

    fn next_deadline(&self) -> Option<u64> {
        self.vps[..self.vcpus]
            .iter()
            .flat_map(|v| v.stimers.iter())
            .filter_map(|t| t.deadline())
            .min()
    }

    fn poll(&mut self, cx: &mut GuestCx<'_>) {
        self.clock.start(cx.now);
        if self.tsc_valid_at.is_some_and(|t| cx.now >= t) {
            self.tsc_valid_at = None;
            self.validate_tsc_page(cx);
        }
        // Every VP's timers: an expiry goes to its own VP (direct mode), the
        // running one's APIC or another's through the vCPU code, which
        // wakes it if halted.
        let me = cx.vcpu.min(MAX_VPS - 1);
        for (n, vp) in self.vps[..self.vcpus].iter_mut().enumerate() {
            for t in &mut vp.stimers {
                if let Some(v) = t.poll(&self.clock, cx.now) {
                    if n == me {
                        cx.apic.raise(v);
                    } else {
                        cx.requests.ipi(1 << n, v);
                    }
                }
            }
        }
        // A flush another VP asked for while this one was not running.
        if core::mem::take(&mut self.vps[me].flush_pending) {
            cx.requests.flush_tlb = true;
        }
        // After the timers: a timer interrupt now requested withdraws an
        // outstanding lazy EOI before anything is injected.
        self.vps[me].lazy.reconcile(cx);
        if let Some(k) = self.kvm_iface.as_mut() {
            k.poll(cx);
        }
    }

    fn on_inject(&mut self, cx: &mut GuestCx<'_>, vector: u8) {
        self.vp(cx).lazy.on_inject(cx, vector);
        if let Some(k) = self.kvm_iface.as_mut() {
            k.on_inject(cx, vector);
        }
    }

    fn report(&self) {
        if let Some(k) = &self.kvm_iface {
            k.report();
        }
        if let Some(p) = self.crash.notified {
            bootkit::record!(
                "mv.crash",
                p0 = format_args!("{:#x}", p[0]),
                p1 = format_args!("{:#x}", p[1]),
                p2 = format_args!("{:#x}", p[2]),
                p3 = format_args!("{:#x}", p[3]),
                p4 = format_args!("{:#x}", p[4]),
                message = self.crash.message(),
            );
        }
        let vps = &self.vps[..self.vcpus];
        let sum = |f: fn(&Vp) -> u64| -> u64 { vps.iter().map(f).sum() };
        let fires = sum(|v| v.stimers.iter().map(|t| t.fires).sum());
        bootkit::record!(
            "mv.hyperv",
            break_step = self.broken.map_or("none", Break::name),
            frequencies = !self.knobs.no_frequencies,
            tsc_khz = self.clock.tsc_hz() / 1000,
            tsc_page_late = self.knobs.tsc_page_late,
            hypercall_page =
                page_msr::is_enabled(self.hypercall_msr) && self.hypercall_overlay.is_some(),
            tsc_page = page_msr::is_enabled(self.tsc_page_msr),
            vp_assist = vps.iter().any(|v| v.lazy.page().is_some()),
            stimer_fires = fires,
            lazy_eoi_offered = sum(|v| v.lazy.offered),
            lazy_eoi_completed = sum(|v| v.lazy.completed),
            lazy_eoi_withdrawn = sum(|v| v.lazy.withdrawn),
            flushes = self.calls.flushes,
            ipis = self.calls.ipis,
            vp_flushes = self.calls.vp_flushes,
            spin_waits = self.calls.spin_waits,
            hypercall_errors = self.calls.errors,
            sets_refused = self.calls.sets_refused,
            crash_notifications = self.crash.notifications,
        );
    }
}

#[cfg(test)]
mod unit_tests {
    use super::*;

    #[test]
    fn break_steps() {
        for s in BREAK_STEPS {
            let p = HyperV::new(false, Some(s)).unwrap();
            assert_eq!(p.broken().map(Break::name), Some(*s));
        }
        assert!(matches!(
            HyperV::new(true, Some("nope")),
            Err(SelectError::UnknownBreak)
        ));
        assert_eq!(HyperV::new(true, None).unwrap().name(), "kvm+hyperv");
    }

    #[test]
    fn miscalibrated_frequency_reads_kvms_ratio() {
        let mut p = HyperV::new(false, Some("miscalibrated-frequency")).unwrap();
        p.set_clock(2_596_139, 1_000_000);
        assert_eq!(p.miscalibrated_tsc_hz(), 749_226_000);
    }

    #[test]
    fn lying_leaves() {
        use pvops_abi::hyperv::{cpuid as leaf, Leaves, Privileges};
        let mut p = HyperV::new(false, Some("no-privileges")).unwrap();
        let l = Leaves::decode(|n| p.cpuid(n, 0));
        assert!(l.is_conforming());
        assert_eq!((l.privileges.0, l.features.0, l.hints.0), (0, 0, 0));
        let mut p = HyperV::new(false, Some("hidden-stimer")).unwrap();
        let l = Leaves::decode(|n| p.cpuid(n, 0));
        assert!(!l.privileges.contains(Privileges::SYNTHETIC_TIMER_REGS));
        assert!(l.privileges.contains(Privileges::HYPERCALL_MSRS));
        assert_ne!(p.cpuid(leaf::FEATURES, 0), [0; 4]);
    }
}
