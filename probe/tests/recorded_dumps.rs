//! Probes recorded and spec-built `cpuid -r` dumps (see `tests/dumps/README.md`
//! for where every value comes from).

use pvops_probe::{
    probe, CpuidResult, CpuidSource, Dump, Features, HypervisorKind, Probe, TimingLeaf, Vendor,
    HV_INTERFACE_HV1,
};

macro_rules! dump {
    ($name:literal) => {
        include_str!(concat!("dumps/", $name))
    };
}

fn probe_text(text: &str) -> Probe {
    let d = Dump::parse(text).expect("fixture parses");
    probe(&d)
}

fn bases(p: &Probe) -> Vec<(u32, HypervisorKind, u32)> {
    p.interfaces
        .iter()
        .map(|i| (i.base, i.kind, i.max_leaf))
        .collect()
}

fn feature_names(f: Features) -> Vec<&'static str> {
    Features::NAMES
        .iter()
        .filter(|(flag, _)| f.contains(*flag))
        .map(|(_, name)| *name)
        .collect()
}

#[test]
fn intel_skylake_bare_metal() {
    let text = dump!("intel-skylake-baremetal.txt");
    let d = Dump::parse(text).unwrap();
    // The second CPU block (leaf 0 all zero) is ignored.
    assert_eq!(d.cpuid(0, 0).eax, 0x16);
    let p = probe(&d);
    assert_eq!(p.vendor, Vendor::Intel);
    assert_eq!(&p.vendor_string, b"GenuineIntel");
    assert_eq!((p.family, p.model, p.stepping), (6, 0x5E, 3));
    assert_eq!(p.max_basic_leaf, 0x16);
    assert_eq!(p.max_extended_leaf, 0x8000_0008);
    assert_eq!(
        feature_names(p.features),
        [
            "x2apic",
            "tsc_deadline",
            "invariant_tsc",
            "pcid",
            "invpcid",
            "xsave",
            "page_1g",
            "nx",
            "tsc",
            "apic"
        ]
    );
    assert!(!p.under_hypervisor());
    // Leaf 0x15 gives the ratio but no crystal: the base frequency of leaf
    // 0x16 (3400 MHz; the TSC runs at 24 MHz x 284 / 2 = 3408 MHz).
    let l = p.tsc_leaf.unwrap();
    assert_eq!((l.denominator, l.numerator, l.crystal_hz), (2, 284, 0));
    assert_eq!(p.tsc_khz_from_leaf_15(), Some(3_400_000));
    let f = p.frequency_leaf.unwrap();
    assert_eq!((f.base_mhz, f.max_mhz, f.bus_mhz), (3400, 4000, 100));
    // 0x4000_0000 and 0x4000_0100 mirror leaf 0x16: no interface.
    assert_ne!(d.cpuid(0x4000_0000, 0), CpuidResult::default());
    assert!(p.interfaces.is_empty(), "{:?}", bases(&p));
    assert_eq!(p.primary_interface(), None);
    assert_eq!(p.timing_leaf(), None);
}

#[test]
fn intel_tigerlake_bare_metal_tsc_from_leaf_15() {
    let p = probe_text(dump!("intel-tigerlake-baremetal.txt"));
    assert_eq!(p.vendor, Vendor::Intel);
    assert_eq!((p.family, p.model, p.stepping), (6, 0x8C, 1));
    // 38.4 MHz * 146 / 2 = 2803.2 MHz.
    assert_eq!(p.tsc_leaf.unwrap().tsc_hz(), Some(2_803_200_000));
    assert_eq!(p.tsc_khz_from_leaf_15(), Some(2_803_200));
    assert_eq!(p.frequency_leaf.unwrap().base_mhz, 2800);
    assert_eq!(p.frequency_leaf.unwrap().max_mhz, 4700);
    assert!(!p.under_hypervisor());
    assert!(p.interfaces.is_empty());
}

#[test]
fn amd_zen2_bare_metal() {
    let p = probe_text(dump!("amd-zen2-baremetal.txt"));
    assert_eq!(p.vendor, Vendor::Amd);
    assert_eq!((p.family, p.model, p.stepping), (0x17, 0x31, 0));
    assert_eq!(
        feature_names(p.features),
        [
            "x2apic",
            "invariant_tsc",
            "xsave",
            "page_1g",
            "nx",
            "tsc",
            "apic",
            "svm"
        ]
    );
    assert_eq!(p.tsc_leaf, None);
    assert_eq!(p.frequency_leaf, None);
    assert!(p.interfaces.is_empty());
    assert_eq!(p.primary_interface(), None);
}

/// `cpuid -r -1` on the development machine: an AMD EPYC (family 19h,
/// model 01h) guest under KVM, KVM alone at 0x4000_0000.
#[test]
fn host_cloud_vm() {
    let text = dump!("host-cloud-vm.txt");
    let d = Dump::parse(text).unwrap();
    assert_eq!(d.len(), 68);
    // Subleaves recorded by the tool are distinct leaves of the dump.
    assert_eq!(d.cpuid(0xb, 1).eax, 5);
    assert_eq!(d.cpuid(0xd, 0xb).ecx, 1);
    assert_eq!(d.cpuid(0xd, 3), CpuidResult::default());

    let p = probe(&d);
    assert_eq!(p.vendor, Vendor::Amd);
    assert_eq!((p.family, p.model, p.stepping), (0x19, 0x01, 1));
    assert_eq!(p.max_basic_leaf, 0x10);
    assert_eq!(p.max_extended_leaf, 0x8000_0022);
    assert_eq!(
        feature_names(p.features),
        [
            "x2apic",
            "tsc_deadline",
            "invariant_tsc",
            "pcid",
            "invpcid",
            "xsave",
            "page_1g",
            "nx",
            "hypervisor",
            "tsc",
            "apic"
        ]
    );
    assert!(p.under_hypervisor());
    assert_eq!(p.tsc_leaf, None);
    assert_eq!(p.frequency_leaf, None);
    assert_eq!(bases(&p), [(0x4000_0000, HypervisorKind::Kvm, 0x4000_0001)]);
    let kvm = p.primary_interface().unwrap();
    assert_eq!(kvm.signature_str().to_string(), "KVMKVMKVM");
    assert_eq!(kvm.leaf_count(), 1);
    // KVM features (cpuid.rst): clocksource2 (3), PV EOI (6), PV TLB flush
    // (9), PV send IPI (11), clocksource stable (24).
    let features = d.cpuid(kvm.base + 1, 0).eax;
    for bit in [3, 6, 9, 11, 24] {
        assert_ne!(features & (1 << bit), 0, "KVM feature bit {bit}");
    }
    assert_eq!(p.timing_leaf(), None);
}

#[test]
fn vmware_timing_leaf() {
    let p = probe_text(dump!("vmware.txt"));
    assert!(p.under_hypervisor());
    assert_eq!(
        bases(&p),
        [(0x4000_0000, HypervisorKind::VMware, 0x4000_0010)]
    );
    assert_eq!(
        p.timing_leaf(),
        Some(TimingLeaf {
            tsc_khz: 2_095_078,
            apic_bus_khz: 66_000
        })
    );
    assert_eq!(p.primary_interface().unwrap().kind.name(), "vmware");
    assert_eq!(
        p.primary_interface().unwrap().signature_str().to_string(),
        "VMwareVMware"
    );
}

#[test]
fn xen_hvm() {
    let text = dump!("xen.txt");
    let p = probe_text(text);
    assert_eq!(bases(&p), [(0x4000_0000, HypervisorKind::Xen, 0x4000_0005)]);
    assert_eq!(p.timing_leaf(), None);
    let d = Dump::parse(text).unwrap();
    let xen = p.find(HypervisorKind::Xen).unwrap();
    assert!(xen.has_leaf(0x4000_0004) && !xen.has_leaf(0x4000_0006));
    assert_eq!(d.cpuid(xen.base + 1, 0).eax >> 16, 4);
    assert_eq!(d.cpuid(xen.base + 2, 0).ebx, 0x4000_0000);
    // Time leaf subleaves.
    assert_eq!(d.cpuid(xen.base + 3, 0).ecx, 2_095_078);
    assert_eq!(d.cpuid(xen.base + 3, 2).eax, 2_095_078);
}

#[test]
fn xen_with_viridian() {
    let text = dump!("xen-viridian.txt");
    let p = probe_text(text);
    assert_eq!(
        bases(&p),
        [
            (0x4000_0000, HypervisorKind::HyperV, 0x4000_0006),
            (0x4000_0100, HypervisorKind::Xen, 0x4000_0105)
        ]
    );
    assert_eq!(p.primary_interface().unwrap().kind, HypervisorKind::HyperV);
    let xen = p.find(HypervisorKind::Xen).unwrap();
    let d = Dump::parse(text).unwrap();
    assert_eq!(d.cpuid(xen.base + 2, 0).ebx, 0x4000_0200);
}

#[test]
fn hyperv() {
    let text = dump!("hyperv.txt");
    let p = probe_text(text);
    assert_eq!(
        bases(&p),
        [(0x4000_0000, HypervisorKind::HyperV, 0x4000_000A)]
    );
    assert_eq!(p.find(HypervisorKind::Kvm), None);
    assert_eq!(p.timing_leaf(), None);
    let d = Dump::parse(text).unwrap();
    assert_eq!(d.cpuid(0x4000_0001, 0).eax, HV_INTERFACE_HV1);
    // Linux's Hyper-V detection: HYPERCALL (5) and VP_INDEX (6) privileges.
    assert_eq!(d.cpuid(0x4000_0003, 0).eax & 0x60, 0x60);
}

#[test]
fn microsoft_hv_without_hv1_is_not_hyperv() {
    let p = probe_text(dump!("hyperv-no-hv1.txt"));
    assert_eq!(
        bases(&p),
        [(0x4000_0000, HypervisorKind::Unknown, 0x4000_0005)]
    );
    assert_eq!(p.find(HypervisorKind::HyperV), None);
    assert_eq!(
        &p.interfaces.iter().next().unwrap().signature,
        b"Microsoft Hv"
    );
}

#[test]
fn kvm_with_hyperv_stacked() {
    let p = probe_text(dump!("kvm-hyperv.txt"));
    assert_eq!(
        bases(&p),
        [
            (0x4000_0000, HypervisorKind::HyperV, 0x4000_000A),
            (0x4000_0100, HypervisorKind::Kvm, 0x4000_0101)
        ]
    );
    assert_eq!(p.primary_interface().unwrap().kind, HypervisorKind::HyperV);
    assert_eq!(p.find(HypervisorKind::Kvm).unwrap().base, 0x4000_0100);
    assert_eq!(p.timing_leaf(), None);
}

#[test]
fn bhyve_mirror_reported_once() {
    let p = probe_text(dump!("bhyve.txt"));
    assert_eq!(
        bases(&p),
        [(0x4000_0000, HypervisorKind::Bhyve, 0x4000_0001)]
    );
    assert_eq!(
        p.primary_interface().unwrap().signature_str().to_string(),
        "bhyve bhyve "
    );
}

#[test]
fn acrn() {
    let p = probe_text(dump!("acrn.txt"));
    assert_eq!(
        bases(&p),
        [(0x4000_0000, HypervisorKind::Acrn, 0x4000_0001)]
    );
    assert_eq!(p.primary_interface().unwrap().kind.name(), "acrn");
}

#[test]
fn unknown_signature_kept_verbatim() {
    let p = probe_text(dump!("unknown-nvmm.txt"));
    assert_eq!(
        bases(&p),
        [(0x4000_0000, HypervisorKind::Unknown, 0x4000_0001)]
    );
    let i = p.primary_interface().unwrap();
    assert_eq!(&i.signature, b"___ NVMM ___");
    assert_eq!(i.signature_str().to_string(), "___ NVMM ___");
    assert_eq!(i.kind.name(), "unknown");
}

#[test]
fn qemu_tcg_known_facts() {
    let p = probe_text(dump!("tcg-spec.txt"));
    assert_eq!(p.vendor, Vendor::Amd);
    assert_eq!(p.max_basic_leaf, 0xD);
    assert!(p.under_hypervisor());
    assert_eq!(
        bases(&p),
        [(0x4000_0000, HypervisorKind::QemuTcg, 0x4000_0001)]
    );
    assert_eq!(p.primary_interface().unwrap().kind.name(), "qemu-tcg");
    assert_eq!(p.timing_leaf(), None);
}

/// Small in-memory source for cases no fixture covers.
struct Leaves(&'static [(u32, [u32; 4])]);

impl CpuidSource for Leaves {
    fn cpuid(&self, leaf: u32, subleaf: u32) -> CpuidResult {
        self.0
            .iter()
            .find(|(l, _)| *l == leaf && subleaf == 0)
            .map(|(_, r)| CpuidResult {
                eax: r[0],
                ebx: r[1],
                ecx: r[2],
                edx: r[3],
            })
            .unwrap_or_default()
    }
}

const HV_BIT: u32 = 1 << 31;
const VMWARE: [u32; 3] = [0x6177_4d56, 0x4d56_6572, 0x6572_6177];
const KVM: [u32; 3] = [0x4b4d_564b, 0x564b_4d56, 0x0000_004d];

#[test]
fn timing_leaf_needs_nonzero_tsc() {
    let p = probe(&Leaves(&[
        (0, [1, 0, 0, 0]),
        (1, [0, 0, HV_BIT, 0]),
        (0x4000_0000, [0x4000_0010, VMWARE[0], VMWARE[1], VMWARE[2]]),
        (0x4000_0010, [0, 66_000, 0, 0]),
    ]));
    assert_eq!(p.primary_interface().unwrap().kind, HypervisorKind::VMware);
    assert_eq!(p.timing_leaf(), None);
}

#[test]
fn timing_leaf_needs_max_leaf() {
    // KVM without vmware-cpuid-freq: max 0x4000_0001, leaf 0x4000_0010 junk.
    let p = probe(&Leaves(&[
        (0, [1, 0, 0, 0]),
        (1, [0, 0, HV_BIT, 0]),
        (0x4000_0000, [0x4000_0001, KVM[0], KVM[1], KVM[2]]),
        (0x4000_0010, [2_000_000, 1_000_000, 0, 0]),
    ]));
    assert_eq!(p.timing_leaf(), None);
    // With vmware-cpuid-freq QEMU raises the max to 0x4000_0010.
    let p = probe(&Leaves(&[
        (0, [1, 0, 0, 0]),
        (1, [0, 0, HV_BIT, 0]),
        (0x4000_0000, [0x4000_0010, KVM[0], KVM[1], KVM[2]]),
        (0x4000_0010, [2_000_000, 1_000_000, 0, 0]),
    ]));
    assert_eq!(
        p.timing_leaf(),
        Some(TimingLeaf {
            tsc_khz: 2_000_000,
            apic_bus_khz: 1_000_000
        })
    );
}

#[test]
fn old_kvm_eax_zero_means_base_plus_one() {
    let p = probe(&Leaves(&[
        (0, [1, 0, 0, 0]),
        (1, [0, 0, HV_BIT, 0]),
        (0x4000_0000, [0, KVM[0], KVM[1], KVM[2]]),
    ]));
    let kvm = p.find(HypervisorKind::Kvm).unwrap();
    assert_eq!(kvm.max_leaf, 0x4000_0001);
    assert_eq!(kvm.leaf_count(), 1);
}

#[test]
fn microsoft_hv_with_max_at_base_is_not_hyperv() {
    // "Hv#1" at base + 1 but EAX says there is no such leaf.
    let p = probe(&Leaves(&[
        (0, [1, 0, 0, 0]),
        (
            0x4000_0000,
            [0x4000_0000, 0x7263_694d, 0x666f_736f, 0x7648_2074],
        ),
        (0x4000_0001, [HV_INTERFACE_HV1, 0, 0, 0]),
    ]));
    assert_eq!(
        p.interfaces.iter().next().unwrap().kind,
        HypervisorKind::Unknown
    );
}

#[test]
fn old_bhyve_spelling() {
    let sig = *b"BHyVE BHyVE ";
    let w = |i: usize| u32::from_le_bytes([sig[i], sig[i + 1], sig[i + 2], sig[i + 3]]);
    let p = probe(&|leaf: u32, _sub: u32| match leaf {
        0x4000_0000 => CpuidResult {
            eax: 0x4000_0000,
            ebx: w(0),
            ecx: w(4),
            edx: w(8),
        },
        _ => CpuidResult::default(),
    });
    assert_eq!(p.find(HypervisorKind::Bhyve).unwrap().max_leaf, 0x4000_0000);
}

#[test]
fn every_fixture_parses_and_probes() {
    // Read from the directory, so a fixture added later is covered too.
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/dumps");
    let mut count = 0;
    for entry in std::fs::read_dir(dir).expect("fixture directory") {
        let path = entry.expect("fixture entry").path();
        if path.extension().is_none_or(|e| e != "txt") {
            continue;
        }
        count += 1;
        let name = path.display();
        let text = std::fs::read_to_string(&path).expect("fixture reads");
        let d = Dump::parse(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(!d.is_empty());
        // Every entry read back through the source trait (first one wins).
        for e in d.entries() {
            assert_eq!(d.get(e.leaf, e.subleaf), Some(d.cpuid(e.leaf, e.subleaf)));
        }
        let p = probe(&d);
        assert_eq!(
            p.primary_interface().is_some(),
            p.under_hypervisor(),
            "{name}"
        );
    }
    assert!(count >= 16, "only {count} fixtures in {dir}");
}

/// Recorded under QEMU 7.2's software emulation (`-cpu max`): AMD vendor,
/// QEMU's own `TCGTCGTCGTCG` interface, and neither x2APIC nor TSC-deadline
/// (QEMU 7.2's TCG has no x2APIC; the example kernel then drives the xAPIC).
#[test]
fn qemu_tcg_recorded() {
    let p = probe_text(dump!("qemu-tcg.txt"));
    assert_eq!(p.vendor, Vendor::Amd);
    assert_eq!((p.family, p.model, p.stepping), (15, 0x6b, 1));
    assert_eq!(p.max_basic_leaf, 0xd);
    assert!(p.under_hypervisor());
    assert!(!p.features.contains(Features::X2APIC));
    assert!(!p.features.contains(Features::TSC_DEADLINE));
    assert!(p.features.contains(Features::NX));
    assert_eq!(
        bases(&p),
        [(0x4000_0000, HypervisorKind::QemuTcg, 0x4000_0001)]
    );
    assert_eq!(
        p.primary_interface().map(|i| i.kind),
        Some(HypervisorKind::QemuTcg)
    );
    assert_eq!(p.tsc_leaf, None);
    assert_eq!(p.timing_leaf(), None);
}

/// Recorded under QEMU 7.2 with KVM on this machine (`-cpu host`, a nested
/// AMD EPYC): KVM's signature with max leaf 0x4000_0001, x2APIC and
/// TSC-deadline present, no CPUID 0x15 and no timing leaf.
#[test]
fn qemu_kvm_recorded() {
    let p = probe_text(dump!("qemu-kvm.txt"));
    assert_eq!(p.vendor, Vendor::Amd);
    assert_eq!((p.family, p.model, p.stepping), (25, 1, 1));
    assert!(p.under_hypervisor());
    assert!(p
        .features
        .contains(Features::X2APIC | Features::TSC_DEADLINE | Features::NX));
    assert_eq!(bases(&p), [(0x4000_0000, HypervisorKind::Kvm, 0x4000_0001)]);
    assert_eq!(
        p.interfaces
            .iter()
            .next()
            .unwrap()
            .signature_str()
            .to_string(),
        "KVMKVMKVM"
    );
    assert_eq!(p.tsc_khz_from_leaf_15(), None);
    assert_eq!(p.timing_leaf(), None);
}
