//! Time operations, dispatched through the table.

use crate::patch::table;

/// Where the TSC frequency came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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

/// A TSC frequency and its origin.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TscFrequency {
    /// Frequency in kHz; 0 when unknown.
    pub khz: u64,
    /// Where the value came from.
    pub source: TscSource,
}

/// The TSC frequency and where it came from.
#[inline]
pub fn tsc_frequency() -> TscFrequency {
    (table().time.tsc_frequency)()
}

/// The TSC frequency in kHz (0 when unknown).
#[inline]
pub fn tsc_khz() -> u64 {
    tsc_frequency().khz
}

/// The local APIC timer's input frequency in kHz (0 when unknown).
#[inline]
pub fn apic_timer_khz() -> u64 {
    (table().time.apic_timer_khz)()
}

/// Monotonic time in nanoseconds since an arbitrary origin.
#[inline]
pub fn monotonic_ns() -> u64 {
    (table().time.monotonic_ns)()
}

/// Routes one-shot timer events to interrupt `vector` on this CPU. Call once
/// before [`timer_arm`]; the handler must call [`crate::irq::eoi`].
#[inline]
pub fn timer_setup(vector: u8) {
    (table().time.timer_setup)(vector)
}

/// Arms the one-shot timer to fire `delta_ns` nanoseconds from now,
/// replacing any earlier arming.
#[inline]
pub fn timer_arm(delta_ns: u64) {
    (table().time.timer_arm)(delta_ns)
}

/// Cancels the one-shot timer.
#[inline]
pub fn timer_cancel() {
    (table().time.timer_cancel)()
}

/// Nanoseconds this CPU was ready to run but the hypervisor ran something
/// else (always 0 on bare metal).
#[inline]
pub fn steal_ns() -> u64 {
    (table().time.steal_ns)()
}

/// Call at the start of the timer interrupt handler, before
/// [`crate::irq::eoi`]: acknowledges the event at its (possibly
/// paravirtual) source.
#[inline]
pub fn timer_ack() {
    (table().time.timer_ack)()
}
