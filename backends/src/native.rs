//! The native backend: every entry stays at its native implementation.
//!
//! It always detects (priority 0), so it is chosen when nothing better is
//! compiled in or present. Its only setup is choosing the native timer mode
//! and finding a TSC frequency when no backend provides one.

use crate::{Backend, Detection, Environment, Platform, SetupError};
use pvops::native::{pit, time as ntime};
use pvops::patch::Patch;
use pvops::time::TscSource;
use pvops_probe::{Features, Probe};

/// The native backend.
pub static NATIVE: Native = Native;

/// Detection result of the native backend.
pub const DETECTION: Detection = Detection {
    priority: 0,
    reason: "native hardware interfaces",
    base: None,
};

/// The native backend's type.
#[derive(Debug)]
pub struct Native;

impl Backend for Native {
    fn name(&self) -> &'static str {
        "native"
    }

    fn description(&self) -> &'static str {
        "native instructions, the local APIC and the TSC; no hypervisor interface"
    }

    fn detect(&self, _env: &Environment<'_>) -> Option<Detection> {
        Some(DETECTION)
    }

    fn install(
        &self,
        _env: &Environment<'_>,
        _patch: &mut Patch,
        _platform: &mut dyn Platform,
    ) -> Result<(), SetupError> {
        Ok(())
    }
}

/// After installation: give the native clock and timer a TSC frequency
/// (the installed backend's, else the hypervisor timing leaf 0x4000_0010
/// unless `use_timing_leaf` is false, else CPUID 0x15, else a PIT
/// measurement, else none: [`TscSource::NoSource`]) and, when the native
/// timer runs in one-shot APIC mode, an APIC timer frequency (the leaf's, or
/// measured against the TSC, which needs a TSC frequency).
pub(crate) fn finish_time_setup(probe: &Probe, use_timing_leaf: bool) {
    ntime::set_use_tsc_deadline(probe.features.contains(Features::TSC_DEADLINE));
    let current = pvops::time::tsc_frequency();
    let timing = probe.timing_leaf().filter(|_| use_timing_leaf);
    if current.khz != 0 {
        ntime::set_tsc_frequency(current.khz, current.source);
    } else if let Some(t) = timing {
        // Leaf 0x4000_0010 is the cross-hypervisor timing leaf VMware
        // proposed; KVM/QEMU publish it too (`vmware-cpuid-freq`). Whoever
        // publishes it vouches for the TSC rate, which beats measuring.
        log::info!("pvops: TSC {} kHz from CPUID 0x40000010", t.tsc_khz);
        ntime::set_tsc_frequency(u64::from(t.tsc_khz), TscSource::TimingLeaf);
    } else if let Some(khz) = probe.tsc_khz_from_leaf_15() {
        log::info!("pvops: TSC {} kHz from CPUID 0x15", khz);
        ntime::set_tsc_frequency(khz, TscSource::Cpuid15);
    } else {
        match pit::calibrate_tsc(10) {
            Ok(khz) => {
                log::info!("pvops: TSC {} kHz calibrated against the PIT", khz);
                ntime::set_tsc_frequency(khz, TscSource::PitCalibration);
            }
            Err(e) => {
                // Never a guess: the clock and timer say they cannot
                // convert time rather than run at a wrong rate.
                log::warn!(
                    "pvops: no TSC frequency source: no backend or CPUID leaf gives one and {e}"
                );
                ntime::set_no_tsc_frequency();
            }
        }
    }
    if !ntime::uses_tsc_deadline() {
        let apic = pvops::time::apic_timer_khz();
        let leaf_apic = timing.map_or(0, |t| u64::from(t.apic_bus_khz));
        if apic != 0 {
            ntime::set_apic_timer_khz(apic);
        } else if leaf_apic != 0 {
            ntime::set_apic_timer_khz(leaf_apic);
        } else if let Some(khz) = ntime::calibrate_apic_timer(10) {
            log::info!("pvops: APIC timer {} kHz calibrated against the TSC", khz);
            ntime::set_apic_timer_khz(khz);
        }
    }
}
