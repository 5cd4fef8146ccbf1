//! What the probe costs: CPUIDs executed (each an exit under hardware
//! virtualisation), over every recorded world, stacked worlds, bare metal and
//! random worlds. Under a hypervisor it never executes more than
//! `HYPERVISOR_CPUID_BUDGET`, and it still finds every interface the whole
//! range holds (compared with the full scan the probe does when the
//! hypervisor bit is clear).

use std::cell::Cell;

use proptest::prelude::*;
use pvops_probe::{
    probe, CpuidResult, CpuidSource, Dump, HypervisorKind, Probe, HYPERVISOR_CPUID_BUDGET,
};

/// Counts the CPUIDs executed through it; `hide_bit` clears CPUID.1:ECX[31]
/// (what the probe then does is the full scan, the reference).
struct World<'a> {
    source: &'a dyn CpuidSource,
    hide_bit: bool,
    count: Cell<u32>,
}

impl<'a> World<'a> {
    fn new(source: &'a dyn CpuidSource, hide_bit: bool) -> Self {
        World {
            source,
            hide_bit,
            count: Cell::new(0),
        }
    }
}

impl CpuidSource for World<'_> {
    fn cpuid(&self, leaf: u32, subleaf: u32) -> CpuidResult {
        self.count.set(self.count.get() + 1);
        let mut r = self.source.cpuid(leaf, subleaf);
        // Leaf 1 itself, or its mirror (Intel answers out-of-range leaves
        // with the highest basic leaf, which may be leaf 1).
        if self.hide_bit && (leaf == 1 || r == self.source.cpuid(1, 0)) {
            r.ecx &= !(1 << 31);
        }
        r
    }
}

/// Probes `source` as it is and with the hypervisor bit hidden; checks the
/// cost and that the bounded scan found what the full scan found. Returns
/// the probe and its CPUID count.
fn check(name: &str, source: &dyn CpuidSource) -> (Probe, u32) {
    let world = World::new(source, false);
    let p = probe(&world);
    let executed = world.count.get();
    assert_eq!(p.cpuids, executed, "{name}: reported cost");
    let full_world = World::new(source, true);
    let full = probe(&full_world);
    if p.under_hypervisor() {
        assert!(
            executed <= HYPERVISOR_CPUID_BUDGET,
            "{name}: {executed} CPUIDs under a hypervisor"
        );
        let bases = |p: &Probe| {
            p.interfaces
                .iter()
                .map(|i| (i.base, i.max_leaf, i.signature))
                .collect::<Vec<_>>()
        };
        assert_eq!(bases(&p), bases(&full), "{name}: every interface found");
        // Kinds may differ only where the bit matters to nothing: equal.
        let kinds = |p: &Probe| p.interfaces.iter().map(|i| i.kind).collect::<Vec<_>>();
        assert_eq!(kinds(&p), kinds(&full), "{name}: kinds");
        assert_eq!(p.timing_leaf(), full.timing_leaf(), "{name}: timing leaf");
    } else {
        assert!(executed > 256, "{name}: bare metal keeps the full scan");
    }
    (p, executed)
}

macro_rules! dump {
    ($name:literal) => {
        (
            $name,
            Dump::parse(include_str!(concat!("dumps/", $name))).unwrap(),
        )
    };
}

#[test]
fn recorded_worlds() {
    let worlds = [
        dump!("host-cloud-vm.txt"),
        dump!("qemu-kvm.txt"),
        dump!("qemu-tcg.txt"),
        dump!("tcg-spec.txt"),
        dump!("vmware.txt"),
        dump!("xen.txt"),
        dump!("xen-viridian.txt"),
        dump!("hyperv.txt"),
        dump!("hyperv-no-hv1.txt"),
        dump!("kvm-hyperv.txt"),
        dump!("bhyve.txt"),
        dump!("acrn.txt"),
        dump!("unknown-nvmm.txt"),
    ];
    for (name, d) in &worlds {
        let (p, n) = check(name, d);
        assert!(p.under_hypervisor(), "{name}");
        assert!(!p.interfaces.is_empty(), "{name}");
        println!("{name}: {n} CPUIDs");
    }
}

/// The companion microvisor's personas, recorded with `qemu-runner
/// record-cpuid microvisor:<persona>`: the worlds the boot tests run in.
#[test]
fn microvisor_persona_worlds() {
    use HypervisorKind::{HyperV, Kvm, VMware, Xen};
    let worlds: [((&str, Dump), &[HypervisorKind]); 6] = [
        (dump!("microvisor-vmware.txt"), &[VMware]),
        (dump!("microvisor-xen.txt"), &[Xen]),
        (dump!("microvisor-hyperv.txt"), &[HyperV]),
        (dump!("microvisor-kvm.txt"), &[Kvm]),
        (dump!("microvisor-xen-viridian.txt"), &[HyperV, Xen]),
        (dump!("microvisor-kvm-hyperv.txt"), &[HyperV, Kvm]),
    ];
    for ((name, d), kinds) in &worlds {
        let (p, n) = check(name, d);
        let got: Vec<_> = p.interfaces.iter().map(|i| i.kind).collect();
        assert_eq!(&got, kinds, "{name}");
        println!("{name}: {n} CPUIDs");
    }
}

#[test]
fn bare_metal_keeps_the_full_scan() {
    for (name, d) in [
        dump!("intel-skylake-baremetal.txt"),
        dump!("intel-tigerlake-baremetal.txt"),
        dump!("amd-zen2-baremetal.txt"),
    ] {
        let (p, n) = check(name, &d);
        assert!(!p.under_hypervisor() && p.interfaces.is_empty(), "{name}");
        assert!(n >= 256, "{name}: {n}");
        println!("{name}: {n} CPUIDs");
    }
}

/// A synthetic machine: basic leaves of a hypervisor guest and interfaces
/// at chosen bases.
#[derive(Clone, Debug)]
struct Stacked {
    intel: bool,
    max_basic: u32,
    /// (base index 0..256, signature, EAX above the base, base + 1 EAX).
    interfaces: Vec<Iface>,
}

/// (base index 0..256, signature, EAX above the base, base + 1 EAX).
type Iface = (u32, [u8; 12], u32, u32);

const HV1: u32 = 0x3123_7648;

fn sig_regs(s: &[u8; 12]) -> (u32, u32, u32) {
    let w = |i: usize| u32::from_le_bytes([s[i], s[i + 1], s[i + 2], s[i + 3]]);
    (w(0), w(4), w(8))
}

impl CpuidSource for Stacked {
    fn cpuid(&self, leaf: u32, _subleaf: u32) -> CpuidResult {
        let basic = |leaf: u32| match leaf {
            // "GenuineIntel" / "AuthenticAMD" in EBX, EDX, ECX.
            0 if self.intel => CpuidResult {
                eax: self.max_basic,
                ebx: 0x756e_6547,
                ecx: 0x6c65_746e,
                edx: 0x4965_6e69,
            },
            0 => CpuidResult {
                eax: self.max_basic,
                ebx: 0x6874_7541,
                ecx: 0x444d_4163,
                edx: 0x6974_6e65,
            },
            1 => CpuidResult {
                eax: 0x000A_0F11,
                ebx: 0,
                ecx: 1 << 31,
                edx: 1 << 4,
            },
            l => CpuidResult {
                eax: l.wrapping_mul(0x9E37_79B9),
                ebx: 0x1234_5678 ^ l,
                ecx: 0,
                edx: 7,
            },
        };
        if (0x4000_0000..0x4001_0000).contains(&leaf) {
            let index = (leaf - 0x4000_0000) >> 8;
            let offset = leaf & 0xFF;
            if let Some((_, s, eax, iface)) = self.interfaces.iter().find(|i| i.0 == index) {
                let base = 0x4000_0000 + (index << 8);
                return match offset {
                    0 => {
                        let (b, c, d) = sig_regs(s);
                        CpuidResult {
                            eax: base + eax,
                            ebx: b,
                            ecx: c,
                            edx: d,
                        }
                    }
                    1 => CpuidResult {
                        eax: *iface,
                        ..CpuidResult::default()
                    },
                    0x10 => CpuidResult {
                        eax: 2_000_000,
                        ebx: 1_000_000,
                        ..CpuidResult::default()
                    },
                    _ => CpuidResult::default(),
                };
            }
            // Out of every range: Intel mirrors the highest basic leaf.
            return if self.intel {
                basic(self.max_basic)
            } else {
                CpuidResult::default()
            };
        }
        if leaf <= self.max_basic {
            basic(leaf)
        } else if leaf >= 0x8000_0000 {
            CpuidResult {
                eax: if leaf == 0x8000_0000 { 0x8000_0008 } else { 0 },
                ..CpuidResult::default()
            }
        } else if self.intel {
            basic(self.max_basic)
        } else {
            CpuidResult::default()
        }
    }
}

const HYPERV: [u8; 12] = *b"Microsoft Hv";
const XEN: [u8; 12] = *b"XenVMMXenVMM";
const KVM: [u8; 12] = *b"KVMKVMKVM\0\0\0";
const VMWARE: [u8; 12] = *b"VMwareVMware";

/// A stacked world: name, interfaces, the kinds expected.
type Case = (&'static str, Vec<Iface>, &'static [HypervisorKind]);

#[test]
fn stacked_worlds() {
    let cases: [Case; 6] = [
        (
            "kvm",
            vec![(0, KVM, 1, 0x0100_0000)],
            &[HypervisorKind::Kvm],
        ),
        (
            "vmware with the timing leaf",
            vec![(0, VMWARE, 0x10, 0)],
            &[HypervisorKind::VMware],
        ),
        (
            "hyperv + kvm (QEMU hv-* flags)",
            vec![(0, HYPERV, 0xA, HV1), (1, KVM, 1, 0)],
            &[HypervisorKind::HyperV, HypervisorKind::Kvm],
        ),
        (
            "hyperv + xen + kvm (QEMU Xen emulation with hv-* flags)",
            vec![(0, HYPERV, 0xA, HV1), (1, XEN, 5, 0), (2, KVM, 1, 0)],
            &[
                HypervisorKind::HyperV,
                HypervisorKind::Xen,
                HypervisorKind::Kvm,
            ],
        ),
        (
            "five stacked: the chain past the fixed bases",
            vec![
                (0, HYPERV, 0xA, HV1),
                (1, XEN, 5, 0),
                (2, KVM, 1, 0),
                (3, *b"VBoxVBoxVBox", 1, 0),
                (4, *b"ACRNACRNACRN", 1, 0),
            ],
            &[
                HypervisorKind::HyperV,
                HypervisorKind::Xen,
                HypervisorKind::Kvm,
                HypervisorKind::VirtualBox,
                HypervisorKind::Acrn,
            ],
        ),
        (
            "a gap at 0x4000_0100 (Xen's first unused base is not taken)",
            vec![(0, HYPERV, 0x5, HV1), (2, XEN, 5, 0)],
            &[HypervisorKind::HyperV, HypervisorKind::Xen],
        ),
    ];
    for intel in [true, false] {
        for max_basic in [0xD, 0x16, 0x1F] {
            for (name, interfaces, kinds) in &cases {
                let w = Stacked {
                    intel,
                    max_basic,
                    interfaces: interfaces.clone(),
                };
                let (p, n) = check(name, &w);
                let got: Vec<_> = p.interfaces.iter().map(|i| i.kind).collect();
                assert_eq!(&got, kinds, "{name} (intel {intel}, max {max_basic:#x})");
                println!("{name} (intel {intel}, max {max_basic:#x}): {n} CPUIDs");
            }
        }
    }
}

fn any_signature() -> impl Strategy<Value = [u8; 12]> {
    prop_oneof![
        Just(HYPERV),
        Just(XEN),
        Just(KVM),
        Just(VMWARE),
        Just(*b"TCGTCGTCGTCG"),
        Just(*b"bhyve bhyve "),
        any::<[u8; 12]>(),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Random worlds as real hypervisors build them: up to four interfaces
    /// anywhere in the fixed bases, or a chain of any length from
    /// 0x4000_0000; random basic leaves, vendor and maxima.
    #[test]
    fn random_worlds(
        intel in any::<bool>(),
        max_basic in prop_oneof![Just(1u32), 0x7u32..0x24],
        chain in prop::collection::vec((any_signature(), 0u32..0x120, any::<bool>()), 1..7),
        scattered in prop::collection::vec((0u32..4, any_signature(), 0u32..0x20, any::<bool>()), 0..4),
        use_chain in any::<bool>(),
    ) {
        let interfaces: Vec<Iface> = if use_chain {
            // Distinct, non-zero signatures on consecutive bases (a repeated
            // signature is a mirror, a zero one a free base).
            let mut v: Vec<Iface> = Vec::new();
            for (s, eax, hv1) in chain {
                if s != [0; 12] && !v.iter().any(|e| e.1 == s) {
                    v.push((v.len() as u32, s, eax, if hv1 { HV1 } else { 0 }));
                }
            }
            v
        } else {
            let mut v: Vec<Iface> = Vec::new();
            for (i, s, eax, hv1) in scattered {
                if !v.iter().any(|e| e.0 == i || e.1 == s) {
                    v.push((i, s, eax, if hv1 { HV1 } else { 0 }));
                }
            }
            v.sort_by_key(|e| e.0);
            v
        };
        // Every interface is found wherever the budget reaches: at least
        // four stacked ones (five from the chain in most worlds).
        let w = Stacked { intel, max_basic, interfaces };
        let world = World::new(&w, false);
        let p = probe(&world);
        prop_assert!(p.cpuids <= HYPERVISOR_CPUID_BUDGET, "{} CPUIDs", p.cpuids);
        prop_assert_eq!(p.cpuids, world.count.get());
        if w.interfaces.len() <= 4 {
            let _ = check("random", &w);
        }
    }
}
