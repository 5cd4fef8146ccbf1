//! The Hyper-V backend ("Hv#1", Microsoft Hypervisor TLFS).
//!
//! **Detection** (TLFS, Feature and Interface Discovery; Hypercall
//! Interface: Establishing the Hypercall Interface, step 2): the hypervisor
//! bit, "Microsoft Hv" at 0x4000_0000 with interface "Hv#1" at
//! 0x4000_0001, a highest leaf of at least 0x4000_0005, and the
//! AccessHypercallMsrs and AccessVpIndex privileges in 0x4000_0003 EAX.
//! The priority is the base, 0x4000_0000, so a KVM or Xen backend that
//! finds its own signature stacked at 0x4000_0100 wins by the generic
//! highest-priority rule of [`crate::select`]; without such a backend
//! compiled in, Hyper-V's compatibility interface is used.
//!
//! **Setup**, in TLFS order: guest OS ID (open-source encoding), hypercall
//! page (verified overlaid before any hypercall), VP index, then each
//! enlightenment, each only under its own privilege, feature or
//! recommendation bit (see [`Offer`]). An entry is replaced only after its
//! own setup step succeeded; a failed step leaves exactly the entries that
//! depend on it native and logs why. Setup never fails as a whole.
//!
//! Entries it can own: `time.monotonic_ns` (reference TSC page, else the
//! reference counter MSR), `time.tsc_frequency` and `time.apic_timer_khz`
//! (frequency MSRs), `time.timer_setup/arm/cancel` (synthetic timer 0,
//! direct mode), `irq.eoi` (EOI assist, else the EOI MSR),
//! `mmu.flush_remote` (HvCallFlushVirtualAddressSpace/List),
//! `irq.send_ipi` and `irq.send_ipi_mask` (HvCallSendSyntheticClusterIpi,
//! fast), `system.report_crash` (crash MSRs). See `docs/backends/hyperv.md`.
//!
//! **Per VP** ([`percpu`]): the boot CPU's state in `install`, each
//! application processor's in [`Backend::init_cpu`]: its VP index from
//! HV_X64_MSR_VP_INDEX (the processor sets map APIC IDs through it), its
//! own VP assist page (lazy EOI reads the running CPU's), and its
//! synthetic timer 0 (per-VP MSRs, programmed by `timer_setup` on that
//! CPU). A step that fails on one CPU leaves that CPU's entry native
//! (recorded in its [`crate::Fallbacks`]). The reference TSC page is one
//! per partition, shared.
//!
//! **Lock group** (`lock.rs`), with more than one possible CPU and a spin
//! hint other than "never": `lock.wait` spins, then
//! HvCallNotifyLongSpinWait.

mod clock;
mod crash;
mod eoi;
mod hypercall;
mod lock;
mod msr;
pub mod percpu;
mod remote;
mod timer;

use crate::{Backend, Cpu, Detection, Environment, Fallbacks, Platform, SetupError, SharedPage};
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use pvops::patch::Patch;
use pvops::slot;
use pvops::time::{TscFrequency, TscSource};
use pvops_abi::hyperv::{
    self as abi, cpuid, crash_ctl, hypercall_msr, msr as m, page_msr, Features, GuestOsId, Hints,
    HypercallResult, Leaves, Privileges, Status,
};
use pvops_probe::HypervisorKind;

/// The Hyper-V backend.
pub static HYPERV: HyperV = HyperV;

/// The Hyper-V backend's type.
#[derive(Debug)]
pub struct HyperV;

/// Detection priority: the base at which "Microsoft Hv" must sit.
pub const PRIORITY: u32 = cpuid::VENDOR_AND_MAX_FUNCTIONS;

/// The guest OS identity pvops reports: open source, no allocated OS type
/// (see [`GuestOsId::OS_TYPE_PVOPS`]), OS ID 0x70 ('p'), version = this
/// crate's major.minor.patch as 0x04MMmmpp, build 0.
///
/// The version's top byte (ID bits 47:40) is [`GUEST_OS_LEVEL`]: Xen's
/// Viridian reads those bits as the Microsoft encoding's "OS" field and
/// publishes its recommendations (leaf 0x4000_0004) only when it is at least
/// 4 (`xen/arch/x86/hvm/viridian/viridian.c`, `guest_os_id.os < 4`; review
/// finding F8). The TLFS leaves the open-source version field to the
/// vendor.
pub const GUEST_OS_ID: GuestOsId =
    GuestOsId::open_source(GuestOsId::OS_TYPE_PVOPS, 0x70, version_word(), 0);

const fn parse(s: &str) -> u32 {
    let b = s.as_bytes();
    let mut i = 0;
    let mut v = 0u32;
    while i < b.len() {
        v = v * 10 + (b[i] - b'0') as u32;
        i += 1;
    }
    v
}

const fn version_word() -> u32 {
    let major = parse(env!("CARGO_PKG_VERSION_MAJOR"));
    let minor = parse(env!("CARGO_PKG_VERSION_MINOR"));
    let patch = parse(env!("CARGO_PKG_VERSION_PATCH"));
    (GUEST_OS_LEVEL as u32) << 24 | (major & 0xFF) << 16 | (minor & 0xFF) << 8 | (patch & 0xFF)
}

/// ID bits 47:40 (see [`GUEST_OS_ID`]).
pub const GUEST_OS_LEVEL: u8 = 4;

/// The TSC frequency in Hz a reference TSC page scale stands for: the page
/// gives reference time (100 ns units) = `((tsc * scale) >> 64) + offset`
/// (TLFS, Partition Reference Time Enlightenment), so one TSC tick is
/// `scale / 2^64` units and `tsc_hz = 10^7 * 2^64 / scale`. `None` for a
/// scale of 0 or one that would mean a TSC beyond 64 bits of Hz.
pub fn tsc_hz_from_scale(scale: u64) -> Option<u64> {
    if scale == 0 {
        return None;
    }
    u64::try_from((10_000_000u128 << 64) / u128::from(scale)).ok()
}

/// The TSC frequency in Hz from two (reference time, TSC) samples: `None`
/// unless the reference time advanced.
pub fn tsc_hz_from_counter(ref0: u64, tsc0: u64, ref1: u64, tsc1: u64) -> Option<u64> {
    let dref = ref1.checked_sub(ref0).filter(|&d| d > 0)?;
    let dtsc = tsc1.checked_sub(tsc0)?;
    u64::try_from(u128::from(dtsc) * 10_000_000 / u128::from(dref)).ok()
}

/// One (reference time, TSC) sample: a reading of HV_X64_MSR_TIME_REF_COUNT
/// (100 ns units) and the TSC at that moment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RefSample {
    /// Partition reference time, 100 ns units.
    pub reference: u64,
    /// TSC at the reading (the midpoint of the reads bracketing it).
    pub tsc: u64,
}

/// What the cross-check of HV_X64_MSR_TSC_FREQUENCY against the reference
/// counter decided ([`check_msr_frequency`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MsrCheck {
    /// The MSR is within [`CROSS_CHECK_TOLERANCE_PPM`] of the measurement:
    /// the MSR's value is used.
    Agrees {
        /// The measured frequency, Hz.
        measured_hz: u64,
    },
    /// The MSR is off by more than the tolerance: the measured frequency
    /// (the TSC against a hypervisor clock that is there) is used.
    Disagrees {
        /// The measured frequency, Hz.
        measured_hz: u64,
    },
    /// The measurement itself is unusable (the reference time did not
    /// advance [`CROSS_CHECK_MIN_UNITS`], or at an implausible rate): no
    /// frequency is believed, `time.tsc_frequency` stays native.
    Unmeasurable,
}

/// The reference time the cross-check spins for: 10 ms (100 000 units of
/// 100 ns). Each end point's error is at most half the TSC bracket of one
/// MSR exit: about 1 us on the microvisor, 45-75 us under nested KVM
/// (`/work/shared/reference/nested-real-peers.md`, "Exit counts"); the
/// brackets' common part cancels between the two ends, so over 10 ms the
/// measurement stays well inside the example kernel's 0.5 % clock-vs-TSC
/// tolerance, while the boot pays 10 ms once, and only when no valid TSC
/// page vouches for the MSR.
pub const CROSS_CHECK_UNITS: u64 = 100_000;
/// The least reference time a measurement must span to be judged: 5 ms.
/// A shorter first window (the MSR claimed a TSC more than twice too slow,
/// so the spin ended early) is extended with the measured rate, at most
/// [`CROSS_CHECK_EXTENSIONS`] times.
pub const CROSS_CHECK_MIN_UNITS: u64 = CROSS_CHECK_UNITS / 2;
/// Extensions of a window shorter than [`CROSS_CHECK_MIN_UNITS`].
pub const CROSS_CHECK_EXTENSIONS: u32 = 2;
/// MSR reads per end point of the cross-check (the narrowest bracket wins).
pub const CROSS_CHECK_TRIES: u32 = 3;
/// How far the MSR may be from the measurement, in parts per million: 2 %.
/// About three times the worst-case measurement error under nested KVM (two
/// half-brackets of 75 us over 10 ms: 0.75 %), so a right MSR is never
/// replaced by a noisier measurement; far below the 3.5-fold error KVM
/// showed when its host's TSC calibration went wrong (749 226 kHz for
/// 2 596 139, with the TSC page invalid).
pub const CROSS_CHECK_TOLERANCE_PPM: u64 = 20_000;

/// The cross-check's decision from the MSR's value (`msr_hz`) and two
/// samples around a spin: [`MsrCheck::Unmeasurable`] when the reference
/// time advanced less than [`CROSS_CHECK_MIN_UNITS`] or the TSC did not
/// advance, or the measured rate is not plausible; else whether `msr_hz`
/// lies within [`CROSS_CHECK_TOLERANCE_PPM`] of the measured rate.
pub fn check_msr_frequency(msr_hz: u64, s0: RefSample, s1: RefSample) -> MsrCheck {
    if s1.reference.saturating_sub(s0.reference) < CROSS_CHECK_MIN_UNITS {
        return MsrCheck::Unmeasurable;
    }
    let Some(measured_hz) = tsc_hz_from_counter(s0.reference, s0.tsc, s1.reference, s1.tsc)
        .filter(|hz| crate::tsc::plausible_khz(hz / 1000))
    else {
        return MsrCheck::Unmeasurable;
    };
    let off = u128::from(msr_hz.abs_diff(measured_hz)) * 1_000_000;
    if off <= u128::from(measured_hz) * u128::from(CROSS_CHECK_TOLERANCE_PPM) {
        MsrCheck::Agrees { measured_hz }
    } else {
        MsrCheck::Disagrees { measured_hz }
    }
}

/// TSC ticks that `units` of reference time last at `hz`.
fn ticks_for(hz: u64, units: u64) -> u64 {
    u64::try_from(u128::from(hz) * u128::from(units) / 10_000_000).unwrap_or(u64::MAX)
}

/// Measures the TSC against the reference counter to check `msr_hz`: a
/// sample, a spin on the TSC alone (no exits) for what the MSR claims is
/// [`CROSS_CHECK_UNITS`], a sample; a window shorter than
/// [`CROSS_CHECK_MIN_UNITS`] is extended with the rate measured so far.
/// Costs `2 * CROSS_CHECK_TRIES` counter reads, `CROSS_CHECK_TRIES` more
/// per extension. A claim too high by a factor k stretches the spin k-fold
/// (bounded by the plausible range).
fn cross_check(hw: &mut dyn Hw, msr_hz: u64) -> (MsrCheck, RefSample, RefSample) {
    let s0 = sample(hw, CROSS_CHECK_TRIES);
    hw.spin_tsc(ticks_for(msr_hz, CROSS_CHECK_UNITS));
    let mut s1 = sample(hw, CROSS_CHECK_TRIES);
    for _ in 0..CROSS_CHECK_EXTENSIONS {
        let done = s1.reference.saturating_sub(s0.reference);
        if done >= CROSS_CHECK_MIN_UNITS || done == 0 {
            break;
        }
        let Some(rate) = tsc_hz_from_counter(s0.reference, s0.tsc, s1.reference, s1.tsc)
            .filter(|hz| crate::tsc::plausible_khz(hz / 1000))
        else {
            break;
        };
        hw.spin_tsc(ticks_for(rate, CROSS_CHECK_UNITS - done));
        s1 = sample(hw, CROSS_CHECK_TRIES);
    }
    (check_msr_frequency(msr_hz, s0, s1), s0, s1)
}

/// One (reference counter, TSC) sample: of `tries` counter reads, each
/// between two ordered TSC reads, the one with the narrowest TSC bracket,
/// paired with the bracket's midpoint (a read delayed by the vCPU being
/// preempted around the MSR exit does not skew the result).
fn sample(hw: &mut dyn Hw, tries: u32) -> RefSample {
    let mut best = (
        RefSample {
            reference: 0,
            tsc: 0,
        },
        u64::MAX,
    );
    for _ in 0..tries {
        let a = hw.tsc();
        let r = hw.rdmsr(m::TIME_REF_COUNT);
        let b = hw.tsc();
        let width = b.wrapping_sub(a);
        if width < best.1 {
            best = (
                RefSample {
                    reference: r,
                    tsc: a / 2 + b / 2,
                },
                width,
            );
        }
    }
    best.0
}

/// Reference-counter units (100 ns) the calibration spans: 10 ms.
const CALIBRATION_UNITS: u64 = 100_000;
/// Reads of the counter before the calibration gives up.
const CALIBRATION_READS: u32 = 10_000_000;

/// Reads the Hyper-V leaves from the environment's CPUID.
pub fn leaves(env: &Environment<'_>) -> Leaves {
    Leaves::decode(|leaf| {
        let r = env.cpuid.cpuid(leaf, 0);
        [r.eax, r.ebx, r.ecx, r.edx]
    })
}

/// Why the backend does not detect although "Microsoft Hv" is there, for
/// [`Backend::declined`].
fn declined(env: &Environment<'_>) -> Option<&'static str> {
    env.probe.find(HypervisorKind::HyperV)?;
    check(env).err()
}

/// Why the backend does not detect, or the decoded leaves when it does.
pub fn check(env: &Environment<'_>) -> Result<Leaves, &'static str> {
    if !env.probe.under_hypervisor() {
        return Err("no hypervisor bit");
    }
    let Some(iface) = env.probe.find(HypervisorKind::HyperV) else {
        return Err("no \"Microsoft Hv\" with \"Hv#1\"");
    };
    if iface.base != PRIORITY {
        return Err("\"Microsoft Hv\" not at 0x40000000");
    }
    let l = leaves(env);
    if !l.is_conforming() {
        return Err("highest leaf below 0x40000005");
    }
    let needed = Privileges::HYPERCALL_MSRS.union(Privileges::VP_INDEX);
    if !l.privileges.contains(needed) {
        return Err("no hypercall or VP index MSR privilege");
    }
    Ok(l)
}

/// What the hypervisor offers, entry by entry, from CPUID alone.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Offer {
    /// Reference counter MSR (privilege bit 1): the clock, and the fallback
    /// of the TSC page. Every Hyper-V clock and the synthetic timer need it.
    pub reference_counter: bool,
    /// Reference TSC page (privilege bit 9), used only with the counter.
    pub tsc_page: bool,
    /// TSC and APIC frequency MSRs (privilege bit 11 and feature EDX bit 8).
    pub frequencies: bool,
    /// Synthetic timer 0 in direct mode (privilege bit 3, feature EDX bit
    /// 19, and the reference counter for absolute expiry).
    pub stimer_direct: bool,
    /// EOI through the MSR / EOI assist (privilege bit 4, hint bit 3).
    pub apic_msrs: bool,
    /// Remote flush by hypercall (hint bit 2).
    pub remote_flush: bool,
    /// IPIs by HvCallSendSyntheticClusterIpi (hint bit 10).
    pub cluster_ipi: bool,
    /// Guest crash MSRs (feature EDX bit 10).
    pub crash_msrs: bool,
    /// Ex hypercalls with sparse VP sets (hint bit 11), for VP indexes of
    /// 64 or more.
    pub ex_processor_masks: bool,
    /// Long spin-wait notification: the hint's retry count, unless it is
    /// 0xFFFF_FFFF ("never notify") or 0 (an empty leaf 4: no
    /// recommendation at all, as Xen's Viridian before a guest OS ID).
    pub spin_notify: Option<u32>,
}

impl Offer {
    /// Decides from the leaves.
    pub fn from_leaves(l: &Leaves) -> Offer {
        let p = l.privileges;
        let reference_counter = p.contains(Privileges::PARTITION_REFERENCE_COUNTER);
        Offer {
            reference_counter,
            tsc_page: reference_counter && p.contains(Privileges::PARTITION_REFERENCE_TSC),
            frequencies: p.contains(Privileges::FREQUENCY_REGS)
                && l.features.contains(Features::FREQUENCY_MSRS),
            stimer_direct: reference_counter
                && p.contains(Privileges::SYNTHETIC_TIMER_REGS)
                && l.features.contains(Features::DIRECT_SYNTHETIC_TIMERS),
            apic_msrs: p.contains(Privileges::INTR_CTRL_REGS) && l.hints.contains(Hints::APIC_MSRS),
            remote_flush: l.hints.contains(Hints::HYPERCALL_REMOTE_FLUSH),
            cluster_ipi: l.hints.contains(Hints::SYNTHETIC_CLUSTER_IPI),
            crash_msrs: l.features.contains(Features::GUEST_CRASH_MSRS),
            ex_processor_masks: l.hints.contains(Hints::EX_PROCESSOR_MASKS),
            spin_notify: (l.spin_retries != abi::SPIN_RETRIES_NEVER && l.spin_retries != 0)
                .then_some(l.spin_retries),
        }
    }

    /// Whether any entry needs the hypercall page.
    pub fn needs_hypercalls(&self) -> bool {
        self.remote_flush || self.cluster_ipi || self.spin_notify.is_some()
    }
}

/// Hardware access during setup, so the setup logic can be host-tested
/// against a fake hypervisor.
pub(crate) trait Hw {
    fn rdmsr(&mut self, index: u32) -> u64;
    fn wrmsr(&mut self, index: u32, value: u64);
    /// Enables a page-enabling MSR on `page`; returns the read-back value.
    fn enable_page(&mut self, index: u32, page: &SharedPage) -> u64;
    /// Publishes the verified hypercall page.
    fn set_hypercall_page(&mut self, page: &SharedPage);
    fn flush_probe(&mut self, vp_mask: u64) -> HypercallResult;
    fn apic_id(&self) -> u32;
    /// The Hyper-V leaves, read again (after the guest OS ID: Xen's
    /// Viridian fills leaves 2 and 4 only once one is written).
    fn leaves(&mut self) -> Leaves;
    /// An ordered TSC read.
    fn tsc(&mut self) -> u64;
    /// Spins until the TSC has advanced `ticks` (no exits).
    fn spin_tsc(&mut self, ticks: u64);
}

/// The real machine.
struct Real;

impl Hw for Real {
    fn rdmsr(&mut self, index: u32) -> u64 {
        msr::read(index)
    }
    fn wrmsr(&mut self, index: u32, value: u64) {
        msr::write(index, value)
    }
    fn enable_page(&mut self, index: u32, page: &SharedPage) -> u64 {
        msr::enable_page(index, page)
    }
    fn set_hypercall_page(&mut self, page: &SharedPage) {
        hypercall::set_page(page.virt.as_ptr());
    }
    fn flush_probe(&mut self, vp_mask: u64) -> HypercallResult {
        remote::flush_hypercall(vp_mask, pvops::mmu::FlushTarget::All)
    }
    fn apic_id(&self) -> u32 {
        pvops::native::apic::id()
    }
    fn leaves(&mut self) -> Leaves {
        Leaves::decode(|leaf| {
            let r = pvops::cpu::cpuid(leaf, 0);
            [r.eax, r.ebx, r.ecx, r.edx]
        })
    }
    fn tsc(&mut self) -> u64 {
        crate::tsc::ordered()
    }
    fn spin_tsc(&mut self, ticks: u64) {
        let start = crate::tsc::ordered();
        while crate::tsc::ordered().wrapping_sub(start) < ticks {
            core::hint::spin_loop();
        }
    }
}

static TSC_KHZ: AtomicU64 = AtomicU64::new(0);
static APIC_KHZ: AtomicU64 = AtomicU64::new(0);
/// Where [`TSC_KHZ`] came from (index into [`TSC_SOURCES`]).
static TSC_FROM: AtomicU8 = AtomicU8::new(0);
const TSC_SOURCES: [TscSource; 3] = [
    TscSource::HypervMsr,
    TscSource::HypervTscPage,
    TscSource::HypervReferenceCounter,
];

extern "C" fn tsc_frequency() -> TscFrequency {
    TscFrequency {
        khz: TSC_KHZ.load(Ordering::Relaxed),
        source: TSC_SOURCES[usize::from(TSC_FROM.load(Ordering::Relaxed)) % TSC_SOURCES.len()],
    }
}

fn set_tsc_khz(khz: u64, source: TscSource, patch: &mut Patch) {
    TSC_KHZ.store(khz, Ordering::Relaxed);
    let i = TSC_SOURCES.iter().position(|&s| s == source).unwrap_or(0);
    TSC_FROM.store(i as u8, Ordering::Relaxed);
    patch.set(slot::TIME_TSC_FREQUENCY, tsc_frequency);
    log::info!("pvops: hyperv: TSC {} kHz from {}", khz, source.name());
}

/// The TSC frequency from the reference counter: 10 ms of reference time
/// against the TSC, with [`SAMPLE_TRIES`] reads per end point (see
/// [`sample`]). Polls the counter (one exit per read) until it has
/// advanced: the path without a frequency MSR.
fn calibrate(hw: &mut dyn Hw) -> Option<u64> {
    let s0 = sample(hw, SAMPLE_TRIES);
    for _ in 0..CALIBRATION_READS {
        if hw.rdmsr(m::TIME_REF_COUNT).wrapping_sub(s0.reference) >= CALIBRATION_UNITS {
            let s1 = sample(hw, SAMPLE_TRIES);
            return tsc_hz_from_counter(s0.reference, s0.tsc, s1.reference, s1.tsc);
        }
    }
    None
}

/// Uses HV_X64_MSR_TSC_FREQUENCY's plausible `khz`, cross-checked against
/// the reference counter unless a valid reference TSC page is there (KVM
/// validates its page only while its host clock runs on a stable TSC, the
/// state in which its `tsc_khz` is trustworthy; the page's own scale then
/// vouches for the same frequency). Returns the kHz set, or `None` when the
/// measurement was unusable and `time.tsc_frequency` stays native.
///
/// Observed on `nested:hyperv:smp2`: L1 KVM's MSR said 749 226 kHz for a
/// TSC of about 2 596 139 kHz, its TSC page invalid, while the reference
/// counter (from KVM's kvmclock nanoseconds) was right.
fn msr_frequency(hw: &mut dyn Hw, offer: &Offer, khz: u64, patch: &mut Patch) -> Option<u64> {
    if !offer.reference_counter || clock::tsc_page_scale().is_some() {
        set_tsc_khz(khz, TscSource::HypervMsr, patch);
        return Some(khz);
    }
    let (check, s0, s1) = cross_check(hw, khz.saturating_mul(1000));
    let units = s1.reference.saturating_sub(s0.reference);
    let ticks = s1.tsc.wrapping_sub(s0.tsc);
    match check {
        MsrCheck::Agrees { measured_hz } => {
            log::info!(
                "pvops: hyperv: HV_X64_MSR_TSC_FREQUENCY ({} kHz) agrees with the reference counter (no valid TSC page): {} kHz measured over {} units",
                khz,
                measured_hz / 1000,
                units
            );
            set_tsc_khz(khz, TscSource::HypervMsr, patch);
            Some(khz)
        }
        MsrCheck::Disagrees { measured_hz } => {
            let measured = (measured_hz + 500) / 1000;
            log::warn!(
                "pvops: hyperv: HV_X64_MSR_TSC_FREQUENCY disagrees with the reference counter (no valid TSC page): it says {} kHz, the TSC ran at {} kHz over {} units; the measured frequency is used",
                khz,
                measured,
                units
            );
            set_tsc_khz(measured, TscSource::HypervReferenceCounter, patch);
            Some(measured)
        }
        MsrCheck::Unmeasurable => {
            log::warn!(
                "pvops: hyperv: HV_X64_MSR_TSC_FREQUENCY ({} kHz) could not be checked: the reference counter advanced {} units over {} TSC ticks",
                khz,
                units,
                ticks
            );
            native_stays(
                "time.tsc_frequency",
                "the frequency MSR is unconfirmed and the reference counter measurement implausible",
            );
            None
        }
    }
}

/// Samples per calibration end point.
const SAMPLE_TRIES: u32 = 5;

extern "C" fn apic_timer_khz() -> u64 {
    APIC_KHZ.load(Ordering::Relaxed)
}

fn native_stays(entry: &str, why: &str) {
    log::info!("pvops: hyperv: {} stays native: {}", entry, why);
}

/// The whole setup, against `hw`.
pub(crate) fn setup(
    hw: &mut dyn Hw,
    leaves: &Leaves,
    patch: &mut Patch,
    platform: &mut dyn Platform,
) {
    // 1. Guest OS identity, if none yet (TLFS step 3), before the
    // recommendations are read: Xen's Viridian publishes leaf 4 only after
    // one (review finding F8).
    if hw.rdmsr(m::GUEST_OS_ID) == 0 {
        hw.wrmsr(m::GUEST_OS_ID, GUEST_OS_ID.0);
    }
    let os_id_ok = hw.rdmsr(m::GUEST_OS_ID) != 0;
    // Review finding F9: where the partition may, expose the invariant-TSC
    // flag as Linux does. The probe ran before (it reported the flag
    // hidden); pvops decides nothing on it, later CPUID readers see it.
    if leaves
        .privileges
        .contains(Privileges::TSC_INVARIANT_CONTROLS)
    {
        hw.wrmsr(m::TSC_INVARIANT_CONTROL, 1);
        log::info!("pvops: hyperv: invariant TSC exposed (HV_X64_MSR_TSC_INVARIANT_CONTROL)");
    }
    let mut fresh = *leaves;
    if os_id_ok {
        // Only the recommendations are gated so; privileges and features
        // stay what detection decided on.
        let reread = hw.leaves();
        if reread.hints != leaves.hints {
            log::info!(
                "pvops: hyperv: recommendations {:#x} after the guest OS ID (were {:#x})",
                reread.hints.0,
                leaves.hints.0
            );
        }
        fresh.hints = reread.hints;
        fresh.spin_retries = reread.spin_retries;
    }
    let leaves = &fresh;
    let offer = confirm_msrs(Offer::from_leaves(leaves), platform);
    log::debug!("pvops: hyperv: {:?}", offer);

    // 2. Hypercall page, verified overlaid before any hypercall.
    let hypercalls = if !offer.needs_hypercalls() {
        Err("not needed (no flush or IPI recommendation)")
    } else if !os_id_ok {
        Err("guest OS ID not accepted")
    } else {
        hypercall_page(hw, platform)
    };
    if let Err(why) = hypercalls {
        log::info!("pvops: hyperv: no hypercalls: {}", why);
    }

    // 3. VP index of the boot CPU (never assumed equal to its APIC ID).
    let cpu = pvops::percpu::current();
    let vp = hw.rdmsr(m::VP_INDEX);
    let apic = hw.apic_id();
    let vp32 = u32::try_from(vp).unwrap_or(percpu::NO_VP);
    percpu::set_vp(cpu, apic, vp32);
    if vp != u64::from(apic) {
        log::info!(
            "pvops: hyperv: boot CPU: VP index {} (APIC ID {})",
            vp,
            apic
        );
    }

    // 4. Enlightenments.
    if offer.reference_counter {
        if offer.tsc_page {
            match tsc_page(hw, platform) {
                Ok(()) => {}
                Err(why) => log::info!("pvops: hyperv: reference TSC page not used ({}); clock from HV_X64_MSR_TIME_REF_COUNT", why),
            }
        }
        patch.set(slot::TIME_MONOTONIC_NS, clock::monotonic_ns);
    } else {
        native_stays("time.monotonic_ns", "no reference counter privilege");
    }

    let mut tsc = 0;
    // The MSR's value failed its cross-check and nothing else is believed.
    let mut msr_refused = false;
    if offer.frequencies {
        let khz = hw.rdmsr(m::TSC_FREQUENCY) / 1000;
        let apic_khz = hw.rdmsr(m::APIC_FREQUENCY) / 1000;
        if crate::tsc::plausible_khz(khz) {
            match msr_frequency(hw, &offer, khz, patch) {
                Some(used) => tsc = used,
                None => msr_refused = true,
            }
        } else if khz == 0 {
            log::info!("pvops: hyperv: HV_X64_MSR_TSC_FREQUENCY reads 0");
        } else {
            log::warn!(
                "pvops: hyperv: HV_X64_MSR_TSC_FREQUENCY says {} kHz: implausible, ignored",
                khz
            );
        }
        if apic_khz != 0 {
            APIC_KHZ.store(apic_khz, Ordering::Relaxed);
            patch.set(slot::TIME_APIC_TIMER_KHZ, apic_timer_khz);
        } else {
            native_stays("time.apic_timer_khz", "HV_X64_MSR_APIC_FREQUENCY reads 0");
        }
    } else {
        log::info!("pvops: hyperv: no frequency MSRs");
    }
    if tsc == 0 && !msr_refused && offer.reference_counter {
        // Without the MSR: the TSC page's scale, else the reference counter
        // against the TSC — both the hypervisor's own references, better
        // than a PIT calibration under virtualisation.
        let plausible = |hz: &u64| crate::tsc::plausible_khz(hz / 1000);
        let from_page = clock::tsc_page_scale()
            .and_then(tsc_hz_from_scale)
            .filter(plausible);
        match from_page {
            Some(hz) => set_tsc_khz(hz.div_ceil(1000), TscSource::HypervTscPage, patch),
            None => match calibrate(hw).filter(plausible) {
                Some(hz) => {
                    set_tsc_khz((hz + 500) / 1000, TscSource::HypervReferenceCounter, patch)
                }
                None => native_stays(
                    "time.tsc_frequency",
                    "the reference counter did not advance, or at an implausible rate",
                ),
            },
        }
    } else if tsc == 0 && !msr_refused {
        native_stays(
            "time.tsc_frequency",
            "no frequency MSRs and no reference counter",
        );
    }

    if offer.stimer_direct {
        percpu::set_stimer_native(cpu, false);
        STIMER_OWNED.store(true, Ordering::Relaxed);
        patch.set(slot::TIME_TIMER_SETUP, timer::timer_setup);
        patch.set(slot::TIME_TIMER_ARM, timer::timer_arm);
        patch.set(slot::TIME_TIMER_CANCEL, timer::timer_cancel);
    } else {
        native_stays(
            "time.timer_*",
            "no direct-mode synthetic timer; local APIC timer",
        );
    }

    if offer.apic_msrs {
        // The APs follow the boot CPU: where its page enabled, an AP whose
        // page does not has lost lazy EOI (a per-CPU fallback); where it
        // did not (Xen's Viridian base group), every CPU writes the EOI MSR
        // and no AP has anything to fall back from.
        match assist_page(hw, cpu, platform) {
            Ok(()) => ASSIST_WANTED.store(true, Ordering::Relaxed),
            Err(why) => log::info!("pvops: hyperv: {}; EOI through the MSR", why),
        }
        patch.set(slot::IRQ_EOI, eoi::eoi);
    } else {
        native_stays("irq.eoi", "APIC MSRs not recommended or not permitted");
    }

    let remote_ok = hypercalls;
    remote::set_ex_allowed(offer.ex_processor_masks);
    if offer.remote_flush {
        let r = remote_ok.and_then(|()| {
            if vp < 64 {
                let probe = hw.flush_probe(1u64 << vp);
                check_status(probe.status())
            } else if offer.ex_processor_masks {
                // No probe in the Ex form: a failing call falls back per call.
                Ok(())
            } else {
                Err("boot VP index of 64 or more and no Ex processor masks")
            }
        });
        match r {
            Ok(()) => patch.set(slot::MMU_FLUSH_REMOTE, remote::flush_remote),
            Err(why) => native_stays("mmu.flush_remote", why),
        }
    }
    if offer.cluster_ipi {
        // No probe call: the TLFS defines no result for an empty set and
        // Linux never sends one (review finding F6); a failing call falls
        // back to the native IPI per call (`remote::send_ipi`).
        match remote_ok {
            Ok(()) => {
                patch.set(slot::IRQ_SEND_IPI, remote::send_ipi);
                patch.set(slot::IRQ_SEND_IPI_MASK, remote::send_ipi_mask);
            }
            Err(why) => native_stays("irq.send_ipi*", why),
        }
    }

    match (offer.spin_notify, hypercalls) {
        (_, _) if platform.possible_cpus() < 2 => {
            native_stays("lock.wait", "one CPU: no lock holder to wait for")
        }
        (None, _) => native_stays("lock.wait", "spin hint 0xFFFFFFFF: never notify"),
        (Some(_), Err(why)) => native_stays("lock.wait", why),
        (Some(n), Ok(())) => {
            lock::set_spin_retries(n);
            patch.set(slot::LOCK_WAIT, lock::wait);
            log::info!(
                "pvops: hyperv: lock.wait spins {} times, then HvCallNotifyLongSpinWait",
                n
            );
        }
    }

    if offer.crash_msrs {
        let caps = hw.rdmsr(m::CRASH_CTL);
        if caps & crash_ctl::CRASH_NOTIFY == 0 {
            native_stays(
                "system.report_crash",
                "CRASH_CTL does not offer CrashNotify",
            );
        } else {
            if caps & crash_ctl::CRASH_MESSAGE != 0 {
                match platform.alloc_shared_page() {
                    Some(page) => crash::set_message_page(page.virt.as_ptr(), page.phys),
                    None => log::info!("pvops: hyperv: no crash message page; notify only"),
                }
            }
            patch.set(slot::SYSTEM_REPORT_CRASH, crash::report_crash);
        }
    }

    if patch.owner(slot::TIME_MONOTONIC_NS.entry()) != pvops::patch::NATIVE {
        log::info!(
            "pvops: hyperv: clock from {}",
            if clock::uses_tsc_page() {
                "the reference TSC page"
            } else {
                "HV_X64_MSR_TIME_REF_COUNT"
            }
        );
    }
    for entry in patch.replaced() {
        log::info!("pvops: hyperv: owns {}", entry);
    }
}

/// Whether MSR `index` reads without #GP; true when the kernel cannot tell
/// (no #GP recovery: the privilege bit is then the only promise).
fn msr_readable(platform: &mut dyn Platform, index: u32) -> bool {
    debug_assert!(m::is_synthetic(index));
    // SAFETY: only synthetic MSRs whose read has no side effect are probed
    // (never GUEST_IDLE); a #GP is caught by the kernel.
    !matches!(
        unsafe { platform.read_msr_catching_gp(index) },
        Some(Err(_))
    )
}

/// The offer less what the hypervisor promised in CPUID but whose first MSR
/// raises #GP (a lying hypervisor, `docs/lying-hypervisors.md`): each such
/// group stays native, logged. The reference counter is not probed here
/// (its clock reads it anyway, or the TSC page stands in for it).
fn confirm_msrs(mut offer: Offer, platform: &mut dyn Platform) -> Offer {
    let mut confirm = |on: &mut bool, msrs: &[(u32, &str)], outcome: &str| {
        if !*on {
            return;
        }
        if let Some((_, name)) = msrs.iter().find(|(i, _)| !msr_readable(platform, *i)) {
            log::warn!(
                "pvops: hyperv: {} promised in CPUID raises #GP: {}",
                name,
                outcome
            );
            *on = false;
        }
    };
    confirm(
        &mut offer.tsc_page,
        &[(m::REFERENCE_TSC, "HV_X64_MSR_REFERENCE_TSC")],
        "no reference TSC page, the clock reads the reference counter",
    );
    confirm(
        &mut offer.frequencies,
        &[
            (m::TSC_FREQUENCY, "HV_X64_MSR_TSC_FREQUENCY"),
            (m::APIC_FREQUENCY, "HV_X64_MSR_APIC_FREQUENCY"),
        ],
        "no frequency MSRs",
    );
    confirm(
        &mut offer.stimer_direct,
        &[(m::stimer_config(0), "HV_X64_MSR_STIMER0_CONFIG")],
        "time.timer_* stays native",
    );
    confirm(
        &mut offer.apic_msrs,
        &[(m::VP_ASSIST_PAGE, "HV_X64_MSR_VP_ASSIST_PAGE")],
        "irq.eoi stays native",
    );
    confirm(
        &mut offer.crash_msrs,
        &[(m::CRASH_CTL, "HV_X64_MSR_CRASH_CTL")],
        "system.report_crash stays native",
    );
    offer
}

fn check_status(s: Status) -> Result<(), &'static str> {
    if s == Status::SUCCESS {
        Ok(())
    } else {
        log::warn!("pvops: hyperv: probe hypercall returned {}", s.name());
        Err("probe hypercall returned an error")
    }
}

fn hypercall_page(hw: &mut dyn Hw, platform: &mut dyn Platform) -> Result<(), &'static str> {
    let current = hw.rdmsr(m::HYPERCALL);
    if current & hypercall_msr::LOCKED != 0 {
        // Enabled and locked elsewhere: pvops cannot map an arbitrary GPA.
        return Err("hypercall MSR locked to another page");
    }
    let page = platform
        .alloc_shared_page()
        .ok_or("no page for the hypercall page")?;
    let input = platform
        .alloc_shared_page()
        .ok_or("no hypercall input page")?;
    let readback = hw.enable_page(m::HYPERCALL, &page);
    if !page_msr::is_enabled(readback) || page_msr::address(readback) != page.phys {
        return Err("hypercall page not enabled");
    }
    if !hypercall::page_is_overlaid(page.virt.as_ptr()) {
        return Err("hypercall page not overlaid (still zero)");
    }
    hypercall::set_input_page(input.virt.as_ptr(), input.phys);
    hw.set_hypercall_page(&page);
    Ok(())
}

/// Lazy EOI in use (offered, and the boot CPU's page enabled): each AP
/// enables its own page.
static ASSIST_WANTED: AtomicBool = AtomicBool::new(false);
/// The synthetic timer entries are owned: each AP checks its own MSRs.
static STIMER_OWNED: AtomicBool = AtomicBool::new(false);

/// Enables CPU `cpu`'s own VP assist page (TLFS: one per VP).
fn assist_page(
    hw: &mut dyn Hw,
    cpu: usize,
    platform: &mut dyn Platform,
) -> Result<(), &'static str> {
    let page = platform
        .alloc_shared_page()
        .ok_or("no page for the VP assist page")?;
    if !page_msr::is_enabled(hw.enable_page(m::VP_ASSIST_PAGE, &page)) {
        return Err("VP assist page not enabled");
    }
    percpu::set_assist_page(cpu, page.virt.as_ptr());
    Ok(())
}

/// The set-up of one application processor, on that CPU, against `hw`.
pub(crate) fn setup_cpu(
    hw: &mut dyn Hw,
    cpu: Cpu,
    fallbacks: &mut Fallbacks,
    platform: &mut dyn Platform,
) {
    // The VP index, on this CPU: the processor sets name this VP by it.
    if msr_readable(platform, m::VP_INDEX) {
        let vp = hw.rdmsr(m::VP_INDEX);
        match u32::try_from(vp) {
            Ok(vp) if vp < abi::SparseVpSet::MAX_VP => {
                percpu::set_vp(cpu.index, cpu.apic_id, vp);
                log::info!(
                    "pvops: hyperv: cpu {} (APIC ID {}) is VP {}",
                    cpu.index,
                    cpu.apic_id,
                    vp
                );
            }
            _ => fallbacks.push(
                cpu.index,
                "mmu.flush_remote, irq.send_ipi*",
                "VP index out of the processor sets' range: IPIs and flushes naming this CPU are native",
            ),
        }
    } else {
        fallbacks.push(
            cpu.index,
            "mmu.flush_remote, irq.send_ipi*",
            "HV_X64_MSR_VP_INDEX raises #GP on this CPU: IPIs and flushes naming it are native",
        );
    }
    if ASSIST_WANTED.load(Ordering::Relaxed) {
        if let Err(why) = assist_page(hw, cpu.index, platform) {
            fallbacks.push(cpu.index, "irq.eoi (lazy EOI)", why);
        }
    }
    if STIMER_OWNED.load(Ordering::Relaxed) {
        let ok = msr_readable(platform, m::stimer_config(0));
        percpu::set_stimer_native(cpu.index, !ok);
        if !ok {
            fallbacks.push(
                cpu.index,
                "time.timer_*",
                "HV_X64_MSR_STIMER0_CONFIG raises #GP on this CPU: local APIC timer",
            );
        }
    }
}

fn tsc_page(hw: &mut dyn Hw, platform: &mut dyn Platform) -> Result<(), &'static str> {
    let page = platform.alloc_shared_page().ok_or("no page")?;
    if !page_msr::is_enabled(hw.enable_page(m::REFERENCE_TSC, &page)) {
        return Err("HV_X64_MSR_REFERENCE_TSC not enabled");
    }
    let view = clock::TscPage::new(page.virt);
    if view.sequence() == abi::TSC_SEQUENCE_INVALID {
        // KVM writes sequence 0 while it sets up or invalidates the page and
        // validates it later; every read decides for itself (review F7).
        log::info!(
            "pvops: hyperv: TSC page sequence 0 at set-up; reads use the MSR until it is valid"
        );
    }
    clock::set_tsc_page(page.virt);
    Ok(())
}

impl Backend for HyperV {
    fn name(&self) -> &'static str {
        "hyperv"
    }

    fn description(&self) -> &'static str {
        "Hyper-V TLFS: may provide the reference TSC page clock, frequency MSRs, synthetic timer, lazy EOI, hypercall TLB flush and IPIs, crash MSRs"
    }

    fn declined(&self, env: &Environment<'_>) -> Option<&'static str> {
        declined(env)
    }

    fn detect(&self, env: &Environment<'_>) -> Option<Detection> {
        check(env).ok().map(|_| Detection {
            priority: PRIORITY,
            reason: "\"Microsoft Hv\" with \"Hv#1\", hypercall and VP index privileges",
            base: Some(PRIORITY),
        })
    }

    fn install(
        &self,
        env: &Environment<'_>,
        patch: &mut Patch,
        platform: &mut dyn Platform,
    ) -> Result<(), SetupError> {
        let leaves = check(env).map_err(|detail| SetupError {
            step: "detection",
            detail,
        })?;
        // The MSRs of the two privileges detection requires.
        for index in [m::GUEST_OS_ID, m::HYPERCALL, m::VP_INDEX] {
            if !msr_readable(platform, index) {
                return Err(SetupError {
                    step: "msrs",
                    detail: "a hypercall or VP index MSR raises #GP despite its privilege",
                });
            }
        }
        setup(&mut Real, &leaves, patch, platform);
        Ok(())
    }

    fn init_cpu(&self, cpu: Cpu, fallbacks: &mut Fallbacks, platform: &mut dyn Platform) {
        setup_cpu(&mut Real, cpu, fallbacks, platform);
    }
}

#[cfg(test)]
mod fuzz;
#[cfg(test)]
mod tests;
