//! Time operations, dispatched through patchable call sites
//! ([`crate::dispatch`]).

use crate::dispatch::site::site;

/// Where the TSC frequency came from (`repr(u8)`: returned in DL by the
/// `extern "C"` table function, see [`TscFrequency`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum TscSource {
    /// Not known yet.
    Unknown,
    /// Measured against the legacy PIT.
    PitCalibration,
    /// CPUID leaf 0x15 (crystal clock ratio).
    Cpuid15,
    /// The hypervisor timing leaf 0x4000_0010.
    TimingLeaf,
    /// VMware backdoor GETHZ.
    VmwareBackdoor,
    /// A pvclock structure (KVM or Xen `vcpu_time_info`).
    Pvclock,
    /// Hyper-V's TSC frequency MSR.
    HypervMsr,
    /// Given by the kernel (command line or platform firmware).
    Platform,
    /// Hyper-V's reference TSC page scale (`2^64 * 10^7 / scale` Hz).
    HypervTscPage,
    /// Hyper-V's reference counter (100 ns units) measured against the TSC.
    HypervReferenceCounter,
    /// Xen's CPUID time leaf (base+3 ECX), where it follows Xen's layout.
    XenTimeLeaf,
    /// Looked for and not found: no backend, leaf or PIT gives a frequency
    /// (e.g. a machine without a PIT, such as QEMU's microVM). The clock
    /// and timer cannot convert time then; the kernel should say so.
    NoSource,
}

impl TscSource {
    /// Every source, `Unknown` first.
    pub const ALL: [TscSource; 12] = [
        TscSource::Unknown,
        TscSource::PitCalibration,
        TscSource::Cpuid15,
        TscSource::TimingLeaf,
        TscSource::VmwareBackdoor,
        TscSource::Pvclock,
        TscSource::HypervMsr,
        TscSource::Platform,
        TscSource::HypervTscPage,
        TscSource::HypervReferenceCounter,
        TscSource::XenTimeLeaf,
        TscSource::NoSource,
    ];

    /// The source whose `repr(u8)` value is `v` (`Unknown` for any other).
    pub fn from_u8(v: u8) -> TscSource {
        // `ALL` is in declaration (= discriminant) order; checked anyway.
        TscSource::ALL
            .get(usize::from(v))
            .copied()
            .filter(|s| *s as u8 == v)
            .unwrap_or(TscSource::Unknown)
    }

    /// Stable lower-case name for reports.
    pub const fn name(self) -> &'static str {
        match self {
            TscSource::Unknown => "unknown",
            TscSource::PitCalibration => "pit-calibration",
            TscSource::Cpuid15 => "cpuid-0x15",
            TscSource::TimingLeaf => "cpuid-0x40000010",
            TscSource::VmwareBackdoor => "vmware-backdoor",
            TscSource::Pvclock => "pvclock",
            TscSource::HypervMsr => "hyperv-msr",
            TscSource::Platform => "platform",
            TscSource::HypervTscPage => "hyperv-tsc-page",
            TscSource::HypervReferenceCounter => "hyperv-reference-counter",
            TscSource::XenTimeLeaf => "xen-cpuid-time-leaf",
            TscSource::NoSource => "none",
        }
    }
}

/// A TSC frequency and its origin (`repr(C)`: the table function returns it
/// in RAX:RDX, System V x86-64 psABI 3.2.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct TscFrequency {
    /// Frequency in kHz; 0 when unknown.
    pub khz: u64,
    /// Where the value came from.
    pub source: TscSource,
}

/// The TSC frequency and where it came from.
#[inline]
pub fn tsc_frequency() -> TscFrequency {
    let (khz, source): (u64, u64);
    // SAFETY: the site calls the table's `time.tsc_frequency` function (`extern "C"`, type
    // checked by the table) with its arguments and result in the System V
    // registers and every caller-saved register declared clobbered
    // (dispatch/site.rs).
    unsafe { site!(TIME_TSC_FREQUENCY; out("rax") khz, out("rdx") source,) };
    // `repr(C)` { u64, repr(u8) enum }: RAX, then the source in DL.
    TscFrequency {
        khz,
        source: TscSource::from_u8(source as u8),
    }
}

/// The TSC frequency in kHz (0 when unknown).
#[inline]
pub fn tsc_khz() -> u64 {
    tsc_frequency().khz
}

/// The local APIC timer's input frequency in kHz (0 when unknown).
#[inline]
pub fn apic_timer_khz() -> u64 {
    let v: u64;
    // SAFETY: the site calls the table's `time.apic_timer_khz` function (`extern "C"`, type
    // checked by the table) with its arguments and result in the System V
    // registers and every caller-saved register declared clobbered
    // (dispatch/site.rs).
    unsafe { site!(TIME_APIC_TIMER_KHZ; out("rax") v,) };
    v
}

/// Monotonic time in nanoseconds since an arbitrary origin.
#[inline]
pub fn monotonic_ns() -> u64 {
    let v: u64;
    // SAFETY: the site calls the table's `time.monotonic_ns` function (`extern "C"`, type
    // checked by the table) with its arguments and result in the System V
    // registers and every caller-saved register declared clobbered
    // (dispatch/site.rs).
    unsafe { site!(TIME_MONOTONIC_NS; out("rax") v,) };
    v
}

/// Routes one-shot timer events to interrupt `vector` on this CPU. Call once
/// before [`timer_arm`]; the handler must call [`crate::irq::eoi`].
#[inline]
pub fn timer_setup(vector: u8) {
    // SAFETY: the site calls the table's `time.timer_setup` function (`extern "C"`, type
    // checked by the table) with its arguments and result in the System V
    // registers and every caller-saved register declared clobbered
    // (dispatch/site.rs).
    unsafe { site!(TIME_TIMER_SETUP; in("rdi") u64::from(vector),) }
}

/// Arms the one-shot timer to fire `delta_ns` nanoseconds from now,
/// replacing any earlier arming.
#[inline]
pub fn timer_arm(delta_ns: u64) {
    // SAFETY: the site calls the table's `time.timer_arm` function (`extern "C"`, type
    // checked by the table) with its arguments and result in the System V
    // registers and every caller-saved register declared clobbered
    // (dispatch/site.rs).
    unsafe { site!(TIME_TIMER_ARM; in("rdi") delta_ns,) }
}

/// Cancels the one-shot timer.
#[inline]
pub fn timer_cancel() {
    // SAFETY: the site calls the table's `time.timer_cancel` function (`extern "C"`, type
    // checked by the table) with its arguments and result in the System V
    // registers and every caller-saved register declared clobbered
    // (dispatch/site.rs).
    unsafe { site!(TIME_TIMER_CANCEL;) }
}

/// Nanoseconds this CPU was ready to run but the hypervisor ran something
/// else (always 0 on bare metal).
#[inline]
pub fn steal_ns() -> u64 {
    let v: u64;
    // SAFETY: the site calls the table's `time.steal_ns` function (`extern "C"`, type
    // checked by the table) with its arguments and result in the System V
    // registers and every caller-saved register declared clobbered
    // (dispatch/site.rs).
    unsafe { site!(TIME_STEAL_NS; out("rax") v,) };
    v
}

/// Call at the start of the timer interrupt handler, before
/// [`crate::irq::eoi`]: acknowledges the event at its (possibly
/// paravirtual) source.
#[inline]
pub fn timer_ack() {
    // SAFETY: the site calls the table's `time.timer_ack` function (`extern "C"`, type
    // checked by the table) with its arguments and result in the System V
    // registers and every caller-saved register declared clobbered
    // (dispatch/site.rs).
    unsafe { site!(TIME_TIMER_ACK;) }
}

#[cfg(test)]
mod tests {
    use super::TscSource;

    #[test]
    fn sources_round_trip_through_their_repr() {
        for s in TscSource::ALL {
            assert_eq!(TscSource::from_u8(s as u8), s);
        }
        assert_eq!(TscSource::from_u8(200), TscSource::Unknown);
    }
}
