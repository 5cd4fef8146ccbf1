//! Pure detection and decision logic: no instruction is executed here, so
//! all of it runs in host tests against spec-built CPUID dumps and fake
//! backdoor answers.

use pvops::time::TscSource;
use pvops_abi::vmware::{
    Channel, Hz, Registers, Request, StealClockStatus, TimingLeaf, Version, CPUID_INFO_LEAF,
    CPUID_TIMING_LEAF,
};
use pvops_probe::{CpuidSource, HypervisorKind, Probe};

/// What CPUID says about a VMware interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VmwareCpuid {
    /// Highest hypervisor leaf (EAX of 0x4000_0000, as clamped by the probe).
    pub max_leaf: u32,
    /// Leaf 0x4000_0010 as read, when the max leaf reaches it (its TSC value
    /// may still be 0, i.e. untrusted: see [`TimingLeaf::trusted_tsc_khz`]).
    pub timing: Option<TimingLeaf>,
    /// The backdoor channel: announced by 0x4000_0010.ECX, else the port.
    pub channel: Channel,
}

/// Finds the VMware interface: the hypervisor bit set and "VMwareVMware" at
/// 0x4000_0000 (Linux `vmware_platform` looks only there). Reads 0x4000_0010
/// only when the max leaf reaches it.
pub fn vmware_cpuid(probe: &Probe, cpuid: &dyn CpuidSource) -> Option<VmwareCpuid> {
    if !probe.under_hypervisor() {
        return None;
    }
    let iface = probe
        .interfaces
        .iter()
        .find(|i| i.base == CPUID_INFO_LEAF && i.kind == HypervisorKind::VMware)?;
    let timing = iface.has_leaf(CPUID_TIMING_LEAF).then(|| {
        let r = cpuid.cpuid(CPUID_TIMING_LEAF, 0);
        TimingLeaf::from_regs(r.eax, r.ebx, r.ecx)
    });
    Some(VmwareCpuid {
        max_leaf: iface.max_leaf,
        timing,
        channel: timing.map_or(Channel::IoPort, |t| t.channel()),
    })
}

/// The frequencies the backend will claim.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimePlan {
    /// TSC frequency in kHz (never 0).
    pub tsc_khz: u64,
    /// Where it came from: [`TscSource::TimingLeaf`] or
    /// [`TscSource::VmwareBackdoor`].
    pub source: TscSource,
    /// Local APIC timer frequency in kHz, when the hypervisor gave one.
    pub apic_khz: Option<u64>,
}

/// Decides the frequencies: the timing leaf when its TSC value is non-zero
/// and plausible (`tsc::plausible_khz`), else GETHZ (whose TSC
/// value must be plausible too). The APIC frequency comes from the same
/// source, or from GETHZ when the leaf gives a TSC but no bus frequency.
/// `gethz` is called at most once, and only when the leaf does not give
/// both values. `None` when neither source gives a plausible TSC frequency:
/// the backend must not claim one.
pub fn plan_time(
    timing: Option<TimingLeaf>,
    gethz: impl FnOnce() -> Option<Hz>,
) -> Option<TimePlan> {
    let gethz = || gethz().filter(|h| crate::tsc::plausible_khz(h.tsc_khz()));
    let leaf_tsc = |t: TimingLeaf| {
        t.trusted_tsc_khz()
            .filter(|&k| crate::tsc::plausible_khz(u64::from(k)))
            .map(|k| (t, k))
    };
    match timing.and_then(leaf_tsc) {
        Some((t, tsc)) => {
            let apic_khz = match t.trusted_apic_khz() {
                Some(k) => Some(u64::from(k)),
                None => gethz().and_then(|h| h.apic_khz()),
            };
            Some(TimePlan {
                tsc_khz: u64::from(tsc),
                source: TscSource::TimingLeaf,
                apic_khz,
            })
        }
        None => gethz().map(|h| TimePlan {
            tsc_khz: h.tsc_khz(),
            source: TscSource::VmwareBackdoor,
            apic_khz: h.apic_khz(),
        }),
    }
}

/// Why the steal clock is not used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StealSkip {
    /// The availability probe (STEALCLOCK disable) did not answer 0 or 1.
    NotOffered(StealClockStatus),
    /// The kernel had no shared page to give.
    NoPage,
    /// The enable call answered something other than "enabled".
    Refused(StealClockStatus),
}

impl StealSkip {
    /// A sentence for the boot log.
    pub fn reason(self) -> &'static str {
        match self {
            StealSkip::NotOffered(StealClockStatus::NotAvailable) => {
                "STEALCLOCK not available (answered -1)"
            }
            StealSkip::NotOffered(_) => "STEALCLOCK not implemented (unexpected answer)",
            StealSkip::NoPage => "no shared page for the steal-clock area",
            StealSkip::Refused(_) => "STEALCLOCK did not enable the area",
        }
    }
}

/// Registers the steal-clock area: probes availability first (so no page is
/// taken when the command is not offered), then asks for a page (`page`
/// returns its guest-physical address) and enables it. Returns the physical
/// address registered.
pub fn setup_steal_clock(
    call: &mut dyn FnMut(&Request) -> Registers,
    page: impl FnOnce() -> Option<u64>,
) -> Result<u64, StealSkip> {
    match call(&Request::steal_clock_disable()).steal_clock_status() {
        StealClockStatus::Disabled | StealClockStatus::Enabled => {}
        other => return Err(StealSkip::NotOffered(other)),
    }
    let phys = page().ok_or(StealSkip::NoPage)?;
    match call(&Request::steal_clock_enable(phys)).steal_clock_status() {
        StealClockStatus::Enabled => Ok(phys),
        other => Err(StealSkip::Refused(other)),
    }
}

/// What the backdoor answered when probed without a VMware signature.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BackdoorInfo {
    /// The GETVERSION answer (EBX was the magic).
    pub version: Version,
    /// The GETHZ answer, when the command is implemented and sane.
    pub hz: Option<Hz>,
    /// GETVCPU_INFO capability bits, when valid.
    pub vcpu_info: Option<u32>,
}

/// Probes the backdoor: nothing unless the hypervisor bit is set; then
/// GETVERSION must answer with the magic before anything else is asked.
pub fn probe_backdoor(
    hypervisor_bit: bool,
    call: &mut dyn FnMut(&Request) -> Registers,
) -> Option<BackdoorInfo> {
    if !hypervisor_bit {
        return None;
    }
    let version = call(&Request::get_version()).version()?;
    let hz = call(&Request::get_hz()).hz();
    let vcpu_info = call(&Request::get_vcpu_info()).vcpu_info();
    Some(BackdoorInfo {
        version,
        hz,
        vcpu_info,
    })
}
