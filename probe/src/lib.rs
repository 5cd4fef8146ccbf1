//! CPUID identification for pvops.
//!
//! [`probe`] reads CPUID through a [`CpuidSource`] (the real instruction via
//! [`NativeCpuid`], or a recorded dump in tests) and returns a [`Probe`]: the
//! vendor and model, the [`Features`] a kernel cares about, the CPUID
//! 0x15/0x16 frequencies and every hypervisor interface found in the
//! hypervisor range. It never panics, whatever the leaves contain.
//!
//! The standard leaves are decoded with `raw-cpuid`; the hypervisor range,
//! which `raw-cpuid` only reads at its base, is scanned here. Family and
//! model are computed here too (`raw-cpuid`'s `family_id` adds two `u8`
//! fields and overflows on junk).
//!
//! [`dump::Dump`] parses the text of `cpuid -r` so host tools and tests can
//! probe a recorded machine.
#![no_std]

/// The README's example, compiled and run as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctest;

pub mod dump;
mod hypervisor;
mod source;

pub use dump::{Dump, DumpEntry, DumpError};
pub use hypervisor::{
    HypervisorInterface, HypervisorKind, InterfaceSlice, Interfaces, SignatureStr, FIXED_BASES,
    HV_INTERFACE_HV1, HYPERVISOR_CPUID_BUDGET, MAX_INTERFACES,
};
pub use source::{CpuidResult, CpuidSource, NativeCpuid};

use bitflags::bitflags;
use raw_cpuid::CpuId;

/// First leaf of the hypervisor range (Intel SDM vol. 2A, CPUID: "reserved for
/// hypervisor use"; KVM `Documentation/virt/kvm/x86/cpuid.rst`).
pub const HYPERVISOR_LEAF_FIRST: u32 = 0x4000_0000;
/// One past the last base scanned (Linux scans 0x4000_0000..0x4001_0000).
pub const HYPERVISOR_LEAF_END: u32 = 0x4001_0000;
/// Distance between candidate bases.
pub const HYPERVISOR_LEAF_STEP: u32 = 0x100;
/// The cross-hypervisor timing leaf proposed by VMware (TSC and APIC bus kHz;
/// VMware KB 1009458, LWN 301888 "hypervisor CPUID" RFC).
pub const TIMING_LEAF: u32 = 0x4000_0010;
/// First extended leaf; its EAX is the highest extended leaf (Intel SDM
/// vol. 2A, AMD APM vol. 3, CPUID Fn8000_0000).
pub const EXTENDED_LEAF_FIRST: u32 = 0x8000_0000;

bitflags! {
    /// CPU features a kernel cares about when it picks its timer, clock and
    /// paging setup.
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct Features: u32 {
        /// x2APIC mode (CPUID.1:ECX[21]).
        const X2APIC = 1 << 0;
        /// TSC-deadline APIC timer mode (CPUID.1:ECX[24]).
        const TSC_DEADLINE = 1 << 1;
        /// Invariant TSC (CPUID.8000_0007:EDX[8]).
        const INVARIANT_TSC = 1 << 2;
        /// Process-context identifiers (CPUID.1:ECX[17]).
        const PCID = 1 << 3;
        /// INVPCID instruction (CPUID.7.0:EBX[10]).
        const INVPCID = 1 << 4;
        /// XSAVE family (CPUID.1:ECX[26]).
        const XSAVE = 1 << 5;
        /// 1 GiB pages (CPUID.8000_0001:EDX[26]).
        const PAGE_1G = 1 << 6;
        /// No-execute pages (CPUID.8000_0001:EDX[20]).
        const NX = 1 << 7;
        /// Running under a hypervisor (CPUID.1:ECX[31]).
        const HYPERVISOR = 1 << 8;
        /// Time-stamp counter (CPUID.1:EDX[4]).
        const TSC = 1 << 9;
        /// On-chip local APIC (CPUID.1:EDX[9]).
        const APIC = 1 << 10;
        /// AMD SVM (CPUID.8000_0001:ECX[2]).
        const SVM = 1 << 11;
    }
}

impl Features {
    /// Stable lower-case names, in bit order, for reports.
    pub const NAMES: [(Features, &'static str); 12] = [
        (Features::X2APIC, "x2apic"),
        (Features::TSC_DEADLINE, "tsc_deadline"),
        (Features::INVARIANT_TSC, "invariant_tsc"),
        (Features::PCID, "pcid"),
        (Features::INVPCID, "invpcid"),
        (Features::XSAVE, "xsave"),
        (Features::PAGE_1G, "page_1g"),
        (Features::NX, "nx"),
        (Features::HYPERVISOR, "hypervisor"),
        (Features::TSC, "tsc"),
        (Features::APIC, "apic"),
        (Features::SVM, "svm"),
    ];
}

/// CPU vendor, from the leaf-0 signature.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Vendor {
    /// "GenuineIntel".
    Intel,
    /// "AuthenticAMD".
    Amd,
    /// "HygonGenuine".
    Hygon,
    /// Anything else, kept verbatim.
    Other([u8; 12]),
}

impl Vendor {
    /// Classifies a 12-byte vendor string.
    pub fn from_bytes(b: [u8; 12]) -> Vendor {
        match &b {
            b"GenuineIntel" => Vendor::Intel,
            b"AuthenticAMD" => Vendor::Amd,
            b"HygonGenuine" => Vendor::Hygon,
            _ => Vendor::Other(b),
        }
    }
}

/// CPUID leaf 0x15: TSC to core crystal clock ratio (Intel SDM vol. 2A).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TscLeaf {
    /// Denominator of the TSC/crystal ratio (EAX).
    pub denominator: u32,
    /// Numerator of the TSC/crystal ratio (EBX).
    pub numerator: u32,
    /// Core crystal frequency in Hz (ECX); 0 when not enumerated.
    pub crystal_hz: u32,
}

impl TscLeaf {
    /// TSC frequency in Hz, when the leaf gives all three values.
    pub fn tsc_hz(&self) -> Option<u64> {
        if self.denominator == 0 || self.numerator == 0 || self.crystal_hz == 0 {
            return None;
        }
        Some(u64::from(self.crystal_hz) * u64::from(self.numerator) / u64::from(self.denominator))
    }
}

/// CPUID 0x4000_0010 (VMware KB 1009458; also filled by QEMU with
/// `vmware-cpuid-freq`, ACRN and cloud-hypervisor): virtual TSC and local
/// APIC timer (bus) frequencies.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TimingLeaf {
    /// TSC frequency in kHz (EAX); never 0 in a [`Probe`].
    pub tsc_khz: u32,
    /// Local APIC bus (timer) frequency in kHz (EBX); 0 when not reported.
    pub apic_bus_khz: u32,
}

/// CPUID leaf 0x16: processor frequency information in MHz (Intel SDM vol. 2A).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FrequencyLeaf {
    /// Processor base frequency in MHz.
    pub base_mhz: u16,
    /// Maximum frequency in MHz.
    pub max_mhz: u16,
    /// Bus (reference) frequency in MHz.
    pub bus_mhz: u16,
}

/// What CPUID says about this machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Probe {
    /// CPU vendor.
    pub vendor: Vendor,
    /// The 12-byte vendor string, verbatim.
    pub vendor_string: [u8; 12],
    /// Display family (base family plus extended family where it applies).
    pub family: u32,
    /// Display model (with the extended model where it applies).
    pub model: u32,
    /// Stepping.
    pub stepping: u32,
    /// Highest basic leaf.
    pub max_basic_leaf: u32,
    /// Highest extended leaf.
    pub max_extended_leaf: u32,
    /// Features a kernel cares about.
    pub features: Features,
    /// Leaf 0x15 when the CPU reports it.
    pub tsc_leaf: Option<TscLeaf>,
    /// Leaf 0x16 when the CPU reports it with a non-zero base frequency.
    pub frequency_leaf: Option<FrequencyLeaf>,
    /// Every hypervisor interface found, in ascending base order.
    pub interfaces: Interfaces,
    /// Leaf 0x4000_0010, see [`Probe::timing_leaf`].
    pub timing: Option<TimingLeaf>,
    /// CPUID instructions the probe executed (each distinct leaf and
    /// subleaf once): at most [`HYPERVISOR_CPUID_BUDGET`] when the
    /// hypervisor bit is set, where each is an exit; the whole hypervisor
    /// range (264-266 CPUIDs) on bare metal, where none is an exit.
    pub cpuids: u32,
}

impl Probe {
    /// Whether the hypervisor bit is set.
    pub fn under_hypervisor(&self) -> bool {
        self.features.contains(Features::HYPERVISOR)
    }

    /// The interface a kernel should treat as "the" hypervisor for reporting:
    /// the lowest base when the hypervisor bit is set, else none.
    pub fn primary_interface(&self) -> Option<&HypervisorInterface> {
        if self.under_hypervisor() {
            self.interfaces.as_slice().first()
        } else {
            None
        }
    }

    /// The first interface of `kind`, if any.
    pub fn find(&self, kind: HypervisorKind) -> Option<&HypervisorInterface> {
        self.interfaces.as_slice().iter().find(|i| i.kind == kind)
    }

    /// The 0x4000_0010 timing leaf: present only when an interface sits at
    /// 0x4000_0000 with a max leaf of at least 0x4000_0010 and the leaf's
    /// TSC frequency (EAX) is non-zero (some hypervisors claim the leaf but
    /// leave it empty). Like the scan, this does not look at the hypervisor
    /// bit.
    pub fn timing_leaf(&self) -> Option<TimingLeaf> {
        self.timing
    }

    /// TSC frequency from CPUID 0x15 in kHz, if the CPU enumerates it
    /// fully; when leaf 0x15 gives the TSC/crystal ratio but no crystal
    /// frequency (ECX = 0, "not enumerated", SDM vol. 2A leaf 15H), the
    /// processor base frequency of leaf 0x16 (SDM vol. 2A leaf 16H), as
    /// Linux does for such CPUs (Skylake and Kaby Lake clients): an
    /// approximation in whole MHz, e.g. 3400 MHz on an i7-6700K whose TSC
    /// runs at 24 MHz x 284 / 2 = 3408 MHz (0.25 % off), still far better
    /// than no frequency. Leaf 0x16 alone is not used: without 0x15 nothing
    /// says the TSC runs at the base frequency.
    pub fn tsc_khz_from_leaf_15(&self) -> Option<u64> {
        let leaf = self.tsc_leaf?;
        match leaf.tsc_hz() {
            Some(hz) => Some(hz / 1000),
            None => self.frequency_leaf.map(|f| u64::from(f.base_mhz) * 1000),
        }
        .filter(|&k| k > 0)
    }
}

/// Reads every leaf pvops cares about from `source` and decodes it.
///
/// Never panics, whatever `source` answers: every leaf is bounded by the
/// maxima the CPU reports, and all arithmetic on reported values is done in
/// ranges that cannot overflow.
pub fn probe<S: CpuidSource + ?Sized>(source: &S) -> Probe {
    // Unbounded until the hypervisor bit is known; the basic leaves are
    // far fewer than the budget.
    let mut counted = hypervisor::Counted::new(source, u32::MAX);
    let p = probe_counted(&mut counted);
    Probe {
        cpuids: counted.executed(),
        ..p
    }
}

fn probe_counted<S: CpuidSource + ?Sized>(counted: &mut hypervisor::Counted<'_, S>) -> Probe {
    let probe_basic = basic(&*counted);
    let bounded = probe_basic.features.contains(Features::HYPERVISOR);
    if bounded {
        counted.set_budget(HYPERVISOR_CPUID_BUDGET);
    }
    let (interfaces, timing) = hypervisor::scan(&*counted, bounded);
    let timing = timing
        .map(|l| TimingLeaf {
            tsc_khz: l.eax,
            apic_bus_khz: l.ebx,
        })
        .filter(|t| t.tsc_khz != 0);
    Probe {
        interfaces,
        timing,
        ..probe_basic
    }
}

/// Everything but the hypervisor range.
fn basic<S: CpuidSource + ?Sized>(source: &S) -> Probe {
    let cpuid = CpuId::with_cpuid_reader(source::Reader(source));
    let leaf0 = source.cpuid(0, 0);
    let max_basic_leaf = leaf0.eax;
    // The vendor string is EBX, EDX, ECX in that order (SDM vol. 2A, CPUID).
    let vendor_string = source::signature(leaf0.ebx, leaf0.edx, leaf0.ecx);
    let vendor = Vendor::from_bytes(vendor_string);
    let has_basic = |leaf: u32| leaf <= max_basic_leaf;
    let max_extended_leaf = source.cpuid(EXTENDED_LEAF_FIRST, 0).eax;
    // Linux (`get_cpu_cap`) trusts the extended range only when the reported
    // maximum itself lies in 0x8000_xxxx; anything else is junk (old CPUs
    // answer with the highest basic leaf).
    let extended_valid = max_extended_leaf & 0xFFFF_0000 == EXTENDED_LEAF_FIRST;
    let has_ext = |leaf: u32| extended_valid && leaf <= max_extended_leaf;

    let mut features = Features::empty();
    let (mut family, mut model, mut stepping) = (0, 0, 0);
    if has_basic(1) {
        if let Some(fi) = cpuid.get_feature_info() {
            (family, model) = display_family_model(
                vendor,
                u32::from(fi.base_family_id()),
                u32::from(fi.extended_family_id()),
                u32::from(fi.base_model_id()),
                u32::from(fi.extended_model_id()),
            );
            stepping = u32::from(fi.stepping_id());
            for (flag, on) in [
                (Features::X2APIC, fi.has_x2apic()),
                (Features::TSC_DEADLINE, fi.has_tsc_deadline()),
                (Features::PCID, fi.has_pcid()),
                (Features::XSAVE, fi.has_xsave()),
                (Features::HYPERVISOR, fi.has_hypervisor()),
                (Features::TSC, fi.has_tsc()),
                (Features::APIC, fi.has_apic()),
            ] {
                features.set(flag, on);
            }
        }
    }
    if has_basic(7) {
        if let Some(ef) = cpuid.get_extended_feature_info() {
            features.set(Features::INVPCID, ef.has_invpcid());
        }
    }
    if has_ext(0x8000_0001) {
        // Bits defined identically by the SDM and the APM (Fn8000_0001).
        let e = source.cpuid(0x8000_0001, 0);
        features.set(Features::PAGE_1G, e.edx & (1 << 26) != 0);
        features.set(Features::NX, e.edx & (1 << 20) != 0);
        features.set(Features::SVM, e.ecx & (1 << 2) != 0);
    }
    if has_ext(0x8000_0007) {
        features.set(
            Features::INVARIANT_TSC,
            source.cpuid(0x8000_0007, 0).edx & (1 << 8) != 0,
        );
    }

    // SDM vol. 2A, CPUID leaf 15H: "If EBX[31:0] is 0, the TSC/"core crystal
    // clock" ratio is not enumerated"; EAX is the denominator.
    // The maximum is checked first: an unsupported leaf is not executed.
    let tsc_leaf = has_basic(0x15)
        .then(|| cpuid.get_tsc_info())
        .flatten()
        .map(|l| TscLeaf {
            denominator: l.denominator(),
            numerator: l.numerator(),
            crystal_hz: l.nominal_frequency(),
        })
        .filter(|l| l.denominator != 0 && l.numerator != 0);
    // SDM vol. 2A, CPUID leaf 16H: frequencies in bits 15:0 of EAX/EBX/ECX.
    let frequency_leaf = has_basic(0x16)
        .then(|| cpuid.get_processor_frequency_info())
        .flatten()
        .map(|l| FrequencyLeaf {
            base_mhz: l.processor_base_frequency(),
            max_mhz: l.processor_max_frequency(),
            bus_mhz: l.bus_frequency(),
        })
        .filter(|f| f.base_mhz != 0);

    Probe {
        vendor,
        vendor_string,
        family,
        model,
        stepping,
        max_basic_leaf,
        max_extended_leaf,
        features,
        tsc_leaf,
        frequency_leaf,
        interfaces: Interfaces::default(),
        timing: None,
        cpuids: 0,
    }
}

/// Display family and model from the CPUID.1:EAX fields.
///
/// Intel SDM vol. 2A (CPUID, "Version Information"): the extended family is
/// added only when the base family is 0Fh; the extended model is prepended
/// when the base family is 06h or 0Fh. AMD APM vol. 3 (CPUID Fn0000_0001_EAX)
/// and Hygon: both extensions apply only when the base family is 0Fh. Other
/// vendors follow the Intel rule, as Linux does. All inputs are 4- or 8-bit
/// fields, so the sums cannot overflow a `u32`.
fn display_family_model(
    vendor: Vendor,
    base_family: u32,
    ext_family: u32,
    base_model: u32,
    ext_model: u32,
) -> (u32, u32) {
    let family = if base_family == 0xF {
        base_family + ext_family
    } else {
        base_family
    };
    let extend_model = match vendor {
        Vendor::Amd | Vendor::Hygon => base_family == 0xF,
        Vendor::Intel | Vendor::Other(_) => base_family == 0x6 || base_family == 0xF,
    };
    let model = if extend_model {
        (ext_model << 4) | base_model
    } else {
        base_model
    };
    (family, model)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn family_model_rules() {
        // Intel Skylake client: 0x000506E3.
        assert_eq!(display_family_model(Vendor::Intel, 6, 0, 0xE, 5), (6, 0x5E));
        // Intel Pentium 4 style: family 0Fh, extended family 0.
        assert_eq!(display_family_model(Vendor::Intel, 0xF, 0, 2, 0), (0xF, 2));
        // AMD Zen 2 (0x00830F10): family 17h, model 31h.
        assert_eq!(
            display_family_model(Vendor::Amd, 0xF, 8, 1, 3),
            (0x17, 0x31)
        );
        // AMD K7 (family 6): the extended model is not used.
        assert_eq!(display_family_model(Vendor::Amd, 6, 0, 2, 1), (6, 2));
        // Extreme fields cannot overflow.
        assert_eq!(
            display_family_model(Vendor::Other([0; 12]), 0xF, 0xFF, 0xF, 0xF),
            (0x10E, 0xFF)
        );
    }

    #[test]
    fn leaf_15_with_and_without_the_crystal() {
        // Leaf 0x15 ratio 2:200 with a 24 MHz crystal: 2.4 GHz.
        let full = |leaf: u32, _: u32| match leaf {
            0 => CpuidResult {
                eax: 0x16,
                ebx: 0x756e_6547,
                ecx: 0x6c65_746e,
                edx: 0x4965_6e69,
            },
            0x15 => CpuidResult {
                eax: 2,
                ebx: 200,
                ecx: 24_000_000,
                edx: 0,
            },
            0x16 => CpuidResult {
                eax: 2100,
                ebx: 3000,
                ecx: 100,
                edx: 0,
            },
            _ => CpuidResult::default(),
        };
        assert_eq!(probe(&full).tsc_khz_from_leaf_15(), Some(2_400_000));
        // No crystal (ECX 0): the base frequency of 0x16.
        let no_crystal = |leaf: u32, sub: u32| match leaf {
            0x15 => CpuidResult {
                ecx: 0,
                ..full(leaf, sub)
            },
            _ => full(leaf, sub),
        };
        assert_eq!(probe(&no_crystal).tsc_khz_from_leaf_15(), Some(2_100_000));
        // No ratio (EBX 0): nothing, whatever 0x16 says.
        let no_ratio = |leaf: u32, sub: u32| match leaf {
            0x15 => CpuidResult {
                ebx: 0,
                ..full(leaf, sub)
            },
            _ => full(leaf, sub),
        };
        assert_eq!(probe(&no_ratio).tsc_khz_from_leaf_15(), None);
    }

    #[test]
    fn all_ones_source() {
        let p = probe(&|_, _| CpuidResult {
            eax: u32::MAX,
            ebx: u32::MAX,
            ecx: u32::MAX,
            edx: u32::MAX,
        });
        assert_eq!(p.family, 0x10E);
        assert!(p.interfaces.len() <= MAX_INTERFACES);
        // Every base answers the same signature: reported once.
        assert_eq!(p.interfaces.len(), 1);
    }
}
